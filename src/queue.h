/*-------------------------------------------------------------------------
 *
 * queue.h
 *		The worker's SQL: find jobs, claim requests, store results.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_QUEUE_H
#define SWARM_QUEUE_H

#include "swarm.h"
#include "utils/jsonb.h"

typedef struct SwarmJobRow
{
	int64		id;
	const char *kind;			/* generate, interact, simulate */
	TimestampTz created_at;		/* with id, tells a job from one that reused its id */
	bool		queued;			/* status 'queued' (not yet marked running) */
	const char *model;
	int			max_tokens;
	const char *context;
	const char *system_template;
	const char *user_template;
	char	  **endpoints;
	int			nendpoints;
} SwarmJobRow;

typedef void (*swarm_job_row_cb) (const SwarmJobRow *row, void *arg);
struct SwarmEndpointRow;
typedef void (*swarm_endpoint_row_cb) (const struct SwarmEndpointRow *row, void *arg);
typedef void (*swarm_claim_row_cb) (SwarmJob *job, int64 request_id, int64 agent_id,
									const char *name, Jsonb *persona, Jsonb *vars, void *arg);
/* called for each job that a stored batch gave new requests */
typedef void (*swarm_advanced_cb) (int64 job_id);

extern Oid	queue_extension_oid(void);
extern bool queue_schema_is_current(Oid extension_oid);
extern void queue_reconcile(void);
extern void queue_scan_jobs(swarm_job_row_cb cb, void *arg);
extern void queue_scan_endpoints(swarm_endpoint_row_cb cb, void *arg);
extern void queue_mark_running(int64 job_id);
extern int64 queue_last_queued_id(int64 job_id);
extern int	queue_claim(SwarmJob *job, int limit, swarm_claim_row_cb cb, void *arg);
extern void queue_store_results(SwarmResult *results, int n, swarm_advanced_cb advanced);

#endif
