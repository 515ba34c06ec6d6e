/*-------------------------------------------------------------------------
 *
 * test_jobs.c
 *		C unit tests of src/jobs.c (the worker's registry of running jobs:
 *		their claim cursors and their lifecycle), run without a server.
 *
 * src/jobs.c is compiled exactly as in the extension, against the server
 * headers; test/unit/unit_backend.c stands in for the backend pieces it
 * uses (memory contexts that own their chunks, ereport with PG_TRY).  Only
 * the public API of jobs.h is driven; job->state and the cursors and counts
 * of SwarmJob are read, never written (but in one white-box check, which
 * says so).  The test plays the worker's other modules:
 *	 - the job scan: SwarmJobRow values whose strings live in a "SPI"
 *	   context reset after each scan (so the job must have copied them);
 *	 - queue.c's claims: jobs_claim_range(), then n rows claimed (each a
 *	   jobs_request_claimed()), then jobs_claimed();
 *	 - request.c: a fake ledger of each job's requests (waiting, in flight)
 *	   and results not yet stored; the hooks given to jobs_init() record
 *	   their calls and end the job's waiting requests / drop its results in
 *	   that ledger, as request.c's do.
 * Areas: a generate job's cursor; an advancing job's two cursors and
 * follow-ups re-opening it; when a job is forgotten (and when it must not
 * be); abandoning (the scan stops listing it, jobs_abandon_all); a namesake
 * (an id reused with another created_at); jobs_followups_added for unknown
 * ids; list order; each allowed transition made by the events that make it
 * (a mutation of the allowed[][] table then fails a check: see the report);
 * events that would be illegal moves if job_event() did not guard them; and
 * set_state()'s own check raising ERROR.  The jobs context is checked to be
 * back to its baseline once every job is forgotten (forget() frees all).
 *
 * Output is TAP: "ok N - ..." / "not ok N - ...", then "1..N".
 *
 * Usage: test_jobs   (see test/unit/run_unit.sh)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "utils/memutils.h"

#include "jobs.h"
#include "unit_backend.h"

static int	tests = 0;
static int	failures = 0;

/* Is any known job left with requests to claim? (jobs_claimable over the list) */
static bool
any_claimable(void)
{
	dlist_iter	it;

	dlist_foreach(it, jobs_in_order())
		if (jobs_claimable(dlist_container(SwarmJob, node, it.cur)))
			return true;
	return false;
}

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
	char		detail[512];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	check(ok, what, detail);
}

static const char *
state_of(int64 id)
{
	SwarmJob   *job = jobs_lookup(id);

	return job ? jobs_state_name(job->state) : "(not known)";
}

/* the job with this id is known and in this state */
static void
check_state(int64 id, SwarmJobState want, const char *what)
{
	SwarmJob   *job = jobs_lookup(id);

	checkf(job != NULL && job->state == want, what, "job " INT64_FORMAT ": %s, expected %s",
		   id, state_of(id), jobs_state_name(want));
}

static void
check_forgotten(int64 id, const char *what)
{
	checkf(jobs_lookup(id) == NULL, what, "job " INT64_FORMAT " still known (%s)", id,
		   state_of(id));
}

/* ---------------------------------------------------------------------
 * The fake worker: request.c's ledger, the hooks, scans and claims
 * --------------------------------------------------------------------- */

#define MAX_ID 64

typedef struct Ledger
{
	int			waiting;		/* claimed, READY or BACKOFF: drop_requests ends them */
	int			in_flight;		/* end when their attempt does */
	int			unstored;		/* results waiting: drop_results drops them */
} Ledger;

static Ledger ledger[MAX_ID];
static int	drop_requests_calls;
static int	drop_results_calls;
static SwarmJobState state_in_hook;
static int64 hooked_id;

static void
hook_drop_requests(SwarmJob *job)
{
	Ledger	   *l = &ledger[job->id];

	drop_requests_calls++;
	state_in_hook = job->state;
	hooked_id = job->id;
	/* as request_drop_job: each waiting request ends, with nothing to store */
	while (l->waiting > 0)
	{
		l->waiting--;
		jobs_request_ended(job, false);
	}
}

static int
hook_drop_results(SwarmJob *job)
{
	Ledger	   *l = &ledger[job->id];
	int			n = l->unstored;

	drop_results_calls++;
	state_in_hook = job->state;
	hooked_id = job->id;
	l->unstored = 0;
	return n;
}

static const SwarmJobHooks hooks = {hook_drop_requests, hook_drop_results};

static MemoryContext jobs_cxt = NULL;
static MemoryContext row_cxt = NULL;	/* queue.c's SPI context */
static size_t baseline_chunks;	/* the jobs context with no job */

/* A fresh registry for each area. */
static void
fresh(void)
{
	if (jobs_cxt)
		MemoryContextDelete(jobs_cxt);
	jobs_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm jobs", ALLOCSET_DEFAULT_SIZES);
	if (row_cxt == NULL)
		row_cxt = AllocSetContextCreate(TopMemoryContext, "SPI rows", ALLOCSET_DEFAULT_SIZES);
	jobs_init(jobs_cxt, &hooks);
	memset(ledger, 0, sizeof(ledger));
	drop_requests_calls = drop_results_calls = 0;
	hooked_id = 0;
	baseline_chunks = unit_context_chunks(jobs_cxt);
}

