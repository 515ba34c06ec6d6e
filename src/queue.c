/*-------------------------------------------------------------------------
 *
 * queue.c
 *		The worker's only SQL: scan jobs and endpoints, claim queued requests,
 *		store results and announce them.  Every function here runs inside a
 *		transaction the caller (worker.c) opened, with SPI connected; it runs
 *		statements and hands back rows, and decides nothing about them (which
 *		ids to claim is jobs.c's business, what a row becomes the caller's).
 *
 * Plans are prepared once per worker and kept (SPI_keepplan); the plan cache
 * re-plans them if the tables are re-created.
 *
 * Storing a batch of results is one transaction of four statements:
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
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "fmgr.h"

#include "queue.h"

static SPIPlanPtr plan_scan_jobs = NULL;
static SPIPlanPtr plan_mark_running = NULL;
static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_lock_jobs = NULL;
static SPIPlanPtr plan_store_ok = NULL;
static SPIPlanPtr plan_store_failed = NULL;
static SPIPlanPtr plan_update_jobs = NULL;
static SPIPlanPtr plan_advance = NULL;

static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "pg_swarm: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

static void
prepare_plans(void)
{
	Oid			int8_t[] = {INT8OID, INT8OID, INT4OID, INT8OID};
	Oid			ok_t[] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
	INT4ARRAYOID, FLOAT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID};
	Oid			failed_t[] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID};
	Oid			jobs_t[] = {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID, INT8ARRAYOID};
	Oid			advance_t[] = {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID};

	if (plan_scan_jobs != NULL)
		return;

	plan_scan_jobs = prepare(
							 "SELECT id, status = 'queued', model, max_tokens, context, "
							 "       system_template, user_template, endpoints, created_at, kind, "
							 "       coalesce((extract(epoch FROM request_deadline) * 1000)::bigint, 0) "
							 "FROM swarm.jobs WHERE status IN ('queued', 'running') ORDER BY id",
							 0, NULL);

	plan_mark_running = prepare(
								"UPDATE swarm.jobs SET status = 'running', "
								"       started_at = coalesce(started_at, now()) "
								"WHERE id = (SELECT id FROM swarm.jobs WHERE id = $1 AND status = 'queued' "
								"            FOR UPDATE SKIP LOCKED)",
								1, int8_t);

	plan_claim = prepare(
						 "SELECT r.id, r.agent_id, a.name, a.persona, r.vars "
						 "FROM swarm.requests r LEFT JOIN swarm.agents a ON a.id = r.agent_id "
						 "WHERE r.job_id = $1 AND r.id > $2 AND r.id <= $4 AND r.status = 'queued' "
						 "ORDER BY r.id LIMIT $3",
						 4, int8_t);

	plan_lock_jobs = prepare(
							 "SELECT id FROM swarm.jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED",
							 1, jobs_t);

	plan_store_ok = prepare(
							"WITH input AS ("
							"  SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) "
							"    AS t(request_id, content, model, prompt_tokens, completion_tokens, "
							"         latency_ms, finish_reason, attempts)), "
							"answered AS ("
							"  DELETE FROM swarm.requests r "
							"  WHERE r.id = ANY($1) AND r.status NOT IN ('failed', 'cancelled') "
							"  RETURNING r.id, r.job_id, r.agent_id, r.to_agent_id, r.conversation_id, "
							"            r.turn, r.reply_to, r.seen), "
							"stored AS ("
							"  INSERT INTO swarm.messages (job_id, request_id, agent_id, content, model, "
							"         prompt_tokens, completion_tokens, latency_ms, finish_reason, attempts, "
							"         to_agent_id, conversation_id, turn, reply_to, seen) "
							"  SELECT a.job_id, a.id, a.agent_id, i.content, i.model, i.prompt_tokens, "
							"         i.completion_tokens, i.latency_ms, i.finish_reason, i.attempts, "
							"         a.to_agent_id, a.conversation_id, a.turn, a.reply_to, a.seen "
							"  FROM answered a JOIN input i ON i.request_id = a.id "
							"  ORDER BY a.id "
							"  RETURNING job_id, prompt_tokens, completion_tokens) "
							"SELECT job_id, count(*), coalesce(sum(prompt_tokens), 0), "
							"       coalesce(sum(completion_tokens), 0) "
							"FROM stored GROUP BY job_id",
							8, ok_t);

	plan_store_failed = prepare(
								"WITH input AS ("
								"  SELECT * FROM unnest($1, $2, $3) AS t(request_id, attempts, error)), "
								"marked AS ("
								"  UPDATE swarm.requests r SET status = 'failed', attempts = i.attempts, "
								"         last_error = i.error, finished_at = now() "
								"  FROM input i "
								"  WHERE r.id = ANY($1) AND r.id = i.request_id "
								"    AND r.status NOT IN ('failed', 'cancelled') "
								"  RETURNING r.job_id) "
								"SELECT job_id, count(*), 0::bigint, 0::bigint FROM marked GROUP BY job_id",
								3, failed_t);

	plan_update_jobs = prepare(
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
							   "RETURNING pg_notify(j.channel, swarm._progress_payload(j, c.batch))",
							   6, jobs_t);

	plan_advance = prepare("SELECT swarm._advance($1, $2, $3)", 3, advance_t);
}

static char *
get_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

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
	version = get_text(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
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
	int			rc = SPI_execute("UPDATE swarm.jobs SET status = 'completed', "
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


void
queue_scan_jobs(swarm_job_row_cb cb, void *arg)
{
	int			rc;
	SPITupleTable *jobs;
	uint64		njobs;

	prepare_plans();
	/* read_only = false: a fresh snapshot that sees this tick's own stores */
	rc = SPI_execute_plan(plan_scan_jobs, NULL, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_swarm: job scan failed: %s", SPI_result_code_string(rc));

	/* cb runs SQL of its own, which resets SPI_tuptable and SPI_processed */
	jobs = SPI_tuptable;
	njobs = SPI_processed;
	for (uint64 i = 0; i < njobs; i++)
	{
		HeapTuple	tup = jobs->vals[i];
		TupleDesc	desc = jobs->tupdesc;
		SwarmJobRow row;
		bool		isnull;

		row.id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		row.queued = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		row.model = get_text(tup, desc, 3);
		row.max_tokens = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		row.context = get_text(tup, desc, 5);
		row.system_template = get_text(tup, desc, 6);
		row.user_template = get_text(tup, desc, 7);
		row.created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 9, &isnull));
		row.kind = get_text(tup, desc, 10);
		row.request_deadline_ms = DatumGetInt64(SPI_getbinval(tup, desc, 11, &isnull));
		row.endpoints = NULL;
		row.nendpoints = 0;
		{
			Datum		arr = SPI_getbinval(tup, desc, 8, &isnull);

			if (!isnull)
			{
				Datum	   *elems;
				bool	   *enulls;
				int			nelems;

				deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT,
								  &elems, &enulls, &nelems);
				row.endpoints = palloc(sizeof(char *) * Max(nelems, 1));
				for (int k = 0; k < nelems; k++)
					if (!enulls[k])
						row.endpoints[row.nendpoints++] = TextDatumGetCString(elems[k]);
			}
		}
		cb(&row, arg);
	}
}

