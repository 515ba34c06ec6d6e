/*-------------------------------------------------------------------------
 *
 * jobs.c
 *		The worker's registry of running jobs: what each one asks for, which
 *		of its queued requests to claim next, and its life from the job scan
 *		that finds it to the moment it is forgotten.
 *
 * A job's life is the state machine of jobs.h (SwarmJobState).  Events come
 * from the worker: a job scan lists or no longer lists it, a claim read rows,
 * a stored batch added follow-ups, one of its requests was claimed or ended,
 * one of its results was stored.  Each event updates the job's facts (its
 * cursors, its counts) and calls job_event(), the one function that decides
 * the state that follows; set_state() is the only code that writes it, and
 * checks the move against the table of allowed transitions.
 *
 * A job stays known while any request of it is outstanding or any result of
 * it waits to be stored, even when nothing is left to claim: the job scan,
 * which sees it still 'running' on disk, then finds it known and claims
 * nothing of it again.  Abandoning a job (cancelled, gone from the table,
 * its id reused) ends its waiting requests and drops its unstored results
 * through the hooks the worker gives (request.c's), so that an abandoned job
 * stores nothing; those of its requests still in flight end as their
 * attempts do, and the last one forgets it.
 *
 * Jobs are kept by id in a hash table (simplehash, of pointers: a job's
 * address never moves while requests point to it) and in id order in a
 * list (the claim, tick.c, serves an owner's jobs in turns: the one served
 * least lately, the oldest of those never served).
 * Bookkeeping only: no SQL, no I/O.  Memory lives in the context given to
 * jobs_init.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/memutils.h"

#include "jobs.h"

/* the id -> job hash table */
typedef struct JobEntry
{
	int64		id;
	SwarmJob   *job;
	char		status;			/* simplehash's */
} JobEntry;

#define SH_PREFIX		jobtab
#define SH_ELEMENT_TYPE JobEntry
#define SH_KEY_TYPE		int64
#define SH_KEY			id
#define SH_HASH_KEY(tb, key) murmurhash32((uint32) (key) ^ (uint32) ((uint64) (key) >> 32))
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* What happened to a job: the input of job_event(). */
typedef enum SwarmJobEvent
{
	JOB_FOLLOWUPS_DRAINED,		/* a claim of follow-ups read fewer than it asked */
	JOB_FIRST_DRAINED,			/* a claim of first requests read fewer than it asked */
	JOB_FOLLOWUPS_ADDED,		/* a stored batch enqueued follow-ups */
	JOB_WORK_ENDED,				/* a request ended, or a result was stored or dropped */
	JOB_ABANDON					/* cancelled, gone, or its id reused */
} SwarmJobEvent;

/*
 * allowed[from][to]: the moves of jobs.h's diagram.  A move to the state a
 * job is in is never made (job_event() only calls set_state() on a change).
 */
static const bool allowed[SWARM_JOB_NSTATES][SWARM_JOB_NSTATES] = {
	[SWARM_JOB_CLAIM_FOLLOWUPS] = {[SWARM_JOB_CLAIM_FIRST] = true, [SWARM_JOB_DRAINED] = true,
	[SWARM_JOB_ABANDONED] = true},
	[SWARM_JOB_CLAIM_FIRST] = {[SWARM_JOB_CLAIM_FOLLOWUPS] = true, [SWARM_JOB_DRAINED] = true,
	[SWARM_JOB_ABANDONED] = true},
	[SWARM_JOB_DRAINED] = {[SWARM_JOB_CLAIM_FOLLOWUPS] = true, [SWARM_JOB_ABANDONED] = true,
	[SWARM_JOB_FORGOTTEN] = true},
	[SWARM_JOB_ABANDONED] = {[SWARM_JOB_FORGOTTEN] = true},
};

static const char *const state_names[SWARM_JOB_NSTATES] = {
	[SWARM_JOB_CLAIM_FOLLOWUPS] = "claim_followups",
	[SWARM_JOB_CLAIM_FIRST] = "claim_first",
	[SWARM_JOB_DRAINED] = "drained",
	[SWARM_JOB_ABANDONED] = "abandoned",
	[SWARM_JOB_FORGOTTEN] = "forgotten",
};