#define T1		(UNIT_T0 + 1000)
#define T2		(UNIT_T0 + 2000)

/* A row of swarm.jobs; its strings live in row_cxt, reset after each scan. */
static SwarmJobRow
job_row(int64 id, bool advances, int64 first_last, TimestampTz created_at)
{
	SwarmJobRow r;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.kind = advances ? SWARM_JOB_INTERACT : SWARM_JOB_GENERATE;
	r.advances = advances;
	r.created_at = created_at;
	r.first_last = first_last;
	r.model = MemoryContextStrdup(row_cxt, "model-of-the-row");
	r.owner = MemoryContextStrdup(row_cxt, "alice");
	r.max_tokens = 64;
	r.context = MemoryContextStrdup(row_cxt, "the context");
	r.system_template = MemoryContextStrdup(row_cxt, "You are {name}.");
	r.user_template = MemoryContextStrdup(row_cxt, "Say hello.");
	r.nendpoints = 2;
	r.endpoints = MemoryContextAlloc(row_cxt, sizeof(char *) * 2);
	r.endpoints[0] = MemoryContextStrdup(row_cxt, "primary");
	r.endpoints[1] = MemoryContextStrdup(row_cxt, "fallback");
	r.request_deadline_ms = 0;
	return r;
}

/* One job scan listing these rows; the rows' memory is gone after it. */
static void
scan(int n, const SwarmJobRow *rows)
{
	jobs_begin_scan();
	for (int i = 0; i < n; i++)
		jobs_reconcile(&rows[i]);
	jobs_end_scan();
	MemoryContextReset(row_cxt);
}

static void
scan1(SwarmJobRow row)
{
	scan(1, &row);
}

/*
 * The worker claims from `id` as queue.c would: n rows (each claimed, then
 * waiting in the ledger), the last with id last_id, out of `limit` asked
 * for.  Returns what jobs_claimed() said; *range gets the range used.
 */
static bool
claim(int64 id, int n, int limit, int64 last_id, SwarmClaimRange *range)
{
	SwarmJob   *job = jobs_lookup(id);
	SwarmClaimRange r;

	if (job == NULL || !jobs_claim_range(job, &r))
	{
		printf("# claim: job " INT64_FORMAT " has nothing to claim (%s)\n", id, state_of(id));
		memset(&r, 0, sizeof(r));
		if (range)
			*range = r;
		return false;
	}
	for (int i = 0; i < n; i++)
	{
		jobs_request_claimed(job);
		ledger[id].waiting++;
	}
	if (range)
		*range = r;
	return jobs_claimed(job, &r, n, limit, last_id);
}

/* k of the job's waiting requests are sent */
static void
send_some(int64 id, int k)
{
	ledger[id].waiting -= k;
	ledger[id].in_flight += k;
}

/* one of the job's requests (in flight, else waiting) ends */
static void
end_one(int64 id, bool with_result)
{
	SwarmJob   *job = jobs_lookup(id);

	if (job == NULL)
	{
		checkf(false, "a request ends: its job is known", "job " INT64_FORMAT
			   " was forgotten with a request outstanding", id);
		return;
	}
	if (ledger[id].in_flight > 0)
		ledger[id].in_flight--;
	else
		ledger[id].waiting--;
	if (with_result)
		ledger[id].unstored++;
	jobs_request_ended(job, with_result);
}

static void
store_one(int64 id)
{
	SwarmJob   *job = jobs_lookup(id);

	if (job == NULL)
	{
		checkf(false, "a result is stored: its job is known", "job " INT64_FORMAT
			   " was forgotten with a result unstored", id);
		return;
	}
	ledger[id].unstored--;
	jobs_result_stored(job);
}

/* the job's counts agree with the ledger */
static void
check_counts(int64 id, const char *what)
{
	SwarmJob   *job = jobs_lookup(id);
	Ledger	   *l = &ledger[id];

	checkf(job != NULL && job->outstanding == l->waiting + l->in_flight &&
		   job->unstored == l->unstored, what,
		   "outstanding %d unstored %d, the ledger says %d waiting + %d in flight, %d unstored",
		   job ? job->outstanding : -1, job ? job->unstored : -1, l->waiting, l->in_flight,
		   l->unstored);
}

static void
check_no_leak(const char *what)
{
	checkf(unit_context_chunks(jobs_cxt) == baseline_chunks, what,
		   "the jobs context holds %zu chunks, %zu with no job",
		   unit_context_chunks(jobs_cxt), baseline_chunks);
}

/* ---------------------------------------------------------------------
 * A generate job: one cursor, claimed `limit` rows at a time
 * --------------------------------------------------------------------- */

