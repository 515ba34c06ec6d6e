/*
 * graph.c
 *		The friendship graph: its four generative models, and community
 *		detection over it (label propagation).
 *
 * What this file owns
 * -------------------
 * swarm._friendship_rows(max_friends, model, seed, avg_friends): builds an
 * undirected graph over every row of swarm.agents and streams it back, both
 * directions of every friendship, sorted by (agent_id, friend_id) so that the
 * primary-key btree of swarm.friendships is filled at its right edge.
 * swarm.build_friendships() (src/sql/20_social.sql) truncates the table and
 * INSERTs these rows.
 *
 * swarm._community_slots(k, max_members, seed): label propagation over
 * swarm.friendships, then the clusters found are laid out breadth-first over
 * the cluster graph and cut into k balanced runs of at most max_members
 * agents (a cluster is split only where a run fills up); yields (slot,
 * agent_id).  swarm.create_communities() maps
 * slots to the communities it creates.
 *
 * Data flow and memory
 * --------------------
 * Agents are read once with a heap scan of swarm.agents into a sorted int64
 * array; from then on an agent is its index in that array (uint32), so an
 * edge costs 8 bytes.  Building keeps: the edge list (8 B/edge), an
 * open-addressing hash set of edges for duplicate checks (<= 16 B/edge at its
 * load factor), degrees (4 B/agent).  Then a CSR (8 B/agent + 8 B/edge) is
 * made in the SRF's multi-call context and the build context is deleted, so
 * what streams the rows is only the ids and the CSR.  For 1,000,000 agents
 * and 5,000,000 friendships the peak is about 200 MB (docs/social.md).
 * Nothing here is shared between backends: no locks beyond the AccessShare
 * locks of the scans; swarm.build_friendships() itself takes the table lock.
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
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "csr.h"
#include "social_rng.h"

PG_FUNCTION_INFO_V1(swarm_friendship_rows);
PG_FUNCTION_INFO_V1(swarm_community_slots);

#define GRAPH_MAX_AGENTS ((int64) PG_UINT32_MAX - 1)

typedef enum GraphModel
{
	GRAPH_RANDOM,
	GRAPH_SMALL_WORLD,
	GRAPH_PREFERENTIAL,
	GRAPH_HOMOPHILY
} GraphModel;

/* Agents: sorted ids; an agent is its index here. */
typedef struct GraphAgents
{
	int64	   *ids;
	uint32		n;
	bool		dense;			/* ids[i] == ids[0] + i for all i */
} GraphAgents;

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

/*
 * Groups (interests, communities) for homophily, both ways: an agent's groups
 * and a group's agents, each list in the order the memberships were read.
 */
typedef struct GraphGroups
{
	SocialCsr	by_agent;		/* agent -> groups */
	SocialCsr	by_group;		/* group -> agents */
	uint32		ngroups;
} GraphGroups;

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
 * Reading the tables
 * ------------------------------------------------------------------------ */

static Oid
graph_table_oid(const char *relname)
{
	Oid			nsp = get_namespace_oid("swarm", false);
	Oid			relid = get_relname_relid(relname, nsp);
	AclResult	aclresult;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"swarm.%s\" does not exist", relname)));
	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, get_rel_name(relid));
	return relid;
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/*
 * Reads every swarm.agents.id into a sorted array palloc'd in the current
 * context.  ereports when there are more agents than a uint32 index holds.
 */
