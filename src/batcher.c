/*-------------------------------------------------------------------------
 *
 * batcher.c
 *		The batcher: a background worker of its own, beside the worker and
 *		the step builder, that runs batch-mode jobs through an endpoint's
 *		Files and Batch APIs (OpenAI's, and those of the services that copy
 *		them).  docs/batch.md tells the user's side.
 *
 * A job made with mode => 'batch' is never claimed by the worker (tick.c
 * skips it).  Here, each round:
 *
 *	 1. every batch with work due (swarm.batches, state not stored or
 *		abandoned) moves on by one or more steps:
 *
 *		 uploading --(file on the provider)--> uploaded --> creating
 *			--(batch made)--> submitted --(polled until it ends)--> downloading
 *			--(every line stored, failed or put back)--> stored
 *		 any state --(its job cancelled or gone)--> abandoned
 *
 *	 2. each running batch-mode job with queued requests in no batch gets
 *		new batches: its requests' bodies (the very bodies the worker would
 *		send, request_render_body()) written as JSON lines to a temporary
 *		file of at most swarm.batch_file_max_requests lines and
 *		swarm.batch_file_max_bytes bytes, the batch's row and the requests'
 *		batch_id committed (swarm._open_batch()), then uploaded and created
 *		at once.
 *
 * Crash safety: every step that makes something at the provider first
 * commits that it is about to (uploading, creating), and every id the
 * provider gives is committed before anything depends on it.  A batcher
 * that finds a batch 'uploading' or 'creating' that it did not just make
 * looks first for what the provider may already have (the file by its
 * name, unique per cluster, database and batch; the batch by its input
 * file) and makes it only when it is not there: a file is never uploaded
 * twice once the provider has it listed, a batch never created twice.
 * Storing goes through the worker's own store (queue_store_results()), which
 * turns only requests still queued into messages, and puts back or fails
 * only requests still in this batch: a download stored again after a crash
 * stores nothing twice.  A chunk's results commit together.
 *
 * What a line's answer means is outcome.c's reading of the same status and
 * body as the synchronous path: stored, failed, or retried; a retry (a 5xx,
 * a 429, no answer because the batch expired or was cancelled, a line that
 * is missing) puts the request back in the queue with one attempt more, for
 * a later batch, until swarm.max_retries is spent.
 *
 * Memory: a round runs in a context reset at its end; files are streamed
 * from and to temporary files; results are stored BATCHER_CHUNK lines at a
 * time.  HTTP calls are made with no transaction open.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"

#include <math.h>
#include <time.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batch_http.h"
#include "batch_lines.h"
#include "openai.h"
#include "outcome.h"
#include "queue.h"

PGDLLEXPORT void swarm_batcher_main(Datum main_arg);

/* Look again this often even when nothing wakes us. */
#define BATCHER_IDLE_MS		1000
/* Lines stored per transaction, and rows read per query when writing a file. */
#define BATCHER_CHUNK		1000
/* Batches worked on per round, new batches opened per job per round. */
#define BATCHER_ROUND		100
/* Pages of a list read when looking for a file or batch after a crash. */
#define BATCHER_LIST_PAGES	50

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

static MemoryContext round_cxt = NULL;

static void fail_batch(BatchRow *b, const char *error);
static List *batch_jobs = NIL;	/* BatchJob *, this round's */
static char *scrub_key = NULL;	/* the key of the endpoint being called */
static bool wake_builder = false;

/* ---------------------------------------------------------------------
 * Transactions and SPI
 * ---------------------------------------------------------------------
 */

static void
begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (wake_builder)
		swarm_shared_wake_step_builder();
	wake_builder = false;
}

/* Run sql with text arguments (NULL: SQL NULL); returns SPI's code. */
static int
run(const char *sql, int nargs, const char **values, int expected)
{
	Oid			types[8];
	Datum		args[8];
	char		nulls[8] = {0};
	int			rc;

	for (int i = 0; i < nargs; i++)
	{
		types[i] = TEXTOID;
		args[i] = values[i] ? CStringGetTextDatum(values[i]) : (Datum) 0;
		nulls[i] = values[i] ? ' ' : 'n';
	}
	rc = SPI_execute_with_args(sql, nargs, types, args, nulls, false, 0);
	if (rc != expected)
		elog(ERROR, "pg_swarm batcher: SPI_execute failed (%s) on: %.200s",
			 SPI_result_code_string(rc), sql);
	return rc;
}

