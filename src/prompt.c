/*-------------------------------------------------------------------------
 *
 * prompt.c
 *		Expands a job's prompt templates for one agent.
 *
 * Placeholders:
 *	 {name}			the agent's name
 *	 {agent_id}		its id
 *	 {persona}		the persona as compact JSON
 *	 {persona.KEY}	one top-level persona field: strings verbatim, arrays of
 *					strings joined with ", ", anything else as JSON; empty if absent
 *	 {context}		the job's context
 *	 {KEY}			any other key of the request's own values (swarm.requests.vars,
 *					set by interactions: {partner_name}, {partner}, {history},
 *					{feed}, {memory}, {task}), shown like {persona.KEY}
 * Anything else between braces, and unmatched braces, are copied unchanged.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "prompt.h"

static void
append_jsonb_value(StringInfo out, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			appendBinaryStringInfo(out, v->val.string.val, v->val.string.len);
			break;
		case jbvNull:
			break;
		case jbvBinary:
			{
				JsonbContainer *c = v->val.binary.data;

				if (JsonContainerIsArray(c))
				{
					JsonbIterator *it = JsonbIteratorInit(c);
					JsonbValue	elem;
					JsonbIteratorToken tok;
					bool		first = true;
					int			level = 0;

					/* arrays of scalars read best as a list */
					while ((tok = JsonbIteratorNext(&it, &elem, false)) != WJB_DONE)
					{
						if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
							level++;
						else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
							level--;
						else if (tok == WJB_ELEM && level == 1)
						{
							if (!first)
								appendStringInfoString(out, ", ");
							first = false;
							if (elem.type == jbvString)
								appendBinaryStringInfo(out, elem.val.string.val, elem.val.string.len);
							else
							{
								Jsonb	   *j = JsonbValueToJsonb(&elem);

								(void) JsonbToCString(out, &j->root, VARSIZE(j));
							}
						}
					}
				}
				else
				{
					/* (the length is only an allocation hint: a container has no varlena header) */
					(void) JsonbToCString(out, c, 64);
				}
			}
			break;
		default:
			{
				Jsonb	   *j = JsonbValueToJsonb(v);

				(void) JsonbToCString(out, &j->root, VARSIZE(j));
			}
			break;
	}
}

static bool
expand_placeholder(StringInfo out, const char *key, int keylen, const SwarmPromptVars *vars)
{
	if (keylen == 4 && memcmp(key, "name", 4) == 0)
		appendStringInfoString(out, vars->name ? vars->name : "");
	else if (keylen == 7 && memcmp(key, "context", 7) == 0)
		appendStringInfoString(out, vars->context ? vars->context : "");
	else if (keylen == 8 && memcmp(key, "agent_id", 8) == 0)
		appendStringInfo(out, INT64_FORMAT, vars->agent_id);
	else if (keylen == 7 && memcmp(key, "persona", 7) == 0)
	{
		if (vars->persona)
			(void) JsonbToCString(out, &vars->persona->root, VARSIZE(vars->persona));
		else
			appendStringInfoString(out, "{}");
	}
	else if (keylen > 8 && memcmp(key, "persona.", 8) == 0)
	{
		if (vars->persona && JB_ROOT_IS_OBJECT(vars->persona))
		{
			JsonbValue *v = getKeyJsonValueFromContainer(&vars->persona->root,
														 key + 8, keylen - 8, NULL);

			if (v != NULL)
				append_jsonb_value(out, v);
		}
	}
	else if (vars->extra && JB_ROOT_IS_OBJECT(vars->extra))
	{
		JsonbValue *v = getKeyJsonValueFromContainer(&vars->extra->root, key, keylen, NULL);

		if (v == NULL)
			return false;
		append_jsonb_value(out, v);
	}
	else
		return false;
	return true;
}

/*
 * Append `template` with placeholders replaced to `out`.  Returns false,
 * leaving `out` partly filled, once `out` holds more than `limit` bytes: a
 * template that repeats a large placeholder thousands of times is refused
 * before it has grown a gigabyte.
 *
 * Linear in the template's length, whatever it holds: a placeholder is a
 * '{', up to PLACEHOLDER_MAX bytes without a brace, and a '}'.  The scan for
 * the closing brace stops at the next '{' (which then starts the next
 * candidate) and at that length, so no byte is looked at more than twice;
 * a template of a million '{' costs a million steps, not a million squared.
 */
#define PLACEHOLDER_MAX 128

bool
prompt_expand(StringInfo out, const char *template, const SwarmPromptVars *vars, int limit)
{
	const char *p = template;

	while (*p)
	{
		const char *open = strchr(p, '{');
		size_t		keylen;

		if (out->len > limit)
			return false;
		if (open == NULL)
		{
			appendStringInfoString(out, p);
			break;
		}
		appendBinaryStringInfo(out, p, open - p);
		keylen = strcspn(open + 1, "{}");
		if (open[1 + keylen] != '}' || keylen > PLACEHOLDER_MAX ||
			!expand_placeholder(out, open + 1, (int) keylen, vars))
		{
			/* not ours: copy up to the next brace and go on from there */
			appendBinaryStringInfo(out, open, 1 + keylen);
			p = open + 1 + keylen;
			continue;
		}
		p = open + 1 + keylen + 1;
	}
	return out->len <= limit;
}
