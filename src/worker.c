/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The pg_swarm background worker: one loop that claims queued requests,
 *		sends them through the curl engine, and commits their results.
 *
 * Each iteration:
 *	 1. a "tick" transaction when one is due: store the results received so
 *		far, rescan jobs if woken (a commit of swarm.generate()/cancel() sets our
 *		latch), and claim more requests if the ready queue runs low;
 *	 2. start transfers while fewer than swarm.max_concurrent are in flight;
 *	 3. wait on the latch, postmaster death and the engine's epoll descriptor
 *		together, until the nearest deadline: curl's timer, the oldest result's
 *		flush deadline, or the earliest retry;
 *	 4. let curl act on ready sockets and timers, and sort each finished
 *		attempt into a result or a retry.
 *
 * A request's life (SwarmRequestState):
 *	 READY -> IN_FLIGHT -> (result) DONE
 *					   \-> BACKOFF -> READY ...	 (retryable failure)
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
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/json.h"
#include "utils/snapmgr.h"

#include "engine.h"
#include "openai.h"
#include "policy.h"
#include "prompt.h"
#include "queue.h"
#include "router.h"

PGDLLEXPORT void swarm_worker_main(Datum main_arg);

typedef struct SwarmWorker
{
	MemoryContext request_cxt;	/* SwarmRequests and their bodies */
	MemoryContext result_cxt;	/* results awaiting a flush; reset after it */
	MemoryContext job_cxt;		/* SwarmJobs */

	HTAB	   *jobs;			/* job id -> SwarmJob */
	dlist_head	job_order;		/* active jobs, by id: claimed oldest first */
	bool		jobs_dirty;		/* woken: rescan swarm.jobs */
	bool		extension_ready;
	Oid			extension_oid;	/* a new oid means DROP/CREATE EXTENSION: start over */

	dlist_head	ready;			/* SWARM_REQ_READY requests, FIFO */
	int			nready;
	pairingheap *backoff;		/* SWARM_REQ_BACKOFF, by not_before */
	int			nbackoff;

	SwarmResult *results;		/* ended requests awaiting a flush */
	int			nresults;
	int			results_cap;
	TimestampTz oldest_result;

	int			max_in_flight;	/* swarm.max_concurrent, clamped by fd limit */
	TimestampTz dispatch_retry_at;	/* when a waiting request may go (budgets, pauses) */
	TimestampTz last_publish;	/* endpoint status last published */
	TimestampTz quiet_until;	/* after an error, no tick before this */
	bool		shutting_down;	/* store what arrived, claim nothing more */
} SwarmWorker;

static SwarmWorker W;

/* ---- small helpers ---- */

static int
backoff_cmp(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	const SwarmRequest *ra = pairingheap_const_container(SwarmRequest, heap_node, a);
	const SwarmRequest *rb = pairingheap_const_container(SwarmRequest, heap_node, b);

	/* pairingheap is a max-heap: the earliest deadline must compare greatest */
	if (ra->not_before < rb->not_before)
		return 1;
	if (ra->not_before > rb->not_before)
		return -1;
	return 0;
}

static void
update_in_flight_counters(void)
{
	SwarmCounters *c = swarm_counters();
	uint32		n = (uint32) engine_in_flight();

	pg_atomic_write_u32(&c->in_flight, n);
	if (n > pg_atomic_read_u32(&c->peak_in_flight))
		pg_atomic_write_u32(&c->peak_in_flight, n);
}

/*
 * An excerpt of a raw body fit for an error message: at most `max` bytes,
 * control and non-ASCII bytes replaced, so it is always valid text.
 */
static char *
body_excerpt(const char *body, size_t len, size_t max)
{
	size_t		n = Min(len, max);
	char	   *s = palloc(n + 4);

	for (size_t i = 0; i < n; i++)
	{
		unsigned char ch = (unsigned char) body[i];

		s[i] = (ch < 0x20 || ch >= 0x7f) ? ' ' : (char) ch;
	}
	if (len > max)
	{
		memcpy(s + n, "...", 3);
		n += 3;
	}
	s[n] = '\0';
	return s;
}

/* Remove every API key from text we are about to store or log. */
static char *
scrub_secret(char *text)
{
	router_scrub(text);
	return text;
}

static char *
clip_text(const char *s, int max)
{
	int			len = strlen(s);

	if (len <= max)
		return pstrdup(s);
	return psprintf("%.*s...", pg_mbcliplen(s, len, max), s);
}

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

