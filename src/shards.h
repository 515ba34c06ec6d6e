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
extern SPIPlanPtr shards_still_there_plan(int64 requests_shard);
extern SPIPlanPtr shards_progress_plan(void);
extern int	shards_conduct(void);

#endif							/* SWARM_SHARDS_H */
