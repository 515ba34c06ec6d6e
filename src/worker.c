/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The pg_swarm background worker's loop: start, one pass, shutdown.
 *		It carries data between the modules: the transactions (tick.c), the
 *		HTTP engine (engine.c), the endpoints (router.c), the requests
 *		(request.c), what a reply means (outcome.c) and the shared counters
 *		(stats.c).
 *
 * Start: connect, pin the session's settings, reconcile what a crash left
 * (tick_reconcile), then loop, one pass at a time:
 *	 1. requests whose backoff passed become ready, those whose deadline
 *		passed fail (request.c);
 *	 2. a tick transaction when one is due (tick.c): store the results
 *		received so far, rescan jobs and endpoints if woken, claim more
 *		requests if the ready queue runs low;
 *	 3. dispatch: start ready requests while fewer than max_concurrent are
 *		in flight and their endpoint allows (router.c chooses, engine.c
 *		sends);
 *	 4. wait on the latch, postmaster death and the engine's epoll
 *		descriptor together, until the nearest deadline: curl's timer, the
 *		oldest result's flush deadline, the earliest retry or request
 *		deadline, a budget;
 *	 5. let curl act on ready sockets and timers, and hand each finished
 *		attempt to outcome.c (what it means), router.c (what it does to the
 *		endpoint), request.c (what becomes of the request) and stats.c.
 * No transaction is ever open while the worker waits on the network.
 *
 * Memory: each pass runs in a context reset at its end, so nothing a pass
 * makes in passing (error texts, an outcome's strings, a failed tick's
 * message) outlives it; what lasts lives in the contexts of request.c
 * (requests, results), jobs.c and router.c, and in the engine's malloc'd
 * transfers.
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

#include "engine.h"
#include "jobs.h"
#include "outcome.h"
#include "request.h"
#include "router.h"
#include "stats.h"
#include "tick.h"

PGDLLEXPORT void swarm_worker_main(Datum main_arg);

/* What the loop itself keeps; everything else belongs to the modules. */
typedef struct SwarmWorker
{
	MemoryContext pass_cxt;		/* reset at the end of every pass */
	WaitEventSet *wes;
	int			epoll_pos;		/* the engine's descriptor in wes */
	int			max_in_flight;	/* swarm.max_concurrent, clamped by fd limit */
	TimestampTz dispatch_retry_at;	/* when a waiting request may go (budgets, pauses) */
	TimestampTz last_publish;	/* endpoint status last published */
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

/*
 * Point the engine targets of endpoints whose URL, key or timeout changed
 * anew, and free the endpoints that were removed and have nothing in flight.
 */
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

/* (Re)apply the settings: at start and after every reload. */
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
							 swarm_request_timeout_ms, swarm_adaptive_concurrency, swarm_structured_output);
	if (key)
	{
		explicit_bzero(key, strlen(key));
		pfree(key);
	}
	/* named endpoints without a timeout of their own take the new default */
	tick_rescan();
	refresh_targets();
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
		SwarmSend	send;
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
		body = request_body_for(req, ep->model, (OpenAIOutputStyle) ep->structured_output, &len);
		/* an attempt never outlives its request's deadline */
		t = engine_start(req, body, len, ep->target,
						 Max(TimestampDifferenceMilliseconds(now, req->deadline), 1));
		if (t == NULL)
		{
			request_fail_unsent(req, "could not start the HTTP transfer");
			continue;
		}
		send = router_note_sent(ep, now, req->tokens_estimate);
		stats_count_sent(&ep->counters);
		request_sent(req, &send, t);
	}
	stats_set_in_flight(engine_in_flight());
}

/*
 * Sort every finished attempt: outcome.c says what the reply means,
 * router.c applies it to the endpoint, request.c to the request, stats.c
 * counts it.  The outcome's strings live in the pass's context: what is
 * kept of them is copied.
 */
static void
collect_finished(void)
{
	SwarmTransfer *t;
	SwarmAttempt attempt;
	double		latency_ms;
	double		endpoint_ms;

	while ((t = engine_next_done(&attempt, &latency_ms, &endpoint_ms)) != NULL)
	{
		SwarmRequest *req = t->owner;
		SwarmEndpoint *ep = req->send.endpoint;
		SwarmJob   *job = req->job;
		TimestampTz now = GetCurrentTimestamp();
		SwarmOutcome outcome;
		SwarmAttemptEnd end;
		bool		opened;

		attempt.scrub = router_scrub;
		outcome_of_attempt(&attempt, &outcome);

		/*
		 * The endpoint first (whether another one is up decides the
		 * backoff).  It is told its own time, from the request on the wire
		 * to the reply's arrival: our delays (curl's queue, a store, a busy
		 * spell) are not the endpoint's slowness.
		 */
		opened = router_note_outcome(&req->send, &outcome, Max(endpoint_ms, 1.0), now);
		end = request_attempt_ended(req, &outcome, latency_ms, now, swarm_max_retries,
									router_has_alternative(job->endpoints, job->nendpoints, ep, now));
		stats_count_attempt(&ep->counters, &outcome, attempt.body_len, end == SWARM_END_RETRY, opened);
		engine_release(t);
		if (ep->removed && ep->policy.in_flight == 0)
			refresh_targets();
	}
	stats_set_in_flight(engine_in_flight());
}

/* ---- the loop ---- */

