/*
 * mock_server.c
 *	  The event loop of one mock_llm worker thread: connections, the ordered
 *	  queue of responses on each connection, the timer heap, and writes.
 *
 * Each worker owns an epoll instance, its own SO_REUSEPORT listening socket
 * (the kernel spreads new connections across workers), and every
 * connection it accepted, for that connection's whole life.  Nothing here
 * is shared with other threads; the counters it bumps live in
 * mock_routes.c and are atomic.
 *
 * Sockets are non-blocking and registered once, edge-triggered, for both
 * directions, so the hot path makes no epoll_ctl calls.  Because edges are
 * only reported once, a connection remembers "readable" until a read comes
 * back short or with EAGAIN.
 *
 * Responses.  Every parsed request appends one MockResponse to its
 * connection's queue (plus an interim "100 Continue" when the client asked
 * for one), so pipelined requests are answered in order however their
 * delays differ.  A response becomes "ready" at its deadline: at once for
 * zero latency, otherwise when its timer fires.  conn_flush() writes the
 * ready responses at the front of the queue with one writev(), stopping at
 * the first that is not ready.  Huge bodies are never materialised: their
 * filler is a static block of 'x' repeated in the iovec, so a slow reader of
 * a 50 MB body costs no memory and a full socket just waits for EPOLLOUT.
 *
 * Timers.  One binary min-heap per worker holds every pending deadline
 * (response latency, the --batch-api-delay-ms of a Files/Batch answer, the
 * next byte of a drip, the give-up time of a lingering close).  Timers are
 * embedded in the object they belong to and know their heap slot, so
 * freeing a connection cancels its timers in O(log n).  epoll_wait sleeps
 * exactly until the earliest deadline: ten thousand responses waiting out
 * their latency cost one heap entry each and no wake-ups.
 *
 * Saturation (--saturate K).  A reply that waits out a latency first asks
 * mock_load.c for one of the K process-wide slots.  With one, its timer is
 * armed as usual; without, it sits in the shared FIFO with no timer.  When
 * its latency is over ("served": ready for the first time) it gives the
 * slot back, which may grant it to a reply of another worker: that worker's
 * inbox eventfd (registered in its epoll) wakes it, and it arms the granted
 * replies' timers from the moment of the grant.  A reply freed while it
 * holds or waits for a slot (the client left) gives it back the same way.
 *
 * Back-pressure.  A connection with PIPELINE_PAUSE responses queued stops
 * being read until half of them are written, so a client that pipelines
 * without reading cannot make us buffer without bound.  Request size is
 * capped by mock_http.c (413/431).
 *
 * Closing.  A reply that ends the connection (HTTP/1.0, Connection: close,
 * a framing error) is followed by shutdown(SHUT_WR) and a lingering close:
 * input is read and dropped until the client closes or DRAIN_TIMEOUT_MS
 * passes, so the client sees the whole reply rather than an RST caused by
 * its own unread bytes.  The reset directives close with SO_LINGER 0 (RST)
 * on purpose; "empty" (MOCK_CLOSE) is a lingering close with nothing sent.
 *
 * Unusual framings.  A raw reply (garbage) is written as its body alone, no
 * status line, and the connection closed.  A bad_chunk reply is framed with
 * Transfer-Encoding: chunked: one valid chunk holding the first half of the
 * body, then a chunk-size line that is not hex, then the connection closes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "mock.h"

#define MAX_EVENTS			256
#define ACCEPT_BATCH		64		/* accepts per wake-up, for fairness */
#define PIPELINE_PAUSE		64		/* queued responses before reading stops */
#define READ_RESERVE		4096	/* free space wanted before each read() */
#define FIRST_READ_BUFFER	8192
#define IDLE_BUFFER_KEEP	(64 * 1024) /* larger idle buffers are freed */
#define DRAIN_TIMEOUT_MS	2000
#define MAX_IOV				64
#define WRITE_BATCH			(1024 * 1024)	/* bytes offered per writev() */
#define FILL_BLOCK			(64 * 1024)

atomic_int	mock_stopping;

/* The bytes of huge= bodies: one block of 'x', referenced many times. */
static char fill_block[FILL_BLOCK];

typedef enum TimerKind
{
	TIMER_RESPONSE,				/* a response's deadline or next drip byte */
	TIMER_DRAIN					/* give up a lingering close */
} TimerKind;

