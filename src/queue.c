/*-------------------------------------------------------------------------
 *
 * queue.c
 *		The worker's SQL: scan jobs and endpoints, claim queued requests,
 *		store results and announce them.  On a distributed swarm (Citus) the
 *		claim and the store run on this node's shards, with the statements
 *		shards.c prepares for them.  Every function here runs inside a
 *		transaction the caller (worker.c) opened, with SPI connected; it runs
 *		statements and hands back rows, and decides nothing about them (which
 *		ids to claim is jobs.c's business, what a row becomes the caller's).
 *
 * Plans are prepared at their first use, once per worker, and kept
 * (SPI_keepplan); the plan cache re-plans them if the tables are re-created.
 *
 * Reading rows: every statement whose rows come back goes through
 * read_rows(), which runs a saved plan, checks its result and hands each
 * row to a reader that turns it into the struct the caller's module
 * defines (SwarmJobRow, SwarmEndpointRow, SwarmClaimedRow).
 *
 * The job scan first marks the jobs still 'queued' as 'running' (skipping
 * rows another transaction holds), then reads every 'queued' or 'running'
 * job with its kind's code (swarm.job_kinds) and, for kinds that advance,
 * the last id it has queued now: where its follow-ups will begin.
 *
 * Storing a batch of results is one transaction of five statements:
 *	 1. lock the batch's job rows (always jobs before requests: swarm.cancel()
 *		takes the same order, so the two never deadlock), skipping rows that
 *		another transaction holds: their results wait for a later store, and
 *		no user's open transaction ever stalls the worker;
 *	 2. delete the answered requests still 'queued' and insert their messages
 *		in the same statement, so a result is stored at most once, and a request
 *		cancelled meanwhile yields no message;
 *	 3. mark failed requests, again only those still 'queued';
 *
 * Steps 2 and 3 say "status NOT IN ('failed', 'cancelled')" rather than
 * "status = 'queued'" (the same rows, given the CHECK constraint) on purpose:
 * the latter matches the predicate of the partial index requests_queued_idx,
 * and a plan that then scans that whole index, testing every entry against the
 * batch's ids, costs O(queue length) per batch.  Worded this way only the
 * primary key can serve the lookup.
 *	 4. for batches of interact/simulate jobs, swarm._advance(): enqueue what
 *		follows from these results (a conversation's next turn, a simulation's
 *		next step), so that a result and its follow-up commit together;
 *	 5. add the counts to the jobs, complete the jobs whose every request has
 *		ended, and NOTIFY each job's channel with its progress.
 * Between 2 and 3, the answers of jobs made with swarm.response_store = on
 * are kept in swarm.responses (those whose message was stored), under their
 * request's key; a job made with swarm.replay answers its requests from
 * there when they are claimed (queue_lookup_responses()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "queue.h"
#include "shards.h"

static SPIPlanPtr plan_mark_running = NULL;
static SPIPlanPtr plan_scan_jobs = NULL;
static SPIPlanPtr plan_scan_jobs_distributed = NULL;
static SPIPlanPtr plan_scan_endpoints = NULL;
static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_lock_jobs = NULL;
static SPIPlanPtr plan_store_ok = NULL;
static SPIPlanPtr plan_store_failed = NULL;
static SPIPlanPtr plan_update_jobs = NULL;
static SPIPlanPtr plan_advance = NULL;
static SPIPlanPtr plan_keep_responses = NULL;
static SPIPlanPtr plan_lookup_responses = NULL;

/*
 * Every statement the worker runs on its hot path, prepared at its first
 * use (saved_plan()) and kept.  Argument types are listed in each
 * statement's order.
 */
typedef struct SavedPlan
{
	SPIPlanPtr *plan;
	int			nargs;
	Oid			argtypes[8];
	const char *sql;
} SavedPlan;

