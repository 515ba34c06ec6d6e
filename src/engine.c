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
 * Constant options are set once per handle; the endpoint settings are applied
 * again only when they change (config_generation).
 *
 * Callbacks run inside curl and must not ereport: allocation failures there
 * abort only the transfer concerned.  Nothing here touches SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "engine.h"

/*
 * Transfers are spread over several multi handles ("shards").  curl looks for
 * a reusable connection by walking its connection cache, and with thousands
 * of connections in one multi that walk is most of the engine's CPU; shards
 * of at most ~500 keep it short.  Each shard has its own timer; all sockets
 * share the one epoll set, their event data naming shard and descriptor.
 */
#define ENGINE_MAX_SHARDS		8
#define ENGINE_TRANSFERS_PER_SHARD 500

typedef struct EngineShard
{
	CURLM	   *multi;
	TimestampTz timer_deadline; /* 0: no timer */
	int			running;
} EngineShard;

static EngineShard engine_shards[ENGINE_MAX_SHARDS];
static int	engine_nshards = 0;
static int	engine_epfd = -1;
static int	engine_running = 0;

static SwarmTransfer *engine_free_list = NULL;
static int	engine_config_generation = 0;
static int	engine_target_generation = 0;
static char *engine_ca_file = NULL;
static char *engine_default_ca_file = NULL;	/* libcurl's built-in bundle */
static long engine_connect_timeout = 5000;
static size_t engine_max_bytes = 8 * 1024 * 1024;

/* Header lists still referenced by transfers started before a reconfigure. */
static struct curl_slist **engine_retired_headers = NULL;
static int	engine_retired_count = 0;

static void
engine_free_retired_headers(void)
{
	if (engine_running > 0)
		return;
	for (int i = 0; i < engine_retired_count; i++)
		curl_slist_free_all(engine_retired_headers[i]);
	engine_retired_count = 0;
}

static int
engine_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	EngineShard *shard = userp;
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		if (socketp != NULL)
			(void) epoll_ctl(engine_epfd, EPOLL_CTL_DEL, s, NULL);
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

static bool
header_is(const char *line, size_t len, const char *name, const char **value)
{
	size_t		nlen = strlen(name);

	if (len <= nlen || pg_strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
		return false;
	*value = line + nlen + 1;
	while (**value == ' ' || **value == '\t')
		(*value)++;
	return true;
}

/*
 * Retry-After may be seconds (possibly fractional) or an HTTP date.  Returns
 * milliseconds, or -1 when absent or unusable.
 */
static double
parse_retry_after(const char *value, bool in_ms)
{
	char	   *end;
	double		v = strtod(value, &end);

	if (end != value)
	{
		while (*end == ' ' || *end == '\r' || *end == '\n')
			end++;
		if (*end == '\0' && v >= 0 && v < 1e9)
			return in_ms ? v : v * 1000.0;
		return -1;
	}
	if (!in_ms)
	{
		time_t		when = curl_getdate(value, NULL);

		if (when != -1)
		{
			double		ms = ((double) when - (double) time(NULL)) * 1000.0;

			return ms > 0 ? ms : 0;
		}
	}
	return -1;
}

/* The response-header hints of a transfer, as if no header had come. */
static void
forget_hints(SwarmTransfer *t)
{
	t->retry_after_ms = -1;
	t->should_retry = -1;
	t->remaining_requests = -1;
	t->remaining_tokens = -1;
	t->reset_requests_ms = -1;
	t->reset_tokens_ms = -1;
}

static int64
parse_count(const char *value)
{
	char	   *end;
	long long	v = strtoll(value, &end, 10);

	return (end == value || v < 0) ? -1 : (int64) v;
}

/*
 * x-ratelimit-reset-* values: Go-style durations ("1s", "6m0s", "12ms",
 * "2m59.56s", "1h2m") or plain seconds ("20", Azure).  "-1" and "0" mean
 * unknown.  Returns milliseconds, or -1.
 */
double
parse_duration_ms(const char *value)
{
	const char *p = value;
	double		total = 0;
	bool		any = false;

	while (*p == ' ')
		p++;
	while (*p && *p != '\r' && *p != '\n' && *p != ' ')
	{
		char	   *end;
		double		v = strtod(p, &end);

		if (end == p || v < 0)
			return -1;
		p = end;
		if (strncmp(p, "ms", 2) == 0)
		{
			total += v;
			p += 2;
		}
		else if (*p == 'h')
		{
			total += v * 3600000.0;
			p++;
		}
		else if (*p == 'm')
		{
			total += v * 60000.0;
			p++;
		}
		else if (*p == 's' || *p == '\0' || *p == '\r' || *p == '\n' || *p == ' ')
		{
			total += v * 1000.0;
			if (*p == 's')
				p++;
		}
		else
			return -1;
		any = true;
	}
	return (any && total > 0) ? total : -1;
}

static size_t
engine_header_cb(char *line, size_t size, size_t nitems, void *userp)
{
	SwarmTransfer *t = userp;
	size_t		len = size * nitems;
	const char *value;
	char		copy[256];

	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
	{
		/* a new response (after 100 Continue, say): forget earlier hints */
		forget_hints(t);
		return len;
	}
	if (len >= sizeof(copy))
		return len;
	memcpy(copy, line, len);
	copy[len] = '\0';

	if (header_is(copy, len, "retry-after-ms", &value))
	{
		double		ms = parse_retry_after(value, true);

		if (ms >= 0)
			t->retry_after_ms = ms;
	}
	else if (header_is(copy, len, "retry-after", &value))
	{
		/* retry-after-ms wins when both are present */
		if (t->retry_after_ms < 0)
			t->retry_after_ms = parse_retry_after(value, false);
	}
	else if (header_is(copy, len, "x-ratelimit-remaining-requests", &value))
		t->remaining_requests = parse_count(value);
	else if (header_is(copy, len, "x-ratelimit-remaining-tokens", &value))
		t->remaining_tokens = parse_count(value);
	else if (header_is(copy, len, "x-ratelimit-reset-requests", &value))
		t->reset_requests_ms = parse_duration_ms(value);
	else if (header_is(copy, len, "x-ratelimit-reset-tokens", &value))
		t->reset_tokens_ms = parse_duration_ms(value);
	else if (header_is(copy, len, "x-should-retry", &value))
		t->should_retry = (pg_strncasecmp(value, "true", 4) == 0) ? 1 :
			(pg_strncasecmp(value, "false", 5) == 0) ? 0 : -1;
	return len;
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
	for (int i = 0; i < ENGINE_MAX_SHARDS; i++)
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
	engine_nshards = 1;

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
	for (int i = 0; i < ENGINE_MAX_SHARDS; i++)
	{
		if (engine_shards[i].multi != NULL)
			curl_multi_cleanup(engine_shards[i].multi);
		engine_shards[i].multi = NULL;
	}
	if (engine_epfd >= 0)
		close(engine_epfd);
	engine_epfd = -1;
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
	 * curl's per-host connection limit stays off: with it set, curl parks
	 * transfers in its pending queue and, once the pooled connections have
	 * died (an endpoint restart, say), works that queue off one connection
	 * at a time.  The idle-connection cache is sized to the bound.
	 */
	engine_nshards = Min(Max((s->max_connections + ENGINE_TRANSFERS_PER_SHARD - 1) /
							 ENGINE_TRANSFERS_PER_SHARD, 1), ENGINE_MAX_SHARDS);
	for (int i = 0; i < ENGINE_MAX_SHARDS; i++)
		curl_multi_setopt(engine_shards[i].multi, CURLMOPT_MAXCONNECTS,
						  (long) (s->max_connections / engine_nshards + 1));
	engine_config_generation++;
	engine_free_retired_headers();
}

int
engine_new_target_generation(void)
{
	return ++engine_target_generation;
}

/* The request headers for an endpoint; the key is wiped from our copy. */
struct curl_slist *
engine_make_headers(const char *api_key)
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
 * A header list no longer used for new transfers.  Transfers in flight may
 * still point at it, so it is freed once nothing is in flight.
 */
void
engine_retire_headers(struct curl_slist *headers)
{
	struct curl_slist **grown;

	if (headers == NULL)
		return;
	grown = realloc(engine_retired_headers, sizeof(*grown) * (engine_retired_count + 1));
	if (grown == NULL)
		return;					/* leak it rather than free it under a transfer */
	engine_retired_headers = grown;
	engine_retired_headers[engine_retired_count++] = headers;
	engine_free_retired_headers();
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

	for (int i = 0; i < ENGINE_MAX_SHARDS; i++)
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
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, engine_write_cb);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, engine_header_cb);
	curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
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

