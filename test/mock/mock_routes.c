/*
 * mock_routes.c
 *	  Request dispatch for mock_llm, the small endpoints, and the state that
 *	  all worker threads share: counters and the attempt table.
 *
 * routes_answer() maps (method, path) to a filled-in MockReply; it does no
 * I/O and takes no time, so every worker calls it inline.  The chat
 * completion itself lives in mock_chat.c, the Files and Batch APIs
 * (/v1/files..., /v1/batches...) in mock_batch.c.  The reply_* helpers that build
 * headers and OpenAI error bodies live here too, for both.
 *
 * Shared state and its rules:
 *	 - Counters are C11 atomics updated with relaxed ordering; /mock/stats is
 *	   a snapshot that may be a few requests out of date under load, never
 *	   torn per counter.  "inflight" and "connections" are gauges (up and
 *	   down); everything else only counts up until /mock/reset.
 *	 - The attempt table (request identity -> attempts seen) is an
 *	   open-addressing hash table behind attempts_lock.  The lock is held for
 *	   one lookup or for the clear in /mock/reset, nothing else.
 *	 - Two histograms give the percentiles in /mock/stats: the inflight gauge
 *	   as each chat request found it on arrival, and the latency each reply
 *	   actually got (queue wait plus service).  Each is an array of atomic
 *	   counters over log-linear buckets: exact below 64, then 32 buckets per
 *	   power of two (about 3% wide), so recording is one atomic add and a
 *	   percentile is one walk over the array.  The gauges "in_service" and
 *	   "queued" belong to the --saturate slots in mock_load.c.
 *
 * When a chat reply counts: "requests" when the body has arrived,
 * "by_status" and the inflight decrement when its first byte is queued for
 * writing (mock_server.c calls back), "completions" when the last byte of a
 * 200 reply has been written.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

#define MAX_STATUS 600

static atomic_uint_fast64_t stat_requests;
static atomic_uint_fast64_t stat_completions;
static atomic_uint_fast64_t stat_resets;
static atomic_uint_fast64_t stat_by_status[MAX_STATUS];
static atomic_int_fast64_t stat_inflight;
static atomic_int_fast64_t stat_peak_inflight;
static atomic_int_fast64_t stat_connections;
static atomic_int_fast64_t stat_peak_connections;
static atomic_uint_fast64_t completion_id;
static atomic_uint_fast64_t stat_rate_limited_rps;
static atomic_uint_fast64_t stat_files_uploaded;
static atomic_uint_fast64_t stat_batches_created;
static atomic_uint_fast64_t stat_batch_lines;
static atomic_uint_fast64_t stat_batch_lines_failed;

/* A scratch reply buffer larger than this is freed, not kept (file downloads). */
#define REPLY_KEEP_BYTES	(4u * 1024 * 1024)

/* Log-linear histogram: values below 64 exact, then 32 buckets per octave. */
#define HIST_EXACT		64
#define HIST_SUB_BITS	5
#define HIST_BUCKETS	(HIST_EXACT + (64 - 6) * (1 << HIST_SUB_BITS))

typedef struct Histogram
{
	atomic_uint_fast64_t counts[HIST_BUCKETS];
} Histogram;

static Histogram inflight_at_arrival;	/* requests in flight, itself not counted */
static Histogram latency_applied;	/* microseconds */

static pthread_mutex_t attempts_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t *attempt_keys;	/* 0 marks an empty slot */
static uint32_t *attempt_counts;
static size_t attempt_capacity;
static size_t attempt_used;


/* ---- replies ---- */

/*
 * Empty a reply for reuse, keeping its buffers' capacity, unless one grew
 * past REPLY_KEEP_BYTES (a file download): that one is freed.
 */
void
reply_clear(MockReply *reply)
{
	if (reply->body.cap > REPLY_KEEP_BYTES)
		buf_free(&reply->body);
	if (reply->body_tail.cap > REPLY_KEEP_BYTES)
		buf_free(&reply->body_tail);
	reply->status = 200;
	reply->content_type = "application/json";
	reply->body.len = 0;
	reply->fill_bytes = 0;
	reply->body_tail.len = 0;
	reply->extra_headers.len = 0;
	reply->reason[0] = '\0';
	reply->action = MOCK_ANSWER;
	reply->raw = false;
	reply->bad_chunk = false;
	reply->reset_mid = false;
	reply->drip_ms = 0;
	reply->delay_us = 0;
	reply->delay_from_done = false;
	reply->close_after = false;
	reply->is_chat = false;
	reply->holds_inflight = false;
	reply->waits = false;
}