static char *
cell(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

static char *
num(int64 v)
{
	return psprintf(INT64_FORMAT, v);
}

/* Overwrites the key of the endpoint being called wherever it shows. */
static void
scrub(char *text)
{
	size_t		klen;
	char	   *p;

	if (text == NULL || scrub_key == NULL || (klen = strlen(scrub_key)) < 4)
		return;
	while ((p = strstr(text, scrub_key)) != NULL)
		memset(p, '*', klen);
}

/* Text fit for a text column: bytes that are not printable ASCII become '?'. */
static char *
printable(const char *s)
{
	char	   *out = pstrdup(s ? s : "");

	for (char *p = out; *p; p++)
		if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
			*p = '?';
	scrub(out);
	return out;
}

/* Is pg_swarm installed here, at this library's version?  Needs SPI. */
static bool
extension_current(void)
{
	Oid			oid = get_extension_oid("pg_swarm", true);
	const char *v[1];

	if (!OidIsValid(oid))
		return false;
	v[0] = num(oid);
	run("SELECT extversion FROM pg_catalog.pg_extension WHERE oid = $1::oid", 1, v, SPI_OK_SELECT);
	return SPI_processed == 1 && strcmp(cell(0, 1), SWARM_VERSION) == 0;
}

/* ---------------------------------------------------------------------
 * Jobs and endpoints
 * ---------------------------------------------------------------------
 */

static void
on_job_row(const SwarmJobRow *row, void *arg)
{
	BatchJob   *bj;
	MemoryContext old;

	if (!row->batch_mode)
		return;
	old = MemoryContextSwitchTo(round_cxt);
	bj = palloc0(sizeof(BatchJob));
	bj->job.id = row->id;
	bj->job.owner = pstrdup(row->owner);
	bj->job.created_at = row->created_at;
	bj->job.kind = row->kind;
	bj->job.advances = row->advances;
	bj->job.model = pstrdup(row->model);
	bj->job.max_tokens = row->max_tokens;
	bj->job.context = pstrdup(row->context);
	bj->job.system_template = pstrdup(row->system_template);
	bj->job.user_template = pstrdup(row->user_template);
	bj->job.response_schema = row->response_schema ? pstrdup(row->response_schema) : NULL;
	bj->job.store_responses = row->store_responses;
	bj->endpoint = pstrdup(row->nendpoints > 0 ? row->endpoints[0] : "default");
	batch_jobs = lappend(batch_jobs, bj);
	MemoryContextSwitchTo(old);
}

static BatchJob *
find_job(int64 id)
{
	ListCell   *lc;

	foreach(lc, batch_jobs)
	{
		BatchJob   *bj = lfirst(lc);

		if (bj->job.id == id)
			return bj;
	}
	return NULL;
}

typedef struct EndpointLookup
{
	const char *name;
	BatchEndpoint *found;
} EndpointLookup;

static void
on_endpoint_row(const SwarmEndpointRow *row, void *arg)
{
	EndpointLookup *el = arg;

	if (strcmp(row->name, el->name) != 0)
		return;
	el->found = palloc0(sizeof(BatchEndpoint));
	el->found->name = pstrdup(row->name);
	el->found->base_url = pstrdup(row->base_url);
	el->found->model = row->model ? pstrdup(row->model) : NULL;
	el->found->api_key = row->api_key ? pstrdup(row->api_key) : NULL;
	el->found->tools = row->structured_output == OPENAI_OUTPUT_TOOLS;
}

/* The endpoint `name` (inside a transaction); NULL when it is gone. */
static BatchEndpoint *
lookup_endpoint(const char *name)
{
	EndpointLookup el = {name, NULL};

	if (strcmp(name, "default") == 0)
	{
		el.found = palloc0(sizeof(BatchEndpoint));
		el.found->name = pstrdup("default");
		el.found->base_url = pstrdup(swarm_base_url);
		el.found->api_key = swarm_config_read_api_key();
		el.found->tools = swarm_structured_output == OPENAI_OUTPUT_TOOLS;
		return el.found;
	}
	queue_scan_endpoints(on_endpoint_row, &el);
	return el.found;
}

/* ---------------------------------------------------------------------
 * Recording a batch's steps
 * ---------------------------------------------------------------------
 */

/* One statement on batch b, in its own transaction: $1 is b's id. */
static void
record(const BatchRow *b, const char *set_sql, const char *arg2)
{
	const char *v[2] = {num(b->id), arg2};
	char	   *sql = psprintf("UPDATE swarm.batches SET %s WHERE id = $1::bigint", set_sql);

	begin("pg_swarm batcher: recording a batch");
	run(sql, arg2 ? 2 : 1, v, SPI_OK_UPDATE);
	commit();
}

/* The next poll or retry of b, `polls` steps into its backoff. */
static double
backoff_ms(int polls)
{
	double		ms = swarm_batch_poll_interval_ms * pow(1.25, Min(polls, 40));

	return Min(ms, 60.0 * swarm_batch_poll_interval_ms);
}

/* A call about b failed in a way worth trying again: say so, try later. */
static void
record_retry(const BatchRow *b, const char *error)
{
	char	   *set = psprintf("last_error = $2, polls = polls + 1, "
							   "next_poll_at = now() + interval '%d milliseconds'",
							   (int) backoff_ms(b->polls));

	ereport(LOG,
			(errmsg("pg_swarm batcher: batch " INT64_FORMAT " of job " INT64_FORMAT ": %s; trying again",
					b->id, b->job_id, error)));
	record(b, set, printable(error));
}

/* ---------------------------------------------------------------------
 * Writing a batch's file
 * ---------------------------------------------------------------------
 */

typedef struct FileWriter
{
	FILE	   *file;
	long		bytes;
	int64	   *ids;
	int			nids;
	int			max_ids;
	long		max_bytes;
	bool		full;
	SwarmResult *failed;		/* requests whose body could not be made */
	int			nfailed;
	int			max_failed;
} FileWriter;

/*
 * The rows SPI just read (id, agent_id, name, persona, vars) written to fw
 * as lines for job bj and endpoint ep, until fw is full.  Returns the
 * number of rows taken (written or failed).
 */
static int
write_rows(FileWriter *fw, BatchJob *bj, const BatchEndpoint *ep)
{
	SPITupleTable *tt = SPI_tuptable;
	MemoryContext row_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_swarm batch line",
												  ALLOCSET_DEFAULT_SIZES);
	int			taken = 0;

	for (uint64 i = 0; i < SPI_processed && !fw->full; i++)
	{
		HeapTuple	tup = tt->vals[i];
		SwarmClaimedRow row;
		bool		isnull;
		Datum		d;
		StringInfoData body;
		StringInfoData line;
		char	   *error = NULL;
		MemoryContext old;
		bool		ok;

		row.request_id = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 1, &isnull));
		row.agent_id = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 2, &isnull));
		row.shard = 0;
		d = SPI_getbinval(tup, tt->tupdesc, 3, &isnull);
		row.name = isnull ? NULL : TextDatumGetCString(d);
		d = SPI_getbinval(tup, tt->tupdesc, 4, &isnull);
		row.persona = isnull ? NULL : DatumGetJsonbP(d);
		d = SPI_getbinval(tup, tt->tupdesc, 5, &isnull);
		row.vars = isnull ? NULL : DatumGetJsonbP(d);

		old = MemoryContextSwitchTo(row_cxt);
		initStringInfo(&body);
		ok = request_render_body(&bj->job, &row, swarm_max_prompt_bytes, ep->model,
								 ep->tools ? OPENAI_OUTPUT_TOOLS : OPENAI_OUTPUT_JSON_SCHEMA,
								 &body, NULL, &error);
		initStringInfo(&line);
		if (ok)
			batch_line_write(&line, row.request_id, body.data, body.len);
		MemoryContextSwitchTo(old);

		if (ok && line.len > fw->max_bytes)
		{
			ok = false;
			error = psprintf("the request's batch line has %d bytes, more than swarm.batch_file_max_bytes (%ld)",
							 line.len, fw->max_bytes);
		}
		else if (ok && (fw->nids >= fw->max_ids || fw->bytes + line.len > fw->max_bytes))
		{
			fw->full = true;
			MemoryContextReset(row_cxt);
			break;
		}
		if (ok)
		{
			if (fwrite(line.data, 1, line.len, fw->file) != (size_t) line.len)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("pg_swarm batcher: could not write a batch file: %m")));
			fw->bytes += line.len;
			fw->ids[fw->nids++] = row.request_id;
		}
		else
		{
			SwarmResult *r;

			if (fw->nfailed >= fw->max_failed)
			{
				fw->max_failed *= 2;
				fw->failed = repalloc(fw->failed, sizeof(SwarmResult) * fw->max_failed);
			}
			r = &fw->failed[fw->nfailed++];
			memset(r, 0, sizeof(*r));
			r->request_id = row.request_id;
			r->agent_id = row.agent_id;
			r->job_id = bj->job.id;
			r->advances = bj->job.advances;
			r->attempts = 0;
			r->error = pstrdup(error ? error : "could not build the request");
		}
		taken++;
		MemoryContextReset(row_cxt);
	}
	MemoryContextDelete(row_cxt);
	return taken;
}

