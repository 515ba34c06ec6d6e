/*-------------------------------------------------------------------------
 *
 * openai.c
 *		Builds chat-completion request bodies and parses responses in one pass
 *		with PostgreSQL's own JSON parser.  No I/O and no SQL here.
 *
 * Parsing never throws: a hostile body (invalid UTF-8, \u0000, lone
 * surrogates, nesting deep enough to hit the stack limit, garbage) yields
 * OPENAI_NOT_JSON with a message, and the caller records it as the request's
 * error.  Strings the parser returns are palloc'd in the caller's context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "openai.h"

/*
 * Body: {"model":M,"messages":[{"role":"system","content":S},
 *        {"role":"user","content":U}],"max_tokens":N[,STRUCTURED]}
 * max_tokens (rather than max_completion_tokens) is what every
 * OpenAI-compatible server accepts.  With a `response_schema` (JSON text:
 * a simulation with actions) the body asks for structured output in the
 * json_schema form (openai_append_structured()); *tail_offset is where that
 * part begins, so that a body can be re-made for an endpoint that wants
 * tools instead (request.c).
 */
void
openai_build_request(StringInfo buf, const char *model, int max_tokens,
					 const char *system_message, const char *user_message,
					 const char *response_schema, int *tail_offset)
{
	appendStringInfoString(buf, "{\"model\":");
	escape_json(buf, model);
	appendStringInfoString(buf, ",\"messages\":[");
	if (system_message != NULL && system_message[0] != '\0')
	{
		appendStringInfoString(buf, "{\"role\":\"system\",\"content\":");
		escape_json(buf, system_message);
		appendStringInfoString(buf, "},");
	}
	appendStringInfoString(buf, "{\"role\":\"user\",\"content\":");
	escape_json(buf, user_message);
	appendStringInfo(buf, "}],\"max_tokens\":%d", max_tokens);
	*tail_offset = buf->len;
	if (response_schema != NULL)
		openai_append_structured(buf, response_schema, OPENAI_OUTPUT_JSON_SCHEMA);
	appendStringInfoChar(buf, '}');
}

/*
 * The members that ask for one JSON object matching `schema`:
 *	 json_schema: ,"response_format":{"type":"json_schema","json_schema":
 *				  {"name":"action","strict":true,"schema":S}}
 *				  (OpenAI, vLLM, llama.cpp server, Ollama >= 0.5)
 *	 tools:		  ,"tools":[{"type":"function","function":{"name":"act",
 *				  "description":...,"parameters":S}}],
 *				  "tool_choice":{"type":"function","function":{"name":"act"}}
 *				  (servers without json_schema; the reply's tool call
 *				  arguments are read as its content)
 */
void
openai_append_structured(StringInfo buf, const char *schema, OpenAIOutputStyle style)
{
	if (style == OPENAI_OUTPUT_TOOLS)
	{
		appendStringInfoString(buf, ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"act\","
							   "\"description\":\"Choose your one action for this step.\",\"parameters\":");
		appendStringInfoString(buf, schema);
		appendStringInfoString(buf, "}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"act\"}}");
	}
	else
	{
		appendStringInfoString(buf, ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
							   "{\"name\":\"action\",\"strict\":true,\"schema\":");
		appendStringInfoString(buf, schema);
		appendStringInfoString(buf, "}}");
	}
}

/*
 * Parser state.  `field[d]` is the key being read at object depth d and
 * `index[d]` the element index in an array at depth d (depth counts every
 * object or array entered).  The reply object is at depth `base + 1`: 1
 * normally, 2 when the server wraps it in an array ([{"error": ...}], as
 * Google's OpenAI layer does; only its first element counts).  Paths below
 * are written relative to the reply object (R = base + 1).
 *
 * Error bodies come in many shapes; each fills the same three fields:
 *	 {"error": {"message", "type", "code", "details": {"error_code"}}}
 *							 OpenAI, Azure, vLLM >= 0.10, Anthropic, Groq, ...
 *	 {"error": "text"}		 some proxies
 *	 {"object": "error", "message", "type", "code"}	 vLLM < 0.10, Mistral
 *	 {"message": ...}, {"detail": ...}	 Together, FastAPI servers (a body
 *							 without choices only)
 * A message that is not a string (an object, an array of validation
 * errors) is kept as its raw JSON.
 */
