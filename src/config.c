/*-------------------------------------------------------------------------
 *
 * config.c
 *		pg_swarm's configuration parameters (GUCs).
 *
 * Every setting lives under the reserved prefix "swarm.".  The worker reads the
 * endpoint settings on start and again after each SIGHUP; settings that size
 * shared memory or pick the database need a restart (PGC_POSTMASTER).
 *
 * The API key is the one secret: swarm.api_key is GUC_SUPERUSER_ONLY, so it is
 * absent from pg_settings and SHOW for everyone else.  Because the server logs
 * every changed setting's new value on reload, swarm.api_key_file is offered as
 * the leak-free way: the worker reads the key from that file and the value never
 * passes through the configuration system.
 *
 *-------------------------------------------------------------------------
 */
#include "swarm.h"
#include "jobs.h"

#include <sys/stat.h>

#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/guc.h"

char	   *swarm_database = NULL;
char	   *swarm_base_url = NULL;
char	   *swarm_model = NULL;
char	   *swarm_api_key = NULL;
char	   *swarm_api_key_file = NULL;
char	   *swarm_system_template = NULL;
char	   *swarm_ca_file = NULL;
int			swarm_request_timeout_ms = 60000;
int			swarm_connect_timeout_ms = 5000;
int			swarm_max_retries = 3;
int			swarm_batch_size = 100;
int			swarm_max_concurrent = 50;
int			swarm_flush_interval_ms = 20;
int			swarm_max_response_bytes = 8 * 1024 * 1024;
int			swarm_max_prompt_bytes = 1024 * 1024;
char	   *swarm_default_roles = NULL;
int			swarm_default_max_tokens = 1000000;
int			swarm_request_deadline_ms = 10 * 60 * 1000;
bool		swarm_adaptive_concurrency = true;
int			swarm_structured_output = 0;
bool		swarm_response_store = false;
int			swarm_replay = SWARM_REPLAY_OFF;
int			swarm_response_store_max_age_s = 30 * 24 * 3600;
int			swarm_batch_file_max_requests = 50000;
int			swarm_batch_file_max_bytes = 200 * 1024 * 1024;
int			swarm_batch_poll_interval_ms = 5000;
int			swarm_batch_transfer_timeout_ms = 10 * 60 * 1000;
int			swarm_step_part_agents = 10000;

/* swarm.structured_output: OpenAIOutputStyle's values */
static const struct config_enum_entry structured_output_options[] = {
	{"json_schema", 0, false},
	{"tools", 1, false},
	{NULL, 0, false}
};

/* swarm.replay */
static const struct config_enum_entry replay_options[] = {
	{"off", SWARM_REPLAY_OFF, false},
	{"on", SWARM_REPLAY_ON, false},
	{"fallthrough", SWARM_REPLAY_FALLTHROUGH, false},
	{"true", SWARM_REPLAY_ON, true},
	{"false", SWARM_REPLAY_OFF, true},
	{NULL, 0, false}
};

#define DEFAULT_SYSTEM_TEMPLATE \
	"You are {name}, a member of an online community. Your persona: {persona}. " \
	"Stay in character and answer as {name} would, in a few sentences."

/*
 * Refuse base URLs that carry credentials ("user:pass@host"): error texts and
 * logs may quote the URL, and the key belongs in swarm.api_key(_file).
 */
static bool
check_base_url(char **newval, void **extra, GucSource source)
{
	const char *url = *newval;
	const char *scheme_end;
	const char *host_end;

	if (url == NULL || url[0] == '\0')
		return true;
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
	{
		GUC_check_errdetail("swarm.base_url must start with http:// or https://.");
		return false;
	}
	scheme_end = strstr(url, "://") + 3;
	host_end = strchr(scheme_end, '/');
	if (host_end == NULL)
		host_end = scheme_end + strlen(scheme_end);
	if (memchr(scheme_end, '@', host_end - scheme_end) != NULL)
	{
		GUC_check_errdetail("Credentials in swarm.base_url are not allowed.");
		GUC_check_errhint("Set the key with swarm.api_key_file or swarm.api_key.");
		return false;
	}
	return true;
}

