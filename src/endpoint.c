/*-------------------------------------------------------------------------
 *
 * endpoint.c
 *		When may the worker send to an endpoint, and how does each outcome
 *		change that?  Pure logic on a SwarmEndpointPolicy: no I/O, no SQL.
 *
 * Adaptive concurrency reacts to overload, never to mere slowness.  LLM
 * endpoints answer in 100 ms or in 30 s depending on the answer's length and
 * their load, so "slow" says nothing by itself; two things do:
 *
 *	 - Drops.  A 429, 503, 529 or 408, a timeout, a refused connection: the
 *	   endpoint says it has too much.  The limit is cut to 0.9 x what was in
 *	   flight when the rejected request was sent, at most once per round
 *	   trip (AIMD, as TCP and Netflix's concurrency-limits do).
 *
 *	 - Queueing.  A server whose batch is full (vLLM past max_num_seqs)
 *	   answers everything, later and later: each request waits behind the
 *	   others, so even the fastest answers slow down.  Noise does not move
 *	   them: an endpoint whose latency varies 10x still answers its fastest
 *	   tenth as fast as ever.  So the signal is the 10th percentile of a
 *	   window of at least 200 latencies, each normalised by the tokens it
 *	   produced (latency / (completion_tokens + 16): for a typical time to
 *	   first token and time per token this is about the same for a 5-token
 *	   and a 500-token answer, so a job of long answers does not look like
 *	   overload), against a baseline: the lowest epoch percentile of the
 *	   last two minutes, averaged with up to two others within 25% of it
 *	   (re-measured as epochs age out, like the minimum round-trip time of
 *	   TCP Vegas and Envoy's adaptive concurrency; not the lowest alone, the
 *	   luckiest of many noisy estimates).  When the ratio passes 1.35 in two epochs running (or 2
 *	   in one), the limit is cut in proportion, as a gradient limiter does:
 *	   to limit / ratio, between 0.5x and 0.9x.  A cut is then checked: a
 *	   queue drains when less is sent, so the next epoch judged must show a
 *	   lower ratio (by 5%); if not, the endpoint is just slower now
 *	   (longer prompts, another model behind the name): its latency becomes
 *	   the baseline and the limit is given back.
 *	   Latencies given to us are the endpoint's own: from the request on
 *	   the wire to the reply's arrival as the kernel stamped it (engine.c),
 *	   so time a request waited in curl's queue, or a reply in its socket
 *	   while the worker was busy, does not read as a slow endpoint on a
 *	   CPU-bound machine; and an epoch begun before the last cut, or within
 *	   a round trip after it (the old queue draining), is not judged.
 *	   Epochs group requests by when they were sent, not answered: a group
 *	   of answers that arrived together would hold the fastest of many
 *	   requests at a job's start and the slowest at its end.
 *
 * Growth: the limit starts at 64 (or max_in_flight if lower) and doubles per
 * round trip (+1 per success) until the first signal; after that it grows by
 * one per round trip while it is in use (in flight >= half of it), and
 * after 3 s without a signal, two epochs judged calm among them, doubles
 * again.  It never exceeds
 * max_in_flight and never falls below 1.  With swarm.adaptive_concurrency
 * off it stays at max_in_flight.
 *
 * Budgets: requests per minute and tokens per minute are spent evenly.
 * Providers enforce per-minute limits per second (60,000 RPM as 1,000 a
 * second), so each budget is a bucket refilled at budget / 60 per second
 * holding at most half a second's worth (at least one request): the burst
 * (so a second carries at most 1.5 seconds' worth, after an idle spell).  A
 * sliding 60-second window of what was sent also holds, so no 60-second span
 * ever carries more than the budget.  Tokens are charged at send (prompt
 * estimate + max_tokens) and corrected by the reported usage; a request
 * larger than a full token bucket goes alone.
 *
 * Pauses and the circuit breaker: a Retry-After, an exhausted rate-limit
 * header or an exhausted quota pauses the whole endpoint (outcome.c caps
 * how long); endpoint_clear() ends a pause, closes the breaker and starts the
 * adaptive limit afresh, at once.
 * Five failures in a row open the breaker for a cool-down of 5 s, doubling
 * with each consecutive opening up to 60 s; then one probe is let through
 * (half open), and its success closes the breaker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "endpoint.h"

#define INITIAL_LIMIT			64.0
#define CALM_TO_PROBE_USEC		(3 * USECS_PER_SEC)
#define DECREASE_FACTOR			0.9
#define FAILURES_TO_OPEN		5
#define COOLDOWN_BASE_MS		5000
#define COOLDOWN_MAX_MS			60000

/* queueing detection */
#define TOKEN_OFFSET			16.0	/* latency / (completion tokens + this) */
#define EPOCH_MIN_SIZE			200
#define EPOCH_MAX_SIZE			500
#define EPOCH_PERCENTILE		0.10
#define EPOCH_READ_WHEN_ENDED	0.90
#define EPOCH_MAX_AGE_USEC		(120 * USECS_PER_SEC)
#define BASELINE_MAX_AGE_USEC	(120 * USECS_PER_SEC)
#define QUEUE_TOLERANCE			1.35	/* two epochs in a row above it: queueing */
#define QUEUE_SURE				2.0		/* one epoch above it: queueing */
#define BASELINE_LOWEST			3		/* the baseline: mean of the lowest epochs */
#define QUEUE_CUT_CONFIRMED		0.95	/* after a cut, a ratio 5% lower confirms it */
#define GRADIENT_MIN			0.5
#define GRADIENT_MAX			0.9

