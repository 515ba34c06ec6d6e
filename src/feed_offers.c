/*-------------------------------------------------------------------------
 *
 * feed_offers.c
 *		What else a simulation step's prompt offers besides the feed: whom
 *		the agent follows (its last five follows, to unfollow) and its
 *		communities (the first three by id, and one more, drawn with the
 *		seed, to join).
 *
 * "You follow: name (agent a), name (agent b).\n", newest follow first (an
 * agent no longer there left out); "[community c] name (you are a member)"
 * lines, members first, then by id, with the drawn one "(not a member)"
 * when it is not among the three.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#include "feeds.h"
#include "swarm.h"

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

struct FeedOffers
{
	int			ncommunities;
	int64	   *community_ids;	/* ascending */
	char	  **community_names;
	FollowEntry *follows;		/* each viewer's last five, newest first */
	int		   *follows_start;	/* viewer v's are [start[v], start[v + 1]) */
	HTAB	   *names;			/* followed agent -> name */
	int64		draw_seed;		/* seed + 7 x step: the community drawn to join */
};

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
FeedOffers *
feeds_read_offers(const FeedInputs *in, int64 seed, int32 step)
{
	FeedOffers *of = palloc0(sizeof(FeedOffers));
	ByViewer	follows;
	int		   *count;
	FollowEntry *all;
	int64	   *targets;
	int			ntargets = 0;
	int			nall;

	if (pg_add_s64_overflow(seed, (int64) 7 * step, &of->draw_seed))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("bigint out of range")));

	of->ncommunities = feeds_read_id_texts("SELECT c.id, c.name FROM swarm.communities c ORDER BY c.id",
										   &of->community_ids, &of->community_names);

	/* the follows, grouped by viewer (the step rides as the weight), newest first, five each */
	follows = feeds_read_by_viewer(in, "SELECT f.viewer, f.target_id, f.step::double precision "
								   "FROM swarm_step_follows f");
	count = follows.start;
	nall = count[in->nviewers];
	all = palloc(sizeof(FollowEntry) * Max(nall, 1));
	for (int i = 0; i < nall; i++)
	{
		all[i].target = follows.rows[i].other;
		all[i].step = (int32) follows.rows[i].weight;
	}
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
	of->names = feeds_read_agents(targets, ntargets);
	return of;
}

/*
 * "You follow: name (agent a), ...\n" for viewer v's five latest follows
 * (newest first; an agent no longer there left out), NULL when none.
 */
text *
feeds_follows_offer(const FeedInputs *in, const FeedOffers *of, int v)
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

/*
 * "[community c] name (you are a member|not a member)" lines for viewer v:
 * its first three communities by id, and one drawn with the seed when it is
 * not among them; members first, then by id; NULL when none.
 */
text *
feeds_communities_offer(const FeedInputs *in, const FeedOffers *of, int v)
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
	qsort(mine, nmine, sizeof(int64), feeds_compare_int64);
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
		int			c = feeds_find_int64(of->community_ids, of->ncommunities, offered[k].id);

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