static const SavedPlan saved_plans[] = {
	{&plan_mark_running, 0, {0},
		"UPDATE swarm.jobs SET status = 'running', "
		"       started_at = coalesce(started_at, now()) "
		"WHERE id IN (SELECT id FROM swarm.jobs WHERE status = 'queued' "
		"             FOR UPDATE SKIP LOCKED)"},
	{&plan_scan_jobs, 0, {0},
		"SELECT j.id, k.code, k.advances, j.created_at, "
		"       CASE WHEN k.advances THEN "
		"         (SELECT max(r.id) FROM swarm.requests r "
		"          WHERE r.job_id = j.id AND r.status = 'queued') END, "
		"       j.model, j.max_tokens, j.context, j.system_template, j.user_template, "
		"       j.endpoints, "
		"       coalesce((extract(epoch FROM j.request_deadline) * 1000)::bigint, 0), j.owner, "
		"       j.params ->> 'response_schema', "
		"       coalesce((j.params ->> 'response_store')::boolean, false), "
		"       CASE j.params ->> 'replay' WHEN 'on' THEN 1 WHEN 'fallthrough' THEN 2 ELSE 0 END, "
		"       coalesce(j.params ->> 'mode' = 'batch', false) "
		"FROM swarm.jobs j JOIN swarm.job_kinds k ON k.name = j.kind "
		"WHERE j.status IN ('queued', 'running') ORDER BY j.id"},
	/*
	 * distributed: no job advances here (the coordinator enqueues the
	 * follow-ups of interact jobs, swarm._conduct()), nothing read from the
	 * queue
	 */
	{&plan_scan_jobs_distributed, 0, {0},
		"SELECT j.id, k.code, false, j.created_at, NULL::bigint, "
		"       j.model, j.max_tokens, j.context, j.system_template, j.user_template, "
		"       j.endpoints, "
		"       coalesce((extract(epoch FROM j.request_deadline) * 1000)::bigint, 0), j.owner, "
		"       j.params ->> 'response_schema', "
		"       coalesce((j.params ->> 'response_store')::boolean, false), "
		"       CASE j.params ->> 'replay' WHEN 'on' THEN 1 WHEN 'fallthrough' THEN 2 ELSE 0 END, "
		"       coalesce(j.params ->> 'mode' = 'batch', false) "
		"FROM swarm.jobs j JOIN swarm.job_kinds k ON k.name = j.kind "
		"WHERE j.status IN ('queued', 'running') ORDER BY j.id"},
	{&plan_scan_endpoints, 0, {0},
		"SELECT e.name, e.base_url, e.model, k.api_key, e.max_in_flight, "
		"       coalesce(e.requests_per_minute, 0), coalesce(e.tokens_per_minute, 0), "
		"       coalesce(e.timeout_ms, 0), e.updated_at, e.structured_output = 'tools' "
		"FROM swarm.endpoints e LEFT JOIN swarm._endpoint_keys k ON k.endpoint = e.name "
		"ORDER BY e.name"},
	{&plan_claim, 4, {INT8OID, INT8OID, INT4OID, INT8OID},
		"SELECT r.id, r.agent_id, a.name, a.persona, r.vars "
		"FROM swarm.requests r LEFT JOIN swarm.agents a ON a.id = r.agent_id "
		"WHERE r.job_id = $1 AND r.id > $2 AND r.id <= $4 AND r.status = 'queued' "
		"ORDER BY r.id LIMIT $3"},
	{&plan_lock_jobs, 1, {INT8ARRAYOID},
		"SELECT id FROM swarm.jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED"},
	{&plan_store_ok, 8, {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID,
	FLOAT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID},
		"WITH input AS ("
		"  SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) "
		"    AS t(request_id, content, model, prompt_tokens, completion_tokens, "
		"         latency_ms, finish_reason, attempts)), "
		"answered AS ("
		"  DELETE FROM swarm.requests r "
		"  WHERE r.id = ANY($1) AND r.status NOT IN ('failed', 'cancelled') "
		"  RETURNING r.id, r.job_id, r.agent_id, r.to_agent_id, r.conversation_id, "
		"            r.turn, r.reply_to, r.seen, r.owner), "
		"stored AS ("
		"  INSERT INTO swarm.messages (job_id, request_id, agent_id, content, model, "
		"         prompt_tokens, completion_tokens, latency_ms, finish_reason, attempts, "
		"         to_agent_id, conversation_id, turn, reply_to, seen, owner) "
		"  SELECT a.job_id, a.id, a.agent_id, i.content, i.model, i.prompt_tokens, "
		"         i.completion_tokens, i.latency_ms, i.finish_reason, i.attempts, "
		"         a.to_agent_id, a.conversation_id, a.turn, a.reply_to, a.seen, a.owner "
		"  FROM answered a JOIN input i ON i.request_id = a.id "
		"  ORDER BY a.id "
		"  RETURNING job_id, prompt_tokens, completion_tokens) "
		"SELECT job_id, count(*), coalesce(sum(prompt_tokens), 0), "
		"       coalesce(sum(completion_tokens), 0) "
		"FROM stored GROUP BY job_id"},
	{&plan_store_failed, 3, {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID},
		"WITH input AS ("
		"  SELECT * FROM unnest($1, $2, $3) AS t(request_id, attempts, error)), "
		"marked AS ("
		"  UPDATE swarm.requests r SET status = 'failed', attempts = i.attempts, "
		"         last_error = i.error, finished_at = now() "
		"  FROM input i "
		"  WHERE r.id = ANY($1) AND r.id = i.request_id "
		"    AND r.status NOT IN ('failed', 'cancelled') "
		"  RETURNING r.job_id) "
		"SELECT job_id, count(*), 0::bigint, 0::bigint FROM marked GROUP BY job_id"},
	{&plan_update_jobs, 6, {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID},
		"UPDATE swarm.jobs j SET "
		"  succeeded = j.succeeded + c.ok, "
		"  failed = j.failed + c.bad, "
		"  prompt_tokens = j.prompt_tokens + c.pt, "
		"  completion_tokens = j.completion_tokens + c.ct, "
		"  started_at = coalesce(j.started_at, now()), "
		"  status = CASE WHEN j.status = 'cancelled' THEN j.status "
		"                WHEN j.succeeded + c.ok + j.failed + c.bad + j.cancelled >= j.total "
		"                THEN 'completed' ELSE 'running' END, "
		"  finished_at = CASE WHEN j.status <> 'cancelled' AND "
		"                 j.succeeded + c.ok + j.failed + c.bad + j.cancelled >= j.total "
		"                THEN now() ELSE j.finished_at END "
		"FROM unnest($1, $2, $3, $4, $5, $6) AS c(id, ok, bad, pt, ct, batch) "
		"WHERE j.id = c.id "
		"RETURNING pg_notify(j.channel, swarm._progress_payload(j, c.batch))"},
	{&plan_advance, 3, {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID},
		"SELECT swarm._advance($1, $2, $3)"},
};

/*
 * The saved plan `*planp`, prepared at its first use.  Only at first use:
 * preparing locks the statement's tables until the tick ends, and a worker
 * that locked every table up front (requests before agents, say) could
 * deadlock with a TRUNCATE that takes them in another order.  An error here
 * (a lock timeout) leaves the plan unprepared, to try again next tick.
 */
