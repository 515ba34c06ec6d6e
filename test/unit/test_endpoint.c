/*-------------------------------------------------------------------------
 *
 * test_endpoint.c
 *		C unit tests of src/endpoint.c (when may the worker send to an
 *		endpoint, and how does each outcome change that), run without a
 *		server.
 *
 * src/endpoint.c is compiled exactly as in the extension, against the server
 * headers; test/fuzz/fuzz_backend.c stands in for palloc/pfree.  The policy
 * does no I/O and reads no clock: time is an argument, so every test drives
 * a simulated clock (TimestampTz microseconds, from T0) and plays the
 * worker's part as src/worker.c does: ask endpoint_may_send(), note the send
 * (keeping the charge endpoint_note_sent() returns, which the worker passes
 * back), then note the result with a signal and a latency.
 * Areas:
 *	 - the adaptive concurrency limit: slow start, the max_in_flight cap, the
 *	   switch that turns it off, drops (AIMD, once per round trip), queueing
 *	   found by latency epochs, the check after a queueing cut, slow start
 *	   again after a calm spell;
 *	 - budgets: the paced buckets and the hard 60-second windows of requests
 *	   and tokens, token corrections, reconfiguration;
 *	 - the circuit breaker and pauses;
 *	 - the concurrency limit as endpoint_may_send() applies it.
 * The expected numbers are worked out from endpoint.c's constants in the
 * comments beside the checks, so a changed constant fails a test and makes
 * its author look at what it changed.  Fields of SwarmEndpointPolicy are
 * read (never written) where the API shows nothing, e.g. the limit itself.
 *
 * Output is TAP: "ok N - ..." / "not ok N - ...", then "1..N".
 *
 * Usage: test_endpoint   (see test/unit/run_unit.sh)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "endpoint.h"
#include "fuzz_backend.h"

static int	tests = 0;
static int	failures = 0;

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

static bool
same_reason(const char *got, const char *want)
{
	if (got == NULL || want == NULL)
		return got == want;
	return strcmp(got, want) == 0;
}

/* ---------------------------------------------------------------------
 * The simulated worker
 * --------------------------------------------------------------------- */

/* mid-2025: far from 0, which the policy uses as "never" (last_decrease, bucket.at) */
#define T0		((TimestampTz) 800000000 * USECS_PER_SEC)
#define MS(x)	((TimestampTz) ((x) * 1000.0))
#define SEC(x)	((TimestampTz) ((x) * (double) USECS_PER_SEC))

/* What the worker keeps of a request it sent, to give back with the result. */
typedef struct Sent
{
	SwarmEndpointCharge charge; /* what endpoint_note_sent() gave back */
	int64		epoch;			/* copies of its fields, for the tests to read */
	int64		seq;			/* token charge; -1 without a token budget */
} Sent;

static Sent
send_one(SwarmEndpointPolicy *p, TimestampTz now, int64 tokens)
{
	Sent		s;

	s.charge = endpoint_note_sent(p, now, tokens);
	s.epoch = s.charge.epoch;
	s.seq = s.charge.token_seq;
	return s;
}

/* completion_tokens -1: unknown, as for a reply without usage */
static void
answer(SwarmEndpointPolicy *p, TimestampTz now, const Sent *s, SwarmSignal signal,
	   double latency_ms, int completion_tokens)
{
	endpoint_note_result(p, &s->charge, now, signal, latency_ms, completion_tokens);
}

/* A request that comes back at once with `signal`. */
static void
round_trip(SwarmEndpointPolicy *p, TimestampTz now, SwarmSignal signal)
{
	Sent		s = send_one(p, now, 0);

	answer(p, now, &s, signal, signal == SWARM_SIGNAL_SUCCESS ? 100 : -1, -1);
}

/* Leaks: every policy is freed; what fuzz_backend still holds then is lost. */
static size_t leaked_chunks = 0;

static void
area_begin(void)
{
	fuzz_backend_begin(-1);
}

static void
area_end(void)
{
	FuzzBackendStats st;

	fuzz_backend_end(&st);
	leaked_chunks += st.live_chunks;
}

/*
 * Requests go out WAVE at a time, each wave ending after latency_ms, so the
 * slow-start growth (a success with in_flight + 1 >= limit / 2) never fires
 * during an epoch for limits above 2 * WAVE: the epochs measure the
 * latencies and leave the limit to the code under test's cuts.
 */
#define WAVE 4

/*
 * Longer than any smoothed round trip of the tests that cut (latencies <=
 * 250 ms): endpoint.c does not judge an epoch begun within a round trip of a
 * cut (what queued before it is still draining), so one begun this long
 * after is judged.
 */
#define EPOCH_GAP MS(300)

/*
 * Play one latency epoch: wait `gap`, then send waves until the epoch the
 * first request joined is full, every request answered after latency_ms
 * with completion_tokens.  Returns whether that epoch was judged (its slot
 * is released when it is, endpoint.c's e->id = 0).
 */
static bool
run_epoch(SwarmEndpointPolicy *p, TimestampTz *now, TimestampTz gap, double latency_ms,
		  int completion_tokens)
{
	int64		id = 0;

	*now += gap;
	for (int waves = 0; waves < 1000; waves++)
	{
		Sent		wave[WAVE];
		int			n = 0;

		while (n < WAVE)
		{
			SwarmLatencyEpoch *e;

			wave[n] = send_one(p, *now, 0);
			if (id == 0)
				id = wave[n].epoch;
			n++;
			e = &p->epochs[id % SWARM_LATENCY_EPOCHS];
			if (e->id != id || e->sent >= e->size)
				break;
		}
		*now += MS(latency_ms);
		for (int i = 0; i < n; i++)
			answer(p, *now, &wave[i], SWARM_SIGNAL_SUCCESS, latency_ms, completion_tokens);
		if (p->epochs[id % SWARM_LATENCY_EPOCHS].id != id)
			return true;
	}
	return false;
}

/*
 * run_epoch() after EPOCH_GAP, answers of unknown length.  An epoch that is
 * not judged would make the checks after it vacuous: counted here, checked
 * by epochs_all_judged() at the end of each area.
 */
static int	epochs_unjudged = 0;

static void
epoch_at(SwarmEndpointPolicy *p, TimestampTz *now, double latency_ms)
{
	if (!run_epoch(p, now, EPOCH_GAP, latency_ms, -1))
	{
		printf("#   the epoch at %.0f ms was never judged\n", latency_ms);
		epochs_unjudged++;
	}
}

static void
epochs_all_judged(const char *area)
{
	char		name[200];

	snprintf(name, sizeof(name), "%s: every latency epoch played was judged", area);
	check(epochs_unjudged == 0, name, NULL);
	epochs_unjudged = 0;
}

/*
 * One success while the limit is in use: with ceil(limit / 2) requests out,
 * the first to end leaves in_flight + 1 >= limit / 2.  Returns how much that
 * one success grew the limit; the rest then end, too few out to grow it.
 */
static double
in_use_success(SwarmEndpointPolicy *p, TimestampTz *now, double latency_ms)
{
	Sent		s[1024];
	int			n = (int) ceil(p->limit / 2);
	double		before;
	double		grown;

	Assert(n <= lengthof(s));
	for (int i = 0; i < n; i++)
		s[i] = send_one(p, *now, 0);
	*now += MS(latency_ms);
	before = p->limit;
	answer(p, *now, &s[0], SWARM_SIGNAL_SUCCESS, latency_ms, -1);
	grown = p->limit - before;
	for (int i = 1; i < n; i++)
		answer(p, *now, &s[i], SWARM_SIGNAL_SUCCESS, latency_ms, -1);
	return grown;
}