typedef struct MockTimer
{
	uint64_t	deadline_ns;
	ssize_t		heap_index;		/* -1 while not armed */
	TimerKind	kind;
} MockTimer;

typedef struct MockConn MockConn;

/*
 * One queued response.  Its bytes on the wire are front (status line,
 * headers, body or body prefix) + fill_bytes of 'x' + tail; front and tail
 * are stored in bytes[].
 */
typedef struct MockResponse
{
	struct MockResponse *next;
	MockConn   *conn;
	MockTimer	timer;
	MockAction	action;
	bool		ready;			/* may be written now */
	bool		served;			/* its latency is over (ready at least once) */
	bool		started;		/* counted as answered */
	bool		is_chat;
	bool		holds_inflight;
	bool		waits;			/* latency path: slot and latency stats */
	bool		broken;			/* never a completion, even a whole 200 (bad_chunk) */
	bool		reset_mid;
	bool		close_after;
	int			status;
	uint64_t	arrival_ns;		/* when the request was parsed */
	uint64_t	service_ns;		/* its latency, once it holds a slot */
	bool		slotted;		/* in the slot system: holds or awaits a slot */
	MockSlotWaiter slot;		/* other threads touch it only under the slot lock */
	uint32_t	drip_ms;
	uint64_t	head_len;		/* status line and headers */
	uint64_t	limit;			/* bytes to write in all (half the body for reset_mid) */
	uint64_t	sent;
	size_t		front_len;
	uint64_t	fill_bytes;
	size_t		tail_len;
	char		bytes[];
} MockResponse;

struct MockConn
{
	MockWorker *worker;
	int			fd;
	MockConn   *prev;
	MockConn   *next;
	MockBuf		in;				/* received bytes; unread ones start at in_start */
	size_t		in_start;
	HttpFraming framing;
	MockResponse *queue_head;
	MockResponse *queue_tail;
	unsigned	queue_len;
	bool		readable;		/* an edge said so and no read came back short yet */
	bool		peer_closing;	/* EPOLLRDHUP/HUP seen: read until EOF */
	bool		peer_eof;
	bool		read_paused;	/* back-pressure, see PIPELINE_PAUSE */
	bool		discard_input;	/* a closing reply is queued; drop what comes */
	MockTimer	drain_timer;
};

struct MockWorker
{
	int			index;
	int			epoll_fd;
	int			listen_fd;
	int			wake_fd;
	int			spare_fd;		/* given up to accept-and-close when out of fds */
	char		listen_marker;	/* addresses used as epoll tags */
	char		wake_marker;
	char		inbox_marker;
	MockSlotInbox inbox;		/* --saturate slots granted to this worker */
	MockTimer **heap;
	size_t		heap_len;
	size_t		heap_cap;
	uint64_t	now_ns;			/* CLOCK_MONOTONIC after the last epoll_wait */
	MockReply	reply;			/* scratch, reused for every request */
	MockBuf		head;			/* scratch for response heads */
	MockConn   *conns;
};

static void conn_service(MockConn *conn);

#define monotonic_ns mock_monotonic_ns


/* ---- timer heap ---- */

static void
heap_place(MockWorker *worker, size_t index, MockTimer *timer)
{
	worker->heap[index] = timer;
	timer->heap_index = (ssize_t) index;
}

static void
heap_sift_up(MockWorker *worker, size_t index)
{
	MockTimer  *timer = worker->heap[index];

	while (index > 0)
	{
		size_t		parent = (index - 1) / 2;

		if (worker->heap[parent]->deadline_ns <= timer->deadline_ns)
			break;
		heap_place(worker, index, worker->heap[parent]);
		index = parent;
	}
	heap_place(worker, index, timer);
}

static void
heap_sift_down(MockWorker *worker, size_t index)
{
	MockTimer  *timer = worker->heap[index];

	for (;;)
	{
		size_t		child = 2 * index + 1;

		if (child >= worker->heap_len)
			break;
		if (child + 1 < worker->heap_len &&
			worker->heap[child + 1]->deadline_ns < worker->heap[child]->deadline_ns)
			child++;
		if (timer->deadline_ns <= worker->heap[child]->deadline_ns)
			break;
		heap_place(worker, index, worker->heap[child]);
		index = child;
	}
	heap_place(worker, index, timer);
}