static void
publish_status(TimestampTz now)
{
	SwarmEndpointStatus slots[SWARM_MAX_ENDPOINT_SLOTS];

	stats_publish_endpoints(slots, router_status(slots, SWARM_MAX_ENDPOINT_SLOTS, now));
	W.last_publish = now;
}

/* A tick, then what its store means outside: endpoints, announcements. */
static void
run_tick(bool claim)
{
	int			stored = tick_run(W.max_in_flight, claim);

	refresh_targets();
	if (stored > 0)
	{
		/* endpoint status first: whoever wakes on the progress sees it current */
		publish_status(GetCurrentTimestamp());
		swarm_shared_announce_progress();
	}
}

/* How long the wait may last: the nearest of all deadlines, -1 for none. */
static long
compute_wait_ms(TimestampTz now)
{
	long		wait = engine_timeout_ms(now);
	TimestampTz deadlines[3] = {request_next_due(), request_next_deadline(),
	request_count(SWARM_REQ_READY) > 0 ? W.dispatch_retry_at : 0};
	long		tick = tick_wait_ms(now);

	for (int i = 0; i < lengthof(deadlines); i++)
	{
		long		ms;

		if (deadlines[i] == 0)
			continue;
		ms = deadlines[i] <= now ? 0 : TimestampDifferenceMilliseconds(now, deadlines[i]) + 1;
		if (wait < 0 || ms < wait)
			wait = ms;
	}
	if (tick >= 0 && (wait < 0 || tick < wait))
		wait = tick;
	return wait;
}

/*
 * Wait for the nearest deadline, a socket of the engine, or the latch, then
 * let curl act on what is ready.
 */
static void
wait_for_events(TimestampTz now)
{
	WaitEvent	events[3];
	int			nevents;
	long		timeout = compute_wait_ms(now);

	/*
	 * Publish the endpoints' status at most every 100 ms while busy, and
	 * always before a long sleep, so that the view is never stale for long.
	 */
	if (now - W.last_publish >= 100 * 1000 || timeout < 0 || timeout > 100)
		publish_status(now);

	nevents = WaitEventSetWait(W.wes, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
	for (int i = 0; i < nevents; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			tick_rescan();
		}
		if (events[i].pos == W.epoll_pos && (events[i].events & WL_SOCKET_READABLE))
			engine_on_sockets_ready();
	}
	if (engine_timeout_ms(GetCurrentTimestamp()) == 0)
		engine_on_timeout();
}

/* One pass of the loop (see the file header), in a context reset after it. */
static void
worker_pass(void)
{
	TimestampTz now;

	MemoryContextSwitchTo(W.pass_cxt);
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
		tick_rescan();
	if (tick_due(now, W.max_in_flight))
		run_tick(true);
	dispatch(GetCurrentTimestamp());
	wait_for_events(GetCurrentTimestamp());
	collect_finished();

	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextReset(W.pass_cxt);
}

/* ---- start and shutdown ---- */

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
	/* no lock of a user's transaction holds it longer than a second (rows
	 * held are skipped; this bounds the rest) */
	swarm_pin_background_session("pg_swarm worker", "1s");
}

/*
 * Connect, make the modules' memory, configure, publish our latch, and
 * reconcile what a crash left.
 */
static void
worker_start(void)
{
	static const SwarmJobHooks job_hooks = {request_drop_job, request_results_drop_job};

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

	memset(&W, 0, sizeof(W));
	W.pass_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm loop pass",
									   ALLOCSET_DEFAULT_SIZES);
	request_init(GenerationContextCreate(TopMemoryContext, "pg_swarm requests",
										 ALLOCSET_DEFAULT_SIZES),
				 AllocSetContextCreate(TopMemoryContext, "pg_swarm results",
									   ALLOCSET_DEFAULT_SIZES),
				 router_scrub);
	jobs_init(AllocSetContextCreate(TopMemoryContext, "pg_swarm jobs", ALLOCSET_DEFAULT_SIZES),
			  &job_hooks);
	router_init(AllocSetContextCreate(TopMemoryContext, "pg_swarm endpoints",
									  ALLOCSET_DEFAULT_SIZES));
	tick_init();
	engine_init();
	configure();

	W.wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(W.wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(W.wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	W.epoll_pos = AddWaitEventToSet(W.wes, WL_SOCKET_READABLE, engine_event_fd(), NULL, NULL);

	/* publish our latch before the first look at the jobs: no wake is lost */
	swarm_shared_set_worker(MyLatch, MyProcPid, GetCurrentTimestamp());
	on_proc_exit(worker_on_exit, 0);
	ereport(LOG,
			(errmsg("pg_swarm worker started on database \"%s\", endpoint %s, max_concurrent %d",
					swarm_database, swarm_base_url, W.max_in_flight)));

	tick_reconcile();
}

/* Keep what has arrived; what is in flight stays queued and is sent again. */
static void
worker_shutdown(void)
{
	MemoryContextSwitchTo(W.pass_cxt);
	if (request_oldest_result() != 0 && tick_extension_ready())
		run_tick(false);
	ereport(LOG,
			(errmsg("pg_swarm worker shutting down with %d requests in flight; they stay queued",
					engine_in_flight())));
	engine_shutdown();
	proc_exit(1);
}

void
swarm_worker_main(Datum main_arg)
{
	worker_start();
	while (!ShutdownRequestPending)
		worker_pass();
	worker_shutdown();
}
