/*
 * mock_chat.c
 *	  POST /v1/chat/completions for mock_llm: request scan, deterministic
 *	  reply, and the [[mock:...]] fault directives tests use to script
 *	  failures.
 *
 * The request is validated as JSON in one pass that also picks out what the
 * reply needs: model, max_tokens (or max_completion_tokens), the content of
 * the first "system" message and of the last "user" message, and the total
 * bytes of all message contents.  Strings are never decoded: the reply
 * echoes their raw, still-escaped bytes, which are valid inside a JSON string
 * by construction.
 *
 * Reply content:  "[mock] " S " :: " U FILLER
 *	 S, U     raw bytes of the system / last user content, each cut to at most
 *	          160 bytes on a boundary (never inside a backslash escape, a
 *	          surrogate pair or a UTF-8 sequence); any "[[mock:" in them is
 *	          echoed as "[[mock-" so a conversation that carries the reply
 *	          back does not re-trigger the directive.
 *	 FILLER   K words " w<h>", K = min(--words, max_tokens), h in 0..999
 *	          drawn from a generator seeded with the hash of the whole body:
 *	          the same body always gets the same content.  (With --words
 *	          SPEC a distribution draws K instead, from the thread's
 *	          generator; the words themselves still come from the body.)
 *
 * Structured requests get an action instead ("structured actions" below):
 * a body with "tools" (tools mode: the action is the arguments of a
 * tool call to the first tool) or with a "response_format" of type
 * json_schema or json_object (JSON mode: the action is the content).  The
 * scan also picks out the first tool's name and the allowed actions, the
 * strings of the schema's properties.action.enum.  The action object is
 *   {"action":A,"post_id":N|null,"agent_id":N|null,"community_id":N|null,
 *    "text":"w<h> w<h> ..."|null}
 * chosen with fixed weights among the allowed actions, its target among the
 * ids the last user message offers ("[post N]", "(agent N)",
 * "[community N]"), its text made of filler words; everything is drawn from
 * the body's hash, so the same body always gets the same action.
 * --invalid-actions P (and the directive invalid_action) make a share of
 * them invalid in one of four ways a real model gets it wrong.
 *
 * Directives come from the first "[[mock:" ... "]]" anywhere in the raw body,
 * comma-separated items; the list is in docs/mock.md and in
 * faults_apply_item().  A body without one gets the --fault list, parsed
 * once at start-up by chat_init().  "times=N" keys on the same body hash
 * through stats_record_attempt() (mock_routes.c owns the table and its
 * lock).
 *
 * Nothing here does network I/O; the MockReply says what mock_server.c must
 * do.  The one exception to "no I/O at all" is fixture=NAME, which reads a
 * small recorded reply from the --fixtures directory each time it is asked
 * for (so fixtures edited while the mock runs take effect at once).
 *
 * Batch lines (mock_batch.c) get the same reply through chat_batch_answer():
 * the same scan, directives and completion, without admission, latency or
 * anything that needs a connection.  mock_json_members() lends the JSON
 * scanner to mock_batch.c, for batch input lines and request bodies.
 *
 * Admission comes before everything else and answers at once: --rps-limit
 * (mock_load.c keeps the per-second window), then --max-inflight.  The
 * latency of everything else is decided here too (mock_load.c samples it),
 * because with --ms-per-token it depends on the completion just built.
 */
#define _GNU_SOURCE				/* memmem */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mock.h"

/* Bytes of each echoed message content, at most. */
#define ECHO_LIMIT			160
/* Ids of each kind kept from the prompt of a structured request. */
#define MAX_OFFERS			64
/* Words of an action's text, at most. */
#define MAX_ACTION_WORDS	40
/* Deepest JSON nesting accepted, so hostile input cannot exhaust the stack. */
#define MAX_JSON_DEPTH		64
/* Largest fixture file replayed. */
#define MAX_FIXTURE_BYTES	(64u * 1024 * 1024)
/* Largest huge= a batch line writes out (its body is held in the output file). */
#define MAX_BATCH_HUGE		(64u * 1024 * 1024)
/* Furthest retry_after_date= may point, either way: about 317 years. */
#define MAX_DATE_OFFSET		10000000000LL

/* errshape=NAME: how an error status's body is shaped. */
typedef enum ErrorShape
{
	SHAPE_OPENAI,				/* {"error":{"message","type","param","code":"..."}} */
	SHAPE_FLAT,					/* vLLM < 0.10: {"object":"error",...,"code":500} */
	SHAPE_INTCODE,				/* vLLM >= 0.10: nested, "code":500 */
	SHAPE_STRING,				/* {"error":"..."} */
	SHAPE_ARRAY,				/* Google: [{"error":{"code","message","status"}}] */
	SHAPE_DETAIL,				/* FastAPI: {"detail":"..."} */
	SHAPE_MESSAGE,				/* {"message":"..."} */
	SHAPE_ANTHROPIC,			/* {"type":"error","error":{"type","message"}} */
	SHAPE_TEXT					/* text/plain */
} ErrorShape;

static const char *const shape_names[] = {
	"openai", "flat", "intcode", "string", "array", "detail", "message", "anthropic", "text"
};

/* What an action points at; its id key in the action object. */
typedef enum ActionTarget
{
	TARGET_NONE,
	TARGET_POST,				/* "post_id", offered as "[post N]" */
	TARGET_AGENT,				/* "agent_id", offered as "(agent N)" */
	TARGET_COMMUNITY			/* "community_id", offered as "[community N]" */
} ActionTarget;

/* The actions a structured reply may choose, with their weights (percent). */
typedef struct ActionKind
{
	const char *name;
	uint32_t	weight;
	ActionTarget target;
	bool		has_text;
} ActionKind;

static const ActionKind action_kinds[] = {
	{"post", 25, TARGET_NONE, true},
	{"reply", 15, TARGET_POST, true},
	{"like", 20, TARGET_POST, false},
	{"dislike", 5, TARGET_POST, false},
	{"repost", 8, TARGET_POST, false},
	{"quote", 5, TARGET_POST, true},
	{"follow", 8, TARGET_AGENT, false},
	{"unfollow", 3, TARGET_AGENT, false},
	{"mute", 2, TARGET_AGENT, false},
	{"join_community", 3, TARGET_COMMUNITY, false},
	{"leave_community", 2, TARGET_COMMUNITY, false},
	{"do_nothing", 4, TARGET_NONE, false},
};

#define ACTION_COUNT	(sizeof(action_kinds) / sizeof(action_kinds[0]))
#define ALL_ACTIONS		((1u << ACTION_COUNT) - 1)
#define ACTION_POST		0			/* indexes into action_kinds[] */
#define ACTION_NOTHING	11

/* How a request asks for structured output. */
typedef enum StructuredMode
{
	STRUCT_NONE,				/* plain text: the "[mock] ..." content */
	STRUCT_JSON,				/* response_format: the action is the content */
	STRUCT_TOOLS				/* tools: the action is a tool call's arguments */
} StructuredMode;

/* What the reply needs from the request. */
typedef struct ChatRequest
{
	MockSpan	model;
	bool		has_model;
	bool		has_max_tokens;
	int64_t		max_tokens;
	bool		has_messages;
	size_t		message_count;
	MockSpan	system_content; /* first system message, raw bytes */
	bool		has_system;
	MockSpan	user_content;	/* last user message, raw bytes */
	uint64_t	content_bytes;	/* all message contents, raw bytes */
	/* structured output: see "structured actions" */
	MockSpan	format_type;	/* response_format.type, raw bytes */
	uint32_t	format_actions; /* bits of action_kinds[] in its schema's enum */
	bool		has_tool;		/* tools[0].function.name is a string */
	MockSpan	tool_name;		/* that name, raw bytes */
	uint32_t	tool_actions;	/* bits of action_kinds[] in its parameters' enum */
} ChatRequest;

/* The directives of one request; see faults_parse(). */
typedef struct MockFaults
{
	bool		present;
	int			status;			/* 0: none */
	char		code[64];		/* "": default for the status */
	int64_t		times;			/* -1: every attempt */
	char		retry_after[32];
	char		retry_after_ms[32];
	char		ratelimit_remaining[32];	/* x-ratelimit-remaining-requests */
	char		ratelimit_reset[32];	/* x-ratelimit-reset-requests */
	int			should_retry;	/* -1 none, 0 false, 1 true */
	int64_t		delay_ms;		/* -1: global latency */
	bool		hang;
	bool		reset;
	bool		reset_mid;
	bool		malformed;
	bool		html;
	bool		nochoices;
	bool		emptychoices;
	bool		nousage;
	bool		nullcontent;
	char		finish[32];
	int64_t		huge;			/* -1: none */
	bool		nul;
	bool		rawnul;
	bool		badutf8;
	bool		surrogate;
	int64_t		drip_ms;		/* 0: none */
	bool		garbage;
	bool		empty;
	bool		badchunk;
	bool		refusal;
	bool		invalid_action;
	bool		has_errshape;
	ErrorShape	errshape;
	bool		has_retry_after_date;
	int64_t		retry_after_date;	/* seconds from now */
	char		ratelimit_remaining_tokens[32];
	char		ratelimit_reset_tokens[32];
	char		fixture[128];	/* "": none */
	char		error[200];		/* why parsing failed, JSON-safe */
} MockFaults;

/* --fault: applied to every request whose body has no directive. */
static MockFaults global_faults;


/* ---- hashing ---- */

