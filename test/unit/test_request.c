/*-------------------------------------------------------------------------
 *
 * test_request.c
 *		C unit tests of src/request.c (a request's life in the worker: built
 *		when claimed, sent, retried, ended as a result waiting to be
 *		stored), run without a server, with the real src/jobs.c beneath it.
 *
 * src/request.c, src/jobs.c, src/openai.c (openai_build_request) and
 * src/outcome.c (outcome_backoff_ms) are compiled exactly as in the
 * extension, against the server headers; test/unit/unit_backend.c stands in
 * for the backend (memory contexts that own their chunks, ereport with
 * PG_TRY, a pairingheap stand-in, a test clock).  src/prompt.c reads jsonb
 * with backend functions that cannot link here, so prompt_expand() below
 * stands in for it: it expands {name} only (every other byte is copied),
 * and honours the limit as prompt.c does (false once the output holds more
 * than `limit` bytes).
 *
 * The test plays the worker the way src/worker.c and src/tick.c do: jobs
 * come from job scans (jobs_begin_scan/jobs_reconcile/jobs_end_scan), with
 * request.c's own request_drop_job/request_results_drop_job as jobs.c's
 * hooks; rows are claimed with request_claimed(); attempts are sent with a
 * SwarmSend built here and end with SwarmOutcome values built here, their
 * strings in a "pass" context that is reset right after each call, so that
 * AddressSanitizer proves request.c kept copies.  The request context is a
 * generation context, the result context a child of a "results parent"
 * (request.c replaces it under that parent when it compacts).
 *
 * Areas: claimed -> READY (body, deadline, estimate, body_for); a missing
 * agent; a prompt over the limit; an ERROR while building the body (out of
 * memory, injected); READY -> IN_FLIGHT -> DONE with a stored result;
 * RETRY -> BACKOFF -> READY (server hint, exponential backoff, failover at
 * once and at the head of the queue); retries exhausted; a retry past the
 * deadline; request_expire's two texts; request_fail_unsent; a request of
 * an abandoned job; request_results_stored with deferred results;
 * request_results_drop_job; the results array growing; scrubbing; the
 * counts per state adding up; every allowed move, and illegal ones raising
 * ERROR.  After every area the request context must be empty (request.c
 * frees all it allocated) and the pass context hold nothing request.c left.
 *
 * Output is TAP: "ok N - ..." / "not ok N - ...", then "1..N".
 *
 * Usage: test_request   (see test/unit/run_unit.sh)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/pg_prng.h"
#include "utils/memutils.h"

#include "jobs.h"
#include "outcome.h"
#include "prompt.h"
#include "request.h"
#include "router.h"
#include "unit_backend.h"

static int	tests = 0;
static int	failures = 0;

static void
check(bool ok, const char *what, const char *detail)
{
	tests++;
	if (!ok)
		failures++;
	printf("%s %d - %s\n", ok ? "ok" : "not ok", tests, what);
	if (!ok && detail)
		printf("#   %s\n", detail);
}

/* check() with a printf-style detail, shown when the check fails */
static void pg_attribute_printf(3, 4)
checkf(bool ok, const char *what, const char *fmt,...)
{
	char		detail[1024];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	check(ok, what, detail);
}


static bool
contains(const char *s, const char *part)
{
	return s != NULL && strstr(s, part) != NULL;
}

static bool
ends_with(const char *s, const char *tail)
{
	size_t		n = strlen(s),
				t = strlen(tail);

	return n >= t && strcmp(s + n - t, tail) == 0;
}