static void
configure_engine(void)
{
	SwarmEngineSettings s;
	char	   *key = swarm_config_read_api_key();

	apply_fd_limit();
	s.ca_file = (swarm_ca_file && swarm_ca_file[0]) ? swarm_ca_file : NULL;
	s.connect_timeout_ms = swarm_connect_timeout_ms;
	s.max_response_bytes = (size_t) swarm_max_response_bytes;
	s.max_connections = W.max_in_flight;
	engine_configure(&s);
	router_configure_default(swarm_base_url ? swarm_base_url : "", key, W.max_in_flight);
	if (key)
	{
		explicit_bzero(key, strlen(key));
		pfree(key);
	}
}

/* ---- jobs ---- */

static void
forget_job(SwarmJob *job)
{
	bool		found;

	dlist_delete(&job->node);
	hash_search(W.jobs, &job->id, HASH_REMOVE, &found);
	/* a job with the same id may be waiting for this one to drain */
	if (job->cancelled)
		W.jobs_dirty = true;
}

static void
release_request(SwarmRequest *req)
{
	SwarmJob   *job = req->job;

	if (req->body)
		pfree(req->body);
	if (req->send_body)
		pfree(req->send_body);
	if (req->last_error)
		pfree(req->last_error);
	pfree(req);
	job->outstanding--;
	if (job->outstanding == 0 && (job->drained || job->cancelled))
		forget_job(job);
}

/*
 * The job left the active list (cancelled): drop its waiting requests and abort
 * its transfers.  Their rows were marked 'cancelled' by swarm.cancel().
 */
static void
abandon_job(SwarmJob *job)
{
	dlist_mutable_iter it;
	SwarmRequest **victims;
	int			nvictims = 0;
	int			cap = job->outstanding + 1;

	job->cancelled = true;
	if (job->outstanding == 0)
	{
		forget_job(job);
		return;
	}
	victims = palloc(sizeof(SwarmRequest *) * cap);
	dlist_foreach_modify(it, &W.ready)
	{
		SwarmRequest *req = dlist_container(SwarmRequest, node, it.cur);

		if (req->job == job)
		{
			dlist_delete(&req->node);
			W.nready--;
			victims[nvictims++] = req;
		}
	}
	/* backoff heap and in-flight transfers are found through a full sweep */
	if (W.nbackoff > 0)
	{
		pairingheap *keep = pairingheap_allocate(backoff_cmp, NULL);

		while (!pairingheap_is_empty(W.backoff))
		{
			SwarmRequest *req = pairingheap_container(SwarmRequest, heap_node,
													  pairingheap_remove_first(W.backoff));

			if (req->job == job)
			{
				W.nbackoff--;
				victims[nvictims++] = req;
			}
			else
				pairingheap_add(keep, &req->heap_node);
		}
		pairingheap_free(W.backoff);
		W.backoff = keep;
	}
	/*
	 * Transfers in flight end on their own (finish_attempt drops them); the
	 * last release forgets the job.
	 */
	for (int i = 0; i < nvictims; i++)
		release_request(victims[i]);
	pfree(victims);
}

/* Forget all work: the extension was dropped or re-created under us. */
static void
abandon_all_jobs(void)
{
	dlist_mutable_iter it;

	W.nresults = 0;
	MemoryContextReset(W.result_cxt);
	dlist_foreach_modify(it, &W.job_order)
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);

		if (!job->cancelled)
			abandon_job(job);
	}
}

