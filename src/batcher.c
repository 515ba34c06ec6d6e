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
 * Storing a batch's answers is batch_store.c's; what the two files share,
 * batcher.h.
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
#include "batcher.h"
#include "openai.h"
#include "outcome.h"
#include "queue.h"

PGDLLEXPORT void swarm_batcher_main(Datum main_arg);

/* Look again this often even when nothing wakes us. */
#define BATCHER_IDLE_MS		1000
/*
 * ... and this often when no batch-mode job runs and no batch is out: a new
 * job, a cancel or a step built wakes it (whatever wakes the worker).
 */
#define BATCHER_NOTHING_MS	10000
/* Batches with work due taken per round (new ones: one per job per round). */
#define BATCHER_ROUND		100
/* Pages of a list read when looking for a file or batch after a crash. */
#define BATCHER_LIST_PAGES	50

MemoryContext batcher_round_cxt = NULL;
static List *batch_jobs = NIL;	/* BatchJob *, this round's */
static char *scrub_key = NULL;	/* the key of the endpoint being called */
bool		batcher_wake_builder = false;

/* ---------------------------------------------------------------------
 * Transactions and SPI
 * ---------------------------------------------------------------------
 */

/*
 * One transaction with SPI connected.  What is allocated between
 * batcher_begin() and batcher_commit() goes with the transaction; after the
 * commit the caller's memory context is current again (a commit leaves
 * TopMemoryContext current, where whatever came next would stay for good).
 */
static MemoryContext outside_cxt = NULL;