static void
timer_cancel(MockWorker *worker, MockTimer *timer)
{
	size_t		index;
	MockTimer  *last;

	if (timer->heap_index < 0)
		return;
	index = (size_t) timer->heap_index;
	last = worker->heap[--worker->heap_len];
	timer->heap_index = -1;
	if (last == timer)
		return;
	heap_place(worker, index, last);
	heap_sift_down(worker, index);
	heap_sift_up(worker, (size_t) last->heap_index);
}

static void
timer_arm(MockWorker *worker, MockTimer *timer, uint64_t deadline_ns)
{
	timer_cancel(worker, timer);
	if (worker->heap_len == worker->heap_cap)
	{
		size_t		cap = worker->heap_cap ? worker->heap_cap * 2 : 1024;
		MockTimer **grown = realloc(worker->heap, cap * sizeof(MockTimer *));

		if (grown == NULL)
		{
			fprintf(stderr, "mock_llm: out of memory (timer heap)\n");
			abort();
		}
		worker->heap = grown;
		worker->heap_cap = cap;
	}
	timer->deadline_ns = deadline_ns;
	heap_place(worker, worker->heap_len++, timer);
	heap_sift_up(worker, worker->heap_len - 1);
}

/* Milliseconds epoll_wait may sleep: until the earliest deadline, rounded up. */
static int
worker_wait_ms(MockWorker *worker)
{
	uint64_t	now;
	uint64_t	wait_ns;

	if (worker->heap_len == 0)
		return -1;
	now = monotonic_ns();
	if (worker->heap[0]->deadline_ns <= now)
		return 0;
	wait_ns = worker->heap[0]->deadline_ns - now;
	if (wait_ns / 1000000 >= INT_MAX)
		return INT_MAX;
	return (int) ((wait_ns + 999999) / 1000000);
}


/* ---- responses ---- */

/*
 * Give back the --saturate slot RESPONSE holds, or its place in the FIFO.
 * The flag is the owner's own, so replies that never asked for a slot (all
 * of them without --saturate) never touch the process-wide lock.
 */
static void
response_leave_slots(MockResponse *response)
{
	if (response->slotted)
	{
		slot_release(&response->slot);
		response->slotted = false;
	}
}

static void
response_free(MockWorker *worker, MockResponse *response)
{
	timer_cancel(worker, &response->timer);
	response_leave_slots(response);
	if (response->holds_inflight)
		stats_inflight_release();
	free(response);
}

/*
 * The latency of RESPONSE is over: it may be written, its --saturate slot
 * goes to the next waiter, and the latency it got counts in the stats.
 */
static void
response_served(MockWorker *worker, MockResponse *response)
{
	response->ready = true;
	if (response->served)
		return;
	response->served = true;
	response_leave_slots(response);
	if (response->waits)
		stats_record_latency(worker->now_ns > response->arrival_ns ?
							 (worker->now_ns - response->arrival_ns) / 1000 : 0);
}

/* Start RESPONSE's latency at START_NS: a timer, or served at once. */
static void
response_begin_service(MockWorker *worker, MockResponse *response, uint64_t start_ns)
{
	if (response->service_ns == 0 && start_ns <= worker->now_ns)
		response_served(worker, response);
	else
		timer_arm(worker, &response->timer, start_ns + response->service_ns);
}

/* The reply now counts as answered: status counted, inflight released. */
static void
response_start(MockResponse *response)
{
	if (response->started)
		return;
	response->started = true;
	/* a raw reply (garbage) has no status to count */
	if (response->is_chat && response->action == MOCK_ANSWER && response->status >= 100)
		stats_count_status(response->status);
	if (response->holds_inflight)
	{
		stats_inflight_release();
		response->holds_inflight = false;
	}
}

static void
conn_enqueue(MockConn *conn, MockResponse *response)
{
	response->next = NULL;
	if (conn->queue_tail)
		conn->queue_tail->next = response;
	else
		conn->queue_head = response;
	conn->queue_tail = response;
	conn->queue_len++;
}

static MockResponse *
conn_dequeue(MockConn *conn)
{
	MockResponse *response = conn->queue_head;

	conn->queue_head = response->next;
	if (conn->queue_head == NULL)
		conn->queue_tail = NULL;
	conn->queue_len--;
	return response;
}

static MockResponse *
response_alloc(MockConn *conn, size_t stored_bytes)
{
	MockResponse *response = calloc(1, sizeof(MockResponse) + stored_bytes);

	if (response == NULL)
	{
		fprintf(stderr, "mock_llm: out of memory (response of %zu bytes)\n", stored_bytes);
		abort();
	}
	response->conn = conn;
	response->timer.heap_index = -1;
	response->timer.kind = TIMER_RESPONSE;
	response->slot.inbox = &conn->worker->inbox;
	return response;
}