static void
test_generate_cursor(void)
{
	SwarmJob   *job;
	SwarmClaimRange r;
	bool		more;

	fresh();
	scan1(job_row(1, false, 0, T1));
	job = jobs_lookup(1);
	check(job != NULL, "generate: a job the scan lists is started", NULL);
	check_state(1, SWARM_JOB_CLAIM_FIRST, "generate: a job that does not advance starts in claim_first");
	checkf(job->kind == SWARM_JOB_GENERATE && !job->advances && job->created_at == T1 &&
		   job->max_tokens == 64 && job->nendpoints == 2,
		   "generate: the row's settings are kept", "kind %d advances %d", job->kind, job->advances);
	/* the row's strings were in a context reset after the scan: copies (ASan) */
	checkf(strcmp(job->model, "model-of-the-row") == 0 && strcmp(job->context, "the context") == 0 &&
		   strcmp(job->system_template, "You are {name}.") == 0 &&
		   strcmp(job->user_template, "Say hello.") == 0 &&
		   strcmp(job->endpoints[0], "primary") == 0 && strcmp(job->endpoints[1], "fallback") == 0,
		   "generate: the row's strings are copied (read after the row's context was reset)",
		   "model %s", job->model);
	check(any_claimable(), "generate: a started job is claimable", NULL);

	check(jobs_claim_range(job, &r) && !r.followups && r.after == 0 && r.upto == PG_INT64_MAX,
		  "generate: the first claim reads ids (0, max]: every queued request is a first one", NULL);

	more = claim(1, 10, 10, 10, &r);
	check(more, "generate: a full claim (n == limit) may have more", NULL);
	check_state(1, SWARM_JOB_CLAIM_FIRST, "generate: ... and the job stays in claim_first");
	check(jobs_claim_range(job, &r) && !r.followups && r.after == 10,
		  "generate: the next claim starts past the last id claimed", NULL);

	more = claim(1, 10, 10, 27, &r);
	check(more && jobs_claim_range(job, &r) && r.after == 27,
		  "generate: the cursor walks on (ids need not be dense)", NULL);

	more = claim(1, 3, 10, 31, &r);
	check(!more, "generate: a short claim (n < limit) says nothing more", NULL);
	check_state(1, SWARM_JOB_DRAINED, "generate: ... and drains the job");
	check(job->cursor == job->first_last,
		  "generate: a short first claim moves the cursor to first_last", NULL);
	check(!jobs_claim_range(job, &r), "generate: a drained job has no claim range", NULL);
	check(!any_claimable(), "generate: nothing is claimable once it drained", NULL);
	check_counts(1, "generate: 23 requests outstanding");

	/* all end with results; the job stays known until the last is stored */
	for (int i = 0; i < 23; i++)
		end_one(1, true);
	check_state(1, SWARM_JOB_DRAINED,
				"generate: drained, nothing outstanding, but results unstored: still known");
	check_counts(1, "generate: 23 results unstored");
	for (int i = 0; i < 22; i++)
		store_one(1);
	check_state(1, SWARM_JOB_DRAINED, "generate: known while one result waits");
	store_one(1);
	check_forgotten(1, "generate: forgotten once its last result is stored");
	check(!jobs_take_rescan_needed(), "generate: forgetting a drained job asks for no rescan", NULL);
	check_no_leak("generate: forget() frees everything the job allocated");

	/* a job with nothing queued: its first claim reads 0 rows */
	scan1(job_row(2, false, 0, T1));
	more = claim(2, 0, 10, 0, NULL);
	check(!more, "generate: an empty claim says nothing more", NULL);
	check_forgotten(2, "generate: a job whose first claim reads nothing is forgotten at once");
	check_no_leak("generate: ... leaving nothing behind");
}

/* ---------------------------------------------------------------------
 * An advancing job: follow-ups first, then first requests
 * --------------------------------------------------------------------- */

