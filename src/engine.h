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

#include "lib/ilist.h"
#include "utils/timestamp.h"

#include "outcome.h"

typedef struct SwarmTarget SwarmTarget;

typedef struct SwarmTransfer
{
	CURL	   *easy;
	void	   *owner;			/* the caller's object (a SwarmRequest) */
	SwarmTarget *target;		/* where it goes, while in flight */
	int			config_generation;	/* engine settings last applied to `easy` */
	int			target_generation;	/* SwarmTarget last applied to `easy` */
	long		timeout_ms;		/* CURLOPT_TIMEOUT_MS last applied */
	int			shard;			/* the multi handle it was added to */
	bool		sent;			/* its request has started going out */
	dlist_node	live_node;		/* in engine_live while in flight */
	/* response body, malloc'd and capped at max_response_bytes */
	char	   *body;
	size_t		body_len;
	size_t		body_cap;
	bool		too_large;
	SwarmReplyHeaders headers;	/* those outcome.c reads, copied at the end */
	char		errbuf[CURL_ERROR_SIZE];
	TimestampTz started;		/* engine_start() */
	TimestampTz on_wire;		/* its request last went out (0: not yet) */
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
 * Where one transfer goes: made by engine_target_make, retired by
 * engine_target_retire, freed once retired and no transfer uses it.
 * `generation` is unique across all targets ever made, so a pooled handle
 * knows whether it must be pointed anew.
 */
struct SwarmTarget
{
	char	   *url;
	struct curl_slist *headers;	/* with the key */
	long		timeout_ms;
	int			generation;
	bool		may_multiplex;	/* https, and not seen answering over HTTP/1.x */
	int			transfers;		/* in flight */
	int			sent;			/* of those, with their request sent */
	bool		retired;
};

extern void engine_init(void);
extern void engine_shutdown(void);
extern void engine_configure(const SwarmEngineSettings *settings);
extern int	engine_event_fd(void);
extern long engine_timeout_ms(TimestampTz now);
extern SwarmTarget *engine_target_make(const char *url, const char *api_key, long timeout_ms);
extern void engine_target_retire(SwarmTarget *target);
extern SwarmTransfer *engine_start(void *owner, const char *body, int body_len,
								   SwarmTarget *target, long timeout_cap_ms);
extern void engine_on_sockets_ready(void);
extern void engine_on_timeout(void);
extern SwarmTransfer *engine_next_done(SwarmAttempt *attempt, double *latency_ms,
									   double *endpoint_ms);
extern void engine_release(SwarmTransfer *t);
extern int	engine_in_flight(void);

#endif