/* Queue the interim "100 Continue" a client asked for with Expect. */
static void
conn_queue_continue(MockConn *conn)
{
	static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
	MockResponse *response = response_alloc(conn, sizeof(interim) - 1);

	memcpy(response->bytes, interim, sizeof(interim) - 1);
	response->action = MOCK_ANSWER;
	response->status = 100;
	response->ready = true;
	response->head_len = response->front_len = response->limit = sizeof(interim) - 1;
	conn_enqueue(conn, response);
}

/* Status line and headers of REPLY into HEAD; BODY_LEN for Content-Length. */
static void
append_head(MockBuf *head, const MockReply *reply, uint64_t body_len, bool close_after)
{
	buf_append_str(head, "HTTP/1.1 ");
	buf_append_u64(head, (uint64_t) reply->status);
	buf_append(head, " ", 1);
	buf_append_str(head, reply->reason[0] ? reply->reason : http_reason_phrase(reply->status));
	if (reply->content_type != NULL)
	{
		buf_append_str(head, "\r\nContent-Type: ");
		buf_append_str(head, reply->content_type);
	}
	if (reply->bad_chunk)
		buf_append_str(head, "\r\nTransfer-Encoding: chunked");
	else
	{
		buf_append_str(head, "\r\nContent-Length: ");
		buf_append_u64(head, body_len);
	}
	buf_append_str(head, close_after ? "\r\nConnection: close\r\n" : "\r\nConnection: keep-alive\r\n");
	buf_append(head, reply->extra_headers.data, reply->extra_headers.len);
	buf_append(head, "\r\n", 2);
}

/*
 * Turn the worker's scratch reply into a queued response with its own copy
 * of the bytes, and start its latency (or queue it for a --saturate slot).
 */
static void
conn_queue_reply(MockConn *conn, const MockReply *reply, bool keep_alive)
{
	MockWorker *worker = conn->worker;
	MockBuf    *head = &worker->head;
	MockResponse *response;
	uint64_t	body_len = reply->body.len + reply->fill_bytes + reply->body_tail.len;
	bool		close_after = reply->close_after || !keep_alive || reply->raw ||
		reply->bad_chunk;
	bool		body_in_head = false;

	head->len = 0;
	if (reply->action == MOCK_ANSWER && reply->bad_chunk)
	{
		/* one good chunk of the first half of the body, then garbage */
		size_t		half = reply->body.len / 2;
		char		size_line[24];

		append_head(head, reply, 0, close_after);
		snprintf(size_line, sizeof(size_line), "%zx\r\n", half);
		buf_append_str(head, size_line);
		buf_append(head, reply->body.data, half);
		buf_append_str(head, "\r\nnot-a-chunk-size\r\n");
		body_in_head = true;
		body_len = 0;
	}
	else if (reply->action == MOCK_ANSWER && !reply->raw)
		append_head(head, reply, body_len, close_after);

	if (body_in_head)
		response = response_alloc(conn, head->len);
	else
		response = response_alloc(conn, head->len + reply->body.len + reply->body_tail.len);
	if (head->len)				/* a reset's head is empty, maybe never allocated */
		memcpy(response->bytes, head->data, head->len);
	if (!body_in_head)
	{
		if (reply->body.len)
			memcpy(response->bytes + head->len, reply->body.data, reply->body.len);
		if (reply->body_tail.len)
			memcpy(response->bytes + head->len + reply->body.len,
				   reply->body_tail.data, reply->body_tail.len);
		response->front_len = head->len + reply->body.len;
		response->fill_bytes = reply->fill_bytes;
		response->tail_len = reply->body_tail.len;
	}
	else
		response->front_len = head->len;
	response->action = reply->action;
	response->status = reply->status;
	response->is_chat = reply->is_chat;
	response->holds_inflight = reply->holds_inflight;
	response->waits = reply->waits;
	response->broken = reply->bad_chunk;
	response->reset_mid = reply->reset_mid;
	response->close_after = close_after;
	response->drip_ms = reply->drip_ms;
	response->head_len = head->len;	/* 0 for a raw reply: a drip drips all of it */
	response->limit = head->len + (reply->reset_mid ? body_len / 2 : body_len);
	response->arrival_ns = worker->now_ns;
	response->service_ns = reply->delay_us * 1000;

	if (reply->action == MOCK_HANG)
		response->ready = false;	/* never; and it takes no slot */
	else if (reply->waits && mock_config.saturate > 0)
	{
		response->slotted = true;
		if (slot_acquire(&response->slot, worker->now_ns))
			response_begin_service(worker, response, worker->now_ns);
		/* else: no timer until slot_release() grants it a slot */
	}
	else if (reply->delay_from_done)
		response_begin_service(worker, response, monotonic_ns());	/* the route has acted */
	else
		response_begin_service(worker, response, worker->now_ns);
	conn_enqueue(conn, response);
}

