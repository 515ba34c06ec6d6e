/*-------------------------------------------------------------------------
 *
 * router.c
 *		The worker's registry of endpoints: 'default' (the swarm.* settings)
 *		and the rows of swarm.endpoints, each with its sending policy
 *		(endpoint.c), its engine target (URL, headers with the key, timeout)
 *		and its counters; and the choice of endpoint for a request.
 *
 * A job lists endpoints in failover order.  A request goes to the first one
 * that is up (not paused, breaker not open); a retry skips the endpoint its
 * last attempt failed at when another one is up.  If that one is up but cannot
 * take more right now (concurrency limit or budget), the request waits for it
 * rather than overflowing to the next: failover is for endpoints that are
 * down, not for ones that are busy.  When every listed endpoint is down the
 * request waits, it does not fail.
 *
 * Memory: everything lives in the context given to router_init.  API keys
 * are wiped before they are freed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "router.h"

static MemoryContext router_cxt = NULL;
static dlist_head router_endpoints = DLIST_STATIC_INIT(router_endpoints);
static int	router_count = 0;
static int	router_blocked_count = 0;

void
router_init(MemoryContext cxt)
{
	router_cxt = cxt;
}

static void
wipe(char **s)
{
	if (*s)
	{
		explicit_bzero(*s, strlen(*s));
		pfree(*s);
		*s = NULL;
	}
}

static void
free_endpoint(SwarmEndpoint *ep)
{
	dlist_delete(&ep->node);
	router_count--;
	engine_retire_headers(ep->target.headers);
	wipe(&ep->api_key);
	if (ep->model)
		pfree(ep->model);
	if (ep->target.url)
		pfree(ep->target.url);
	endpoint_policy_free(&ep->policy);
	pfree(ep);
}

SwarmEndpoint *
router_lookup(const char *name)
{
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);

		if (!ep->removed && strcmp(ep->name, name) == 0)
			return ep;
	}
	return NULL;
}

/* Create or update one endpoint; the caller passes a complete description. */
static void
apply(const char *name, bool is_default, const char *base_url, const char *model,
	  const char *api_key, int max_in_flight, int rpm, int64 tpm, int timeout_ms)
{
	SwarmEndpoint *ep = router_lookup(name);
	MemoryContext old = MemoryContextSwitchTo(router_cxt);
	size_t		blen = strlen(base_url);
	char	   *url;
	long		timeout;

	if (ep == NULL)
	{
		ep = palloc0(sizeof(SwarmEndpoint));
		strlcpy(ep->name, name, sizeof(ep->name));
		ep->is_default = is_default;
		endpoint_policy_init(&ep->policy, max_in_flight, rpm, tpm);
		dlist_push_tail(&router_endpoints, &ep->node);
		router_count++;
	}
	else
		endpoint_policy_reconfigure(&ep->policy, max_in_flight, rpm, tpm);
	ep->seen = true;

	if (ep->model)
		pfree(ep->model);
	ep->model = model ? pstrdup(model) : NULL;

	while (blen > 0 && base_url[blen - 1] == '/')
		blen--;
	url = psprintf("%.*s/chat/completions", (int) blen, base_url);
	timeout = timeout_ms > 0 ? timeout_ms : swarm_request_timeout_ms;

	/*
	 * Endpoints are re-read at every wake; rebuild the target (and make every
	 * pooled handle re-apply it) only when something in it changed.
	 */
	if (ep->target.url != NULL && strcmp(ep->target.url, url) == 0 &&
		ep->target.timeout_ms == timeout &&
		((ep->api_key == NULL && api_key == NULL) ||
		 (ep->api_key != NULL && api_key != NULL && strcmp(ep->api_key, api_key) == 0)))
	{
		pfree(url);
		MemoryContextSwitchTo(old);
		return;
	}
	wipe(&ep->api_key);
	ep->api_key = api_key ? pstrdup(api_key) : NULL;
	if (ep->target.url)
		pfree(ep->target.url);
	ep->target.url = url;
	engine_retire_headers(ep->target.headers);
	ep->target.headers = engine_make_headers(api_key);
	ep->target.timeout_ms = timeout;
	ep->target.generation = engine_new_target_generation();
	MemoryContextSwitchTo(old);
}

void
router_configure_default(const char *base_url, const char *api_key, int max_in_flight)
{
	apply("default", true, base_url, NULL, api_key, max_in_flight, 0, 0, 0);
}

void
router_begin_scan(void)
{
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);

		ep->seen = ep->is_default;
	}
}

void
router_upsert(const SwarmEndpointRow *row)
{
	apply(row->name, false, row->base_url, row->model, row->api_key, row->max_in_flight,
		  row->requests_per_minute, row->tokens_per_minute, row->timeout_ms);
}

