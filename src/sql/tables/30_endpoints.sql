-- pg_swarm: named endpoints and their keys.
--
-- The endpoint configured by the swarm.* settings is always available under the
-- name 'default'.  More endpoints are rows of swarm.endpoints; their API keys
-- live in swarm._endpoint_keys, which no role but the extension's owner (a
-- superuser) can read, and which no view, log line or NOTIFY payload shows.

CREATE TABLE swarm.endpoints (
    name                text PRIMARY KEY
                        CHECK (name ~ '^[a-z0-9_][a-z0-9_.-]*$' AND name <> 'default' AND length(name) < 64),
    base_url            text NOT NULL
                        CHECK (base_url ~ '^https?://[^/@]+(/.*)?$'),
    model               text,
    models              text[],
    max_in_flight       integer NOT NULL DEFAULT 50 CHECK (max_in_flight BETWEEN 1 AND 100000),
    requests_per_minute integer CHECK (requests_per_minute > 0),
    tokens_per_minute   integer CHECK (tokens_per_minute > 0),
    timeout_ms          integer CHECK (timeout_ms BETWEEN 100 AND 3600000),
    priority            integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    roles               name[],
    max_tokens          integer CHECK (max_tokens BETWEEN 1 AND 1000000),
    structured_output   text NOT NULL DEFAULT 'json_schema' CHECK (structured_output IN ('json_schema', 'tools')),
    mode                text NOT NULL DEFAULT 'sync' CHECK (mode IN ('sync', 'batch'))
);

COMMENT ON TABLE swarm.endpoints IS 'Named OpenAI-compatible endpoints a job may use (the swarm.* settings form the endpoint ''default''). Managed with swarm.add_endpoint/alter_endpoint/drop_endpoint.';
COMMENT ON COLUMN swarm.endpoints.name IS 'Name jobs refer to (lower case, digits, _ . -).';
COMMENT ON COLUMN swarm.endpoints.base_url IS 'OpenAI-compatible base URL; requests go to <base_url>/chat/completions.';
COMMENT ON COLUMN swarm.endpoints.model IS 'Model sent to this endpoint in place of the job''s (e.g. a deployment name); NULL: the job''s model.';
COMMENT ON COLUMN swarm.endpoints.models IS 'Models this endpoint serves; jobs asking for another are refused. NULL: any.';
COMMENT ON COLUMN swarm.endpoints.max_in_flight IS 'Most requests in flight to this endpoint; the adaptive limit stays at or below it.';
COMMENT ON COLUMN swarm.endpoints.requests_per_minute IS 'Budget: never more requests than this in any 60 s; NULL: none.';
COMMENT ON COLUMN swarm.endpoints.tokens_per_minute IS 'Budget: never more tokens (prompt estimate + max_tokens, corrected by usage) in any 60 s; NULL: none.';
COMMENT ON COLUMN swarm.endpoints.timeout_ms IS 'Time limit of one attempt; NULL: swarm.request_timeout.';
COMMENT ON COLUMN swarm.endpoints.roles IS 'Roles whose members may use it (its key, its budget); NULL: every swarm_user. Members of swarm_admin may use every endpoint.';
COMMENT ON COLUMN swarm.endpoints.max_tokens IS 'Most max_tokens a job using it may ask for; NULL: 1,000,000.';
COMMENT ON COLUMN swarm.endpoints.structured_output IS 'How it is asked for a structured reply (a simulation with actions): json_schema (response_format with a JSON schema: OpenAI, vLLM, llama.cpp server, Ollama) or tools (a function tool and tool_choice).';
COMMENT ON COLUMN swarm.endpoints.mode IS 'How a job whose first endpoint it is runs when the job does not say: sync (one request at a time, as answers come) or batch (files sent to its Batch API: <base_url>/files and <base_url>/batches; docs/batch.md).';
COMMENT ON COLUMN swarm.endpoints.priority IS 'Informational order for admins; a job''s own list decides the failover order.';

CREATE TABLE swarm._endpoint_keys (
    endpoint    text PRIMARY KEY REFERENCES swarm.endpoints (name) ON DELETE CASCADE,
    api_key     text NOT NULL
);

COMMENT ON TABLE swarm._endpoint_keys IS 'API keys of named endpoints. Readable by the extension owner only; never shown elsewhere.';

-- Configuration made by admins: pg_dump dumps the rows (the keys too, for
-- whoever may dump _endpoint_keys: its owner).
SELECT pg_catalog.pg_extension_config_dump('swarm.endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('swarm._endpoint_keys', '');
