/*
 * graph_io.c
 *		Reads swarm.agents, swarm.friendships and the homophily groups into
 *		memory for the friendship models and community detection.
 *
 * What this file owns
 * -------------------
 * Every table read of the graph code, and the mapping from agent ids to
 * agent indexes.  Agents are read into a sorted int64 array; from then on an
 * agent is its index in that array (uint32), so an edge or a membership
 * costs 8 bytes.  Friendships come back as a CSR over those indexes, the
 * homophily groups as two CSRs (csr.h).  Rows that name ids which are not
 * agents are skipped.  Nothing here writes, and nothing is shared between
 * backends: the only locks are the AccessShare locks of the scans.
 *
 * One way of reading: heap scans through the table AM
 * ---------------------------------------------------
 * Every table is read with table_beginscan() under the active snapshot,
 * taking only the columns needed with slot_getattr().  Why not SPI cursors:
 * the graph code reads every row of tables with millions of rows (1M agents,
 * 10M friendship rows at the documented scale) and keeps no row, only one
 * or two integers from it (or a persona's interests).  SPI would run each
 * row through the executor and copy it into a tuple table, per row, for
 * nothing a scan does not already give, and the scan needs no query text, no
 * plan and no SPI connection.  What SPI would add is done here explicitly:
 *  - privileges: SELECT on the whole table is checked for the current user
 *	  before it is opened (readable_table), so a caller without it gets the
 *	  usual "permission denied for table ..." error (column privileges alone
 *	  are not enough);
 *  - the homophily groups are keyed as the SQL 'i:' || left(interest, 100)
 *	  over jsonb_array_elements_text(persona->'interests') and
 *	  'c:' || community_id would key them (they were such an SPI query once):
 *	  persona_interest_groups() computes the same keys, in the same order,
 *	  from the jsonb itself, so the draws made from them are unchanged.
 * The tables have no row-level security (src/sql/functions/20_social.sql), which a
 * heap scan would not apply.  Scan order is the heap's, as a sequential scan
 * in SQL would give; the group order depends on it, as it did before.
 *
 * Memory
 * ------
 * All results are palloc'd in the caller's current memory context, with huge
 * allocations allowed.  Pairs are collected in a doubling array (8 B/pair)
 * and turned into a CSR (8 B/node + 4 B/pair), then the pairs are freed.  A
 * persona is detoasted into a context reset after each agent.  For 1,000,000
 * agents and 5,000,000 friendships (10,000,000 rows): ids 8 MB, friendship
 * pairs 80 MB while the CSR (48 MB) is filled.
 *
 * Errors: undefined_table if a table is missing, insufficient_privilege
 * without SELECT, program_limit_exceeded beyond GRAPH_MAX_AGENTS agents.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "graph_io.h"

/* A group's key: "i:<interest>" or "c:<community id>", NUL-terminated. */
#define GROUP_KEY_SIZE (NAMEDATALEN * 2)

typedef struct GroupKey
{
	char		key[GROUP_KEY_SIZE];
	uint32		id;
} GroupKey;

/*
 * A heap scan of one swarm table, reading one or two columns by name; or,
 * when the table is distributed with Citus (its rows are in shards on other
 * nodes, the table here an empty shell), an SPI cursor over the same columns
 * in the order of the table's key.
 */
typedef struct TableReader
{
	Relation	rel;
	TableScanDesc scan;
	TupleTableSlot *slot;
	AttrNumber	att[2];
	uint64		rows;
	/* distributed: the cursor, its current batch and row in it */
	Portal		portal;
	SPITupleTable *batch;
	uint64		nbatch;
	uint64		pos;
} TableReader;

#define CURSOR_BATCH 10000

/* (source, target) pairs in a doubling array, as csr_from_pairs() takes them. */
typedef struct PairBuffer
{
	uint32	   *pairs;
	uint64		n;
	uint64		cap;
} PairBuffer;

/* ------------------------------------------------------------------------
 * Scans
 * ------------------------------------------------------------------------ */

/* The oid of swarm.<relname>, after checking that the user may SELECT it. */
static Oid
readable_table(const char *relname)
{
	Oid			nsp = get_namespace_oid("swarm", false);
	Oid			relid = get_relname_relid(relname, nsp);
	AclResult	aclresult;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"swarm.%s\" does not exist", relname)));
	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, get_rel_name(relid));
	return relid;
}

/*
 * Is swarm.<relid> a Citus table (distributed or reference)?  Asked through
 * SPI, so that a server without Citus needs nothing of it.
 */