static void
on_job_row(const SwarmJobRow *row, void *arg)
{
	bool		found;
	SwarmJob   *job = hash_search(W.jobs, &row->id, HASH_FIND, &found);

	if (found && job->created_at != row->created_at && !job->cancelled)
	{
		/*
		 * The id was reused (TRUNCATE ... RESTART IDENTITY under us): the job
		 * we knew is gone.  Drop its work; its transfers end on their own.
		 */
		abandon_job(job);
		job = hash_search(W.jobs, &row->id, HASH_FIND, &found);
	}
	if (found && job->created_at == row->created_at)
	{
		job->seen = true;
		return;
	}
	if (found)
	{
		/* still draining a cancelled namesake: keep it, start afresh after */
		return;
	}
	job = hash_search(W.jobs, &row->id, HASH_ENTER, &found);

	memset(((char *) job) + sizeof(int64), 0, sizeof(SwarmJob) - sizeof(int64));
	job->created_at = row->created_at;
	job->model = MemoryContextStrdup(W.job_cxt, row->model);
	job->max_tokens = row->max_tokens;
	job->advances = row->kind != NULL && strcmp(row->kind, "generate") != 0;
	job->first_last = job->advances ? queue_last_queued_id(row->id) : PG_INT64_MAX;
	job->followup_cursor = job->first_last;
	job->followups_drained = !job->advances;
	job->context = MemoryContextStrdup(W.job_cxt, row->context);
	job->system_template = MemoryContextStrdup(W.job_cxt, row->system_template);
	job->user_template = MemoryContextStrdup(W.job_cxt, row->user_template);
	job->nendpoints = row->nendpoints;
	job->endpoints = MemoryContextAlloc(W.job_cxt, sizeof(char *) * Max(row->nendpoints, 1));
	for (int i = 0; i < row->nendpoints; i++)
		job->endpoints[i] = MemoryContextStrdup(W.job_cxt, row->endpoints[i]);
	job->seen = true;

	/* keep job_order sorted by id */
	{
		dlist_iter	it;
		bool		placed = false;

		dlist_reverse_foreach(it, &W.job_order)
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
			dlist_push_head(&W.job_order, &job->node);
	}
	if (row->queued)
		queue_mark_running(row->id);
}

static void
on_endpoint_row(const SwarmEndpointRow *row, void *arg)
{
	router_upsert(row);
}

static void
refresh_jobs(void)
{
	HASH_SEQ_STATUS seq;
	SwarmJob   *job;
	SwarmJob  **gone;
	int			ngone = 0;

	hash_seq_init(&seq, W.jobs);
	while ((job = hash_seq_search(&seq)) != NULL)
		job->seen = false;

	router_begin_scan();
	queue_scan_endpoints(on_endpoint_row, NULL);
	router_end_scan();
	queue_scan_jobs(on_job_row, NULL);

	gone = palloc(sizeof(SwarmJob *) * (hash_get_num_entries(W.jobs) + 1));
	hash_seq_init(&seq, W.jobs);
	while ((job = hash_seq_search(&seq)) != NULL)
		if (!job->seen && !job->cancelled)
			gone[ngone++] = job;
	for (int i = 0; i < ngone; i++)
		abandon_job(gone[i]);
	pfree(gone);
}

/* ---- results ---- */

static SwarmResult *
new_result(SwarmRequest *req)
{
	SwarmResult *r;

	if (W.nresults == W.results_cap)
	{
		W.results_cap *= 2;
		W.results = repalloc(W.results, sizeof(SwarmResult) * W.results_cap);
	}
	if (W.nresults == 0)
		W.oldest_result = GetCurrentTimestamp();
	r = &W.results[W.nresults++];
	memset(r, 0, sizeof(*r));
	r->request_id = req->id;
	r->job_id = req->job->id;
	r->advances = req->job->advances;
	r->attempts = req->attempts;
	r->prompt_tokens = -1;
	r->completion_tokens = -1;
	return r;
}

static void
record_failure(SwarmRequest *req, const char *error)
{
	MemoryContext old = MemoryContextSwitchTo(W.result_cxt);
	SwarmResult *r = new_result(req);

	r->ok = false;
	if (req->attempts > 1)
		r->error = psprintf("%s (after %d attempts)", error, req->attempts);
	else
		r->error = pstrdup(error);
	scrub_secret(r->error);
	MemoryContextSwitchTo(old);
	pg_atomic_fetch_add_u64(&swarm_counters()->failed, 1);
	release_request(req);
}

/* ---- claiming ---- */

static int
escaped_length(const char *s)
{
	StringInfoData buf;
	int			len;

	initStringInfo(&buf);
	escape_json(&buf, s);
	len = buf.len;
	pfree(buf.data);
	return len;
}

