/*-------------------------------------------------------------------------
 *
 * api.c
 *		SQL-callable helpers that run in user backends, behind the plpgsql
 *		functions and views of the SQL API (src/sql/10_api.sql).
 *
 * Waking the worker follows pg_net: enqueueing only marks the transaction,
 * and the worker's latch is set once at commit, never on abort, so a rolled
 * back generate() costs the worker nothing and a committed one starts within
 * milliseconds.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/tuplestore.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "queue.h"

static bool wake_at_commit = false;
static bool xact_callback_registered = false;

static void
swarm_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				swarm_shared_wake_worker();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/* Refuse to enqueue where no worker will ever run the job. */
static void
check_worker_serves_us(void)
{
	char	   *dbname;

	if (!swarm_shared_available())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_swarm is not loaded through shared_preload_libraries"),
				 errdetail("Jobs are run by pg_swarm's background worker, which starts only when the library is preloaded."),
				 errhint("Add pg_swarm to shared_preload_libraries in postgresql.conf and restart the server.")));

	dbname = get_database_name(MyDatabaseId);
	if (dbname == NULL || strcmp(dbname, swarm_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_swarm's worker serves database \"%s\", not \"%s\"",
						swarm_database, dbname ? dbname : "?"),
				 errhint("Enqueue jobs in database \"%s\", or set swarm.database and restart the server.",
						 swarm_database)));
}

PG_FUNCTION_INFO_V1(swarm_check_worker);
Datum
swarm_check_worker(PG_FUNCTION_ARGS)
{
	check_worker_serves_us();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(swarm_wake_worker);
Datum
swarm_wake_worker(PG_FUNCTION_ARGS)
{
	check_worker_serves_us();
	if (!xact_callback_registered)
	{
		RegisterXactCallback(swarm_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(swarm_progress_generation);
Datum
swarm_progress_generation(PG_FUNCTION_ARGS)
{
	check_worker_serves_us();
	PG_RETURN_INT64((int64) swarm_shared_progress_generation());
}

PG_FUNCTION_INFO_V1(swarm_sleep_for_progress);
Datum
swarm_sleep_for_progress(PG_FUNCTION_ARGS)
{
	int64		seen = PG_GETARG_INT64(0);
	int32		timeout_ms = PG_GETARG_INT32(1);

	check_worker_serves_us();
	PG_RETURN_BOOL(swarm_shared_sleep_for_progress((uint64) seen, Max(timeout_ms, 0)));
}

PG_FUNCTION_INFO_V1(swarm_xid_is_current);
Datum
swarm_xid_is_current(PG_FUNCTION_ARGS)
{
	TransactionId xid = DatumGetTransactionId(PG_GETARG_DATUM(0));

	PG_RETURN_BOOL(TransactionIdIsCurrentTransactionId(xid));
}

/*
 * One row of the worker's counters for the swarm.stats view.  Columns are
 * listed in the SQL declaration of swarm._stats().
 */
PG_FUNCTION_INFO_V1(swarm_stats);
Datum
swarm_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[20];
	bool		nulls[20];
	SwarmCounters *c;
	TimestampTz started;
	TimestampTz now = GetCurrentTimestamp();
	int			pid;
	uint64		succeeded,
				failed,
				ended,
				lat_count;
	double		uptime_s;
	int			i = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!swarm_shared_available())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_swarm is not loaded through shared_preload_libraries"),
				 errhint("Add pg_swarm to shared_preload_libraries in postgresql.conf and restart the server.")));

	memset(nulls, 0, sizeof(nulls));
	c = swarm_counters();
	pid = swarm_shared_worker_pid(&started);
	succeeded = pg_atomic_read_u64(&c->succeeded);
	failed = pg_atomic_read_u64(&c->failed);
	ended = succeeded + failed;
	lat_count = pg_atomic_read_u64(&c->latency_count);
	uptime_s = pid != 0 ? (double) (now - started) / USECS_PER_SEC : 0;

	/* worker_pid */
	values[i] = Int32GetDatum(pid);
	nulls[i++] = (pid == 0);
	/* total_operations: requests ended */
	values[i++] = Int64GetDatum((int64) ended);
	values[i++] = Int64GetDatum((int64) succeeded);
	values[i++] = Int64GetDatum((int64) failed);
	/* success_rate (%) */
	values[i] = Float8GetDatum(ended ? 100.0 * succeeded / ended : 0);
	nulls[i++] = (ended == 0);
	/* avg_response_ms */
	values[i] = Float8GetDatum(lat_count ? pg_atomic_read_u64(&c->latency_sum_us) / 1000.0 / lat_count : 0);
	nulls[i++] = (lat_count == 0);
	values[i] = Float8GetDatum(swarm_stats_latency_percentile(0.50));
	nulls[i++] = (lat_count == 0);
	values[i] = Float8GetDatum(swarm_stats_latency_percentile(0.95));
	nulls[i++] = (lat_count == 0);
	values[i] = Float8GetDatum(swarm_stats_latency_percentile(0.99));
	nulls[i++] = (lat_count == 0);
	values[i++] = Int32GetDatum((int32) pg_atomic_read_u32(&c->in_flight));
	values[i++] = Int32GetDatum((int32) pg_atomic_read_u32(&c->peak_in_flight));
	/* ops_per_second: recent window; avg_ops_per_second: since start */
	values[i++] = Float8GetDatum(swarm_shared_recent_rate(now));
	values[i] = Float8GetDatum(uptime_s > 0 ? ended / uptime_s : 0);
	nulls[i++] = (uptime_s <= 0);
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->attempts));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->retries));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->http_errors));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->http_429));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->transport_errors));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->batches_committed));
	/* uptime */
	if (pid != 0)
		values[i] = IntervalPGetDatum(DatumGetIntervalP(DirectFunctionCall2(timestamp_mi,
																			TimestampTzGetDatum(now),
																			TimestampTzGetDatum(started))));
	nulls[i] = (pid == 0);
	i++;
	Assert(i == tupdesc->natts);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * swarm._store_results(request_ids bigint[], contents text[]): store answers
 * for the given requests through the very code the worker uses (queue.c), in
 * the caller's transaction.  Internal: it exists so that isolation tests can
 * race the worker's store against swarm.cancel().  Returns how many requests
 * were still queued and became messages.
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

