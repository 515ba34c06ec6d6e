/*-------------------------------------------------------------------------
 *
 * outcome.c
 *		The meaning of one HTTP attempt: (how the transfer ended, status,
 *		body, headers) -> keep / retry / fail, the error text, the signal for
 *		the endpoint's policy, and any pause the endpoint asked for.
 *
 * Pure logic: no I/O, no SQL, no shared state, no curl.  It is the one place
 * that decides what a reply means, so a change to "what happens when a
 * request fails" starts and ends here; test/unit/test_outcome.c runs it
 * against recorded provider replies without a server.
 *
 * Retries follow the official OpenAI SDKs.  Retried: 408, 409, 429 and every
 * 5xx (529 included), timeouts, connection failures and broken transfers
 * (resets, empty replies, bad chunking, garbage instead of a status line).
 * Not retried: other 4xx, 402 and a 429 whose code says the quota is
 * exhausted, bodies over swarm.max_response_bytes, certificates that do not
 * verify, a 2xx that cannot be read or whose model refused (its refusal is
 * the error).  The server's x-should-retry header overrides the rule for
 * any HTTP response.  Whether a retry actually happens (attempts left, the
 * job still running) is the request's business (request.c), not ours.
 *
 * Backoff: the server's Retry-After (or retry-after-ms) is honoured, never
 * earlier; without one, min(0.5 s * 2^n, 8 s) shortened by up to 25% random
 * jitter, n being the retries already taken.
 *
 * Signals for the endpoint (endpoint.c): a read reply is SUCCESS; 429, 503,
 * 529, 408 and timeouts are OVERLOAD; a refused or unreachable connection is
 * UNREACHABLE (both); other 5xx, 401/403/404 and broken transfers are
 * FAILURE; the rest (the request's own fault: a 400, a 404 naming the
 * model it asked for; an exhausted quota) is NEUTRAL.  Pauses of the whole endpoint: Retry-After on a 429, 503 or 529,
 * an exhausted quota (one minute), and x-ratelimit-remaining-* at 0 with a
 * reset time; none longer than MAX_PAUSE_MS, whatever the header says (a
 * year-long date is a bogus header, and a reset time is when the whole
 * budget is back, not when the next request may go).
 *
 * Memory: out->error and the strings of out->reply are palloc'd in the
 * caller's context.  Never ereports (the JSON parser's errors are caught in
 * openai.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/pg_prng.h"
#include "mb/pg_wchar.h"

#include "outcome.h"

#define BACKOFF_INITIAL_MS	500.0
#define BACKOFF_MAX_MS		8000.0
/* a hint beyond an hour is treated as a bogus header, not obeyed literally */
#define RETRY_AFTER_MAX_MS	(3600.0 * 1000.0)
/* an exhausted quota will not come back in seconds; an admin can alter the endpoint */
#define QUOTA_PAUSE_MS		(60.0 * 1000.0)
/* no pause of a whole endpoint lasts longer; alter_endpoint() ends one at once */
#define MAX_PAUSE_MS		(5.0 * 60.0 * 1000.0)

/* ---- header values ---- */

/*
 * Retry-After may be seconds (possibly fractional) or an HTTP date;
 * retry-after-ms is milliseconds.  Returns milliseconds from `now`, or -1
 * when absent or unusable.
 */
double
outcome_parse_retry_after(const char *value, bool in_ms, time_t now)
{
	static const char *const date_formats[] = {
		"%a, %d %b %Y %H:%M:%S GMT",	/* IMF-fixdate */
		"%A, %d-%b-%y %H:%M:%S GMT",	/* RFC 850 */
		"%a %b %e %H:%M:%S %Y"	/* asctime */
	};
	char	   *end;
	double		v;

	if (value == NULL || value[0] == '\0')
		return -1;
	v = strtod(value, &end);
	if (end != value)
	{
		while (*end == ' ' || *end == '\r' || *end == '\n')
			end++;
		if (*end == '\0' && v >= 0 && v < 1e9)
			return in_ms ? v : v * 1000.0;
		return -1;
	}
	if (in_ms)
		return -1;
	for (int i = 0; i < lengthof(date_formats); i++)
	{
		struct tm	tm;
		const char *rest;

		memset(&tm, 0, sizeof(tm));
		rest = strptime(value, date_formats[i], &tm);
		if (rest != NULL)
		{
			double		ms = ((double) timegm(&tm) - (double) now) * 1000.0;

			return ms > 0 ? ms : 0;
		}
	}
	return -1;
}

