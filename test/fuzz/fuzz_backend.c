/*-------------------------------------------------------------------------
 *
 * fuzz_backend.c
 *		Just enough of a PostgreSQL backend for src/openai.c to run, unchanged,
 *		inside a libFuzzer binary.
 *
 * src/openai.c is compiled against the server headers exactly as in the
 * extension build.  The JSON parser (jsonapi.o), the UTF-8 tables (wchar.o),
 * StringInfo and psprintf come from Debian's libpgcommon.a/libpgport.a: the
 * same PostgreSQL 15 sources, built for frontend use.  What is left, the
 * backend-only pieces, lives here, each imitating the backend where that
 * matters to openai.c:
 *
 *	palloc & co.	An arena standing for the caller's memory context: every
 *					chunk is a separate malloc (so ASan sees overruns of each
 *					palloc'd string) linked into a list that fuzz_backend_end()
 *					frees, as the worker resets its per-request context.
 *					Allocating while CurrentMemoryContext is not the caller's
 *					context is a failure: openai.c promises its strings live
 *					there.  On request, one allocation inside the PG_TRY throws
 *					ERROR "out of memory" instead, so the PG_CATCH path runs.
 *	ereport(ERROR)	As in a backend: siglongjmp to *PG_exception_stack, with
 *					CurrentMemoryContext left at ErrorContext (errfinish()
 *					throws from there).  CopyErrorData() refuses to run in
 *					ErrorContext or without an error; an ERROR with no PG_TRY
 *					around it is a failure, since in the worker it would end
 *					the process.
 *	check_stack_depth()  PG 15's frontend jsonapi.o does not call it, so a
 *					wrapper around pg_parse_json (linked with
 *					-Wl,--wrap=pg_parse_json) counts nesting in the object and
 *					array start callbacks, where the backend parser checks the
 *					stack, and throws "stack depth limit exceeded" beyond
 *					FUZZ_MAX_JSON_DEPTH levels.
 *	json_errdetail() Backend-only in PG 15.  This one words its messages
 *					differently but reads the lexer state the same way (the
 *					current token from token_start to token_terminator), and
 *					fails if those pointers are outside the input.
 *	pg_verify_mbstr() The backend function is a thin layer over
 *					pg_encoding_verifymbstr() from wchar.o, reproduced here.
 *	pg_mbcliplen()	For UTF-8 only (all the worker speaks), as the backend:
 *					the longest prefix of whole characters within the limit.
 *					(src/outcome.c, tested by test/unit/test_outcome.c, clips
 *					error texts with it.)
 *	escape_json()	Used only by openai_build_request(), which is not fuzzed.
 *
 * pg_unicode_to_server(), which the backend parser uses for \uXXXX escapes,
 * is the identity-to-UTF-8 conversion the frontend parser does, because the
 * worker refuses to run in a database that is not UTF8.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/memnodes.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "fuzz_backend.h"

#define CHUNK_LIVE	UINT64CONST(0x5357524d4c495645)
#define CHUNK_DEAD	UINT64CONST(0x5357524d44454144)

typedef struct FuzzChunk
{
	struct FuzzChunk *prev;
	struct FuzzChunk *next;
	size_t		size;
	uint64		magic;
} FuzzChunk;

StaticAssertDecl(sizeof(FuzzChunk) % MAXIMUM_ALIGNOF == 0,
				 "palloc'd memory must stay MAXALIGNed");

/* the two memory contexts openai.c can see; only their addresses matter */
static MemoryContextData caller_context;
static MemoryContextData error_context;

MemoryContext CurrentMemoryContext = &caller_context;
sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;

static FuzzChunk *chunks;
static FuzzBackendStats stats;
static long fail_alloc = -1;
static bool error_pending;
static char error_message[128];

void
fuzz_fail(const char *what)
{
	fprintf(stderr, "INVARIANT VIOLATED: %s\n", what);
	abort();
}

/* ---------------------------------------------------------------------
 * Errors
 * --------------------------------------------------------------------- */