/* Rows of swarm.endpoint_status: the worker's published endpoint status. */
PG_FUNCTION_INFO_V1(swarm_endpoint_status);
Datum
swarm_endpoint_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SwarmEndpointSlot *slots;
	int			n;

	if (!swarm_shared_available())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_swarm is not loaded through shared_preload_libraries"),
				 errhint("Add pg_swarm to shared_preload_libraries in postgresql.conf and restart the server.")));

	InitMaterializedSRF(fcinfo, 0);
	slots = palloc(sizeof(SwarmEndpointSlot) * SWARM_MAX_ENDPOINT_SLOTS);
	n = swarm_shared_read_endpoints(slots);
	for (int i = 0; i < n; i++)
	{
		SwarmEndpointSlot *e = &slots[i];
		Datum		values[15];
		bool		nulls[15];
		int			k = 0;

		memset(nulls, 0, sizeof(nulls));
		values[k++] = CStringGetTextDatum(e->name);
		values[k++] = CStringGetTextDatum(e->state);
		values[k] = TimestampTzGetDatum(e->state_until);
		nulls[k++] = (e->state_until == 0);
		values[k] = CStringGetTextDatum(e->reason);
		nulls[k++] = (e->reason[0] == '\0');
		values[k++] = Int32GetDatum(e->limit);
		values[k++] = Int32GetDatum(e->max_in_flight);
		values[k++] = Int32GetDatum(e->in_flight);
		values[k++] = Int64GetDatum((int64) e->requests);
		values[k++] = Int64GetDatum((int64) e->succeeded);
		values[k++] = Int64GetDatum((int64) e->rate_limited);
		values[k++] = Int64GetDatum((int64) e->errors);
		values[k++] = Int64GetDatum((int64) e->retries);
		values[k++] = Int64GetDatum((int64) e->breaker_opened);
		values[k++] = Int32GetDatum(e->requests_last_minute);
		values[k++] = Int64GetDatum(e->tokens_last_minute);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
