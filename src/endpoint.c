/*-------------------------------------------------------------------------
 *
 * endpoint.c
 *		When may the worker send to an endpoint, and how does each outcome
 *		change that?  Pure logic on a SwarmEndpointPolicy: no I/O, no SQL.
 *
 * Adaptive concurrency: AIMD with a slow start, like TCP.  The limit starts
 * at 64 (or max_in_flight if lower) and doubles per round trip (+1 per
 * success) until the first overload signal, so a healthy endpoint is used
 * fully within a few round trips and an overloaded one sees at most one
 * round of excess.  An overload signal cuts the limit to 0.9 x the number of
 * requests that were in flight when the rejected request was sent, at most
 * once per round trip; after that it grows by about one per round trip
 * (+1/limit per success) while the limit is in use, and after two seconds
 * without an overload signal it doubles per round trip again.  Latency counts as
 * an overload signal when its moving average exceeds three times the lowest
 * seen.  The limit never exceeds the endpoint's max_in_flight and never falls
 * below 1.
 *
 * Budgets: requests per minute and tokens per minute are sliding 60-second
 * windows of what was sent, so no 60-second span ever holds more than the
 * budget (a token bucket would allow twice the budget across a refill).
 * Tokens are charged at send (prompt estimate + max_tokens) and corrected by
 * the reported usage when the answer comes.
 *
 * Pauses and the circuit breaker: a Retry-After, an exhausted rate-limit
 * header or an exhausted quota pauses the whole endpoint.  Five failures in
 * a row open the breaker for a cool-down of 5 s, doubling with each
 * consecutive opening up to 60 s; then one probe is let through (half open),
 * and its success closes the breaker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "endpoint.h"

#define INITIAL_LIMIT			64.0
#define CALM_TO_PROBE_USEC		(2 * USECS_PER_SEC)
#define DECREASE_FACTOR			0.9
#define LATENCY_OVERLOAD_RATIO	3.0
#define FAILURES_TO_OPEN		5
#define COOLDOWN_BASE_MS		5000
#define COOLDOWN_MAX_MS			60000

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

void
endpoint_policy_init(SwarmEndpointPolicy *p, int max_in_flight,
					 int requests_per_minute, int64 tokens_per_minute)
{
	memset(p, 0, sizeof(*p));
	p->limit = Min(INITIAL_LIMIT, (double) max_in_flight);
	p->slow_start = true;
	p->breaker = SWARM_BREAKER_CLOSED;
	window_init(&p->requests, requests_per_minute > 0 ? requests_per_minute : 1);
	window_init(&p->tokens, 1024);
	endpoint_policy_reconfigure(p, max_in_flight, requests_per_minute, tokens_per_minute);
}

void
endpoint_policy_reconfigure(SwarmEndpointPolicy *p, int max_in_flight,
							int requests_per_minute, int64 tokens_per_minute)
{
	p->max_in_flight = Max(max_in_flight, 1);
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
}

void
endpoint_policy_free(SwarmEndpointPolicy *p)
{
	pfree(p->requests.at);
	pfree(p->requests.amount);
	pfree(p->tokens.at);
	pfree(p->tokens.amount);
}

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

/*
 * May one more request of `tokens` go out now?  If not, *retry_at says when
 * the budget frees up (0 when it is the concurrency limit: a completion will
 * free a slot).
 */
bool
endpoint_may_send(SwarmEndpointPolicy *p, TimestampTz now, int64 tokens, TimestampTz *retry_at)
{
	*retry_at = 0;
	if (endpoint_is_down(p, now))
	{
		*retry_at = Max(p->paused_until, p->breaker == SWARM_BREAKER_OPEN ? p->open_until : 0);
		return false;
	}
	if (p->in_flight >= Max((int) p->limit, 1))
		return false;
	if (p->requests_per_minute > 0 &&
		endpoint_window_count(&p->requests, now) >= p->requests_per_minute)
	{
		*retry_at = p->requests.at[p->requests.head] + SWARM_BUDGET_WINDOW_USEC;
		return false;
	}
	if (p->tokens_per_minute > 0)
	{
		int64		used = endpoint_window_total(&p->tokens, now);

		/* a request larger than the whole budget still goes, alone */
		if (used > 0 && used + tokens > p->tokens_per_minute)
		{
			*retry_at = p->tokens.at[p->tokens.head] + SWARM_BUDGET_WINDOW_USEC;
			return false;
		}
	}
	return true;
}

