/*
 * fuzz_unpack.c
 *		libFuzzer target for pg_swarm's MessagePack decoder (swarm.unpack).
 *
 * It links src/social/msgpack_codec.c built with -DSWARM_MSGPACK_STANDALONE, i.e. the
 * exact walker the server runs, without Postgres.  For every input it checks:
 *  - the walker never reads out of bounds or crashes (ASan/UBSan);
 *  - the event stream is well formed: begins and ends balance, keys appear
 *    only in maps and alternate with values, container counts match;
 *  - when the input is accepted, re-encoding the events canonically and
 *    walking that again gives the same canonical bytes (a fixpoint), so the
 *    events carry every bit of the value;
 *  - the stack allocator is always released (LeakSanitizer).
 *
 * Build and run: test/fuzz/run_fuzz.sh [seconds].
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msgpack_codec.h"

typedef struct Buf
{
	uint8_t    *data;
	size_t		len;
	size_t		cap;
} Buf;

typedef struct Frame
{
	int			is_map;
	uint32_t	count;
	uint32_t	seen;
} Frame;

typedef struct Checker
{
	Buf			out;			/* canonical re-encoding (the "StringInfo" stub) */
	Frame	   *frames;
	size_t		depth;
	size_t		fcap;
	int			done;
} Checker;

static void
buf_put(Buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap)
	{
		b->cap = (b->len + n) * 2 + 64;
		b->data = realloc(b->data, b->cap);
		if (!b->data)
			abort();
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void
put_be(Buf *b, uint8_t tag, uint64_t v, int n)
{
	uint8_t		tmp[9];

	tmp[0] = tag;
	for (int k = 0; k < n; k++)
		tmp[1 + k] = (uint8_t) (v >> (8 * (n - 1 - k)));
	buf_put(b, tmp, 1 + n);
}

static void
put_str(Buf *b, const char *p, size_t n)
{
	put_be(b, 0xdb, n, 4);
	buf_put(b, p, n);
}

static int
check_event(void *ctx, const SwarmMsgpackEvent *ev)
{
	Checker    *c = ctx;
	Frame	   *top = c->depth ? &c->frames[c->depth - 1] : NULL;
	int			ends = (ev->kind == SWARM_MP_EV_ARRAY_END || ev->kind == SWARM_MP_EV_MAP_END);

	if (c->done)
		abort();				/* nothing may follow the root value */

	if (!ends)
	{
		/* where may this value be? */
		if (top == NULL && ev->parent != SWARM_MP_PARENT_NONE)
			abort();
		if (top && ev->parent != (top->is_map ? SWARM_MP_PARENT_MAP : SWARM_MP_PARENT_ARRAY))
			abort();
		if (top && top->is_map && (top->seen % 2 == 0) != (ev->kind == SWARM_MP_EV_KEY))
			abort();
		if (!top && ev->kind == SWARM_MP_EV_KEY)
			abort();
		if (top && top->seen >= (top->is_map ? 2 * (uint64_t) top->count : top->count))
			abort();
		if (top)
			top->seen++;
	}

	switch (ev->kind)
	{
		case SWARM_MP_EV_NULL:
			put_be(&c->out, 0xc0, 0, 0);
			break;
		case SWARM_MP_EV_BOOL:
			put_be(&c->out, ev->v.b ? 0xc3 : 0xc2, 0, 0);
			break;
		case SWARM_MP_EV_INT:
			put_be(&c->out, 0xd3, (uint64_t) ev->v.i, 8);
			break;
		case SWARM_MP_EV_UINT:
			put_be(&c->out, 0xcf, ev->v.u, 8);
			break;
		case SWARM_MP_EV_FLOAT32:
		case SWARM_MP_EV_FLOAT64:
			{
				uint64_t	bits;

				memcpy(&bits, &ev->v.f, 8);
				put_be(&c->out, 0xcb, bits, 8);
				break;
			}
		case SWARM_MP_EV_STRING:
		case SWARM_MP_EV_KEY:
			put_str(&c->out, ev->v.s.ptr, ev->v.s.len);
			break;
		case SWARM_MP_EV_DECIMAL:
			if (!swarm_msgpack_is_json_number(ev->v.s.ptr, ev->v.s.len))
				abort();
			put_be(&c->out, 0xc9, ev->v.s.len, 4);
			put_be(&c->out, SWARM_MSGPACK_EXT_DECIMAL, 0, 0);
			buf_put(&c->out, ev->v.s.ptr, ev->v.s.len);
			break;
		case SWARM_MP_EV_ARRAY_BEGIN:
		case SWARM_MP_EV_MAP_BEGIN:
			put_be(&c->out, ev->kind == SWARM_MP_EV_ARRAY_BEGIN ? 0xdd : 0xdf, ev->v.count, 4);
			if (c->depth == c->fcap)
			{
				c->fcap = c->fcap ? c->fcap * 2 : 16;
				c->frames = realloc(c->frames, c->fcap * sizeof(Frame));
				if (!c->frames)
					abort();
			}
			c->frames[c->depth].is_map = (ev->kind == SWARM_MP_EV_MAP_BEGIN);
			c->frames[c->depth].count = ev->v.count;
			c->frames[c->depth].seen = 0;
			c->depth++;
			return 1;
		case SWARM_MP_EV_ARRAY_END:
		case SWARM_MP_EV_MAP_END:
			if (!top || top->is_map != (ev->kind == SWARM_MP_EV_MAP_END))
				abort();
			if (top->seen != (top->is_map ? 2 * top->count : top->count))
				abort();
			c->depth--;
			if (c->depth == 0)
				c->done = 1;
			return 1;
	}
	if (c->depth == 0)
		c->done = 1;
	return 1;
}

static void *
fuzz_realloc(void *ctx, void *ptr, size_t size)
{
	if (size == 0)
	{
		free(ptr);
		return NULL;
	}
	return realloc(ptr, size);
}

static SwarmMsgpackWalkResult
walk(const uint8_t *data, size_t size, Checker *c)
{
	memset(c, 0, sizeof(*c));
	return swarm_msgpack_walk(data, size, (SwarmMsgpackCallback) check_event, c,
							  fuzz_realloc, NULL);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Checker		a,
				b;
	SwarmMsgpackWalkResult r = walk(data, size, &a);

	if (r.error == SWARM_MP_OK)
	{
		SwarmMsgpackWalkResult r2;

		if (!a.done || a.depth != 0)
			abort();
		r2 = walk(a.out.data, a.out.len, &b);
		if (r2.error != SWARM_MP_OK || b.out.len != a.out.len ||
			memcmp(a.out.data, b.out.data, a.out.len) != 0)
			abort();
		free(b.out.data);
		free(b.frames);
	}
	else if (r.offset > size)
		abort();
	free(a.out.data);
	free(a.frames);
	return 0;
}
