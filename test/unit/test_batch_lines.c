/*-------------------------------------------------------------------------
 *
 * test_batch_lines.c
 *		C unit tests of src/batch_lines.c (the lines of a Batch API file),
 *		run without a server.
 *
 * Lines written are read back; output and error lines as OpenAI, vLLM's
 * run-batch and the mock write them are read, and hostile ones (not JSON,
 * a NUL byte, invalid UTF-8, no custom_id, another program's custom_id,
 * deep nesting, a string body) never throw and name their request when the
 * bytes allow.  Output is TAP.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <string.h>

#include "fuzz_backend.h"
#include "batch_lines.h"

static int	tests = 0;
static int	failures = 0;

static void
check(bool ok, const char *what)
{
	tests++;
	if (!ok)
		failures++;
	printf("%s %d - %s\n", ok ? "ok" : "not ok", tests, what);
}

static bool
body_is(const BatchLine *bl, const char *expected)
{
	return bl->body != NULL && bl->body_len == strlen(expected) &&
		memcmp(bl->body, expected, bl->body_len) == 0;
}

static void
read_str(const char *line, BatchLine *bl)
{
	batch_line_read(line, strlen(line), bl);
}

int
main(int argc, char **argv)
{
	StringInfoData buf;
	BatchLine	bl;
	char	   *deep;
	const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi \\\"there\\\"\"}],\"max_tokens\":5}";

	/* one arena for the whole run: the lines' strings live in it */
	fuzz_backend_begin(-1);

	/* a request line */
	initStringInfo(&buf);
	batch_line_write(&buf, 42, body, strlen(body));
	check(strcmp(buf.data, psprintf("{\"custom_id\":\"request-42\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":%s}\n", body)) == 0,
		  "a request line: custom_id request-N, POST, the chat URL, the body as it is, one line");

	/* an output line (OpenAI's shape) */
	read_str("{\"id\":\"batch_req_1\",\"custom_id\":\"request-42\",\"response\":{\"status_code\":200,\"request_id\":\"r\","
			 "\"body\":{\"id\":\"c\",\"choices\":[{\"message\":{\"content\":\"x}y\"}}],\"usage\":{\"prompt_tokens\":3}}},\"error\":null}", &bl);
	check(bl.readable && bl.answered && bl.request_id == 42 && bl.status_code == 200,
		  "an output line: its request, answered, status 200");
	check(body_is(&bl, "{\"id\":\"c\",\"choices\":[{\"message\":{\"content\":\"x}y\"}}],\"usage\":{\"prompt_tokens\":3}}"),
		  "an output line: the body's raw JSON, exactly, braces inside strings included");

	/* fields in another order, spaces (vLLM run-batch writes "id" last) */
	read_str("{ \"response\" : { \"body\" : {\"a\": [1, {\"b\": 2}]} , \"status_code\" : 500 } , \"error\": null, \"custom_id\" : \"request-7\" }", &bl);
	check(bl.readable && bl.answered && bl.request_id == 7 && bl.status_code == 500 &&
		  body_is(&bl, "{\"a\": [1, {\"b\": 2}]}"),
		  "fields in any order and spacing: request, status 500, body");

	/* an error line: no response */
	read_str("{\"id\":\"batch_req_2\",\"custom_id\":\"request-9\",\"response\":null,"
			 "\"error\":{\"code\":\"batch_expired\",\"message\":\"not run in time\"}}", &bl);
	check(bl.readable && !bl.answered && bl.request_id == 9 &&
		  strcmp(bl.error_code, "batch_expired") == 0 && strcmp(bl.error_message, "not run in time") == 0,
		  "an expired line: its request, not answered, the error's code and message");

	/* a body that is a string (a plain-text error) */
	read_str("{\"custom_id\":\"request-3\",\"response\":{\"status_code\":502,\"body\":\"Bad gateway\"},\"error\":null}", &bl);
	check(bl.readable && bl.answered && bl.status_code == 502 && body_is(&bl, "Bad gateway"),
		  "a string body: read as its text");

	/* not ours, or no custom_id */
	read_str("{\"custom_id\":\"task-3\",\"response\":{\"status_code\":200,\"body\":{}}}", &bl);
	check(!bl.readable && bl.request_id == 0, "another program's custom_id: not ours");
	read_str("{\"custom_id\":\"request-12x\",\"response\":null}", &bl);
	check(!bl.readable && bl.request_id == 0, "request-12x: not a request id");
	read_str("{\"custom_id\":\"request-99999999999999999999\",\"response\":null}", &bl);
	check(!bl.readable && bl.request_id == 0, "an id too long for bigint: refused, no overflow");
	read_str("{\"response\":{\"status_code\":200,\"body\":{}}}", &bl);
	check(!bl.readable && bl.request_id == 0 && bl.error_message != NULL, "no custom_id: unreadable, saying so");

	/* hostile bytes: still matched to the request by its custom_id */
	{
		char		line[] = "{\"custom_id\":\"request-5\",\"response\":{\"status_code\":200,\"body\":{\"content\":\"a\0b\"}}}";

		batch_line_read(line, sizeof(line) - 1, &bl);
		check(!bl.readable && bl.request_id == 5 && strstr(bl.error_message, "NUL") != NULL,
			  "a NUL byte: unreadable, but its request is known");
	}
	read_str("{\"custom_id\": \"request-6\",\"response\":{\"status_code\":200,\"body\":{\"content\":\"\xff\xfe\"}}}", &bl);
	check(!bl.readable && bl.request_id == 6 && strstr(bl.error_message, "UTF-8") != NULL,
		  "invalid UTF-8: unreadable, its request known");
	read_str("{\"custom_id\":\"request-8\",\"response\":{\"status_code\":200,\"body\":{\"content\":\"cut", &bl);
	check(!bl.readable && bl.request_id == 8 && strstr(bl.error_message, "not valid JSON") != NULL,
		  "a line cut short: unreadable, its request known");
	read_str("{\"body\":\"the text \\\"custom_id\\\":\\\"request-77\\\" inside a string\"}", &bl);
	check(bl.request_id == 0, "a custom_id written inside a string is not taken for the line's");
	read_str("garbage", &bl);
	check(!bl.readable && bl.request_id == 0, "garbage: unreadable, no request");
	batch_line_read("", 0, &bl);
	check(!bl.readable && bl.request_id == 0, "an empty line: unreadable");

	/* nesting deep enough to hit the parser's stack check: caught */
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"custom_id\":\"request-4\",\"response\":{\"status_code\":200,\"body\":");
	for (int i = 0; i < 100000; i++)
		appendStringInfoChar(&buf, '[');
	deep = buf.data;
	batch_line_read(deep, strlen(deep), &bl);
	check(!bl.readable && bl.request_id == 4, "100,000 nested arrays: no crash, unreadable, its request known");

	{
		FuzzBackendStats st;

		/* (aborts if the parser left the error machinery unbalanced) */
		fuzz_backend_end(&st);
		check(st.depth_error, "the deep nesting was stopped by the stack-depth check, and caught");
	}
	printf("1..%d\n", tests);
	return failures == 0 ? 0 : 1;
}
