/*-------------------------------------------------------------------------
 *
 * feeds.c
 *		The recommender: each active agent's feed of a simulation step with
 *		actions, assembled in memory (swarm._assemble_feeds()).
 *
 * It reads the posts of step `step`'s window (the job's last three steps:
 * posts, replies, quotes, reposts) and their engagement from swarm.actions,
 * their authors' names, interests and communities, and the viewers'
 * friendships (each by a list of agent ids, so that a distributed table is
 * read shard by shard too), and the temporary tables
 * swarm._simulate_actions_step() (src/sql/functions/70_actions.sql) made in
 * its transaction:
 *	 swarm_step_active	  the step's active agents (id, interest of the step)
 *	 swarm_step_follows	  (viewer, target_id): whom each viewer follows in
 *						  this simulation
 *	 swarm_step_members	  (viewer, community_id): each viewer's communities
 *	 swarm_step_mutes	  (viewer, author) for each author a viewer muted
 * and returns (viewer, seen, feed) for every viewer with something to read.
 * Nothing of this is written to a table: the caller inserts the feeds into
 * swarm.requests as they come.
 *
 * A viewer's social candidates are the posts of its friends (score: the
 * tie's strength over the post's age), of whom it follows (1 over age) and
 * of its communities (0.5 over age; a community shows the feed_size hottest
 * posts of its members); a post reached several ways counts once, at its
 * best score.  They are joined here from per-author and per-community
 * lists, never as a table of every (viewer, post) pair: that table (about
 * fifty rows a viewer), its sort and its reading took 3 s of a 100,000-agent
 * step.
 *
 * A viewer's feed mixes three sources, each ranked on its own and
 * interleaved in proportion to their weights (key = rank / weight, smallest
 * first; ties by ord): the social candidates (best score first), the
 * hottest posts sharing its interest of the step, and the hottest posts of
 * all.  Its own posts and those of authors it muted never appear.  Lines
 * are "[post n] name (agent a)[ replied| reposted| quoted a post]: text",
 * kept while their characters (each line's plus a newline) fit feed_chars,
 * the first always.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

/* rows fetched from a cursor at a time */
#define FEED_FETCH_ROWS 10000

/* One post of the last three steps. */
typedef struct FeedPost
{
	int64		id;
	int64		author;
	int			age;			/* steps since it was written */
	const char *line;			/* "name (agent a)[ replied ...]: text" */
	int			line_bytes;
	int			line_chars;		/* characters, as the budget counts them */
} FeedPost;

/* A candidate of one viewer: a post (by ord) and its key. */
typedef struct FeedCandidate
{
	int64		ord;
	double		key;
} FeedCandidate;

/* A social candidate: a post and its score. */
typedef struct SocialEntry
{
	int64		ord;
	double		score;
} SocialEntry;

/* Posts (ords) listed under a key: an author's posts, a community's hottest. */
typedef struct OrdList
{
	int64		key;			/* hash key */
	char		status;			/* (simplehash's) */
	int			n;
	int			cap;
	int64	   *ords;
} OrdList;

/*
 * Tables of OrdList by key: simplehash (open addressing, inlined) rather
 * than dynahash, as a step looks an author up once per tie of every viewer
 * (a million lookups at 100,000 viewers).
 */
static inline uint32
hash_int64_key(int64 key)
{
	return murmurhash32((uint32) key ^ (uint32) ((uint64) key >> 32));
}

#define SH_PREFIX		ordlists
#define SH_ELEMENT_TYPE OrdList
#define SH_KEY_TYPE		int64
#define SH_KEY			key
#define SH_HASH_KEY(tb, k) hash_int64_key(k)
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* An interest and its hottest posts (ords, hottest first). */
typedef struct InterestList
{
	char		name[NAMEDATALEN * 2];	/* hash key */
	int			n;
	int64	   *ords;
} InterestList;

/* A row of a per-viewer table: the viewer's index, another id, a weight. */
typedef struct ViewerPair
{
	int			viewer;			/* index into the sorted viewers */
	int64		other;
	double		weight;
} ViewerPair;

/* A per-viewer table grouped by viewer: rows of viewer v are [start[v], start[v + 1]). */
typedef struct ByViewer
{
	ViewerPair *rows;
	int		   *start;
} ByViewer;

typedef struct FeedInputs
{
	int			npost;			/* posts, by ord - 1 */
	FeedPost   *posts;
	int64	   *hot;			/* the hottest ords, hottest first */
	int			nhot;
	int64	   *by_heat;		/* every ord, hottest first */
	HTAB	   *interests;
	ordlists_hash *by_author;	/* author -> its posts */
	ordlists_hash *by_community;	/* community -> its feed_size hottest posts */
	int64	   *author_ids;		/* the posts' authors, ascending */
	int			nauthors;
	int			nviewers;
	int64	   *viewer_ids;		/* ascending */
	char	  **viewer_interest;
	ByViewer	ties;			/* (viewer, author, weight): friends and follows */
	ByViewer	members;		/* (viewer, community) */
	ByViewer	mutes;			/* (viewer, author) */
} FeedInputs;

