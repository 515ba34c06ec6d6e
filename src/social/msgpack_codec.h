/*
 * msgpack_codec.h
 *		The server-independent core of pg_swarm's MessagePack decoder.
 *
 * This header deliberately includes no Postgres header: the walker it declares
 * (swarm_msgpack_walk) is plain C so that test/fuzz/fuzz_unpack.c can link
 * src/social/msgpack_codec.c built with -DSWARM_MSGPACK_STANDALONE, without a server.
 * The Postgres glue (swarm.pack / swarm.unpack) lives in the same .c file,
 * below an #ifndef SWARM_MSGPACK_STANDALONE.
 *
 * The walker validates a MessagePack buffer completely and reports it as a
 * stream of events (begin/end of containers, map keys, scalars), in document
 * order.  It never reads outside the buffer, never recurses (nesting depth is
 * bounded only by memory), and never allocates more than one stack entry per
 * container byte actually present in the input.
 */
#ifndef SWARM_MSGPACK_CODEC_H
#define SWARM_MSGPACK_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * MessagePack extension type that carries a JSON number which neither a
 * MessagePack integer nor a float64 can hold exactly (0.10, 1e400, 2^64, ...).
 * The payload is the number as ASCII text in JSON number syntax.
 */
#define SWARM_MSGPACK_EXT_DECIMAL 1

typedef enum SwarmMsgpackError
{
	SWARM_MP_OK = 0,
	SWARM_MP_EMPTY,				/* zero-length input */
	SWARM_MP_TRUNCATED,			/* input ends inside a value */
	SWARM_MP_TRAILING,			/* bytes left after the first complete value */
	SWARM_MP_RESERVED,			/* the never-used type byte 0xc1 */
	SWARM_MP_KEY_NOT_STRING,	/* a map key that is not a str */
	SWARM_MP_BAD_UTF8,			/* a str that is not valid UTF-8 */
	SWARM_MP_NUL_IN_STRING,		/* a str containing U+0000 (jsonb refuses it) */
	SWARM_MP_BIN,				/* bin 8/16/32: JSON has no byte strings */
	SWARM_MP_EXT_TYPE,			/* an ext type other than SWARM_MSGPACK_EXT_DECIMAL */
	SWARM_MP_BAD_DECIMAL,		/* decimal ext whose payload is not a JSON number */
	SWARM_MP_NONFINITE,			/* NaN or infinite float: JSON cannot hold it */
	SWARM_MP_NOMEM,				/* the stack allocator failed */
	SWARM_MP_STOPPED			/* the event callback asked to stop */
} SwarmMsgpackError;

typedef enum SwarmMsgpackEventKind
{
	SWARM_MP_EV_NULL,
	SWARM_MP_EV_BOOL,
	SWARM_MP_EV_INT,			/* v.i: a signed value (negative, or from int8..int64) */
	SWARM_MP_EV_UINT,			/* v.u: a non-negative value */
	SWARM_MP_EV_FLOAT32,		/* v.f: widened from a float32 */
	SWARM_MP_EV_FLOAT64,
	SWARM_MP_EV_STRING,			/* v.s: a string value (validated UTF-8, no NUL) */
	SWARM_MP_EV_KEY,			/* v.s: a map key (same validation) */
	SWARM_MP_EV_DECIMAL,		/* v.s: JSON number text from the decimal ext */
	SWARM_MP_EV_ARRAY_BEGIN,	/* v.count elements follow */
	SWARM_MP_EV_ARRAY_END,
	SWARM_MP_EV_MAP_BEGIN,		/* v.count key/value pairs follow */
	SWARM_MP_EV_MAP_END
} SwarmMsgpackEventKind;

typedef enum SwarmMsgpackParent
{
	SWARM_MP_PARENT_NONE,		/* the root value */
	SWARM_MP_PARENT_ARRAY,
	SWARM_MP_PARENT_MAP
} SwarmMsgpackParent;

typedef struct SwarmMsgpackEvent
{
	SwarmMsgpackEventKind kind;
	SwarmMsgpackParent parent;	/* container the value sits in (for *_END: of
								 * the container that ends) */
	union
	{
		bool		b;
		int64_t		i;
		uint64_t	u;
		double		f;
		struct
		{
			const char *ptr;	/* points into the input; not NUL-terminated */
			size_t		len;
		}			s;
		uint32_t	count;
	}			v;
} SwarmMsgpackEvent;

/* Return false to stop the walk (it then returns SWARM_MP_STOPPED). */
typedef bool (*SwarmMsgpackCallback) (void *ctx, const SwarmMsgpackEvent *ev);

/*
 * Allocator for the walker's container stack: like realloc(ptr, size) when size
 * > 0, free(ptr) when size == 0.  Returning NULL for size > 0 means out of
 * memory.  In the server this is palloc/repalloc (which ereport instead).
 */
typedef void *(*SwarmMsgpackRealloc) (void *ctx, void *ptr, size_t size);

typedef struct SwarmMsgpackWalkResult
{
	SwarmMsgpackError error;
	size_t		offset;			/* where the error was found */
	int			ext_type;		/* for SWARM_MP_EXT_TYPE */
} SwarmMsgpackWalkResult;

extern SwarmMsgpackWalkResult swarm_msgpack_walk(const uint8_t *buf, size_t len,
												 SwarmMsgpackCallback cb, void *cb_ctx,
												 SwarmMsgpackRealloc alloc, void *alloc_ctx);
extern const char *swarm_msgpack_strerror(SwarmMsgpackError error);
extern bool swarm_msgpack_is_json_number(const char *s, size_t len);
extern bool swarm_msgpack_is_utf8(const char *s, size_t len, bool *has_nul);

#endif							/* SWARM_MSGPACK_CODEC_H */