static void
graph_load_agents(GraphAgents *ga)
{
	Oid			relid = graph_table_oid("agents");
	Relation	rel = table_open(relid, AccessShareLock);
	AttrNumber	att = get_attnum(relid, "id");
	TableScanDesc scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	uint64		cap = 1024;
	uint64		n = 0;
	bool		sorted = true;

	ga->ids = palloc_extended(cap * sizeof(int64), MCXT_ALLOC_HUGE);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		int64		id = DatumGetInt64(slot_getattr(slot, att, &isnull));

		if (isnull)
			continue;
		if (n == cap)
		{
			cap *= 2;
			ga->ids = repalloc_huge(ga->ids, cap * sizeof(int64));
		}
		if (n > 0 && ga->ids[n - 1] > id)
			sorted = false;
		ga->ids[n++] = id;
		if ((n & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
		if (n > GRAPH_MAX_AGENTS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many agents for the friendship graph"),
					 errdetail("The graph holds at most %lld agents.", (long long) GRAPH_MAX_AGENTS)));
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	if (!sorted)
		qsort(ga->ids, n, sizeof(int64), cmp_int64);
	ga->n = (uint32) n;
	ga->dense = n == 0 || (ga->ids[n - 1] - ga->ids[0] == (int64) n - 1);
}

/* Index of agent id, or -1 when it is not an agent. */
static int64
graph_agent_index(const GraphAgents *ga, int64 id)
{
	if (ga->n == 0)
		return -1;
	if (ga->dense)
	{
		if (id < ga->ids[0] || id > ga->ids[ga->n - 1])
			return -1;
		return id - ga->ids[0];
	}
	else
	{
		int64		lo = 0,
					hi = (int64) ga->n - 1;

		while (lo <= hi)
		{
			int64		mid = (lo + hi) / 2;

			if (ga->ids[mid] == id)
				return mid;
			if (ga->ids[mid] < id)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
		return -1;
	}
}

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
 * Groups for homophily: persona interests and community memberships
 * ------------------------------------------------------------------------ */

typedef struct GroupKey
{
	char		key[NAMEDATALEN * 2];
	uint32		id;
} GroupKey;

/*
 * Reads (agent, group) pairs with SPI and builds both CSRs in the current
 * memory context.  Unknown agents (not in ga) are skipped.
 */
static GraphGroups *
graph_load_groups(const GraphAgents *ga)
{
	GraphGroups *gg = palloc0(sizeof(GraphGroups));
	HASHCTL		hctl;
	HTAB	   *keys;
	uint64		cap = 1024,
				npairs = 0;
	uint32	   *pairs;			/* (agent, group) */
	Portal		portal;
	MemoryContext outer = CurrentMemoryContext;

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = NAMEDATALEN * 2;
	hctl.entrysize = sizeof(GroupKey);
	hctl.hcxt = outer;
	keys = hash_create("swarm homophily groups", 1024, &hctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	pairs = palloc_extended(cap * 2 * sizeof(uint32), MCXT_ALLOC_HUGE);

	graph_table_oid("community_members");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT a.id, 'i:' || left(i, 100) FROM swarm.agents a, "
									   "  jsonb_array_elements_text(CASE WHEN jsonb_typeof(a.persona->'interests') = 'array' "
									   "  THEN a.persona->'interests' ELSE '[]' END) AS i "
									   "UNION ALL SELECT agent_id, 'c:' || community_id FROM swarm.community_members",
									   0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 row = 0; row < SPI_processed; row++)
		{
			HeapTuple	tup = SPI_tuptable->vals[row];
			bool		isnull1,
						isnull2;
			int64		id = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull1));
			Datum		kd = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull2);
			int64		idx;
			char		kbuf[NAMEDATALEN * 2];
			GroupKey   *entry;
			bool		found;

			if (isnull1 || isnull2 || (idx = graph_agent_index(ga, id)) < 0)
				continue;
			text_to_cstring_buffer(DatumGetTextPP(kd), kbuf, sizeof(kbuf));
			entry = hash_search(keys, kbuf, HASH_ENTER, &found);
			if (!found)
				entry->id = gg->ngroups++;
			if (npairs == cap)
			{
				MemoryContext old = MemoryContextSwitchTo(outer);

				cap *= 2;
				pairs = repalloc_huge(pairs, cap * 2 * sizeof(uint32));
				MemoryContextSwitchTo(old);
			}
			pairs[2 * npairs] = (uint32) idx;
			pairs[2 * npairs + 1] = entry->id;
			npairs++;
		}
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_finish();
	hash_destroy(keys);

	csr_from_pairs(&gg->by_agent, ga->n, pairs, npairs, 0);
	csr_from_pairs(&gg->by_group, gg->ngroups, pairs, npairs, CSR_REVERSED);
	pfree(pairs);
	return gg;
}

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

