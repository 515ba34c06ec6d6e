/*-------------------------------------------------------------------------
 *
 * request.c
 *		A request's life in the worker: built when claimed, sent, retried,
 *		and ended as a result waiting to be stored.
 *
 * Every request is in exactly one state (SwarmRequestState, see request.h),
 * and set_state() is the only code that changes it: it checks the move
 * against the table of allowed transitions, moves the request between the
 * collections of its states (the ready queue, the backoff heap, the
 * in-flight count) and frees it when it is done, so "where is this request"
 * and "what state is it in" can never disagree.  The events that drive it
 * are the functions below: claimed, sent, an attempt ended, a backoff
 * passed, its deadline passed, its job abandoned.
 *
 * What an attempt's reply means is decided in outcome.c; here it meets the
 * request's own budget (attempts left, its deadline, its job still running)
 * and becomes a result, a retry, or nothing: request_attempt_ended() is the
 * one place that decides whether a request is tried again.  Results collect
 * in an array until the worker stores them (queue.c); each result keeps its
 * job known (jobs.c) until it is stored or dropped.
 *
 * Memory: requests and their bodies live in the request context (a
 * generation context: they are freed in about the order they were made);
 * results and their strings in the result context, reset once no result is
 * left in it.  Error texts are formatted straight into the result context:
 * nothing is left behind in the caller's.  No SQL, no I/O, no shared
 * memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdarg.h>

#include "common/cryptohash.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "openai.h"
#include "prompt.h"
#include "request.h"

static MemoryContext request_cxt = NULL;
static MemoryContext result_cxt = NULL;
static swarm_scrub_fn scrub_secrets = NULL;

static dlist_head all_requests = DLIST_STATIC_INIT(all_requests);
static dlist_head ready_queue = DLIST_STATIC_INIT(ready_queue);
static pairingheap *backoff_heap = NULL;
static pairingheap *deadline_heap = NULL;	/* READY and BACKOFF requests */
static int	state_count[SWARM_REQ_NSTATES];

static char *copy_or_null(MemoryContext cxt, const char *s);

#define RESULTS_INITIAL_CAP 256

static SwarmResult *results = NULL;
static int	nresults = 0;
static int	results_cap = 0;
static TimestampTz oldest_result = 0;

/* allowed[from][to]: the moves of request.h's diagram */
static const bool allowed[SWARM_REQ_NSTATES][SWARM_REQ_NSTATES] = {
	[SWARM_REQ_CLAIMED] = {[SWARM_REQ_READY] = true, [SWARM_REQ_DONE] = true},
	[SWARM_REQ_READY] = {[SWARM_REQ_IN_FLIGHT] = true, [SWARM_REQ_DONE] = true},
	[SWARM_REQ_IN_FLIGHT] = {[SWARM_REQ_BACKOFF] = true, [SWARM_REQ_DONE] = true},
	[SWARM_REQ_BACKOFF] = {[SWARM_REQ_READY] = true, [SWARM_REQ_DONE] = true},
};

static const char *const state_names[SWARM_REQ_NSTATES] = {
	[SWARM_REQ_CLAIMED] = "claimed",
	[SWARM_REQ_READY] = "ready",
	[SWARM_REQ_IN_FLIGHT] = "in_flight",
	[SWARM_REQ_BACKOFF] = "backoff",
	[SWARM_REQ_DONE] = "done",
};

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

static int
deadline_cmp(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	const SwarmRequest *ra = pairingheap_const_container(SwarmRequest, deadline_node, a);
	const SwarmRequest *rb = pairingheap_const_container(SwarmRequest, deadline_node, b);

	if (ra->deadline < rb->deadline)
		return 1;
	if (ra->deadline > rb->deadline)
		return -1;
	return 0;
}

void
request_init(MemoryContext req_cxt, MemoryContext res_cxt, swarm_scrub_fn scrub)
{
	request_cxt = req_cxt;
	result_cxt = res_cxt;
	scrub_secrets = scrub;
	dlist_init(&all_requests);
	dlist_init(&ready_queue);
	backoff_heap = pairingheap_allocate(backoff_cmp, NULL);
	deadline_heap = pairingheap_allocate(deadline_cmp, NULL);
	memset(state_count, 0, sizeof(state_count));
	results_cap = RESULTS_INITIAL_CAP;
	results = MemoryContextAlloc(TopMemoryContext, sizeof(SwarmResult) * results_cap);
	nresults = 0;
}