/* ---- sliding 60-second windows of (time, amount), the hard budget cap ---- */

static void
window_init(SwarmWindow *w, int cap)
{
	w->cap = Max(cap, 1);
	w->at = palloc0(sizeof(TimestampTz) * w->cap);
	w->amount = palloc0(sizeof(int64) * w->cap);
	w->head = 0;
	w->count = 0;
	w->total = 0;
	w->next_seq = 0;
}

static void
window_expire(SwarmWindow *w, TimestampTz now)
{
	while (w->count > 0 && w->at[w->head] <= now - SWARM_BUDGET_WINDOW_USEC)
	{
		w->total -= w->amount[w->head];
		w->head = (w->head + 1) % w->cap;
		w->count--;
	}
}

/* Append an event; returns its sequence number (for later correction). */
static int64
window_add(SwarmWindow *w, TimestampTz now, int64 amount)
{
	int			slot;

	if (w->count == w->cap)
	{
		/* full: grow (only the token window can get here) */
		int			newcap = w->cap * 2;
		TimestampTz *at = palloc0(sizeof(TimestampTz) * newcap);
		int64	   *am = palloc0(sizeof(int64) * newcap);

		for (int i = 0; i < w->count; i++)
		{
			at[i] = w->at[(w->head + i) % w->cap];
			am[i] = w->amount[(w->head + i) % w->cap];
		}
		pfree(w->at);
		pfree(w->amount);
		w->at = at;
		w->amount = am;
		w->cap = newcap;
		w->head = 0;
	}
	slot = (w->head + w->count) % w->cap;
	w->at[slot] = now;
	w->amount[slot] = amount;
	w->count++;
	w->total += amount;
	return w->next_seq++;
}

int
endpoint_window_count(SwarmWindow *w, TimestampTz now)
{
	window_expire(w, now);
	return w->count;
}

int64
endpoint_window_total(SwarmWindow *w, TimestampTz now)
{
	window_expire(w, now);
	return w->total;
}

/* ---- pacing buckets ---- */

/*
 * A bucket refilled at budget / 60 per second, holding half a second's worth:
 * sending at a steady pace, every second carries a second's worth; after an
 * idle spell the first second may carry a second and a half's (the full
 * bucket, then what refills), never more.
 */
static void
bucket_configure(SwarmBucket *b, double per_minute, double min_capacity, TimestampTz now)
{
	b->rate_per_usec = per_minute / 60.0 / USECS_PER_SEC;
	b->capacity = Max(per_minute / 120.0, min_capacity);
	if (b->at == 0)
	{
		b->level = b->capacity;		/* starts full */
		b->at = now;
	}
	b->level = Min(b->level, b->capacity);
}

static void
bucket_refill(SwarmBucket *b, TimestampTz now)
{
	if (now > b->at)
	{
		b->level = Min(b->capacity, b->level + (now - b->at) * b->rate_per_usec);
		b->at = now;
	}
}

