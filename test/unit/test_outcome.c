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
 *	 - recorded provider replies, the .http files of test/fixtures/replies,
 *	   each checked
 *	   against its row of MANIFEST.tsv (outcome, signal, expected text).
 * Output is TAP: "ok N - ..." / "not ok N - ...", then "1..N".
 *
 * Usage: test_outcome FIXTURE_DIR   (see test/unit/run_unit.sh)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
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
		case SWARM_SIGNAL_UNREACHABLE:
			return "unreachable";
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

static SwarmScrubFn test_scrub = NULL;

#define TEST_KEY "sk-unit-test-secret-0123456789abcdef"

static void
scrub_test_key(char *text)
{
	char	   *hit;

	while ((hit = strstr(text, TEST_KEY)) != NULL)
		memset(hit, '*', strlen(TEST_KEY));
}

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
	a.scrub = test_scrub;

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

	/* a 404 about the model asked for is the request's fault, one about the URL is the endpoint's */
	r = classify_http(404, "{\"error\":{\"message\":\"The model `no-such-model` does not exist\",\"type\":\"invalid_request_error\",\"code\":\"model_not_found\"}}", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_NEUTRAL, "does not exist (model_not_found)",
		   "404 model_not_found fails, and does not count against the endpoint");
	r = classify_http(404, "{\"object\":\"error\",\"message\":\"The model `x` does not exist.\",\"type\":\"NotFoundError\",\"code\":404}", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_NEUTRAL, "does not exist", "404 naming the model (vLLM) is neutral");
	r = classify_http(404, "<html><head><title>404 Not Found</title></head><body>nginx</body></html>", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_FAILURE, "HTTP 404", "404 HTML page (a wrong URL) counts against the endpoint");
	r = classify_http(404, "{\"detail\":\"Not Found\"}", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_FAILURE, "Not Found", "404 {\"detail\": \"Not Found\"} counts against the endpoint");

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
	strcpy(h.reset_tokens, "7.66s");
	r = classify_http(200, COMPLETION("\"x\""), &h);
	check(r.pause_ms == 7660 && strcmp(r.pause_reason, "token limit reached") == 0,
		  "x-ratelimit-remaining-tokens: 0 pauses until the token reset", NULL);
	strcpy(h.reset_tokens, "6m0s");
	r = classify_http(200, COMPLETION("\"x\""), &h);
	check(r.pause_ms == 300000, "no pause of the endpoint is longer than 5 minutes (reset 6m0s)", NULL);

	memset(&h, 0, sizeof(h));
	{
		char		date[64];
		time_t		year = time(NULL) + 365 * 24 * 3600;
		struct tm	tm;

		gmtime_r(&year, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		strcpy(h.retry_after, date);
	}
	r = classify_http(503, "{\"error\":{\"message\":\"maintenance\"}}", &h);
	check(r.verdict == SWARM_VERDICT_RETRY && r.pause_ms == 300000 && r.retry_after_ms == 3600 * 1000.0,
		  "Retry-After a year away: the endpoint pauses 5 minutes at most, the request waits an hour at most", NULL);

	r = classify_http(529, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", NULL);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_OVERLOAD, "HTTP 529: Overloaded", "529 overloaded is retried, overload");

	r = classify_http(200, "{\"choices\":[{\"message\":{\"content\":null,\"refusal\":\"No.\"},\"finish_reason\":\"stop\"}]}", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_SUCCESS, "the model refused: No.", "a refusal fails, naming it; never an empty message");

	r = classify_http(200, "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
					  "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"act\","
					  "\"arguments\":\"{\\\"action\\\":\\\"like\\\",\\\"post_id\\\":2}\"}},"
					  "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"act\",\"arguments\":\"{}\"}}]},"
					  "\"finish_reason\":\"tool_calls\"}]}", NULL);
	expect(&r, SWARM_VERDICT_OK, SWARM_SIGNAL_SUCCESS, "{\"action\":\"like\",\"post_id\":2}",
		   "a tool call's arguments are the content (the first call's, unescaped)");

	r = classify_http(200, "{\"choices\":[{\"message\":{\"content\":\"{\\\"action\\\":\\\"post\\\"}\",\"tool_calls\":["
					  "{\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":\"stop\"}]}", NULL);
	expect(&r, SWARM_VERDICT_OK, SWARM_SIGNAL_SUCCESS, "{\"action\":\"post\"}",
		   "content, when there is some, wins over a tool call");

	r = classify_http(200, "<html>Sign in</html>", NULL);
	expect(&r, SWARM_VERDICT_FAIL, SWARM_SIGNAL_NEUTRAL, "the body begins: <html>Sign in</html>",
		   "a 200 that is not JSON fails, quoting it");
}

/* A key the endpoint echoes back is scrubbed before the text is cut short. */
static void
test_scrub_before_clip(void)
{
	char		body[2048];
	char		html[400];
	Result		r;

	/* an error message whose 1,000-byte clip falls inside the key */
	snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%*s%s tail\"}}", 990, "x", TEST_KEY);
	test_scrub = scrub_test_key;
	r = classify_http(401, body, NULL);
	check(strstr(r.text, "sk-unit") == NULL && strstr(r.text, "****") != NULL,
		  "a key cut by the clip of an error message is scrubbed first, whole", r.text);
	/* a non-JSON body whose 200-byte excerpt ends inside the key */
	snprintf(html, sizeof(html), "<html>%*s%s</html>", 185, "y", TEST_KEY);
	r = classify_http(502, html, NULL);
	check(strstr(r.text, "sk-unit") == NULL, "a key cut by a body excerpt is scrubbed first", r.text);
	test_scrub = NULL;
}

