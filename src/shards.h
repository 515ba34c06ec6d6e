/*
 * shards.h
 *		The distributed swarm (Citus): which shards of the queue live on this
 *		node, the statements that claim and store on them, and the
 *		coordinator's summing of every node's progress.  See shards.c and
 *		docs/scale-out.md.
 */
#ifndef SWARM_SHARDS_H
#define SWARM_SHARDS_H

#include "executor/spi.h"

extern bool shards_refresh(void);
extern bool shards_distributed(void);
extern bool shards_stale(void);
extern bool shards_on_coordinator(void);
extern int	shards_local_count(void);
extern double shards_share(void);
extern SPIPlanPtr shards_claim_plan(void);
extern bool shards_lock(int64 requests_shard);
extern SPIPlanPtr shards_store_ok_plan(int64 requests_shard);
extern SPIPlanPtr shards_store_failed_plan(int64 requests_shard);
extern SPIPlanPtr shards_hold_plan(int64 requests_shard);
extern SPIPlanPtr shards_keep_plan(int64 requests_shard);
extern SPIPlanPtr shards_lookup_plan(int64 requests_shard);

/*
 * The response store's statements, on one server and on a shard: %s are the
 * tables' suffixes ("" on one server, "_<shard id>" on a node), responses'
 * first, then messages'.  Keep: $1 request ids, $2 agent ids, $3 keys, $4
 * endpoints; the answers of messages really stored, the first one kept.
 * Lookup: $1 agent ids, $2 keys, $3 the owner; rows (n, content, model,
 * finish_reason, prompt_tokens, completion_tokens), n counting from 1.
 */
#define SWARM_KEEP_RESPONSES_SQL \
	"INSERT INTO swarm.responses%s (agent_id, key, owner, job_id, content, model, " \
	"       finish_reason, prompt_tokens, completion_tokens, endpoint) " \
	"SELECT m.agent_id, i.key, m.owner, m.job_id, m.content, m.model, m.finish_reason, " \
	"       m.prompt_tokens, m.completion_tokens, i.endpoint " \
	"FROM unnest($1, $2, $3, $4) AS i(request_id, agent_id, key, endpoint) " \
	"JOIN swarm.messages%s m ON m.agent_id = i.agent_id AND m.request_id = i.request_id " \
	"ON CONFLICT DO NOTHING"
#define SWARM_LOOKUP_RESPONSES_SQL \
	"SELECT i.n::integer, r.content, r.model, r.finish_reason, " \
	"       coalesce(r.prompt_tokens, -1), coalesce(r.completion_tokens, -1) " \
	"FROM unnest($1, $2) WITH ORDINALITY AS i(agent_id, key, n) " \
	"JOIN swarm.responses%s r ON r.agent_id = i.agent_id AND r.owner = $3 AND r.key = i.key"
extern const Oid swarm_keep_responses_types[4];
extern const Oid swarm_lookup_responses_types[3];
extern SPIPlanPtr shards_still_there_plan(int64 requests_shard);
extern SPIPlanPtr shards_progress_plan(void);
extern int	shards_conduct(void);

#endif							/* SWARM_SHARDS_H */