static FILE *
temp_file(void)
{
	FILE	   *f = tmpfile();

	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("pg_swarm batcher: could not make a temporary file: %m")));
	return f;
}

static void
init_writer(FileWriter *fw)
{
	memset(fw, 0, sizeof(*fw));
	fw->file = temp_file();
	fw->max_ids = swarm_batch_file_max_requests;
	fw->max_bytes = swarm_batch_file_max_bytes;
	fw->ids = palloc(sizeof(int64) * fw->max_ids);
	fw->max_failed = 16;
	fw->failed = palloc(sizeof(SwarmResult) * fw->max_failed);
}

#define SELECT_REQUESTS \
	"SELECT r.id, r.agent_id, a.name, a.persona, r.vars " \
	"FROM swarm.requests r LEFT JOIN swarm.agents a ON a.id = r.agent_id "

/*
 * Rewrite the file of batch b from its requests (inside a transaction),
 * after a crash or a failed upload: the same lines, as its requests and
 * their agents are now.
 */
static void
rewrite_file(FileWriter *fw, const BatchRow *b, BatchJob *bj, const BatchEndpoint *ep)
{
	int64		after = 0;

	init_writer(fw);
	fw->max_ids = Max(fw->max_ids, b->requests);
	fw->ids = repalloc(fw->ids, sizeof(int64) * fw->max_ids);
	fw->max_bytes = LONG_MAX;
	for (;;)
	{
		const char *v[3] = {num(b->id), num(after), num(BATCHER_CHUNK)};

		run(SELECT_REQUESTS "WHERE r.batch_id = $1::bigint AND r.id > $2::bigint AND r.status = 'queued' "
			"ORDER BY r.id LIMIT $3::integer", 3, v, SPI_OK_SELECT);
		if (SPI_processed == 0)
			break;
		after = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[SPI_processed - 1],
											SPI_tuptable->tupdesc, 1, &(bool) {false}));
		(void) write_rows(fw, bj, ep);
	}
	fflush(fw->file);
}

/* ---------------------------------------------------------------------
 * Talking to the provider
 * ---------------------------------------------------------------------
 */