static bool
same(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* ---------------------------------------------------------------------
 * prompt_expand(): the stand-in for src/prompt.c
 * --------------------------------------------------------------------- */

/*
 * Expands {name} (and nothing else: every other byte, braces included, is
 * copied).  Like prompt.c it stops, returning false, once `out` holds more
 * than `limit` bytes, and otherwise returns whether it holds at most that.
 */
bool
prompt_expand(StringInfo out, const char *template, const SwarmPromptVars *vars, int limit)
{
	const char *p = template;

	while (*p)
	{
		if (out->len > limit)
			return false;
		if (strncmp(p, "{name}", 6) == 0)
		{
			appendStringInfoString(out, vars->name);
			p += 6;
		}
		else
			appendStringInfoChar(out, *p++);
	}
	return out->len <= limit;
}

/* ---------------------------------------------------------------------
 * The worker's side: contexts, jobs, claims, sends, outcomes
 * --------------------------------------------------------------------- */

#define PROMPT_LIMIT	4096
#define DEADLINE_MS		60000
#define MS(x)			((TimestampTz) (x) * 1000)
#define SECRET			"sk-unit-SECRET-0123456789"

static MemoryContext jobs_cxt;
static MemoryContext req_cxt;
static MemoryContext results_parent;
static MemoryContext pass_cxt;		/* the worker's per-pass context: current */
static bool initialized = false;

static SwarmEndpoint ep_a;
static SwarmEndpoint ep_b;

static void
scrub(char *text)
{
	char	   *hit;

	while ((hit = strstr(text, SECRET)) != NULL)
		memset(hit, '*', strlen(SECRET));
}

/* the jobs the job scan lists (a scan abandons the jobs it does not list) */
#define MAX_JOBS 8
static struct
{
	int64		id;
	bool		advances;
}			listed[MAX_JOBS];
static int	nlisted = 0;

/*
 * A job scan: each listed job's row read afresh, its strings in the pass
 * context (as SPI's), which the caller resets soon after.
 */
static void
scan_jobs(void)
{
	jobs_begin_scan();
	for (int i = 0; i < nlisted; i++)
	{
		SwarmJobRow r;

		memset(&r, 0, sizeof(r));
		r.id = listed[i].id;
		r.advances = listed[i].advances;
		r.kind = r.advances ? SWARM_JOB_INTERACT : SWARM_JOB_GENERATE;
		r.created_at = UNIT_T0;
		r.first_last = 0;
		r.model = pstrdup("gpt-test");
		r.owner = pstrdup("alice");
		r.max_tokens = 64;
		r.context = pstrdup("");
		r.system_template = pstrdup("You are {name}.");
		r.user_template = pstrdup("Say hi to {name}.");
		r.endpoints = palloc(sizeof(char *));
		r.endpoints[0] = pstrdup("primary");
		r.nendpoints = 1;
		jobs_reconcile(&r);
	}
	jobs_end_scan();
}

/* the worker stops: everything dropped, then the contexts are freed */
static void
teardown(void)
{
	if (!initialized)
		return;
	MemoryContextSwitchTo(TopMemoryContext);
	jobs_abandon_all();
	nlisted = 0;
	MemoryContextDelete(jobs_cxt);
	MemoryContextDelete(req_cxt);
	MemoryContextDelete(results_parent);
	MemoryContextDelete(pass_cxt);
	initialized = false;
}

static void
fresh(void)
{
	static const SwarmJobHooks hooks = {request_drop_job, request_results_drop_job};

	teardown();
	unit_set_now(UNIT_T0);
	/* as worker_start(): in TopMemoryContext (request_init allocates there) */
	jobs_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm jobs", ALLOCSET_DEFAULT_SIZES);
	req_cxt = GenerationContextCreate(TopMemoryContext, "pg_swarm requests", ALLOCSET_DEFAULT_SIZES);
	results_parent = AllocSetContextCreate(TopMemoryContext, "results parent", ALLOCSET_DEFAULT_SIZES);
	request_init(req_cxt,
				 AllocSetContextCreate(results_parent, "pg_swarm results", ALLOCSET_DEFAULT_SIZES),
				 scrub);
	jobs_init(jobs_cxt, &hooks);
	pass_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm loop pass", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(pass_cxt);
	nlisted = 0;
	initialized = true;
	memset(&ep_a, 0, sizeof(ep_a));
	memset(&ep_b, 0, sizeof(ep_b));
	strcpy(ep_a.name, "primary");
	strcpy(ep_b.name, "fallback");
}

/* the end of a loop pass: what request.c must have copied, it has */
static void
pass_end(void)
{
	MemoryContextReset(pass_cxt);
}

/* Start a job: listed by every scan from now on. */
static SwarmJob *
start_job(int64 id, bool advances)
{
	listed[nlisted].id = id;
	listed[nlisted].advances = advances;
	nlisted++;
	scan_jobs();
	pass_end();
	return jobs_lookup(id);
}

/* The job scan no longer lists job `id` (cancelled). */
static void
cancel_job(int64 id)
{
	for (int i = 0; i < nlisted; i++)
		if (listed[i].id == id)
		{
			listed[i] = listed[--nlisted];
			break;
		}
	scan_jobs();
}

/* queue.c read a row of `job`: the request, or NULL when it ended at once */
static SwarmRequest *
claim_row(SwarmJob *job, int64 request_id, const char *name, int64 deadline_ms, int limit)
{
	SwarmClaimedRow row;

	memset(&row, 0, sizeof(row));
	row.request_id = request_id;
	row.agent_id = request_id + 1000;
	row.name = name ? pstrdup(name) : NULL;
	return request_claimed(job, &row, unit_now(), deadline_ms, limit);
}

static SwarmRequest *
claim(SwarmJob *job, int64 request_id)
{
	return claim_row(job, request_id, "Ada", DEADLINE_MS, PROMPT_LIMIT);
}

static SwarmSend
send_to(SwarmEndpoint *ep)
{
	SwarmSend	s;

	memset(&s, 0, sizeof(s));
	s.endpoint = ep;
	s.charge.sent_at = unit_now();
	s.charge.epoch = 7;
	s.charge.token_seq = -1;
	s.charge.tokens = 80;
	s.charge.in_flight_before = 2;
	return s;
}

static int	transfer_token;

static void
send_req(SwarmRequest *req, SwarmEndpoint *ep)
{
	SwarmSend	s = send_to(ep);

	request_sent(req, &s, &transfer_token);
}

/* Outcomes, their strings in the pass context (as outcome_of_attempt's). */
static SwarmOutcome
outcome_ok(const char *content, const char *model, const char *finish_reason)
{
	SwarmOutcome o;

	memset(&o, 0, sizeof(o));
	o.verdict = SWARM_VERDICT_OK;
	o.signal = SWARM_SIGNAL_SUCCESS;
	o.reply.status = OPENAI_OK;
	o.reply.content = content ? pstrdup(content) : NULL;
	o.reply.model = model ? pstrdup(model) : NULL;
	o.reply.finish_reason = finish_reason ? pstrdup(finish_reason) : NULL;
	o.reply.prompt_tokens = 12;
	o.reply.completion_tokens = 34;
	o.retry_after_ms = -1;
	o.tokens_used = 46;
	return o;
}

static SwarmOutcome
outcome_retry(const char *error, double retry_after_ms)
{
	SwarmOutcome o;

	memset(&o, 0, sizeof(o));
	o.verdict = SWARM_VERDICT_RETRY;
	o.signal = SWARM_SIGNAL_OVERLOAD;
	o.reply.prompt_tokens = -1;
	o.reply.completion_tokens = -1;
	o.error = pstrdup(error);
	o.retry_after_ms = retry_after_ms;
	o.tokens_used = -1;
	o.http_error = true;
	return o;
}

static SwarmOutcome
outcome_fail(const char *error)
{
	SwarmOutcome o = outcome_retry(error, -1);

	o.verdict = SWARM_VERDICT_FAIL;
	o.signal = SWARM_SIGNAL_NEUTRAL;
	return o;
}

/* An attempt ended; the outcome's memory goes at once (the pass ends). */
static SwarmAttemptEnd
ended(SwarmRequest *req, SwarmOutcome o, int max_retries, bool another_up)
{
	SwarmAttemptEnd end = request_attempt_ended(req, &o, 250.0, unit_now(), max_retries,
												another_up);

	pass_end();
	return end;
}

static const char *
end_name(SwarmAttemptEnd e)
{
	switch (e)
	{
		case SWARM_END_STORED:
			return "stored";
		case SWARM_END_RETRY:
			return "retry";
		case SWARM_END_FAILED:
			return "failed";
		case SWARM_END_DROPPED:
			return "dropped";
	}
	return "?";
}

static SwarmResult *
last_result(void)
{
	int			n;
	SwarmResult *r = request_results(&n);

	return n > 0 ? &r[n - 1] : NULL;
}

static int
nresults(void)
{
	int			n;

	(void) request_results(&n);
	return n;
}

static int
ready_position(SwarmRequest *req)
{
	int			i = 0;

	for (SwarmRequest *r = request_first_ready(); r; r = request_next_ready(r), i++)
		if (r == req)
			return i;
	return -1;
}

/*
 * The counts per state add up: nothing is left CLAIMED or counted DONE, the
 * ready queue holds count(READY) requests, and the requests alive are those
 * the jobs count outstanding; the results waiting are those the jobs count
 * unstored.
 */
static void
check_counts(const char *what)
{
	int			ready_walk = 0;
	int			outstanding = 0;
	int			unstored = 0;
	int			alive = request_count(SWARM_REQ_CLAIMED) + request_count(SWARM_REQ_READY) +
		request_count(SWARM_REQ_IN_FLIGHT) + request_count(SWARM_REQ_BACKOFF);
	int			n;
	SwarmResult *results = request_results(&n);
	int			with_job = 0;
	dlist_iter	it;
	char		label[256];

	for (SwarmRequest *r = request_first_ready(); r; r = request_next_ready(r))
		ready_walk++;
	dlist_foreach(it, jobs_in_order())
	{
		SwarmJob   *job = dlist_container(SwarmJob, node, it.cur);

		outstanding += job->outstanding;
		unstored += job->unstored;
	}
	for (int i = 0; i < n; i++)
		if (results[i].job != NULL)
			with_job++;
	snprintf(label, sizeof(label), "counts: %s", what);
	checkf(request_count(SWARM_REQ_CLAIMED) == 0 && request_count(SWARM_REQ_DONE) == 0 &&
		   ready_walk == request_count(SWARM_REQ_READY) && alive == outstanding &&
		   with_job == unstored, label,
		   "claimed %d ready %d (queue %d) in_flight %d backoff %d done %d; jobs: %d outstanding, "
		   "%d unstored; %d results",
		   request_count(SWARM_REQ_CLAIMED), request_count(SWARM_REQ_READY), ready_walk,
		   request_count(SWARM_REQ_IN_FLIGHT), request_count(SWARM_REQ_BACKOFF),
		   request_count(SWARM_REQ_DONE), outstanding, unstored, n);
}

/* request.c frees all it allocated in the request context once requests end */
static void
check_request_cxt_empty(const char *what)
{
	checkf(unit_context_chunks(req_cxt) == 0, what, "%zu chunks left in the request context",
		   unit_context_chunks(req_cxt));
}

/* ---------------------------------------------------------------------
 * Claimed -> READY
 * --------------------------------------------------------------------- */

static void
test_claimed_ready(void)
{
	SwarmJob   *job;
	SwarmRequest *a,
			   *b,
			   *c;
	const char *body;
	const char *want = "{\"model\":\"gpt-test\",\"messages\":[{\"role\":\"system\",\"content\":\"You are Ada.\"},"
		"{\"role\":\"user\",\"content\":\"Say hi to Ada.\"}],\"max_tokens\":64}";
	int			len;
	size_t		pass_before;

	fresh();
	job = start_job(1, false);
	pass_before = unit_context_chunks(pass_cxt);
	a = claim(job, 101);
	checkf(unit_context_chunks(pass_cxt) == pass_before + 1,	/* the row's name (claim_row) */
		   "claimed: request_claimed leaves nothing in the caller's context",
		   "%zu chunks, %zu before", unit_context_chunks(pass_cxt), pass_before);
	unit_set_now(UNIT_T0 + MS(10));
	b = claim_row(job, 102, "Bob", 30000, PROMPT_LIMIT);
	c = claim(job, 103);
	pass_end();					/* the rows' strings are gone */
	check(a != NULL && b != NULL && c != NULL, "claimed: a row with an agent becomes a request", NULL);
	check(a->state == SWARM_REQ_READY && request_count(SWARM_REQ_READY) == 3,
		  "claimed: claimed -> READY", NULL);
	check(a->id == 101 && a->agent_id == 1101 && a->job == job && a->attempts == 0,
		  "claimed: id, agent and job set, no attempt yet", NULL);
	check(a->claimed_at == UNIT_T0 && a->deadline == UNIT_T0 + MS(DEADLINE_MS) &&
		  b->deadline == UNIT_T0 + MS(10) + MS(30000),
		  "claimed: the deadline is claimed_at + deadline_ms", NULL);
	checkf(same(a->body, want) && a->body_len == (int) strlen(want),
		   "claimed: the body is the chat request for the job's model, {name} expanded",
		   "body %s", a->body);
	check(contains(b->body, "You are Bob.") && contains(b->body, "Say hi to Bob."),
		  "claimed: each row's own agent name", NULL);
	check(a->tokens_estimate == a->body_len / 4 + 64, "claimed: tokens estimate = body/4 + max_tokens", NULL);
	check(request_first_ready() == a && request_next_ready(a) == b && request_next_ready(b) == c &&
		  request_next_ready(c) == NULL, "claimed: the ready queue is in claim order", NULL);
	check(request_next_deadline() == b->deadline, "claimed: request_next_deadline is the earliest", NULL);
	check(request_next_due() == 0, "claimed: nothing in backoff", NULL);
	check(job->outstanding == 3, "claimed: the job counts 3 outstanding", NULL);
	check_counts("3 READY");

	body = request_body_for(a, NULL, OPENAI_OUTPUT_JSON_SCHEMA, &len);
	check(body == a->body && len == a->body_len, "body_for: no endpoint model: the body itself", NULL);
	body = request_body_for(a, "gpt-test", OPENAI_OUTPUT_TOOLS, &len);
	check(body == a->body, "body_for: the job's own model: the body itself (tools or not: the job asks for no structure)", NULL);
	body = request_body_for(a, "other\"model", OPENAI_OUTPUT_JSON_SCHEMA, &len);
	checkf(strncmp(body, "{\"model\":\"other\\\"model\",\"messages\":", 35) == 0 &&
		   len == (int) strlen(body) && strcmp(body + 23, a->body + 19) == 0,
		   "body_for: an endpoint's own model replaces the job's (JSON-escaped)", "%s", body);
	body = request_body_for(a, "m2", OPENAI_OUTPUT_JSON_SCHEMA, &len);
	check(strncmp(body, "{\"model\":\"m2\",", 14) == 0, "body_for: asked again, made again", NULL);

	/* end them all, as a dropped job would */
	cancel_job(1);
	check(request_count(SWARM_REQ_READY) == 0 && jobs_lookup(1) == NULL,
		  "claimed: cancelling the job ends READY requests at once, and forgets it", NULL);
	check(nresults() == 0, "claimed: ... with no result", NULL);
	check_request_cxt_empty("claimed: bodies and send bodies freed with their requests");
	check_counts("all ended");
}

/* ---------------------------------------------------------------------
 * A job that asks for structured output (a simulation with actions)
 * --------------------------------------------------------------------- */

static void
test_structured_bodies(void)
{
	SwarmJob   *job;
	SwarmRequest *a;
	const char *body;
	int			len;
	const char *schema = "{\"type\":\"object\"}";
	const char *json_tail = ",\"max_tokens\":64,\"response_format\":{\"type\":\"json_schema\","
		"\"json_schema\":{\"name\":\"action\",\"strict\":true,\"schema\":{\"type\":\"object\"}}}}";
	const char *tools_tail = ",\"max_tokens\":64,\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"act\","
		"\"description\":\"Choose your one action for this step.\",\"parameters\":{\"type\":\"object\"}}}],"
		"\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"act\"}}}";

	fresh();
	job = start_job(1, true);
	job->response_schema = MemoryContextStrdup(jobs_cxt, schema);
	a = claim(job, 101);
	pass_end();
	checkf(a != NULL && ends_with(a->body, json_tail),
		   "structured: the body asks for the schema through response_format", "%s", a ? a->body : "");
	body = request_body_for(a, NULL, OPENAI_OUTPUT_JSON_SCHEMA, &len);
	check(body == a->body, "structured: an endpoint taking json_schema gets the body itself", NULL);
	body = request_body_for(a, NULL, OPENAI_OUTPUT_TOOLS, &len);
	checkf(ends_with(body, tools_tail) && strstr(body, "response_format") == NULL &&
		   strncmp(body, a->body, a->tail_offset) == 0 && len == (int) strlen(body),
		   "structured: an endpoint taking tools gets the same messages with a tool and tool_choice instead",
		   "%s", body);
	body = request_body_for(a, "m2", OPENAI_OUTPUT_TOOLS, &len);
	checkf(strncmp(body, "{\"model\":\"m2\",\"messages\":", 24) == 0 && ends_with(body, tools_tail),
		   "structured: both the endpoint's model and its style", "%s", body);
	body = request_body_for(a, "m2", OPENAI_OUTPUT_JSON_SCHEMA, &len);
	checkf(strncmp(body, "{\"model\":\"m2\",", 14) == 0 && ends_with(body, json_tail),
		   "structured: the endpoint's model, json_schema kept", "%s", body);
	cancel_job(1);
	check_request_cxt_empty("structured: bodies freed with their requests");
}

/* ---------------------------------------------------------------------
 * Requests that end at once when claimed
 * --------------------------------------------------------------------- */

static void
test_claimed_fails(void)
{
	SwarmJob   *job;
	SwarmRequest *req;
	SwarmResult *r;
	char	   *big;
	volatile bool raised;
	char		msg[256];
	int			n_before;
	size_t		pass_before;

	fresh();
	job = start_job(2, true);
	unit_set_now(UNIT_T0 + MS(5));
	req = claim_row(job, 201, NULL, DEADLINE_MS, PROMPT_LIMIT);
	r = last_result();
	check(req == NULL, "missing agent: request_claimed returns NULL", NULL);
	checkf(r != NULL && !r->ok && same(r->error, "agent 1201 does not exist") && r->attempts == 0,
		   "missing agent: a failed result saying so, no attempt", "error %s",
		   r ? r->error : "(none)");
	check(r != NULL && r->request_id == 201 && r->job_id == 2 && r->job == job && r->advances,
		  "missing agent: the result names its request and job", NULL);
	check(request_oldest_result() == UNIT_T0 + MS(5), "missing agent: oldest result = when it ended", NULL);
	check(job->outstanding == 0 && job->unstored == 1, "missing agent: the job counts it unstored", NULL);
	check_counts("missing agent");

	/* a prompt over the limit */
	big = palloc(201);
	memset(big, 'x', 200);
	big[200] = '\0';
	req = claim_row(job, 202, big, DEADLINE_MS, 100);
	r = last_result();
	checkf(req == NULL && r != NULL && !r->ok && r->request_id == 202 &&
		   same(r->error, "prompt too large once its placeholders are expanded: over 100 bytes (swarm.max_prompt_bytes)"),
		   "prompt limit: a prompt over the limit fails at once, saying so",
		   "error %s", r ? r->error : "(none)");
	/* "Say hi to " + 9 bytes + "." = 20 bytes: exactly the limit is accepted */
	req = claim_row(job, 203, "012345678", DEADLINE_MS, 20);
	check(req != NULL && req->state == SWARM_REQ_READY,
		  "prompt limit: a message of exactly `limit` bytes is accepted", NULL);
	req = claim_row(job, 204, "0123456789", DEADLINE_MS, 20);
	check(req == NULL && contains(last_result()->error, "over 20 bytes"),
		  "prompt limit: one byte more is refused", NULL);
	check_counts("prompt limit");

	/* an ERROR while building the body (out of memory): that request fails */
	pass_before = unit_context_chunks(pass_cxt);
	unit_fail_alloc(pass_cxt, 1);	/* [0] the row's name; [1] the system message */
	req = claim_row(job, 205, "Eve", DEADLINE_MS, PROMPT_LIMIT);
	r = last_result();
	checkf(req == NULL && r != NULL && r->request_id == 205 &&
		   same(r->error, "could not build the request: out of memory"),
		   "build error: an ERROR while expanding the prompt fails the request, saying why",
		   "error %s", r ? r->error : "(none)");
	check(CurrentMemoryContext == pass_cxt, "build error: the caller's context is current again", NULL);
	checkf(unit_context_chunks(pass_cxt) == pass_before + 1,
		   "build error: nothing of the error is left in the caller's context",
		   "%zu chunks, %zu before (+1: the row's name)", unit_context_chunks(pass_cxt), pass_before);
	pass_end();
	check_counts("build errors");

	/* out of memory for the request itself: request_claimed raises, nothing changes */
	n_before = nresults();
	unit_fail_alloc(req_cxt, 0);
	UNIT_CATCH(raised, msg, (void) claim(job, 206));
	check(raised && same(msg, "out of memory"), "out of memory: allocating the request raises ERROR", msg);
	checkf(nresults() == n_before && job->outstanding == 1,
		   "out of memory: ... and nothing was counted", "%d results (%d before), %d outstanding",
		   nresults(), n_before, job->outstanding);
	check_counts("out of memory");

	/*
	 * Out of memory while the body grows in the request context (a body
	 * over 1 kB: initStringInfo's chunk [1], then repalloc [2] fails): the
	 * request fails like any build error, and must leave nothing behind in
	 * the long-lived request context.
	 */
	big = palloc(1501);
	memset(big, 'y', 1500);
	big[1500] = '\0';
	unit_fail_alloc(req_cxt, 2);
	req = claim_row(job, 207, big, DEADLINE_MS, PROMPT_LIMIT);
	r = last_result();
	checkf(req == NULL && r != NULL && r->request_id == 207 &&
		   same(r->error, "could not build the request: out of memory"),
		   "build error: out of memory while the body grows fails the request",
		   "error %s", r ? r->error : "(none)");
	pass_end();

	/* the results so far are stored; the READY one ends as its job goes */
	request_results_stored();
	cancel_job(2);
	check(nresults() == 0 && jobs_lookup(2) == NULL, "claimed fails: all stored, job gone", NULL);
	check_request_cxt_empty("build error: the request context is empty once every request ended "
							"(the body being built when the ERROR came is freed)");
}

/* ---------------------------------------------------------------------
 * READY -> IN_FLIGHT -> DONE with a stored result
 * --------------------------------------------------------------------- */

static void
test_stored(void)
{
	SwarmJob   *job;
	SwarmRequest *a,
			   *b;
	SwarmResult *r;
	SwarmAttemptEnd end;
	size_t		pass_before;

	fresh();
	job = start_job(3, false);
	a = claim(job, 301);
	b = claim(job, 302);
	pass_end();
	send_req(a, &ep_a);
	check(a->state == SWARM_REQ_IN_FLIGHT && a->attempts == 1,
		  "sent: READY -> IN_FLIGHT, one attempt", NULL);
	check(a->send.endpoint == &ep_a && a->send.charge.tokens == 80 && a->send.charge.epoch == 7 &&
		  a->transfer == &transfer_token, "sent: the send record and the transfer are kept", NULL);
	check(request_first_ready() == b && request_count(SWARM_REQ_IN_FLIGHT) == 1,
		  "sent: it left the ready queue", NULL);
	check(request_next_deadline() == b->deadline, "sent: in flight, it waits for no deadline here", NULL);
	check_counts("1 in flight, 1 ready");

	unit_set_now(UNIT_T0 + MS(700));
	pass_before = unit_context_chunks(pass_cxt);
	{
		SwarmOutcome o = outcome_ok("Hello, Ada!", "gpt-test-2024", "stop");

		pass_before = unit_context_chunks(pass_cxt);
		end = request_attempt_ended(a, &o, 250.0, unit_now(), 3, false);
		checkf(unit_context_chunks(pass_cxt) == pass_before,
			   "stored: request_attempt_ended leaves nothing in the caller's context",
			   "%zu chunks, %zu before", unit_context_chunks(pass_cxt), pass_before);
		pass_end();				/* the outcome's strings are freed here */
	}
	r = last_result();
	checkf(end == SWARM_END_STORED, "stored: an OK outcome ends STORED", "%s", end_name(end));
	checkf(r != NULL && r->ok && same(r->content, "Hello, Ada!") && same(r->model, "gpt-test-2024") &&
		   same(r->finish_reason, "stop"),
		   "stored: content, model and finish_reason copied (read after the outcome was freed)",
		   "content %s", r ? r->content : "-");
	check(r->prompt_tokens == 12 && r->completion_tokens == 34 && r->latency_ms == 250.0 &&
		  r->attempts == 1 && r->request_id == 301 && r->job == job && !r->advances &&
		  r->error == NULL && !r->deferred,
		  "stored: tokens, latency, attempts, ids", NULL);
	check(request_oldest_result() == UNIT_T0 + MS(700), "stored: request_oldest_result", NULL);
	check(request_count(SWARM_REQ_IN_FLIGHT) == 0 && job->outstanding == 1 && job->unstored == 1,
		  "stored: the request ended, its result waits", NULL);
	check_counts("1 stored, 1 ready");

	/* no content, no model in the reply: NULL content, the job's model */
	send_req(b, &ep_b);
	end = ended(b, outcome_ok(NULL, NULL, NULL), 3, false);
	r = last_result();
	check(end == SWARM_END_STORED && r->ok && r->content == NULL && same(r->model, "gpt-test") &&
		  r->finish_reason == NULL, "stored: null content stays NULL, the model is the job's", NULL);
	check_request_cxt_empty("stored: both requests freed");

	/* the job drains (a short claim); storing its results forgets it */
	{
		SwarmClaimRange range;

		(void) jobs_claim_range(job, &range);
		(void) jobs_claimed(job, &range, 2, 10, 302);
	}
	check(job->state == SWARM_JOB_DRAINED, "stored: the job drained with two results waiting", NULL);
	request_results_stored();
	check(nresults() == 0 && request_oldest_result() == 0, "results_stored: none left", NULL);
	check(jobs_lookup(3) == NULL, "results_stored: jobs are told: the drained job is forgotten", NULL);
	checkf(unit_context_chunks(results_parent->firstchild) == 0,
		   "results_stored: the result context is reset", "%zu chunks",
		   unit_context_chunks(results_parent->firstchild));
	check_counts("stored and forgotten");
}

/* ---------------------------------------------------------------------
 * RETRY -> BACKOFF -> READY
 * --------------------------------------------------------------------- */

static void
test_backoff(void)
{
	SwarmJob   *job;
	SwarmRequest *a,
			   *b,
			   *c;
	SwarmAttemptEnd end;
	TimestampTz due;

	fresh();
	job = start_job(4, false);
	a = claim(job, 401);
	b = claim(job, 402);
	c = claim(job, 403);
	pass_end();

	/* the server's hint */
	send_req(a, &ep_a);
	end = ended(a, outcome_retry("HTTP 429: slow down", 1500), 3, false);
	check(end == SWARM_END_RETRY && a->state == SWARM_REQ_BACKOFF,
		  "backoff: RETRY with attempts left -> BACKOFF", NULL);
	check(a->not_before == UNIT_T0 + MS(1500) && request_next_due() == a->not_before,
		  "backoff: not_before = now + the server's retry-after", NULL);
	check(same(a->last_error, "HTTP 429: slow down") && a->failed_at == &ep_a,
		  "backoff: the error (copied) and the endpoint it failed at are kept", NULL);
	check(request_next_deadline() == a->deadline,
		  "backoff: a request in backoff waits for its deadline", NULL);
	check(nresults() == 0 && job->outstanding == 3, "backoff: no result, still outstanding", NULL);
	check_counts("1 backoff, 2 ready");

	request_promote_due(UNIT_T0 + MS(1499));
	check(a->state == SWARM_REQ_BACKOFF, "backoff: not promoted before not_before", NULL);
	request_promote_due(UNIT_T0 + MS(1500));
	check(a->state == SWARM_REQ_READY && request_next_due() == 0,
		  "backoff: promoted to READY at not_before", NULL);
	check(ready_position(a) == 0 && ready_position(b) == 1 && ready_position(c) == 2,
		  "backoff: a retry re-enters the ready queue at its head", NULL);
	check_counts("promoted");

	/* exponential backoff, with jitter: min(500 ms * 2^n, 8 s) less up to 25% */
	send_req(a, &ep_a);
	unit_set_now(UNIT_T0 + MS(2000));
	end = ended(a, outcome_retry("HTTP 503", -1), 3, false);
	due = a->not_before - unit_now();
	checkf(end == SWARM_END_RETRY && due > MS(750) - 1000 && due <= MS(1000),
		   "backoff: no hint, second attempt: 0.75..1 s (500 ms * 2^1, jittered)",
		   "delay %.3f ms", due / 1000.0);
	check(request_next_due() == a->not_before, "backoff: request_next_due", NULL);
	request_promote_due(a->not_before);
	send_req(a, &ep_a);
	end = ended(a, outcome_retry("HTTP 503", -1), 3, false);
	due = a->not_before - unit_now();
	checkf(end == SWARM_END_RETRY && due > MS(1500) - 1000 && due <= MS(2000),
		   "backoff: third attempt: 1.5..2 s", "delay %.3f ms", due / 1000.0);

	/* another endpoint up: at once, and at the head */
	send_req(b, &ep_a);
	end = ended(b, outcome_retry("connection refused", -1), 3, true);
	check(end == SWARM_END_RETRY && b->state == SWARM_REQ_BACKOFF && b->not_before == unit_now(),
		  "failover: another endpoint up: not_before is now", NULL);
	request_promote_due(unit_now());
	check(b->state == SWARM_REQ_READY && request_first_ready() == b && request_next_ready(b) == c,
		  "failover: promoted at once, at the head of the queue", NULL);
	check(a->state == SWARM_REQ_BACKOFF, "failover: the other backoff still waits", NULL);
	check_counts("failover");

	/* two due together both go back */
	send_req(b, &ep_b);
	send_req(c, &ep_b);
	unit_set_now(a->not_before);
	end = ended(b, outcome_retry("HTTP 500", 0), 3, false);
	end = ended(c, outcome_retry("HTTP 500", 0), 3, false);
	request_promote_due(unit_now());
	check(request_count(SWARM_REQ_READY) == 3 && request_count(SWARM_REQ_BACKOFF) == 0,
		  "backoff: every request due is promoted", NULL);
	check_counts("all promoted");
	jobs_abandon_all();
	check(request_count(SWARM_REQ_READY) == 0 && request_next_deadline() == 0 &&
		  jobs_lookup(4) == NULL, "backoff: abandoning all ends every waiting request", NULL);
	check_request_cxt_empty("backoff: every request freed");
}

/* ---------------------------------------------------------------------
 * Retries exhausted, FAIL, a retry past the deadline
 * --------------------------------------------------------------------- */

static void
test_retries_end(void)
{
	SwarmJob   *job;
	SwarmRequest *a,
			   *b,
			   *c,
			   *d;
	SwarmAttemptEnd end;
	SwarmResult *r;
	size_t		pass_before;

	fresh();
	job = start_job(5, false);
	a = claim(job, 501);
	b = claim(job, 502);
	c = claim(job, 503);
	d = claim_row(job, 504, "Dan", 1000, PROMPT_LIMIT);
	pass_end();

	/* max_retries 2: the first attempt and two retries */
	for (int i = 1; i <= 2; i++)
	{
		send_req(a, &ep_a);
		char		what[64];

		end = ended(a, outcome_retry("HTTP 502", 10), 2, false);
		snprintf(what, sizeof(what), "exhausted: attempt %d of 3 is retried", i);
		checkf(end == SWARM_END_RETRY, what, "%s", end_name(end));
		unit_set_now(unit_now() + MS(10));
		request_promote_due(unit_now());
	}
	send_req(a, &ep_a);
	check(a->attempts == 3, "exhausted: third attempt sent", NULL);
	pass_before = unit_context_chunks(pass_cxt);
	{
		SwarmOutcome o = outcome_retry("HTTP 502: bad gateway " SECRET, 10);

		pass_before = unit_context_chunks(pass_cxt);
		end = request_attempt_ended(a, &o, 10.0, unit_now(), 2, false);
		checkf(unit_context_chunks(pass_cxt) == pass_before,
			   "exhausted: the error text is formatted in the result context, not the caller's",
			   "%zu chunks, %zu before", unit_context_chunks(pass_cxt), pass_before);
		pass_end();
	}
	r = last_result();
	checkf(end == SWARM_END_FAILED && r != NULL && !r->ok && r->attempts == 3 &&
		   contains(r->error, "HTTP 502: bad gateway ") && contains(r->error, " (after 3 attempts)"),
		   "exhausted: attempts > max_retries: a failed result saying \"(after 3 attempts)\"",
		   "%s: %s", end_name(end), r ? r->error : "-");
	checkf(r != NULL && !contains(r->error, SECRET) && contains(r->error, "*****"),
		   "exhausted: the error text is scrubbed of keys", "%s", r ? r->error : "-");

	/* max_retries 0: one attempt, no "(after ...)" */
	send_req(b, &ep_a);
	end = ended(b, outcome_retry("timeout", -1), 0, false);
	r = last_result();
	checkf(end == SWARM_END_FAILED && same(r->error, "timeout"),
		   "exhausted: max_retries 0: the first RETRY fails, the text as given", "%s", r->error);

	/* FAIL: final, whatever is left */
	send_req(c, &ep_a);
	end = ended(c, outcome_fail("HTTP 400: bad request"), 5, true);
	r = last_result();
	checkf(end == SWARM_END_FAILED && same(r->error, "HTTP 400: bad request") && r->attempts == 1,
		   "fail: a FAIL outcome ends the request at once", "%s", r->error);

	/* the backoff would pass the deadline (1 s after the claim) */
	send_req(d, &ep_a);
	end = ended(d, outcome_retry("HTTP 429", 5000), 3, false);
	r = last_result();
	checkf(end == SWARM_END_FAILED && r->request_id == 504 &&
		   same(r->error, "HTTP 429; not retried: the next attempt could start only after the request's deadline (1 s after it was claimed)"),
		   "deadline: a retry whose backoff passes the deadline fails at once, saying so",
		   "%s", r->error);
	check_counts("after failures");
	check(job->outstanding == 0 && job->unstored == 4, "failures: the job counts four unstored", NULL);

	/* failover at once, but now is the deadline already */
	d = claim_row(job, 505, "Dan", 1000, PROMPT_LIMIT);
	pass_end();
	send_req(d, &ep_a);
	unit_set_now(d->deadline);
	end = ended(d, outcome_retry("HTTP 500", -1), 3, true);
	checkf(end == SWARM_END_FAILED &&
		   same(last_result()->error, "the request's deadline passed (1 s after it was claimed) during its last attempt: HTTP 500"),
		   "deadline: an attempt that ended at the deadline (it was cut by it) fails, saying so",
		   "%s", last_result()->error);
	check_request_cxt_empty("failures: every request freed");
}

/* ---------------------------------------------------------------------
 * request_expire, request_fail_unsent
 * --------------------------------------------------------------------- */

static void
test_expire(void)
{
	SwarmJob   *job;
	SwarmRequest *a,
			   *b,
			   *c,
			   *d;
	SwarmResult *results;
	int			n;
	int			expired;

	fresh();
	job = start_job(6, false);
	a = claim_row(job, 601, "A", 2000, PROMPT_LIMIT);	/* stays READY */
	b = claim_row(job, 602, "B", 3000, PROMPT_LIMIT);	/* retried, in BACKOFF */
	c = claim_row(job, 603, "C", 2000, PROMPT_LIMIT);	/* in flight */
	d = claim_row(job, 604, "D", 9000, PROMPT_LIMIT);	/* READY, later deadline */
	pass_end();
	send_req(b, &ep_a);
	(void) ended(b, outcome_retry("HTTP 503: overloaded", 2500), 3, false);
	send_req(c, &ep_a);
	check(request_next_deadline() == UNIT_T0 + MS(2000), "expire: next deadline: the earliest waiting", NULL);

	expired = request_expire(UNIT_T0 + MS(1999));
	check(expired == 0 && a->state == SWARM_REQ_READY, "expire: nothing before the deadline", NULL);
	expired = request_expire(UNIT_T0 + MS(2000));
	results = request_results(&n);
	checkf(expired == 1 && n == 1 && results[0].request_id == 601 &&
		   same(results[0].error, "the request's deadline passed (2 s after it was claimed) while it waited for an endpoint that could take it (see swarm.endpoint_status)"),
		   "expire: a READY request past its deadline fails, waiting for an endpoint",
		   "%d expired, %d results: %s", expired, n, n ? results[0].error : "-");
	check(c->state == SWARM_REQ_IN_FLIGHT, "expire: an in-flight request is not expired", NULL);
	check(request_next_deadline() == b->deadline, "expire: next deadline moves on", NULL);

	unit_set_now(UNIT_T0 + MS(3000));
	expired = request_expire(unit_now());
	results = request_results(&n);
	checkf(expired == 1 && n == 2 && results[1].request_id == 602 &&
		   same(results[1].error, "the request's deadline passed (3 s after it was claimed) while it waited to be retried; the last attempt: HTTP 503: overloaded"),
		   "expire: a BACKOFF request past its deadline fails, with its last attempt's error",
		   "%d expired: %s", expired, n > 1 ? results[1].error : "-");
	check(request_next_due() == 0, "expire: it left the backoff heap", NULL);
	check_counts("after expiry");

	/* fail unsent: no endpoint can take it */
	request_fail_unsent(d, "no endpoint of the job is usable");
	results = request_results(&n);
	check(n == 3 && same(results[2].error, "no endpoint of the job is usable") && results[2].attempts == 1,
		  "fail_unsent: a READY request fails, counting the attempt", NULL);
	d = claim(job, 605);
	pass_end();
	send_req(d, &ep_a);
	(void) ended(d, outcome_retry("HTTP 500", 0), 3, false);
	request_promote_due(unit_now());
	request_fail_unsent(d, "curl refused the transfer");
	results = request_results(&n);
	checkf(n == 4 && same(results[3].error, "curl refused the transfer (after 2 attempts)"),
		   "fail_unsent: after a retry, \"(after 2 attempts)\"", "%s", n == 4 ? results[3].error : "-");
	check(request_next_deadline() == 0, "expire: nothing waits for a deadline now", NULL);

	(void) ended(c, outcome_ok("late", NULL, NULL), 3, false);
	check_counts("expire done");
	check_request_cxt_empty("expire: every request freed");
}

/* ---------------------------------------------------------------------
 * A request of an abandoned job; results of other jobs kept
 * --------------------------------------------------------------------- */

static void
test_abandoned_job(void)
{
	SwarmJob   *j1,
			   *j2;
	SwarmRequest *r1,
			   *r2,
			   *r3,
			   *r4,
			   *r5;
	SwarmAttemptEnd end;
	SwarmResult *results;
	int			n;

	fresh();
	j1 = start_job(7, false);
	j2 = start_job(8, true);
	r1 = claim(j1, 701);		/* stays READY */
	r2 = claim(j1, 702);		/* BACKOFF */
	r3 = claim(j1, 703);		/* in flight at the cancel */
	r4 = claim(j1, 704);		/* stored result waiting */
	r5 = claim(j2, 801);		/* the other job's result */
	pass_end();
	send_req(r2, &ep_a);
	(void) ended(r2, outcome_retry("HTTP 503", 1000), 3, false);
	send_req(r3, &ep_a);
	send_req(r4, &ep_a);
	(void) ended(r4, outcome_ok("j1's answer", NULL, "stop"), 3, false);
	send_req(r5, &ep_a);
	(void) ended(r5, outcome_ok("j2's answer, kept", "m-j2", "length"), 3, false);
	(void) r1;
	check(nresults() == 2 && j1->outstanding == 3 && j1->unstored == 1, "abandon: set up", NULL);
	check_counts("before the cancel");

	cancel_job(7);
	results = request_results(&n);
	check(j1->state == SWARM_JOB_ABANDONED, "abandon: the job is abandoned, its transfer in flight", NULL);
	check(request_count(SWARM_REQ_READY) == 0 && request_count(SWARM_REQ_BACKOFF) == 0 &&
		  request_count(SWARM_REQ_IN_FLIGHT) == 1,
		  "abandon: its READY and BACKOFF requests end at once", NULL);
	check(request_next_due() == 0 && request_next_deadline() == 0,
		  "abandon: ... leaving the backoff and deadline heaps", NULL);
	checkf(n == 1 && results[0].job == j2 && same(results[0].content, "j2's answer, kept") &&
		   same(results[0].model, "m-j2") && same(results[0].finish_reason, "length"),
		   "abandon: its unstored result is dropped; the other job's is kept (copied into a fresh context)",
		   "%d results", n);
	check(j1->outstanding == 1 && j1->unstored == 0, "abandon: the job's counts follow", NULL);
	checkf(results_parent->firstchild != NULL && results_parent->firstchild->nextchild == NULL &&
		   unit_context_chunks(results_parent->firstchild) == 3,
		   "abandon: one result context remains (the old one deleted), holding the kept strings",
		   "%zu chunks", results_parent->firstchild ? unit_context_chunks(results_parent->firstchild) : 0);
	check_counts("after the cancel");
	check(!jobs_take_rescan_needed(), "abandon: no rescan while it drains", NULL);

	end = ended(r3, outcome_ok("too late", NULL, NULL), 3, false);
	checkf(end == SWARM_END_DROPPED && nresults() == 1,
		   "abandon: the in-flight request ends DROPPED, with no result", "%s, %d results",
		   end_name(end), nresults());
	check(jobs_lookup(7) == NULL, "abandon: its last transfer ending forgets the job", NULL);
	check(jobs_take_rescan_needed(), "abandon: ... which asks for a rescan", NULL);
	check(same(request_results(&n)[0].content, "j2's answer, kept"),
		  "abandon: the kept result is intact", NULL);
	check_counts("abandoned and forgotten");

	/* a retry outcome for an abandoned job's request is dropped too */
	j1 = start_job(9, false);
	r1 = claim(j1, 901);
	pass_end();
	send_req(r1, &ep_a);
	cancel_job(9);
	end = ended(r1, outcome_retry("HTTP 503", -1), 3, true);
	check(end == SWARM_END_DROPPED && jobs_lookup(9) == NULL,
		  "abandon: a RETRY for an abandoned job's request drops it", NULL);
	check(request_results_drop_job(j2) == 1 && nresults() == 0,
		  "results_drop_job: drops that job's results, returning how many", NULL);
	check(request_results_drop_job(j2) == 0, "results_drop_job: none left: 0", NULL);
	/* j2's counts were not told (jobs.c's abandon() does that): leave it alone */
	check_request_cxt_empty("abandon: every request freed");
}

/* ---------------------------------------------------------------------
 * Deferred results; the results array growing
 * --------------------------------------------------------------------- */

static void
test_deferred(void)
{
	SwarmJob   *j1,
			   *j2;
	SwarmResult *results;
	int			n;
	MemoryContext before;
	SwarmClaimRange range;

	fresh();
	j1 = start_job(10, false);
	j2 = start_job(11, false);
	for (int i = 0; i < 3; i++)
	{
		SwarmRequest *req = claim(j1, 1001 + i);
		char		content[32];

		send_req(req, &ep_a);
		snprintf(content, sizeof(content), "answer %d", i);
		(void) ended(req, outcome_ok(content, "m", "stop"), 3, false);
	}
	(void) claim_row(j2, 1101, NULL, DEADLINE_MS, PROMPT_LIMIT);	/* a failure */
	pass_end();
	(void) jobs_claim_range(j1, &range);
	(void) jobs_claimed(j1, &range, 3, 10, 1003);	/* drained */
	(void) jobs_claim_range(j2, &range);
	(void) jobs_claimed(j2, &range, 1, 10, 1101);	/* drained */
	check_counts("four results");

	/* queue.c's store found j1's row held by another transaction for two of them */
	results = request_results(&n);
	results[0].deferred = true;
	results[2].deferred = true;
	unit_set_now(UNIT_T0 + MS(4000));
	before = results_parent->firstchild;
	request_results_stored();
	results = request_results(&n);
	checkf(n == 2 && results[0].request_id == 1001 && results[1].request_id == 1003 &&
		   !results[0].deferred && !results[1].deferred,
		   "deferred: the deferred results are kept, in order, their flag cleared", "%d results", n);
	checkf(same(results[0].content, "answer 0") && same(results[1].content, "answer 2") &&
		   same(results[0].model, "m") && same(results[1].finish_reason, "stop"),
		   "deferred: their strings were copied into a fresh result context (the old one is deleted)",
		   "%s / %s", results[0].content, results[1].content);
	check(results_parent->firstchild != NULL && results_parent->firstchild->nextchild == NULL &&
		  unit_context_chunks(results_parent->firstchild) == 6,
		  "deferred: one result context, holding only the kept strings", NULL);
	(void) before;
	check(request_oldest_result() == UNIT_T0 + MS(4000), "deferred: the oldest result is now the store's time", NULL);
	check(jobs_lookup(11) == NULL, "deferred: the job whose result was stored is told (and forgotten)", NULL);
	check(j1->unstored == 2 && j1->state == SWARM_JOB_DRAINED, "deferred: j1 still counts its deferred two", NULL);
	check_counts("after a deferring store");

	request_results_stored();
	check(nresults() == 0 && jobs_lookup(10) == NULL, "deferred: stored next time; the job is forgotten", NULL);

	/* more results than the array's first size (256): it grows */
	j1 = start_job(12, false);
	for (int i = 0; i < 300; i++)
		(void) claim_row(j1, 2000 + i, NULL, DEADLINE_MS, PROMPT_LIMIT);
	pass_end();
	results = request_results(&n);
	{
		bool		all = n == 300;

		for (int i = 0; all && i < n; i++)
		{
			char		want[64];

			snprintf(want, sizeof(want), "agent " INT64_FORMAT " does not exist", (int64) 3000 + i);
			all = results[i].request_id == 2000 + i && same(results[i].error, want);
		}
		check(all, "results: 300 results, the array grown, each intact", NULL);
	}
	check(j1->unstored == 300, "results: the job counts 300 unstored", NULL);
	check_counts("300 results");
	request_results_stored();
	check(nresults() == 0 && j1->unstored == 0, "results: all stored", NULL);
	(void) claim_row(j1, 2400, NULL, DEADLINE_MS, PROMPT_LIMIT);
	pass_end();
	results = request_results(&n);
	check(n == 1 && results[0].request_id == 2400 && same(results[0].error, "agent 3400 does not exist"),
		  "results: after a burst, the next result is kept as before", NULL);
	request_results_stored();
	check_request_cxt_empty("deferred: every request freed");
}

/* ---------------------------------------------------------------------
 * Every allowed move, and illegal ones
 * --------------------------------------------------------------------- */

static void
test_allowed_moves(void)
{
	SwarmJob   *job;
	SwarmRequest *a,
			   *b,
			   *c;
	volatile bool raised;
	char		msg[256];
	volatile SwarmAttemptEnd end = SWARM_END_DROPPED;

	fresh();
	job = start_job(13, false);

	UNIT_CATCH(raised, msg, a = claim(job, 1301));
	checkf(!raised && a && a->state == SWARM_REQ_READY, "allowed move claimed -> ready: a row claimed",
		   "%s", msg);
	UNIT_CATCH(raised, msg, (void) claim_row(job, 1302, NULL, DEADLINE_MS, PROMPT_LIMIT));
	checkf(!raised && nresults() == 1, "allowed move claimed -> done: a missing agent", "%s", msg);
	UNIT_CATCH(raised, msg, send_req(a, &ep_a));
	checkf(!raised && a->state == SWARM_REQ_IN_FLIGHT, "allowed move ready -> in_flight: sent", "%s", msg);
	UNIT_CATCH(raised, msg, end = ended(a, outcome_retry("e", 0), 3, false));
	checkf(!raised && end == SWARM_END_RETRY, "allowed move in_flight -> backoff: a retry", "%s", msg);
	UNIT_CATCH(raised, msg, request_promote_due(unit_now()));
	checkf(!raised && a->state == SWARM_REQ_READY, "allowed move backoff -> ready: backoff passed", "%s", msg);
	send_req(a, &ep_a);
	UNIT_CATCH(raised, msg, end = ended(a, outcome_ok("x", NULL, NULL), 3, false));
	checkf(!raised && end == SWARM_END_STORED, "allowed move in_flight -> done: a completion", "%s", msg);
	b = claim(job, 1303);
	pass_end();
	UNIT_CATCH(raised, msg, request_fail_unsent(b, "no endpoint"));
	checkf(!raised && nresults() == 3, "allowed move ready -> done: could not be sent", "%s", msg);
	c = claim_row(job, 1304, "C", 10, PROMPT_LIMIT);
	pass_end();
	send_req(c, &ep_a);
	(void) ended(c, outcome_retry("e", 5), 3, false);
	UNIT_CATCH(raised, msg, (void) request_expire(unit_now() + MS(10)));
	checkf(!raised && nresults() == 4, "allowed move backoff -> done: its deadline passed", "%s", msg);
	check_counts("allowed moves");
	check_request_cxt_empty("allowed moves: every request freed");
}

static void
test_illegal_moves(void)
{
	SwarmJob   *job;
	SwarmRequest *a,
			   *b;
	volatile bool raised;
	char		msg[256];
	SwarmSend	s = send_to(&ep_b);
	SwarmOutcome o;
	int			n_before;
	TimestampTz due;

	fresh();
	job = start_job(14, false);
	a = claim(job, 1401);
	b = claim(job, 1402);
	pass_end();

	send_req(a, &ep_a);
	UNIT_CATCH(raised, msg, request_sent(a, &s, NULL));
	checkf(raised && contains(msg, "request 1401 cannot go from in_flight to in_flight"),
		   "illegal: a second request_sent on an IN_FLIGHT request raises ERROR", "%s", msg);
	check(a->state == SWARM_REQ_IN_FLIGHT && a->attempts == 1 && a->send.endpoint == &ep_a &&
		  a->transfer == &transfer_token,
		  "illegal: ... and changes nothing (attempts, send record, transfer)", NULL);
	check_counts("after an illegal send");

	o = outcome_retry("HTTP 503", 100);
	UNIT_CATCH(raised, msg, (void) request_attempt_ended(b, &o, 1.0, unit_now(), 3, false));
	checkf(raised && contains(msg, "request 1402 ended an attempt while ready"),
		   "illegal: request_attempt_ended (RETRY) on a READY request raises ERROR", "%s", msg);
	check(b->state == SWARM_REQ_READY && request_first_ready() == b && request_next_due() == 0,
		  "illegal: ... it stays READY, in the queue, not in backoff", NULL);
	check_counts("after an illegal retry");

	(void) ended(a, outcome_retry("HTTP 503", 100), 3, false);
	UNIT_CATCH(raised, msg, request_sent(a, &s, NULL));
	checkf(raised && contains(msg, "cannot go from backoff to in_flight"),
		   "illegal: request_sent on a BACKOFF request raises ERROR", "%s", msg);
	due = a->not_before;
	unit_set_now(unit_now() + MS(50));
	o = outcome_retry("HTTP 503", 100);
	UNIT_CATCH(raised, msg, (void) request_attempt_ended(a, &o, 1.0, unit_now(), 3, false));
	checkf(raised && contains(msg, "ended an attempt while backoff"),
		   "illegal: request_attempt_ended (RETRY) on a BACKOFF request raises ERROR", "%s", msg);
	check(a->state == SWARM_REQ_BACKOFF && a->attempts == 1 && request_count(SWARM_REQ_BACKOFF) == 1,
		  "illegal: ... it stays in backoff", NULL);
	checkf(a->not_before == due,
		   "illegal: ... with its not_before (the backoff heap's key) unchanged",
		   "not_before moved by %.0f ms", (a->not_before - due) / 1000.0);
	check(CurrentMemoryContext == pass_cxt, "illegal: the caller's context is current after each", NULL);
	pass_end();
	check_counts("after illegal moves");

	/* the request goes on normally after the refused moves */
	request_promote_due(Max(a->not_before, due));
	send_req(a, &ep_a);
	check((ended(a, outcome_ok("fine", NULL, NULL), 3, false)) == SWARM_END_STORED,
		  "illegal: the request is still usable afterwards", NULL);

	/*
	 * A completion for a request never sent: READY -> DONE is allowed (for
	 * expiry, a cancelled job, request_fail_unsent), so the table alone
	 * cannot tell this call from those; request_attempt_ended() checks that
	 * an attempt is in flight.
	 */
	n_before = nresults();
	o = outcome_ok("never sent", NULL, NULL);
	UNIT_CATCH(raised, msg, (void) request_attempt_ended(b, &o, 1.0, unit_now(), 3, false));
	checkf(raised && contains(msg, "ended an attempt while ready") && nresults() == n_before &&
		   b->state == SWARM_REQ_READY,
		   "illegal: request_attempt_ended (OK) on a READY request raises ERROR, stores nothing",
		   "%s", msg);
	send_req(b, &ep_a);
	check((ended(b, outcome_ok("fine", NULL, NULL), 3, false)) == SWARM_END_STORED,
		  "illegal: ... and the request is still usable afterwards", NULL);
	pass_end();
	check_counts("after the gap");
	check_request_cxt_empty("illegal: every request freed");
}

int
main(int argc, char **argv)
{
	void		(*areas[]) (void) = {
		test_allowed_moves, test_claimed_ready, test_claimed_fails, test_stored, test_backoff,
		test_retries_end, test_expire, test_abandoned_job, test_deferred, test_illegal_moves,
		test_structured_bodies,
	};

	/* outcome_backoff_ms's jitter: seeded, so it is real but repeatable */
	pg_prng_seed(&pg_global_prng_state, 20240601);
	for (int i = 0; i < lengthof(areas); i++)
		areas[i] ();
	teardown();
	checkf(unit_live_contexts() == 0, "every context made is deleted",
		   "%d left", unit_live_contexts());
	printf("1..%d\n", tests);
	return failures > 0 ? 1 : 0;
}
