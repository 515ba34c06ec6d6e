/*-------------------------------------------------------------------------
 *
 * test_outcome.c
 *		C unit tests of src/outcome.c (what an attempt's reply means), run
 *		without a server.
 *
 * src/outcome.c and src/openai.c are compiled exactly as in the extension;
 * test/fuzz/fuzz_backend.c stands in for the few backend pieces they use
 * (palloc, ereport inside the parser's PG_TRY), and libpgcommon provides the
 * JSON parser.  Two kinds of cases:
 *	 - written here: header values (durations, Retry-After as seconds or a
 *	   date), transport faults, statuses, x-should-retry, pauses, backoff;
 *	 - recorded provider replies, test/fixtures/replies/*.http, each checked
 *	   against its row of MANIFEST.tsv (outcome, signal, expected text).
 * Output is TAP: "ok N - ..." / "not ok N - ...", then "1..N".
 *
 * Usage: test_outcome FIXTURE_DIR   (see test/unit/run_unit.sh)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fuzz_backend.h"
#include "outcome.h"

static int	tests = 0;
static int	failures = 0;

static void
check(bool ok, const char *what, const char *detail)
{
	tests++;
	if (!ok)
		failures++;
	printf("%s %d - %s\n", ok ? "ok" : "not ok", tests, what);
	if (!ok && detail)
		printf("#   %s\n", detail);
}

static const char *
verdict_name(SwarmVerdict v)
{
	return v == SWARM_VERDICT_OK ? "ok" : v == SWARM_VERDICT_RETRY ? "retry" : "fail";
}

static const char *
signal_name(SwarmSignal s)
{
	switch (s)
	{
		case SWARM_SIGNAL_SUCCESS:
			return "success";
		case SWARM_SIGNAL_OVERLOAD:
			return "overload";
		case SWARM_SIGNAL_FAILURE:
			return "failure";
		case SWARM_SIGNAL_NEUTRAL:
			return "neutral";
	}
	return "?";
}

/* Run outcome_of_attempt on one reply; fills *out (strings copied to static buffers). */
typedef struct Result
{
	SwarmVerdict verdict;
	SwarmSignal signal;
	char		text[2048];		/* content when ok (or <null>), else the error */
	double		retry_after_ms;
	double		pause_ms;
	char		pause_reason[64];
	int64		tokens_used;
} Result;

static Result
classify(SwarmTransport transport, const char *transport_error, long status,
		 const char *body, size_t body_len, const SwarmReplyHeaders *headers, time_t now)
{
	SwarmAttempt a;
	SwarmOutcome out;
	Result		r;
	FuzzBackendStats st;

	memset(&a, 0, sizeof(a));
	a.transport = transport;
	a.transport_error = transport_error;
	a.status = status;
	a.body = body;
	a.body_len = body_len;
	a.headers = headers;
	a.max_response_bytes = 8 * 1024 * 1024;
	a.wall_clock = now;

	fuzz_backend_begin(-1);
	outcome_of_attempt(&a, &out);
	memset(&r, 0, sizeof(r));
	r.verdict = out.verdict;
	r.signal = out.signal;
	if (out.verdict == SWARM_VERDICT_OK)
		snprintf(r.text, sizeof(r.text), "%s", out.reply.content ? out.reply.content : "<null>");
	else
		snprintf(r.text, sizeof(r.text), "%s", out.error ? out.error : "<no error>");
	r.retry_after_ms = out.retry_after_ms;
	r.pause_ms = out.pause_ms;
	snprintf(r.pause_reason, sizeof(r.pause_reason), "%s", out.pause_reason ? out.pause_reason : "");
	r.tokens_used = out.tokens_used;
	fuzz_backend_end(&st);
	return r;
}

static Result
classify_http(long status, const char *body, const SwarmReplyHeaders *headers)
{
	return classify(SWARM_TRANSPORT_OK, NULL, status, body, strlen(body), headers, time(NULL));
}

static void
expect(const Result *r, SwarmVerdict verdict, SwarmSignal signal, const char *text, const char *what)
{
	char		detail[2600];
	bool		ok = r->verdict == verdict && r->signal == signal &&
		(text == NULL || strstr(r->text, text) != NULL);

	snprintf(detail, sizeof(detail), "got %s/%s \"%.2000s\", want %s/%s containing \"%s\"",
			 verdict_name(r->verdict), signal_name(r->signal), r->text,
			 verdict_name(verdict), signal_name(signal), text ? text : "");
	check(ok, what, detail);
}

