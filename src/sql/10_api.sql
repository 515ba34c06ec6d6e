-- pg_swarm: the generation API: generate(), wait(), cancel(), stats and progress views.

CREATE INDEX jobs_active_idx ON swarm.jobs (id) WHERE status IN ('queued', 'running');

-------------------------------------------------------------------------------
-- Internal helpers (C, src/api.c)
-------------------------------------------------------------------------------

CREATE FUNCTION swarm._check_worker() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_check_worker';
CREATE FUNCTION swarm._wake_worker() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_wake_worker';
CREATE FUNCTION swarm._progress_generation() RETURNS bigint
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_progress_generation';
CREATE FUNCTION swarm._sleep_for_progress(seen bigint, timeout_ms integer) RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_sleep_for_progress';
CREATE FUNCTION swarm._xid_is_current(xid) RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_xid_is_current';

CREATE FUNCTION swarm._stats(
    OUT worker_pid integer,
    OUT total_operations bigint,
    OUT succeeded bigint,
    OUT failed bigint,
    OUT success_rate double precision,
    OUT avg_response_ms double precision,
    OUT p50_ms double precision,
    OUT p95_ms double precision,
    OUT p99_ms double precision,
    OUT in_flight integer,
    OUT peak_concurrency integer,
    OUT ops_per_second double precision,
    OUT avg_ops_per_second double precision,
    OUT http_attempts bigint,
    OUT retries bigint,
    OUT http_errors bigint,
    OUT rate_limited bigint,
    OUT transport_errors bigint,
    OUT batches_committed bigint,
    OUT uptime interval)
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_stats';

-- The JSON announced on a job's channel, also used by the worker (src/queue.c).
CREATE FUNCTION swarm._progress_payload(j swarm.jobs, batch bigint DEFAULT 0) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT json_build_object(
        'job', j.id,
        'status', j.status,
        'done', j.succeeded + j.failed + j.cancelled,
        'succeeded', j.succeeded,
        'failed', j.failed,
        'cancelled', j.cancelled,
        'total', j.total,
        'batch', batch)::text
$$;

-------------------------------------------------------------------------------
-- Checks shared by generate(), interact() and simulate()
-------------------------------------------------------------------------------

-- Validates a job's arguments; returns the model the job will use.
-- Runs with the caller's rights (it reads swarm.endpoints and swarm.agents).
CREATE FUNCTION swarm._check_job_args(
    context text,
    agents bigint[],
    model text,
    max_tokens integer,
    channel text,
    system_template text,
    user_template text,
    endpoints text[])
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing bigint[];
    unknown text[];
    max_bytes bigint;
    job_model text;