/*
 * Add iovecs for the bytes of RESPONSE from its current position, at most
 * BUDGET bytes (one byte if it is dripping its body).  Adds the byte count
 * to *offered and returns the number of iovecs used.
 */
static int
response_iov(MockResponse *response, struct iovec *iov, int max_iov,
			 uint64_t budget, uint64_t *offered)
{
	uint64_t	at = response->sent;
	uint64_t	end = response->limit;
	uint64_t	fill_end = response->front_len + response->fill_bytes;
	int			count = 0;

	if (response->drip_ms)
		end = at < response->head_len ? response->head_len : at + 1;
	if (end - at > budget)
		end = at + budget;

	if (at < response->front_len && count < max_iov)
	{
		uint64_t	stop = end < response->front_len ? end : response->front_len;

		iov[count].iov_base = response->bytes + at;
		iov[count].iov_len = (size_t) (stop - at);
		count++;
		at = stop;
	}
	while (at < end && at < fill_end && count < max_iov)
	{
		uint64_t	stop = end < fill_end ? end : fill_end;

		if (stop - at > FILL_BLOCK)
			stop = at + FILL_BLOCK;
		iov[count].iov_base = fill_block;
		iov[count].iov_len = (size_t) (stop - at);
		count++;
		at = stop;
	}
	if (at < end && at >= fill_end && count < max_iov)
	{
		iov[count].iov_base = response->bytes + response->front_len + (at - fill_end);
		iov[count].iov_len = (size_t) (end - at);
		count++;
		at = end;
	}
	*offered += at - response->sent;
	return count;
}


/* ---- connections ---- */

static void
conn_close(MockConn *conn, bool with_reset)
{
	MockWorker *worker = conn->worker;

	if (with_reset)
	{
		struct linger abortive = {1, 0};

		setsockopt(conn->fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive));
	}
	close(conn->fd);
	while (conn->queue_head)
		response_free(worker, conn_dequeue(conn));
	timer_cancel(worker, &conn->drain_timer);
	buf_free(&conn->in);
	buf_free(&conn->framing.chunked_body);
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		worker->conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	stats_connection_closed();
	free(conn);
}

/* The last reply is out: stop sending, drop further input until EOF. */
static void
conn_begin_lingering_close(MockConn *conn)
{
	MockWorker *worker = conn->worker;

	shutdown(conn->fd, SHUT_WR);
	while (conn->queue_head)
		response_free(worker, conn_dequeue(conn));
	conn->discard_input = true;
	conn->read_paused = false;
	conn->readable = true;
	buf_free(&conn->in);
	conn->in_start = 0;
	timer_arm(worker, &conn->drain_timer, worker->now_ns + (uint64_t) DRAIN_TIMEOUT_MS * 1000000);
}

static void
conn_queue_framing_error(MockConn *conn, int status)
{
	MockReply  *reply = &conn->worker->reply;
	const char *message;

	switch (status)
	{
		case 413:
			message = "Request body too large: mock_llm accepts at most 8 MB.";
			break;
		case 431:
			message = "Request header fields too large: mock_llm accepts at most 64 kB of headers.";
			break;
		case 501:
			message = "Transfer-Encoding other than chunked is not supported.";
			break;
		case 505:
			message = "Only HTTP/1.0 and HTTP/1.1 are supported.";
			break;
		default:
			message = "Malformed HTTP request.";
			break;
	}
	reply_clear(reply);
	reply_openai_error(reply, status, message, "invalid_request_error", NULL);
	reply->close_after = true;
	conn_queue_reply(conn, reply, false);
}

/*
 * Turn buffered bytes into queued responses, as many complete requests as
 * are there, unless back-pressure says stop.
 */
