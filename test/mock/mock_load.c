/*
 * mock_load.c
 *	  How mock_llm behaves under load, the way a real endpoint does: random
 *	  latencies, completions whose length (and so latency) varies, a server
 *	  that serves at most K requests at once and queues the rest, and a
 *	  provider that refuses requests past N per second.
 *
 * Randomness.  Every worker thread has its own xorshift64* generator in
 * thread-local storage, so sampling takes no lock and threads never contend.
 * With --seed N each thread's generator starts from a mix of N and the
 * thread's index, so a run with --threads 1 and the same requests in the
 * same order samples the same latencies and word counts; without --seed the
 * clock seeds it.
 *
 * Normal deviates come from Marsaglia's polar method (libm's exp, log and
 * sqrt).
 *
 * Distributions (MockDist, parsed once from the command line):
 *	 fixed:MS                  always MS
 *	 uniform:MIN-MAX           uniform on [MIN, MAX] (integers for --words)
 *	 lognormal:MEDIAN,SIGMA    MEDIAN * e^(SIGMA * Z), Z standard normal
 *	 heavytail:MEDIAN,SIGMA,P,MULT
 *	                           the lognormal, times MULT with probability P
 * Every latency sample is capped at MOCK_MAX_SAMPLE_MS (10 minutes), so a
 * typo in SIGMA cannot park a request for a day.
 *
 * --saturate K.  "In service" is a reply waiting out its latency while
 * holding one of K process-wide slots; a reply that finds all K taken joins
 * one FIFO shared by all threads and is not timed at all until a slot comes
 * (no sleeping, no polling).  Releasing a slot (the service time is over, or
 * the client left) hands it straight to the head of the FIFO: the waiter is
 * marked granted and moved to its own worker's inbox, and that worker's
 * eventfd is written if the inbox was empty, so the worker wakes, arms the
 * waiter's timer from the moment of the grant, and carries on.  The mutex
 * guards the counts, the FIFO, every inbox and every waiter's links and
 * state; it is held for a few pointer moves, never across I/O.  A worker
 * only frees a waiter after slot_release() has taken it out of whatever list
 * it was in, so another thread never sees a freed waiter.
 *
 * --rps-limit N.  One atomic 64-bit word holds (wall-clock second, requests
 * admitted in it); a compare-and-swap admits a request or says the window
 * is full.  The window is the calendar second, as providers that quantize
 * per-minute limits to per-second ones behave: a burst at the start of a
 * second gets N through and the rest refused until the next second.
 */
#define _GNU_SOURCE
#include <float.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <math.h>

#include "mock.h"

#define MAX_WORDS			1000000
#define MAX_SIGMA			10.0

static _Thread_local uint64_t random_state = 0x9e3779b97f4a7c15ULL;

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t slots_in_service;	/* granted or serving */
static int64_t slots_queued;
static MockSlotWaiter *queue_head;
static MockSlotWaiter *queue_tail;

static atomic_uint_fast64_t rps_window;	/* second << 32 | admitted */


uint64_t
mock_monotonic_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t) now.tv_sec * 1000000000u + (uint64_t) now.tv_nsec;
}


/* ---- randomness ---- */

static uint64_t
seed_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Seed the calling thread's generator; INDEX tells threads apart. */
void
random_seed_thread(int index)
{
	uint64_t	base = mock_config.seed_given ? mock_config.seed : mock_monotonic_ns();

	random_state = seed_mix(base ^ seed_mix((uint64_t) index + 1));
	if (random_state == 0)
		random_state = 1;		/* xorshift never leaves 0 */
}