/* ---------------------------------------------------------------------
 * Adaptive limit: growth
 * --------------------------------------------------------------------- */

static void
test_slow_start(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	Sent		s[128];
	int			n = 0;

	endpoint_policy_init(&p, 1000, 0, 0, true);
	checkf(p.limit == 64 && p.slow_start, "limit starts at 64 when max_in_flight is higher, in slow start",
		   "limit %g", p.limit);

	/* one at a time: in_flight + 1 = 1 < 64 / 2, the limit is not in use */
	for (int i = 0; i < 10; i++)
		round_trip(&p, now += MS(100), SWARM_SIGNAL_SUCCESS);
	checkf(p.limit == 64, "slow start: no growth from successes while the limit is idle",
		   "limit %g", p.limit);

	/* 31 out; one ends: 30 + 1 < 32, one short of half the limit */
	while (n < 31)
		s[n++] = send_one(&p, now, 0);
	answer(&p, now += MS(100), &s[--n], SWARM_SIGNAL_SUCCESS, 100, -1);
	checkf(p.limit == 64, "slow start: no growth when in_flight + 1 is just under limit / 2",
		   "limit %g", p.limit);
	/* 32 out; one ends: 31 + 1 >= 32 */
	s[n++] = send_one(&p, now, 0);
	s[n++] = send_one(&p, now, 0);
	answer(&p, now += MS(100), &s[--n], SWARM_SIGNAL_SUCCESS, 100, -1);
	checkf(p.limit == 65, "slow start: +1 when in_flight + 1 reaches limit / 2",
		   "limit %g", p.limit);

	/* keep 40 out, replacing each that ends: each success adds 1 */
	while (n < 40)
		s[n++] = send_one(&p, now, 0);
	for (int i = 0; i < 10; i++)
	{
		answer(&p, now += MS(100), &s[--n], SWARM_SIGNAL_SUCCESS, 100, -1);
		s[n++] = send_one(&p, now, 0);
	}
	checkf(p.limit == 75, "slow start: 10 successes in use add 10 (65 -> 75)", "limit %g", p.limit);
	while (n > 0)
		answer(&p, now, &s[--n], SWARM_SIGNAL_SUCCESS, 100, -1);
	endpoint_policy_free(&p);
}

static void
test_limit_cap(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	Sent		s[64];
	int			n = 0;

	endpoint_policy_init(&p, 10, 0, 0, true);
	checkf(p.limit == 10, "limit starts at max_in_flight when that is below 64", "limit %g", p.limit);
	endpoint_policy_free(&p);

	endpoint_policy_init(&p, 70, 0, 0, true);
	while (n < 40)
		s[n++] = send_one(&p, now, 0);
	for (int i = 0; i < 20; i++)
	{
		answer(&p, now += MS(100), &s[--n], SWARM_SIGNAL_SUCCESS, 100, -1);
		s[n++] = send_one(&p, now, 0);
	}
	checkf(p.limit == 70, "slow start stops at max_in_flight (64 + 20 successes, max 70)",
		   "limit %g", p.limit);
	while (n > 0)
		answer(&p, now, &s[--n], SWARM_SIGNAL_SUCCESS, 100, -1);
	endpoint_policy_free(&p);
}

static void
test_adaptive_off(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	Sent		s[60];

	endpoint_policy_init(&p, 1000, 0, 0, false);
	checkf(p.limit == 1000, "adaptive off: the limit is max_in_flight, not 64", "limit %g", p.limit);
	for (int i = 0; i < 60; i++)
		s[i] = send_one(&p, now, 0);
	answer(&p, now += SEC(1), &s[50], SWARM_SIGNAL_OVERLOAD, -1, -1);
	answer(&p, now += SEC(1), &s[40], SWARM_SIGNAL_UNREACHABLE, -1, -1);
	checkf(p.limit == 1000, "adaptive off: OVERLOAD and UNREACHABLE do not cut the limit",
		   "limit %g", p.limit);
	for (int i = 0; i < 60; i++)
		if (i != 50 && i != 40)
			answer(&p, now, &s[i], SWARM_SIGNAL_SUCCESS, 100, -1);

	/* a latency epoch at 2.5x the baseline would cut an adaptive limit in half */
	now += SEC(10);
	epoch_at(&p, &now, 100);
	epoch_at(&p, &now, 100);
	epoch_at(&p, &now, 250);
	checkf(p.limit == 1000, "adaptive off: queueing does not cut the limit either",
		   "limit %g", p.limit);
	epochs_all_judged("adaptive off");

	endpoint_policy_reconfigure(&p, 200, 0, 0, false, now);
	checkf(p.limit == 200, "adaptive off: reconfigured, the limit follows max_in_flight",
		   "limit %g", p.limit);
	endpoint_policy_free(&p);
}

/* ---------------------------------------------------------------------
 * Adaptive limit: drops
 * --------------------------------------------------------------------- */

static void
test_drops(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	Sent		s[64];
	Sent		one;

	endpoint_policy_init(&p, 1000, 0, 0, true);
	/* a round trip of 200 ms: the first latency becomes rtt_ms */
	one = send_one(&p, now, 0);
	answer(&p, now += MS(200), &one, SWARM_SIGNAL_SUCCESS, 200, -1);
	checkf(p.limit == 64 && p.rtt_ms == 200, "drops: set-up, one success idle: limit 64, rtt 200 ms",
		   "limit %g, rtt %g", p.limit, p.rtt_ms);

	/* s[i] was sent with i others in flight */
	for (int i = 0; i < 64; i++)
		s[i] = send_one(&p, now, 0);

	answer(&p, now += MS(10), &s[63], SWARM_SIGNAL_FAILURE, -1, -1);
	checkf(p.limit == 64, "drops: a FAILURE (5xx) is not a drop, the limit stays", "limit %g", p.limit);

	/* floor(0.9 * min(64, 50)) */
	answer(&p, now += MS(10), &s[50], SWARM_SIGNAL_OVERLOAD, -1, -1);
	checkf(p.limit == 45 && !p.slow_start,
		   "drops: OVERLOAD sent with 50 in flight cuts 64 to floor(0.9 x 50) = 45, ends slow start",
		   "limit %g, slow_start %d", p.limit, p.slow_start);

	answer(&p, now += MS(100), &s[45], SWARM_SIGNAL_OVERLOAD, -1, -1);
	checkf(p.limit == 45, "drops: a second drop within the round trip (100 ms < 200 ms) does not cut again",
		   "limit %g", p.limit);

	/* 250 ms after the cut: min(45, 49) = 45, floor(40.5) */
	answer(&p, now += MS(150), &s[49], SWARM_SIGNAL_OVERLOAD, -1, -1);
	checkf(p.limit == 40, "drops: one round trip later a drop cuts again, from the limit when "
		   "more were in flight (45 -> 40)", "limit %g", p.limit);

	/* UNREACHABLE is a drop too: floor(0.9 x 20) */
	answer(&p, now += MS(250), &s[20], SWARM_SIGNAL_UNREACHABLE, -1, -1);
	checkf(p.limit == 18, "drops: UNREACHABLE sent with 20 in flight cuts 40 to 18", "limit %g", p.limit);

	/* sent with nothing else out: the basis is 1, floor(0.9) = 0, held at 1 */
	answer(&p, now += MS(250), &s[0], SWARM_SIGNAL_OVERLOAD, -1, -1);
	checkf(p.limit == 1, "drops: a drop of a request sent alone cuts to 1, not 0", "limit %g", p.limit);
	answer(&p, now += MS(250), &s[1], SWARM_SIGNAL_OVERLOAD, -1, -1);
	checkf(p.limit == 1, "drops: the limit never falls below 1", "limit %g", p.limit);

	for (int i = 2; i < 64; i++)
		if (i != 20 && i != 45 && i != 49 && i != 50 && i != 63)
			answer(&p, now, &s[i], SWARM_SIGNAL_NEUTRAL, -1, -1);
	checkf(p.in_flight == 0, "drops: every result frees its slot", "in_flight %d", p.in_flight);
	endpoint_policy_free(&p);

	/* with no success yet, there is no round trip: cuts are 10 ms apart */
	endpoint_policy_init(&p, 1000, 0, 0, true);
	now = T0;
	for (int i = 0; i < 64; i++)
		s[i] = send_one(&p, now, 0);
	answer(&p, now += MS(1), &s[63], SWARM_SIGNAL_OVERLOAD, -1, -1);	/* 63 -> 56 */
	answer(&p, now += MS(5), &s[62], SWARM_SIGNAL_OVERLOAD, -1, -1);
	answer(&p, now += MS(5), &s[61], SWARM_SIGNAL_OVERLOAD, -1, -1);	/* min(56, 61) -> 50 */
	checkf(p.limit == 50, "drops: without a measured round trip, cuts are at least 10 ms apart (64 -> 56 -> 50)",
		   "limit %g", p.limit);
	for (int i = 0; i < 61; i++)
		answer(&p, now, &s[i], SWARM_SIGNAL_NEUTRAL, -1, -1);
	endpoint_policy_free(&p);
}