static void
conn_parse(MockConn *conn)
{
	MockWorker *worker = conn->worker;

	while (!conn->discard_input)
	{
		MockRequest request;
		size_t		consumed = 0;
		int			error_status = 0;
		HttpParseResult result;

		if (conn->queue_len >= PIPELINE_PAUSE)
		{
			conn->read_paused = true;
			break;
		}
		/* blank lines between requests are allowed (RFC 9112, 2.2) */
		while (conn->in_start < conn->in.len && !conn->framing.head_done &&
			   conn->framing.head_scan_from == 0 &&
			   (conn->in.data[conn->in_start] == '\r' || conn->in.data[conn->in_start] == '\n'))
			conn->in_start++;
		if (conn->in_start == conn->in.len)
			break;

		result = http_parse(&conn->framing, conn->in.data + conn->in_start,
							conn->in.len - conn->in_start,
							&request, &consumed, &error_status);
		if (result == HTTP_NEED_MORE)
		{
			if (conn->framing.head_done && conn->framing.expect_continue &&
				!conn->framing.continue_sent)
			{
				conn_queue_continue(conn);
				conn->framing.continue_sent = true;
			}
			break;
		}
		if (result == HTTP_BAD_REQUEST)
		{
			conn_queue_framing_error(conn, error_status);
			conn->discard_input = true;
			break;
		}

		reply_clear(&worker->reply);
		routes_answer(&request, &worker->reply);
		conn_queue_reply(conn, &worker->reply, request.keep_alive);
		conn->in_start += consumed;
		http_framing_reset(&conn->framing);
		if (!request.keep_alive)
			conn->discard_input = true;
	}

	if (conn->discard_input || conn->in_start == conn->in.len)
	{
		conn->in.len = conn->in_start = 0;
		if (conn->in.cap > IDLE_BUFFER_KEEP || conn->discard_input)
			buf_free(&conn->in);
	}
}

/* Read while the socket has data; returns false if the connection is gone. */
static bool
conn_read(MockConn *conn)
{
	while (conn->readable && !conn->read_paused)
	{
		ssize_t		got;
		size_t		space;

		if (conn->discard_input)
		{
			char		sink[16384];

			space = sizeof(sink);
			got = read(conn->fd, sink, space);
		}
		else
		{
			if (conn->in.cap - conn->in.len < READ_RESERVE && conn->in_start > 0)
			{
				memmove(conn->in.data, conn->in.data + conn->in_start,
						conn->in.len - conn->in_start);
				conn->in.len -= conn->in_start;
				conn->in_start = 0;
			}
			if (conn->in.cap - conn->in.len < READ_RESERVE)
				buf_reserve(&conn->in, conn->in.cap ? READ_RESERVE : FIRST_READ_BUFFER);
			space = conn->in.cap - conn->in.len;
			got = read(conn->fd, conn->in.data + conn->in.len, space);
		}

		if (got > 0)
		{
			/* a short read drained the socket; the next arrival is a new edge */
			if ((size_t) got < space && !conn->peer_closing)
				conn->readable = false;
			if (!conn->discard_input)
			{
				conn->in.len += (size_t) got;
				conn_parse(conn);
			}
		}
		else if (got == 0)
		{
			conn->peer_eof = true;
			conn->readable = false;
		}
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			conn->readable = false;
		else if (errno != EINTR)
		{
			conn_close(conn, false);
			return false;
		}
	}
	return true;
}

/*
 * Write the ready responses at the front of the queue until the socket is
 * full or the front one is not ready.  Returns false if the connection is
 * gone (closed on error, or reset by a directive).
 */
