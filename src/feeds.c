/*-------------------------------------------------------------------------
 *
 * feeds.c
 *		The recommender: each active agent's feed of a simulation step with
 *		actions, assembled in memory (swarm._assemble_feeds()).
 *
 * The inputs are read by feed_window.c (the window's posts, their authors
 * and lists) and feed_inputs.c (the viewers' ties, communities and mutes),
 * and the offers made by feed_offers.c; this function returns (viewer,
 * seen, feed, follows, communities) for every viewer (seen and feed NULL
 * when it has nothing to read).  Nothing of this is written to a table: the caller inserts the rows
 * into swarm.requests as they come.
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
 * A step built in parts (swarm.step_part_agents) calls this once a part,
 * each part in a transaction of its own, for the part's viewers: what every
 * viewer shares is read by the first part and kept for the next
 * (shared_inputs()), so a part costs its own viewers only.  The step
 * builder also keeps the window's steps from one step to the next
 * (feed_window.c): a step reads only the step before it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "feeds.h"

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
 * Append the posts of `posts` (none when NULL) to soc[*n], each scored
 * `weight` over its age, growing soc (*cap entries) as needed; returns soc.
 */
static SocialEntry *
add_scored(const FeedInputs *in, const OrdList *posts, double weight,
		   SocialEntry *soc, int *n, int *cap)
{
	if (posts == NULL)
		return soc;
	for (int k = 0; k < posts->n; k++)
	{
		if (*n == *cap)
			soc = repalloc(soc, sizeof(SocialEntry) * (*cap *= 2));
		soc[*n].ord = posts->ords[k];
		soc[*n].score = weight / (double) in->posts[posts->ords[k] - 1].age;
		(*n)++;
	}
	return soc;
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
		soc = add_scored(in, ordlists_lookup(in->by_author, in->ties.rows[t].other),
						 in->ties.rows[t].weight, soc, &n, &cap);
	for (int m = in->members.start[v]; m < in->members.start[v + 1]; m++)
		soc = add_scored(in, ordlists_lookup(in->by_community, in->members.rows[m].other),
						 0.5, soc, &n, &cap);
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

/*
 * What the parts of a step built in parts share (the window's posts and
 * lists, feeds_read_shared()), kept from its first part for the next ones:
 * the step builder builds a step's parts one transaction after another, and
 * assembling them again would cost each part as much as the first.  What is
 * kept depends only on the steps before the step, which no part changes;
 * it points into the window's blocks (feed_window.c), kept with it.
 */
static MemoryContext kept_cxt = NULL;
static FeedInputs kept;
static int64 kept_job;
static int32 kept_step;
static int	kept_feed_size;

/*
 * The shared inputs of step `step` of `job` into *in: assembled into `work`
 * for a whole step (part 0); for a step built in parts, assembled by its
 * first part and kept, and taken from what was kept by the later parts of
 * the same step (assembled again when this backend kept none: another
 * backend built the first, or this one restarted).  Outside the step
 * builder, the window's blocks are read again at each step (and part 1).
 */
static void
shared_inputs(FeedInputs *in, int64 job, int32 step, int feed_size, int part, MemoryContext work)
{
	MemoryContext caller = CurrentMemoryContext;

	if (part > 1 && kept_cxt != NULL && kept_job == job && kept_step == step && kept_feed_size == feed_size)
	{
		*in = kept;
		return;
	}
	if (kept_cxt != NULL)
	{
		MemoryContextDelete(kept_cxt);
		kept_cxt = NULL;
	}
	if (!feeds_keep_window)
		feeds_forget_window();
	if (part == 0)
	{
		MemoryContextSwitchTo(work);
		feeds_read_shared(in, job, step, feed_size);
		MemoryContextSwitchTo(caller);
		return;
	}
	kept_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm step parts' shared feeds",
									 ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(kept_cxt);
	PG_TRY();
	{
		feeds_read_shared(&kept, job, step, feed_size);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		MemoryContextDelete(kept_cxt);
		kept_cxt = NULL;
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	kept_job = job;
	kept_step = step;
	kept_feed_size = feed_size;
	*in = kept;
}

/*
 * Let go of what the parts of a step shared (after its last part); outside
 * the step builder, of the window's blocks too.
 */
PG_FUNCTION_INFO_V1(swarm_release_step_feeds);
Datum
swarm_release_step_feeds(PG_FUNCTION_ARGS)
{
	if (kept_cxt != NULL)
	{
		MemoryContextDelete(kept_cxt);
		kept_cxt = NULL;
	}
	if (!feeds_keep_window)
		feeds_forget_window();
	PG_RETURN_VOID();
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
	int			part = PG_GETARG_INT32(8);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "pg_swarm feeds",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext per_viewer = AllocSetContextCreate(work, "pg_swarm one feed",
													 ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	FeedInputs	in;
	FeedOffers *of;

	InitMaterializedSRF(fcinfo, 0);

	if (part < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("part must be 0 (a whole step) or a part's number, not %d", part)));
	SPI_connect();
	shared_inputs(&in, job, step, feed_size, part, work);
	old = MemoryContextSwitchTo(work);
	feeds_read_viewers(&in, feed_size);
	of = feeds_read_offers(&in, seed, step);
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
			text	   *follows = feeds_follows_offer(&in, of, v);
			text	   *communities = feeds_communities_offer(&in, of, v);

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
	if (part == 0 && !feeds_keep_window)
		feeds_forget_window();
	return (Datum) 0;
}