const char *
request_state_name(SwarmRequestState state)
{
	return state_names[state];
}

/* Do requests in this state wait for their deadline here (not in flight)? */
static inline bool
waits(SwarmRequestState state)
{
	return state == SWARM_REQ_READY || state == SWARM_REQ_BACKOFF;
}

/*
 * The one transition: leave the old state's collection, enter the new one's.
 * A retry re-enters the ready queue at its head (it is the oldest work);
 * waiting requests are also in the deadline heap; DONE frees the request and
 * tells its job whether a result of it waits to be stored.
 */
static void
set_state(SwarmRequest *req, SwarmRequestState to, bool result_waits)
{
	SwarmRequestState from = req->state;

	if (!allowed[from][to])
		elog(ERROR, "pg_swarm: request " INT64_FORMAT " cannot go from %s to %s",
			 req->id, state_names[from], state_names[to]);

	if (waits(from) && !waits(to))
		pairingheap_remove(deadline_heap, &req->deadline_node);
	else if (!waits(from) && waits(to))
		pairingheap_add(deadline_heap, &req->deadline_node);
	switch (from)
	{
		case SWARM_REQ_READY:
			dlist_delete(&req->ready_node);
			break;
		case SWARM_REQ_BACKOFF:
			pairingheap_remove(backoff_heap, &req->heap_node);
			break;
		case SWARM_REQ_IN_FLIGHT:
			req->transfer = NULL;
			break;
		case SWARM_REQ_CLAIMED:
		case SWARM_REQ_DONE:
			break;
	}
	state_count[from]--;

	switch (to)
	{
		case SWARM_REQ_READY:
			if (from == SWARM_REQ_BACKOFF)
				dlist_push_head(&ready_queue, &req->ready_node);
			else
				dlist_push_tail(&ready_queue, &req->ready_node);
			break;
		case SWARM_REQ_BACKOFF:
			pairingheap_add(backoff_heap, &req->heap_node);
			break;
		case SWARM_REQ_CLAIMED:
		case SWARM_REQ_IN_FLIGHT:
			break;
		case SWARM_REQ_DONE:
			{
				SwarmJob   *job = req->job;

				dlist_delete(&req->all_node);
				if (req->body)
					pfree(req->body);
				if (req->send_body)
					pfree(req->send_body);
				if (req->last_error)
					pfree(req->last_error);
				pfree(req);
				jobs_request_ended(job, result_waits);
				return;
			}
	}
	req->state = to;
	state_count[to]++;
}

int
request_count(SwarmRequestState state)
{
	return state_count[state];
}

/* ---- results ---- */

static SwarmResult *
new_result(SwarmRequest *req)
{
	SwarmResult *r;

	if (nresults == results_cap)
	{
		results_cap *= 2;
		results = repalloc(results, sizeof(SwarmResult) * results_cap);
	}
	if (nresults == 0)
		oldest_result = GetCurrentTimestamp();
	r = &results[nresults++];
	memset(r, 0, sizeof(*r));
	r->request_id = req->id;
	r->agent_id = req->agent_id;
	r->shard = req->shard;
	r->job_id = req->job->id;
	r->job = req->job;
	r->advances = req->job->advances;
	r->attempts = req->attempts;
	r->keyed = req->keyed;
	if (req->keyed)
		memcpy(r->key, req->key, SWARM_RESPONSE_KEY_LEN);
	r->prompt_tokens = -1;
	r->completion_tokens = -1;
	return r;
}

/*
 * End the request with a failure to store, saying why (formatted straight
 * into the result context; with the number of attempts when there were
 * several; keys scrubbed).
 */
static void
end_failed(SwarmRequest *req, const char *fmt,...) pg_attribute_printf(2, 3);