static void
on_claim_row(SwarmJob *job, int64 request_id, int64 agent_id,
			 const char *name, Jsonb *persona, Jsonb *request_vars, void *arg)
{
	SwarmRequest *req = MemoryContextAllocZero(W.request_cxt, sizeof(SwarmRequest));
	SwarmPromptVars vars;
	StringInfoData system_message;
	StringInfoData user_message;
	StringInfoData body;
	MemoryContext old;

	req->id = request_id;
	req->agent_id = agent_id;
	req->job = job;
	job->outstanding++;

	if (name == NULL)
	{
		char	   *msg = psprintf("agent " INT64_FORMAT " does not exist", agent_id);

		record_failure(req, msg);
		return;
	}

	vars.agent_id = agent_id;
	vars.name = name;
	vars.persona = persona;
	vars.context = job->context;
	vars.extra = request_vars;
	initStringInfo(&system_message);
	prompt_expand(&system_message, job->system_template, &vars);
	initStringInfo(&user_message);
	prompt_expand(&user_message, job->user_template, &vars);

	old = MemoryContextSwitchTo(W.request_cxt);
	initStringInfo(&body);
	openai_build_request(&body, job->model, job->max_tokens, system_message.data, user_message.data);
	MemoryContextSwitchTo(old);

	req->body = body.data;
	req->body_len = body.len;
	/* the body starts {"model":"..." — an endpoint's own model replaces it */
	req->model_prefix_len = strlen("{\"model\":") + escaped_length(job->model);
	/* what a budget is charged at send: about 4 bytes a token, plus max_tokens */
	req->tokens_estimate = body.len / 4 + job->max_tokens;
	req->state = SWARM_REQ_READY;
	dlist_push_tail(&W.ready, &req->node);
	W.nready++;
}

static bool
have_claimable_jobs(void)
{
	dlist_iter	it;

	dlist_foreach(it, &W.job_order)
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);

		if (!job->drained && !job->cancelled)
			return true;
	}
	return false;
}

/* Claim until the ready queue holds a full round of transfers. */
static void
claim_requests(void)
{
	dlist_iter	it;

	dlist_foreach(it, &W.job_order)
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);

		while (!job->drained && !job->cancelled && W.nready < W.max_in_flight + swarm_batch_size)
			queue_claim(job, swarm_batch_size, on_claim_row, NULL);
		if (W.nready >= W.max_in_flight + swarm_batch_size)
			break;
	}
}

/* ---- the tick transaction ---- */

static bool
tick_due(TimestampTz now)
{
	if (now < W.quiet_until)
		return false;
	if (W.jobs_dirty)
		return true;
	if (W.nresults >= swarm_batch_size)
		return true;
	if (W.nresults > 0 &&
		now >= TimestampTzPlusMilliseconds(W.oldest_result, swarm_flush_interval_ms))
		return true;
	if (W.extension_ready && W.nready < Max(W.max_in_flight / 2, 1) && have_claimable_jobs())
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
after_flush(int n)
{
	SwarmCounters *c = swarm_counters();

	pg_atomic_fetch_add_u64(&c->batches_committed, 1);
	swarm_shared_count_completions(GetCurrentTimestamp(), n);
	/* endpoint status first: whoever wakes on the progress sees it current */
	router_publish(GetCurrentTimestamp());
	W.last_publish = GetCurrentTimestamp();
	swarm_shared_announce_progress();
	W.nresults = 0;
	MemoryContextReset(W.result_cxt);
}

/*
 * For a PG_CATCH around a tick: leave the failed transaction and return the
 * error's message, palloc'd in `cxt`, which becomes current again.
 */
static char *
abort_tick(MemoryContext cxt)
{
	ErrorData  *edata;
	char	   *message;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	message = pstrdup(edata->message);
	FreeErrorData(edata);
	return message;
}

/*
 * A stored batch gave `job_id` new requests (a conversation's next turn, a
 * simulation's next step): claim again past the job's cursor.  A job already
 * forgotten (it had drained with nothing outstanding) is found again by the
 * job scan this makes happen, in the same tick.
 */
static void
on_job_advanced(int64 job_id)
{
	bool		found;
	SwarmJob   *job = hash_search(W.jobs, &job_id, HASH_FIND, &found);

	if (found && !job->cancelled)
	{
		job->followups_drained = false;
		job->drained = false;
	}
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
		error = abort_tick(worker_cxt);
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
	int			n = W.nresults;

	for (int i = 0; i < n; i++)
	{
		SwarmResult *r = &W.results[i];
		char	   *error = try_store_one(r, worker_cxt);

		if (error == NULL)
			continue;
		r->ok = false;
		r->error = MemoryContextStrdup(W.result_cxt,
									   psprintf("could not store the result: %s", error));
		error = try_store_one(r, worker_cxt);
		if (error != NULL)
			ereport(WARNING,
					(errmsg("pg_swarm worker could not record request " INT64_FORMAT ": %s",
							r->request_id, error),
					 errdetail("The request stays queued and is sent again after the worker restarts.")));
	}
	after_flush(n);
}

static void
run_tick(void)
{
	MemoryContext worker_cxt = CurrentMemoryContext;
	int			flushed = W.nresults;

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
				W.extension_oid = oid;
			}
			W.extension_ready = OidIsValid(oid) && queue_schema_is_current(oid);
			if (!W.extension_ready)
				W.jobs_dirty = false;
		}
		if (W.extension_ready)
		{
			if (W.nresults > 0)
				queue_store_results(W.results, W.nresults, on_job_advanced);
			if (W.jobs_dirty && !W.shutting_down)
				refresh_jobs();
			W.jobs_dirty = false;
			if (W.nready < W.max_in_flight && !W.shutting_down)
				claim_requests();
		}
		end_tick();
		if (flushed > 0)
			after_flush(flushed);
	}
	PG_CATCH();
	{
		char	   *error = abort_tick(worker_cxt);

		ereport(WARNING,
				(errmsg("pg_swarm worker: %s", error),
				 errdetail("The worker retries in one second.")));
		if (flushed > 0)
			store_results_one_by_one();
		W.jobs_dirty = true;
		W.quiet_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	}
	PG_END_TRY();
}

