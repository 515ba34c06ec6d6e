/*-------------------------------------------------------------------------
 *
 * swarm.h
 *		Types and entry points shared by pg_swarm's subsystems.
 *
 * The module is split by responsibility:
 *	 config.c	GUCs and the endpoint settings derived from them
 *	 shared.c	shared memory: the worker's latch, counters, progress signal
 *	 engine.c	libcurl multi driven through epoll; knows nothing of SQL
 *	 openai.c	request bodies and one-pass response parsing; no I/O
 *	 prompt.c	prompt templates
 *	 persona_summary.c	swarm.persona_summary(), for conversation prompts
 *	 policy.c	retry/backoff decisions; pure logic
 *	 queue.c	the worker's SQL: claim requests, store results, NOTIFY
 *	 worker.c	the background worker's loop; the only file that calls all others
 *	 api.c		SQL-callable helpers that run in user backends
 *	 persona.c, graph.c, msgpack_codec.c	the social world (docs/social.md);
 *				independent of the engine, they share only swarm.agents
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_H
#define SWARM_H

#include "postgres.h"

#include "lib/ilist.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "lib/pairingheap.h"
#include "utils/timestamp.h"

/* ---- config.c ---- */

extern char *swarm_database;
extern char *swarm_base_url;
extern char *swarm_model;
extern char *swarm_api_key;
extern char *swarm_api_key_file;
extern char *swarm_system_template;
extern char *swarm_ca_file;
extern int	swarm_request_timeout_ms;
extern int	swarm_connect_timeout_ms;
extern int	swarm_max_retries;
extern int	swarm_batch_size;
extern int	swarm_max_concurrent;
extern int	swarm_flush_interval_ms;
extern int	swarm_max_response_bytes;
extern int	swarm_max_prompt_bytes;

extern void swarm_config_init(void);
extern char *swarm_config_read_api_key(void);

#define SWARM_DEFAULT_USER_TEMPLATE "{context}"

/* ---- shared.c ---- */

/* latency histogram: bucket i holds latencies in [2^(i/4), 2^((i+1)/4)) microseconds */
#define SWARM_LATENCY_BUCKETS 128
/* per-second completion counts kept for the recent-rate figure */
#define SWARM_RATE_SLOTS 16
#define SWARM_RATE_WINDOW 10

typedef struct SwarmCounters
{
	pg_atomic_uint64 attempts;		/* HTTP attempts finished */
	pg_atomic_uint64 succeeded;		/* requests ended with a message */
	pg_atomic_uint64 failed;		/* requests ended in failure */
	pg_atomic_uint64 retries;		/* attempts scheduled again */
	pg_atomic_uint64 http_errors;	/* non-2xx answers */
	pg_atomic_uint64 http_429;		/* of which 429 */
	pg_atomic_uint64 transport_errors;	/* timeouts, resets, refused */
	pg_atomic_uint64 bytes_received;
	pg_atomic_uint64 latency_sum_us;	/* over successful attempts */
	pg_atomic_uint64 latency_count;
	pg_atomic_uint64 batches_committed;
	pg_atomic_uint32 in_flight;
	pg_atomic_uint32 peak_in_flight;
	pg_atomic_uint64 latency_hist[SWARM_LATENCY_BUCKETS];
} SwarmCounters;

/* Live status of one endpoint, published by the worker for swarm.endpoint_status. */
#define SWARM_MAX_ENDPOINT_SLOTS 32

typedef struct SwarmEndpointSlot
{
	char		name[64];
	char		state[16];
	TimestampTz state_until;
	char		reason[64];
	int			limit;
	int			max_in_flight;
	int			in_flight;
	uint64		requests;
	uint64		succeeded;
	uint64		rate_limited;
	uint64		errors;
	uint64		retries;
	uint64		breaker_opened;
	int			requests_last_minute;
	int64		tokens_last_minute;
} SwarmEndpointSlot;