static void
end_failed(SwarmRequest *req, const char *fmt,...)
{
	MemoryContext old = MemoryContextSwitchTo(result_cxt);
	SwarmResult *r = new_result(req);
	StringInfoData why;

	initStringInfo(&why);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&why, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&why, needed);
	}
	if (req->attempts > 1)
		appendStringInfo(&why, " (after %d attempts)", req->attempts);
	if (scrub_secrets)
		scrub_secrets(why.data);
	r->ok = false;
	r->error = why.data;
	MemoryContextSwitchTo(old);
	set_state(req, SWARM_REQ_DONE, true);
}

/* End the request with its completion, copied into the result context. */
static void
end_stored(SwarmRequest *req, const OpenAIResponse *reply, double latency_ms)
{
	MemoryContext old = MemoryContextSwitchTo(result_cxt);
	SwarmResult *r = new_result(req);

	r->ok = true;
	r->content = copy_or_null(result_cxt, reply->content);
	r->model = pstrdup(reply->model ? reply->model : req->job->model);
	r->finish_reason = copy_or_null(result_cxt, reply->finish_reason);
	r->prompt_tokens = reply->prompt_tokens;
	r->completion_tokens = reply->completion_tokens;
	r->latency_ms = latency_ms;
	r->endpoint = req->state == SWARM_REQ_IN_FLIGHT && req->send.endpoint ?
		pstrdup(req->send.endpoint->name) : NULL;
	MemoryContextSwitchTo(old);
	set_state(req, SWARM_REQ_DONE, true);
}

/*
 * The SHA-256 of the request's body as built for its job's model (before an
 * endpoint's own model replaces it): the key of its answer in
 * swarm.responses.  The same messages, parameters and structured output
 * give the same key, whatever the run, the request or the endpoint.
 */
static void
compute_key(SwarmRequest *req)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) req->body, req->body_len) < 0 ||
		pg_cryptohash_final(ctx, req->key, SWARM_RESPONSE_KEY_LEN) < 0)
		elog(ERROR, "pg_swarm: could not compute the SHA-256 of a request: %s",
			 ctx ? pg_cryptohash_error(ctx) : "out of memory");
	pg_cryptohash_free(ctx);
	req->keyed = true;
}

/*
 * A READY request of a replayed job answered from swarm.responses: it ends
 * with the stored completion, no attempt made.
 */
void
request_answer_stored(SwarmRequest *req, const OpenAIResponse *reply)
{
	if (req->state != SWARM_REQ_READY)
		elog(ERROR, "pg_swarm: request " INT64_FORMAT " answered from the store while %s",
			 req->id, state_names[req->state]);
	end_stored(req, reply, 0);
}

/*
 * The results waiting to be stored, in the order they ended; their strings
 * live in the result context.
 */
SwarmResult *
request_results(int *n)
{
	*n = nresults;
	return results;
}

/* When the oldest result waiting to be stored ended (0: none waits). */
TimestampTz
request_oldest_result(void)
{
	return nresults > 0 ? oldest_result : 0;
}

static char *
copy_or_null(MemoryContext cxt, const char *s)
{
	return s ? MemoryContextStrdup(cxt, s) : NULL;
}

/*
 * Results are gone from the array, `keep` are left: free the memory of the
 * others.  With none left that is a reset of the result context; otherwise
 * the ones left are copied into a fresh context and the old one deleted, so
 * that results kept for long (their job's row held by a user's open
 * transaction) never pin the memory of those stored meanwhile.
 */
static void
compacted(int keep)
{
	MemoryContext fresh;

	nresults = keep;
	if (keep == 0)
	{
		MemoryContextReset(result_cxt);
		/* a burst of results grew the array: give it back once it is empty */
		if (results_cap > RESULTS_INITIAL_CAP)
		{
			pfree(results);
			results_cap = RESULTS_INITIAL_CAP;
			results = MemoryContextAlloc(TopMemoryContext, sizeof(SwarmResult) * results_cap);
		}
		return;
	}
	fresh = AllocSetContextCreate(MemoryContextGetParent(result_cxt), "pg_swarm results",
								  ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < keep; i++)
	{
		SwarmResult *r = &results[i];

		r->content = copy_or_null(fresh, r->content);
		r->model = copy_or_null(fresh, r->model);
		r->finish_reason = copy_or_null(fresh, r->finish_reason);
		r->error = copy_or_null(fresh, r->error);
	}
	MemoryContextDelete(result_cxt);
	result_cxt = fresh;
}

