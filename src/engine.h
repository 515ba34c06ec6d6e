/*-------------------------------------------------------------------------
 *
 * engine.h
 *		The asynchronous HTTP engine: libcurl multi driven by epoll.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_ENGINE_H
#define SWARM_ENGINE_H

#include <curl/curl.h>

#include "utils/timestamp.h"

typedef struct SwarmTransfer
{
	CURL	   *easy;
	void	   *owner;			/* the caller's object (a SwarmRequest) */
	int			config_generation;	/* engine settings last applied to `easy` */
	int			target_generation;	/* SwarmTarget last applied to `easy` */
	int			shard;			/* the multi handle it was added to */
	/* response body, malloc'd and capped at max_response_bytes */
	char	   *body;
	size_t		body_len;
	size_t		body_cap;
	bool		too_large;
	/* hints from the response headers */
	double		retry_after_ms; /* -1: none */
	int			should_retry;	/* -1: absent, 0: false, 1: true */
	int64		remaining_requests; /* x-ratelimit-remaining-*: -1 absent */
	int64		remaining_tokens;
	double		reset_requests_ms;	/* x-ratelimit-reset-*: -1 absent */
	double		reset_tokens_ms;
	char		errbuf[CURL_ERROR_SIZE];
	TimestampTz started;
	struct SwarmTransfer *next_free;
} SwarmTransfer;

/* Settings shared by every transfer. */
typedef struct SwarmEngineSettings
{
	const char *ca_file;		/* NULL: the system's trust store */
	long		connect_timeout_ms;
	size_t		max_response_bytes;
	int			max_connections;
} SwarmEngineSettings;

/*
 * Where one transfer goes.  `generation` is unique across all targets ever
 * made (engine_new_target_generation), so a pooled handle knows whether it
 * must be pointed anew.  The caller owns url; headers come from
 * engine_make_headers and go back through engine_retire_headers.
 */
typedef struct SwarmTarget
{
	char	   *url;
	struct curl_slist *headers;
	long		timeout_ms;
	int			generation;
} SwarmTarget;

extern void engine_init(void);
extern void engine_shutdown(void);
extern void engine_configure(const SwarmEngineSettings *settings);
extern int	engine_event_fd(void);
extern long engine_timeout_ms(TimestampTz now);
extern int	engine_new_target_generation(void);
extern struct curl_slist *engine_make_headers(const char *api_key);
extern void engine_retire_headers(struct curl_slist *headers);
extern SwarmTransfer *engine_start(void *owner, const char *body, int body_len,
								   const SwarmTarget *target);
extern void engine_on_sockets_ready(void);
extern void engine_on_timeout(void);
extern SwarmTransfer *engine_next_done(CURLcode *result);
extern long engine_http_status(SwarmTransfer *t);
extern void engine_release(SwarmTransfer *t);
extern int	engine_in_flight(void);
extern double parse_duration_ms(const char *value);

#endif
