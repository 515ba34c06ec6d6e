/*
 * msgpack_codec.c
 *		jsonb <-> MessagePack for compact agent state: swarm.pack, swarm.unpack.
 *
 * What this file owns
 * -------------------
 * The byte format of swarm.agents.state.  Packing walks a jsonb with the
 * JsonbIterator and writes through msgpack-c's packer (msgpack_packer with a
 * write callback appending to a StringInfo, so there is no second copy).
 * Unpacking is done by swarm_msgpack_walk(), a strict, iterative,
 * bounds-checked walker written here, whose events are turned into a jsonb by
 * pushJsonbValue().  The walker is plain C (see msgpack_codec.h) so that the
 * libFuzzer target test/fuzz/fuzz_unpack.c builds this same file with
 * -DSWARM_MSGPACK_STANDALONE and fuzzes exactly the code the server runs.
 *
 * Why not msgpack-c's unpacker: msgpack_unpack_next() nests at most
 * MSGPACK_EMBED_STACK_SIZE (32) levels, so a deeper jsonb would pack but not
 * unpack, and it first materialises a whole msgpack_object tree in a zone,
 * doubling the memory of a large state.  Our walker has no depth limit other
 * than memory and streams straight into the jsonb builder.
 *
 * The mapping (exact round trip for every value jsonb can hold)
 * ---------------------------------------------------------------
 *	 null, true, false	-> nil, true, false
 *	 string				-> str (UTF-8 as stored; "" is a zero-length str)
 *	 array, object		-> array, map (keys are str; jsonb's key order)
 *	 number, integral, written without a fraction, fits int64 or uint64
 *						-> the smallest MessagePack int that holds it
 *	 other number whose float64 reads back as the same jsonb number, i.e. the
 *	 numeric parsed from the double's shortest decimal form prints exactly
 *	 like the original (1.5, 0.1, 1e-7; 1e20, which jsonb prints as
 *	 100000000000000000000 and so does the numeric read from "1e+20")
 *						-> float64
 *	 any other number (1.0, 0.10, 1e400, 123456789012345678901234.5, ...)
 *						-> ext type 1, payload = numeric text (JSON syntax)
 * Decoding also accepts float32 (read through its shortest decimal form),
 * and refuses what JSON cannot hold: bin, NaN/Infinity, ext types other than
 * 1, strings with U+0000 or invalid UTF-8, non-str map keys; and any
 * truncated input, trailing bytes or the reserved byte 0xc1.  A refused
 * input is an ERROR with an errcode and the byte offset, never a crash.
 *
 * Memory: everything is palloc'd in the caller's context; the walker's stack
 * is grown with repalloc and freed at the end.
 */
#ifndef SWARM_MSGPACK_STANDALONE
#include "postgres.h"
#endif

#include <string.h>

#include "msgpack_codec.h"

/* ------------------------------------------------------------------------
 * Part 1: the server-independent walker
 * ------------------------------------------------------------------------ */

typedef struct WalkFrame
{
	uint64_t	remaining;		/* values still to read (a map counts keys and
								 * values) */
	bool		is_map;
} WalkFrame;

const char *
swarm_msgpack_strerror(SwarmMsgpackError error)
{
	switch (error)
	{
		case SWARM_MP_OK:
			return "no error";
		case SWARM_MP_EMPTY:
			return "empty input";
		case SWARM_MP_TRUNCATED:
			return "input ends in the middle of a value";
		case SWARM_MP_TRAILING:
			return "trailing bytes after the value";
		case SWARM_MP_RESERVED:
			return "reserved type byte 0xc1";
		case SWARM_MP_KEY_NOT_STRING:
			return "map key is not a string";
		case SWARM_MP_BAD_UTF8:
			return "string is not valid UTF-8";
		case SWARM_MP_NUL_IN_STRING:
			return "string contains the character U+0000";
		case SWARM_MP_BIN:
			return "bin values have no JSON equivalent";
		case SWARM_MP_EXT_TYPE:
			return "unsupported extension type";
		case SWARM_MP_BAD_DECIMAL:
			return "decimal extension does not hold a JSON number";
		case SWARM_MP_NONFINITE:
			return "NaN or infinite float has no JSON equivalent";
		case SWARM_MP_NOMEM:
			return "out of memory";
		case SWARM_MP_STOPPED:
			return "stopped by the consumer";
	}
	return "unknown error";
}