static bool
is_citus_table(Oid relid)
{
	Datum		arg = ObjectIdGetDatum(relid);
	Oid			argtype = OIDOID;
	bool		found = false;

	if (!OidIsValid(get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE)))
		return false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1",
							  1, &argtype, &arg, NULL, true, 1) == SPI_OK_SELECT)
		found = SPI_processed > 0;
	SPI_finish();
	return found;
}

/*
 * Distributed: a cursor over the columns, in key order (agent id first), as
 * a scan of a freshly built table on one server reads them.  SPI stays
 * connected until reader_close(); the caller's memory context stays current.
 */
static void
reader_open_cursor(TableReader *tr, const char *relname, const char *col1, const char *col2)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *sql;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(caller);
	sql = psprintf("SELECT %s%s%s FROM swarm.%s ORDER BY %s",
				   quote_identifier(col1), col2 ? ", " : "", col2 ? quote_identifier(col2) : "",
				   quote_identifier(relname),
				   strcmp(relname, "friendships") == 0 ? "agent_id, friend_id" :
				   strcmp(relname, "community_members") == 0 ? "community_id, agent_id" : "id");
	tr->portal = SPI_cursor_open_with_args(NULL, sql, 0, NULL, NULL, NULL, true, 0);
	MemoryContextSwitchTo(caller);
	tr->batch = NULL;
	tr->nbatch = tr->pos = 0;
	tr->rows = 0;
}

/* Opens a scan of swarm.<relname> reading col1 and, unless NULL, col2. */
static void
reader_open(TableReader *tr, const char *relname, const char *col1, const char *col2)
{
	Oid			relid = readable_table(relname);

	tr->portal = NULL;
	if (is_citus_table(relid))
	{
		reader_open_cursor(tr, relname, col1, col2);
		return;
	}
	tr->rel = table_open(relid, AccessShareLock);
	tr->att[0] = get_attnum(relid, col1);
	tr->att[1] = col2 ? get_attnum(relid, col2) : InvalidAttrNumber;
	tr->scan = table_beginscan(tr->rel, GetActiveSnapshot(), 0, NULL);
	tr->slot = table_slot_create(tr->rel, NULL);
	tr->rows = 0;
}

/* Moves to the next row; false at the end. */
static bool
reader_next(TableReader *tr)
{
	if (tr->portal != NULL)
	{
		if (++tr->pos >= tr->nbatch)
		{
			MemoryContext caller = CurrentMemoryContext;

			if (tr->batch)
				SPI_freetuptable(tr->batch);
			SPI_cursor_fetch(tr->portal, true, CURSOR_BATCH);
			MemoryContextSwitchTo(caller);
			tr->batch = SPI_tuptable;
			tr->nbatch = SPI_processed;
			tr->pos = 0;
			if (tr->nbatch == 0)
				return false;
			CHECK_FOR_INTERRUPTS();
		}
		tr->rows++;
		return true;
	}
	if (!table_scan_getnextslot(tr->scan, ForwardScanDirection, tr->slot))
		return false;
	if ((++tr->rows & 0xffff) == 0)
		CHECK_FOR_INTERRUPTS();
	return true;
}

/* Column i (0 or 1) of the current row. */
static inline Datum
reader_column(TableReader *tr, int i, bool *isnull)
{
	if (tr->portal != NULL)
		return SPI_getbinval(tr->batch->vals[tr->pos], tr->batch->tupdesc, i + 1, isnull);
	return slot_getattr(tr->slot, tr->att[i], isnull);
}

static void
reader_close(TableReader *tr)
{
	if (tr->portal != NULL)
	{
		MemoryContext caller = CurrentMemoryContext;

		SPI_cursor_close(tr->portal);
		SPI_finish();
		MemoryContextSwitchTo(caller);
		tr->portal = NULL;
		return;
	}
	ExecDropSingleTupleTableSlot(tr->slot);
	table_endscan(tr->scan);
	table_close(tr->rel, AccessShareLock);
}

/* ------------------------------------------------------------------------
 * Pairs
 * ------------------------------------------------------------------------ */

static void
pairs_init(PairBuffer *pb)
{
	pb->cap = 1024;
	pb->n = 0;
	pb->pairs = palloc_extended(pb->cap * 2 * sizeof(uint32), MCXT_ALLOC_HUGE);
}

