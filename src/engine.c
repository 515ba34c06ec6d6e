/*-------------------------------------------------------------------------
 *
 * engine.c
 *		libcurl multi, driven through curl's socket API and an epoll set.
 *
 * curl tells us which sockets to watch (engine_socket_cb) and when it next
 * needs a timeout call (engine_timer_cb); we keep those in an epoll instance
 * whose own descriptor the worker adds to its WaitEventSet beside its latch.
 * So one wait covers the latch, postmaster death and every socket, and curl's
 * timer becomes part of the wait's deadline: no polling, no fixed sleeps.
 *
 * Transfers (an easy handle with its response buffer) are pooled and reused,
 * keeping curl's connection cache, DNS cache and per-handle allocations warm.
 * On https endpoints HTTP/2 is offered, and transfers share connections as
 * streams (see the shard comment); every handle shares one TLS session
 * cache, so new connections resume sessions.  Constant options are set once
 * per handle; the endpoint settings are applied again only when they change
 * (config_generation).
 *
 * Callbacks run inside curl and must not ereport: allocation failures there
 * abort only the transfer concerned.  Nothing here touches SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "engine.h"

/*
 * Transfers are spread over several multi handles ("shards").
 *
 * Shard 0 carries the transfers that may multiplex: those to https endpoints
 * not seen answering over HTTP/1.x.  There HTTP/2 lets a few connections
 * carry thousands of streams, but curl (7.88) never joins a transfer to a
 * connection still being set up once it knows the server multiplexes: when
 * the connections it has are at their stream limit, every transfer added
 * before the next one is up opens a connection of its own (2,000 added at
 * once held 1,600 connections).  A cap on connections per host on this shard
 * (CURLMOPT_MAX_HOST_CONNECTIONS) makes curl park such transfers in its
 * pending queue until a stream is free instead.  The cap is max_in_flight /
 * ENGINE_STREAMS_PER_CONNECTION: enough for every transfer in flight as long
 * as the server allows that many streams per connection (servers allow 100
 * or more; nginx 128).  A server that allows fewer is seen by its effect:
 * its transfers wait while fewer than that many per allowed connection are
 * sent, for a second or more; the cap is then raised to what the streams
 * seen per connection need (widen_mux_cap).  While the server's
 * answer to ALPN is not known yet, PIPEWAIT makes the first connection's
 * transfers wait for it.
 *
 * The other shards carry plain http and HTTP/1.1 endpoints, where each
 * transfer in flight holds a connection of its own and no cap applies.  curl
 * looks for a reusable connection by walking its connection cache, and with
 * thousands of connections in one multi that walk is most of the engine's
 * CPU; shards of at most ~500 keep it short.
 *
 * Each shard has its own timer; all sockets share the one epoll set, their
 * event data naming shard and descriptor.
 */
#define ENGINE_MUX_SHARD		0
#define ENGINE_SERIAL_SHARDS	8
#define ENGINE_SHARDS			(1 + ENGINE_SERIAL_SHARDS)
#define ENGINE_TRANSFERS_PER_SHARD 500
#define ENGINE_STREAMS_PER_CONNECTION 20
#define ENGINE_STREAM_LIMIT_PATIENCE (1 * USECS_PER_SEC)

typedef struct EngineShard
{
	CURLM	   *multi;
	TimestampTz timer_deadline; /* 0: no timer */
	int			running;		/* transfers added */
	int			sockets;		/* sockets open: about its connections */
} EngineShard;

static EngineShard engine_shards[ENGINE_SHARDS];
static int	engine_serial_shards = 1;	/* serial shards in use: 1 .. this */
static CURLSH *engine_share = NULL;	/* TLS sessions and DNS, shared by every handle */
static int	engine_epfd = -1;
static int	engine_running = 0;
static int	engine_max_connections = 1;	/* the worker's in-flight bound */
static int	engine_mux_cap = 2;	/* connections per host, multiplexing shard */
static TimestampTz engine_mux_short_since = 0;	/* streams short since (widen_mux_cap) */

static SwarmTransfer *engine_free_list = NULL;
static dlist_head engine_live = DLIST_STATIC_INIT(engine_live);	/* transfers in flight */
static int	engine_config_generation = 0;
static int	engine_target_generation = 0;
static char *engine_ca_file = NULL;
static char *engine_default_ca_file = NULL;	/* libcurl's built-in bundle */
static long engine_connect_timeout = 5000;
static size_t engine_max_bytes = 8 * 1024 * 1024;