static void
test_advancing_cursors(void)
{
	SwarmJob   *job;
	SwarmClaimRange r;
	bool		more;

	fresh();
	scan1(job_row(3, true, 100, T1));
	job = jobs_lookup(3);
	check_state(3, SWARM_JOB_CLAIM_FOLLOWUPS, "advancing: starts in claim_followups");
	check(jobs_claim_range(job, &r) && r.followups && r.after == 100 && r.upto == PG_INT64_MAX,
		  "advancing: follow-ups are claimed first, past first_last", NULL);

	more = claim(3, 0, 10, 0, &r);
	check(more, "advancing: no follow-up yet, but first requests remain: more", NULL);
	check_state(3, SWARM_JOB_CLAIM_FIRST, "advancing: follow-ups drained -> claim_first");
	check(jobs_claim_range(job, &r) && !r.followups && r.after == 0 && r.upto == 100,
		  "advancing: first requests are ids (0, first_last]", NULL);

	more = claim(3, 10, 10, 10, &r);
	check(more && job->cursor == 10, "advancing: a full first claim moves the first cursor", NULL);
	check_state(3, SWARM_JOB_CLAIM_FIRST, "advancing: ... and stays in claim_first");

	/* a stored batch enqueued follow-ups: they go ahead of the first requests */
	jobs_followups_added(3);
	check_state(3, SWARM_JOB_CLAIM_FOLLOWUPS, "advancing: follow-ups added re-open claim_followups from claim_first");
	check(!jobs_take_rescan_needed(), "advancing: follow-ups of a known job ask for no rescan", NULL);
	check(jobs_claim_range(job, &r) && r.followups && r.after == 100,
		  "advancing: the follow-up cursor is where it was", NULL);
	more = claim(3, 4, 4, 104, &r);
	check(more && job->followup_cursor == 104, "advancing: a full follow-up claim moves the follow-up cursor", NULL);
	check_state(3, SWARM_JOB_CLAIM_FOLLOWUPS, "advancing: ... and keeps claiming follow-ups");
	more = claim(3, 2, 4, 106, &r);
	check(more, "advancing: a short follow-up claim, first requests left: more", NULL);
	check_state(3, SWARM_JOB_CLAIM_FIRST, "advancing: ... back to claim_first");
	check(jobs_claim_range(job, &r) && !r.followups && r.after == 10 && r.upto == 100,
		  "advancing: the first cursor resumes where it stopped", NULL);
	check(job->followup_cursor == 106, "advancing: the follow-up cursor kept the last follow-up", NULL);

	more = claim(3, 5, 10, 60, &r);
	check(!more && job->cursor == 100, "advancing: a short first claim jumps the cursor to first_last", NULL);
	check_state(3, SWARM_JOB_DRAINED, "advancing: ... and drains the job");
	check_counts(3, "advancing: 21 outstanding");

	/* follow-ups again, now from drained */
	jobs_followups_added(3);
	check_state(3, SWARM_JOB_CLAIM_FOLLOWUPS, "advancing: follow-ups added re-open claim_followups from drained");
	check(jobs_claim_range(job, &r) && r.followups && r.after == 106,
		  "advancing: ... past the last follow-up claimed", NULL);
	more = claim(3, 1, 10, 107, &r);
	check(!more, "advancing: a short follow-up claim with no first request left: nothing more", NULL);
	check_state(3, SWARM_JOB_DRAINED, "advancing: follow-ups drained, no first left -> drained");

	/* follow-ups added while already claiming them change nothing */
	jobs_followups_added(3);
	jobs_followups_added(3);
	check_state(3, SWARM_JOB_CLAIM_FOLLOWUPS, "advancing: follow-ups added twice: claim_followups");

	more = claim(3, 0, 10, 0, &r);
	check_state(3, SWARM_JOB_DRAINED, "advancing: an empty follow-up claim drains it again");
	check_counts(3, "advancing: 22 outstanding");

	for (int i = 0; i < 22; i++)
		end_one(3, i % 2 == 0);
	check_state(3, SWARM_JOB_DRAINED, "advancing: results unstored keep it");
	for (int i = 0; i < 11; i++)
		store_one(3);
	check_forgotten(3, "advancing: forgotten when drained with everything ended and stored");
	check_no_leak("advancing: nothing left in the jobs context");

	/* an advancing job with nothing queued first: follow-ups only */
	scan1(job_row(4, true, 0, T1));
	job = jobs_lookup(4);
	check(jobs_claim_range(job, &r) && r.followups && r.after == 0,
		  "advancing: first_last 0: follow-ups past id 0", NULL);
	more = claim(4, 0, 10, 0, &r);
	check(!more, "advancing: nothing at all to claim: nothing more", NULL);
	check_forgotten(4, "advancing: ... and it is forgotten at once");
}

/* ---------------------------------------------------------------------
 * When a job is forgotten, and when it must not be
 * --------------------------------------------------------------------- */

static void
test_forgetting(void)
{
	SwarmJob   *job;
	SwarmJobRow rows[2];

	fresh();
	scan1(job_row(5, false, 0, T1));
	(void) claim(5, 10, 10, 10, NULL);
	/* claimable, and everything it claimed ends and is stored: not forgotten */
	for (int i = 0; i < 10; i++)
		end_one(5, true);
	for (int i = 0; i < 10; i++)
		store_one(5);
	check_state(5, SWARM_JOB_CLAIM_FIRST, "forget: an idle job with more to claim is kept");
	check(any_claimable(), "forget: ... and still claimable", NULL);

	(void) claim(5, 2, 10, 12, NULL);
	job = jobs_lookup(5);
	end_one(5, true);
	end_one(5, true);
	check_state(5, SWARM_JOB_DRAINED, "forget: drained, nothing outstanding, two results wait: known");

	/* the scan lists it again (it is still 'running' on disk): found known */
	rows[0] = job_row(5, false, 0, T1);
	rows[1] = job_row(6, false, 0, T1);
	scan(2, rows);
	checkf(jobs_lookup(5) == job && job->state == SWARM_JOB_DRAINED && job->cursor == job->first_last,
		   "forget: the scan listing a job whose result waits finds it known, not restarted",
		   "job %p (was %p), %s, cursor " INT64_FORMAT, (void *) jobs_lookup(5), (void *) job,
		   state_of(5), job->cursor);
	check(drop_requests_calls == 0 && drop_results_calls == 0,
		  "forget: ... and does not abandon it", NULL);
	check(!jobs_claim_range(job, &(SwarmClaimRange) {0}),
		  "forget: ... so nothing of it is claimed twice", NULL);
	check_state(6, SWARM_JOB_CLAIM_FIRST, "forget: the same scan starts another job");

	store_one(5);
	check_state(5, SWARM_JOB_DRAINED, "forget: one result still waits: known");
	store_one(5);
	check_forgotten(5, "forget: the last result stored forgets it");

	/* a request that ends with nothing to store (dropped) can forget it too */
	(void) claim(6, 1, 10, 1, NULL);
	check_state(6, SWARM_JOB_DRAINED, "forget: job 6 drained with one outstanding");
	end_one(6, false);
	check_forgotten(6, "forget: its last request ending with nothing to store forgets it");
	check(!jobs_take_rescan_needed(), "forget: no rescan asked for", NULL);
	check_no_leak("forget: nothing left in the jobs context");
}

/* ---------------------------------------------------------------------
 * Abandoned: the scan stops listing it, or every job at once
 * --------------------------------------------------------------------- */

