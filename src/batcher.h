/*-------------------------------------------------------------------------
 *
 * batcher.h
 *		What the batcher's two files share: batcher.c (the loop, and a
 *		batch's way to the provider and back) and batch_store.c (storing
 *		what a batch's files say).  Not used elsewhere.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_BATCHER_H
#define SWARM_BATCHER_H

#include "batch_http.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "jobs.h"
#include "request.h"

/* The columns batcher_claimed_row() reads, then (for SELECT_REQUESTS_AND) more */
#define SELECT_REQUESTS_AND "SELECT r.id, r.agent_id, a.name, a.persona, r.vars, "

/* Lines stored per transaction, and rows read per query when writing a file. */
#define BATCHER_CHUNK		1000

/* A batch-mode job, as the job scan read it (round memory). */
typedef struct BatchJob
{
	SwarmJob	job;			/* what request_render_body() needs */
	const char *endpoint;		/* the first of its endpoints */
} BatchJob;

/* A row of swarm.batches with work due (round memory). */
typedef struct BatchRow
{
	int64		id;
	int64		job_id;
	char	   *state;
	char	   *endpoint;
	char	   *file_name;
	char	   *input_file_id;
	char	   *provider_batch_id;
	char	   *output_file_id;
	char	   *error_file_id;
	char	   *status;
	char	   *last_error;
	int			polls;
	int			requests;
	bool		cancel_requested;
	bool		job_running;	/* its job is queued or running */
	double		age_ms;			/* since it was made */
} BatchRow;

extern MemoryContext batcher_round_cxt;
extern bool batcher_wake_builder;

/* batcher.c: transactions, SPI, and recording a batch's steps */
extern void batcher_begin(const char *activity);
extern void batcher_commit(void);
extern int	batcher_run(const char *sql, int nargs, const char **values, int expected);
extern char *batcher_cell(int row, int col);
extern char *batcher_num(int64 v);
extern void batcher_scrub(char *text);
extern char *batcher_printable(const char *s);
extern BatchJob *batcher_find_job(int64 id);
extern FILE *batcher_temp_file(void);
extern void batcher_claimed_row(HeapTuple tup, TupleDesc desc, SwarmClaimedRow *row);
extern void batcher_record(const BatchRow *b, const char *set_sql, const char *arg2);
extern void batcher_record_retry(const BatchRow *b, const char *error);

/* batch_store.c */
extern void batch_store_answers(BatchRow *b, BatchJob *bj, const BatchEndpoint *ep);
extern void batch_store_fail(BatchRow *b, const char *error);
extern void batch_cursor_set(int64 job_id, int64 after);
extern int64 batch_cursor_get(int64 job_id);

#endif
