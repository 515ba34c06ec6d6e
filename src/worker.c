/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The pg_swarm background worker's loop, and the only file that calls
 *		across modules: the SQL (queue.c), the HTTP engine (engine.c), the
 *		endpoints (router.c), the jobs (jobs.c), the requests (request.c)
 *		and the shared counters (stats.c).
 *
 * Start: connect, pin the session's settings, reconcile what a crash left
 * (queue_reconcile), then loop:
 *	 1. requests whose backoff passed become ready (request.c);
 *	 2. a "tick" transaction when one is due: store the results received so
 *		far, rescan jobs and endpoints if woken (a commit of generate(),
 *		cancel(), an endpoint change sets our latch), claim more requests
 *		if the ready queue runs low;
 *	 3. dispatch: start ready requests while fewer than max_concurrent are
 *		in flight and their endpoint allows (router.c chooses, engine.c sends);
 *	 4. wait on the latch, postmaster death and the engine's epoll
 *		descriptor together, until the nearest deadline: curl's timer, the
 *		oldest result's flush deadline, the earliest retry, a budget;
 *	 5. let curl act on ready sockets and timers, and hand each finished
 *		attempt to outcome.c (what it means), router.c (what it does to the
 *		endpoint) and request.c (what becomes of the request).
 * No transaction is ever open while the worker waits on the network.
 *
 * Durability: claiming writes nothing, so a request in flight is still
 * 'queued' on disk; a crash or restart loses no request and, because a
 * result is stored by deleting its queued row in the same transaction,
 * stores none twice.  The worker commits with synchronous_commit = off: an
 * operating-system crash may forget the last few batches, together with the
 * deletion of their requests, which are then sent again.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include <sys/resource.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "engine.h"
#include "jobs.h"
#include "outcome.h"
#include "queue.h"
#include "request.h"
#include "router.h"
#include "stats.h"

PGDLLEXPORT void swarm_worker_main(Datum main_arg);

/* What the loop itself keeps; everything else belongs to the modules. */
typedef struct SwarmWorker
{
	bool		jobs_dirty;		/* woken: rescan swarm.jobs and swarm.endpoints */
	bool		extension_ready;
	Oid			extension_oid;	/* a new oid means DROP/CREATE EXTENSION: start over */
	int			max_in_flight;	/* swarm.max_concurrent, clamped by fd limit */
	TimestampTz dispatch_retry_at;	/* when a waiting request may go (budgets, pauses) */
	TimestampTz last_publish;	/* endpoint status last published */
	TimestampTz quiet_until;	/* after an error, no tick before this */
	TimestampTz woke_at;		/* when the last wait returned */
	double		last_busy_ms;	/* how long the loop did not poll before that wait */
	bool		shutting_down;	/* store what arrived, claim nothing more */
	bool		rescan_later;	/* a job scan passed over a job whose results wait */
} SwarmWorker;

static SwarmWorker W;

/* ---- configuration ---- */

/* Raise the open-file soft limit and bound in-flight transfers by it. */
static void
apply_fd_limit(void)
{
	struct rlimit rl;
	int			usable;

	W.max_in_flight = swarm_max_concurrent;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
		(void) getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY)
		return;
	usable = (int) rl.rlim_cur - max_files_per_process - 64;
	if (usable < swarm_max_concurrent)
	{
		W.max_in_flight = Max(usable, 1);
		ereport(WARNING,
				(errmsg("swarm.max_concurrent = %d exceeds what the open-file limit allows; using %d",
						swarm_max_concurrent, W.max_in_flight),
				 errdetail("The worker's open-file limit is %lu and max_files_per_process is %d.",
						   (unsigned long) rl.rlim_cur, max_files_per_process),
				 errhint("Raise the server's open-file limit (ulimit -n / LimitNOFILE).")));
	}
}

/* Point the engine targets of endpoints whose URL, key or timeout changed anew. */
static void
refresh_targets(void)
{
	SwarmEndpoint *ep;

	while ((ep = router_next_stale()) != NULL)
	{
		engine_target_retire(ep->target);
		ep->target = engine_target_make(ep->url, ep->api_key, ep->timeout_ms);
	}
	while ((ep = router_next_unused()) != NULL)
	{
		engine_target_retire(ep->target);
		ep->target = NULL;
		router_free(ep);
	}
}

