/*-------------------------------------------------------------------------
 *
 * fuzz_openai.c
 *		libFuzzer target for openai_parse_response(), the worker's parser of
 *		chat-completion response bodies.
 *
 * It links the unmodified src/openai.c, PostgreSQL's JSON parser from
 * libpgcommon.a and the backend stand-ins of fuzz_backend.c, so the
 * callbacks fuzzed are the ones the worker runs.  Each input is parsed as a
 * response body twice:
 *
 *  1. as the worker parses it.  Checked, besides ASan/UBSan finding no
 *	   memory error and LeakSanitizer no leak:
 *	   - status is one of the four OpenAIParseStatus values;
 *	   - a body that is not valid UTF-8 or holds a NUL byte is OPENAI_NOT_JSON
 *		 (validity judged by this file's own RFC 3629 decoder, not Postgres's);
 *	   - every string in the result is valid UTF-8; for OPENAI_OK that covers
 *		 content, finish_reason and model, which the worker stores as text;
 *	   - OPENAI_NOT_JSON and OPENAI_ERROR_BODY carry an error_message, and
 *		 OPENAI_OK/OPENAI_NO_CHOICES carry no error fields;
 *	   - token counts are -1 or >= 0;
 *	   - an ERROR (nesting beyond FUZZ_MAX_JSON_DEPTH) is caught inside, the
 *		 error state is flushed and the caller's memory context restored;
 *	   - everything is allocated in the caller's memory context, at most
 *		 16 bytes per input byte plus 16 kB, so a body cannot make the worker
 *		 allocate out of proportion to its size.
 *  2. with an ERROR "out of memory" thrown by one allocation inside the
 *	   PG_TRY, chosen from the input's hash: the result must then be
 *	   OPENAI_NOT_JSON with "response could not be parsed: out of memory",
 *	   with the same checks on the error machinery.
 *
 * The body is copied to end exactly at an inaccessible page, so a read past
 * its end by the parser from libpgcommon.a, which is not instrumented, still
 * crashes.
 *
 * Build and run: test/fuzz/run_fuzz_openai.sh [seconds].
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "openai.h"

#include "fuzz_backend.h"

#define GUARDED_BYTES (1024 * 1024)

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Copy the body so that its last byte is the last readable byte before a
 * PROT_NONE page.  Larger inputs (beyond any -max_len we use) get a plain
 * malloc copy, which ASan guards for instrumented code.
 */
static const char *
guarded_copy(const uint8_t *data, size_t size, char **to_free)
{
	static char *region;

	*to_free = NULL;
	if (size > GUARDED_BYTES)
	{
		*to_free = malloc(size);
		if (*to_free == NULL)
			abort();
		memcpy(*to_free, data, size);
		return *to_free;
	}
	if (region == NULL)
	{
		long		page = sysconf(_SC_PAGESIZE);
		char	   *map = mmap(NULL, GUARDED_BYTES + page, PROT_READ | PROT_WRITE,
							   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (map == MAP_FAILED || mprotect(map + GUARDED_BYTES, page, PROT_NONE) != 0)
			abort();
		region = map;
	}
	memcpy(region + GUARDED_BYTES - size, data, size);
	return region + GUARDED_BYTES - size;
}

/*
 * RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
 * Written independently of Postgres's verifier, which the code under test
 * uses, so that the two check each other.
 */
static bool
utf8_valid(const uint8_t *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		uint8_t		b = s[i];
		uint32_t	cp;
		int			n;

		if (b < 0x80)
		{
			i++;
			continue;
		}
		else if ((b & 0xE0) == 0xC0)
		{
			n = 1;
			cp = b & 0x1F;
		}
		else if ((b & 0xF0) == 0xE0)
		{
			n = 2;
			cp = b & 0x0F;
		}
		else if ((b & 0xF8) == 0xF0)
		{
			n = 3;
			cp = b & 0x07;
		}
		else
			return false;
		if (len - i - 1 < (size_t) n)
			return false;
		for (int k = 1; k <= n; k++)
		{
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000))
			return false;
		if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
			return false;
		i += n + 1;
	}
	return true;
}

static void
check_text(const char *s, const char *what)
{
	if (s != NULL && !utf8_valid((const uint8_t *) s, strlen(s)))
	{
		fprintf(stderr, "field %s is not valid UTF-8\n", what);
		fuzz_fail("a result string is not valid UTF-8");
	}
}