/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF.  *has_nul reports a 0x00 byte, which is valid UTF-8 but not
 * storable in jsonb.
 */
bool
swarm_msgpack_is_utf8(const char *s, size_t len, bool *has_nul)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		i = 0;

	*has_nul = false;
	while (i < len)
	{
		unsigned char c = p[i];

		if (c < 0x80)
		{
			if (c == 0)
				*has_nul = true;
			i++;
		}
		else if (c >= 0xc2 && c <= 0xdf)
		{
			if (i + 1 >= len || (p[i + 1] & 0xc0) != 0x80)
				return false;
			i += 2;
		}
		else if (c >= 0xe0 && c <= 0xef)
		{
			unsigned char lo = (c == 0xe0) ? 0xa0 : 0x80;
			unsigned char hi = (c == 0xed) ? 0x9f : 0xbf;

			if (i + 2 >= len || p[i + 1] < lo || p[i + 1] > hi ||
				(p[i + 2] & 0xc0) != 0x80)
				return false;
			i += 3;
		}
		else if (c >= 0xf0 && c <= 0xf4)
		{
			unsigned char lo = (c == 0xf0) ? 0x90 : 0x80;
			unsigned char hi = (c == 0xf4) ? 0x8f : 0xbf;

			if (i + 3 >= len || p[i + 1] < lo || p[i + 1] > hi ||
				(p[i + 2] & 0xc0) != 0x80 || (p[i + 3] & 0xc0) != 0x80)
				return false;
			i += 4;
		}
		else
			return false;
	}
	return true;
}

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
bool
swarm_msgpack_is_json_number(const char *s, size_t len)
{
	size_t		i = 0;

#define DIGIT(k) ((k) < len && s[(k)] >= '0' && s[(k)] <= '9')
	if (i < len && s[i] == '-')
		i++;
	if (!DIGIT(i))
		return false;
	if (s[i] == '0')
		i++;
	else
		while (DIGIT(i))
			i++;
	if (i < len && s[i] == '.')
	{
		i++;
		if (!DIGIT(i))
			return false;
		while (DIGIT(i))
			i++;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E'))
	{
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		if (!DIGIT(i))
			return false;
		while (DIGIT(i))
			i++;
	}
#undef DIGIT
	return i == len;
}

static inline uint64_t
read_be(const uint8_t *p, int n)
{
	uint64_t	v = 0;

	for (int k = 0; k < n; k++)
		v = (v << 8) | p[k];
	return v;
}

/*
 * Walk one MessagePack value that must fill buf[0..len) exactly, calling cb
 * for each event.  Returns the first problem found, with its byte offset.
 * The container stack is obtained from alloc and released before returning
 * (also on error).
 */
SwarmMsgpackWalkResult
swarm_msgpack_walk(const uint8_t *buf, size_t len,
				   SwarmMsgpackCallback cb, void *cb_ctx,
				   SwarmMsgpackRealloc alloc, void *alloc_ctx)
{
	SwarmMsgpackWalkResult res = {SWARM_MP_OK, 0, 0};
	WalkFrame  *stack = NULL;
	size_t		depth = 0;
	size_t		cap = 0;
	size_t		pos = 0;
	SwarmMsgpackEvent ev;

#define FAIL(code, at) do { res.error = (code); res.offset = (at); goto done; } while (0)
#define NEED(n) do { if ((n) > len - pos) FAIL(SWARM_MP_TRUNCATED, start); } while (0)
#define EMIT() do { if (!cb(cb_ctx, &ev)) FAIL(SWARM_MP_STOPPED, start); } while (0)

	if (len == 0)
	{
		res.error = SWARM_MP_EMPTY;
		return res;
	}

	for (;;)
	{
		size_t		start = pos;
		uint8_t		b;
		bool		is_key;
		bool		container = false;
		uint64_t	count = 0;
		size_t		slen = 0;
		bool		str = false;

		is_key = depth > 0 && stack[depth - 1].is_map &&
			(stack[depth - 1].remaining % 2) == 0;
		ev.parent = depth == 0 ? SWARM_MP_PARENT_NONE :
			stack[depth - 1].is_map ? SWARM_MP_PARENT_MAP : SWARM_MP_PARENT_ARRAY;

		NEED(1);
		b = buf[pos++];

		if (is_key && !((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb)))
			FAIL(SWARM_MP_KEY_NOT_STRING, start);

		if (b <= 0x7f)
		{
			ev.kind = SWARM_MP_EV_UINT;
			ev.v.u = b;
		}
		else if (b >= 0xe0)
		{
			ev.kind = SWARM_MP_EV_INT;
			ev.v.i = (int8_t) b;
		}
		else if (b <= 0x8f)
		{
			ev.kind = SWARM_MP_EV_MAP_BEGIN;
			container = true;
			count = b & 0x0f;
		}
		else if (b <= 0x9f)
		{
			ev.kind = SWARM_MP_EV_ARRAY_BEGIN;
			container = true;
			count = b & 0x0f;
		}
		else if (b <= 0xbf)
		{
			str = true;
			slen = b & 0x1f;
		}
		else
		{
			switch (b)
			{
				case 0xc0:
					ev.kind = SWARM_MP_EV_NULL;
					break;
				case 0xc1:
					FAIL(SWARM_MP_RESERVED, start);
				case 0xc2:
				case 0xc3:
					ev.kind = SWARM_MP_EV_BOOL;
					ev.v.b = (b == 0xc3);
					break;
				case 0xc4:
				case 0xc5:
				case 0xc6:
					FAIL(SWARM_MP_BIN, start);
				case 0xc7:
				case 0xc8:
				case 0xc9:
				case 0xd4:
				case 0xd5:
				case 0xd6:
				case 0xd7:
				case 0xd8:
					{
						size_t		elen;
						int8_t		type;

						if (b >= 0xd4)
							elen = (size_t) 1 << (b - 0xd4);
						else
						{
							int			n = 1 << (b - 0xc7);

							NEED((size_t) n);
							elen = (size_t) read_be(buf + pos, n);
							pos += n;
						}
						NEED(1);
						type = (int8_t) buf[pos++];
						NEED(elen);
						if (type != SWARM_MSGPACK_EXT_DECIMAL)
						{
							res.ext_type = type;
							FAIL(SWARM_MP_EXT_TYPE, start);
						}
						if (!swarm_msgpack_is_json_number((const char *) buf + pos, elen))
							FAIL(SWARM_MP_BAD_DECIMAL, start);
						ev.kind = SWARM_MP_EV_DECIMAL;
						ev.v.s.ptr = (const char *) buf + pos;
						ev.v.s.len = elen;
						pos += elen;
						break;
					}
				case 0xca:
					{
						uint32_t	bits;
						float		f;

						NEED(4);
						bits = (uint32_t) read_be(buf + pos, 4);
						pos += 4;
						memcpy(&f, &bits, 4);
						if (f != f || f - f != 0)
							FAIL(SWARM_MP_NONFINITE, start);
						ev.kind = SWARM_MP_EV_FLOAT32;
						ev.v.f = f;
						break;
					}
				case 0xcb:
					{
						uint64_t	bits;
						double		d;

						NEED(8);
						bits = read_be(buf + pos, 8);
						pos += 8;
						memcpy(&d, &bits, 8);
						if (d != d || d - d != 0)
							FAIL(SWARM_MP_NONFINITE, start);
						ev.kind = SWARM_MP_EV_FLOAT64;
						ev.v.f = d;
						break;
					}
				case 0xcc:
				case 0xcd:
				case 0xce:
				case 0xcf:
					{
						int			n = 1 << (b - 0xcc);

						NEED((size_t) n);
						ev.kind = SWARM_MP_EV_UINT;
						ev.v.u = read_be(buf + pos, n);
						pos += n;
						break;
					}
				case 0xd0:
				case 0xd1:
				case 0xd2:
				case 0xd3:
					{
						int			n = 1 << (b - 0xd0);
						uint64_t	u;

						NEED((size_t) n);
						u = read_be(buf + pos, n);
						pos += n;
						/* sign-extend from n bytes */
						if (n < 8 && (u >> (8 * n - 1)) & 1)
							u |= ~(uint64_t) 0 << (8 * n);
						ev.kind = SWARM_MP_EV_INT;
						ev.v.i = (int64_t) u;
						break;
					}
				case 0xd9:
				case 0xda:
				case 0xdb:
					{
						int			n = 1 << (b - 0xd9);

						NEED((size_t) n);
						slen = (size_t) read_be(buf + pos, n);
						pos += n;
						str = true;
						break;
					}
				case 0xdc:
				case 0xdd:
				case 0xde:
				case 0xdf:
					{
						int			n = (b == 0xdc || b == 0xde) ? 2 : 4;

						NEED((size_t) n);
						count = read_be(buf + pos, n);
						pos += n;
						container = true;
						ev.kind = (b <= 0xdd) ? SWARM_MP_EV_ARRAY_BEGIN : SWARM_MP_EV_MAP_BEGIN;
						break;
					}
				default:
					/* every byte value is covered above */
					FAIL(SWARM_MP_RESERVED, start);
			}
		}

		if (str)
		{
			bool		has_nul;

			NEED(slen);
			if (!swarm_msgpack_is_utf8((const char *) buf + pos, slen, &has_nul))
				FAIL(SWARM_MP_BAD_UTF8, start);
			if (has_nul)
				FAIL(SWARM_MP_NUL_IN_STRING, start);
			ev.kind = is_key ? SWARM_MP_EV_KEY : SWARM_MP_EV_STRING;
			ev.v.s.ptr = (const char *) buf + pos;
			ev.v.s.len = slen;
			pos += slen;
		}

		if (container)
		{
			uint64_t	items = (ev.kind == SWARM_MP_EV_MAP_BEGIN) ? count * 2 : count;

			/* every element takes at least one byte: refuse absurd counts early */
			if (items > len - pos)
				FAIL(SWARM_MP_TRUNCATED, start);
			ev.v.count = (uint32_t) count;
			EMIT();
			if (items > 0)
			{
				if (depth == cap)
				{
					size_t		newcap = cap ? cap * 2 : 16;
					WalkFrame  *ns = alloc(alloc_ctx, stack, newcap * sizeof(WalkFrame));

					if (ns == NULL)
						FAIL(SWARM_MP_NOMEM, start);
					stack = ns;
					cap = newcap;
				}
				stack[depth].remaining = items;
				stack[depth].is_map = (ev.kind == SWARM_MP_EV_MAP_BEGIN);
				depth++;
				continue;
			}
			ev.kind = (ev.kind == SWARM_MP_EV_MAP_BEGIN) ? SWARM_MP_EV_MAP_END : SWARM_MP_EV_ARRAY_END;
			EMIT();
		}
		else
			EMIT();

		/* a value is complete: close every container it completes */
		while (depth > 0)
		{
			if (--stack[depth - 1].remaining > 0)
				break;
			depth--;
			ev.kind = stack[depth].is_map ? SWARM_MP_EV_MAP_END : SWARM_MP_EV_ARRAY_END;
			ev.parent = stack[depth].is_map ? SWARM_MP_PARENT_MAP : SWARM_MP_PARENT_ARRAY;
			EMIT();
		}
		if (depth == 0)
		{
			if (pos != len)
				FAIL(SWARM_MP_TRAILING, pos);
			break;
		}
	}

done:
	if (stack)
		alloc(alloc_ctx, stack, 0);
	return res;
#undef FAIL
#undef NEED
#undef EMIT
}

#ifndef SWARM_MSGPACK_STANDALONE
/* ------------------------------------------------------------------------
 * Part 2: the Postgres glue
 * ------------------------------------------------------------------------ */

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include <msgpack.h>

#include "common/shortest_dec.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

PG_FUNCTION_INFO_V1(swarm_pack);
PG_FUNCTION_INFO_V1(swarm_unpack);
PG_FUNCTION_INFO_V1(swarm_unpack_or_null);

static int
pack_write_stringinfo(void *data, const char *buf, size_t len)
{
	appendBinaryStringInfo((StringInfo) data, buf, (int) len);
	return 0;
}

static bool
is_integer_text(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/*
 * Pack one jsonb number by the rules in the header comment.  The float64 test
 * is "does the numeric read back from the float's shortest decimal form print
 * exactly like the original?", which is the decoder's path run in reverse.
 */
static void
pack_numeric(msgpack_packer *pk, Numeric num)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num)));
	size_t		len = strlen(text);

	if (is_integer_text(text))
	{
		char	   *end;

		errno = 0;
		if (text[0] == '-')
		{
			long long	v = strtoll(text, &end, 10);

			if (errno == 0 && *end == '\0')
			{
				msgpack_pack_int64(pk, (int64_t) v);
				return;
			}
		}
		else
		{
			unsigned long long v = strtoull(text, &end, 10);

			if (errno == 0 && *end == '\0')
			{
				msgpack_pack_uint64(pk, (uint64_t) v);
				return;
			}
		}
	}

	/* not an int that fits 64 bits: does a float64 hold it exactly? */
	{
		double		d = strtod(text, NULL);

		if (isfinite(d))
		{
			char		buf[DOUBLE_SHORTEST_DECIMAL_LEN];
			Datum		back;
			char	   *backtext;

			double_to_shortest_decimal_buf(d, buf);
			back = DirectFunctionCall3(numeric_in, CStringGetDatum(buf),
									   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
			backtext = DatumGetCString(DirectFunctionCall1(numeric_out, back));
			if (strcmp(backtext, text) == 0)
			{
				msgpack_pack_double(pk, d);
				return;
			}
		}
	}
	msgpack_pack_ext(pk, len, SWARM_MSGPACK_EXT_DECIMAL);
	msgpack_pack_ext_body(pk, text, len);
}