/* NAME and VALUE must not contain CR or LF; callers pass vetted text. */
void
reply_add_header(MockReply *reply, const char *name, const char *value)
{
	buf_append_str(&reply->extra_headers, name);
	buf_append(&reply->extra_headers, ": ", 2);
	buf_append_str(&reply->extra_headers, value);
	buf_append(&reply->extra_headers, "\r\n", 2);
}

/*
 * Make REPLY an OpenAI-shaped error.  MESSAGE, TYPE and CODE are inserted
 * verbatim, so they must be JSON-safe; CODE NULL gives "code":null.
 */
void
reply_openai_error(MockReply *reply, int status, const char *message,
				   const char *type, const char *code)
{
	reply->status = status;
	reply->content_type = "application/json";
	reply->body.len = 0;
	reply->fill_bytes = 0;
	reply->body_tail.len = 0;
	buf_append_str(&reply->body, "{\"error\":{\"message\":\"");
	buf_append_str(&reply->body, message);
	buf_append_str(&reply->body, "\",\"type\":\"");
	buf_append_str(&reply->body, type);
	buf_append_str(&reply->body, "\",\"param\":null,\"code\":");
	if (code != NULL)
	{
		buf_append(&reply->body, "\"", 1);
		buf_append_str(&reply->body, code);
		buf_append(&reply->body, "\"", 1);
	}
	else
		buf_append_str(&reply->body, "null");
	buf_append_str(&reply->body, "}}");
}


/* ---- histograms ---- */

static size_t
hist_bucket(uint64_t value)
{
	int			octave;

	if (value < HIST_EXACT)
		return (size_t) value;
	octave = 63 - __builtin_clzll(value);	/* >= 6 */
	return HIST_EXACT + (size_t) (octave - 6) * (1 << HIST_SUB_BITS) +
		(size_t) ((value >> (octave - HIST_SUB_BITS)) & ((1 << HIST_SUB_BITS) - 1));
}

/* The middle of BUCKET's range of values. */
static double
hist_value(size_t bucket)
{
	size_t		octave;
	uint64_t	sub;
	double		low;
	double		width;

	if (bucket < HIST_EXACT)
		return (double) bucket;
	octave = (bucket - HIST_EXACT) / (1 << HIST_SUB_BITS) + 6;
	sub = (bucket - HIST_EXACT) % (1 << HIST_SUB_BITS);
	width = (double) (1ULL << (octave - HIST_SUB_BITS));
	low = (double) (1ULL << octave) + (double) sub * width;
	return low + (width - 1) / 2;
}

static void
hist_record(Histogram *hist, uint64_t value)
{
	atomic_fetch_add_explicit(&hist->counts[hist_bucket(value)], 1, memory_order_relaxed);
}

/* The value below which a fraction P of the samples lie; 0 if none. */
static double
hist_percentile(Histogram *hist, double p)
{
	uint64_t	total = 0;
	uint64_t	rank;
	uint64_t	seen = 0;

	for (size_t i = 0; i < HIST_BUCKETS; i++)
		total += atomic_load_explicit(&hist->counts[i], memory_order_relaxed);
	if (total == 0)
		return 0;
	rank = (uint64_t) (p * (double) total + 0.999999);
	if (rank < 1)
		rank = 1;
	for (size_t i = 0; i < HIST_BUCKETS; i++)
	{
		seen += atomic_load_explicit(&hist->counts[i], memory_order_relaxed);
		if (seen >= rank)
			return hist_value(i);
	}
	return hist_value(HIST_BUCKETS - 1);	/* the counts moved under us */
}

static void
hist_clear(Histogram *hist)
{
	for (size_t i = 0; i < HIST_BUCKETS; i++)
		atomic_store_explicit(&hist->counts[i], 0, memory_order_relaxed);
}


/* ---- counters ---- */

void
stats_init(void)
{
	attempt_capacity = 1024;
	attempt_keys = calloc(attempt_capacity, sizeof(uint64_t));
	attempt_counts = calloc(attempt_capacity, sizeof(uint32_t));
	if (attempt_keys == NULL || attempt_counts == NULL)
		abort();
}