/* ---------------------------------------------------------------------
 * Adaptive limit: queueing
 *
 * Latencies of unknown length are normalised as latency / (16 + 16), so an
 * epoch at 100 ms has a 10th percentile of 3.125 and one at 250 ms of 7.8125;
 * every request of an epoch has the same latency, so the ratio to the
 * baseline is exactly the ratio of the latencies.
 * --------------------------------------------------------------------- */

/* A new policy, limit 64, whose baseline is two epochs at base_ms. */
static void
queue_setup(SwarmEndpointPolicy *p, TimestampTz *now, double base_ms)
{
	endpoint_policy_init(p, 1000, 0, 0, true);
	*now = T0;
	epoch_at(p, now, base_ms);
	epoch_at(p, now, base_ms);
}

static void
test_queue_detection(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now;

	queue_setup(&p, &now, 100);
	checkf(p.limit == 64 && p.nhistory == 2 && fabs(p.queue_ratio - 1.0) < 1e-9,
		   "queueing: two epochs at 100 ms form the baseline, ratio 1, limit untouched",
		   "limit %g, epochs %d, ratio %g", p.limit, p.nhistory, p.queue_ratio);
	epoch_at(&p, &now, 250);
	/* ratio 2.5 > QUEUE_SURE: cut to 64 x max(0.5, 1 / 2.5) */
	checkf(p.limit == 32 && fabs(p.queue_ratio - 2.5) < 1e-9,
		   "queueing: one epoch at 2.5x the baseline cuts the limit (64 -> 32)",
		   "limit %g, ratio %g", p.limit, p.queue_ratio);
	checkf(p.queue_cut_ratio == 0,
		   "queueing: a cut from an epoch sent in slow start awaits no check",
		   "queue_cut_ratio %g", p.queue_cut_ratio);
	/* begun right after the cut, before a round trip has passed */
	check(run_epoch(&p, &now, 0, 250, -1) && p.limit == 32,
		  "queueing: an epoch begun within a round trip of a cut is not judged (no second cut)", NULL);
	endpoint_policy_free(&p);

	queue_setup(&p, &now, 100);
	epoch_at(&p, &now, 150);
	checkf(p.limit == 64 && p.high_windows == 1,
		   "queueing: one epoch at 1.5x (above 1.35, below 2) does not cut yet",
		   "limit %g, high_windows %d", p.limit, p.high_windows);
	epoch_at(&p, &now, 150);
	/* floor(64 / 1.5) */
	checkf(p.limit == 42, "queueing: a second epoch in a row at 1.5x cuts the limit (64 -> 42)",
		   "limit %g", p.limit);
	endpoint_policy_free(&p);

	/*
	 * Just under the tolerance.  (1.3x rather than 1.2x: an epoch within 25%
	 * of the lowest joins the baseline it is compared with, so 1.2x would be
	 * judged as 1.2 / mean(1, 1, 1.2) = 1.125.)
	 */
	queue_setup(&p, &now, 100);
	for (int i = 0; i < 4; i++)
		epoch_at(&p, &now, 130);
	checkf(p.limit == 64 && p.high_windows == 0 && fabs(p.queue_ratio - 1.3) < 1e-6,
		   "queueing: four epochs at 1.3x (under 1.35) do not cut the limit",
		   "limit %g, high_windows %d, ratio %g", p.limit, p.high_windows, p.queue_ratio);
	endpoint_policy_free(&p);
	queue_setup(&p, &now, 100);
	for (int i = 0; i < 4; i++)
		epoch_at(&p, &now, 120);
	checkf(p.limit == 64 && fabs(p.queue_ratio - 1.2 / (3.2 / 3)) < 1e-6,
		   "queueing: an epoch at 1.2x joins the baseline (ratio 1.125), no cut",
		   "limit %g, ratio %g", p.limit, p.queue_ratio);
	endpoint_policy_free(&p);

	/*
	 * Long answers are not queueing: 500 tokens at (500 + 16) x 3.125 ms are
	 * as fast per token as the baseline.  The same latencies with the length
	 * unknown would be 16x the baseline.
	 */
	queue_setup(&p, &now, 100);
	check(run_epoch(&p, &now, EPOCH_GAP, 1612.5, 500) && p.limit == 64 &&
		  fabs(p.queue_ratio - 1.0) < 1e-9,
		  "queueing: latencies normalised by completion tokens: long answers are not queueing", NULL);
	endpoint_policy_free(&p);
	queue_setup(&p, &now, 100);
	check(run_epoch(&p, &now, EPOCH_GAP, 1612.5, -1) && p.limit == 32,
		  "queueing: ... the same latencies with no token count are (64 -> 32)", NULL);
	endpoint_policy_free(&p);
	epochs_all_judged("queueing");
}

/*
 * The check after a queueing cut.  The first cut (from an epoch begun in
 * slow start) is not checked, so each case cuts twice: 64 -> 32 -> 16, the
 * second from a steady limit of 32.
 */
