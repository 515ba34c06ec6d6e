/*-------------------------------------------------------------------------
 *
 * shards.c
 *		The distributed swarm (Citus, after swarm.distribute()): the shards of
 *		the queue placed on this node, the statements that claim and store on
 *		them, and the coordinator's summing of every node's progress.
 *
 * Each node's worker claims and stores only the requests of the shards
 * placed on its own node, with plain SQL on those shards (swarm.requests_N,
 * and the co-located swarm.messages_M and swarm.agents_K): no Citus
 * planning, no round trip to another node per batch.  Placements are
 * disjoint (one placement per shard), so one worker claims each row, and a
 * claim stays a read: a crashed or restarted node's requests are still
 * 'queued' in its shards and are claimed again.
 *
 * What this file keeps, refreshed at every job scan (shards_refresh()):
 *	- whether the swarm is distributed (swarm.requests in pg_dist_partition)
 *	  and whether this node is the coordinator (group 0);
 *	- the local shards: for each shard of swarm.requests placed here, the
 *	  co-located shards of swarm.messages and swarm.agents (same hash range);
 *	- the statements on them, prepared when the list changes: one claim over
 *	  all local shards (UNION ALL, merged in id order, so the per-job cursor
 *	  of jobs.c works as on one server), and per shard the store of answered
 *	  and of failed requests, keyed by (agent_id, id), the distributed key.
 *
 * Storing on a shard first takes the shard's metadata lock in share mode
 * (lock_shard_metadata), the lock the Citus rebalancer takes exclusively
 * before a shard's last copy: a move waits for the store, or the store
 * waits for the move and then finds the shard gone from this node and sets
 * its results aside, leaving those requests queued on their new node, which
 * claims and stores them.  Nothing is stored twice or lost.  A node whose
 * list of shards changed claims every job afresh (a shard that arrived
 * holds requests behind the jobs' cursors).
 *
 * Counts go to swarm.job_node_progress, this node's own table; the
 * coordinator's worker sums every node's (swarm._conduct()) into
 * swarm.jobs, completes jobs, sends NOTIFY there, and enqueues the next
 * turns of conversations.  Message ids come from
 * this node's sequence, which swarm.distribute() starts at group << 48.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "shards.h"

typedef struct LocalShard
{
	int64		requests;		/* shard ids */
	int64		messages;
	int64		agents;
	int64		responses;		/* 0: swarm.responses is not distributed (an upgraded swarm) */
	SPIPlanPtr	store_ok;
	SPIPlanPtr	store_failed;
	SPIPlanPtr	hold;			/* lock the rows a store will change, skipping held ones */
	SPIPlanPtr	still_there;	/* which of some rows exist */
	SPIPlanPtr	keep;			/* answers kept in the response store */
	SPIPlanPtr	lookup;			/* stored answers to replay */
} LocalShard;

static struct
{
	bool		distributed;
	bool		known;			/* the list below was read at least once */
	bool		coordinator;
	int			ntotal;			/* shards of swarm.requests in the cluster */
	int			nlocal;
	LocalShard *local;
	SPIPlanPtr	claim;
	SPIPlanPtr	progress;
	MemoryContext cxt;
}			S;

static const Oid store_ok_types[9] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
	INT4ARRAYOID, FLOAT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT8ARRAYOID};
static const Oid store_failed_types[4] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, INT8ARRAYOID};
static const Oid rows_types[2] = {INT8ARRAYOID, INT8ARRAYOID};
const Oid	swarm_keep_responses_types[4] = {INT8ARRAYOID, INT8ARRAYOID, BYTEAARRAYOID, TEXTARRAYOID};
const Oid	swarm_lookup_responses_types[3] = {INT8ARRAYOID, BYTEAARRAYOID, NAMEOID};
static const Oid progress_types[5] = {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID};

static SPIPlanPtr
prepare_kept(const char *sql, int nargs, const Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, (Oid *) types);

	if (plan == NULL)
		elog(ERROR, "pg_swarm: SPI_prepare failed: %s (%s)", SPI_result_code_string(SPI_result), sql);
	SPI_keepplan(plan);
	return plan;
}

static void
forget_shards(void)
{
	for (int i = 0; i < S.nlocal; i++)
	{
		if (S.local[i].store_ok)
			SPI_freeplan(S.local[i].store_ok);
		if (S.local[i].store_failed)
			SPI_freeplan(S.local[i].store_failed);
		if (S.local[i].hold)
			SPI_freeplan(S.local[i].hold);
		if (S.local[i].still_there)
			SPI_freeplan(S.local[i].still_there);
		if (S.local[i].keep)
			SPI_freeplan(S.local[i].keep);
		if (S.local[i].lookup)
			SPI_freeplan(S.local[i].lookup);
	}
	if (S.claim)
		SPI_freeplan(S.claim);
	S.claim = NULL;
	S.nlocal = 0;
	S.local = NULL;
	if (S.cxt)
		MemoryContextReset(S.cxt);
}