static void
raise_peak(atomic_int_fast64_t *peak, int_fast64_t value)
{
	int_fast64_t seen = atomic_load_explicit(peak, memory_order_relaxed);

	while (value > seen &&
		   !atomic_compare_exchange_weak_explicit(peak, &seen, value,
												  memory_order_relaxed,
												  memory_order_relaxed))
		;
}

/* A chat request has arrived: count it, note how many it found in flight. */
void
stats_chat_received(void)
{
	int_fast64_t inflight = atomic_load_explicit(&stat_inflight, memory_order_relaxed);

	atomic_fetch_add_explicit(&stat_requests, 1, memory_order_relaxed);
	hist_record(&inflight_at_arrival, inflight > 0 ? (uint64_t) inflight : 0);
}

void
stats_count_rate_limited(void)
{
	atomic_fetch_add_explicit(&stat_rate_limited_rps, 1, memory_order_relaxed);
}

void
stats_count_file_uploaded(void)
{
	atomic_fetch_add_explicit(&stat_files_uploaded, 1, memory_order_relaxed);
}

void
stats_count_batch_created(void)
{
	atomic_fetch_add_explicit(&stat_batches_created, 1, memory_order_relaxed);
}

/* A batch line was answered; FAILED: its answer went to the error file. */
void
stats_count_batch_line(bool failed)
{
	atomic_fetch_add_explicit(&stat_batch_lines, 1, memory_order_relaxed);
	if (failed)
		atomic_fetch_add_explicit(&stat_batch_lines_failed, 1, memory_order_relaxed);
}

/* The latency a reply actually got, from arrival to the end of its service. */
void
stats_record_latency(uint64_t latency_us)
{
	hist_record(&latency_applied, latency_us);
}

/*
 * Count one more chat request in flight, unless MAX_INFLIGHT (>0) are
 * already in flight: then nothing changes and the caller answers 429.
 */
bool
stats_inflight_admit(int max_inflight)
{
	int_fast64_t before = atomic_fetch_add_explicit(&stat_inflight, 1,
													memory_order_relaxed);

	if (max_inflight > 0 && before >= max_inflight)
	{
		atomic_fetch_sub_explicit(&stat_inflight, 1, memory_order_relaxed);
		return false;
	}
	raise_peak(&stat_peak_inflight, before + 1);
	return true;
}

void
stats_inflight_release(void)
{
	atomic_fetch_sub_explicit(&stat_inflight, 1, memory_order_relaxed);
}

void
stats_count_status(int status)
{
	if (status >= 0 && status < MAX_STATUS)
		atomic_fetch_add_explicit(&stat_by_status[status], 1, memory_order_relaxed);
}

void
stats_count_completion(void)
{
	atomic_fetch_add_explicit(&stat_completions, 1, memory_order_relaxed);
}

void
stats_count_reset(void)
{
	atomic_fetch_add_explicit(&stat_resets, 1, memory_order_relaxed);
}

void
stats_connection_opened(void)
{
	int_fast64_t now = atomic_fetch_add_explicit(&stat_connections, 1,
												 memory_order_relaxed) + 1;

	raise_peak(&stat_peak_connections, now);
}

void
stats_connection_closed(void)
{
	atomic_fetch_sub_explicit(&stat_connections, 1, memory_order_relaxed);
}

uint64_t
stats_next_completion_id(void)
{
	return atomic_fetch_add_explicit(&completion_id, 1, memory_order_relaxed) + 1;
}

/* Zero the counters; gauges stay, their peaks restart from the current value. */
static void
stats_reset(void)
{
	atomic_store(&stat_requests, 0);
	atomic_store(&stat_completions, 0);
	atomic_store(&stat_resets, 0);
	atomic_store(&stat_rate_limited_rps, 0);
	atomic_store(&stat_files_uploaded, 0);
	atomic_store(&stat_batches_created, 0);
	atomic_store(&stat_batch_lines, 0);
	atomic_store(&stat_batch_lines_failed, 0);
	hist_clear(&inflight_at_arrival);
	hist_clear(&latency_applied);
	for (int status = 0; status < MAX_STATUS; status++)
		atomic_store(&stat_by_status[status], 0);
	atomic_store(&stat_peak_inflight, atomic_load(&stat_inflight));
	atomic_store(&stat_peak_connections, atomic_load(&stat_connections));

	pthread_mutex_lock(&attempts_lock);
	memset(attempt_keys, 0, attempt_capacity * sizeof(uint64_t));
	memset(attempt_counts, 0, attempt_capacity * sizeof(uint32_t));
	attempt_used = 0;
	pthread_mutex_unlock(&attempts_lock);
}

