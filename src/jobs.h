/*-------------------------------------------------------------------------
 *
 * jobs.h
 *		The jobs the worker is running: their kinds, settings and claim
 *		cursors (jobs.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_JOBS_H
#define SWARM_JOBS_H

#include "lib/ilist.h"
#include "utils/timestamp.h"

/*
 * What a job does.  Adding a kind: a value here and a row in jobs.c's
 * kind table, the name in the CHECK of swarm.jobs.kind and its default
 * templates in swarm._job_defaults(), and, if its results enqueue more
 * work, the kind's branch in swarm._advance().
 */
typedef enum SwarmJobKind
{
	SWARM_JOB_GENERATE,			/* one request per agent */
	SWARM_JOB_INTERACT,			/* conversations between friends, turn by turn */
	SWARM_JOB_SIMULATE			/* the feed, step by step */
} SwarmJobKind;

/* One row of swarm.jobs, as queue.c reads it (strings live in the SPI context). */
typedef struct SwarmJobRow
{
	int64		id;
	const char *kind;
	TimestampTz created_at;		/* with id, tells a job from one that reused its id */
	bool		queued;			/* status 'queued' (not yet marked running) */
	const char *model;
	int			max_tokens;
	const char *context;
	const char *system_template;
	const char *user_template;
	char	  **endpoints;
	int			nendpoints;
	int64		request_deadline_ms;	/* 0: swarm.request_deadline */
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
	int64		id;
	TimestampTz created_at;
	SwarmJobKind kind;
	bool		advances;		/* storing a result may enqueue follow-ups (kind table) */
	char	   *model;
	int			max_tokens;
	char	   *context;
	char	   *system_template;
	char	   *user_template;
	char	  **endpoints;		/* failover order; none: 'default' */
	int			nendpoints;
	int64		request_deadline_ms;	/* 0: swarm.request_deadline */

	/*
	 * Claim cursors.  The requests enqueued with the job have ids up to
	 * first_last.  The follow-ups of an advancing job are inserted later, by
	 * the worker alone, in the same transaction that claims them next, so
	 * their ids exceed every id claimed before (one sequence, one inserter);
	 * they have their own cursor and are claimed first, so that a
	 * conversation's next turn goes out ahead of turns that open others.
	 */
	int64		cursor;			/* highest id <= first_last claimed */
	int64		first_last;		/* last id enqueued with the job (INT64_MAX: all) */
	int64		followup_cursor;	/* highest follow-up id claimed */
	bool		first_drained;	/* every request up to first_last claimed */
	bool		followups_drained;	/* every follow-up so far claimed */

	bool		cancelled;		/* abandoned: nothing more is claimed or stored */
	bool		seen;			/* still listed by the last job scan */
	int			outstanding;	/* claimed requests not yet ended */
	dlist_node	node;			/* in id order */
} SwarmJob;

extern void jobs_init(MemoryContext cxt);
extern SwarmJob *jobs_lookup(int64 id);
extern SwarmJob *jobs_add(const SwarmJobRow *row, int64 first_last);
extern bool jobs_kind_advances(const char *kind);
extern dlist_head *jobs_in_order(void);
extern void jobs_begin_scan(void);
extern SwarmJob *jobs_next_unseen(void);
extern bool jobs_any_claimable(void);
extern bool jobs_claim_range(const SwarmJob *job, SwarmClaimRange *range);
extern bool jobs_claimed(SwarmJob *job, const SwarmClaimRange *range, int n, int limit,
						 int64 last_id);
extern void jobs_followups_added(SwarmJob *job);
extern void jobs_request_claimed(SwarmJob *job);
extern bool jobs_request_ended(SwarmJob *job);
extern bool jobs_cancel(SwarmJob *job);
extern bool jobs_take_rescan_needed(void);

#endif