static void
pack_scalar(msgpack_packer *pk, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			msgpack_pack_nil(pk);
			break;
		case jbvBool:
			if (v->val.boolean)
				msgpack_pack_true(pk);
			else
				msgpack_pack_false(pk);
			break;
		case jbvString:
			msgpack_pack_str(pk, v->val.string.len);
			msgpack_pack_str_body(pk, v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			pack_numeric(pk, v->val.numeric);
			break;
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
}

/*
 * swarm.pack(jsonb) returns bytea
 *
 * Returns a freshly palloc'd bytea in the caller's context.  Cannot fail on
 * valid jsonb.
 */
Datum
swarm_pack(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	StringInfoData out;
	msgpack_packer pk;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		raw_scalar = false;

	initStringInfo(&out);
	appendStringInfoSpaces(&out, VARHDRSZ);
	msgpack_packer_init(&pk, &out, pack_write_stringinfo);

	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_ARRAY:
				if (v.val.array.rawScalar)
					raw_scalar = true;	/* a scalar root: emit just the scalar */
				else
					msgpack_pack_array(&pk, (size_t) v.val.array.nElems);
				break;
			case WJB_BEGIN_OBJECT:
				msgpack_pack_map(&pk, (size_t) v.val.object.nPairs);
				break;
			case WJB_END_ARRAY:
			case WJB_END_OBJECT:
				break;
			case WJB_KEY:
				msgpack_pack_str(&pk, v.val.string.len);
				msgpack_pack_str_body(&pk, v.val.string.val, v.val.string.len);
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				pack_scalar(&pk, &v);
				break;
			default:
				elog(ERROR, "unexpected jsonb iterator token %d", (int) tok);
		}
		CHECK_FOR_INTERRUPTS();
	}
	(void) raw_scalar;

	SET_VARSIZE(out.data, out.len);
	PG_RETURN_BYTEA_P((bytea *) out.data);
}

