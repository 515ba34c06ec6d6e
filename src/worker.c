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
#include "utils/snapmgr.h"

#include "engine.h"
#include "openai.h"
#include "policy.h"
#include "prompt.h"
#include "queue.h"

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
	char	   *api_key;		/* for scrubbing error texts; never logged */
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

/* Remove the API key from text we are about to store or log. */
static char *
scrub_secret(char *text)
{
	char	   *hit;

	if (W.api_key == NULL || W.api_key[0] == '\0' || text == NULL)
		return text;
	while ((hit = strstr(text, W.api_key)) != NULL)
	{
		size_t		klen = strlen(W.api_key);

		memset(hit, '*', klen);
	}
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
	char	   *base = swarm_base_url ? swarm_base_url : "";
	size_t		blen = strlen(base);

	if (W.api_key)
	{
		explicit_bzero(W.api_key, strlen(W.api_key));
		pfree(W.api_key);
	}
	W.api_key = MemoryContextStrdup(TopMemoryContext, "");
	{
		char	   *key = swarm_config_read_api_key();

		if (key)
		{
			pfree(W.api_key);
			W.api_key = MemoryContextStrdup(TopMemoryContext, key);
			explicit_bzero(key, strlen(key));
			pfree(key);
		}
	}
	while (blen > 0 && base[blen - 1] == '/')
		blen--;
	s.url = psprintf("%.*s/chat/completions", (int) blen, base);
	s.api_key = W.api_key[0] ? W.api_key : NULL;
	s.ca_file = (swarm_ca_file && swarm_ca_file[0]) ? swarm_ca_file : NULL;
	s.timeout_ms = swarm_request_timeout_ms;
	s.connect_timeout_ms = swarm_connect_timeout_ms;
	s.max_response_bytes = (size_t) swarm_max_response_bytes;
	apply_fd_limit();
	s.max_connections = W.max_in_flight;
	engine_configure(&s);
}

/* ---- jobs ---- */

static void
forget_job(SwarmJob *job)
{
	bool		found;

	dlist_delete(&job->node);
	hash_search(W.jobs, &job->id, HASH_REMOVE, &found);
}

static void
release_request(SwarmRequest *req)
{
	SwarmJob   *job = req->job;

	if (req->body)
		pfree(req->body);
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
	SwarmJob   *job = hash_search(W.jobs, &row->id, HASH_ENTER, &found);

	if (found)
	{
		job->seen = true;
		return;
	}

	memset(((char *) job) + sizeof(int64), 0, sizeof(SwarmJob) - sizeof(int64));
	job->model = MemoryContextStrdup(W.job_cxt, row->model);
	job->max_tokens = row->max_tokens;
	job->context = MemoryContextStrdup(W.job_cxt, row->context);
	job->system_template = MemoryContextStrdup(W.job_cxt, row->system_template);
	job->user_template = MemoryContextStrdup(W.job_cxt, row->user_template);
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
refresh_jobs(void)
{
	HASH_SEQ_STATUS seq;
	SwarmJob   *job;
	SwarmJob  **gone;
	int			ngone = 0;

	hash_seq_init(&seq, W.jobs);
	while ((job = hash_seq_search(&seq)) != NULL)
		job->seen = false;

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

static void
on_claim_row(SwarmJob *job, int64 request_id, int64 agent_id,
			 const char *name, Jsonb *persona, void *arg)
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
		queue_store_results(r, 1);
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
			W.extension_ready = OidIsValid(oid);
			if (!W.extension_ready)
				W.jobs_dirty = false;
		}
		if (W.extension_ready)
		{
			if (W.nresults > 0)
				queue_store_results(W.results, W.nresults);
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

static void
start_transfers(void)
{
	while (W.nready > 0 && engine_in_flight() < W.max_in_flight)
	{
		SwarmRequest *req = dlist_container(SwarmRequest, node, dlist_pop_head_node(&W.ready));

		W.nready--;
		req->attempts++;
		req->transfer = engine_start(req, req->body, req->body_len);
		if (req->transfer == NULL)
		{
			record_failure(req, "could not start the HTTP transfer");
			continue;
		}
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

/*
 * Sort one finished attempt into success, retry or failure.  Everything it
 * allocates for the result lives in result_cxt.
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
	bool		retryable = false;
	double		hint_ms = t->retry_after_ms;

	pg_atomic_fetch_add_u64(&c->attempts, 1);
	pg_atomic_fetch_add_u64(&c->bytes_received, t->body_len);
	req->transfer = NULL;

	if (req->job->cancelled)
	{
		/* its row is 'cancelled' already; nothing to store */
		MemoryContextSwitchTo(old);
		engine_release(t);
		release_request(req);
		return;
	}

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
		OpenAIResponse resp;

		openai_parse_response(t->body ? t->body : "", t->body_len, &resp);
		if (status >= 200 && status < 300)
		{
			if (resp.status == OPENAI_OK)
			{
				record_success(req, t, &resp, latency_ms);
				MemoryContextSwitchTo(old);
				engine_release(t);
				release_request(req);
				return;
			}
			if (resp.status == OPENAI_NO_CHOICES)
				error = pstrdup("response has no choices");
			else if (resp.status == OPENAI_ERROR_BODY)
				error = psprintf("endpoint returned an error with status %ld: %s",
								 status, clip_text(resp.error_message, 1000));
			else
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
								 resp.error_code ? " (" : "",
								 resp.error_code ? resp.error_code : "",
								 resp.error_code ? ")" : "");
			else
				error = psprintf("HTTP %ld: %s", status,
								 body_excerpt(t->body ? t->body : "", t->body_len, 200));
			retryable = policy_http_status_retryable(status,
													 resp.status == OPENAI_ERROR_BODY ? resp.error_code : NULL);
		}
		if (t->should_retry >= 0)
			retryable = (t->should_retry == 1);
	}
	engine_release(t);

	if (retryable && req->attempts <= swarm_max_retries)
	{
		double		delay_ms = policy_backoff_ms(req->attempts - 1, hint_ms);

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
		W.extension_ready = OidIsValid(W.extension_oid);
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
		start_transfers();

		nevents = WaitEventSetWait(wes, compute_wait_ms(GetCurrentTimestamp()),
								   events, lengthof(events), PG_WAIT_EXTENSION);
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
