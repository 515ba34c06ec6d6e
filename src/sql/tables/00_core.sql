-- pg_swarm: core schema: agents, jobs, the durable request queue, messages.
--
-- Tables are stated here as they are in this version, each in one place
-- (src/sql/tables/*.sql run once, at CREATE EXTENSION; an upgrade changes
-- them with the ALTERs of its src/sql/upgrades script).  Functions and views
-- are in src/sql/functions/, written CREATE OR REPLACE so that every upgrade
-- runs them as they are.  The Makefile's comment says how the scripts are
-- assembled.
--
-- Nothing here is granted to PUBLIC: the extension's owner (a superuser) holds every
-- object until privileges are granted explicitly.

\echo Use "CREATE EXTENSION pg_swarm" to load this file. \quit

DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'pg_swarm requires a UTF8 database'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('Database "%s" uses encoding %s; LLM endpoints speak UTF-8 JSON.',
                                  pg_catalog.current_database(), pg_catalog.getdatabaseencoding()),
                  HINT = 'Create the extension in a database created with ENCODING ''UTF8''.';
    END IF;
END
$$;

-- The schema is the extension's own.  CREATE EXTENSION makes it (owned by
-- the superuser who installs) unless a schema of that name exists, which it
-- then adopts.  A schema someone else owns, or one that holds anything or
-- lets others create in it, is refused: its owner (or they) could rename it
-- or put a function of their own where the extension's SECURITY DEFINER
-- functions, which run as a superuser, look for theirs.  USAGE granted to
-- others is harmless, and is what Citus grants when it makes the schema on
-- its worker nodes before running CREATE EXTENSION there.
DO $$
DECLARE
    s record;
BEGIN
    SELECT n.oid, r.rolname AS owner, r.rolsuper,
           (SELECT count(*) FROM pg_catalog.aclexplode(n.nspacl) a
            WHERE a.grantee <> n.nspowner AND a.privilege_type = 'CREATE') AS grants
    INTO s
    FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
    WHERE n.nspname = 'swarm';
    IF NOT s.rolsuper THEN
        RAISE EXCEPTION 'schema "swarm" already exists and belongs to %, who is not a superuser', s.owner
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Its owner could rename it and put functions of their own where the extension''s functions, which run as a superuser, look for theirs.',
                  HINT = 'Drop the schema swarm (or ask its owner to), then CREATE EXTENSION pg_swarm: the extension makes its schema itself.';
    END IF;
    IF s.grants > 0 THEN
        RAISE EXCEPTION 'schema "swarm" already exists and lets other roles create in it'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A role that may create objects in it could shadow the extension''s functions.',
                  HINT = 'Drop the schema swarm, then CREATE EXTENSION pg_swarm: the extension makes its schema itself.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_proc WHERE pronamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_type WHERE typnamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_operator WHERE oprnamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_collation WHERE collnamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_conversion WHERE connamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_opclass WHERE opcnamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_opfamily WHERE opfnamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_ts_config WHERE cfgnamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_ts_dict WHERE dictnamespace = s.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_statistic_ext WHERE stxnamespace = s.oid) THEN
        RAISE EXCEPTION 'schema "swarm" already exists and is not empty'
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'Move what it holds elsewhere and drop it, then CREATE EXTENSION pg_swarm: the extension makes its schema itself.';
    END IF;
END
$$;

-- The roles: swarm_user and swarm_admin are made by the extension (see
-- 90_privileges.sql), as group roles that cannot log in, with a comment
-- saying so; an installation in another database of the cluster made them
-- already.  One of those names made by someone else is not adopted when it
-- can log in or holds more than a group role does (its password's holder
-- would read every user's jobs); one that is a plain group role is adopted
-- with a warning naming its members, who become users or admins.
DO $$
DECLARE
    r record;
    members text;
BEGIN
    FOR r IN SELECT ro.oid, ro.rolname, ro.rolcanlogin OR ro.rolsuper OR ro.rolcreaterole OR ro.rolcreatedb
                    OR ro.rolreplication OR ro.rolbypassrls AS powerful,
                    pg_catalog.shobj_description(ro.oid, 'pg_authid') AS note
             FROM pg_catalog.pg_roles ro WHERE ro.rolname IN ('swarm_user', 'swarm_admin')
    LOOP
        CONTINUE WHEN r.note IS NOT DISTINCT FROM 'pg_swarm: ' || r.rolname;
        IF r.powerful THEN
            RAISE EXCEPTION 'role % already exists, and can log in or holds attributes beyond a group role''s', r.rolname
                USING ERRCODE = 'duplicate_object',
                      DETAIL = 'pg_swarm makes swarm_user and swarm_admin as group roles (NOLOGIN); swarm_admin reads every user''s jobs.',
                      HINT = format('Drop the role, or make it a plain group role (ALTER ROLE %I NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS) if it is meant for pg_swarm, then create the extension.', r.rolname);
        END IF;
        SELECT string_agg(m.rolname, ', ' ORDER BY m.rolname) INTO members
        FROM pg_catalog.pg_auth_members am JOIN pg_catalog.pg_roles m ON m.oid = am.member
        WHERE am.roleid = r.oid;
        RAISE WARNING 'pg_swarm adopts the existing role %, which it did not make', r.rolname
            USING DETAIL = CASE WHEN members IS NULL THEN 'It has no members.'
                                ELSE format('Its members (%s) now %s.', members,
                                            CASE WHEN r.rolname = 'swarm_admin' THEN 'see and may cancel every user''s jobs'
                                                 ELSE 'may run jobs' END) END,
                  HINT = 'Revoke the membership of anyone who should not have it.';
    END LOOP;
END
$$;

REVOKE ALL ON SCHEMA swarm FROM PUBLIC;

-------------------------------------------------------------------------------
-- Agents
-------------------------------------------------------------------------------

CREATE TABLE swarm.agents (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    persona     jsonb NOT NULL DEFAULT '{}',
    state       bytea,
    created_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE swarm.agents IS 'The agents of the simulated society: one row per agent.';
COMMENT ON COLUMN swarm.agents.id IS 'Agent identifier.';
COMMENT ON COLUMN swarm.agents.name IS 'Display name, used in prompts as {name}.';
COMMENT ON COLUMN swarm.agents.persona IS 'Persona as JSON (age, occupation, interests, ...), used in prompts as {persona} or {persona.KEY}.';
COMMENT ON COLUMN swarm.agents.state IS 'Compact per-agent state (memory, counters) as MessagePack; see swarm.pack/swarm.unpack.';
COMMENT ON COLUMN swarm.agents.created_at IS 'When the agent was created.';

-------------------------------------------------------------------------------
-- Jobs
-------------------------------------------------------------------------------

-- The kinds of job, one row each: the worker reads a job's kind as its code
-- (the enum SwarmJobKind of src/jobs.h, whose values are these codes) and
-- whether its results enqueue follow-ups from here.  Adding a kind: a row
-- here, a value in SwarmJobKind, its templates in swarm._job_defaults() and,
-- if it advances, its branch in swarm._advance().
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

CREATE TABLE swarm.jobs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text NOT NULL DEFAULT 'generate' REFERENCES swarm.job_kinds (name),
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'completed', 'cancelled')),
    owner               name NOT NULL DEFAULT current_user,
    context             text NOT NULL,
    model               text NOT NULL,
    max_tokens          integer NOT NULL,
    channel             text NOT NULL CHECK (octet_length(channel) BETWEEN 1 AND 63),
    system_template     text NOT NULL,
    user_template       text NOT NULL,
    total               bigint NOT NULL DEFAULT 0,
    succeeded           bigint NOT NULL DEFAULT 0,
    failed              bigint NOT NULL DEFAULT 0,
    cancelled           bigint NOT NULL DEFAULT 0,
    prompt_tokens       bigint NOT NULL DEFAULT 0,
    completion_tokens   bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    params              jsonb NOT NULL DEFAULT '{}',
    endpoints           text[],
    request_deadline    interval CHECK (request_deadline > interval '0'),
    error               text
);

-- the worker's job scan
CREATE INDEX jobs_active_idx ON swarm.jobs (id) WHERE status IN ('queued', 'running');

COMMENT ON TABLE swarm.jobs IS 'One row per batch of generation work enqueued by swarm.generate(), swarm.interact() or swarm.simulate().';
COMMENT ON COLUMN swarm.jobs.kind IS 'generate (one request per agent), interact (conversations between friends, turn by turn) or simulate (the feed, step by step).';
COMMENT ON COLUMN swarm.jobs.status IS 'queued (not yet picked up), running, completed (every request ended), cancelled.';
COMMENT ON COLUMN swarm.jobs.owner IS 'Role that enqueued the job.';
COMMENT ON COLUMN swarm.jobs.context IS 'The shared context given to every agent ({context} in templates).';
COMMENT ON COLUMN swarm.jobs.model IS 'Model name sent to the endpoint.';
COMMENT ON COLUMN swarm.jobs.max_tokens IS 'max_tokens sent with each request.';
COMMENT ON COLUMN swarm.jobs.channel IS 'NOTIFY channel on which progress is announced.';
COMMENT ON COLUMN swarm.jobs.system_template IS 'Template of the system message (placeholders {name}, {persona}, {persona.KEY}, {agent_id}, {context}).';
COMMENT ON COLUMN swarm.jobs.user_template IS 'Template of the user message (same placeholders).';
COMMENT ON COLUMN swarm.jobs.total IS 'Number of requests the job makes: for interact and simulate, counting the turns and steps still to come (a conversation that ends early on a failed turn takes its later turns off).';
COMMENT ON COLUMN swarm.jobs.succeeded IS 'Requests that produced a row in swarm.messages.';
COMMENT ON COLUMN swarm.jobs.failed IS 'Requests that ended in failure (see swarm.requests.last_error).';
COMMENT ON COLUMN swarm.jobs.cancelled IS 'Requests stopped by swarm.cancel().';
COMMENT ON COLUMN swarm.jobs.prompt_tokens IS 'Sum of prompt tokens reported by the endpoint.';
COMMENT ON COLUMN swarm.jobs.completion_tokens IS 'Sum of completion tokens reported by the endpoint.';
COMMENT ON COLUMN swarm.jobs.created_at IS 'When the job was enqueued.';
COMMENT ON COLUMN swarm.jobs.started_at IS 'When the worker picked the job up.';
COMMENT ON COLUMN swarm.jobs.finished_at IS 'When the last request ended, or the job was cancelled.';
COMMENT ON COLUMN swarm.jobs.params IS 'Other parameters of the job, as given.';
COMMENT ON COLUMN swarm.jobs.endpoints IS 'Endpoints in failover order (NULL: ''default'', the swarm.* settings).';
COMMENT ON COLUMN swarm.jobs.error IS 'Why the job stopped before its end, when something other than swarm.cancel() stopped it (a simulation step that could not be built, say).';
COMMENT ON COLUMN swarm.jobs.request_deadline IS 'Longest a request of the job may take from claim to end, retries and waits included (NULL: swarm.request_deadline).';

-------------------------------------------------------------------------------
-- Requests: the durable queue
--
-- A request row is inserted by swarm.generate() with status 'queued'.  The worker
-- claims queued rows per job in id order (a job's rows all commit together, so a
-- per-job cursor never skips one).  When a response lands, one transaction deletes
-- the row and inserts its swarm.messages row, so a result is stored exactly once;
-- a request that ends in failure stays here with status 'failed' and its error.
-- Rows in flight are still 'queued' on disk: after a crash they are simply claimed
-- again.
-------------------------------------------------------------------------------

CREATE TABLE swarm.requests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint NOT NULL,
    agent_id    bigint NOT NULL,
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'failed', 'cancelled')),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    finished_at timestamptz,
    to_agent_id     bigint,
    conversation_id bigint,
    turn            integer,
    reply_to        bigint,
    seen            bigint[],
    vars            jsonb,
    owner           name NOT NULL,
    batch_id        bigint
) WITH (fillfactor = 90);

-- The claim walks a job's queued requests in id order.  A partial index keeps
-- that walk on the index whatever the statistics say (a generic plan that
-- believes no row is queued would otherwise scan the whole table per claim),
-- and stays small: answered requests leave the table, failed ones the index.
CREATE INDEX requests_queued_idx ON swarm.requests (job_id, id) WHERE status = 'queued';

COMMENT ON TABLE swarm.requests IS 'The durable queue: requests not yet answered, and those that failed or were cancelled. Answered requests move to swarm.messages.';
COMMENT ON COLUMN swarm.requests.status IS 'queued (waiting or in flight), failed (gave up; see last_error), cancelled.';
COMMENT ON COLUMN swarm.requests.attempts IS 'HTTP attempts made for the request when it ended.';
COMMENT ON COLUMN swarm.requests.last_error IS 'Why the request failed: HTTP status and the endpoint''s message, or the transport error.';
COMMENT ON COLUMN swarm.requests.finished_at IS 'When the request failed or was cancelled.';
COMMENT ON COLUMN swarm.requests.to_agent_id IS 'Interactions: the agent spoken to (copied to the message).';
COMMENT ON COLUMN swarm.requests.conversation_id IS 'swarm.interact(): the conversation (copied to the message).';
COMMENT ON COLUMN swarm.requests.turn IS 'The turn of a conversation, or the step of a simulation (copied to the message).';
COMMENT ON COLUMN swarm.requests.reply_to IS 'The message this one answers (copied to the message).';
COMMENT ON COLUMN swarm.requests.seen IS 'swarm.simulate(): the messages in the speaker''s feed (copied to the message).';
COMMENT ON COLUMN swarm.requests.owner IS 'The owner of the request''s job (copied at enqueue, so that row-level security needs no lookup: a distributed table''s policy may not have one).';
COMMENT ON COLUMN swarm.requests.batch_id IS 'Batch mode: the swarm.batches row whose file carries it (NULL: in no batch, or a synchronous job''s).';
COMMENT ON COLUMN swarm.requests.vars IS 'Values of further placeholders for this request only ({history}, {feed}, {partner_name}, ...), as a JSON object.';

-------------------------------------------------------------------------------
-- Messages: one row per successful request
-------------------------------------------------------------------------------

CREATE TABLE swarm.messages (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id              bigint NOT NULL,
    request_id          bigint NOT NULL UNIQUE,
    agent_id            bigint NOT NULL,
    content             text,
    model               text,
    prompt_tokens       integer,
    completion_tokens   integer,
    latency_ms          double precision,
    finish_reason       text,
    attempts            integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    to_agent_id         bigint,
    conversation_id     bigint,
    turn                integer,
    reply_to            bigint,
    seen                bigint[],
    owner               name NOT NULL
);

CREATE INDEX messages_job_id_idx ON swarm.messages (job_id, id);
CREATE INDEX messages_agent_id_idx ON swarm.messages (agent_id);
CREATE INDEX messages_conversation_idx ON swarm.messages (conversation_id, turn) WHERE conversation_id IS NOT NULL;

COMMENT ON TABLE swarm.messages IS 'Generated messages: one row per successful request, committed in batches as responses land.';
COMMENT ON COLUMN swarm.messages.id IS 'Increasing in commit order; stream a job''s results with WHERE job_id = J AND id > last_seen.';
COMMENT ON COLUMN swarm.messages.job_id IS 'The job the message belongs to.';
COMMENT ON COLUMN swarm.messages.request_id IS 'The request it answers (unique: a request has at most one message).';
COMMENT ON COLUMN swarm.messages.agent_id IS 'The agent who speaks.';
COMMENT ON COLUMN swarm.messages.content IS 'The generated text (NULL when the endpoint returned none).';
COMMENT ON COLUMN swarm.messages.model IS 'Model name reported by the endpoint.';
COMMENT ON COLUMN swarm.messages.prompt_tokens IS 'usage.prompt_tokens (NULL when the endpoint sends no usage).';
COMMENT ON COLUMN swarm.messages.completion_tokens IS 'usage.completion_tokens (NULL when the endpoint sends no usage).';
COMMENT ON COLUMN swarm.messages.latency_ms IS 'Time of the successful HTTP attempt, from send to last byte.';
COMMENT ON COLUMN swarm.messages.finish_reason IS 'stop, length, content_filter, ...';
COMMENT ON COLUMN swarm.messages.attempts IS 'HTTP attempts it took (1 = first try).';
COMMENT ON COLUMN swarm.messages.created_at IS 'When the message was committed.';
COMMENT ON COLUMN swarm.messages.to_agent_id IS 'Interactions: the agent spoken to (the partner in a conversation, the author replied to in a simulation); NULL for a post to everyone.';
COMMENT ON COLUMN swarm.messages.conversation_id IS 'swarm.interact(): the conversation; its messages in turn order are the thread.';
COMMENT ON COLUMN swarm.messages.turn IS 'The turn in its conversation (1 opens it), or the step of its simulation (1, 2, ...).';
COMMENT ON COLUMN swarm.messages.reply_to IS 'The message this one answers (the previous turn, or the post replied to).';
COMMENT ON COLUMN swarm.messages.seen IS 'swarm.simulate(): the messages the speaker''s feed showed it, best ranked first.';
COMMENT ON COLUMN swarm.messages.owner IS 'The owner of the message''s job (copied from its request): who may read it, besides swarm_admin.';

-- The rows of these tables are data, not part of the extension: pg_dump
-- dumps them (and the sequences' positions), so a dump restores them.
SELECT pg_catalog.pg_extension_config_dump('swarm.agents', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.requests', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.messages', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.agents', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.jobs', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.requests', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.messages', 'id')::regclass, '');