/*
 * Can `amount` be taken now?  (More than a full bucket goes once the bucket
 * is full.)  If not, *when says when it can.
 */
static bool
bucket_allows(SwarmBucket *b, double amount, TimestampTz now, TimestampTz *when)
{
	double		need = Min(amount, b->capacity);

	bucket_refill(b, now);
	if (b->level >= need)
		return true;
	*when = now + (TimestampTz) ceil((need - b->level) / b->rate_per_usec);
	return false;
}

/* ---- configuration ---- */

void
endpoint_policy_init(SwarmEndpointPolicy *p, int max_in_flight,
					 int requests_per_minute, int64 tokens_per_minute, bool adaptive)
{
	memset(p, 0, sizeof(*p));
	p->limit = Min(INITIAL_LIMIT, (double) max_in_flight);
	p->slow_start = true;
	p->breaker = SWARM_BREAKER_CLOSED;
	for (int i = 0; i < SWARM_LATENCY_EPOCHS; i++)
		p->epochs[i].samples = palloc(sizeof(float) * EPOCH_MAX_SIZE);
	window_init(&p->requests, requests_per_minute > 0 ? requests_per_minute : 1);
	window_init(&p->tokens, 1024);
	endpoint_policy_reconfigure(p, max_in_flight, requests_per_minute, tokens_per_minute,
								adaptive, 0);
}

void
endpoint_policy_reconfigure(SwarmEndpointPolicy *p, int max_in_flight,
							int requests_per_minute, int64 tokens_per_minute,
							bool adaptive, TimestampTz now)
{
	p->max_in_flight = Max(max_in_flight, 1);
	p->adaptive = adaptive;
	if (!adaptive)
		p->limit = p->max_in_flight;
	p->limit = Min(p->limit, (double) p->max_in_flight);
	if (requests_per_minute > p->requests.cap)
	{
		/* keep what was sent: it still counts against the budget */
		SwarmWindow old = p->requests;

		window_init(&p->requests, requests_per_minute);
		for (int i = 0; i < old.count; i++)
			window_add(&p->requests, old.at[(old.head + i) % old.cap], 1);
		pfree(old.at);
		pfree(old.amount);
	}
	p->requests_per_minute = requests_per_minute;
	p->tokens_per_minute = tokens_per_minute;
	if (requests_per_minute > 0)
		bucket_configure(&p->request_pace, requests_per_minute, 1.0, now);
	if (tokens_per_minute > 0)
		bucket_configure(&p->token_pace, (double) tokens_per_minute, 1.0, now);
}

void
endpoint_policy_free(SwarmEndpointPolicy *p)
{
	pfree(p->requests.at);
	pfree(p->requests.amount);
	pfree(p->tokens.at);
	pfree(p->tokens.amount);
	for (int i = 0; i < SWARM_LATENCY_EPOCHS; i++)
		pfree(p->epochs[i].samples);
}

/*
 * An administrator changed the endpoint (or reloaded the settings): what was
 * learnt of it under the old settings no longer holds.  End any pause, close
 * the breaker, and start the adaptive limit afresh (a limit cut by timeouts
 * under a shorter request_timeout, say, would otherwise hold the endpoint
 * down long after the timeout was raised).  Results of requests sent before
 * feed no epoch of the new start.
 */
void
endpoint_clear(SwarmEndpointPolicy *p)
{
	p->paused_until = 0;
	p->pause_reason = NULL;
	p->breaker = SWARM_BREAKER_CLOSED;
	p->open_until = 0;
	p->opened_count = 0;
	p->consecutive_failures = 0;
	p->probe_in_flight = false;

	p->limit = p->adaptive ? Min(INITIAL_LIMIT, (double) p->max_in_flight) : p->max_in_flight;
	p->slow_start = true;
	p->last_decrease = 0;
	p->last_overload = 0;
	p->judge_from = 0;
	p->rtt_ms = 0;
	for (int i = 0; i < SWARM_LATENCY_EPOCHS; i++)
		p->epochs[i].id = 0;
	p->nhistory = 0;
	p->high_windows = 0;
	p->calm_epochs = 0;
	p->queue_ratio = 0;
	p->queue_cut_ratio = 0;
}

/* ---- sending ---- */