static bool
conn_flush(MockConn *conn)
{
	MockWorker *worker = conn->worker;

	for (;;)
	{
		MockResponse *response = conn->queue_head;
		struct iovec iov[MAX_IOV];
		int			iov_count = 0;
		uint64_t	offered = 0;
		uint64_t	left;
		ssize_t		written;

		if (response == NULL || !response->ready)
			return true;
		if (response->action == MOCK_RESET)
		{
			response_start(response);
			stats_count_reset();
			conn_close(conn, true);
			return false;
		}
		if (response->action == MOCK_CLOSE)
		{
			/* "empty": earlier replies are out; FIN without a byte of this one */
			response_start(response);
			conn_begin_lingering_close(conn);
			return true;
		}

		for (; response != NULL && response->ready && response->action == MOCK_ANSWER;
			 response = response->next)
		{
			uint64_t	before = offered;

			response_start(response);
			iov_count += response_iov(response, iov + iov_count, MAX_IOV - iov_count,
									  WRITE_BATCH - offered, &offered);
			if (response->sent + (offered - before) < response->limit ||
				response->drip_ms || response->reset_mid || response->close_after ||
				iov_count >= MAX_IOV - 4 || offered >= WRITE_BATCH)
				break;
		}
		if (iov_count == 0)
			return true;

		written = writev(conn->fd, iov, iov_count);
		if (written < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return true;
			if (errno == EINTR)
				continue;
			conn_close(conn, false);
			return false;
		}

		left = (uint64_t) written;
		while ((response = conn->queue_head) != NULL)
		{
			uint64_t	take = response->limit - response->sent;
			bool		close_after;

			if (take > left)
				take = left;
			response->sent += take;
			left -= take;
			if (response->sent < response->limit)
			{
				if (response->drip_ms && response->sent >= response->head_len)
				{
					response->ready = false;
					timer_arm(worker, &response->timer,
							  worker->now_ns + (uint64_t) response->drip_ms * 1000000);
				}
				break;
			}
			if (response->reset_mid)
			{
				stats_count_reset();
				conn_close(conn, true);
				return false;
			}
			if (response->is_chat && response->status == 200 && !response->broken)
				stats_count_completion();
			close_after = response->close_after;
			response_free(worker, conn_dequeue(conn));
			if (close_after)
			{
				conn_begin_lingering_close(conn);
				return true;
			}
			if (left == 0)
				break;
		}
		if ((uint64_t) written < offered)
			return true;		/* socket full: EPOLLOUT will bring us back */
	}
}

static bool
conn_has_hang(MockConn *conn)
{
	for (MockResponse *response = conn->queue_head; response; response = response->next)
		if (response->action == MOCK_HANG)
			return true;
	return false;
}

/* Do all the reading, parsing and writing a connection can do right now. */
static void
conn_service(MockConn *conn)
{
	for (;;)
	{
		if (!conn_read(conn) || !conn_flush(conn))
			return;
		if (conn->read_paused && conn->queue_len < PIPELINE_PAUSE / 2)
		{
			conn->read_paused = false;
			conn_parse(conn);	/* requests already buffered come first */
			continue;
		}
		if (conn->readable && !conn->read_paused)
			continue;			/* e.g. a lingering close began: drain now */
		break;
	}
	/* The client is gone or half-closed: finish what can finish, then close. */
	if (conn->peer_eof && (conn->queue_head == NULL || conn_has_hang(conn)))
		conn_close(conn, false);
}


/* ---- the worker ---- */

