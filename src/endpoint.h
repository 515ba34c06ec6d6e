/*-------------------------------------------------------------------------
 *
 * endpoint.h
 *		Per-endpoint sending policy: adaptive concurrency limit, request and
 *		token budgets, pauses, circuit breaker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_ENDPOINT_H
#define SWARM_ENDPOINT_H

#include "utils/timestamp.h"

#define SWARM_BUDGET_WINDOW_USEC	(60 * USECS_PER_SEC)

typedef enum SwarmBreakerState
{
	SWARM_BREAKER_CLOSED,		/* healthy */
	SWARM_BREAKER_OPEN,			/* cooling down: nothing is sent */
	SWARM_BREAKER_HALF_OPEN		/* one probe at a time */
} SwarmBreakerState;

/* What an attempt's outcome says about the endpoint. */
typedef enum SwarmSignal
{
	SWARM_SIGNAL_SUCCESS,		/* a completion came back */
	SWARM_SIGNAL_OVERLOAD,		/* 429, 503, 529, timeout: slow down */
	SWARM_SIGNAL_FAILURE,		/* 5xx, broken transfers: count towards the breaker */
	SWARM_SIGNAL_UNREACHABLE,	/* connection refused: both of the above */
	SWARM_SIGNAL_NEUTRAL		/* the request's own fault (4xx): no signal */
} SwarmSignal;

/*
 * What sending one request charged at an endpoint, made by
 * endpoint_note_sent() and given back with the request's result: when it
 * went, the latency epoch it belongs to, its token charge, and how many
 * were in flight there before it.
 */
typedef struct SwarmEndpointCharge
{
	TimestampTz sent_at;
	int64		epoch;
	int64		token_seq;		/* its event in the token window; -1: no token budget */
	int64		tokens;			/* charged at send: prompt estimate + max_tokens */
	int			in_flight_before;
} SwarmEndpointCharge;

/* A sliding 60-second window of (time, amount) events, for budgets. */
typedef struct SwarmWindow
{
	TimestampTz *at;
	int64	   *amount;
	int			cap;
	int			head;			/* oldest */
	int			count;
	int64		total;
	int64		next_seq;		/* sequence number of the next event */
} SwarmWindow;

/* A bucket paced at a budget per minute (see endpoint.c). */
typedef struct SwarmBucket
{
	double		level;			/* what may be spent now; negative: owed */
	double		capacity;		/* the burst: half a second's worth */
	double		rate_per_usec;
	TimestampTz at;				/* when level was last refilled */
} SwarmBucket;

#define SWARM_LATENCY_HISTORY 32
#define SWARM_LATENCY_EPOCHS 8

/*
 * The requests sent to an endpoint one after another, N at a time: an
 * epoch.  Its latency percentile is read once nearly all have ended, so it
 * is that of requests sent together, not of the answers that happened to
 * arrive together (which favours the fast ones at a start, the slow ones at
 * an end).
 */
typedef struct SwarmLatencyEpoch
{
	int64		id;				/* 0: unused */
	TimestampTz started;
	int			size;			/* requests it takes */
	int			sent;
	int			ended;
	int			nsamples;		/* of which answered, with a latency */
	bool		slow_start;		/* begun while the limit still doubled */
	float	   *samples;		/* normalised latencies */
} SwarmLatencyEpoch;

typedef struct SwarmEndpointPolicy
{
	/* configuration */
	int			max_in_flight;
	int			requests_per_minute;	/* 0: no budget */
	int64		tokens_per_minute;		/* 0: no budget */
	bool		adaptive;		/* swarm.adaptive_concurrency */

	/* adaptive concurrency */
	double		limit;
	bool		slow_start;
	TimestampTz last_decrease;
	TimestampTz judge_from;		/* epochs begun before this are not judged */
	TimestampTz last_overload;
	double		rtt_ms;			/* smoothed latency: spaces the cuts one round trip apart */
	SwarmLatencyEpoch epochs[SWARM_LATENCY_EPOCHS];	/* by id % SWARM_LATENCY_EPOCHS */
	int64		epoch_id;		/* the one requests are sent in now */
	double		history_low[SWARM_LATENCY_HISTORY];	/* recent epochs' 10th percentiles */
	TimestampTz history_at[SWARM_LATENCY_HISTORY];
	int			nhistory;
	int			high_windows;	/* epochs in a row above the tolerance */
	int			calm_epochs;	/* epochs judged since the last cut, none above it */
	double		queue_ratio;	/* last epoch's percentile / baseline */
	double		queue_cut_ratio;	/* a cut for queueing awaits its check: the ratio that made it */
	double		queue_cut_from; /* the limit before that cut */

	/* state */
	int			in_flight;
	TimestampTz paused_until;
	const char *pause_reason;	/* static string */
	SwarmBreakerState breaker;
	TimestampTz opened_at;		/* when it last opened: older requests say nothing */
	TimestampTz open_until;
	int			consecutive_failures;
	int			opened_count;	/* consecutive openings, for the cool-down */
	bool		probe_in_flight;
	const char *wait_reason;	/* why the last request could not go (static), or NULL */
	TimestampTz wait_until;		/* until when, when known */

	/* budgets: paced buckets, and the hard 60-second windows */
	SwarmBucket request_pace;
	SwarmBucket token_pace;
	SwarmWindow requests;
	SwarmWindow tokens;
} SwarmEndpointPolicy;

extern void endpoint_policy_init(SwarmEndpointPolicy *p, int max_in_flight,
								 int requests_per_minute, int64 tokens_per_minute, bool adaptive);
extern void endpoint_policy_reconfigure(SwarmEndpointPolicy *p, int max_in_flight,
										int requests_per_minute, int64 tokens_per_minute,
										bool adaptive, TimestampTz now);
extern void endpoint_policy_free(SwarmEndpointPolicy *p);
extern void endpoint_clear(SwarmEndpointPolicy *p);
extern bool endpoint_is_down(SwarmEndpointPolicy *p, TimestampTz now);
extern bool endpoint_may_send(SwarmEndpointPolicy *p, TimestampTz now, int64 tokens,
							  TimestampTz *retry_at);
extern SwarmEndpointCharge endpoint_note_sent(SwarmEndpointPolicy *p, TimestampTz now,
											  int64 tokens);
extern void endpoint_note_tokens_used(SwarmEndpointPolicy *p, int64 seq, int64 estimated, int64 actual);
extern void endpoint_note_result(SwarmEndpointPolicy *p, const SwarmEndpointCharge *charge,
								 TimestampTz now, SwarmSignal signal, double latency_ms,
								 int completion_tokens);
extern void endpoint_pause(SwarmEndpointPolicy *p, TimestampTz until, const char *reason);
extern const char *endpoint_state_name(SwarmEndpointPolicy *p, TimestampTz now, TimestampTz *until);
extern int	endpoint_window_count(SwarmWindow *w, TimestampTz now);
extern int64 endpoint_window_total(SwarmWindow *w, TimestampTz now);

#endif