/*
 * x-ratelimit-reset-* values: Go-style durations ("1s", "6m0s", "12ms",
 * "2m59.56s", "1h2m") or plain seconds ("20", Azure).  "-1" and "0" mean
 * unknown.  Returns milliseconds, or -1.
 */
double
outcome_parse_duration_ms(const char *value)
{
	const char *p = value;
	double		total = 0;
	bool		any = false;

	if (p == NULL)
		return -1;
	while (*p == ' ')
		p++;
	while (*p && *p != '\r' && *p != '\n' && *p != ' ')
	{
		char	   *end;
		double		v = strtod(p, &end);

		if (end == p || v < 0)
			return -1;
		p = end;
		if (strncmp(p, "ms", 2) == 0)
		{
			total += v;
			p += 2;
		}
		else if (*p == 'h')
		{
			total += v * 3600000.0;
			p++;
		}
		else if (*p == 'm')
		{
			total += v * 60000.0;
			p++;
		}
		else if (*p == 's' || *p == '\0' || *p == '\r' || *p == '\n' || *p == ' ')
		{
			total += v * 1000.0;
			if (*p == 's')
				p++;
		}
		else
			return -1;
		any = true;
	}
	return (any && total > 0) ? total : -1;
}

/* A non-negative count, or -1 when absent or not a number. */
static int64
parse_count(const char *value)
{
	char	   *end;
	long long	v;

	if (value == NULL || value[0] == '\0')
		return -1;
	v = strtoll(value, &end, 10);
	return (end == value || v < 0) ? -1 : (int64) v;
}

/* 1 for "true", 0 for "false", -1 for anything else or nothing. */
static int
parse_should_retry(const char *value)
{
	if (pg_strncasecmp(value, "true", 4) == 0)
		return 1;
	if (pg_strncasecmp(value, "false", 5) == 0)
		return 0;
	return -1;
}

/* ---- wording ---- */

/* a secret cut by an excerpt's end must still be found whole: look this far past it */
#define SCRUB_MARGIN 512

/*
 * An excerpt of a raw body fit for an error message: at most `max` bytes,
 * control and non-ASCII bytes replaced, so it is always valid text, and
 * secrets scrubbed before it is cut (a key cut in half would survive a scrub
 * made after).
 */
static char *
body_excerpt(const char *body, size_t len, size_t max, SwarmScrubFn scrub)
{
	size_t		n = Min(len, max + SCRUB_MARGIN);
	char	   *s = palloc(n + 4);

	for (size_t i = 0; i < n; i++)
	{
		unsigned char ch = (unsigned char) body[i];

		s[i] = (ch < 0x20 || ch >= 0x7f) ? ' ' : (char) ch;
	}
	s[n] = '\0';
	if (scrub)
		scrub(s);
	n = Min(n, max);
	if (len > max)
	{
		memcpy(s + n, "...", 3);
		n += 3;
	}
	s[n] = '\0';
	return s;
}

/* At most `max` bytes of s, cut on a character boundary, "..." when cut. */
static char *
clip_text(const char *s, int max)
{
	int			len = strlen(s);

	if (len <= max)
		return pstrdup(s);
	return psprintf("%.*s...", pg_mbcliplen(s, len, max), s);
}

/* ---- the rules ---- */

/*
 * Does an error code say the account is out of money or over a spending
 * limit (as opposed to a rate limit that resets within a minute)?
 * insufficient_quota (OpenAI), credit_balance_exhausted, billing_*,
 * *_spend_limit_* (Anthropic), *_usage_limit_exceeded, ...
 */
static bool
is_quota_code(const char *code)
{
	if (code == NULL || strstr(code, "rate_limit") != NULL)
		return false;
	return strcmp(code, "insufficient_quota") == 0 ||
		strstr(code, "credit_balance") != NULL ||
		strstr(code, "billing") != NULL ||
		strstr(code, "spend_limit") != NULL ||
		strstr(code, "_limit_exceeded") != NULL ||
		strstr(code, "_limit_reached") != NULL;
}

/* 402, or a 429 whose code says the quota is gone: waiting seconds will not help. */
static bool
is_quota_status(long status, const char *error_code)
{
	return status == 402 || (status == 429 && is_quota_code(error_code));
}

static bool
status_retryable(long status, const char *error_code)
{
	if (is_quota_status(status, error_code))
		return false;
	return status == 408 || status == 409 || status == 429 || status >= 500;
}

/*
 * A 404 that names the model the request asked for (OpenAI's
 * model_not_found, "The model `x` does not exist" of vLLM, "model 'x' not
 * found" of Ollama) is the request's fault: another request, naming a model
 * the endpoint serves, goes through.  A 404 for the URL itself (an HTML
 * page, FastAPI's {"detail": "Not Found"}) says the endpoint is misplaced.
 */
