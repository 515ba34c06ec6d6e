-- pg_swarm 0.3.0 -> 0.4.0: what changes in the tables, and what goes away.
-- The Makefile appends every file of src/sql/functions/ and
-- src/sql/90_privileges.sql as they are in 0.4.0 (all written to run again)
-- to make pg_swarm--0.3.0--0.4.0.sql; TAP 005 checks that the result is the
-- schema of a fresh install.

\echo Use "ALTER EXTENSION pg_swarm UPDATE TO '0.4.0'" to load this file. \quit

-- A schema swarm that existed before CREATE EXTENSION was adopted, owner and
-- grants included: its owner could rename it and plant functions where the
-- extension's SECURITY DEFINER functions look for theirs.  The superuser
-- running the update takes it over, and nobody else may create in it.
DO $$
DECLARE
    s record;
BEGIN
    SELECT n.nspname, r.rolname AS owner, r.rolsuper INTO s
    FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
    JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
    WHERE e.extname = 'pg_swarm';
    IF s.nspname <> 'swarm' THEN
        RAISE EXCEPTION 'the schema of pg_swarm was renamed to %', s.nspname
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rename it back to swarm (and drop any other schema of that name) before the update.';
    END IF;
    IF NOT s.rolsuper THEN
        RAISE WARNING 'the schema swarm belonged to %, who is not a superuser: it now belongs to %', s.owner, current_user
            USING DETAIL = 'It existed before CREATE EXTENSION, which adopted it with its owner.';
        EXECUTE format('ALTER SCHEMA swarm OWNER TO %I', current_user);
    END IF;
    REVOKE CREATE ON SCHEMA swarm FROM PUBLIC;
    FOR s IN SELECT r.rolname FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
             JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
             WHERE n.nspname = 'swarm' AND a.grantee <> n.nspowner AND a.privilege_type = 'CREATE'
    LOOP
        EXECUTE format('REVOKE CREATE ON SCHEMA swarm FROM %I', s.rolname);
    END LOOP;
END
$$;

-- Job kinds are rows the worker reads (code, advances), not strings in C.
CREATE TABLE swarm.job_kinds (
    code        smallint PRIMARY KEY CHECK (code > 0),
    name        text NOT NULL UNIQUE,
    advances    boolean NOT NULL,
    description text NOT NULL
);
INSERT INTO swarm.job_kinds (code, name, advances, description) VALUES
    (1, 'generate', false, 'one request per agent'),
    (2, 'interact', true, 'conversations between friends, turn by turn: a stored turn enqueues the next'),
    (3, 'simulate', true, 'the feed, step by step: a step that has ended enqueues the next');
COMMENT ON TABLE swarm.job_kinds IS 'The kinds of job: generate, interact, simulate.';
COMMENT ON COLUMN swarm.job_kinds.code IS 'The number the worker knows the kind by.';
COMMENT ON COLUMN swarm.job_kinds.name IS 'The name in swarm.jobs.kind.';
COMMENT ON COLUMN swarm.job_kinds.advances IS 'Whether storing a result of such a job may enqueue more requests (swarm._advance()).';
COMMENT ON COLUMN swarm.job_kinds.description IS 'What a job of the kind does.';
ALTER TABLE swarm.jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE swarm.jobs ADD CONSTRAINT jobs_kind_fkey FOREIGN KEY (kind) REFERENCES swarm.job_kinds (name);

-- A job stopped by something other than cancel() says why.
ALTER TABLE swarm.jobs ADD COLUMN error text;
COMMENT ON COLUMN swarm.jobs.error IS 'Why the job stopped before its end, when something other than swarm.cancel() stopped it (a simulation step that could not be built, say).';