/* ---- attempts ---- */

/* Does any endpoint the job lists still exist? */
static bool
job_has_endpoint(SwarmJob *job)
{
	if (job->nendpoints == 0)
		return true;
	for (int i = 0; i < job->nendpoints; i++)
		if (router_lookup(job->endpoints[i]) != NULL)
			return true;
	return false;
}

/*
 * The body to send to `ep`: the job's, or a copy with the endpoint's own
 * model.  The result stays valid until the attempt ends.
 */
static const char *
body_for(SwarmRequest *req, SwarmEndpoint *ep, int *len)
{
	StringInfoData buf;
	MemoryContext old;

	if (ep->model == NULL || strcmp(ep->model, req->job->model) == 0)
	{
		*len = req->body_len;
		return req->body;
	}
	if (req->send_body)
		pfree(req->send_body);
	old = MemoryContextSwitchTo(W.request_cxt);
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"model\":");
	escape_json(&buf, ep->model);
	appendBinaryStringInfo(&buf, req->body + req->model_prefix_len,
						   req->body_len - req->model_prefix_len);
	MemoryContextSwitchTo(old);
	req->send_body = buf.data;
	*len = buf.len;
	return buf.data;
}

/*
 * Start ready requests while the global bound and their endpoints allow.
 * A request whose endpoints cannot take it now stays ready; the scan stops
 * once every endpoint is blocked for this pass.
 */
static void
start_transfers(TimestampTz now)
{
	dlist_mutable_iter it;

	W.dispatch_retry_at = 0;
	if (W.nready == 0)
		return;
	router_begin_pass();
	dlist_foreach_modify(it, &W.ready)
	{
		SwarmRequest *req = dlist_container(SwarmRequest, node, it.cur);
		SwarmEndpoint *ep;
		TimestampTz retry_at;
		const char *body;
		int			len;

		if (engine_in_flight() >= W.max_in_flight || router_all_blocked())
			break;
		ep = router_choose(req->job->endpoints, req->job->nendpoints, now,
						   req->tokens_estimate, req->failed_at, &retry_at);
		if (ep == NULL)
		{
			if (retry_at > 0 && (W.dispatch_retry_at == 0 || retry_at < W.dispatch_retry_at))
				W.dispatch_retry_at = retry_at;
			if (retry_at == 0 && !job_has_endpoint(req->job))
			{
				/* none of its endpoints exists any more */
				dlist_delete(&req->node);
				W.nready--;
				req->attempts++;
				record_failure(req, "none of the job's endpoints exists");
			}
			continue;
		}
		dlist_delete(&req->node);
		W.nready--;
		req->attempts++;
		body = body_for(req, ep, &len);
		req->transfer = engine_start(req, body, len, &ep->target);
		if (req->transfer == NULL)
		{
			record_failure(req, "could not start the HTTP transfer");
			continue;
		}
		req->endpoint = ep;
		req->in_flight_at_send = ep->policy.in_flight;
		req->token_seq = endpoint_note_sent(&ep->policy, now, req->tokens_estimate);
		ep->requests++;
		req->state = SWARM_REQ_IN_FLIGHT;
	}
	update_in_flight_counters();
}