void
batcher_begin(const char *activity)
{
	outside_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
batcher_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(outside_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (batcher_wake_builder)
		swarm_shared_wake_step_builder();
	batcher_wake_builder = false;
}

/* Run sql with text arguments (NULL: SQL NULL); returns SPI's code. */
int
batcher_run(const char *sql, int nargs, const char **values, int expected)
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

char *
batcher_cell(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

char *
batcher_num(int64 v)
{
	return psprintf(INT64_FORMAT, v);
}

/* Overwrites the key of the endpoint being called wherever it shows. */
void
batcher_scrub(char *text)
{
	size_t		klen;
	char	   *p;

	if (text == NULL || scrub_key == NULL || (klen = strlen(scrub_key)) < 4)
		return;
	while ((p = strstr(text, scrub_key)) != NULL)
		memset(p, '*', klen);
}

/* Text fit for a text column: bytes that are not printable ASCII become '?'. */
char *
batcher_printable(const char *s)
{
	char	   *out = pstrdup(s ? s : "");

	for (char *p = out; *p; p++)
		if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
			*p = '?';
	batcher_scrub(out);
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
	v[0] = batcher_num(oid);
	batcher_run("SELECT extversion FROM pg_catalog.pg_extension WHERE oid = $1::oid", 1, v, SPI_OK_SELECT);
	return SPI_processed == 1 && strcmp(batcher_cell(0, 1), SWARM_VERSION) == 0;
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
	old = MemoryContextSwitchTo(batcher_round_cxt);
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

BatchJob *
batcher_find_job(int64 id)
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
void
batcher_record(const BatchRow *b, const char *set_sql, const char *arg2)
{
	const char *v[2] = {batcher_num(b->id), arg2};
	char	   *sql = psprintf("UPDATE swarm.batches SET %s WHERE id = $1::bigint", set_sql);

	batcher_begin("pg_swarm batcher: recording a batch");
	batcher_run(sql, arg2 ? 2 : 1, v, SPI_OK_UPDATE);
	batcher_commit();
}

/* The next poll or retry of b, `polls` steps into its backoff. */
static double
backoff_ms(int polls)
{
	double		ms = swarm_batch_poll_interval_ms * pow(1.25, Min(polls, 40));

	return Min(ms, 60.0 * swarm_batch_poll_interval_ms);
}

/* A call about b failed in a way worth trying again: say so, try later. */
void
batcher_record_retry(const BatchRow *b, const char *error)
{
	char	   *set = psprintf("last_error = $2, polls = polls + 1, "
							   "next_poll_at = now() + interval '%d milliseconds'",
							   (int) backoff_ms(b->polls));

	ereport(LOG,
			(errmsg("pg_swarm batcher: batch " INT64_FORMAT " of job " INT64_FORMAT ": %s; trying again",
					b->id, b->job_id, error)));
	batcher_record(b, set, batcher_printable(error));
}

/*
 * A request row read with SELECT_REQUESTS_AND's first five columns (id,
 * agent_id, name, persona, vars) as the worker's claim reads it, in the
 * current memory context.
 */
void
batcher_claimed_row(HeapTuple tup, TupleDesc desc, SwarmClaimedRow *row)
{
	bool		isnull;
	Datum		d;

	row->request_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	row->agent_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	row->shard = 0;
	d = SPI_getbinval(tup, desc, 3, &isnull);
	row->name = isnull ? NULL : TextDatumGetCString(d);
	d = SPI_getbinval(tup, desc, 4, &isnull);
	row->persona = isnull ? NULL : DatumGetJsonbP(d);
	d = SPI_getbinval(tup, desc, 5, &isnull);
	row->vars = isnull ? NULL : DatumGetJsonbP(d);
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
		StringInfoData body;
		StringInfoData line;
		char	   *error = NULL;
		MemoryContext old;
		bool		ok;

		/* (all of a row's memory in row_cxt, reset after it) */
		old = MemoryContextSwitchTo(row_cxt);
		batcher_claimed_row(tup, tt->tupdesc, &row);

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

FILE *
batcher_temp_file(void)
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
	fw->file = batcher_temp_file();
	fw->max_ids = swarm_batch_file_max_requests;
	fw->max_bytes = swarm_batch_file_max_bytes;
	fw->ids = palloc(sizeof(int64) * fw->max_ids);
	fw->max_failed = 16;
	fw->failed = palloc(sizeof(SwarmResult) * fw->max_failed);
}

#define SELECT_REQUESTS \
	SELECT_REQUESTS_AND "r.attempts " \
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
		const char *v[3] = {batcher_num(b->id), batcher_num(after), batcher_num(BATCHER_CHUNK)};

		batcher_run(SELECT_REQUESTS "WHERE r.batch_id = $1::bigint AND r.id > $2::bigint AND r.status = 'queued' "
			"ORDER BY r.id LIMIT $3::integer", 3, v, SPI_OK_SELECT);
		if (SPI_processed == 0)
			break;
		after = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[SPI_processed - 1],
											SPI_tuptable->tupdesc, 1, &(bool) {false}));
		(void) write_rows(fw, bj, ep);
		/* (the rows, personas included, would stay until the transaction ends) */
		SPI_freetuptable(SPI_tuptable);
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
		batcher_begin("pg_swarm batcher: reading a list");
		batcher_run("SELECT match, objects, last_id, has_more FROM swarm._batch_find($1, $2, $3)", 3, v,
			SPI_OK_SELECT);
		found = batcher_cell(0, 1);
		objects = batcher_cell(0, 2) ? atoi(batcher_cell(0, 2)) : -1;
		after = batcher_cell(0, 3);
		has_more = batcher_cell(0, 4) && batcher_cell(0, 4)[0] == 't';
		found = found ? MemoryContextStrdup(batcher_round_cxt, found) : NULL;
		after = after ? MemoryContextStrdup(batcher_round_cxt, after) : NULL;
		batcher_commit();
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
 * The id in the provider's answer to a call that made something (`what`:
 * "uploading the batch file", "creating the batch"), or NULL when the call
 * failed or the answer has none; then b says why: failed for good when the
 * provider would refuse again, else to be tried again.
 */