static MemoryContext jobs_cxt = NULL;
static jobtab_hash *jobs_by_id = NULL;
static dlist_head jobs_list = DLIST_STATIC_INIT(jobs_list);
static SwarmJobHooks jobs_hooks;
static uint64 scan_number = 0;
static bool rescan_needed = false;

void
jobs_init(MemoryContext cxt, const SwarmJobHooks *hooks)
{
	jobs_cxt = cxt;
	jobs_hooks = *hooks;
	jobs_by_id = jobtab_create(cxt, 64, NULL);
	dlist_init(&jobs_list);
	scan_number = 0;
	rescan_needed = false;
}

const char *
jobs_state_name(SwarmJobState state)
{
	return state_names[state];
}

SwarmJob *
jobs_lookup(int64 id)
{
	JobEntry   *entry = jobtab_lookup(jobs_by_id, id);

	return entry ? entry->job : NULL;
}

dlist_head *
jobs_in_order(void)
{
	return &jobs_list;
}

static void
forget(SwarmJob *job)
{
	dlist_delete(&job->node);
	jobtab_delete(jobs_by_id, job->id);
	pfree(job->owner);
	pfree(job->model);
	pfree(job->context);
	pfree(job->system_template);
	pfree(job->user_template);
	if (job->response_schema)
		pfree(job->response_schema);
	for (int i = 0; i < job->nendpoints; i++)
		pfree(job->endpoints[i]);
	pfree(job->endpoints);
	pfree(job);
}

/*
 * The one writer of a job's state.  FORGOTTEN frees the job; a job forgotten
 * after being abandoned may have a namesake waiting for its id (see
 * jobs_reconcile), so the job scan is asked to look again.
 */
static void
set_state(SwarmJob *job, SwarmJobState to)
{
	if (!allowed[job->state][to])
		elog(ERROR, "pg_swarm: job " INT64_FORMAT " cannot go from %s to %s",
			 job->id, state_names[job->state], state_names[to]);
	if (to == SWARM_JOB_FORGOTTEN)
	{
		if (job->state == SWARM_JOB_ABANDONED)
			rescan_needed = true;
		forget(job);
		return;
	}
	job->state = to;
}

/* Nothing of the job is in the worker's hands: no request, no result. */
static inline bool
idle(const SwarmJob *job)
{
	return job->outstanding == 0 && job->unstored == 0;
}

/* Requests enqueued with the job remain unclaimed. */
static inline bool
first_left(const SwarmJob *job)
{
	return job->cursor < job->first_last;
}

/*
 * The one function that decides a job's state: what follows `ev` in the
 * state the job is in.  May forget (free) the job; callers touch it no more
 * after an event that can (JOB_WORK_ENDED, JOB_ABANDON, and the drains).
 */
static void
job_event(SwarmJob *job, SwarmJobEvent ev)
{
	SwarmJobState to = job->state;

	switch (ev)
	{
		case JOB_FOLLOWUPS_DRAINED:
			if (to == SWARM_JOB_CLAIM_FOLLOWUPS)
				to = first_left(job) ? SWARM_JOB_CLAIM_FIRST : SWARM_JOB_DRAINED;
			break;
		case JOB_FIRST_DRAINED:
			if (to == SWARM_JOB_CLAIM_FIRST)
				to = SWARM_JOB_DRAINED;
			break;
		case JOB_FOLLOWUPS_ADDED:
			if (to == SWARM_JOB_CLAIM_FIRST || to == SWARM_JOB_DRAINED)
				to = SWARM_JOB_CLAIM_FOLLOWUPS;
			break;
		case JOB_WORK_ENDED:
			break;
		case JOB_ABANDON:
			to = SWARM_JOB_ABANDONED;
			break;
	}
	if (to != job->state)
		set_state(job, to);
	/* drained or abandoned, with nothing in the worker's hands: done */
	if ((to == SWARM_JOB_DRAINED || to == SWARM_JOB_ABANDONED) && idle(job))
		set_state(job, SWARM_JOB_FORGOTTEN);
}

