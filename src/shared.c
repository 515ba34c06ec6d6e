/*-------------------------------------------------------------------------
 *
 * shared.c
 *		pg_swarm's shared memory: where backends find the worker, the counters
 *		behind swarm.stats, and the "progress" signal swarm.wait() sleeps on.
 *
 * Locking rules:
 *	 - worker_latch, worker_pid, worker_started and the rate ring are read and
 *	   written under the spinlock `mutex`.
 *	 - The counters are atomics written by the worker only; readers may see a
 *	   set of counters that is off by the requests finishing while they read.
 *	 - The endpoint status array is written by the worker only, as a seqlock:
 *	   endpoints_seq is odd while it writes; a reader copies and retries if the
 *	   sequence was odd or moved.
 *	 - progress_generation is an atomic bumped by the worker after each committed
 *	   batch, followed by a broadcast on progress_cv.  A waiter reads the
 *	   generation before it looks at the tables and sleeps only while the
 *	   generation is unchanged, so no announcement can be missed.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include <math.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/float.h"

typedef struct SwarmRateSlot
{
	int64		second;			/* epoch second this slot counts */
	uint64		count;
} SwarmRateSlot;

typedef struct SwarmShared
{
	slock_t		mutex;
	Latch	   *worker_latch;
	int			worker_pid;
	TimestampTz worker_started;
	SwarmRateSlot rate[SWARM_RATE_SLOTS];
	pg_atomic_uint64 progress_generation;
	ConditionVariable progress_cv;
	SwarmCounters counters;
	/* endpoint status: a seqlock (odd while the worker writes) */
	pg_atomic_uint64 endpoints_seq;
	int			nendpoints;
	SwarmEndpointSlot endpoints[SWARM_MAX_ENDPOINT_SLOTS];
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
		SwarmCounters *c = &swarm_shared->counters;
		pg_atomic_uint64 *u64[] = {
			&c->attempts, &c->succeeded, &c->failed, &c->retries, &c->http_errors,
			&c->http_429, &c->transport_errors, &c->bytes_received,
			&c->latency_sum_us, &c->latency_count, &c->batches_committed
		};

		memset(swarm_shared, 0, sizeof(SwarmShared));
		SpinLockInit(&swarm_shared->mutex);
		pg_atomic_init_u64(&swarm_shared->progress_generation, 0);
		pg_atomic_init_u64(&swarm_shared->endpoints_seq, 0);
		ConditionVariableInit(&swarm_shared->progress_cv);
		for (int i = 0; i < lengthof(u64); i++)
			pg_atomic_init_u64(u64[i], 0);
		pg_atomic_init_u32(&c->in_flight, 0);
		pg_atomic_init_u32(&c->peak_in_flight, 0);
		for (int i = 0; i < SWARM_LATENCY_BUCKETS; i++)
			pg_atomic_init_u64(&c->latency_hist[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

bool
swarm_shared_available(void)
{
	return swarm_shared != NULL;
}

SwarmCounters *
swarm_counters(void)
{
	Assert(swarm_shared != NULL);
	return &swarm_shared->counters;
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

void
swarm_shared_wake_worker(void)
{
	Latch	   *latch;

	if (swarm_shared == NULL)
		return;
	SpinLockAcquire(&swarm_shared->mutex);
	latch = swarm_shared->worker_latch;
	SpinLockRelease(&swarm_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
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

/* Worker: a batch was committed; wake everyone in swarm.wait(). */
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

/* Worker: n requests ended at `now`; feeds the recent-rate figure. */
void
swarm_shared_count_completions(TimestampTz now, uint64 n)
{
	int64		second = now / USECS_PER_SEC;
	SwarmRateSlot *slot = &swarm_shared->rate[second % SWARM_RATE_SLOTS];

	SpinLockAcquire(&swarm_shared->mutex);
	if (slot->second != second)
	{
		slot->second = second;
		slot->count = 0;
	}
	slot->count += n;
	SpinLockRelease(&swarm_shared->mutex);
}

/* Completions per second over the last SWARM_RATE_WINDOW whole seconds. */
double
swarm_shared_recent_rate(TimestampTz now)
{
	int64		second = now / USECS_PER_SEC;
	uint64		sum = 0;

	SpinLockAcquire(&swarm_shared->mutex);
	for (int i = 0; i < SWARM_RATE_SLOTS; i++)
	{
		SwarmRateSlot *slot = &swarm_shared->rate[i];

		if (slot->second < second && slot->second >= second - SWARM_RATE_WINDOW)
			sum += slot->count;
	}
	SpinLockRelease(&swarm_shared->mutex);
	return (double) sum / SWARM_RATE_WINDOW;
}

/* Worker: record one successful attempt's latency. */
void
swarm_stats_record_latency(uint64 us)
{
	SwarmCounters *c = &swarm_shared->counters;
	int			bucket = 0;

	if (us > 0)
		bucket = (int) floor(log2((double) us) * 4.0);
	bucket = Max(0, Min(bucket, SWARM_LATENCY_BUCKETS - 1));
	pg_atomic_fetch_add_u64(&c->latency_hist[bucket], 1);
	pg_atomic_fetch_add_u64(&c->latency_sum_us, us);
	pg_atomic_fetch_add_u64(&c->latency_count, 1);
}

/*
 * Latency at quantile q (0..1) in milliseconds, from the histogram; NaN when
 * nothing was recorded.  Accurate to the bucket width (about 19%); the value
 * reported is the bucket's geometric middle.
 */
double
swarm_stats_latency_percentile(double q)
{
	SwarmCounters *c = &swarm_shared->counters;
	uint64		counts[SWARM_LATENCY_BUCKETS];
	uint64		total = 0;
	uint64		rank;
	uint64		seen = 0;

	for (int i = 0; i < SWARM_LATENCY_BUCKETS; i++)
	{
		counts[i] = pg_atomic_read_u64(&c->latency_hist[i]);
		total += counts[i];
	}
	if (total == 0)
		return get_float8_nan();
	rank = (uint64) ceil(q * total);
	if (rank < 1)
		rank = 1;
	for (int i = 0; i < SWARM_LATENCY_BUCKETS; i++)
	{
		seen += counts[i];
		if (seen >= rank)
			return pow(2.0, (i + 0.5) / 4.0) / 1000.0;
	}
	return pow(2.0, SWARM_LATENCY_BUCKETS / 4.0) / 1000.0;
}

/* Worker: replace the published endpoint status. */
void
swarm_shared_publish_endpoints(const SwarmEndpointSlot *slots, int n)
{
	n = Min(n, SWARM_MAX_ENDPOINT_SLOTS);
	pg_atomic_fetch_add_u64(&swarm_shared->endpoints_seq, 1);
	pg_write_barrier();
	memcpy(swarm_shared->endpoints, slots, sizeof(SwarmEndpointSlot) * n);
	swarm_shared->nendpoints = n;
	pg_write_barrier();
	pg_atomic_fetch_add_u64(&swarm_shared->endpoints_seq, 1);
}

/* Copy the published endpoint status into slots[SWARM_MAX_ENDPOINT_SLOTS]. */
int
swarm_shared_read_endpoints(SwarmEndpointSlot *slots)
{
	for (;;)
	{
		uint64		before = pg_atomic_read_u64(&swarm_shared->endpoints_seq);
		int			n;

		pg_read_barrier();
		n = Min(swarm_shared->nendpoints, SWARM_MAX_ENDPOINT_SLOTS);
		memcpy(slots, swarm_shared->endpoints, sizeof(SwarmEndpointSlot) * n);
		pg_read_barrier();
		if ((before & 1) == 0 && pg_atomic_read_u64(&swarm_shared->endpoints_seq) == before)
			return n;
		CHECK_FOR_INTERRUPTS();
	}
}
