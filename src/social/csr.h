/*
 * csr.h
 *		The one builder of adjacency lists in the social world: compressed
 *		sparse rows (CSR) made by counting sort from (source, target) pairs.
 *
 * A CSR over n nodes holds the list of node i in adj[off[i] .. off[i + 1]).
 * The friendship graph, the homophily groups (both ways), the members of each
 * cluster and the cluster graph are all built here, in one of two ways:
 *
 *	- csr_from_pairs(): from an array of pairs, optionally both directions of
 *	  each pair, optionally with every list sorted;
 *	- by hand, when the pairs are cheaper to compute twice than to store
 *	  (the cluster graph, the members of each cluster): csr_begin(), then
 *	  csr_count(source) once per pair, csr_allocate(), then
 *	  csr_place(source, target) once per pair, the same pairs again, and
 *	  optionally csr_sort_lists().
 *
 * Lists keep the order in which their pairs were placed (the counting sort is
 * stable); callers rely on that, since draws and breadth-first orders walk
 * the lists and a seed must reproduce them.
 *
 * Memory: off has n + 2 entries (8 B each) and adj one entry (4 B) per pair
 * placed, both palloc'd (huge allowed) in the memory context current at
 * csr_begin() / csr_allocate(); nothing else is allocated.  The extra entry
 * of off is the placing cursor: counts go to off[source + 2], the prefix sum
 * makes off[source + 1] the start of the list, and each placement moves it
 * on, so that after the last one off[source + 1] is the list's end, which is
 * the next list's start.  No separate fill array is needed.
 *
 * Include postgres.h first.  Nothing here ereports except out of memory and
 * query cancel (the long loops check for interrupts).
 */
#ifndef SOCIAL_CSR_H
#define SOCIAL_CSR_H

typedef struct SocialCsr
{
	uint64	   *off;			/* n + 2 entries; off[0 .. n] bound the lists */
	uint32	   *adj;			/* off[n] entries */
	uint32		n;
} SocialCsr;

/* flags of csr_from_pairs() */
#define CSR_BOTH_DIRECTIONS	0x01	/* each pair (a, b) also gives b -> a */
#define CSR_REVERSED		0x02	/* each pair (a, b) gives b -> a only */
#define CSR_SORTED			0x04	/* sort every list ascending */

extern void csr_from_pairs(SocialCsr *csr, uint32 n, const uint32 *pairs,
						   uint64 npairs, int flags);
extern void csr_begin(SocialCsr *csr, uint32 n);
extern void csr_allocate(SocialCsr *csr);
extern void csr_sort_lists(SocialCsr *csr);
extern void csr_free(SocialCsr *csr);
extern void csr_sort_uint32(uint32 *values, uint64 count);

/* First pass of a hand-made build: one more pair from source. */
static inline void
csr_count(SocialCsr *csr, uint32 source)
{
	csr->off[source + 2]++;
}

/* Second pass: the pair (source, target), after csr_allocate(). */
static inline void
csr_place(SocialCsr *csr, uint32 source, uint32 target)
{
	csr->adj[csr->off[source + 1]++] = target;
}

static inline uint64
csr_degree(const SocialCsr *csr, uint32 node)
{
	return csr->off[node + 1] - csr->off[node];
}

#endif							/* SOCIAL_CSR_H */
