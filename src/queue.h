/*-------------------------------------------------------------------------
 *
 * queue.h
 *		The worker's SQL: find jobs and endpoints, claim requests, store
 *		results (queue.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_QUEUE_H
#define SWARM_QUEUE_H

#include "jobs.h"
#include "request.h"
#include "router.h"

typedef void (*swarm_job_row_cb) (const SwarmJobRow *row, void *arg);
typedef void (*swarm_endpoint_row_cb) (const SwarmEndpointRow *row, void *arg);
typedef void (*swarm_claim_row_cb) (const SwarmClaimedRow *row, void *arg);
/* a replayed request's stored answer: reqs[index] of queue_lookup_responses() */
typedef void (*swarm_stored_answer_cb) (int index, const OpenAIResponse *reply, void *arg);
/* called for each job that a stored batch gave new requests */
typedef void (*swarm_advanced_cb) (int64 job_id);

extern Oid	queue_extension_oid(void);
extern bool queue_schema_is_current(Oid extension_oid);
extern void queue_reconcile(void);
extern void queue_scan_jobs(swarm_job_row_cb cb, void *arg);
extern void queue_scan_endpoints(swarm_endpoint_row_cb cb, void *arg);
extern int	queue_claim(int64 job_id, int64 after, int64 upto, int limit,
						swarm_claim_row_cb cb, void *arg);
extern int	queue_store_results(SwarmResult *results, int n, swarm_advanced_cb advanced);
extern void queue_lookup_responses(const char *owner, SwarmRequest **reqs, int n,
								   swarm_stored_answer_cb cb, void *arg);

#endif