#define COMPLETION(content) \
	"{\"id\":\"x\",\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":[{\"index\":0," \
	"\"message\":{\"role\":\"assistant\",\"content\":" content "},\"finish_reason\":\"stop\"}]," \
	"\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}"

static void
test_header_values(void)
{
	time_t		now = 1700000000;
	char		date[64];
	struct tm	tm;
	time_t		later = now + 3;

	check(outcome_parse_duration_ms("1s") == 1000, "duration 1s", NULL);
	check(outcome_parse_duration_ms("6m0s") == 360000, "duration 6m0s", NULL);
	check(fabs(outcome_parse_duration_ms("2m59.56s") - 179560) < 0.01, "duration 2m59.56s", NULL);
	check(outcome_parse_duration_ms("20ms") == 20, "duration 20ms", NULL);
	check(outcome_parse_duration_ms("7.66s") == 7660, "duration 7.66s", NULL);
	check(outcome_parse_duration_ms("1h2m") == 3720000, "duration 1h2m", NULL);
	check(outcome_parse_duration_ms("20") == 20000, "duration 20 (plain seconds, Azure)", NULL);
	check(outcome_parse_duration_ms("-1") < 0 && outcome_parse_duration_ms("0") < 0,
		  "duration -1 and 0 mean unknown", NULL);
	check(outcome_parse_duration_ms("soon") < 0 && outcome_parse_duration_ms("") < 0,
		  "duration: garbage and empty are unknown", NULL);

	check(outcome_parse_retry_after("2", false, now) == 2000, "Retry-After: 2 is 2 s", NULL);
	check(outcome_parse_retry_after("1.5", false, now) == 1500, "Retry-After: 1.5 is 1.5 s", NULL);
	check(outcome_parse_retry_after("300", true, now) == 300, "retry-after-ms: 300 is 300 ms", NULL);
	check(outcome_parse_retry_after("-3", false, now) < 0, "Retry-After: negative is unusable", NULL);
	check(outcome_parse_retry_after("2 apples", false, now) < 0, "Retry-After: trailing garbage is unusable", NULL);
	gmtime_r(&later, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	check(outcome_parse_retry_after(date, false, now) == 3000, "Retry-After as an HTTP date 3 s ahead is 3 s", date);
	later = now - 60;
	gmtime_r(&later, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	check(outcome_parse_retry_after(date, false, now) == 0, "Retry-After as a past date is 0", date);
	check(outcome_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", true, now) < 0,
		  "retry-after-ms does not take a date", NULL);
}

static void
test_replies(void)
{
	SwarmReplyHeaders h;
	Result		r;

	r = classify_http(200, COMPLETION("\"hello\""), NULL);
	expect(&r, SWARM_VERDICT_OK, SWARM_SIGNAL_SUCCESS, "hello", "200 completion is kept");
	check(r.tokens_used == 7, "usage: prompt + completion tokens", NULL);

	r = classify_http(200, COMPLETION("null"), NULL);
	expect(&r, SWARM_VERDICT_OK, SWARM_SIGNAL_SUCCESS, "<null>", "200 with null content is kept as NULL");

	r = classify_http(200, "{\"choices\":[]}", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_NEUTRAL, "response has no choices", "200 without choices fails");

	r = classify_http(200, "{\"choices\":[{\"message\":{\"content\":\"x\"", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_NEUTRAL, "not valid JSON", "200 with truncated JSON fails, not retried");

	r = classify_http(200, "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_NEUTRAL, "endpoint returned an error with status 200: boom",
		   "200 carrying an error body fails");

	r = classify_http(400, "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\"}}", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_NEUTRAL, "HTTP 400: bad (context_length_exceeded)", "400 fails at once");

	r = classify_http(401, "{\"error\":{\"message\":\"no key\"}}", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_FAILURE, "HTTP 401: no key", "401 fails and counts against the endpoint");

	r = classify_http(429, "{\"error\":{\"message\":\"slow down\",\"code\":\"rate_limit_exceeded\"}}", NULL);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_OVERLOAD, "HTTP 429: slow down", "429 rate limit is retried, overload");

	r = classify_http(429, "{\"error\":{\"message\":\"pay up\",\"code\":\"insufficient_quota\"}}", NULL);
	check(r.verdict == SWARM_VERDICT_FAIL && r.pause_ms == 60000 && strcmp(r.pause_reason, "quota exhausted") == 0,
		  "429 insufficient_quota fails and pauses the endpoint a minute", r.text);

	r = classify_http(500, "{\"error\":{\"message\":\"oops\"}}", NULL);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_FAILURE, "HTTP 500: oops", "500 is retried");

	r = classify_http(502, "<html><body>Bad \x01 Gateway</body></html>", NULL);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_FAILURE, "HTTP 502: <html><body>Bad   Gateway",
		   "502 HTML is retried, quoted with control bytes blanked");

	r = classify_http(503, "", NULL);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_OVERLOAD, "HTTP 503", "503 with no body is retried, overload");

	memset(&h, 0, sizeof(h));
	strcpy(h.should_retry, "false");
	r = classify_http(500, "{\"error\":{\"message\":\"x\"}}", &h);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_FAILURE, NULL, "x-should-retry: false forbids retrying a 500");
	strcpy(h.should_retry, "true");
	r = classify_http(400, "{\"error\":{\"message\":\"x\"}}", &h);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_NEUTRAL, NULL, "x-should-retry: true retries a 400");

	memset(&h, 0, sizeof(h));
	strcpy(h.retry_after_ms, "300");
	strcpy(h.retry_after, "30");
	r = classify_http(429, "{\"error\":{\"message\":\"x\"}}", &h);
	check(r.retry_after_ms == 300 && r.pause_ms == 300 && strcmp(r.pause_reason, "Retry-After") == 0,
		  "retry-after-ms wins over retry-after, and pauses the endpoint", NULL);

	memset(&h, 0, sizeof(h));
	strcpy(h.retry_after, "99999999");
	r = classify_http(429, "{\"error\":{\"message\":\"x\"}}", &h);
	check(r.retry_after_ms == 3600 * 1000.0, "a huge Retry-After is capped at an hour", NULL);

	memset(&h, 0, sizeof(h));
	strcpy(h.remaining_requests, "0");
	strcpy(h.reset_requests, "2s");
	r = classify_http(200, COMPLETION("\"x\""), &h);
	check(r.verdict == SWARM_VERDICT_OK && r.pause_ms == 2000 &&
		  strcmp(r.pause_reason, "request limit reached") == 0,
		  "x-ratelimit-remaining-requests: 0 with a reset pauses the endpoint until it", NULL);
	strcpy(h.remaining_requests, "5");
	strcpy(h.remaining_tokens, "0");
	strcpy(h.reset_tokens, "6m0s");
	r = classify_http(200, COMPLETION("\"x\""), &h);
	check(r.pause_ms == 360000 && strcmp(r.pause_reason, "token limit reached") == 0,
		  "x-ratelimit-remaining-tokens: 0 pauses until the token reset", NULL);
}