static void
test_queue_check(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now;

	queue_setup(&p, &now, 100);
	epoch_at(&p, &now, 250);	/* sent in slow start: 64 -> 32, unchecked */
	epoch_at(&p, &now, 250);	/* sent at a steady 32: 32 -> 16, to check */
	checkf(p.limit == 16 && p.queue_cut_ratio == 2.5 && p.queue_cut_from == 32,
		   "queue check: a cut from a steady limit awaits its check (32 -> 16, ratio 2.5)",
		   "limit %g, queue_cut_ratio %g, from %g", p.limit, p.queue_cut_ratio, p.queue_cut_from);
	epoch_at(&p, &now, 250);	/* the check: as slow as before */
	checkf(p.limit == 32 && p.queue_cut_ratio == 0 && fabs(p.queue_ratio - 1.0) < 1e-9,
		   "queue check: the next epoch no faster (ratio not 5% lower): the limit is given back (16 -> 32)",
		   "limit %g, queue_cut_ratio %g, ratio %g", p.limit, p.queue_cut_ratio, p.queue_ratio);
	/* 300 ms is 3x the old baseline, 1.2x the new one */
	epoch_at(&p, &now, 300);
	checkf(p.limit == 32 && p.queue_ratio < 1.35,
		   "queue check: the slower latency became the baseline (300 ms after 250 ms: no cut)",
		   "limit %g, ratio %g", p.limit, p.queue_ratio);
	endpoint_policy_free(&p);

	queue_setup(&p, &now, 100);
	epoch_at(&p, &now, 250);	/* 64 -> 32, unchecked */
	epoch_at(&p, &now, 250);	/* 32 -> 16, to check */
	epoch_at(&p, &now, 150);	/* the check: faster */
	/* 1.5 < 0.95 x 2.5: confirmed; and only one epoch above 1.35 since the cut */
	checkf(p.limit == 16 && p.queue_cut_ratio == 0 && fabs(p.queue_ratio - 1.5) < 1e-9,
		   "queue check: the next epoch faster (1.5x after 2.5x): the cut stands (16)",
		   "limit %g, queue_cut_ratio %g, ratio %g", p.limit, p.queue_cut_ratio, p.queue_ratio);
	endpoint_policy_free(&p);
	epochs_all_judged("queue check");
}

/*
 * After a cut, growth is +1/limit per success in use; after 3 s without a
 * signal and two calm epochs judged, slow start (+1 per success) resumes.
 * Latencies of 10 ms make an epoch 0.5 s long, so both conditions can be
 * met apart.
 */
static void
test_calm_spell(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now;
	TimestampTz cut_at;
	double		grown;

	/* two calm epochs within 3 s of the cut */
	queue_setup(&p, &now, 10);
	epoch_at(&p, &now, 25);		/* 2.5x: 64 -> 32 */
	cut_at = now;
	checkf(p.limit == 32 && !p.slow_start, "calm spell: set-up, a queueing cut to 32 ends slow start",
		   "limit %g", p.limit);
	now += SEC(0.1);
	grown = in_use_success(&p, &now, 10);
	checkf(fabs(grown - 1.0 / 32) < 1e-9, "calm spell: after a cut a success in use adds 1/limit",
		   "grew %g", grown);
	epoch_at(&p, &now, 10);		/* calm 1 */
	epoch_at(&p, &now, 10);		/* calm 2 */
	checkf(p.calm_epochs == 2 && now - cut_at < SEC(3),
		   "calm spell: two calm epochs judged within 3 s of the cut",
		   "calm_epochs %d, %.3f s", p.calm_epochs, (now - cut_at) / 1e6);
	grown = in_use_success(&p, &now, 10);
	checkf(!p.slow_start && grown > 0 && grown < 0.1,
		   "calm spell: two calm epochs, but within 3 s of the last signal: still +1/limit",
		   "grew %g", grown);
	now = cut_at + SEC(3.1);
	grown = in_use_success(&p, &now, 10);
	checkf(p.slow_start && grown == 1.0,
		   "calm spell: 3 s after the last signal, two epochs calm: slow start again, +1 per success",
		   "grew %g, slow_start %d", grown, p.slow_start);
	grown = in_use_success(&p, &now, 10);
	checkf(grown == 1.0, "calm spell: ... and the next success in use adds 1 again", "grew %g", grown);
	endpoint_policy_free(&p);

	/* 3 s past the cut, one calm epoch only */
	queue_setup(&p, &now, 10);
	epoch_at(&p, &now, 25);		/* 2.5x: 64 -> 32 */
	cut_at = now;
	epoch_at(&p, &now, 10);		/* calm 1 */
	now = cut_at + SEC(5);
	grown = in_use_success(&p, &now, 10);
	checkf(!p.slow_start && grown > 0 && grown < 0.1 && p.calm_epochs == 1,
		   "calm spell: 5 s after the cut but one calm epoch: still +1/limit",
		   "grew %g, calm_epochs %d", grown, p.calm_epochs);
	epoch_at(&p, &now, 10);		/* calm 2 */
	grown = in_use_success(&p, &now, 10);
	checkf(p.slow_start && grown == 1.0,
		   "calm spell: the second calm epoch judged: slow start again",
		   "grew %g, calm_epochs %d", grown, p.calm_epochs);
	endpoint_policy_free(&p);
	epochs_all_judged("calm spell");
}

/* ---------------------------------------------------------------------
 * Budgets
 * --------------------------------------------------------------------- */

static void
test_requests_paced(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	TimestampTz retry_at;
	int			sent = 0;

	/* 120 a minute: 2 a second, a bucket of max(120 / 120, 1) = 1 */
	endpoint_policy_init(&p, 1000, 120, 0, true);
	checkf(p.request_pace.capacity == 1.0, "rpm 120: the pacing bucket holds 1 request",
		   "capacity %g", p.request_pace.capacity);
	check(endpoint_may_send(&p, now, 0, &retry_at), "rpm 120: the first request goes at once", NULL);
	round_trip(&p, now, SWARM_SIGNAL_SUCCESS);
	checkf(!endpoint_may_send(&p, now, 0, &retry_at) &&
		   same_reason(p.wait_reason, "requests_per_minute (paced)") &&
		   llabs(retry_at - (now + MS(500))) <= 1,
		   "rpm 120: the second must wait 0.5 s (paced)",
		   "reason %s, retry_at now + " INT64_FORMAT " us",
		   p.wait_reason ? p.wait_reason : "NULL", retry_at - now);
	check(!endpoint_may_send(&p, now + MS(499), 0, &retry_at),
		  "rpm 120: still refused 1 ms before the half second", NULL);
	now += MS(500);
	check(endpoint_may_send(&p, now, 0, &retry_at) && p.wait_reason == NULL,
		  "rpm 120: the second goes after 0.5 s, wait_reason cleared", NULL);
	endpoint_policy_free(&p);

	/* 6000 a minute: a bucket of 50, the burst */
	endpoint_policy_init(&p, 1000, 6000, 0, false);
	while (endpoint_may_send(&p, now, 0, &retry_at) && sent < 1000)
	{
		round_trip(&p, now, SWARM_SIGNAL_SUCCESS);
		sent++;
	}
	checkf(sent == 50 && same_reason(p.wait_reason, "requests_per_minute (paced)"),
		   "rpm 6000: a burst of 50 (half a second's worth) goes at once, then pacing",
		   "sent %d", sent);
	endpoint_policy_free(&p);
}

/*
 * Every millisecond for `seconds`, send all that endpoint_may_send() lets
 * go.  Records the send times in at[] and returns their number.
 */
#define DRIVE_MAX 40000

static TimestampTz drive_at[DRIVE_MAX];

static int
drive_requests(SwarmEndpointPolicy *p, TimestampTz start, int seconds,
			   TimestampTz *window_refusal_at, TimestampTz *window_retry_at)
{
	int			n = 0;

	*window_refusal_at = 0;
	for (TimestampTz now = start; now < start + SEC(seconds); now += MS(1))
	{
		TimestampTz retry_at;

		while (n < DRIVE_MAX && endpoint_may_send(p, now, 0, &retry_at))
		{
			round_trip(p, now, SWARM_SIGNAL_SUCCESS);
			drive_at[n++] = now;
		}
		if (*window_refusal_at == 0 && same_reason(p->wait_reason, "requests_per_minute"))
		{
			*window_refusal_at = now;
			*window_retry_at = retry_at;
		}
	}
	return n;
}