/*
 * Look through the pages of a list (files or batches) for the object whose
 * `field` is `value`.  Returns its id, or NULL; *error is set when the list
 * could not be read.
 */
static char *
find_in_list(const BatchEndpoint *ep, const char *path, const char *field, const char *value,
			 char **error)
{
	char	   *after = NULL;

	*error = NULL;
	for (int page = 0; page < BATCHER_LIST_PAGES; page++)
	{
		BatchHttpResult res;
		char	   *url = after ? psprintf("%s%safter=%s", path, strchr(path, '?') ? "&" : "?", after)
			: pstrdup(path);
		const char *v[3];
		char	   *found;
		int			objects;
		bool		has_more;

		batch_http_call(ep, "GET", url, NULL, &res);
		if (!batch_http_ok(&res))
		{
			*error = batch_http_describe(&res, "listing");
			return NULL;
		}
		v[0] = res.body.data;
		v[1] = field;
		v[2] = value;
		begin("pg_swarm batcher: reading a list");
		run("SELECT match, objects, last_id, has_more FROM swarm._batch_find($1, $2, $3)", 3, v,
			SPI_OK_SELECT);
		found = cell(0, 1);
		objects = cell(0, 2) ? atoi(cell(0, 2)) : -1;
		after = cell(0, 3);
		has_more = cell(0, 4) && cell(0, 4)[0] == 't';
		found = found ? MemoryContextStrdup(round_cxt, found) : NULL;
		after = after ? MemoryContextStrdup(round_cxt, after) : NULL;
		commit();
		if (objects < 0)
		{
			*error = psprintf("listing %s: the answer is not a list", path);
			return NULL;
		}
		if (found != NULL || !has_more || after == NULL)
			return found;
	}
	return NULL;
}

/*
 * Batch b is 'uploading': put its file on the provider (looking first
 * whether an earlier try got it there, unless `fresh`), record the file's
 * id.  `fw` holds the file when it was just written.  Returns true when
 * the batch moved on.
 */
static bool
upload(BatchRow *b, BatchJob *bj, const BatchEndpoint *ep, FileWriter *fw, bool fresh)
{
	FileWriter	rewritten;
	BatchHttpResult res;
	char	   *file_id = NULL;
	char	   *error;

	if (!fresh)
	{
		file_id = find_in_list(ep, "files?purpose=batch", "filename", b->file_name, &error);
		if (error != NULL)
		{
			record_retry(b, error);
			return false;
		}
	}
	if (file_id == NULL)
	{
		if (fw == NULL)
		{
			begin("pg_swarm batcher: writing a batch file");
			rewrite_file(&rewritten, b, bj, ep);
			commit();
			fw = &rewritten;
		}
		batch_http_upload(ep, fw->file, fw->bytes, b->file_name, &res);
		if (fw == &rewritten)
			fclose(rewritten.file);
		if (!batch_http_ok(&res))
		{
			error = batch_http_describe(&res, "uploading the batch file");
			if (!batch_http_retryable(&res))
			{
				fail_batch(b, error);
				return false;
			}
			record_retry(b, error);
			return false;
		}
		begin("pg_swarm batcher: reading an upload's answer");
		{
			const char *v[2] = {res.body.data, "file"};

			run("SELECT swarm._batch_object_id($1, $2)", 2, v, SPI_OK_SELECT);
			file_id = cell(0, 1) ? MemoryContextStrdup(round_cxt, cell(0, 1)) : NULL;
		}
		commit();
		if (file_id == NULL)
		{
			record_retry(b, psprintf("uploading the batch file: the answer has no file id: %.200s",
									 res.body.data));
			return false;
		}
	}
	record(b, "input_file_id = $2, state = 'uploaded', last_error = NULL", file_id);
	b->input_file_id = file_id;
	b->state = "uploaded";
	return true;
}

/*
 * Batch b is 'uploaded' or 'creating': make the provider's batch from its
 * file (looking first whether an earlier try made it, when 'creating'),
 * record its id.  Returns true when the batch moved on.
 */
static bool
create(BatchRow *b, const BatchEndpoint *ep)
{
	BatchHttpResult res;
	char	   *batch_id = NULL;
	char	   *error;
	StringInfoData body;

	if (strcmp(b->state, "creating") == 0)
	{
		batch_id = find_in_list(ep, "batches?limit=100", "input_file_id", b->input_file_id, &error);
		if (error != NULL)
		{
			record_retry(b, error);
			return false;
		}
	}
	else
	{
		record(b, "state = 'creating'", NULL);
		b->state = "creating";
	}
	if (batch_id == NULL)
	{
		initStringInfo(&body);
		appendStringInfoString(&body, "{\"input_file_id\":");
		escape_json(&body, b->input_file_id);
		appendStringInfoString(&body, ",\"endpoint\":\"" BATCH_LINE_URL "\",\"completion_window\":\"24h\","
							   "\"metadata\":{\"pg_swarm_file\":");
		escape_json(&body, b->file_name);
		appendStringInfoString(&body, "}}");
		batch_http_call(ep, "POST", "batches", body.data, &res);
		if (!batch_http_ok(&res))
		{
			error = batch_http_describe(&res, "creating the batch");
			if (!batch_http_retryable(&res))
				fail_batch(b, error);
			else
				record_retry(b, error);
			return false;
		}
		begin("pg_swarm batcher: reading a batch");
		{
			const char *v[2] = {res.body.data, "batch"};

			run("SELECT swarm._batch_object_id($1, $2)", 2, v, SPI_OK_SELECT);
			batch_id = cell(0, 1) ? MemoryContextStrdup(round_cxt, cell(0, 1)) : NULL;
		}
		commit();
		if (batch_id == NULL)
		{
			record_retry(b, psprintf("creating the batch: the answer has no batch id: %.200s",
									 res.body.data));
			return false;
		}
	}
	record(b, psprintf("provider_batch_id = $2, state = 'submitted', status = coalesce(status, 'validating'), "
					   "submitted_at = now(), last_error = NULL, "
					   "next_poll_at = now() + interval '%d milliseconds'", swarm_batch_poll_interval_ms),
		   batch_id);
	b->provider_batch_id = batch_id;
	b->state = "submitted";
	return true;
}

