/*-------------------------------------------------------------------------
 *
 * request.h
 *		A request's life in the worker, from claim to stored result
 *		(request.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_REQUEST_H
#define SWARM_REQUEST_H

#include "lib/ilist.h"
#include "lib/pairingheap.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "jobs.h"
#include "openai.h"
#include "outcome.h"
#include "router.h"

/* The response store's key: the SHA-256 of a request's canonical body. */
#define SWARM_RESPONSE_KEY_LEN 32

/*
 *	 claimed -> READY -> IN_FLIGHT -> DONE (result stored at the next flush)
 *				  ^			|
 *				  |			+-> BACKOFF --(not_before passed)--+
 *				  +----------------------------------------------+
 * A request of an abandoned job goes to DONE from any state, with no result.
 * A READY or BACKOFF request whose deadline passes goes to DONE as a
 * failure, and so does one whose next attempt could only start after it.
 * request.c's set_state() is the only code that writes a state, and checks
 * each move against this diagram.
 */
typedef enum SwarmRequestState
{
	SWARM_REQ_CLAIMED,			/* being built (only inside request_claimed) */
	SWARM_REQ_READY,			/* waiting for an in-flight slot and an endpoint */
	SWARM_REQ_IN_FLIGHT,		/* an HTTP attempt is running */
	SWARM_REQ_BACKOFF,			/* waiting for not_before before the next attempt */
	SWARM_REQ_DONE				/* ended; freed */
} SwarmRequestState;

#define SWARM_REQ_NSTATES (SWARM_REQ_DONE + 1)

typedef struct SwarmRequest
{
	int64		id;
	int64		agent_id;
	int64		shard;			/* distributed swarm: its shard of swarm.requests; else 0 */
	SwarmJob   *job;
	SwarmRequestState state;	/* written only by request.c's set_state() */
	int			attempts;		/* attempts started so far */
	char	   *body;			/* request JSON for the job's model */
	int			body_len;
	int			model_prefix_len;	/* bytes of body up to the model's value */
	int			tail_offset;	/* bytes of body before its structured-output part */
	char	   *send_body;		/* body with an endpoint's own model, when it has one */
	bool		keyed;			/* its job keeps or replays answers: key is set */
	uint8		key[SWARM_RESPONSE_KEY_LEN];	/* SHA-256 of body: swarm.responses.key */
	int64		tokens_estimate;	/* prompt estimate + max_tokens, charged at send */
	SwarmSend	send;			/* IN_FLIGHT: what the attempt charged where */
	void	   *transfer;		/* IN_FLIGHT: the engine's transfer */
	const struct SwarmEndpoint *failed_at;	/* where the last attempt failed (compared only) */
	TimestampTz not_before;		/* BACKOFF: when it may go again */
	TimestampTz claimed_at;
	TimestampTz deadline;		/* it ends, one way or another, by then */
	char	   *last_error;		/* most recent failure, for the final record */
	dlist_node	all_node;		/* every live request */
	dlist_node	ready_node;		/* READY: the ready queue */
	pairingheap_node heap_node; /* BACKOFF: the backoff heap */
	pairingheap_node deadline_node; /* READY and BACKOFF: the deadline heap */
} SwarmRequest;

/* A claimed queue row, as queue.c reads it. */
typedef struct SwarmClaimedRow
{
	int64		request_id;
	int64		agent_id;
	int64		shard;			/* distributed swarm: the shard of swarm.requests it was read from */
	const char *name;			/* NULL: the agent is gone */
	Jsonb	   *persona;
	Jsonb	   *vars;			/* the request's own placeholder values, or NULL */
} SwarmClaimedRow;

/* An ended request, waiting to be committed by queue_store_results(). */
typedef struct SwarmResult
{
	int64		request_id;
	int64		agent_id;		/* with the shard, where a distributed swarm stores it */
	int64		shard;
	int64		job_id;
	SwarmJob   *job;			/* NULL for results not made by the worker (tests) */
	bool		ok;
	bool		advances;		/* its job's results may enqueue follow-ups */
	bool		deferred;		/* its job's row was held by another transaction: store later */
	bool		moved;			/* distributed: its shard moved off this node, not stored here */
	int			attempts;
	/* success */
	char	   *content;		/* NULL when the endpoint sent null */
	char	   *model;
	int32		prompt_tokens;	/* -1: not reported */
	int32		completion_tokens;
	double		latency_ms;
	char	   *finish_reason;
	bool		keyed;			/* keep it in swarm.responses under key */
	uint8		key[SWARM_RESPONSE_KEY_LEN];
	const char *endpoint;		/* the endpoint that answered; NULL: the response store */
	/* failure */
	char	   *error;
} SwarmResult;

/* What became of a request after an attempt ended. */
typedef enum SwarmAttemptEnd
{
	SWARM_END_STORED,			/* a completion, waiting for the next store */
	SWARM_END_RETRY,			/* back off, then try again */
	SWARM_END_FAILED,			/* a final failure, waiting for the next store */
	SWARM_END_DROPPED			/* its job was cancelled: nothing to store */
} SwarmAttemptEnd;

typedef void (*swarm_scrub_fn) (char *text);

extern void request_init(MemoryContext request_cxt, MemoryContext result_cxt, swarm_scrub_fn scrub);
extern SwarmRequest *request_claimed(SwarmJob *job, const SwarmClaimedRow *row,
									 TimestampTz now, int64 deadline_ms, int prompt_limit);
extern int	request_count(SwarmRequestState state);
extern SwarmRequest *request_first_ready(void);
extern SwarmRequest *request_next_ready(SwarmRequest *req);
extern const char *request_body_for(SwarmRequest *req, const char *endpoint_model,
									OpenAIOutputStyle style, int *len);
extern bool request_render_body(SwarmJob *job, const SwarmClaimedRow *row, int prompt_limit,
								const char *endpoint_model, OpenAIOutputStyle style, StringInfo out,
								uint8 *key, char **error);
extern void request_sent(SwarmRequest *req, const SwarmSend *send, void *transfer);
extern void request_fail_unsent(SwarmRequest *req, const char *error);
extern void request_answer_stored(SwarmRequest *req, const OpenAIResponse *reply);
extern SwarmAttemptEnd request_attempt_ended(SwarmRequest *req, const SwarmOutcome *outcome,
											 double latency_ms, TimestampTz now,
											 int max_retries, bool another_endpoint_up);
extern void request_promote_due(TimestampTz now);
extern TimestampTz request_next_due(void);
extern void request_drop_job(SwarmJob *job);
extern int	request_expire(TimestampTz now);
extern TimestampTz request_next_deadline(void);
extern SwarmResult *request_results(int *n);
extern TimestampTz request_oldest_result(void);
extern void request_results_stored(void);
extern int	request_results_drop_job(SwarmJob *job);
extern void request_result_failed(SwarmResult *result, const char *why);
extern const char *request_state_name(SwarmRequestState state);

#endif