static void
configure(void)
{
	SwarmEngineSettings s;
	char	   *key = swarm_config_read_api_key();
	static bool warned_about_key = false;

	if (!warned_about_key && swarm_api_key && swarm_api_key[0] &&
		!(swarm_api_key_file && swarm_api_key_file[0]))
	{
		ereport(WARNING,
				(errmsg("swarm.api_key is readable by members of pg_read_all_settings and pg_monitor"),
				 errdetail("PostgreSQL shows settings marked superuser-only to those roles."),
				 errhint("Put the key in a file named by swarm.api_key_file, or give it to a named endpoint (swarm.add_endpoint(..., api_key => ...)), which only the extension's owner can read.")));
		warned_about_key = true;
	}

	apply_fd_limit();
	s.ca_file = (swarm_ca_file && swarm_ca_file[0]) ? swarm_ca_file : NULL;
	s.connect_timeout_ms = swarm_connect_timeout_ms;
	s.max_response_bytes = (size_t) swarm_max_response_bytes;
	s.max_connections = W.max_in_flight;
	engine_configure(&s);
	router_configure_default(swarm_base_url ? swarm_base_url : "", key, W.max_in_flight,
							 swarm_request_timeout_ms, swarm_adaptive_concurrency);
	refresh_targets();
	if (key)
	{
		explicit_bzero(key, strlen(key));
		pfree(key);
	}
}

/* ---- jobs ---- */

/* Stop working on a job: it was cancelled, or is gone, or its id reused. */
static void
abandon_job(SwarmJob *job)
{
	/*
	 * Cancelled first: then the last of its requests to end (dropped here,
	 * or a transfer in flight ending later) forgets it.  With none, it is
	 * forgotten at once.
	 */
	if (jobs_cancel(job))
		return;
	request_drop_job(job);
}

/* Forget all work: the extension was dropped or re-created under us. */
static void
abandon_all_jobs(void)
{
	dlist_mutable_iter it;

	request_results_clear();
	dlist_foreach_modify(it, jobs_in_order())
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);

		if (!job->cancelled)
			abandon_job(job);
	}
}

static void
on_job_row(const SwarmJobRow *row, void *arg)
{
	SwarmJob   *job = jobs_lookup(row->id);

	if (job != NULL && job->created_at != row->created_at && !job->cancelled)
	{
		/*
		 * The id was reused (TRUNCATE ... RESTART IDENTITY under us): the job
		 * we knew is gone.
		 */
		abandon_job(job);
		job = jobs_lookup(row->id);
	}
	if (job != NULL)
	{
		/* known; or a cancelled namesake still draining: start afresh after */
		if (job->created_at == row->created_at)
			job->seen = true;
		return;
	}
	if (request_results_hold_job(row->id))
	{
		/*
		 * It was forgotten (nothing left to claim) but results of it still
		 * wait to be stored, their rows 'queued': claiming it afresh now
		 * would send those again.  Look once they are stored.
		 */
		W.rescan_later = true;
		return;
	}
	(void) jobs_add(row, jobs_kind_advances(row->kind) ?
					queue_last_queued_id(row->id) : PG_INT64_MAX);
	if (row->queued)
		queue_mark_running(row->id);
}

static void
on_endpoint_row(const SwarmEndpointRow *row, void *arg)
{
	router_upsert(row, swarm_request_timeout_ms);
}

static void
refresh_jobs(void)
{
	SwarmJob   *gone;

	jobs_begin_scan();
	router_begin_scan();
	queue_scan_endpoints(on_endpoint_row, NULL);
	router_end_scan();
	refresh_targets();
	queue_scan_jobs(on_job_row, NULL);
	while ((gone = jobs_next_unseen()) != NULL)
		abandon_job(gone);
}

/* ---- claiming ---- */

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
claim_requests(void)
{
	int			target = W.max_in_flight + swarm_batch_size;
	dlist_mutable_iter it;

	dlist_foreach_modify(it, jobs_in_order())
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);
		SwarmClaimRange range;
		bool		forgotten = false;

		while (!forgotten && request_count(SWARM_REQ_READY) < target &&
			   jobs_claim_range(job, &range))
		{
			ClaimState	cs = {job, GetCurrentTimestamp(), 0};
			int			n = queue_claim(job->id, range.after, range.upto, swarm_batch_size,
										on_claim_row, &cs);

			forgotten = jobs_claimed(job, &range, n, swarm_batch_size, cs.last_id);
		}
		if (request_count(SWARM_REQ_READY) >= target)
			break;
	}
}