static SPIPlanPtr
saved_plan(SPIPlanPtr *planp)
{
	for (int i = 0; *planp == NULL && i < lengthof(saved_plans); i++)
	{
		const SavedPlan *sp = &saved_plans[i];
		SPIPlanPtr	plan;

		if (sp->plan != planp)
			continue;
		plan = SPI_prepare(sp->sql, sp->nargs, (Oid *) sp->argtypes);
		if (plan == NULL)
			elog(ERROR, "pg_swarm: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*planp = plan;
	}
	Assert(*planp != NULL);
	return *planp;
}

/* ---- reading rows ---- */

typedef void (*row_reader) (HeapTuple tup, TupleDesc desc, void *arg);

/*
 * Run a saved plan (read_only = false: a fresh snapshot that sees this
 * tick's own writes), check that it returned `expected_rc`, and hand each
 * row to `reader`, which may run SQL of its own (the result set is held
 * here, not in SPI_tuptable, which that would overwrite).  Returns how many
 * rows came back.
 */
static uint64
read_plan_rows(SPIPlanPtr plan, Datum *args, int expected_rc, const char *what,
			   row_reader reader, void *arg)
{
	int			rc = SPI_execute_plan(plan, args, NULL, false, 0);
	SPITupleTable *rows = SPI_tuptable;
	uint64		n = SPI_processed;

	if (rc != expected_rc)
		elog(ERROR, "pg_swarm: %s failed: %s", what, SPI_result_code_string(rc));
	for (uint64 i = 0; i < n && reader != NULL; i++)
		reader(rows->vals[i], rows->tupdesc, arg);
	return n;
}

/* read_plan_rows() with a saved plan, prepared at its first use. */
static uint64
read_rows(SPIPlanPtr *planp, Datum *args, int expected_rc, const char *what,
		  row_reader reader, void *arg)
{
	return read_plan_rows(saved_plan(planp), args, expected_rc, what, reader, arg);
}

static char *
col_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* A column that is never NULL, or whose NULL reads as 0 / false. */
static Datum
col(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? (Datum) 0 : d;
}

static bool
col_is_null(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;

	(void) SPI_getbinval(tup, desc, col, &isnull);
	return isnull;
}

/* ---- the extension itself ---- */

/* The extension's oid in this database, or InvalidOid.  Needs a transaction. */
Oid
queue_extension_oid(void)
{
	return get_extension_oid("pg_swarm", true);
}

/*
 * Is the installed extension's SQL the version this library was built for?
 * After the library is upgraded, the tables keep their old shape until
 * ALTER EXTENSION pg_swarm UPDATE; until then the worker leaves them alone,
 * saying why once per version seen.  Needs a transaction.
 */
bool
queue_schema_is_current(Oid extension_oid)
{
	static char warned_for[64] = "";
	Datum		arg = ObjectIdGetDatum(extension_oid);
	Oid			argtype = OIDOID;
	char	   *version;
	int			rc;

	rc = SPI_execute_with_args("SELECT extversion FROM pg_catalog.pg_extension WHERE oid = $1",
							   1, &argtype, &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	version = col_text(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (version != NULL && strcmp(version, SWARM_VERSION) == 0)
	{
		warned_for[0] = '\0';
		return true;
	}
	if (version != NULL && strcmp(version, warned_for) != 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_swarm worker is waiting: the extension's SQL is version %s, the library is %s",
						version, SWARM_VERSION),
				 errdetail("No job runs until the two match; queued requests stay queued."),
				 errhint("Run ALTER EXTENSION pg_swarm UPDATE in database \"%s\".",
						 get_database_name(MyDatabaseId))));
		strlcpy(warned_for, version, sizeof(warned_for));
	}
	return false;
}

/*
 * Start-up reconciliation.  Request rows in flight at a crash are still
 * 'queued' and are simply claimed again; only job states can need fixing.
 */
void
queue_reconcile(void)
{
	int			rc;

	/* distributed: the coordinator's worker completes jobs (swarm._conduct()) */
	rc = SPI_execute("SELECT swarm._is_distributed()", true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1 &&
		DatumGetBool(col(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)))
		return;
	rc = SPI_execute("UPDATE swarm.jobs SET status = 'completed', "
								 "       finished_at = coalesce(finished_at, now()) "
								 "WHERE status IN ('queued', 'running') "
								 "  AND succeeded + failed + cancelled >= total",
								 false, 0);

	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "pg_swarm: reconcile failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("pg_swarm worker marked %llu finished jobs completed at start-up",
						(unsigned long long) SPI_processed)));
}

/* ---- jobs and endpoints ---- */

typedef struct JobReader
{
	swarm_job_row_cb cb;
	void	   *arg;
} JobReader;

