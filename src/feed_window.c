/*-------------------------------------------------------------------------
 *
 * feed_window.c
 *		What every viewer of a simulation step shares: the posts of the
 *		step's window (the job's last three steps) with their lines,
 *		authors' interests and communities and their engagement, read a
 *		step at a time and assembled into the step's lists (the hot list,
 *		each interest's and each community's hottest posts, each author's
 *		posts).
 *
 * A window is three steps, each of which ended before the step that reads
 * it began, and a step's actions never change once it has ended (they are
 * written only while it runs).  So each step of the window is read once,
 * as a block: its posts (posts, replies, quotes, reposts), each with its
 * line "name (agent a)[ replied| reposted| quoted a post]: text", its
 * author's interests and communities, and the engagement its actions gave
 * (likes - dislikes + replies + 2 x reposts and quotes, by post).  The step
 * builder keeps the blocks from step to step (feeds_keep_window): step s
 * reads step s - 1 only and takes steps s - 3 and s - 2 from what steps
 * s - 1 and s - 2 read.  Any other backend reads its window's blocks at
 * each call and lets them go after it (or after a step's last part).
 *
 * The assembly makes exactly what reading the whole window in one go made:
 * a post's ord (1..n) is its place by newest step, then highest author
 * (then lowest id), the tie-breaker of every ranking; its heat is
 * (1 + engagement) / (age + 1)^1.5 in double precision, its engagement the
 * sum of the window's blocks'.
 *
 * What a block assumes of the rest of the world: the authors' names,
 * interests and seeded communities do not change while a simulation runs
 * (a renamed agent keeps its old name in the lines of the posts the
 * builder read before).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "feeds.h"
#include "swarm.h"

/* the window: the steps step - WINDOW_STEPS .. step - 1 */
#define WINDOW_STEPS		3
/* blocks kept at most (a window and a step for two simulations) */
#define WINDOW_MAX_BLOCKS	8
/* a block's lines are packed into chunks of this size */
#define LINE_ARENA_BYTES	(1024 * 1024)

/* Whether blocks are kept from one call to the next (the step builder). */
bool		feeds_keep_window = false;

/* One post of a block. */
typedef struct WindowPost
{
	int64		id;
	int64		author;
	const char *line;
	int			line_bytes;
	int			line_chars;
	Jsonb	   *interests;		/* the author's (NULL: none) */
	const int64 *communities;	/* the author's seeded communities */
	int			ncommunities;
} WindowPost;

/* A post's engagement from one step's actions. */
typedef struct WindowEngagement
{
	int64		post_id;		/* hash key */
	int64		engagement;
} WindowEngagement;

/* One step of a job, as read. */
typedef struct WindowBlock
{
	int64		job;
	int32		step;
	MemoryContext cxt;			/* everything below */
	int			nposts;
	WindowPost *posts;			/* highest author first, then lowest id */
	HTAB	   *engagement;		/* post id -> WindowEngagement */
	uint64		last_used;
} WindowBlock;

static WindowBlock *blocks[WINDOW_MAX_BLOCKS];
static int	nblocks = 0;
static uint64 use_clock = 0;
static MemoryContext window_cxt = NULL;

/* A post of a block as read, before its line is made. */
typedef struct RawPost
{
	int64		id;
	int64		author;
	char	   *kind;
	char	   *body;
} RawPost;