/* Batch b is 'submitted': ask for its status.  True when it has ended. */
static bool
poll_batch(BatchRow *b, const BatchEndpoint *ep)
{
	BatchHttpResult res;
	char	   *path = psprintf("batches/%s", b->provider_batch_id);
	char	   *status;
	const char *v[3];

	batch_http_call(ep, "GET", path, NULL, &res);
	if (!batch_http_ok(&res))
	{
		record_retry(b, batch_http_describe(&res, "reading the batch"));
		return false;
	}
	v[0] = num(b->id);
	v[1] = res.body.data;
	v[2] = psprintf("%d milliseconds", (int) backoff_ms(b->polls + 1));
	begin("pg_swarm batcher: recording a batch's status");
	run("SELECT swarm._batch_polled($1::bigint, $2, $3::interval), output_file_id, error_file_id "
		"FROM swarm.batches WHERE id = $1::bigint", 3, v, SPI_OK_SELECT);
	status = cell(0, 1) ? MemoryContextStrdup(round_cxt, cell(0, 1)) : NULL;
	commit();
	/* (read again: the function's update is not visible to its own row) */
	if (status != NULL && (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
						   strcmp(status, "expired") == 0 || strcmp(status, "cancelled") == 0))
	{
		begin("pg_swarm batcher: reading a batch");
		v[0] = num(b->id);
		run("SELECT output_file_id, error_file_id, last_error FROM swarm.batches WHERE id = $1::bigint", 1, v,
			SPI_OK_SELECT);
		b->output_file_id = cell(0, 1) ? MemoryContextStrdup(round_cxt, cell(0, 1)) : NULL;
		b->error_file_id = cell(0, 2) ? MemoryContextStrdup(round_cxt, cell(0, 2)) : NULL;
		b->last_error = cell(0, 3) ? MemoryContextStrdup(round_cxt, cell(0, 3)) : NULL;
		commit();
		b->status = status;
		b->state = "downloading";
		return true;
	}
	return false;
}

/* ---------------------------------------------------------------------
 * Storing a batch's answers
 * ---------------------------------------------------------------------
 */

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