/*
 * A store committed: forget the results it stored, telling their jobs, and
 * keep those it deferred (their job's row was held by another transaction)
 * for the next store, a flush interval from now.
 */
void
request_results_stored(void)
{
	int			keep = 0;

	for (int i = 0; i < nresults; i++)
	{
		SwarmResult r = results[i];

		if (r.deferred)
		{
			r.deferred = false;
			results[keep++] = r;
		}
		else if (r.job != NULL)
			jobs_result_stored(r.job);
	}
	if (keep > 0)
		oldest_result = GetCurrentTimestamp();
	compacted(keep);
}

/*
 * The job was abandoned: drop its results not yet stored (its rows are
 * cancelled, or gone).  Returns how many; the job counts them off itself.
 */
int
request_results_drop_job(SwarmJob *job)
{
	int			keep = 0;
	int			dropped;

	for (int i = 0; i < nresults; i++)
		if (results[i].job != job)
			results[keep++] = results[i];
	dropped = nresults - keep;
	if (dropped > 0)
		compacted(keep);
	return dropped;
}

/*
 * A result could not be stored: it becomes a failure saying why (in the
 * result context), to be stored on its own.
 */
void
request_result_failed(SwarmResult *result, const char *why)
{
	MemoryContext old = MemoryContextSwitchTo(result_cxt);

	result->ok = false;
	result->error = psprintf("could not store the result: %s", why);
	if (scrub_secrets)
		scrub_secrets(result->error);
	MemoryContextSwitchTo(old);
}

/* ---- events ---- */

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

/*
 * Build a request's body into *body (in the request context).  Fails, with
 * *error saying why (in the caller's context), when a message grows past
 * `limit` bytes once its placeholders are expanded, or when building it
 * raises an error (out of memory, say): that request fails, the others go
 * on.  Nothing here touches the database, so an error can be caught without
 * a subtransaction.
 */
static bool
build_body(SwarmRequest *req, const SwarmPromptVars *vars, int limit, MemoryContext body_cxt,
		   StringInfo body, char **error)
{
	MemoryContext caller = CurrentMemoryContext;
	SwarmJob   *job = req->job;
	volatile bool ok = true;

	*error = NULL;
	body->data = NULL;
	PG_TRY();
	{
		StringInfoData system_message;
		StringInfoData user_message;
		MemoryContext old;

		initStringInfo(&system_message);
		initStringInfo(&user_message);
		if (!prompt_expand(&system_message, job->system_template, vars, limit) ||
			!prompt_expand(&user_message, job->user_template, vars, limit))
		{
			ok = false;
			*error = psprintf("prompt too large once its placeholders are expanded: over %d bytes (swarm.max_prompt_bytes)",
							  limit);
		}
		else
		{
			old = MemoryContextSwitchTo(body_cxt);
			initStringInfo(body);
			openai_build_request(body, job->model, job->max_tokens, system_message.data,
								 user_message.data, job->response_schema, &req->tail_offset);
			MemoryContextSwitchTo(old);
		}
		pfree(system_message.data);
		pfree(user_message.data);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		ok = false;
		*error = psprintf("could not build the request: %s", edata->message);
		FreeErrorData(edata);
		/* a body half built in the long-lived request context */
		if (body->data != NULL)
			pfree(body->data);
		body->data = NULL;
	}
	PG_END_TRY();
	return ok;
}

/*
 * A queued row of `job` was claimed at `now`: build its body and queue it as
 * READY, to end within deadline_ms.  A row whose agent is gone, or whose
 * prompt cannot be built, ends at once as a failure.  Returns the request,
 * or NULL when it ended at once.  May ereport (out of memory).
 */