/* The most sends in any span (t - span, t] ending at a send. */
static int
busiest_span(int n, TimestampTz span)
{
	int			most = 0;
	int			first = 0;

	for (int i = 0; i < n; i++)
	{
		while (drive_at[first] <= drive_at[i] - span)
			first++;
		most = Max(most, i - first + 1);
	}
	return most;
}

static void
test_requests_window(void)
{
	SwarmEndpointPolicy p;
	TimestampTz refused_at;
	TimestampTz retry_at;
	int			n;
	int			most;
	int			oldest = 0;

	/* 6000 a minute: 100 a second, a burst of 50, so pacing alone would let 6050 go in 60 s */
	endpoint_policy_init(&p, 1000, 6000, 0, false);
	n = drive_requests(&p, T0, 150, &refused_at, &retry_at);
	most = busiest_span(n, SWARM_BUDGET_WINDOW_USEC);
	checkf(most <= 6000, "rpm 6000 over 150 s: no 60-second span carries more than 6000",
		   "busiest 60 s: %d", most);
	checkf(n >= 14900, "rpm 6000 over 150 s: the budget is used (at least 6000 per 60 s)",
		   "sent %d", n);
	while (oldest < n && drive_at[oldest] <= refused_at - SWARM_BUDGET_WINDOW_USEC)
		oldest++;
	checkf(refused_at > 0 && retry_at == drive_at[oldest] + SWARM_BUDGET_WINDOW_USEC,
		   "rpm 6000: the full window refuses with \"requests_per_minute\" until its oldest is 60 s old",
		   "refused at T0 + " INT64_FORMAT " us, retry_at oldest + " INT64_FORMAT " us",
		   refused_at - T0, retry_at - drive_at[oldest]);

	/*
	 * Per second: at most the burst plus a second's refill, 50 + 100, as
	 * bucket_configure() says: after an idle spell the first second carries
	 * the full bucket and a second's refill; and the busiest second does
	 * reach that (the bound is not loose).
	 */
	most = busiest_span(n, USECS_PER_SEC);
	checkf(most <= 150 && most > 100,
		   "rpm 6000: no 1-second span carries more than burst + refill (150), the first reaches past 100",
		   "busiest second: %d", most);
	endpoint_policy_free(&p);

	/* 120 a minute, driven for 3 minutes: paced at 2 a second, within the window */
	endpoint_policy_init(&p, 1000, 120, 0, false);
	n = drive_requests(&p, T0, 180, &refused_at, &retry_at);
	most = busiest_span(n, SWARM_BUDGET_WINDOW_USEC);
	checkf(most <= 120 && n >= 359, "rpm 120 over 180 s: never more than 120 in 60 s, about 2 a second",
		   "busiest 60 s: %d, sent %d", most, n);
	endpoint_policy_free(&p);
}

static void
test_window_expiry(void)
{
	SwarmEndpointPolicy p;
	Sent		s;

	endpoint_policy_init(&p, 1000, 1000, 1000000, true);
	s = send_one(&p, T0, 10);
	answer(&p, T0, &s, SWARM_SIGNAL_SUCCESS, 100, -1);
	s = send_one(&p, T0 + SEC(10), 20);
	answer(&p, T0 + SEC(10), &s, SWARM_SIGNAL_SUCCESS, 100, -1);
	check(endpoint_window_count(&p.requests, T0 + SEC(60) - 1) == 2 &&
		  endpoint_window_total(&p.tokens, T0 + SEC(60) - 1) == 30,
		  "windows: an event 1 us short of 60 s old still counts", NULL);
	check(endpoint_window_count(&p.requests, T0 + SEC(60)) == 1 &&
		  endpoint_window_total(&p.tokens, T0 + SEC(60)) == 20,
		  "windows: an event 60 s old has expired", NULL);
	check(endpoint_window_count(&p.requests, T0 + SEC(70)) == 0 &&
		  endpoint_window_total(&p.tokens, T0 + SEC(70)) == 0,
		  "windows: empty once all are 60 s old", NULL);
	endpoint_policy_free(&p);
}

static void
test_requests_reconfigure(void)
{
	SwarmEndpointPolicy p;
	TimestampTz retry_at;

	/* 3 a minute: one every 20 s */
	endpoint_policy_init(&p, 1000, 3, 0, true);
	round_trip(&p, T0, SWARM_SIGNAL_SUCCESS);
	round_trip(&p, T0 + SEC(21), SWARM_SIGNAL_SUCCESS);
	round_trip(&p, T0 + SEC(42), SWARM_SIGNAL_SUCCESS);
	checkf(!endpoint_may_send(&p, T0 + SEC(45), 0, &retry_at) &&
		   same_reason(p.wait_reason, "requests_per_minute") && retry_at == T0 + SEC(60),
		   "rpm 3: a fourth within the minute is refused until the first is 60 s old",
		   "reason %s, retry_at T0 + " INT64_FORMAT " us",
		   p.wait_reason ? p.wait_reason : "NULL", retry_at - T0);
	endpoint_policy_reconfigure(&p, 1000, 10, 0, true, T0 + SEC(45));
	check(endpoint_window_count(&p.requests, T0 + SEC(45)) == 3,
		  "reconfigure: raising rpm keeps the 3 sent in the window", NULL);
	check(endpoint_window_count(&p.requests, T0 + SEC(60)) == 2 &&
		  endpoint_window_count(&p.requests, T0 + SEC(81)) == 1,
		  "reconfigure: ... with their times (they expire 60 s after each was sent)", NULL);
	endpoint_policy_free(&p);

	/* a window that has wrapped round (its oldest not in slot 0) is copied in order */
	endpoint_policy_init(&p, 1000, 2, 0, true);
	round_trip(&p, T0, SWARM_SIGNAL_SUCCESS);
	round_trip(&p, T0 + SEC(31), SWARM_SIGNAL_SUCCESS);
	check(endpoint_may_send(&p, T0 + SEC(62), 0, &retry_at), "rpm 2: a third goes once the first expired", NULL);
	round_trip(&p, T0 + SEC(62), SWARM_SIGNAL_SUCCESS);
	endpoint_policy_reconfigure(&p, 1000, 5, 0, true, T0 + SEC(63));
	check(endpoint_window_count(&p.requests, T0 + SEC(63)) == 2 &&
		  endpoint_window_count(&p.requests, T0 + SEC(91)) == 1 &&
		  endpoint_window_count(&p.requests, T0 + SEC(122)) == 0,
		  "reconfigure: a wrapped window is copied oldest first", NULL);
	endpoint_policy_free(&p);
}

