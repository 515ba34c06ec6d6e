/*-------------------------------------------------------------------------
 *
 * prompt.h
 *		Prompt templates: {name}, {persona}, {persona.KEY}, {agent_id}, {context},
 *		and the request's own values ({history}, {feed}, ...).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_PROMPT_H
#define SWARM_PROMPT_H

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

typedef struct SwarmPromptVars
{
	int64		agent_id;
	const char *name;
	Jsonb	   *persona;		/* may be NULL */
	const char *context;
	Jsonb	   *extra;			/* the request's own values (swarm.requests.vars), or NULL */
} SwarmPromptVars;

extern bool prompt_expand(StringInfo out, const char *template, const SwarmPromptVars *vars,
						  int limit);

#endif