static void pg_attribute_noreturn()
throw_error(const char *message)
{
	if (PG_exception_stack == NULL)
		fuzz_fail("an ERROR was thrown with no PG_TRY around it");
	if (error_pending)
		fuzz_fail("an ERROR was thrown while another was being handled");
	error_pending = true;
	snprintf(error_message, sizeof(error_message), "%s", message);
	CurrentMemoryContext = &error_context;
	siglongjmp(*PG_exception_stack, 1);
}

void
pg_re_throw(void)
{
	if (!error_pending || PG_exception_stack == NULL)
		fuzz_fail("PG_RE_THROW with no error or no handler");
	siglongjmp(*PG_exception_stack, 1);
}

ErrorData *
CopyErrorData(void)
{
	ErrorData  *edata;

	if (!error_pending)
		fuzz_fail("CopyErrorData() without a pending error");
	if (CurrentMemoryContext == &error_context)
		fuzz_fail("CopyErrorData() called while in ErrorContext");
	edata = palloc0(sizeof(ErrorData));
	edata->elevel = ERROR;
	edata->message = pstrdup(error_message);
	return edata;
}

void
FreeErrorData(ErrorData *edata)
{
	if (edata->message)
		pfree(edata->message);
	pfree(edata);
}

void
FlushErrorState(void)
{
	error_pending = false;
}

/* ---------------------------------------------------------------------
 * Memory
 * --------------------------------------------------------------------- */

static void *
chunk_alloc(Size size, bool zero)
{
	FuzzChunk  *c;

	if (CurrentMemoryContext != &caller_context)
		fuzz_fail("palloc() outside the caller's memory context");
	if (!AllocSizeIsValid(size))
		throw_error("invalid memory alloc request size");

	stats.allocs++;
	if (PG_exception_stack != NULL)
	{
		if (fail_alloc >= 0 && stats.allocs_in_try == (size_t) fail_alloc)
		{
			stats.injected = true;
			stats.allocs_in_try++;
			throw_error("out of memory");
		}
		stats.allocs_in_try++;
	}
	stats.bytes_requested += size;

	c = malloc(sizeof(FuzzChunk) + size);
	if (c == NULL)
		abort();
	c->magic = CHUNK_LIVE;
	c->size = size;
	c->prev = NULL;
	c->next = chunks;
	if (chunks)
		chunks->prev = c;
	chunks = c;
	stats.live_chunks++;
	stats.live_bytes += size;
	/* like RANDOMIZE_ALLOCATED_MEMORY: nobody may rely on palloc zeroing */
	memset(c + 1, zero ? 0 : 0x7f, size);
	return c + 1;
}

static FuzzChunk *
chunk_of(void *pointer)
{
	FuzzChunk  *c = (FuzzChunk *) pointer - 1;

	if (pointer == NULL || c->magic != CHUNK_LIVE)
		fuzz_fail("pfree()/repalloc() of a pointer palloc() did not return");
	return c;
}

void *
palloc(Size size)
{
	return chunk_alloc(size, false);
}

void *
palloc0(Size size)
{
	return chunk_alloc(size, true);
}

void
pfree(void *pointer)
{
	FuzzChunk  *c = chunk_of(pointer);

	if (c->prev)
		c->prev->next = c->next;
	else
		chunks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->magic = CHUNK_DEAD;
	stats.live_chunks--;
	stats.live_bytes -= c->size;
	free(c);
}

/* a fresh chunk every time, so a stale pointer to the old one trips ASan */
void *
repalloc(void *pointer, Size size)
{
	FuzzChunk  *old = chunk_of(pointer);
	void	   *p = chunk_alloc(size, false);

	memcpy(p, pointer, Min(old->size, size));
	pfree(pointer);
	return p;
}

char *
pstrdup(const char *in)
{
	size_t		len = strlen(in);
	char	   *out = palloc(len + 1);

	memcpy(out, in, len + 1);
	return out;
}

char *
pnstrdup(const char *in, Size len)
{
	size_t		n = strnlen(in, len);
	char	   *out = palloc(n + 1);

	memcpy(out, in, n);
	out[n] = '\0';
	return out;
}

