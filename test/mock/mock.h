/*
 * mock.h
 *	  Shared declarations of mock_llm, the OpenAI-compatible endpoint that
 *	  pg_swarm's tests, demo and benchmarks talk to instead of a real LLM.
 *
 * mock_llm is a standalone program (libc and pthreads only, no Postgres).
 * Each file owns one thing:
 *
 *	 mock_llm.c     process lifecycle: command line, rlimits, listening sockets,
 *	                worker threads, SIGTERM/SIGINT.  The only file that knows
 *	                about all the others.
 *	 mock_server.c  one epoll event loop per worker thread: connections, the
 *	                ordered queue of responses per connection, the timer heap
 *	                (latency, drip, lingering close), non-blocking writes.
 *	 mock_http.c    HTTP/1.x request framing (bytes in, one request out; no I/O),
 *	                and the growable byte buffer everybody appends to.
 *	 mock_routes.c  which path does what, the small endpoints (/health,
 *	                /v1/models, /mock/stats, /mock/reset), the process-wide
 *	                counters and the per-request attempt table.
 *	 mock_chat.c    POST /v1/chat/completions: JSON scan of the request, the
 *	                deterministic reply (text, or a structured action for
 *	                requests with tools or a JSON response_format), the
 *	                [[mock:...]] fault directives (and --fault, the same list
 *	                for every request), fixtures.
 *	 mock_load.c    how the endpoint behaves under load: the per-thread random
 *	                generator, latency and word-count distributions, the
 *	                --saturate slots (a process-wide FIFO of waiting replies)
 *	                and the --rps-limit window.
 *	 mock_batch.c   OpenAI's Files and Batch APIs: multipart uploads, an
 *	                in-memory store of files and batches, the batch state
 *	                machine (moved on by wall-clock time whenever a batch is
 *	                read), each line answered by mock_chat.c's reply code.
 *
 * Data flow: mock_server reads bytes -> http_parse() yields a MockRequest ->
 * routes_answer() fills a MockReply (status, headers, body, what to do with
 * it) -> mock_server turns the reply into a queued response, waits for its
 * deadline on the timer heap, and writes it out in request order.
 *
 * Threads share nothing but the counters (C11 atomics), the attempt table
 * (one mutex, held only for a hash lookup), the --rps-limit window (one
 * atomic word), the --saturate slots (one mutex, held for a few pointer
 * moves) and the batch store (one mutex, held while a request reads or
 * changes files and batches, including answering the batch lines that
 * became due).  Everything else, connections and timers included, belongs to
 * exactly one worker thread; a reply waiting for a --saturate slot is only
 * touched by another thread under the slot mutex, to hand it the slot.
 */
#ifndef MOCK_H
#define MOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest request body accepted; larger ones get 413. */
#define MOCK_MAX_BODY		(8u * 1024 * 1024)
/* Largest body of POST /v1/files: a 200 MB file plus multipart framing. */
#define MOCK_MAX_UPLOAD		(256u * 1024 * 1024)
/* Largest request head (request line plus headers); larger ones get 431. */
#define MOCK_MAX_HEAD		(64u * 1024)

/* Longest sample any latency distribution may give: 10 minutes. */
#define MOCK_MAX_SAMPLE_MS	600000.0

/* A random distribution from the command line (--latency, --words). */
typedef enum MockDistKind
{
	DIST_NONE,					/* not given: the older options decide */
	DIST_FIXED,					/* a */
	DIST_UNIFORM,				/* a .. b */
	DIST_LOGNORMAL,				/* median a, sigma */
	DIST_HEAVYTAIL				/* lognormal, times mult with probability p */
} MockDistKind;

typedef struct MockDist
{
	MockDistKind kind;
	double		a;
	double		b;
	double		sigma;
	double		p;
	double		mult;
} MockDist;

/* The command line, fixed once the workers start. */
typedef struct MockConfig
{
	const char *host;
	int			port;
	int			latency_ms;
	int			jitter_ms;
	MockDist	latency;		/* --latency; DIST_NONE: latency_ms + jitter */
	int			threads;
	int			words;
	MockDist	words_dist;		/* --words SPEC; DIST_NONE: words, deterministic */
	double		ms_per_token;	/* 0: latency does not depend on the reply */
	int			max_inflight;	/* 0: unlimited */
	int			saturate;		/* 0: no limit on chat replies in service */
	int			rps_limit;		/* 0: no requests-per-second limit */
	double		invalid_actions;	/* share (0..1) of structured replies made invalid */
	const char *fault;			/* --fault: directives for requests with none */
	const char *fixtures_dir;
	int			batch_validating_ms;	/* batch: created -> in_progress (or failed) */
	int			batch_processing_ms;	/* batch: in_progress -> finalizing */
	int			batch_finalizing_ms;	/* finalizing -> completed, cancelling -> cancelled */
	double		batch_fail_share;	/* share (0..1) of batch lines failed with 500 */
	bool		batch_expire;	/* batches end "expired" after processing */
	int			batch_api_delay_ms; /* upload, create, content: answer N ms after acting */
	uint64_t	seed;
	bool		seed_given;
	bool		quiet;
} MockConfig;

