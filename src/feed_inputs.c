/*-------------------------------------------------------------------------
 *
 * feed_inputs.c
 *		What a simulation step's viewers bring to their feeds, read into
 *		memory for swarm._assemble_feeds() (feeds.c): the viewers, each
 *		one's ties, communities and mutes; and the readers the window's
 *		posts share (feed_window.c reads those).
 *
 * The viewers' friendships are read by the list of viewers (so that a
 * distributed table is read shard by shard too), and the rest from the
 * temporary tables swarm._simulate_actions_step()
 * (src/sql/functions/70_actions.sql) made in its transaction:
 *	 swarm_step_active	  the step's active agents (id, interest of the step)
 *	 swarm_step_follows	  (viewer, target_id, step): whom each viewer follows
 *						  in this simulation
 *	 swarm_step_members	  (viewer, community_id): each viewer's communities
 *	 swarm_step_mutes	  (viewer, author) for each author a viewer muted
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "feeds.h"
#include "swarm.h"

/* Column `col` (1-based) of row `row` of the last SPI result, as an int8. */
int64
feeds_col_int8(int row, int col, bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull));
}

/* The same column as text (palloc'd in the current context; NULL for NULL). */
char *
feeds_col_cstring(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

/*
 * SPI's calls that run the executor return in the SPI procedure's memory
 * context, whatever was current before; the readers here go on allocating
 * in the caller's context (a step built in parts keeps what it read past
 * SPI_finish(): feeds.c), so each such call is made through these.
 */

/* Run a read-only query of no parameters; its rows are SPI_tuptable's. */
void
feeds_run(const char *sql)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_swarm: reading the step's candidates failed: %s", sql);
	MemoryContextSwitchTo(cxt);
}

/* The next rows of `portal` into SPI_tuptable; returns how many. */
uint64
feeds_fetch(Portal portal)
{
	MemoryContext cxt = CurrentMemoryContext;

	SPI_cursor_fetch(portal, true, FEED_FETCH_ROWS);
	MemoryContextSwitchTo(cxt);
	return SPI_processed;
}

/* Ascending int64s, for qsort. */
int
feeds_compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

/* whether the swarm is distributed (Citus), for the call under way */
static bool feeds_distributed = false;

/* Find out whether the swarm is distributed (feeds_distributed). */
void
feeds_check_distributed(void)
{
	bool		isnull;

	feeds_run("SELECT swarm._is_distributed()");
	feeds_distributed = SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
}

/*
 * The agents `ids` (a list: an id given twice is read once), read by it:
 * agent id -> name and interests (FeedAuthor); the posts' authors, and whom
 * viewers follow.
 */
HTAB *
feeds_read_agents(const int64 *ids, int n)
{
	HASHCTL		ctl;
	HTAB	   *authors;
	SPIPlanPtr	plan;
	Portal		portal;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(FeedAuthor);
	ctl.hcxt = CurrentMemoryContext;
	authors = hash_create("pg_swarm feed agents", Max(n, 16), &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	portal = feeds_open_list_cursor("SELECT x.id, x.name, x.persona -> 'interests' FROM swarm.agents x WHERE x.id = ANY ($1)",
							  swarm_int8_array(ids, n), (Datum) 0, &plan);
	for (;;)
	{
		if (feeds_fetch(portal) == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		id = feeds_col_int8(i, 1, &isnull);
			FeedAuthor *au;
			Datum		d;

			if (isnull)
				continue;
			au = hash_search(authors, &id, HASH_ENTER, NULL);
			au->name = feeds_col_cstring(i, 2);
			d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull);
			/* (a copy: the rows are freed batch by batch) */
			au->interests = isnull ? NULL : DatumGetJsonbPCopy(d);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	return authors;
}

/*
 * A cursor over `sql` whose $1 and $2 are the job and the step (planned with
 * them as constants: a distributed query cannot keep parameters).
 */
Portal
feeds_open_step_cursor(const char *sql, int64 job, int32 step)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(job), Int32GetDatum(step)};
	MemoryContext cxt = CurrentMemoryContext;
	Portal		portal = SPI_cursor_open_with_args(NULL, sql, 2, types, values, NULL, true, 0);

	MemoryContextSwitchTo(cxt);

	if (portal == NULL)
		elog(ERROR, "pg_swarm: reading the step's posts failed: %s", sql);
	return portal;
}

