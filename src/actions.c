/*-------------------------------------------------------------------------
 *
 * actions.c
 *		SQL-callable helpers of simulations with actions
 *		(src/sql/functions/70_actions.sql).
 *
 * A model's reply is text that should hold one JSON object.  Casting text
 * to jsonb raises an error on anything else, which would abort the
 * worker's whole store transaction (every user's batch with it), and a
 * subtransaction per reply costs more than the rest of storing it.  So
 * swarm._jsonb_or_null() converts the text with jsonb_in and catches its
 * error: the conversion touches nothing but memory (no lock, no buffer),
 * so flushing the error state is safe, as openai.c does for response
 * bodies.  What it refuses (invalid JSON, \u0000, lone surrogates, nesting
 * past the stack limit) is NULL, which the validation turns into a reason.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

/* Longest reply read as an action: past it, it is not one. */
#define ACTION_MAX_BYTES	(64 * 1024)

PG_FUNCTION_INFO_V1(swarm_jsonb_or_null);
Datum
swarm_jsonb_or_null(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	MemoryContext cxt = CurrentMemoryContext;
	volatile Datum result = (Datum) 0;
	volatile bool ok = true;
	char	   *cstr;

	if (VARSIZE_ANY_EXHDR(t) == 0 || VARSIZE_ANY_EXHDR(t) > ACTION_MAX_BYTES)
		PG_RETURN_NULL();
	cstr = text_to_cstring(t);
	PG_TRY();
	{
		result = DirectFunctionCall1(jsonb_in, CStringGetDatum(cstr));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	if (!ok)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * Append the elements of the JSON array `key` of `memory` as
 * "<intro>"e1" "e2". ", as swarm._memory_text() always has: strings bare,
 * other scalars as JSON, JSON nulls left out; nothing when the key is not
 * an array or holds nothing to show.
 */
static void
append_memory_list(StringInfo out, Jsonb *memory, const char *key, const char *intro)
{
	JsonbValue	k;
	JsonbValue *v;
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	int			level = 0;
	int			shown = 0;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&memory->root, JB_FOBJECT, &k);
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		return;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
			level++;
		else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
			level--;
		else if (tok == WJB_ELEM && level == 1 && elem.type != jbvNull)
		{
			appendStringInfoString(out, shown == 0 ? intro : " ");
			appendStringInfoChar(out, '"');
			if (elem.type == jbvString)
				appendBinaryStringInfo(out, elem.val.string.val, elem.val.string.len);
			else
			{
				Jsonb	   *j = JsonbValueToJsonb(&elem);

				(void) JsonbToCString(out, &j->root, VARSIZE(j));
			}
			appendStringInfoChar(out, '"');
			shown++;
		}
	}
	if (shown > 0)
		appendStringInfoString(out, ". ");
}

/*
 * swarm._memory_text(memory jsonb): an agent's memory as prompt text,
 * "Lately you wrote: "..." "...". Lately you read: "...". ", called once per
 * active agent of every simulation step (in C: a SQL function cost 13 us a
 * call, most of a step's per-agent time).
 */
PG_FUNCTION_INFO_V1(swarm_memory_text);
Datum
swarm_memory_text(PG_FUNCTION_ARGS)
{
	Jsonb	   *memory = PG_GETARG_JSONB_P(0);
	StringInfoData out;

	initStringInfo(&out);
	if (JB_ROOT_IS_OBJECT(memory))
	{
		append_memory_list(&out, memory, "said", "Lately you wrote: ");
		append_memory_list(&out, memory, "saw", "Lately you read: ");
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}

/* Append the elements of `j`, when it is an array, to *elems (skipping nested ones' insides). */
static void
collect_elements(Jsonb *j, JsonbValue **elems, int *n, int *cap)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (j == NULL || !JB_ROOT_IS_ARRAY(j) || JB_ROOT_IS_SCALAR(j))
		return;
	it = JsonbIteratorInit(&j->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (*n == *cap)
		{
			*cap *= 2;
			*elems = repalloc(*elems, sizeof(JsonbValue) * *cap);
		}
		(*elems)[(*n)++] = v;
	}
}

/*
 * swarm._keep_last(items jsonb, more jsonb, keep integer): the elements of
 * the array `items` followed by those of `more`, the last `keep` of them (all
 * when keep is NULL); anything that is not an array counts as empty.  An
 * agent's memory is updated with it for every message a simulation stores
 * (in C: the SQL version cost 25 us a call, twice a message).
 */
PG_FUNCTION_INFO_V1(swarm_keep_last);
Datum
swarm_keep_last(PG_FUNCTION_ARGS)
{
	Jsonb	   *items = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	Jsonb	   *more = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	int			cap = 8;
	int			n = 0;
	int			first;
	JsonbValue *elems = palloc(sizeof(JsonbValue) * cap);
	JsonbParseState *state = NULL;
	JsonbValue *result;

	collect_elements(items, &elems, &n, &cap);
	collect_elements(more, &elems, &n, &cap);
	first = 0;
	if (!PG_ARGISNULL(2))
		first = Max(0, n - Max(PG_GETARG_INT32(2), 0));
	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	for (int i = first; i < n; i++)
		pushJsonbValue(&state, WJB_ELEM, &elems[i]);
	result = pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(result));
}
