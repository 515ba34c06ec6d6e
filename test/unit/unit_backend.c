/*-------------------------------------------------------------------------
 *
 * unit_backend.c
 *		Just enough of a PostgreSQL backend for src/jobs.c and src/request.c
 *		(and src/openai.c, src/outcome.c beneath them) to run, unchanged,
 *		in a unit test without a server.
 *
 * The src/ files are compiled against the server headers exactly as in the
 * extension build.  StringInfo, psprintf, the JSON parser, pg_prng and the
 * bit tables come from Debian's libpgcommon.a/libpgport.a (frontend builds
 * of the same PostgreSQL 15 sources).  What is left lives here:
 *
 *	memory contexts	Real ones, not an arena: AllocSet, Generation and Slab
 *					contexts all behave alike here (a context is a list of
 *					its chunks plus its children), nest under their parent,
 *					and free their chunks on MemoryContextReset() (which, as
 *					in PG, deletes the children) and MemoryContextDelete().
 *					Every chunk is a malloc of its own, laid out as PG 15
 *					requires: the owning MemoryContext pointer is stored in
 *					the sizeof(void *) bytes immediately before the chunk, so
 *					GetMemoryChunkContext() works, and pfree()/repalloc() find
 *					the owner through it.  So AddressSanitizer reports any
 *					chunk used after its context was reset or deleted, any
 *					overrun of a palloc'd string, and a context used after
 *					it was deleted (the context struct is freed too).
 *					repalloc() always moves the chunk, so a stale pointer to
 *					the old one trips ASan as well.  New memory is filled
 *					with 0x7f (RANDOMIZE_ALLOCATED_MEMORY) unless zeroing was
 *					asked for.  An allocation can be made to throw "out of
 *					memory" (unit_fail_alloc) to reach PG_CATCH paths.
 *	ereport/elog	errstart/errstart_cold/errfinish and the err*() helpers
 *					the PG 15 elog.h macros expand to.  ERROR switches to
 *					ErrorContext and siglongjmps to *PG_exception_stack, as a
 *					backend does; an ERROR with no PG_TRY around it prints
 *					"Bail out!" with its message and aborts the test (in the
 *					worker it would end the process).  FATAL and PANIC
 *					abort too.  Lower levels go to stderr.  CopyErrorData()
 *					refuses to run in ErrorContext or with no error pending.
 *	pairingheap		A stand-in, NOT PG's pairing heap: an unsorted doubly
 *					linked list (chained through first_child/prev_or_parent,
 *					so pairingheap_is_empty() and pairingheap_is_singular()
 *					read it correctly), scanned for the greatest node by
 *					pairingheap_first()/remove_first().  Same contract, O(n);
 *					in addition it aborts when a node is added while already
 *					in a heap, or removed from a heap that does not hold it.
 *	GetCurrentTimestamp()  A test clock, set by unit_set_now().
 *	escape_json()	PG 15's, reproduced (utils/adt/json.c).
 *	json_errdetail(), pg_verify_mbstr(), pg_mbcliplen()  For src/openai.c and
 *					src/outcome.c, as in test/fuzz/fuzz_backend.c (UTF-8).
 *
 * libpgcommon's fe_memutils.o also defines palloc & co.; every symbol of it
 * that anything here needs is defined below, so the linker never pulls that
 * member in and takes these (as test/fuzz/fuzz_backend.c does).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/jsonapi.h"
#include "lib/pairingheap.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/memnodes.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "unit_backend.h"

static void pg_attribute_noreturn()
unit_fatal(const char *fmt,...) pg_attribute_printf(1, 2);

static void
unit_fatal(const char *fmt,...)
{
	va_list		ap;

	fflush(stdout);
	printf("Bail out! ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	abort();
}

/* ---------------------------------------------------------------------
 * Memory contexts
 * --------------------------------------------------------------------- */

#define CONTEXT_LIVE	UINT64CONST(0x53574d4358544c56)
#define CHUNK_LIVE		UINT64CONST(0x53574d43484b4c56)
#define CHUNK_DEAD		UINT64CONST(0x53574d43484b4444)