/* A request is going out; returns the sequence of its token charge. */
int64
endpoint_note_sent(SwarmEndpointPolicy *p, TimestampTz now, int64 tokens)
{
	p->in_flight++;
	if (p->breaker == SWARM_BREAKER_HALF_OPEN)
		p->probe_in_flight = true;
	if (p->requests_per_minute > 0)
		window_add(&p->requests, now, 1);
	/* windows are kept only for budgets: at 20,000 requests/s they weigh */
	if (p->tokens_per_minute > 0)
		return window_add(&p->tokens, now, tokens);
	return -1;
}

/* Replace the estimate charged at send by the tokens the endpoint reported. */
void
endpoint_note_tokens_used(SwarmEndpointPolicy *p, int64 seq, int64 estimated, int64 actual)
{
	SwarmWindow *w = &p->tokens;
	int64		oldest = w->next_seq - w->count;

	if (seq < 0 || actual < 0 || seq < oldest || seq >= w->next_seq)
		return;					/* already out of the window */
	w->amount[(w->head + (seq - oldest)) % w->cap] = actual;
	w->total += actual - estimated;
}

static void
open_breaker(SwarmEndpointPolicy *p, TimestampTz now)
{
	int			cooldown = COOLDOWN_BASE_MS << Min(p->opened_count, 4);

	p->breaker = SWARM_BREAKER_OPEN;
	p->open_until = TimestampTzPlusMilliseconds(now, Min(cooldown, COOLDOWN_MAX_MS));
	p->opened_count++;
	p->probe_in_flight = false;
}

void
endpoint_note_result(SwarmEndpointPolicy *p, TimestampTz now, SwarmSignal signal,
					 double latency_ms, int in_flight_at_send)
{
	bool		overload = (signal == SWARM_SIGNAL_OVERLOAD);

	p->in_flight = Max(p->in_flight - 1, 0);

	if (signal == SWARM_SIGNAL_SUCCESS && latency_ms > 0)
	{
		if (p->min_latency_ms <= 0 || latency_ms < p->min_latency_ms)
			p->min_latency_ms = latency_ms;
		p->smoothed_latency_ms = p->smoothed_latency_ms <= 0 ? latency_ms :
			0.9 * p->smoothed_latency_ms + 0.1 * latency_ms;
		if (p->smoothed_latency_ms > LATENCY_OVERLOAD_RATIO * p->min_latency_ms &&
			p->min_latency_ms > 1.0)
			overload = true;
	}

	/* adaptive limit */
	if (overload)
	{
		double		rtt_ms = Max(p->smoothed_latency_ms, 10.0);

		if (now - p->last_decrease >= (int64) (rtt_ms * 1000))
		{
			double		basis = Min(p->limit, (double) Max(in_flight_at_send, 1));

			p->limit = Max(1.0, floor(basis * DECREASE_FACTOR));
			p->last_decrease = now;
		}
		p->slow_start = false;
		p->last_overload = now;
	}
	else if (signal == SWARM_SIGNAL_SUCCESS && p->in_flight + 1 >= p->limit / 2)
	{
		/*
		 * Grow only while the limit is actually in use.  After two calm
		 * seconds at the limit, probe upwards fast again: the endpoint may
		 * have gained capacity.
		 */
		if (!p->slow_start && now - p->last_overload > CALM_TO_PROBE_USEC)
			p->slow_start = true;
		p->limit += p->slow_start ? 1.0 : 1.0 / p->limit;
		p->limit = Min(p->limit, (double) p->max_in_flight);
	}

	/* breaker */
	if (signal == SWARM_SIGNAL_SUCCESS)
	{
		p->consecutive_failures = 0;
		if (p->breaker == SWARM_BREAKER_HALF_OPEN)
		{
			p->breaker = SWARM_BREAKER_CLOSED;
			p->opened_count = 0;
		}
	}
	else if (signal == SWARM_SIGNAL_FAILURE || signal == SWARM_SIGNAL_OVERLOAD)
	{
		/* failures of requests sent before the breaker opened count for nothing */
		if (p->breaker == SWARM_BREAKER_HALF_OPEN)
			open_breaker(p, now);
		else if (p->breaker == SWARM_BREAKER_CLOSED && signal == SWARM_SIGNAL_FAILURE &&
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
