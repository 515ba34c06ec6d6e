/*
 * communities.c
 *		Community detection over the friendship graph: label propagation,
 *		then swarm._community_slots(), which lays the clusters out in k runs.
 *
 * What this file owns
 * -------------------
 * swarm._community_slots(k, max_members, seed) yields (slot, agent_id) rows;
 * swarm.create_communities(..., 'friendships') (src/sql/functions/20_social.sql) maps
 * the slots to the communities it creates.  The first call does all the
 * work, in five stages, each a function below:
 *
 *	 swarm.agents, swarm.friendships (graph_io.c: ids, friendship CSR)
 *	   -> label_propagation	   a label per agent
 *	   -> cluster_ids			   labels renumbered 0 .. nclusters - 1
 *	   -> members_by_cluster	   cluster -> its agents (CSR); the sizes
 *	   -> cluster_graph		   cluster -> clusters it has friendships with
 *	   -> breadth_first_order	   clusters, each component from its largest
 *	   -> fill_slots			   k runs of at most T agents along that order
 *
 * Later calls only walk the (slot, agent id) arrays fill_slots made.
 *
 * Memory: everything but those two arrays lives in a "swarm community
 * detection" context under the SRF's multi-call context, deleted at the end
 * of the first call.  Its peak is the friendship CSR (8 B/agent + 4 B per
 * friendship row) plus a few 4-byte arrays per agent; the friendship CSR is
 * freed as soon as the cluster graph is built.  Nothing is shared between
 * backends.
 *
 * Every random choice comes from a social_rng.h stream keyed by the seed, so
 * a seed reproduces the slots exactly (for the same tables in the same heap
 * order).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "csr.h"
#include "graph_io.h"
#include "social_rng.h"

PG_FUNCTION_INFO_V1(swarm_community_slots);

/* What the SRF keeps between calls. */
typedef struct CommunityStream
{
	int64	   *agent_ids;		/* assigned agents, in output order */
	int32	   *slots;
	uint64		count;
	uint64		next;
	TupleDesc	tupdesc;
} CommunityStream;

typedef struct ClusterSize
{
	uint32		cluster;
	uint32		size;
} ClusterSize;

/*
 * Asynchronous label propagation (Raghavan, Albert & Kumara 2007): agents in
 * a fresh random order each round take the label most frequent among their
 * friends (ties: keep the current label if it is among the best, else a
 * random best).  Stops when fewer than 0.1% of agents change, or after 30
 * rounds.  Returns labels[n] (a label is an agent index), palloc'd in the
 * current context.
 */
static uint32 *
label_propagation(const SocialCsr *friends, uint64 seed)
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

/*
 * Renumbers the labels as cluster ids 0 .. nclusters - 1, in the order each
 * label is first met by agent index.  Returns cid[n] in the current context.
 */