typedef struct UnitChunk
{
	struct UnitChunk *prev;
	struct UnitChunk *next;
	Size		size;
	uint64		magic;
	MemoryContext context;		/* last: right before the chunk, as PG 15 needs */
} UnitChunk;

StaticAssertDecl(offsetof(UnitChunk, context) + sizeof(MemoryContext) == sizeof(UnitChunk),
				 "the owning context must immediately precede the chunk");
StaticAssertDecl(sizeof(UnitChunk) % MAXIMUM_ALIGNOF == 0,
				 "palloc'd memory must stay MAXALIGNed");

typedef struct UnitContext
{
	MemoryContextData header;	/* first: a MemoryContext points here */
	uint64		magic;
	UnitChunk  *chunks;			/* live chunks, newest first */
	size_t		nchunks;
	size_t		nallocs;		/* allocations made in it, ever */
	long		fail_at;		/* nallocs value that throws; -1: none */
	bool		is_static;		/* TopMemoryContext, ErrorContext: never freed */
} UnitContext;

static UnitContext top_context = {
	.header = {.type = T_AllocSetContext, .isReset = true, .name = "TopMemoryContext"},
	.magic = CONTEXT_LIVE, .fail_at = -1, .is_static = true
};
static UnitContext error_context = {
	.header = {.type = T_AllocSetContext, .isReset = true, .name = "ErrorContext"},
	.magic = CONTEXT_LIVE, .fail_at = -1, .is_static = true
};

MemoryContext TopMemoryContext = &top_context.header;
MemoryContext ErrorContext = &error_context.header;
MemoryContext CurrentMemoryContext = &top_context.header;

static int	live_contexts = 0;

static void throw_error(const char *message) pg_attribute_noreturn();

static UnitContext *
unit_context(MemoryContext cxt, const char *what)
{
	UnitContext *u = (UnitContext *) cxt;

	if (cxt == NULL)
		unit_fatal("%s: NULL memory context", what);
	if (u->magic != CONTEXT_LIVE || !MemoryContextIsValid(cxt))
		unit_fatal("%s: not a live memory context (%p)", what, (void *) cxt);
	return u;
}

static MemoryContext
context_create(MemoryContext parent, const char *name, NodeTag tag)
{
	UnitContext *u = calloc(1, sizeof(UnitContext));

	if (u == NULL)
		abort();
	u->header.type = tag;
	u->header.isReset = true;
	u->header.name = name;
	u->magic = CONTEXT_LIVE;
	u->fail_at = -1;
	if (parent != NULL)
	{
		(void) unit_context(parent, "creating a child context");
		u->header.parent = parent;
		u->header.nextchild = parent->firstchild;
		if (parent->firstchild)
			parent->firstchild->prevchild = &u->header;
		parent->firstchild = &u->header;
	}
	live_contexts++;
	return &u->header;
}

MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name, Size minContextSize,
							  Size initBlockSize, Size maxBlockSize)
{
	return context_create(parent, name, T_AllocSetContext);
}

MemoryContext
GenerationContextCreate(MemoryContext parent, const char *name, Size minContextSize,
						Size initBlockSize, Size maxBlockSize)
{
	return context_create(parent, name, T_GenerationContext);
}

MemoryContext
SlabContextCreate(MemoryContext parent, const char *name, Size blockSize, Size chunkSize)
{
	return context_create(parent, name, T_SlabContext);
}

static void
free_chunks(UnitContext *u)
{
	while (u->chunks)
	{
		UnitChunk  *next = u->chunks->next;

		u->chunks->magic = CHUNK_DEAD;
		free(u->chunks);
		u->chunks = next;
	}
	u->nchunks = 0;
	u->header.mem_allocated = 0;
	u->header.isReset = true;
}