static int
compare_social(const void *a, const void *b)
{
	const SocialEntry *x = a;
	const SocialEntry *y = b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->ord < y->ord ? -1 : x->ord > y->ord;
}

static int
compare_candidate(const void *a, const void *b)
{
	const FeedCandidate *x = a;
	const FeedCandidate *y = b;

	if (x->ord != y->ord)
		return x->ord < y->ord ? -1 : 1;
	return x->key < y->key ? -1 : x->key > y->key;
}

static int
compare_key(const void *a, const void *b)
{
	const FeedCandidate *x = a;
	const FeedCandidate *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->ord < y->ord ? -1 : x->ord > y->ord;
}

static int64
col_int8(int row, int col, bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull));
}

static char *
col_cstring(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

static void
run(const char *sql)
{
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_swarm: reading the step's candidates failed: %s", sql);
}

/* Hottest first, then by ord: the order of the interest lists and of the hot list. */
static const double *sort_hot;

static int
compare_hot(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	if (sort_hot[x - 1] != sort_hot[y - 1])
		return sort_hot[x - 1] > sort_hot[y - 1] ? -1 : 1;
	return x < y ? -1 : x > y;
}

static ordlists_hash *
ord_list_table(MemoryContext cxt)
{
	return ordlists_create(cxt, 1024, NULL);
}

/* Append `ord` to the list under `key` (at most `limit` entries; < 0: no limit). */
static void
add_to_list(ordlists_hash *table, int64 key, int64 ord, int limit)
{
	bool		found;
	OrdList    *list = ordlists_insert(table, key, &found);

	if (!found)
	{
		list->n = 0;
		list->cap = limit > 0 ? limit : 4;
		list->ords = palloc(sizeof(int64) * list->cap);
	}
	if (limit >= 0 && list->n >= limit)
		return;
	if (list->n == list->cap)
	{
		list->cap *= 2;
		list->ords = repalloc(list->ords, sizeof(int64) * list->cap);
	}
	list->ords[list->n++] = ord;
}

/* Append `ord` to the list of `interest` when it has fewer than `limit`. */
static void
add_to_interest(FeedInputs *in, const char *interest, int len, int64 ord, int limit)
{
	char		key[NAMEDATALEN * 2];
	InterestList *list;
	bool		found;

	len = Min(len, (int) sizeof(key) - 1);
	memcpy(key, interest, len);
	key[len] = '\0';
	list = hash_search(in->interests, key, HASH_ENTER, &found);
	if (!found)
	{
		list->n = 0;
		list->ords = palloc(sizeof(int64) * Max(limit, 1));
	}
	if (list->n < limit)
		list->ords[list->n++] = ord;
}

/* An author of a recent post: its name and interests. */
typedef struct FeedAuthor
{
	int64		id;				/* hash key */
	char	   *name;
	Jsonb	   *interests;
} FeedAuthor;

/* A post's engagement within the window. */
typedef struct FeedEngagement
{
	int64		post_id;		/* hash key */
	int64		engagement;
} FeedEngagement;

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

static Portal open_list_cursor(const char *sql, Datum list, Datum list2, SPIPlanPtr *plan);

/* whether the swarm is distributed (Citus), for the call under way */
static bool feeds_distributed = false;

/* An int8[] of `n` ids. */
static Datum
id_array(const int64 *ids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	ArrayType  *a;

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(ids[i]);
	a = construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	pfree(d);
	return PointerGetDatum(a);
}

/*
 * The authors of the recent posts (`ids`, distinct), read by their list:
 * author id -> name and interests.
 */
static HTAB *
read_authors(const int64 *ids, int n)
{
	HASHCTL		ctl;
	HTAB	   *authors;
	SPIPlanPtr	plan;
	Portal		portal;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(FeedAuthor);
	ctl.hcxt = CurrentMemoryContext;
	authors = hash_create("pg_swarm feed authors", Max(n, 16), &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	portal = open_list_cursor("SELECT x.id, x.name, x.persona -> 'interests' FROM swarm.agents x WHERE x.id = ANY ($1)",
							  id_array(ids, n), (Datum) 0, &plan);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, FEED_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		id = col_int8(i, 1, &isnull);
			FeedAuthor *au;
			Datum		d;

			if (isnull)
				continue;
			au = hash_search(authors, &id, HASH_ENTER, NULL);
			au->name = col_cstring(i, 2);
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
static Portal
open_step_cursor(const char *sql, int64 job, int32 step)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(job), Int32GetDatum(step)};
	Portal		portal = SPI_cursor_open_with_args(NULL, sql, 2, types, values, NULL, true, 0);

	if (portal == NULL)
		elog(ERROR, "pg_swarm: reading the step's posts failed: %s", sql);
	return portal;
}

/*
 * The engagement of the posts of the window (the job's steps step - 3 to
 * step - 1): post id -> likes - dislikes + replies + 2 x reposts and quotes.
 */
static HTAB *
read_engagement(int64 job, int32 step)
{
	HASHCTL		ctl;
	HTAB	   *engagement;
	Portal		portal;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(FeedEngagement);
	ctl.hcxt = CurrentMemoryContext;
	engagement = hash_create("pg_swarm feed engagement", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	portal = open_step_cursor("SELECT x.post_id, "
							  "sum(CASE x.kind WHEN 'like' THEN 1 WHEN 'dislike' THEN -1 WHEN 'reply' THEN 1 ELSE 2 END) "
							  "FROM swarm.actions x "
							  "WHERE x.job_id = $1 AND x.step >= $2 - 3 AND x.step < $2 AND x.valid "
							  "AND x.kind IN ('like', 'dislike', 'reply', 'quote', 'repost') "
							  "GROUP BY x.post_id", job, step);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, FEED_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull,
						e_null;
			int64		id = col_int8(i, 1, &isnull);
			int64		e = col_int8(i, 2, &e_null);

			if (!isnull && !e_null)
				((FeedEngagement *) hash_search(engagement, &id, HASH_ENTER, NULL))->engagement = e;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	return engagement;
}

/* A post of the window as read, before it has its ord. */
typedef struct RawPost
{
	int64		id;
	int64		author;
	int32		step;
	char	   *kind;
	char	   *body;
} RawPost;

/*
 * Newest step first, then the highest author: a post's ord, the tie-breaker
 * of every ranking, never its id (ids follow the order results were stored
 * in, which timing decides).  An agent writes at most one post a step.
 */
static int
compare_raw_post(const void *a, const void *b)
{
	const RawPost *x = a;
	const RawPost *y = b;

	if (x->step != y->step)
		return x->step > y->step ? -1 : 1;
	if (x->author != y->author)
		return x->author > y->author ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* The posts of the window (posts, replies, quotes, reposts), each with its ord - 1 as its index. */
static RawPost *
read_raw_posts(int64 job, int32 step, int *count)
{
	int			n = 0,
				cap = 1024;
	RawPost    *raw = palloc(sizeof(RawPost) * cap);
	Portal		portal = open_step_cursor("SELECT r.id, r.agent_id, r.step, r.kind, left(coalesce(r.content, ''), 200) "
										  "FROM swarm.actions r "
										  "WHERE r.job_id = $1 AND r.step >= $2 - 3 AND r.step < $2 AND r.valid "
										  "AND r.kind IN ('post', 'reply', 'quote', 'repost')", job, step);

	for (;;)
	{
		SPI_cursor_fetch(portal, true, FEED_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			RawPost    *r;

			if (n == cap)
				raw = repalloc_huge(raw, sizeof(RawPost) * (cap *= 2));
			r = &raw[n++];
			r->id = col_int8(i, 1, &isnull);
			r->author = col_int8(i, 2, &isnull);
			r->step = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
			r->kind = col_cstring(i, 4);
			r->body = col_cstring(i, 5);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	qsort(raw, n, sizeof(RawPost), compare_raw_post);
	*count = n;
	return raw;
}

/*
 * Read the recent posts into `in` (in the current memory context), with
 * their authors and engagement: each post by its ord, the hot list, each
 * interest's hottest posts and each author's posts.  A post's heat is
 * (1 + engagement) / (age + 1)^1.5, in double precision.
 */
static void
read_posts(FeedInputs *in, int64 job, int32 step, int feed_size)
{
	HASHCTL		ctl;
	HTAB	   *engagement = read_engagement(job, step);
	HTAB	   *authors;
	double	   *hot;
	Jsonb	  **interests;
	int64	   *by_heat;
	RawPost    *raw;
	int64	   *author_ids;
	int			nauthors = 0;

	raw = read_raw_posts(job, step, &in->npost);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 2;
	ctl.entrysize = sizeof(InterestList);
	ctl.hcxt = CurrentMemoryContext;
	in->interests = hash_create("pg_swarm feed interests", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	in->by_author = ord_list_table(CurrentMemoryContext);
	in->posts = palloc0(sizeof(FeedPost) * Max(in->npost, 1));
	hot = palloc(sizeof(double) * Max(in->npost, 1));
	interests = palloc0(sizeof(Jsonb *) * Max(in->npost, 1));
	by_heat = palloc(sizeof(int64) * Max(in->npost, 1));
	author_ids = palloc(sizeof(int64) * Max(in->npost, 1));

	for (int i = 0; i < in->npost; i++)
	{
		FeedPost   *p = &in->posts[i];
		FeedEngagement *e;

		p->id = raw[i].id;
		p->author = raw[i].author;
		p->age = step - raw[i].step;
		if (p->age < 1)
			elog(ERROR, "pg_swarm: post age %d out of range", p->age);
		e = hash_search(engagement, &p->id, HASH_FIND, NULL);
		hot[i] = (double) (1 + (e ? e->engagement : 0)) / pow((double) (p->age + 1), 1.5);
		author_ids[i] = p->author;
		by_heat[i] = i + 1;
	}

	/* the authors, each once */
	qsort(author_ids, in->npost, sizeof(int64), compare_int64);
	for (int i = 0; i < in->npost; i++)
		if (nauthors == 0 || author_ids[nauthors - 1] != author_ids[i])
			author_ids[nauthors++] = author_ids[i];
	authors = read_authors(author_ids, nauthors);
	in->author_ids = author_ids;
	in->nauthors = nauthors;

	for (int64 ord = 1; ord <= in->npost; ord++)
	{
		FeedPost   *p = &in->posts[ord - 1];
		FeedAuthor *au = hash_search(authors, &p->author, HASH_FIND, NULL);
		const char *kind = raw[ord - 1].kind;

		/* the line after its "[post n] ", made once for every viewer */
		p->line = psprintf("%s (agent " INT64_FORMAT ")%s: %s",
						   au && au->name ? au->name : "", p->author,
						   kind == NULL ? "" :
						   strcmp(kind, "repost") == 0 ? " reposted" :
						   strcmp(kind, "reply") == 0 ? " replied" :
						   strcmp(kind, "quote") == 0 ? " quoted a post" : "",
						   raw[ord - 1].body ? raw[ord - 1].body : "");
		p->line_bytes = strlen(p->line);
		p->line_chars = pg_mbstrlen_with_len(p->line, p->line_bytes);
		interests[ord - 1] = au ? au->interests : NULL;
		add_to_list(in->by_author, p->author, ord, -1);
	}

	sort_hot = hot;
	qsort(by_heat, in->npost, sizeof(int64), compare_hot);
	in->nhot = Min(in->npost, feed_size + 2);
	in->hot = by_heat;
	in->by_heat = by_heat;

	/* the hottest first: each interest keeps its first feed_size posts */
	for (int i = 0; i < in->npost; i++)
	{
		int64		ord = by_heat[i];
		Jsonb	   *j = interests[ord - 1];
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;

		if (j == NULL || !JB_ROOT_IS_ARRAY(j))
			continue;
		it = JsonbIteratorInit(&j->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_ELEM && v.type == jbvString)
				add_to_interest(in, v.val.string.val, v.val.string.len, ord, feed_size);
	}
}

/* The viewers, ascending, each with its interest of the step. */
static void
read_viewers(FeedInputs *in)
{
	run("SELECT a.id, a.interest FROM swarm_step_active a ORDER BY a.id");
	in->nviewers = (int) SPI_processed;
	in->viewer_ids = palloc(sizeof(int64) * Max(in->nviewers, 1));
	in->viewer_interest = palloc(sizeof(char *) * Max(in->nviewers, 1));
	for (int v = 0; v < in->nviewers; v++)
	{
		bool		isnull;

		in->viewer_ids[v] = col_int8(v, 1, &isnull);
		in->viewer_interest[v] = col_cstring(v, 2);
	}
	SPI_freetuptable(SPI_tuptable);
}

/* The index of viewer `id` among the sorted viewers, -1 when it is not one. */
static int
viewer_index(const FeedInputs *in, int64 id)
{
	int			lo = 0,
				hi = in->nviewers - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (in->viewer_ids[mid] == id)
			return mid;
		if (in->viewer_ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
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
static Portal
open_list_cursor(const char *sql, Datum list, Datum list2, SPIPlanPtr *plan)
{
	Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Datum		args[2] = {list, list2};
	int			nargs = list2 ? 2 : list ? 1 : 0;
	int			nest_level = NewGUCNestLevel();
	Portal		portal;

	if (!feeds_distributed)
		(void) set_config_option("plan_cache_mode", "force_generic_plan", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	*plan = SPI_prepare_cursor(sql, nargs, argtypes, 0);
	if (*plan == NULL)
		elog(ERROR, "pg_swarm: preparing \"%s\" failed: %s", sql, SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, *plan, args, NULL, true);
	AtEOXact_GUC(true, nest_level);
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
read_pairs(FeedInputs *in, PairArray *pairs, const char *sql, Datum arg, Datum arg2, double weight)
{
	SPIPlanPtr	plan;
	Portal		portal = open_list_cursor(sql, arg, arg2, &plan);
	int64		last_viewer = PG_INT64_MIN;
	int			last_index = -1;

	for (;;)
	{
		SPI_cursor_fetch(portal, true, FEED_FETCH_ROWS);
		if (SPI_processed == 0)
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
			int64		viewer = col_int8(i, 1, &isnull);
			int64		other = col_int8(i, 2, &other_null);
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

/* Read one per-viewer temporary table (viewer, other) grouped by viewer. */
static ByViewer
read_by_viewer(FeedInputs *in, const char *sql)
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
	Datum		viewers = id_array(in->viewer_ids, in->nviewers);

	read_pairs(in, &pairs,
			   "SELECT f.agent_id, f.friend_id, f.strength::double precision "
			   "FROM swarm.friendships f WHERE f.agent_id = ANY ($1)",
			   viewers, (Datum) 0, 0);
	read_pairs(in, &pairs, "SELECT f.viewer, f.target_id FROM swarm_step_follows f", (Datum) 0, (Datum) 0, 1.0);
	in->ties = group_by_viewer(in, &pairs);
	pfree(DatumGetPointer(viewers));
}

/*
 * Each community's feed_size hottest posts (hottest first, then by ord): the
 * posts of its members among the authors.
 */
static void
read_community_posts(FeedInputs *in, int feed_size)
{
	ordlists_hash *author_communities = ord_list_table(CurrentMemoryContext);
	SPIPlanPtr	plan;
	Portal		portal = open_list_cursor("SELECT cm.agent_id, cm.community_id FROM swarm.community_members cm "
										  "WHERE cm.agent_id = ANY ($1)",
										  id_array(in->author_ids, in->nauthors), (Datum) 0, &plan);

	for (;;)
	{
		SPI_cursor_fetch(portal, true, FEED_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull,
						community_null;
			int64		author = col_int8(i, 1, &isnull);
			int64		community = col_int8(i, 2, &community_null);

			if (!isnull && !community_null)
				add_to_list(author_communities, author, community, -1);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);

	in->by_community = ord_list_table(CurrentMemoryContext);
	for (int i = 0; i < in->npost; i++)
	{
		int64		ord = in->by_heat[i];
		int64		author = in->posts[ord - 1].author;
		OrdList    *mine = ordlists_lookup(author_communities, author);

		if (mine == NULL)
			continue;
		for (int k = 0; k < mine->n; k++)
			add_to_list(in->by_community, mine->ords[k], ord, feed_size);
	}
}

/* Add source entries (ords in rank order) as candidates with key rank / weight. */
static int
add_ranked(FeedCandidate *out, int n, const int64 *ords, int count, double weight)
{
	for (int r = 0; r < count; r++)
	{
		out[n].ord = ords[r];
		out[n].key = (double) (r + 1) / weight;
		n++;
	}
	return n;
}

static bool
muted(const FeedInputs *in, int v, int64 author)
{
	for (int i = in->mutes.start[v]; i < in->mutes.start[v + 1]; i++)
		if (in->mutes.rows[i].other == author)
			return true;
	return false;
}

/*
 * Viewer v's social candidates, best score first, each post once (at its
 * best score), at most `limit`; returns how many.
 */
static int
social_candidates(const FeedInputs *in, int v, int limit, int64 *out)
{
	int			n = 0,
				cap = 64,
				kept = 0;
	SocialEntry *soc = palloc(sizeof(SocialEntry) * cap);

	for (int t = in->ties.start[v]; t < in->ties.start[v + 1]; t++)
	{
		const ViewerPair *tie = &in->ties.rows[t];
		OrdList    *posts = ordlists_lookup(in->by_author, tie->other);

		if (posts == NULL)
			continue;
		for (int k = 0; k < posts->n; k++)
		{
			if (n == cap)
				soc = repalloc(soc, sizeof(SocialEntry) * (cap *= 2));
			soc[n].ord = posts->ords[k];
			soc[n].score = tie->weight / (double) in->posts[posts->ords[k] - 1].age;
			n++;
		}
	}
	for (int m = in->members.start[v]; m < in->members.start[v + 1]; m++)
	{
		OrdList    *posts = ordlists_lookup(in->by_community, in->members.rows[m].other);

		if (posts == NULL)
			continue;
		for (int k = 0; k < posts->n; k++)
		{
			if (n == cap)
				soc = repalloc(soc, sizeof(SocialEntry) * (cap *= 2));
			soc[n].ord = posts->ords[k];
			soc[n].score = 0.5 / (double) in->posts[posts->ords[k] - 1].age;
			n++;
		}
	}
	if (n > 1)
		qsort(soc, n, sizeof(SocialEntry), compare_social);
	/* the first `limit` distinct posts (a later duplicate has a lower score) */
	for (int k = 0; k < n && kept < limit; k++)
	{
		bool		dup = false;

		for (int j = 0; j < kept; j++)
			if (out[j] == soc[k].ord)
			{
				dup = true;
				break;
			}
		if (!dup)
			out[kept++] = soc[k].ord;
	}
	return kept;
}

/*-------------------------------------------------------------------------
 * What else a prompt offers: whom the agent follows (the last five, to
 * unfollow) and its communities (three) and one more (to join)
 *-------------------------------------------------------------------------
 */

/* A follow of a viewer: whom, since which step. */
typedef struct FollowEntry
{
	int64		target;
	int32		step;
} FollowEntry;

/* A community offered to a viewer. */
typedef struct OfferedCommunity
{
	int64		id;
	bool		member;
} OfferedCommunity;

typedef struct FeedOffers
{
	int			ncommunities;
	int64	   *community_ids;	/* ascending */
	char	  **community_names;
	FollowEntry *follows;		/* each viewer's last five, newest first */
	int		   *follows_start;	/* viewer v's are [start[v], start[v + 1]) */
	HTAB	   *names;			/* followed agent -> name */
	int64		draw_seed;		/* seed + 7 x step: the community drawn to join */
} FeedOffers;

/* Newest follow first, then by target. */
static int
compare_follow(const void *a, const void *b)
{
	const FollowEntry *x = a;
	const FollowEntry *y = b;

	if (x->step != y->step)
		return x->step > y->step ? -1 : 1;
	return x->target < y->target ? -1 : x->target > y->target;
}

/* Members first, then by id. */
static int
compare_offered(const void *a, const void *b)
{
	const OfferedCommunity *x = a;
	const OfferedCommunity *y = b;

	if (x->member != y->member)
		return x->member ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Read what the offers need: every community (id, name), each viewer's five
 * latest follows in this simulation and the names of whom they follow.
 */
static void
read_offers(const FeedInputs *in, FeedOffers *of, int64 seed, int32 step)
{
	HASHCTL		ctl;
	int		   *count = palloc0(sizeof(int) * (in->nviewers + 1));
	FollowEntry *all;
	int64	   *targets;
	int			ntargets = 0;
	int			nall;
	SPIPlanPtr	plan;
	Portal		portal;

	if (pg_add_s64_overflow(seed, (int64) 7 * step, &of->draw_seed))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("bigint out of range")));

	run("SELECT c.id, c.name FROM swarm.communities c ORDER BY c.id");
	of->ncommunities = (int) SPI_processed;
	of->community_ids = palloc(sizeof(int64) * Max(of->ncommunities, 1));
	of->community_names = palloc(sizeof(char *) * Max(of->ncommunities, 1));
	for (int i = 0; i < of->ncommunities; i++)
	{
		bool		isnull;

		of->community_ids[i] = col_int8(i, 1, &isnull);
		of->community_names[i] = col_cstring(i, 2);
	}
	SPI_freetuptable(SPI_tuptable);

	/* the follows, grouped by viewer, newest first, five each */
	run("SELECT f.viewer, f.target_id, f.step FROM swarm_step_follows f");
	nall = (int) SPI_processed;
	all = palloc(sizeof(FollowEntry) * Max(nall, 1));
	{
		int		   *index = palloc(sizeof(int) * Max(nall, 1));
		int		   *next = palloc(sizeof(int) * (in->nviewers + 1));

		for (int i = 0; i < nall; i++)
		{
			bool		isnull;

			index[i] = viewer_index(in, col_int8(i, 1, &isnull));
			if (index[i] >= 0)
				count[index[i] + 1]++;
		}
		for (int v = 0; v < in->nviewers; v++)
			count[v + 1] += count[v];
		memcpy(next, count, sizeof(int) * (in->nviewers + 1));
		for (int i = 0; i < nall; i++)
		{
			bool		isnull;
			FollowEntry *f;

			if (index[i] < 0)
				continue;
			f = &all[next[index[i]]++];
			f->target = col_int8(i, 2, &isnull);
			f->step = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
		}
	}
	SPI_freetuptable(SPI_tuptable);
	of->follows = all;
	of->follows_start = count;
	targets = palloc(sizeof(int64) * Max(nall, 1));
	for (int v = 0; v < in->nviewers; v++)
	{
		int			n = count[v + 1] - count[v];

		qsort(all + count[v], n, sizeof(FollowEntry), compare_follow);
		for (int k = 0; k < Min(n, 5); k++)
			targets[ntargets++] = all[count[v] + k].target;
	}

	/* their names */
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(FeedAuthor);
	ctl.hcxt = CurrentMemoryContext;
	of->names = hash_create("pg_swarm feed followed names", Max(ntargets, 16), &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	qsort(targets, ntargets, sizeof(int64), compare_int64);
	portal = open_list_cursor("SELECT x.id, x.name FROM swarm.agents x WHERE x.id = ANY ($1)",
							  id_array(targets, ntargets), (Datum) 0, &plan);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, FEED_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		id = col_int8(i, 1, &isnull);
			FeedAuthor *au = hash_search(of->names, &id, HASH_ENTER, NULL);

			au->name = col_cstring(i, 2);
			au->interests = NULL;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
}

/*
 * "You follow: name (agent a), ...\n" for viewer v's five latest follows
 * (newest first; an agent no longer there left out), NULL when none.
 */
static text *
follows_offer(const FeedInputs *in, const FeedOffers *of, int v)
{
	StringInfoData buf;
	int			n = 0;
	int			start = of->follows_start[v];
	int			end = Min(of->follows_start[v + 1], start + 5);

	initStringInfo(&buf);
	for (int k = start; k < end; k++)
	{
		FeedAuthor *au = hash_search(of->names, &of->follows[k].target, HASH_FIND, NULL);

		if (au == NULL)
			continue;
		appendStringInfo(&buf, "%s%s (agent " INT64_FORMAT ")", n == 0 ? "You follow: " : ", ",
						 au->name ? au->name : "", of->follows[k].target);
		n++;
	}
	if (n == 0)
		return NULL;
	appendStringInfoString(&buf, ".\n");
	return cstring_to_text_with_len(buf.data, buf.len);
}

/* The index of community `id` among the communities, -1 when it is gone. */
static int
community_index(const FeedOffers *of, int64 id)
{
	int			lo = 0,
				hi = of->ncommunities - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (of->community_ids[mid] == id)
			return mid;
		if (of->community_ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/*
 * "[community c] name (you are a member|not a member)" lines for viewer v:
 * its first three communities by id, and one drawn with the seed when it is
 * not among them; members first, then by id; NULL when none.
 */
static text *
communities_offer(const FeedInputs *in, const FeedOffers *of, int v)
{
	OfferedCommunity offered[4];
	int			n = 0;
	int			nmine;
	int64	   *mine;
	StringInfoData buf;
	int			lines = 0;

	nmine = in->members.start[v + 1] - in->members.start[v];
	mine = palloc(sizeof(int64) * Max(nmine, 1));
	for (int k = 0; k < nmine; k++)
		mine[k] = in->members.rows[in->members.start[v] + k].other;
	qsort(mine, nmine, sizeof(int64), compare_int64);
	for (int k = 0; k < Min(nmine, 3); k++)
	{
		offered[n].id = mine[k];
		offered[n].member = true;
		n++;
	}
	if (of->ncommunities > 0)
	{
		int64		h = DatumGetInt64(DirectFunctionCall2(hashint8extended,
														  Int64GetDatum(in->viewer_ids[v]),
														  Int64GetDatum(of->draw_seed)));
		int64		other = of->community_ids[((h % of->ncommunities) + of->ncommunities) % of->ncommunities];
		bool		listed = false;

		for (int k = 0; k < n; k++)
			listed |= offered[k].id == other;
		if (!listed)
		{
			offered[n].id = other;
			offered[n].member = false;
			n++;
		}
	}
	qsort(offered, n, sizeof(OfferedCommunity), compare_offered);

	initStringInfo(&buf);
	for (int k = 0; k < n; k++)
	{
		int			c = community_index(of, offered[k].id);

		if (c < 0)
			continue;
		appendStringInfo(&buf, "%s[community " INT64_FORMAT "] %s (%s)", lines == 0 ? "" : "\n",
						 offered[k].id, of->community_names[c] ? of->community_names[c] : "",
						 offered[k].member ? "you are a member" : "not a member");
		lines++;
	}
	if (lines == 0)
		return NULL;
	return cstring_to_text_with_len(buf.data, buf.len);
}

PG_FUNCTION_INFO_V1(swarm_assemble_feeds);
Datum
swarm_assemble_feeds(PG_FUNCTION_ARGS)
{
	int64		job = PG_GETARG_INT64(0);
	int32		step = PG_GETARG_INT32(1);
	int64		seed = PG_GETARG_INT64(2);
	int			feed_size = PG_GETARG_INT32(3);
	double		w_follows = PG_GETARG_FLOAT8(4);
	double		w_interest = PG_GETARG_FLOAT8(5);
	double		w_hot = PG_GETARG_FLOAT8(6);
	int			feed_chars = PG_GETARG_INT32(7);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "pg_swarm feeds",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext per_viewer = AllocSetContextCreate(work, "pg_swarm one feed",
													 ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	FeedInputs	in;
	FeedOffers	of;
	bool		isnull;

	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	run("SELECT swarm._is_distributed()");
	feeds_distributed = SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
	old = MemoryContextSwitchTo(work);
	memset(&in, 0, sizeof(in));
	memset(&of, 0, sizeof(of));
	read_viewers(&in);
	in.members = read_by_viewer(&in, "SELECT m.viewer, m.community_id FROM swarm_step_members m");
	if (feed_size > 0)
	{
		read_posts(&in, job, step, feed_size);
		read_ties(&in);
		in.mutes = read_by_viewer(&in, "SELECT m.viewer, m.author FROM swarm_step_mutes m");
		read_community_posts(&in, feed_size);
	}
	read_offers(&in, &of, seed, step);
	MemoryContextSwitchTo(old);

	for (int v = 0; v < in.nviewers; v++)
	{
		int64		viewer = in.viewer_ids[v];
		char	   *interest = in.viewer_interest[v];
		FeedCandidate *cand;
		int			ncand = 0;
		int			nkept = 0;
		StringInfoData feed;
		Datum	   *seen = NULL;
		int			nseen = 0;
		int			chars = 0;

		old = MemoryContextSwitchTo(per_viewer);

		/* candidates of the three sources, keyed rank / weight */
		cand = palloc(sizeof(FeedCandidate) * (Max(feed_size, 0) * 2 + in.nhot + 2));
		if (feed_size > 0 && w_follows > 0)
		{
			int64	   *ords = palloc(sizeof(int64) * feed_size);
			int			n = social_candidates(&in, v, feed_size, ords);

			ncand = add_ranked(cand, ncand, ords, n, w_follows);
		}
		if (feed_size > 0 && w_interest > 0 && interest != NULL)
		{
			char		key[NAMEDATALEN * 2];
			InterestList *list;

			strlcpy(key, interest, sizeof(key));
			list = hash_search(in.interests, key, HASH_FIND, NULL);
			if (list != NULL)
				ncand = add_ranked(cand, ncand, list->ords, list->n, w_interest);
		}
		if (feed_size > 0 && w_hot > 0)
			ncand = add_ranked(cand, ncand, in.hot, in.nhot, w_hot);

		/* never its own posts nor muted authors'; each post once, at its best key */
		{
			int			w = 0;

			for (int k = 0; k < ncand; k++)
			{
				FeedPost   *p = &in.posts[cand[k].ord - 1];

				if (p->author == viewer || muted(&in, v, p->author))
					continue;
				cand[w++] = cand[k];
			}
			ncand = w;
			qsort(cand, ncand, sizeof(FeedCandidate), compare_candidate);
			w = 0;
			for (int k = 0; k < ncand; k++)
				if (w == 0 || cand[w - 1].ord != cand[k].ord)
					cand[w++] = cand[k];
			ncand = w;
			qsort(cand, ncand, sizeof(FeedCandidate), compare_key);
		}

		/* the feed: its lines while they fit (the first always), NULL when empty */
		if (ncand > 0)
		{
			initStringInfo(&feed);
			seen = palloc(sizeof(Datum) * Min(ncand, feed_size));
			for (int k = 0; k < ncand && nkept < feed_size; k++)
			{
				FeedPost   *p = &in.posts[cand[k].ord - 1];
				char		prefix[32];
				int			plen = snprintf(prefix, sizeof(prefix), "[post %d] ", nkept + 1);
				int			len = plen + p->line_chars + 1;	/* (the prefix is ASCII) */

				if (nkept > 0 && chars + len > feed_chars)
					break;
				chars += len;
				if (nkept > 0)
					appendStringInfoChar(&feed, '\n');
				appendBinaryStringInfo(&feed, prefix, plen);
				appendBinaryStringInfo(&feed, p->line, p->line_bytes);
				seen[nseen++] = Int64GetDatum(p->id);
				nkept++;
			}
		}
		{
			Datum		values[5];
			bool		nulls[5] = {false, ncand == 0, ncand == 0, false, false};
			text	   *follows = follows_offer(&in, &of, v);
			text	   *communities = communities_offer(&in, &of, v);

			values[0] = Int64GetDatum(viewer);
			if (ncand > 0)
			{
				values[1] = PointerGetDatum(construct_array(seen, nseen, INT8OID, 8, FLOAT8PASSBYVAL,
															TYPALIGN_DOUBLE));
				values[2] = PointerGetDatum(cstring_to_text_with_len(feed.data, feed.len));
			}
			values[3] = PointerGetDatum(follows);
			nulls[3] = follows == NULL;
			values[4] = PointerGetDatum(communities);
			nulls[4] = communities == NULL;
			MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(per_viewer);
	}

	SPI_finish();
	MemoryContextDelete(work);
	return (Datum) 0;
}