void
fuzz_backend_begin(long fail_at)
{
	if (chunks != NULL)
		fuzz_fail("fuzz_backend_begin() without fuzz_backend_end()");
	memset(&stats, 0, sizeof(stats));
	fail_alloc = fail_at;
	error_pending = false;
	CurrentMemoryContext = &caller_context;
	PG_exception_stack = NULL;
	error_context_stack = NULL;
}

void
fuzz_backend_end(FuzzBackendStats *out)
{
	if (error_pending)
		fuzz_fail("returned with the error state not flushed");
	if (PG_exception_stack != NULL || error_context_stack != NULL)
		fuzz_fail("returned with PG_exception_stack or error_context_stack not restored");
	if (CurrentMemoryContext != &caller_context)
		fuzz_fail("returned in a memory context other than the caller's");

	*out = stats;
	while (chunks)
	{
		FuzzChunk  *next = chunks->next;

		chunks->magic = CHUNK_DEAD;
		free(chunks);
		chunks = next;
	}
	fail_alloc = -1;
}

/* ---------------------------------------------------------------------
 * check_stack_depth(), as a wrapper around the parser
 * --------------------------------------------------------------------- */

typedef struct DepthGuard
{
	JsonSemAction *inner;
	int			depth;
} DepthGuard;

static void
guard_enter(DepthGuard *g)
{
	if (++g->depth > FUZZ_MAX_JSON_DEPTH)
	{
		stats.depth_error = true;
		throw_error("stack depth limit exceeded");
	}
}

static void
guard_object_start(void *state)
{
	DepthGuard *g = state;

	guard_enter(g);
	if (g->inner->object_start)
		g->inner->object_start(g->inner->semstate);
}

static void
guard_array_start(void *state)
{
	DepthGuard *g = state;

	guard_enter(g);
	if (g->inner->array_start)
		g->inner->array_start(g->inner->semstate);
}

static void
guard_object_end(void *state)
{
	DepthGuard *g = state;

	g->depth--;
	if (g->inner->object_end)
		g->inner->object_end(g->inner->semstate);
}

static void
guard_array_end(void *state)
{
	DepthGuard *g = state;

	g->depth--;
	if (g->inner->array_end)
		g->inner->array_end(g->inner->semstate);
}

static void
guard_field_start(void *state, char *fname, bool isnull)
{
	DepthGuard *g = state;

	g->inner->object_field_start(g->inner->semstate, fname, isnull);
}

static void
guard_field_end(void *state, char *fname, bool isnull)
{
	DepthGuard *g = state;

	g->inner->object_field_end(g->inner->semstate, fname, isnull);
}

static void
guard_element_start(void *state, bool isnull)
{
	DepthGuard *g = state;

	g->inner->array_element_start(g->inner->semstate, isnull);
}

static void
guard_element_end(void *state, bool isnull)
{
	DepthGuard *g = state;

	g->inner->array_element_end(g->inner->semstate, isnull);
}

static void
guard_scalar(void *state, char *token, JsonTokenType tokentype)
{
	DepthGuard *g = state;

	g->inner->scalar(g->inner->semstate, token, tokentype);
}

extern JsonParseErrorType __real_pg_parse_json(JsonLexContext *lex, JsonSemAction *sem);
extern JsonParseErrorType __wrap_pg_parse_json(JsonLexContext *lex, JsonSemAction *sem);

/*
 * Interpose our callbacks so the nesting depth is seen where the backend
 * parser calls check_stack_depth(); every callback openai.c installed is
 * forwarded unchanged, and none it left NULL is added (apart from the four
 * structural ones, whose presence does not change what the parser does).
 */