static void
read_job(HeapTuple tup, TupleDesc desc, void *arg)
{
	JobReader  *jr = arg;
	SwarmJobRow row;
	bool		isnull;
	Datum		endpoints;

	row.id = DatumGetInt64(col(tup, desc, 1));
	row.kind = (SwarmJobKind) DatumGetInt16(col(tup, desc, 2));
	row.advances = DatumGetBool(col(tup, desc, 3));
	row.created_at = DatumGetTimestampTz(col(tup, desc, 4));
	row.first_last = DatumGetInt64(col(tup, desc, 5));
	row.model = col_text(tup, desc, 6);
	row.max_tokens = DatumGetInt32(col(tup, desc, 7));
	row.context = col_text(tup, desc, 8);
	row.system_template = col_text(tup, desc, 9);
	row.user_template = col_text(tup, desc, 10);
	row.request_deadline_ms = DatumGetInt64(col(tup, desc, 12));
	row.owner = NameStr(*DatumGetName(col(tup, desc, 13)));
	row.response_schema = col_text(tup, desc, 14);
	row.store_responses = DatumGetBool(col(tup, desc, 15));
	row.replay = DatumGetInt32(col(tup, desc, 16));
	row.batch_mode = DatumGetBool(col(tup, desc, 17));
	row.endpoints = NULL;
	row.nendpoints = 0;
	endpoints = SPI_getbinval(tup, desc, 11, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *enulls;
		int			nelems;

		deconstruct_array(DatumGetArrayTypeP(endpoints), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &enulls, &nelems);
		row.endpoints = palloc(sizeof(char *) * Max(nelems, 1));
		for (int k = 0; k < nelems; k++)
			if (!enulls[k])
				row.endpoints[row.nendpoints++] = TextDatumGetCString(elems[k]);
	}
	jr->cb(&row, jr->arg);
}

/*
 * Mark the jobs still 'queued' as 'running', then call cb for every job
 * 'queued' or 'running', in id order.
 */
void
queue_scan_jobs(swarm_job_row_cb cb, void *arg)
{
	JobReader	jr = {cb, arg};

	if (shards_distributed())
	{
		/* the coordinator marks them running (swarm._conduct()) */
		(void) read_rows(&plan_scan_jobs_distributed, NULL, SPI_OK_SELECT, "the job scan",
						 read_job, &jr);
		return;
	}
	(void) read_rows(&plan_mark_running, NULL, SPI_OK_UPDATE, "marking jobs running", NULL, NULL);
	(void) read_rows(&plan_scan_jobs, NULL, SPI_OK_SELECT, "the job scan", read_job, &jr);
}

typedef struct EndpointReader
{
	swarm_endpoint_row_cb cb;
	void	   *arg;
} EndpointReader;

static void
read_endpoint(HeapTuple tup, TupleDesc desc, void *arg)
{
	EndpointReader *er = arg;
	SwarmEndpointRow row;

	row.name = col_text(tup, desc, 1);
	row.base_url = col_text(tup, desc, 2);
	row.model = col_text(tup, desc, 3);
	row.api_key = col_text(tup, desc, 4);
	row.max_in_flight = DatumGetInt32(col(tup, desc, 5));
	row.requests_per_minute = DatumGetInt32(col(tup, desc, 6));
	row.tokens_per_minute = DatumGetInt32(col(tup, desc, 7));
	row.timeout_ms = DatumGetInt32(col(tup, desc, 8));
	row.updated_at = DatumGetTimestampTz(col(tup, desc, 9));
	row.structured_output = DatumGetBool(col(tup, desc, 10)) ? OPENAI_OUTPUT_TOOLS : OPENAI_OUTPUT_JSON_SCHEMA;
	er->cb(&row, er->arg);
	if (row.api_key)
		explicit_bzero((char *) row.api_key, strlen(row.api_key));
}

/* Call cb for every row of swarm.endpoints, with its key. */
void
queue_scan_endpoints(swarm_endpoint_row_cb cb, void *arg)
{
	EndpointReader er = {cb, arg};

	(void) read_rows(&plan_scan_endpoints, NULL, SPI_OK_SELECT, "the endpoint scan",
					 read_endpoint, &er);
}

/* ---- claiming ---- */

typedef struct ClaimReader
{
	swarm_claim_row_cb cb;
	void	   *arg;
} ClaimReader;

static void
read_claimed(HeapTuple tup, TupleDesc desc, void *arg)
{
	ClaimReader *cr = arg;
	SwarmClaimedRow row;

	row.request_id = DatumGetInt64(col(tup, desc, 1));
	row.agent_id = DatumGetInt64(col(tup, desc, 2));
	row.name = col_text(tup, desc, 3);
	row.persona = col_is_null(tup, desc, 4) ? NULL : DatumGetJsonbP(col(tup, desc, 4));
	row.vars = col_is_null(tup, desc, 5) ? NULL : DatumGetJsonbP(col(tup, desc, 5));
	row.shard = desc->natts >= 6 ? DatumGetInt64(col(tup, desc, 6)) : 0;
	cr->cb(&row, cr->arg);
}

/*
 * Read up to `limit` queued requests of job `job_id` with ids in (after,
 * upto], in id order, with their agents, calling cb for each; returns how
 * many.  Claiming writes nothing: a claimed request stays 'queued' on disk
 * until it ends, which is what makes crash recovery trivial.
 */
int
queue_claim(int64 job_id, int64 after, int64 upto, int limit, swarm_claim_row_cb cb, void *arg)
{
	Datum		args[4] = {Int64GetDatum(job_id), Int64GetDatum(after), Int32GetDatum(limit),
	Int64GetDatum(upto)};
	ClaimReader cr = {cb, arg};

	if (shards_distributed())
	{
		SPIPlanPtr	plan = shards_claim_plan();

		if (plan == NULL)
			return 0;			/* no shard here */
		return (int) read_plan_rows(plan, args, SPI_OK_SELECT, "the claim", read_claimed, &cr);
	}
	return (int) read_rows(&plan_claim, args, SPI_OK_SELECT, "the claim", read_claimed, &cr);
}

/* ---- storing results ---- */

typedef struct JobCounts
{
	int64		job_id;
	int64		ok;
	int64		bad;
	int64		pt;
	int64		ct;
	int64		batch;
} JobCounts;

