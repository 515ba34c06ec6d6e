/*
 * friendship_models.c
 *		The friendship graph: an edge set with a degree cap, its four
 *		generative models, and swarm._friendship_rows(), which streams it.
 *
 * What this file owns
 * -------------------
 * swarm._friendship_rows(max_friends, model, seed, avg_friends): builds an
 * undirected graph over every row of swarm.agents and streams it back, both
 * directions of every friendship, sorted by (agent_id, friend_id) so that the
 * primary-key btree of swarm.friendships is filled at its right edge.
 * swarm.build_friendships() (src/sql/functions/20_social.sql) truncates the table and
 * INSERTs these rows.  Tables are read by graph_io.c; the result is a CSR
 * built by csr.c.
 *
 * Data flow and memory
 * --------------------
 * First call: agents (graph_io: sorted int64 ids, 8 B/agent; an agent is
 * its uint32 index) and, for homophily, the groups, into the SRF's
 * multi-call context.  Then, in a build context: the edge list (8 B/edge),
 * an open-addressing hash set of edges for duplicate checks (<= 16 B/edge at
 * its load factor), degrees (4 B/agent).  Then the CSR of both directions
 * (8 B/agent + 8 B/edge) is made in the multi-call context and the build
 * context is deleted, so what streams the rows is only the ids, the CSR and
 * the groups.  For 1,000,000 agents and 5,000,000 friendships the peak is
 * about 200 MB (docs/social.md).  Later calls walk the CSR; each row's
 * since and strength come from a stream keyed by the pair, so they do not
 * depend on the order rows are produced in.  Nothing here is shared between
 * backends; swarm.build_friendships() itself takes the table lock.
 *
 * Models (n agents, cap = max_friends, d = avg_friends target)
 * ----------------------------------------------------------
 *	random		  G(n, m) with m = n*d/2: uniform random pairs among agents that
 *				  still have room (degree < cap); duplicates and self-pairs are
 *				  redrawn.  Poisson-like degrees when d is well below cap.
 *	small_world	  Watts-Strogatz: a ring lattice where each agent knows its K
 *				  nearest neighbours (K = d rounded down to even, <= cap, < n),
 *				  then each lattice edge is rewired with probability 0.1.  The
 *				  rewiring is degree-preserving: a rewired edge (u,v) keeps its
 *				  end at u and is re-attached to a free slot drawn at random
 *				  from all the slots freed by rewiring, so every agent ends
 *				  with exactly K friends (bar a few unmatched slots) and the
 *				  cap can never be exceeded.  High clustering, short paths.
 *	preferential  Barabasi-Albert: agents join in id order, each linking to
 *				  d/2 earlier agents chosen proportionally to degree (sampling
 *				  the list of edge ends).  An agent at the cap takes no more
 *				  links (the sample is redrawn), so the power-law tail is cut
 *				  at cap: a heavy tail needs cap well above d, which is why
 *				  d defaults to cap/2 for this model.
 *	homophily	  like random, but with probability 0.85 the second end is
 *				  drawn from agents sharing one of the first end's groups:
 *				  its persona interests and its communities.  Strength grows
 *				  with the number of groups shared.
 *
 * Every random choice comes from social_rng.h streams keyed by the seed, so a
 * seed reproduces the graph exactly.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "csr.h"
#include "graph_io.h"
#include "social_rng.h"

PG_FUNCTION_INFO_V1(swarm_friendship_rows);

typedef enum GraphModel
{
	GRAPH_RANDOM,
	GRAPH_SMALL_WORLD,
	GRAPH_PREFERENTIAL,
	GRAPH_HOMOPHILY
} GraphModel;

/* The validated arguments of swarm._friendship_rows. */
typedef struct FriendshipArgs
{
	GraphModel	model;
	int32		cap;			/* max_friends */
	int32		avg;			/* avg_friends, defaulted */
} FriendshipArgs;

/* Undirected edge list plus a hash set of (lo << 32 | hi) keys. */
typedef struct EdgeSet
{
	uint32	   *ends;			/* 2 * m entries: u0 v0 u1 v1 ... */
	uint64		m;
	uint64		max_m;
	uint64	   *slots;			/* 0 = empty (no self-loops, so key 0 is never used) */
	uint64		mask;
	uint32	   *degree;
} EdgeSet;

