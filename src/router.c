/*-------------------------------------------------------------------------
 *
 * router.c
 *		The worker's registry of endpoints: 'default' (the swarm.* settings)
 *		and the rows of swarm.endpoints, each with its sending policy
 *		(endpoint.c), where it is (URL, key, timeout) and its counters; the
 *		choice of endpoint for a request, and what each attempt's outcome
 *		does to its endpoint.
 *
 * A job lists endpoints in failover order.  A request goes to the first one
 * that is up (not paused, breaker not open); a retry skips the endpoint its
 * last attempt failed at when another one is up.  If that one is up but cannot
 * take more right now (concurrency limit or budget), the request waits for it
 * rather than overflowing to the next: failover is for endpoints that are
 * down, not for ones that are busy.  When every listed endpoint is down the
 * request waits, it does not fail.
 *
 * The engine's view of an endpoint (a SwarmTarget: URL, header list with the
 * key) is made by the worker from url/api_key/timeout_ms whenever
 * target_stale says they changed, and retired by it before router_free():
 * this file calls no other module but the pure policy of endpoint.c.
 *
 * Memory: everything lives in the context given to router_init.  API keys
 * are wiped before they are freed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/memutils.h"

#include "router.h"

static MemoryContext router_cxt = NULL;
static dlist_head router_endpoints = DLIST_STATIC_INIT(router_endpoints);
static int	router_count = 0;
static int	router_blocked_count = 0;
static bool router_adaptive = true;

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

/* Free an endpoint that router_next_unused() gave out, its target retired. */
void
router_free(SwarmEndpoint *ep)
{
	Assert(ep->target == NULL);
	dlist_delete(&ep->node);
	router_count--;
	wipe(&ep->api_key);
	if (ep->model)
		pfree(ep->model);
	if (ep->url)
		pfree(ep->url);
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

/*
 * This node's share of every endpoint's budgets (max_in_flight, rpm, tpm):
 * 1 on one server; on a distributed swarm, its shards over all shards
 * (shards_share()), so that the nodes together stay within each budget.
 */
static double router_share = 1.0;

/* The 'default' endpoint as last configured, to apply again at a new share. */
static struct
{
	char	   *base_url;
	int			max_in_flight;
	long		timeout_ms;
	TimestampTz at;
}			default_args;

static int
share_of(int64 budget)
{
	int64		part;

	if (budget <= 0 || router_share >= 1.0)
		return (int) budget;
	part = (int64) floor(budget * router_share);
	return (int) Max(part, 1);
}

/* Create or update one endpoint; the caller passes a complete description. */
static void
apply(const char *name, bool is_default, const char *base_url, const char *model,
	  const char *api_key, int max_in_flight, int rpm, int64 tpm, long timeout_ms,
	  TimestampTz changed_at)
{
	TimestampTz now = GetCurrentTimestamp();
	SwarmEndpoint *ep = router_lookup(name);
	MemoryContext old = MemoryContextSwitchTo(router_cxt);
	size_t		blen = strlen(base_url);
	char	   *url;

	max_in_flight = share_of(max_in_flight);
	rpm = share_of(rpm);
	tpm = tpm > 0 && router_share < 1.0 ? Max((int64) floor(tpm * router_share), 1) : tpm;

	if (ep == NULL)
	{
		ep = palloc0(sizeof(SwarmEndpoint));
		strlcpy(ep->name, name, sizeof(ep->name));
		ep->is_default = is_default;
		endpoint_policy_init(&ep->policy, max_in_flight, rpm, tpm, router_adaptive);
		dlist_push_tail(&router_endpoints, &ep->node);
		router_count++;
	}
	else
		endpoint_policy_reconfigure(&ep->policy, max_in_flight, rpm, tpm, router_adaptive, now);
	ep->seen = true;
	/* an administrator changed it (or reloaded the settings): start afresh */
	if (changed_at != ep->changed_at)
	{
		endpoint_clear(&ep->policy);
		ep->changed_at = changed_at;
	}

	if (ep->model)
		pfree(ep->model);
	ep->model = model ? pstrdup(model) : NULL;

	while (blen > 0 && base_url[blen - 1] == '/')
		blen--;
	url = psprintf("%.*s/chat/completions", (int) blen, base_url);

	/*
	 * Endpoints are re-read at every wake; mark the target stale (so that
	 * every pooled handle re-applies it) only when something in it changed.
	 */
	if (ep->url != NULL && strcmp(ep->url, url) == 0 && ep->timeout_ms == timeout_ms &&
		((ep->api_key == NULL && api_key == NULL) ||
		 (ep->api_key != NULL && api_key != NULL && strcmp(ep->api_key, api_key) == 0)))
	{
		pfree(url);
		MemoryContextSwitchTo(old);
		return;
	}
	wipe(&ep->api_key);
	ep->api_key = api_key ? pstrdup(api_key) : NULL;
	if (ep->url)
		pfree(ep->url);
	ep->url = url;
	ep->timeout_ms = timeout_ms;
	ep->target_stale = true;
	MemoryContextSwitchTo(old);
}

/*
 * The endpoint of the swarm.* settings, (re)read at start and at each
 * reload; a reload also ends its pause and closes its breaker.
 * `adaptive` (swarm.adaptive_concurrency) applies to every endpoint.
 */
void
router_configure_default(const char *base_url, const char *api_key, int max_in_flight,
						 long timeout_ms, bool adaptive, int structured_output)
{
	SwarmEndpoint *def;

	router_adaptive = adaptive;
	default_args.at = GetCurrentTimestamp();
	if (default_args.base_url)
		pfree(default_args.base_url);
	default_args.base_url = MemoryContextStrdup(router_cxt, base_url);
	default_args.max_in_flight = max_in_flight;
	default_args.timeout_ms = timeout_ms;
	apply("default", true, base_url, NULL, api_key, max_in_flight, 0, 0, timeout_ms,
		  default_args.at);
	def = router_lookup("default");
	def->structured_output = structured_output;
}

/*
 * Set this node's share of the endpoints' budgets (see router_share); the
 * endpoint rows take it at the scan that follows, 'default' at once (its
 * key unchanged).
 */
void
router_set_share(double share)
{
	SwarmEndpoint *def;

	if (share <= 0.0 || share > 1.0)
		share = 1.0;
	if (share == router_share)
		return;
	router_share = share;
	def = router_lookup("default");
	if (def != NULL && default_args.base_url != NULL)
		apply("default", true, default_args.base_url, NULL, def->api_key,
			  default_args.max_in_flight, 0, 0, default_args.timeout_ms, default_args.at);
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
router_upsert(const SwarmEndpointRow *row, long default_timeout_ms)
{
	apply(row->name, false, row->base_url, row->model, row->api_key, row->max_in_flight,
		  row->requests_per_minute, row->tokens_per_minute,
		  row->timeout_ms > 0 ? row->timeout_ms : default_timeout_ms, row->updated_at);
	router_lookup(row->name)->structured_output = row->structured_output;
}

/* Endpoints the scan no longer listed are removed (see router_next_unused). */
void
router_end_scan(void)
{
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);

		if (!ep->seen)
			ep->removed = true;
	}
}

