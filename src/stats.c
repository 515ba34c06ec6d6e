/*-------------------------------------------------------------------------
 *
 * stats.c
 *		The worker's performance counters and the live status of its
 *		endpoints: kept in shared memory by the worker, read by the views
 *		swarm.stats and swarm.endpoint_status in any backend.
 *
 * Locking rules:
 *	 - The counters, the latency histogram and the in-flight gauges are
 *	   atomics written by the worker only; a reader may see a set of counters
 *	   that is off by the requests finishing while it reads.
 *	 - The ring of per-second completion counts (the recent-rate figure) is
 *	   read and written under the spinlock `mutex`.
 *	 - The endpoint status array is written by the worker only, as a seqlock:
 *	   endpoints_seq is odd while it writes; a reader copies and retries if
 *	   the sequence was odd or moved.
 *
 * The lists of counters are the X-macros of stats.h; nothing here names a
 * counter except the derived figures of swarm.stats (rates, percentiles).
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include <math.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "outcome.h"
#include "stats.h"

/* latency histogram: bucket i holds latencies in [2^(i/4), 2^((i+1)/4)) microseconds */
#define LATENCY_BUCKETS 128
/* per-second completion counts kept for the recent-rate figure */
#define RATE_SLOTS 16
#define RATE_WINDOW 10

typedef struct RateSlot
{
	int64		second;			/* epoch second this slot counts */
	uint64		count;
} RateSlot;

typedef struct SwarmStatsShared
{
	pg_atomic_uint64 counters[SWARM_NSTATS];
	pg_atomic_uint64 latency_sum_us;	/* over successful attempts */
	pg_atomic_uint64 latency_count;
	pg_atomic_uint64 latency_hist[LATENCY_BUCKETS];
	pg_atomic_uint32 in_flight;
	pg_atomic_uint32 peak_in_flight;
	slock_t		mutex;
	RateSlot	rate[RATE_SLOTS];
	/* endpoint status: a seqlock (odd while the worker writes) */
	pg_atomic_uint64 endpoints_seq;
	int			nendpoints;
	SwarmEndpointStatus endpoints[SWARM_MAX_ENDPOINT_SLOTS];
} SwarmStatsShared;

static SwarmStatsShared *stats = NULL;

void
stats_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SwarmStatsShared)));
}

