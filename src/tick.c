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
 *	 4. requests are claimed, owners taking turns, each endpoint up to what
 *		it has room for (see claim_requests); what ends while claiming (an
 *		agent gone) is stored in the same transaction.
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
#include "shards.h"
#include "stats.h"
#include "tick.h"

typedef struct SwarmTick
{
	bool		rescan;			/* woken: rescan swarm.jobs and swarm.endpoints */
	bool		extension_ready;	/* installed, at this library's version */
	Oid			extension_oid;	/* a new oid means DROP/CREATE EXTENSION */
	TimestampTz quiet_until;	/* after an error, no tick before this */
	TimestampTz next_poll;		/* distributed: rescan by then (nothing wakes a node) */
	TimestampTz next_conduct;	/* coordinator: sum the nodes' progress by then */
} SwarmTick;

/*
 * A distributed swarm's workers are not woken by commits on other nodes:
 * each rescans the jobs every second, and the coordinator's sums the nodes'
 * progress into swarm.jobs every 200 ms (see shards.c).
 */
#define DISTRIBUTED_POLL_MS 1000
#define CONDUCT_MS 200

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

/* ---- what each endpoint can take: the room claiming fills ---- */

/*
 * The endpoint a job's requests go to first: the first of its list that
 * exists (none: 'default'), or NULL when none does (they fail at dispatch).
 */
static SwarmEndpoint *
first_endpoint(const SwarmJob *job)
{
	return router_first_existing(job->endpoints, job->nendpoints);
}

/*
 * Count, per endpoint, what the jobs it comes first for hold (requests
 * claimed and not yet ended: waiting or in flight), and whether one of them
 * has requests left to claim.
 */
static void
count_held(void)
{
	dlist_iter	it;

	router_clear_held();
	dlist_foreach(it, jobs_in_order())
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);
		SwarmEndpoint *ep = first_endpoint(job);

		if (ep == NULL)
			continue;
		ep->held += job->outstanding;
		if (jobs_claimable(job))
			ep->wanted = true;
	}
}

/* The endpoint's concurrency limit now, within the worker's bound. */
static int
limit_of(const SwarmEndpoint *ep, int max_in_flight)
{
	return Min(Max((int) ep->policy.limit, 1), max_in_flight);
}

/*
 * How many more requests may be claimed for an endpoint: what it holds may
 * reach twice its limit plus a batch (a full round in flight, a round
 * waiting to follow, and the claim's own batch).  An endpoint that cannot
 * send (down, paused, out of budget) holds no more than that, whatever its
 * jobs ask: its requests never crowd out those of other endpoints.
 */
static int
room_of(const SwarmEndpoint *ep, int max_in_flight)
{
	return 2 * limit_of(ep, max_in_flight) + swarm_batch_size - ep->held;
}

/*
 * Does an endpoint want requests claimed: one of its jobs has some left,
 * and fewer than half its limit wait for it?  (As a tick claims a batch at
 * a time, a tick for a handful would be wasted.)
 */
static bool
claim_wanted(int max_in_flight)
{
	dlist_iter	it;

	count_held();
	dlist_foreach(it, jobs_in_order())
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);
		SwarmEndpoint *ep;

		if (!jobs_claimable(job))
			continue;
		ep = first_endpoint(job);
		if (ep == NULL)
			return true;		/* its requests fail at once: let them */
		if (ep->held - ep->policy.in_flight < Max(limit_of(ep, max_in_flight) / 2, 1) &&
			room_of(ep, max_in_flight) > 0)
			return true;
	}
	return false;
}