static bool
is_model_not_found(long status, const char *error_code, const char *message)
{
	if (status != 404)
		return false;
	return (error_code != NULL && strstr(error_code, "model") != NULL) ||
		(message != NULL && (strstr(message, "model") != NULL || strstr(message, "Model") != NULL));
}

/*
 * 429 (a rate limit), 503 and 529 (no capacity now) and 408 ask us to send
 * less: overload.  Other 5xx and 401/403/404 say the endpoint is broken for
 * us: failure, for the breaker.  The rest, an exhausted quota (which pauses
 * the endpoint instead) and a model the endpoint does not serve are the
 * request's own business: whatever a user asks for must not open a breaker
 * that every user's requests go through.
 */
static SwarmSignal
status_signal(long status, const char *error_code, const char *message)
{
	if (is_quota_status(status, error_code) || is_model_not_found(status, error_code, message))
		return SWARM_SIGNAL_NEUTRAL;
	if (status == 429 || status == 503 || status == 529 || status == 408)
		return SWARM_SIGNAL_OVERLOAD;
	if (status >= 500 || status == 401 || status == 403 || status == 404)
		return SWARM_SIGNAL_FAILURE;
	return SWARM_SIGNAL_NEUTRAL;
}

/* The transfer did not bring a complete response. */
static void
transport_outcome(const SwarmAttempt *a, SwarmOutcome *out)
{
	out->transport_fault = true;
	switch (a->transport)
	{
		case SWARM_TRANSPORT_TOO_LARGE:
			out->error = psprintf("response body exceeds swarm.max_response_bytes (%zu bytes)",
								  a->max_response_bytes);
			out->verdict = SWARM_VERDICT_FAIL;
			out->signal = SWARM_SIGNAL_NEUTRAL;
			return;
		case SWARM_TRANSPORT_TLS:
		case SWARM_TRANSPORT_FATAL:
			out->verdict = SWARM_VERDICT_FAIL;
			out->signal = SWARM_SIGNAL_FAILURE;
			break;
		case SWARM_TRANSPORT_TIMEOUT:
			out->verdict = SWARM_VERDICT_RETRY;
			out->signal = SWARM_SIGNAL_OVERLOAD;
			break;
		case SWARM_TRANSPORT_CONNECT:
			/* refused or unreachable: send less, and count towards the breaker */
			out->verdict = SWARM_VERDICT_RETRY;
			out->signal = SWARM_SIGNAL_UNREACHABLE;
			break;
		default:
			out->verdict = SWARM_VERDICT_RETRY;
			out->signal = SWARM_SIGNAL_FAILURE;
			break;
	}
	out->error = psprintf("transport error: %s",
						  a->transport_error && a->transport_error[0] ?
						  a->transport_error : "unknown");
}

/* Pauses of the whole endpoint that the response asks for. */
static void
note_pauses(const SwarmAttempt *a, SwarmOutcome *out, const char *error_code)
{
	const SwarmReplyHeaders *h = a->headers;
	double		reset;

	if (out->retry_after_ms >= 0 && (a->status == 429 || a->status == 503 || a->status == 529))
	{
		out->pause_ms = out->retry_after_ms;
		out->pause_reason = "Retry-After";
	}
	if (is_quota_status(a->status, error_code) && QUOTA_PAUSE_MS > out->pause_ms)
	{
		out->pause_ms = QUOTA_PAUSE_MS;
		out->pause_reason = "quota exhausted";
	}
	if (h == NULL)
		return;
	if (parse_count(h->remaining_requests) == 0 &&
		(reset = outcome_parse_duration_ms(h->reset_requests)) > out->pause_ms)
	{
		out->pause_ms = reset;
		out->pause_reason = "request limit reached";
	}
	if (parse_count(h->remaining_tokens) == 0 &&
		(reset = outcome_parse_duration_ms(h->reset_tokens)) > out->pause_ms)
	{
		out->pause_ms = reset;
		out->pause_reason = "token limit reached";
	}
}

/*
 * Sort one attempt.  Fills every field of *out; its strings are palloc'd in
 * the current memory context.
 */