static uint64_t
mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* A 64-bit hash of a byte string: request identity and filler seed. */
uint64_t
mock_hash_bytes(const void *bytes, size_t len)
{
	const unsigned char *at = bytes;
	uint64_t	hash = 0x243f6a8885a308d3ULL ^ ((uint64_t) len * 0x9e3779b97f4a7c15ULL);
	uint64_t	word;

	while (len >= 8)
	{
		memcpy(&word, at, 8);
		hash ^= mix64(word);
		hash = ((hash << 29) | (hash >> 35)) * 0x9e3779b97f4a7c15ULL;
		at += 8;
		len -= 8;
	}
	word = 0;
	memcpy(&word, at, len);
	hash ^= mix64(word ^ (uint64_t) len);
	return mix64(hash);
}


/* ---- JSON scanning ---- */

typedef struct JsonScan
{
	const char *at;
	const char *end;
	int			depth;
} JsonScan;

static void
json_skip_space(JsonScan *scan)
{
	while (scan->at < scan->end &&
		   (*scan->at == ' ' || *scan->at == '\t' || *scan->at == '\n' || *scan->at == '\r'))
		scan->at++;
}

static bool
json_peek(JsonScan *scan, char ch)
{
	json_skip_space(scan);
	return scan->at < scan->end && *scan->at == ch;
}

static bool
json_expect(JsonScan *scan, char ch)
{
	if (!json_peek(scan, ch))
		return false;
	scan->at++;
	return true;
}

static bool
is_hex_digit(char ch)
{
	return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f');
}

/* A string at the cursor; *inside gets the raw bytes between the quotes. */
static bool
json_string(JsonScan *scan, MockSpan *inside)
{
	const char *start;

	if (!json_expect(scan, '"'))
		return false;
	start = scan->at;
	while (scan->at < scan->end)
	{
		unsigned char ch = (unsigned char) *scan->at;

		if (ch == '"')
		{
			inside->ptr = start;
			inside->len = (size_t) (scan->at - start);
			scan->at++;
			return true;
		}
		if (ch < 0x20)
			return false;
		if (ch == '\\')
		{
			if (scan->end - scan->at < 2)
				return false;
			if (scan->at[1] == 'u')
			{
				if (scan->end - scan->at < 6 ||
					!is_hex_digit(scan->at[2]) || !is_hex_digit(scan->at[3]) ||
					!is_hex_digit(scan->at[4]) || !is_hex_digit(scan->at[5]))
					return false;
				scan->at += 6;
			}
			else if (strchr("\"\\/bfnrt", scan->at[1]) != NULL && scan->at[1] != '\0')
				scan->at += 2;
			else
				return false;
		}
		else
			scan->at++;
	}
	return false;
}

static bool
json_digits(JsonScan *scan)
{
	const char *start = scan->at;

	while (scan->at < scan->end && *scan->at >= '0' && *scan->at <= '9')
		scan->at++;
	return scan->at > start;
}

/* A number at the cursor; *is_integer says whether it had no fraction/exponent. */
static bool
json_number(JsonScan *scan, MockSpan *text, bool *is_integer)
{
	json_skip_space(scan);
	text->ptr = scan->at;
	*is_integer = true;
	if (scan->at < scan->end && *scan->at == '-')
		scan->at++;
	if (scan->at < scan->end && *scan->at == '0')
		scan->at++;
	else if (!json_digits(scan))
		return false;
	if (scan->at < scan->end && *scan->at == '.')
	{
		scan->at++;
		*is_integer = false;
		if (!json_digits(scan))
			return false;
	}
	if (scan->at < scan->end && (*scan->at == 'e' || *scan->at == 'E'))
	{
		scan->at++;
		*is_integer = false;
		if (scan->at < scan->end && (*scan->at == '+' || *scan->at == '-'))
			scan->at++;
		if (!json_digits(scan))
			return false;
	}
	text->len = (size_t) (scan->at - text->ptr);
	return true;
}

static bool
json_literal(JsonScan *scan, const char *word)
{
	size_t		len = strlen(word);

	if ((size_t) (scan->end - scan->at) < len || memcmp(scan->at, word, len) != 0)
		return false;
	scan->at += len;
	return true;
}

static bool json_skip_value(JsonScan *scan);

/*
 * Walk the members of an object (cursor before its '{').  For each key,
 * MEMBER is called with the cursor before the value and must consume it;
 * returns false if MEMBER or the JSON fails.
 */
typedef bool (*JsonMemberFn) (JsonScan *scan, MockSpan key, void *state);

static bool
json_object(JsonScan *scan, JsonMemberFn member, void *state)
{
	if (!json_expect(scan, '{') || ++scan->depth > MAX_JSON_DEPTH)
		return false;
	if (json_expect(scan, '}'))
	{
		scan->depth--;
		return true;
	}
	for (;;)
	{
		MockSpan	key;

		if (!json_string(scan, &key) || !json_expect(scan, ':'))
			return false;
		json_skip_space(scan);
		if (!member(scan, key, state))
			return false;
		if (json_expect(scan, '}'))
			break;
		if (!json_expect(scan, ','))
			return false;
	}
	scan->depth--;
	return true;
}

/* Like json_object, for the elements of an array. */
typedef bool (*JsonElementFn) (JsonScan *scan, size_t index, void *state);

static bool
json_array(JsonScan *scan, JsonElementFn element, void *state)
{
	size_t		index = 0;

	if (!json_expect(scan, '[') || ++scan->depth > MAX_JSON_DEPTH)
		return false;
	if (json_expect(scan, ']'))
	{
		scan->depth--;
		return true;
	}
	for (;;)
	{
		json_skip_space(scan);
		if (!element(scan, index++, state))
			return false;
		if (json_expect(scan, ']'))
			break;
		if (!json_expect(scan, ','))
			return false;
	}
	scan->depth--;
	return true;
}

static bool
skip_member(JsonScan *scan, MockSpan key, void *state)
{
	(void) key;
	(void) state;
	return json_skip_value(scan);
}

static bool
skip_element(JsonScan *scan, size_t index, void *state)
{
	(void) index;
	(void) state;
	return json_skip_value(scan);
}

static bool
json_skip_value(JsonScan *scan)
{
	MockSpan	ignored;
	bool		is_integer;

	json_skip_space(scan);
	if (scan->at >= scan->end)
		return false;
	switch (*scan->at)
	{
		case '{':
			return json_object(scan, skip_member, NULL);
		case '[':
			return json_array(scan, skip_element, NULL);
		case '"':
			return json_string(scan, &ignored);
		case 't':
			return json_literal(scan, "true");
		case 'f':
			return json_literal(scan, "false");
		case 'n':
			return json_literal(scan, "null");
		default:
			return json_number(scan, &ignored, &is_integer);
	}
}

static bool
span_is(MockSpan span, const char *text)
{
	return span.len == strlen(text) && memcmp(span.ptr, text, span.len) == 0;
}


/* ---- the chat request ---- */

/* State while walking one request; error set means "answer 400 with it". */
typedef struct ChatScan
{
	ChatRequest *chat;
	const char *error;
	/* the message being walked */
	MockSpan	role;
	MockSpan	content;
	bool		content_seen;
} ChatScan;

static bool
content_part_member(JsonScan *scan, MockSpan key, void *state)
{
	ChatScan   *walk = state;
	MockSpan	text;

	if (!span_is(key, "text") || !json_peek(scan, '"'))
		return json_skip_value(scan);
	if (!json_string(scan, &text))
		return false;
	walk->chat->content_bytes += text.len;
	if (!walk->content_seen)
	{
		walk->content = text;
		walk->content_seen = true;
	}
	return true;
}

/* Multi-part content: [{"type":"text","text":"..."}, ...]; text parts count. */
static bool
content_part(JsonScan *scan, size_t index, void *state)
{
	(void) index;
	if (!json_peek(scan, '{'))
		return json_skip_value(scan);
	return json_object(scan, content_part_member, state);
}

static bool
message_member(JsonScan *scan, MockSpan key, void *state)
{
	ChatScan   *walk = state;

	if (span_is(key, "role") && json_peek(scan, '"'))
		return json_string(scan, &walk->role);
	if (span_is(key, "content"))
	{
		if (json_peek(scan, '"'))
		{
			if (!json_string(scan, &walk->content))
				return false;
			walk->content_seen = true;
			walk->chat->content_bytes += walk->content.len;
			return true;
		}
		if (json_peek(scan, '['))
			return json_array(scan, content_part, walk);
	}
	return json_skip_value(scan);
}

static bool
message_element(JsonScan *scan, size_t index, void *state)
{
	ChatScan   *walk = state;
	ChatRequest *chat = walk->chat;

	(void) index;
	if (!json_peek(scan, '{'))
	{
		if (walk->error == NULL)
			walk->error = "Invalid type for an element of 'messages': expected an object.";
		return json_skip_value(scan);
	}
	walk->role.ptr = NULL;
	walk->role.len = 0;
	walk->content.ptr = "";
	walk->content.len = 0;
	walk->content_seen = false;
	if (!json_object(scan, message_member, walk))
		return false;
	chat->message_count++;
	if (span_is(walk->role, "system") && !chat->has_system)
	{
		chat->system_content = walk->content;
		chat->has_system = true;
	}
	else if (span_is(walk->role, "user"))
		chat->user_content = walk->content;
	return true;
}

