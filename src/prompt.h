/*-------------------------------------------------------------------------
 *
 * prompt.h
 *		Prompt templates: {name}, {persona}, {persona.KEY}, {agent_id}, {context}.
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
} SwarmPromptVars;

extern void prompt_expand(StringInfo out, const char *template, const SwarmPromptVars *vars);

#endif