static void
record_success(SwarmRequest *req, SwarmTransfer *t, OpenAIResponse *resp, double latency_ms)
{
	SwarmResult *r = new_result(req);

	/* resp's strings already live in result_cxt */
	r->ok = true;
	r->content = resp->content;
	r->model = resp->model ? resp->model : pstrdup(req->job->model);
	r->finish_reason = resp->finish_reason;
	r->prompt_tokens = resp->prompt_tokens;
	r->completion_tokens = resp->completion_tokens;
	r->latency_ms = latency_ms;
	pg_atomic_fetch_add_u64(&swarm_counters()->succeeded, 1);
	swarm_stats_record_latency((uint64) (latency_ms * 1000.0));
}

/* an exhausted quota will not come back in seconds; an admin can alter the endpoint */
#define QUOTA_PAUSE_MS (60 * 1000)

static bool
is_quota_error(const char *code)
{
	return code != NULL && (strcmp(code, "insufficient_quota") == 0 ||
							strcmp(code, "credit_balance_exhausted") == 0);
}

/* What an attempt's outcome says about its endpoint (see endpoint.h). */
static SwarmSignal
classify_signal(CURLcode code, SwarmTransfer *t, long status, bool readable)
{
	if (code != CURLE_OK)
	{
		if (t->too_large)
			return SWARM_SIGNAL_NEUTRAL;
		if (code == CURLE_OPERATION_TIMEDOUT)
			return SWARM_SIGNAL_OVERLOAD;
		return SWARM_SIGNAL_FAILURE;
	}
	if (status >= 200 && status < 300)
		return readable ? SWARM_SIGNAL_SUCCESS : SWARM_SIGNAL_NEUTRAL;
	if (status == 429 || status == 503 || status == 408)
		return SWARM_SIGNAL_OVERLOAD;
	if (status >= 500 || status == 401 || status == 403 || status == 404)
		return SWARM_SIGNAL_FAILURE;
	return SWARM_SIGNAL_NEUTRAL;
}

/*
 * Feed an attempt's outcome to its endpoint: adaptive limit, breaker, token
 * correction, pauses asked for by the endpoint, counters.
 */
static void
endpoint_feedback(SwarmRequest *req, SwarmTransfer *t, TimestampTz now, SwarmSignal signal,
				  long status, const char *error_code, double latency_ms, int64 used_tokens,
				  bool will_retry)
{
	SwarmEndpoint *ep = req->endpoint;
	SwarmBreakerState before;

	if (ep == NULL)
		return;
	before = ep->policy.breaker;
	endpoint_note_result(&ep->policy, now, signal, latency_ms, req->in_flight_at_send);
	if (ep->policy.breaker == SWARM_BREAKER_OPEN && before != SWARM_BREAKER_OPEN)
	{
		ep->breaker_opened++;
		ereport(LOG,
				(errmsg("pg_swarm: endpoint \"%s\" failed repeatedly; not used until %s",
						ep->name, timestamptz_to_str(ep->policy.open_until))));
	}
	if (signal == SWARM_SIGNAL_SUCCESS)
	{
		ep->succeeded++;
		endpoint_note_tokens_used(&ep->policy, req->token_seq, req->tokens_estimate, used_tokens);
	}
	else
		ep->errors++;
	if (status == 429)
		ep->rate_limited++;
	if (will_retry)
		ep->retries++;

	/* the endpoint asked us to back off: the whole endpoint, not one request */
	if (t->retry_after_ms >= 0 && (status == 429 || status == 503))
		endpoint_pause(&ep->policy, TimestampTzPlusMilliseconds(now, (int64) t->retry_after_ms),
					   "Retry-After");
	if (status == 429 && is_quota_error(error_code))
		endpoint_pause(&ep->policy, TimestampTzPlusMilliseconds(now, QUOTA_PAUSE_MS),
					   "quota exhausted");
	if (t->remaining_requests == 0 && t->reset_requests_ms > 0)
		endpoint_pause(&ep->policy, TimestampTzPlusMilliseconds(now, (int64) t->reset_requests_ms),
					   "request limit reached");
	if (t->remaining_tokens == 0 && t->reset_tokens_ms > 0)
		endpoint_pause(&ep->policy, TimestampTzPlusMilliseconds(now, (int64) t->reset_tokens_ms),
					   "token limit reached");
	req->endpoint = NULL;
	router_release(ep);
}

/*
 * Sort one finished attempt into success, retry or failure, and tell its
 * endpoint.  Everything allocated for the result lives in result_cxt.
 */