/*
 * Is a tick due at `now`?  When woken, when a batch of results waits or the
 * oldest has waited flush_interval, or when an endpoint wants requests
 * claimed; never during the quiet second after an error.
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
	if (shards_distributed() && T.extension_ready &&
		(now >= T.next_poll || (shards_on_coordinator() && now >= T.next_conduct)))
		return true;
	if (nresults >= swarm_batch_size)
		return true;
	if (oldest != 0 && now >= TimestampTzPlusMilliseconds(oldest, swarm_flush_interval_ms))
		return true;
	return T.extension_ready && claim_wanted(max_in_flight);
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
	if (shards_distributed() && T.extension_ready)
	{
		TimestampTz next = shards_on_coordinator() ? Min(T.next_poll, T.next_conduct) : T.next_poll;

		/* (0, never set yet, is due now, not "no time": 0 means none below) */
		next = Max(next, now);
		if (due == 0 || next < due)
			due = next;
	}
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

/* (a batch-mode job's requests are the batcher's: batcher.c) */
static void
on_job_row(const SwarmJobRow *row, void *arg)
{
	if (!row->batch_mode)
		jobs_reconcile(row);
}

/* Endpoints first: a job's list names them. */
static void
rescan(void)
{
	/*
	 * A shard moved here or away: claim every job afresh (a shard that came
	 * holds requests behind the cursors).  What is in flight is dropped and
	 * claimed again: sent twice, stored once.
	 */
	if (shards_refresh())
		jobs_abandon_all();
	router_set_share(shards_share());
	T.next_poll = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), DISTRIBUTED_POLL_MS);
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
	SwarmRequest **replayed;	/* a replayed job's requests just claimed */
	int			nreplayed;
	bool	   *answered;		/* replayed[i] was answered from the store */
} ClaimState;

static void
on_claim_row(const SwarmClaimedRow *row, void *arg)
{
	ClaimState *cs = arg;
	int64		deadline_ms = cs->job->request_deadline_ms > 0 ?
		cs->job->request_deadline_ms : swarm_request_deadline_ms;
	SwarmRequest *req;

	cs->last_id = row->request_id;
	req = request_claimed(cs->job, row, cs->now, deadline_ms, swarm_max_prompt_bytes);
	if (req != NULL && cs->replayed != NULL)
		cs->replayed[cs->nreplayed++] = req;
}

static void
on_stored_answer(int index, const OpenAIResponse *reply, void *arg)
{
	ClaimState *cs = arg;

	if (cs->answered[index])
		return;
	cs->answered[index] = true;
	request_answer_stored(cs->replayed[index], reply);
}

/*
 * A replayed job's requests just claimed: each one with an answer in
 * swarm.responses ends with it, no endpoint called; one without fails,
 * saying so (swarm.replay = on), or goes to its endpoint (fallthrough).
 */
static void
answer_from_store(ClaimState *cs)
{
	cs->answered = palloc0(sizeof(bool) * Max(cs->nreplayed, 1));
	queue_lookup_responses(cs->job->owner, cs->replayed, cs->nreplayed, on_stored_answer, cs);
	if (cs->job->replay != SWARM_REPLAY_ON)
		return;
	for (int i = 0; i < cs->nreplayed; i++)
		if (!cs->answered[i])
			request_fail_unsent(cs->replayed[i],
								"no stored answer to replay: swarm.responses has none for this prompt from this user (swarm.replay = on; fallthrough would send it)");
}

/*
 * The job of `owner` served least lately (the oldest among those never
 * served) that has requests to claim and whose endpoint has room (*room
 * set to it; no endpoint: a batch), or NULL: an owner's jobs take turns
 * within the owner's turn, so a simulation that always has a step's next
 * part queued leaves its owner's other jobs their share.
 */
static SwarmJob *
next_job_of(const char *owner, int max_in_flight, int *room)
{
	dlist_iter	it;
	SwarmJob   *best = NULL;
	int			best_room = 0;

	dlist_foreach(it, jobs_in_order())
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);
		SwarmEndpoint *ep;
		int			r;

		if (!jobs_claimable(job) || strcmp(job->owner, owner) != 0)
			continue;
		if (best != NULL && job->last_turn >= best->last_turn)
			continue;
		ep = first_endpoint(job);
		/* (a strict replay calls no endpoint: it needs none to have room) */
		r = ep && job->replay != SWARM_REPLAY_ON ? room_of(ep, max_in_flight) : swarm_batch_size;
		if (r > 0)
		{
			best = job;
			best_room = r;
		}
	}
	*room = best_room;
	return best;
}