void
swarm_config_init(void)
{
	/*
	 * Settings that only the postmaster may set can only be defined while
	 * preloading; loaded later (no worker), the library leaves them out.
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("swarm.database",
							   "Database the pg_swarm worker connects to.",
							   "The extension must be created in this database; jobs enqueued elsewhere are refused.",
							   &swarm_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("swarm.base_url",
							   "Base URL of the OpenAI-compatible endpoint.",
							   "Requests go to <base_url>/chat/completions, e.g. http://127.0.0.1:8000/v1.",
							   &swarm_base_url,
							   "http://127.0.0.1:8000/v1",
							   PGC_SIGHUP,
							   0,
							   check_base_url, NULL, NULL);

	DefineCustomStringVariable("swarm.model",
							   "Model used by jobs that do not name one.",
							   NULL,
							   &swarm_model,
							   "gpt-3.5-turbo",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("swarm.api_key",
							   "API key sent as a Bearer token.",
							   "Visible to superusers only. Prefer swarm.api_key_file: a reload logs changed settings' values.",
							   &swarm_api_key,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("swarm.api_key_file",
							   "File holding the API key (first line); overrides swarm.api_key.",
							   "The file must be readable by the server and should be readable by nobody else.",
							   &swarm_api_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("swarm.ca_file",
							   "File of CA certificates (PEM) that verify an https endpoint.",
							   "Empty: the system's trust store. Certificates are always verified.",
							   &swarm_ca_file,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("swarm.system_template",
							   "Default template of the system message of each request.",
							   "Placeholders: {name}, {persona}, {persona.KEY}, {agent_id}, {context}. Captured by swarm.generate() into the job.",
							   &swarm_system_template,
							   DEFAULT_SYSTEM_TEMPLATE,
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.request_timeout",
							"Time limit of one HTTP attempt, from send to last byte.",
							NULL,
							&swarm_request_timeout_ms,
							60000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.connect_timeout",
							"Time limit to establish a connection to the endpoint.",
							NULL,
							&swarm_connect_timeout_ms,
							5000, 10, 600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.request_deadline",
							"Longest a request may take, from claim to its end, retries and waits included.",
							"A request still waiting (for a retry, an endpoint that is down, paused or out of budget) when it passes fails, saying why; an attempt in flight is cut off at it. A job may set its own (request_deadline).",
							&swarm_request_deadline_ms,
							10 * 60 * 1000, 1000, 7 * 24 * 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("swarm.adaptive_concurrency",
							 "Adapt each endpoint's concurrency limit to its overload signals.",
							 "On: the limit falls on 429, 503, 529, timeouts, refused connections and queueing at the endpoint, and grows back; off: max_in_flight always (pauses and budgets still apply).",
							 &swarm_adaptive_concurrency,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("swarm.structured_output",
							 "How the default endpoint is asked for a structured reply (a simulation with actions).",
							 "json_schema: response_format with a JSON schema (OpenAI, vLLM, llama.cpp server, Ollama); tools: a function tool and tool_choice. Named endpoints have their own (swarm.add_endpoint(structured_output => ...)).",
							 &swarm_structured_output,
							 0,
							 structured_output_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.max_retries",
							"Retries after a failed attempt (429, 5xx, timeouts, connection errors).",
							"A request is tried at most max_retries + 1 times.",
							&swarm_max_retries,
							3, 0, 100,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.batch_size",
							"How many queued requests the worker claims per query, and results per commit.",
							NULL,
							&swarm_batch_size,
							100, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.max_concurrent",
							"Upper bound on HTTP requests in flight.",
							"Also bounded by the worker's open-file limit.",
							&swarm_max_concurrent,
							50, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.flush_interval",
							"Longest time a received result waits before it is committed.",
							"Results are committed when batch_size of them are waiting, or when the oldest has waited this long.",
							&swarm_flush_interval_ms,
							20, 0, 60000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.max_prompt_bytes",
							"Largest context plus templates swarm.generate() accepts.",
							NULL,
							&swarm_max_prompt_bytes,
							1024 * 1024, 1024, 64 * 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.max_response_bytes",
							"Largest response body accepted; a larger one fails its request.",
							NULL,
							&swarm_max_response_bytes,
							8 * 1024 * 1024, 1024, 512 * 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomStringVariable("swarm.default_roles",
							   "Roles that may use the endpoint 'default' (comma-separated); empty: every swarm_user.",
							   "Named endpoints say the same in swarm.endpoints.roles. Members of swarm_admin may use every endpoint.",
							   &swarm_default_roles,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.default_max_tokens",
							"Most max_tokens a job on the endpoint 'default' may ask for.",
							"Named endpoints say the same in swarm.endpoints.max_tokens.",
							&swarm_default_max_tokens,
							1000000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	/*
	 * The response store and replay: read by swarm._create_job() when a job
	 * is made (a job keeps what its maker had set), so any user may SET them.
	 */
	DefineCustomBoolVariable("swarm.response_store",
							 "Keep the answers of the jobs made from now on in swarm.responses, for replay.",
							 "Each answer is kept under the SHA-256 of its canonical request body. See docs/replay.md.",
							 &swarm_response_store,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("swarm.replay",
							 "Answer the jobs made from now on from swarm.responses, without calling an endpoint.",
							 "on: a request with no stored answer fails, saying so; fallthrough: it goes to its endpoint; off: replay nothing.",
							 &swarm_replay,
							 SWARM_REPLAY_OFF,
							 replay_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.response_store_max_age",
							"Answers older than this leave swarm.responses (0: kept until pruned).",
							"The step builder deletes them, a batch at a time. swarm.prune_responses() deletes by age or by job at any time.",
							&swarm_response_store_max_age_s,
							30 * 24 * 3600, 0, PG_INT32_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/* batch mode (batcher.c, docs/batch.md) */
	DefineCustomIntVariable("swarm.batch_file_max_requests",
							"Batch mode: most requests (lines) in one batch file.",
							"OpenAI takes at most 50,000 per batch.",
							&swarm_batch_file_max_requests,
							50000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.batch_file_max_bytes",
							"Batch mode: largest batch file.",
							"OpenAI takes files of at most 200 MB.",
							&swarm_batch_file_max_bytes,
							200 * 1024 * 1024, 1024, 1024 * 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.batch_poll_interval",
							"Batch mode: first wait between two polls of a batch's status.",
							"Each poll of a batch that has not ended waits a quarter longer than the one before, up to 60 times this.",
							&swarm_batch_poll_interval_ms,
							5000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("swarm.batch_transfer_timeout",
							"Batch mode: time limit of one upload, download or call to the Files and Batch APIs.",
							NULL,
							&swarm_batch_transfer_timeout_ms,
							10 * 60 * 1000, 1000, 24 * 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/*
	 * Read by swarm._build_step() in the step builder (it is the builder's
	 * setting; superusers may SET it to build a step by hand, as tests do).
	 */
	DefineCustomIntVariable("swarm.step_part_agents",
							"Simulations with actions: agents of a step built and committed at a time.",
							"A larger step is built in parts of this many agents, each committed on its own, so that the worker sends the first part's requests while the next ones are built; 0 builds every step whole.",
							&swarm_step_part_agents,
							10000, 0, 100000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("swarm");
}

/*
 * The key to send, or NULL for none.  Reads swarm.api_key_file when set, else
 * swarm.api_key.  The result is palloc'd in the current context.  Problems with
 * the file are reported at WARNING without its contents; the key is never logged.
 */
char *
swarm_config_read_api_key(void)
{
	if (swarm_api_key_file != NULL && swarm_api_key_file[0] != '\0')
	{
		FILE	   *f = AllocateFile(swarm_api_key_file, "r");
		char		line[4096];
		size_t		len;

		if (f == NULL)
		{
			ereport(WARNING,
					(errcode_for_file_access(),
					 errmsg("could not open swarm.api_key_file \"%s\": %m", swarm_api_key_file),
					 errhint("Requests are sent without an API key until the file is readable.")));
			return NULL;
		}
		if (fgets(line, sizeof(line), f) == NULL)
			line[0] = '\0';
		FreeFile(f);
		len = strlen(line);
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
						   line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		return len > 0 ? pstrdup(line) : NULL;
	}
	if (swarm_api_key != NULL && swarm_api_key[0] != '\0')
		return pstrdup(swarm_api_key);
	return NULL;
}

/*
 * The settings a pg_swarm background process (the worker, the step builder)
 * pins for its session, whatever the server's, database's or role's
 * defaults for client sessions say: no statement_timeout (building a large
 * simulation step would be cut short on every try), READ COMMITTED and
 * read-write (a SERIALIZABLE default would fail stores on conflicts, a
 * read-only one refuse them), its own application_name, and a pinned
 * search_path: its SQL names its tables schema-qualified and every function
 * it calls pins its own path, and no database or role setting may put a
 * schema of someone else's before pg_catalog.  lock_timeout bounds how long
 * a user's lock can hold it.
 */
void
swarm_pin_background_session(const char *application_name, const char *lock_timeout)
{
	SetConfigOption("application_name", application_name, PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", lock_timeout, PGC_SUSET, PGC_S_OVERRIDE);
}