uint64_t
random_next(void)
{
	uint64_t	x = random_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	random_state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* Uniform on [0, 1), 53 random bits. */
double
random_unit(void)
{
	return (double) (random_next() >> 11) * (1.0 / 9007199254740992.0);
}


/* A standard normal deviate (Marsaglia's polar method). */
static double
random_normal(void)
{
	for (;;)
	{
		double		u = 2.0 * random_unit() - 1.0;
		double		v = 2.0 * random_unit() - 1.0;
		double		s = u * u + v * v;

		if (s > 0.0 && s < 1.0)
			return u * sqrt(-2.0 * log(s) / s);
	}
}

/* ---- distributions ---- */

/*
 * Read a non-negative number at *AT into *VALUE and advance; false if there
 * is none.  strtod alone would also take signs, "inf", "nan" and hex.
 */
static bool
read_number(const char **at, double *value)
{
	char	   *end;

	if (**at < '0' || **at > '9')
	{
		if (**at != '.' || (*at)[1] < '0' || (*at)[1] > '9')
			return false;
	}
	if ((*at)[0] == '0' && ((*at)[1] | 0x20) == 'x')
		return false;
	*value = strtod(*at, &end);
	if (end == *at || !(*value >= 0.0 && *value <= DBL_MAX))
		return false;
	*at = end;
	return true;
}

static bool
is_integer(double value)
{
	return value == (double) (int64_t) value;
}

/*
 * Parse a distribution SPEC into DIST.  WORDS says it is for --words:
 * only uniform (integer bounds) and lognormal, bounded by MAX_WORDS.
 * Returns NULL, or what is wrong.
 */
const char *
dist_parse(const char *spec, bool words, MockDist *dist)
{
	const char *colon = strchr(spec, ':');
	const char *at;
	size_t		name_len;
	double		limit = words ? (double) MAX_WORDS : MOCK_MAX_SAMPLE_MS;

	memset(dist, 0, sizeof(*dist));
	if (colon == NULL)
		return words ? "expected N, uniform:MIN-MAX or lognormal:MEDIAN,SIGMA"
			: "expected fixed:MS, uniform:MIN-MAX, lognormal:MEDIAN,SIGMA or heavytail:MEDIAN,SIGMA,P,MULT";
	name_len = (size_t) (colon - spec);
	at = colon + 1;

#define NAME_IS(word) (name_len == strlen(word) && strncmp(spec, word, name_len) == 0)
	if (NAME_IS("fixed") && !words)
	{
		dist->kind = DIST_FIXED;
		if (!read_number(&at, &dist->a) || *at != '\0')
			return "fixed:MS needs one number";
		if (dist->a > limit)
			return "fixed:MS must be at most 600000 (10 minutes)";
	}
	else if (NAME_IS("uniform"))
	{
		dist->kind = DIST_UNIFORM;
		if (!read_number(&at, &dist->a) || *at++ != '-' ||
			!read_number(&at, &dist->b) || *at != '\0')
			return "uniform:MIN-MAX needs two numbers";
		if (dist->a > dist->b)
			return "uniform:MIN-MAX needs MIN <= MAX";
		if (dist->b > limit)
			return words ? "uniform:MIN-MAX must stay within 0..1000000"
				: "uniform:MIN-MAX must stay within 0..600000 ms (10 minutes)";
		if (words && (!is_integer(dist->a) || !is_integer(dist->b)))
			return "uniform:MIN-MAX needs whole numbers of words";
	}
	else if (NAME_IS("lognormal") || (NAME_IS("heavytail") && !words))
	{
		bool		heavy = NAME_IS("heavytail");

		dist->kind = heavy ? DIST_HEAVYTAIL : DIST_LOGNORMAL;
		if (!read_number(&at, &dist->a) || *at++ != ',' ||
			!read_number(&at, &dist->sigma))
			return heavy ? "heavytail:MEDIAN,SIGMA,P,MULT needs four numbers"
				: "lognormal:MEDIAN,SIGMA needs two numbers";
		if (heavy &&
			(*at++ != ',' || !read_number(&at, &dist->p) ||
			 *at++ != ',' || !read_number(&at, &dist->mult)))
			return "heavytail:MEDIAN,SIGMA,P,MULT needs four numbers";
		if (*at != '\0')
			return "trailing characters after the numbers";
		if (dist->a <= 0.0 || dist->a > limit)
			return words ? "the median must be above 0 and at most 1000000"
				: "the median must be above 0 and at most 600000 ms";
		if (dist->sigma > MAX_SIGMA)
			return "sigma must be at most 10";
		if (heavy && dist->p > 1.0)
			return "P is a probability: 0 to 1";
		if (heavy && dist->mult > 1000000.0)
			return "MULT must be at most 1000000";
	}
	else
		return words ? "expected N, uniform:MIN-MAX or lognormal:MEDIAN,SIGMA"
			: "expected fixed:MS, uniform:MIN-MAX, lognormal:MEDIAN,SIGMA or heavytail:MEDIAN,SIGMA,P,MULT";
#undef NAME_IS
	return NULL;
}

/* The spec back in words, for the start-up log. */
void
dist_describe(const MockDist *dist, char *out, size_t size)
{
	switch (dist->kind)
	{
		case DIST_NONE:
			snprintf(out, size, "none");
			break;
		case DIST_FIXED:
			snprintf(out, size, "fixed %g", dist->a);
			break;
		case DIST_UNIFORM:
			snprintf(out, size, "uniform %g..%g", dist->a, dist->b);
			break;
		case DIST_LOGNORMAL:
			snprintf(out, size, "lognormal median %g sigma %g", dist->a, dist->sigma);
			break;
		case DIST_HEAVYTAIL:
			snprintf(out, size, "lognormal median %g sigma %g, x%g with probability %g",
					 dist->a, dist->sigma, dist->mult, dist->p);
			break;
	}
}

/* One latency sample in ms, capped at 10 minutes. */
static double
dist_sample_ms(const MockDist *dist)
{
	double		value = 0.0;

	switch (dist->kind)
	{
		case DIST_NONE:
			break;
		case DIST_FIXED:
			value = dist->a;
			break;
		case DIST_UNIFORM:
			value = dist->a + (dist->b - dist->a) * random_unit();
			break;
		case DIST_LOGNORMAL:
		case DIST_HEAVYTAIL:
			value = dist->a * exp(dist->sigma * random_normal());
			if (dist->kind == DIST_HEAVYTAIL && random_unit() < dist->p)
				value *= dist->mult;
			break;
	}
	return value > MOCK_MAX_SAMPLE_MS ? MOCK_MAX_SAMPLE_MS : value;
}

/*
 * Filler words for one completion, before the max_tokens cap.  A plain
 * --words N is returned as is (the reply stays a function of the body);
 * distributions draw from the thread's generator.
 */
uint64_t
load_words(void)
{
	const MockDist *dist = &mock_config.words_dist;
	double		value;

	switch (dist->kind)
	{
		case DIST_UNIFORM:
			return (uint64_t) dist->a +
				random_next() % ((uint64_t) dist->b - (uint64_t) dist->a + 1);
		case DIST_LOGNORMAL:
			value = dist->a * exp(dist->sigma * random_normal()) + 0.5;
			return value >= MAX_WORDS ? MAX_WORDS : (uint64_t) value;
		default:
			return (uint64_t) mock_config.words;
	}
}

/*
 * The latency (service time) of one reply, in microseconds: the --latency
 * sample, or --latency-ms plus jitter when --latency was not given, plus
 * COMPLETION_TOKENS x --ms-per-token (itself capped at 10 minutes).
 */
uint64_t
load_latency_us(uint64_t completion_tokens)
{
	uint64_t	latency_us;

	if (mock_config.latency.kind == DIST_NONE)
	{
		uint64_t	ms = (uint64_t) mock_config.latency_ms;

		if (mock_config.jitter_ms > 0)
			ms += random_next() % ((uint64_t) mock_config.jitter_ms + 1);
		latency_us = ms * 1000;
	}
	else
		latency_us = (uint64_t) (dist_sample_ms(&mock_config.latency) * 1000.0 + 0.5);

	if (mock_config.ms_per_token > 0.0 && completion_tokens > 0)
	{
		double		token_ms = (double) completion_tokens * mock_config.ms_per_token;

		if (token_ms > MOCK_MAX_SAMPLE_MS)
			token_ms = MOCK_MAX_SAMPLE_MS;
		latency_us += (uint64_t) (token_ms * 1000.0 + 0.5);
	}
	return latency_us;
}


/* ---- --rps-limit ---- */

/*
 * Admit one request into the current wall-clock second, or say no and set
 * *RESET_MS to the milliseconds left until the next second (1..1000).
 */
bool
load_rps_admit(int limit, uint32_t *reset_ms)
{
	struct timespec now;
	uint64_t	second;
	uint_fast64_t seen;
	uint_fast64_t next;

	clock_gettime(CLOCK_REALTIME, &now);
	second = (uint64_t) now.tv_sec & 0xffffffffu;
	*reset_ms = 1000 - (uint32_t) (now.tv_nsec / 1000000);
	seen = atomic_load_explicit(&rps_window, memory_order_relaxed);
	for (;;)
	{
		if ((seen >> 32) != second)
			next = (second << 32) | 1;
		else if ((seen & 0xffffffffu) >= (uint64_t) limit)
			return false;
		else
			next = seen + 1;
		if (atomic_compare_exchange_weak_explicit(&rps_window, &seen, next,
												  memory_order_relaxed,
												  memory_order_relaxed))
			return true;
	}
}


/* ---- --saturate slots ---- */

static void
list_append(MockSlotWaiter **head, MockSlotWaiter **tail, MockSlotWaiter *waiter)
{
	waiter->next = NULL;
	waiter->prev = *tail;
	if (*tail)
		(*tail)->next = waiter;
	else
		*head = waiter;
	*tail = waiter;
}

static void
list_remove(MockSlotWaiter **head, MockSlotWaiter **tail, MockSlotWaiter *waiter)
{
	if (waiter->prev)
		waiter->prev->next = waiter->next;
	else
		*head = waiter->next;
	if (waiter->next)
		waiter->next->prev = waiter->prev;
	else
		*tail = waiter->prev;
	waiter->prev = waiter->next = NULL;
}

/*
 * Take a slot for WAITER (its service starts at NOW_NS) and return true, or
 * queue it behind the others and return false.  Only called when
 * --saturate is set.
 */
bool
slot_acquire(MockSlotWaiter *waiter, uint64_t now_ns)
{
	bool		got;

	pthread_mutex_lock(&slot_lock);
	/* the FIFO is only ever non-empty while all slots are taken */
	got = slots_in_service < mock_config.saturate;
	if (got)
	{
		slots_in_service++;
		waiter->state = SLOT_SERVING;
		waiter->granted_ns = now_ns;
	}
	else
	{
		list_append(&queue_head, &queue_tail, waiter);
		waiter->state = SLOT_QUEUED;
		slots_queued++;
	}
	pthread_mutex_unlock(&slot_lock);
	return got;
}

/*
 * WAITER is done with the slot system: its service time is over, or its
 * reply is being freed (client gone) while queued, granted or serving.  A
 * slot it held goes to the head of the FIFO, whose worker is woken.
 */
void
slot_release(MockSlotWaiter *waiter)
{
	int			wake_fd = -1;
	uint64_t	one = 1;

	pthread_mutex_lock(&slot_lock);
	switch (waiter->state)
	{
		case SLOT_NONE:
			break;
		case SLOT_QUEUED:
			list_remove(&queue_head, &queue_tail, waiter);
			slots_queued--;
			break;
		case SLOT_GRANTED:
		case SLOT_SERVING:
			if (waiter->state == SLOT_GRANTED)
				list_remove(&waiter->inbox->head, &waiter->inbox->tail, waiter);
			if (queue_head != NULL)
			{
				MockSlotWaiter *next = queue_head;
				MockSlotInbox *inbox = next->inbox;

				/* the slot changes hands: in_service stays the same */
				list_remove(&queue_head, &queue_tail, next);
				slots_queued--;
				next->state = SLOT_GRANTED;
				next->granted_ns = mock_monotonic_ns();
				if (inbox->head == NULL)
					wake_fd = inbox->event_fd;
				list_append(&inbox->head, &inbox->tail, next);
			}
			else
				slots_in_service--;
			break;
	}
	waiter->state = SLOT_NONE;
	pthread_mutex_unlock(&slot_lock);

	if (wake_fd >= 0 && write(wake_fd, &one, sizeof(one)) != sizeof(one))
		mock_log("could not wake a worker for a --saturate slot");
}

/* Next waiter granted a slot for INBOX's worker, now serving; NULL if none. */
MockSlotWaiter *
slot_take_granted(MockSlotInbox *inbox)
{
	MockSlotWaiter *waiter;

	pthread_mutex_lock(&slot_lock);
	waiter = inbox->head;
	if (waiter != NULL)
	{
		list_remove(&inbox->head, &inbox->tail, waiter);
		waiter->state = SLOT_SERVING;
	}
	pthread_mutex_unlock(&slot_lock);
	return waiter;
}

void
slot_counts(int64_t *in_service, int64_t *queued)
{
	pthread_mutex_lock(&slot_lock);
	*in_service = slots_in_service;
	*queued = slots_queued;
	pthread_mutex_unlock(&slot_lock);
}
