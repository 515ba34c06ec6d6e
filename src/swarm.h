/*-------------------------------------------------------------------------
 *
 * swarm.h
 *		pg_swarm's settings (config.c), the shared memory where backends
 *		find the worker (shared.c) and small value helpers: what every part
 *		of the extension may use.
 *
 * docs/architecture.md maps the files; each module's own header declares
 * its types and functions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_H
#define SWARM_H

#include "postgres.h"

#include "catalog/pg_type.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/timestamp.h"

/* ---- values ---- */

/* An int8[] of the `n` values of `v` (a query's list of ids). */
static inline Datum
swarm_int8_array(const int64 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	ArrayType  *a;

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(v[i]);
	a = construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	pfree(d);
	return PointerGetDatum(a);
}

/* ---- config.c ---- */

extern char *swarm_database;
extern char *swarm_base_url;
extern char *swarm_model;
extern char *swarm_api_key;
extern char *swarm_api_key_file;
extern char *swarm_system_template;
extern char *swarm_ca_file;
extern int	swarm_request_timeout_ms;
extern int	swarm_connect_timeout_ms;
extern int	swarm_max_retries;
extern int	swarm_batch_size;
extern int	swarm_max_concurrent;
extern int	swarm_flush_interval_ms;
extern int	swarm_max_response_bytes;
extern int	swarm_max_prompt_bytes;
extern int	swarm_request_deadline_ms;
extern bool swarm_adaptive_concurrency;
extern int	swarm_structured_output;
extern bool swarm_response_store;
extern int	swarm_replay;
extern int	swarm_response_store_max_age_s;
extern int	swarm_batch_file_max_requests;
extern int	swarm_batch_file_max_bytes;
extern int	swarm_batch_poll_interval_ms;
extern int	swarm_batch_transfer_timeout_ms;
extern int	swarm_step_part_agents;

extern void swarm_config_init(void);
extern void swarm_pin_background_session(const char *application_name, const char *lock_timeout);
extern char *swarm_config_read_api_key(void);

/* ---- shared.c ---- */

extern void swarm_shared_request(void);
extern void swarm_shared_startup(void);
extern bool swarm_shared_available(void);
extern void swarm_shared_require(void);
extern void swarm_shared_set_worker(Latch *latch, int pid, TimestampTz started);
extern void swarm_shared_wake_worker(void);
extern void swarm_shared_set_step_builder(Latch *latch);
extern void swarm_shared_wake_step_builder(void);
extern void swarm_shared_set_batcher(Latch *latch);
extern int	swarm_shared_worker_pid(TimestampTz *started);
extern uint64 swarm_shared_progress_generation(void);
extern void swarm_shared_announce_progress(void);
extern bool swarm_shared_sleep_for_progress(uint64 seen, long timeout_ms);

#endif							/* SWARM_H */