extern void swarm_shared_publish_endpoints(const SwarmEndpointSlot *slots, int n);
extern int	swarm_shared_read_endpoints(SwarmEndpointSlot *slots);
extern void swarm_shared_request(void);
extern void swarm_shared_startup(void);
extern bool swarm_shared_available(void);
extern SwarmCounters *swarm_counters(void);
extern void swarm_shared_set_worker(Latch *latch, int pid, TimestampTz started);
extern void swarm_shared_wake_worker(void);
extern int	swarm_shared_worker_pid(TimestampTz *started);
extern uint64 swarm_shared_progress_generation(void);
extern void swarm_shared_announce_progress(void);
extern bool swarm_shared_sleep_for_progress(uint64 seen, long timeout_ms);
extern void swarm_shared_count_completions(TimestampTz now, uint64 n);
extern double swarm_shared_recent_rate(TimestampTz now);
extern void swarm_stats_record_latency(uint64 us);
extern double swarm_stats_latency_percentile(double q);

/* ---- requests in the worker ---- */

typedef enum SwarmRequestState
{
	SWARM_REQ_READY,			/* claimed, waiting for an in-flight slot */
	SWARM_REQ_IN_FLIGHT,		/* an HTTP attempt is running */
	SWARM_REQ_BACKOFF,			/* waiting for not_before before the next attempt */
	SWARM_REQ_DONE				/* ended; result queued for the next flush */
} SwarmRequestState;

struct SwarmJob;
struct SwarmTransfer;
struct SwarmEndpoint;

typedef struct SwarmRequest
{
	int64		id;
	int64		agent_id;
	struct SwarmJob *job;
	SwarmRequestState state;
	int			attempts;		/* attempts started so far */
	char	   *body;			/* request JSON for the job's model, in the request context */
	int			body_len;
	int			model_prefix_len;	/* bytes of body before the comma after "model" */
	char	   *send_body;		/* body with an endpoint's own model, when it has one */
	int64		tokens_estimate;	/* prompt estimate + max_tokens, charged at send */
	int64		token_seq;		/* the charge in the endpoint's token window */
	int			in_flight_at_send;	/* the endpoint's, for the adaptive limit */
	struct SwarmEndpoint *endpoint; /* while in flight */
	const struct SwarmEndpoint *failed_at;	/* where the last attempt failed (compared only) */
	TimestampTz not_before;		/* for SWARM_REQ_BACKOFF */
	char	   *last_error;		/* most recent failure, for the final record */
	struct SwarmTransfer *transfer; /* while in flight */
	dlist_node	node;			/* ready queue membership */
	pairingheap_node heap_node; /* backoff heap membership */
} SwarmRequest;

typedef struct SwarmJob
{
	int64		id;
	TimestampTz created_at;		/* tells this job from a later one with the same id */
	char	   *model;
	int			max_tokens;
	char	   *context;
	char	   *system_template;
	char	   *user_template;
	char	  **endpoints;		/* failover order; none: 'default' */
	int			nendpoints;
	bool		advances;		/* interact/simulate: storing a result may enqueue more */
	/*
	 * A job's requests are claimed in id order through cursors.  Those
	 * enqueued with the job have ids up to first_last.  The follow-ups of an
	 * interact/simulate job (inserted later, by the worker alone, in id order)
	 * have larger ids and their own cursor, and are claimed first: a
	 * conversation's next turn goes out ahead of turns that open others.
	 */
	int64		cursor;			/* highest id <= first_last claimed */
	int64		first_last;		/* last id enqueued with the job (INT64_MAX: all) */
	int64		followup_cursor;	/* highest follow-up id claimed */
	bool		first_drained;	/* every request up to first_last claimed */
	bool		followups_drained;	/* every follow-up so far claimed */
	bool		drained;		/* both: every queued request has been claimed */
	bool		cancelled;
	bool		seen;			/* still listed by the last job scan */
	int			outstanding;	/* claimed requests not yet ended */
	dlist_node	node;
} SwarmJob;

/* A finished request, waiting to be committed. */
typedef struct SwarmResult
{
	int64		request_id;
	int64		job_id;
	bool		ok;
	bool		advances;		/* its job's results may enqueue follow-ups */
	int			attempts;
	/* success */
	char	   *content;		/* NULL when the endpoint sent null */
	char	   *model;
	int32		prompt_tokens;	/* -1: not reported */
	int32		completion_tokens;
	double		latency_ms;
	char	   *finish_reason;
	/* failure */
	char	   *error;
} SwarmResult;

#endif							/* SWARM_H */
