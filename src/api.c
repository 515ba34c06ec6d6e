/*-------------------------------------------------------------------------
 *
 * api.c
 *		SQL-callable helpers that run in user backends, behind the plpgsql
 *		functions and views of the SQL API (src/sql/functions/10_api.sql).
 *
 * Waking the worker follows pg_net: enqueueing only marks the transaction,
 * and the worker's latch is set once at commit, never on abort, so a rolled
 * back generate() costs the worker nothing and a committed one starts within
 * milliseconds.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include "access/transam.h"
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"

static bool wake_at_commit = false;
static bool wake_builder_at_commit = false;
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
			if (wake_builder_at_commit)
				swarm_shared_wake_step_builder();
			wake_at_commit = false;
			wake_builder_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			wake_builder_at_commit = false;
			break;
		default:
			break;
	}
}

/* Raise *flag until this transaction ends: at commit, its latch is set. */
static void
at_commit(bool *flag)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(swarm_xact_callback, NULL);
		xact_callback_registered = true;
	}
	*flag = true;
}

/* Refuse to enqueue where no worker will ever run the job. */
static void
check_worker_serves_us(void)
{
	char	   *dbname;

	swarm_shared_require();
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
	at_commit(&wake_at_commit);
	PG_RETURN_VOID();
}

/*
 * The worker stored results of a simulation (swarm._advance()): at commit,
 * wake the step builder, which builds the next step once one has ended.
 */
PG_FUNCTION_INFO_V1(swarm_wake_step_builder);
Datum
swarm_wake_step_builder(PG_FUNCTION_ARGS)
{
	if (swarm_shared_available())
		at_commit(&wake_builder_at_commit);
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
