-- pg_swarm: managing named endpoints, and their live status (the tables:
-- tables/30_endpoints.sql).

-------------------------------------------------------------------------------
-- Admin functions
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm.add_endpoint(
    name text,
    base_url text,
    api_key text DEFAULT NULL,
    model text DEFAULT NULL,
    max_in_flight integer DEFAULT 50,
    requests_per_minute integer DEFAULT NULL,
    tokens_per_minute integer DEFAULT NULL,
    timeout interval DEFAULT NULL,
    priority integer DEFAULT 0,
    models text[] DEFAULT NULL,
    roles name[] DEFAULT NULL,
    max_tokens integer DEFAULT NULL,
    structured_output text DEFAULT 'json_schema',
    mode text DEFAULT 'sync')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM swarm.endpoints e WHERE e.name = add_endpoint.name) THEN
        RAISE EXCEPTION 'endpoint "%" already exists', add_endpoint.name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use swarm.alter_endpoint() to change it.';
    END IF;
    PERFORM swarm._check_roles(add_endpoint.roles);
    PERFORM swarm._check_structured_output(add_endpoint.structured_output);
    PERFORM swarm._check_mode(add_endpoint.mode);
    INSERT INTO swarm.endpoints (name, base_url, model, models, max_in_flight, requests_per_minute,
                                 tokens_per_minute, timeout_ms, priority, roles, max_tokens, structured_output,
                                 mode)
    VALUES (add_endpoint.name, add_endpoint.base_url, add_endpoint.model, add_endpoint.models, add_endpoint.max_in_flight,
            add_endpoint.requests_per_minute, add_endpoint.tokens_per_minute,
            (extract(epoch FROM add_endpoint.timeout) * 1000)::integer, add_endpoint.priority,
            add_endpoint.roles, add_endpoint.max_tokens, add_endpoint.structured_output, add_endpoint.mode);
    IF api_key IS NOT NULL THEN
        INSERT INTO swarm._endpoint_keys (endpoint, api_key) VALUES (add_endpoint.name, api_key);
    END IF;
    PERFORM swarm._wake_worker();
END
$$;

COMMENT ON FUNCTION swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], name[], integer, text, text) IS
'Register a named endpoint. The key is stored where only the extension owner can read it. roles: who may use it (NULL: every swarm_user); max_tokens: the most a job using it may ask for; structured_output: how it takes a simulation''s action schema (json_schema or tools); mode: how the jobs that list it first run unless they say (sync, or batch through its Batch API: docs/batch.md). Tip: pass the key through a bound parameter, not a literal, so that it does not show in pg_stat_activity.';