SwarmRequest *
request_claimed(SwarmJob *job, const SwarmClaimedRow *row, TimestampTz now, int64 deadline_ms,
				int prompt_limit)
{
	SwarmRequest *req = MemoryContextAllocZero(request_cxt, sizeof(SwarmRequest));
	SwarmPromptVars vars;
	StringInfoData body;
	char	   *error;

	req->id = row->request_id;
	req->agent_id = row->agent_id;
	req->shard = row->shard;
	req->job = job;
	req->claimed_at = now;
	req->deadline = TimestampTzPlusMilliseconds(now, deadline_ms);
	req->state = SWARM_REQ_CLAIMED;
	state_count[SWARM_REQ_CLAIMED]++;
	dlist_push_tail(&all_requests, &req->all_node);
	jobs_request_claimed(job);

	if (row->name == NULL)
	{
		end_failed(req, "agent " INT64_FORMAT " does not exist", row->agent_id);
		return NULL;
	}

	vars.agent_id = row->agent_id;
	vars.name = row->name;
	vars.persona = row->persona;
	vars.context = job->context;
	vars.extra = row->vars;
	if (!build_body(req, &vars, prompt_limit, request_cxt, &body, &error))
	{
		end_failed(req, "%s", error);
		pfree(error);
		return NULL;
	}

	req->body = body.data;
	req->body_len = body.len;
	/* the body starts {"model":"..." — an endpoint's own model replaces it */
	req->model_prefix_len = strlen("{\"model\":") + escaped_length(job->model);
	/* what a budget is charged at send: about 4 bytes a token, plus max_tokens */
	req->tokens_estimate = body.len / 4 + job->max_tokens;
	if (job->store_responses || job->replay != SWARM_REPLAY_OFF)
		compute_key(req);
	set_state(req, SWARM_REQ_READY, false);
	return req;
}

SwarmRequest *
request_first_ready(void)
{
	if (dlist_is_empty(&ready_queue))
		return NULL;
	return dlist_container(SwarmRequest, ready_node, dlist_head_node(&ready_queue));
}

SwarmRequest *
request_next_ready(SwarmRequest *req)
{
	if (!dlist_has_next(&ready_queue, &req->ready_node))
		return NULL;
	return dlist_container(SwarmRequest, ready_node, dlist_next_node(&ready_queue, &req->ready_node));
}

/* Is req's body, as built, the one for this endpoint model and style? */
static inline bool
body_is_as_built(const SwarmRequest *req, const char *endpoint_model, OpenAIOutputStyle style)
{
	return (endpoint_model == NULL || strcmp(endpoint_model, req->job->model) == 0) &&
		(req->job->response_schema == NULL || style == OPENAI_OUTPUT_JSON_SCHEMA);
}

/* req's body re-made into buf for another model and style (see below). */
static void
remake_body(const SwarmRequest *req, const char *endpoint_model, OpenAIOutputStyle style,
			StringInfo buf)
{
	bool		same_model = (endpoint_model == NULL || strcmp(endpoint_model, req->job->model) == 0);
	bool		same_style = (req->job->response_schema == NULL || style == OPENAI_OUTPUT_JSON_SCHEMA);

	appendStringInfoString(buf, "{\"model\":");
	escape_json(buf, same_model ? req->job->model : endpoint_model);
	if (same_style)
		appendBinaryStringInfo(buf, req->body + req->model_prefix_len,
							   req->body_len - req->model_prefix_len);
	else
	{
		appendBinaryStringInfo(buf, req->body + req->model_prefix_len,
							   req->tail_offset - req->model_prefix_len);
		openai_append_structured(buf, req->job->response_schema, style);
		appendStringInfoChar(buf, '}');
	}
}

/*
 * The body to send to an endpoint that serves `endpoint_model` (NULL: the
 * job's model) and wants structured output in `style` (for a job that asks
 * for it: the body is built in the json_schema form, and re-made with tools
 * for an endpoint configured so).  Valid until the request's next attempt or
 * end.
 */