/* Highest author first, then lowest id: the order within a step. */
static int
compare_raw_post(const void *a, const void *b)
{
	const RawPost *x = a;
	const RawPost *y = b;

	if (x->author != y->author)
		return x->author > y->author ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* The engagement step `step`'s valid actions gave, by post. */
static HTAB *
read_block_engagement(int64 job, int32 step)
{
	HASHCTL		ctl;
	HTAB	   *engagement;
	int64	   *ids,
			   *values;
	int			n;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(WindowEngagement);
	ctl.hcxt = CurrentMemoryContext;
	engagement = hash_create("pg_swarm feed engagement", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	n = feeds_fetch_int8_pairs(feeds_open_step_cursor("SELECT x.post_id, "
													  "sum(CASE x.kind WHEN 'like' THEN 1 WHEN 'dislike' THEN -1 WHEN 'reply' THEN 1 ELSE 2 END) "
													  "FROM swarm.actions x "
													  "WHERE x.job_id = $1 AND x.step = $2 AND x.valid "
													  "AND x.kind IN ('like', 'dislike', 'reply', 'quote', 'repost') "
													  "GROUP BY x.post_id", job, step),
							   &ids, &values);
	for (int i = 0; i < n; i++)
		((WindowEngagement *) hash_search(engagement, &ids[i], HASH_ENTER, NULL))->engagement = values[i];
	pfree(ids);
	pfree(values);
	return engagement;
}

/* The posts of step `step` (posts, replies, quotes, reposts), in the step's order. */
static RawPost *
read_block_posts(int64 job, int32 step, int *count)
{
	int			n = 0,
				cap = 1024;
	RawPost    *raw = palloc(sizeof(RawPost) * cap);
	Portal		portal = feeds_open_step_cursor("SELECT r.id, r.agent_id, r.kind, left(coalesce(r.content, ''), 200) "
												"FROM swarm.actions r "
												"WHERE r.job_id = $1 AND r.step = $2 AND r.valid "
												"AND r.kind IN ('post', 'reply', 'quote', 'repost')", job, step);

	for (;;)
	{
		if (feeds_fetch(portal) == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			RawPost    *r;

			if (n == cap)
				raw = repalloc_huge(raw, sizeof(RawPost) * (cap *= 2));
			r = &raw[n++];
			r->id = feeds_col_int8(i, 1, &isnull);
			r->author = feeds_col_int8(i, 2, &isnull);
			r->kind = feeds_col_cstring(i, 3);
			r->body = feeds_col_cstring(i, 4);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	qsort(raw, n, sizeof(RawPost), compare_raw_post);
	*count = n;
	return raw;
}

/* An author's seeded communities, as read. */
typedef struct AuthorCommunities
{
	int64		author;			/* hash key */
	int			n;
	int			cap;
	int64	   *ids;
} AuthorCommunities;

/* The seeded communities of `authors` (ascending, n of them): author -> AuthorCommunities. */
static HTAB *
read_author_communities(const int64 *authors, int n)
{
	HASHCTL		ctl;
	HTAB	   *table;
	SPIPlanPtr	plan;
	int64	   *who,
			   *communities;
	int			rows;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(AuthorCommunities);
	ctl.hcxt = CurrentMemoryContext;
	table = hash_create("pg_swarm feed authors' communities", Max(n, 16), &ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	rows = feeds_fetch_int8_pairs(feeds_open_list_cursor("SELECT cm.agent_id, cm.community_id FROM swarm.community_members cm "
														 "WHERE cm.agent_id = ANY ($1)",
														 swarm_int8_array(authors, n), (Datum) 0, &plan),
								  &who, &communities);
	SPI_freeplan(plan);
	for (int i = 0; i < rows; i++)
	{
		bool		found;
		AuthorCommunities *ac = hash_search(table, &who[i], HASH_ENTER, &found);

		if (!found)
		{
			ac->n = 0;
			ac->cap = 4;
			ac->ids = palloc(sizeof(int64) * ac->cap);
		}
		if (ac->n == ac->cap)
			ac->ids = repalloc(ac->ids, sizeof(int64) * (ac->cap *= 2));
		ac->ids[ac->n++] = communities[i];
	}
	pfree(who);
	pfree(communities);
	return table;
}

/*
 * Read step `step` of `job` into `b` (in the current memory context, b's):
 * its posts with their lines, authors' interests and communities, and the
 * engagement of its actions.  What only the reading needs goes in a
 * scratch context.
 */
static void
read_block(WindowBlock *b)
{
	MemoryContext keep = CurrentMemoryContext;
	MemoryContext scratch = AllocSetContextCreate(keep, "pg_swarm feed block as read", ALLOCSET_DEFAULT_SIZES);
	RawPost    *raw;
	int64	   *author_ids;
	int			nauthors = 0;
	HTAB	   *authors;
	HTAB	   *communities;
	StringInfoData line;
	char	   *arena = NULL;
	Size		arena_left = 0;

	b->engagement = read_block_engagement(b->job, b->step);

	MemoryContextSwitchTo(scratch);
	raw = read_block_posts(b->job, b->step, &b->nposts);
	/* the authors, each once, ascending */
	author_ids = palloc(sizeof(int64) * Max(b->nposts, 1));
	for (int i = 0; i < b->nposts; i++)
		author_ids[i] = raw[i].author;
	qsort(author_ids, b->nposts, sizeof(int64), feeds_compare_int64);
	for (int i = 0; i < b->nposts; i++)
		if (nauthors == 0 || author_ids[nauthors - 1] != author_ids[i])
			author_ids[nauthors++] = author_ids[i];
	MemoryContextSwitchTo(keep);
	/* (kept: the posts point at their authors' interests and communities) */
	authors = feeds_read_agents(author_ids, nauthors);
	communities = read_author_communities(author_ids, nauthors);

	b->posts = MemoryContextAllocHuge(keep, sizeof(WindowPost) * Max(b->nposts, 1));
	MemoryContextSwitchTo(scratch);
	initStringInfo(&line);
	MemoryContextSwitchTo(keep);
	for (int i = 0; i < b->nposts; i++)
	{
		WindowPost *p = &b->posts[i];
		FeedAuthor *au = hash_search(authors, &raw[i].author, HASH_FIND, NULL);
		AuthorCommunities *ac = hash_search(communities, &raw[i].author, HASH_FIND, NULL);
		const char *kind = raw[i].kind;

		p->id = raw[i].id;
		p->author = raw[i].author;
		resetStringInfo(&line);
		appendStringInfo(&line, "%s (agent " INT64_FORMAT ")%s: %s",
						 au && au->name ? au->name : "", p->author,
						 kind == NULL ? "" :
						 strcmp(kind, "repost") == 0 ? " reposted" :
						 strcmp(kind, "reply") == 0 ? " replied" :
						 strcmp(kind, "quote") == 0 ? " quoted a post" : "",
						 raw[i].body ? raw[i].body : "");
		/* (packed one after another: a palloc'd line each would round up to a power of 2) */
		if (line.len + 1 > arena_left)
		{
			arena_left = Max(line.len + 1, LINE_ARENA_BYTES);
			arena = MemoryContextAlloc(keep, arena_left);
		}
		memcpy(arena, line.data, line.len + 1);
		p->line = arena;
		p->line_bytes = line.len;
		p->line_chars = pg_mbstrlen_with_len(p->line, p->line_bytes);
		arena += line.len + 1;
		arena_left -= line.len + 1;
		p->interests = au ? au->interests : NULL;
		p->communities = ac ? ac->ids : NULL;
		p->ncommunities = ac ? ac->n : 0;
	}
	MemoryContextDelete(scratch);
}

/* Let go of block i of the cache. */
static void
drop_block(int i)
{
	MemoryContextDelete(blocks[i]->cxt);
	blocks[i] = blocks[--nblocks];
}

/* Let go of every block kept. */
void
feeds_forget_window(void)
{
	while (nblocks > 0)
		drop_block(nblocks - 1);
}

/*
 * The block of step `step` of `job`: the one kept, or read now and kept
 * (dropping the least recently used of the blocks outside the window of
 * `for_step` when the cache is full).
 */
static WindowBlock *
window_block(int64 job, int32 step, int32 for_step)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt;
	WindowBlock *b;

	for (int i = 0; i < nblocks; i++)
		if (blocks[i]->job == job && blocks[i]->step == step)
		{
			blocks[i]->last_used = ++use_clock;
			return blocks[i];
		}
	if (window_cxt == NULL)
		window_cxt = AllocSetContextCreate(TopMemoryContext, "pg_swarm feed window", ALLOCSET_SMALL_SIZES);
	while (nblocks >= WINDOW_MAX_BLOCKS)
	{
		int			oldest = -1;

		for (int i = 0; i < nblocks; i++)
			if ((blocks[i]->job != job || blocks[i]->step < for_step - WINDOW_STEPS || blocks[i]->step >= for_step) &&
				(oldest < 0 || blocks[i]->last_used < blocks[oldest]->last_used))
				oldest = i;
		/* (the window's own blocks are three at most) */
		if (oldest < 0)
			elog(ERROR, "pg_swarm: every kept feed block is in use");
		drop_block(oldest);
	}

	cxt = AllocSetContextCreate(window_cxt, "pg_swarm feed block", ALLOCSET_DEFAULT_SIZES);
	b = MemoryContextAllocZero(cxt, sizeof(WindowBlock));
	b->job = job;
	b->step = step;
	b->cxt = cxt;
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		read_block(b);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	b->last_used = ++use_clock;
	blocks[nblocks++] = b;
	return b;
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

/*
 * Assemble the window's blocks (newest step first) into `in`, in the
 * current memory context: each post by its ord, the hot list, each
 * interest's and each community's feed_size hottest posts and each
 * author's posts.
 */
static void
assemble(FeedInputs *in, WindowBlock **window, int nwindow, int32 step, int feed_size)
{
	MemoryContext keep = CurrentMemoryContext;
	MemoryContext scratch = AllocSetContextCreate(keep, "pg_swarm feed window's heat", ALLOCSET_DEFAULT_SIZES);
	HASHCTL		ctl;
	const WindowPost **source;
	double	   *hot;
	int64	   *by_heat;
	int			ord = 0;

	in->npost = 0;
	for (int w = 0; w < nwindow; w++)
		in->npost += window[w]->nposts;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 2;
	ctl.entrysize = sizeof(InterestList);
	ctl.hcxt = keep;
	in->interests = hash_create("pg_swarm feed interests", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	in->by_author = ordlists_create(keep, 1024, NULL);
	in->by_community = ordlists_create(keep, 1024, NULL);
	in->posts = MemoryContextAllocHuge(keep, sizeof(FeedPost) * Max(in->npost, 1));
	by_heat = MemoryContextAllocHuge(keep, sizeof(int64) * Max(in->npost, 1));
	source = MemoryContextAllocHuge(scratch, sizeof(WindowPost *) * Max(in->npost, 1));
	hot = MemoryContextAllocHuge(scratch, sizeof(double) * Max(in->npost, 1));

	for (int w = 0; w < nwindow; w++)
	{
		const WindowBlock *b = window[w];

		for (int i = 0; i < b->nposts; i++)
		{
			const WindowPost *wp = &b->posts[i];
			FeedPost   *p = &in->posts[ord];
			int64		engagement = 0;

			for (int e = 0; e < nwindow; e++)
			{
				WindowEngagement *we = hash_search(window[e]->engagement, &wp->id, HASH_FIND, NULL);

				if (we)
					engagement += we->engagement;
			}
			p->id = wp->id;
			p->author = wp->author;
			p->age = step - b->step;
			if (p->age < 1)
				elog(ERROR, "pg_swarm: post age %d out of range", p->age);
			p->line = wp->line;
			p->line_bytes = wp->line_bytes;
			p->line_chars = wp->line_chars;
			hot[ord] = (double) (1 + engagement) / pow((double) (p->age + 1), 1.5);
			source[ord] = wp;
			by_heat[ord] = ord + 1;
			ord++;
			add_to_list(in->by_author, p->author, ord, -1);
		}
	}

	sort_hot = hot;
	qsort(by_heat, in->npost, sizeof(int64), compare_hot);
	in->nhot = Min(in->npost, feed_size + 2);
	in->hot = by_heat;
	in->by_heat = by_heat;

	/*
	 * the hottest first: each interest and each community keeps its first
	 * feed_size posts
	 */
	for (int i = 0; i < in->npost; i++)
	{
		int64		o = by_heat[i];
		const WindowPost *wp = source[o - 1];
		Jsonb	   *j = wp->interests;

		for (int k = 0; k < wp->ncommunities; k++)
			add_to_list(in->by_community, wp->communities[k], o, feed_size);
		if (j != NULL && JB_ROOT_IS_ARRAY(j))
		{
			JsonbIterator *it = JsonbIteratorInit(&j->root);
			JsonbValue	v;
			JsonbIteratorToken tok;

			while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
				if (tok == WJB_ELEM && v.type == jbvString)
					add_to_interest(in, v.val.string.val, v.val.string.len, o, feed_size);
		}
	}
	MemoryContextDelete(scratch);
}

/*
 * Read what every viewer of step `step` shares into `in`, in the current
 * memory context (within SPI): when the feeds are not empty (feed_size > 0),
 * the window's posts with their lines, the hot and interest lists and the
 * communities' hottest posts.  What `in` holds points into the window's
 * blocks: they stay until feeds_forget_window() (outside the step builder,
 * the caller's business) or until a later step's window drops them.
 */
void
feeds_read_shared(FeedInputs *in, int64 job, int32 step, int feed_size)
{
	WindowBlock *window[WINDOW_STEPS];
	int			nwindow = 0;

	feeds_check_distributed();
	memset(in, 0, sizeof(*in));
	if (feed_size <= 0)
		return;
	/* (the job's blocks outside this window will not be read again) */
	for (int i = nblocks - 1; i >= 0; i--)
		if (blocks[i]->job == job && (blocks[i]->step < step - WINDOW_STEPS || blocks[i]->step >= step))
			drop_block(i);
	for (int32 k = step - 1; k >= step - WINDOW_STEPS && k >= 0; k--)
		window[nwindow++] = window_block(job, k, step);
	assemble(in, window, nwindow, step, feed_size);
}