/* ---- the tick transaction ---- */

static bool
tick_due(TimestampTz now)
{
	TimestampTz oldest = request_oldest_result();
	int			nresults;

	(void) request_results(&nresults);
	if (now < W.quiet_until)
		return false;
	if (W.jobs_dirty)
		return true;
	if (nresults >= swarm_batch_size)
		return true;
	if (oldest != 0 && now >= TimestampTzPlusMilliseconds(oldest, swarm_flush_interval_ms))
		return true;
	if (W.extension_ready && request_count(SWARM_REQ_READY) < Max(W.max_in_flight / 2, 1) &&
		jobs_any_claimable())
		return true;
	return false;
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

static void
publish_status(TimestampTz now)
{
	SwarmEndpointStatus slots[SWARM_MAX_ENDPOINT_SLOTS];

	stats_publish_endpoints(slots, router_status(slots, SWARM_MAX_ENDPOINT_SLOTS, now));
	W.last_publish = now;
}

/*
 * The results were committed: count them, announce them, forget them (but
 * those deferred because another transaction held their job's row).
 */
static void
after_flush(void)
{
	int			n;
	SwarmResult *results = request_results(&n);
	TimestampTz now = GetCurrentTimestamp();
	int			stored = 0;

	for (int i = 0; i < n; i++)
	{
		if (results[i].deferred)
			continue;
		stored++;
		stats_add(results[i].ok ? SWARM_STAT_succeeded : SWARM_STAT_failed, 1);
		if (results[i].ok)
			stats_record_latency(results[i].latency_ms);
	}
	stats_add(SWARM_STAT_batches_committed, 1);
	stats_count_completions(now, stored);
	/* endpoint status first: whoever wakes on the progress sees it current */
	publish_status(now);
	swarm_shared_announce_progress();
	(void) request_results_keep_deferred();
	if (W.rescan_later)
	{
		W.rescan_later = false;
		W.jobs_dirty = true;
	}
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
	message = pstrdup(edata->message);
	if (code)
		*code = edata->sqlerrcode;
	FreeErrorData(edata);
	return message;
}

/*
 * A stored batch gave `job_id` new requests (a conversation's next turn, a
 * simulation's next step): claim again past its follow-up cursor.  A job
 * already forgotten (it had drained with nothing outstanding) is found again
 * by the job scan this makes happen, in the same tick.
 */
static void
on_job_advanced(int64 job_id)
{
	SwarmJob   *job = jobs_lookup(job_id);

	if (job != NULL && !job->cancelled)
		jobs_followups_added(job);
	else
		W.jobs_dirty = true;
}

/*
 * Store one result in its own transaction.  Returns NULL on success, else the
 * error message (palloc'd in worker_cxt).
 */
static char *
try_store_one(SwarmResult *r, MemoryContext worker_cxt)
{
	char	   *volatile error = NULL;

	PG_TRY();
	{
		begin_tick("pg_swarm: storing one result");
		queue_store_results(r, 1, on_job_advanced);
		end_tick();
	}
	PG_CATCH();
	{
		error = abort_tick(worker_cxt, NULL);
	}
	PG_END_TRY();
	return error;
}

/*
 * A batch could not be stored: store its results one by one, each in its own
 * transaction, turning any that still fail into failures that say why.
 */
static void
store_results_one_by_one(void)
{
	MemoryContext worker_cxt = CurrentMemoryContext;
	int			n;
	SwarmResult *results = request_results(&n);

	for (int i = 0; i < n; i++)
	{
		SwarmResult *r = &results[i];
		char	   *error = try_store_one(r, worker_cxt);
		char	   *why;

		if (error == NULL)
			continue;
		why = MemoryContextStrdup(request_result_context(),
								  psprintf("could not store the result: %s", error));
		r->ok = false;
		r->error = why;
		error = try_store_one(r, worker_cxt);
		if (error != NULL)
			ereport(WARNING,
					(errmsg("pg_swarm worker could not record request " INT64_FORMAT ": %s",
							r->request_id, error),
					 errdetail("The request stays queued and is sent again after the worker restarts.")));
	}
	after_flush();
}

static void
run_tick(void)
{
	MemoryContext worker_cxt = CurrentMemoryContext;
	int			flushed;
	SwarmResult *results = request_results(&flushed);
	int			n = flushed;

	PG_TRY();
	{
		begin_tick("pg_swarm: storing results and claiming requests");
		if (W.jobs_dirty)
		{
			Oid			oid = queue_extension_oid();

			if (oid != W.extension_oid)
			{
				/* the tables we knew are gone: forget every job and result */
				abandon_all_jobs();
				flushed = 0;
				W.extension_oid = oid;
			}
			W.extension_ready = OidIsValid(oid) && queue_schema_is_current(oid);
			if (!W.extension_ready)
				W.jobs_dirty = false;
		}
		if (W.extension_ready)
		{
			if (flushed > 0)
				(void) queue_store_results(results, flushed, on_job_advanced);
			if (W.jobs_dirty && !W.shutting_down)
				refresh_jobs();
			W.jobs_dirty = false;
			if (request_count(SWARM_REQ_READY) < W.max_in_flight && !W.shutting_down)
				claim_requests();
			/* what ended while claiming (an agent gone) is stored now too */
			results = request_results(&n);
			if (n > flushed)
				(void) queue_store_results(results + flushed, n - flushed, on_job_advanced);
		}
		end_tick();
		if (n > 0)
			after_flush();
	}
	PG_CATCH();
	{
		int			code;
		char	   *error = abort_tick(worker_cxt, &code);

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
				store_results_one_by_one();
		}
		W.jobs_dirty = true;
		W.quiet_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	}
	PG_END_TRY();
}