static void
test_tokens(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	TimestampTz retry_at;
	Sent		s;

	/* 12000 a minute: 200 a second, a bucket of 100 */
	endpoint_policy_init(&p, 1000, 0, 12000, true);
	check(endpoint_may_send(&p, now, 80, &retry_at), "tpm 12000: 80 tokens go at once", NULL);
	s = send_one(&p, now, 80);
	checkf(endpoint_window_total(&p.tokens, now) == 80 && p.token_pace.level == 20,
		   "tpm: the estimate is charged at send (window 80, bucket 100 - 80)",
		   "window " INT64_FORMAT ", bucket %g", endpoint_window_total(&p.tokens, now), p.token_pace.level);
	/* 60 missing at 200 a second */
	checkf(!endpoint_may_send(&p, now, 80, &retry_at) &&
		   same_reason(p.wait_reason, "tokens_per_minute (paced)") &&
		   llabs(retry_at - (now + MS(300))) <= 1,
		   "tpm: another 80 must wait 0.3 s (paced)",
		   "reason %s, retry_at now + " INT64_FORMAT " us",
		   p.wait_reason ? p.wait_reason : "NULL", retry_at - now);
	endpoint_note_tokens_used(&p, s.seq, 80, 20);
	answer(&p, now, &s, SWARM_SIGNAL_SUCCESS, 100, 4);
	checkf(endpoint_window_total(&p.tokens, now) == 20 && p.token_pace.level == 80,
		   "tpm: 20 used of 80 estimated: the window holds 20, the bucket gets 60 back",
		   "window " INT64_FORMAT ", bucket %g", endpoint_window_total(&p.tokens, now), p.token_pace.level);
	check(endpoint_may_send(&p, now, 80, &retry_at), "tpm: ... so another 80 go at once", NULL);

	/* under-estimated: the bucket pays the rest */
	s = send_one(&p, now, 80);
	endpoint_note_tokens_used(&p, s.seq, 80, 130);
	answer(&p, now, &s, SWARM_SIGNAL_SUCCESS, 100, 100);
	checkf(endpoint_window_total(&p.tokens, now) == 150 && p.token_pace.level == -50,
		   "tpm: 130 used of 80 estimated: the window holds 150, the bucket owes 50",
		   "window " INT64_FORMAT ", bucket %g", endpoint_window_total(&p.tokens, now), p.token_pace.level);
	checkf(!endpoint_may_send(&p, now, 10, &retry_at) && llabs(retry_at - (now + MS(300))) <= 1,
		   "tpm: ... so 10 more wait until 60 have come in (0.3 s)",
		   "retry_at now + " INT64_FORMAT " us", retry_at - now);

	/* the refund never fills the bucket beyond its capacity */
	now += SEC(10);
	s = send_one(&p, now, 90);
	endpoint_note_tokens_used(&p, s.seq, 90, 0);
	answer(&p, now, &s, SWARM_SIGNAL_SUCCESS, 100, 0);
	checkf(p.token_pace.level == 100, "tpm: a refund stops at the bucket's capacity",
		   "bucket %g", p.token_pace.level);
	endpoint_policy_free(&p);
}

static void
test_tokens_large(void)
{
	SwarmEndpointPolicy p;
	TimestampTz retry_at;
	Sent		s;

	/* 1000 a minute, a bucket of 8.33 */
	endpoint_policy_init(&p, 1000, 0, 1000, true);
	check(endpoint_may_send(&p, T0, 5000, &retry_at),
		  "tpm 1000: a request of 5000 goes, alone, when the window is empty", NULL);
	s = send_one(&p, T0, 5000);
	answer(&p, T0, &s, SWARM_SIGNAL_SUCCESS, 100, -1);
	checkf(!endpoint_may_send(&p, T0 + SEC(1), 10, &retry_at) &&
		   same_reason(p.wait_reason, "tokens_per_minute") && retry_at == T0 + SEC(60),
		   "tpm 1000: then nothing goes until it is 60 s old (\"tokens_per_minute\")",
		   "reason %s, retry_at T0 + " INT64_FORMAT " us",
		   p.wait_reason ? p.wait_reason : "NULL", retry_at - T0);
	/* the bucket owes 5000 - 8.33 and refills at 1000 a minute: full again after 300 s */
	checkf(!endpoint_may_send(&p, T0 + SEC(60), 10, &retry_at) &&
		   same_reason(p.wait_reason, "tokens_per_minute (paced)") &&
		   llabs(retry_at - (T0 + SEC(300))) <= 2,
		   "tpm 1000: ... and then the pacing bucket is paid back: 5000 tokens take 300 s",
		   "reason %s, retry_at T0 + %.6f s",
		   p.wait_reason ? p.wait_reason : "NULL", (retry_at - T0) / 1e6);
	endpoint_policy_free(&p);

	endpoint_policy_init(&p, 1000, 0, 1000, true);
	s = send_one(&p, T0, 10);
	answer(&p, T0, &s, SWARM_SIGNAL_SUCCESS, 100, -1);
	check(!endpoint_may_send(&p, T0 + SEC(10), 5000, &retry_at) &&
		  same_reason(p.wait_reason, "tokens_per_minute"),
		  "tpm 1000: a request of 5000 does not go while 10 are in the window", NULL);
	endpoint_policy_free(&p);
}

/* The token window starts with 1024 slots and grows; corrections still land right. */
static void
test_token_window_growth(void)
{
	SwarmEndpointPolicy p;
	Sent		s;
	int64		seq5 = -1;
	int64		seq0 = -1;
	TimestampTz last = T0 + MS(2999);

	endpoint_policy_init(&p, 100000, 0, INT64CONST(1000000000), false);
	for (int i = 0; i < 3000; i++)
	{
		s = send_one(&p, T0 + MS(i), 100);
		answer(&p, T0 + MS(i), &s, SWARM_SIGNAL_SUCCESS, 100, -1);
		if (i == 0)
			seq0 = s.seq;
		if (i == 5)
			seq5 = s.seq;
	}
	checkf(p.tokens.cap >= 3000 && endpoint_window_total(&p.tokens, last) == 300000 &&
		   endpoint_window_count(&p.tokens, last) == 3000,
		   "token window: grows past 1024 events, keeping all 3000",
		   "cap %d, count %d", p.tokens.cap, p.tokens.count);
	endpoint_note_tokens_used(&p, seq5, 100, 40);
	check(endpoint_window_total(&p.tokens, last) == 299940,
		  "token window: a correction after growing changes the total", NULL);
	/* events 0..5 expire at T0 + 60.005 s: 5 x 100 + the corrected 40 leave */
	check(endpoint_window_total(&p.tokens, T0 + SEC(60) + MS(5)) == 299940 - 540,
		  "token window: ... and was stored in the right event (it expires with it)", NULL);
	endpoint_note_tokens_used(&p, seq0, 100, 0);
	check(endpoint_window_total(&p.tokens, T0 + SEC(60) + MS(5)) == 299940 - 540,
		  "token window: correcting an event already expired leaves the total alone", NULL);
	endpoint_policy_free(&p);
}

/* ---------------------------------------------------------------------
 * Circuit breaker and pauses
 * --------------------------------------------------------------------- */

static void
signals(SwarmEndpointPolicy *p, TimestampTz now, int n, SwarmSignal signal)
{
	for (int i = 0; i < n; i++)
		round_trip(p, now, signal);
}

static bool
state_is(SwarmEndpointPolicy *p, TimestampTz now, const char *name, TimestampTz until)
{
	TimestampTz got;

	return strcmp(endpoint_state_name(p, now, &got), name) == 0 && got == until;
}

