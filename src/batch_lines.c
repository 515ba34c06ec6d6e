/*-------------------------------------------------------------------------
 *
 * batch_lines.c
 *		The lines of a Batch API file, as OpenAI (and vLLM's run-batch, and
 *		the mock) write them.  A request line:
 *
 *	 {"custom_id":"request-42","method":"POST","url":"/v1/chat/completions","body":{...}}
 *
 *		An output line (a 2xx answer) or error line (any other answer, or
 *		none):
 *
 *	 {"id":"batch_req_..","custom_id":"request-42",
 *	  "response":{"status_code":200,"request_id":"..","body":{...}},"error":null}
 *	 {"id":"batch_req_..","custom_id":"request-43","response":null,
 *	  "error":{"code":"batch_expired","message":".."}}
 *
 * A custom_id names the swarm.requests row, nothing else: lines come back
 * in any order and are matched by it.  Reading a line finds the custom_id,
 * the status code, the body's raw JSON (handed to the same reading of a
 * reply as the synchronous path: openai.c through outcome.c) and the error,
 * with PostgreSQL's JSON parser in one pass.  A line that is not JSON (raw
 * NUL bytes or invalid UTF-8 inside a completion, say) is still matched to
 * its request when its custom_id can be found in the bytes: the request
 * then fails or is retried as an unreadable answer, never lost.
 *
 * Never throws on hostile input, as openai.c: errors of the parser (deep
 * nesting, memory) are caught and make the line unreadable.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"

#include "batch_lines.h"

#define CUSTOM_ID_PREFIX "request-"

/* One request line; body is the request's JSON, written as it is. */
void
batch_line_write(StringInfo out, int64 request_id, const char *body, int body_len)
{
	appendStringInfo(out, "{\"custom_id\":\"" CUSTOM_ID_PREFIX INT64_FORMAT "\",\"method\":\"POST\","
					 "\"url\":\"" BATCH_LINE_URL "\",\"body\":", request_id);
	appendBinaryStringInfo(out, body, body_len);
	appendStringInfoString(out, "}\n");
}

