/*-------------------------------------------------------------------------
 *
 * router.h
 *		The worker's endpoints: which one a request goes to, and their status.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_ROUTER_H
#define SWARM_ROUTER_H

#include "swarm.h"
#include "endpoint.h"
#include "engine.h"

typedef struct SwarmEndpoint
{
	char		name[64];
	bool		is_default;		/* the endpoint of the swarm.* settings */
	bool		seen;			/* still listed by the last scan */
	bool		removed;		/* dropped; freed when nothing is in flight */
	bool		blocked;		/* cannot take more in the current dispatch pass */
	char	   *model;			/* overrides the job's model; NULL: no */
	char	   *api_key;		/* kept to scrub it from error texts */
	SwarmTarget target;
	SwarmEndpointPolicy policy;
	/* counters for swarm.endpoint_status */
	uint64		requests;
	uint64		succeeded;
	uint64		rate_limited;
	uint64		errors;
	uint64		retries;
	uint64		breaker_opened;
	dlist_node	node;
} SwarmEndpoint;

/* One row of swarm.endpoints, as queue.c reads it. */
typedef struct SwarmEndpointRow
{
	const char *name;
	const char *base_url;
	const char *model;
	const char *api_key;
	int			max_in_flight;
	int			requests_per_minute;
	int64		tokens_per_minute;
	int			timeout_ms;		/* 0: swarm.request_timeout */
} SwarmEndpointRow;

extern void router_init(MemoryContext cxt);
extern void router_configure_default(const char *base_url, const char *api_key, int max_in_flight);
extern void router_begin_scan(void);
extern void router_upsert(const SwarmEndpointRow *row);
extern void router_end_scan(void);
extern SwarmEndpoint *router_lookup(const char *name);
extern void router_begin_pass(void);
extern bool router_all_blocked(void);
extern SwarmEndpoint *router_choose(char **names, int nnames, TimestampTz now, int64 tokens,
									const SwarmEndpoint *avoid, TimestampTz *retry_at);
extern bool router_has_alternative(char **names, int nnames, SwarmEndpoint *except, TimestampTz now);
extern void router_release(SwarmEndpoint *ep);
extern void router_scrub(char *text);
extern void router_publish(TimestampTz now);

#endif