/*
 * Claim up to `limit` requests of one job; returns how many were read, and
 * in *drained whether one of its ranges ran out (the job may then be gone).
 */
static int
claim_from(SwarmJob *job, int limit, bool *drained)
{
	SwarmClaimRange range;
	ClaimState	cs = {job, GetCurrentTimestamp(), 0, NULL, 0, NULL};
	int			n;

	*drained = true;
	if (!jobs_claim_range(job, &range))
		return 0;
	if (job->replay != SWARM_REPLAY_OFF)
		cs.replayed = palloc(sizeof(SwarmRequest *) * Max(limit, 1));
	n = queue_claim(job->id, range.after, range.upto, limit, on_claim_row, &cs);
	if (cs.replayed != NULL)
		answer_from_store(&cs);
	*drained = n < limit;
	(void) jobs_claimed(job, &range, n, limit, cs.last_id);
	return n;
}

/*
 * Claim requests, fairly: owners take turns (the first turn moving on by
 * one owner at every claim), each turn claiming a batch, at most what its
 * endpoint has room for, from the owner's job served least lately whose
 * endpoint has room (an owner's jobs take turns too).  Turns go round until
 * no owner can claim more.  So a job waiting on an endpoint that is down,
 * slow or out of budget holds only what that endpoint has room for and
 * never blocks work for another endpoint, and owners share an endpoint's
 * room: one owner's thousand jobs take one turn in each round, as another
 * owner's single job does.
 */
static void
claim_requests(int max_in_flight)
{
	static uint32 first_turn = 0;
	static uint64 claim_turns = 0;
	const char **owners;
	int			nowners = 0;
	int			cap = 16;
	dlist_iter	it;
	bool		progress = true;

	count_held();
	owners = palloc(sizeof(char *) * cap);
	dlist_foreach(it, jobs_in_order())
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);
		bool		known = false;

		if (!jobs_claimable(job))
			continue;
		for (int i = 0; i < nowners && !known; i++)
			known = strcmp(owners[i], job->owner) == 0;
		if (known)
			continue;
		if (nowners == cap)
			owners = repalloc(owners, sizeof(char *) * (cap *= 2));
		owners[nowners++] = job->owner;
	}
	if (nowners == 0)
		return;
	first_turn++;
	while (progress)
	{
		progress = false;
		for (int k = 0; k < nowners; k++)
		{
			const char *owner = owners[(first_turn + k) % nowners];
			int			room;
			SwarmJob   *job = next_job_of(owner, max_in_flight, &room);
			SwarmEndpoint *ep;
			bool		drained;
			int			n;

			if (job == NULL)
				continue;
			ep = first_endpoint(job);
			job->last_turn = ++claim_turns;
			n = claim_from(job, Min(room, swarm_batch_size), &drained);
			if (ep != NULL)
				ep->held += n;
			/* a range that ran out moves the owner on to its next job */
			progress = progress || n > 0 || drained;
		}
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
		if (results[i].deferred || results[i].moved)
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
	volatile int conducted = 0;

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
			if (shards_distributed() && (GetCurrentTimestamp() >= T.next_poll || shards_stale()))
				T.rescan = true;
			if (T.rescan && claim)
				rescan();
			if (shards_on_coordinator() && GetCurrentTimestamp() >= T.next_conduct)
			{
				conducted = shards_conduct();
				T.next_conduct = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CONDUCT_MS);
			}
			T.rescan = false;
			/* (a job the rescan abandoned took its results off the array) */
			(void) request_results(&before_claim);
			if (claim)
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
		/* jobs the coordinator updated are announced as a store's are */
		if (stored == 0 && conducted > 0)
			stored = conducted;
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