static Datum
int8_array(int64 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(v[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
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

	begin("pg_swarm batcher: storing a batch's answers");
	args[0] = Int64GetDatum(b->id);
	args[1] = int8_array(ids, chunk->n);
	if (SPI_execute_with_args("SELECT r.id, r.agent_id, r.attempts, a.name, a.persona, r.vars "
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
		rows[i].attempts = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
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
				HeapTuple	tup = tt->vals[row->tuple];
				SwarmClaimedRow claimed;
				bool		isnull;
				Datum		d;
				StringInfoData body;
				char	   *error;

				claimed.request_id = r->request_id;
				claimed.agent_id = r->agent_id;
				claimed.shard = 0;
				d = SPI_getbinval(tup, tt->tupdesc, 4, &isnull);
				claimed.name = isnull ? NULL : TextDatumGetCString(d);
				d = SPI_getbinval(tup, tt->tupdesc, 5, &isnull);
				claimed.persona = isnull ? NULL : DatumGetJsonbP(d);
				d = SPI_getbinval(tup, tt->tupdesc, 6, &isnull);
				claimed.vars = isnull ? NULL : DatumGetJsonbP(d);
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
			wake_builder = true;
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

		args[1] = int8_array(requeue, nrequeue);
		args[2] = text_array(requeue_errors, nrequeue);
		if (SPI_execute_with_args("UPDATE swarm.requests r SET batch_id = NULL, attempts = r.attempts + 1, "
								  "       last_error = u.error "
								  "FROM unnest($2, $3) AS u(id, error) "
								  "WHERE r.id = u.id AND r.id = ANY ($2) AND r.batch_id = $1 "
								  "  AND r.status = 'queued'",
								  3, rtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "pg_swarm batcher: could not put requests back in the queue");
		cursor_of(bj->job.id)->after = 0;
	}
	{
		const char *v[4] = {num(b->id), num(nstored), num(nrequeue), num(nfailed)};

		run("UPDATE swarm.batches SET stored = stored + $2::integer, retried = retried + $3::integer, "
			"       request_errors = request_errors + $4::integer WHERE id = $1::bigint",
			4, v, SPI_OK_UPDATE);
	}
	commit();
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
	a.scrub = scrub;
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
			scrub(f->error);
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

	begin("pg_swarm batcher: reading a batch's requests");
	{
		const char *v[1] = {num(b->id)};

		run("SELECT id FROM swarm.requests WHERE batch_id = $1::bigint AND status = 'queued' ORDER BY id",
			1, v, SPI_OK_SELECT);
	}
	n = (int) SPI_processed;
	ids = MemoryContextAlloc(round_cxt, sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1,
											 &(bool) {false}));
	commit();
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
	record(b, "state = 'stored', finished_at = now()", NULL);
	return true;
}

/*
 * Batch b has ended: download its output and error files, store every
 * line, then settle the requests no line answered.
 */
static void
download_and_store(BatchRow *b, BatchJob *bj, const BatchEndpoint *ep)
{
	const char *files[2] = {b->output_file_id, b->error_file_id};
	Chunk	   *chunk = palloc(sizeof(Chunk));
	char	   *line = NULL;
	size_t		cap = 0;

	chunk->n = 0;
	chunk->cxt = AllocSetContextCreate(round_cxt, "pg_swarm batch answers", ALLOCSET_DEFAULT_SIZES);
	for (int k = 0; k < 2; k++)
	{
		BatchHttpResult res;
		FILE	   *tmp;
		ssize_t		len;

		if (files[k] == NULL)
			continue;
		tmp = temp_file();
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
			record_retry(b, psprintf("%s%s%s", batch_http_describe(&res, "downloading the batch's answers"),
									 got > 0 ? ": " : "", printable(head)));
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
				record_retry(b, "a job row was held while storing; storing again");
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
		record_retry(b, "a job row was held while storing; storing again");
		return;
	}
	if (!settle_rest(b, bj, ep, chunk, strcmp(b->status, "failed") == 0 ? (b->last_error ? b->last_error : "the provider failed the batch") : NULL))
		record_retry(b, "a job row was held while storing; storing again");
}

/*
 * A refusal the provider would repeat (a 400 on the file, a 401): every
 * request still in b fails with it, and b is done.
 */
static void
fail_batch(BatchRow *b, const char *error)
{
	BatchJob   *bj = find_job(b->job_id);
	Chunk	   *chunk = palloc(sizeof(Chunk));
	BatchEndpoint none = {b->endpoint, NULL, NULL, NULL, false};
	char	   *why = printable(error);

	ereport(WARNING,
			(errmsg("pg_swarm batcher: batch " INT64_FORMAT " of job " INT64_FORMAT " failed: %s",
					b->id, b->job_id, why)));
	chunk->n = 0;
	chunk->cxt = AllocSetContextCreate(round_cxt, "pg_swarm batch answers", ALLOCSET_DEFAULT_SIZES);
	record(b, "last_error = $2", why);
	if (bj != NULL && !settle_rest(b, bj, &none, chunk, why))
		record_retry(b, why);
}

/*
 * b's job was cancelled (or is gone): ask the provider to cancel b if it
 * runs there, and leave it.  Its requests were marked by swarm.cancel().
 */
static void
abandon(BatchRow *b, const BatchEndpoint *ep)
{
	bool		running = b->provider_batch_id != NULL &&
		(b->status == NULL || (strcmp(b->status, "completed") != 0 && strcmp(b->status, "failed") != 0 &&
							   strcmp(b->status, "expired") != 0 && strcmp(b->status, "cancelled") != 0));

	if (running && !b->cancel_requested && ep != NULL)
	{
		BatchHttpResult res;
		char	   *path = psprintf("batches/%s/cancel", b->provider_batch_id);

		batch_http_call(ep, "POST", path, "{}", &res);
		/* (a 400: it ended meanwhile; a 404: it is gone; either way, left) */
		if (!batch_http_ok(&res) && batch_http_retryable(&res))
		{
			record_retry(b, batch_http_describe(&res, "cancelling the batch"));
			return;
		}
		if (batch_http_ok(&res))
			record(b, "status = 'cancelling'", NULL);
	}
	record(b, running ? "state = 'abandoned', cancel_requested = true, finished_at = now()"
		   : "state = 'abandoned', finished_at = now()", NULL);
}

/* Move batch b on by as many steps as can be taken now. */
static void
step_batch(BatchRow *b)
{
	BatchJob   *bj = find_job(b->job_id);
	BatchEndpoint *ep;

	begin("pg_swarm batcher: reading an endpoint");
	ep = lookup_endpoint(b->endpoint);
	if (ep != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(round_cxt);
		BatchEndpoint *copy = palloc0(sizeof(BatchEndpoint));

		copy->name = pstrdup(ep->name);
		copy->base_url = pstrdup(ep->base_url);
		copy->model = ep->model ? pstrdup(ep->model) : NULL;
		copy->api_key = ep->api_key ? pstrdup(ep->api_key) : NULL;
		copy->tools = ep->tools;
		ep = copy;
		MemoryContextSwitchTo(old);
	}
	commit();
	scrub_key = ep ? ep->api_key : NULL;

	if (!b->job_running || bj == NULL)
	{
		abandon(b, ep);
		return;
	}
	if (ep == NULL)
	{
		record_retry(b, psprintf("endpoint \"%s\" does not exist any more", b->endpoint));
		return;
	}
	if (strcmp(b->state, "uploading") == 0 && !upload(b, bj, ep, NULL, false))
		return;
	if ((strcmp(b->state, "uploaded") == 0 || strcmp(b->state, "creating") == 0) && !create(b, ep))
		return;
	if (strcmp(b->state, "submitted") == 0 && !poll_batch(b, ep))
		return;
	if (strcmp(b->state, "downloading") == 0)
		download_and_store(b, bj, ep);
}

/*
 * Open one new batch of job bj's queued requests in no batch, upload and
 * create it.  Returns true when requests were taken (there may be more).
 */
static bool
open_batch(BatchJob *bj)
{
	FileWriter	fw;
	BatchEndpoint *ep;
	JobCursor  *cursor = cursor_of(bj->job.id);
	int64		after = cursor->after;
	int64		batch_id = 0;
	BatchRow	b;

	begin("pg_swarm batcher: writing a batch file");
	ep = lookup_endpoint(bj->endpoint);
	if (ep == NULL)
	{
		commit();
		return false;
	}
	init_writer(&fw);
	while (!fw.full)
	{
		const char *v[3] = {num(bj->job.id), num(after), num(BATCHER_CHUNK)};
		int64		last;
		int			taken;
		uint64		nread;

		run(SELECT_REQUESTS "WHERE r.job_id = $1::bigint AND r.status = 'queued' AND r.batch_id IS NULL "
			"AND r.id > $2::bigint ORDER BY r.id LIMIT $3::integer", 3, v, SPI_OK_SELECT);
		nread = SPI_processed;
		if (nread == 0)
			break;
		taken = write_rows(&fw, bj, ep);
		if ((uint64) taken < nread)
			break;
		last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[nread - 1], SPI_tuptable->tupdesc, 1,
										   &(bool) {false}));
		after = last;
	}
	fflush(fw.file);
	if (fw.nfailed > 0)
		(void) queue_store_results(fw.failed, fw.nfailed, NULL);
	if (fw.nids > 0)
	{
		Oid			types[4] = {INT8OID, TEXTOID, INT8ARRAYOID, INT8OID};
		Datum		args[4];
		bool		isnull;

		args[0] = Int64GetDatum(bj->job.id);
		args[1] = CStringGetTextDatum(ep->name);
		args[2] = int8_array(fw.ids, fw.nids);
		args[3] = Int64GetDatum(fw.bytes);
		if (SPI_execute_with_args("SELECT swarm._open_batch($1, $2, $3, $4)",
								  4, types, args, NULL, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "pg_swarm batcher: could not open a batch");
		(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
		{
			memset(&b, 0, sizeof(b));
			batch_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			b.id = batch_id;
			b.job_id = bj->job.id;
			b.state = "uploading";
			b.endpoint = MemoryContextStrdup(round_cxt, ep->name);
			{
				const char *v[1] = {num(batch_id)};

				/* (a statement of its own: the CTE's insert is not visible to its own snapshot) */
				run("SELECT file_name FROM swarm.batches WHERE id = $1::bigint", 1, v, SPI_OK_SELECT);
				b.file_name = MemoryContextStrdup(round_cxt, cell(0, 1));
			}
			b.requests = fw.nids;
			b.job_running = true;
			cursor->after = fw.ids[fw.nids - 1];
		}
	}
	{
		/* (the endpoint outlives the transaction) */
		MemoryContext old = MemoryContextSwitchTo(round_cxt);
		BatchEndpoint *copy = palloc0(sizeof(BatchEndpoint));

		copy->name = pstrdup(ep->name);
		copy->base_url = pstrdup(ep->base_url);
		copy->model = ep->model ? pstrdup(ep->model) : NULL;
		copy->api_key = ep->api_key ? pstrdup(ep->api_key) : NULL;
		copy->tools = ep->tools;
		ep = copy;
		MemoryContextSwitchTo(old);
	}
	commit();
	if (batch_id != 0)
	{
		ereport(DEBUG1,
				(errmsg("pg_swarm batcher: batch " INT64_FORMAT " of job " INT64_FORMAT ": %d requests, %ld bytes",
						batch_id, bj->job.id, fw.nids, fw.bytes)));
		scrub_key = ep->api_key;
		if (upload(&b, bj, ep, &fw, true))
			(void) create(&b, ep);
	}
	fclose(fw.file);
	return batch_id != 0 || fw.nfailed > 0;
}

/* ---------------------------------------------------------------------
 * The loop
 * ---------------------------------------------------------------------
 */

/*
 * Read this round's batch-mode jobs and the batches with work due; returns
 * them, and sets *next_ms to the wait before the next batch is due.
 */
static List *
scan(long *next_ms)
{
	List	   *due = NIL;
	bool		current;

	*next_ms = BATCHER_IDLE_MS;
	batch_jobs = NIL;
	begin("pg_swarm batcher: scanning");
	current = extension_current();
	/* (batch mode is refused on a distributed swarm: nothing to do there) */
	if (current)
	{
		run("SELECT swarm._is_distributed()", 0, NULL, SPI_OK_SELECT);
		current = cell(0, 1)[0] == 'f';
	}
	if (current)
	{
		MemoryContext spi;

		queue_scan_jobs(on_job_row, NULL);
		run("SELECT b.id, b.job_id, b.state, b.endpoint, b.file_name, b.input_file_id, b.provider_batch_id, "
			"       b.output_file_id, b.error_file_id, b.status, b.polls, b.requests, b.cancel_requested, "
			"       coalesce(j.status IN ('queued', 'running'), false), "
			"       extract(epoch FROM now() - b.created_at) * 1000, b.last_error "
			"FROM swarm.batches b LEFT JOIN swarm.jobs j ON j.id = b.job_id "
			"WHERE b.state NOT IN ('stored', 'abandoned') "
			"  AND (b.next_poll_at <= now() OR j.status IS NULL OR j.status NOT IN ('queued', 'running')) "
			"ORDER BY b.next_poll_at LIMIT " CppAsString2(BATCHER_ROUND), 0, NULL, SPI_OK_SELECT);
		/* (what is read must outlive the transaction: the round's memory; SPI
		 * calls switch back to their own, so only after the last) */
		spi = MemoryContextSwitchTo(round_cxt);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			BatchRow   *b = palloc0(sizeof(BatchRow));

			b->id = atoll(cell(i, 1));
			b->job_id = atoll(cell(i, 2));
			b->state = cell(i, 3);
			b->endpoint = cell(i, 4);
			b->file_name = cell(i, 5);
			b->input_file_id = cell(i, 6);
			b->provider_batch_id = cell(i, 7);
			b->output_file_id = cell(i, 8);
			b->error_file_id = cell(i, 9);
			b->status = cell(i, 10);
			b->polls = atoi(cell(i, 11));
			b->requests = atoi(cell(i, 12));
			b->cancel_requested = cell(i, 13)[0] == 't';
			b->job_running = cell(i, 14)[0] == 't';
			b->age_ms = atof(cell(i, 15));
			b->last_error = cell(i, 16);
			due = lappend(due, b);
		}
		MemoryContextSwitchTo(spi);
		run("SELECT (extract(epoch FROM min(next_poll_at) - now()) * 1000)::bigint FROM swarm.batches "
			"WHERE state NOT IN ('stored', 'abandoned')", 0, NULL, SPI_OK_SELECT);
		if (cell(0, 1) != NULL)
			*next_ms = Max(10, Min(BATCHER_IDLE_MS, atol(cell(0, 1))));
	}
	commit();
	return due;
}

/*
 * Log an error of one step and go on with the next; returns its message
 * (in cxt).
 */
static char *
report_and_abort(MemoryContext cxt)
{
	ErrorData  *edata;
	char	   *message;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	message = pstrdup(edata->message);
	FreeErrorData(edata);
	EmitErrorReport();
	FlushErrorState();
	if (IsTransactionState() || IsAbortedTransactionBlockState() || IsTransactionOrTransactionBlock())
		AbortCurrentTransaction();
	SPI_finish();
	wake_builder = false;
	return message;
}

static void
batcher_round(long *next_ms)
{
	List	   *volatile due;
	ListCell   *lc;

	MemoryContextReset(round_cxt);
	MemoryContextSwitchTo(round_cxt);
	*next_ms = BATCHER_IDLE_MS;
	PG_TRY();
	{
		due = scan(next_ms);
	}
	PG_CATCH();
	{
		report_and_abort(round_cxt);
		due = NIL;
	}
	PG_END_TRY();

	foreach(lc, due)
	{
		BatchRow   *b = lfirst(lc);

		if (ShutdownRequestPending)
			return;
		PG_TRY();
		{
			step_batch(b);
		}
		PG_CATCH();
		{
			char	   *why = report_and_abort(round_cxt);

			/* (not again at once: after its backoff, saying why) */
			PG_TRY();
			{
				record_retry(b, why);
			}
			PG_CATCH();
			{
				(void) report_and_abort(round_cxt);
			}
			PG_END_TRY();
		}
		PG_END_TRY();
	}
	foreach(lc, batch_jobs)
	{
		BatchJob   *bj = lfirst(lc);

		for (volatile int i = 0; i < BATCHER_ROUND && !ShutdownRequestPending; i++)
		{
			volatile bool more = false;

			PG_TRY();
			{
				more = open_batch(bj);
			}
			PG_CATCH();
			{
				(void) report_and_abort(round_cxt);
			}
			PG_END_TRY();
			if (!more)
				break;
			*next_ms = 10;		/* the batches just made are due soon */
		}
	}
}

static void
batcher_on_exit(int code, Datum arg)
{
	swarm_shared_set_batcher(NULL);
}

void
swarm_batcher_main(Datum main_arg)
{
	long		next_ms = BATCHER_IDLE_MS;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(swarm_database, NULL, 0);
	pgstat_report_appname("pg_swarm batcher");
	swarm_pin_background_session("pg_swarm batcher", "10s");
	batch_http_init();
	round_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm batcher round", ALLOCSET_DEFAULT_SIZES);

	swarm_shared_set_batcher(MyLatch);
	on_proc_exit(batcher_on_exit, 0);
	ereport(LOG, (errmsg("pg_swarm batcher started on database \"%s\"", swarm_database)));

	while (!ShutdownRequestPending)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 next_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		batcher_round(&next_ms);
	}
	proc_exit(0);
}