/* Paused, or the breaker open (or half open with its probe out). */
bool
endpoint_is_down(SwarmEndpointPolicy *p, TimestampTz now)
{
	if (p->paused_until > now)
		return true;
	if (p->breaker == SWARM_BREAKER_OPEN)
	{
		if (p->open_until > now)
			return true;
		p->breaker = SWARM_BREAKER_HALF_OPEN;
		p->probe_in_flight = false;
	}
	if (p->breaker == SWARM_BREAKER_HALF_OPEN && p->probe_in_flight)
		return true;
	return false;
}

/* Remember why the last request could not go, for swarm.endpoint_status. */
static bool
refuse(SwarmEndpointPolicy *p, const char *why, TimestampTz until, TimestampTz *retry_at)
{
	p->wait_reason = why;
	p->wait_until = until;
	*retry_at = until;
	return false;
}

/*
 * May one more request of `tokens` go out now?  If not, *retry_at says when
 * the reason ends (0 when it is the concurrency limit: a completion will
 * free a slot), and wait_reason says what it is.
 */
bool
endpoint_may_send(SwarmEndpointPolicy *p, TimestampTz now, int64 tokens, TimestampTz *retry_at)
{
	TimestampTz when = 0;

	*retry_at = 0;
	if (endpoint_is_down(p, now))
	{
		if (p->paused_until > now)
			return refuse(p, "paused", p->paused_until, retry_at);
		return refuse(p, "breaker open",
					  p->breaker == SWARM_BREAKER_OPEN ? p->open_until : 0, retry_at);
	}
	if (p->in_flight >= Max((int) p->limit, 1))
		return refuse(p, "concurrency limit", 0, retry_at);
	if (p->requests_per_minute > 0)
	{
		if (endpoint_window_count(&p->requests, now) >= p->requests_per_minute)
			return refuse(p, "requests_per_minute",
						  p->requests.at[p->requests.head] + SWARM_BUDGET_WINDOW_USEC, retry_at);
		if (!bucket_allows(&p->request_pace, 1.0, now, &when))
			return refuse(p, "requests_per_minute (paced)", when, retry_at);
	}
	if (p->tokens_per_minute > 0)
	{
		int64		used = endpoint_window_total(&p->tokens, now);

		/* a request larger than the whole budget still goes, alone */
		if (used > 0 && used + tokens > p->tokens_per_minute)
			return refuse(p, "tokens_per_minute",
						  p->tokens.at[p->tokens.head] + SWARM_BUDGET_WINDOW_USEC, retry_at);
		if (!bucket_allows(&p->token_pace, (double) tokens, now, &when))
			return refuse(p, "tokens_per_minute (paced)", when, retry_at);
	}
	p->wait_reason = NULL;
	p->wait_until = 0;
	return true;
}

/*
 * The epoch a request sent now belongs to: the current one until it has
 * taken its size, then a new one (which reuses the oldest slot).
 */
static int64
epoch_for_send(SwarmEndpointPolicy *p, TimestampTz now)
{
	SwarmLatencyEpoch *e = &p->epochs[p->epoch_id % SWARM_LATENCY_EPOCHS];

	if (p->epoch_id == 0 || e->id != p->epoch_id || e->sent >= e->size ||
		now - e->started > EPOCH_MAX_AGE_USEC)
	{
		p->epoch_id++;
		e = &p->epochs[p->epoch_id % SWARM_LATENCY_EPOCHS];
		e->id = p->epoch_id;
		e->started = now;
		/*
		 * The first epoch is the first round trip, sent at once before
		 * anything is known: of those, the fastest tenth is the cleanest
		 * measure of the unloaded endpoint there will be.
		 */
		e->size = p->epoch_id == 1 ? Max((int) p->limit, 20) :
			Max(EPOCH_MIN_SIZE, Min((int) p->limit, EPOCH_MAX_SIZE));
		e->sent = e->ended = e->nsamples = 0;
		e->slow_start = p->slow_start;
	}
	e->sent++;
	return e->id;
}