/*
 * Stop working on a job: nothing more is claimed of it, its waiting requests
 * end, its results not yet stored are dropped; it is forgotten once its last
 * transfer in flight has ended.
 */
static void
abandon(SwarmJob *job)
{
	if (job->state == SWARM_JOB_ABANDONED)
		return;
	set_state(job, SWARM_JOB_ABANDONED);
	/* pinned: the requests the hooks end must not free it under us */
	job->outstanding++;
	job->unstored -= jobs_hooks.drop_results(job);
	jobs_hooks.drop_requests(job);
	job->outstanding--;
	job_event(job, JOB_WORK_ENDED);
}

static SwarmJob *
start(const SwarmJobRow *row)
{
	MemoryContext old = MemoryContextSwitchTo(jobs_cxt);
	SwarmJob   *job = palloc0(sizeof(SwarmJob));
	bool		found;
	dlist_iter	it;
	bool		placed = false;

	job->id = row->id;
	job->owner = pstrdup(row->owner);
	job->created_at = row->created_at;
	job->kind = row->kind;
	job->advances = row->advances;
	job->model = pstrdup(row->model);
	job->max_tokens = row->max_tokens;
	job->context = pstrdup(row->context);
	job->system_template = pstrdup(row->system_template);
	job->user_template = pstrdup(row->user_template);
	job->request_deadline_ms = row->request_deadline_ms;
	job->response_schema = row->response_schema ? pstrdup(row->response_schema) : NULL;
	job->store_responses = row->store_responses;
	job->replay = row->replay;
	job->nendpoints = row->nendpoints;
	job->endpoints = palloc(sizeof(char *) * Max(row->nendpoints, 1));
	for (int i = 0; i < row->nendpoints; i++)
		job->endpoints[i] = pstrdup(row->endpoints[i]);
	/* every queued request of a job that never advances is a first one */
	job->first_last = job->advances ? row->first_last : PG_INT64_MAX;
	job->followup_cursor = job->first_last;
	job->state = job->advances ? SWARM_JOB_CLAIM_FOLLOWUPS : SWARM_JOB_CLAIM_FIRST;
	job->last_scan = scan_number;
	jobtab_insert(jobs_by_id, job->id, &found)->job = job;
	Assert(!found);
	MemoryContextSwitchTo(old);

	/* keep the list in id order (new jobs nearly always go last) */
	dlist_reverse_foreach(it, &jobs_list)
	{
		SwarmJob   *other = dlist_container(SwarmJob, node, it.cur);

		if (other->id < job->id)
		{
			dlist_insert_after(&other->node, &job->node);
			placed = true;
			break;
		}
	}
	if (!placed)
		dlist_push_head(&jobs_list, &job->node);
	return job;
}

/* A job scan starts: jobs it does not list again are abandoned at its end. */
void
jobs_begin_scan(void)
{
	scan_number++;
}

/*
 * The job scan lists `row` (a job 'queued' or 'running' on disk): start
 * running it, or note that it is still wanted.  A known job with another
 * creation time is a namesake (TRUNCATE ... RESTART IDENTITY under us): the
 * old one is abandoned, and the new one starts once it is forgotten (now, or
 * at the rescan its forgetting asks for).
 */
void
jobs_reconcile(const SwarmJobRow *row)
{
	SwarmJob   *job = jobs_lookup(row->id);

	if (job != NULL && job->created_at != row->created_at)
	{
		abandon(job);
		job = jobs_lookup(row->id);
		if (job != NULL)
			return;				/* still draining; the rescan finds the new one */
	}
	if (job == NULL)
		(void) start(row);
	else if (job->state != SWARM_JOB_ABANDONED)
	{
		job->last_scan = scan_number;

		/*
		 * Requests queued past every id it has seen, by another backend: the
		 * step builder's next part of a simulation's step, committed while
		 * the first parts are in flight.  They are claimed as follow-ups
		 * (their ids exceed all it claimed: the builder inserts a job's
		 * parts one transaction after another).
		 */
		if (job->advances && row->first_last > job->followup_cursor)
			job_event(job, JOB_FOLLOWUPS_ADDED);
	}
}