JsonParseErrorType
__wrap_pg_parse_json(JsonLexContext *lex, JsonSemAction *sem)
{
	DepthGuard	g = {sem, 0};
	JsonSemAction outer;

	memset(&outer, 0, sizeof(outer));
	outer.semstate = &g;
	outer.object_start = guard_object_start;
	outer.object_end = guard_object_end;
	outer.array_start = guard_array_start;
	outer.array_end = guard_array_end;
	if (sem->object_field_start)
		outer.object_field_start = guard_field_start;
	if (sem->object_field_end)
		outer.object_field_end = guard_field_end;
	if (sem->array_element_start)
		outer.array_element_start = guard_element_start;
	if (sem->array_element_end)
		outer.array_element_end = guard_element_end;
	if (sem->scalar)
		outer.scalar = guard_scalar;
	return __real_pg_parse_json(lex, &outer);
}

/* ---------------------------------------------------------------------
 * The rest
 * --------------------------------------------------------------------- */

bool
pg_verify_mbstr(int encoding, const char *mbstr, int len, bool noError)
{
	if (pg_encoding_verifymbstr(encoding, mbstr, len) == len)
		return true;
	if (!noError)
		throw_error("invalid byte sequence");
	return false;
}

int
pg_mbcliplen(const char *mbstr, int len, int limit)
{
	int			clen = 0;

	while (clen < len && mbstr[clen] != '\0')
	{
		int			l = pg_utf_mblen((const unsigned char *) mbstr + clen);

		if (clen + l > limit)
			break;
		clen += l;
	}
	return clen;
}

/* the current token, copied, after checking the lexer's pointers */
static char *
current_token(JsonLexContext *lex)
{
	const char *end = lex->input + lex->input_length;
	size_t		len;
	char	   *token;

	if (lex->token_start == NULL ||
		lex->token_start < lex->input || lex->token_start > end ||
		lex->token_terminator < lex->token_start || lex->token_terminator > end)
		fuzz_fail("json_errdetail(): token pointers outside the input");
	len = lex->token_terminator - lex->token_start;
	token = palloc(len + 1);
	memcpy(token, lex->token_start, len);
	token[len] = '\0';
	return token;
}

char *
json_errdetail(JsonParseErrorType error, JsonLexContext *lex)
{
	switch (error)
	{
		case JSON_SUCCESS:
			break;
		case JSON_ESCAPING_INVALID:
			return psprintf("invalid escape \"\\%s\"", current_token(lex));
		case JSON_ESCAPING_REQUIRED:
			if (lex->token_terminator < lex->input ||
				lex->token_terminator >= lex->input + lex->input_length)
				fuzz_fail("json_errdetail(): unescaped character outside the input");
			return psprintf("character 0x%02x must be escaped",
							(unsigned char) *lex->token_terminator);
		case JSON_EXPECTED_ARRAY_FIRST:
		case JSON_EXPECTED_ARRAY_NEXT:
		case JSON_EXPECTED_COLON:
		case JSON_EXPECTED_END:
		case JSON_EXPECTED_JSON:
		case JSON_EXPECTED_OBJECT_FIRST:
		case JSON_EXPECTED_OBJECT_NEXT:
		case JSON_EXPECTED_STRING:
			return psprintf("unexpected token \"%s\" (parse error %d)",
							current_token(lex), (int) error);
		case JSON_INVALID_TOKEN:
			return psprintf("invalid token \"%s\"", current_token(lex));
		case JSON_EXPECTED_MORE:
			return "the input ended unexpectedly";
		case JSON_UNICODE_CODE_POINT_ZERO:
			return "\\u0000 cannot be converted to text";
		case JSON_UNICODE_ESCAPE_FORMAT:
			return "\\u must be followed by four hexadecimal digits";
		case JSON_UNICODE_HIGH_ESCAPE:
			/* the backend converts instead; with UTF-8 input neither gets here */
			fuzz_fail("JSON_UNICODE_HIGH_ESCAPE with UTF-8 input");
		case JSON_UNICODE_HIGH_SURROGATE:
			return "high surrogate after a high surrogate";
		case JSON_UNICODE_LOW_SURROGATE:
			return "low surrogate without a high surrogate";
	}
	fuzz_fail("json_errdetail() called with an unknown error code");
}

void
escape_json(StringInfo buf, const char *str)
{
	fuzz_fail("escape_json() is not part of the fuzzed code");
}