-- Refuses a way of asking for structured output that no server knows.
CREATE OR REPLACE FUNCTION swarm._check_structured_output(structured_output text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF structured_output IS NULL OR structured_output NOT IN ('json_schema', 'tools') THEN
        RAISE EXCEPTION 'structured_output must be json_schema or tools, not %', coalesce(structured_output, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'json_schema: response_format with a JSON schema (OpenAI, vLLM, llama.cpp server, Ollama); tools: a function tool and tool_choice.';
    END IF;
END
$$;

-- Refuses a job mode that does not exist (an endpoint's default mode).
CREATE OR REPLACE FUNCTION swarm._check_mode(mode text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF mode IS NULL OR mode NOT IN ('sync', 'batch') THEN
        RAISE EXCEPTION 'mode must be sync or batch, not %', coalesce(mode, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'sync: requests sent one by one as answers come; batch: files sent to the endpoint''s Batch API (docs/batch.md).';
    END IF;
END
$$;

-- Refuses role names that do not exist (a typo would lock everyone out).
CREATE OR REPLACE FUNCTION swarm._check_roles(roles name[])
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
BEGIN
    IF roles IS NOT NULL AND cardinality(roles) = 0 THEN
        RAISE EXCEPTION 'roles must name at least one role, or be NULL for every swarm_user'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(r, ', ') INTO unknown FROM unnest(roles) r
    WHERE r IS NULL OR NOT EXISTS (SELECT FROM pg_catalog.pg_roles pr WHERE pr.rolname = r);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'no such role: %', unknown
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;

COMMENT ON FUNCTION swarm._check_roles(name[]) IS 'Private: refuses an endpoint''s roles that do not exist.';

CREATE OR REPLACE FUNCTION swarm.alter_endpoint(
    name text,
    base_url text DEFAULT NULL,
    api_key text DEFAULT NULL,
    model text DEFAULT NULL,
    max_in_flight integer DEFAULT NULL,
    requests_per_minute integer DEFAULT NULL,
    tokens_per_minute integer DEFAULT NULL,
    timeout interval DEFAULT NULL,
    priority integer DEFAULT NULL,
    clear text[] DEFAULT '{}',
    models text[] DEFAULT NULL,
    roles name[] DEFAULT NULL,
    max_tokens integer DEFAULT NULL,
    structured_output text DEFAULT NULL,
    mode text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text[];
BEGIN
    SELECT array_agg(c) INTO unknown FROM unnest(clear) c
    WHERE c NOT IN ('api_key', 'model', 'models', 'requests_per_minute', 'tokens_per_minute', 'timeout',
                    'roles', 'max_tokens');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'cannot clear %', array_to_string(unknown, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'clear accepts api_key, model, models, requests_per_minute, tokens_per_minute, timeout, roles, max_tokens.';
    END IF;
    PERFORM swarm._check_roles(alter_endpoint.roles);
    IF alter_endpoint.structured_output IS NOT NULL THEN
        PERFORM swarm._check_structured_output(alter_endpoint.structured_output);
    END IF;
    IF alter_endpoint.mode IS NOT NULL THEN
        PERFORM swarm._check_mode(alter_endpoint.mode);
    END IF;
    -- a key goes only where it was given for: a new host needs it given again
    IF alter_endpoint.base_url IS NOT NULL AND api_key IS NULL AND NOT ('api_key' = ANY (clear))
       AND EXISTS (SELECT 1 FROM swarm._endpoint_keys k WHERE k.endpoint = alter_endpoint.name)
       AND (SELECT substring(e.base_url FROM '^https?://[^/]+') FROM swarm.endpoints e WHERE e.name = alter_endpoint.name)
           IS DISTINCT FROM substring(alter_endpoint.base_url FROM '^https?://[^/]+') THEN
        RAISE EXCEPTION 'moving endpoint "%" to another host needs its api_key again', alter_endpoint.name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'The stored key was given for the old host; it is not sent to a new one.',
                  HINT = 'Pass api_key => the key for the new host, or clear => ARRAY[''api_key''].';
    END IF;
    UPDATE swarm.endpoints e SET
        base_url = coalesce(alter_endpoint.base_url, e.base_url),
        model = CASE WHEN 'model' = ANY (clear) THEN NULL ELSE coalesce(alter_endpoint.model, e.model) END,
        models = CASE WHEN 'models' = ANY (clear) THEN NULL ELSE coalesce(alter_endpoint.models, e.models) END,
        max_in_flight = coalesce(alter_endpoint.max_in_flight, e.max_in_flight),
        requests_per_minute = CASE WHEN 'requests_per_minute' = ANY (clear) THEN NULL
                                   ELSE coalesce(alter_endpoint.requests_per_minute, e.requests_per_minute) END,
        tokens_per_minute = CASE WHEN 'tokens_per_minute' = ANY (clear) THEN NULL
                                 ELSE coalesce(alter_endpoint.tokens_per_minute, e.tokens_per_minute) END,
        timeout_ms = CASE WHEN 'timeout' = ANY (clear) THEN NULL
                          ELSE coalesce((extract(epoch FROM alter_endpoint.timeout) * 1000)::integer, e.timeout_ms) END,
        priority = coalesce(alter_endpoint.priority, e.priority),
        roles = CASE WHEN 'roles' = ANY (clear) THEN NULL ELSE coalesce(alter_endpoint.roles, e.roles) END,
        max_tokens = CASE WHEN 'max_tokens' = ANY (clear) THEN NULL
                          ELSE coalesce(alter_endpoint.max_tokens, e.max_tokens) END,
        structured_output = coalesce(alter_endpoint.structured_output, e.structured_output),
        mode = coalesce(alter_endpoint.mode, e.mode),
        updated_at = now()
    WHERE e.name = alter_endpoint.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" does not exist', alter_endpoint.name
            USING ERRCODE = 'undefined_object';
    END IF;
    IF 'api_key' = ANY (clear) THEN
        DELETE FROM swarm._endpoint_keys k WHERE k.endpoint = alter_endpoint.name;
    ELSIF api_key IS NOT NULL THEN
        INSERT INTO swarm._endpoint_keys (endpoint, api_key) VALUES (alter_endpoint.name, api_key)
        ON CONFLICT (endpoint) DO UPDATE SET api_key = excluded.api_key;
    END IF;
    PERFORM swarm._wake_worker();
END
$$;

COMMENT ON FUNCTION swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], text[], name[], integer, text, text) IS
'Change a named endpoint: NULL arguments leave a setting as it is; list settings to remove in clear (api_key, model, models, requests_per_minute, tokens_per_minute, timeout, roles, max_tokens).';

CREATE OR REPLACE FUNCTION swarm.drop_endpoint(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    users bigint[];
BEGIN
    SELECT array_agg(j.id ORDER BY j.id) INTO users FROM swarm.jobs j
    WHERE j.status IN ('queued', 'running') AND drop_endpoint.name = ANY (j.endpoints);
    IF users IS NOT NULL THEN
        RAISE EXCEPTION 'endpoint "%" is used by unfinished jobs: %', drop_endpoint.name, array_to_string(users, ', ')
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait for those jobs or cancel them first.';
    END IF;
    DELETE FROM swarm.endpoints e WHERE e.name = drop_endpoint.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" does not exist', drop_endpoint.name
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM swarm._wake_worker();
END
$$;

COMMENT ON FUNCTION swarm.drop_endpoint(text) IS 'Remove a named endpoint that no unfinished job uses.';

-------------------------------------------------------------------------------
-- Live status of every endpoint, from the worker's shared memory
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._endpoint_status(
    OUT endpoint text,
    OUT state text,
    OUT state_until timestamptz,
    OUT state_reason text,
    OUT concurrency_limit integer,
    OUT max_in_flight integer,
    OUT in_flight integer,
    OUT requests bigint,
    OUT succeeded bigint,
    OUT rate_limited bigint,
    OUT errors bigint,
    OUT retries bigint,
    OUT breaker_opened bigint,
    OUT requests_last_minute integer,
    OUT tokens_last_minute bigint,
    OUT waiting_for text,
    OUT waiting_until timestamptz,
    OUT latency_ratio double precision)
RETURNS SETOF record
LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_endpoint_status';

-- (and what batch mode has at each endpoint: owner-blind counts, as for
-- the other columns, hence SECURITY DEFINER past swarm.batches' row-level
-- security; read by a function of its own, so that on a distributed swarm
-- the view joins no local table to a reference table)
CREATE OR REPLACE FUNCTION swarm._endpoint_batches(endpoint text, OUT mode text, OUT batches jsonb,
                                                   OUT batch_requests bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    mode := coalesce((SELECT e.mode FROM swarm.endpoints e WHERE e.name = _endpoint_batches.endpoint), 'sync');
    SELECT jsonb_object_agg(c.status, c.n ORDER BY c.status), coalesce(sum(c.requests), 0)
    INTO batches, batch_requests
    FROM (SELECT coalesce(b.status, b.state) AS status, count(*) AS n, sum(b.requests) AS requests
          FROM swarm.batches b
          WHERE b.endpoint = _endpoint_batches.endpoint AND b.state NOT IN ('stored', 'abandoned')
          GROUP BY 1) c;
END
$$;

COMMENT ON FUNCTION swarm._endpoint_batches(text) IS
'Private: an endpoint''s mode, its unfinished batches by status and the requests in them, for swarm.endpoint_status.';

CREATE OR REPLACE VIEW swarm.endpoint_status AS
    SELECT s.*, b.mode, b.batches, b.batch_requests
    FROM swarm._endpoint_status() s, LATERAL swarm._endpoint_batches(s.endpoint) b;

COMMENT ON VIEW swarm.endpoint_status IS
'Per endpoint: state (ok, paused after a Retry-After, a rate-limit reset or an exhausted quota, open = circuit breaker cooling down, half_open = probing) with until when and why; the adaptive concurrency limit, requests in flight, counts of requests, successes, 429s, errors, retries, breaker openings, the budget used in the last minute; why the last request that could not go to it waited (waiting_for: paused, breaker open, concurrency limit, requests_per_minute, tokens_per_minute, or their pacing) and until when; and latency_ratio, the 10th-percentile latency per token of the last window over its two-minute baseline (above 1.5 reads as requests queueing at the endpoint); its mode (sync or batch: what jobs listing it first do unless they say), its unfinished batches by the provider''s status and the requests in them (batch mode, docs/batch.md).';