/* ---- attempts ---- */

/*
 * Start ready requests while the global bound and their endpoints allow.
 * A request whose endpoints cannot take it now stays ready; the scan stops
 * once every endpoint is blocked for this pass.
 */
static void
dispatch(TimestampTz now)
{
	SwarmRequest *req;
	SwarmRequest *next;

	W.dispatch_retry_at = 0;
	if (request_count(SWARM_REQ_READY) == 0)
		return;
	router_begin_pass();
	for (req = request_first_ready(); req != NULL; req = next)
	{
		SwarmJob   *job = req->job;
		SwarmEndpoint *ep;
		TimestampTz retry_at;
		const char *body;
		int			len;
		int			in_flight;
		int64		token_seq;
		int64		epoch;
		SwarmTransfer *t;

		next = request_next_ready(req);
		if (engine_in_flight() >= W.max_in_flight || router_all_blocked())
			break;
		ep = router_choose(job->endpoints, job->nendpoints, now, req->tokens_estimate,
						   req->failed_at, &retry_at);
		if (ep == NULL)
		{
			if (retry_at > 0 && (W.dispatch_retry_at == 0 || retry_at < W.dispatch_retry_at))
				W.dispatch_retry_at = retry_at;
			if (retry_at == 0 && !router_lists_existing(job->endpoints, job->nendpoints))
				request_fail_unsent(req, "none of the job's endpoints exists");
			continue;
		}
		body = request_body_for(req, ep->model, &len);
		/* an attempt never outlives its request's deadline */
		t = engine_start(req, body, len, ep->target,
						 Max(TimestampDifferenceMilliseconds(now, req->deadline), 1));
		if (t == NULL)
		{
			request_fail_unsent(req, "could not start the HTTP transfer");
			continue;
		}
		in_flight = ep->policy.in_flight;	/* before this one */
		token_seq = router_note_sent(ep, now, req->tokens_estimate, &epoch);
		request_sent(req, ep, t, in_flight, token_seq, epoch);
	}
	stats_set_in_flight(engine_in_flight());
}

/*
 * Sort every finished attempt: outcome.c says what the reply means,
 * router.c applies it to the endpoint, request.c to the request.  The
 * outcome's strings live in the result context (they may become a result).
 */