static void
test_abandon(void)
{
	SwarmJob   *job;
	SwarmJobRow rows[2];

	fresh();
	rows[0] = job_row(8, false, 0, T1);
	rows[1] = job_row(9, false, 0, T1);
	scan(2, rows);
	(void) claim(8, 6, 10, 6, NULL);	/* drained, 6 outstanding */
	send_some(8, 3);
	end_one(8, true);				/* a result waits */
	end_one(8, true);				/* another */
	check_counts(8, "abandon: job 8: 1 in flight, 3 waiting, 2 unstored");
	job = jobs_lookup(8);

	/* a scan that lists only job 9 */
	scan1(job_row(9, false, 0, T1));
	check(drop_requests_calls == 1 && drop_results_calls == 1 && hooked_id == 8,
		  "abandon: a job the scan stops listing has both hooks called once", NULL);
	check(state_in_hook == SWARM_JOB_ABANDONED, "abandon: ... with the job already abandoned", NULL);
	check_state(8, SWARM_JOB_ABANDONED, "abandon: a request still in flight keeps it known, abandoned");
	checkf(job->unstored == 0 && job->outstanding == 1,
		   "abandon: the dropped results are subtracted, the waiting requests ended",
		   "unstored %d outstanding %d", job->unstored, job->outstanding);
	check(!jobs_claim_range(job, &(SwarmClaimRange) {0}), "abandon: nothing of it is claimed", NULL);
	check(!jobs_take_rescan_needed(), "abandon: no rescan while it drains", NULL);
	check_state(9, SWARM_JOB_CLAIM_FIRST, "abandon: the job still listed runs on");

	/* another scan not listing it: not abandoned twice */
	scan1(job_row(9, false, 0, T1));
	check(drop_requests_calls == 1 && drop_results_calls == 1,
		  "abandon: a later scan does not abandon it again", NULL);
	check_state(8, SWARM_JOB_ABANDONED, "abandon: ... it is still draining");

	end_one(8, false);				/* the last transfer ends (request.c drops it) */
	check_forgotten(8, "abandon: forgotten once its last in-flight request ends");
	check(jobs_take_rescan_needed(), "abandon: forgetting an abandoned job asks for a rescan (a namesake may wait)", NULL);
	check(!jobs_take_rescan_needed(), "abandon: jobs_take_rescan_needed() clears the flag", NULL);

	/* an abandoned job with nothing in the worker's hands goes at once */
	drop_requests_calls = drop_results_calls = 0;
	(void) claim(9, 2, 2, 2, NULL); /* claim_first, 2 waiting */
	scan(0, NULL);
	check(drop_requests_calls == 1 && drop_results_calls == 1,
		  "abandon: the hooks are called for a job with waiting requests only", NULL);
	check_forgotten(9, "abandon: with its waiting requests ended it is forgotten at once");
	(void) jobs_take_rescan_needed();
	check_no_leak("abandon: nothing left in the jobs context");

	/* jobs_abandon_all: every job, each once */
	rows[0] = job_row(10, true, 5, T1);
	rows[1] = job_row(11, false, 0, T1);
	scan(2, rows);
	(void) claim(10, 3, 3, 103, NULL);	/* follow-ups, claim_followups */
	send_some(10, 3);
	drop_requests_calls = drop_results_calls = 0;
	jobs_abandon_all();
	check(drop_requests_calls == 2 && drop_results_calls == 2,
		  "abandon_all: both jobs abandoned, hooks called once each", NULL);
	check_forgotten(11, "abandon_all: the idle job is forgotten");
	check_state(10, SWARM_JOB_ABANDONED, "abandon_all: the one with transfers in flight drains");
	jobs_abandon_all();
	check(drop_requests_calls == 2, "abandon_all: a second call does not abandon it again", NULL);

	/* the scan lists it again (same created_at): the abandoned one is not restarted */
	scan1(job_row(10, true, 5, T1));
	check_state(10, SWARM_JOB_ABANDONED, "abandon: listed again while draining: stays abandoned, not restarted");
	jobs_followups_added(10);
	check_state(10, SWARM_JOB_ABANDONED, "abandon: follow-ups of an abandoned job do not re-open it");
	check(jobs_take_rescan_needed(), "abandon: ... they ask for a rescan instead", NULL);
	for (int i = 0; i < 3; i++)
		end_one(10, false);
	check_forgotten(10, "abandon: forgotten when its transfers have ended");
	check(jobs_take_rescan_needed(), "abandon: ... asking for a rescan", NULL);
	scan1(job_row(10, true, 5, T1));
	job = jobs_lookup(10);
	check(job != NULL && job->state == SWARM_JOB_CLAIM_FOLLOWUPS && job->followup_cursor == 5 &&
		  job->outstanding == 0,
		  "abandon: the rescan then starts it afresh", NULL);
}

/* ---------------------------------------------------------------------
 * A namesake: the id reused by a row with another created_at
 * --------------------------------------------------------------------- */