#define MAX_TRACKED_DEPTH 8

typedef struct ParseState
{
	OpenAIResponse *out;
	JsonLexContext *lex;
	int			depth;
	int			base;			/* 0, or 1 inside a top-level array */
	bool		top_array;
	const char *field[MAX_TRACKED_DEPTH + 1];
	int			index[MAX_TRACKED_DEPTH + 1];
	bool		is_array[MAX_TRACKED_DEPTH + 1];
	bool		saw_choice0;
	bool		saw_error;		/* an "error" key holding an object or a string */
	bool		flat_error;		/* {"object":"error",...} */
	char	   *top_message;	/* top-level "message" (flat errors, Together) */
	char	   *top_detail;		/* top-level "detail" (FastAPI) */
	char	   *top_type;
	char	   *top_code;
	char	   *details_code;	/* error.details.error_code (Anthropic) */
	/* a non-string message or detail: its raw JSON */
	char	  **raw_target;
	int			raw_depth;
	const char *raw_start;
} ParseState;

/* Is the key at depth R + k (relative to the reply object) `name`? */
static inline bool
at(ParseState *ps, int k, const char *name)
{
	int			d = ps->base + 1 + k;

	return d <= MAX_TRACKED_DEPTH && !ps->is_array[d] &&
		ps->field[d] != NULL && strcmp(ps->field[d], name) == 0;
}

/* Inside the reply object (the first element when the body is an array)? */
static inline bool
in_reply(ParseState *ps)
{
	return !ps->top_array || (ps->depth >= 2 && ps->index[1] == 0);
}

/* Depth relative to the reply object: 0 at its own keys. */
static inline int
rel(ParseState *ps)
{
	return ps->depth - ps->base - 1;
}

static void
enter(ParseState *ps, bool array)
{
	ps->depth++;
	if (ps->depth <= MAX_TRACKED_DEPTH)
	{
		ps->field[ps->depth] = NULL;
		ps->index[ps->depth] = -1;
		ps->is_array[ps->depth] = array;
	}
}

/*
 * An object or array is starting: is it a message or detail we keep as raw
 * JSON?  (The lexer's current token is its opening bracket.)
 */
static void
maybe_start_raw(ParseState *ps)
{
	char	  **target = NULL;

	if (ps->raw_target != NULL || !in_reply(ps))
		return;
	if (rel(ps) == 0 && at(ps, 0, "message"))
		target = &ps->top_message;
	else if (rel(ps) == 0 && at(ps, 0, "detail"))
		target = &ps->top_detail;
	else if (rel(ps) == 1 && at(ps, 0, "error") && at(ps, 1, "message"))
		target = &ps->out->error_message;
	if (target == NULL)
		return;
	ps->raw_target = target;
	ps->raw_depth = ps->depth;
	ps->raw_start = ps->lex->token_start;
}

/* An object or array ended (the lexer is past its closing bracket). */
static void
on_end(void *state)
{
	ParseState *ps = state;

	ps->depth--;
	if (ps->raw_target != NULL && ps->depth == ps->raw_depth)
	{
		const char *end = ps->lex->prev_token_terminator;

		if (ps->raw_start != NULL && end != NULL && end > ps->raw_start)
			*ps->raw_target = pnstrdup(ps->raw_start, Min(end - ps->raw_start, 2000));
		ps->raw_target = NULL;
	}
}

static void
on_object_start(void *state)
{
	ParseState *ps = state;

	maybe_start_raw(ps);
	enter(ps, false);
	if (!in_reply(ps))
		return;
	/* choices[0] itself */
	if (rel(ps) == 2 && at(ps, 0, "choices") && ps->is_array[ps->base + 2] &&
		ps->index[ps->base + 2] == 0)
		ps->saw_choice0 = true;
	if (rel(ps) == 1 && at(ps, 0, "error"))
		ps->saw_error = true;
}

static void
on_array_start(void *state)
{
	ParseState *ps = state;

	if (ps->depth == 0)
	{
		/* a reply wrapped in an array: its first element is the reply */
		ps->top_array = true;
		ps->base = 1;
		enter(ps, true);
		return;
	}
	maybe_start_raw(ps);
	enter(ps, true);
}