-- Simulation memory moves out of the shared swarm.agents.state into a table
-- of its own, one row per agent and owner (memory in agents.state carried
-- one user's text to every user).  What 0.3.0 wrote there cannot be given
-- back to its owner (it does not say whose it is), so it is removed.
CREATE TABLE swarm.agent_memory (
    agent_id    bigint NOT NULL,
    owner       name NOT NULL,
    memory      bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, owner)
);
COMMENT ON TABLE swarm.agent_memory IS 'Each agent''s memory of the simulations a user ran, one row per agent and owner; read through swarm.unpack(memory).';
COMMENT ON COLUMN swarm.agent_memory.agent_id IS 'The agent.';
COMMENT ON COLUMN swarm.agent_memory.owner IS 'The owner of the simulations that wrote it: only they (and swarm_admin) read it, and only their simulations use it.';
COMMENT ON COLUMN swarm.agent_memory.memory IS 'MessagePack of {"said": last 3 posts, "saw": last 4 feed items read, "posts": count, "last_step": n}.';
COMMENT ON COLUMN swarm.agent_memory.updated_at IS 'When a stored post last changed it.';
SELECT pg_catalog.pg_extension_config_dump('swarm.agent_memory', '');
UPDATE swarm.agents a
SET state = CASE WHEN s.rest = '{}'::jsonb THEN NULL ELSE swarm.pack(s.rest) END
FROM (SELECT id, swarm._unpack_or_null(state) - 'memory' AS rest
      FROM swarm.agents
      WHERE state IS NOT NULL AND jsonb_typeof(swarm._unpack_or_null(state)) = 'object'
        AND swarm._unpack_or_null(state) ? 'memory') s
WHERE a.id = s.id;

-- Until 0.3.0 users could insert into the queue themselves, and a request
-- they crafted then may still wait: one outside its job's kind, replying to
-- or having seen another job's messages, or in another job's conversation
-- (its prompt would quote them), or of a job that has ended or is gone.
-- Such requests are cancelled, saying why, and their jobs count them.
DO $$
DECLARE
    n bigint;
BEGIN
    WITH bad AS (
        SELECT r.id, r.job_id
        FROM swarm.requests r
        LEFT JOIN swarm.jobs j ON j.id = r.job_id
        WHERE r.status = 'queued'
          AND (j.id IS NULL
               OR j.status NOT IN ('queued', 'running')
               OR (j.kind = 'generate'
                   AND num_nonnulls(r.to_agent_id, r.conversation_id, r.turn, r.reply_to, r.seen, r.vars) > 0)
               OR EXISTS (SELECT FROM swarm.messages m WHERE m.id = r.reply_to AND m.job_id <> r.job_id)
               OR EXISTS (SELECT FROM swarm.messages m WHERE m.id = ANY (r.seen) AND m.job_id <> r.job_id)
               OR EXISTS (SELECT FROM swarm.messages m
                          WHERE m.conversation_id = r.conversation_id AND m.job_id <> r.job_id)
               OR EXISTS (SELECT FROM swarm.requests o
                          WHERE o.conversation_id = r.conversation_id AND o.job_id <> r.job_id))),
    cancelled AS (
        UPDATE swarm.requests r
        SET status = 'cancelled', finished_at = now(),
            last_error = 'cancelled by the update to 0.4.0: not a request its job could have queued'
        FROM bad WHERE r.id = bad.id
        RETURNING r.job_id),
    counted AS (
        UPDATE swarm.jobs j SET cancelled = j.cancelled + c.n
        FROM (SELECT job_id, count(*) AS n FROM cancelled GROUP BY job_id) c
        WHERE j.id = c.job_id AND j.status IN ('queued', 'running')
        RETURNING j.id)
    SELECT count(*) INTO n FROM cancelled;
    IF n > 0 THEN
        RAISE WARNING 'pg_swarm cancelled % queued requests that their jobs could not have queued', n
            USING DETAIL = 'They were inserted by hand before 0.3.0 (outside the job''s kind, quoting another job''s messages, or of a job that has ended); see swarm.requests.last_error.';
    END IF;
END
$$;

-- Endpoints may be granted to roles, and cap what a job asks of them.
ALTER TABLE swarm.endpoints ADD COLUMN roles name[];
ALTER TABLE swarm.endpoints ADD COLUMN max_tokens integer CHECK (max_tokens BETWEEN 1 AND 1000000);
COMMENT ON COLUMN swarm.endpoints.roles IS 'Roles whose members may use it (its key, its budget); NULL: every swarm_user. Members of swarm_admin may use every endpoint.';
COMMENT ON COLUMN swarm.endpoints.max_tokens IS 'Most max_tokens a job using it may ask for; NULL: 1,000,000.';

-- Functions and views whose arguments or results change: dropped here, made
-- anew by the function files.
DROP VIEW swarm.stats;
DROP FUNCTION swarm._stats();
DROP FUNCTION swarm._memory_text(jsonb);
DROP FUNCTION swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[]);
DROP FUNCTION swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], text[]);

-- The worker leaves the queue alone while the SQL is of another version than
-- its library: wake it at commit, so that jobs queued meanwhile start now.
-- (Not preloaded, or serving another database: nothing to wake.)
DO $$
BEGIN
    PERFORM swarm._wake_worker();
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    NULL;
END
$$;