void
stats_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("pg_swarm stats", sizeof(SwarmStatsShared), &found);
	if (!found)
	{
		memset(stats, 0, sizeof(SwarmStatsShared));
		for (int i = 0; i < SWARM_NSTATS; i++)
			pg_atomic_init_u64(&stats->counters[i], 0);
		pg_atomic_init_u64(&stats->latency_sum_us, 0);
		pg_atomic_init_u64(&stats->latency_count, 0);
		for (int i = 0; i < LATENCY_BUCKETS; i++)
			pg_atomic_init_u64(&stats->latency_hist[i], 0);
		pg_atomic_init_u32(&stats->in_flight, 0);
		pg_atomic_init_u32(&stats->peak_in_flight, 0);
		SpinLockInit(&stats->mutex);
		pg_atomic_init_u64(&stats->endpoints_seq, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* ---- the worker's side ---- */

static inline void
add(SwarmStat stat, uint64 n)
{
	pg_atomic_fetch_add_u64(&stats->counters[stat], n);
}

void
stats_set_in_flight(int n)
{
	pg_atomic_write_u32(&stats->in_flight, (uint32) n);
	if ((uint32) n > pg_atomic_read_u32(&stats->peak_in_flight))
		pg_atomic_write_u32(&stats->peak_in_flight, (uint32) n);
}

/* An attempt went out to an endpoint. */
void
stats_count_sent(SwarmEndpointCounters *endpoint)
{
	endpoint->requests++;
}

/*
 * An attempt ended with `outcome`, having brought `bytes_received` of
 * response; `retried`: its request will be tried again; `breaker_opened`:
 * this outcome opened its endpoint's breaker.
 */
void
stats_count_attempt(SwarmEndpointCounters *endpoint, const SwarmOutcome *outcome,
					size_t bytes_received, bool retried, bool breaker_opened)
{
	add(SWARM_STAT_http_attempts, 1);
	add(SWARM_STAT_bytes_received, bytes_received);
	if (outcome->transport_fault)
		add(SWARM_STAT_transport_errors, 1);
	if (outcome->http_error)
		add(SWARM_STAT_http_errors, 1);
	if (outcome->rate_limited)
	{
		add(SWARM_STAT_rate_limited, 1);
		endpoint->rate_limited++;
	}
	if (retried)
	{
		add(SWARM_STAT_retries, 1);
		endpoint->retries++;
	}
	if (outcome->signal == SWARM_SIGNAL_SUCCESS)
		endpoint->succeeded++;
	else
		endpoint->errors++;
	if (breaker_opened)
		endpoint->breaker_opened++;
}

/* A request's result was stored: a message (with its latency) or a failure. */
void
stats_count_result(bool succeeded, double latency_ms)
{
	uint64		us = (uint64) (latency_ms * 1000.0);
	int			bucket = 0;

	if (!succeeded)
	{
		add(SWARM_STAT_failed, 1);
		return;
	}
	add(SWARM_STAT_succeeded, 1);
	if (us > 0)
		bucket = (int) floor(log2((double) us) * 4.0);
	bucket = Max(0, Min(bucket, LATENCY_BUCKETS - 1));
	pg_atomic_fetch_add_u64(&stats->latency_hist[bucket], 1);
	pg_atomic_fetch_add_u64(&stats->latency_sum_us, us);
	pg_atomic_fetch_add_u64(&stats->latency_count, 1);
}

/* A store transaction committed `results_stored` results at `now`. */
void
stats_count_batch(TimestampTz now, int results_stored)
{
	int64		second = now / USECS_PER_SEC;
	RateSlot   *slot = &stats->rate[second % RATE_SLOTS];

	add(SWARM_STAT_batches_committed, 1);
	SpinLockAcquire(&stats->mutex);
	if (slot->second != second)
	{
		slot->second = second;
		slot->count = 0;
	}
	slot->count += results_stored;
	SpinLockRelease(&stats->mutex);
}

/* Replace the published endpoint status. */
void
stats_publish_endpoints(const SwarmEndpointStatus *slots, int n)
{
	n = Min(n, SWARM_MAX_ENDPOINT_SLOTS);
	pg_atomic_fetch_add_u64(&stats->endpoints_seq, 1);
	pg_write_barrier();
	memcpy(stats->endpoints, slots, sizeof(SwarmEndpointStatus) * n);
	stats->nendpoints = n;
	pg_write_barrier();
	pg_atomic_fetch_add_u64(&stats->endpoints_seq, 1);
}

/* ---- the readers' side ---- */

/* Completions per second over the last RATE_WINDOW whole seconds. */
static double
recent_rate(TimestampTz now)
{
	int64		second = now / USECS_PER_SEC;
	uint64		sum = 0;

	SpinLockAcquire(&stats->mutex);
	for (int i = 0; i < RATE_SLOTS; i++)
	{
		RateSlot   *slot = &stats->rate[i];

		if (slot->second < second && slot->second >= second - RATE_WINDOW)
			sum += slot->count;
	}
	SpinLockRelease(&stats->mutex);
	return (double) sum / RATE_WINDOW;
}

/*
 * Latency at quantile q (0..1) in milliseconds, from the histogram; NaN when
 * nothing was recorded.  Accurate to the bucket width (about 19%); the value
 * reported is the bucket's geometric middle.
 */
static double
latency_percentile(double q)
{
	uint64		counts[LATENCY_BUCKETS];
	uint64		total = 0;
	uint64		rank;
	uint64		seen = 0;

	for (int i = 0; i < LATENCY_BUCKETS; i++)
	{
		counts[i] = pg_atomic_read_u64(&stats->latency_hist[i]);
		total += counts[i];
	}
	if (total == 0)
		return get_float8_nan();
	rank = (uint64) ceil(q * total);
	if (rank < 1)
		rank = 1;
	for (int i = 0; i < LATENCY_BUCKETS; i++)
	{
		seen += counts[i];
		if (seen >= rank)
			return pow(2.0, (i + 0.5) / 4.0) / 1000.0;
	}
	return pow(2.0, LATENCY_BUCKETS / 4.0) / 1000.0;
}

/* Copy the published endpoint status into slots[SWARM_MAX_ENDPOINT_SLOTS]. */
static int
read_endpoints(SwarmEndpointStatus *slots)
{
	for (;;)
	{
		uint64		before = pg_atomic_read_u64(&stats->endpoints_seq);
		int			n;

		pg_read_barrier();
		n = Min(stats->nendpoints, SWARM_MAX_ENDPOINT_SLOTS);
		memcpy(slots, stats->endpoints, sizeof(SwarmEndpointStatus) * n);
		pg_read_barrier();
		if ((before & 1) == 0 && pg_atomic_read_u64(&stats->endpoints_seq) == before)
			return n;
		CHECK_FOR_INTERRUPTS();
	}
}

static uint64
counter(SwarmStat stat)
{
	return pg_atomic_read_u64(&stats->counters[stat]);
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
	Datum		values[16 + SWARM_NSTATS];
	bool		nulls[lengthof(values)];
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
	swarm_shared_require();

	memset(nulls, 0, sizeof(nulls));
	pid = swarm_shared_worker_pid(&started);
	succeeded = counter(SWARM_STAT_succeeded);
	failed = counter(SWARM_STAT_failed);
	ended = succeeded + failed;
	lat_count = pg_atomic_read_u64(&stats->latency_count);
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
	values[i] = Float8GetDatum(lat_count ? pg_atomic_read_u64(&stats->latency_sum_us) / 1000.0 / lat_count : 0);
	nulls[i++] = (lat_count == 0);
	values[i] = Float8GetDatum(latency_percentile(0.50));
	nulls[i++] = (lat_count == 0);
	values[i] = Float8GetDatum(latency_percentile(0.95));
	nulls[i++] = (lat_count == 0);
	values[i] = Float8GetDatum(latency_percentile(0.99));
	nulls[i++] = (lat_count == 0);
	values[i++] = Int32GetDatum((int32) pg_atomic_read_u32(&stats->in_flight));
	values[i++] = Int32GetDatum((int32) pg_atomic_read_u32(&stats->peak_in_flight));
	/* ops_per_second: recent window; avg_ops_per_second: since start */
	values[i++] = Float8GetDatum(recent_rate(now));
	values[i] = Float8GetDatum(uptime_s > 0 ? ended / uptime_s : 0);
	nulls[i++] = (uptime_s <= 0);
	/* the counters, in the order of SWARM_STAT_COUNTERS */
#define SWARM_STAT_VALUE(name, what) values[i++] = Int64GetDatum((int64) counter(SWARM_STAT_##name));
	SWARM_STAT_COUNTERS(SWARM_STAT_VALUE)
#undef SWARM_STAT_VALUE
	/* uptime */
	if (pid != 0)
		values[i] = IntervalPGetDatum(DatumGetIntervalP(DirectFunctionCall2(timestamp_mi,
																			TimestampTzGetDatum(now),
																			TimestampTzGetDatum(started))));
	nulls[i] = (pid == 0);
	i++;
	if (i != tupdesc->natts)
		elog(ERROR, "pg_swarm: swarm._stats() declares %d columns, the library fills %d",
			 tupdesc->natts, i);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* Rows of swarm.endpoint_status: the worker's published endpoint status. */
PG_FUNCTION_INFO_V1(swarm_endpoint_status);
Datum
swarm_endpoint_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SwarmEndpointStatus *slots;
	int			n;

	swarm_shared_require();
	InitMaterializedSRF(fcinfo, 0);
	slots = palloc(sizeof(SwarmEndpointStatus) * SWARM_MAX_ENDPOINT_SLOTS);
	n = read_endpoints(slots);
	for (int i = 0; i < n; i++)
	{
		SwarmEndpointStatus *e = &slots[i];
		Datum		values[7 + sizeof(SwarmEndpointCounters) / sizeof(uint64) + 5];
		bool		nulls[lengthof(values)];
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
#define SWARM_ENDPOINT_COUNTER_VALUE(name, what) values[k++] = Int64GetDatum((int64) e->counters.name);
		SWARM_ENDPOINT_COUNTERS(SWARM_ENDPOINT_COUNTER_VALUE)
#undef SWARM_ENDPOINT_COUNTER_VALUE
		values[k++] = Int32GetDatum(e->requests_last_minute);
		values[k++] = Int64GetDatum(e->tokens_last_minute);
		values[k] = CStringGetTextDatum(e->wait_reason);
		nulls[k++] = (e->wait_reason[0] == '\0');
		values[k] = TimestampTzGetDatum(e->wait_until);
		nulls[k++] = (e->wait_reason[0] == '\0' || e->wait_until == 0);
		values[k] = Float8GetDatum(e->queue_ratio);
		nulls[k++] = (e->queue_ratio < 0);
		if (k != rsinfo->setDesc->natts)
			elog(ERROR, "pg_swarm: swarm._endpoint_status() declares %d columns, the library fills %d",
				 rsinfo->setDesc->natts, k);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
