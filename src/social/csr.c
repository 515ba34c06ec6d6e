/*
 * csr.c
 *		Counting-sort construction of adjacency lists (CSR) for the social
 *		world; see csr.h for the layout, the two ways to build and the memory.
 *
 * Pure in-memory work: no table access, no SQL, no shared state.  Callers
 * own every array returned, in their memory context.
 */
#include "postgres.h"

#include "miscadmin.h"

#include "csr.h"

static int
cmp_uint32(const void *a, const void *b)
{
	uint32		x = *(const uint32 *) a;
	uint32		y = *(const uint32 *) b;

	return (x > y) - (x < y);
}

/* Sorts values[0 .. count) ascending. */
void
csr_sort_uint32(uint32 *values, uint64 count)
{
	if (count > 1)
		qsort(values, count, sizeof(uint32), cmp_uint32);
}

/* Starts a CSR over n nodes with no pairs counted; see csr.h. */
void
csr_begin(SocialCsr *csr, uint32 n)
{
	csr->n = n;
	csr->off = palloc_extended(((Size) n + 2) * sizeof(uint64), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	csr->adj = NULL;
}

/*
 * Ends the counting pass: turns the counts into list starts and allocates
 * adj for every pair counted.
 */
void
csr_allocate(SocialCsr *csr)
{
	uint64		total;

	for (uint64 i = 3; i <= (uint64) csr->n + 1; i++)
		csr->off[i] += csr->off[i - 1];
	total = csr->off[csr->n + 1];
	csr->adj = palloc_extended(Max(total, 1) * sizeof(uint32), MCXT_ALLOC_HUGE);
}

/* Sorts every list ascending (after the last csr_place). */
void
csr_sort_lists(SocialCsr *csr)
{
	for (uint32 i = 0; i < csr->n; i++)
	{
		csr_sort_uint32(csr->adj + csr->off[i], csr_degree(csr, i));
		if ((i & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Builds csr over n nodes from npairs pairs stored as pairs[2k] (source),
 * pairs[2k + 1] (target); flags are CSR_BOTH_DIRECTIONS, CSR_REVERSED and
 * CSR_SORTED (csr.h).  Every value in pairs must be below n.
 */
void
csr_from_pairs(SocialCsr *csr, uint32 n, const uint32 *pairs, uint64 npairs, int flags)
{
	bool		forward = (flags & CSR_REVERSED) == 0;
	bool		backward = (flags & (CSR_REVERSED | CSR_BOTH_DIRECTIONS)) != 0;

	csr_begin(csr, n);
	for (uint64 k = 0; k < npairs; k++)
	{
		if (forward)
			csr_count(csr, pairs[2 * k]);
		if (backward)
			csr_count(csr, pairs[2 * k + 1]);
	}
	csr_allocate(csr);
	for (uint64 k = 0; k < npairs; k++)
	{
		if (forward)
			csr_place(csr, pairs[2 * k], pairs[2 * k + 1]);
		if (backward)
			csr_place(csr, pairs[2 * k + 1], pairs[2 * k]);
		if ((k & 0xffff) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	if (flags & CSR_SORTED)
		csr_sort_lists(csr);
}

void
csr_free(SocialCsr *csr)
{
	pfree(csr->off);
	if (csr->adj)
		pfree(csr->adj);
	csr->off = NULL;
	csr->adj = NULL;
}