typedef struct BatchCounts
{
	JobCounts  *jobs;
	int			njobs;
	bool		succeeded;		/* what the rows being read count as */
} BatchCounts;

static JobCounts *
counts_of(BatchCounts *bc, int64 job_id)
{
	for (int i = 0; i < bc->njobs; i++)
		if (bc->jobs[i].job_id == job_id)
			return &bc->jobs[i];
	memset(&bc->jobs[bc->njobs], 0, sizeof(JobCounts));
	bc->jobs[bc->njobs].job_id = job_id;
	return &bc->jobs[bc->njobs++];
}

/* A row (job_id, requests, prompt_tokens, completion_tokens) of steps 2 and 3. */
static void
read_counts(HeapTuple tup, TupleDesc desc, void *arg)
{
	BatchCounts *bc = arg;
	JobCounts  *jc = counts_of(bc, DatumGetInt64(col(tup, desc, 1)));
	int64		requests = DatumGetInt64(col(tup, desc, 2));

	if (bc->succeeded)
		jc->ok += requests;
	else
		jc->bad += requests;
	jc->pt += DatumGetInt64(col(tup, desc, 3));
	jc->ct += DatumGetInt64(col(tup, desc, 4));
}

static Datum
make_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

static void
read_locked_job(HeapTuple tup, TupleDesc desc, void *arg)
{
	BatchCounts *bc = arg;

	(void) counts_of(bc, DatumGetInt64(col(tup, desc, 1)));
}

/*
 * Step 1: lock the batch's job rows (jobs before requests).  A job row some
 * other transaction holds (a cancel not yet committed, say) is skipped, not
 * waited for: its results are marked deferred, to a later store.  Fills
 * bc with one entry per locked job, counting its results in `batch`; returns
 * how many results are deferred.
 */
static int
lock_jobs(SwarmResult *results, int n, BatchCounts *bc)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	int			nids = 0;
	int			ndeferred = 0;
	Datum		args[1];

	for (int i = 0; i < n; i++)
	{
		bool		seen = false;

		for (int k = 0; k < nids && !seen; k++)
			seen = DatumGetInt64(ids[k]) == results[i].job_id;
		if (!seen)
			ids[nids++] = Int64GetDatum(results[i].job_id);
	}
	args[0] = make_array(ids, NULL, nids, INT8OID);
	(void) read_rows(&plan_lock_jobs, args, SPI_OK_SELECT, "locking jobs", read_locked_job, bc);
	for (int i = 0; i < n; i++)
	{
		bool		locked = false;

		for (int k = 0; k < bc->njobs && !locked; k++)
			locked = bc->jobs[k].job_id == results[i].job_id;
		results[i].deferred = !locked;
		if (locked)
			counts_of(bc, results[i].job_id)->batch++;
		else
			ndeferred++;
	}
	return ndeferred;
}

/*
 * Whether result r is one this store takes: on one server every result not
 * deferred; distributed, those of one shard (`shard`).
 */
static inline bool
in_store(const SwarmResult *r, int64 shard)
{
	return !r->deferred && !r->moved && (shard == 0 || r->shard == shard);
}

/*
 * Step 2: answered requests become messages (those still queued only).
 * `plan`: NULL on one server, else the store of shard `shard`.
 */
static void
store_messages(SwarmResult *results, int n, BatchCounts *bc, SPIPlanPtr plan, int64 shard)
{
	Datum	   *cols[9];
	bool	   *nulls[9];
	Oid			types[9] = {INT8OID, TEXTOID, TEXTOID, INT4OID, INT4OID, FLOAT8OID, TEXTOID, INT4OID,
	INT8OID};
	Datum		args[9];
	int			k = 0;

	for (int c = 0; c < 9; c++)
	{
		cols[c] = palloc(sizeof(Datum) * n);
		nulls[c] = palloc0(sizeof(bool) * n);
	}
	for (int i = 0; i < n; i++)
	{
		SwarmResult *r = &results[i];

		if (!r->ok || !in_store(r, shard))
			continue;
		cols[0][k] = Int64GetDatum(r->request_id);
		cols[1][k] = text_or_null(r->content, &nulls[1][k]);
		cols[2][k] = text_or_null(r->model, &nulls[2][k]);
		cols[3][k] = Int32GetDatum(r->prompt_tokens);
		nulls[3][k] = r->prompt_tokens < 0;
		cols[4][k] = Int32GetDatum(r->completion_tokens);
		nulls[4][k] = r->completion_tokens < 0;
		cols[5][k] = Float8GetDatum(r->latency_ms);
		cols[6][k] = text_or_null(r->finish_reason, &nulls[6][k]);
		cols[7][k] = Int32GetDatum(r->attempts);
		cols[8][k] = Int64GetDatum(r->agent_id);
		k++;
	}
	if (k == 0)
		return;
	for (int c = 0; c < 9; c++)
		args[c] = make_array(cols[c], nulls[c], k, types[c]);
	bc->succeeded = true;
	if (plan == NULL)
		plan = saved_plan(&plan_store_ok);	/* (reads $1 to $8) */
	(void) read_plan_rows(plan, args, SPI_OK_SELECT, "storing messages", read_counts, bc);
}

/* A request's key as a bytea datum. */
static Datum
key_datum(const uint8 *key)
{
	bytea	   *b = palloc(VARHDRSZ + SWARM_RESPONSE_KEY_LEN);

	SET_VARSIZE(b, VARHDRSZ + SWARM_RESPONSE_KEY_LEN);
	memcpy(VARDATA(b), key, SWARM_RESPONSE_KEY_LEN);
	return PointerGetDatum(b);
}