/* ------------------------------------------------------------------------
 * swarm._friendship_rows
 * ------------------------------------------------------------------------ */

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
 * swarm._friendship_rows(max_friends int, model text, seed bigint, avg_friends int)
 *	 RETURNS TABLE(agent_id bigint, friend_id bigint, since timestamptz, strength real)
 *
 * Value-per-call SRF.  The whole graph is built on the first call (see the
 * header comment for its memory); later calls walk the CSR.  ereports on a
 * NULL or non-positive max_friends, an avg_friends outside [1, max_friends],
 * an unknown model.
 */
Datum
swarm_friendship_rows(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	FriendshipStream *fs;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcontext;
		MemoryContext buildcxt;
		TupleDesc	tupdesc;
		int32		cap;
		int32		avg;
		GraphModel	model;
		EdgeSet		es;
		uint64		target;
		uint32		n;

		if (PG_ARGISNULL(0))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("max_friends_per_agent must not be null")));
		cap = PG_GETARG_INT32(0);
		if (cap < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_friends_per_agent must be at least 1"),
					 errdetail("The value given was %d.", cap)));
		if (PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("model must not be null"),
					 errhint("Use one of random, small_world, preferential, homophily.")));
		model = graph_parse_model(PG_GETARG_TEXT_PP(1));
		if (PG_ARGISNULL(3))
			avg = (model == GRAPH_PREFERENTIAL) ? Max(1, cap / 2) : cap;
		else
		{
			avg = PG_GETARG_INT32(3);
			if (avg < 1 || avg > cap)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("avg_friends must be between 1 and max_friends_per_agent (%d)", cap),
						 errdetail("The value given was %d.", avg)));
		}

		funcctx = SRF_FIRSTCALL_INIT();
		oldcontext = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		fs = palloc0(sizeof(FriendshipStream));
		fs->tupdesc = BlessTupleDesc(tupdesc);
		fs->seed = social_rng_seed_arg(fcinfo, 2);
		fs->now = GetCurrentTransactionStartTimestamp();
		graph_load_agents(&fs->agents);
		n = fs->agents.n;
		if (model == GRAPH_HOMOPHILY)
			fs->groups = graph_load_groups(&fs->agents);

		buildcxt = AllocSetContextCreate(funcctx->multi_call_memory_ctx,
										 "swarm friendship build",
										 ALLOCSET_DEFAULT_SIZES);
		MemoryContextSwitchTo(buildcxt);

		if (model == GRAPH_SMALL_WORLD)
		{
			uint32		k = (uint32) Min(avg, cap);

			if (n > 0 && k > n - 1)
				k = n - 1;
			k &= ~1U;			/* a ring lattice needs an even degree */
			target = (uint64) n * (k / 2);
			edges_init(&es, n, target);
			if (k > 0)
				build_small_world(&es, n, k, 0.1, fs->seed);
		}
		else
		{
			target = (uint64) ((double) n * avg / 2.0 + 0.5);
			if (n > 0)
				target = Min(target, (uint64) n * (n - 1) / 2);
			edges_init(&es, n, target + (model == GRAPH_PREFERENTIAL ? (uint64) n + (uint64) avg * avg : 0));
			if (model == GRAPH_PREFERENTIAL)
				build_preferential(&es, n, (uint32) cap, avg, fs->seed);
			else
				build_random_like(&es, n, (uint32) cap, target, fs->seed,
								  fs->groups, model == GRAPH_HOMOPHILY ? 0.85 : 0.0);
		}

		MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		csr_from_pairs(&fs->friends, n, es.ends, es.m, CSR_BOTH_DIRECTIONS | CSR_SORTED);
		MemoryContextDelete(buildcxt);

		funcctx->user_fctx = fs;
		MemoryContextSwitchTo(oldcontext);
	}

	funcctx = SRF_PERCALL_SETUP();
	fs = (FriendshipStream *) funcctx->user_fctx;
	while (fs->cur_agent < fs->agents.n && fs->cur_pos >= fs->friends.off[fs->cur_agent + 1])
		fs->cur_agent++;
	if (fs->cur_agent < fs->agents.n)
	{
		uint32		u = fs->cur_agent;
		uint32		v = fs->friends.adj[fs->cur_pos++];
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
		if ((fs->cur_pos & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
		values[0] = Int64GetDatum(fs->agents.ids[u]);
		values[1] = Int64GetDatum(fs->agents.ids[v]);
		values[2] = TimestampTzGetDatum(fs->now - age_us);
		values[3] = Float4GetDatum((float4) strength);
		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(heap_form_tuple(fs->tupdesc, values, nulls)));
	}
	SRF_RETURN_DONE(funcctx);
}