static void
run_reset_callbacks(MemoryContext cxt)
{
	MemoryContextCallback *cb;

	while ((cb = cxt->reset_cbs) != NULL)
	{
		cxt->reset_cbs = cb->next;
		cb->func(cb->arg);
	}
}

void
MemoryContextDelete(MemoryContext context)
{
	UnitContext *u = unit_context(context, "MemoryContextDelete");

	if (u->is_static)
		unit_fatal("MemoryContextDelete(%s)", context->name);
	if (context == CurrentMemoryContext)
		unit_fatal("MemoryContextDelete(%s) of the current memory context", context->name);
	MemoryContextDeleteChildren(context);
	run_reset_callbacks(context);
	if (context->parent)
	{
		if (context->prevchild)
			context->prevchild->nextchild = context->nextchild;
		else
			context->parent->firstchild = context->nextchild;
		if (context->nextchild)
			context->nextchild->prevchild = context->prevchild;
	}
	free_chunks(u);
	u->magic = 0;
	live_contexts--;
	free(u);
}

void
MemoryContextDeleteChildren(MemoryContext context)
{
	(void) unit_context(context, "MemoryContextDeleteChildren");
	while (context->firstchild != NULL)
		MemoryContextDelete(context->firstchild);
}

void
MemoryContextResetOnly(MemoryContext context)
{
	UnitContext *u = unit_context(context, "MemoryContextReset");

	run_reset_callbacks(context);
	free_chunks(u);
}

/* as in PG: a reset deletes the children, then frees the context's chunks */
void
MemoryContextReset(MemoryContext context)
{
	MemoryContextDeleteChildren(context);
	MemoryContextResetOnly(context);
}

void
MemoryContextResetChildren(MemoryContext context)
{
	(void) unit_context(context, "MemoryContextResetChildren");
	for (MemoryContext child = context->firstchild; child; child = child->nextchild)
	{
		MemoryContextResetChildren(child);
		MemoryContextResetOnly(child);
	}
}

MemoryContext
MemoryContextGetParent(MemoryContext context)
{
	return unit_context(context, "MemoryContextGetParent")->header.parent;
}

void
MemoryContextSetParent(MemoryContext context, MemoryContext new_parent)
{
	(void) unit_context(context, "MemoryContextSetParent");
	if (context->parent)
	{
		if (context->prevchild)
			context->prevchild->nextchild = context->nextchild;
		else
			context->parent->firstchild = context->nextchild;
		if (context->nextchild)
			context->nextchild->prevchild = context->prevchild;
	}
	context->parent = new_parent;
	context->prevchild = NULL;
	context->nextchild = NULL;
	if (new_parent)
	{
		context->nextchild = new_parent->firstchild;
		if (new_parent->firstchild)
			new_parent->firstchild->prevchild = context;
		new_parent->firstchild = context;
	}
}

void
MemoryContextSetIdentifier(MemoryContext context, const char *id)
{
	context->ident = id;
}

void
MemoryContextRegisterResetCallback(MemoryContext context, MemoryContextCallback *cb)
{
	cb->next = context->reset_cbs;
	context->reset_cbs = cb;
	context->isReset = false;
}

bool
MemoryContextIsEmpty(MemoryContext context)
{
	return unit_context(context, "MemoryContextIsEmpty")->nchunks == 0;
}

Size
MemoryContextMemAllocated(MemoryContext context, bool recurse)
{
	Size		total = context->mem_allocated;

	if (recurse)
		for (MemoryContext child = context->firstchild; child; child = child->nextchild)
			total += MemoryContextMemAllocated(child, true);
	return total;
}

void
MemoryContextStats(MemoryContext context)
{
	UnitContext *u = unit_context(context, "MemoryContextStats");

	fprintf(stderr, "%s: %zu chunks, %zu bytes\n", context->name, u->nchunks,
			(size_t) context->mem_allocated);
}