extern MockConfig mock_config;

/* Log to stderr unless --quiet. */
void		mock_log(const char *fmt,...) __attribute__((format(printf, 1, 2)));

/* A run of bytes inside some other buffer; never owns memory. */
typedef struct MockSpan
{
	const char *ptr;
	size_t		len;
} MockSpan;

/* A growable byte buffer.  Aborts the process if memory runs out. */
typedef struct MockBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} MockBuf;

void		buf_reserve(MockBuf *buf, size_t extra);
void		buf_append(MockBuf *buf, const void *bytes, size_t len);
void		buf_append_str(MockBuf *buf, const char *str);
void		buf_append_u64(MockBuf *buf, uint64_t value);
void		buf_append_i64(MockBuf *buf, int64_t value);
void		buf_append_json_escaped(MockBuf *buf, const char *bytes, size_t len);
void		buf_free(MockBuf *buf);

/* One complete HTTP request; all pointers point into the connection's buffers. */
typedef struct MockRequest
{
	MockSpan	method;
	MockSpan	path;			/* request target without the query string */
	MockSpan	query;			/* after the '?', without it; empty if none */
	MockSpan	content_type;	/* the Content-Type header's value; empty if none */
	int			minor_version;	/* HTTP/1.<minor_version> */
	bool		keep_alive;
	const char *body;
	size_t		body_len;
} MockRequest;

/*
 * Incremental framing state of the request being received on a connection.
 * Offsets count from the first byte of that request, so the connection may
 * move its unread bytes around between calls.
 */
typedef struct HttpFraming
{
	bool		head_done;
	size_t		head_scan_from; /* where to resume looking for the blank line */
	size_t		head_len;
	size_t		method_off, method_len;
	size_t		path_off, path_len;
	size_t		query_off, query_len;
	size_t		content_type_off, content_type_len;
	uint64_t	body_limit;		/* MOCK_MAX_BODY, or MOCK_MAX_UPLOAD for uploads */
	int			minor_version;
	bool		keep_alive;
	bool		expect_continue;
	bool		continue_sent;	/* set by the connection once 100 is queued */
	bool		chunked;
	uint64_t	content_length;
	size_t		chunk_pos;		/* offset of the next chunk-size line */
	MockBuf		chunked_body;	/* decoded chunked body so far */
} HttpFraming;

typedef enum HttpParseResult
{
	HTTP_NEED_MORE,
	HTTP_REQUEST_READY,
	HTTP_BAD_REQUEST
} HttpParseResult;

HttpParseResult http_parse(HttpFraming *framing, const char *data, size_t len,
						   MockRequest *request, size_t *consumed,
						   int *error_status);
void		http_framing_reset(HttpFraming *framing);
const char *http_reason_phrase(int status);

/* What the server does with a reply once its delay has passed. */
typedef enum MockAction
{
	MOCK_ANSWER,				/* send it */
	MOCK_HANG,					/* never answer; hold the connection */
	MOCK_RESET,					/* close the connection with RST, no answer */
	MOCK_CLOSE					/* close the connection with FIN, no answer */
} MockAction;

/*
 * A reply as the routes describe it; mock_server turns it into bytes on the
 * wire.  The body is body, then fill_bytes bytes of 'x' (streamed, never held
 * in memory), then body_tail.  Each worker owns one MockReply that it clears
 * and reuses for every request, so the buffers keep their capacity.
 */
typedef struct MockReply
{
	int			status;
	const char *content_type;
	MockBuf		body;
	uint64_t	fill_bytes;
	MockBuf		body_tail;
	MockBuf		extra_headers;	/* complete header lines, each ending in CRLF */
	char		reason[64];		/* "": the standard reason phrase */
	MockAction	action;
	bool		raw;			/* body is the whole response: no status line, no headers */
	bool		bad_chunk;		/* chunked framing: one good chunk, then a bad size line */
	bool		reset_mid;		/* send head and half the body, then RST */
	uint32_t	drip_ms;		/* >0: send the body one byte per drip_ms */
	uint64_t	delay_us;		/* latency (service time) before it may go out */
	bool		delay_from_done;	/* delay_us counts from when the route finished
									 * (it acted), not from the request's arrival */
	bool		close_after;	/* close the connection after this reply */
	bool		is_chat;		/* a chat-completion reply: counted in stats */
	bool		holds_inflight; /* owns one unit of the inflight gauge */
	bool		waits;			/* waits out a latency: --saturate slot, latency stats */
} MockReply;