static void
on_field_start(void *state, char *fname, bool isnull)
{
	ParseState *ps = state;

	if (ps->depth <= MAX_TRACKED_DEPTH)
		ps->field[ps->depth] = fname;
}

static void
on_element_start(void *state, bool isnull)
{
	ParseState *ps = state;

	if (ps->depth <= MAX_TRACKED_DEPTH)
		ps->index[ps->depth]++;
}

static int32
token_to_int(const char *token, JsonTokenType type)
{
	char	   *end;
	double		v;

	if (type != JSON_TOKEN_NUMBER)
		return -1;
	v = strtod(token, &end);
	if (*end != '\0' || v < 0 || v > PG_INT32_MAX)
		return -1;
	return (int32) v;
}

static void
on_scalar(void *state, char *token, JsonTokenType type)
{
	ParseState *ps = state;
	OpenAIResponse *out = ps->out;
	bool		is_null = (type == JSON_TOKEN_NULL);
	char	   *value = is_null ? NULL : token;
	int			d;

	if (!in_reply(ps) || ps->raw_target != NULL)
		return;
	d = rel(ps);
	if (d == 0)
	{
		if (at(ps, 0, "model") && type == JSON_TOKEN_STRING)
			out->model = value;
		else if (at(ps, 0, "object") && value && strcmp(value, "error") == 0)
			ps->flat_error = true;
		else if (at(ps, 0, "message"))
			ps->top_message = value;
		else if (at(ps, 0, "detail"))
			ps->top_detail = value;
		else if (at(ps, 0, "type"))
			ps->top_type = value;
		else if (at(ps, 0, "code"))
			ps->top_code = value;
		else if (at(ps, 0, "error") && type == JSON_TOKEN_STRING)
		{
			/* some servers send {"error": "message"} */
			ps->saw_error = true;
			out->error_message = value;
		}
		return;
	}

	/* choices[0].finish_reason */
	if (d == 2 && at(ps, 0, "choices") && ps->index[ps->base + 2] == 0 &&
		at(ps, 2, "finish_reason"))
	{
		out->finish_reason = value;
		return;
	}
	/* choices[0].message.tool_calls[0].function.arguments */
	if (d == 6 && at(ps, 0, "choices") && ps->index[ps->base + 2] == 0 && at(ps, 2, "message") &&
		at(ps, 3, "tool_calls") && ps->index[ps->base + 5] == 0 && at(ps, 5, "function") &&
		at(ps, 6, "arguments"))
	{
		if (type == JSON_TOKEN_STRING && out->tool_arguments == NULL)
			out->tool_arguments = value;
		return;
	}
	/* choices[0].message.content and .refusal */
	if (d == 3 && at(ps, 0, "choices") && ps->index[ps->base + 2] == 0 && at(ps, 2, "message"))
	{
		if (at(ps, 3, "content"))
			out->content = (type == JSON_TOKEN_STRING) ? value : NULL;
		else if (at(ps, 3, "refusal") && type == JSON_TOKEN_STRING)
			out->refusal = value;
		return;
	}
	if (d == 1 && at(ps, 0, "usage"))
	{
		if (at(ps, 1, "prompt_tokens"))
			out->prompt_tokens = token_to_int(token, type);
		else if (at(ps, 1, "completion_tokens"))
			out->completion_tokens = token_to_int(token, type);
		return;
	}
	if (d == 1 && at(ps, 0, "error"))
	{
		if (at(ps, 1, "message"))
			out->error_message = value;
		else if (at(ps, 1, "type"))
			out->error_type = value;
		else if (at(ps, 1, "code"))
			out->error_code = value;
		return;
	}
	if (d == 2 && at(ps, 0, "error") && at(ps, 1, "details") && at(ps, 2, "error_code"))
		ps->details_code = value;
}

/*
 * A body the JSON parser must not see: empty, with a NUL byte (text cannot
 * hold one), or not UTF-8.  Returns false, with out saying why, for those.
 */