static void
test_transport(void)
{
	Result		r;

	r = classify(SWARM_TRANSPORT_TIMEOUT, "Operation timed out after 2000 milliseconds", 0, "", 0, NULL, 0);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_OVERLOAD, "transport error: Operation timed out",
		   "a timeout is retried, overload");
	r = classify(SWARM_TRANSPORT_CONNECT, "Failed to connect", 0, "", 0, NULL, 0);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_FAILURE, "Failed to connect", "a refused connection is retried");
	r = classify(SWARM_TRANSPORT_BROKEN, "Recv failure: Connection reset by peer", 0, "", 0, NULL, 0);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_FAILURE, "Connection reset", "a reset is retried");
	r = classify(SWARM_TRANSPORT_TLS, "SSL certificate problem", 0, "", 0, NULL, 0);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_FAILURE, "SSL certificate problem", "a certificate that does not verify fails");
	r = classify(SWARM_TRANSPORT_TOO_LARGE, "Failure writing output", 0, "", 0, NULL, 0);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_NEUTRAL, "exceeds swarm.max_response_bytes (8388608 bytes)",
		   "a body over the cap fails, no signal");
}

static void
test_backoff(void)
{
	bool		in_range = true;

	for (int i = 0; i < 200; i++)
	{
		double		d0 = outcome_backoff_ms(0, -1);
		double		d3 = outcome_backoff_ms(3, -1);
		double		d9 = outcome_backoff_ms(9, -1);

		in_range &= d0 >= 375 && d0 <= 500 && d3 >= 3000 && d3 <= 4000 && d9 >= 6000 && d9 <= 8000;
	}
	check(in_range, "backoff without a hint: 0.5 s x 2^n, at most 8 s, minus up to 25% jitter", NULL);
	check(outcome_backoff_ms(0, 2000) == 2000, "backoff with a hint is the hint", NULL);
}

int
main(int argc, char **argv)
{
	test_header_values();
	test_replies();
	test_transport();
	test_backoff();
	printf("1..%d\n", tests);
	return failures > 0 ? 1 : 0;
}
