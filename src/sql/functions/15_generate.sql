-- pg_swarm: generate(), and what every kind of job shares with it: the
-- argument checks, the default templates, and the end of enqueueing.

-------------------------------------------------------------------------------
-- Shared by generate(), interact() and simulate()
-------------------------------------------------------------------------------

-- Refuses a context and templates that together pass swarm.max_prompt_bytes
-- (each expanded message is bounded by it again in the worker).
CREATE OR REPLACE FUNCTION swarm._check_prompt_size(context text, system_template text, user_template text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_bytes bigint := (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'swarm.max_prompt_bytes');
    bytes bigint := octet_length(coalesce(context, '')) + octet_length(coalesce(system_template, ''))
                    + octet_length(coalesce(user_template, ''));
BEGIN
    IF bytes > max_bytes THEN
        RAISE EXCEPTION 'prompt too large: % bytes of context and templates', bytes
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = format('swarm.max_prompt_bytes is %s.', max_bytes),
                  HINT = 'Shorten the context or the templates (swarm.system_template counts when no system_template is given), or ask an administrator to raise swarm.max_prompt_bytes.';
    END IF;
END
$$;

COMMENT ON FUNCTION swarm._check_prompt_size(text, text, text) IS
'Private: refuses a context and templates larger together than swarm.max_prompt_bytes.';

-- Refuses endpoints the caller may not use, and a max_tokens above what one
-- of them allows.  swarm.endpoints.roles (swarm.default_roles for 'default')
-- names the roles whose members may use an endpoint; members of swarm_admin
-- may use every one.
CREATE OR REPLACE FUNCTION swarm._check_endpoint_access(endpoints text[], max_tokens integer)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := swarm._caller();
    is_admin boolean := swarm._caller_is_admin();
    default_roles name[] := (SELECT coalesce(array_agg(btrim(r)::name), '{}')
                             FROM unnest(string_to_array(current_setting('swarm.default_roles'), ',')) r
                             WHERE btrim(r) <> '');
    denied text;
    capped text;
BEGIN
    WITH granted AS (
        SELECT u.e AS name,
               CASE WHEN u.e = 'default' THEN nullif(default_roles, '{}') ELSE d.roles END AS roles,
               CASE WHEN u.e = 'default' THEN current_setting('swarm.default_max_tokens')::integer
                    ELSE coalesce(d.max_tokens, 1000000) END AS cap
        FROM unnest(endpoints) AS u(e)
        LEFT JOIN swarm.endpoints d ON d.name = u.e)
    SELECT string_agg(g.name, ', ') FILTER (
               WHERE NOT is_admin AND g.roles IS NOT NULL
                 AND NOT EXISTS (SELECT FROM unnest(g.roles) r
                                 WHERE EXISTS (SELECT FROM pg_catalog.pg_roles pr WHERE pr.rolname = r)
                                   AND pg_catalog.pg_has_role(caller, r, 'MEMBER'))),
           string_agg(format('%s (%s)', g.name, g.cap), ', ') FILTER (WHERE max_tokens > g.cap)
    INTO denied, capped
    FROM granted g;
    IF denied IS NOT NULL THEN
        RAISE EXCEPTION 'permission denied for endpoint %', denied
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s is not a member of a role the endpoint is granted to.', caller),
                  HINT = 'An administrator grants an endpoint with swarm.alter_endpoint(name, roles => ...), or the endpoint ''default'' with swarm.default_roles.';
    END IF;
    IF capped IS NOT NULL THEN
        RAISE EXCEPTION 'max_tokens % is more than endpoint % allows', max_tokens, capped
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Ask for fewer tokens; swarm.endpoints.max_tokens (swarm.default_max_tokens for ''default'') is the cap.';
    END IF;
END
$$;

COMMENT ON FUNCTION swarm._check_endpoint_access(text[], integer) IS
'Private: refuses endpoints the caller is not granted and a max_tokens above an endpoint''s cap.';

-- Validates a job's arguments; returns the model the job will use.  Called
-- by the enqueueing functions, which run as the extension's owner
-- (SECURITY DEFINER): users do not insert into the queue themselves.
CREATE OR REPLACE FUNCTION swarm._check_job_args(
    context text,
    agents bigint[],
    model text,
    max_tokens integer,
    channel text,
    system_template text,
    user_template text,
    endpoints text[],
    request_deadline interval)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing bigint[];
    found bigint[];
    unknown text[];
    job_model text;
BEGIN
    -- first: refuses without the worker, and loads the library's settings
    PERFORM swarm._check_worker();

    IF context IS NULL OR btrim(context) = '' THEN
        RAISE EXCEPTION 'context must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the situation every agent should respond to, e.g. swarm.generate(''Share your plans for the weekend'').';
    END IF;
    IF max_tokens IS NULL OR max_tokens < 1 OR max_tokens > 1000000 THEN
        RAISE EXCEPTION 'max_tokens must be between 1 and 1000000, not %', coalesce(max_tokens::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF channel IS NULL OR channel = '' OR octet_length(channel) > 63 THEN
        RAISE EXCEPTION 'channel must be a non-empty name shorter than 64 bytes'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Progress is announced with NOTIFY on this channel; LISTEN to it.';
    END IF;
    IF model IS NOT NULL AND btrim(model) = '' THEN
        RAISE EXCEPTION 'model must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to use swarm.model.';
    END IF;
    PERFORM swarm._check_prompt_size(context, system_template, user_template);
    IF endpoints IS NOT NULL THEN
        IF cardinality(endpoints) = 0 OR array_position(endpoints, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'endpoints must be a non-empty list of endpoint names'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass NULL to use the endpoint ''default'' (the swarm.* settings).';
        END IF;
        IF cardinality(endpoints) > 8 THEN
            RAISE EXCEPTION 'endpoints lists % names, more than 8', cardinality(endpoints)
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'A job fails over along at most 8 endpoints.';
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
    PERFORM swarm._check_endpoint_access(coalesce(endpoints, ARRAY['default']), max_tokens);
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
    IF request_deadline IS NOT NULL AND (request_deadline < interval '1 second'
                                         OR request_deadline > interval '7 days') THEN
        RAISE EXCEPTION 'request_deadline must be between 1 second and 7 days, not %', request_deadline
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to use swarm.request_deadline.';
    END IF;
    IF agents IS NOT NULL AND array_position(agents, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'agents must not contain NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    IF agents IS NOT NULL THEN
        -- two plain statements, no correlated subquery: on a distributed
        -- swarm (Citus) the agents are read where they live
        SELECT coalesce(array_agg(a.id), '{}') INTO found FROM swarm.agents a WHERE a.id = ANY (agents);
        SELECT array_agg(u.id ORDER BY u.id) INTO missing
        FROM (SELECT DISTINCT unnest(agents) AS id) u
        WHERE u.id <> ALL (found);
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

COMMENT ON FUNCTION swarm._check_job_args(text, bigint[], text, integer, text, text, text, text[], interval) IS
'Private: the argument checks of swarm.generate(), swarm.interact() and swarm.simulate(); returns the job''s model.';

-- The templates a job of `kind` uses when its caller gives none.  The
-- system template of generate() is the setting swarm.system_template (whose
-- built-in default is in src/config.c); every other default is here.
CREATE OR REPLACE FUNCTION swarm._job_defaults(
    kind text,
    with_context boolean DEFAULT true,
    OUT system_template text,
    OUT user_template text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.system_template, d.user_template
    FROM (VALUES
        ('generate', current_setting('swarm.system_template'), '{context}'),
        ('interact',
         'You are {name}. Your persona: {persona}. You are chatting with your friend {partner_name} '
         '({partner}). Stay in character and keep each message to one to three sentences.',
         E'{context}\n\nThe conversation so far:\n{history}\n\nWrite your next message to {partner_name}.'),
        ('simulate',
         'You are {name}, on a social network. Your persona: {persona}. {memory}'
         'Write as yourself, in one to three sentences, without hashtags.',
         CASE WHEN with_context THEN E'{context}\n\n' ELSE '' END
         || E'Your feed:\n{feed}\n\n{task}')
    ) AS d(kind, system_template, user_template)
    WHERE d.kind = _job_defaults.kind
$$;

COMMENT ON FUNCTION swarm._job_defaults(text, boolean) IS
'Private: the default system and user templates of each kind of job.';

-- Every job's row is made here: a job of `kind` for the caller (its owner),
-- with the kind's default templates where the caller gave none.  The
-- arguments are those swarm._check_job_args() accepted.  Returns its id.
CREATE OR REPLACE FUNCTION swarm._create_job(
    kind text,
    context text,
    model text,
    max_tokens integer,
    channel text,
    system_template text,
    user_template text,
    endpoints text[],
    request_deadline interval,
    params jsonb,
    total bigint DEFAULT 0,
    with_context boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    defaults record;
    new_job bigint;
    store boolean := coalesce(current_setting('swarm.response_store', true), 'off')::boolean;
    replay text := coalesce(current_setting('swarm.replay', true), 'off');
    job_mode text;
BEGIN
    defaults := swarm._job_defaults(kind, with_context);
    -- the response store and replay, as the caller has them set (docs/replay.md)
    IF replay IN ('true', 'false') THEN
        replay := CASE replay WHEN 'true' THEN 'on' ELSE 'off' END;
    END IF;
    -- (a swarm distributed before 0.7.0 has its response store on the
    -- coordinator alone, where no node's worker reads or writes)
    IF (store OR replay <> 'off') AND swarm._is_distributed()
       AND NOT swarm._is_distributed('swarm.responses') THEN
        RAISE EXCEPTION 'the response store is not distributed on this swarm'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('swarm.response_store is %s and swarm.replay is %s; swarm.responses was made after swarm.distribute() (an upgrade from 0.6.0).',
                                  CASE WHEN store THEN 'on' ELSE 'off' END, replay),
                  HINT = 'Distribute it: SELECT create_distributed_table(''swarm.responses'', ''agent_id'', colocate_with => ''swarm.agents''); see docs/replay.md.';
    END IF;
    IF store THEN
        params := params || '{"response_store": true}';
    END IF;
    -- sync or batch: as asked, else as the job's first endpoint has it
    -- (docs/batch.md); recorded only when batch
    job_mode := coalesce(params ->> 'mode',
                         (SELECT e.mode FROM swarm.endpoints e WHERE e.name = (coalesce(endpoints, ARRAY['default']))[1]),
                         'sync');
    params := params - 'mode';
    IF job_mode NOT IN ('sync', 'batch') THEN
        RAISE EXCEPTION 'mode must be sync or batch, not "%"', job_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'batch sends the job''s requests through the endpoint''s Batch API (docs/batch.md); NULL takes the endpoint''s mode.';
    END IF;
    IF job_mode = 'batch' THEN
        IF replay <> 'off' THEN
            RAISE EXCEPTION 'a replayed job cannot run in batch mode'
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = format('swarm.replay is %s: its answers come from swarm.responses, not from an endpoint.', replay),
                      HINT = 'SET swarm.replay = off, or pass mode => ''sync''.';
        END IF;
        IF swarm._is_distributed() THEN
            RAISE EXCEPTION 'batch mode is not supported on a distributed swarm'
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Pass mode => ''sync''; see docs/batch.md.';
        END IF;
        params := params || '{"mode": "batch"}';
    END IF;
    IF replay <> 'off' THEN
        params := params || jsonb_build_object('replay', replay);
    END IF;
    -- the templates the job will really use (the default system template is
    -- a setting any user may SET) count against the limit too
    PERFORM swarm._check_prompt_size(context, coalesce(system_template, defaults.system_template),
                                      coalesce(user_template, defaults.user_template));
    INSERT INTO swarm.jobs (owner, kind, context, model, max_tokens, channel, system_template,
                            user_template, endpoints, request_deadline, total, params)
    VALUES (swarm._caller(), kind, context, model, max_tokens, channel,
            coalesce(system_template, defaults.system_template),
            coalesce(user_template, defaults.user_template),
            endpoints, request_deadline, total, params)
    RETURNING id INTO new_job;
    RETURN new_job;
END
$$;

COMMENT ON FUNCTION swarm._create_job(text, text, text, integer, text, text, text, text[], interval, jsonb, bigint, boolean) IS
'Private: inserts the row of a new job of a kind, owned by the caller, with the kind''s default templates where none is given; returns its id.';

-- The end of every enqueue: set the job's total when given (else keep the
-- one it has), and then either complete a job with nothing to do, announcing
-- it, or wake the worker at commit.  Returns the job id.
CREATE OR REPLACE FUNCTION swarm._enqueued(job bigint, total bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j swarm.jobs;
BEGIN
    UPDATE swarm.jobs jj SET total = coalesce(_enqueued.total, jj.total)
    WHERE jj.id = job
    RETURNING * INTO j;
    IF j.total = 0 THEN
        UPDATE swarm.jobs jj SET status = 'completed', started_at = now(), finished_at = now()
        WHERE jj.id = job
        RETURNING * INTO j;
        PERFORM pg_notify(j.channel, swarm._progress_payload(j));
    ELSE
        PERFORM swarm._wake_worker();
    END IF;
    RETURN job;
END
$$;

COMMENT ON FUNCTION swarm._enqueued(bigint, bigint) IS
'Private: the end of enqueueing a job (its total; completed at once when it has nothing to do, else the worker is woken at commit).';

-------------------------------------------------------------------------------
-- generate
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm.generate(
    context text,
    agents bigint[] DEFAULT NULL,
    model text DEFAULT NULL,
    max_tokens integer DEFAULT 150,
    channel text DEFAULT 'swarm',
    system_template text DEFAULT NULL,
    user_template text DEFAULT NULL,
    endpoints text[] DEFAULT NULL,
    request_deadline interval DEFAULT NULL,
    mode text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_job bigint;
    n bigint;
    job_model text;
    who name := swarm._caller();
BEGIN
    job_model := swarm._check_job_args(context, agents, model, max_tokens, channel,
                                       system_template, user_template, endpoints, request_deadline);
    new_job := swarm._create_job('generate', context, job_model, max_tokens, channel,
                                 system_template, user_template, endpoints, request_deadline,
                                 jsonb_build_object('agents', CASE WHEN agents IS NULL THEN 'all' ELSE 'list' END,
                                                    'mode', mode));

    IF agents IS NULL THEN
        INSERT INTO swarm.requests (job_id, agent_id, owner)
        SELECT new_job, a.id, who FROM swarm.agents a;
    ELSE
        INSERT INTO swarm.requests (job_id, agent_id, owner)
        SELECT new_job, u.id, who FROM (SELECT DISTINCT unnest(agents) AS id) u ORDER BY u.id;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN swarm._enqueued(new_job, n);
END
$$;

COMMENT ON FUNCTION swarm.generate(text, bigint[], text, integer, text, text, text, text[], interval, text) IS
'Enqueue one chat completion per agent (every agent when agents is NULL) and return the job id. endpoints lists the endpoints to use, in failover order (NULL: ''default''); request_deadline bounds each request''s life, retries and waits included (NULL: swarm.request_deadline); mode: sync, or batch (sent through the first endpoint''s Batch API, docs/batch.md; NULL: that endpoint''s mode). Runs in the caller''s transaction: nothing is sent before it commits.';
