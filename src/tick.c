/*-------------------------------------------------------------------------
 *
 * tick.c
 *		The worker's transactions.  A tick is one short transaction that
 *		stores the results received so far, rescans jobs and endpoints when
 *		woken, and claims more requests when the ready queue runs low; this
 *		file runs it, and decides when one is due.
 *
 * The worker's loop (worker.c) calls tick_run() when tick_due() says so and
 * never holds a transaction across a wait on the network.  Inside a tick:
 *	 1. if woken (a commit of generate(), cancel(), an endpoint change set
 *		the latch): is the extension still the one we knew, at our version?
 *		A new extension oid means DROP/CREATE EXTENSION: every job is
 *		abandoned;
 *	 2. the results waiting are stored (queue.c), those of jobs whose rows
 *		another transaction holds deferred;
 *	 3. if woken: endpoints, then jobs, are rescanned (router.c and jobs.c
 *		take the rows);
 *	 4. requests are claimed, oldest job first, until the ready queue holds
 *		a full round of transfers; what ends while claiming (an agent gone)
 *		is stored in the same transaction.
 * After the commit, the results stored are counted and forgotten.
 *
 * When a tick fails, its transaction is aborted.  A lock held past
 * lock_timeout keeps everything for the next try; any other error stores
 * the results one by one, each in its own transaction, turning those that
 * still fail into failures that say why, so that a poison result never
 * loops.  Either way the next tick waits a second.
 *
 * Memory: a tick runs in the contexts of its transaction and SPI, gone at
 * commit; what it keeps lives in the contexts of jobs.c, request.c and
 * router.c.  The caller's context is current again when tick_run returns.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "jobs.h"
#include "queue.h"
#include "request.h"
#include "router.h"
#include "stats.h"
#include "tick.h"

typedef struct SwarmTick
{
	bool		rescan;			/* woken: rescan swarm.jobs and swarm.endpoints */
	bool		extension_ready;	/* installed, at this library's version */
	Oid			extension_oid;	/* a new oid means DROP/CREATE EXTENSION */
	TimestampTz quiet_until;	/* after an error, no tick before this */
} SwarmTick;

static SwarmTick T;

void
tick_init(void)
{
	memset(&T, 0, sizeof(T));
	T.rescan = true;
}

/* Something may have changed on disk: the next tick rescans. */
void
tick_rescan(void)
{
	T.rescan = true;
}

bool
tick_extension_ready(void)
{
	return T.extension_ready;
}