/* Parse a non-negative JSON integer that fits in int64. */
static bool
span_to_count(MockSpan text, int64_t *value)
{
	int64_t		result = 0;

	if (text.len == 0 || text.len > 18 || text.ptr[0] == '-')
		return false;
	for (size_t i = 0; i < text.len; i++)
		result = result * 10 + (text.ptr[i] - '0');
	*value = result;
	return true;
}

/*
 * Structured output.  The walk down a JSON schema to
 * properties.action.enum; STATE is the uint32_t whose bits name the
 * action_kinds[] listed there.  Values of other shapes are skipped, not
 * refused: such a request stays valid and allows every action.
 */
static bool
action_enum_element(JsonScan *scan, size_t index, void *state)
{
	uint32_t   *mask = state;
	MockSpan	name;

	(void) index;
	if (!json_peek(scan, '"'))
		return json_skip_value(scan);
	if (!json_string(scan, &name))
		return false;
	for (size_t i = 0; i < ACTION_COUNT; i++)
		if (span_is(name, action_kinds[i].name))
			*mask |= 1u << i;
	return true;
}

static bool
action_property_member(JsonScan *scan, MockSpan key, void *state)
{
	if (span_is(key, "enum") && json_peek(scan, '['))
		return json_array(scan, action_enum_element, state);
	return json_skip_value(scan);
}

static bool
schema_property_member(JsonScan *scan, MockSpan key, void *state)
{
	if (span_is(key, "action") && json_peek(scan, '{'))
		return json_object(scan, action_property_member, state);
	return json_skip_value(scan);
}

static bool
schema_member(JsonScan *scan, MockSpan key, void *state)
{
	if (span_is(key, "properties") && json_peek(scan, '{'))
		return json_object(scan, schema_property_member, state);
	return json_skip_value(scan);
}

/* response_format.json_schema: {"name", "strict", "schema"} */
static bool
json_schema_member(JsonScan *scan, MockSpan key, void *state)
{
	ChatRequest *chat = state;

	if (span_is(key, "schema") && json_peek(scan, '{'))
		return json_object(scan, schema_member, &chat->format_actions);
	return json_skip_value(scan);
}

/* response_format: {"type": "json_schema"|"json_object"|..., "json_schema"} */
static bool
response_format_member(JsonScan *scan, MockSpan key, void *state)
{
	ChatRequest *chat = state;

	if (span_is(key, "type") && json_peek(scan, '"'))
		return json_string(scan, &chat->format_type);
	if (span_is(key, "json_schema") && json_peek(scan, '{'))
		return json_object(scan, json_schema_member, chat);
	return json_skip_value(scan);
}

/* tools[0].function: {"name", "description", "parameters"} */
static bool
tool_function_member(JsonScan *scan, MockSpan key, void *state)
{
	ChatRequest *chat = state;

	if (span_is(key, "name") && json_peek(scan, '"'))
	{
		chat->has_tool = true;
		return json_string(scan, &chat->tool_name);
	}
	if (span_is(key, "parameters") && json_peek(scan, '{'))
		return json_object(scan, schema_member, &chat->tool_actions);
	return json_skip_value(scan);
}

static bool
tool_member(JsonScan *scan, MockSpan key, void *state)
{
	if (span_is(key, "function") && json_peek(scan, '{'))
		return json_object(scan, tool_function_member, state);
	return json_skip_value(scan);
}

/* tools: only the first one counts */
static bool
tool_element(JsonScan *scan, size_t index, void *state)
{
	if (index == 0 && json_peek(scan, '{'))
		return json_object(scan, tool_member, state);
	return json_skip_value(scan);
}

static bool
request_member(JsonScan *scan, MockSpan key, void *state)
{
	ChatScan   *walk = state;
	ChatRequest *chat = walk->chat;

	if (span_is(key, "model"))
	{
		if (json_peek(scan, '"'))
		{
			chat->has_model = true;
			return json_string(scan, &chat->model);
		}
		if (walk->error == NULL)
			walk->error = "Invalid type for 'model': expected a string.";
	}
	else if (span_is(key, "max_tokens") || span_is(key, "max_completion_tokens"))
	{
		MockSpan	number;
		bool		is_integer;

		if (json_peek(scan, 'n'))
			return json_literal(scan, "null");
		if (json_peek(scan, '-') ||
			(scan->at < scan->end && *scan->at >= '0' && *scan->at <= '9'))
		{
			if (!json_number(scan, &number, &is_integer))
				return false;
			if (is_integer && span_to_count(number, &chat->max_tokens))
				chat->has_max_tokens = true;
			else if (walk->error == NULL)
				walk->error = "Invalid 'max_tokens': expected a non-negative integer.";
			return true;
		}
		if (walk->error == NULL)
			walk->error = "Invalid 'max_tokens': expected a non-negative integer.";
	}
	else if (span_is(key, "messages"))
	{
		if (json_peek(scan, '['))
		{
			chat->has_messages = true;
			return json_array(scan, message_element, walk);
		}
		if (walk->error == NULL)
			walk->error = "Invalid type for 'messages': expected an array.";
	}
	else if (span_is(key, "response_format") && json_peek(scan, '{'))
		return json_object(scan, response_format_member, chat);
	else if (span_is(key, "tools") && json_peek(scan, '['))
		return json_array(scan, tool_element, chat);
	return json_skip_value(scan);
}

/*
 * Scan BODY as a chat request.  Returns NULL when it is usable, otherwise
 * the (static, JSON-safe) message for a 400.
 */
static const char *
chat_scan_request(const char *body, size_t len, ChatRequest *chat)
{
	JsonScan	scan = {body, body + len, 0};
	ChatScan	walk = {0};

	memset(chat, 0, sizeof(*chat));
	chat->model.ptr = chat->system_content.ptr = chat->user_content.ptr = "";
	chat->format_type.ptr = chat->tool_name.ptr = "";
	walk.chat = chat;

	if (!json_peek(&scan, '{'))
	{
		if (json_skip_value(&scan) && (json_skip_space(&scan), scan.at == scan.end))
			return "The request body must be a JSON object.";
		return "We could not parse the JSON body of your request (mock_llm: not valid JSON).";
	}
	if (!json_object(&scan, request_member, &walk))
		return "We could not parse the JSON body of your request (mock_llm: not valid JSON).";
	json_skip_space(&scan);
	if (scan.at != scan.end)
		return "We could not parse the JSON body of your request (mock_llm: trailing bytes after the JSON object).";
	if (walk.error != NULL)
		return walk.error;
	if (!chat->has_model)
		return "Missing required parameter: 'model'.";
	if (!chat->has_messages)
		return "Missing required parameter: 'messages'.";
	if (chat->message_count == 0)
		return "Invalid 'messages': empty array. Expected an array with minimum length 1.";
	return NULL;
}


/* ---- fault directives ---- */

static void
faults_clear(MockFaults *faults)
{
	memset(faults, 0, sizeof(*faults));
	faults->times = -1;
	faults->should_retry = -1;
	faults->delay_ms = -1;
	faults->huge = -1;
}

static bool
item_integer(MockSpan value, int64_t min, int64_t max, int64_t *out)
{
	int64_t		result = 0;

	if (value.len == 0 || value.len > 15)
		return false;
	for (size_t i = 0; i < value.len; i++)
	{
		if (value.ptr[i] < '0' || value.ptr[i] > '9')
			return false;
		result = result * 10 + (value.ptr[i] - '0');
	}
	if (result < min || result > max)
		return false;
	*out = result;
	return true;
}

/* Like item_integer, with an optional leading '-'. */
static bool
item_signed(MockSpan value, int64_t min, int64_t max, int64_t *out)
{
	bool		negative = value.len > 0 && value.ptr[0] == '-';
	MockSpan	digits = value;
	int64_t		magnitude;

	if (negative)
	{
		digits.ptr++;
		digits.len--;
	}
	if (!item_integer(digits, 0, INT64_MAX / 2, &magnitude))
		return false;
	*out = negative ? -magnitude : magnitude;
	return *out >= min && *out <= max;
}