static char *
made_id(BatchRow *b, const BatchHttpResult *res, const char *what)
{
	char	   *id;

	if (!batch_http_ok(res))
	{
		char	   *error = batch_http_describe(res, what);

		if (batch_http_retryable(res))
			batcher_record_retry(b, error);
		else
			batch_store_fail(b, error);
		return NULL;
	}
	batcher_begin("pg_swarm batcher: reading the provider's answer");
	{
		const char *v[1] = {res->body.data};

		batcher_run("SELECT swarm._batch_object_id($1)", 1, v, SPI_OK_SELECT);
		id = batcher_cell(0, 1) ? MemoryContextStrdup(batcher_round_cxt, batcher_cell(0, 1)) : NULL;
	}
	batcher_commit();
	if (id == NULL)
		batcher_record_retry(b, psprintf("%s: the answer has no id: %.200s", what, res->body.data));
	return id;
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
			batcher_record_retry(b, error);
			return false;
		}
	}
	if (file_id == NULL)
	{
		if (fw == NULL)
		{
			batcher_begin("pg_swarm batcher: writing a batch file");
			rewrite_file(&rewritten, b, bj, ep);
			batcher_commit();
			fw = &rewritten;
		}
		batch_http_upload(ep, fw->file, fw->bytes, b->file_name, &res);
		if (fw == &rewritten)
			fclose(rewritten.file);
		if ((file_id = made_id(b, &res, "uploading the batch file")) == NULL)
			return false;
	}
	batcher_record(b, "input_file_id = $2, state = 'uploaded', last_error = NULL", file_id);
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
			batcher_record_retry(b, error);
			return false;
		}
	}
	else
	{
		batcher_record(b, "state = 'creating'", NULL);
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
		if ((batch_id = made_id(b, &res, "creating the batch")) == NULL)
			return false;
	}
	batcher_record(b, psprintf("provider_batch_id = $2, state = 'submitted', status = coalesce(status, 'validating'), "
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
		batcher_record_retry(b, batch_http_describe(&res, "reading the batch"));
		return false;
	}
	v[0] = batcher_num(b->id);
	v[1] = res.body.data;
	v[2] = psprintf("%d milliseconds", (int) backoff_ms(b->polls + 1));
	batcher_begin("pg_swarm batcher: recording a batch's status");
	batcher_run("SELECT swarm._batch_polled($1::bigint, $2, $3::interval), output_file_id, error_file_id "
		"FROM swarm.batches WHERE id = $1::bigint", 3, v, SPI_OK_SELECT);
	status = batcher_cell(0, 1) ? MemoryContextStrdup(batcher_round_cxt, batcher_cell(0, 1)) : NULL;
	batcher_commit();
	/* (read again: the function's update is not visible to its own row) */
	if (status != NULL && (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
						   strcmp(status, "expired") == 0 || strcmp(status, "cancelled") == 0))
	{
		batcher_begin("pg_swarm batcher: reading a batch");
		v[0] = batcher_num(b->id);
		batcher_run("SELECT output_file_id, error_file_id, last_error FROM swarm.batches WHERE id = $1::bigint", 1, v,
			SPI_OK_SELECT);
		b->output_file_id = batcher_cell(0, 1) ? MemoryContextStrdup(batcher_round_cxt, batcher_cell(0, 1)) : NULL;
		b->error_file_id = batcher_cell(0, 2) ? MemoryContextStrdup(batcher_round_cxt, batcher_cell(0, 2)) : NULL;
		b->last_error = batcher_cell(0, 3) ? MemoryContextStrdup(batcher_round_cxt, batcher_cell(0, 3)) : NULL;
		batcher_commit();
		b->status = status;
		b->state = "downloading";
		return true;
	}
	return false;
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
			batcher_record_retry(b, batch_http_describe(&res, "cancelling the batch"));
			return;
		}
		if (batch_http_ok(&res))
			batcher_record(b, "status = 'cancelling'", NULL);
	}
	batcher_record(b, running ? "state = 'abandoned', cancel_requested = true, finished_at = now()"
		   : "state = 'abandoned', finished_at = now()", NULL);
}

