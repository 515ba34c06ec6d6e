/*-------------------------------------------------------------------------
 *
 * jobs.c
 *		The worker's registry of running jobs: what each one asks for, and
 *		which of its queued requests to claim next.
 *
 * A job is known from the job scan (the worker's SQL reads swarm.jobs) until
 * every request it claimed has ended and nothing is left to claim, or until
 * it is cancelled or disappears.  Jobs are kept by id in a hash table and in
 * id order in a list, which is the order they are claimed in: the oldest
 * job first.
 *
 * Claiming goes through two cursors per job (see SwarmJob): this file says
 * which range of ids the next claim reads and moves the cursors when the
 * rows have been read; queue.c runs the SQL.  Bookkeeping only: no SQL, no
 * I/O.  Memory lives in the context given to jobs_init.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "jobs.h"

/* Every job kind: its name in swarm.jobs.kind, and what the worker must know of it. */
typedef struct SwarmJobKindInfo
{
	const char *name;
	bool		advances;		/* its results may enqueue follow-ups (swarm._advance) */
} SwarmJobKindInfo;

static const SwarmJobKindInfo job_kinds[] = {
	[SWARM_JOB_GENERATE] = {"generate", false},
	[SWARM_JOB_INTERACT] = {"interact", true},
	[SWARM_JOB_SIMULATE] = {"simulate", true},
};

static MemoryContext jobs_cxt = NULL;
static HTAB *jobs_by_id = NULL;
static dlist_head jobs_list = DLIST_STATIC_INIT(jobs_list);
static bool rescan_needed = false;

void
jobs_init(MemoryContext cxt)
{
	HASHCTL		ctl;

	jobs_cxt = cxt;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(SwarmJob);
	ctl.hcxt = cxt;
	jobs_by_id = hash_create("pg_swarm jobs", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	dlist_init(&jobs_list);
}

static const SwarmJobKindInfo *
kind_info(const char *name, SwarmJobKind *kind)
{
	for (int i = 0; i < lengthof(job_kinds); i++)
		if (name != NULL && strcmp(job_kinds[i].name, name) == 0)
		{
			if (kind)
				*kind = (SwarmJobKind) i;
			return &job_kinds[i];
		}
	return NULL;
}

/* Do jobs of this kind enqueue follow-ups as their results are stored? */
bool
jobs_kind_advances(const char *kind)
{
	const SwarmJobKindInfo *info = kind_info(kind, NULL);

	return info != NULL && info->advances;
}

SwarmJob *
jobs_lookup(int64 id)
{
	return hash_search(jobs_by_id, &id, HASH_FIND, NULL);
}

dlist_head *
jobs_in_order(void)
{
	return &jobs_list;
}

/*
 * Start running a job seen by the job scan.  `first_last` is the last id
 * enqueued with it (INT64_MAX for kinds that never advance: every queued
 * request is a first one).  An unknown kind (a newer schema than this
 * library) runs like generate.
 */
SwarmJob *
jobs_add(const SwarmJobRow *row, int64 first_last)
{
	MemoryContext old = MemoryContextSwitchTo(jobs_cxt);
	SwarmJob   *job = hash_search(jobs_by_id, &row->id, HASH_ENTER, NULL);
	const SwarmJobKindInfo *info;
	dlist_iter	it;
	bool		placed = false;

	memset(((char *) job) + sizeof(int64), 0, sizeof(SwarmJob) - sizeof(int64));
	info = kind_info(row->kind, &job->kind);
	job->advances = info != NULL && info->advances;
	job->created_at = row->created_at;
	job->model = pstrdup(row->model);
	job->max_tokens = row->max_tokens;
	job->context = pstrdup(row->context);
	job->system_template = pstrdup(row->system_template);
	job->user_template = pstrdup(row->user_template);
	job->request_deadline_ms = row->request_deadline_ms;
	job->nendpoints = row->nendpoints;
	job->endpoints = palloc(sizeof(char *) * Max(row->nendpoints, 1));
	for (int i = 0; i < row->nendpoints; i++)
		job->endpoints[i] = pstrdup(row->endpoints[i]);
	job->first_last = first_last;
	job->followup_cursor = first_last;
	job->followups_drained = !job->advances;
	job->seen = true;
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

static void
forget(SwarmJob *job)
{
	/* a job with the same id may be waiting for this one to drain */
	if (job->cancelled)
		rescan_needed = true;
	dlist_delete(&job->node);
	pfree(job->model);
	pfree(job->context);
	pfree(job->system_template);
	pfree(job->user_template);
	for (int i = 0; i < job->nendpoints; i++)
		pfree(job->endpoints[i]);
	pfree(job->endpoints);
	hash_search(jobs_by_id, &job->id, HASH_REMOVE, NULL);
}

static bool
drained(const SwarmJob *job)
{
	return job->first_drained && job->followups_drained;
}

/* A job scan starts: every job is unseen until the scan lists it again. */
void
jobs_begin_scan(void)
{
	HASH_SEQ_STATUS seq;
	SwarmJob   *job;

	hash_seq_init(&seq, jobs_by_id);
	while ((job = hash_seq_search(&seq)) != NULL)
		job->seen = false;
}

/*
 * After a scan: the next job it did not list and that is still running
 * here, or NULL.  The caller abandons each (which may forget it), so the
 * walk restarts from the top after every hit.
 */
SwarmJob *
jobs_next_unseen(void)
{
	dlist_iter	it;

	dlist_foreach(it, &jobs_list)
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);

		if (!job->seen && !job->cancelled)
			return job;
	}
	return NULL;
}