/*
 * Start one POST of `body` (which must stay valid until the transfer is
 * released).  Returns NULL if curl refuses; the caller treats that as a
 * transport failure.
 */
SwarmTransfer *
engine_start(void *owner, const char *body, int body_len, const SwarmTarget *target)
{
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
		curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, target->timeout_ms);
		t->target_generation = target->generation;
	}
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, (long) body_len);
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, body);

	t->owner = owner;
	t->body_len = 0;
	t->too_large = false;
	forget_hints(t);
	t->errbuf[0] = '\0';
	t->started = GetCurrentTimestamp();

	/* the least busy of the shards in use (a shard beyond them drains) */
	t->shard = 0;
	for (int i = 1; i < engine_nshards; i++)
		if (engine_shards[i].running < engine_shards[t->shard].running)
			t->shard = i;
	if (curl_multi_add_handle(engine_shards[t->shard].multi, t->easy) != CURLM_OK)
	{
		t->next_free = engine_free_list;
		engine_free_list = t;
		return NULL;
	}
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

	for (int i = 0; i < ENGINE_MAX_SHARDS; i++)
	{
		EngineShard *shard = &engine_shards[i];
		int			still_running;

		if (shard->timer_deadline == 0 || shard->timer_deadline > now)
			continue;
		shard->timer_deadline = 0;
		curl_multi_socket_action(shard->multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
	}
}

/* Next finished transfer, or NULL.  The caller must engine_release() it. */
SwarmTransfer *
engine_next_done(CURLcode *result)
{
	CURLMsg    *msg;
	int			left;

	for (int i = 0; i < ENGINE_MAX_SHARDS; i++)
	{
		while ((msg = curl_multi_info_read(engine_shards[i].multi, &left)) != NULL)
		{
			SwarmTransfer *t;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
			*result = msg->data.result;
			return t;
		}
	}
	return NULL;
}

long
engine_http_status(SwarmTransfer *t)
{
	long		status = 0;

	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

/* Detach a transfer (finished or not) and return it to the pool. */
void
engine_release(SwarmTransfer *t)
{
	curl_multi_remove_handle(engine_shards[t->shard].multi, t->easy);
	engine_running--;
	engine_shards[t->shard].running--;
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
