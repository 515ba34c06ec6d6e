/*-------------------------------------------------------------------------
 *
 * openai.h
 *		Chat-completion wire format: request bodies and response parsing.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_OPENAI_H
#define SWARM_OPENAI_H

#include "lib/stringinfo.h"

typedef enum OpenAIParseStatus
{
	OPENAI_OK,					/* a completion with at least one choice */
	OPENAI_NOT_JSON,			/* body is not valid JSON / not valid UTF-8 */
	OPENAI_NO_CHOICES,			/* JSON, but no choices[0] */
	OPENAI_ERROR_BODY			/* an error body, of any of the shapes openai.c reads */
} OpenAIParseStatus;

/* How a request asks for structured output (swarm.endpoints.structured_output). */
typedef enum OpenAIOutputStyle
{
	OPENAI_OUTPUT_JSON_SCHEMA,	/* response_format: json_schema */
	OPENAI_OUTPUT_TOOLS			/* tools + tool_choice */
} OpenAIOutputStyle;

typedef struct OpenAIResponse
{
	OpenAIParseStatus status;
	char	   *content;		/* choices[0].message.content; NULL if null/absent */
	char	   *refusal;		/* choices[0].message.refusal, when a string */
	char	   *tool_arguments;	/* choices[0].message.tool_calls[0].function.arguments */
	char	   *finish_reason;
	char	   *model;
	int32		prompt_tokens;	/* -1 when absent */
	int32		completion_tokens;
	char	   *error_message;	/* error.message, or the parser's complaint */
	char	   *error_type;
	char	   *error_code;		/* string or number, as text */
} OpenAIResponse;

extern void openai_build_request(StringInfo buf, const char *model, int max_tokens,
								 const char *system_message, const char *user_message,
								 const char *response_schema, int *tail_offset);
extern void openai_append_structured(StringInfo buf, const char *schema, OpenAIOutputStyle style);
extern void openai_parse_response(const char *body, size_t len, OpenAIResponse *out);

#endif