/* An endpoint whose engine target must be (re)made, or NULL; clears the mark. */
SwarmEndpoint *
router_next_stale(void)
{
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);

		if (ep->target_stale && !ep->removed)
		{
			ep->target_stale = false;
			return ep;
		}
	}
	return NULL;
}

/*
 * A removed endpoint with nothing in flight, or NULL: the caller retires its
 * target and calls router_free().
 */
SwarmEndpoint *
router_next_unused(void)
{
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);

		if (ep->removed && ep->policy.in_flight == 0)
			return ep;
	}
	return NULL;
}

/* The first endpoint of the list (none: 'default') that exists, or NULL. */
SwarmEndpoint *
router_first_existing(char **names, int nnames)
{
	if (nnames == 0)
		return router_lookup("default");
	for (int i = 0; i < nnames; i++)
	{
		SwarmEndpoint *ep = router_lookup(names[i]);

		if (ep != NULL)
			return ep;
	}
	return NULL;
}

/* Zero the claim-time scratch of every endpoint (see SwarmEndpoint.held). */
void
router_clear_held(void)
{
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);

		ep->held = 0;
		ep->wanted = false;
	}
}

/* Does any endpoint of the list (none: 'default') still exist? */
bool
router_lists_existing(char **names, int nnames)
{
	if (nnames == 0)
		return true;
	for (int i = 0; i < nnames; i++)
		if (router_lookup(names[i]) != NULL)
			return true;
	return false;
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
	skip_avoid = avoid != NULL && router_has_alternative(names, nnames, avoid, now);
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
router_has_alternative(char **names, int nnames, const SwarmEndpoint *except, TimestampTz now)
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

/* A request of `tokens` is going out to ep now: charge it there. */
SwarmSend
router_note_sent(SwarmEndpoint *ep, TimestampTz now, int64 tokens)
{
	SwarmSend	send;

	send.endpoint = ep;
	send.charge = endpoint_note_sent(&ep->policy, now, tokens);
	return send;
}

/*
 * The attempt of `send` ended with `outcome` after `latency_ms` (on the
 * wire, the worker's own delays taken out): feed the adaptive limit and the
 * breaker, correct the token charge, pause the endpoint if the reply asks
 * for it.  Returns true if this outcome opened the endpoint's breaker.
 */
bool
router_note_outcome(const SwarmSend *send, const SwarmOutcome *outcome, double latency_ms,
					TimestampTz now)
{
	SwarmEndpoint *ep = send->endpoint;
	SwarmBreakerState before = ep->policy.breaker;
	bool		opened;

	endpoint_note_result(&ep->policy, &send->charge, now, outcome->signal, latency_ms,
						 outcome->reply.completion_tokens);
	opened = ep->policy.breaker == SWARM_BREAKER_OPEN && before != SWARM_BREAKER_OPEN;
	if (opened)
		ereport(LOG,
				(errmsg("pg_swarm: endpoint \"%s\" failed repeatedly; not used until %s",
						ep->name, timestamptz_to_str(ep->policy.open_until))));
	if (outcome->signal == SWARM_SIGNAL_SUCCESS)
		endpoint_note_tokens_used(&ep->policy, send->charge.token_seq, send->charge.tokens,
								  outcome->tokens_used);
	if (outcome->pause_ms > 0)
		endpoint_pause(&ep->policy, TimestampTzPlusMilliseconds(now, (int64) outcome->pause_ms),
					   outcome->pause_reason);
	return opened;
}

/* The status of every endpoint, for swarm.endpoint_status; returns how many. */
int
router_status(SwarmEndpointStatus *slots, int max, TimestampTz now)
{
	int			n = 0;
	dlist_iter	it;

	dlist_foreach(it, &router_endpoints)
	{
		SwarmEndpoint *ep = dlist_container(SwarmEndpoint, node, it.cur);
		SwarmEndpointStatus *s;
		TimestampTz until;
		const char *state;

		if (ep->removed || n == max)
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
		s->counters = ep->counters;
		if (ep->policy.wait_reason != NULL)
			strlcpy(s->wait_reason, ep->policy.wait_reason, sizeof(s->wait_reason));
		s->wait_until = ep->policy.wait_until;
		s->queue_ratio = ep->policy.nhistory > 0 ? ep->policy.queue_ratio : -1;
		s->requests_last_minute = endpoint_window_count(&ep->policy.requests, now);
		s->tokens_last_minute = endpoint_window_total(&ep->policy.tokens, now);
	}
	return n;
}