/*
 * The response store's statement `fmt` (shards.h) on one server (shard 0:
 * prepared here at first use, kept in *planp) or on a shard of this node
 * (shards.c prepared it; NULL when the swarm's responses table is not
 * distributed, which swarm._create_job() refuses to use).
 */
static SPIPlanPtr
responses_plan(SPIPlanPtr *planp, const char *fmt, int nargs, const Oid *types, int64 shard,
			   SPIPlanPtr (*shard_plan) (int64))
{
	char	   *sql;

	if (shard != 0)
	{
		SPIPlanPtr	plan = shard_plan(shard);

		if (plan == NULL)
			elog(ERROR, "pg_swarm: swarm.responses is not distributed on shard " INT64_FORMAT, shard);
		return plan;
	}
	if (*planp != NULL)
		return *planp;
	sql = psprintf(fmt, "", "");
	*planp = SPI_prepare(sql, nargs, (Oid *) types);
	if (*planp == NULL || SPI_keepplan(*planp) != 0)
		elog(ERROR, "pg_swarm: could not prepare the response store's statement: %s",
			 SPI_result_code_string(SPI_result));
	pfree(sql);
	return *planp;
}

/*
 * Between steps 2 and 3: the answers of jobs that keep them go to
 * swarm.responses (of shard `shard` on a distributed swarm), as their
 * messages were stored.
 */
static void
keep_responses(SwarmResult *results, int n, int64 shard)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *agents = palloc(sizeof(Datum) * n);
	Datum	   *keys = palloc(sizeof(Datum) * n);
	Datum	   *endpoints = palloc(sizeof(Datum) * n);
	bool	   *nulls = palloc0(sizeof(bool) * n);
	Datum		args[4];
	int			k = 0;

	for (int i = 0; i < n; i++)
	{
		SwarmResult *r = &results[i];

		if (!r->ok || !r->keyed || r->job == NULL || !r->job->store_responses || !in_store(r, shard))
			continue;
		ids[k] = Int64GetDatum(r->request_id);
		agents[k] = Int64GetDatum(r->agent_id);
		keys[k] = key_datum(r->key);
		endpoints[k] = text_or_null(r->endpoint, &nulls[k]);
		k++;
	}
	if (k == 0)
		return;
	args[0] = make_array(ids, NULL, k, INT8OID);
	args[1] = make_array(agents, NULL, k, INT8OID);
	args[2] = make_array(keys, NULL, k, BYTEAOID);
	args[3] = make_array(endpoints, nulls, k, TEXTOID);
	(void) read_plan_rows(responses_plan(&plan_keep_responses, SWARM_KEEP_RESPONSES_SQL, 4,
										 swarm_keep_responses_types, shard, shards_keep_plan),
						  args, SPI_OK_INSERT, "keeping answers", NULL, NULL);
}

typedef struct LookupReader
{
	swarm_stored_answer_cb cb;
	void	   *arg;
	int		   *index;			/* a row's n - 1 -> the caller's index */
} LookupReader;

static void
read_stored_answer(HeapTuple tup, TupleDesc desc, void *arg)
{
	LookupReader *lr = arg;
	OpenAIResponse reply;

	memset(&reply, 0, sizeof(reply));
	reply.content = col_text(tup, desc, 2);
	reply.model = col_text(tup, desc, 3);
	reply.finish_reason = col_text(tup, desc, 4);
	reply.prompt_tokens = DatumGetInt32(col(tup, desc, 5));
	reply.completion_tokens = DatumGetInt32(col(tup, desc, 6));
	lr->cb(lr->index[DatumGetInt32(col(tup, desc, 1)) - 1], &reply, lr->arg);
}

/*
 * The stored answers of `n` requests of a replayed job of `owner` (only
 * theirs: another user's answers are never replayed to them): cb(i, reply)
 * for each of reqs[i] that has one, in no particular order.  One statement
 * on one server; on a distributed swarm one per shard of this node, each on
 * the shard of swarm.responses co-located with the requests'.
 */
void
queue_lookup_responses(const char *owner, SwarmRequest **reqs, int n,
					   swarm_stored_answer_cb cb, void *arg)
{
	Datum	   *agents = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *keys = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *done = palloc0(sizeof(bool) * Max(n, 1));
	Datum		args[3];
	LookupReader lr = {cb, arg, palloc(sizeof(int) * Max(n, 1))};

	args[2] = DirectFunctionCall1(namein, CStringGetDatum(owner));
	for (int first = 0; first < n; first++)
	{
		int64		shard = reqs[first]->shard;
		int			k = 0;

		if (done[first])
			continue;
		for (int i = first; i < n; i++)
			if (!done[i] && reqs[i]->shard == shard)
			{
				done[i] = true;
				agents[k] = Int64GetDatum(reqs[i]->agent_id);
				keys[k] = key_datum(reqs[i]->key);
				lr.index[k++] = i;
			}
		args[0] = make_array(agents, NULL, k, INT8OID);
		args[1] = make_array(keys, NULL, k, BYTEAOID);
		(void) read_plan_rows(responses_plan(&plan_lookup_responses, SWARM_LOOKUP_RESPONSES_SQL, 3,
											 swarm_lookup_responses_types, shard, shards_lookup_plan),
							  args, SPI_OK_SELECT, "reading stored answers", read_stored_answer, &lr);
	}
}