static void
collect_finished(void)
{
	SwarmTransfer *t;
	SwarmAttempt attempt;
	double		latency_ms;

	while ((t = engine_next_done(&attempt, &latency_ms)) != NULL)
	{
		SwarmRequest *req = t->owner;
		SwarmEndpoint *ep = req->endpoint;
		SwarmJob   *job = req->job;
		TimestampTz now = GetCurrentTimestamp();
		MemoryContext old = MemoryContextSwitchTo(request_result_context());
		SwarmOutcome outcome;
		SwarmAttemptEnd end;
		int			in_flight_at_send = req->in_flight_at_send;
		int64		token_seq = req->token_seq;
		int64		epoch = req->latency_epoch;
		int64		tokens_estimate = req->tokens_estimate;
		bool		retry;

		attempt.scrub = router_scrub;
		outcome_of_attempt(&attempt, &outcome);
		MemoryContextSwitchTo(old);
		stats_add(SWARM_STAT_attempts, 1);
		stats_add(SWARM_STAT_bytes_received, attempt.body_len);
		if (outcome.transport_fault)
			stats_add(SWARM_STAT_transport_errors, 1);
		if (outcome.http_error)
			stats_add(SWARM_STAT_http_errors, 1);
		if (outcome.rate_limited)
			stats_add(SWARM_STAT_http_429, 1);

		/* the endpoint first: whether another one is up decides the backoff */
		retry = request_may_retry(req, &outcome, swarm_max_retries);
		/*
		 * The endpoint is told the latency without the time this loop spent
		 * away from its sockets before collecting it: our own stalls (a
		 * store, a busy spell) are not the endpoint's slowness.
		 */
		router_note_outcome(ep, &outcome, epoch, Max(latency_ms - W.last_busy_ms, 1.0),
							in_flight_at_send, token_seq, tokens_estimate, retry, now);
		engine_release(t);
		end = request_attempt_ended(req, &outcome, latency_ms, now, swarm_max_retries,
									retry && router_has_alternative(job->endpoints, job->nendpoints,
																	ep, now));
		if (end == SWARM_END_RETRY)
			stats_add(SWARM_STAT_retries, 1);
		if (ep->removed && ep->policy.in_flight == 0)
			refresh_targets();
	}
	stats_set_in_flight(engine_in_flight());
}

/* How long the wait may last: the nearest of all deadlines, -1 for none. */
static long
compute_wait_ms(TimestampTz now)
{
	long		wait = engine_timeout_ms(now);
	TimestampTz oldest = request_oldest_result();
	TimestampTz due = request_next_due();
	int			nresults;

	(void) request_results(&nresults);
#define NEAREST(ms) do { long _m = (ms); if (_m < 0) _m = 0; if (wait < 0 || _m < wait) wait = _m; } while (0)

	if (oldest != 0)
		NEAREST(TimestampDifferenceMilliseconds(now,
												TimestampTzPlusMilliseconds(oldest, swarm_flush_interval_ms)) + 1);
	if (due != 0)
		NEAREST(TimestampDifferenceMilliseconds(now, due) + 1);
	if (request_next_deadline() != 0)
		NEAREST(TimestampDifferenceMilliseconds(now, request_next_deadline()) + 1);
	if (request_count(SWARM_REQ_READY) > 0 && W.dispatch_retry_at > 0)
		NEAREST(TimestampDifferenceMilliseconds(now, W.dispatch_retry_at) + 1);
	if (W.quiet_until > now && (W.jobs_dirty || nresults > 0))
		NEAREST(TimestampDifferenceMilliseconds(now, W.quiet_until) + 1);
	else if (W.jobs_dirty)
		NEAREST(0);				/* a rescan asked for by the last tick itself */
#undef NEAREST
	return wait;
}

/* ---- lifecycle ---- */

static void
worker_init(void)
{
	memset(&W, 0, sizeof(W));
	request_init(GenerationContextCreate(TopMemoryContext, "pg_swarm requests",
										 ALLOCSET_DEFAULT_SIZES),
				 AllocSetContextCreate(TopMemoryContext, "pg_swarm results",
									   ALLOCSET_DEFAULT_SIZES),
				 router_scrub);
	jobs_init(AllocSetContextCreate(TopMemoryContext, "pg_swarm jobs",
									ALLOCSET_DEFAULT_SIZES));
	router_init(AllocSetContextCreate(TopMemoryContext, "pg_swarm endpoints",
									  ALLOCSET_DEFAULT_SIZES));
	W.jobs_dirty = true;
}

