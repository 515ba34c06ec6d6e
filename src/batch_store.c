/*-------------------------------------------------------------------------
 *
 * batch_store.c
 *		The batcher's last step: a batch that has ended, its output and
 *		error files downloaded and every line stored through the worker's
 *		own store (queue_store_results()), the requests no line answered
 *		settled.  The rest of the batcher is batcher.c.
 *
 * Each line's status and body are read by outcome.c as a synchronous reply
 * is: stored, failed, or put back in the queue (batch_id NULL, one attempt
 * more) for a later batch until swarm.max_retries is spent.  Only requests
 * still queued in this batch are touched, so a download stored again after
 * a crash stores nothing twice.  BATCHER_CHUNK lines per transaction; the
 * files are read from temporary files, a line at a time.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include <time.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "batch_lines.h"
#include "batcher.h"
#include "openai.h"
#include "outcome.h"
#include "queue.h"

typedef enum LineFateKind
{
	FATE_STORE,					/* a completion: a message */
	FATE_FAIL,					/* a final failure */
	FATE_RETRY					/* back to the queue, for a later batch */
} LineFateKind;

typedef struct LineFate
{
	int64		request_id;
	LineFateKind kind;
	OpenAIResponse reply;		/* FATE_STORE */
	char	   *error;			/* FATE_FAIL, FATE_RETRY */
} LineFate;

typedef struct Chunk
{
	LineFate	fates[BATCHER_CHUNK];
	int			n;
	MemoryContext cxt;			/* the fates' strings; reset after each store */
} Chunk;

/* Where each job's next batch starts looking (its highest id batched). */
typedef struct JobCursor
{
	int64		job_id;
	int64		after;
} JobCursor;

static List *cursors = NIL;		/* JobCursor *, in TopMemoryContext */

static JobCursor *
cursor_of(int64 job_id)
{
	ListCell   *lc;
	JobCursor  *c;

	foreach(lc, cursors)
	{
		c = lfirst(lc);
		if (c->job_id == job_id)
			return c;
	}
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		c = palloc0(sizeof(JobCursor));
		c->job_id = job_id;
		cursors = lappend(cursors, c);
		MemoryContextSwitchTo(old);
	}
	return c;
}

/* Where the next batch of job_id starts looking: after this request id. */
int64
batch_cursor_get(int64 job_id)
{
	return cursor_of(job_id)->after;
}

void
batch_cursor_set(int64 job_id, int64 after)
{
	cursor_of(job_id)->after = after;
}