static void
test_transport(void)
{
	Result		r;

	r = classify(SWARM_TRANSPORT_TIMEOUT, "Operation timed out after 2000 milliseconds", 0, "", 0, NULL, 0);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_OVERLOAD, "transport error: Operation timed out",
		   "a timeout is retried, overload");
	r = classify(SWARM_TRANSPORT_CONNECT, "Failed to connect", 0, "", 0, NULL, 0);
	expect(&r, SWARM_VERDICT_RETRY, SWARM_SIGNAL_UNREACHABLE, "Failed to connect",
		   "a refused connection is retried, and cuts the limit and counts towards the breaker");
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

/* ---- recorded provider replies ---- */

static char *
read_file(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n + 1);
	if (fread(buf, 1, n, f) != (size_t) n)
		n = 0;
	buf[n] = '\0';
	fclose(f);
	*len = n;
	return buf;
}

/* Copy a header's value into the field outcome.c reads, if it is one of them. */
static void
note_header(SwarmReplyHeaders *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
	static const struct
	{
		const char *name;
		size_t		offset;
		size_t		size;
	}			wanted[] = {
#define H(name, field) {name, offsetof(SwarmReplyHeaders, field), sizeof(((SwarmReplyHeaders *) 0)->field)},
		SWARM_REPLY_HEADERS(H)
#undef H
	};

	for (int i = 0; i < lengthof(wanted); i++)
		if (strlen(wanted[i].name) == nlen && strncasecmp(wanted[i].name, name, nlen) == 0)
		{
			size_t		n = Min(vlen, wanted[i].size - 1);

			memcpy((char *) h + wanted[i].offset, value, n);
			((char *) h + wanted[i].offset)[n] = '\0';
		}
}

/*
 * One recorded reply: status line, headers, an empty line, the body; run it
 * through outcome_of_attempt as the engine would hand it over.
 */
static bool
classify_fixture(const char *path, Result *r, char *why, size_t whylen)
{
	size_t		len;
	char	   *raw = read_file(path, &len);
	char	   *p;
	char	   *end;
	long		status;
	SwarmReplyHeaders h;

	if (raw == NULL)
	{
		snprintf(why, whylen, "cannot read %s", path);
		return false;
	}
	memset(&h, 0, sizeof(h));
	end = raw + len;
	if (sscanf(raw, "HTTP/%*s %ld", &status) != 1)
	{
		snprintf(why, whylen, "no status line in %s", path);
		free(raw);
		return false;
	}
	p = strchr(raw, '\n') + 1;
	while (p < end && *p != '\n' && !(p[0] == '\r' && p[1] == '\n'))
	{
		char	   *eol = memchr(p, '\n', end - p);
		char	   *colon = memchr(p, ':', (eol ? eol : end) - p);
		char	   *v;
		char	   *vend = eol ? eol : end;

		if (colon != NULL)
		{
			v = colon + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			while (vend > v && (vend[-1] == '\r' || vend[-1] == ' '))
				vend--;
			note_header(&h, p, colon - p, v, vend - v);
		}
		if (eol == NULL)
			break;
		p = eol + 1;
	}
	p += (*p == '\r') ? 2 : 1;	/* the empty line */
	*r = classify(SWARM_TRANSPORT_OK, NULL, status, p, end - p, &h, time(NULL));
	free(raw);
	return true;
}

static void
test_fixtures(const char *dir)
{
	char		path[1024];
	size_t		len;
	char	   *manifest;
	char	   *line;
	char	   *save = NULL;
	int			rows = 0;

	snprintf(path, sizeof(path), "%s/MANIFEST.tsv", dir);
	manifest = read_file(path, &len);
	check(manifest != NULL, "the corpus of recorded provider replies is there", path);
	if (manifest == NULL)
		return;
	for (line = strtok_r(manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		char	   *cols[7];
		int			ncols = 0;
		char	   *c = line;
		Result		r;
		char		what[256];
		char		detail[2600];
		const char *want_verdict;
		bool		ok;

		if (strncmp(line, "name\t", 5) == 0)
			continue;
		while (ncols < 7)
		{
			char	   *tab = strchr(c, '\t');

			cols[ncols++] = c;
			if (tab == NULL)
				break;
			*tab = '\0';
			c = tab + 1;
		}
		if (ncols < 6)
			continue;
		snprintf(path, sizeof(path), "%s/%s.http", dir, cols[0]);
		snprintf(what, sizeof(what), "%s (%s): %s, %s", cols[0], cols[1], cols[3], cols[4]);
		if (!classify_fixture(path, &r, detail, sizeof(detail)))
		{
			check(false, what, detail);
			continue;
		}
		want_verdict = cols[3];
		ok = strcmp(verdict_name(r.verdict), want_verdict) == 0 &&
			strcmp(signal_name(r.signal), cols[4]) == 0;
		if (r.verdict == SWARM_VERDICT_OK)
			ok = ok && strcmp(r.text, cols[5]) == 0;	/* the content exactly */
		else
			ok = ok && strstr(r.text, cols[5]) != NULL; /* the error names it */
		snprintf(detail, sizeof(detail), "got %s/%s \"%.2000s\"", verdict_name(r.verdict),
				 signal_name(r.signal), r.text);
		check(ok, what, detail);
		rows++;
	}
	check(rows >= 40, "the corpus holds at least 40 replies", NULL);
	free(manifest);
}

int
main(int argc, char **argv)
{
	test_header_values();
	test_replies();
	test_transport();
	test_scrub_before_clip();
	test_backoff();
	if (argc > 1)
		test_fixtures(argv[1]);
	printf("1..%d\n", tests);
	return failures > 0 ? 1 : 0;
}