/* Move batch b on by as many steps as can be taken now. */
static void
step_batch(BatchRow *b)
{
	BatchJob   *bj = batcher_find_job(b->job_id);
	BatchEndpoint *ep;

	batcher_begin("pg_swarm batcher: reading an endpoint");
	ep = lookup_endpoint(b->endpoint);
	if (ep != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(batcher_round_cxt);
		BatchEndpoint *copy = palloc0(sizeof(BatchEndpoint));

		copy->name = pstrdup(ep->name);
		copy->base_url = pstrdup(ep->base_url);
		copy->model = ep->model ? pstrdup(ep->model) : NULL;
		copy->api_key = ep->api_key ? pstrdup(ep->api_key) : NULL;
		copy->tools = ep->tools;
		ep = copy;
		MemoryContextSwitchTo(old);
	}
	batcher_commit();
	scrub_key = ep ? ep->api_key : NULL;

	if (!b->job_running || bj == NULL)
	{
		abandon(b, ep);
		return;
	}
	if (ep == NULL)
	{
		batcher_record_retry(b, psprintf("endpoint \"%s\" does not exist any more", b->endpoint));
		return;
	}
	if (strcmp(b->state, "uploading") == 0 && !upload(b, bj, ep, NULL, false))
		return;
	if ((strcmp(b->state, "uploaded") == 0 || strcmp(b->state, "creating") == 0) && !create(b, ep))
		return;
	if (strcmp(b->state, "submitted") == 0 && !poll_batch(b, ep))
		return;
	if (strcmp(b->state, "downloading") == 0)
		batch_store_answers(b, bj, ep);
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
	int64		after = batch_cursor_get(bj->job.id);
	int64		batch_id = 0;
	BatchRow	b;

	batcher_begin("pg_swarm batcher: writing a batch file");
	ep = lookup_endpoint(bj->endpoint);
	if (ep == NULL)
	{
		batcher_commit();
		return false;
	}
	init_writer(&fw);
	while (!fw.full)
	{
		const char *v[3] = {batcher_num(bj->job.id), batcher_num(after), batcher_num(BATCHER_CHUNK)};
		int64		last;
		int			taken;
		uint64		nread;

		batcher_run(SELECT_REQUESTS "WHERE r.job_id = $1::bigint AND r.status = 'queued' AND r.batch_id IS NULL "
			"AND r.id > $2::bigint ORDER BY r.id LIMIT $3::integer", 3, v, SPI_OK_SELECT);
		nread = SPI_processed;
		if (nread == 0)
			break;
		taken = write_rows(&fw, bj, ep);
		last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[nread - 1], SPI_tuptable->tupdesc, 1,
										   &(bool) {false}));
		/* (the rows, personas included, would stay until the transaction ends) */
		SPI_freetuptable(SPI_tuptable);
		if ((uint64) taken < nread)
			break;
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
		args[2] = swarm_int8_array(fw.ids, fw.nids);
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
			b.endpoint = MemoryContextStrdup(batcher_round_cxt, ep->name);
			{
				const char *v[1] = {batcher_num(batch_id)};

				/* (a statement of its own: the CTE's insert is not visible to its own snapshot) */
				batcher_run("SELECT file_name FROM swarm.batches WHERE id = $1::bigint", 1, v, SPI_OK_SELECT);
				b.file_name = MemoryContextStrdup(batcher_round_cxt, batcher_cell(0, 1));
			}
			b.requests = fw.nids;
			b.job_running = true;
			batch_cursor_set(bj->job.id, fw.ids[fw.nids - 1]);
		}
	}
	{
		/* (the endpoint outlives the transaction) */
		MemoryContext old = MemoryContextSwitchTo(batcher_round_cxt);
		BatchEndpoint *copy = palloc0(sizeof(BatchEndpoint));

		copy->name = pstrdup(ep->name);
		copy->base_url = pstrdup(ep->base_url);
		copy->model = ep->model ? pstrdup(ep->model) : NULL;
		copy->api_key = ep->api_key ? pstrdup(ep->api_key) : NULL;
		copy->tools = ep->tools;
		ep = copy;
		MemoryContextSwitchTo(old);
	}
	batcher_commit();
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
	batcher_begin("pg_swarm batcher: scanning");
	current = extension_current();
	/* (batch mode is refused on a distributed swarm: nothing to do there) */
	if (current)
	{
		batcher_run("SELECT swarm._is_distributed()", 0, NULL, SPI_OK_SELECT);
		current = batcher_cell(0, 1)[0] == 'f';
	}
	if (current)
	{
		MemoryContext spi;

		queue_scan_jobs(on_job_row, NULL);
		batcher_run("SELECT b.id, b.job_id, b.state, b.endpoint, b.file_name, b.input_file_id, b.provider_batch_id, "
			"       b.output_file_id, b.error_file_id, b.status, b.polls, b.requests, b.cancel_requested, "
			"       coalesce(j.status IN ('queued', 'running'), false), "
			"       extract(epoch FROM now() - b.created_at) * 1000, b.last_error "
			"FROM swarm.batches b LEFT JOIN swarm.jobs j ON j.id = b.job_id "
			"WHERE b.state NOT IN ('stored', 'abandoned') "
			"  AND (b.next_poll_at <= now() OR j.status IS NULL OR j.status NOT IN ('queued', 'running')) "
			"ORDER BY b.next_poll_at LIMIT " CppAsString2(BATCHER_ROUND), 0, NULL, SPI_OK_SELECT);
		/* (what is read must outlive the transaction: the round's memory; SPI
		 * calls switch back to their own, so only after the last) */
		spi = MemoryContextSwitchTo(batcher_round_cxt);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			BatchRow   *b = palloc0(sizeof(BatchRow));

			b->id = atoll(batcher_cell(i, 1));
			b->job_id = atoll(batcher_cell(i, 2));
			b->state = batcher_cell(i, 3);
			b->endpoint = batcher_cell(i, 4);
			b->file_name = batcher_cell(i, 5);
			b->input_file_id = batcher_cell(i, 6);
			b->provider_batch_id = batcher_cell(i, 7);
			b->output_file_id = batcher_cell(i, 8);
			b->error_file_id = batcher_cell(i, 9);
			b->status = batcher_cell(i, 10);
			b->polls = atoi(batcher_cell(i, 11));
			b->requests = atoi(batcher_cell(i, 12));
			b->cancel_requested = batcher_cell(i, 13)[0] == 't';
			b->job_running = batcher_cell(i, 14)[0] == 't';
			b->age_ms = atof(batcher_cell(i, 15));
			b->last_error = batcher_cell(i, 16);
			due = lappend(due, b);
		}
		MemoryContextSwitchTo(spi);
		batcher_run("SELECT (extract(epoch FROM min(next_poll_at) - now()) * 1000)::bigint FROM swarm.batches "
			"WHERE state NOT IN ('stored', 'abandoned')", 0, NULL, SPI_OK_SELECT);
		if (batcher_cell(0, 1) != NULL)
			*next_ms = Max(10, Min(BATCHER_IDLE_MS, atol(batcher_cell(0, 1))));
		else if (batch_jobs == NIL)
			*next_ms = BATCHER_NOTHING_MS;
	}
	batcher_commit();
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
	/* (an abort, like a commit, leaves TopMemoryContext current) */
	MemoryContextSwitchTo(cxt);
	batcher_wake_builder = false;
	return message;
}