static inline void
pairs_add(PairBuffer *pb, uint32 source, uint32 target)
{
	if (pb->n == pb->cap)
	{
		pb->cap *= 2;
		pb->pairs = repalloc_huge(pb->pairs, pb->cap * 2 * sizeof(uint32));
	}
	pb->pairs[2 * pb->n] = source;
	pb->pairs[2 * pb->n + 1] = target;
	pb->n++;
}

/* ------------------------------------------------------------------------
 * Agents
 * ------------------------------------------------------------------------ */

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/*
 * Reads every swarm.agents.id into ga->ids, sorted.  ereports when there are
 * more agents than a uint32 index holds.
 */
void
graph_io_load_agents(GraphAgents *ga)
{
	TableReader tr;
	uint64		cap = 1024;
	uint64		n = 0;
	bool		sorted = true;

	reader_open(&tr, "agents", "id", NULL);
	ga->ids = palloc_extended(cap * sizeof(int64), MCXT_ALLOC_HUGE);
	while (reader_next(&tr))
	{
		bool		isnull;
		int64		id = DatumGetInt64(reader_column(&tr, 0, &isnull));

		if (isnull)
			continue;
		if (n == cap)
		{
			cap *= 2;
			ga->ids = repalloc_huge(ga->ids, cap * sizeof(int64));
		}
		if (n > 0 && ga->ids[n - 1] > id)
			sorted = false;
		ga->ids[n++] = id;
		if (n > GRAPH_MAX_AGENTS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many agents for the friendship graph"),
					 errdetail("The graph holds at most %lld agents.", (long long) GRAPH_MAX_AGENTS)));
	}
	reader_close(&tr);

	if (!sorted)
		qsort(ga->ids, n, sizeof(int64), cmp_int64);
	ga->n = (uint32) n;
	ga->dense = n == 0 || (ga->ids[n - 1] - ga->ids[0] == (int64) n - 1);
}

