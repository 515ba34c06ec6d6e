/*-------------------------------------------------------------------------
 *
 * fuzz_backend.h
 *		Stand-ins for the few backend facilities that src/openai.c uses, so
 *		that the unmodified file links into a libFuzzer binary without a
 *		server.  See fuzz_backend.c for what each stand-in imitates.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_FUZZ_BACKEND_H
#define SWARM_FUZZ_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

/* Nesting depth at which the stand-in for check_stack_depth() throws. */
#define FUZZ_MAX_JSON_DEPTH 1000

typedef struct FuzzBackendStats
{
	size_t		allocs;			/* palloc-family calls */
	size_t		allocs_in_try;	/* ... of which inside a PG_TRY block */
	size_t		bytes_requested;	/* sum of all sizes asked for */
	size_t		live_chunks;	/* still allocated when the call returned */
	size_t		live_bytes;
	bool		injected;		/* the injected ERROR was thrown */
	bool		depth_error;	/* the stack-depth ERROR was thrown */
} FuzzBackendStats;

/*
 * Start one call of the code under test: an empty "caller's memory context"
 * becomes CurrentMemoryContext and no PG_TRY is active.  If fail_alloc is
 * not negative, the allocation with that 0-based number among those made
 * inside a PG_TRY throws ERROR "out of memory", as palloc() does in a
 * backend.
 */
extern void fuzz_backend_begin(long fail_alloc);

/*
 * Check that the call left the error machinery as a backend needs it (error
 * state flushed, exception stack and memory context restored), fill *stats
 * and free the arena, i.e. reset the caller's context.  Aborts on a
 * violation.
 */
extern void fuzz_backend_end(FuzzBackendStats *stats);

/* Abort with a message naming the violated invariant. */
extern void fuzz_fail(const char *what) __attribute__((noreturn));

#endif							/* SWARM_FUZZ_BACKEND_H */