static void
append_decimal(MockBuf *out, double value, int digits)
{
	char		text[48];

	snprintf(text, sizeof(text), "%.*f", digits, value);
	buf_append_str(out, text);
}

static void
stats_append_json(MockBuf *out)
{
	bool		first = true;
	int64_t		in_service;
	int64_t		queued;

	buf_append_str(out, "{\"requests\":");
	buf_append_u64(out, atomic_load(&stat_requests));
	buf_append_str(out, ",\"completions\":");
	buf_append_u64(out, atomic_load(&stat_completions));
	buf_append_str(out, ",\"by_status\":{");
	for (int status = 0; status < MAX_STATUS; status++)
	{
		uint64_t	count = atomic_load(&stat_by_status[status]);

		if (count == 0)
			continue;
		if (!first)
			buf_append(out, ",", 1);
		first = false;
		buf_append(out, "\"", 1);
		buf_append_u64(out, (uint64_t) status);
		buf_append(out, "\":", 2);
		buf_append_u64(out, count);
	}
	buf_append_str(out, "},\"inflight\":");
	buf_append_i64(out, atomic_load(&stat_inflight));
	buf_append_str(out, ",\"peak_inflight\":");
	buf_append_i64(out, atomic_load(&stat_peak_inflight));
	buf_append_str(out, ",\"connections\":");
	buf_append_i64(out, atomic_load(&stat_connections));
	buf_append_str(out, ",\"peak_connections\":");
	buf_append_i64(out, atomic_load(&stat_peak_connections));
	buf_append_str(out, ",\"resets\":");
	buf_append_u64(out, atomic_load(&stat_resets));

	slot_counts(&in_service, &queued);
	buf_append_str(out, ",\"inflight_peak\":");
	buf_append_i64(out, atomic_load(&stat_peak_inflight));
	buf_append_str(out, ",\"inflight_at_arrival_p50\":");
	append_decimal(out, hist_percentile(&inflight_at_arrival, 0.5), 0);
	buf_append_str(out, ",\"inflight_at_arrival_p90\":");
	append_decimal(out, hist_percentile(&inflight_at_arrival, 0.9), 0);
	buf_append_str(out, ",\"in_service\":");
	buf_append_i64(out, in_service);
	buf_append_str(out, ",\"queued\":");
	buf_append_i64(out, queued);
	buf_append_str(out, ",\"rate_limited_rps\":");
	buf_append_u64(out, atomic_load(&stat_rate_limited_rps));
	buf_append_str(out, ",\"latency_ms_p50\":");
	append_decimal(out, hist_percentile(&latency_applied, 0.5) / 1000.0, 1);
	buf_append_str(out, ",\"latency_ms_p90\":");
	append_decimal(out, hist_percentile(&latency_applied, 0.9) / 1000.0, 1);
	buf_append_str(out, ",\"files_uploaded\":");
	buf_append_u64(out, atomic_load(&stat_files_uploaded));
	buf_append_str(out, ",\"batches_created\":");
	buf_append_u64(out, atomic_load(&stat_batches_created));
	buf_append_str(out, ",\"batch_lines_answered\":");
	buf_append_u64(out, atomic_load(&stat_batch_lines));
	buf_append_str(out, ",\"batch_lines_failed\":");
	buf_append_u64(out, atomic_load(&stat_batch_lines_failed));
	buf_append_str(out, "}");
}


/* ---- attempt table ---- */

static size_t
attempt_slot(uint64_t key)
{
	size_t		slot = (size_t) (key * 0x9e3779b97f4a7c15ULL) & (attempt_capacity - 1);

	while (attempt_keys[slot] != 0 && attempt_keys[slot] != key)
		slot = (slot + 1) & (attempt_capacity - 1);
	return slot;
}

static void
attempts_grow(void)
{
	uint64_t   *old_keys = attempt_keys;
	uint32_t   *old_counts = attempt_counts;
	size_t		old_capacity = attempt_capacity;

	attempt_capacity *= 2;
	attempt_keys = calloc(attempt_capacity, sizeof(uint64_t));
	attempt_counts = calloc(attempt_capacity, sizeof(uint32_t));
	if (attempt_keys == NULL || attempt_counts == NULL)
		abort();
	for (size_t i = 0; i < old_capacity; i++)
	{
		if (old_keys[i] != 0)
		{
			size_t		slot = attempt_slot(old_keys[i]);

			attempt_keys[slot] = old_keys[i];
			attempt_counts[slot] = old_counts[i];
		}
	}
	free(old_keys);
	free(old_counts);
}