/* Index of agent id, or -1 when it is not an agent. */
int64
graph_io_agent_index(const GraphAgents *ga, int64 id)
{
	int64		lo = 0,
				hi = (int64) ga->n - 1;

	if (ga->n == 0)
		return -1;
	if (ga->dense)
		return (id < ga->ids[0] || id > ga->ids[ga->n - 1]) ? -1 : id - ga->ids[0];
	while (lo <= hi)
	{
		int64		mid = (lo + hi) / 2;

		if (ga->ids[mid] == id)
			return mid;
		if (ga->ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* Index of the agent in column i of the current row; -1 if NULL or unknown. */
static int64
reader_agent(TableReader *tr, int i, const GraphAgents *ga)
{
	bool		isnull;
	Datum		id = reader_column(tr, i, &isnull);

	return isnull ? -1 : graph_io_agent_index(ga, DatumGetInt64(id));
}

/* ------------------------------------------------------------------------
 * Friendships
 * ------------------------------------------------------------------------ */

/*
 * Reads swarm.friendships into a CSR over ga's indexes, each list in the
 * order the rows were read.  Both directions are stored in the table, so
 * each row is one adjacency entry.  Rows naming non-agents are skipped.
 */
void
graph_io_load_friendships(const GraphAgents *ga, SocialCsr *friends)
{
	TableReader tr;
	PairBuffer	pb;

	reader_open(&tr, "friendships", "agent_id", "friend_id");
	pairs_init(&pb);
	while (reader_next(&tr))
	{
		int64		a = reader_agent(&tr, 0, ga);
		int64		f = reader_agent(&tr, 1, ga);

		if (a >= 0 && f >= 0 && a != f)
			pairs_add(&pb, (uint32) a, (uint32) f);
	}
	reader_close(&tr);
	csr_from_pairs(friends, ga->n, pb.pairs, pb.n, 0);
	pfree(pb.pairs);
}

/* ------------------------------------------------------------------------
 * Homophily groups
 * ------------------------------------------------------------------------ */

/* The id of the group named key, a new one the first time it is seen. */
static uint32
group_id(HTAB *keys, GraphGroups *gg, const char *key)
{
	bool		found;
	GroupKey   *entry = hash_search(keys, key, HASH_ENTER, &found);

	if (!found)
		entry->id = gg->ngroups++;
	return entry->id;
}

/*
 * The group of interest s (len bytes), keyed as the SQL reader keyed it:
 * 'i:' || left(s, 100), then cut to GROUP_KEY_SIZE - 1 bytes on a character
 * boundary, as text_to_cstring_buffer() cut it.  The prefix is two
 * single-byte characters, so cutting the whole is cutting s two bytes
 * shorter.
 */
static uint32
interest_group(HTAB *keys, GraphGroups *gg, const char *s, int len)
{
	char		key[GROUP_KEY_SIZE];
	int			keep = pg_mbcharcliplen(s, len, 100);

	if (2 + keep > GROUP_KEY_SIZE - 1)
		keep = pg_mbcliplen(s, keep, GROUP_KEY_SIZE - 3);
	key[0] = 'i';
	key[1] = ':';
	memcpy(key + 2, s, keep);
	key[2 + keep] = '\0';
	return group_id(keys, gg, key);
}

/*
 * Adds a pair (agent, group) for each element of persona->'interests', in
 * array order, when that is an array, as the SQL
 *	 jsonb_array_elements_text(CASE WHEN jsonb_typeof(persona->'interests') =
 *	 'array' THEN persona->'interests' ELSE '[]' END)
 * did: a string is taken as it is, JSON null is skipped (it was SQL NULL),
 * any other element as its JSON text.  Allocates in the current context,
 * which the caller resets per agent.
 */
static void
persona_interest_groups(HTAB *keys, GraphGroups *gg, PairBuffer *pb,
						uint32 agent, Jsonb *persona)
{
	JsonbValue	vbuf;
	JsonbValue *interests;
	JsonbValue	v;
	JsonbIterator *it;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(persona))
		return;
	interests = getKeyJsonValueFromContainer(&persona->root, "interests", strlen("interests"), &vbuf);
	if (interests == NULL || interests->type != jbvBinary ||
		!JsonContainerIsArray(interests->val.binary.data))
		return;
	it = JsonbIteratorInit(interests->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		StringInfoData json;

		if (tok != WJB_ELEM || v.type == jbvNull)
			continue;
		if (v.type == jbvString)
		{
			pairs_add(pb, agent, interest_group(keys, gg, v.val.string.val, v.val.string.len));
			continue;
		}
		initStringInfo(&json);
		(void) JsonbToCString(&json, &JsonbValueToJsonb(&v)->root, 0);
		pairs_add(pb, agent, interest_group(keys, gg, json.data, json.len));
	}
}

/*
 * Reads the homophily groups of every agent: its persona interests, then its
 * community memberships (rows naming non-agents are skipped).  Groups are
 * numbered in the order first seen; pairs are taken in scan order, agents
 * first, so a seed reproduces the lists and the draws made from them.
 */
GraphGroups *
graph_io_load_groups(const GraphAgents *ga)
{
	GraphGroups *gg = palloc0(sizeof(GraphGroups));
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext,
												 "swarm persona interests",
												 ALLOCSET_DEFAULT_SIZES);
	HASHCTL		hctl;
	HTAB	   *keys;
	TableReader agents;
	TableReader members;
	PairBuffer	pb;

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = GROUP_KEY_SIZE;
	hctl.entrysize = sizeof(GroupKey);
	hctl.hcxt = CurrentMemoryContext;
	keys = hash_create("swarm homophily groups", 1024, &hctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	pairs_init(&pb);

	/* both privilege checks before reading anything */
	reader_open(&agents, "agents", "id", "persona");
	reader_open(&members, "community_members", "agent_id", "community_id");

	while (reader_next(&agents))
	{
		int64		agent = reader_agent(&agents, 0, ga);
		bool		isnull;
		Datum		persona = reader_column(&agents, 1, &isnull);
		MemoryContext old;

		if (agent < 0 || isnull)
			continue;
		old = MemoryContextSwitchTo(rowcxt);
		persona_interest_groups(keys, gg, &pb, (uint32) agent, DatumGetJsonbP(persona));
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
	}
	while (reader_next(&members))
	{
		int64		agent = reader_agent(&members, 0, ga);
		bool		isnull;
		Datum		community = reader_column(&members, 1, &isnull);
		char		key[GROUP_KEY_SIZE];

		if (agent < 0 || isnull)
			continue;
		snprintf(key, sizeof(key), "c:" INT64_FORMAT, DatumGetInt64(community));
		pairs_add(&pb, (uint32) agent, group_id(keys, gg, key));
	}
	reader_close(&members);
	reader_close(&agents);
	hash_destroy(keys);
	MemoryContextDelete(rowcxt);

	csr_from_pairs(&gg->by_agent, ga->n, pb.pairs, pb.n, 0);
	csr_from_pairs(&gg->by_group, gg->ngroups, pb.pairs, pb.n, CSR_REVERSED);
	pfree(pb.pairs);
	return gg;
}