/* The one claim over every local shard, merged in id order. */
static void
prepare_claim(void)
{
	static const Oid types[4] = {INT8OID, INT8OID, INT4OID, INT8OID};
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT * FROM (");
	for (int i = 0; i < S.nlocal; i++)
		appendStringInfo(&sql,
						 "%s(SELECT r.id, r.agent_id, a.name, a.persona, r.vars, " INT64_FORMAT "::bigint "
						 " FROM swarm.requests_" INT64_FORMAT " r "
						 " LEFT JOIN swarm.agents_" INT64_FORMAT " a ON a.id = r.agent_id "
						 " WHERE r.job_id = $1 AND r.id > $2 AND r.id <= $4 AND r.status = 'queued' "
						 " ORDER BY r.id LIMIT $3)",
						 i > 0 ? " UNION ALL " : "", S.local[i].requests, S.local[i].requests,
						 S.local[i].agents);
	appendStringInfoString(&sql, ") q ORDER BY 1 LIMIT $3");
	S.claim = prepare_kept(sql.data, 4, types);
	pfree(sql.data);
}

/*
 * The stores of one shard: the same statements as on one server (queue.c),
 * on the shard's tables, keyed by (agent_id, id), with message ids from this
 * node's sequence.
 */
static void
prepare_store(LocalShard *ls)
{
	char	   *sql;

	sql = psprintf("WITH input AS ("
				   "  SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9) "
				   "    AS t(request_id, content, model, prompt_tokens, completion_tokens, "
				   "         latency_ms, finish_reason, attempts, agent_id)), "
				   "answered AS ("
				   "  DELETE FROM swarm.requests_" INT64_FORMAT " r USING input i "
				   "  WHERE r.agent_id = i.agent_id AND r.id = i.request_id "
				   "    AND r.status NOT IN ('failed', 'cancelled') "
				   "  RETURNING r.id, r.job_id, r.agent_id, r.to_agent_id, r.conversation_id, "
				   "            r.turn, r.reply_to, r.seen, r.owner), "
				   "stored AS ("
				   "  INSERT INTO swarm.messages_" INT64_FORMAT " (id, job_id, request_id, agent_id, "
				   "         content, model, prompt_tokens, completion_tokens, latency_ms, "
				   "         finish_reason, attempts, to_agent_id, conversation_id, turn, reply_to, "
				   "         seen, owner) OVERRIDING SYSTEM VALUE "
				   "  SELECT nextval('swarm.messages_id_seq'), a.job_id, a.id, a.agent_id, i.content, "
				   "         i.model, i.prompt_tokens, i.completion_tokens, i.latency_ms, "
				   "         i.finish_reason, i.attempts, a.to_agent_id, a.conversation_id, a.turn, "
				   "         a.reply_to, a.seen, a.owner "
				   "  FROM answered a JOIN input i ON i.request_id = a.id "
				   "  ORDER BY a.id "
				   "  RETURNING job_id, prompt_tokens, completion_tokens) "
				   "SELECT job_id, count(*), coalesce(sum(prompt_tokens), 0), "
				   "       coalesce(sum(completion_tokens), 0) "
				   "FROM stored GROUP BY job_id",
				   ls->requests, ls->messages);
	ls->store_ok = prepare_kept(sql, 9, store_ok_types);
	pfree(sql);
	sql = psprintf("WITH input AS ("
				   "  SELECT * FROM unnest($1, $2, $3, $4) AS t(request_id, attempts, error, agent_id)), "
				   "marked AS ("
				   "  UPDATE swarm.requests_" INT64_FORMAT " r SET status = 'failed', "
				   "         attempts = i.attempts, last_error = i.error, finished_at = now() "
				   "  FROM input i "
				   "  WHERE r.agent_id = i.agent_id AND r.id = i.request_id "
				   "    AND r.status NOT IN ('failed', 'cancelled') "
				   "  RETURNING r.job_id) "
				   "SELECT job_id, count(*), 0::bigint, 0::bigint FROM marked GROUP BY job_id",
				   ls->requests);
	ls->store_failed = prepare_kept(sql, 4, store_failed_types);
	pfree(sql);
	sql = psprintf("SELECT r.id FROM swarm.requests_" INT64_FORMAT " r "
				   "WHERE (r.agent_id, r.id) IN (SELECT * FROM unnest($1, $2)) "
				   "FOR UPDATE SKIP LOCKED", ls->requests);
	ls->hold = prepare_kept(sql, 2, rows_types);
	pfree(sql);
	sql = psprintf("SELECT r.id FROM swarm.requests_" INT64_FORMAT " r "
				   "WHERE (r.agent_id, r.id) IN (SELECT * FROM unnest($1, $2))", ls->requests);
	ls->still_there = prepare_kept(sql, 2, rows_types);
	pfree(sql);
	if (ls->responses != 0)
	{
		char		responses[32];
		char		messages[32];

		snprintf(responses, sizeof(responses), "_" INT64_FORMAT, ls->responses);
		snprintf(messages, sizeof(messages), "_" INT64_FORMAT, ls->messages);
		sql = psprintf(SWARM_KEEP_RESPONSES_SQL, responses, messages);
		ls->keep = prepare_kept(sql, 4, swarm_keep_responses_types);
		pfree(sql);
		sql = psprintf(SWARM_LOOKUP_RESPONSES_SQL, responses);
		ls->lookup = prepare_kept(sql, 3, swarm_lookup_responses_types);
		pfree(sql);
	}
}

static int64
col_int8(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * Learn (again) whether the swarm is distributed, and which shards are on
 * this node; prepare the statements on them when the list changed.  In a
 * tick's transaction, SPI connected.  Returns true when a list known before
 * changed (a shard moved here or away): the caller then claims every job
 * afresh, since a shard that arrived holds requests behind the jobs'
 * cursors.
 */
bool
shards_refresh(void)
{
	bool		was_known = S.known;
	bool		same;
	int			n;
	int64	   *ids;

	if (S.cxt == NULL)
		S.cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm shards", ALLOCSET_SMALL_SIZES);
	if (SPI_execute("SELECT swarm._is_distributed()", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_swarm: could not learn whether the swarm is distributed");
	{
		bool		isnull;

		S.distributed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (!S.distributed)
	{
		forget_shards();
		S.known = false;
		S.coordinator = false;
		return false;
	}
	if (SPI_execute("SELECT (SELECT groupid FROM pg_catalog.pg_dist_local_group)::bigint, "
					"       (SELECT count(*) FROM pg_catalog.pg_dist_shard "
					"        WHERE logicalrelid = 'swarm.requests'::regclass)",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_swarm: could not read the Citus metadata");
	S.coordinator = col_int8(0, 1) == 0;
	S.ntotal = (int) col_int8(0, 2);
	/* (responses: none when an upgrade made the table after distribute()) */
	if (SPI_execute("SELECT r.shardid, m.shardid, a.shardid, s.shardid "
					"FROM pg_catalog.pg_dist_shard r "
					"JOIN pg_catalog.pg_dist_placement p ON p.shardid = r.shardid "
					"  AND p.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group) "
					"JOIN pg_catalog.pg_dist_shard m ON m.logicalrelid = 'swarm.messages'::regclass "
					"  AND m.shardminvalue = r.shardminvalue "
					"JOIN pg_catalog.pg_dist_shard a ON a.logicalrelid = 'swarm.agents'::regclass "
					"  AND a.shardminvalue = r.shardminvalue "
					"LEFT JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = 'swarm.responses'::regclass "
					"  AND s.shardminvalue = r.shardminvalue "
					"WHERE r.logicalrelid = 'swarm.requests'::regclass "
					"ORDER BY r.shardminvalue::bigint",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_swarm: could not read the shard placements");
	n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1) * 4);
	for (int i = 0; i < n; i++)
		for (int c = 0; c < 4; c++)
			ids[i * 4 + c] = col_int8(i, c + 1);
	same = S.known && n == S.nlocal;
	for (int i = 0; i < n && same; i++)
		same = ids[i * 4] == S.local[i].requests && ids[i * 4 + 1] == S.local[i].messages &&
			ids[i * 4 + 2] == S.local[i].agents && ids[i * 4 + 3] == S.local[i].responses;
	if (same)
		return false;
	forget_shards();
	S.known = false;			/* until every statement is prepared */
	S.local = MemoryContextAllocZero(S.cxt, sizeof(LocalShard) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		S.local[i].requests = ids[i * 4];
		S.local[i].messages = ids[i * 4 + 1];
		S.local[i].agents = ids[i * 4 + 2];
		S.local[i].responses = ids[i * 4 + 3];
	}
	S.nlocal = n;
	if (n > 0)
	{
		prepare_claim();
		for (int i = 0; i < n; i++)
			prepare_store(&S.local[i]);
	}
	S.known = true;
	ereport(LOG,
			(errmsg("pg_swarm worker: the swarm is distributed; %d of its %d shards are on this node%s",
					n, S.ntotal, S.coordinator ? " (the coordinator)" : "")));
	return was_known;
}

bool
shards_distributed(void)
{
	return S.distributed;
}

/* A store found a shard moved away: the list must be read again now. */
bool
shards_stale(void)
{
	return S.distributed && !S.known;
}

bool
shards_on_coordinator(void)
{
	return S.distributed && S.coordinator;
}

int
shards_local_count(void)
{
	return S.distributed ? S.nlocal : 0;
}

/*
 * This node's share of the cluster's work: its shards over all shards (1 on
 * one server).  Endpoint budgets are split by it, so that the nodes' sum
 * stays within them.
 */
double
shards_share(void)
{
	if (!S.distributed || S.ntotal <= 0)
		return 1.0;
	return (double) S.nlocal / S.ntotal;
}

/* The claim over the local shards (NULL: none here). */
SPIPlanPtr
shards_claim_plan(void)
{
	return S.claim;
}

static LocalShard *
local_shard(int64 requests_shard)
{
	for (int i = 0; i < S.nlocal; i++)
		if (S.local[i].requests == requests_shard)
			return &S.local[i];
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("pg_swarm worker: shard " INT64_FORMAT " of swarm.requests is no longer on this node",
					requests_shard),
			 errdetail("Its requests in flight here are not stored here; they stay queued on its new node, whose worker sends them.")));
	return NULL;
}

/*
 * Before storing on a shard: lock its metadata in share mode (a move's last
 * copy waits for the store to commit), then check it is still here.  False
 * when it has moved away (its requests stay queued on its new node, whose
 * worker sends them); the list is then read again at the next scan.
 */
bool
shards_lock(int64 requests_shard)
{
	LocalShard *ls = NULL;
	Datum		arg = Int64GetDatum(requests_shard);
	Oid			argtype = INT8OID;
	bool		isnull;
	int			rc;

	/* a shard the last scan no longer found here has moved away */
	for (int i = 0; i < S.nlocal && ls == NULL; i++)
		if (S.local[i].requests == requests_shard)
			ls = &S.local[i];
	if (ls == NULL)
		return false;

	/*
	 * Two statements: the check must read the catalog as it is once the lock
	 * is ours (a statement's snapshot is taken before it waits).
	 */
	rc = SPI_execute_with_args("SELECT pg_catalog.lock_shard_metadata(5, ARRAY[$1])",
							   1, &argtype, &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_swarm: could not lock shard " INT64_FORMAT, ls->requests);
	rc = SPI_execute_with_args("SELECT 0, EXISTS (SELECT FROM pg_catalog.pg_dist_placement "
							   "  WHERE shardid = $1 AND groupid = "
							   "        (SELECT groupid FROM pg_catalog.pg_dist_local_group))",
							   1, &argtype, &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_swarm: could not read the placement of shard " INT64_FORMAT, ls->requests);
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		return true;
	S.known = false;			/* read the list again at the next scan */
	return false;
}

SPIPlanPtr
shards_store_ok_plan(int64 requests_shard)
{
	return local_shard(requests_shard)->store_ok;
}

SPIPlanPtr
shards_store_failed_plan(int64 requests_shard)
{
	return local_shard(requests_shard)->store_failed;
}

/*
 * Given (agent ids, request ids): lock those rows of the shard not held by
 * another transaction, returning their ids (SKIP LOCKED).
 */
SPIPlanPtr
shards_hold_plan(int64 requests_shard)
{
	return local_shard(requests_shard)->hold;
}

/* The response store's statements on the shard's tables (NULL: none there). */
SPIPlanPtr
shards_keep_plan(int64 requests_shard)
{
	return local_shard(requests_shard)->keep;
}

SPIPlanPtr
shards_lookup_plan(int64 requests_shard)
{
	return local_shard(requests_shard)->lookup;
}

/* Given (agent ids, request ids): the ids of those rows that exist. */
SPIPlanPtr
shards_still_there_plan(int64 requests_shard)
{
	return local_shard(requests_shard)->still_there;
}

/* Adds a stored batch's counts to this node's swarm.job_node_progress. */
SPIPlanPtr
shards_progress_plan(void)
{
	if (S.progress == NULL)
		S.progress = prepare_kept("INSERT INTO swarm.job_node_progress AS p "
								  "  (job_id, succeeded, failed, prompt_tokens, completion_tokens) "
								  "SELECT * FROM unnest($1, $2, $3, $4, $5) "
								  "ON CONFLICT (job_id) DO UPDATE SET "
								  "  succeeded = p.succeeded + excluded.succeeded, "
								  "  failed = p.failed + excluded.failed, "
								  "  prompt_tokens = p.prompt_tokens + excluded.prompt_tokens, "
								  "  completion_tokens = p.completion_tokens + excluded.completion_tokens, "
								  "  updated_at = now()",
								  5, progress_types);
	return S.progress;
}

/*
 * On the coordinator: sum every node's progress into swarm.jobs, complete
 * the jobs that have ended and announce them (swarm._conduct()).  Returns
 * how many jobs changed.
 */
int
shards_conduct(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute("SELECT swarm._conduct()", false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_swarm: swarm._conduct() failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt32(d);
}