static void
finish_attempt(SwarmTransfer *t, CURLcode code)
{
	SwarmRequest *req = t->owner;
	SwarmCounters *c = swarm_counters();
	TimestampTz now = GetCurrentTimestamp();
	double		latency_ms = (double) (now - t->started) / 1000.0;
	long		status = engine_http_status(t);
	MemoryContext old = MemoryContextSwitchTo(W.result_cxt);
	char	   *error = NULL;
	char	   *error_code = NULL;
	bool		retryable = false;
	bool		readable = false;
	double		hint_ms = t->retry_after_ms;
	OpenAIResponse resp;
	SwarmEndpoint *ep = req->endpoint;

	pg_atomic_fetch_add_u64(&c->attempts, 1);
	pg_atomic_fetch_add_u64(&c->bytes_received, t->body_len);
	req->transfer = NULL;
	memset(&resp, 0, sizeof(resp));

	if (code != CURLE_OK)
	{
		pg_atomic_fetch_add_u64(&c->transport_errors, 1);
		if (t->too_large)
			error = psprintf("response body exceeds swarm.max_response_bytes (%d bytes)",
							 swarm_max_response_bytes);
		else
		{
			error = psprintf("transport error: %s",
							 t->errbuf[0] ? t->errbuf : curl_easy_strerror(code));
			retryable = policy_transport_error_retryable(code);
		}
	}
	else
	{
		openai_parse_response(t->body ? t->body : "", t->body_len, &resp);
		if (resp.status == OPENAI_ERROR_BODY)
			error_code = resp.error_code;
		if (status >= 200 && status < 300)
		{
			readable = (resp.status == OPENAI_OK);
			if (resp.status == OPENAI_NO_CHOICES)
				error = pstrdup("response has no choices");
			else if (resp.status == OPENAI_ERROR_BODY)
				error = psprintf("endpoint returned an error with status %ld: %s",
								 status, clip_text(resp.error_message, 1000));
			else if (!readable)
				error = pstrdup(resp.error_message);
			/* a 200 that cannot be read is not retried unless the server says so */
		}
		else
		{
			pg_atomic_fetch_add_u64(&c->http_errors, 1);
			if (status == 429)
				pg_atomic_fetch_add_u64(&c->http_429, 1);
			if (resp.status == OPENAI_ERROR_BODY)
				error = psprintf("HTTP %ld: %s%s%s%s", status,
								 clip_text(resp.error_message, 1000),
								 error_code ? " (" : "", error_code ? error_code : "",
								 error_code ? ")" : "");
			else
				error = psprintf("HTTP %ld: %s", status,
								 body_excerpt(t->body ? t->body : "", t->body_len, 200));
			retryable = policy_http_status_retryable(status, error_code);
		}
		if (t->should_retry >= 0 && !readable)
			retryable = (t->should_retry == 1);
	}

	endpoint_feedback(req, t, now, classify_signal(code, t, status, readable), status, error_code,
					  latency_ms, (resp.prompt_tokens >= 0 && resp.completion_tokens >= 0) ?
					  (int64) resp.prompt_tokens + resp.completion_tokens : -1,
					  retryable && !readable && !req->job->cancelled &&
					  req->attempts <= swarm_max_retries);
	engine_release(t);

	if (req->job->cancelled)
	{
		/* its row is 'cancelled' already; nothing to store */
		MemoryContextSwitchTo(old);
		release_request(req);
		return;
	}
	if (readable)
	{
		record_success(req, t, &resp, latency_ms);
		MemoryContextSwitchTo(old);
		release_request(req);
		return;
	}

	if (retryable && req->attempts <= swarm_max_retries)
	{
		double		delay_ms = policy_backoff_ms(req->attempts - 1, hint_ms);

		/* another endpoint of the job can take it at once (ep is only compared) */
		if (router_has_alternative(req->job->endpoints, req->job->nendpoints, ep, now))
			delay_ms = 0;
		req->failed_at = ep;
		if (req->last_error)
			pfree(req->last_error);
		req->last_error = MemoryContextStrdup(W.request_cxt, error);
		req->state = SWARM_REQ_BACKOFF;
		req->not_before = TimestampTzPlusMilliseconds(now, (int64) delay_ms);
		pairingheap_add(W.backoff, &req->heap_node);
		W.nbackoff++;
		pg_atomic_fetch_add_u64(&c->retries, 1);
		MemoryContextSwitchTo(old);
		return;
	}
	MemoryContextSwitchTo(old);
	record_failure(req, error);
}