static void
test_breaker_opens(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	TimestampTz retry_at;

	endpoint_policy_init(&p, 100, 0, 0, true);
	signals(&p, now, 4, SWARM_SIGNAL_FAILURE);
	check(!endpoint_is_down(&p, now) && state_is(&p, now, "ok", 0) && p.consecutive_failures == 4,
		  "breaker: four failures in a row leave it closed", NULL);
	signals(&p, now, 1, SWARM_SIGNAL_FAILURE);
	check(endpoint_is_down(&p, now) && state_is(&p, now, "open", now + SEC(5)) &&
		  p.open_until == now + SEC(5),
		  "breaker: the fifth failure opens it for 5 s (state \"open\" until now + 5 s)", NULL);
	checkf(!endpoint_may_send(&p, now + SEC(1), 0, &retry_at) &&
		   same_reason(p.wait_reason, "breaker open") && retry_at == now + SEC(5),
		   "breaker: open, nothing goes; retry at the end of the cool-down",
		   "reason %s", p.wait_reason ? p.wait_reason : "NULL");
	/* results of requests still out count for nothing while it is open */
	signals(&p, now + SEC(2), 10, SWARM_SIGNAL_FAILURE);
	check(p.open_until == now + SEC(5) && p.opened_count == 1,
		  "breaker: failures while open neither extend nor re-open it", NULL);
	endpoint_policy_free(&p);

	endpoint_policy_init(&p, 100, 0, 0, true);
	signals(&p, now, 5, SWARM_SIGNAL_UNREACHABLE);
	check(endpoint_is_down(&p, now) && state_is(&p, now, "open", now + SEC(5)),
		  "breaker: five UNREACHABLE open it too", NULL);
	endpoint_policy_free(&p);

	endpoint_policy_init(&p, 100, 0, 0, true);
	signals(&p, now, 4, SWARM_SIGNAL_FAILURE);
	signals(&p, now, 1, SWARM_SIGNAL_SUCCESS);
	signals(&p, now, 4, SWARM_SIGNAL_FAILURE);
	check(!endpoint_is_down(&p, now) && p.consecutive_failures == 4,
		  "breaker: a success resets the count (4, success, 4: closed)", NULL);
	endpoint_policy_free(&p);
}

/*
 * NEUTRAL (the request's own fault, a 4xx) says nothing about the endpoint:
 * it neither counts nor resets the failures in a row.  OVERLOAD slows the
 * sending down but does not count towards opening either, nor reset.
 */
static void
test_breaker_neutral_overload(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;

	endpoint_policy_init(&p, 100, 0, 0, true);
	signals(&p, now, 4, SWARM_SIGNAL_FAILURE);
	signals(&p, now, 10, SWARM_SIGNAL_NEUTRAL);
	check(!endpoint_is_down(&p, now) && p.consecutive_failures == 4,
		  "breaker: NEUTRAL does not count (4 failures, 10 neutral: closed, count 4)", NULL);
	signals(&p, now, 1, SWARM_SIGNAL_FAILURE);
	check(endpoint_is_down(&p, now) && state_is(&p, now, "open", now + SEC(5)),
		  "breaker: NEUTRAL does not reset either (4 failures, neutral, 1 failure: open)", NULL);
	endpoint_policy_free(&p);

	endpoint_policy_init(&p, 100, 0, 0, true);
	for (int i = 0; i < 20; i++)
		signals(&p, now += SEC(1), 1, SWARM_SIGNAL_OVERLOAD);
	check(!endpoint_is_down(&p, now) && p.consecutive_failures == 0 && state_is(&p, now, "ok", 0),
		  "breaker: 20 OVERLOAD alone do not open it", NULL);
	signals(&p, now, 4, SWARM_SIGNAL_FAILURE);
	signals(&p, now, 3, SWARM_SIGNAL_OVERLOAD);
	signals(&p, now, 1, SWARM_SIGNAL_FAILURE);
	check(endpoint_is_down(&p, now) && state_is(&p, now, "open", now + SEC(5)),
		  "breaker: OVERLOAD does not reset the count (4 failures, 3 overload, 1 failure: open)", NULL);
	endpoint_policy_free(&p);
}

static void
test_breaker_half_open(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	TimestampTz retry_at;
	Sent		probe;

	endpoint_policy_init(&p, 100, 0, 0, true);
	signals(&p, now, 5, SWARM_SIGNAL_FAILURE);
	check(endpoint_is_down(&p, now + SEC(5) - 1), "breaker: down until the cool-down ends", NULL);
	now += SEC(5);
	check(state_is(&p, now, "half_open", 0), "breaker: cool-down over: state \"half_open\"", NULL);
	check(!endpoint_is_down(&p, now) && p.breaker == SWARM_BREAKER_HALF_OPEN &&
		  endpoint_may_send(&p, now, 0, &retry_at),
		  "breaker: half open, one probe may go", NULL);
	probe = send_one(&p, now, 0);
	checkf(endpoint_is_down(&p, now) && !endpoint_may_send(&p, now, 0, &retry_at) &&
		   same_reason(p.wait_reason, "breaker open") && retry_at == 0 &&
		   state_is(&p, now, "half_open", 0),
		   "breaker: while the probe is out nothing else goes (retry_at 0: its end will tell)",
		   "reason %s, retry_at " INT64_FORMAT, p.wait_reason ? p.wait_reason : "NULL", retry_at);
	answer(&p, now += SEC(1), &probe, SWARM_SIGNAL_NEUTRAL, -1, -1);
	check(!endpoint_is_down(&p, now) && p.breaker == SWARM_BREAKER_HALF_OPEN,
		  "breaker: a NEUTRAL probe says nothing: still half open, another probe may go", NULL);
	probe = send_one(&p, now, 0);
	answer(&p, now += SEC(1), &probe, SWARM_SIGNAL_SUCCESS, 100, -1);
	check(!endpoint_is_down(&p, now) && state_is(&p, now, "ok", 0) && p.opened_count == 0,
		  "breaker: the probe's success closes it and resets the openings", NULL);
	signals(&p, now, 5, SWARM_SIGNAL_FAILURE);
	check(state_is(&p, now, "open", now + SEC(5)),
		  "breaker: opened again after a close: 5 s, not 10", NULL);
	endpoint_policy_free(&p);
}

static void
test_breaker_backoff(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	static const int want[] = {10, 20, 40, 60, 60};
	char		name[128];

	endpoint_policy_init(&p, 100, 0, 0, true);
	signals(&p, now, 5, SWARM_SIGNAL_FAILURE);
	for (int i = 0; i < lengthof(want); i++)
	{
		Sent		probe;

		now = p.open_until;
		(void) endpoint_is_down(&p, now);
		probe = send_one(&p, now, 0);
		answer(&p, now += SEC(1), &probe, SWARM_SIGNAL_FAILURE, -1, -1);
		snprintf(name, sizeof(name), "breaker: failed probe %d re-opens it for %d s", i + 1, want[i]);
		checkf(p.breaker == SWARM_BREAKER_OPEN && p.open_until == now + SEC(want[i]), name,
			   "open for %.3f s", (p.open_until - now) / 1e6);
	}

	/* a probe refused as overloaded has not been answered either */
	now = p.open_until;
	(void) endpoint_is_down(&p, now);
	round_trip(&p, now, SWARM_SIGNAL_OVERLOAD);
	check(p.breaker == SWARM_BREAKER_OPEN && p.open_until == now + SEC(60),
		  "breaker: an OVERLOAD probe re-opens it too", NULL);
	endpoint_policy_free(&p);
}

/*
 * Failures of requests sent before the breaker opened count for nothing,
 * also when they end while it is half open with its probe out: requests out
 * when it opened can end long after its 5 s (timeouts), and must neither
 * re-open it (with the next, longer cool-down) nor end the probe.
 */