/* request-N -> N; 0 when it is not one of ours */
static int64
parse_custom_id(const char *s, size_t len)
{
	size_t		plen = strlen(CUSTOM_ID_PREFIX);
	int64		v = 0;

	if (len <= plen || len > plen + 19 || memcmp(s, CUSTOM_ID_PREFIX, plen) != 0)
		return 0;
	for (size_t i = plen; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/*
 * The custom_id of a line the parser could not read, found in its bytes:
 * "custom_id" (a key: inside a JSON string its quotes would be escaped),
 * a colon, then our "request-N".
 */
static int64
scan_custom_id(const char *line, size_t len)
{
	static const char key[] = "\"custom_id\"";
	const char *end = line + len;
	const char *p = line;

	while ((p = memmem(p, end - p, key, sizeof(key) - 1)) != NULL)
	{
		const char *q = p + sizeof(key) - 1;
		const char *v;

		while (q < end && (*q == ' ' || *q == '\t'))
			q++;
		if (q < end && *q == ':')
		{
			q++;
			while (q < end && (*q == ' ' || *q == '\t'))
				q++;
			if (q < end && *q == '"')
			{
				v = ++q;
				while (q < end && *q != '"')
					q++;
				if (q < end)
					return parse_custom_id(v, q - v);
			}
		}
		p += sizeof(key) - 1;
	}
	return 0;
}

typedef struct LineState
{
	BatchLine  *out;
	JsonLexContext *lex;
	int			depth;			/* 0 outside, 1 in the line's object, ... */
	const char *field1;			/* the key being read at depth 1 */
	const char *field2;			/* ... and at depth 2 */
	bool		response_object;
	const char *body_start;		/* response.body: where its raw JSON starts */
	int			body_depth;
} LineState;

static inline bool
is(const char *field, const char *name)
{
	return field != NULL && strcmp(field, name) == 0;
}

/* Is an object or array starting at depth 2 the value of response.body? */
static void
on_open(LineState *ls)
{
	if (ls->depth == 1 && is(ls->field1, "response"))
		ls->response_object = true;
	if (ls->depth == 2 && is(ls->field1, "response") && is(ls->field2, "body") &&
		ls->body_start == NULL)
	{
		ls->body_start = ls->lex->token_start;
		ls->body_depth = ls->depth;
	}
	ls->depth++;
}

static void
on_object_start(void *state)
{
	on_open(state);
}

static void
on_array_start(void *state)
{
	on_open(state);
}

static void
on_end(void *state)
{
	LineState  *ls = state;

	ls->depth--;
	if (ls->body_start != NULL && ls->out->body == NULL && ls->depth == ls->body_depth)
	{
		const char *end = ls->lex->prev_token_terminator;

		if (end != NULL && end > ls->body_start)
		{
			ls->out->body = ls->body_start;
			ls->out->body_len = end - ls->body_start;
		}
	}
}

static void
on_field_start(void *state, char *fname, bool isnull)
{
	LineState  *ls = state;

	if (ls->depth == 1)
	{
		ls->field1 = fname;
		ls->field2 = NULL;
	}
	else if (ls->depth == 2)
		ls->field2 = fname;
}

static void
on_scalar(void *state, char *token, JsonTokenType type)
{
	LineState  *ls = state;
	BatchLine  *out = ls->out;

	if (ls->depth == 1 && is(ls->field1, "custom_id") && type == JSON_TOKEN_STRING)
		out->request_id = parse_custom_id(token, strlen(token));
	else if (ls->depth == 2 && is(ls->field1, "response"))
	{
		if (is(ls->field2, "status_code") && type == JSON_TOKEN_NUMBER)
			out->status_code = strtol(token, NULL, 10);
		else if (is(ls->field2, "body") && type == JSON_TOKEN_STRING && out->body == NULL)
		{
			/* a body that is a string (a plain-text error page): as its text */
			out->body = token;
			out->body_len = strlen(token);
		}
	}
	else if (ls->depth == 2 && is(ls->field1, "error") && type != JSON_TOKEN_NULL)
	{
		if (is(ls->field2, "code"))
			out->error_code = token;
		else if (is(ls->field2, "message"))
			out->error_message = token;
	}
}

/*
 * Read one line (without its newline) into out.  Strings in out are
 * palloc'd in the caller's context or point into `line`.
 */
void
batch_line_read(const char *line, size_t len, BatchLine *out)
{
	MemoryContext caller = CurrentMemoryContext;
	LineState	ls;
	JsonSemAction sem;
	const char *volatile why = NULL;

	memset(out, 0, sizeof(*out));
	memset(&ls, 0, sizeof(ls));
	ls.out = out;

	if (len == 0)
		why = "an empty line";
	else if (memchr(line, '\0', len) != NULL)
		why = "the line contains a NUL byte";
	else if (!pg_verify_mbstr(PG_UTF8, line, (int) len, true))
		why = "the line is not valid UTF-8";
	if (why == NULL)
	{
		memset(&sem, 0, sizeof(sem));
		sem.semstate = &ls;
		sem.object_start = on_object_start;
		sem.object_end = on_end;
		sem.array_start = on_array_start;
		sem.array_end = on_end;
		sem.object_field_start = on_field_start;
		sem.scalar = on_scalar;
		PG_TRY();
		{
			JsonLexContext *lex = makeJsonLexContextCstringLen((char *) line, (int) len, PG_UTF8, true);
			JsonParseErrorType err;

			ls.lex = lex;
			err = pg_parse_json(lex, &sem);
			if (err != JSON_SUCCESS)
				why = (err == JSON_UNICODE_CODE_POINT_ZERO) ?
					"the line contains \\u0000, which PostgreSQL text cannot store" :
					psprintf("the line is not valid JSON: %s", json_errdetail(err, lex));
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(caller);
			edata = CopyErrorData();
			FlushErrorState();
			why = psprintf("the line could not be parsed: %s", edata->message);
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
	if (why != NULL)
	{
		memset(out, 0, sizeof(*out));
		out->request_id = scan_custom_id(line, len);
		out->error_message = pstrdup(why);
		return;
	}
	out->readable = out->request_id != 0;
	out->answered = ls.response_object && out->status_code > 0;
	if (!out->readable)
		out->error_message = pstrdup("the line has no custom_id of pg_swarm's");
}