void
outcome_of_attempt(const SwarmAttempt *a, SwarmOutcome *out)
{
	const SwarmReplyHeaders *h = a->headers;
	const char *error_code = NULL;
	OpenAIResponse *resp = &out->reply;
	int			should_retry;

	memset(out, 0, sizeof(*out));
	out->retry_after_ms = -1;
	out->tokens_used = -1;
	resp->prompt_tokens = -1;
	resp->completion_tokens = -1;

	if (a->transport != SWARM_TRANSPORT_OK)
	{
		transport_outcome(a, out);
		return;
	}

	if (h != NULL)
	{
		/* retry-after-ms wins when both are present */
		out->retry_after_ms = outcome_parse_retry_after(h->retry_after_ms, true, a->wall_clock);
		if (out->retry_after_ms < 0)
			out->retry_after_ms = outcome_parse_retry_after(h->retry_after, false, a->wall_clock);
		if (out->retry_after_ms > RETRY_AFTER_MAX_MS)
			out->retry_after_ms = RETRY_AFTER_MAX_MS;
	}

	openai_parse_response(a->body ? a->body : "", a->body_len, resp);
	if (resp->status == OPENAI_ERROR_BODY)
		error_code = resp->error_code;
	/* before anything is cut short: a key cut in half would survive a later scrub */
	if (a->scrub && resp->error_message)
		a->scrub(resp->error_message);
	if (a->scrub && resp->refusal)
		a->scrub(resp->refusal);
	if (resp->prompt_tokens >= 0 && resp->completion_tokens >= 0)
		out->tokens_used = (int64) resp->prompt_tokens + resp->completion_tokens;

	if (a->status >= 200 && a->status < 300)
	{
		if (resp->status == OPENAI_OK && resp->content == NULL && resp->refusal != NULL)
		{
			/* read fine, but the model declined: a final answer, not a message */
			out->verdict = SWARM_VERDICT_FAIL;
			out->signal = SWARM_SIGNAL_SUCCESS;
			out->error = psprintf("the model refused: %s", clip_text(resp->refusal, 1000));
		}
		else if (resp->status == OPENAI_OK)
		{
			out->verdict = SWARM_VERDICT_OK;
			out->signal = SWARM_SIGNAL_SUCCESS;
		}
		else
		{
			/* a 200 that cannot be read is not retried unless the server says so */
			out->verdict = SWARM_VERDICT_FAIL;
			out->signal = SWARM_SIGNAL_NEUTRAL;
			if (resp->status == OPENAI_NO_CHOICES)
				out->error = pstrdup("response has no choices");
			else if (resp->status == OPENAI_ERROR_BODY)
				out->error = psprintf("endpoint returned an error with status %ld: %s",
									  a->status, clip_text(resp->error_message, 1000));
			else if (a->body_len > 0 && a->body[0] != '{' && a->body[0] != '[')
				/* not even trying to be JSON (an HTML page, text): say what it is */
				out->error = psprintf("%s; the body begins: %s", resp->error_message,
									  body_excerpt(a->body, a->body_len, 120, a->scrub));
			else
				out->error = pstrdup(resp->error_message);
		}
	}
	else
	{
		out->http_error = true;
		out->rate_limited = (a->status == 429);
		out->signal = status_signal(a->status, error_code,
									resp->status == OPENAI_ERROR_BODY ? resp->error_message : NULL);
		if (resp->status == OPENAI_ERROR_BODY)
			out->error = psprintf("HTTP %ld: %s%s%s%s", a->status,
								  clip_text(resp->error_message, 1000),
								  error_code ? " (" : "", error_code ? error_code : "",
								  error_code ? ")" : "");
		else
			out->error = psprintf("HTTP %ld: %s", a->status,
								  body_excerpt(a->body ? a->body : "", a->body_len, 200, a->scrub));
		out->verdict = status_retryable(a->status, error_code) ?
			SWARM_VERDICT_RETRY : SWARM_VERDICT_FAIL;
	}

	should_retry = h ? parse_should_retry(h->should_retry) : -1;
	if (should_retry >= 0 && out->verdict != SWARM_VERDICT_OK)
		out->verdict = should_retry ? SWARM_VERDICT_RETRY : SWARM_VERDICT_FAIL;

	note_pauses(a, out, error_code);
	if (out->pause_ms > MAX_PAUSE_MS)
		out->pause_ms = MAX_PAUSE_MS;
}

/*
 * How long to wait before the next attempt: the server's hint when it gave
 * one, else exponential backoff with jitter.
 */
double
outcome_backoff_ms(int retries_taken, double retry_after_ms)
{
	double		delay;

	if (retry_after_ms >= 0)
		return Min(retry_after_ms, RETRY_AFTER_MAX_MS);
	delay = Min(BACKOFF_INITIAL_MS * pow(2.0, Max(retries_taken, 0)), BACKOFF_MAX_MS);
	return delay * (1.0 - 0.25 * pg_prng_double(&pg_global_prng_state));
}
