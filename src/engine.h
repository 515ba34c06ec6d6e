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
	/* response body, malloc'd and capped at max_response_bytes */
	char	   *body;
	size_t		body_len;
	size_t		body_cap;
	bool		too_large;
	/* hints from the response headers */
	double		retry_after_ms; /* -1: none */
	int			should_retry;	/* -1: absent, 0: false, 1: true */
	char		errbuf[CURL_ERROR_SIZE];
	TimestampTz started;
	struct SwarmTransfer *next_free;
} SwarmTransfer;

typedef struct SwarmEngineSettings
{
	const char *url;			/* full chat-completions URL */
	const char *api_key;		/* NULL: no Authorization header */
	const char *ca_file;		/* NULL: the system's trust store */
	long		timeout_ms;
	long		connect_timeout_ms;
	size_t		max_response_bytes;
	int			max_connections;
} SwarmEngineSettings;

extern void engine_init(void);
extern void engine_shutdown(void);
extern void engine_configure(const SwarmEngineSettings *settings);
extern int	engine_event_fd(void);
extern long engine_timeout_ms(TimestampTz now);
extern SwarmTransfer *engine_start(void *owner, const char *body, int body_len);
extern void engine_on_sockets_ready(void);
extern void engine_on_timeout(void);
extern SwarmTransfer *engine_next_done(CURLcode *result);
extern long engine_http_status(SwarmTransfer *t);
extern void engine_release(SwarmTransfer *t);
extern int	engine_in_flight(void);

#endif