typedef struct UnpackState
{
	JsonbParseState *parse;
	JsonbValue *result;
} UnpackState;

static void *
unpack_realloc(void *ctx, void *ptr, size_t size)
{
	if (size == 0)
	{
		pfree(ptr);
		return NULL;
	}
	if (ptr == NULL)
		return palloc_extended(size, MCXT_ALLOC_HUGE);
	return repalloc_huge(ptr, size);
}

static Numeric
numeric_from_text(const char *s)
{
	return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(s),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/* Push a scalar, wrapping it in a raw-scalar pseudo array at the root. */
static void
unpack_push_scalar(UnpackState *st, const SwarmMsgpackEvent *ev, JsonbValue *jv)
{
	if (ev->parent == SWARM_MP_PARENT_NONE)
	{
		JsonbValue	arr;

		arr.type = jbvArray;
		arr.val.array.rawScalar = true;
		arr.val.array.nElems = 1;
		pushJsonbValue(&st->parse, WJB_BEGIN_ARRAY, &arr);
		pushJsonbValue(&st->parse, WJB_ELEM, jv);
		st->result = pushJsonbValue(&st->parse, WJB_END_ARRAY, NULL);
	}
	else
		pushJsonbValue(&st->parse,
					   ev->parent == SWARM_MP_PARENT_MAP ? WJB_VALUE : WJB_ELEM, jv);
}

static bool
unpack_event(void *ctx, const SwarmMsgpackEvent *ev)
{
	UnpackState *st = (UnpackState *) ctx;
	JsonbValue	jv;
	char		buf[Max(DOUBLE_SHORTEST_DECIMAL_LEN, 32)];

	CHECK_FOR_INTERRUPTS();
	switch (ev->kind)
	{
		case SWARM_MP_EV_MAP_BEGIN:
			pushJsonbValue(&st->parse, WJB_BEGIN_OBJECT, NULL);
			return true;
		case SWARM_MP_EV_ARRAY_BEGIN:
			pushJsonbValue(&st->parse, WJB_BEGIN_ARRAY, NULL);
			return true;
		case SWARM_MP_EV_MAP_END:
			st->result = pushJsonbValue(&st->parse, WJB_END_OBJECT, NULL);
			return true;
		case SWARM_MP_EV_ARRAY_END:
			st->result = pushJsonbValue(&st->parse, WJB_END_ARRAY, NULL);
			return true;
		case SWARM_MP_EV_KEY:
			jv.type = jbvString;
			jv.val.string.val = (char *) ev->v.s.ptr;
			jv.val.string.len = (int) ev->v.s.len;
			pushJsonbValue(&st->parse, WJB_KEY, &jv);
			return true;
		case SWARM_MP_EV_STRING:
			jv.type = jbvString;
			jv.val.string.val = (char *) ev->v.s.ptr;
			jv.val.string.len = (int) ev->v.s.len;
			break;
		case SWARM_MP_EV_NULL:
			jv.type = jbvNull;
			break;
		case SWARM_MP_EV_BOOL:
			jv.type = jbvBool;
			jv.val.boolean = ev->v.b;
			break;
		case SWARM_MP_EV_INT:
			jv.type = jbvNumeric;
			jv.val.numeric = int64_to_numeric(ev->v.i);
			break;
		case SWARM_MP_EV_UINT:
			jv.type = jbvNumeric;
			if (ev->v.u <= (uint64_t) PG_INT64_MAX)
				jv.val.numeric = int64_to_numeric((int64) ev->v.u);
			else
			{
				snprintf(buf, sizeof(buf), UINT64_FORMAT, (uint64) ev->v.u);
				jv.val.numeric = numeric_from_text(buf);
			}
			break;
		case SWARM_MP_EV_FLOAT32:
			float_to_shortest_decimal_buf((float) ev->v.f, buf);
			jv.type = jbvNumeric;
			jv.val.numeric = numeric_from_text(buf);
			break;
		case SWARM_MP_EV_FLOAT64:
			double_to_shortest_decimal_buf(ev->v.f, buf);
			jv.type = jbvNumeric;
			jv.val.numeric = numeric_from_text(buf);
			break;
		case SWARM_MP_EV_DECIMAL:
			jv.type = jbvNumeric;
			jv.val.numeric = numeric_from_text(pnstrdup(ev->v.s.ptr, ev->v.s.len));
			break;
	}
	unpack_push_scalar(st, ev, &jv);
	return true;
}

/*
 * swarm.unpack(bytea) returns jsonb
 *
 * Returns a palloc'd jsonb.  ereports ERRCODE_INVALID_BINARY_REPRESENTATION
 * (or CHARACTER_NOT_IN_REPERTOIRE / UNTRANSLATABLE_CHARACTER for bad text)
 * when the input is not one complete MessagePack value that JSON can hold.
 */
Datum
swarm_unpack(PG_FUNCTION_ARGS)
{
	bytea	   *in = PG_GETARG_BYTEA_PP(0);
	const uint8_t *data = (const uint8_t *) VARDATA_ANY(in);
	size_t		len = VARSIZE_ANY_EXHDR(in);
	UnpackState st = {NULL, NULL};
	SwarmMsgpackWalkResult r;
	int			code;

	r = swarm_msgpack_walk(data, len, unpack_event, &st, unpack_realloc, NULL);
	if (r.error != SWARM_MP_OK)
	{
		switch (r.error)
		{
			case SWARM_MP_BAD_UTF8:
				code = ERRCODE_CHARACTER_NOT_IN_REPERTOIRE;
				break;
			case SWARM_MP_NUL_IN_STRING:
				code = ERRCODE_UNTRANSLATABLE_CHARACTER;
				break;
			default:
				code = ERRCODE_INVALID_BINARY_REPRESENTATION;
		}
		if (r.error == SWARM_MP_EXT_TYPE)
			ereport(ERROR,
					(errcode(code),
					 errmsg("invalid MessagePack for jsonb: unsupported extension type %d", r.ext_type),
					 errdetail("The value at byte offset %zu of %zu is an extension; only type %d (pg_swarm decimal number) is understood.",
							   r.offset, len, SWARM_MSGPACK_EXT_DECIMAL)));
		ereport(ERROR,
				(errcode(code),
				 errmsg("invalid MessagePack for jsonb: %s", swarm_msgpack_strerror(r.error)),
				 errdetail("The problem is at byte offset %zu of %zu.", r.offset, len),
				 errhint("swarm.unpack() reads one complete MessagePack value holding only JSON data, as written by swarm.pack().")));
	}
	if (st.result == NULL)
		elog(ERROR, "MessagePack walk produced no value");
	PG_RETURN_JSONB_P(JsonbValueToJsonb(st.result));
}

/*
 * swarm._unpack_or_null(bytea) returns jsonb
 *
 * As swarm.unpack(), but NULL for input it would refuse: for reading agent
 * state that anyone may have overwritten, where an error would stop a whole
 * simulation step.
 */
Datum
swarm_unpack_or_null(PG_FUNCTION_ARGS)
{
	bytea	   *in = PG_GETARG_BYTEA_PP(0);
	UnpackState st = {NULL, NULL};
	MemoryContext caller = CurrentMemoryContext;
	Jsonb	   *volatile result = NULL;

	/*
	 * Anyone who may write swarm.agents.state may write anything there: a
	 * number no numeric holds, nesting past the stack's depth.  Those
	 * raise inside the decoder, which touches nothing but memory, so the
	 * error is caught here and the state simply reads as absent.
	 */
	PG_TRY();
	{
		SwarmMsgpackWalkResult r;

		r = swarm_msgpack_walk((const uint8_t *) VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in),
							   unpack_event, &st, unpack_realloc, NULL);
		if (r.error == SWARM_MP_OK && st.result != NULL)
			result = JsonbValueToJsonb(st.result);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			PG_RE_THROW();		/* a cancel is not bad input */
		FlushErrorState();
		FreeErrorData(edata);
		result = NULL;
	}
	PG_END_TRY();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(result);
}

#endif							/* !SWARM_MSGPACK_STANDALONE */