static void
begin_tick(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_tick(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * For a PG_CATCH around a tick: leave the failed transaction and return the
 * error's message, palloc'd in `cxt`, which becomes current again; *code
 * (when not NULL) gets its SQLSTATE.
 */
static char *
abort_tick(MemoryContext cxt, int *code)
{
	ErrorData  *edata;
	char	   *message;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	message = pstrdup(edata->message);
	if (code)
		*code = edata->sqlerrcode;
	FreeErrorData(edata);
	return message;
}

/* Start-up: learn the extension, and reconcile what a crash left. */
void
tick_reconcile(void)
{
	MemoryContext caller = CurrentMemoryContext;

	PG_TRY();
	{
		begin_tick("pg_swarm: reconciling after start");
		T.extension_oid = queue_extension_oid();
		T.extension_ready = OidIsValid(T.extension_oid) &&
			queue_schema_is_current(T.extension_oid);
		if (T.extension_ready)
			queue_reconcile();
		end_tick();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
}

/*
 * Is a tick due at `now`?  When woken, when a batch of results waits or the
 * oldest has waited flush_interval, or when the ready queue runs below half
 * a round while some job has requests to claim; never during the quiet
 * second after an error.
 */
bool
tick_due(TimestampTz now, int max_in_flight)
{
	TimestampTz oldest = request_oldest_result();
	int			nresults;

	(void) request_results(&nresults);
	if (now < T.quiet_until)
		return false;
	if (T.rescan)
		return true;
	if (nresults >= swarm_batch_size)
		return true;
	if (oldest != 0 && now >= TimestampTzPlusMilliseconds(oldest, swarm_flush_interval_ms))
		return true;
	return T.extension_ready && request_count(SWARM_REQ_READY) < Max(max_in_flight / 2, 1) &&
		jobs_any_claimable();
}

/* How long until a tick is due by time alone (ms; -1: not by time). */
long
tick_wait_ms(TimestampTz now)
{
	TimestampTz oldest = request_oldest_result();
	TimestampTz due = 0;

	if (oldest != 0)
		due = TimestampTzPlusMilliseconds(oldest, swarm_flush_interval_ms);
	if (T.rescan)
		due = now;
	if (due != 0 && T.quiet_until > due)
		due = T.quiet_until;
	if (due == 0)
		return -1;
	return due <= now ? 0 : TimestampDifferenceMilliseconds(now, due) + 1;
}

/* ---- what a tick does ---- */

static void
on_endpoint_row(const SwarmEndpointRow *row, void *arg)
{
	router_upsert(row, swarm_request_timeout_ms);
}

static void
on_job_row(const SwarmJobRow *row, void *arg)
{
	jobs_reconcile(row);
}

/* Endpoints first: a job's list names them. */
static void
rescan(void)
{
	router_begin_scan();
	queue_scan_endpoints(on_endpoint_row, NULL);
	router_end_scan();
	jobs_begin_scan();
	queue_scan_jobs(on_job_row, NULL);
	jobs_end_scan();
}

typedef struct ClaimState
{
	SwarmJob   *job;
	TimestampTz now;
	int64		last_id;
} ClaimState;

static void
on_claim_row(const SwarmClaimedRow *row, void *arg)
{
	ClaimState *cs = arg;
	int64		deadline_ms = cs->job->request_deadline_ms > 0 ?
		cs->job->request_deadline_ms : swarm_request_deadline_ms;

	cs->last_id = row->request_id;
	(void) request_claimed(cs->job, row, cs->now, deadline_ms, swarm_max_prompt_bytes);
}

/* Claim, oldest job first, until the ready queue holds a full round of transfers. */
static void
claim_requests(int max_in_flight)
{
	int			target = max_in_flight + swarm_batch_size;
	dlist_mutable_iter it;

	dlist_foreach_modify(it, jobs_in_order())
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);
		SwarmClaimRange range;
		bool		more = true;

		while (more && request_count(SWARM_REQ_READY) < target &&
			   jobs_claim_range(job, &range))
		{
			ClaimState	cs = {job, GetCurrentTimestamp(), 0};
			int			n = queue_claim(job->id, range.after, range.upto, swarm_batch_size,
										on_claim_row, &cs);

			more = jobs_claimed(job, &range, n, swarm_batch_size, cs.last_id);
		}
		if (request_count(SWARM_REQ_READY) >= target)
			break;
	}
}

/*
 * Is the extension still the one we knew, at our version?  One that was
 * dropped and created again is new: every job and result we held is gone.
 */
static void
check_extension(void)
{
	Oid			oid = queue_extension_oid();

	if (oid != T.extension_oid)
	{
		jobs_abandon_all();
		T.extension_oid = oid;
	}
	T.extension_ready = OidIsValid(oid) && queue_schema_is_current(oid);
	if (!T.extension_ready)
		T.rescan = false;
}

/*
 * The results were committed: count them and forget them (but those
 * deferred because another transaction held their job's row).  Returns how
 * many were stored.
 */
static int
after_store(void)
{
	int			n;
	SwarmResult *results = request_results(&n);
	volatile int stored = 0;

	for (int i = 0; i < n; i++)
	{
		if (results[i].deferred)
			continue;
		stored++;
		stats_count_result(results[i].ok, results[i].latency_ms);
	}
	stats_count_batch(GetCurrentTimestamp(), stored);
	request_results_stored();
	return stored;
}

/*
 * Store one result in its own transaction.  Returns NULL on success, else the
 * error message (palloc'd in `cxt`).
 */
static char *
try_store_one(SwarmResult *r, MemoryContext cxt)
{
	char	   *volatile error = NULL;

	PG_TRY();
	{
		begin_tick("pg_swarm: storing one result");
		queue_store_results(r, 1, jobs_followups_added);
		end_tick();
	}
	PG_CATCH();
	{
		error = abort_tick(cxt, NULL);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return error;
}

/*
 * A batch could not be stored: store its results one by one, each in its own
 * transaction, turning any that still fail into failures that say why.
 * Returns how many were stored.
 */
static int
store_one_by_one(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			n;
	SwarmResult *results = request_results(&n);

	for (int i = 0; i < n; i++)
	{
		SwarmResult *r = &results[i];
		char	   *error = try_store_one(r, cxt);

		if (error == NULL)
			continue;
		request_result_failed(r, error);
		error = try_store_one(r, cxt);
		if (error != NULL)
			ereport(WARNING,
					(errmsg("pg_swarm worker could not record request " INT64_FORMAT ": %s",
							r->request_id, error),
					 errdetail("The request stays queued and is sent again later.")));
	}
	return after_store();
}

/*
 * Run one tick (see the file header).  `claim`: claim more requests (not
 * while shutting down).  Returns how many results were stored, so that the
 * caller announces them.
 */
int
tick_run(int max_in_flight, bool claim)
{
	MemoryContext caller = CurrentMemoryContext;
	int			n;
	volatile int stored = 0;

	PG_TRY();
	{
		begin_tick("pg_swarm: storing results and claiming requests");
		if (T.rescan)
			check_extension();
		if (T.extension_ready)
		{
			SwarmResult *results = request_results(&n);
			int			before_claim;

			if (n > 0)
				(void) queue_store_results(results, n, jobs_followups_added);
			if (T.rescan && claim)
				rescan();
			T.rescan = false;
			/* (a job the rescan abandoned took its results off the array) */
			(void) request_results(&before_claim);
			if (claim && request_count(SWARM_REQ_READY) < max_in_flight)
				claim_requests(max_in_flight);
			/* what ended while claiming (an agent gone) is stored now too */
			results = request_results(&n);
			if (n > before_claim)
				(void) queue_store_results(results + before_claim, n - before_claim,
										   jobs_followups_added);
		}
		end_tick();
		MemoryContextSwitchTo(caller);
		(void) request_results(&n);
		if (n > 0)
			stored = after_store();
	}
	PG_CATCH();
	{
		int			code;
		char	   *error = abort_tick(caller, &code);

		if (code == ERRCODE_LOCK_NOT_AVAILABLE)
		{
			/* a lock held past lock_timeout: keep everything, try again soon */
			ereport(LOG,
					(errmsg("pg_swarm worker: %s", error),
					 errdetail("The results stay in memory and are stored in one second.")));
		}
		else
		{
			ereport(WARNING,
					(errmsg("pg_swarm worker: %s", error),
					 errdetail("The worker retries in one second.")));
			(void) request_results(&n);
			if (n > 0)
				stored = store_one_by_one();
		}
		T.rescan = true;
		T.quiet_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	return stored;
}
