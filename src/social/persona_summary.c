/*-------------------------------------------------------------------------
 *
 * persona_summary.c
 *		swarm.persona_summary(jsonb): the line an agent is told about the agent
 *		it talks to, e.g. "34-year-old nurse from Lyon, France; into chess,
 *		jazz; writes warm and chatty".
 *
 * It runs once per conversation turn enqueued (swarm.interact() and
 * swarm._advance()), so it is C: as a SQL function it cost about 4 us a call,
 * a quarter of what a conversation adds per request.
 *
 * The parts, joined with "; ", each left out when its keys are absent or
 * JSON null:
 *	 "{age}-year-old {occupation} from {location}" (any of the three)
 *	 "into {interests joined with ', '}"			(interests: a non-empty array)
 *	 "writes {writing_style}"
 * A persona with none of them is shown as its JSON text, cut to 300
 * characters; NULL as "{}".  Strings are shown as they are, other values as
 * JSON.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(swarm_persona_summary);

#define SUMMARY_FALLBACK_CHARS 300

/* Append a scalar or container as ->> would show it; false for JSON null. */
static bool
append_value_text(StringInfo out, JsonbValue *v)
{
	if (v->type == jbvNull)
		return false;
	if (v->type == jbvString)
		appendBinaryStringInfo(out, v->val.string.val, v->val.string.len);
	else if (v->type == jbvBinary)
		(void) JsonbToCString(out, v->val.binary.data, v->val.binary.len);
	else
	{
		Jsonb	   *j = JsonbValueToJsonb(v);

		(void) JsonbToCString(out, &j->root, VARSIZE(j));
	}
	return true;
}

static JsonbValue *
find_key(Jsonb *persona, const char *key)
{
	return getKeyJsonValueFromContainer(&persona->root, key, strlen(key), NULL);
}

/* Start a new "; "-separated part, or a new " "-separated word of one. */
static void
separate(StringInfo out, int part_start, const char *separator)
{
	if (out->len > part_start)
		appendStringInfoString(out, separator);
}

/* "{age}-year-old {occupation} from {location}", or nothing */
static void
append_identity(StringInfo out, Jsonb *persona)
{
	int			start = out->len;
	JsonbValue *v;

	if ((v = find_key(persona, "age")) != NULL && v->type != jbvNull)
	{
		append_value_text(out, v);
		appendStringInfoString(out, "-year-old");
	}
	if ((v = find_key(persona, "occupation")) != NULL && v->type != jbvNull)
	{
		separate(out, start, " ");
		append_value_text(out, v);
	}
	if ((v = find_key(persona, "location")) != NULL && v->type != jbvNull)
	{
		separate(out, start, " ");
		appendStringInfoString(out, "from ");
		append_value_text(out, v);
	}
}

/* "into a, b, c", or nothing */
static void
append_interests(StringInfo out, Jsonb *persona, int part_start)
{
	JsonbValue *v = find_key(persona, "interests");
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	int			level = 0;
	int			before = out->len;
	bool		any = false;

	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		return;
	separate(out, part_start, "; ");
	appendStringInfoString(out, "into ");
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
			level++;
		else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
			level--;
		else if (tok == WJB_ELEM && level == 1 && elem.type != jbvNull)
		{
			if (any)
				appendStringInfoString(out, ", ");
			append_value_text(out, &elem);
			any = true;
		}
	}
	if (!any)
	{
		/* an empty list says nothing: take the part back */
		out->len = before;
		out->data[before] = '\0';
	}
}

Datum
swarm_persona_summary(PG_FUNCTION_ARGS)
{
	Jsonb	   *persona;
	StringInfoData out;
	JsonbValue *v;

	if (PG_ARGISNULL(0))
		PG_RETURN_TEXT_P(cstring_to_text("{}"));
	persona = PG_GETARG_JSONB_P(0);
	initStringInfo(&out);

	if (JB_ROOT_IS_OBJECT(persona))
	{
		append_identity(&out, persona);
		append_interests(&out, persona, 0);
		if ((v = find_key(persona, "writing_style")) != NULL && v->type != jbvNull)
		{
			separate(&out, 0, "; ");
			appendStringInfoString(&out, "writes ");
			append_value_text(&out, v);
		}
	}
	if (out.len == 0)
	{
		(void) JsonbToCString(&out, &persona->root, VARSIZE(persona));
		out.len = pg_mbcharcliplen(out.data, out.len, SUMMARY_FALLBACK_CHARS);
		out.data[out.len] = '\0';
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