/* A request of `tokens` is going out now: what it charges, to give back with its result. */
SwarmEndpointCharge
endpoint_note_sent(SwarmEndpointPolicy *p, TimestampTz now, int64 tokens)
{
	SwarmEndpointCharge c;

	c.sent_at = now;
	c.tokens = tokens;
	c.in_flight_before = p->in_flight;
	c.epoch = epoch_for_send(p, now);
	c.token_seq = -1;
	p->in_flight++;
	if (p->breaker == SWARM_BREAKER_HALF_OPEN)
		p->probe_in_flight = true;
	if (p->requests_per_minute > 0)
	{
		window_add(&p->requests, now, 1);
		bucket_refill(&p->request_pace, now);
		p->request_pace.level -= 1.0;
	}
	/* windows are kept only for budgets: at 20,000 requests/s they weigh */
	if (p->tokens_per_minute > 0)
	{
		bucket_refill(&p->token_pace, now);
		p->token_pace.level -= (double) tokens;
		c.token_seq = window_add(&p->tokens, now, tokens);
	}
	return c;
}

/* Replace the estimate charged at send by the tokens the endpoint reported. */
void
endpoint_note_tokens_used(SwarmEndpointPolicy *p, int64 seq, int64 estimated, int64 actual)
{
	SwarmWindow *w = &p->tokens;
	int64		oldest = w->next_seq - w->count;

	if (seq < 0 || actual < 0)
		return;
	/* the pacing bucket gets back what was over-charged (or pays the rest) */
	p->token_pace.level = Min(p->token_pace.capacity,
							  p->token_pace.level + (double) (estimated - actual));
	if (seq < oldest || seq >= w->next_seq)
		return;					/* already out of the window */
	w->amount[(w->head + (seq - oldest)) % w->cap] = actual;
	w->total += actual - estimated;
}

/* ---- what outcomes do ---- */

static void
open_breaker(SwarmEndpointPolicy *p, TimestampTz now)
{
	int			cooldown = COOLDOWN_BASE_MS << Min(p->opened_count, 4);

	p->breaker = SWARM_BREAKER_OPEN;
	p->opened_at = now;
	p->open_until = TimestampTzPlusMilliseconds(now, Min(cooldown, COOLDOWN_MAX_MS));
	p->opened_count++;
	p->probe_in_flight = false;
}

/* The k-th smallest of v[0..n) (0-based); reorders v.  Quickselect. */
static float
select_kth(float *v, int n, int k)
{
	int			lo = 0,
				hi = n - 1;

	while (lo < hi)
	{
		float		pivot = v[(lo + hi) / 2];
		int			i = lo,
					j = hi;

		while (i <= j)
		{
			while (v[i] < pivot)
				i++;
			while (v[j] > pivot)
				j--;
			if (i <= j)
			{
				float		t = v[i];

				v[i++] = v[j];
				v[j--] = t;
			}
		}
		if (k <= j)
			hi = j;
		else if (k >= i)
			lo = i;
		else
			break;
	}
	return v[k];
}

/* Cut the limit to `factor` of itself, at most once per round trip. */
static void
decrease(SwarmEndpointPolicy *p, TimestampTz now, double basis, double factor)
{
	double		rtt_ms = Max(p->rtt_ms, 10.0);

	p->slow_start = false;
	p->last_overload = now;
	if (now - p->last_decrease < (int64) (rtt_ms * 1000))
		return;
	p->limit = Max(1.0, floor(basis * factor));
	p->last_decrease = now;
	p->calm_epochs = 0;
	/* what was queued under the old limit takes about a round trip to drain */
	p->judge_from = now + (int64) (rtt_ms * 1000);
	p->high_windows = 0;
}

/*
 * The unloaded latency: the lowest epoch percentile of the recent ones,
 * averaged with up to BASELINE_LOWEST - 1 others within 25% of it (the
 * lowest alone is the luckiest of many noisy estimates, and would make
 * ordinary noise look like queueing; epochs much above it are loaded ones
 * and must not raise it).
 */
static double
baseline_of(const SwarmEndpointPolicy *p)
{
	double		lowest[BASELINE_LOWEST];
	int			n = 0;
	double		sum = 0;
	int			used = 0;

	for (int i = 0; i < p->nhistory; i++)
	{
		double		v = p->history_low[i];
		int			j;

		if (n < BASELINE_LOWEST)
			n++;
		else if (v >= lowest[n - 1])
			continue;
		/* insert v into the sorted lowest[0..n) */
		for (j = n - 1; j > 0 && lowest[j - 1] > v; j--)
			lowest[j] = lowest[j - 1];
		lowest[j] = v;
	}
	for (int i = 0; i < n && lowest[i] <= 1.25 * lowest[0]; i++)
	{
		sum += lowest[i];
		used++;
	}
	return used > 0 ? sum / used : 0;
}