static void
worker_accept(MockWorker *worker)
{
	for (int i = 0; i < ACCEPT_BATCH; i++)
	{
		int			fd = accept4(worker->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int			one = 1;
		MockConn   *conn;
		struct epoll_event event;

		if (fd < 0)
		{
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
			{
				/* shed the connection rather than spin on a readable listener */
				mock_log("out of file descriptors; refusing a connection");
				if (worker->spare_fd >= 0)
				{
					close(worker->spare_fd);
					fd = accept(worker->listen_fd, NULL, NULL);
					if (fd >= 0)
						close(fd);
					worker->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				}
			}
			else if (errno != EAGAIN && errno != EWOULDBLOCK)
				mock_log("accept: %s", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

		conn = calloc(1, sizeof(MockConn));
		if (conn == NULL)
		{
			close(fd);
			continue;
		}
		conn->worker = worker;
		conn->fd = fd;
		conn->drain_timer.heap_index = -1;
		conn->drain_timer.kind = TIMER_DRAIN;
		event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
		event.data.ptr = conn;
		if (epoll_ctl(worker->epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0)
		{
			mock_log("epoll_ctl: %s", strerror(errno));
			close(fd);
			free(conn);
			continue;
		}
		conn->next = worker->conns;
		if (worker->conns)
			worker->conns->prev = conn;
		worker->conns = conn;
		stats_connection_opened();
	}
}

static void
worker_fire_timers(MockWorker *worker)
{
	while (worker->heap_len > 0 && worker->heap[0]->deadline_ns <= worker->now_ns)
	{
		MockTimer  *timer = worker->heap[0];

		timer_cancel(worker, timer);
		if (timer->kind == TIMER_RESPONSE)
		{
			MockResponse *response = (MockResponse *)
				((char *) timer - offsetof(MockResponse, timer));

			response_served(worker, response);	/* or the next drip byte is due */
			conn_service(response->conn);
		}
		else
		{
			MockConn   *conn = (MockConn *) ((char *) timer - offsetof(MockConn, drain_timer));

			conn_close(conn, false);
		}
	}
}

/*
 * Start the service time of every reply another thread (or this one) has
 * granted a --saturate slot since the last look.  Their timers run from the
 * grant; one already due fires in worker_fire_timers() right after.
 */
static void
worker_take_slots(MockWorker *worker)
{
	uint64_t	count;
	MockSlotWaiter *waiter;

	/* read first: a grant made after this read writes the eventfd again */
	if (read(worker->inbox.event_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		mock_log("inbox eventfd: %s", strerror(errno));
	while ((waiter = slot_take_granted(&worker->inbox)) != NULL)
	{
		MockResponse *response = (MockResponse *)
			((char *) waiter - offsetof(MockResponse, slot));

		timer_arm(worker, &response->timer, waiter->granted_ns + response->service_ns);
	}
}

/*
 * Set up a worker around an already listening socket.  WAKE_FD becomes
 * readable (and stays so) when the process is stopping.
 */
MockWorker *
worker_create(int index, int listen_fd, int wake_fd)
{
	MockWorker *worker = calloc(1, sizeof(MockWorker));
	struct epoll_event event;

	if (worker == NULL)
		return NULL;
	memset(fill_block, 'x', sizeof(fill_block));
	worker->index = index;
	worker->listen_fd = listen_fd;
	worker->wake_fd = wake_fd;
	worker->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	worker->inbox.event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	worker->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (worker->epoll_fd < 0 || worker->inbox.event_fd < 0)
	{
		if (worker->epoll_fd >= 0)
			close(worker->epoll_fd);
		if (worker->inbox.event_fd >= 0)
			close(worker->inbox.event_fd);
		free(worker);
		return NULL;
	}
	event.events = EPOLLIN;
	event.data.ptr = &worker->listen_marker;
	if (epoll_ctl(worker->epoll_fd, EPOLL_CTL_ADD, listen_fd, &event) < 0)
		goto fail;
	event.events = EPOLLIN;
	event.data.ptr = &worker->wake_marker;
	if (epoll_ctl(worker->epoll_fd, EPOLL_CTL_ADD, wake_fd, &event) < 0)
		goto fail;
	event.events = EPOLLIN;
	event.data.ptr = &worker->inbox_marker;
	if (epoll_ctl(worker->epoll_fd, EPOLL_CTL_ADD, worker->inbox.event_fd, &event) < 0)
		goto fail;
	return worker;

fail:
	close(worker->epoll_fd);
	close(worker->inbox.event_fd);
	free(worker);
	return NULL;
}

/* The thread body: serve until mock_stopping is set. */
void *
worker_run(void *arg)
{
	MockWorker *worker = arg;
	struct epoll_event events[MAX_EVENTS];

	random_seed_thread(worker->index);
	worker->now_ns = monotonic_ns();
	while (!atomic_load(&mock_stopping))
	{
		int			ready = epoll_wait(worker->epoll_fd, events, MAX_EVENTS,
									   worker_wait_ms(worker));

		if (ready < 0 && errno != EINTR)
		{
			mock_log("epoll_wait: %s", strerror(errno));
			break;
		}
		worker->now_ns = monotonic_ns();
		for (int i = 0; i < ready; i++)
		{
			void	   *tag = events[i].data.ptr;

			if (tag == &worker->listen_marker)
				worker_accept(worker);
			else if (tag == &worker->wake_marker)
				continue;		/* mock_stopping is checked by the loop */
			else if (tag == &worker->inbox_marker)
				worker_take_slots(worker);
			else
			{
				MockConn   *conn = tag;

				if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
					conn->readable = true;
				if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
					conn->peer_closing = true;
				conn_service(conn);
			}
		}
		worker_fire_timers(worker);
	}
	return NULL;
}

/* Close every connection and free the worker; its thread must have ended. */
void
worker_destroy(MockWorker *worker)
{
	while (worker->conns)
		conn_close(worker->conns, false);
	close(worker->epoll_fd);
	close(worker->inbox.event_fd);
	close(worker->listen_fd);
	if (worker->spare_fd >= 0)
		close(worker->spare_fd);
	free(worker->heap);
	buf_free(&worker->reply.body);
	buf_free(&worker->reply.body_tail);
	buf_free(&worker->reply.extra_headers);
	buf_free(&worker->head);
	free(worker);
}