static uint32 *
cluster_ids(const uint32 *label, uint32 n, uint32 *nclusters)
{
	uint32	   *cid = palloc_extended((Size) Max(n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
	uint32	   *map = palloc_extended((Size) Max(n, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);

	*nclusters = 0;
	memset(map, 0xff, (Size) Max(n, 1) * sizeof(uint32));
	for (uint32 i = 0; i < n; i++)
	{
		if (map[label[i]] == PG_UINT32_MAX)
			map[label[i]] = (*nclusters)++;
		cid[i] = map[label[i]];
	}
	pfree(map);
	return cid;
}

/*
 * Each cluster's agents, in index order; a cluster's size is the length of
 * its list.
 */
static void
members_by_cluster(const uint32 *cid, uint32 n, uint32 nclusters, SocialCsr *members)
{
	csr_begin(members, nclusters);
	for (uint32 i = 0; i < n; i++)
		csr_count(members, cid[i]);
	csr_allocate(members);
	for (uint32 i = 0; i < n; i++)
		csr_place(members, cid[i], i);
}

/*
 * One pass over the friendships that cross clusters: counts them per cluster
 * or places them, for the two passes of the cluster graph's CSR.
 */
static void
cross_cluster_pairs(const SocialCsr *friends, const uint32 *cid, SocialCsr *cgraph, bool place)
{
	for (uint32 u = 0; u < friends->n; u++)
	{
		for (uint64 e = friends->off[u]; e < friends->off[u + 1]; e++)
		{
			uint32		c = cid[friends->adj[e]];

			if (c == cid[u])
				continue;
			if (place)
				csr_place(cgraph, cid[u], c);
			else
				csr_count(cgraph, cid[u]);
		}
	}
}

/*
 * The cluster graph: for each cluster, one entry per friendship from one of
 * its agents to another cluster (so a neighbour appears once per such
 * friendship), in agent index order.  The pairs are computed twice rather
 * than stored: they can be nearly every friendship.
 */
static void
cluster_graph(const SocialCsr *friends, const uint32 *cid, uint32 nclusters, SocialCsr *cgraph)
{
	csr_begin(cgraph, nclusters);
	cross_cluster_pairs(friends, cid, cgraph, false);
	csr_allocate(cgraph);
	cross_cluster_pairs(friends, cid, cgraph, true);
}

/* Larger first; equal sizes by cluster id. */
static int
cmp_cluster_desc(const void *a, const void *b)
{
	const ClusterSize *x = a;
	const ClusterSize *y = b;

	if (x->size != y->size)
		return (x->size < y->size) - (x->size > y->size);
	return (x->cluster > y->cluster) - (x->cluster < y->cluster);
}

/*
 * Every cluster once, breadth-first over the cluster graph, each connected
 * component started from its largest cluster (components in order of their
 * largest cluster's size), so that neighbouring clusters end up next to each
 * other.  Returns order[nclusters] in the current context.
 */
static uint32 *
breadth_first_order(const SocialCsr *members, const SocialCsr *cgraph)
{
	uint32		nclusters = members->n;
	ClusterSize *bysize = palloc_extended((Size) Max(nclusters, 1) * sizeof(ClusterSize), MCXT_ALLOC_HUGE);
	uint32	   *order = palloc_extended((Size) Max(nclusters, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
	bool	   *visited = palloc_extended((Size) Max(nclusters, 1), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	uint64		head = 0,
				tail = 0;

	for (uint32 c = 0; c < nclusters; c++)
	{
		bysize[c].cluster = c;
		bysize[c].size = (uint32) csr_degree(members, c);
	}
	qsort(bysize, nclusters, sizeof(ClusterSize), cmp_cluster_desc);
	for (uint32 s = 0; s < nclusters; s++)
	{
		if (visited[bysize[s].cluster])
			continue;
		visited[bysize[s].cluster] = true;
		order[tail++] = bysize[s].cluster;
		while (head < tail)
		{
			uint32		x = order[head++];

			for (uint64 e = cgraph->off[x]; e < cgraph->off[x + 1]; e++)
			{
				if (!visited[cgraph->adj[e]])
				{
					visited[cgraph->adj[e]] = true;
					order[tail++] = cgraph->adj[e];
				}
			}
		}
	}
	pfree(bysize);
	pfree(visited);
	return order;
}

/*
 * Fills slots 0 .. k-1 along the cluster order, each with T = min(cap,
 * ceil(agents / k)) agents: a slot is a run of neighbouring clusters, and a
 * cluster is split only where a slot fills up.  Agents left once every slot
 * is full are not placed.  The (slot, agent id) arrays go into cs, palloc'd
 * in outcxt.
 */
static void
fill_slots(CommunityStream *cs, MemoryContext outcxt, const GraphAgents *ga,
		   const SocialCsr *members, const uint32 *order, int32 k, int32 cap)
{
	uint64		target = Min((uint64) cap, ((uint64) ga->n + k - 1) / (uint64) k);
	uint64		capacity = Min((uint64) k * target, (uint64) ga->n);
	int32		slot = 0;
	uint64		filled = 0;

	cs->agent_ids = MemoryContextAllocExtended(outcxt, Max(capacity, 1) * sizeof(int64), MCXT_ALLOC_HUGE);
	cs->slots = MemoryContextAllocExtended(outcxt, Max(capacity, 1) * sizeof(int32), MCXT_ALLOC_HUGE);
	for (uint32 o = 0; o < members->n && slot < k; o++)
	{
		uint32		c = order[o];

		for (uint64 j = members->off[c]; j < members->off[c + 1]; j++)
		{
			if (filled == target)
			{
				slot++;
				filled = 0;
				if (slot == k)
					break;
			}
			cs->agent_ids[cs->count] = ga->ids[members->adj[j]];
			cs->slots[cs->count] = slot;
			cs->count++;
			filled++;
		}
	}
}

/*
 * Runs the five stages (see the header comment) and leaves the rows to
 * stream in cs.  Works in a context of its own, deleted before returning.
 */
static void
community_layout(CommunityStream *cs, MemoryContext outcxt, int32 k, int32 cap, uint64 seed)
{
	MemoryContext work = AllocSetContextCreate(outcxt,
											   "swarm community detection",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(work);
	GraphAgents ga;
	SocialCsr	friends;
	SocialCsr	members;
	SocialCsr	cgraph;
	uint32	   *label;
	uint32	   *cid;
	uint32		nclusters;

	graph_io_load_agents(&ga);
	graph_io_load_friendships(&ga, &friends);
	label = label_propagation(&friends, seed);
	cid = cluster_ids(label, ga.n, &nclusters);
	pfree(label);
	members_by_cluster(cid, ga.n, nclusters, &members);
	cluster_graph(&friends, cid, nclusters, &cgraph);
	csr_free(&friends);
	pfree(cid);
	CHECK_FOR_INTERRUPTS();
	fill_slots(cs, outcxt, &ga, &members, breadth_first_order(&members, &cgraph), k, cap);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(work);
}

/*
 * swarm._community_slots(k int, max_members int, seed bigint)
 *	 RETURNS TABLE(slot int, agent_id bigint)
 *
 * Value-per-call SRF: the first call computes every row (community_layout),
 * later calls return them.  k and max_members are validated by
 * swarm.create_communities(); a non-positive one here is a caller's bug.
 */
Datum
swarm_community_slots(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	CommunityStream *cs;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcontext;
		TupleDesc	tupdesc;
		int32		k = PG_GETARG_INT32(0);
		int32		cap = PG_GETARG_INT32(1);
		uint64		seed = social_rng_seed_arg(fcinfo, 2);

		if (k < 1 || cap < 1)
			elog(ERROR, "k and max_members must be positive");

		funcctx = SRF_FIRSTCALL_INIT();
		oldcontext = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		cs = palloc0(sizeof(CommunityStream));
		cs->tupdesc = BlessTupleDesc(tupdesc);
		community_layout(cs, funcctx->multi_call_memory_ctx, k, cap, seed);
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