static bool
readable_as_text(const char *body, size_t len, OpenAIResponse *out)
{
	const char *why = NULL;

	if (len == 0)
		why = "empty response body";
	else if (memchr(body, '\0', len) != NULL)
		why = "response body contains a NUL byte";
	else if (!pg_verify_mbstr(PG_UTF8, body, (int) len, true))
		why = "response body is not valid UTF-8";
	if (why == NULL)
		return true;
	out->status = OPENAI_NOT_JSON;
	out->error_message = pstrdup(why);
	return false;
}

/*
 * Run PostgreSQL's JSON parser over the body with our callbacks, which fill
 * ps->out and the rest of ps.  The parser itself only returns error codes,
 * but deep nesting trips check_stack_depth() and allocation may fail; those
 * are caught too (nothing but memory is touched inside, so flushing the
 * error state is safe).  Returns false, with ps->out saying why, when the
 * body is not JSON we could read.
 */
static bool
run_parser(const char *body, size_t len, ParseState *ps)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	OpenAIResponse *out = ps->out;
	JsonSemAction sem;

	memset(&sem, 0, sizeof(sem));
	sem.semstate = ps;
	sem.object_start = on_object_start;
	sem.object_end = on_end;
	sem.array_start = on_array_start;
	sem.array_end = on_end;
	sem.object_field_start = on_field_start;
	sem.array_element_start = on_element_start;
	sem.scalar = on_scalar;

	PG_TRY();
	{
		JsonLexContext *lex = makeJsonLexContextCstringLen((char *) body, (int) len,
														   PG_UTF8, true);
		JsonParseErrorType err;

		ps->lex = lex;
		err = pg_parse_json(lex, &sem);
		if (err != JSON_SUCCESS)
		{
			out->status = OPENAI_NOT_JSON;
			if (err == JSON_UNICODE_CODE_POINT_ZERO)
				out->error_message = pstrdup("response contains \\u0000, which PostgreSQL text cannot store");
			else
				out->error_message = psprintf("response is not valid JSON: %s",
											  json_errdetail(err, lex));
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		out->status = OPENAI_NOT_JSON;
		out->error_message = psprintf("response could not be parsed: %s", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return out->status != OPENAI_NOT_JSON;
}

/* What a body read to the end says: an error, a completion, or neither. */
static void
classify_parsed(ParseState *ps, OpenAIResponse *out)
{
	if (ps->saw_error || ps->flat_error)
	{
		out->status = OPENAI_ERROR_BODY;
		if (!ps->saw_error)
		{
			out->error_message = ps->top_message;
			out->error_type = ps->top_type;
			out->error_code = ps->top_code;
		}
		if (out->error_code == NULL)
			out->error_code = ps->details_code;
		if (out->error_message == NULL)
			out->error_message = pstrdup("(no message)");
		return;
	}
	if (ps->saw_choice0)
	{
		out->status = OPENAI_OK;
		return;
	}
	if (ps->top_message != NULL || ps->top_detail != NULL)
	{
		/* {"message": ...} or {"detail": ...}: an error without the envelope */
		out->status = OPENAI_ERROR_BODY;
		out->error_message = ps->top_message ? ps->top_message : ps->top_detail;
		out->error_type = ps->top_type;
		out->error_code = ps->top_code;
		return;
	}
	out->status = OPENAI_NO_CHOICES;
}

/*
 * Parse a response body into *out.  Never ereports: every failure becomes
 * OPENAI_NOT_JSON with error_message set.
 */
void
openai_parse_response(const char *body, size_t len, OpenAIResponse *out)
{
	ParseState	ps;

	memset(out, 0, sizeof(*out));
	out->prompt_tokens = -1;
	out->completion_tokens = -1;
	if (!readable_as_text(body, len, out))
		return;
	memset(&ps, 0, sizeof(ps));
	ps.out = out;
	if (!run_parser(body, len, &ps))
	{
		/* whatever the callbacks filled in before the failure means nothing */
		out->content = out->finish_reason = out->model = out->refusal = NULL;
		out->tool_arguments = NULL;
		out->error_type = out->error_code = NULL;
		out->prompt_tokens = out->completion_tokens = -1;
		return;
	}
	classify_parsed(&ps, out);
	/* a structured reply through tools: the call's arguments are the answer */
	if (out->status == OPENAI_OK && out->content == NULL && out->tool_arguments != NULL)
		out->content = out->tool_arguments;
}