/* Step 3: failures stay in the queue, marked (those still queued only). */
static void
store_failures(SwarmResult *results, int n, BatchCounts *bc, SPIPlanPtr plan, int64 shard)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *attempts = palloc(sizeof(Datum) * n);
	Datum	   *errors = palloc(sizeof(Datum) * n);
	Datum	   *agents = palloc(sizeof(Datum) * n);
	Datum		args[4];
	int			k = 0;

	for (int i = 0; i < n; i++)
	{
		SwarmResult *r = &results[i];

		if (r->ok || !in_store(r, shard))
			continue;
		agents[k] = Int64GetDatum(r->agent_id);
		ids[k] = Int64GetDatum(r->request_id);
		attempts[k] = Int32GetDatum(r->attempts);
		errors[k] = CStringGetTextDatum(r->error ? r->error : "unknown error");
		k++;
	}
	if (k == 0)
		return;
	args[0] = make_array(ids, NULL, k, INT8OID);
	args[1] = make_array(attempts, NULL, k, INT4OID);
	args[2] = make_array(errors, NULL, k, TEXTOID);
	args[3] = make_array(agents, NULL, k, INT8OID);
	bc->succeeded = false;
	if (plan == NULL)
		plan = saved_plan(&plan_store_failed);	/* (reads $1 to $3) */
	(void) read_plan_rows(plan, args, SPI_OK_SELECT, "storing failures", read_counts, bc);
}

/*
 * Step 4: enqueue what follows from the batch: swarm._advance() with its
 * answered and failed requests of jobs that advance; `advanced` hears of
 * each job that got new requests.
 */
static void
advance_jobs(SwarmResult *results, int n, swarm_advanced_cb advanced)
{
	Datum	   *answered = palloc(sizeof(Datum) * n);
	Datum	   *failed = palloc(sizeof(Datum) * n);
	Datum	   *job_ids = palloc(sizeof(Datum) * n);
	int			nanswered = 0;
	int			nfailed = 0;
	int			njobs = 0;
	Datum		args[3];
	bool		isnull;
	Datum		jobs;

	for (int i = 0; i < n; i++)
	{
		if (!results[i].advances || results[i].deferred)
			continue;
		if (njobs == 0 || DatumGetInt64(job_ids[njobs - 1]) != results[i].job_id)
			job_ids[njobs++] = Int64GetDatum(results[i].job_id);	/* repeats are harmless */
		if (results[i].ok)
			answered[nanswered++] = Int64GetDatum(results[i].request_id);
		else
			failed[nfailed++] = Int64GetDatum(results[i].request_id);
	}
	if (nanswered + nfailed == 0)
		return;
	args[0] = make_array(answered, NULL, nanswered, INT8OID);
	args[1] = make_array(failed, NULL, nfailed, INT8OID);
	args[2] = make_array(job_ids, NULL, njobs, INT8OID);
	if (read_rows(&plan_advance, args, SPI_OK_SELECT, "advancing interactions", NULL, NULL) != 1)
		elog(ERROR, "pg_swarm: swarm._advance() returned no row");
	jobs = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull && advanced != NULL)
	{
		Datum	   *ids;
		bool	   *nulls;
		int			nids;

		deconstruct_array(DatumGetArrayTypeP(jobs), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
						  &ids, &nulls, &nids);
		for (int i = 0; i < nids; i++)
			if (!nulls[i])
				advanced(DatumGetInt64(ids[i]));
	}
}

/* Step 5: the jobs' counters, their completion, and NOTIFY on their channels. */
static void
update_jobs(const BatchCounts *bc)
{
	Datum	   *cols[6];
	Datum		args[6];

	for (int c = 0; c < 6; c++)
		cols[c] = palloc(sizeof(Datum) * bc->njobs);
	for (int i = 0; i < bc->njobs; i++)
	{
		cols[0][i] = Int64GetDatum(bc->jobs[i].job_id);
		cols[1][i] = Int64GetDatum(bc->jobs[i].ok);
		cols[2][i] = Int64GetDatum(bc->jobs[i].bad);
		cols[3][i] = Int64GetDatum(bc->jobs[i].pt);
		cols[4][i] = Int64GetDatum(bc->jobs[i].ct);
		cols[5][i] = Int64GetDatum(bc->jobs[i].batch);
	}
	for (int c = 0; c < 6; c++)
		args[c] = make_array(cols[c], NULL, bc->njobs, INT8OID);
	(void) read_rows(&plan_update_jobs, args, SPI_OK_UPDATE_RETURNING, "updating jobs", NULL, NULL);
}

/* The request ids a plan returned (one bigint column), to be searched. */
static void
read_id(HeapTuple tup, TupleDesc desc, void *arg)
{
	List	  **ids = arg;

	*ids = lappend(*ids, (void *) (intptr_t) DatumGetInt64(col(tup, desc, 1)));
}

static bool
listed(List *ids, int64 id)
{
	ListCell   *lc;

	foreach(lc, ids)
		if ((int64) (intptr_t) lfirst(lc) == id)
			return true;
	return false;
}

/*
 * Distributed: take the row locks of the results of one shard, skipping rows
 * another transaction holds.  That other transaction is a cancel() on the
 * coordinator, marking the job's rows shard after shard: this store may hold
 * rows of another shard that it waits for, so waiting for it here would
 * close a distributed deadlock (0.6.0 waited, and Citus cancelled the
 * cancel).  Results whose row is held are deferred to the next store (by
 * then cancelled, or still queued if the cancel rolled back); those whose
 * row is gone are left to the store, which passes over them.
 */