/* Is any job left with requests to claim? */
bool
jobs_any_claimable(void)
{
	dlist_iter	it;

	dlist_foreach(it, &jobs_list)
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);

		if (!drained(job) && !job->cancelled)
			return true;
	}
	return false;
}

/*
 * Which ids the next claim of `job` reads: its follow-ups past their cursor
 * while there may be some, else the first requests past theirs.  False when
 * the job has nothing left to claim.
 */
bool
jobs_claim_range(const SwarmJob *job, SwarmClaimRange *range)
{
	if (job->cancelled || drained(job))
		return false;
	range->followups = !job->followups_drained;
	if (range->followups)
	{
		range->after = job->followup_cursor;
		range->upto = PG_INT64_MAX;
	}
	else
	{
		range->after = job->cursor;
		range->upto = job->first_last;
	}
	return true;
}

/*
 * A claim of `range` read n rows (at most `limit`), the last with id
 * last_id: move the cursor.  A claim that read fewer than asked has
 * exhausted its range for now.  Returns true if the job was forgotten (it
 * has nothing left to claim and nothing outstanding).
 */
bool
jobs_claimed(SwarmJob *job, const SwarmClaimRange *range, int n, int limit, int64 last_id)
{
	if (range->followups)
	{
		if (n > 0)
			job->followup_cursor = last_id;
		if (n < limit)
			job->followups_drained = true;
	}
	else
	{
		if (n > 0)
			job->cursor = last_id;
		if (n < limit)
			job->first_drained = true;
	}
	if (drained(job) && job->outstanding == 0)
	{
		forget(job);
		return true;
	}
	return false;
}

/*
 * A stored batch gave the job new requests (a conversation's next turn, a
 * simulation's next step): claim again past the follow-up cursor.
 */
void
jobs_followups_added(SwarmJob *job)
{
	job->followups_drained = false;
}

void
jobs_request_claimed(SwarmJob *job)
{
	job->outstanding++;
}

/*
 * One of the job's claimed requests ended (stored, failed or dropped).
 * Returns true if that was the last thing keeping the job: it is forgotten.
 */
bool
jobs_request_ended(SwarmJob *job)
{
	job->outstanding--;
	if (job->outstanding == 0 && (drained(job) || job->cancelled))
	{
		forget(job);
		return true;
	}
	return false;
}

/*
 * Stop the job: nothing more is claimed; results of its requests still in
 * flight are dropped as they end.  Returns true if it was forgotten at once
 * (nothing outstanding).
 */
bool
jobs_cancel(SwarmJob *job)
{
	job->cancelled = true;
	if (job->outstanding == 0)
	{
		forget(job);
		return true;
	}
	return false;
}

/* Did forgetting a cancelled job make a rescan worth doing?  Clears the flag. */
bool
jobs_take_rescan_needed(void)
{
	bool		needed = rescan_needed;

	rescan_needed = false;
	return needed;
}