/*
 * Every row of `portal`, (bigint, bigint), into *a and *b (rows with a NULL
 * left out), the portal closed; returns how many.
 */
int
feeds_fetch_int8_pairs(Portal portal, int64 **a, int64 **b)
{
	int			n = 0,
				cap = 1024;

	*a = palloc(sizeof(int64) * cap);
	*b = palloc(sizeof(int64) * cap);
	for (;;)
	{
		if (feeds_fetch(portal) == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		a_null,
						b_null;
			int64		x = feeds_col_int8(i, 1, &a_null);
			int64		y = feeds_col_int8(i, 2, &b_null);

			if (a_null || b_null)
				continue;
			if (n == cap)
			{
				cap *= 2;
				*a = repalloc_huge(*a, sizeof(int64) * cap);
				*b = repalloc_huge(*b, sizeof(int64) * cap);
			}
			(*a)[n] = x;
			(*b)[n] = y;
			n++;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	return n;
}

/*
 * The rows of `sql`, (bigint, text), into *ids and *texts (palloc'd in the
 * current context); returns how many.
 */
int
feeds_read_id_texts(const char *sql, int64 **ids, char ***texts)
{
	int			n;

	feeds_run(sql);
	n = (int) SPI_processed;
	*ids = palloc(sizeof(int64) * Max(n, 1));
	*texts = palloc(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		(*ids)[i] = feeds_col_int8(i, 1, &isnull);
		(*texts)[i] = feeds_col_cstring(i, 2);
	}
	SPI_freetuptable(SPI_tuptable);
	return n;
}

/* The viewers, ascending, each with its interest of the step. */
static void
read_viewers(FeedInputs *in)
{
	in->nviewers = feeds_read_id_texts("SELECT a.id, a.interest FROM swarm_step_active a ORDER BY a.id",
									   &in->viewer_ids, &in->viewer_interest);
}

/* The index of `key` in `sorted` (ascending, n entries), -1 when it is not there. */
int
feeds_find_int64(const int64 *sorted, int n, int64 key)
{
	int			lo = 0,
				hi = n - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (sorted[mid] == key)
			return mid;
		if (sorted[mid] < key)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* The index of viewer `id` among the sorted viewers, -1 when it is not one. */
static int
viewer_index(const FeedInputs *in, int64 id)
{
	return feeds_find_int64(in->viewer_ids, in->nviewers, id);
}

/*
 * A cursor over `sql`, whose $1 and $2, when `list` and `list2` are not 0,
 * are int8[]s of agent ids; *plan is to be freed after it.  On one server the plan is
 * generic (the caller's SET plan_cache_mode undone for it): planned for the
 * list's actual length, a list of 100,000 agents makes the planner scan all
 * 10,000,000 friendships (1 s) rather than probe the index (0.3 s).  Citus
 * cannot plan a distributed query with a parameter left in it; there the
 * list is planned as a constant, each shard's share of it.
 */
Portal
feeds_open_list_cursor(const char *sql, Datum list, Datum list2, SPIPlanPtr *plan)
{
	Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Datum		args[2] = {list, list2};
	int			nargs = list2 ? 2 : list ? 1 : 0;
	int			nest_level = NewGUCNestLevel();
	MemoryContext cxt = CurrentMemoryContext;
	Portal		portal;

	if (!feeds_distributed)
		(void) set_config_option("plan_cache_mode", "force_generic_plan", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	*plan = SPI_prepare_cursor(sql, nargs, argtypes, 0);
	if (*plan == NULL)
		elog(ERROR, "pg_swarm: preparing \"%s\" failed: %s", sql, SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, *plan, args, NULL, true);
	AtEOXact_GUC(true, nest_level);
	MemoryContextSwitchTo(cxt);
	return portal;
}

/* A growing array of ViewerPair. */
typedef struct PairArray
{
	ViewerPair *rows;
	int64		n;
	int64		cap;
} PairArray;

/*
 * Append the rows of `sql` (viewer, other[, weight]; `weight` when the
 * query has no third column) to `pairs`, read through a cursor; rows of
 * agents that are not viewers are passed over.  `arg` and `arg2`, when not
 * 0, are the query's $1 and $2, int8[]s.
 */
static void
read_pairs(const FeedInputs *in, PairArray *pairs, const char *sql, Datum arg, Datum arg2, double weight)
{
	SPIPlanPtr	plan;
	Portal		portal = feeds_open_list_cursor(sql, arg, arg2, &plan);
	int64		last_viewer = PG_INT64_MIN;
	int			last_index = -1;

	for (;;)
	{
		if (feeds_fetch(portal) == 0)
			break;
		if (pairs->n + (int64) SPI_processed > pairs->cap)
		{
			pairs->cap = Max(pairs->cap * 2, pairs->n + (int64) SPI_processed);
			if (pairs->rows == NULL)
				pairs->rows = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(ViewerPair) * pairs->cap);
			else
				pairs->rows = repalloc_huge(pairs->rows, sizeof(ViewerPair) * pairs->cap);
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull,
						other_null;
			int64		viewer = feeds_col_int8(i, 1, &isnull);
			int64		other = feeds_col_int8(i, 2, &other_null);
			int			index;
			ViewerPair *row;

			if (isnull || other_null)
				continue;
			/* (an index scan returns a viewer's rows together: one search for them) */
			if (viewer != last_viewer)
			{
				last_viewer = viewer;
				last_index = viewer_index(in, viewer);
			}
			if ((index = last_index) < 0)
				continue;
			row = &pairs->rows[pairs->n++];
			row->viewer = index;
			row->other = other;
			row->weight = weight;
			if (SPI_tuptable->tupdesc->natts >= 3)
			{
				Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull);

				row->weight = isnull ? 0 : DatumGetFloat8(d);
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
}

/* Group `pairs` by viewer (a counting sort: the order within a viewer is kept). */
static ByViewer
group_by_viewer(const FeedInputs *in, PairArray *pairs)
{
	ByViewer	g;
	int		   *next = palloc0(sizeof(int) * (in->nviewers + 1));

	g.start = palloc0(sizeof(int) * (in->nviewers + 1));
	g.rows = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(ViewerPair) * Max(pairs->n, 1));
	for (int64 i = 0; i < pairs->n; i++)
		g.start[pairs->rows[i].viewer + 1]++;
	for (int v = 0; v < in->nviewers; v++)
		g.start[v + 1] += g.start[v];
	memcpy(next, g.start, sizeof(int) * (in->nviewers + 1));
	for (int64 i = 0; i < pairs->n; i++)
		g.rows[next[pairs->rows[i].viewer]++] = pairs->rows[i];
	if (pairs->rows)
		pfree(pairs->rows);
	pfree(next);
	return g;
}

/*
 * The rows of `sql` over a per-viewer temporary table, (viewer, other[,
 * weight as double precision]), grouped by viewer.
 */
ByViewer
feeds_read_by_viewer(const FeedInputs *in, const char *sql)
{
	PairArray	pairs = {0};

	read_pairs(in, &pairs, sql, (Datum) 0, (Datum) 0, 0);
	return group_by_viewer(in, &pairs);
}

/*
 * Each viewer's ties: its friendships (weight: their strength), read by the
 * list of viewers, and whom it follows in this simulation (1).  (Filtering
 * the friendships by the list of the posts' authors too would make the index
 * scan walk every pair of the two lists.)
 */
static void
read_ties(FeedInputs *in)
{
	PairArray	pairs = {0};
	Datum		viewers = swarm_int8_array(in->viewer_ids, in->nviewers);

	read_pairs(in, &pairs,
			   "SELECT f.agent_id, f.friend_id, f.strength::double precision "
			   "FROM swarm.friendships f WHERE f.agent_id = ANY ($1)",
			   viewers, (Datum) 0, 0);
	read_pairs(in, &pairs, "SELECT f.viewer, f.target_id FROM swarm_step_follows f", (Datum) 0, (Datum) 0, 1.0);
	in->ties = group_by_viewer(in, &pairs);
	pfree(DatumGetPointer(viewers));
}

/*
 * Read the viewers (the temporary tables' agents: a whole step's, or a
 * part's) into `in`, in the current memory context (within SPI): each with
 * its communities, and, when the feeds are not empty, its ties and mutes.
 */
void
feeds_read_viewers(FeedInputs *in, int feed_size)
{
	feeds_check_distributed();
	read_viewers(in);
	in->members = feeds_read_by_viewer(in, "SELECT m.viewer, m.community_id FROM swarm_step_members m");
	if (feed_size > 0)
	{
		read_ties(in);
		in->mutes = feeds_read_by_viewer(in, "SELECT m.viewer, m.author FROM swarm_step_mutes m");
	}
}
