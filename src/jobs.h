/*-------------------------------------------------------------------------
 *
 * jobs.h
 *		The jobs the worker is running: their kinds, settings, claim cursors
 *		and lifecycle (jobs.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_JOBS_H
#define SWARM_JOBS_H

#include "lib/ilist.h"
#include "utils/timestamp.h"

/*
 * What a job does: the codes of swarm.job_kinds (src/sql/tables/00_core.sql,
 * which says how to add a kind).  The worker reads a job's kind as its code,
 * never as a name; a code this library does not know (a newer schema) runs
 * like generate, with the table's word on whether it advances.
 */
typedef enum SwarmJobKind
{
	SWARM_JOB_GENERATE = 1,		/* one request per agent */
	SWARM_JOB_INTERACT = 2,		/* conversations between friends, turn by turn */
	SWARM_JOB_SIMULATE = 3		/* the feed, step by step */
} SwarmJobKind;

/* swarm.replay, and a job's replay mode (jobs.params ->> 'replay') */
typedef enum SwarmReplay
{
	SWARM_REPLAY_OFF = 0,		/* ask the endpoints */
	SWARM_REPLAY_ON = 1,		/* answer from swarm.responses; a miss fails */
	SWARM_REPLAY_FALLTHROUGH = 2	/* answer from swarm.responses; a miss is sent */
} SwarmReplay;

/*
 * A job's life in the worker.
 *
 *	 (job scan) -> CLAIM_FOLLOWUPS <-> CLAIM_FIRST -> DRAINED -> FORGOTTEN
 *					   ^								  |
 *					   +---------- follow-ups added ------+
 *	 any state -> ABANDONED (cancelled, gone, id reused) -> FORGOTTEN
 *
 * CLAIM_FOLLOWUPS: follow-ups may wait past the follow-up cursor (claimed
 * first); CLAIM_FIRST: requests enqueued with the job remain past the first
 * cursor; DRAINED: everything queued so far is claimed, and the job waits for
 * its requests to end, their results to be stored, or follow-ups.  A job is
 * forgotten (freed) once drained or abandoned with no request outstanding
 * and no result waiting to be stored: until then the job scan finds it
 * known, so nothing of it is claimed twice.  jobs.c's job_event() is the only
 * code that decides a state, set_state() the only code that writes one.
 */
typedef enum SwarmJobState
{
	SWARM_JOB_CLAIM_FOLLOWUPS,
	SWARM_JOB_CLAIM_FIRST,
	SWARM_JOB_DRAINED,
	SWARM_JOB_ABANDONED,
	SWARM_JOB_FORGOTTEN
} SwarmJobState;

#define SWARM_JOB_NSTATES (SWARM_JOB_FORGOTTEN + 1)

/* One row of swarm.jobs, as queue.c reads it (strings live in the SPI context). */
typedef struct SwarmJobRow
{
	int64		id;
	const char *owner;			/* swarm.jobs.owner */
	SwarmJobKind kind;			/* swarm.job_kinds.code */
	bool		advances;		/* swarm.job_kinds.advances */
	TimestampTz created_at;		/* with id, tells a job from one that reused its id */
	int64		first_last;		/* advancing kinds: the last id queued now (0: none) */
	const char *model;
	int			max_tokens;
	const char *context;
	const char *system_template;
	const char *user_template;
	char	  **endpoints;
	int			nendpoints;
	int64		request_deadline_ms;	/* 0: swarm.request_deadline */
	const char *response_schema;	/* structured output asked for (JSON text); NULL: none */
	bool		store_responses;	/* keep its answers in swarm.responses */
	int			replay;			/* SwarmReplay: answer from swarm.responses */
	bool		batch_mode;		/* sent through the Batch API by the batcher, not claimed */
} SwarmJobRow;

/* Which of a job's queued requests a claim should read: ids in (after, upto]. */
typedef struct SwarmClaimRange
{
	int64		after;
	int64		upto;
	bool		followups;		/* the follow-up cursor, not the first one */
} SwarmClaimRange;

typedef struct SwarmJob
{
	int64		id;				/* hash key: first */
	char	   *owner;			/* its owner: owners share the endpoints fairly */
	TimestampTz created_at;
	SwarmJobKind kind;
	bool		advances;		/* storing a result may enqueue follow-ups */
	SwarmJobState state;		/* written only by jobs.c's set_state() */
	char	   *model;
	int			max_tokens;
	char	   *context;
	char	   *system_template;
	char	   *user_template;
	char	  **endpoints;		/* failover order; none: 'default' */
	int			nendpoints;
	int64		request_deadline_ms;	/* 0: swarm.request_deadline */
	char	   *response_schema;	/* JSON schema of the one object a reply must be; NULL: text */
	bool		store_responses;	/* keep its answers in swarm.responses */
	int			replay;			/* SwarmReplay: answer from swarm.responses */

	/*
	 * Claim cursors.  The requests enqueued with the job have ids up to
	 * first_last.  The follow-ups of an advancing job are inserted later, by
	 * the worker, in the same transaction that claims them next, or by the
	 * step builder (the parts of a simulation's step, which a job scan
	 * finds), one transaction after another, so their ids exceed every id
	 * claimed before;
	 * they have their own cursor and are claimed first, so that a
	 * conversation's next turn goes out ahead of turns that open others.
	 * When a claim of the first range reads fewer rows than it asked for,
	 * `cursor` jumps to first_last: nothing is left there.
	 */
	int64		cursor;			/* highest id <= first_last claimed */
	int64		first_last;		/* last id enqueued with the job (INT64_MAX: all) */
	int64		followup_cursor;	/* highest follow-up id claimed */

	int			outstanding;	/* claimed requests not yet ended */
	int			unstored;		/* ended with a result not yet stored */
	uint64		last_scan;		/* the job scan that last listed it */
	uint64		last_turn;		/* the claim turn that last served it (0: none yet) */
	dlist_node	node;			/* in id order */
} SwarmJob;

/*
 * What the worker's other modules do for an abandoned job: end its waiting
 * requests (request.c), and drop its results not yet stored, returning how
 * many.  Given to jobs_init.
 */
typedef struct SwarmJobHooks
{
	void		(*drop_requests) (SwarmJob *job);
	int			(*drop_results) (SwarmJob *job);
} SwarmJobHooks;

extern void jobs_init(MemoryContext cxt, const SwarmJobHooks *hooks);
extern SwarmJob *jobs_lookup(int64 id);
extern dlist_head *jobs_in_order(void);
extern void jobs_begin_scan(void);
extern void jobs_reconcile(const SwarmJobRow *row);
extern void jobs_end_scan(void);
extern void jobs_abandon_all(void);
extern void jobs_followups_added(int64 job_id);
extern bool jobs_claimable(const SwarmJob *job);
extern bool jobs_claim_range(const SwarmJob *job, SwarmClaimRange *range);
extern bool jobs_claimed(SwarmJob *job, const SwarmClaimRange *range, int n, int limit,
						 int64 last_id);
extern void jobs_request_claimed(SwarmJob *job);
extern void jobs_request_ended(SwarmJob *job, bool result_waits);
extern void jobs_result_stored(SwarmJob *job);
extern bool jobs_take_rescan_needed(void);
extern const char *jobs_state_name(SwarmJobState state);

#endif