BEGIN
    -- first: refuses without the worker, and loads the library's settings
    PERFORM swarm._check_worker();
    max_bytes := (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'swarm.max_prompt_bytes');

    IF context IS NULL OR btrim(context) = '' THEN
        RAISE EXCEPTION 'context must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the situation every agent should respond to, e.g. swarm.generate(''Share your plans for the weekend'').';
    END IF;
    IF max_tokens IS NULL OR max_tokens < 1 OR max_tokens > 1000000 THEN
        RAISE EXCEPTION 'max_tokens must be between 1 and 1000000, not %', coalesce(max_tokens::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF channel IS NULL OR channel = '' OR octet_length(channel) >= 64 THEN
        RAISE EXCEPTION 'channel must be a non-empty name shorter than 64 bytes'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Progress is announced with NOTIFY on this channel; LISTEN to it.';
    END IF;
    IF model IS NOT NULL AND btrim(model) = '' THEN
        RAISE EXCEPTION 'model must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to use swarm.model.';
    END IF;
    IF octet_length(context) + octet_length(coalesce(system_template, '')) + octet_length(coalesce(user_template, '')) > max_bytes THEN
        RAISE EXCEPTION 'prompt too large: % bytes of context and templates', octet_length(context) + octet_length(coalesce(system_template, '')) + octet_length(coalesce(user_template, ''))
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('swarm.max_prompt_bytes is %s.', max_bytes),
                  HINT = 'Shorten the context, or ask an administrator to raise swarm.max_prompt_bytes.';
    END IF;
    IF endpoints IS NOT NULL THEN
        IF cardinality(endpoints) = 0 OR array_position(endpoints, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'endpoints must be a non-empty list of endpoint names'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass NULL to use the endpoint ''default'' (the swarm.* settings).';
        END IF;
        SELECT array_agg(e ORDER BY ord) INTO unknown
        FROM unnest(endpoints) WITH ORDINALITY AS u(e, ord)
        WHERE e <> 'default' AND NOT EXISTS (SELECT 1 FROM swarm.endpoints d WHERE d.name = u.e);
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'unknown endpoint: %', array_to_string(unknown, ', ')
                USING ERRCODE = 'undefined_object',
                      HINT = 'See swarm.endpoints; ''default'' is the endpoint of the swarm.* settings.';
        END IF;
    END IF;
    job_model := coalesce(model, current_setting('swarm.model'));
    SELECT array_agg(d.name ORDER BY d.name) INTO unknown
    FROM swarm.endpoints d
    WHERE d.name = ANY (coalesce(endpoints, '{}')) AND d.model IS NULL
      AND d.models IS NOT NULL AND NOT (job_model = ANY (d.models));
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'model "%" is not served by endpoint %', job_model, array_to_string(unknown, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pick one of the models listed in swarm.endpoints.models.';
    END IF;
    IF agents IS NOT NULL AND array_position(agents, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'agents must not contain NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    IF agents IS NOT NULL THEN
        SELECT array_agg(u.id ORDER BY u.id) INTO missing
        FROM (SELECT DISTINCT unnest(agents) AS id) u
        WHERE NOT EXISTS (SELECT 1 FROM swarm.agents a WHERE a.id = u.id);
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'agents do not exist: %', array_to_string(missing[1:10], ', ')
                  || CASE WHEN cardinality(missing) > 10 THEN format(' and %s more', cardinality(missing) - 10) ELSE '' END
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Pass ids from swarm.agents, or NULL for every agent.';
        END IF;
    END IF;

    RETURN job_model;
END
$$;

COMMENT ON FUNCTION swarm._check_job_args(text, bigint[], text, integer, text, text, text, text[]) IS
'Private: the argument checks of swarm.generate(), swarm.interact() and swarm.simulate(); returns the job''s model.';

-------------------------------------------------------------------------------
-- generate
-------------------------------------------------------------------------------

CREATE FUNCTION swarm.generate(
    context text,
    agents bigint[] DEFAULT NULL,
    model text DEFAULT NULL,
    max_tokens integer DEFAULT 150,
    channel text DEFAULT 'swarm',
    system_template text DEFAULT NULL,
    user_template text DEFAULT NULL,
    endpoints text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_job bigint;
    n bigint;
    job_model text;
BEGIN
    job_model := swarm._check_job_args(context, agents, model, max_tokens, channel,
                                       system_template, user_template, endpoints);

    INSERT INTO swarm.jobs (context, model, max_tokens, channel, system_template, user_template, endpoints, params)
    VALUES (context,
            job_model,
            max_tokens,
            channel,
            coalesce(system_template, current_setting('swarm.system_template')),
            coalesce(user_template, '{context}'),
            endpoints,
            jsonb_build_object('agents', CASE WHEN agents IS NULL THEN 'all' ELSE 'list' END))
    RETURNING id INTO new_job;

    IF agents IS NULL THEN
        INSERT INTO swarm.requests (job_id, agent_id)
        SELECT new_job, a.id FROM swarm.agents a;
    ELSE
        INSERT INTO swarm.requests (job_id, agent_id)
        SELECT new_job, u.id FROM (SELECT DISTINCT unnest(agents) AS id) u ORDER BY u.id;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;

    IF n = 0 THEN
        UPDATE swarm.jobs SET total = 0, status = 'completed', started_at = now(), finished_at = now()
        WHERE id = new_job;
        PERFORM pg_notify(j.channel, swarm._progress_payload(j)) FROM swarm.jobs j WHERE j.id = new_job;
    ELSE
        UPDATE swarm.jobs SET total = n WHERE id = new_job;
        PERFORM swarm._wake_worker();
    END IF;
    RETURN new_job;
END
$$;

COMMENT ON FUNCTION swarm.generate(text, bigint[], text, integer, text, text, text, text[]) IS
'Enqueue one chat completion per agent (every agent when agents is NULL) and return the job id. endpoints lists the endpoints to use, in failover order (NULL: ''default''). Runs in the caller''s transaction: nothing is sent before it commits.';

-------------------------------------------------------------------------------
-- cancel
-------------------------------------------------------------------------------

CREATE FUNCTION swarm.cancel(job bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j swarm.jobs;
    n bigint;
BEGIN
    -- jobs before requests: the worker locks in the same order
    SELECT * INTO j FROM swarm.jobs WHERE id = job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', job
            USING ERRCODE = 'no_data_found';
    END IF;
    IF j.status IN ('completed', 'cancelled') THEN
        RAISE NOTICE 'job % is already %', job, j.status;
        RETURN false;
    END IF;

    UPDATE swarm.requests SET status = 'cancelled', finished_at = now()
    WHERE job_id = job AND status = 'queued';
    GET DIAGNOSTICS n = ROW_COUNT;

    UPDATE swarm.jobs SET cancelled = cancelled + n, status = 'cancelled', finished_at = now()
    WHERE id = job
    RETURNING * INTO j;
    PERFORM pg_notify(j.channel, swarm._progress_payload(j));
    PERFORM swarm._wake_worker();
    RETURN true;
END
$$;

COMMENT ON FUNCTION swarm.cancel(bigint) IS
'Stop a job: its requests not yet answered are marked cancelled and results still in flight are discarded. Returns false if the job had already ended.';

-------------------------------------------------------------------------------
-- wait
-------------------------------------------------------------------------------

CREATE FUNCTION swarm.wait(job bigint, timeout interval DEFAULT NULL)
RETURNS swarm.jobs
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j swarm.jobs;
    generation bigint;
    deadline timestamptz := CASE WHEN timeout IS NULL THEN NULL ELSE clock_timestamp() + timeout END;
    last_done bigint := -1;
    last_report timestamptz;
    sleep_ms integer;
    created_here boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'swarm.wait() needs READ COMMITTED isolation'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Under a transaction snapshot the job''s progress would never become visible.',
                  HINT = 'Call swarm.wait() outside an explicit REPEATABLE READ or SERIALIZABLE transaction.';
    END IF;

    LOOP
        generation := swarm._progress_generation();
        SELECT * INTO j FROM swarm.jobs jj WHERE jj.id = job;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', job
                USING ERRCODE = 'no_data_found';
        END IF;
        IF j.status IN ('completed', 'cancelled') THEN
            RETURN j;
        END IF;
        SELECT swarm._xid_is_current(jj.xmin) INTO created_here FROM swarm.jobs jj WHERE jj.id = job;
        IF created_here THEN
            RAISE EXCEPTION 'job % was enqueued in this transaction and cannot run before it commits', job
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Commit the transaction that called swarm.generate(), then wait.';
        END IF;

        IF j.succeeded + j.failed + j.cancelled <> last_done
           AND (last_report IS NULL OR clock_timestamp() - last_report >= interval '1 second') THEN
            RAISE NOTICE 'job %: % of % done (% failed), %', job,
                j.succeeded + j.failed + j.cancelled, j.total, j.failed, j.status;
            last_done := j.succeeded + j.failed + j.cancelled;
            last_report := clock_timestamp();
        END IF;

        IF deadline IS NOT NULL AND clock_timestamp() >= deadline THEN
            RETURN j;
        END IF;
        sleep_ms := 1000;
        IF deadline IS NOT NULL THEN
            sleep_ms := least(sleep_ms, greatest(1, ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000)::integer));
        END IF;
        PERFORM swarm._sleep_for_progress(generation, sleep_ms);
    END LOOP;
END
$$;

COMMENT ON FUNCTION swarm.wait(bigint, interval) IS
'Block until the job ends (or the timeout passes), reporting progress as NOTICEs, and return its row. Cancel with Ctrl-C.';

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------

CREATE VIEW swarm.stats AS
    SELECT * FROM swarm._stats();

COMMENT ON VIEW swarm.stats IS
'The worker''s performance counters since the server started: operations, success rate, latency (avg, p50/p95/p99), concurrency, throughput, retries, errors, uptime.';

-- security_invoker: a user sees the progress of the jobs row-level security lets it see
CREATE VIEW swarm.job_progress WITH (security_invoker = true) AS
    SELECT j.id AS job_id,
           j.status,
           j.total,
           j.succeeded + j.failed + j.cancelled AS done,
           j.succeeded,
           j.failed,
           j.cancelled,
           round(100.0 * (j.succeeded + j.failed + j.cancelled) / nullif(j.total, 0), 1) AS percent,
           coalesce(j.finished_at, now()) - j.started_at AS elapsed,
           round(((j.succeeded + j.failed + j.cancelled)
                  / nullif(extract(epoch FROM coalesce(j.finished_at, now()) - j.started_at), 0))::numeric, 1)
               AS rate_per_second,
           CASE WHEN j.status IN ('completed', 'cancelled') THEN interval '0'
                WHEN j.succeeded + j.failed + j.cancelled = 0 THEN NULL
                ELSE (j.total - j.succeeded - j.failed - j.cancelled)
                     * ((coalesce(j.finished_at, now()) - j.started_at) / (j.succeeded + j.failed + j.cancelled))
           END AS eta,
           j.created_at,
           j.started_at,
           j.finished_at
    FROM swarm.jobs j;

COMMENT ON VIEW swarm.job_progress IS 'Per job: done/failed/total, percent, rate (requests/s) and estimated time to finish.';

REVOKE ALL ON ALL TABLES IN SCHEMA swarm FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA swarm FROM PUBLIC;

-- Internal: store answers through the worker's own code path, in the caller's
-- transaction.  Used by the isolation tests to race a store against cancel().
CREATE FUNCTION swarm._store_results(request_ids bigint[], contents text[]) RETURNS integer
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_store_results';
REVOKE ALL ON FUNCTION swarm._store_results(bigint[], text[]) FROM PUBLIC;