const char *
request_body_for(SwarmRequest *req, const char *endpoint_model, OpenAIOutputStyle style, int *len)
{
	StringInfoData buf;
	MemoryContext old;

	if (body_is_as_built(req, endpoint_model, style))
	{
		*len = req->body_len;
		return req->body;
	}
	if (req->send_body)
		pfree(req->send_body);
	old = MemoryContextSwitchTo(request_cxt);
	initStringInfo(&buf);
	remake_body(req, endpoint_model, style, &buf);
	MemoryContextSwitchTo(old);
	req->send_body = buf.data;
	*len = buf.len;
	return buf.data;
}

/*
 * The body the worker would send to an endpoint serving `endpoint_model`
 * (NULL: the job's) in `style`, for a claimed row of `job`, appended to out
 * (in the caller's memory context); with key not NULL, also the response
 * store's key of it (request_claimed()'s).  For the batcher, which writes
 * such bodies into files instead of sending them (batcher.c).  Returns
 * false, with *error, when the agent is gone or the prompt cannot be built.
 */
bool
request_render_body(SwarmJob *job, const SwarmClaimedRow *row, int prompt_limit,
					const char *endpoint_model, OpenAIOutputStyle style, StringInfo out,
					uint8 *key, char **error)
{
	SwarmRequest req;
	SwarmPromptVars vars;
	StringInfoData body;

	memset(&req, 0, sizeof(req));
	req.job = job;
	if (row->name == NULL)
	{
		*error = psprintf("agent " INT64_FORMAT " does not exist", row->agent_id);
		return false;
	}
	vars.agent_id = row->agent_id;
	vars.name = row->name;
	vars.persona = row->persona;
	vars.context = job->context;
	vars.extra = row->vars;
	if (!build_body(&req, &vars, prompt_limit, CurrentMemoryContext, &body, error))
		return false;
	req.body = body.data;
	req.body_len = body.len;
	req.model_prefix_len = strlen("{\"model\":") + escaped_length(job->model);
	if (key != NULL)
	{
		compute_key(&req);
		memcpy(key, req.key, SWARM_RESPONSE_KEY_LEN);
	}
	if (body_is_as_built(&req, endpoint_model, style))
		appendBinaryStringInfo(out, body.data, body.len);
	else
		remake_body(&req, endpoint_model, style, out);
	pfree(body.data);
	return true;
}

/* An attempt started, charged as `send` says: READY -> IN_FLIGHT. */
void
request_sent(SwarmRequest *req, const SwarmSend *send, void *transfer)
{
	set_state(req, SWARM_REQ_IN_FLIGHT, false);
	req->attempts++;
	req->send = *send;
	req->transfer = transfer;
}

/* A READY request cannot be sent at all (no endpoint, curl refused): it fails. */
void
request_fail_unsent(SwarmRequest *req, const char *error)
{
	req->attempts++;
	end_failed(req, "%s", error);
}

/* "N s after it was claimed", for error texts */
static double
deadline_seconds(const SwarmRequest *req)
{
	return (double) (req->deadline - req->claimed_at) / USECS_PER_SEC;
}

/*
 * An attempt ended with `outcome` (its strings may live in the caller's
 * short-lived context: what is kept is copied).  The one place that decides what becomes of the request: keep
 * the completion; retry while the outcome allows it, attempts are left
 * (max_retries after the first), its job still runs and the retry can start
 * before its deadline, at once when `another_endpoint_up` (failover) or
 * after a backoff; otherwise fail.  A request of an abandoned job ends with
 * nothing to store: its row is 'cancelled' already, or gone.
 */
