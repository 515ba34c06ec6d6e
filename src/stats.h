/*-------------------------------------------------------------------------
 *
 * stats.h
 *		The worker's performance counters and endpoint status, kept in
 *		shared memory for swarm.stats and swarm.endpoint_status (stats.c).
 *
 * Each list of counters is written once, below, as an X-macro: the structs,
 * the shared-memory initialisation and the rows of the views all expand it.
 * Adding a counter is one line here, one OUT parameter in the SQL of the
 * view's function (in the same place), and where it is bumped in stats.c's
 * counting functions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_STATS_H
#define SWARM_STATS_H

#include "utils/timestamp.h"

/*
 * Counters of the whole worker (swarm.stats); X(name, what it counts).  The
 * names are the view's column names.  The outcomes of requests come first;
 * SWARM_STAT_COUNTERS is the block of the view's columns after its derived
 * figures, in their order.
 */
#define SWARM_STAT_OUTCOMES(X) \
	X(succeeded, "requests ended with a message") \
	X(failed, "requests ended in failure")

#define SWARM_STAT_COUNTERS(X) \
	X(http_attempts, "HTTP attempts finished") \
	X(retries, "attempts scheduled again") \
	X(http_errors, "non-2xx answers") \
	X(rate_limited, "answers with status 429") \
	X(transport_errors, "timeouts, resets, refused connections") \
	X(batches_committed, "store transactions committed") \
	X(bytes_received, "response bytes received")

typedef enum SwarmStat
{
#define SWARM_STAT_ENUM(name, what) SWARM_STAT_##name,
	SWARM_STAT_OUTCOMES(SWARM_STAT_ENUM)
	SWARM_STAT_COUNTERS(SWARM_STAT_ENUM)
#undef SWARM_STAT_ENUM
	SWARM_NSTATS
} SwarmStat;

/*
 * Counters of one endpoint (swarm.endpoint_status), in the order of the
 * view's columns after its state and limits; X(name, what it counts).
 */
#define SWARM_ENDPOINT_COUNTERS(X) \
	X(requests, "attempts sent") \
	X(succeeded, "attempts answered with a completion") \
	X(rate_limited, "answers with status 429") \
	X(errors, "attempts that failed") \
	X(retries, "failed attempts retried") \
	X(breaker_opened, "times the circuit breaker opened")

typedef struct SwarmEndpointCounters
{
#define SWARM_ENDPOINT_COUNTER_FIELD(name, what) uint64 name;
	SWARM_ENDPOINT_COUNTERS(SWARM_ENDPOINT_COUNTER_FIELD)
#undef SWARM_ENDPOINT_COUNTER_FIELD
} SwarmEndpointCounters;

/* The live status of one endpoint, as the worker publishes it. */
#define SWARM_MAX_ENDPOINT_SLOTS 32

typedef struct SwarmEndpointStatus
{
	char		name[64];
	char		state[16];		/* ok, paused, open, half_open */
	TimestampTz state_until;
	char		reason[64];
	int			limit;			/* the adaptive concurrency limit */
	int			max_in_flight;
	int			in_flight;
	SwarmEndpointCounters counters;
	int			requests_last_minute;
	int64		tokens_last_minute;
	char		wait_reason[48];	/* why the last request could not go to it */
	TimestampTz wait_until;
	double		queue_ratio;	/* latency percentile / baseline; -1: not measured yet */
} SwarmEndpointStatus;

extern void stats_shmem_request(void);
extern void stats_shmem_startup(void);
extern void stats_set_in_flight(int n);
extern void stats_publish_endpoints(const SwarmEndpointStatus *slots, int n);

/*
 * The one place that counts: every counter of swarm.stats and of an
 * endpoint's row of swarm.endpoint_status is bumped by these, as the events
 * they name happen.
 */
struct SwarmOutcome;
extern void stats_count_sent(SwarmEndpointCounters *endpoint);
extern void stats_count_attempt(SwarmEndpointCounters *endpoint, const struct SwarmOutcome *outcome,
								size_t bytes_received, bool retried, bool breaker_opened);
extern void stats_count_result(bool succeeded, double latency_ms);
extern void stats_count_batch(TimestampTz now, int results_stored);

#endif
