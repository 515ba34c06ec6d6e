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
 *        {"role":"user","content":U}],"max_tokens":N}
 * max_tokens (rather than max_completion_tokens) is what every
 * OpenAI-compatible server accepts.
 */
void
openai_build_request(StringInfo buf, const char *model, int max_tokens,
					 const char *system_message, const char *user_message)
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
	appendStringInfo(buf, "}],\"max_tokens\":%d}", max_tokens);
}

/*
 * Parser state.  `field[d]` is the key being read at object depth d and
 * `index[d]` the element index in an array at depth d (depth counts every
 * object or array entered; the top-level object is depth 1).
 */
#define MAX_TRACKED_DEPTH 6

typedef struct ParseState
{
	OpenAIResponse *out;
	int			depth;
	const char *field[MAX_TRACKED_DEPTH + 1];
	int			index[MAX_TRACKED_DEPTH + 1];
	bool		is_array[MAX_TRACKED_DEPTH + 1];
	bool		saw_choice0;
	bool		saw_error;
	bool		flat_error;		/* vLLM < 0.10: {"object":"error","message":...} */
	char	   *flat_message;
	char	   *flat_type;
	char	   *flat_code;
} ParseState;

static inline bool
at(ParseState *ps, int d, const char *name)
{
	return d <= MAX_TRACKED_DEPTH && !ps->is_array[d] &&
		ps->field[d] != NULL && strcmp(ps->field[d], name) == 0;
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

static void
on_object_start(void *state)
{
	ParseState *ps = state;

	enter(ps, false);
	/* choices[0] itself */
	if (ps->depth == 3 && at(ps, 1, "choices") && ps->is_array[2] && ps->index[2] == 0)
		ps->saw_choice0 = true;
	if (ps->depth == 2 && at(ps, 1, "error"))
		ps->saw_error = true;
}

static void
on_array_start(void *state)
{
	enter((ParseState *) state, true);
}

static void
on_end(void *state)
{
	((ParseState *) state)->depth--;
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
	int			d = ps->depth;

	if (d == 1)
	{
		if (at(ps, 1, "model") && type == JSON_TOKEN_STRING)
			out->model = value;
		else if (at(ps, 1, "object") && value && strcmp(value, "error") == 0)
			ps->flat_error = true;
		else if (at(ps, 1, "message"))
			ps->flat_message = value;
		else if (at(ps, 1, "type"))
			ps->flat_type = value;
		else if (at(ps, 1, "code"))
			ps->flat_code = value;
		else if (at(ps, 1, "error") && type == JSON_TOKEN_STRING)
		{
			/* some servers send {"error": "message"} */
			ps->saw_error = true;
			out->error_message = value;
		}
		return;
	}

	/* choices[0].finish_reason */
	if (d == 3 && at(ps, 1, "choices") && ps->index[2] == 0 && at(ps, 3, "finish_reason"))
	{
		out->finish_reason = value;
		return;
	}
	/* choices[0].message.content */
	if (d == 4 && at(ps, 1, "choices") && ps->index[2] == 0 &&
		at(ps, 3, "message") && at(ps, 4, "content"))
	{
		out->content = (type == JSON_TOKEN_STRING) ? value : NULL;
		return;
	}
	if (d == 2 && at(ps, 1, "usage"))
	{
		if (at(ps, 2, "prompt_tokens"))
			out->prompt_tokens = token_to_int(token, type);
		else if (at(ps, 2, "completion_tokens"))
			out->completion_tokens = token_to_int(token, type);
		return;
	}
	if (d == 2 && at(ps, 1, "error"))
	{
		if (at(ps, 2, "message"))
			out->error_message = value;
		else if (at(ps, 2, "type"))
			out->error_type = value;
		else if (at(ps, 2, "code"))
			out->error_code = value;
	}
}

/*
 * Parse a response body into *out.  Never ereports: every failure becomes
 * OPENAI_NOT_JSON with error_message set.
 */
void
openai_parse_response(const char *body, size_t len, OpenAIResponse *out)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ParseState	ps;
	JsonSemAction sem;

	memset(out, 0, sizeof(*out));
	out->prompt_tokens = -1;
	out->completion_tokens = -1;

	if (len == 0)
	{
		out->status = OPENAI_NOT_JSON;
		out->error_message = pstrdup("empty response body");
		return;
	}
	if (memchr(body, '\0', len) != NULL)
	{
		out->status = OPENAI_NOT_JSON;
		out->error_message = pstrdup("response body contains a NUL byte");
		return;
	}
	if (!pg_verify_mbstr(PG_UTF8, body, (int) len, true))
	{
		out->status = OPENAI_NOT_JSON;
		out->error_message = pstrdup("response body is not valid UTF-8");
		return;
	}

	memset(&ps, 0, sizeof(ps));
	ps.out = out;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &ps;
	sem.object_start = on_object_start;
	sem.object_end = on_end;
	sem.array_start = on_array_start;
	sem.array_end = on_end;
	sem.object_field_start = on_field_start;
	sem.array_element_start = on_element_start;
	sem.scalar = on_scalar;

	/*
	 * The parser itself only returns error codes, but deep nesting trips
	 * check_stack_depth() and allocation may fail; catch those too.  Nothing
	 * but memory is touched inside, so flushing the error state is safe.
	 */
	PG_TRY();
	{
		JsonLexContext *lex = makeJsonLexContextCstringLen((char *) body, (int) len,
														   PG_UTF8, true);
		JsonParseErrorType err = pg_parse_json(lex, &sem);

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

	if (out->status == OPENAI_NOT_JSON)
	{
		/* whatever the callbacks filled in before the failure means nothing */
		out->content = out->finish_reason = out->model = NULL;
		out->error_type = out->error_code = NULL;
		out->prompt_tokens = out->completion_tokens = -1;
		return;
	}

	if (ps.saw_error || ps.flat_error)
	{
		out->status = OPENAI_ERROR_BODY;
		if (ps.flat_error)
		{
			out->error_message = ps.flat_message;
			out->error_type = ps.flat_type;
			out->error_code = ps.flat_code;
		}
		if (out->error_message == NULL)
			out->error_message = pstrdup("(no message)");
		return;
	}
	out->status = ps.saw_choice0 ? OPENAI_OK : OPENAI_NO_CHOICES;
}