SwarmAttemptEnd
request_attempt_ended(SwarmRequest *req, const SwarmOutcome *outcome, double latency_ms,
					  TimestampTz now, int max_retries, bool another_endpoint_up)
{
	const struct SwarmEndpoint *ep = req->send.endpoint;
	double		delay_ms;

	if (req->state != SWARM_REQ_IN_FLIGHT)
		elog(ERROR, "pg_swarm: request " INT64_FORMAT " ended an attempt while %s",
			 req->id, state_names[req->state]);
	if (req->job->state == SWARM_JOB_ABANDONED)
	{
		set_state(req, SWARM_REQ_DONE, false);
		return SWARM_END_DROPPED;
	}
	if (outcome->verdict == SWARM_VERDICT_OK)
	{
		end_stored(req, &outcome->reply, latency_ms);
		return SWARM_END_STORED;
	}
	/*
	 * An attempt is given at most what is left before the request's
	 * deadline: one that ended, transiently, at or past it was cut by the
	 * deadline (curl's "timed out after 1 milliseconds"), and says so.
	 */
	if (outcome->verdict == SWARM_VERDICT_RETRY && now >= req->deadline)
	{
		end_failed(req, "the request's deadline passed (%.0f s after it was claimed) during its last attempt: %s",
				   deadline_seconds(req), outcome->error);
		return SWARM_END_FAILED;
	}
	if (outcome->verdict != SWARM_VERDICT_RETRY || req->attempts > max_retries)
	{
		end_failed(req, "%s", outcome->error);
		return SWARM_END_FAILED;
	}
	delay_ms = another_endpoint_up ? 0 :
		outcome_backoff_ms(req->attempts - 1, outcome->retry_after_ms);
	if (TimestampTzPlusMilliseconds(now, (int64) delay_ms) >= req->deadline)
	{
		end_failed(req, "%s; not retried: the next attempt could start only after the request's deadline (%.0f s after it was claimed)",
				   outcome->error, deadline_seconds(req));
		return SWARM_END_FAILED;
	}
	req->not_before = TimestampTzPlusMilliseconds(now, (int64) delay_ms);
	set_state(req, SWARM_REQ_BACKOFF, false);
	req->failed_at = ep;
	if (req->last_error)
		pfree(req->last_error);
	req->last_error = MemoryContextStrdup(request_cxt, outcome->error);
	return SWARM_END_RETRY;
}

/* Requests whose backoff has passed go back to the ready queue. */
void
request_promote_due(TimestampTz now)
{
	while (!pairingheap_is_empty(backoff_heap))
	{
		SwarmRequest *req = pairingheap_container(SwarmRequest, heap_node,
												  pairingheap_first(backoff_heap));

		if (req->not_before > now)
			break;
		set_state(req, SWARM_REQ_READY, false);
	}
}

/* When the earliest backoff ends (0: none waits). */
TimestampTz
request_next_due(void)
{
	if (pairingheap_is_empty(backoff_heap))
		return 0;
	return pairingheap_container(SwarmRequest, heap_node, pairingheap_first(backoff_heap))->not_before;
}

/*
 * Fail every waiting request whose deadline has passed: one still waiting
 * for an endpoint (down, paused, or out of budget) or for its retry.
 * Returns how many ended.
 */
int
request_expire(TimestampTz now)
{
	int			n = 0;

	while (!pairingheap_is_empty(deadline_heap))
	{
		SwarmRequest *req = pairingheap_container(SwarmRequest, deadline_node,
												  pairingheap_first(deadline_heap));

		if (req->deadline > now)
			break;
		if (req->last_error)
			end_failed(req, "the request's deadline passed (%.0f s after it was claimed) while it waited to be retried; the last attempt: %s",
					   deadline_seconds(req), req->last_error);
		else
			end_failed(req, "the request's deadline passed (%.0f s after it was claimed) while it waited for an endpoint that could take it (see swarm.endpoint_status)",
					   deadline_seconds(req));
		n++;
	}
	return n;
}

/* The earliest deadline of a waiting request (0: none waits). */
TimestampTz
request_next_deadline(void)
{
	if (pairingheap_is_empty(deadline_heap))
		return 0;
	return pairingheap_container(SwarmRequest, deadline_node,
								 pairingheap_first(deadline_heap))->deadline;
}

/*
 * The job was abandoned: its waiting requests end now, with nothing to
 * store.  Those in flight end when their attempt does
 * (request_attempt_ended drops them).
 */
void
request_drop_job(SwarmJob *job)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &all_requests)
	{
		SwarmRequest *req = dlist_container(SwarmRequest, all_node, it.cur);

		if (req->job == job && req->state != SWARM_REQ_IN_FLIGHT)
			set_state(req, SWARM_REQ_DONE, false);
	}
}
