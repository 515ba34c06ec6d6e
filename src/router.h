/*-------------------------------------------------------------------------
 *
 * router.h
 *		The worker's endpoints: which one a request goes to, what each
 *		attempt's outcome does to it, and their status (router.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_ROUTER_H
#define SWARM_ROUTER_H

#include "lib/ilist.h"

#include "endpoint.h"
#include "outcome.h"
#include "stats.h"

struct SwarmTarget;

typedef struct SwarmEndpoint
{
	char		name[64];
	bool		is_default;		/* the endpoint of the swarm.* settings */
	bool		seen;			/* still listed by the last scan */
	bool		removed;		/* dropped; freed when nothing is in flight */
	bool		blocked;		/* cannot take more in the current dispatch pass */
	char	   *model;			/* overrides the job's model; NULL: no */
	char	   *url;			/* <base_url>/chat/completions */
	char	   *api_key;		/* also to scrub it from error texts */
	long		timeout_ms;
	int			structured_output;	/* OpenAIOutputStyle: how it takes a response schema */
	TimestampTz changed_at;		/* swarm.endpoints.updated_at (default: last reload) */
	bool		target_stale;	/* url, key or timeout changed since the target was made */
	struct SwarmTarget *target; /* the engine's (made and retired by the worker) */
	SwarmEndpointPolicy policy;
	SwarmEndpointCounters counters;
	/* claim-time scratch (tick.c): what the jobs it comes first for hold */
	int			held;			/* their requests claimed and not yet ended */
	bool		wanted;			/* one of them has requests left to claim */
	dlist_node	node;
} SwarmEndpoint;

/*
 * What sending one attempt to an endpoint charged there: made by
 * router_note_sent(), kept by the request while the attempt is in flight,
 * and given back with the attempt's outcome to router_note_outcome(), which
 * settles it (frees the in-flight slot, corrects the token charge, closes
 * the latency sample of its epoch).
 */
typedef struct SwarmSend
{
	SwarmEndpoint *endpoint;
	SwarmEndpointCharge charge;	/* what endpoint.c charged there */
} SwarmSend;

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
	TimestampTz updated_at;		/* alter_endpoint() moves it: pauses end */
	int			structured_output;	/* OpenAIOutputStyle */
} SwarmEndpointRow;

extern void router_init(MemoryContext cxt);
extern void router_set_share(double share);
extern void router_configure_default(const char *base_url, const char *api_key,
									 int max_in_flight, long timeout_ms, bool adaptive,
									 int structured_output);
extern void router_begin_scan(void);
extern void router_upsert(const SwarmEndpointRow *row, long default_timeout_ms);
extern void router_end_scan(void);
extern SwarmEndpoint *router_next_stale(void);
extern SwarmEndpoint *router_next_unused(void);
extern void router_free(SwarmEndpoint *ep);
extern SwarmEndpoint *router_lookup(const char *name);
extern SwarmEndpoint *router_first_existing(char **names, int nnames);
extern void router_clear_held(void);
extern bool router_lists_existing(char **names, int nnames);
extern void router_begin_pass(void);
extern bool router_all_blocked(void);
extern SwarmEndpoint *router_choose(char **names, int nnames, TimestampTz now, int64 tokens,
									const SwarmEndpoint *avoid, TimestampTz *retry_at);
extern bool router_has_alternative(char **names, int nnames, const SwarmEndpoint *except,
								   TimestampTz now);
extern SwarmSend router_note_sent(SwarmEndpoint *ep, TimestampTz now, int64 tokens);
extern bool router_note_outcome(const SwarmSend *send, const SwarmOutcome *outcome,
								double latency_ms, TimestampTz now);
extern void router_scrub(char *text);
extern int	router_status(SwarmEndpointStatus *slots, int max, TimestampTz now);

#endif