/* What the SRF keeps between calls. */
typedef struct FriendshipStream
{
	GraphAgents agents;
	SocialCsr	friends;		/* both directions, sorted per agent */
	GraphGroups *groups;		/* homophily only, for strength */
	uint64		seed;
	TimestampTz now;
	uint32		cur_agent;
	uint64		cur_pos;
	TupleDesc	tupdesc;
} FriendshipStream;

/* ------------------------------------------------------------------------
 * The edge set
 * ------------------------------------------------------------------------ */

static void
edges_init(EdgeSet *es, uint32 n, uint64 max_m)
{
	uint64		nslots = 16;

	while (nslots < max_m + max_m / 2 + 16)
		nslots <<= 1;
	es->ends = palloc_extended((max_m + 1) * 2 * sizeof(uint32), MCXT_ALLOC_HUGE);
	es->m = 0;
	es->max_m = max_m;
	es->slots = palloc_extended(nslots * sizeof(uint64), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	es->mask = nslots - 1;
	es->degree = palloc_extended((Size) Max(n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
}

static inline uint64
edge_key(uint32 u, uint32 v)
{
	return u < v ? ((uint64) u << 32) | v : ((uint64) v << 32) | u;
}

static inline bool
edges_contains(const EdgeSet *es, uint32 u, uint32 v)
{
	uint64		key = edge_key(u, v);
	uint64		h = social_mix64(key) & es->mask;

	while (es->slots[h] != 0)
	{
		if (es->slots[h] == key)
			return true;
		h = (h + 1) & es->mask;
	}
	return false;
}

/* Adds u-v unless it is a self-loop, a duplicate, or the set is full. */
static inline bool
edges_add(EdgeSet *es, uint32 u, uint32 v)
{
	uint64		key;
	uint64		h;

	if (u == v || es->m >= es->max_m)
		return false;
	key = edge_key(u, v);
	h = social_mix64(key) & es->mask;
	while (es->slots[h] != 0)
	{
		if (es->slots[h] == key)
			return false;
		h = (h + 1) & es->mask;
	}
	es->slots[h] = key;
	es->ends[2 * es->m] = u;
	es->ends[2 * es->m + 1] = v;
	es->m++;
	es->degree[u]++;
	es->degree[v]++;
	return true;
}

/*
 * A set of agents that still have room, with O(1) random pick and removal.
 */
typedef struct RoomPool
{
	uint32	   *items;
	uint32	   *pos;			/* position in items, or UINT32_MAX */
	uint32		size;
} RoomPool;

static void
pool_init(RoomPool *p, uint32 n)
{
	p->items = palloc_extended((Size) Max(n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
	p->pos = palloc_extended((Size) Max(n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
	for (uint32 i = 0; i < n; i++)
		p->items[i] = p->pos[i] = i;
	p->size = n;
}

static inline void
pool_remove(RoomPool *p, uint32 x)
{
	uint32		at = p->pos[x];
	uint32		last;

	if (at == PG_UINT32_MAX)
		return;
	last = p->items[--p->size];
	p->items[at] = last;
	p->pos[last] = at;
	p->pos[x] = PG_UINT32_MAX;
}

/* Edge u-v between agents with room, keeping the pool up to date. */
static inline bool
add_with_cap(EdgeSet *es, RoomPool *pool, uint32 u, uint32 v, uint32 cap)
{
	if (es->degree[u] >= cap || es->degree[v] >= cap || !edges_add(es, u, v))
		return false;
	if (pool && es->degree[u] >= cap)
		pool_remove(pool, u);
	if (pool && es->degree[v] >= cap)
		pool_remove(pool, v);
	return true;
}

/* ------------------------------------------------------------------------
 * The models
 * ------------------------------------------------------------------------ */

/*
 * random and homophily: pairs drawn until m edges exist, or until draws keep
 * failing (the graph is saturated: everyone left with room already knows
 * everyone else left with room).
 */
static void
build_random_like(EdgeSet *es, uint32 n, uint32 cap, uint64 target, uint64 seed,
				  const GraphGroups *groups, double homophily)
{
	RoomPool	pool;
	SocialRng	r = social_rng_for(seed, SOCIAL_RNG_GRAPH_BUILD, 0);
	uint64		fails = 0;
	uint64		draws = 0;

	/*
	 * Give up after many failed draws in a row, relative to the agents left
	 * with room: when they all know each other nothing more can be added.
	 */
	pool_init(&pool, n);
	while (es->m < target && pool.size >= 2 && fails < 1000 + 64 * (uint64) pool.size)
	{
		uint32		u = pool.items[social_rng_below(&r, pool.size)];
		uint32		v;

		if ((++draws & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
		if (groups && social_rng_double(&r) < homophily &&
			csr_degree(&groups->by_agent, u) > 0)
		{
			uint64		ng = csr_degree(&groups->by_agent, u);
			uint32		g = groups->by_agent.adj[groups->by_agent.off[u] + social_rng_below(&r, ng)];
			uint64		gs = csr_degree(&groups->by_group, g);

			v = groups->by_group.adj[groups->by_group.off[g] + social_rng_below(&r, gs)];
		}
		else
			v = pool.items[social_rng_below(&r, pool.size)];

		if (add_with_cap(es, &pool, u, v, cap))
			fails = 0;
		else
			fails++;
	}
}

/* small_world: see the header comment. */
static void
build_small_world(EdgeSet *es, uint32 n, uint32 k, double beta, uint64 seed)
{
	SocialRng	r = social_rng_for(seed, SOCIAL_RNG_GRAPH_BUILD, 0);
	uint32		half = k / 2;
	uint64		expected = (uint64) ((double) n * half * beta * 1.2) + 64;
	uint64		cap_rewired = Min(expected, (uint64) n * half);
	uint32	   *keep_end = palloc_extended(cap_rewired * sizeof(uint32), MCXT_ALLOC_HUGE);
	uint32	   *free_slot = palloc_extended(cap_rewired * sizeof(uint32), MCXT_ALLOC_HUGE);
	uint64		nrewired = 0;
	uint64		nfree;

	/* phase 1: the lattice, minus the edges chosen for rewiring */
	for (uint32 u = 0; u < n; u++)
	{
		for (uint32 j = 1; j <= half; j++)
		{
			uint32		v = (uint32) (((uint64) u + j) % n);

			if (nrewired < cap_rewired && social_rng_double(&r) < beta)
			{
				keep_end[nrewired] = u;
				free_slot[nrewired] = v;
				nrewired++;
			}
			else
				edges_add(es, u, v);
		}
		if ((u & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
	}

	/* phase 2: re-attach each kept end to a random freed slot */
	nfree = nrewired;
	for (uint64 e = 0; e < nrewired && nfree > 0; e++)
	{
		uint32		u = keep_end[e];

		for (int attempt = 0; attempt < 32; attempt++)
		{
			uint64		at = social_rng_below(&r, nfree);
			uint32		w = free_slot[at];

			if (w != u && !edges_contains(es, u, w))
			{
				edges_add(es, u, w);
				free_slot[at] = free_slot[--nfree];
				break;
			}
		}
		if ((e & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	pfree(keep_end);
	pfree(free_slot);
}

/* preferential: see the header comment. */
static void
build_preferential(EdgeSet *es, uint32 n, uint32 cap, double d, uint64 seed)
{
	SocialRng	r = social_rng_for(seed, SOCIAL_RNG_GRAPH_BUILD, 0);
	double		per_node = d / 2.0;
	uint32		m0 = (uint32) ceil(per_node);
	uint32		core = Min(n, m0 + 1);
	uint64		rejected = 0;

	/* a small clique to start from */
	for (uint32 u = 0; u < core; u++)
		for (uint32 v = u + 1; v < core; v++)
			add_with_cap(es, NULL, u, v, cap);

	for (uint32 t = core; t < n; t++)
	{
		uint32		want = (uint32) floor(per_node);
		uint32		got = 0;

		if (social_rng_double(&r) < per_node - floor(per_node))
			want++;
		want = Min(want, cap);

		while (got < want)
		{
			uint32		w = PG_UINT32_MAX;

			/* degree-proportional: a uniform pick among edge ends */
			for (int attempt = 0; attempt < 64 && es->m > 0; attempt++)
			{
				uint32		c = es->ends[social_rng_below(&r, 2 * es->m)];

				if (c != t && es->degree[c] < cap && !edges_contains(es, t, c))
				{
					w = c;
					break;
				}
				rejected++;
			}
			/* hubs saturated: fall back to a uniform earlier agent */
			for (int attempt = 0; attempt < 64 && w == PG_UINT32_MAX; attempt++)
			{
				uint32		c = (uint32) social_rng_below(&r, t);

				if (es->degree[c] < cap && !edges_contains(es, t, c))
					w = c;
			}
			if (w == PG_UINT32_MAX || !add_with_cap(es, NULL, t, w, cap))
				break;
			got++;
		}
		if ((t & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	(void) rejected;
}

/* ------------------------------------------------------------------------
 * swarm._friendship_rows
 * ------------------------------------------------------------------------ */

/* Number of groups a and b share (lists are short; quadratic is fine). */
static int
groups_shared(const GraphGroups *gg, uint32 a, uint32 b)
{
	int			shared = 0;

	const SocialCsr *ag = &gg->by_agent;

	for (uint64 i = ag->off[a]; i < ag->off[a + 1]; i++)
		for (uint64 j = ag->off[b]; j < ag->off[b + 1]; j++)
			if (ag->adj[i] == ag->adj[j])
				shared++;
	return shared;
}

static GraphModel
graph_parse_model(text *model)
{
	char	   *s = text_to_cstring(model);

	if (strcmp(s, "random") == 0)
		return GRAPH_RANDOM;
	if (strcmp(s, "small_world") == 0)
		return GRAPH_SMALL_WORLD;
	if (strcmp(s, "preferential") == 0)
		return GRAPH_PREFERENTIAL;
	if (strcmp(s, "homophily") == 0)
		return GRAPH_HOMOPHILY;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown friendship model \"%s\"", s),
			 errhint("Use one of random, small_world, preferential, homophily.")));
	return GRAPH_RANDOM;		/* keep compiler quiet */
}

/*
 * Validates the arguments of swarm._friendship_rows into args; ereports on a
 * NULL or non-positive max_friends, a NULL or unknown model, an avg_friends
 * outside [1, max_friends].  A NULL avg_friends means max_friends, or half
 * of it for preferential (see the header comment).
 */
static void
friendship_args(FunctionCallInfo fcinfo, FriendshipArgs *args)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_friends_per_agent must not be null")));
	args->cap = PG_GETARG_INT32(0);
	if (args->cap < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_friends_per_agent must be at least 1"),
				 errdetail("The value given was %d.", args->cap)));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("model must not be null"),
				 errhint("Use one of random, small_world, preferential, homophily.")));
	args->model = graph_parse_model(PG_GETARG_TEXT_PP(1));
	if (PG_ARGISNULL(3))
	{
		args->avg = (args->model == GRAPH_PREFERENTIAL) ? Max(1, args->cap / 2) : args->cap;
		return;
	}
	args->avg = PG_GETARG_INT32(3);
	if (args->avg < 1 || args->avg > args->cap)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("avg_friends must be between 1 and max_friends_per_agent (%d)", args->cap),
				 errdetail("The value given was %d.", args->avg)));
}

/*
 * Runs the model over n agents into es, which it sizes: small_world's exact
 * edge count, the target for random and homophily, and room for the clique
 * and rounding for preferential.  Allocates in the current context.
 */
static void
friendship_build(EdgeSet *es, const FriendshipArgs *args, uint32 n,
				 const GraphGroups *groups, uint64 seed)
{
	uint64		target;

	if (args->model == GRAPH_SMALL_WORLD)
	{
		uint32		k = (uint32) Min(args->avg, args->cap);

		if (n > 0 && k > n - 1)
			k = n - 1;
		k &= ~1U;				/* a ring lattice needs an even degree */
		edges_init(es, n, (uint64) n * (k / 2));
		if (k > 0)
			build_small_world(es, n, k, 0.1, seed);
		return;
	}
	target = (uint64) ((double) n * args->avg / 2.0 + 0.5);
	if (n > 0)
		target = Min(target, (uint64) n * (n - 1) / 2);
	if (args->model == GRAPH_PREFERENTIAL)
	{
		edges_init(es, n, target + (uint64) n + (uint64) args->avg * args->avg);
		build_preferential(es, n, (uint32) args->cap, args->avg, seed);
		return;
	}
	edges_init(es, n, target);
	build_random_like(es, n, (uint32) args->cap, target, seed,
					  groups, args->model == GRAPH_HOMOPHILY ? 0.85 : 0.0);
}

/*
 * The first call's work: reads the agents (and groups), builds the graph and
 * keeps only its CSR.  Everything it returns lives in mcxt, the SRF's
 * multi-call context; the edge set is built in a child context deleted here.
 */
static FriendshipStream *
friendship_stream(FunctionCallInfo fcinfo, MemoryContext mcxt, const FriendshipArgs *args)
{
	MemoryContext old = MemoryContextSwitchTo(mcxt);
	MemoryContext buildcxt;
	FriendshipStream *fs = palloc0(sizeof(FriendshipStream));
	TupleDesc	tupdesc;
	EdgeSet		es;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	fs->tupdesc = BlessTupleDesc(tupdesc);
	fs->seed = social_rng_seed_arg(fcinfo, 2);
	fs->now = GetCurrentTransactionStartTimestamp();
	graph_io_load_agents(&fs->agents);
	if (args->model == GRAPH_HOMOPHILY)
		fs->groups = graph_io_load_groups(&fs->agents);

	buildcxt = AllocSetContextCreate(mcxt, "swarm friendship build", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(buildcxt);
	friendship_build(&es, args, fs->agents.n, fs->groups, fs->seed);
	MemoryContextSwitchTo(mcxt);
	csr_from_pairs(&fs->friends, fs->agents.n, es.ends, es.m, CSR_BOTH_DIRECTIONS | CSR_SORTED);
	MemoryContextDelete(buildcxt);

	MemoryContextSwitchTo(old);
	return fs;
}

/*
 * The row for friendship u -> v: since within the year before the
 * transaction started, strength in (0, 1], both drawn from the pair's own
 * stream, so the two directions of a friendship get the same values.
 */
static HeapTuple
friendship_row(const FriendshipStream *fs, uint32 u, uint32 v)
{
	SocialRng	r = social_rng_for(fs->seed, SOCIAL_RNG_FRIENDSHIP, edge_key(u, v));
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	double		strength = 1.0 - social_rng_double(&r);	/* (0, 1] */
	int64		age_us = (int64) (social_rng_double(&r) * 365.0 * USECS_PER_DAY);

	if (fs->groups)
	{
		int			shared = groups_shared(fs->groups, u, v);

		/* shared groups make a stronger tie: (0.2, 1] */
		strength = Min(1.0, 0.2 + 0.2 * shared + 0.3 * strength);
	}
	values[0] = Int64GetDatum(fs->agents.ids[u]);
	values[1] = Int64GetDatum(fs->agents.ids[v]);
	values[2] = TimestampTzGetDatum(fs->now - age_us);
	values[3] = Float4GetDatum((float4) strength);
	return heap_form_tuple(fs->tupdesc, values, nulls);
}

/*
 * swarm._friendship_rows(max_friends int, model text, seed bigint, avg_friends int)
 *	 RETURNS TABLE(agent_id bigint, friend_id bigint, since timestamptz, strength real)
 *
 * Value-per-call SRF.  The whole graph is built on the first call (see the
 * header comment for its memory); later calls walk the CSR.  ereports as
 * friendship_args() says.
 */
Datum
swarm_friendship_rows(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	FriendshipStream *fs;

	if (SRF_IS_FIRSTCALL())
	{
		FriendshipArgs args;

		friendship_args(fcinfo, &args);
		funcctx = SRF_FIRSTCALL_INIT();
		funcctx->user_fctx = friendship_stream(fcinfo, funcctx->multi_call_memory_ctx, &args);
	}

	funcctx = SRF_PERCALL_SETUP();
	fs = (FriendshipStream *) funcctx->user_fctx;
	while (fs->cur_agent < fs->agents.n && fs->cur_pos >= fs->friends.off[fs->cur_agent + 1])
		fs->cur_agent++;
	if (fs->cur_agent < fs->agents.n)
	{
		uint32		v = fs->friends.adj[fs->cur_pos++];

		if ((fs->cur_pos & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(friendship_row(fs, fs->cur_agent, v)));
	}
	SRF_RETURN_DONE(funcctx);
}
