/*
 * graph_io.h
 *		Reading the social world's tables into memory for the graph code:
 *		swarm.agents, swarm.friendships and the homophily groups.
 *
 * See graph_io.c for how the tables are read and why.  Everything returned
 * is palloc'd in the caller's current memory context.  Include postgres.h
 * first.
 */
#ifndef SOCIAL_GRAPH_IO_H
#define SOCIAL_GRAPH_IO_H

#include "csr.h"

/* An agent is its index (uint32) in ids; this many at most. */
#define GRAPH_MAX_AGENTS ((int64) PG_UINT32_MAX - 1)

/* Every agent id, sorted. */
typedef struct GraphAgents
{
	int64	   *ids;
	uint32		n;
	bool		dense;			/* ids[i] == ids[0] + i for all i */
} GraphAgents;

/*
 * Groups (persona interests, community memberships) for the homophily model,
 * both ways: an agent's groups and a group's agents, each list in the order
 * the memberships were read (see graph_io_load_groups).
 */
typedef struct GraphGroups
{
	SocialCsr	by_agent;		/* agent -> groups */
	SocialCsr	by_group;		/* group -> agents */
	uint32		ngroups;
} GraphGroups;

extern void graph_io_load_agents(GraphAgents *ga);
extern int64 graph_io_agent_index(const GraphAgents *ga, int64 id);
extern void graph_io_load_friendships(const GraphAgents *ga, SocialCsr *friends);
extern GraphGroups *graph_io_load_groups(const GraphAgents *ga);

#endif							/* SOCIAL_GRAPH_IO_H */