static void
worker_reconcile(void)
{
	PG_TRY();
	{
		begin_tick("pg_swarm: reconciling after start");
		W.extension_oid = queue_extension_oid();
		W.extension_ready = OidIsValid(W.extension_oid) &&
			queue_schema_is_current(W.extension_oid);
		if (W.extension_ready)
			queue_reconcile();
		end_tick();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
}

static void
worker_on_exit(int code, Datum arg)
{
	swarm_shared_set_worker(NULL, 0, 0);
}

/*
 * Server-wide (and database- or role-wide) defaults meant for client
 * sessions must not change how the worker stores results: a statement_timeout would cut building a large
 * simulation step short on every try, a default of SERIALIZABLE would make
 * stores fail on conflicts, a read-only default would refuse them.  Results
 * are idempotent to redo, so commits never wait for the WAL flush.
 */
static void
pin_session_settings(void)
{
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "pg_swarm worker", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Its SQL names its tables schema-qualified, and every function it calls
	 * pins its own path; the session's path is pinned too, so that no
	 * database or role setting puts a schema of someone else's before
	 * pg_catalog.  And no lock of a user's transaction holds it longer than
	 * a second (rows held are skipped; this bounds the rest).
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "1s", PGC_SUSET, PGC_S_OVERRIDE);
}

void
swarm_worker_main(Datum main_arg)
{
	WaitEventSet *wes;
	int			epoll_pos;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(swarm_database, NULL, 0);
	pgstat_report_appname("pg_swarm worker");
	pin_session_settings();

	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pg_swarm requires a UTF8 database, but \"%s\" is not", swarm_database),
				 errhint("Point swarm.database at a UTF8 database.")));

	worker_init();
	engine_init();
	configure();

	wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	epoll_pos = AddWaitEventToSet(wes, WL_SOCKET_READABLE, engine_event_fd(), NULL, NULL);

	/* publish our latch before the first look at the jobs: no wake is lost */
	swarm_shared_set_worker(MyLatch, MyProcPid, GetCurrentTimestamp());
	on_proc_exit(worker_on_exit, 0);
	ereport(LOG,
			(errmsg("pg_swarm worker started on database \"%s\", endpoint %s, max_concurrent %d",
					swarm_database, swarm_base_url, W.max_in_flight)));

	worker_reconcile();

	while (!ShutdownRequestPending)
	{
		WaitEvent	events[3];
		int			nevents;
		TimestampTz now;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			configure();
		}

		now = GetCurrentTimestamp();
		request_promote_due(now);
		(void) request_expire(now);
		if (jobs_take_rescan_needed())
			W.jobs_dirty = true;
		if (tick_due(now))
			run_tick();
		dispatch(GetCurrentTimestamp());

		/*
		 * Publish the endpoints' status at most every 100 ms while busy, and
		 * always before a long sleep, so that the view is never stale for long.
		 */
		now = GetCurrentTimestamp();
		timeout = compute_wait_ms(now);
		if (now - W.last_publish >= 100 * 1000 || timeout < 0 || timeout > 100)
			publish_status(now);

		W.last_busy_ms = W.woke_at > 0 ? (double) (now - W.woke_at) / 1000.0 : 0;
		nevents = WaitEventSetWait(wes, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
		W.woke_at = GetCurrentTimestamp();
		for (int i = 0; i < nevents; i++)
		{
			if (events[i].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				W.jobs_dirty = true;
			}
			if (events[i].pos == epoll_pos && (events[i].events & WL_SOCKET_READABLE))
				engine_on_sockets_ready();
		}
		if (engine_timeout_ms(GetCurrentTimestamp()) == 0)
			engine_on_timeout();
		collect_finished();
	}

	/* keep what has arrived; what is in flight stays queued and is resent */
	W.shutting_down = true;
	if (request_oldest_result() != 0 && W.extension_ready)
	{
		W.jobs_dirty = false;
		W.quiet_until = 0;
		run_tick();
	}
	ereport(LOG,
			(errmsg("pg_swarm worker shutting down with %d requests in flight; they stay queued",
					engine_in_flight())));
	engine_shutdown();
	proc_exit(1);
}