/* Every row of swarm.endpoints, with its key. */
void
queue_scan_endpoints(swarm_endpoint_row_cb cb, void *arg)
{
	int			rc = SPI_execute("SELECT e.name, e.base_url, e.model, k.api_key, e.max_in_flight, "
								 "       coalesce(e.requests_per_minute, 0), coalesce(e.tokens_per_minute, 0), "
								 "       coalesce(e.timeout_ms, 0), e.updated_at "
								 "FROM swarm.endpoints e LEFT JOIN swarm._endpoint_keys k ON k.endpoint = e.name "
								 "ORDER BY e.name",
								 true, 0);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_swarm: endpoint scan failed: %s", SPI_result_code_string(rc));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		SwarmEndpointRow row;
		bool		isnull;

		row.name = get_text(tup, desc, 1);
		row.base_url = get_text(tup, desc, 2);
		row.model = get_text(tup, desc, 3);
		row.api_key = get_text(tup, desc, 4);
		row.max_in_flight = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		row.requests_per_minute = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		row.tokens_per_minute = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
		row.timeout_ms = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
		row.updated_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 9, &isnull));
		cb(&row, arg);
		if (row.api_key)
			explicit_bzero((char *) row.api_key, strlen(row.api_key));
	}
}

void
queue_mark_running(int64 job_id)
{
	Datum		args[1] = {Int64GetDatum(job_id)};
	int			rc = SPI_execute_plan(plan_mark_running, args, NULL, false, 0);

	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "pg_swarm: marking job running failed: %s", SPI_result_code_string(rc));
}

/*
 * The last id of the requests an interact/simulate job has queued now: where
 * its follow-ups begin (see SwarmJob).  0 when none is queued.
 */
