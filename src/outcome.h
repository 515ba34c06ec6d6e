/*-------------------------------------------------------------------------
 *
 * outcome.h
 *		What one HTTP attempt means: kept, retried or failed, with the error
 *		text and what it says about the endpoint.  Pure logic (outcome.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_OUTCOME_H
#define SWARM_OUTCOME_H

#include <time.h>

#include "endpoint.h"
#include "openai.h"

/*
 * How the transfer itself ended, as the engine classifies curl's result.
 * Only OK carries an HTTP status and a body.
 */
typedef enum SwarmTransport
{
	SWARM_TRANSPORT_OK,			/* a complete HTTP response came back */
	SWARM_TRANSPORT_TIMEOUT,	/* the attempt's time limit passed */
	SWARM_TRANSPORT_CONNECT,	/* could not connect (refused, unreachable, DNS) */
	SWARM_TRANSPORT_BROKEN,		/* reset, empty reply, truncated or unreadable response */
	SWARM_TRANSPORT_TLS,		/* the certificate did not verify, or the CA file is unusable */
	SWARM_TRANSPORT_TOO_LARGE,	/* the body passed swarm.max_response_bytes */
	SWARM_TRANSPORT_FATAL		/* our side: bad URL, out of memory, refused by curl */
} SwarmTransport;

/*
 * Response headers that steer retries and pauses, as raw text (empty when
 * absent).  Values longer than the buffers are cut; none needs more.
 */
/* Each of them: X(header name, field) -- the one list engine.c reads by. */
#define SWARM_REPLY_HEADERS(X) \
	X("retry-after-ms", retry_after_ms) \
	X("retry-after", retry_after) \
	X("x-should-retry", should_retry) \
	X("x-ratelimit-remaining-requests", remaining_requests) \
	X("x-ratelimit-remaining-tokens", remaining_tokens) \
	X("x-ratelimit-reset-requests", reset_requests) \
	X("x-ratelimit-reset-tokens", reset_tokens)

typedef struct SwarmReplyHeaders
{
	char		retry_after_ms[32];
	char		retry_after[64];	/* seconds, or an HTTP date */
	char		should_retry[16];	/* x-should-retry: true | false */
	char		remaining_requests[32]; /* x-ratelimit-remaining-requests */
	char		remaining_tokens[32];
	char		reset_requests[32]; /* x-ratelimit-reset-requests: 1s, 6m0s, 20ms, 20 */
	char		reset_tokens[32];
} SwarmReplyHeaders;

/* Overwrites every secret (API key) found in text, in place. */
typedef void (*SwarmScrubFn) (char *text);

/* Everything the engine saw of one attempt. */
typedef struct SwarmAttempt
{
	SwarmTransport transport;
	const char *transport_error;	/* curl's words when transport != OK */
	long		status;			/* HTTP status (transport OK) */
	const char *body;			/* the response body (need not be NUL-terminated) */
	size_t		body_len;
	const SwarmReplyHeaders *headers;
	size_t		max_response_bytes; /* for the TOO_LARGE message */
	time_t		wall_clock;		/* now, for Retry-After given as a date */
	SwarmScrubFn scrub;			/* applied to what the reply says before it is cut short */
} SwarmAttempt;

typedef enum SwarmVerdict
{
	SWARM_VERDICT_OK,			/* a completion to store */
	SWARM_VERDICT_RETRY,		/* worth another attempt */
	SWARM_VERDICT_FAIL			/* final: another attempt would fail the same way */
} SwarmVerdict;

typedef struct SwarmOutcome
{
	SwarmVerdict verdict;
	SwarmSignal signal;			/* what it says about the endpoint */
	OpenAIResponse reply;		/* the parsed body (transport OK) */
	char	   *error;			/* RETRY and FAIL: why, for last_error */
	double		retry_after_ms; /* the server's hint for this request; -1: none */
	double		pause_ms;		/* pause the whole endpoint this long; 0: no */
	const char *pause_reason;	/* static text */
	int64		tokens_used;	/* prompt + completion tokens reported; -1: unknown */
	/* for the counters of swarm.stats */
	bool		transport_fault;
	bool		http_error;		/* a non-2xx status */
	bool		rate_limited;	/* status 429 */
} SwarmOutcome;

extern void outcome_of_attempt(const SwarmAttempt *attempt, SwarmOutcome *out);
extern double outcome_backoff_ms(int retries_taken, double retry_after_ms);
extern double outcome_parse_duration_ms(const char *value);
extern double outcome_parse_retry_after(const char *value, bool in_ms, time_t now);

#endif