void		reply_clear(MockReply *reply);
void		reply_add_header(MockReply *reply, const char *name, const char *value);
void		reply_openai_error(MockReply *reply, int status, const char *message,
							   const char *type, const char *code);

/* mock_routes.c: dispatch and counters. */
void		routes_answer(const MockRequest *request, MockReply *reply);
void		reply_method_not_allowed(MockReply *reply, const MockRequest *request,
									 const char *allowed);
void		reply_not_found(MockReply *reply, const MockRequest *request);
void		stats_init(void);
void		stats_chat_received(void);
bool		stats_inflight_admit(int max_inflight);
void		stats_inflight_release(void);
void		stats_count_status(int status);
void		stats_count_completion(void);
void		stats_count_reset(void);
void		stats_count_rate_limited(void);
void		stats_record_latency(uint64_t latency_us);
void		stats_connection_opened(void);
void		stats_connection_closed(void);
uint64_t	stats_next_completion_id(void);
uint32_t	stats_record_attempt(uint64_t identity);
void		stats_count_file_uploaded(void);
void		stats_count_batch_created(void);
void		stats_count_batch_line(bool failed);

/* mock_chat.c */
void		chat_answer(const MockRequest *request, MockReply *reply);
const char *chat_init(void);
uint64_t	mock_hash_bytes(const void *bytes, size_t len);

/* How a batch line ended, when mock_chat.c answered it. */
typedef enum MockLineOutcome
{
	LINE_HTTP,					/* an HTTP answer: reply->status, reply->body (JSON) */
	LINE_TIMEOUT				/* no answer (hang): the line fails with request_timeout */
} MockLineOutcome;

MockLineOutcome chat_batch_answer(const char *body, size_t len, MockReply *reply);

/*
 * Walk the members of the JSON object TEXT (it must be exactly one object,
 * surrounded by white space at most, and is fully validated).  MEMBER gets
 * each key (raw bytes between its quotes) and value (its raw bytes); false
 * from it stops the walk.  Returns false if TEXT is not one valid object or
 * MEMBER said stop.
 */
typedef bool (*MockJsonMemberFn) (MockSpan key, MockSpan value, void *state);

bool		mock_json_members(const char *text, size_t len, MockJsonMemberFn member,
							  void *state);

/* mock_batch.c: the Files and Batch APIs; false if PATH is not theirs. */
bool		batch_answer(const MockRequest *request, MockReply *reply);

/* mock_load.c: randomness and distributions (per thread, no locks). */
void		random_seed_thread(int index);
uint64_t	random_next(void);
double		random_unit(void);
const char *dist_parse(const char *text, bool integer_words, MockDist *dist);
void		dist_describe(const MockDist *dist, char *out, size_t size);
uint64_t	load_words(void);
uint64_t	load_latency_us(uint64_t completion_tokens);
bool		load_rps_admit(int limit, uint32_t *reset_ms);

/*
 * mock_load.c: --saturate slots.  Every reply that waits out a latency is a
 * MockSlotWaiter (embedded in the queued response).  It either gets a slot
 * at once or joins the process-wide FIFO; when a slot is released the next
 * waiter gets it and moves to its worker's inbox, whose eventfd wakes that
 * worker to start the waiter's service time.  All links and states are
 * guarded by the slot mutex in mock_load.c.
 */
typedef enum MockSlotState
{
	SLOT_NONE,					/* holds no slot, in no list */
	SLOT_QUEUED,				/* in the FIFO, waiting for a slot */
	SLOT_GRANTED,				/* holds a slot, in its worker's inbox */
	SLOT_SERVING				/* holds a slot, its worker knows */
} MockSlotState;

typedef struct MockSlotInbox MockSlotInbox;

typedef struct MockSlotWaiter
{
	struct MockSlotWaiter *prev;
	struct MockSlotWaiter *next;
	MockSlotInbox *inbox;
	MockSlotState state;
	uint64_t	granted_ns;		/* CLOCK_MONOTONIC when the slot came */
} MockSlotWaiter;

struct MockSlotInbox
{
	MockSlotWaiter *head;		/* granted waiters the worker has not seen */
	MockSlotWaiter *tail;
	int			event_fd;		/* written when head goes from NULL to non-NULL */
};

bool		slot_acquire(MockSlotWaiter *waiter, uint64_t now_ns);
void		slot_release(MockSlotWaiter *waiter);
MockSlotWaiter *slot_take_granted(MockSlotInbox *inbox);
void		slot_counts(int64_t *in_service, int64_t *queued);
uint64_t	mock_monotonic_ns(void);

/* mock_server.c: one worker per thread. */
typedef struct MockWorker MockWorker;

MockWorker *worker_create(int index, int listen_fd, int wake_fd);
void	   *worker_run(void *worker);
void		worker_destroy(MockWorker *worker);
extern atomic_int mock_stopping;	/* set by mock_llm.c on SIGTERM/SIGINT */

#endif							/* MOCK_H */