static void
test_breaker_straggler(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	Sent		straggler[10];
	Sent		probe;

	endpoint_policy_init(&p, 100, 0, 0, true);
	for (int i = 0; i < 10; i++)
		straggler[i] = send_one(&p, now, 0);
	signals(&p, now += SEC(1), 5, SWARM_SIGNAL_FAILURE);
	now = p.open_until;
	(void) endpoint_is_down(&p, now);
	probe = send_one(&p, now, 0);
	answer(&p, now += SEC(1), &straggler[0], SWARM_SIGNAL_FAILURE, -1, -1);
	checkf(p.breaker == SWARM_BREAKER_HALF_OPEN && p.probe_in_flight,
		   "breaker: a request sent before it opened, failing while half open, does not re-open it",
		   "state %s, open for %.0f s more", p.breaker == SWARM_BREAKER_OPEN ? "open" : "half open",
		   (p.open_until - now) / 1e6);
	answer(&p, now, &straggler[1], SWARM_SIGNAL_NEUTRAL, -1, -1);
	check(p.probe_in_flight, "breaker: nor does its NEUTRAL end end the probe", NULL);
	answer(&p, now, &probe, SWARM_SIGNAL_SUCCESS, 100, -1);
	for (int i = 2; i < 10; i++)
		answer(&p, now, &straggler[i], SWARM_SIGNAL_FAILURE, -1, -1);
	check(p.breaker == SWARM_BREAKER_CLOSED && p.consecutive_failures == 0,
		  "breaker: the probe's success closes it; 8 more such failures after that count for nothing",
		  NULL);
	endpoint_policy_free(&p);
}

static void
test_pause_and_clear(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	TimestampTz retry_at;

	endpoint_policy_init(&p, 100, 0, 0, true);
	endpoint_pause(&p, now + SEC(10), "retry-after");
	endpoint_pause(&p, now + SEC(5), "rate limit header");
	check(p.paused_until == now + SEC(10) && strcmp(p.pause_reason, "retry-after") == 0,
		  "pause: an earlier pause does not shorten a later one", NULL);
	endpoint_pause(&p, now + SEC(20), "quota");
	check(p.paused_until == now + SEC(20) && strcmp(p.pause_reason, "quota") == 0,
		  "pause: a later pause extends it, with its reason", NULL);
	checkf(endpoint_is_down(&p, now) && state_is(&p, now, "paused", now + SEC(20)) &&
		   !endpoint_may_send(&p, now, 0, &retry_at) && same_reason(p.wait_reason, "paused") &&
		   retry_at == now + SEC(20),
		   "pause: down, state \"paused\", refused with retry at its end",
		   "reason %s", p.wait_reason ? p.wait_reason : "NULL");
	check(!endpoint_is_down(&p, now + SEC(20)) && state_is(&p, now + SEC(20), "ok", 0),
		  "pause: over at its end", NULL);
	endpoint_clear(&p);
	check(!endpoint_is_down(&p, now) && state_is(&p, now, "ok", 0) && p.pause_reason == NULL,
		  "endpoint_clear: ends a pause at once", NULL);

	/* open twice (cool-down 10 s), then an administrator changes the endpoint */
	signals(&p, now, 5, SWARM_SIGNAL_FAILURE);
	now = p.open_until;
	(void) endpoint_is_down(&p, now);
	round_trip(&p, now, SWARM_SIGNAL_FAILURE);
	check(p.opened_count == 2 && endpoint_is_down(&p, now), "clear: set-up, opened twice", NULL);
	endpoint_clear(&p);
	check(!endpoint_is_down(&p, now) && state_is(&p, now, "ok", 0) && p.opened_count == 0 &&
		  endpoint_may_send(&p, now, 0, &retry_at),
		  "endpoint_clear: closes the breaker at once", NULL);
	signals(&p, now, 5, SWARM_SIGNAL_FAILURE);
	check(state_is(&p, now, "open", now + SEC(5)),
		  "endpoint_clear: ... and forgets the openings (next cool-down 5 s)", NULL);

	/* a drop cuts the limit; clearing starts it afresh, in slow start */
	endpoint_clear(&p);
	{
		Sent		s[20];

		for (int i = 0; i < 20; i++)
			s[i] = send_one(&p, now, 0);
		answer(&p, now += MS(100), &s[19], SWARM_SIGNAL_OVERLOAD, -1, -1);
		for (int i = 0; i < 19; i++)
			answer(&p, now, &s[i], SWARM_SIGNAL_SUCCESS, 100, -1);
	}
	checkf(p.limit < 20 && !p.slow_start, "clear: set-up, a drop cut the limit", "limit %.1f", p.limit);
	endpoint_clear(&p);
	checkf(p.limit == 64 && p.slow_start && p.nhistory == 0,
		   "endpoint_clear: the adaptive limit starts afresh (64, slow start, no baseline)",
		   "limit %.1f", p.limit);
	endpoint_policy_free(&p);
}

/* ---------------------------------------------------------------------
 * The concurrency limit in endpoint_may_send
 * --------------------------------------------------------------------- */

static void
test_limit_check(void)
{
	SwarmEndpointPolicy p;
	TimestampTz now = T0;
	TimestampTz retry_at;
	Sent		s[3];
	int			went = 0;

	endpoint_policy_init(&p, 3, 0, 0, true);
	for (int i = 0; i < 3; i++)
	{
		went += endpoint_may_send(&p, now, 0, &retry_at);
		s[i] = send_one(&p, now, 0);
	}
	check(went == 3, "limit 3: requests go while fewer than 3 are out", NULL);
	retry_at = -1;
	checkf(!endpoint_may_send(&p, now, 0, &retry_at) &&
		   same_reason(p.wait_reason, "concurrency limit") && retry_at == 0 && p.wait_until == 0,
		   "limit 3: with 3 out the fourth is refused, \"concurrency limit\", retry_at 0",
		   "reason %s, retry_at " INT64_FORMAT, p.wait_reason ? p.wait_reason : "NULL", retry_at);
	answer(&p, now, &s[0], SWARM_SIGNAL_SUCCESS, 100, -1);
	check(endpoint_may_send(&p, now, 0, &retry_at) && p.wait_reason == NULL,
		  "limit 3: a result frees a slot", NULL);

	/* a pause is said before the limit */
	endpoint_pause(&p, now + SEC(1), "retry-after");
	s[0] = send_one(&p, now, 0);
	check(!endpoint_may_send(&p, now, 0, &retry_at) && same_reason(p.wait_reason, "paused"),
		  "limit 3: paused and full, the reason given is the pause", NULL);
	for (int i = 0; i < 3; i++)
		answer(&p, now, &s[i], SWARM_SIGNAL_SUCCESS, 100, -1);
	endpoint_policy_free(&p);
}

int
main(int argc, char **argv)
{
	void		(*areas[]) (void) = {
		test_slow_start, test_limit_cap, test_adaptive_off, test_drops,
		test_queue_detection, test_queue_check, test_calm_spell,
		test_requests_paced, test_requests_window, test_window_expiry,
		test_requests_reconfigure, test_tokens, test_tokens_large, test_token_window_growth,
		test_breaker_opens, test_breaker_neutral_overload, test_breaker_half_open,
		test_breaker_backoff, test_breaker_straggler, test_pause_and_clear,
		test_limit_check,
	};

	/* each area frees its policies; fuzz_backend then sees what was not */
	for (int i = 0; i < lengthof(areas); i++)
	{
		area_begin();
		areas[i] ();
		area_end();
	}
	checkf(leaked_chunks == 0, "endpoint_policy_free gives back all the policy allocated",
		   "%zu chunks left", leaked_chunks);
	printf("1..%d\n", tests);
	return failures > 0 ? 1 : 0;
}