static void
test_namesake(void)
{
	SwarmJob   *job;

	fresh();
	scan1(job_row(7, false, 0, T1));
	(void) claim(7, 2, 10, 2, NULL);	/* drained */
	send_some(7, 1);				/* one in flight, one waiting */
	(void) jobs_take_rescan_needed();

	/* TRUNCATE ... RESTART IDENTITY: id 7 is another job now */
	scan1(job_row(7, true, 50, T2));
	job = jobs_lookup(7);
	check(drop_requests_calls == 1 && drop_results_calls == 1,
		  "namesake: the old job is abandoned", NULL);
	checkf(job != NULL && job->created_at == T1 && job->state == SWARM_JOB_ABANDONED,
		   "namesake: while the old one drains, the new one is not started",
		   "job 7: %s created_at %s", state_of(7),
		   job ? (job->created_at == T1 ? "T1" : "T2") : "-");
	check(job != NULL && job->outstanding == 1, "namesake: ... the old one waits for its transfer", NULL);
	check(!jobs_take_rescan_needed(), "namesake: no rescan yet", NULL);

	/* a scan while it still drains: the new one still waits */
	scan1(job_row(7, true, 50, T2));
	job = jobs_lookup(7);
	check(job != NULL && job->created_at == T1 && drop_requests_calls == 1,
		  "namesake: a scan meanwhile neither starts the new one nor abandons the old again", NULL);

	end_one(7, false);
	check_forgotten(7, "namesake: the old one is forgotten when its transfer ends");
	check(jobs_take_rescan_needed(), "namesake: ... and jobs_take_rescan_needed() says a scan should look again", NULL);
	scan1(job_row(7, true, 50, T2));
	job = jobs_lookup(7);
	checkf(job != NULL && job->created_at == T2 && job->advances &&
		   job->state == SWARM_JOB_CLAIM_FOLLOWUPS && job->outstanding == 0,
		   "namesake: the rescan starts the new one", "job 7: %s", state_of(7));

	/* cancelled first (draining), then its id reused */
	(void) claim(7, 1, 10, 51, NULL);	/* follow-ups: short, but first requests left */
	(void) claim(7, 1, 1, 1, NULL);	/* one first request, in flight */
	send_some(7, 2);
	drop_requests_calls = 0;
	scan(0, NULL);					/* cancelled: the scan lists it no more */
	check_state(7, SWARM_JOB_ABANDONED, "namesake: a cancelled job drains, abandoned");
	check(drop_requests_calls == 1, "namesake: ... abandoned once", NULL);
	scan1(job_row(7, false, 0, T2 + 1));	/* a new job 7 */
	job = jobs_lookup(7);
	checkf(job != NULL && job->created_at == T2 && job->state == SWARM_JOB_ABANDONED &&
		   drop_requests_calls == 1,
		   "namesake: a new job with the id of a cancelled, draining one is not started",
		   "job 7: %s", state_of(7));
	check(!jobs_take_rescan_needed(), "namesake: ... and no rescan is asked for yet", NULL);
	end_one(7, false);
	check_state(7, SWARM_JOB_ABANDONED, "namesake: one transfer still in flight: the old one stays");
	end_one(7, false);
	check_forgotten(7, "namesake: the old one is forgotten with its last transfer");
	check(jobs_take_rescan_needed(), "namesake: ... and jobs_take_rescan_needed() says so", NULL);
	scan1(job_row(7, false, 0, T2 + 1));
	job = jobs_lookup(7);
	check(job != NULL && job->created_at == T2 + 1 && job->state == SWARM_JOB_CLAIM_FIRST &&
		  job->cursor == 0, "namesake: the rescan starts the new one from the start", NULL);

	/* the old one idle: abandoned, forgotten and replaced in the same scan */
	drop_requests_calls = 0;
	(void) jobs_take_rescan_needed();
	scan1(job_row(7, false, 0, T1 + 5));
	job = jobs_lookup(7);
	checkf(drop_requests_calls == 1 && job != NULL && job->created_at == T1 + 5 &&
		   job->state == SWARM_JOB_CLAIM_FIRST,
		   "namesake: an idle old job is replaced by the new one at once", "job 7: %s",
		   state_of(7));
	printf("# namesake: replaced at once, jobs_take_rescan_needed() says %s (a spare rescan)\n",
		   jobs_take_rescan_needed() ? "true" : "false");
}

/* ---------------------------------------------------------------------
 * jobs_followups_added for an id not known, and the list order
 * --------------------------------------------------------------------- */

static void
test_unknown_and_order(void)
{
	SwarmJobRow rows[3];
	dlist_iter	it;
	int64		ids[3];
	int			n = 0;

	fresh();
	check(!jobs_take_rescan_needed(), "unknown: no rescan wanted after jobs_init", NULL);
	jobs_followups_added(42);
	check(jobs_lookup(42) == NULL, "unknown: follow-ups of an unknown job start nothing", NULL);
	check(jobs_take_rescan_needed(), "unknown: ... they ask for a rescan (the scan finds it)", NULL);
	check(!jobs_take_rescan_needed(), "unknown: asked once", NULL);

	rows[0] = job_row(30, false, 0, T1);
	rows[1] = job_row(12, false, 0, T1);
	rows[2] = job_row(20, true, 3, T1);
	scan(3, rows);
	dlist_foreach(it, jobs_in_order())
	{
		if (n < 3)
			ids[n] = dlist_container(SwarmJob, node, it.cur)->id;
		n++;
	}
	checkf(n == 3 && ids[0] == 12 && ids[1] == 20 && ids[2] == 30,
		   "order: jobs are listed in id order, whatever order the scan gave",
		   "%d jobs: " INT64_FORMAT " " INT64_FORMAT " " INT64_FORMAT, n, ids[0], ids[1], ids[2]);
	scan1(job_row(15, false, 0, T1));	/* the others are abandoned (idle: forgotten) */
	check(jobs_lookup(12) == NULL && jobs_lookup(20) == NULL && jobs_lookup(30) == NULL &&
		  jobs_lookup(15) != NULL, "order: a scan listing another job replaces them", NULL);
}