static void
batcher_round(long *next_ms)
{
	List	   *volatile due;
	ListCell   *lc;

	MemoryContextReset(batcher_round_cxt);
	MemoryContextSwitchTo(batcher_round_cxt);
	*next_ms = BATCHER_IDLE_MS;
	PG_TRY();
	{
		due = scan(next_ms);
	}
	PG_CATCH();
	{
		report_and_abort(batcher_round_cxt);
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
			char	   *why = report_and_abort(batcher_round_cxt);

			/* (not again at once: after its backoff, saying why) */
			PG_TRY();
			{
				batcher_record_retry(b, why);
			}
			PG_CATCH();
			{
				(void) report_and_abort(batcher_round_cxt);
			}
			PG_END_TRY();
		}
		PG_END_TRY();
	}
	/*
	 * One new batch per job per round: the batches already out are polled
	 * and stored between two new ones (writing and uploading one takes a
	 * second or two), so a million-request job's first answers are stored
	 * while its last files are still being written.
	 */
	foreach(lc, batch_jobs)
	{
		BatchJob   *bj = lfirst(lc);
		volatile bool more = false;

		if (ShutdownRequestPending)
			return;
		PG_TRY();
		{
			more = open_batch(bj);
		}
		PG_CATCH();
		{
			(void) report_and_abort(batcher_round_cxt);
		}
		PG_END_TRY();
		if (more)
			*next_ms = 0;		/* more may wait, and the new batch is due soon */
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
	batcher_round_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm batcher round", ALLOCSET_DEFAULT_SIZES);

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
