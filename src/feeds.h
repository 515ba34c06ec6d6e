/*-------------------------------------------------------------------------
 *
 * feeds.h
 *		What the recommender of simulations with actions shares between its
 *		files: the inputs of a step's feeds (feed_window.c reads what every
 *		viewer shares, feed_inputs.c the viewers' own), the
 *		offers of its prompts (feed_offers.c), and their assembly (feeds.c,
 *		swarm._assemble_feeds()).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_FEEDS_H
#define SWARM_FEEDS_H

#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"

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
	/* shared by every viewer of the step (feeds_read_shared) */
	int			npost;			/* posts, by ord - 1 */
	FeedPost   *posts;
	int64	   *hot;			/* the hottest ords, hottest first */
	int			nhot;
	int64	   *by_heat;		/* every ord, hottest first */
	HTAB	   *interests;
	ordlists_hash *by_author;	/* author -> its posts */
	ordlists_hash *by_community;	/* community -> its feed_size hottest posts */
	/* the viewers' own (feeds_read_viewers) */
	int			nviewers;
	int64	   *viewer_ids;		/* ascending */
	char	  **viewer_interest;
	ByViewer	ties;			/* (viewer, author, weight): friends and follows */
	ByViewer	members;		/* (viewer, community) */
	ByViewer	mutes;			/* (viewer, author) */
} FeedInputs;

/* An author of a recent post: its name and interests. */
typedef struct FeedAuthor
{
	int64		id;				/* hash key */
	char	   *name;
	Jsonb	   *interests;
} FeedAuthor;

/* What a step's prompts offer besides the feed (feed_offers.c). */
typedef struct FeedOffers FeedOffers;

/* feed_window.c */
extern bool feeds_keep_window;
extern void feeds_read_shared(FeedInputs *in, int64 job, int32 step, int feed_size);
extern void feeds_forget_window(void);

/* feed_inputs.c */
extern void feeds_read_viewers(FeedInputs *in, int feed_size);
extern int64 feeds_col_int8(int row, int col, bool *isnull);
extern char *feeds_col_cstring(int row, int col);
extern void feeds_run(const char *sql);
extern uint64 feeds_fetch(Portal portal);
extern void feeds_check_distributed(void);
extern Portal feeds_open_step_cursor(const char *sql, int64 job, int32 step);
extern int	feeds_fetch_int8_pairs(Portal portal, int64 **a, int64 **b);
extern HTAB *feeds_read_agents(const int64 *ids, int n);
extern int	feeds_read_id_texts(const char *sql, int64 **ids, char ***texts);
extern int	feeds_compare_int64(const void *a, const void *b);
extern int	feeds_find_int64(const int64 *sorted, int n, int64 key);
extern ByViewer feeds_read_by_viewer(const FeedInputs *in, const char *sql);
extern Portal feeds_open_list_cursor(const char *sql, Datum list, Datum list2, SPIPlanPtr *plan);

/* feed_offers.c */
extern FeedOffers *feeds_read_offers(const FeedInputs *in, int64 seed, int32 step);
extern text *feeds_follows_offer(const FeedInputs *in, const FeedOffers *of, int v);
extern text *feeds_communities_offer(const FeedInputs *in, const FeedOffers *of, int v);

#endif							/* SWARM_FEEDS_H */
