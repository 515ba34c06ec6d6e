/*-------------------------------------------------------------------------
 *
 * unit_backend.h
 *		Stand-ins for the backend pieces that src/jobs.c and src/request.c
 *		use (memory contexts, ereport, pairingheap, the clock), so that both
 *		files compile unchanged against the server headers and link without
 *		a server.  See unit_backend.c for what each stand-in imitates, and
 *		where it deliberately differs.
 *
 * Unlike test/fuzz/fuzz_backend.c (one arena standing for "the caller's
 * context"), these memory contexts are real: they nest, own their chunks,
 * and free them on reset or delete, each chunk a malloc of its own, so that
 * AddressSanitizer reports a pointer used after its context let it go.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_UNIT_BACKEND_H
#define SWARM_UNIT_BACKEND_H

#include "postgres.h"

#include "utils/timestamp.h"

/* The test clock GetCurrentTimestamp() reads (starts at UNIT_T0). */
#define UNIT_T0		((TimestampTz) 700000000 * USECS_PER_SEC)	/* 2022-03-08 */
extern void unit_set_now(TimestampTz now);
extern TimestampTz unit_now(void);

/* Chunks allocated in `cxt` and not yet freed (not counting its children). */
extern size_t unit_context_chunks(MemoryContext cxt);

/* Contexts created and not deleted (TopMemoryContext and ErrorContext excluded). */
extern int	unit_live_contexts(void);

/*
 * From now on, the allocation with 0-based number `nth` among those made in
 * `cxt` (palloc & co., repalloc included) throws ERROR "out of memory", as
 * palloc does in a backend; -1 turns it off.  Fires once.
 */
extern void unit_fail_alloc(MemoryContext cxt, long nth);

/* Messages of ereport(LOG/WARNING/...) seen so far (they go to stderr). */
extern int	unit_log_count(void);

/*
 * Run `stmt` (a statement), catching an ERROR it raises: sets the bool
 * lvalue `raised`, and copies the error's message into the char array
 * `msgbuf` (empty when nothing was raised).  The error state is flushed
 * and the memory context the statement started in is restored, as a
 * worker's PG_CATCH does; the code under test may be left mid-way.
 */
#define UNIT_CATCH(raised, msgbuf, stmt) \
	do { \
		MemoryContext unit_catch_cxt_ = CurrentMemoryContext; \
		(raised) = false; \
		(msgbuf)[0] = '\0'; \
		PG_TRY(); \
		{ \
			stmt; \
		} \
		PG_CATCH(); \
		{ \
			ErrorData  *unit_catch_e_; \
			MemoryContextSwitchTo(unit_catch_cxt_); \
			unit_catch_e_ = CopyErrorData(); \
			FlushErrorState(); \
			snprintf((msgbuf), sizeof(msgbuf), "%s", \
					 unit_catch_e_->message ? unit_catch_e_->message : ""); \
			FreeErrorData(unit_catch_e_); \
			(raised) = true; \
		} \
		PG_END_TRY(); \
	} while (0)

#endif							/* SWARM_UNIT_BACKEND_H */