/* ---------------------------------------------------------------------
 * Every move the allowed[][] table allows, made by the events that make
 * it.  With one entry of the table broken, the move raises ERROR and the
 * check says which.
 * --------------------------------------------------------------------- */

typedef struct Move
{
	SwarmJobState from;
	SwarmJobState to;
	const char *how;
} Move;

/* play the events of move m on a fresh registry; the job's id is 1 */
static void
play_move(int m)
{
	switch (m)
	{
		case 0:				/* claim_followups -> claim_first */
			scan1(job_row(1, true, 10, T1));
			(void) claim(1, 0, 10, 0, NULL);
			break;
		case 1:				/* claim_followups -> drained */
			scan1(job_row(1, true, 0, T1));
			(void) claim(1, 2, 10, 2, NULL);
			break;
		case 2:				/* claim_followups -> abandoned */
			scan1(job_row(1, true, 0, T1));
			(void) claim(1, 2, 2, 2, NULL);
			send_some(1, 2);
			scan(0, NULL);
			break;
		case 3:				/* claim_first -> claim_followups */
			scan1(job_row(1, true, 10, T1));
			(void) claim(1, 0, 10, 0, NULL);
			jobs_followups_added(1);
			break;
		case 4:				/* claim_first -> drained */
			scan1(job_row(1, false, 0, T1));
			(void) claim(1, 2, 10, 2, NULL);
			break;
		case 5:				/* claim_first -> abandoned */
			scan1(job_row(1, false, 0, T1));
			(void) claim(1, 2, 2, 2, NULL);
			send_some(1, 2);
			scan(0, NULL);
			break;
		case 6:				/* drained -> claim_followups */
			scan1(job_row(1, true, 0, T1));
			(void) claim(1, 2, 10, 2, NULL);
			jobs_followups_added(1);
			break;
		case 7:				/* drained -> abandoned */
			scan1(job_row(1, false, 0, T1));
			(void) claim(1, 2, 10, 2, NULL);
			send_some(1, 2);
			scan(0, NULL);
			break;
		case 8:				/* drained -> forgotten */
			scan1(job_row(1, false, 0, T1));
			(void) claim(1, 1, 10, 1, NULL);
			end_one(1, false);
			break;
		case 9:				/* abandoned -> forgotten */
			scan1(job_row(1, false, 0, T1));
			(void) claim(1, 1, 10, 1, NULL);
			send_some(1, 1);
			scan(0, NULL);
			end_one(1, false);
			break;
	}
}

static void
test_allowed_moves(void)
{
	static const Move moves[] = {
		{SWARM_JOB_CLAIM_FOLLOWUPS, SWARM_JOB_CLAIM_FIRST, "an advancing job's follow-up claim reads short, first requests left"},
		{SWARM_JOB_CLAIM_FOLLOWUPS, SWARM_JOB_DRAINED, "a follow-up claim reads short, no first request left"},
		{SWARM_JOB_CLAIM_FOLLOWUPS, SWARM_JOB_ABANDONED, "the scan stops listing a job claiming follow-ups"},
		{SWARM_JOB_CLAIM_FIRST, SWARM_JOB_CLAIM_FOLLOWUPS, "follow-ups added while claiming first requests"},
		{SWARM_JOB_CLAIM_FIRST, SWARM_JOB_DRAINED, "a first claim reads short"},
		{SWARM_JOB_CLAIM_FIRST, SWARM_JOB_ABANDONED, "the scan stops listing a job claiming first requests"},
		{SWARM_JOB_DRAINED, SWARM_JOB_CLAIM_FOLLOWUPS, "follow-ups added to a drained job"},
		{SWARM_JOB_DRAINED, SWARM_JOB_ABANDONED, "the scan stops listing a drained job with transfers in flight"},
		{SWARM_JOB_DRAINED, SWARM_JOB_FORGOTTEN, "a drained job's last request ends"},
		{SWARM_JOB_ABANDONED, SWARM_JOB_FORGOTTEN, "an abandoned job's last transfer ends"},
	};

	for (int m = 0; m < lengthof(moves); m++)
	{
		volatile bool raised;
		char		msg[256];
		char		what[256];
		bool		reached;

		fresh();
		UNIT_CATCH(raised, msg, play_move(m));
		if (moves[m].to == SWARM_JOB_FORGOTTEN)
			reached = !raised && jobs_lookup(1) == NULL;
		else
			reached = !raised && jobs_lookup(1) != NULL && jobs_lookup(1)->state == moves[m].to;
		snprintf(what, sizeof(what), "allowed move %s -> %s: %s",
				 jobs_state_name(moves[m].from), jobs_state_name(moves[m].to), moves[m].how);
		checkf(reached, what, "%s", raised ? msg : state_of(1));
	}
}

/*
 * Events that would be illegal moves if job_event() did not guard them:
 * each leaves the state as it is, with no ERROR.  (job_event() never
 * proposes a move the table forbids; these pin that down.)
 */