static UnitChunk *
chunk_of(void *pointer, const char *what)
{
	UnitChunk  *c;

	if (pointer == NULL)
		unit_fatal("%s(NULL)", what);
	if (pointer != (void *) MAXALIGN(pointer))
		unit_fatal("%s of a pointer that is not MAXALIGNed", what);
	c = (UnitChunk *) pointer - 1;
	if (c->magic != CHUNK_LIVE)
		unit_fatal("%s of a pointer palloc() did not return, or freed", what);
	if (GetMemoryChunkContext(pointer) != c->context)
		unit_fatal("%s: chunk header inconsistent", what);
	(void) unit_context(c->context, what);
	return c;
}

static void *
chunk_alloc(MemoryContext context, Size size, int flags)
{
	UnitContext *u = unit_context(context, "palloc");
	UnitChunk  *c;

	if ((flags & MCXT_ALLOC_HUGE) ? !AllocHugeSizeIsValid(size) : !AllocSizeIsValid(size))
		elog(ERROR, "invalid memory alloc request size %zu", size);
	if (u->fail_at >= 0 && u->nallocs == (size_t) u->fail_at)
	{
		u->fail_at = -1;
		u->nallocs++;
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		throw_error("out of memory");
	}
	u->nallocs++;

	c = malloc(sizeof(UnitChunk) + size);
	if (c == NULL)
		abort();
	c->magic = CHUNK_LIVE;
	c->size = size;
	c->context = context;
	c->prev = NULL;
	c->next = u->chunks;
	if (u->chunks)
		u->chunks->prev = c;
	u->chunks = c;
	u->nchunks++;
	context->mem_allocated += size;
	context->isReset = false;
	memset(c + 1, (flags & MCXT_ALLOC_ZERO) ? 0 : 0x7f, size);
	return c + 1;
}

void
pfree(void *pointer)
{
	UnitChunk  *c = chunk_of(pointer, "pfree");
	UnitContext *u = (UnitContext *) c->context;

	if (c->prev)
		c->prev->next = c->next;
	else
		u->chunks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	u->nchunks--;
	u->header.mem_allocated -= c->size;
	c->magic = CHUNK_DEAD;
	free(c);
}