/* ------------------------------------------------------------------------
 * Communities from the friendship graph
 * ------------------------------------------------------------------------ */

/*
 * Reads swarm.friendships into a CSR over ga's indexes (rows naming
 * non-agents are skipped).  Both directions are stored in the table, so each
 * row is one adjacency entry.
 */
static void
graph_load_friendships(const GraphAgents *ga, SocialCsr *friends)
{
	Oid			relid = graph_table_oid("friendships");
	Relation	rel = table_open(relid, AccessShareLock);
	AttrNumber	a_att = get_attnum(relid, "agent_id");
	AttrNumber	f_att = get_attnum(relid, "friend_id");
	TableScanDesc scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	uint64		cap = 1024,
				m = 0;
	uint32	   *pairs = palloc_extended(cap * 2 * sizeof(uint32), MCXT_ALLOC_HUGE);

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		n1,
					n2;
		int64		a = DatumGetInt64(slot_getattr(slot, a_att, &n1));
		int64		f = DatumGetInt64(slot_getattr(slot, f_att, &n2));
		int64		ai,
					fi;

		if (n1 || n2 || (ai = graph_agent_index(ga, a)) < 0 || (fi = graph_agent_index(ga, f)) < 0 || ai == fi)
			continue;
		if (m == cap)
		{
			cap *= 2;
			pairs = repalloc_huge(pairs, cap * 2 * sizeof(uint32));
		}
		pairs[2 * m] = (uint32) ai;
		pairs[2 * m + 1] = (uint32) fi;
		m++;
		if ((m & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	csr_from_pairs(friends, ga->n, pairs, m, 0);
	pfree(pairs);
}

/*
 * Asynchronous label propagation (Raghavan, Albert & Kumara 2007): agents in
 * a fresh random order each round take the label most frequent among their
 * friends (ties: keep the current label if it is among the best, else a
 * random best).  Stops when fewer than 0.1% of agents change, or after 30
 * rounds.  Returns labels[n] (a label is an agent index).
 */
static uint32 *
graph_label_propagation(const SocialCsr *friends, uint64 seed)
{
	uint32		n = friends->n;
	const uint64 *off = friends->off;
	const uint32 *adj = friends->adj;
	uint32	   *label = palloc_extended((Size) Max(n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
	uint32	   *order = palloc_extended((Size) Max(n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
	uint64		maxdeg = 0;
	uint32	   *scratch;
	SocialRng	r = social_rng_for(seed, SOCIAL_RNG_LABELS, 0);

	for (uint32 i = 0; i < n; i++)
	{
		label[i] = order[i] = i;
		maxdeg = Max(maxdeg, off[i + 1] - off[i]);
	}
	scratch = palloc_extended(Max(maxdeg, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);

	for (int round = 0; round < 30; round++)
	{
		uint64		changed = 0;

		for (uint32 i = n; i > 1; i--)
		{
			uint32		j = (uint32) social_rng_below(&r, i);
			uint32		t = order[i - 1];

			order[i - 1] = order[j];
			order[j] = t;
		}
		for (uint32 k = 0; k < n; k++)
		{
			uint32		u = order[k];
			uint64		d = off[u + 1] - off[u];
			uint32		best = label[u];
			uint64		best_count = 0;
			uint64		ties = 0;
			bool		current_is_best = false;

			if (d == 0)
				continue;
			for (uint64 e = 0; e < d; e++)
				scratch[e] = label[adj[off[u] + e]];
			csr_sort_uint32(scratch, d);
			for (uint64 e = 0; e < d;)
			{
				uint64		run = 1;

				while (e + run < d && scratch[e + run] == scratch[e])
					run++;
				if (run > best_count)
				{
					best_count = run;
					best = scratch[e];
					ties = 1;
					current_is_best = (scratch[e] == label[u]);
				}
				else if (run == best_count)
				{
					if (scratch[e] == label[u])
						current_is_best = true;
					/* reservoir choice among equal bests */
					if (social_rng_below(&r, ++ties) == 0)
						best = scratch[e];
				}
				e += run;
			}
			if (current_is_best)
				best = label[u];
			if (best != label[u])
			{
				label[u] = best;
				changed++;
			}
			if ((k & 0xffff) == 0)
				CHECK_FOR_INTERRUPTS();
		}
		if (changed * 1000 <= n)
			break;
	}
	pfree(order);
	pfree(scratch);
	return label;
}

typedef struct ClusterSize
{
	uint32		label;
	uint32		size;
} ClusterSize;

static int
cmp_cluster_desc(const void *a, const void *b)
{
	const ClusterSize *x = a;
	const ClusterSize *y = b;

	if (x->size != y->size)
		return (x->size < y->size) - (x->size > y->size);
	return (x->label > y->label) - (x->label < y->label);
}

typedef struct CommunityStream
{
	int64	   *agent_ids;		/* assigned agents, in output order */
	int32	   *slots;
	uint64		count;
	uint64		next;
	TupleDesc	tupdesc;
} CommunityStream;

/*
 * swarm._community_slots(k int, max_members int, seed bigint)
 *	 RETURNS TABLE(slot int, agent_id bigint)
 *
 * Label propagation over swarm.friendships gives clusters (agents with no
 * friends are clusters of one).  The clusters are then laid out in
 * breadth-first order over the cluster graph (clusters joined by
 * friendships), starting each component from its largest cluster, and the
 * k slots are filled in that order, each with T = min(max_members,
 * ceil(agents / k)) agents: a slot is a run of neighbouring clusters, a
 * cluster is split only where a slot fills up, and sizes are balanced.
 * Agents left over once every slot is full are not placed.
 */
Datum
swarm_community_slots(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	CommunityStream *cs;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcontext;
		MemoryContext work;
		TupleDesc	tupdesc;
		int32		k = PG_GETARG_INT32(0);
		int32		cap = PG_GETARG_INT32(1);
		uint64		seed = social_rng_seed_arg(fcinfo, 2);
		GraphAgents ga;
		SocialCsr	friends;
		uint32	   *label;
		uint32	   *cid;
		uint32	   *map;
		SocialCsr	members;
		SocialCsr	cgraph;
		uint32	   *order;
		bool	   *visited;
		ClusterSize *bysize;
		uint32		nclusters = 0;
		uint64		target;
		uint64		capacity;
		int32		slot = 0;
		uint64		filled = 0;
		uint64		head = 0,
					tail = 0;

		if (k < 1 || cap < 1)
			elog(ERROR, "k and max_members must be positive");

		funcctx = SRF_FIRSTCALL_INIT();
		oldcontext = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		cs = palloc0(sizeof(CommunityStream));
		cs->tupdesc = BlessTupleDesc(tupdesc);

		work = AllocSetContextCreate(funcctx->multi_call_memory_ctx,
									 "swarm community detection",
									 ALLOCSET_DEFAULT_SIZES);
		MemoryContextSwitchTo(work);
		graph_load_agents(&ga);
		graph_load_friendships(&ga, &friends);
		label = graph_label_propagation(&friends, seed);

		/* compact cluster ids */
		cid = palloc_extended((Size) Max(ga.n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
		map = palloc_extended((Size) Max(ga.n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
		memset(map, 0xff, (Size) Max(ga.n, 1) * sizeof(uint32));
		for (uint32 i = 0; i < ga.n; i++)
		{
			if (map[label[i]] == PG_UINT32_MAX)
				map[label[i]] = nclusters++;
			cid[i] = map[label[i]];
		}
		pfree(map);
		pfree(label);

		/* members grouped by cluster; a cluster's size is its list's length */
		csr_begin(&members, nclusters);
		for (uint32 i = 0; i < ga.n; i++)
			csr_count(&members, cid[i]);
		csr_allocate(&members);
		for (uint32 i = 0; i < ga.n; i++)
			csr_place(&members, cid[i], i);

		/* the cluster graph: one entry per friendship crossing clusters */
		csr_begin(&cgraph, nclusters);
		for (uint32 u = 0; u < ga.n; u++)
			for (uint64 e = friends.off[u]; e < friends.off[u + 1]; e++)
				if (cid[friends.adj[e]] != cid[u])
					csr_count(&cgraph, cid[u]);
		csr_allocate(&cgraph);
		for (uint32 u = 0; u < ga.n; u++)
			for (uint64 e = friends.off[u]; e < friends.off[u + 1]; e++)
				if (cid[friends.adj[e]] != cid[u])
					csr_place(&cgraph, cid[u], cid[friends.adj[e]]);
		csr_free(&friends);
		CHECK_FOR_INTERRUPTS();

		/* breadth-first order over clusters, each component from its largest */
		bysize = palloc_extended((Size) Max(nclusters, 1) * sizeof(ClusterSize), MCXT_ALLOC_HUGE);
		for (uint32 c = 0; c < nclusters; c++)
		{
			bysize[c].label = c;
			bysize[c].size = (uint32) csr_degree(&members, c);
		}
		qsort(bysize, nclusters, sizeof(ClusterSize), cmp_cluster_desc);
		order = palloc_extended((Size) Max(nclusters, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
		visited = palloc_extended((Size) Max(nclusters, 1), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
		for (uint32 s = 0; s < nclusters; s++)
		{
			if (visited[bysize[s].label])
				continue;
			visited[bysize[s].label] = true;
			order[tail++] = bysize[s].label;
			while (head < tail)
			{
				uint32		x = order[head++];

				for (uint64 e = cgraph.off[x]; e < cgraph.off[x + 1]; e++)
					if (!visited[cgraph.adj[e]])
					{
						visited[cgraph.adj[e]] = true;
						order[tail++] = cgraph.adj[e];
					}
			}
		}

		/* fill the slots in that order */
		target = Min((uint64) cap, ((uint64) ga.n + k - 1) / (uint64) k);
		capacity = Min((uint64) k * target, (uint64) ga.n);
		MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		cs->agent_ids = palloc_extended(Max(capacity, 1) * sizeof(int64), MCXT_ALLOC_HUGE);
		cs->slots = palloc_extended(Max(capacity, 1) * sizeof(int32), MCXT_ALLOC_HUGE);
		for (uint32 o = 0; o < nclusters && slot < k; o++)
		{
			uint32		c = order[o];

			for (uint64 j = members.off[c]; j < members.off[c + 1]; j++)
			{
				if (filled == target)
				{
					slot++;
					filled = 0;
					if (slot == k)
						break;
				}
				cs->agent_ids[cs->count] = ga.ids[members.adj[j]];
				cs->slots[cs->count] = slot;
				cs->count++;
				filled++;
			}
		}
		MemoryContextDelete(work);
		funcctx->user_fctx = cs;
		MemoryContextSwitchTo(oldcontext);
	}

	funcctx = SRF_PERCALL_SETUP();
	cs = (CommunityStream *) funcctx->user_fctx;
	if (cs->next < cs->count)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = Int32GetDatum(cs->slots[cs->next]);
		values[1] = Int64GetDatum(cs->agent_ids[cs->next]);
		cs->next++;
		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(heap_form_tuple(cs->tupdesc, values, nulls)));
	}
	SRF_RETURN_DONE(funcctx);
}