static void
test_guarded_events(void)
{
	volatile bool raised;
	char		msg[256];
	SwarmJob   *job;
	SwarmClaimRange first = {0, 100, false};
	SwarmClaimRange followups = {100, PG_INT64_MAX, true};

	fresh();
	scan1(job_row(1, true, 100, T1));
	(void) claim(1, 2, 2, 102, NULL);	/* claim_followups, 2 waiting */
	send_some(1, 2);
	scan(0, NULL);					/* abandoned, draining */
	job = jobs_lookup(1);

	/* a claim result arriving for an abandoned job (stale ranges) */
	UNIT_CATCH(raised, msg, (void) jobs_claimed(job, &first, 0, 10, 0));
	checkf(!raised && job->state == SWARM_JOB_ABANDONED,
		   "guard: a short first claim of an abandoned job leaves it abandoned (not abandoned -> drained)",
		   "%s", raised ? msg : state_of(1));
	UNIT_CATCH(raised, msg, (void) jobs_claimed(job, &followups, 0, 10, 0));
	checkf(!raised && job->state == SWARM_JOB_ABANDONED,
		   "guard: a short follow-up claim of an abandoned job leaves it abandoned (not abandoned -> claim_first)",
		   "%s", raised ? msg : state_of(1));
	UNIT_CATCH(raised, msg, jobs_followups_added(1));
	checkf(!raised && job->state == SWARM_JOB_ABANDONED,
		   "guard: follow-ups of an abandoned job leave it abandoned (not abandoned -> claim_followups)",
		   "%s", raised ? msg : state_of(1));
	UNIT_CATCH(raised, msg, jobs_abandon_all());
	checkf(!raised && job->state == SWARM_JOB_ABANDONED && drop_requests_calls == 1,
		   "guard: abandoning an abandoned job again is no move (not abandoned -> abandoned)",
		   "%s, hooks called %d times", raised ? msg : state_of(1), drop_requests_calls);
	UNIT_CATCH(raised, msg, scan1(job_row(1, true, 100, T2)));
	checkf(!raised && job->state == SWARM_JOB_ABANDONED && drop_requests_calls == 1,
		   "guard: a namesake of an abandoned job abandons it no second time",
		   "%s", raised ? msg : state_of(1));
	(void) jobs_take_rescan_needed();

	/* a drained job (a transfer in flight) given stale claim results */
	fresh();
	scan1(job_row(2, false, 0, T1));
	(void) claim(2, 1, 10, 1, NULL);
	send_some(2, 1);
	job = jobs_lookup(2);
	UNIT_CATCH(raised, msg, (void) jobs_claimed(job, &followups, 0, 10, 0));
	checkf(!raised && job->state == SWARM_JOB_DRAINED,
		   "guard: a short follow-up claim of a drained job leaves it drained",
		   "%s", raised ? msg : state_of(2));
	UNIT_CATCH(raised, msg, (void) jobs_claimed(job, &first, 0, 10, 0));
	checkf(!raised && job->state == SWARM_JOB_DRAINED,
		   "guard: a short first claim of a drained job leaves it drained",
		   "%s", raised ? msg : state_of(2));

	/* a job claiming first requests given a stale follow-up result */
	scan1(job_row(3, false, 0, T1));
	job = jobs_lookup(3);
	UNIT_CATCH(raised, msg, (void) jobs_claimed(job, &followups, 0, 10, 0));
	checkf(!raised && job->state == SWARM_JOB_CLAIM_FIRST,
		   "guard: a short follow-up claim of a job in claim_first leaves it there",
		   "%s", raised ? msg : state_of(3));
}

/*
 * set_state()'s own check, white-box: the one move that no event of the
 * API can propose is reached by writing job->state (which only set_state()
 * may do) to stand for a record gone stale, then abandoning the job.
 */
static void
test_set_state_raises(void)
{
	volatile bool raised;
	char		msg[256];
	SwarmJob   *job;

	fresh();
	scan1(job_row(1, false, 0, T1));
	job = jobs_lookup(1);
	job->state = SWARM_JOB_FORGOTTEN;	/* white-box: a stale record */
	UNIT_CATCH(raised, msg, jobs_abandon_all());
	checkf(raised && strstr(msg, "cannot go from forgotten to abandoned") != NULL,
		   "set_state: a move the table forbids raises ERROR naming both states", "%s",
		   raised ? msg : "no ERROR");
	check(drop_requests_calls == 0 && drop_results_calls == 0 && job->state == SWARM_JOB_FORGOTTEN,
		  "set_state: ... before anything changed (no hook called, state unchanged)", NULL);
	check(CurrentMemoryContext == TopMemoryContext,
		  "set_state: the caller's memory context is back after the catch", NULL);
}

int
main(int argc, char **argv)
{
	void		(*areas[]) (void) = {
		/* first: with a table entry broken, it names the move (later areas bail out) */
		test_allowed_moves,
		test_generate_cursor, test_advancing_cursors, test_forgetting, test_abandon,
		test_namesake, test_unknown_and_order, test_guarded_events, test_set_state_raises,
	};

	for (int i = 0; i < lengthof(areas); i++)
		areas[i] ();
	MemoryContextDelete(jobs_cxt);
	MemoryContextDelete(row_cxt);
	checkf(unit_live_contexts() == 0, "every context the test made is deleted",
		   "%d left", unit_live_contexts());
	printf("1..%d\n", tests);
	return failures > 0 ? 1 : 0;
}