static Datum
text_array(char **v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(v[i]);
	return PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* A request of the batch still queued, as the store needs it. */
typedef struct PendingRow
{
	int64		id;
	int64		agent_id;
	int			attempts;
	int			tuple;			/* its row in the SPI result */
	bool		taken;			/* a line of it was used (a line twice counts once) */
} PendingRow;

/*
 * Store one chunk of b's lines, in one transaction: the requests still
 * queued in b become messages or failures through the worker's store, or
 * go back to the queue.  Returns false when some could not be stored now
 * (their job's row was held): the caller stops and tries again later.
 */
static bool
store_chunk(const BatchRow *b, BatchJob *bj, const BatchEndpoint *ep, Chunk *chunk)
{
	int64	   *ids = palloc(sizeof(int64) * Max(chunk->n, 1));
	PendingRow *rows;
	int			nrows;
	SwarmResult *results = palloc0(sizeof(SwarmResult) * Max(chunk->n, 1));
	int			nresults = 0;
	int64	   *requeue = palloc(sizeof(int64) * Max(chunk->n, 1));
	char	  **requeue_errors = palloc(sizeof(char *) * Max(chunk->n, 1));
	int			nrequeue = 0;
	int			nstored = 0;
	int			nfailed = 0;
	int			ndeferred = 0;
	Oid			types[3] = {INT8OID, INT8ARRAYOID, TEXTARRAYOID};
	Datum		args[3];
	SPITupleTable *tt;
	double		latency_ms = b->age_ms;

	for (int i = 0; i < chunk->n; i++)
		ids[i] = chunk->fates[i].request_id;

	batcher_begin("pg_swarm batcher: storing a batch's answers");
	args[0] = Int64GetDatum(b->id);
	args[1] = swarm_int8_array(ids, chunk->n);
	if (SPI_execute_with_args(SELECT_REQUESTS_AND "r.attempts "
							  "FROM swarm.requests r LEFT JOIN swarm.agents a ON a.id = r.agent_id "
							  "WHERE r.id = ANY ($2) AND r.batch_id = $1 AND r.status = 'queued'",
							  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_swarm batcher: could not read a batch's requests");
	tt = SPI_tuptable;
	nrows = (int) SPI_processed;
	rows = palloc(sizeof(PendingRow) * Max(nrows, 1));
	for (int i = 0; i < nrows; i++)
	{
		bool		isnull;

		rows[i].id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		rows[i].agent_id = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		rows[i].attempts = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 6, &isnull));
		rows[i].tuple = i;
		rows[i].taken = false;
	}
	qsort(rows, nrows, sizeof(PendingRow), cmp_int64);

	for (int i = 0; i < chunk->n; i++)
	{
		LineFate   *f = &chunk->fates[i];
		PendingRow *row = bsearch(&f->request_id, rows, nrows, sizeof(PendingRow), cmp_int64);
		SwarmResult *r;
		LineFateKind kind = f->kind;

		if (row == NULL || row->taken)
			continue;			/* stored, put back or cancelled already; or a line twice */
		row->taken = true;
		if (kind == FATE_RETRY && row->attempts + 1 > swarm_max_retries)
			kind = FATE_FAIL;
		if (kind == FATE_RETRY)
		{
			requeue[nrequeue] = f->request_id;
			requeue_errors[nrequeue++] = f->error;
			continue;
		}
		r = &results[nresults++];
		r->request_id = f->request_id;
		r->agent_id = row->agent_id;
		r->job_id = bj->job.id;
		r->job = &bj->job;		/* (the store reads its store_responses) */
		r->advances = bj->job.advances;
		r->attempts = row->attempts + 1;
		if (kind == FATE_STORE)
		{
			r->ok = true;
			r->content = f->reply.content;
			r->model = f->reply.model ? f->reply.model : bj->job.model;
			r->finish_reason = f->reply.finish_reason;
			r->prompt_tokens = f->reply.prompt_tokens;
			r->completion_tokens = f->reply.completion_tokens;
			r->latency_ms = latency_ms;
			r->endpoint = ep->name;
			if (bj->job.store_responses)
			{
				SwarmClaimedRow claimed;
				StringInfoData body;
				char	   *error;

				batcher_claimed_row(tt->vals[row->tuple], tt->tupdesc, &claimed);
				initStringInfo(&body);
				r->keyed = request_render_body(&bj->job, &claimed, swarm_max_prompt_bytes, NULL,
											   OPENAI_OUTPUT_JSON_SCHEMA, &body, r->key, &error);
			}
			nstored++;
		}
		else
		{
			r->ok = false;
			r->error = kind == FATE_RETRY || f->kind == FATE_RETRY ?
				psprintf("%s (after %d attempts)", f->error, row->attempts + 1) : f->error;
			nfailed++;
		}
	}

	if (nresults > 0)
	{
		ndeferred = queue_store_results(results, nresults, NULL);
		if (bj->job.kind == SWARM_JOB_SIMULATE)
			batcher_wake_builder = true;
		for (int i = 0; i < nresults; i++)
			if (results[i].deferred)
			{
				if (results[i].ok)
					nstored--;
				else
					nfailed--;
			}
	}
	if (nrequeue > 0)
	{
		Oid			rtypes[3] = {INT8OID, INT8ARRAYOID, TEXTARRAYOID};

		args[1] = swarm_int8_array(requeue, nrequeue);
		args[2] = text_array(requeue_errors, nrequeue);
		if (SPI_execute_with_args("UPDATE swarm.requests r SET batch_id = NULL, attempts = r.attempts + 1, "
								  "       last_error = u.error "
								  "FROM unnest($2, $3) AS u(id, error) "
								  "WHERE r.id = u.id AND r.id = ANY ($2) AND r.batch_id = $1 "
								  "  AND r.status = 'queued'",
								  3, rtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "pg_swarm batcher: could not put requests back in the queue");
		batch_cursor_set(bj->job.id, 0);
	}
	{
		const char *v[4] = {batcher_num(b->id), batcher_num(nstored), batcher_num(nrequeue), batcher_num(nfailed)};

		batcher_run("UPDATE swarm.batches SET stored = stored + $2::integer, retried = retried + $3::integer, "
			"       request_errors = request_errors + $4::integer WHERE id = $1::bigint",
			4, v, SPI_OK_UPDATE);
	}
	batcher_commit();
	/* (wakes swarm.wait(), as the worker does after its stores) */
	if (nresults > 0)
		swarm_shared_announce_progress();
	MemoryContextReset(chunk->cxt);
	chunk->n = 0;
	return ndeferred == 0;
}

/* The fate of one line of an output or error file. */
static void
line_fate(const char *line, size_t len, LineFate *f)
{
	BatchLine	bl;
	SwarmAttempt a;
	SwarmOutcome out;

	memset(f, 0, sizeof(*f));
	memset(&a, 0, sizeof(a));
	a.transport = SWARM_TRANSPORT_OK;
	a.max_response_bytes = swarm_max_response_bytes;
	a.wall_clock = time(NULL);
	a.scrub = batcher_scrub;
	if (len > (size_t) swarm_max_response_bytes + 65536)
	{
		/* (its custom_id is near its start) */
		batch_line_read(line, Min(len, 4096), &bl);
		a.transport = SWARM_TRANSPORT_TOO_LARGE;
	}
	else
	{
		batch_line_read(line, len, &bl);
		if (bl.readable && !bl.answered)
		{
			f->request_id = bl.request_id;
			f->kind = FATE_RETRY;
			f->error = psprintf("the batch ended without answering it: %s: %s",
								bl.error_code ? bl.error_code : "no code",
								bl.error_message ? bl.error_message : "no message");
			batcher_scrub(f->error);
			return;
		}
		a.status = bl.readable ? bl.status_code : 200;
		a.body = bl.readable ? bl.body : line;
		a.body_len = bl.readable ? bl.body_len : len;
	}
	f->request_id = bl.request_id;
	outcome_of_attempt(&a, &out);
	switch (out.verdict)
	{
		case SWARM_VERDICT_OK:
			f->kind = FATE_STORE;
			f->reply = out.reply;
			break;
		case SWARM_VERDICT_RETRY:
			f->kind = FATE_RETRY;
			f->error = out.error;
			break;
		case SWARM_VERDICT_FAIL:
			f->kind = FATE_FAIL;
			f->error = out.error;
			break;
	}
}

/*
 * Every request of b still queued in it, with no line stored: put back (or
 * failed, with `fail_error`), then b is 'stored'.  False when some could not
 * be stored now.
 */
static bool
settle_rest(const BatchRow *b, BatchJob *bj, const BatchEndpoint *ep, Chunk *chunk,
			const char *fail_error)
{
	int64	   *ids;
	int			n;
	char	   *retry_error = psprintf("no answer for it in the batch's files (the batch %s)",
									   b->status ? b->status : "ended");

	batcher_begin("pg_swarm batcher: reading a batch's requests");
	{
		const char *v[1] = {batcher_num(b->id)};

		batcher_run("SELECT id FROM swarm.requests WHERE batch_id = $1::bigint AND status = 'queued' ORDER BY id",
			1, v, SPI_OK_SELECT);
	}
	n = (int) SPI_processed;
	ids = MemoryContextAlloc(batcher_round_cxt, sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1,
											 &(bool) {false}));
	batcher_commit();
	for (int i = 0; i < n; i++)
	{
		LineFate   *f = &chunk->fates[chunk->n++];

		memset(f, 0, sizeof(*f));
		f->request_id = ids[i];
		f->kind = fail_error ? FATE_FAIL : FATE_RETRY;
		f->error = (char *) (fail_error ? fail_error : retry_error);
		if (chunk->n == BATCHER_CHUNK && !store_chunk(b, bj, ep, chunk))
			return false;
	}
	if (chunk->n > 0 && !store_chunk(b, bj, ep, chunk))
		return false;
	batcher_record(b, "state = 'stored', finished_at = now()", NULL);
	return true;
}

/*
 * Batch b has ended: download its output and error files, store every
 * line, then settle the requests no line answered.
 */
void
batch_store_answers(BatchRow *b, BatchJob *bj, const BatchEndpoint *ep)
{
	const char *files[2] = {b->output_file_id, b->error_file_id};
	Chunk	   *chunk = palloc(sizeof(Chunk));
	char	   *line = NULL;
	size_t		cap = 0;

	chunk->n = 0;
	chunk->cxt = AllocSetContextCreate(batcher_round_cxt, "pg_swarm batch answers", ALLOCSET_DEFAULT_SIZES);
	for (int k = 0; k < 2; k++)
	{
		BatchHttpResult res;
		FILE	   *tmp;
		ssize_t		len;

		if (files[k] == NULL)
			continue;
		tmp = batcher_temp_file();
		batch_http_download(ep, files[k], tmp, &res);
		if (!batch_http_ok(&res))
		{
			char		head[301];
			size_t		got;

			rewind(tmp);
			got = fread(head, 1, 300, tmp);
			head[got] = '\0';
			fclose(tmp);
			res.body.len = 0;
			batcher_record_retry(b, psprintf("%s%s%s", batch_http_describe(&res, "downloading the batch's answers"),
									 got > 0 ? ": " : "", batcher_printable(head)));
			return;
		}
		rewind(tmp);
		while ((len = getline(&line, &cap, tmp)) >= 0)
		{
			MemoryContext old;

			while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
				len--;
			if (len == 0)
				continue;
			old = MemoryContextSwitchTo(chunk->cxt);
			line_fate(line, (size_t) len, &chunk->fates[chunk->n]);
			MemoryContextSwitchTo(old);
			if (chunk->fates[chunk->n].request_id == 0)
			{
				ereport(LOG,
						(errmsg("pg_swarm batcher: batch " INT64_FORMAT ": a line of its answers names no request of pg_swarm's; skipped",
								b->id)));
				continue;
			}
			if (++chunk->n == BATCHER_CHUNK && !store_chunk(b, bj, ep, chunk))
			{
				free(line);
				fclose(tmp);
				batcher_record_retry(b, "a job row was held while storing; storing again");
				return;
			}
		}
		free(line);
		line = NULL;
		cap = 0;
		fclose(tmp);
	}
	if (chunk->n > 0 && !store_chunk(b, bj, ep, chunk))
	{
		batcher_record_retry(b, "a job row was held while storing; storing again");
		return;
	}
	if (!settle_rest(b, bj, ep, chunk, strcmp(b->status, "failed") == 0 ? (b->last_error ? b->last_error : "the provider failed the batch") : NULL))
		batcher_record_retry(b, "a job row was held while storing; storing again");
}

/*
 * A refusal the provider would repeat (a 400 on the file, a 401): every
 * request still in b fails with it, and b is done.
 */
void
batch_store_fail(BatchRow *b, const char *error)
{
	BatchJob   *bj = batcher_find_job(b->job_id);
	Chunk	   *chunk = palloc(sizeof(Chunk));
	BatchEndpoint none = {b->endpoint, NULL, NULL, NULL, false};
	char	   *why = batcher_printable(error);

	ereport(WARNING,
			(errmsg("pg_swarm batcher: batch " INT64_FORMAT " of job " INT64_FORMAT " failed: %s",
					b->id, b->job_id, why)));
	chunk->n = 0;
	chunk->cxt = AllocSetContextCreate(batcher_round_cxt, "pg_swarm batch answers", ALLOCSET_DEFAULT_SIZES);
	batcher_record(b, "last_error = $2", why);
	if (bj != NULL && !settle_rest(b, bj, &none, chunk, why))
		batcher_record_retry(b, why);
}