/*
 * An epoch has (nearly) ended: take its 10th percentile (requests still out
 * count as slower than any answer), compare it with the baseline, remember
 * it, and cut the limit if requests queue.
 */
static void
judge_epoch(SwarmEndpointPolicy *p, SwarmLatencyEpoch *e, TimestampTz now)
{
	int			k = (int) (e->sent * EPOCH_PERCENTILE);
	double		low;
	double		baseline;
	int			keep = 0;

	e->id = 0;					/* judged: later results of it are ignored */
	if (k >= e->nsamples)
		return;					/* too few answers (failures) to say */
	low = select_kth(e->samples, e->nsamples, k);

	/* keep the last two minutes' epochs, this one included */
	for (int i = 0; i < p->nhistory; i++)
	{
		if (p->history_at[i] <= now - BASELINE_MAX_AGE_USEC)
			continue;
		p->history_low[keep] = p->history_low[i];
		p->history_at[keep] = p->history_at[i];
		keep++;
	}
	if (keep == SWARM_LATENCY_HISTORY)
	{
		/* full: drop the oldest */
		memmove(&p->history_low[0], &p->history_low[1], sizeof(double) * (keep - 1));
		memmove(&p->history_at[0], &p->history_at[1], sizeof(TimestampTz) * (keep - 1));
		keep--;
	}
	p->history_low[keep] = low;
	p->history_at[keep] = now;
	p->nhistory = keep + 1;
	baseline = baseline_of(p);

	/*
	 * An epoch sent partly under a limit since cut, or while what was queued
	 * under it drained, says nothing of the new one.
	 */
	if (e->started < p->judge_from)
		return;
	p->queue_ratio = baseline > 0 ? low / baseline : 1.0;

	/*
	 * The first epoch judged after a cut for queueing tells whether it was:
	 * a queue drains when fewer requests are sent, slowness does not (longer
	 * prompts, a bigger model behind the same name).  If the ratio did not
	 * come down at all, this is the endpoint's new normal: it becomes the
	 * baseline and the limit is given back.  (Only cuts made from a steady
	 * limit are checked so: an epoch sent while the limit still doubled
	 * mixes loads, and its ratio is no yardstick.)
	 */
	if (p->queue_cut_ratio > 0)
	{
		bool		drained = p->queue_ratio < p->queue_cut_ratio * QUEUE_CUT_CONFIRMED;

		p->queue_cut_ratio = 0;
		if (!drained)
		{
			p->limit = Max(p->limit, p->queue_cut_from);
			p->history_low[0] = low;
			p->history_at[0] = now;
			p->nhistory = 1;
			p->queue_ratio = 1.0;
			p->high_windows = 0;
			return;
		}
	}
	if (p->queue_ratio > QUEUE_TOLERANCE)
	{
		p->high_windows++;
		p->calm_epochs = 0;
	}
	else
	{
		p->high_windows = 0;
		p->calm_epochs++;
	}
	if (p->adaptive &&
		(p->high_windows >= 2 || p->queue_ratio > QUEUE_SURE))
	{
		double		before = p->limit;

		decrease(p, now, p->limit,
				 Max(GRADIENT_MIN, Min(GRADIENT_MAX, 1.0 / p->queue_ratio)));
		if (p->limit < before && !e->slow_start)
		{
			p->queue_cut_ratio = p->queue_ratio;
			p->queue_cut_from = before;
		}
	}
}

/*
 * A request of `epoch` ended; `latency_ms` >= 0 when it was answered (the
 * endpoint's own time).  Judges the epoch once it is full and 90% ended.
 */
static void
note_epoch_end(SwarmEndpointPolicy *p, int64 epoch, TimestampTz now, double latency_ms,
			   int completion_tokens)
{
	SwarmLatencyEpoch *e = &p->epochs[epoch % SWARM_LATENCY_EPOCHS];
	double		tokens = completion_tokens > 0 ? completion_tokens : TOKEN_OFFSET;

	if (latency_ms > 0)
		p->rtt_ms = p->rtt_ms <= 0 ? latency_ms : 0.9 * p->rtt_ms + 0.1 * latency_ms;
	if (epoch <= 0 || e->id != epoch)
		return;					/* judged already, or its slot reused */
	e->ended++;
	if (latency_ms > 0 && e->nsamples < EPOCH_MAX_SIZE)
		e->samples[e->nsamples++] = (float) (latency_ms / (tokens + TOKEN_OFFSET));
	if (e->sent >= e->size && e->ended >= e->sent * EPOCH_READ_WHEN_ENDED)
		judge_epoch(p, e, now);
}