static int
engine_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	EngineShard *shard = userp;
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		if (socketp != NULL)
		{
			(void) epoll_ctl(engine_epfd, EPOLL_CTL_DEL, s, NULL);
			shard->sockets--;
		}
		curl_multi_assign(shard->multi, s, NULL);
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.data.u64 = ((uint64) (shard - engine_shards) << 32) | (uint32) s;
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;

	if (socketp == NULL)
	{
		if (epoll_ctl(engine_epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
			(void) epoll_ctl(engine_epfd, EPOLL_CTL_MOD, s, &ev);
		curl_multi_assign(shard->multi, s, (void *) 1);
		shard->sockets++;
	}
	else if (epoll_ctl(engine_epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
		(void) epoll_ctl(engine_epfd, EPOLL_CTL_ADD, s, &ev);
	return 0;
}

/* A shard's single timer: -1 removes it, otherwise it replaces the previous one. */
static int
engine_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	EngineShard *shard = userp;

	if (timeout_ms < 0)
		shard->timer_deadline = 0;
	else
		shard->timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/* A transfer has a connection and its request is about to go out. */
static int
engine_prereq_cb(void *userp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	SwarmTransfer *t = userp;

	/* the latest call counts: curl may send again on a fresh connection */
	t->on_wire = GetCurrentTimestamp();
	if (!t->sent)
	{
		t->sent = true;
		t->target->sent++;
	}
	return CURL_PREREQFUNC_OK;
}

static size_t
engine_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	SwarmTransfer *t = userp;
	size_t		n = size * nmemb;

	if (t->body_len + n > engine_max_bytes)
	{
		t->too_large = true;
		return 0;				/* aborts the transfer with CURLE_WRITE_ERROR */
	}
	if (t->body_len + n + 1 > t->body_cap)
	{
		size_t		cap = Max(t->body_cap * 2, 4096);
		char	   *grown;

		while (cap < t->body_len + n + 1)
			cap *= 2;
		grown = realloc(t->body, cap);
		if (grown == NULL)
			return 0;
		t->body = grown;
		t->body_cap = cap;
	}
	memcpy(t->body + t->body_len, data, n);
	t->body_len += n;
	t->body[t->body_len] = '\0';
	return n;
}

void
engine_init(void)
{
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	engine_epfd = epoll_create1(EPOLL_CLOEXEC);
	if (engine_epfd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create epoll instance: %m")));
	for (int i = 0; i < ENGINE_SHARDS; i++)
	{
		EngineShard *shard = &engine_shards[i];

		shard->multi = curl_multi_init();
		if (shard->multi == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not create libcurl multi handle")));
		curl_multi_setopt(shard->multi, CURLMOPT_SOCKETFUNCTION, engine_socket_cb);
		curl_multi_setopt(shard->multi, CURLMOPT_SOCKETDATA, shard);
		curl_multi_setopt(shard->multi, CURLMOPT_TIMERFUNCTION, engine_timer_cb);
		curl_multi_setopt(shard->multi, CURLMOPT_TIMERDATA, shard);
		curl_multi_setopt(shard->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	}
	engine_serial_shards = 1;

	/*
	 * One TLS session cache and one DNS cache for every handle of every
	 * shard: a new connection to an endpoint resumes a TLS session any
	 * handle made, instead of a full handshake.  (Connections themselves are
	 * not shared across shards.)  The worker is
	 * single-threaded, so the share needs no lock callbacks.
	 */
	engine_share = curl_share_init();
	if (engine_share == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create libcurl share handle")));
	curl_share_setopt(engine_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(engine_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);

	/* remember libcurl's default CA bundle, to go back to it */
	{
		CURL	   *probe = curl_easy_init();
		char	   *path = NULL;

		if (probe && curl_easy_getinfo(probe, CURLINFO_CAINFO, &path) == CURLE_OK && path)
			engine_default_ca_file = strdup(path);
		if (probe)
			curl_easy_cleanup(probe);
	}
}

void
engine_shutdown(void)
{
	for (int i = 0; i < ENGINE_SHARDS; i++)
	{
		if (engine_shards[i].multi != NULL)
			curl_multi_cleanup(engine_shards[i].multi);
		engine_shards[i].multi = NULL;
	}
	if (engine_epfd >= 0)
		close(engine_epfd);
	engine_epfd = -1;
	if (engine_share != NULL)
		curl_share_cleanup(engine_share);
	engine_share = NULL;
}

/* Connections per host on the multiplexing shard, for `max_in_flight` transfers. */
static int
engine_mux_connections(int max_in_flight)
{
	return Max((max_in_flight + ENGINE_STREAMS_PER_CONNECTION - 1) / ENGINE_STREAMS_PER_CONNECTION, 2);
}

/*
 * Apply the shared settings to transfers started from now on.  Transfers in
 * flight keep what they started with.
 */
void
engine_configure(const SwarmEngineSettings *s)
{
	if (engine_ca_file)
		free(engine_ca_file);
	engine_ca_file = s->ca_file ? strdup(s->ca_file) : NULL;
	engine_connect_timeout = s->connect_timeout_ms;
	engine_max_bytes = s->max_response_bytes;

	/*
	 * The worker admits no more transfers than its own in-flight bound, so
	 * curl's per-host connection limit stays off on the serial shards: with
	 * it set, curl parks transfers in its pending queue and, once the pooled
	 * connections have died (an endpoint restart, say), works that queue off
	 * one connection at a time.  The idle-connection cache is sized to the
	 * bound.  The multiplexing shard has its cap (see the shard comment).
	 */
	engine_serial_shards = Min(Max((s->max_connections + ENGINE_TRANSFERS_PER_SHARD - 1) /
								   ENGINE_TRANSFERS_PER_SHARD, 1), ENGINE_SERIAL_SHARDS);
	for (int i = 1; i < ENGINE_SHARDS; i++)
		curl_multi_setopt(engine_shards[i].multi, CURLMOPT_MAXCONNECTS,
						  (long) (s->max_connections / engine_serial_shards + 1));
	curl_multi_setopt(engine_shards[ENGINE_MUX_SHARD].multi, CURLMOPT_MAXCONNECTS,
					  (long) (s->max_connections + 1));
	engine_max_connections = Max(s->max_connections, 1);
	engine_mux_cap = engine_mux_connections(s->max_connections);
	engine_mux_short_since = 0;
	curl_multi_setopt(engine_shards[ENGINE_MUX_SHARD].multi, CURLMOPT_MAX_HOST_CONNECTIONS,
					  (long) engine_mux_cap);
	engine_config_generation++;
}

/* The request headers for an endpoint; the key is wiped from our copy. */
static struct curl_slist *
make_headers(const char *api_key)
{
	struct curl_slist *headers = NULL;

	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Accept: application/json");
	headers = curl_slist_append(headers, "Expect:");
	if (api_key != NULL && api_key[0] != '\0')
	{
		char	   *auth = psprintf("Authorization: Bearer %s", api_key);

		headers = curl_slist_append(headers, auth);
		explicit_bzero(auth, strlen(auth));
		pfree(auth);
	}
	return headers;
}

/*
 * Where transfers to an endpoint go: its URL (curl copies it), the request
 * headers with its key, its time limit.  Returned malloc'd; give it back
 * with engine_target_retire.
 */
SwarmTarget *
engine_target_make(const char *url, const char *api_key, long timeout_ms)
{
	SwarmTarget *t = calloc(1, sizeof(SwarmTarget));

	if (t == NULL || (t->url = strdup(url)) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	t->headers = make_headers(api_key);
	t->timeout_ms = timeout_ms;
	t->generation = ++engine_target_generation;
	t->may_multiplex = pg_strncasecmp(url, "https://", 8) == 0;
	return t;
}

static void
target_free(SwarmTarget *target)
{
	curl_slist_free_all(target->headers);
	free(target->url);
	free(target);
}

/*
 * No new transfer goes to `target`.  Its headers (curl does not copy them)
 * live on until the last transfer using them has ended.
 */
void
engine_target_retire(SwarmTarget *target)
{
	if (target == NULL)
		return;
	if (target->transfers > 0)
		target->retired = true;
	else
		target_free(target);
}

int
engine_event_fd(void)
{
	return engine_epfd;
}

/* Milliseconds until curl's timer is due (0 if overdue), or -1 if none. */
long
engine_timeout_ms(TimestampTz now)
{
	TimestampTz nearest = 0;

	for (int i = 0; i < ENGINE_SHARDS; i++)
	{
		TimestampTz d = engine_shards[i].timer_deadline;

		if (d != 0 && (nearest == 0 || d < nearest))
			nearest = d;
	}
	if (nearest == 0)
		return -1;
	if (nearest <= now)
		return 0;
	return (long) ((nearest - now + 999) / 1000);
}

static SwarmTransfer *
engine_new_transfer(void)
{
	SwarmTransfer *t = calloc(1, sizeof(SwarmTransfer));

	if (t == NULL)
		return NULL;
	t->easy = curl_easy_init();
	if (t->easy == NULL)
	{
		free(t);
		return NULL;
	}
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->easy, CURLOPT_SHARE, engine_share);
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	curl_easy_setopt(t->easy, CURLOPT_PREREQFUNCTION, engine_prereq_cb);
	curl_easy_setopt(t->easy, CURLOPT_PREREQDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, engine_write_cb);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(t->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(t->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(t->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(t->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(t->easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(t->easy, CURLOPT_SSL_VERIFYHOST, 2L);
	/* a drip-fed body is a stalled transfer: under 1 byte/s for 30 s */
	curl_easy_setopt(t->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(t->easy, CURLOPT_LOW_SPEED_TIME, 30L);
	t->config_generation = -1;
	t->target_generation = -1;
	return t;
}

/* The least busy of the serial shards in use (a shard beyond them drains). */
static int
least_busy_serial_shard(void)
{
	int			best = 1;

	for (int i = 2; i <= engine_serial_shards; i++)
		if (engine_shards[i].running < engine_shards[best].running)
			best = i;
	return best;
}

/*
 * Start one POST of `body` (which must stay valid until the transfer is
 * released), with the target's time limit, or timeout_cap_ms if shorter.  Returns NULL if curl refuses; the caller treats that as a
 * transport failure.
 */
SwarmTransfer *
engine_start(void *owner, const char *body, int body_len, SwarmTarget *target,
			 long timeout_cap_ms)
{
	long		timeout_ms;
	SwarmTransfer *t = engine_free_list;

	if (t != NULL)
		engine_free_list = t->next_free;
	else if ((t = engine_new_transfer()) == NULL)
		return NULL;

	if (t->config_generation != engine_config_generation)
	{
		curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, engine_connect_timeout);
		/* swarm.ca_file adds to the system's CA directory; it does not replace it */
		curl_easy_setopt(t->easy, CURLOPT_CAINFO,
						 engine_ca_file ? engine_ca_file : engine_default_ca_file);
		t->config_generation = engine_config_generation;
	}
	if (t->target_generation != target->generation)
	{
		curl_easy_setopt(t->easy, CURLOPT_URL, target->url);
		curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, target->headers);
		t->target_generation = target->generation;
	}
	timeout_ms = timeout_cap_ms > 0 ? Min(target->timeout_ms, timeout_cap_ms) : target->timeout_ms;
	if (t->timeout_ms != timeout_ms)
	{
		curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
		t->timeout_ms = timeout_ms;
	}
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, (long) body_len);
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, body);

	/*
	 * HTTP/2 (offered on https, as curl does by default): until the first
	 * connection to a host has told whether it multiplexes, wait for it
	 * rather than open another.  Never on a target that cannot multiplex
	 * (plain http, or https seen answering over HTTP/1.x): there curl would
	 * hold the transfer until the first connection's response has come back,
	 * and that wait counts against the transfer's time limit (a 5 s answer
	 * made the others time out after 5 s of a 10 s limit).
	 */
	curl_easy_setopt(t->easy, CURLOPT_PIPEWAIT, target->may_multiplex ? 1L : 0L);

	t->owner = owner;
	t->sent = false;
	t->body_len = 0;
	t->too_large = false;
	t->errbuf[0] = '\0';
	t->started = GetCurrentTimestamp();
	t->on_wire = 0;

	if (target->may_multiplex)
		t->shard = ENGINE_MUX_SHARD;
	else
		t->shard = least_busy_serial_shard();
	if (curl_multi_add_handle(engine_shards[t->shard].multi, t->easy) != CURLM_OK)
	{
		t->next_free = engine_free_list;
		engine_free_list = t;
		return NULL;
	}
	t->target = target;
	target->transfers++;
	dlist_push_tail(&engine_live, &t->live_node);
	engine_running++;
	engine_shards[t->shard].running++;
	return t;
}

/* The epoll descriptor is readable: let curl act on every ready socket. */
void
engine_on_sockets_ready(void)
{
	struct epoll_event events[256];
	int			n;

	do
	{
		n = epoll_wait(engine_epfd, events, lengthof(events), 0);
		for (int i = 0; i < n; i++)
		{
			int			flags = 0;
			int			still_running;

			if (events[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (events[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(engine_shards[events[i].data.u64 >> 32].multi,
									 (curl_socket_t) (events[i].data.u64 & 0xFFFFFFFF),
									 flags, &still_running);
		}
	} while (n == lengthof(events));
}

/* Some shard's timer is due: act on every shard whose timer is. */
void
engine_on_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < ENGINE_SHARDS; i++)
	{
		EngineShard *shard = &engine_shards[i];
		int			still_running;

		if (shard->timer_deadline == 0 || shard->timer_deadline > now)
			continue;
		shard->timer_deadline = 0;
		curl_multi_socket_action(shard->multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
	}
}

/*
 * How curl's result code reads as a transport outcome (outcome.h).  HTTP/0.9
 * ("Received HTTP/0.9 when not allowed": garbage instead of a status line)
 * comes as CURLE_UNSUPPORTED_PROTOCOL: our handles speak only http(s) to
 * URLs checked to be http(s), so nothing else can give it.
 */
static SwarmTransport
transport_of(CURLcode code, const SwarmTransfer *t)
{
	switch (code)
	{
		case CURLE_OK:
			return SWARM_TRANSPORT_OK;
		case CURLE_OPERATION_TIMEDOUT:
			return SWARM_TRANSPORT_TIMEOUT;
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			return SWARM_TRANSPORT_CONNECT;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
			return SWARM_TRANSPORT_TLS;
		case CURLE_WRITE_ERROR:
			/* our cap on the body, or out of memory */
			return t->too_large ? SWARM_TRANSPORT_TOO_LARGE : SWARM_TRANSPORT_FATAL;
		case CURLE_UNSUPPORTED_PROTOCOL:
			/* HTTP/0.9: a broken reply, like a reset */
			return SWARM_TRANSPORT_BROKEN;
		case CURLE_URL_MALFORMAT:
		case CURLE_NOT_BUILT_IN:
		case CURLE_FILESIZE_EXCEEDED:
		case CURLE_OUT_OF_MEMORY:
		case CURLE_BAD_FUNCTION_ARGUMENT:
			return SWARM_TRANSPORT_FATAL;
		default:
			return SWARM_TRANSPORT_BROKEN;
	}
}

/* Copy the response headers outcome.c reads (one pass over curl's store). */
static void
collect_headers(SwarmTransfer *t)
{
	static const struct
	{
		const char *name;
		size_t		offset;
		size_t		size;
	}			wanted[] = {
#define H(name, field) {name, offsetof(SwarmReplyHeaders, field), sizeof(((SwarmReplyHeaders *) 0)->field)},
		SWARM_REPLY_HEADERS(H)
#undef H
	};
	struct curl_header *h = NULL;

	memset(&t->headers, 0, sizeof(t->headers));
	/* -1: the last response of the transfer (after a 100 Continue, say) */
	while ((h = curl_easy_nextheader(t->easy, CURLH_HEADER, -1, h)) != NULL)
	{
		for (int i = 0; i < lengthof(wanted); i++)
			if (pg_strcasecmp(h->name, wanted[i].name) == 0)
			{
				strlcpy((char *) &t->headers + wanted[i].offset, h->value, wanted[i].size);
				break;
			}
	}
}

/*
 * Add again the transfers of `target` (of every target, if NULL) that wait
 * in the multiplexing shard, their request not sent yet: to the serial
 * shards if `to_serial`, else to the same shard, where curl weighs them
 * against its limits as they are now (it would otherwise wake one waiting
 * transfer per finished one).
 */
static void
requeue_waiting(SwarmTarget *target, bool to_serial)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &engine_live)
	{
		SwarmTransfer *t = dlist_container(SwarmTransfer, live_node, iter.cur);
		int			to = to_serial ? least_busy_serial_shard() : ENGINE_MUX_SHARD;

		if ((target != NULL && t->target != target) || t->shard != ENGINE_MUX_SHARD || t->sent)
			continue;
		if (curl_multi_remove_handle(engine_shards[t->shard].multi, t->easy) != CURLM_OK)
			continue;
		engine_shards[t->shard].running--;
		if (to_serial)
			curl_easy_setopt(t->easy, CURLOPT_PIPEWAIT, 0L);
		if (curl_multi_add_handle(engine_shards[to].multi, t->easy) == CURLM_OK)
			t->shard = to;
		else
			(void) curl_multi_add_handle(engine_shards[t->shard].multi, t->easy);
		engine_shards[t->shard].running++;
	}
}

/*
 * An https endpoint answered over HTTP/1.x: it does not multiplex, so its
 * transfers go to the serial shards, where each may hold a connection of its
 * own.  Those started before this was known and still waiting in the
 * multiplexing shard for a connection move there too: on that shard they
 * would wait for one of its few connections.
 */
static void
learn_protocol(SwarmTransfer *done)
{
	long		version = 0;

	if (curl_easy_getinfo(done->easy, CURLINFO_HTTP_VERSION, &version) != CURLE_OK ||
		(version != CURL_HTTP_VERSION_1_0 && version != CURL_HTTP_VERSION_1_1))
		return;
	done->target->may_multiplex = false;
	requeue_waiting(done->target, true);
}

/*
 * Called as `done`, a transfer of the multiplexing shard, ends: does its
 * server allow fewer streams per connection than the cap counts on?  Then
 * its transfers wait for a stream while those sent number fewer than
 * ENGINE_STREAMS_PER_CONNECTION per connection the cap allows (and at least
 * that many connections are open on the shard).  Seen at every end for
 * ENGINE_STREAM_LIMIT_PATIENCE (connections still in their handshake, which
 * carry no stream yet, do not last that long), the cap is raised to what
 * the streams seen per connection need for the in-flight bound, and the
 * waiting transfers are weighed again.  It only ever rises, at most to the
 * in-flight bound (a connection per request, as on the serial shards),
 * until the next reconfiguration; two endpoints on one host look like one
 * that allows fewer streams.
 */
static void
widen_mux_cap(SwarmTransfer *done, TimestampTz now)
{
	SwarmTarget *target = done->target;
	int			per_connection;
	int			cap;
	const char *host;

	if (!target->may_multiplex || target->transfers <= target->sent ||
		target->sent >= engine_mux_cap * ENGINE_STREAMS_PER_CONNECTION ||
		engine_shards[ENGINE_MUX_SHARD].sockets < engine_mux_cap ||
		engine_mux_cap >= engine_max_connections)
	{
		engine_mux_short_since = 0;
		return;
	}
	if (engine_mux_short_since == 0)
		engine_mux_short_since = now;
	if (now - engine_mux_short_since < ENGINE_STREAM_LIMIT_PATIENCE)
		return;
	engine_mux_short_since = 0;
	per_connection = Max((target->sent + engine_mux_cap / 2) / engine_mux_cap, 1);
	cap = Min((engine_max_connections + per_connection - 1) / per_connection,
			  engine_max_connections);
	if (cap <= engine_mux_cap)
		return;

	/* the host only: a query string may hold a key */
	host = strstr(target->url, "://");
	host = host ? host + 3 : target->url;
	ereport(LOG,
			(errmsg("HTTP/2 endpoint %.*s carries about %d requests per connection",
					(int) strcspn(host, "/?#"), host, per_connection),
			 errdetail("Up to %d connections per host from now on, instead of %d.",
					   cap, engine_mux_cap)));
	engine_mux_cap = cap;
	curl_multi_setopt(engine_shards[ENGINE_MUX_SHARD].multi, CURLMOPT_MAX_HOST_CONNECTIONS,
					  (long) cap);
	requeue_waiting(NULL, false);
}

/*
 * How long the endpoint took to answer `t`, finished at `now`: from its
 * request going out on the wire to the reply's last data arriving, with
 * none of the worker's own delays.  Before the wire the transfer waited for
 * curl, a connection or an HTTP/2 stream; after the arrival the worker was
 * busy elsewhere (a store, thousands of other replies) before it read the
 * reply.  On a CPU-bound machine those are tens of milliseconds growing
 * with our own load, which the adaptive limit (endpoint.c) would read as
 * queueing at the endpoint.  Subtracting how long the loop was busy before
 * its last wait is no cure: a reply may have arrived at any moment of that
 * stretch.
 *
 * The kernel knows when: TCP_INFO's tcpi_last_data_recv is the age (in ms,
 * at jiffy resolution) of the last data received on the connection, which
 * curl keeps open after the transfer (CURLINFO_ACTIVESOCKET).  Over
 * HTTP/1.1 that is the reply's end; on an HTTP/2 connection, the last
 * segment of any stream, so at worst the moment we read ours.  Without it
 * (the connection closed), the moment we collected the reply.  The estimate
 * is kept between the request going out and now.
 */
static double
endpoint_time_ms(SwarmTransfer *t, TimestampTz now)
{
	TimestampTz arrived = now;
	curl_socket_t sock = CURL_SOCKET_BAD;
	struct tcp_info info;
	socklen_t	len = sizeof(info);

	if (t->on_wire == 0)
		return (double) (now - t->started) / 1000.0;	/* it never went out */
	if (curl_easy_getinfo(t->easy, CURLINFO_ACTIVESOCKET, &sock) == CURLE_OK &&
		sock != CURL_SOCKET_BAD &&
		getsockopt(sock, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
		len >= offsetof(struct tcp_info, tcpi_last_data_recv) + sizeof(info.tcpi_last_data_recv))
	{
		TimestampTz kernel = now - (TimestampTz) info.tcpi_last_data_recv * 1000;

		if (kernel > t->on_wire)
			arrived = kernel;
	}
	return (double) (arrived - t->on_wire) / 1000.0;
}

/*
 * Next finished transfer, or NULL.  Fills *attempt with what it brought
 * (valid until the transfer is released), *latency_ms with its time since
 * engine_start(), and *endpoint_ms with the endpoint's part of it
 * (endpoint_time_ms).  The caller must engine_release() it.
 */
SwarmTransfer *
engine_next_done(SwarmAttempt *attempt, double *latency_ms, double *endpoint_ms)
{
	CURLMsg    *msg;
	int			left;

	for (int i = 0; i < ENGINE_SHARDS; i++)
	{
		while ((msg = curl_multi_info_read(engine_shards[i].multi, &left)) != NULL)
		{
			SwarmTransfer *t;
			CURLcode	code;
			long		status = 0;
			TimestampTz now;

			if (msg->msg != CURLMSG_DONE)
				continue;
			code = msg->data.result;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
			curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
			if (status > 0 && t->target->may_multiplex)
				learn_protocol(t);
			if (i == ENGINE_MUX_SHARD && code == CURLE_OK)
				widen_mux_cap(t, GetCurrentTimestamp());
			memset(attempt, 0, sizeof(*attempt));
			attempt->transport = transport_of(code, t);
			attempt->transport_error = t->errbuf[0] ? t->errbuf : curl_easy_strerror(code);
			attempt->status = status;
			attempt->body = t->body ? t->body : "";
			attempt->body_len = t->body_len;
			if (code == CURLE_OK)
				collect_headers(t);
			else
				memset(&t->headers, 0, sizeof(t->headers));
			attempt->headers = &t->headers;
			attempt->max_response_bytes = engine_max_bytes;
			attempt->wall_clock = time(NULL);
			now = GetCurrentTimestamp();
			*latency_ms = (double) (now - t->started) / 1000.0;
			*endpoint_ms = endpoint_time_ms(t, now);
			return t;
		}
	}
	return NULL;
}

/* Detach a transfer (finished or not) and return it to the pool. */
void
engine_release(SwarmTransfer *t)
{
	curl_multi_remove_handle(engine_shards[t->shard].multi, t->easy);
	engine_running--;
	engine_shards[t->shard].running--;
	if (t->sent)
		t->target->sent--;
	dlist_delete(&t->live_node);
	if (--t->target->transfers == 0 && t->target->retired)
		target_free(t->target);
	t->target = NULL;
	t->owner = NULL;
	/* do not let one huge response pin memory in the pool */
	if (t->body_cap > 256 * 1024)
	{
		free(t->body);
		t->body = NULL;
		t->body_cap = 0;
	}
	t->body_len = 0;
	t->next_free = engine_free_list;
	engine_free_list = t;
}

int
engine_in_flight(void)
{
	return engine_running;
}
