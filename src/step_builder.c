/*-------------------------------------------------------------------------
 *
 * step_builder.c
 *		The step builder: a background worker of its own, beside the
 *		pg_swarm worker, that builds simulations' next steps.
 *
 * A step of a simulation starts when every request of the step before has
 * ended, and building it (picking the active agents, their feeds from the
 * recommender, their prompts) is seconds of SQL at a million agents.  Done
 * inside the worker's store transaction, as before 0.6.0, those seconds
 * stalled every other job.  Here they run in another backend: the worker
 * only wakes this one (swarm._wake_step_builder(), at the commit of a batch
 * that stored simulation results), and this one runs
 * swarm._build_next_step() in its own transactions, one step each, until no
 * simulation has a step to build.  The function locks the job's row,
 * inserts the step's requests and wakes the worker at commit; the worker
 * claims them at its next job scan.  A crash between the two loses
 * nothing: the step's requests are committed with the step number, or
 * neither is, and the builder looks again every second whatever wakes it.
 *
 * A step of a simulation with actions larger than swarm.step_part_agents
 * is built in parts (swarm._build_step() draws its agents and builds the
 * first part; swarm._continue_step_build() the next, one transaction
 * each): the worker sends the first part's requests while the rest are
 * built, so a simulation waits for one part of a step, not for all of it.
 * The step has not ended while parts of it are still to be built; a crash
 * between two parts resumes at the next one (swarm.simulation_steps says
 * which), and the parts make the same requests as a whole step.
 *
 * It commits with synchronous_commit = off, as the worker does: a part is
 * claimable once committed, not once flushed.
 *
 * Errors: a step that cannot be built ends its own job, saying why (in
 * SQL); any other error (a lock held too long, say) is logged and the
 * builder tries again at its next round.
 *
 * It keeps the window of the simulations it builds from one step to the
 * next (feed_window.c), and lets it go after a minute without a step to
 * build.
 *
 * Once a minute it also expires the response store's answers older than
 * swarm.response_store_max_age (swarm._expire_responses(), 10,000 at a
 * time), another chore kept out of the worker's loop.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"
#include "feeds.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PGDLLEXPORT void swarm_step_builder_main(Datum main_arg);

/* Look again this often even when nothing wakes us (a missed wake, a crash). */
#define STEP_BUILDER_POLL_MS	1000
/* Steps built in one round before the latch is looked at again. */
#define STEP_BUILDER_ROUND		100
/* How often stored answers are expired. */
#define EXPIRY_INTERVAL_MS		(60 * 1000)
/* The window's kept steps are let go after this long without a step to build. */
#define WINDOW_IDLE_MS			(60 * 1000)

static void
step_builder_on_exit(int code, Datum arg)
{
	swarm_shared_set_step_builder(NULL);
}

/*
 * Is pg_swarm installed here, at the version this library is?  (The worker
 * says why it waits when it is not; the builder just waits.)  Needs SPI.
 */
static bool
extension_current(void)
{
	Oid			oid = get_extension_oid("pg_swarm", true);
	Datum		arg = ObjectIdGetDatum(oid);
	Oid			argtype = OIDOID;
	bool		isnull;
	Datum		v;

	if (!OidIsValid(oid))
		return false;
	if (SPI_execute_with_args("SELECT extversion FROM pg_catalog.pg_extension WHERE oid = $1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && strcmp(TextDatumGetCString(v), SWARM_VERSION) == 0;
}

/*
 * One transaction running `sql` (one row, one column) if pg_swarm is
 * installed at this library's version.  Returns true when it returned a
 * value that is not NULL.
 */
static bool
run_chore(const char *sql, const char *activity)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool built = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		if (extension_current() &&
			SPI_execute(sql, false, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;

			(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			built = !isnull;
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		/* log it and go on: the next round tries again */
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		built = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return built;
}

/*
 * One transaction: build the next part of a step built in parts, or else the
 * next step of one simulation whose step has ended.  Returns true when it
 * built something (there may be more).  A step's parts come first: the
 * worker is sending the step's first parts and waits for the rest.
 */
static bool
build_one_step(void)
{
	return run_chore("SELECT swarm._continue_step_build()", "pg_swarm: building a part of a simulation step") ||
		run_chore("SELECT swarm._build_next_step()", "pg_swarm: building a simulation step");
}

void
swarm_step_builder_main(Datum main_arg)
{
	TimestampTz next_expiry;
	TimestampTz last_built;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(swarm_database, NULL, 0);
	pgstat_report_appname("pg_swarm step builder");
	/* (a job row a cancel() holds may keep a step waiting up to 10 s) */
	swarm_pin_background_session("pg_swarm step builder", "10s");

	/*
	 * (an operating-system crash may forget the last parts or steps built,
	 * with their note in swarm.simulation_steps: they are built again; the
	 * worker's later commits that store their answers are written after
	 * them in the WAL, so none of those can outlive them)
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/* a step's window is read a step at a time, and kept (feed_window.c) */
	feeds_keep_window = true;

	swarm_shared_set_step_builder(MyLatch);
	on_proc_exit(step_builder_on_exit, 0);
	ereport(LOG, (errmsg("pg_swarm step builder started on database \"%s\"", swarm_database)));

	next_expiry = GetCurrentTimestamp();
	last_built = GetCurrentTimestamp();
	while (!ShutdownRequestPending)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 STEP_BUILDER_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		for (int i = 0; i < STEP_BUILDER_ROUND && !ShutdownRequestPending; i++)
		{
			if (!build_one_step())
				break;
			last_built = GetCurrentTimestamp();
		}
		/*
		 * (a simulation that ended leaves its window's steps: let them go
		 * once nothing was built for a minute; a step answered for longer
		 * than that only reads its whole window again)
		 */
		if (TimestampDifferenceExceeds(last_built, GetCurrentTimestamp(), WINDOW_IDLE_MS))
			feeds_forget_window();
		if (GetCurrentTimestamp() >= next_expiry)
		{
			(void) run_chore("SELECT swarm._expire_responses()", "pg_swarm: expiring stored answers");
			next_expiry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), EXPIRY_INTERVAL_MS);
		}
	}
	proc_exit(0);
}