/*
 * The request that `charge` was sent with ended with `signal` after
 * `latency_ms` (with the worker's own delays taken out), having produced
 * `completion_tokens` (-1: unknown).
 */
void
endpoint_note_result(SwarmEndpointPolicy *p, const SwarmEndpointCharge *charge, TimestampTz now,
					 SwarmSignal signal, double latency_ms, int completion_tokens)
{
	bool		drop = (signal == SWARM_SIGNAL_OVERLOAD || signal == SWARM_SIGNAL_UNREACHABLE);

	p->in_flight = Max(p->in_flight - 1, 0);
	note_epoch_end(p, charge->epoch, now, signal == SWARM_SIGNAL_SUCCESS ? latency_ms : -1,
				   completion_tokens);

	/* adaptive limit */
	if (drop && p->adaptive)
		decrease(p, now, Min(p->limit, (double) Max(charge->in_flight_before, 1)),
				 DECREASE_FACTOR);
	else if (signal == SWARM_SIGNAL_SUCCESS && p->in_flight + 1 >= p->limit / 2)
	{
		/*
		 * Grow only while the limit is in use.  After a calm spell, probe
		 * upwards fast again: the endpoint may have gained capacity.
		 */
		if (!p->slow_start && now - p->last_overload > CALM_TO_PROBE_USEC &&
			p->calm_epochs >= 2)
			p->slow_start = true;
		p->limit += p->slow_start ? 1.0 : 1.0 / p->limit;
		p->limit = Min(p->limit, (double) p->max_in_flight);
	}

	/*
	 * Breaker.  A request sent before it last opened failed for what made
	 * it open: that says nothing of the endpoint now (it may end long
	 * after, when the breaker is half open and its probe out), so it
	 * neither counts nor re-opens it, nor ends the probe.  A success says
	 * the endpoint answers, whenever it was sent.
	 */
	if (signal != SWARM_SIGNAL_SUCCESS && charge->sent_at < p->opened_at)
		return;
	if (signal == SWARM_SIGNAL_SUCCESS)
	{
		p->consecutive_failures = 0;
		if (p->breaker == SWARM_BREAKER_HALF_OPEN)
		{
			p->breaker = SWARM_BREAKER_CLOSED;
			p->opened_count = 0;
		}
	}
	else if (signal != SWARM_SIGNAL_NEUTRAL)
	{
		bool		failure = (signal == SWARM_SIGNAL_FAILURE || signal == SWARM_SIGNAL_UNREACHABLE);

		if (p->breaker == SWARM_BREAKER_HALF_OPEN)
			open_breaker(p, now);
		else if (p->breaker == SWARM_BREAKER_CLOSED && failure &&
				 ++p->consecutive_failures >= FAILURES_TO_OPEN)
		{
			p->consecutive_failures = 0;
			open_breaker(p, now);
		}
	}
	if (p->breaker == SWARM_BREAKER_HALF_OPEN && signal == SWARM_SIGNAL_NEUTRAL)
		p->probe_in_flight = false;
}

/* Stop sending until `until`; a later pause wins. */
void
endpoint_pause(SwarmEndpointPolicy *p, TimestampTz until, const char *reason)
{
	if (until > p->paused_until)
	{
		p->paused_until = until;
		p->pause_reason = reason;
	}
}

const char *
endpoint_state_name(SwarmEndpointPolicy *p, TimestampTz now, TimestampTz *until)
{
	*until = 0;
	if (p->paused_until > now)
	{
		*until = p->paused_until;
		return "paused";
	}
	if (p->breaker == SWARM_BREAKER_OPEN && p->open_until > now)
	{
		*until = p->open_until;
		return "open";
	}
	if (p->breaker != SWARM_BREAKER_CLOSED)
		return "half_open";
	return "ok";
}
