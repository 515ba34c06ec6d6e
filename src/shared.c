/*-------------------------------------------------------------------------
 *
 * shared.c
 *		pg_swarm's shared memory: where backends find the worker, and the
 *		"progress" signal swarm.wait() sleeps on.  (The counters behind
 *		swarm.stats are stats.c's.)
 *
 * Locking rules:
 *	 - worker_latch, worker_pid and worker_started, and the step builder's
 *	   latch, are read and written under the spinlock `mutex`.
 *	 - progress_generation is an atomic bumped by the worker after each committed
 *	   batch, followed by a broadcast on progress_cv.  A waiter reads the
 *	   generation before it looks at the tables and sleeps only while the
 *	   generation is unchanged, so no announcement can be missed.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"

typedef struct SwarmShared
{
	slock_t		mutex;
	Latch	   *worker_latch;
	int			worker_pid;
	TimestampTz worker_started;
	Latch	   *step_builder_latch;
	Latch	   *batcher_latch;
	pg_atomic_uint64 progress_generation;
	ConditionVariable progress_cv;
} SwarmShared;

static SwarmShared *swarm_shared = NULL;

void
swarm_shared_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SwarmShared)));
}

void
swarm_shared_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	swarm_shared = ShmemInitStruct("pg_swarm", sizeof(SwarmShared), &found);
	if (!found)
	{
		memset(swarm_shared, 0, sizeof(SwarmShared));
		SpinLockInit(&swarm_shared->mutex);
		pg_atomic_init_u64(&swarm_shared->progress_generation, 0);
		ConditionVariableInit(&swarm_shared->progress_cv);
	}
	LWLockRelease(AddinShmemInitLock);
}

bool
swarm_shared_available(void)
{
	return swarm_shared != NULL;
}

/* Refuse, with a hint, what needs the worker's shared memory when there is none. */
void
swarm_shared_require(void)
{
	if (swarm_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_swarm is not loaded through shared_preload_libraries"),
				 errdetail("Jobs are run by pg_swarm's background worker, which starts only when the library is preloaded."),
				 errhint("Add pg_swarm to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/* Called by the worker once it is ready to be woken (latch NULL on exit). */
void
swarm_shared_set_worker(Latch *latch, int pid, TimestampTz started)
{
	SpinLockAcquire(&swarm_shared->mutex);
	swarm_shared->worker_latch = latch;
	swarm_shared->worker_pid = pid;
	swarm_shared->worker_started = started;
	SpinLockRelease(&swarm_shared->mutex);
}

/* Set the latch *slot points at (under the mutex), if any is published. */
static void
wake(Latch **slot)
{
	Latch	   *latch;

	if (swarm_shared == NULL)
		return;
	SpinLockAcquire(&swarm_shared->mutex);
	latch = *slot;
	SpinLockRelease(&swarm_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* (the batcher too: what wakes the worker, a new job, a cancel, is news to it) */
void
swarm_shared_wake_worker(void)
{
	if (swarm_shared != NULL)
	{
		wake(&swarm_shared->worker_latch);
		wake(&swarm_shared->batcher_latch);
	}
}

/* Called by the batcher once it is ready to be woken (NULL on exit). */
void
swarm_shared_set_batcher(Latch *latch)
{
	SpinLockAcquire(&swarm_shared->mutex);
	swarm_shared->batcher_latch = latch;
	SpinLockRelease(&swarm_shared->mutex);
}

/* Called by the step builder once it is ready to be woken (NULL on exit). */
void
swarm_shared_set_step_builder(Latch *latch)
{
	SpinLockAcquire(&swarm_shared->mutex);
	swarm_shared->step_builder_latch = latch;
	SpinLockRelease(&swarm_shared->mutex);
}

/* The worker stored results of a simulation: a step may have ended. */
void
swarm_shared_wake_step_builder(void)
{
	if (swarm_shared != NULL)
		wake(&swarm_shared->step_builder_latch);
}

int
swarm_shared_worker_pid(TimestampTz *started)
{
	int			pid;

	SpinLockAcquire(&swarm_shared->mutex);
	pid = swarm_shared->worker_pid;
	if (started)
		*started = swarm_shared->worker_started;
	SpinLockRelease(&swarm_shared->mutex);
	return pid;
}

uint64
swarm_shared_progress_generation(void)
{
	return pg_atomic_read_u64(&swarm_shared->progress_generation);
}

/* The worker or the batcher committed results; wake everyone in swarm.wait(). */
void
swarm_shared_announce_progress(void)
{
	pg_atomic_fetch_add_u64(&swarm_shared->progress_generation, 1);
	ConditionVariableBroadcast(&swarm_shared->progress_cv);
}

/*
 * Sleep until the progress generation differs from `seen` or timeout_ms passes.
 * Interruptible (query cancel, termination).  Returns true if progress was
 * announced.
 */
bool
swarm_shared_sleep_for_progress(uint64 seen, long timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	bool		progressed = false;

	ConditionVariablePrepareToSleep(&swarm_shared->progress_cv);
	for (;;)
	{
		long		left;

		CHECK_FOR_INTERRUPTS();
		if (pg_atomic_read_u64(&swarm_shared->progress_generation) != seen)
		{
			progressed = true;
			break;
		}
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			break;
		ConditionVariableTimedSleep(&swarm_shared->progress_cv, left, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return progressed;
}