/* After a job scan: abandon every job it did not list. */
void
jobs_end_scan(void)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &jobs_list)
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);

		if (job->last_scan != scan_number && job->state != SWARM_JOB_ABANDONED)
			abandon(job);
	}
}

/* Forget all work: the extension was dropped or re-created under us. */
void
jobs_abandon_all(void)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &jobs_list)
		abandon(dlist_container(SwarmJob, node, it.cur));
}

/*
 * A stored batch gave job `job_id` new requests (a conversation's next turn,
 * a simulation's next step): claim again past its follow-up cursor.  A job
 * not known here (it had been forgotten, with nothing left) is found again
 * by a job scan, which this asks for.
 */
void
jobs_followups_added(int64 job_id)
{
	SwarmJob   *job = jobs_lookup(job_id);

	if (job == NULL || job->state == SWARM_JOB_ABANDONED)
		rescan_needed = true;
	else
		job_event(job, JOB_FOLLOWUPS_ADDED);
}

/* Has the job requests left to claim? */
bool
jobs_claimable(const SwarmJob *job)
{
	return job->state == SWARM_JOB_CLAIM_FOLLOWUPS || job->state == SWARM_JOB_CLAIM_FIRST;
}

/*
 * Which ids the next claim of `job` reads: its follow-ups past their cursor
 * while there may be some, else the first requests past theirs.  False when
 * the job has nothing left to claim.
 */
bool
jobs_claim_range(const SwarmJob *job, SwarmClaimRange *range)
{
	switch (job->state)
	{
		case SWARM_JOB_CLAIM_FOLLOWUPS:
			range->followups = true;
			range->after = job->followup_cursor;
			range->upto = PG_INT64_MAX;
			return true;
		case SWARM_JOB_CLAIM_FIRST:
			range->followups = false;
			range->after = job->cursor;
			range->upto = job->first_last;
			return true;
		default:
			return false;
	}
}

/*
 * A claim of `range` read n rows (at most `limit`), the last with id
 * last_id: move the cursor.  A claim that read fewer than it asked for has
 * exhausted its range for now.  Returns whether the job may have more to
 * claim; when not, it may have been forgotten (touch it no more).
 */
bool
jobs_claimed(SwarmJob *job, const SwarmClaimRange *range, int n, int limit, int64 last_id)
{
	bool		more = n == limit || (range->followups && first_left(job));

	if (range->followups)
	{
		if (n > 0)
			job->followup_cursor = last_id;
		if (n < limit)
			job_event(job, JOB_FOLLOWUPS_DRAINED);
	}
	else
	{
		if (n > 0)
			job->cursor = last_id;
		if (n < limit)
		{
			job->cursor = job->first_last;
			job_event(job, JOB_FIRST_DRAINED);
		}
	}
	return more;
}

void
jobs_request_claimed(SwarmJob *job)
{
	job->outstanding++;
}

/*
 * One of the job's claimed requests ended: with a result waiting to be
 * stored, or with nothing to store (dropped).  May forget the job.
 */
void
jobs_request_ended(SwarmJob *job, bool result_waits)
{
	Assert(job->outstanding > 0);
	job->outstanding--;
	if (result_waits)
		job->unstored++;
	else
		job_event(job, JOB_WORK_ENDED);
}

/* One of the job's results was stored.  May forget the job. */
void
jobs_result_stored(SwarmJob *job)
{
	Assert(job->unstored > 0);
	job->unstored--;
	job_event(job, JOB_WORK_ENDED);
}

/* Did something happen that a job scan should look at?  Clears the flag. */
bool
jobs_take_rescan_needed(void)
{
	bool		needed = rescan_needed;

	rescan_needed = false;
	return needed;
}