static void
collect_finished(void)
{
	SwarmTransfer *t;
	CURLcode	code;

	while ((t = engine_next_done(&code)) != NULL)
		finish_attempt(t, code);
	update_in_flight_counters();
}

/* Move requests whose backoff has passed back to the ready queue. */
static void
promote_due_retries(TimestampTz now)
{
	while (!pairingheap_is_empty(W.backoff))
	{
		SwarmRequest *req = pairingheap_container(SwarmRequest, heap_node,
												  pairingheap_first(W.backoff));

		if (req->not_before > now)
			break;
		(void) pairingheap_remove_first(W.backoff);
		W.nbackoff--;
		req->state = SWARM_REQ_READY;
		/* retries go first: they are the oldest work */
		dlist_push_head(&W.ready, &req->node);
		W.nready++;
	}
}

/* How long the wait may last: the nearest of all deadlines, -1 for none. */
static long
compute_wait_ms(TimestampTz now)
{
	long		wait = engine_timeout_ms(now);

#define NEAREST(ms) do { long _m = (ms); if (_m < 0) _m = 0; if (wait < 0 || _m < wait) wait = _m; } while (0)

	if (W.nresults > 0)
		NEAREST(TimestampDifferenceMilliseconds(now,
												TimestampTzPlusMilliseconds(W.oldest_result, swarm_flush_interval_ms)) + 1);
	if (!pairingheap_is_empty(W.backoff))
	{
		SwarmRequest *req = pairingheap_container(SwarmRequest, heap_node,
												  pairingheap_first(W.backoff));

		NEAREST(TimestampDifferenceMilliseconds(now, req->not_before) + 1);
	}
	if (W.nready > 0 && W.dispatch_retry_at > 0)
		NEAREST(TimestampDifferenceMilliseconds(now, W.dispatch_retry_at) + 1);
	if (W.quiet_until > now && (W.jobs_dirty || W.nresults > 0))
		NEAREST(TimestampDifferenceMilliseconds(now, W.quiet_until) + 1);
#undef NEAREST
	return wait;
}

/* ---- lifecycle ---- */

static void
worker_init(void)
{
	HASHCTL		ctl;

	memset(&W, 0, sizeof(W));
	W.request_cxt = GenerationContextCreate(TopMemoryContext, "pg_swarm requests",
											ALLOCSET_DEFAULT_SIZES);
	W.result_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm results",
										 ALLOCSET_DEFAULT_SIZES);
	W.job_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm jobs",
									  ALLOCSET_DEFAULT_SIZES);
	router_init(AllocSetContextCreate(TopMemoryContext, "pg_swarm endpoints",
									  ALLOCSET_DEFAULT_SIZES));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(SwarmJob);
	ctl.hcxt = W.job_cxt;
	W.jobs = hash_create("pg_swarm jobs", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	dlist_init(&W.job_order);
	dlist_init(&W.ready);
	W.backoff = pairingheap_allocate(backoff_cmp, NULL);
	W.results_cap = 256;
	W.results = MemoryContextAlloc(TopMemoryContext, sizeof(SwarmResult) * W.results_cap);
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

	/* results are idempotent to redo, so never wait for the WAL flush */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "pg_swarm worker", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Server-wide defaults meant for client sessions must not change how the
	 * worker stores results: a statement_timeout would cut building a large
	 * simulation step short on every try, a default of SERIALIZABLE would
	 * make stores fail on conflicts, a read-only default would refuse them.
	 */
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);

	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pg_swarm requires a UTF8 database, but \"%s\" is not", swarm_database),
				 errhint("Point swarm.database at a UTF8 database.")));

	worker_init();
	engine_init();
	configure_engine();

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
			configure_engine();
		}

		now = GetCurrentTimestamp();
		promote_due_retries(now);
		if (tick_due(now))
			run_tick();
		start_transfers(GetCurrentTimestamp());

		/*
		 * Publish the endpoints' status at most every 100 ms while busy, and
		 * always before a long sleep, so that the view is never stale for long.
		 */
		now = GetCurrentTimestamp();
		timeout = compute_wait_ms(now);
		if (now - W.last_publish >= 100 * 1000 || timeout < 0 || timeout > 100)
		{
			router_publish(now);
			W.last_publish = now;
		}

		nevents = WaitEventSetWait(wes, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
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
	if (W.nresults > 0 && W.extension_ready)
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