/*
 * Record one more attempt of the request whose body hashes to IDENTITY and
 * return how many attempts there have been, this one included (1 = first).
 */
uint32_t
stats_record_attempt(uint64_t identity)
{
	uint32_t	count;
	size_t		slot;

	if (identity == 0)
		identity = 1;			/* 0 marks empty slots */
	pthread_mutex_lock(&attempts_lock);
	if ((attempt_used + 1) * 2 > attempt_capacity)
		attempts_grow();
	slot = attempt_slot(identity);
	if (attempt_keys[slot] == 0)
	{
		attempt_keys[slot] = identity;
		attempt_used++;
	}
	if (attempt_counts[slot] < UINT32_MAX)
		attempt_counts[slot]++;
	count = attempt_counts[slot];
	pthread_mutex_unlock(&attempts_lock);
	return count;
}


/* ---- dispatch ---- */

static bool
span_is(MockSpan span, const char *text)
{
	return span.len == strlen(text) && memcmp(span.ptr, text, span.len) == 0;
}

/* 405 naming the method and path, with an Allow header of ALLOWED. */
void
reply_method_not_allowed(MockReply *reply, const MockRequest *request,
						 const char *allowed)
{
	MockBuf		message = {0};

	buf_append_str(&message, "Method ");
	buf_append_json_escaped(&message, request->method.ptr, request->method.len);
	buf_append_str(&message, " is not allowed on ");
	buf_append_json_escaped(&message, request->path.ptr, request->path.len);
	buf_append_str(&message, "; use ");
	buf_append_str(&message, allowed);
	buf_append(&message, "", 1);
	reply_openai_error(reply, 405, message.data, "invalid_request_error", NULL);
	reply_add_header(reply, "Allow", allowed);
	buf_free(&message);
}

/* 404 "Invalid URL (METHOD PATH)", as OpenAI answers an unknown path. */
void
reply_not_found(MockReply *reply, const MockRequest *request)
{
	MockBuf		message = {0};

	buf_append_str(&message, "Invalid URL (");
	buf_append_json_escaped(&message, request->method.ptr, request->method.len);
	buf_append(&message, " ", 1);
	buf_append_json_escaped(&message, request->path.ptr, request->path.len);
	buf_append_str(&message, ")");
	buf_append(&message, "", 1);
	reply_openai_error(reply, 404, message.data, "invalid_request_error", NULL);
	buf_free(&message);
}

/*
 * Fill REPLY (already cleared) for REQUEST.  Everything but chat
 * completions is answered at once, whatever --latency-ms says.
 */
void
routes_answer(const MockRequest *request, MockReply *reply)
{
	bool		is_get = span_is(request->method, "GET");
	bool		is_post = span_is(request->method, "POST");
	MockSpan	path = request->path;

	if (span_is(path, "/v1/chat/completions"))
	{
		if (is_post)
			chat_answer(request, reply);
		else
			reply_method_not_allowed(reply, request, "POST");
	}
	else if (span_is(path, "/health"))
	{
		if (is_get)
		{
			reply->content_type = "text/plain";
			buf_append_str(&reply->body, "ok");
		}
		else
			reply_method_not_allowed(reply, request, "GET");
	}
	else if (span_is(path, "/v1/models"))
	{
		if (is_get)
			buf_append_str(&reply->body,
						   "{\"object\":\"list\",\"data\":["
						   "{\"id\":\"mock-small\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"pg_swarm-mock\"},"
						   "{\"id\":\"mock-large\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"pg_swarm-mock\"}]}");
		else
			reply_method_not_allowed(reply, request, "GET");
	}
	else if (span_is(path, "/mock/stats"))
	{
		if (is_get)
			stats_append_json(&reply->body);
		else
			reply_method_not_allowed(reply, request, "GET");
	}
	else if (span_is(path, "/mock/reset"))
	{
		if (is_post)
		{
			stats_reset();
			buf_append_str(&reply->body, "{\"reset\":true}");
		}
		else
			reply_method_not_allowed(reply, request, "POST");
	}
	else if (!batch_answer(request, reply))
		reply_not_found(reply, request);
}
