/*-------------------------------------------------------------------------
 *
 * pg_swarm.c
 *		Module entry point: GUCs, shared memory hooks, the registration of
 *		the worker and of the step builder.
 *
 * Loaded without shared_preload_libraries the SQL functions that need no
 * worker (agents, graphs, MessagePack) work; enqueueing refuses with a hint.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"

#include "stats.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
swarm_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	swarm_shared_request();
	stats_shmem_request();
}

static void
swarm_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	swarm_shared_startup();
	stats_shmem_startup();
}

static void
swarm_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_swarm");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "swarm_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_swarm worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_swarm worker");
	RegisterBackgroundWorker(&worker);

	/* builds simulations' next steps, beside the worker (step_builder.c) */
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "swarm_step_builder_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_swarm step builder");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_swarm step builder");
	RegisterBackgroundWorker(&worker);

	/* sends batch-mode jobs through Batch APIs, beside the worker (batcher.c) */
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "swarm_batcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_swarm batcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_swarm batcher");
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	swarm_config_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = swarm_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = swarm_shmem_startup;

	swarm_register_worker();
}