static void
check_response(const OpenAIResponse *r, bool clean_utf8)
{
	if ((unsigned) r->status > (unsigned) OPENAI_ERROR_BODY)
		fuzz_fail("status is not an OpenAIParseStatus value");
	if (!clean_utf8 && r->status != OPENAI_NOT_JSON)
		fuzz_fail("a body with invalid UTF-8 or a NUL byte was not OPENAI_NOT_JSON");
	if (r->prompt_tokens < -1 || r->completion_tokens < -1)
		fuzz_fail("a token count is below -1");

	check_text(r->content, "content");
	check_text(r->finish_reason, "finish_reason");
	check_text(r->model, "model");
	check_text(r->error_message, "error_message");
	check_text(r->error_type, "error_type");
	check_text(r->error_code, "error_code");

	switch (r->status)
	{
		case OPENAI_OK:
		case OPENAI_NO_CHOICES:
			if (r->error_message || r->error_type || r->error_code)
				fuzz_fail("a completion carries error fields");
			break;
		case OPENAI_NOT_JSON:
		case OPENAI_ERROR_BODY:
			if (r->error_message == NULL)
				fuzz_fail("an error result has no error_message");
			break;
	}
}

/* FUZZ_OPENAI_PRINT=1 shows what each input parses to (for replaying files) */
static void
print_response(const OpenAIResponse *r, const char *run)
{
	static const char *const names[] = {"OK", "NOT_JSON", "NO_CHOICES", "ERROR_BODY"};

#define S(x) ((x) ? (x) : "(null)")
	fprintf(stderr, "[%s] status=%s content=%.60s finish_reason=%s model=%s "
			"prompt_tokens=%d completion_tokens=%d error_message=%.120s "
			"error_type=%s error_code=%s\n",
			run, names[r->status], S(r->content), S(r->finish_reason), S(r->model),
			r->prompt_tokens, r->completion_tokens, S(r->error_message),
			S(r->error_type), S(r->error_code));
#undef S
}

static void
print_stats(const FuzzBackendStats *st, const char *run)
{
	fprintf(stderr, "[%s] allocs=%zu (in PG_TRY %zu) bytes=%zu live=%zu/%zu bytes\n",
			run, st->allocs, st->allocs_in_try, st->bytes_requested,
			st->live_chunks, st->live_bytes);
}

/* FNV-1a: picks which allocation fails, the same one for the same input */
static uint64_t
input_hash(const uint8_t *data, size_t size)
{
	uint64_t	h = UINT64_C(14695981039346656037);

	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * UINT64_C(1099511628211);
	return h;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *to_free;
	const char *body = guarded_copy(data, size, &to_free);
	bool		clean_utf8 = utf8_valid(data, size) && memchr(data, '\0', size) == NULL;
	OpenAIResponse r;
	FuzzBackendStats st;
	FuzzBackendStats st2;
	static int	print = -1;

	if (print < 0)
		print = getenv("FUZZ_OPENAI_PRINT") != NULL;

	/* 1: as the worker runs it */
	fuzz_backend_begin(-1);
	openai_parse_response(body, size, &r);
	check_response(&r, clean_utf8);
	if (print)
		print_response(&r, "as the worker");
	fuzz_backend_end(&st);
	if (print)
		print_stats(&st, "as the worker");
	if (st.depth_error && r.status != OPENAI_NOT_JSON)
		fuzz_fail("a stack-depth ERROR did not give OPENAI_NOT_JSON");
	if (st.bytes_requested > 16 * size + 16384)
		fuzz_fail("allocated more than 16 bytes per input byte plus 16 kB");

	/* 2: an ERROR from one allocation inside the PG_TRY */
	if (st.allocs_in_try > 0)
	{
		long		k = (long) (input_hash(data, size) % st.allocs_in_try);

		fuzz_backend_begin(k);
		openai_parse_response(body, size, &r);
		check_response(&r, clean_utf8);
		if (print)
			print_response(&r, "ERROR injected");
		if (r.status != OPENAI_NOT_JSON || r.error_message == NULL ||
			strcmp(r.error_message, "response could not be parsed: out of memory") != 0)
			fuzz_fail("an ERROR inside the parser did not give OPENAI_NOT_JSON with its message");
		fuzz_backend_end(&st2);
		if (print)
			print_stats(&st2, "ERROR injected");
		if (!st2.injected)
			fuzz_fail("the same input took a different allocation path");
	}

	free(to_free);
	return 0;
}