/* Copy a word made of [A-Za-z0-9._-] into DEST; anything else is refused. */
static bool
item_word(MockSpan value, char *dest, size_t dest_size)
{
	if (value.len == 0 || value.len >= dest_size)
		return false;
	for (size_t i = 0; i < value.len; i++)
	{
		char		ch = value.ptr[i];

		if (!((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
			  ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	memcpy(dest, value.ptr, value.len);
	dest[value.len] = '\0';
	return true;
}

static void
faults_refuse(MockFaults *faults, const char *why, MockSpan item)
{
	size_t		at = (size_t) snprintf(faults->error, sizeof(faults->error),
									   "mock_llm: %s in [[mock:...]]: '", why);

	/* keep only characters that are safe inside a JSON string */
	for (size_t i = 0; i < item.len && at + 3 < sizeof(faults->error); i++)
	{
		char		ch = item.ptr[i];

		faults->error[at++] = (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') ? ch : '?';
	}
	faults->error[at++] = '\'';
	faults->error[at] = '\0';
}

/* Apply one "name" or "name=value" item; false (with faults->error) if bad. */
static bool
faults_apply_item(MockFaults *faults, MockSpan item)
{
	const char *equals = memchr(item.ptr, '=', item.len);
	MockSpan	name = item;
	MockSpan	value = {"", 0};
	bool		has_value = equals != NULL;
	int64_t		number;

	if (has_value)
	{
		name.len = (size_t) (equals - item.ptr);
		value.ptr = equals + 1;
		value.len = item.len - name.len - 1;
	}

#define FLAG(word, field) \
	if (span_is(name, word)) \
	{ \
		if (has_value) \
			goto bad_value; \
		faults->field = true; \
		return true; \
	}
	FLAG("hang", hang);
	FLAG("reset", reset);
	FLAG("reset_mid", reset_mid);
	FLAG("malformed", malformed);
	FLAG("html", html);
	FLAG("nochoices", nochoices);
	FLAG("emptychoices", emptychoices);
	FLAG("nousage", nousage);
	FLAG("nullcontent", nullcontent);
	FLAG("nul", nul);
	FLAG("rawnul", rawnul);
	FLAG("badutf8", badutf8);
	FLAG("surrogate", surrogate);
	FLAG("garbage", garbage);
	FLAG("empty", empty);
	FLAG("badchunk", badchunk);
	FLAG("refusal", refusal);
	FLAG("invalid_action", invalid_action);
#undef FLAG

	if (!has_value)
	{
		faults_refuse(faults, "unknown directive or missing value", item);
		return false;
	}
	if (span_is(name, "status"))
	{
		if (!item_integer(value, 200, 599, &number))
			goto bad_value;
		faults->status = (int) number;
	}
	else if (span_is(name, "code"))
	{
		if (!item_word(value, faults->code, sizeof(faults->code)))
			goto bad_value;
	}
	else if (span_is(name, "times"))
	{
		if (!item_integer(value, 0, 1000000000, &faults->times))
			goto bad_value;
	}
	else if (span_is(name, "retry_after"))
	{
		if (!item_word(value, faults->retry_after, sizeof(faults->retry_after)))
			goto bad_value;
	}
	else if (span_is(name, "retry_after_ms"))
	{
		if (!item_word(value, faults->retry_after_ms, sizeof(faults->retry_after_ms)))
			goto bad_value;
	}
	else if (span_is(name, "ratelimit_remaining"))
	{
		if (!item_word(value, faults->ratelimit_remaining, sizeof(faults->ratelimit_remaining)))
			goto bad_value;
	}
	else if (span_is(name, "ratelimit_reset"))
	{
		if (!item_word(value, faults->ratelimit_reset, sizeof(faults->ratelimit_reset)))
			goto bad_value;
	}
	else if (span_is(name, "should_retry"))
	{
		if (span_is(value, "true"))
			faults->should_retry = 1;
		else if (span_is(value, "false"))
			faults->should_retry = 0;
		else
			goto bad_value;
	}
	else if (span_is(name, "delay"))
	{
		if (!item_integer(value, 0, 86400000, &faults->delay_ms))
			goto bad_value;
	}
	else if (span_is(name, "finish"))
	{
		if (!item_word(value, faults->finish, sizeof(faults->finish)))
			goto bad_value;
	}
	else if (span_is(name, "huge"))
	{
		if (!item_integer(value, 0, (int64_t) 1 << 40, &faults->huge))
			goto bad_value;
	}
	else if (span_is(name, "drip"))
	{
		if (!item_integer(value, 1, 3600000, &faults->drip_ms))
			goto bad_value;
	}
	else if (span_is(name, "errshape"))
	{
		size_t		i;

		for (i = 0; i < sizeof(shape_names) / sizeof(shape_names[0]); i++)
			if (span_is(value, shape_names[i]))
				break;
		if (i == sizeof(shape_names) / sizeof(shape_names[0]))
			goto bad_value;
		faults->has_errshape = true;
		faults->errshape = (ErrorShape) i;
	}
	else if (span_is(name, "retry_after_date"))
	{
		if (!item_signed(value, -MAX_DATE_OFFSET, MAX_DATE_OFFSET, &faults->retry_after_date))
			goto bad_value;
		faults->has_retry_after_date = true;
	}
	else if (span_is(name, "ratelimit_remaining_tokens"))
	{
		if (!item_word(value, faults->ratelimit_remaining_tokens,
					   sizeof(faults->ratelimit_remaining_tokens)))
			goto bad_value;
	}
	else if (span_is(name, "ratelimit_reset_tokens"))
	{
		if (!item_word(value, faults->ratelimit_reset_tokens,
					   sizeof(faults->ratelimit_reset_tokens)))
			goto bad_value;
	}
	else if (span_is(name, "fixture"))
	{
		/* the charset keeps NAME inside the fixtures directory */
		if (!item_word(value, faults->fixture, sizeof(faults->fixture)))
			goto bad_value;
	}
	else
	{
		faults_refuse(faults, "unknown directive", item);
		return false;
	}
	return true;

bad_value:
	faults_refuse(faults, "bad value", item);
	return false;
}

/*
 * Parse the comma-separated items from START up to CLOSE into FAULTS
 * (already cleared).  False with faults->error set if one is bad.
 */
static bool
faults_parse_items(const char *start, const char *close, MockFaults *faults)
{
	const char *at;

	faults->present = true;
	for (at = start; at < close;)
	{
		const char *comma = memchr(at, ',', (size_t) (close - at));
		const char *item_end = comma ? comma : close;
		MockSpan	item = {at, (size_t) (item_end - at)};

		while (item.len > 0 && item.ptr[0] == ' ')
		{
			item.ptr++;
			item.len--;
		}
		while (item.len > 0 && item.ptr[item.len - 1] == ' ')
			item.len--;
		if (item.len > 0 && !faults_apply_item(faults, item))
			return false;
		at = item_end + 1;
	}
	if (faults->has_errshape && faults->status < 400)
	{
		snprintf(faults->error, sizeof(faults->error),
				 "mock_llm: errshape needs an error status (status=400..599) in [[mock:...]]");
		return false;
	}
	return true;
}

/*
 * Find the first "[[mock:" ... "]]" in BODY and parse its items.  Returns
 * false with faults->error set when the block is unterminated or an item is
 * unknown or malformed: a typo in a test should fail loudly, not pass.
 */
static bool
faults_parse(const char *body, size_t len, MockFaults *faults)
{
	static const char marker[] = "[[mock:";
	const char *start = memmem(body, len, marker, sizeof(marker) - 1);
	const char *close;

	faults_clear(faults);
	if (start == NULL)
		return true;
	start += sizeof(marker) - 1;
	close = memmem(start, len - (size_t) (start - body), "]]", 2);
	if (close == NULL)
	{
		snprintf(faults->error, sizeof(faults->error),
				 "mock_llm: [[mock: without a closing ]]");
		return false;
	}
	return faults_parse_items(start, close, faults);
}

/*
 * Parse --fault once, before the workers start.  Returns NULL, or why the
 * list is bad (the same messages as for a bad [[mock:...]]).
 */
const char *
chat_init(void)
{
	faults_clear(&global_faults);
	if (mock_config.fault == NULL)
		return NULL;
	if (!faults_parse_items(mock_config.fault,
							mock_config.fault + strlen(mock_config.fault), &global_faults))
		return global_faults.error;
	return NULL;
}


/* ---- the reply ---- */

/* Is the escape at RAW (6 bytes, already validated) \uD800-\uDBFF? */
static bool
is_high_surrogate_escape(const char *raw)
{
	return (raw[2] | 0x20) == 'd' && strchr("89abAB", raw[3]) != NULL;
}

static bool
is_low_surrogate_escape(const char *raw)
{
	return raw[0] == '\\' && raw[1] == 'u' && (raw[2] | 0x20) == 'd' &&
		strchr("cdefCDEF", raw[3]) != NULL && raw[3] != '\0';
}

/*
 * Longest prefix of the raw JSON string bytes RAW that is at most LIMIT
 * bytes and does not end inside an escape, a surrogate pair or a UTF-8
 * sequence.
 */
static size_t
echo_prefix_length(MockSpan raw, size_t limit)
{
	size_t		at = 0;

	while (at < raw.len)
	{
		unsigned char ch = (unsigned char) raw.ptr[at];
		size_t		unit;

		if (ch == '\\')
		{
			unit = 2;
			if (raw.ptr[at + 1] == 'u')
			{
				unit = 6;
				if (is_high_surrogate_escape(raw.ptr + at) && at + 12 <= raw.len &&
					is_low_surrogate_escape(raw.ptr + at + 6))
					unit = 12;
			}
		}
		else if (ch < 0x80)
			unit = 1;
		else if ((ch & 0xe0) == 0xc0)
			unit = 2;
		else if ((ch & 0xf0) == 0xe0)
			unit = 3;
		else if ((ch & 0xf8) == 0xf0)
			unit = 4;
		else
			unit = 1;
		if (unit > raw.len - at)
			unit = raw.len - at;
		if (at + unit > limit)
			break;
		at += unit;
	}
	return at;
}

/* Append an echoed content, defusing directives so they only fire once. */
static void
append_echo(MockBuf *out, MockSpan raw)
{
	size_t		start = out->len;
	size_t		len = echo_prefix_length(raw, ECHO_LIMIT);
	char	   *found;

	buf_append(out, raw.ptr, len);
	while ((found = memmem(out->data + start, out->len - start, "[[mock:", 7)) != NULL)
		found[6] = '-';
}

static uint64_t
next_random(uint64_t *state)
{
	*state += 0x9e3779b97f4a7c15ULL;
	return mix64(*state);
}

/*
 * WORDS filler words "w<h>", h in 0..999, from a generator seeded with
 * SEED (the body's hash), each after a space, or between spaces only.
 */
static void
append_filler(MockBuf *out, uint64_t seed, uint64_t words, bool leading_space)
{
	for (uint64_t i = 0; i < words; i++)
	{
		if (i > 0 || leading_space)
			buf_append(out, " ", 1);
		buf_append(out, "w", 1);
		buf_append_u64(out, next_random(&seed) % 1000);
	}
}

/* The bytes nul, rawnul, badutf8 and surrogate put into a content string. */
static void
append_bad_bytes(MockBuf *out, const MockFaults *faults)
{
	if (faults->nul)
		buf_append_str(out, "\\u0000");
	if (faults->rawnul)
		buf_append(out, "\0", 1);
	if (faults->badutf8)
		buf_append(out, "\xc3\x28", 2);
	if (faults->surrogate)
		buf_append_str(out, "\\ud800");
}


/* ---- structured actions ---- */

/* The ids the prompt offers, by ActionTarget - 1, in order of appearance. */
typedef struct ActionOffers
{
	int64_t		ids[3][MAX_OFFERS];
	int			count[3];
} ActionOffers;

/*
 * Is CHAT structured, and how?  *ALLOWED gets the bits of the actions its
 * schema's enum allows (tools[0].function.parameters in tools mode,
 * response_format.json_schema.schema in JSON mode), or all of them when
 * that enum is missing or names none of ours.  Tools win over
 * response_format when a request has both.
 */
static StructuredMode
structured_mode(const ChatRequest *chat, uint32_t *allowed)
{
	StructuredMode mode;
	uint32_t	mask;

	if (chat->has_tool)
	{
		mode = STRUCT_TOOLS;
		mask = chat->tool_actions;
	}
	else if (span_is(chat->format_type, "json_schema") ||
			 span_is(chat->format_type, "json_object"))
	{
		mode = STRUCT_JSON;
		mask = chat->format_actions;
	}
	else
		return STRUCT_NONE;
	*allowed = mask != 0 ? mask : ALL_ACTIONS;
	return mode;
}

/*
 * Every PREFIX N CLOSE in the raw TEXT (N 1 to 18 decimal digits) into IDS,
 * at most MAX_OFFERS of them; returns how many.
 */
static int
scan_offered(MockSpan text, const char *prefix, char close, int64_t *ids)
{
	size_t		prefix_len = strlen(prefix);
	const char *end = text.ptr + text.len;
	const char *at = text.ptr;
	int			count = 0;

	while (count < MAX_OFFERS &&
		   (at = memmem(at, (size_t) (end - at), prefix, prefix_len)) != NULL)
	{
		const char *digit = at + prefix_len;
		uint64_t	id = 0;
		int			digits = 0;

		while (digit < end && *digit >= '0' && *digit <= '9' && digits <= 18)
		{
			id = id * 10 + (uint64_t) (*digit - '0');
			digit++;
			digits++;
		}
		if (digits >= 1 && digits <= 18 && digit < end && *digit == close)
			ids[count++] = (int64_t) id;
		at += prefix_len;
	}
	return count;
}

static void
scan_offers(MockSpan user_content, ActionOffers *offers)
{
	offers->count[TARGET_POST - 1] =
		scan_offered(user_content, "[post ", ']', offers->ids[TARGET_POST - 1]);
	offers->count[TARGET_AGENT - 1] =
		scan_offered(user_content, "(agent ", ')', offers->ids[TARGET_AGENT - 1]);
	offers->count[TARGET_COMMUNITY - 1] =
		scan_offered(user_content, "[community ", ']', offers->ids[TARGET_COMMUNITY - 1]);
}

static void
append_id_or_null(MockBuf *out, const char *key, int64_t id)
{
	buf_append_str(out, key);
	if (id >= 0)
		buf_append_i64(out, id);
	else
		buf_append_str(out, "null");
}

/*
 * The action object, always these five keys in this order; ids of -1 and a
 * TEXT_WORDS of 0 are null.  ACTION is written as is (a name, no escapes).
 */
static void
append_action_object(MockBuf *out, const char *action, ActionTarget target, int64_t id,
					 uint64_t text_seed, uint64_t text_words)
{
	buf_append_str(out, "{\"action\":\"");
	buf_append_str(out, action);
	buf_append(out, "\"", 1);
	append_id_or_null(out, ",\"post_id\":", target == TARGET_POST ? id : -1);
	append_id_or_null(out, ",\"agent_id\":", target == TARGET_AGENT ? id : -1);
	append_id_or_null(out, ",\"community_id\":", target == TARGET_COMMUNITY ? id : -1);
	buf_append_str(out, ",\"text\":");
	if (text_words > 0)
	{
		buf_append(out, "\"", 1);
		append_filler(out, text_seed, text_words, false);
		buf_append(out, "\"", 1);
	}
	else
		buf_append_str(out, "null");
	buf_append(out, "}", 1);
}

/* One of the four invalid replies, chosen by CHOICE. */
static void
append_invalid_action(MockBuf *out, const ActionOffers *offers, uint64_t choice)
{
	const int	posts = offers->count[TARGET_POST - 1];
	int64_t		unoffered = 999999999;

	switch (choice % 4)
	{
		case 0:
			/* a like of a post the prompt did not offer */
			if (posts > 0)
			{
				unoffered = 0;
				for (int i = 0; i < posts; i++)
					if (offers->ids[TARGET_POST - 1][i] > unoffered)
						unoffered = offers->ids[TARGET_POST - 1][i];
				unoffered += 1000000;
			}
			append_action_object(out, "like", TARGET_POST, unoffered, 0, 0);
			break;
		case 1:
			append_action_object(out, "dance", TARGET_NONE, -1, 0, 0);
			break;
		case 2:
			buf_append_str(out, "I would like to post something");
			break;
		default:
			/* a follow of nobody */
			append_action_object(out, "follow", TARGET_NONE, -1, 0, 0);
			break;
	}
}

/*
 * The action instead of one whose kind of target is not offered: post, or
 * do_nothing when post is not allowed; when neither is, the first allowed
 * action whose target is offered, and do_nothing if there is none.
 */
static size_t
fallback_action(uint32_t allowed, const ActionOffers *offers)
{
	if (allowed & (1u << ACTION_POST))
		return ACTION_POST;
	if (allowed & (1u << ACTION_NOTHING))
		return ACTION_NOTHING;
	for (size_t i = 0; i < ACTION_COUNT; i++)
		if ((allowed & (1u << i)) && action_kinds[i].target != TARGET_NONE &&
			offers->count[action_kinds[i].target - 1] > 0)
			return i;
	return ACTION_NOTHING;
}

/*
 * Choose an action for CHAT among ALLOWED and write it, unescaped, to OUT.
 * Everything is drawn from the body's hash IDENTITY: whether the reply is
 * invalid (--invalid-actions, or always with FORCE_INVALID), which invalid
 * form, the action (weights of action_kinds[], among the allowed ones),
 * and its target (uniform among the offered ids of its kind).  An action
 * whose kind of target the prompt does not offer becomes another, see
 * fallback_action().  Its text is min(WORDS, 40) (at least 1) filler words.
 */
static void
build_action(MockBuf *out, const ChatRequest *chat, uint32_t allowed, bool force_invalid,
			 uint64_t identity, uint64_t words)
{
	ActionOffers offers;
	uint64_t	pick = identity ^ 0xa0761d6478bd642fULL;	/* its own stream */
	bool		invalid;
	uint64_t	invalid_form;
	uint64_t	total = 0;
	uint64_t	roll;
	size_t		chosen = ACTION_NOTHING;
	const ActionKind *kind;
	int64_t		id = -1;

	scan_offers(chat->user_content, &offers);
	/* always draw in the same order, so one setting does not shift the others */
	invalid = (double) (next_random(&pick) >> 11) * 0x1p-53 < mock_config.invalid_actions;
	invalid_form = next_random(&pick);
	roll = next_random(&pick);
	if (invalid || force_invalid)
	{
		append_invalid_action(out, &offers, invalid_form);
		return;
	}

	for (size_t i = 0; i < ACTION_COUNT; i++)
		if (allowed & (1u << i))
			total += action_kinds[i].weight;
	roll %= total;
	for (size_t i = 0; i < ACTION_COUNT; i++)
	{
		if (!(allowed & (1u << i)))
			continue;
		if (roll < action_kinds[i].weight)
		{
			chosen = i;
			break;
		}
		roll -= action_kinds[i].weight;
	}

	kind = &action_kinds[chosen];
	if (kind->target != TARGET_NONE && offers.count[kind->target - 1] == 0)
	{
		chosen = fallback_action(allowed, &offers);
		kind = &action_kinds[chosen];
	}
	if (kind->target != TARGET_NONE)
		id = offers.ids[kind->target - 1][next_random(&pick) % (uint64_t) offers.count[kind->target - 1]];

	if (words > MAX_ACTION_WORDS)
		words = MAX_ACTION_WORDS;
	if (words == 0)
		words = 1;
	append_action_object(out, kind->name, kind->target, id, identity,
						 kind->has_text ? words : 0);
}

/*
 * The tools-mode message after its "content": null, one tool call to the
 * request's first tool, the action as its arguments string.
 */
static void
append_tool_call(MockBuf *out, const ChatRequest *chat, const MockFaults *faults,
				 uint64_t identity, const MockBuf *action)
{
	char		call_id[32];

	snprintf(call_id, sizeof(call_id), "call_%016llx", (unsigned long long) identity);
	buf_append_str(out, "null,\"tool_calls\":[{\"id\":\"");
	buf_append_str(out, call_id);
	buf_append_str(out, "\",\"type\":\"function\",\"function\":{\"name\":\"");
	buf_append(out, chat->tool_name.ptr, chat->tool_name.len);
	buf_append_str(out, "\",\"arguments\":\"");
	append_bad_bytes(out, faults);
	buf_append_json_escaped(out, action->data, action->len);
	buf_append_str(out, "\"}}]");
}

/*
 * Append the completion object to reply->body and return its
 * completion_tokens.  For huge= the content is not written: the body stops
 * after the content's opening quote, the reply streams fill_bytes of 'x',
 * and the rest goes to body_tail.  A structured request (structured_mode())
 * gets its action as the content or as a tool call, and completion_tokens
 * counts the action's bytes / 4 (at least 1) instead of filler words.
 */
static uint64_t
append_completion(MockReply *reply, const ChatRequest *chat,
				  const MockFaults *faults, uint64_t identity)
{
	MockBuf    *out = &reply->body;
	uint64_t	words = load_words();
	uint64_t	prompt_tokens = chat->content_bytes / 4;
	uint64_t	completion_tokens;
	bool		huge = faults->huge >= 0 && !faults->nullcontent && !faults->refusal &&
		!faults->nochoices && !faults->emptychoices;
	size_t		split_at = 0;
	uint32_t	allowed = 0;
	StructuredMode mode = structured_mode(chat, &allowed);
	MockBuf		action = {0};
	const char *finish = "stop";

	if (chat->has_max_tokens && (uint64_t) chat->max_tokens < words)
		words = (uint64_t) chat->max_tokens;
	if (prompt_tokens == 0)
		prompt_tokens = 1;
	completion_tokens = huge ? (uint64_t) faults->huge / 4 : words;
	if (mode != STRUCT_NONE && !huge)
	{
		build_action(&action, chat, allowed, faults->invalid_action, identity, words);
		completion_tokens = action.len / 4 > 0 ? action.len / 4 : 1;
	}

	buf_append_str(out, "{\"id\":\"chatcmpl-mock-");
	buf_append_u64(out, stats_next_completion_id());
	buf_append_str(out, "\",\"object\":\"chat.completion\",\"created\":");
	buf_append_i64(out, (int64_t) time(NULL));
	buf_append_str(out, ",\"model\":\"");
	buf_append(out, chat->model.ptr, chat->model.len);
	buf_append(out, "\"", 1);

	if (!faults->nochoices)
	{
		buf_append_str(out, ",\"choices\":[");
		if (!faults->emptychoices)
		{
			buf_append_str(out, "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
			if (faults->refusal)
				buf_append_str(out, "null,\"refusal\":\"I'm sorry, I cannot help with that.\"");
			else if (faults->nullcontent)
				buf_append_str(out, "null");
			else if (huge)
			{
				buf_append(out, "\"", 1);
				split_at = out->len;
				buf_append(out, "\"", 1);
			}
			else if (mode == STRUCT_TOOLS)
			{
				append_tool_call(out, chat, faults, identity, &action);
				finish = "tool_calls";
			}
			else if (mode == STRUCT_JSON)
			{
				buf_append(out, "\"", 1);
				append_bad_bytes(out, faults);
				buf_append_json_escaped(out, action.data, action.len);
				buf_append(out, "\"", 1);
			}
			else
			{
				buf_append_str(out, "\"[mock] ");
				append_echo(out, chat->system_content);
				buf_append_str(out, " :: ");
				append_echo(out, chat->user_content);
				append_bad_bytes(out, faults);
				append_filler(out, identity, words, true);
				buf_append(out, "\"", 1);
			}
			buf_append_str(out, "},\"finish_reason\":\"");
			buf_append_str(out, faults->finish[0] ? faults->finish : finish);
			buf_append_str(out, "\"}");
		}
		buf_append(out, "]", 1);
	}
	if (!faults->nousage)
	{
		buf_append_str(out, ",\"usage\":{\"prompt_tokens\":");
		buf_append_u64(out, prompt_tokens);
		buf_append_str(out, ",\"completion_tokens\":");
		buf_append_u64(out, completion_tokens);
		buf_append_str(out, ",\"total_tokens\":");
		buf_append_u64(out, prompt_tokens + completion_tokens);
		buf_append(out, "}", 1);
	}
	buf_append(out, "}", 1);
	buf_free(&action);

	if (huge)
	{
		buf_append(&reply->body_tail, out->data + split_at, out->len - split_at);
		out->len = split_at;
		reply->fill_bytes = (uint64_t) faults->huge;
	}
	return completion_tokens;
}

static void
append_html_error(MockReply *reply, int status)
{
	MockBuf    *out = &reply->body;
	char		title[64];

	snprintf(title, sizeof(title), "%d %s", status, http_reason_phrase(status));
	reply->content_type = "text/html";
	buf_append_str(out, "<html>\r\n<head><title>");
	buf_append_str(out, title);
	buf_append_str(out, "</title></head>\r\n<body>\r\n<center><h1>");
	buf_append_str(out, title);
	buf_append_str(out, "</h1></center>\r\n<hr><center>mock_llm</center>\r\n</body>\r\n</html>\r\n");
}

/* vLLM's error "type" for STATUS (its create_error_response() names). */
static const char *
vllm_error_type(int status)
{
	if (status == 404)
		return "NotFoundError";
	if (status == 501)
		return "NotImplementedError";
	if (status >= 500)
		return "InternalServerError";
	return "BadRequestError";
}

/* google.rpc status name Google's APIs pair with the HTTP STATUS. */
static const char *
google_status(int status)
{
	switch (status)
	{
		case 400: return "INVALID_ARGUMENT";
		case 401: return "UNAUTHENTICATED";
		case 403: return "PERMISSION_DENIED";
		case 404: return "NOT_FOUND";
		case 409: return "ABORTED";
		case 429: return "RESOURCE_EXHAUSTED";
		case 499: return "CANCELLED";
		case 500: return "INTERNAL";
		case 501: return "UNIMPLEMENTED";
		case 504: return "DEADLINE_EXCEEDED";
		default: return status >= 500 ? "UNAVAILABLE" : "FAILED_PRECONDITION";
	}
}

/* Anthropic's error "type" for STATUS. */
static const char *
anthropic_error_type(int status)
{
	switch (status)
	{
		case 401: return "authentication_error";
		case 402: return "billing_error";
		case 403: return "permission_error";
		case 404: return "not_found_error";
		case 413: return "request_too_large";
		case 429: return "rate_limit_error";
		case 504: return "timeout_error";
		case 529: return "overloaded_error";
		default: return status >= 500 ? "api_error" : "invalid_request_error";
	}
}

/*
 * status=CODE: the error body for CODE, shaped as errshape= says; by default
 * the one OpenAI sends.  The message is always "mock error CODE", except
 * Anthropic's 529, which says "Overloaded" as Anthropic does.
 */
static void
append_status_error(MockReply *reply, const MockFaults *faults)
{
	int			status = faults->status;
	char		message[48];
	const char *code = faults->code[0] ? faults->code : NULL;
	const char *type;
	MockBuf    *out = &reply->body;

	snprintf(message, sizeof(message), "mock error %d", status);
	reply->status = status;
	switch (faults->errshape)
	{
		case SHAPE_OPENAI:
			if (status == 429)
			{
				if (code == NULL)
					code = "rate_limit_exceeded";
				type = strcmp(code, "insufficient_quota") == 0 ? "insufficient_quota" : "requests";
			}
			else if (status >= 500)
				type = "server_error";
			else
				type = "invalid_request_error";
			reply_openai_error(reply, status, message, type, code);
			break;
		case SHAPE_FLAT:
			buf_append_str(out, "{\"object\":\"error\",\"message\":\"");
			buf_append_str(out, message);
			buf_append_str(out, "\",\"type\":\"");
			buf_append_str(out, vllm_error_type(status));
			buf_append_str(out, "\",\"param\":null,\"code\":");
			buf_append_u64(out, (uint64_t) status);
			buf_append_str(out, "}");
			break;
		case SHAPE_INTCODE:
			buf_append_str(out, "{\"error\":{\"message\":\"");
			buf_append_str(out, message);
			buf_append_str(out, "\",\"type\":\"");
			buf_append_str(out, vllm_error_type(status));
			buf_append_str(out, "\",\"param\":null,\"code\":");
			buf_append_u64(out, (uint64_t) status);
			buf_append_str(out, "}}");
			break;
		case SHAPE_STRING:
		case SHAPE_DETAIL:
		case SHAPE_MESSAGE:
			buf_append_str(out, faults->errshape == SHAPE_STRING ? "{\"error\":\"" :
						   faults->errshape == SHAPE_DETAIL ? "{\"detail\":\"" : "{\"message\":\"");
			buf_append_str(out, message);
			buf_append_str(out, "\"}");
			break;
		case SHAPE_ARRAY:
			buf_append_str(out, "[{\"error\":{\"code\":");
			buf_append_u64(out, (uint64_t) status);
			buf_append_str(out, ",\"message\":\"");
			buf_append_str(out, message);
			buf_append_str(out, "\",\"status\":\"");
			buf_append_str(out, google_status(status));
			buf_append_str(out, "\"}}]");
			break;
		case SHAPE_ANTHROPIC:
			buf_append_str(out, "{\"type\":\"error\",\"error\":{\"type\":\"");
			buf_append_str(out, anthropic_error_type(status));
			buf_append_str(out, "\",\"message\":\"");
			buf_append_str(out, status == 529 ? "Overloaded" : message);
			buf_append_str(out, "\"}}");
			break;
		case SHAPE_TEXT:
			reply->content_type = "text/plain";
			buf_append_str(out, message);
			break;
	}
}

/* The 429 of --rps-limit, as OpenAI answers a request over its RPM limit. */
static void
reply_rps_limited(MockReply *reply, uint32_t reset_ms)
{
	char		message[200];
	char		value[32];

	snprintf(message, sizeof(message),
			 "Rate limit reached for requests per second (mock_llm --rps-limit): "
			 "Limit %d, Used %d, Requested 1. Please try again in %ums.",
			 mock_config.rps_limit, mock_config.rps_limit, reset_ms);
	reply_openai_error(reply, 429, message, "requests", "rate_limit_exceeded");
	snprintf(value, sizeof(value), "%d", mock_config.rps_limit);
	reply_add_header(reply, "x-ratelimit-limit-requests", value);
	reply_add_header(reply, "x-ratelimit-remaining-requests", "0");
	snprintf(value, sizeof(value), "%ums", reset_ms);
	reply_add_header(reply, "x-ratelimit-reset-requests", value);
	snprintf(value, sizeof(value), "%u", reset_ms);
	reply_add_header(reply, "retry-after-ms", value);
	stats_count_rate_limited();
}

/* retry-after as an IMF-fixdate (RFC 9110), OFFSET seconds from now. */
static void
add_retry_after_date(MockReply *reply, int64_t offset)
{
	time_t		when = time(NULL) + (time_t) offset;
	struct tm	parts;
	char		date[64];

	/* the C locale (never changed here) gives English day and month names */
	if (gmtime_r(&when, &parts) == NULL ||
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &parts) == 0)
		return;
	reply_add_header(reply, "retry-after", date);
}

/* Answer 400 for a fixture problem; WHAT and DETAIL are escaped here. */
static void
fixture_refuse(MockReply *reply, const char *what, const char *path, const char *detail)
{
	MockBuf		message = {0};

	buf_append_str(&message, "mock_llm: fixture ");
	buf_append_json_escaped(&message, path, strlen(path));
	buf_append_str(&message, ": ");
	buf_append_str(&message, what);
	if (detail != NULL)
	{
		buf_append_str(&message, " (");
		buf_append_json_escaped(&message, detail, strlen(detail));
		buf_append_str(&message, ")");
	}
	buf_append(&message, "", 1);
	reply->reason[0] = '\0';
	reply_openai_error(reply, 400, message.data, "invalid_request_error", NULL);
	buf_free(&message);
}

static bool
span_is_nocase(const char *ptr, size_t len, const char *word)
{
	if (len != strlen(word))
		return false;
	for (size_t i = 0; i < len; i++)
		if ((ptr[i] | 0x20) != word[i])
			return false;
	return true;
}

/*
 * "HTTP/x.y CODE[ REASON]" into *STATUS (200..599) and REASON (control
 * characters blanked, cut to fit).  False if LINE is not a status line.
 */
static bool
parse_status_line(const char *line, size_t len, int *status, char *reason,
				  size_t reason_size)
{
	const char *space;
	size_t		code_at;
	size_t		out = 0;

	if (len < 5 || memcmp(line, "HTTP/", 5) != 0)
		return false;
	space = memchr(line, ' ', len);
	if (space == NULL || space == line + 5)
		return false;
	code_at = (size_t) (space - line) + 1;
	if (len < code_at + 3 || (len > code_at + 3 && line[code_at + 3] != ' '))
		return false;
	*status = 0;
	for (size_t i = code_at; i < code_at + 3; i++)
	{
		if (line[i] < '0' || line[i] > '9')
			return false;
		*status = *status * 10 + (line[i] - '0');
	}
	if (*status < 200 || *status > 599)
		return false;			/* an interim 1xx would leave the client waiting */
	for (size_t i = code_at + 4; i < len && out + 1 < reason_size; i++)
		reason[out++] = ((unsigned char) line[i] < ' ' || line[i] == 0x7f) ? ' ' : line[i];
	reason[out] = '\0';
	/* an empty reason phrase is legal; ours would then be the standard one */
	return true;
}

/*
 * Fill REPLY with the recorded reply in <--fixtures>/NAME.http: a status
 * line, header lines, an empty line, then the body to the end of the file.
 * Head lines may end in LF or CRLF; they go out with CRLF.  The file's
 * Content-Length, Transfer-Encoding and Connection headers are dropped: the
 * mock frames the body itself and decides about the connection.  Returns
 * false after making REPLY a 400 if the file is missing or is not a reply.
 */
static bool
reply_from_fixture(MockReply *reply, const char *name)
{
	char		path[PATH_MAX];
	FILE	   *file;
	MockBuf		data = {0};
	size_t		got;
	size_t		at;
	size_t		headers_before = reply->extra_headers.len;
	const char *line;
	size_t		line_len;
	int			status = 0;
	bool		ok = false;

	if ((size_t) snprintf(path, sizeof(path), "%s/%s.http",
						  mock_config.fixtures_dir, name) >= sizeof(path))
	{
		fixture_refuse(reply, "path too long", name, NULL);
		return false;
	}
	file = fopen(path, "rb");
	if (file == NULL)
	{
		fixture_refuse(reply, errno == ENOENT ? "not found" : "cannot be opened",
					   path, strerror(errno));
		return false;
	}
	do
	{
		buf_reserve(&data, 65536);
		got = fread(data.data + data.len, 1, data.cap - data.len, file);
		data.len += got;
	} while (got > 0 && data.len <= MAX_FIXTURE_BYTES);
	fclose(file);
	if (data.len > MAX_FIXTURE_BYTES)
	{
		fixture_refuse(reply, "larger than 64 MB", path, NULL);
		goto done;
	}

	/* the head, a line at a time; the first is the status line */
	at = 0;
	for (;;)
	{
		const char *newline = memchr(data.data + at, '\n', data.len - at);
		const char *colon;
		size_t		name_len;
		size_t		value_at;

		line = data.data + at;
		line_len = newline ? (size_t) (newline - line) : data.len - at;
		at += line_len + (newline ? 1 : 0);
		if (line_len > 0 && line[line_len - 1] == '\r')
			line_len--;
		if (status == 0)
		{
			if (!parse_status_line(line, line_len, &status, reply->reason,
								   sizeof(reply->reason)))
			{
				fixture_refuse(reply, "does not start with a status line like HTTP/1.1 200 OK",
							   path, NULL);
				goto done;
			}
			continue;
		}
		if (line_len == 0)
			break;				/* the empty line (or the end of the file) */
		colon = memchr(line, ':', line_len);
		name_len = colon ? (size_t) (colon - line) : 0;
		for (size_t i = 0; i < name_len; i++)
			if ((unsigned char) line[i] <= ' ' || line[i] == 0x7f)
				name_len = 0;
		if (name_len == 0)
		{
			fixture_refuse(reply, "has a head line that is not a header (Name: value)",
						   path, NULL);
			goto done;
		}
		if (span_is_nocase(line, name_len, "content-length") ||
			span_is_nocase(line, name_len, "transfer-encoding") ||
			span_is_nocase(line, name_len, "connection"))
			continue;
		value_at = name_len + 1;
		while (value_at < line_len && (line[value_at] == ' ' || line[value_at] == '\t'))
			value_at++;
		while (line_len > value_at && (line[line_len - 1] == ' ' || line[line_len - 1] == '\t'))
			line_len--;
		buf_append(&reply->extra_headers, line, name_len);
		buf_append(&reply->extra_headers, ": ", 2);
		for (size_t i = value_at; i < line_len; i++)
		{
			/* a stray CR or other control byte must not break our framing */
			char		ch = ((unsigned char) line[i] < ' ' && line[i] != '\t') ? ' ' : line[i];

			buf_append(&reply->extra_headers, &ch, 1);
		}
		buf_append(&reply->extra_headers, "\r\n", 2);
	}
	reply->status = status;
	reply->content_type = NULL; /* the file's own Content-Type, if any, is among its headers */
	reply->body.len = 0;
	reply->fill_bytes = 0;
	reply->body_tail.len = 0;
	buf_append(&reply->body, data.data + at, data.len - at);
	ok = true;

done:
	if (!ok)
		reply->extra_headers.len = headers_before;
	buf_free(&data);
	return ok;
}

/* Log the directive of BODY (WHERE: "" or "batch line "). */
static void
log_faults(const char *body, size_t len, const char *where, const MockFaults *faults,
		   uint32_t attempt, bool applied)
{
	const char *start;
	const char *end;

	if (mock_config.quiet)
		return;
	start = memmem(body, len, "[[mock:", 7);
	end = memmem(start, len - (size_t) (start - body), "]]", 2);
	if (faults->times >= 0)
		mock_log("%s%.*s]] attempt %u of times=%lld: %s", where,
				 (int) (end - start), start, attempt, (long long) faults->times,
				 applied ? "applied" : "answered normally");
	else
		mock_log("%s%.*s]] applied", where, (int) (end - start), start);
}

/*
 * What chat completions and batch lines share: scan BODY as a chat request,
 * find its directives (or --fault's), count the attempt for times= (adding
 * x-mock-attempt to REPLY) and log the directive.  Returns false with a 400
 * in REPLY when the body or its directive is bad; otherwise fills *CHAT,
 * *FAULTS (cleared when times= is used up) and *IDENTITY.
 */
static bool
chat_prepare(const char *body, size_t len, const char *where, MockReply *reply,
			 ChatRequest *chat, MockFaults *faults, uint64_t *identity)
{
	const char *problem;
	uint32_t	attempt = 0;
	bool		from_body;

	problem = chat_scan_request(body, len, chat);
	if (problem != NULL)
	{
		reply_openai_error(reply, 400, problem, "invalid_request_error", NULL);
		return false;
	}
	if (!faults_parse(body, len, faults))
	{
		reply_openai_error(reply, 400, faults->error, "invalid_request_error", NULL);
		return false;
	}
	/* a body's own directive wins; --fault is for the ones without */
	from_body = faults->present;
	if (!from_body && global_faults.present)
		*faults = global_faults;

	*identity = mock_hash_bytes(body, len);
	if (faults->present && faults->times >= 0)
	{
		char		attempt_text[16];

		attempt = stats_record_attempt(*identity);
		snprintf(attempt_text, sizeof(attempt_text), "%u", attempt);
		reply_add_header(reply, "x-mock-attempt", attempt_text);
		if (attempt > faults->times)
		{
			if (from_body)
				log_faults(body, len, where, faults, attempt, false);
			faults_clear(faults);
		}
	}
	/* --fault lines are not logged: they would be every request */
	if (faults->present && from_body)
		log_faults(body, len, where, faults, attempt, true);
	return true;
}

/*
 * Answer one POST /v1/chat/completions into REPLY (already cleared).
 * Validation errors, fixture errors and the 429s of --rps-limit and
 * --max-inflight are answered at once; all other replies wait for their
 * latency (delay=, or the sample of load_latency_us()), and, with
 * --saturate, for a slot first.
 */
void
chat_answer(const MockRequest *request, MockReply *reply)
{
	ChatRequest chat;
	MockFaults	faults;
	uint64_t	identity;
	uint32_t	reset_ms;
	uint64_t	completion_tokens = 0;

	reply->is_chat = true;
	stats_chat_received();
	if (mock_config.rps_limit > 0 && !load_rps_admit(mock_config.rps_limit, &reset_ms))
	{
		reply_rps_limited(reply, reset_ms);
		return;
	}
	if (!stats_inflight_admit(mock_config.max_inflight))
	{
		reply_openai_error(reply, 429,
						   "Rate limit reached for requests (mock_llm --max-inflight). Please try again later.",
						   "requests", "rate_limit_exceeded");
		reply_add_header(reply, "retry-after-ms", "100");
		reply_add_header(reply, "retry-after", "1");
		return;
	}
	reply->holds_inflight = true;

	if (!chat_prepare(request->body, request->body_len, "", reply, &chat, &faults, &identity))
		return;

	if (faults.fixture[0] && !faults.reset && !faults.hang && !faults.empty && !faults.garbage &&
		!reply_from_fixture(reply, faults.fixture))
		return;

	if (faults.retry_after[0])
		reply_add_header(reply, "retry-after", faults.retry_after);
	if (faults.has_retry_after_date)
		add_retry_after_date(reply, faults.retry_after_date);
	if (faults.retry_after_ms[0])
		reply_add_header(reply, "retry-after-ms", faults.retry_after_ms);
	if (faults.ratelimit_remaining[0])
		reply_add_header(reply, "x-ratelimit-remaining-requests", faults.ratelimit_remaining);
	if (faults.ratelimit_reset[0])
		reply_add_header(reply, "x-ratelimit-reset-requests", faults.ratelimit_reset);
	if (faults.ratelimit_remaining_tokens[0])
		reply_add_header(reply, "x-ratelimit-remaining-tokens", faults.ratelimit_remaining_tokens);
	if (faults.ratelimit_reset_tokens[0])
		reply_add_header(reply, "x-ratelimit-reset-tokens", faults.ratelimit_reset_tokens);
	if (faults.should_retry >= 0)
		reply_add_header(reply, "x-should-retry", faults.should_retry ? "true" : "false");

	if (faults.reset)
		reply->action = MOCK_RESET;
	else if (faults.hang)
		reply->action = MOCK_HANG;
	else if (faults.empty)
		reply->action = MOCK_CLOSE;
	else if (faults.garbage)
	{
		/* not HTTP at all: a client must not take it for an HTTP/0.9 reply */
		static const char garbage[] = "ok\r\n\x01garbage";

		reply->raw = true;
		reply->status = 0;
		buf_append(&reply->body, garbage, sizeof(garbage) - 1);
	}
	else if (faults.fixture[0])
		;						/* filled in above */
	else if (faults.html)
	{
		reply->status = faults.status ? faults.status : 502;
		append_html_error(reply, reply->status);
	}
	else if (faults.status >= 300)
		append_status_error(reply, &faults);
	else
	{
		reply->status = faults.status ? faults.status : 200;
		completion_tokens = append_completion(reply, &chat, &faults, identity);
	}
	if (faults.malformed)
	{
		/* a well-framed HTTP reply whose body stops halfway */
		reply->body.len /= 2;
		reply->fill_bytes = 0;
		reply->body_tail.len = 0;
	}
	if (faults.badchunk && reply->action == MOCK_ANSWER && !reply->raw)
	{
		/* the chunk holds half of the body proper; no streamed filler */
		reply->bad_chunk = true;
		reply->fill_bytes = 0;
		reply->body_tail.len = 0;
	}
	reply->reset_mid = faults.reset_mid;
	reply->drip_ms = (uint32_t) faults.drip_ms;

	reply->waits = reply->action != MOCK_HANG;
	if (faults.delay_ms >= 0)
		reply->delay_us = (uint64_t) faults.delay_ms * 1000;
	else
		reply->delay_us = load_latency_us(completion_tokens);
}


/* ---- batch lines (mock_batch.c) ---- */

/* Replace a plain-text error body (errshape=text) by the same text as a JSON string. */
static void
body_to_json_string(MockReply *reply)
{
	MockBuf		text = reply->body;

	reply->body = (MockBuf) {0};
	buf_append(&reply->body, "\"", 1);
	buf_append_json_escaped(&reply->body, text.data, text.len);
	buf_append(&reply->body, "\"", 1);
	buf_free(&text);
	reply->content_type = "application/json";
}

/*
 * Answer one batch line into REPLY (already cleared): what POST
 * /v1/chat/completions would answer for BODY, less what only a connection
 * can do.  No admission (--rps-limit, --max-inflight), no latency, and only
 * the status and the JSON body count.  Directives shape the body as in a
 * chat reply (status, code, errshape, refusal, nochoices, emptychoices,
 * nousage, nullcontent, finish, huge, nul, rawnul, badutf8, surrogate,
 * invalid_action), and times= counts attempts of the same body across chat
 * requests and batch lines alike.  Because a line's body must be JSON, html
 * becomes its status (502 unless status= says) with the JSON error, and
 * errshape=text a JSON string.  hang is a request that never got an answer
 * (LINE_TIMEOUT).  What breaks or paces a connection (delay, drip, reset,
 * reset_mid, empty, garbage, badchunk, malformed), fixtures and the retry
 * and rate-limit headers do not apply.  huge= is written out in full, so it
 * is capped at MAX_BATCH_HUGE bytes.
 */
MockLineOutcome
chat_batch_answer(const char *body, size_t len, MockReply *reply)
{
	ChatRequest chat;
	MockFaults	faults;
	uint64_t	identity;

	if (!chat_prepare(body, len, "batch line ", reply, &chat, &faults, &identity))
		return LINE_HTTP;
	if (faults.hang)
		return LINE_TIMEOUT;
	if (faults.html && faults.status == 0)
		faults.status = 502;
	if (faults.status >= 300)
	{
		append_status_error(reply, &faults);
		if (faults.errshape == SHAPE_TEXT)
			body_to_json_string(reply);
		return LINE_HTTP;
	}
	reply->status = faults.status ? faults.status : 200;
	if (faults.huge > (int64_t) MAX_BATCH_HUGE)
		faults.huge = MAX_BATCH_HUGE;
	append_completion(reply, &chat, &faults, identity);
	if (reply->fill_bytes > 0)
	{
		/* the output file holds the whole body: the streamed 'x's become bytes */
		buf_reserve(&reply->body, (size_t) reply->fill_bytes + reply->body_tail.len);
		memset(reply->body.data + reply->body.len, 'x', (size_t) reply->fill_bytes);
		reply->body.len += (size_t) reply->fill_bytes;
		buf_append(&reply->body, reply->body_tail.data, reply->body_tail.len);
		reply->fill_bytes = 0;
		reply->body_tail.len = 0;
	}
	return LINE_HTTP;
}


/* ---- JSON objects for other files ---- */

typedef struct MembersWalk
{
	MockJsonMemberFn member;
	void	   *state;
} MembersWalk;

static bool
members_member(JsonScan *scan, MockSpan key, void *state)
{
	MembersWalk *walk = state;
	MockSpan	value;

	json_skip_space(scan);
	value.ptr = scan->at;
	if (!json_skip_value(scan))
		return false;
	value.len = (size_t) (scan->at - value.ptr);
	return walk->member(key, value, walk->state);
}

/* See mock.h: the members of one JSON object, as raw keys and values. */
bool
mock_json_members(const char *text, size_t len, MockJsonMemberFn member, void *state)
{
	JsonScan	scan = {text, text + len, 0};
	MembersWalk walk = {member, state};

	if (!json_peek(&scan, '{') || !json_object(&scan, members_member, &walk))
		return false;
	json_skip_space(&scan);
	return scan.at == scan.end;
}