int64
queue_last_queued_id(int64 job_id)
{
	Datum		arg = Int64GetDatum(job_id);
	Oid			argtype = INT8OID;
	bool		isnull;
	Datum		last;
	int			rc;

	rc = SPI_execute_with_args("SELECT max(id) FROM swarm.requests WHERE job_id = $1 AND status = 'queued'",
							   1, &argtype, &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_swarm: reading a job's queue failed: %s", SPI_result_code_string(rc));
	last = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(last);
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
	SPITupleTable *rows;
	uint64		n;
	int			rc;

	prepare_plans();
	/* a fresh snapshot: requests answered earlier in this tick must not reappear */
	rc = SPI_execute_plan(plan_claim, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_swarm: claim failed: %s", SPI_result_code_string(rc));

	rows = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = rows->vals[i];
		TupleDesc	desc = rows->tupdesc;
		SwarmClaimedRow row;
		bool		isnull;
		Datum		d;

		row.request_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		row.agent_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		row.name = get_text(tup, desc, 3);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		row.persona = isnull ? NULL : DatumGetJsonbP(d);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		row.vars = isnull ? NULL : DatumGetJsonbP(d);
		cb(&row, arg);
	}
	return (int) n;
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

static JobCounts *
find_counts(JobCounts *counts, int *ncounts, int64 job_id)
{
	for (int i = 0; i < *ncounts; i++)
		if (counts[i].job_id == job_id)
			return &counts[i];
	memset(&counts[*ncounts], 0, sizeof(JobCounts));
	counts[*ncounts].job_id = job_id;
	return &counts[(*ncounts)++];
}

/*
 * Add the rows of the last SPI result, (job_id, requests, prompt_tokens,
 * completion_tokens), to the per-job counts: as successes or as failures.
 */
static void
add_job_counts(JobCounts *counts, int *ncounts, bool succeeded)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		JobCounts  *jc = find_counts(counts, ncounts,
									 DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)));
		int64		requests = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));

		if (succeeded)
			jc->ok += requests;
		else
			jc->bad += requests;
		jc->pt += DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		jc->ct += DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
	}
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

/*
 * Enqueue what follows from a stored batch (step 4): swarm._advance() with the
 * batch's answered and failed requests of interact/simulate jobs; `advanced`
 * hears of each job that got new requests.
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
	int			rc;

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
	rc = SPI_execute_plan(plan_advance, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_swarm: advancing interactions failed: %s", SPI_result_code_string(rc));
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

/*
 * Store a batch of ended requests (see the file header for the statements).
 * `advanced` (may be NULL) hears of each job the batch gave new requests.
 * Results of a job whose row another transaction holds are not stored but
 * marked `deferred`; returns how many.  May ereport; the caller runs it in a
 * transaction it can abort.
 */
int
queue_store_results(SwarmResult *results, int n, swarm_advanced_cb advanced)
{
	JobCounts  *counts = palloc(sizeof(JobCounts) * n);
	int			ncounts = 0;
	int			nok = 0;
	int			nbad = 0;
	int			ndeferred = 0;
	int			rc;

	prepare_plans();

	/*
	 * 1. jobs before requests.  A job row some other transaction holds (a
	 * cancel not yet committed, say) is skipped, not waited for: its results
	 * are deferred to a later store, and the rest go now.
	 */
	{
		Datum	   *ids = palloc(sizeof(Datum) * n);
		int			nids = 0;
		Datum		args[1];
		int64	   *locked;
		uint64		nlocked;

		for (int i = 0; i < n; i++)
		{
			results[i].deferred = false;
			if (find_counts(counts, &ncounts, results[i].job_id)->batch++ == 0)
				ids[nids++] = Int64GetDatum(results[i].job_id);
		}
		args[0] = make_array(ids, NULL, nids, INT8OID);
		rc = SPI_execute_plan(plan_lock_jobs, args, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "pg_swarm: locking jobs failed: %s", SPI_result_code_string(rc));
		nlocked = SPI_processed;
		locked = palloc(sizeof(int64) * Max(nlocked, 1));
		for (uint64 k = 0; k < nlocked; k++)
		{
			bool		isnull;

			locked[k] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1, &isnull));
		}
		ncounts = 0;
		for (int i = 0; i < n; i++)
		{
			bool		is_locked = false;

			for (uint64 k = 0; k < nlocked && !is_locked; k++)
				is_locked = (locked[k] == results[i].job_id);
			if (!is_locked)
			{
				results[i].deferred = true;
				ndeferred++;
				continue;
			}
			find_counts(counts, &ncounts, results[i].job_id)->batch++;
			if (results[i].ok)
				nok++;
			else
				nbad++;
		}
		if (ncounts == 0)
			return ndeferred;
	}

	/* 2. answered requests become messages */
	if (nok > 0)
	{
		Datum	   *cols[8];
		bool	   *nulls[8];
		Oid			types[8] = {INT8OID, TEXTOID, TEXTOID, INT4OID, INT4OID, FLOAT8OID, TEXTOID, INT4OID};
		Datum		args[8];
		int			k = 0;

		for (int c = 0; c < 8; c++)
		{
			cols[c] = palloc(sizeof(Datum) * nok);
			nulls[c] = palloc0(sizeof(bool) * nok);
		}
		for (int i = 0; i < n; i++)
		{
			SwarmResult *r = &results[i];

			if (!r->ok || r->deferred)
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
			k++;
		}
		for (int c = 0; c < 8; c++)
			args[c] = make_array(cols[c], nulls[c], nok, types[c]);
		rc = SPI_execute_plan(plan_store_ok, args, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "pg_swarm: storing messages failed: %s", SPI_result_code_string(rc));
		add_job_counts(counts, &ncounts, true);
	}

	/* 3. failures stay in the queue, marked */
	if (nbad > 0)
	{
		Datum	   *ids = palloc(sizeof(Datum) * nbad);
		Datum	   *attempts = palloc(sizeof(Datum) * nbad);
		Datum	   *errors = palloc(sizeof(Datum) * nbad);
		Datum		args[3];
		int			k = 0;

		for (int i = 0; i < n; i++)
		{
			SwarmResult *r = &results[i];

			if (r->ok || r->deferred)
				continue;
			ids[k] = Int64GetDatum(r->request_id);
			attempts[k] = Int32GetDatum(r->attempts);
			errors[k] = CStringGetTextDatum(r->error ? r->error : "unknown error");
			k++;
		}
		args[0] = make_array(ids, NULL, nbad, INT8OID);
		args[1] = make_array(attempts, NULL, nbad, INT4OID);
		args[2] = make_array(errors, NULL, nbad, TEXTOID);
		rc = SPI_execute_plan(plan_store_failed, args, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "pg_swarm: storing failures failed: %s", SPI_result_code_string(rc));
		add_job_counts(counts, &ncounts, false);
	}

	/* 4. follow-ups of interactions */
	advance_jobs(results, n, advanced);

	/* 5. job counters, completion, NOTIFY */
	{
		Datum	   *cols[6];
		Datum		args[6];

		for (int c = 0; c < 6; c++)
			cols[c] = palloc(sizeof(Datum) * ncounts);
		for (int i = 0; i < ncounts; i++)
		{
			cols[0][i] = Int64GetDatum(counts[i].job_id);
			cols[1][i] = Int64GetDatum(counts[i].ok);
			cols[2][i] = Int64GetDatum(counts[i].bad);
			cols[3][i] = Int64GetDatum(counts[i].pt);
			cols[4][i] = Int64GetDatum(counts[i].ct);
			cols[5][i] = Int64GetDatum(counts[i].batch);
		}
		for (int c = 0; c < 6; c++)
			args[c] = make_array(cols[c], NULL, ncounts, INT8OID);
		rc = SPI_execute_plan(plan_update_jobs, args, NULL, false, 0);
		if (rc != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "pg_swarm: updating jobs failed: %s", SPI_result_code_string(rc));
	}
	return ndeferred;
}