static void
hold_shard_rows(SwarmResult *results, int n, int64 shard)
{
	Datum	   *agents = palloc(sizeof(Datum) * n);
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum		args[2];
	List	   *held = NIL;
	List	   *there = NIL;
	int			k = 0;
	int			missing = 0;

	for (int i = 0; i < n; i++)
		if (in_store(&results[i], shard))
		{
			agents[k] = Int64GetDatum(results[i].agent_id);
			ids[k] = Int64GetDatum(results[i].request_id);
			k++;
		}
	if (k == 0)
		return;
	args[0] = make_array(agents, NULL, k, INT8OID);
	args[1] = make_array(ids, NULL, k, INT8OID);
	(void) read_plan_rows(shards_hold_plan(shard), args, SPI_OK_SELECT, "locking the rows to store",
						  read_id, &held);
	if (list_length(held) == k)
		return;
	k = 0;
	for (int i = 0; i < n; i++)
		if (in_store(&results[i], shard) && !listed(held, results[i].request_id))
		{
			agents[k] = Int64GetDatum(results[i].agent_id);
			ids[k] = Int64GetDatum(results[i].request_id);
			k++;
		}
	args[0] = make_array(agents, NULL, k, INT8OID);
	args[1] = make_array(ids, NULL, k, INT8OID);
	(void) read_plan_rows(shards_still_there_plan(shard), args, SPI_OK_SELECT,
						  "reading the rows held elsewhere", read_id, &there);
	for (int i = 0; i < n; i++)
		if (in_store(&results[i], shard) && listed(there, results[i].request_id) &&
			!listed(held, results[i].request_id))
		{
			results[i].deferred = true;
			missing++;
		}
	if (missing > 0)
		ereport(DEBUG1,
				(errmsg_internal("pg_swarm worker: %d results of shard " INT64_FORMAT " deferred: their rows are held by another transaction",
								 missing, shard)));
}

/*
 * Distributed (shards.c): each shard's results in its own statements, on
 * this node's shards only, under the shard's metadata lock; the counts go to
 * this node's swarm.job_node_progress, which the coordinator sums.  No job
 * row is locked or written here (swarm.jobs is a table on every node, a
 * write to it a commit on all of them): a cancel marks the requests, and
 * steps 2 and 3 take only those still queued, after taking their rows
 * without waiting for a cancel that holds some (hold_shard_rows()); the
 * answers of jobs that keep them go to the shard of swarm.responses
 * co-located with the requests'.  Nothing advances here: the
 * coordinator enqueues the next turns of conversations (swarm._conduct()).
 */
static void
store_on_shards(SwarmResult *results, int n, BatchCounts *bc)
{
	Datum	   *cols[5];
	Datum		args[5];

	for (int i = 0; i < n; i++)
	{
		int64		shard = results[i].shard;
		bool		done = false;

		for (int k = 0; k < i && !done; k++)
			done = results[k].shard == shard;
		if (done)
			continue;
		if (!shards_lock(shard))
		{
			int			moved = 0;

			for (int k = i; k < n; k++)
				if (results[k].shard == shard && !results[k].deferred)
				{
					results[k].moved = true;
					moved++;
				}
			ereport(LOG,
					(errmsg("pg_swarm worker: shard " INT64_FORMAT " of swarm.requests moved off this node; %d results of it are not stored here",
							shard, moved),
					 errdetail("Their requests stay queued on the shard's new node, whose worker sends them.")));
			continue;
		}
		hold_shard_rows(results, n, shard);
		store_messages(results, n, bc, shards_store_ok_plan(shard), shard);
		keep_responses(results, n, shard);
		store_failures(results, n, bc, shards_store_failed_plan(shard), shard);
	}
	if (bc->njobs == 0)
		return;
	for (int c = 0; c < 5; c++)
		cols[c] = palloc(sizeof(Datum) * bc->njobs);
	for (int i = 0; i < bc->njobs; i++)
	{
		cols[0][i] = Int64GetDatum(bc->jobs[i].job_id);
		cols[1][i] = Int64GetDatum(bc->jobs[i].ok);
		cols[2][i] = Int64GetDatum(bc->jobs[i].bad);
		cols[3][i] = Int64GetDatum(bc->jobs[i].pt);
		cols[4][i] = Int64GetDatum(bc->jobs[i].ct);
	}
	for (int c = 0; c < 5; c++)
		args[c] = make_array(cols[c], NULL, bc->njobs, INT8OID);
	(void) read_plan_rows(shards_progress_plan(), args, SPI_OK_INSERT, "counting progress", NULL, NULL);
}

/*
 * Store a batch of ended requests (see the file header for the five steps).
 * `advanced` (may be NULL) hears of each job the batch gave new requests.
 * Results of a job whose row another transaction holds are not stored but
 * marked `deferred`; returns how many.  May ereport; the caller runs it in a
 * transaction it can abort.
 */
int
queue_store_results(SwarmResult *results, int n, swarm_advanced_cb advanced)
{
	BatchCounts bc = {palloc(sizeof(JobCounts) * Max(n, 1)), 0, false};
	int			ndeferred;

	if (shards_distributed())
	{
		store_on_shards(results, n, &bc);
		ndeferred = 0;
		for (int i = 0; i < n; i++)
			ndeferred += results[i].deferred;
		return ndeferred;
	}
	ndeferred = lock_jobs(results, n, &bc);
	if (bc.njobs == 0)
		return ndeferred;
	store_messages(results, n, &bc, NULL, 0);
	keep_responses(results, n, 0);
	store_failures(results, n, &bc, NULL, 0);
	advance_jobs(results, n, advanced);
	update_jobs(&bc);
	return ndeferred;
}