static void *
chunk_realloc(void *pointer, Size size, int flags)
{
	UnitChunk  *old = chunk_of(pointer, "repalloc");
	void	   *p = chunk_alloc(old->context, size, flags);

	memcpy(p, pointer, Min(old->size, size));
	pfree(pointer);
	return p;
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return chunk_alloc(context, size, 0);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	return chunk_alloc(context, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocZeroAligned(MemoryContext context, Size size)
{
	return chunk_alloc(context, size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	return chunk_alloc(context, size, flags);
}

void *
MemoryContextAllocHuge(MemoryContext context, Size size)
{
	return chunk_alloc(context, size, MCXT_ALLOC_HUGE);
}

void *
palloc(Size size)
{
	return chunk_alloc(CurrentMemoryContext, size, 0);
}

void *
palloc0(Size size)
{
	return chunk_alloc(CurrentMemoryContext, size, MCXT_ALLOC_ZERO);
}

void *
palloc_extended(Size size, int flags)
{
	return chunk_alloc(CurrentMemoryContext, size, flags);
}

void *
repalloc(void *pointer, Size size)
{
	return chunk_realloc(pointer, size, 0);
}

void *
repalloc_huge(void *pointer, Size size)
{
	return chunk_realloc(pointer, size, MCXT_ALLOC_HUGE);
}

Size
GetMemoryChunkSpace(void *pointer)
{
	return chunk_of(pointer, "GetMemoryChunkSpace")->size + sizeof(UnitChunk);
}

char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	size_t		len = strlen(string) + 1;
	char	   *out = chunk_alloc(context, len, 0);

	memcpy(out, string, len);
	return out;
}

char *
pstrdup(const char *in)
{
	return MemoryContextStrdup(CurrentMemoryContext, in);
}

char *
pnstrdup(const char *in, Size len)
{
	size_t		n = strnlen(in, len);
	char	   *out = palloc(n + 1);

	memcpy(out, in, n);
	out[n] = '\0';
	return out;
}

char *
pchomp(const char *in)
{
	size_t		n = strlen(in);

	while (n > 0 && in[n - 1] == '\n')
		n--;
	return pnstrdup(in, n);
}

size_t
unit_context_chunks(MemoryContext cxt)
{
	return unit_context(cxt, "unit_context_chunks")->nchunks;
}

int
unit_live_contexts(void)
{
	return live_contexts;
}

void
unit_fail_alloc(MemoryContext cxt, long nth)
{
	UnitContext *u = unit_context(cxt, "unit_fail_alloc");

	u->fail_at = nth < 0 ? -1 : (long) u->nallocs + nth;
}

/* ---------------------------------------------------------------------
 * Errors
 * --------------------------------------------------------------------- */

sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;

/* the report being built (errstart .. errfinish), then the pending ERROR */
typedef struct UnitError
{
	int			elevel;
	int			sqlerrcode;
	char	   *message;
	char	   *detail;
	char	   *hint;
	char	   *context;
	const char *filename;
	int			lineno;
	const char *funcname;
} UnitError;

static UnitError building;
static bool error_pending = false;
static char pending_message[1024];
static UnitError pending;
static int	log_count = 0;

static void
clear_error(UnitError *e)
{
	free(e->message);
	free(e->detail);
	free(e->hint);
	free(e->context);
	memset(e, 0, sizeof(*e));
}

static char *
vformat(const char *fmt, va_list ap)
{
	char	   *s;

	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	return s;
}

static void
throw_error(const char *message)
{
	clear_error(&pending);
	pending.elevel = ERROR;
	pending.sqlerrcode = ERRCODE_OUT_OF_MEMORY;
	pending.message = strdup(message);
	snprintf(pending_message, sizeof(pending_message), "%s", message);
	if (PG_exception_stack == NULL)
		unit_fatal("ERROR with no PG_TRY around it: %s", message);
	error_pending = true;
	CurrentMemoryContext = ErrorContext;
	siglongjmp(*PG_exception_stack, 1);
}

bool
message_level_is_interesting(int elevel)
{
	return elevel >= LOG;
}

bool
errstart(int elevel, const char *domain)
{
	if (elevel < LOG)
		return false;
	clear_error(&building);
	building.elevel = elevel;
	building.sqlerrcode = elevel >= ERROR ? ERRCODE_INTERNAL_ERROR : 0;
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	int			elevel = building.elevel;

	building.filename = filename;
	building.lineno = lineno;
	building.funcname = funcname;
	if (elevel < ERROR)
	{
		log_count++;
		fprintf(stderr, "%s: %s\n", elevel >= WARNING ? "WARNING" : "LOG",
				building.message ? building.message : "");
		clear_error(&building);
		return;
	}
	if (elevel > ERROR)
		unit_fatal("%s at %s:%d: %s", elevel == FATAL ? "FATAL" : "PANIC", filename, lineno,
				   building.message ? building.message : "");
	if (PG_exception_stack == NULL)
		unit_fatal("ERROR with no PG_TRY around it, at %s:%d: %s", filename, lineno,
				   building.message ? building.message : "");
	/* a second ERROR while one is handled replaces it (PG stacks them) */
	clear_error(&pending);
	pending = building;
	memset(&building, 0, sizeof(building));
	snprintf(pending_message, sizeof(pending_message), "%s",
			 pending.message ? pending.message : "");
	error_pending = true;
	CurrentMemoryContext = ErrorContext;
	siglongjmp(*PG_exception_stack, 1);
}

int
errcode(int sqlerrcode)
{
	building.sqlerrcode = sqlerrcode;
	return 0;
}

int
errcode_for_file_access(void)
{
	building.sqlerrcode = ERRCODE_INTERNAL_ERROR;
	return 0;
}

int
errcode_for_socket_access(void)
{
	building.sqlerrcode = ERRCODE_INTERNAL_ERROR;
	return 0;
}

#define SET_FIELD(field) \
	do { \
		va_list		ap; \
		free(building.field); \
		va_start(ap, fmt); \
		building.field = vformat(fmt, ap); \
		va_end(ap); \
	} while (0)

int
errmsg(const char *fmt,...)
{
	SET_FIELD(message);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	SET_FIELD(message);
	return 0;
}

int
errmsg_plural(const char *fmt_singular, const char *fmt_plural, unsigned long n,...)
{
	const char *fmt = n == 1 ? fmt_singular : fmt_plural;
	va_list		ap;

	free(building.message);
	va_start(ap, n);
	building.message = vformat(fmt, ap);
	va_end(ap);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	SET_FIELD(detail);
	return 0;
}

int
errdetail_internal(const char *fmt,...)
{
	SET_FIELD(detail);
	return 0;
}

int
errdetail_log(const char *fmt,...)
{
	SET_FIELD(detail);
	return 0;
}

int
errhint(const char *fmt,...)
{
	SET_FIELD(hint);
	return 0;
}

int
errcontext_msg(const char *fmt,...)
{
	SET_FIELD(context);
	return 0;
}

int
set_errcontext_domain(const char *domain)
{
	return 0;
}

int
errhidestmt(bool hide_stmt)
{
	return 0;
}

int
errhidecontext(bool hide_ctx)
{
	return 0;
}

int
errposition(int cursorpos)
{
	return 0;
}

int
geterrcode(void)
{
	return pending.sqlerrcode;
}

static char *
copy_or_null(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

ErrorData *
CopyErrorData(void)
{
	ErrorData  *edata;

	if (!error_pending)
		unit_fatal("CopyErrorData() with no error pending");
	if (CurrentMemoryContext == ErrorContext)
		unit_fatal("CopyErrorData() called while in ErrorContext");
	edata = palloc0(sizeof(ErrorData));
	edata->elevel = pending.elevel;
	edata->sqlerrcode = pending.sqlerrcode;
	edata->message = copy_or_null(pending.message);
	edata->detail = copy_or_null(pending.detail);
	edata->hint = copy_or_null(pending.hint);
	edata->context = copy_or_null(pending.context);
	edata->filename = pending.filename;
	edata->lineno = pending.lineno;
	edata->funcname = pending.funcname;
	return edata;
}

void
FreeErrorData(ErrorData *edata)
{
	if (edata->message)
		pfree(edata->message);
	if (edata->detail)
		pfree(edata->detail);
	if (edata->hint)
		pfree(edata->hint);
	if (edata->context)
		pfree(edata->context);
	pfree(edata);
}

void
FlushErrorState(void)
{
	error_pending = false;
	clear_error(&pending);
	MemoryContextResetOnly(ErrorContext);
}

void
pg_re_throw(void)
{
	if (!error_pending)
		unit_fatal("PG_RE_THROW() with no error pending");
	if (PG_exception_stack == NULL)
		unit_fatal("ERROR with no PG_TRY around it (re-thrown): %s", pending_message);
	siglongjmp(*PG_exception_stack, 1);
}

void
EmitErrorReport(void)
{
	if (error_pending)
		fprintf(stderr, "ERROR: %s\n", pending_message);
}

int
unit_log_count(void)
{
	return log_count;
}

/* ---------------------------------------------------------------------
 * pairingheap: a stand-in (an unsorted list scanned for the greatest node)
 * --------------------------------------------------------------------- */

#define MAX_HEAPS 1024
static pairingheap *all_heaps[MAX_HEAPS];
static int	nheaps = 0;

pairingheap *
pairingheap_allocate(pairingheap_comparator compare, void *arg)
{
	pairingheap *heap = palloc(sizeof(pairingheap));

	heap->ph_compare = compare;
	heap->ph_arg = arg;
	heap->ph_root = NULL;
	if (nheaps == MAX_HEAPS)
		unit_fatal("pairingheap stand-in: more than %d heaps", MAX_HEAPS);
	all_heaps[nheaps++] = heap;
	return heap;
}

void
pairingheap_free(pairingheap *heap)
{
	for (int i = 0; i < nheaps; i++)
		if (all_heaps[i] == heap)
			all_heaps[i] = all_heaps[--nheaps];
	pfree(heap);
}

static bool
heap_holds(pairingheap *heap, pairingheap_node *node)
{
	for (pairingheap_node *n = heap->ph_root; n; n = n->first_child)
		if (n == node)
			return true;
	return false;
}

void
pairingheap_add(pairingheap *heap, pairingheap_node *node)
{
	for (int i = 0; i < nheaps; i++)
		if (heap_holds(all_heaps[i], node))
			unit_fatal("pairingheap_add() of a node already in a heap");
	node->first_child = heap->ph_root;	/* next */
	node->prev_or_parent = NULL;	/* previous */
	node->next_sibling = NULL;
	if (heap->ph_root)
		heap->ph_root->prev_or_parent = node;
	heap->ph_root = node;
}

pairingheap_node *
pairingheap_first(pairingheap *heap)
{
	pairingheap_node *best = heap->ph_root;

	if (best == NULL)
		unit_fatal("pairingheap_first() of an empty heap");
	for (pairingheap_node *n = best->first_child; n; n = n->first_child)
		if (heap->ph_compare(n, best, heap->ph_arg) > 0)
			best = n;
	return best;
}

void
pairingheap_remove(pairingheap *heap, pairingheap_node *node)
{
	if (!heap_holds(heap, node))
		unit_fatal("pairingheap_remove() of a node the heap does not hold");
	if (node->prev_or_parent)
		node->prev_or_parent->first_child = node->first_child;
	else
		heap->ph_root = node->first_child;
	if (node->first_child)
		node->first_child->prev_or_parent = node->prev_or_parent;
	node->first_child = node->prev_or_parent = node->next_sibling = NULL;
}

pairingheap_node *
pairingheap_remove_first(pairingheap *heap)
{
	pairingheap_node *first = pairingheap_first(heap);

	pairingheap_remove(heap, first);
	return first;
}

/* ---------------------------------------------------------------------
 * The clock
 * --------------------------------------------------------------------- */

static TimestampTz unit_clock = UNIT_T0;

void
unit_set_now(TimestampTz now)
{
	unit_clock = now;
}

TimestampTz
unit_now(void)
{
	return unit_clock;
}

TimestampTz
GetCurrentTimestamp(void)
{
	return unit_clock;
}

/* ---------------------------------------------------------------------
 * JSON and encoding pieces (for openai.c and outcome.c)
 * --------------------------------------------------------------------- */

/* PG 15's utils/adt/json.c */
void
escape_json(StringInfo buf, const char *str)
{
	const char *p;

	appendStringInfoCharMacro(buf, '"');
	for (p = str; *p; p++)
	{
		switch (*p)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if ((unsigned char) *p < ' ')
					appendStringInfo(buf, "\\u%04x", (int) *p);
				else
					appendStringInfoCharMacro(buf, *p);
				break;
		}
	}
	appendStringInfoCharMacro(buf, '"');
}

/* Backend-only in PG 15; the words differ from the backend's. */
char *
json_errdetail(JsonParseErrorType error, JsonLexContext *lex)
{
	return psprintf("invalid JSON (parse error %d)", (int) error);
}

bool
pg_verify_mbstr(int encoding, const char *mbstr, int len, bool noError)
{
	if (pg_encoding_verifymbstr(encoding, mbstr, len) == len)
		return true;
	if (!noError)
		elog(ERROR, "invalid byte sequence");
	return false;
}

/* UTF-8 only (all the worker speaks): the longest prefix of whole characters */
int
pg_mbcliplen(const char *mbstr, int len, int limit)
{
	int			clen = 0;

	while (clen < len && mbstr[clen] != '\0')
	{
		int			l = pg_utf_mblen((const unsigned char *) mbstr + clen);

		if (clen + l > limit)
			break;
		clen += l;
	}
	return clen;
}