/* ---- for tests ---- */

/*
 * swarm_store_results(request_ids bigint[], contents text[]): store answers
 * for the given requests through the very code the worker uses, in the
 * caller's transaction; returns how many requests were still queued and
 * became messages.
 *
 * A test hook: the extension's SQL declares no function for it, so no role
 * can reach it.  The isolation tests declare one themselves (as superuser,
 * test/specs/store_vs_cancel.spec) to race the worker's store against
 * swarm.cancel().
 */
PG_FUNCTION_INFO_V1(swarm_store_results);
Datum
swarm_store_results(PG_FUNCTION_ARGS)
{
	ArrayType  *ids = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *contents = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *id_datums;
	Datum	   *content_datums;
	bool	   *content_nulls;
	int			n;
	int			ncontents;
	SwarmResult *results;
	int64		before;
	int64		after;
	bool		isnull;

	deconstruct_array(ids, INT8OID, 8, true, TYPALIGN_DOUBLE, &id_datums, NULL, &n);
	deconstruct_array(contents, TEXTOID, -1, false, TYPALIGN_INT, &content_datums,
					  &content_nulls, &ncontents);
	if (n != ncontents)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("request_ids and contents must have the same length")));

	SPI_connect();
	results = palloc0(sizeof(SwarmResult) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1] = {id_datums[i]};

		if (SPI_execute_with_args("SELECT job_id FROM swarm.requests WHERE id = $1",
								  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("request " INT64_FORMAT " does not exist", DatumGetInt64(id_datums[i]))));
		results[i].job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1, &isnull));
		results[i].request_id = DatumGetInt64(id_datums[i]);
		results[i].ok = true;
		results[i].advances = true;
		results[i].attempts = 1;
		results[i].content = content_nulls[i] ? NULL : TextDatumGetCString(content_datums[i]);
		results[i].model = "test";
		results[i].prompt_tokens = -1;
		results[i].completion_tokens = -1;
	}
	SPI_execute("SELECT count(*) FROM swarm.messages", false, 1);
	before = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (n > 0)
		queue_store_results(results, n, NULL);
	SPI_execute("SELECT count(*) FROM swarm.messages", false, 1);
	after = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_INT32((int32) (after - before));
}