/* Endpoints no longer listed are removed, once nothing is in flight there. */
void
router_end_scan(void)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);

		if (!ep->seen)
		{
			ep->removed = true;
			if (ep->policy.in_flight == 0)
				free_endpoint(ep);
		}
	}
}

/* A transfer to ep ended; free a removed endpoint once it is idle. */
void
router_release(SwarmEndpoint *ep)
{
	if (ep->removed && ep->policy.in_flight == 0)
		free_endpoint(ep);
}

void
router_begin_pass(void)
{
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
		dlist_container(SwarmEndpoint, node, it.cur)->blocked = false;
	router_blocked_count = 0;
}

/* Every endpoint is blocked in this pass: no point looking further. */
bool
router_all_blocked(void)
{
	return router_blocked_count >= router_count;
}

static void
block(SwarmEndpoint *ep)
{
	if (!ep->blocked)
	{
		ep->blocked = true;
		router_blocked_count++;
	}
}

/*
 * The endpoint a request of `tokens` should go to now, or NULL to wait; then
 * *retry_at is when waiting may end (0: when a transfer completes).
 */
SwarmEndpoint *
router_choose(char **names, int nnames, TimestampTz now, int64 tokens,
			  const SwarmEndpoint *avoid, TimestampTz *retry_at)
{
	TimestampTz earliest = 0;
	static char *default_name = "default";
	bool		skip_avoid;

	if (nnames == 0)
	{
		names = &default_name;
		nnames = 1;
	}
	/* a retry goes elsewhere when another endpoint of the list is up */
	skip_avoid = avoid != NULL &&
		router_has_alternative(names, nnames, (SwarmEndpoint *) avoid, now);
	*retry_at = 0;
	for (int i = 0; i < nnames; i++)
	{
		SwarmEndpoint *ep = router_lookup(names[i]);
		TimestampTz when;

		if (ep == NULL || (skip_avoid && ep == avoid))
			continue;
		if (ep->blocked)
			return NULL;
		if (endpoint_is_down(&ep->policy, now))
		{
			(void) endpoint_may_send(&ep->policy, now, tokens, &when);
			if (when > 0 && (earliest == 0 || when < earliest))
				earliest = when;
			block(ep);
			continue;
		}
		if (endpoint_may_send(&ep->policy, now, tokens, &when))
			return ep;
		/* up but busy: wait for it */
		block(ep);
		*retry_at = when;
		return NULL;
	}
	*retry_at = earliest;
	return NULL;
}

/* Is another endpoint of the list up, so that a retry need not wait? */
bool
router_has_alternative(char **names, int nnames, SwarmEndpoint *except, TimestampTz now)
{
	for (int i = 0; i < nnames; i++)
	{
		SwarmEndpoint *ep = router_lookup(names[i]);

		if (ep != NULL && ep != except && !endpoint_is_down(&ep->policy, now))
			return true;
	}
	return false;
}

/* Overwrite every API key found in `text`. */
void
router_scrub(char *text)
{
	dlist_iter	it;

	if (text == NULL)
		return;
	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);
		char	   *hit;

		if (ep->api_key == NULL || ep->api_key[0] == '\0')
			continue;
		while ((hit = strstr(text, ep->api_key)) != NULL)
			memset(hit, '*', strlen(ep->api_key));
	}
}

void
router_publish(TimestampTz now)
{
	SwarmEndpointSlot slots[SWARM_MAX_ENDPOINT_SLOTS];
	int			n = 0;
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);
		SwarmEndpointSlot *s;
		TimestampTz until;
		const char *state;

		if (ep->removed || n == SWARM_MAX_ENDPOINT_SLOTS)
			continue;
		s = &slots[n++];
		memset(s, 0, sizeof(*s));
		strlcpy(s->name, ep->name, sizeof(s->name));
		state = endpoint_state_name(&ep->policy, now, &until);
		strlcpy(s->state, state, sizeof(s->state));
		s->state_until = until;
		if (strcmp(state, "paused") == 0 && ep->policy.pause_reason)
			strlcpy(s->reason, ep->policy.pause_reason, sizeof(s->reason));
		else if (strcmp(state, "ok") != 0)
			strlcpy(s->reason, "repeated failures", sizeof(s->reason));
		s->limit = (int) ep->policy.limit;
		s->max_in_flight = ep->policy.max_in_flight;
		s->in_flight = ep->policy.in_flight;
		s->requests = ep->requests;
		s->succeeded = ep->succeeded;
		s->rate_limited = ep->rate_limited;
		s->errors = ep->errors;
		s->retries = ep->retries;
		s->breaker_opened = ep->breaker_opened;
		s->requests_last_minute = endpoint_window_count(&ep->policy.requests, now);
		s->tokens_last_minute = endpoint_window_total(&ep->policy.tokens, now);
	}
	swarm_shared_publish_endpoints(slots, n);
}
