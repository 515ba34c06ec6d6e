/*-------------------------------------------------------------------------
 *
 * feeds.c
 *		The recommender's last mile: each active agent's feed of a simulation
 *		step with actions, assembled in memory (swarm._assemble_feeds()).
 *
 * swarm._simulate_actions_step() (src/sql/functions/70_actions.sql) leaves
 * temporary tables in its transaction:
 *	 swarm_step_viewers	  the step's active agents (id, interest of the step)
 *	 swarm_step_recent	  the posts of the last three steps: ord (1..n, the
 *						  tie-breaker: newest step first, then author), id,
 *						  author, kind, text, author_name, hot, interests
 *	 swarm_step_social	  (viewer, ord, score) for each post of a friend, of
 *						  an agent followed, or of one of the viewer's
 *						  communities
 *	 swarm_step_mutes	  (viewer, author) for each author a viewer muted
 * and this function reads them and returns
 * (viewer, seen, feed) for every viewer with something to read.  Set-based
 * SQL did the same with a sort of every (viewer, candidate) pair per stage,
 * 13 s a step at 100,000 viewers; here each viewer's candidates are a few
 * dozen entries sorted in place.
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

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

/* One post of the last three steps. */
typedef struct FeedPost
{
	int64		id;
	int64		author;
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

/* A social candidate as read: a post and its score. */
typedef struct SocialEntry
{
	int64		ord;
	double		score;
} SocialEntry;

/* An interest and its hottest posts (ords, hottest first). */
typedef struct InterestList
{
	char		name[NAMEDATALEN * 2];	/* hash key */
	int			n;
	int64	   *ords;
} InterestList;

typedef struct FeedInputs
{
	int			npost;			/* posts, by ord - 1 */
	FeedPost   *posts;
	int64	   *hot;			/* the hottest ords, hottest first */
	int			nhot;
	HTAB	   *interests;
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

/*
 * Read the recent posts into `in`, in memory context `cxt`: each by its
 * ord, the hot list, and each interest's hottest posts.
 */
static void
read_posts(FeedInputs *in, int feed_size, MemoryContext cxt)
{
	HASHCTL		ctl;
	MemoryContext old;
	double	   *hot;
	Jsonb	  **interests;
	int64	   *by_heat;

	run("SELECT r.ord, r.id, r.author, r.kind, r.text, r.author_name, r.hot, r.interests "
		"FROM swarm_step_recent r");

	old = MemoryContextSwitchTo(cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 2;
	ctl.entrysize = sizeof(InterestList);
	ctl.hcxt = cxt;
	in->interests = hash_create("pg_swarm feed interests", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	in->npost = (int) SPI_processed;
	in->posts = palloc0(sizeof(FeedPost) * Max(in->npost, 1));
	hot = palloc(sizeof(double) * Max(in->npost, 1));
	interests = palloc0(sizeof(Jsonb *) * Max(in->npost, 1));
	by_heat = palloc(sizeof(int64) * Max(in->npost, 1));

	for (int i = 0; i < in->npost; i++)
	{
		bool		isnull;
		int64		ord = col_int8(i, 1, &isnull);
		FeedPost   *p;
		char	   *kind = col_cstring(i, 4);
		char	   *body = col_cstring(i, 5);
		char	   *name = col_cstring(i, 6);
		Datum		d;

		if (isnull || ord < 1 || ord > in->npost)
			elog(ERROR, "pg_swarm: post order " INT64_FORMAT " out of range", ord);
		p = &in->posts[ord - 1];
		p->id = col_int8(i, 2, &isnull);
		p->author = col_int8(i, 3, &isnull);
		/* the line after its "[post n] ", made once for every viewer */
		p->line = psprintf("%s (agent " INT64_FORMAT ")%s: %s", name ? name : "", p->author,
						   kind == NULL ? "" :
						   strcmp(kind, "repost") == 0 ? " reposted" :
						   strcmp(kind, "reply") == 0 ? " replied" :
						   strcmp(kind, "quote") == 0 ? " quoted a post" : "",
						   body ? body : "");
		p->line_bytes = strlen(p->line);
		p->line_chars = pg_mbstrlen_with_len(p->line, p->line_bytes);
		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 7, &isnull);
		hot[ord - 1] = isnull ? 0 : DatumGetFloat8(d);
		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 8, &isnull);
		interests[ord - 1] = isnull ? NULL : DatumGetJsonbP(d);
		by_heat[i] = ord;
	}

	sort_hot = hot;
	qsort(by_heat, in->npost, sizeof(int64), compare_hot);
	in->nhot = Min(in->npost, feed_size + 2);
	in->hot = by_heat;

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
	MemoryContextSwitchTo(old);
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
muted(const int64 *mutes, int nmutes, int64 author)
{
	for (int i = 0; i < nmutes; i++)
		if (mutes[i] == author)
			return true;
	return false;
}

PG_FUNCTION_INFO_V1(swarm_assemble_feeds);
Datum
swarm_assemble_feeds(PG_FUNCTION_ARGS)
{
	/* (argument 0, the job, is the caller's: the temporary tables are its) */
	int			feed_size = PG_GETARG_INT32(1);
	double		w_follows = PG_GETARG_FLOAT8(2);
	double		w_interest = PG_GETARG_FLOAT8(3);
	double		w_hot = PG_GETARG_FLOAT8(4);
	int			feed_chars = PG_GETARG_INT32(5);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "pg_swarm feeds",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext per_viewer = AllocSetContextCreate(work, "pg_swarm one feed",
													 ALLOCSET_DEFAULT_SIZES);
	FeedInputs	in;
	SPITupleTable *viewers,
			   *social,
			   *mutes;
	uint64		nviewers,
				nsocial,
				nmutes;
	uint64		si = 0,
				mi = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (feed_size <= 0)
		PG_RETURN_NULL();

	SPI_connect();
	memset(&in, 0, sizeof(in));
	read_posts(&in, feed_size, work);

	/* the viewers, each with its interest of the step */
	run("SELECT a.id, a.interest FROM swarm_step_viewers a ORDER BY a.id");
	viewers = SPI_tuptable;
	nviewers = SPI_processed;
	SPI_tuptable = NULL;
	run("SELECT s.viewer, s.ord, s.score FROM swarm_step_social s ORDER BY s.viewer");
	social = SPI_tuptable;
	nsocial = SPI_processed;
	SPI_tuptable = NULL;
	run("SELECT m.viewer, m.author FROM swarm_step_mutes m ORDER BY m.viewer");
	mutes = SPI_tuptable;
	nmutes = SPI_processed;

	for (uint64 v = 0; v < nviewers; v++)
	{
		bool		isnull;
		int64		viewer = DatumGetInt64(SPI_getbinval(viewers->vals[v], viewers->tupdesc, 1, &isnull));
		MemoryContext old = MemoryContextSwitchTo(per_viewer);
		char	   *interest = SPI_getvalue(viewers->vals[v], viewers->tupdesc, 2);
		SocialEntry *soc;
		int			nsoc = 0;
		int64	   *muted_authors;
		int			nmuted = 0;
		FeedCandidate *cand;
		int			ncand = 0;
		int			nkept = 0;
		StringInfoData feed;
		Datum	   *seen;
		int			nseen = 0;
		int			chars = 0;
		uint64		s0 = si;

		/* this viewer's social candidates (both lists are in viewer order) */
		while (si < nsocial &&
			   DatumGetInt64(SPI_getbinval(social->vals[si], social->tupdesc, 1, &isnull)) < viewer)
			si++;
		s0 = si;
		while (si < nsocial &&
			   DatumGetInt64(SPI_getbinval(social->vals[si], social->tupdesc, 1, &isnull)) == viewer)
			si++;
		soc = palloc(sizeof(SocialEntry) * Max(si - s0, 1));
		for (uint64 k = s0; k < si; k++)
		{
			soc[nsoc].ord = DatumGetInt64(SPI_getbinval(social->vals[k], social->tupdesc, 2, &isnull));
			soc[nsoc].score = DatumGetFloat8(SPI_getbinval(social->vals[k], social->tupdesc, 3, &isnull));
			nsoc++;
		}
		/* a post reached several ways counts once, at its best score */
		if (nsoc > 1)
		{
			int			w = 0;

			qsort(soc, nsoc, sizeof(SocialEntry), compare_social);
			for (int k = 0; k < nsoc; k++)
			{
				bool		dup = false;

				for (int j = 0; j < w; j++)
					if (soc[j].ord == soc[k].ord)
					{
						dup = true;
						break;
					}
				if (!dup)
					soc[w++] = soc[k];
			}
			nsoc = w;
		}

		while (mi < nmutes &&
			   DatumGetInt64(SPI_getbinval(mutes->vals[mi], mutes->tupdesc, 1, &isnull)) < viewer)
			mi++;
		muted_authors = palloc(sizeof(int64) * 1);
		{
			uint64		m0 = mi;

			while (mi < nmutes &&
				   DatumGetInt64(SPI_getbinval(mutes->vals[mi], mutes->tupdesc, 1, &isnull)) == viewer)
				mi++;
			muted_authors = repalloc(muted_authors, sizeof(int64) * Max(mi - m0, 1));
			for (uint64 k = m0; k < mi; k++)
				muted_authors[nmuted++] = DatumGetInt64(SPI_getbinval(mutes->vals[k], mutes->tupdesc, 2, &isnull));
		}

		/* candidates of the three sources, keyed rank / weight */
		cand = palloc(sizeof(FeedCandidate) * (feed_size * 2 + in.nhot + 2));
		if (w_follows > 0)
		{
			int64	   *ords = palloc(sizeof(int64) * Max(nsoc, 1));
			int			n = Min(nsoc, feed_size);

			for (int k = 0; k < n; k++)
				ords[k] = soc[k].ord;
			ncand = add_ranked(cand, ncand, ords, n, w_follows);
		}
		if (w_interest > 0 && interest != NULL)
		{
			char		key[NAMEDATALEN * 2];
			InterestList *list;

			strlcpy(key, interest, sizeof(key));
			list = hash_search(in.interests, key, HASH_FIND, NULL);
			if (list != NULL)
				ncand = add_ranked(cand, ncand, list->ords, list->n, w_interest);
		}
		if (w_hot > 0)
			ncand = add_ranked(cand, ncand, in.hot, in.nhot, w_hot);

		/* never its own posts nor muted authors'; each post once, at its best key */
		{
			int			w = 0;

			for (int k = 0; k < ncand; k++)
			{
				FeedPost   *p = &in.posts[cand[k].ord - 1];

				if (p->author == viewer || muted(muted_authors, nmuted, p->author))
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

				/* the first line always; the others while the budget lasts */
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
			{
				Datum		values[3];
				bool		nulls[3] = {false, false, false};

				values[0] = Int64GetDatum(viewer);
				values[1] = PointerGetDatum(construct_array(seen, nseen, INT8OID, 8, FLOAT8PASSBYVAL,
															TYPALIGN_DOUBLE));
				values[2] = PointerGetDatum(cstring_to_text_with_len(feed.data, feed.len));
				MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			}
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(per_viewer);
	}

	SPI_finish();
	MemoryContextDelete(work);
	return (Datum) 0;
}
