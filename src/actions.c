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
