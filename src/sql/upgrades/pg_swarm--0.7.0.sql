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
    owner           name NOT NULL
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
-- pg_swarm: the social world's tables: friendships and communities (agents
-- are in 00_core.sql).  See docs/social.md.

-------------------------------------------------------------------------------
-- Friendships
-------------------------------------------------------------------------------

CREATE TABLE swarm.friendships (
    agent_id    bigint NOT NULL,
    friend_id   bigint NOT NULL,
    since       timestamptz NOT NULL,
    strength    real NOT NULL CHECK (strength > 0 AND strength <= 1),
    PRIMARY KEY (agent_id, friend_id),
    CHECK (agent_id <> friend_id)
);

COMMENT ON TABLE swarm.friendships IS
'The undirected friendship graph, one row per direction: a friendship between A and B is the rows (A, B) and (B, A), so WHERE agent_id = X lists X''s friends by index. No foreign keys (for bulk speed): rows of deleted agents are removed by triggers on swarm.agents.';
COMMENT ON COLUMN swarm.friendships.agent_id IS 'The agent whose friend this row lists.';
COMMENT ON COLUMN swarm.friendships.friend_id IS 'The friend.';
COMMENT ON COLUMN swarm.friendships.since IS 'When the friendship began (within the year before it was built); equal in both directions.';
COMMENT ON COLUMN swarm.friendships.strength IS 'Tie strength in (0, 1]; equal in both directions.';

-------------------------------------------------------------------------------
-- Communities
-------------------------------------------------------------------------------

CREATE TABLE swarm.communities (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    max_members integer NOT NULL CHECK (max_members > 0),
    strategy    text NOT NULL CHECK (strategy IN ('random', 'interests', 'friendships')),
    topic       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE swarm.communities IS 'Named communities of agents, made by swarm.create_communities().';
COMMENT ON COLUMN swarm.communities.id IS 'Community identifier.';
COMMENT ON COLUMN swarm.communities.name IS 'Unique, non-blank name.';
COMMENT ON COLUMN swarm.communities.max_members IS 'Cap on members; never exceeded by swarm.create_communities().';
COMMENT ON COLUMN swarm.communities.strategy IS 'How members were chosen: random, interests or friendships.';
COMMENT ON COLUMN swarm.communities.topic IS 'For the interests strategy: the persona interest the community gathers.';
COMMENT ON COLUMN swarm.communities.created_at IS 'When the community was created.';

CREATE TABLE swarm.community_members (
    community_id bigint NOT NULL REFERENCES swarm.communities (id) ON DELETE CASCADE,
    agent_id     bigint NOT NULL,
    joined_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, agent_id)
);

CREATE INDEX community_members_agent_id_idx ON swarm.community_members (agent_id);

COMMENT ON TABLE swarm.community_members IS 'Membership of agents in communities. No foreign key to swarm.agents (for bulk speed): rows of deleted agents are removed by triggers on swarm.agents.';
COMMENT ON COLUMN swarm.community_members.community_id IS 'The community.';
COMMENT ON COLUMN swarm.community_members.agent_id IS 'The member agent.';
COMMENT ON COLUMN swarm.community_members.joined_at IS 'When the agent joined.';

-- Data, not part of the extension: pg_dump dumps the rows.
SELECT pg_catalog.pg_extension_config_dump('swarm.friendships', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.communities', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.community_members', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.communities', 'id')::regclass, '');
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
    structured_output   text NOT NULL DEFAULT 'json_schema' CHECK (structured_output IN ('json_schema', 'tools'))
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
-- pg_swarm: interactions' own objects (conversations and the feed reuse the
-- tables of 00_core.sql; see functions/50_interact.sql).

CREATE SEQUENCE swarm.conversation_ids;

COMMENT ON SEQUENCE swarm.conversation_ids IS 'Identifiers of the conversations made by swarm.interact().';

SELECT pg_catalog.pg_extension_config_dump('swarm.conversation_ids', '');

-- What each agent remembers of the simulations a user ran: its own posts and
-- what it read lately.  Memory belongs to the owner of the jobs that wrote
-- it (one row per agent and owner): a simulation of one user never shows
-- another user's text to its agents, nor to anyone reading them.  Written by
-- the worker only (swarm._advance()), read by swarm._simulate_step() for the
-- job's owner, and by its owner (row-level security).  Keyed by the agent
-- first, as every per-agent table (see docs/scale-out.md).
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
-- pg_swarm: what the worker of each node keeps for itself when the swarm is
-- distributed with Citus (see docs/scale-out.md and swarm.distribute()).
--
-- On a distributed swarm every node's worker claims and stores the requests
-- of the shards placed on its own node.  It counts what it stored here, in a
-- table of its node that is never distributed (one row per job, one upsert
-- per stored batch), instead of adding to the row of swarm.jobs: that is a
-- reference table, a copy on every node, and a write to it would be a
-- two-phase commit across all nodes on one hot row at every batch.  The
-- coordinator's worker sums every node's rows into swarm.jobs.  On one
-- server the table stays empty.  It is keyed by the job, not by an agent:
-- it is not a per-agent table and has one row per job on each node.

CREATE TABLE swarm.job_node_progress (
    job_id              bigint PRIMARY KEY,
    succeeded           bigint NOT NULL DEFAULT 0,
    failed              bigint NOT NULL DEFAULT 0,
    prompt_tokens       bigint NOT NULL DEFAULT 0,
    completion_tokens   bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE swarm.job_node_progress IS 'Distributed swarm only: what this node''s worker stored of each job (summed into swarm.jobs by the coordinator''s worker). Never distributed; empty on one server.';
COMMENT ON COLUMN swarm.job_node_progress.job_id IS 'The job.';
COMMENT ON COLUMN swarm.job_node_progress.succeeded IS 'Requests of the job this node answered (messages stored).';
COMMENT ON COLUMN swarm.job_node_progress.failed IS 'Requests of the job this node marked failed.';
COMMENT ON COLUMN swarm.job_node_progress.prompt_tokens IS 'Prompt tokens of the messages stored here.';
COMMENT ON COLUMN swarm.job_node_progress.completion_tokens IS 'Completion tokens of the messages stored here.';
COMMENT ON COLUMN swarm.job_node_progress.updated_at IS 'When this node last stored a result of the job.';

-- The coordinator's own: how far its worker has read each node's messages of
-- each running interact job (message ids made on node group g lie in
-- [g << 48, (g + 1) << 48) and grow in commit order there), so that every
-- stored turn gets its next turn (swarm._conduct()).  Never distributed;
-- empty on one server.
CREATE TABLE swarm.job_conductor_cursors (
    job_id          bigint NOT NULL,
    node_group      integer NOT NULL,
    last_message_id bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, node_group)
);

COMMENT ON TABLE swarm.job_conductor_cursors IS 'Distributed swarm, coordinator only: the last message of each node read for each interact job, whose next turns are enqueued. Never distributed; empty on one server.';
COMMENT ON COLUMN swarm.job_conductor_cursors.job_id IS 'The job.';
COMMENT ON COLUMN swarm.job_conductor_cursors.node_group IS 'The Citus node group whose messages this is the cursor of.';
COMMENT ON COLUMN swarm.job_conductor_cursors.last_message_id IS 'The last message of that node read.';
COMMENT ON COLUMN swarm.job_conductor_cursors.updated_at IS 'When the cursor last moved.';
-- pg_swarm: what agents do in a simulation with actions
-- (swarm.simulate(actions => true); functions/70_actions.sql).
--
-- Each active agent answers a step with one action, a JSON object chosen
-- through the endpoint's structured output.  The worker validates it in
-- the transaction that stores its message and writes it here: every
-- action, valid or not, in swarm.actions (the log), and what a valid one
-- changes in the typed tables (likes, reposts, follows, mutes,
-- memberships).  A post, reply, quote or repost is itself a post of the
-- platform: its id is the id of its message, and of its action.
--
-- Every table is per agent: keyed by the acting agent's id first, with no
-- trigger and no foreign key, so that swarm.distribute() spreads each by
-- agent_id, co-located with swarm.agents (docs/scale-out.md).  The graph a
-- simulation grows is its own (keyed by job): follows, mutes and
-- memberships made in one job never change another job's feeds, nor the
-- seeded social world (friendships, community_members).  Rows carry their
-- job's owner, whom row-level security lets read them, as messages.

CREATE TABLE swarm.actions (
    agent_id        bigint NOT NULL,
    id              bigint NOT NULL,
    job_id          bigint NOT NULL,
    step            integer NOT NULL,
    kind            text,
    post_id         bigint,
    target_agent_id bigint,
    community_id    bigint,
    content         text,
    valid           boolean NOT NULL,
    reason          text,
    changed         boolean,
    owner           name NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, id),
    CHECK (valid = (reason IS NULL))
);

-- the recommender reads a job's last steps, newest step and highest agent
-- first (its tie-breaking order, read backwards without a sort); actions
-- name posts by id
CREATE INDEX actions_job_step_idx ON swarm.actions (job_id, step, agent_id);
CREATE INDEX actions_job_id_idx ON swarm.actions (job_id, id);

COMMENT ON TABLE swarm.actions IS 'Every action an agent chose in a simulation with actions, valid or not (with the reason), one row per message.';
COMMENT ON COLUMN swarm.actions.agent_id IS 'The acting agent.';
COMMENT ON COLUMN swarm.actions.id IS 'The id of the message that chose it (swarm.messages.id); for a post, reply, quote or repost, the id of the post it made.';
COMMENT ON COLUMN swarm.actions.job_id IS 'The simulation.';
COMMENT ON COLUMN swarm.actions.step IS 'The step it was chosen in.';
COMMENT ON COLUMN swarm.actions.kind IS 'post, reply, quote, repost, like, dislike, follow, unfollow, mute, join_community, leave_community or do_nothing; for an invalid reply, what it named (cut to 40 characters), or NULL.';
COMMENT ON COLUMN swarm.actions.post_id IS 'The post replied to, quoted, reposted, liked or disliked (the model named it by its number in the feed; resolved here).';
COMMENT ON COLUMN swarm.actions.target_agent_id IS 'The agent followed, unfollowed or muted; for an action on a post, the post''s author.';
COMMENT ON COLUMN swarm.actions.community_id IS 'The community joined or left.';
COMMENT ON COLUMN swarm.actions.content IS 'The text of a post, reply or quote.';
COMMENT ON COLUMN swarm.actions.valid IS 'Whether it passed validation (the schema, and the agent''s feed and the world): only valid actions are applied.';
COMMENT ON COLUMN swarm.actions.reason IS 'Why it is invalid; NULL when valid.';
COMMENT ON COLUMN swarm.actions.changed IS 'Whether applying it changed the graph or the posts (a follow of an agent already followed did not); NULL when invalid.';
COMMENT ON COLUMN swarm.actions.owner IS 'The owner of the job: only they (and swarm_admin) read it.';

CREATE TABLE swarm.likes (
    agent_id    bigint NOT NULL,
    job_id      bigint NOT NULL,
    post_id     bigint NOT NULL,
    value       smallint NOT NULL CHECK (value IN (-1, 1)),
    step        integer NOT NULL,
    action_id   bigint NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (agent_id, job_id, post_id)
);

COMMENT ON TABLE swarm.likes IS 'Each agent''s last reaction to a post in a simulation: 1 like, -1 dislike (a like after a dislike replaces it).';

CREATE TABLE swarm.reposts (
    agent_id    bigint NOT NULL,
    id          bigint NOT NULL,
    job_id      bigint NOT NULL,
    post_id     bigint NOT NULL,
    quote       boolean NOT NULL,
    step        integer NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (agent_id, id)
);

-- a cascade walks from a post to its reposts
CREATE INDEX reposts_job_post_idx ON swarm.reposts (job_id, post_id);

COMMENT ON TABLE swarm.reposts IS 'Reposts and quotes: id is the new post (its action''s id), post_id the post it passes on (itself perhaps a repost: see swarm.repost_cascades).';

CREATE TABLE swarm.follows (
    agent_id    bigint NOT NULL,
    job_id      bigint NOT NULL,
    target_id   bigint NOT NULL,
    step        integer NOT NULL,
    action_id   bigint NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (agent_id, job_id, target_id)
);

COMMENT ON TABLE swarm.follows IS 'Who follows whom in a simulation, now (directed; an unfollow deletes the row; the history is in swarm.actions). Separate from swarm.friendships, the seeded undirected base every simulation starts from.';

CREATE TABLE swarm.mutes (
    agent_id    bigint NOT NULL,
    job_id      bigint NOT NULL,
    target_id   bigint NOT NULL,
    step        integer NOT NULL,
    action_id   bigint NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (agent_id, job_id, target_id)
);

COMMENT ON TABLE swarm.mutes IS 'Who muted whom in a simulation: a muted author''s posts never reach the agent''s feed again.';

CREATE TABLE swarm.memberships (
    agent_id     bigint NOT NULL,
    job_id       bigint NOT NULL,
    community_id bigint NOT NULL,
    member       boolean NOT NULL,
    step         integer NOT NULL,
    action_id    bigint NOT NULL,
    owner        name NOT NULL,
    PRIMARY KEY (agent_id, job_id, community_id)
);

COMMENT ON TABLE swarm.memberships IS 'Communities joined (member) or left (not member) in a simulation: over the seeded swarm.community_members, which it leaves unchanged.';

SELECT pg_catalog.pg_extension_config_dump('swarm.actions', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.likes', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.reposts', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.follows', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.mutes', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.memberships', '');

-- When each step of a simulation was built, how long that took and how
-- many requests it made: what the step builder did, for its users and the
-- benchmarks.  Per job, not per agent: it stays on the coordinator of a
-- distributed swarm (not distributed, not a reference table).
CREATE TABLE swarm.simulation_steps (
    job_id      bigint NOT NULL,
    step        integer NOT NULL,
    requests    bigint NOT NULL,
    build_ms    double precision NOT NULL,
    built_at    timestamptz NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (job_id, step)
);

COMMENT ON TABLE swarm.simulation_steps IS 'Each step of a simulation as it was built: requests made, build time (ms), when; a step''s wall time is the gap to the next one''s built_at.';

SELECT pg_catalog.pg_extension_config_dump('swarm.simulation_steps', '');
-- pg_swarm: the response store (functions/75_responses.sql,
-- docs/replay.md).
--
-- With swarm.response_store = on when a job is made, each answer the worker
-- stores is also kept here under the key of its request: the SHA-256 of the
-- canonical request body (the job's model, the messages, the parameters and
-- the structured output asked for, as the worker builds it before an
-- endpoint's own model replaces the job's).  A job made with swarm.replay =
-- on answers its requests from here, without a network call.
--
-- Per agent, as the queue it answers: keyed by the agent's id first, no
-- trigger, no foreign key, so that swarm.distribute() spreads it by
-- agent_id, co-located with swarm.agents.  One answer per agent, owner and
-- key: the first one kept (a replay repeats the run it recorded).  Rows
-- carry the owner of the job that asked, whom row-level security lets read
-- them, as messages.

CREATE TABLE swarm.responses (
    agent_id          bigint NOT NULL,
    key               bytea NOT NULL CHECK (length(key) = 32),
    owner             name NOT NULL,
    job_id            bigint NOT NULL,
    content           text,
    model             text,
    finish_reason     text,
    prompt_tokens     integer,
    completion_tokens integer,
    endpoint          text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, owner, key)
);

CREATE INDEX responses_job_idx ON swarm.responses (job_id);
CREATE INDEX responses_created_idx ON swarm.responses (created_at);

COMMENT ON TABLE swarm.responses IS 'The response store: each answer of a job made with swarm.response_store = on, under the SHA-256 of its canonical request body (key), for swarm.replay. One per agent, owner and key (the first kept). See docs/replay.md.';
COMMENT ON COLUMN swarm.responses.key IS 'SHA-256 of the request body as the worker builds it for the job''s model (messages, parameters, structured output): the same prompt, the same key.';
COMMENT ON COLUMN swarm.responses.endpoint IS 'The endpoint that answered (NULL: answered from the store itself).';
-- pg_swarm: the generation API: wait(), cancel(), stats and progress views (generate() is in 15_generate.sql).

-------------------------------------------------------------------------------
-- Internal helpers (C, src/api.c)
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._check_worker() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_check_worker';
CREATE OR REPLACE FUNCTION swarm._wake_worker() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_wake_worker';
CREATE OR REPLACE FUNCTION swarm._wake_step_builder() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_wake_step_builder';
CREATE OR REPLACE FUNCTION swarm._progress_generation() RETURNS bigint
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_progress_generation';
CREATE OR REPLACE FUNCTION swarm._sleep_for_progress(seen bigint, timeout_ms integer) RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_sleep_for_progress';
CREATE OR REPLACE FUNCTION swarm._xid_is_current(xid) RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_xid_is_current';

-- The columns from http_attempts to bytes_received are the counters of
-- SWARM_STAT_COUNTERS (src/stats.h), in its order.
CREATE OR REPLACE FUNCTION swarm._stats(
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
    OUT bytes_received bigint,
    OUT uptime interval)
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_stats';

-- The JSON announced on a job's channel, also used by the worker (src/queue.c).
-- The payload says nothing private: a job id, its status and counts (anyone
-- may LISTEN to any channel, and NOTIFY on it; see limits-and-security.md).
CREATE OR REPLACE FUNCTION swarm._progress_payload(j swarm.jobs, batch bigint DEFAULT 0) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
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

-- Whether Citus distributes a table; without an argument, whether the swarm
-- is distributed (swarm.distribute() has run: swarm.requests is a
-- distributed table).  False without Citus.  See docs/scale-out.md.
CREATE OR REPLACE FUNCTION swarm._is_distributed(tbl regclass) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found boolean;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
        INTO found USING tbl;
    RETURN found;
END
$$;

COMMENT ON FUNCTION swarm._is_distributed(regclass) IS
'Private: whether Citus distributes the table (or keeps it as a reference table).';

CREATE OR REPLACE FUNCTION swarm._is_distributed() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT swarm._is_distributed('swarm.requests'::regclass) $$;

COMMENT ON FUNCTION swarm._is_distributed() IS
'Private: whether swarm.distribute() has made the swarm a distributed one (Citus).';

-- The role a SECURITY DEFINER function of the API acts for: the caller's
-- current role (its SET ROLE, else the session user).  The setting "role"
-- can name only a role the session user is a member of, so no caller can
-- pose as another.
-- A group role (one with members, such as swarm_user itself) is never an
-- owner: a member that did SET ROLE swarm_user acts as its session user, or
-- every other member doing the same would read and cancel its jobs.
CREATE OR REPLACE FUNCTION swarm._caller() RETURNS name
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                WHEN EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                             JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
                             WHERE r.rolname = pg_catalog.current_setting('role')) THEN session_user
                ELSE pg_catalog.current_setting('role')::name END
$$;

COMMENT ON FUNCTION swarm._caller() IS
'Private: the role the API''s SECURITY DEFINER functions act for: the caller''s SET ROLE, unless that role has members (a group), else its session user.';

-- Whether the caller may see and cancel every job.
CREATE OR REPLACE FUNCTION swarm._caller_is_admin() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.pg_has_role(swarm._caller(), 'swarm_admin', 'MEMBER') $$;

-------------------------------------------------------------------------------
-- cancel
-------------------------------------------------------------------------------

-- SECURITY DEFINER: users do not update the queue themselves; this checks
-- that the job is the caller's (or the caller an admin).
CREATE OR REPLACE FUNCTION swarm.cancel(job bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j swarm.jobs;
    n bigint;
BEGIN
    -- jobs before requests: the worker locks in the same order
    SELECT * INTO j FROM swarm.jobs jj WHERE jj.id = job FOR UPDATE;
    IF NOT FOUND OR (j.owner <> swarm._caller() AND NOT swarm._caller_is_admin()) THEN
        RAISE EXCEPTION 'job % does not exist', job
            USING ERRCODE = 'no_data_found';
    END IF;
    IF j.status IN ('completed', 'cancelled') THEN
        RAISE NOTICE 'job % is already %', job, j.status;
        RETURN false;
    END IF;

    -- (on a distributed swarm a node's store skips rows held here, rather
    -- than wait for them: src/queue.c, hold_shard_rows())
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

CREATE OR REPLACE FUNCTION swarm.wait(job bigint, timeout interval DEFAULT NULL)
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

CREATE OR REPLACE VIEW swarm.stats AS
    SELECT * FROM swarm._stats();

COMMENT ON VIEW swarm.stats IS
'The worker''s performance counters since the server started: operations, success rate, latency (avg, p50/p95/p99), concurrency, throughput, HTTP attempts, retries, errors, 429s, transport errors, committed batches, response bytes received, uptime.';

-- security_invoker: a user sees the progress of the jobs row-level security lets it see
CREATE OR REPLACE VIEW swarm.job_progress WITH (security_invoker = true) AS
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
    request_deadline interval DEFAULT NULL)
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
                                 jsonb_build_object('agents', CASE WHEN agents IS NULL THEN 'all' ELSE 'list' END));

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

COMMENT ON FUNCTION swarm.generate(text, bigint[], text, integer, text, text, text, text[], interval) IS
'Enqueue one chat completion per agent (every agent when agents is NULL) and return the job id. endpoints lists the endpoints to use, in failover order (NULL: ''default''); request_deadline bounds each request''s life, retries and waits included (NULL: swarm.request_deadline). Runs in the caller''s transaction: nothing is sent before it commits.';
-- pg_swarm: the social world's functions: compact agent state (MessagePack),
-- personas, friendships, communities (their tables: tables/20_social.sql).
-- C code: src/social/ (personas.c, friendship_models.c, communities.c,
-- msgpack_codec.c).  See docs/social.md.
--
-- Nothing here is granted to PUBLIC: functions have EXECUTE revoked from PUBLIC
-- and tables have no grants; the extension's owner grants what a deployment needs.

-------------------------------------------------------------------------------
-- Compact agent state: jsonb <-> MessagePack
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm.pack(state jsonb) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_pack';

COMMENT ON FUNCTION swarm.pack(jsonb) IS
'Encodes a jsonb value as MessagePack (for swarm.agents.state). Integral numbers that fit 64 bits become MessagePack ints, numbers a float64 holds exactly become float64, any other number (0.10, 1e400) becomes extension type 1 holding its decimal text, so swarm.unpack(swarm.pack(x)) = x for every jsonb x. NULL gives NULL.';

CREATE OR REPLACE FUNCTION swarm.unpack(state bytea) RETURNS jsonb
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_unpack';

COMMENT ON FUNCTION swarm.unpack(bytea) IS
'Decodes one MessagePack value into jsonb. Refuses with an error (never a crash): truncated input, trailing bytes, non-string map keys, bin, NaN/Infinity, extension types other than 1, invalid UTF-8 and U+0000 in strings. NULL gives NULL.';

REVOKE EXECUTE ON FUNCTION swarm.pack(jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.unpack(bytea) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Agents: personas
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._persona_rows(count integer, seed bigint)
    RETURNS TABLE (name text, persona jsonb)
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'swarm_persona_rows';

COMMENT ON FUNCTION swarm._persona_rows(integer, bigint) IS
'Private: generates count (name, persona) rows, deterministic for a seed (a NULL seed draws one at random). Used by swarm.create_agents().';

CREATE OR REPLACE FUNCTION swarm.create_agents(count integer, seed bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    made bigint;
BEGIN
    -- The SRF runs in the target list (ProjectSet), so rows stream into the
    -- heap instead of being materialised in a tuplestore first.
    INSERT INTO swarm.agents (name, persona)
    SELECT (p.r).name, (p.r).persona
    FROM (SELECT swarm._persona_rows(count, seed) AS r OFFSET 0) AS p;
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm.create_agents(integer, bigint) IS
'Creates count agents with generated personas (age, occupation, location, interests, Big Five, writing style, bio) and unique names; the same seed gives the same agents. Returns the number created.';

REVOKE EXECUTE ON FUNCTION swarm._persona_rows(integer, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.create_agents(integer, bigint) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Friendships
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._friendship_rows(max_friends integer, model text, seed bigint, avg_friends integer)
    RETURNS TABLE (agent_id bigint, friend_id bigint, since timestamptz, strength real)
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'swarm_friendship_rows';

COMMENT ON FUNCTION swarm._friendship_rows(integer, text, bigint, integer) IS
'Private: builds a friendship graph over swarm.agents in memory and returns both directions of every friendship, sorted. Used by swarm.build_friendships().';

CREATE OR REPLACE FUNCTION swarm.build_friendships(max_friends_per_agent integer DEFAULT 10,
                                        model text DEFAULT 'small_world',
                                        seed bigint DEFAULT NULL,
                                        avg_friends integer DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    made bigint;
BEGIN
    IF max_friends_per_agent IS NULL OR max_friends_per_agent < 1 THEN
        RAISE EXCEPTION 'max_friends_per_agent must be at least 1'
            USING ERRCODE = CASE WHEN max_friends_per_agent IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  DETAIL = format('The value given was %s.', coalesce(max_friends_per_agent::text, 'NULL'));
    END IF;
    IF model IS NULL OR model NOT IN ('random', 'small_world', 'preferential', 'homophily') THEN
        RAISE EXCEPTION 'unknown friendship model "%"', coalesce(model, 'NULL')
            USING ERRCODE = CASE WHEN model IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  HINT = 'Use one of random, small_world, preferential, homophily.';
    END IF;
    IF avg_friends IS NOT NULL AND (avg_friends < 1 OR avg_friends > max_friends_per_agent) THEN
        RAISE EXCEPTION 'avg_friends must be between 1 and max_friends_per_agent (%)', max_friends_per_agent
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The value given was %s.', avg_friends);
    END IF;

    -- The graph is rebuilt: the old one goes first (TRUNCATE: fast, and the
    -- new rows then fill the primary key at its right edge).
    TRUNCATE swarm.friendships;
    INSERT INTO swarm.friendships (agent_id, friend_id, since, strength)
    SELECT (e.r).agent_id, (e.r).friend_id, (e.r).since, (e.r).strength
    FROM (SELECT swarm._friendship_rows(max_friends_per_agent, model, seed, avg_friends) AS r OFFSET 0) AS e;
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made / 2;
END
$$;

COMMENT ON FUNCTION swarm.build_friendships(integer, text, bigint, integer) IS
'Replaces the friendship graph with a new one over all agents and returns the number of friendships (pairs). Models: random (Erdos-Renyi), small_world (Watts-Strogatz), preferential (Barabasi-Albert), homophily (shared interests and communities). No agent gets more than max_friends_per_agent friends; avg_friends is the target mean (default: max_friends_per_agent, or half of it for preferential so that hubs can form). The same seed gives the same graph.';

REVOKE EXECUTE ON FUNCTION swarm._friendship_rows(integer, text, bigint, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.build_friendships(integer, text, bigint, integer) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Communities
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._community_slots(k integer, max_members integer, seed bigint)
    RETURNS TABLE (slot integer, agent_id bigint)
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'swarm_community_slots';

COMMENT ON FUNCTION swarm._community_slots(integer, integer, bigint) IS
'Private: label propagation over swarm.friendships, clusters packed largest first into k slots of at most max_members agents. Used by swarm.create_communities().';

CREATE OR REPLACE FUNCTION swarm.create_communities(names text[],
                                         max_members_per_community integer DEFAULT 1000,
                                         strategy text DEFAULT 'random',
                                         seed bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    made bigint;
    k integer;
    taken text;
    s bigint := coalesce(seed, (random() * 9.2e18)::bigint);
BEGIN
    IF names IS NULL OR cardinality(names) = 0 THEN
        RAISE EXCEPTION 'names must be a non-empty array'
            USING ERRCODE = CASE WHEN names IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  HINT = 'Pass one name per community to create, e.g. ARRAY[''chess'', ''hiking''].';
    END IF;
    IF EXISTS (SELECT FROM unnest(names) n WHERE n IS NULL OR btrim(n) = '') THEN
        RAISE EXCEPTION 'community names must not be null or blank'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT n INTO taken FROM unnest(names) n GROUP BY n HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'community name "%" is given more than once', taken
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.name INTO taken FROM swarm.communities c WHERE c.name = ANY (names) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'community "%" already exists', taken
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose new names, or delete the old community first.';
    END IF;
    IF max_members_per_community IS NULL OR max_members_per_community < 1 THEN
        RAISE EXCEPTION 'max_members_per_community must be at least 1'
            USING ERRCODE = CASE WHEN max_members_per_community IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  DETAIL = format('The value given was %s.', coalesce(max_members_per_community::text, 'NULL'));
    END IF;
    IF strategy IS NULL OR strategy NOT IN ('random', 'interests', 'friendships') THEN
        RAISE EXCEPTION 'unknown community strategy "%"', coalesce(strategy, 'NULL')
            USING ERRCODE = CASE WHEN strategy IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  HINT = 'Use one of random, interests, friendships.';
    END IF;
    k := cardinality(names);

    -- distributed (Citus): the agents read in parallel, then a write to the
    -- reference table communities, which a distributed table references,
    -- must share one connection per node
    IF swarm._is_distributed() THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    CREATE TEMP TABLE _swarm_new_communities (slot integer, id bigint, topic text) ON COMMIT DROP;

    IF strategy = 'interests' THEN
        -- Each community gathers one persona interest: the one it is named
        -- after (case-insensitive) if agents have it, otherwise the most
        -- popular interests not yet taken, in the order the names are given.
        WITH pop AS (
            SELECT i AS interest, count(*) AS n
            FROM swarm.agents a, jsonb_array_elements_text(
                     CASE WHEN jsonb_typeof(a.persona->'interests') = 'array'
                          THEN a.persona->'interests' ELSE '[]' END) AS i
            GROUP BY i),
        given AS (
            SELECT g.ord::integer - 1 AS slot, g.name,
                   (SELECT p.interest FROM pop p WHERE lower(p.interest) = lower(btrim(g.name))
                    ORDER BY p.n DESC, p.interest LIMIT 1) AS exact
            FROM unnest(names) WITH ORDINALITY AS g(name, ord)),
        free AS (
            SELECT p.interest, row_number() OVER (ORDER BY p.n DESC, p.interest) AS rank
            FROM pop p WHERE p.interest NOT IN (SELECT exact FROM given WHERE exact IS NOT NULL)),
        unmatched AS (
            SELECT slot, row_number() OVER (ORDER BY slot) AS rank FROM given WHERE exact IS NULL)
        INSERT INTO _swarm_new_communities (slot, topic)
        SELECT g.slot, coalesce(g.exact, f.interest)
        FROM given g LEFT JOIN unmatched u USING (slot) LEFT JOIN free f ON f.rank = u.rank;
    ELSE
        INSERT INTO _swarm_new_communities (slot)
        SELECT g.ord::integer - 1 FROM unnest(names) WITH ORDINALITY AS g(name, ord);
    END IF;

    WITH ins AS (
        INSERT INTO swarm.communities (name, max_members, strategy, topic)
        SELECT names[n.slot + 1], max_members_per_community, strategy, n.topic
        FROM _swarm_new_communities n ORDER BY n.slot
        RETURNING id, name)
    UPDATE _swarm_new_communities n SET id = ins.id
    FROM ins WHERE ins.name = names[n.slot + 1];

    IF strategy = 'random' THEN
        -- Agents in a seeded random order, dealt round-robin; each agent
        -- joins at most one of these communities.
        INSERT INTO swarm.community_members (community_id, agent_id)
        SELECT n.id, r.agent_id
        FROM (SELECT a.id AS agent_id,
                     row_number() OVER (ORDER BY hashint8extended(a.id, s), a.id) - 1 AS rn
              FROM swarm.agents a) r
        JOIN _swarm_new_communities n ON n.slot = r.rn % k
        WHERE r.rn < k::bigint * max_members_per_community;
    ELSIF strategy = 'interests' THEN
        -- Every agent with the topic among its interests is a candidate;
        -- candidates in seeded random order fill the community up to the cap.
        -- An agent may join several communities, one per matching interest.
        INSERT INTO swarm.community_members (community_id, agent_id)
        SELECT c.id, c.agent_id
        FROM (SELECT n.id, a.id AS agent_id,
                     row_number() OVER (PARTITION BY n.id ORDER BY hashint8extended(a.id, s), a.id) AS rn
              FROM _swarm_new_communities n
              JOIN swarm.agents a ON jsonb_typeof(a.persona->'interests') = 'array'
                                 AND a.persona->'interests' ? n.topic) c
        WHERE c.rn <= max_members_per_community;
    ELSE
        INSERT INTO swarm.community_members (community_id, agent_id)
        SELECT n.id, (x.r).agent_id
        FROM (SELECT swarm._community_slots(k, max_members_per_community, s) AS r OFFSET 0) x
        JOIN _swarm_new_communities n ON n.slot = (x.r).slot;
    END IF;
    GET DIAGNOSTICS made = ROW_COUNT;
    DROP TABLE _swarm_new_communities;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm.create_communities(text[], integer, text, bigint) IS
'Creates one community per name and assigns agents, never more than max_members_per_community each; returns the memberships made. Strategies: random (agents dealt at random, one community each), interests (each community gathers the agents sharing one persona interest: the one it is named after, else the most popular free one), friendships (label propagation over swarm.friendships; the clusters found are packed largest first into the communities). The same seed gives the same result.';

REVOKE EXECUTE ON FUNCTION swarm._community_slots(integer, integer, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.create_communities(text[], integer, text, bigint) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Keeping the social tables consistent with swarm.agents
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._social_forget_agents() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- When the same TRUNCATE lists these tables too, they are empty by
        -- now (and may not be truncated again in this statement).
        IF EXISTS (SELECT FROM swarm.friendships) THEN
            TRUNCATE swarm.friendships;
        END IF;
        IF EXISTS (SELECT FROM swarm.community_members) THEN
            TRUNCATE swarm.community_members;
        END IF;
        IF EXISTS (SELECT FROM swarm.agent_memory) THEN
            TRUNCATE swarm.agent_memory;
        END IF;
    ELSE
        DELETE FROM swarm.friendships f USING gone g WHERE f.agent_id = g.id;
        DELETE FROM swarm.friendships f USING gone g WHERE f.friend_id = g.id;
        DELETE FROM swarm.community_members m USING gone g WHERE m.agent_id = g.id;
        DELETE FROM swarm.agent_memory m USING gone g WHERE m.agent_id = g.id;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION swarm._social_forget_agents() IS
'Private trigger: removes the friendships, memberships and memories of agents deleted or truncated from swarm.agents.';

-- On one server only: Citus refuses triggers on a distributed table, and
-- swarm.distribute() replaces these by foreign keys (ON DELETE CASCADE) and
-- swarm.delete_agents() (docs/scale-out.md).
DO $$
BEGIN
    IF NOT swarm._is_distributed() THEN
        CREATE OR REPLACE TRIGGER social_forget_deleted_agents
            AFTER DELETE ON swarm.agents REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION swarm._social_forget_agents();
        CREATE OR REPLACE TRIGGER social_forget_truncated_agents
            AFTER TRUNCATE ON swarm.agents
            FOR EACH STATEMENT EXECUTE FUNCTION swarm._social_forget_agents();
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION swarm._social_forget_agents() FROM PUBLIC;
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
    structured_output text DEFAULT 'json_schema')
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
    INSERT INTO swarm.endpoints (name, base_url, model, models, max_in_flight, requests_per_minute,
                                 tokens_per_minute, timeout_ms, priority, roles, max_tokens, structured_output)
    VALUES (add_endpoint.name, add_endpoint.base_url, add_endpoint.model, add_endpoint.models, add_endpoint.max_in_flight,
            add_endpoint.requests_per_minute, add_endpoint.tokens_per_minute,
            (extract(epoch FROM add_endpoint.timeout) * 1000)::integer, add_endpoint.priority,
            add_endpoint.roles, add_endpoint.max_tokens, add_endpoint.structured_output);
    IF api_key IS NOT NULL THEN
        INSERT INTO swarm._endpoint_keys (endpoint, api_key) VALUES (add_endpoint.name, api_key);
    END IF;
    PERFORM swarm._wake_worker();
END
$$;

COMMENT ON FUNCTION swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], name[], integer, text) IS
'Register a named endpoint. The key is stored where only the extension owner can read it. roles: who may use it (NULL: every swarm_user); max_tokens: the most a job using it may ask for; structured_output: how it takes a simulation''s action schema (json_schema or tools). Tip: pass the key through a bound parameter, not a literal, so that it does not show in pg_stat_activity.';

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
    structured_output text DEFAULT NULL)
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

COMMENT ON FUNCTION swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], text[], name[], integer, text) IS
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

CREATE OR REPLACE VIEW swarm.endpoint_status AS SELECT * FROM swarm._endpoint_status();

COMMENT ON VIEW swarm.endpoint_status IS
'Per endpoint: state (ok, paused after a Retry-After, a rate-limit reset or an exhausted quota, open = circuit breaker cooling down, half_open = probing) with until when and why; the adaptive concurrency limit, requests in flight, counts of requests, successes, 429s, errors, retries, breaker openings, the budget used in the last minute; why the last request that could not go to it waited (waiting_for: paused, breaker open, concurrency limit, requests_per_minute, tokens_per_minute, or their pacing) and until when; and latency_ratio, the 10th-percentile latency per token of the last window over its two-minute baseline (above 1.5 reads as requests queueing at the endpoint).';
-- pg_swarm: pulling results as a stream, for clients without LISTEN.

CREATE OR REPLACE FUNCTION swarm.next_batch(
    job bigint,
    after_id bigint DEFAULT 0,
    batch_size integer DEFAULT 100,
    wait interval DEFAULT '10 seconds')
RETURNS SETOF swarm.messages
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz;
    generation bigint;
    job_status text;
    sleep_ms integer;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 100000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 100000, not %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF wait IS NULL OR wait < interval '0' THEN
        RAISE EXCEPTION 'wait must be a non-negative interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF swarm._is_distributed() THEN
        RAISE EXCEPTION 'swarm.next_batch() does not run on a distributed swarm'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Each node numbers the messages it stores in its own range, so ids do not follow commit order across nodes.',
                  HINT = 'LISTEN on the job''s channel, or read swarm.messages WHERE job_id = J (docs/scale-out.md).';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'swarm.next_batch() needs READ COMMITTED isolation'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Under a transaction snapshot new results would never become visible.';
    END IF;
    deadline := clock_timestamp() + wait;
    after_id := coalesce(after_id, 0);

    LOOP
        generation := swarm._progress_generation();
        SELECT j.status INTO job_status FROM swarm.jobs j WHERE j.id = job;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', job
                USING ERRCODE = 'no_data_found';
        END IF;
        -- the status is read before the messages: a job seen ended has no
        -- message still to commit, so an empty answer then means "no more"
        RETURN QUERY
            SELECT m.* FROM swarm.messages m
            WHERE m.job_id = job AND m.id > after_id
            ORDER BY m.id
            LIMIT batch_size;
        IF FOUND OR job_status IN ('completed', 'cancelled') OR clock_timestamp() >= deadline THEN
            RETURN;
        END IF;
        sleep_ms := least(1000, greatest(1, ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000)::integer));
        PERFORM swarm._sleep_for_progress(generation, sleep_ms);
    END LOOP;
END
$$;

COMMENT ON FUNCTION swarm.next_batch(bigint, bigint, integer, interval) IS
'Up to batch_size messages of the job with id > after_id, in id (commit) order, waiting up to wait until there is one or the job has ended. Call again with the last id seen: every message is read exactly once, in order, while the job runs. An empty result means the job has ended (check swarm.jobs.status) or the wait passed.';

REVOKE ALL ON FUNCTION swarm.next_batch(bigint, bigint, integer, interval) FROM PUBLIC;
-- pg_swarm: interactions.  Conversations between friends (swarm.interact) and
-- the platform loop of posts and replies (swarm.simulate).
--
-- Both are ordinary jobs whose requests carry who is spoken to, the thread or
-- step they belong to, and per-request prompt values (swarm.requests.vars:
-- {partner_name}, {history}, {feed}, ...).  Only the first turn or step is
-- enqueued up front.  What follows:
--   - a conversation's next turn is inserted by the worker, through
--     swarm._advance(), in the same transaction that stores the turn before
--     it (no barrier across the job: each conversation runs at its own
--     pace), so a crash never loses a turn nor makes one twice;
--   - a simulation's next step, once every request of the current step has
--     ended (step s + 1 sees step s), is built by the step builder, a
--     background worker of its own (src/step_builder.c,
--     swarm._build_next_step()), so that building a step never stalls the
--     worker's other jobs.  The worker only records what the step's agents
--     said and did (their memory; their actions, functions/70_actions.sql)
--     as it stores them.

-------------------------------------------------------------------------------
-- Helpers
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm.persona_summary(persona jsonb) RETURNS text
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_persona_summary';

COMMENT ON FUNCTION swarm.persona_summary(jsonb) IS
'A one-line summary of a persona ("34-year-old nurse from Lyon, France; into chess, jazz; writes warm and chatty"): what an agent is told about the agent it talks to. Personas without those keys are shown as JSON, cut to 300 characters.';

-- Appends the elements of `more` (a JSON array) to the array `items` and keeps
-- the last `keep` (src/actions.c).  Anything that is not an array counts as
-- empty.
CREATE OR REPLACE FUNCTION swarm._keep_last(items jsonb, more jsonb, keep integer) RETURNS jsonb
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_keep_last';

-- An agent's memory (swarm.agent_memory, unpacked), as prompt text:
-- "Lately you wrote: "..." "...". Lately you read: "...". " (src/actions.c).
CREATE OR REPLACE FUNCTION swarm._memory_text(memory jsonb) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_memory_text';

CREATE OR REPLACE FUNCTION swarm._unpack_or_null(state bytea) RETURNS jsonb
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_unpack_or_null';

COMMENT ON FUNCTION swarm._unpack_or_null(bytea) IS
'Private: swarm.unpack(), but NULL instead of an error for bytes that are not MessagePack: an agent whose state was overwritten with something else simply has no memory.';

-- A simulation's author remembers what it said (or did) and a glimpse of
-- what it saw: its memory `mem` (unpacked; anything but an object counts as
-- none) with the last three things said, the last four seen, one more post
-- and the step, packed.  (Inlined where it is called.)
CREATE OR REPLACE FUNCTION swarm._remembered(mem jsonb, said text, glimpse jsonb, step integer) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT swarm.pack(jsonb_build_object(
        'said', swarm._keep_last(CASE WHEN jsonb_typeof(mem) = 'object' THEN mem -> 'said' END,
                                 jsonb_build_array(left(coalesce(said, ''), 160)), 3),
        'saw', swarm._keep_last(CASE WHEN jsonb_typeof(mem) = 'object' THEN mem -> 'saw' END, glimpse, 4),
        'posts', coalesce((CASE WHEN jsonb_typeof(mem) = 'object' THEN mem ->> 'posts' END)::bigint, 0) + 1,
        'last_step', step))
$$;

-------------------------------------------------------------------------------
-- Conversations
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm.interact(
    context text,
    turns integer DEFAULT 2,
    agents bigint[] DEFAULT NULL,
    channel text DEFAULT 'swarm',
    model text DEFAULT NULL,
    max_tokens integer DEFAULT 150,
    system_template text DEFAULT NULL,
    user_template text DEFAULT NULL,
    endpoints text[] DEFAULT NULL,
    request_deadline interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
DECLARE
    new_job bigint;
    job_model text;
    conversations bigint;
    openers bigint;
    who name := swarm._caller();
BEGIN
    job_model := swarm._check_job_args(context, agents, model, max_tokens, channel,
                                       system_template, user_template, endpoints, request_deadline);
    IF turns IS NULL OR turns < 1 OR turns > 100 THEN
        RAISE EXCEPTION 'turns must be between 1 and 100, not %', coalesce(turns::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Turn 1 opens a conversation, turn 2 is the answer, and so on.';
    END IF;

    new_job := swarm._create_job('interact', context, job_model, max_tokens, channel,
                                 system_template, user_template, endpoints, request_deadline,
                                 jsonb_build_object('turns', turns,
                                                    'agents', CASE WHEN agents IS NULL THEN 'all' ELSE 'list' END));

    -- Each opener talks to its strongest tie (ties broken by the lower id).
    IF swarm._is_distributed() THEN
        conversations := swarm._open_conversations_distributed(new_job, agents, who);
        -- (the coordinator's worker recomputes the total from it when turns fail)
        UPDATE swarm.jobs j SET params = j.params || jsonb_build_object('conversations', conversations)
        WHERE j.id = new_job;
    ELSE
    INSERT INTO swarm.requests (job_id, agent_id, to_agent_id, conversation_id, turn, vars, owner)
    SELECT new_job, o.id, p.id, nextval('swarm.conversation_ids'), 1,
           jsonb_build_object('partner_name', p.name,
                              'partner', swarm.persona_summary(p.persona),
                              'history', '(nothing yet: you open the conversation)'),
           who
    FROM (SELECT a.id FROM swarm.agents a
          WHERE agents IS NULL OR a.id = ANY (agents)) o
    CROSS JOIN LATERAL (SELECT f.friend_id FROM swarm.friendships f
                        WHERE f.agent_id = o.id
                        ORDER BY f.strength DESC, f.friend_id
                        LIMIT 1) best
    JOIN swarm.agents p ON p.id = best.friend_id
    ORDER BY o.id;
    GET DIAGNOSTICS conversations = ROW_COUNT;
    END IF;

    openers := CASE WHEN agents IS NULL THEN (SELECT count(*) FROM swarm.agents)
                    ELSE (SELECT count(DISTINCT u) FROM unnest(agents) AS u) END;
    IF conversations < openers THEN
        RAISE NOTICE '% of % agents have no friend and open no conversation', openers - conversations, openers
            USING HINT = 'Make friendships first: swarm.build_friendships().';
    END IF;

    RETURN swarm._enqueued(new_job, conversations * turns);
END
$$;

COMMENT ON FUNCTION swarm.interact(text, integer, bigint[], text, text, integer, text, text, text[], interval) IS
'Start conversations and return the job id: each agent (every agent when agents is NULL) opens a conversation with its strongest friend, and the two take turns, turns messages in all. A turn is sent as soon as the previous turn of its conversation is stored; conversations never wait for each other. Messages carry to_agent_id, conversation_id, turn and reply_to. Templates may use {partner_name}, {partner} (persona summary) and {history} besides the usual placeholders.';

-------------------------------------------------------------------------------
-- The feed
-------------------------------------------------------------------------------

-- Enqueue step `step` of simulation `job`: pick its active agents, build each
-- one's feed from the posts of the three steps before (its friends' and its
-- communities' posts, ranked by tie strength over age), and its memory.
--
-- Planning: the step's posts are new to the statistics of swarm.messages
-- (a planner that believes there is one would nest loops over them: seconds
-- per step at 10,000 posts), so they are first collected into an array, whose
-- length a custom plan knows.  JIT costs more than it saves here.
CREATE OR REPLACE FUNCTION swarm._simulate_step(job bigint, step integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET jit = off
SET work_mem = '64MB'
AS $$
#variable_conflict use_variable
DECLARE
    p jsonb;
    job_owner name;
    made bigint;
    active_ids bigint[];
    author_ids bigint[];
BEGIN
    SELECT j.params, j.owner INTO p, job_owner FROM swarm.jobs j WHERE j.id = job;
    IF to_regclass('pg_temp.swarm_sim_active') IS NOT NULL THEN
        DROP TABLE pg_temp.swarm_sim_active, pg_temp.swarm_sim_memory, pg_temp.swarm_sim_posts,
                   pg_temp.swarm_sim_authors, pg_temp.swarm_sim_recent, pg_temp.swarm_sim_ties,
                   pg_temp.swarm_sim_members;
    END IF;

    -- The step's agents, their memories (of the job owner's simulations,
    -- never another user's), the posts of the last three steps with their
    -- authors, and the agents' ties: each read into a temporary table, the
    -- per-agent tables by lists of agent ids (index probes on one server,
    -- each shard's share on a distributed swarm)
    CREATE TEMP TABLE swarm_sim_active ON COMMIT DROP AS
    SELECT a.id FROM swarm.agents a
    ORDER BY hashint8extended(a.id, (p ->> 'seed')::bigint + step), a.id
    LIMIT (p ->> 'active_per_step')::bigint;
    SELECT coalesce(array_agg(a.id ORDER BY a.id), '{}') INTO active_ids FROM swarm_sim_active a;
    CREATE TEMP TABLE swarm_sim_memory ON COMMIT DROP AS
    SELECT x.agent_id, x.memory FROM swarm.agent_memory x
    WHERE x.agent_id = ANY (active_ids) AND x.owner = job_owner;

    CREATE TEMP TABLE swarm_sim_posts ON COMMIT DROP AS
    SELECT m.id, m.agent_id, m.turn, m.content
    FROM swarm.messages m
    WHERE m.job_id = job AND m.turn >= step - 3 AND m.turn < step;
    SELECT coalesce(array_agg(DISTINCT r.agent_id), '{}') INTO author_ids FROM swarm_sim_posts r;
    CREATE TEMP TABLE swarm_sim_authors ON COMMIT DROP AS
    SELECT x.id, x.name FROM swarm.agents x WHERE x.id = ANY (author_ids);
    CREATE TEMP TABLE swarm_sim_recent ON COMMIT DROP AS
    SELECT r.id, r.agent_id, r.turn, r.content, coalesce(au.name, 'agent ' || r.agent_id) AS author
    FROM swarm_sim_posts r LEFT JOIN swarm_sim_authors au ON au.id = r.agent_id;
    ANALYZE swarm_sim_recent;

    CREATE TEMP TABLE swarm_sim_ties ON COMMIT DROP AS
    SELECT f.agent_id AS viewer, f.friend_id AS author, f.strength
    FROM swarm.friendships f WHERE f.agent_id = ANY (active_ids);
    CREATE TEMP TABLE swarm_sim_members ON COMMIT DROP AS
    SELECT cm.agent_id, cm.community_id
    FROM swarm.community_members cm WHERE cm.agent_id = ANY (active_ids || author_ids);
    ANALYZE swarm_sim_ties;
    ANALYZE swarm_sim_members;

    -- Each feed: friends' posts by tie strength, then the newest posts of
    -- the agent's communities, over age; ties broken by step and author,
    -- never by id (ids follow the order results were stored in)
    INSERT INTO swarm.requests (job_id, agent_id, to_agent_id, turn, reply_to, seen, vars, owner)
    WITH
    -- a community shows its members its newest posts
    community_recent AS (
        SELECT c.community_id, c.id, c.agent_id, c.turn
        FROM (SELECT cm.community_id, r.id, r.agent_id, r.turn,
                     row_number() OVER (PARTITION BY cm.community_id ORDER BY r.turn DESC, r.agent_id DESC) AS rank
              FROM swarm_sim_recent r JOIN swarm_sim_members cm ON cm.agent_id = r.agent_id) c
        WHERE c.rank <= (p ->> 'feed_size')::integer),
    candidates AS (
        SELECT t.viewer, r.id AS post, r.turn, r.agent_id, t.strength::double precision / (step - r.turn) AS score
        FROM swarm_sim_ties t
        JOIN swarm_sim_recent r ON r.agent_id = t.author
        UNION ALL
        SELECT a.id, c.id, c.turn, c.agent_id, 0.5 / (step - c.turn)
        FROM swarm_sim_active a
        JOIN swarm_sim_members cm ON cm.agent_id = a.id
        JOIN community_recent c ON c.community_id = cm.community_id AND c.agent_id <> a.id),
    ranked AS (
        SELECT viewer, post, row_number() OVER (PARTITION BY viewer ORDER BY max(score) DESC, turn DESC, agent_id DESC) AS rank
        FROM candidates
        GROUP BY viewer, post, turn, agent_id),
    feeds AS (
        SELECT k.viewer,
               array_agg(k.post ORDER BY k.rank) AS seen,
               -- (numbered by position, as request.seen is: ids would make
               -- prompts differ between runs and between servers)
               string_agg(format('[%s] %s: %s', k.rank, r.author, left(coalesce(r.content, ''), 280)),
                          E'\n' ORDER BY k.rank) AS feed,
               min(k.post) FILTER (WHERE k.rank = 1) AS top_post
        FROM ranked k
        JOIN swarm_sim_recent r ON r.id = k.post
        WHERE k.rank <= (p ->> 'feed_size')::integer
        GROUP BY k.viewer),
    chosen AS (
        SELECT a.id, am.memory, f.seen, f.feed,
               CASE WHEN f.top_post IS NOT NULL
                     AND (hashint8extended(a.id, (p ->> 'seed')::bigint + 1000003 * step) & 1023)
                         < ((p ->> 'reply_share')::double precision * 1024)
                    THEN f.top_post END AS reply_to
        FROM swarm_sim_active a
        LEFT JOIN swarm_sim_memory am ON am.agent_id = a.id
        LEFT JOIN feeds f ON f.viewer = a.id)
    SELECT job, c.id, target.agent_id, step, c.reply_to, coalesce(c.seen, '{}'),
           jsonb_build_object(
               'feed', coalesce(c.feed, '(nothing new from your friends and communities)'),
               'memory', swarm._memory_text(swarm._unpack_or_null(c.memory)),
               'task', CASE WHEN c.reply_to IS NULL THEN 'Write a new post.'
                            ELSE format('Reply to %s''s post [1]: "%s"', target.author,
                                        left(coalesce(target.content, ''), 280)) END),
           job_owner
    FROM chosen c
    LEFT JOIN swarm_sim_recent target ON target.id = c.reply_to
    ORDER BY c.id;
    GET DIAGNOSTICS made = ROW_COUNT;

    -- fewer agents than when the job began: the step has fewer posts
    IF made < (p ->> 'active_per_step')::bigint THEN
        UPDATE swarm.jobs j SET total = j.total - ((p ->> 'active_per_step')::bigint - made)
        WHERE j.id = job;
    END IF;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._simulate_step(bigint, integer) IS
'Private: enqueues one step of a simulation without actions (active agents, their feeds, memories and whether they reply). Called by swarm.simulate() for step 1 and by the step builder (swarm._build_next_step()) for the steps after.';

CREATE OR REPLACE FUNCTION swarm.simulate(
    steps integer,
    context text DEFAULT NULL,
    activity real DEFAULT 0.1,
    feed_size integer DEFAULT 5,
    reply_share real DEFAULT 0.5,
    seed bigint DEFAULT NULL,
    channel text DEFAULT 'swarm',
    model text DEFAULT NULL,
    max_tokens integer DEFAULT 150,
    system_template text DEFAULT NULL,
    user_template text DEFAULT NULL,
    endpoints text[] DEFAULT NULL,
    request_deadline interval DEFAULT NULL,
    actions boolean DEFAULT false,
    feed_weights jsonb DEFAULT NULL,
    start_time timestamptz DEFAULT NULL,
    step_minutes integer DEFAULT 60,
    prompt_budget integer DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_job bigint;
    job_model text;
    population bigint;
    per_step bigint;
    params jsonb;
    total bigint;
    weights jsonb;
BEGIN
    IF context IS NOT NULL AND btrim(context) = '' THEN
        RAISE EXCEPTION 'context must be NULL or not blank'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    job_model := swarm._check_job_args(coalesce(context, 'none'), NULL, model, max_tokens, channel,
                                       system_template, user_template, endpoints, request_deadline);
    IF steps IS NULL OR steps < 1 OR steps > 10000 THEN
        RAISE EXCEPTION 'steps must be between 1 and 10000, not %', coalesce(steps::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF activity IS NULL OR NOT (activity > 0 AND activity <= 1) THEN
        RAISE EXCEPTION 'activity must be a share of the agents in (0, 1], not %', coalesce(activity::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'activity => 0.1 makes a tenth of the agents post at each step.';
    END IF;
    IF feed_size IS NULL OR feed_size < 0 OR feed_size > 100 THEN
        RAISE EXCEPTION 'feed_size must be between 0 and 100, not %', coalesce(feed_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the seed picks agents with hashint8extended(id, seed + step) and
    -- replies with seed + 1000003 * step: both must stay within bigint
    IF seed IS NOT NULL AND (seed < -4611686018427387904 OR seed > 4611686018427387903) THEN
        RAISE EXCEPTION 'seed must be between -4611686018427387904 and 4611686018427387903, not %', seed
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Any seed in that range gives its own repeatable run.';
    END IF;
    IF reply_share IS NULL OR NOT (reply_share >= 0 AND reply_share <= 1) THEN
        RAISE EXCEPTION 'reply_share must be between 0 and 1, not %', coalesce(reply_share::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF actions IS NULL THEN
        RAISE EXCEPTION 'actions must be true or false, not NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    weights := swarm._check_feed_weights(feed_weights);
    IF step_minutes IS NULL OR step_minutes < 1 OR step_minutes > 10080 THEN
        RAISE EXCEPTION 'step_minutes must be between 1 and 10080 (a week), not %', coalesce(step_minutes::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF prompt_budget IS NULL OR prompt_budget < 200 OR prompt_budget > 100000 THEN
        RAISE EXCEPTION 'prompt_budget must be between 200 and 100000 tokens, not %', coalesce(prompt_budget::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The feed is cut to fit it; the instructions and persona come first.';
    END IF;
    IF NOT actions AND (feed_weights IS NOT NULL OR start_time IS NOT NULL) THEN
        RAISE EXCEPTION 'feed_weights and start_time need actions => true'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The recommender and the clock belong to simulations with actions.';
    END IF;

    population := (SELECT count(*) FROM swarm.agents);
    per_step := CASE WHEN population = 0 THEN 0 ELSE greatest(1, round(population * activity)) END;
    params := jsonb_build_object('steps', steps, 'step', 1, 'activity', activity,
                                 'active_per_step', per_step, 'feed_size', feed_size,
                                 'reply_share', reply_share,
                                 'seed', coalesce(seed, (random() * 1e15)::bigint));
    IF actions THEN
        params := params || jsonb_build_object(
            'actions', true, 'population', population, 'feed_weights', weights,
            'start_time', start_time, 'step_minutes', step_minutes, 'prompt_budget', prompt_budget,
            'response_schema', swarm.action_schema());
        -- with a clock, each step has its own count (the time of day)
        total := (SELECT sum(swarm._active_count(params, s)) FROM generate_series(1, steps) AS s);
        system_template := coalesce(system_template, swarm._action_system_template());
        user_template := coalesce(user_template,
                                  CASE WHEN context IS NOT NULL THEN E'{context}\n\n' ELSE '' END
                                  || swarm._action_user_template());
    ELSE
        total := per_step * steps;
    END IF;

    new_job := swarm._create_job('simulate', coalesce(context, ''), job_model, max_tokens, channel,
                                 system_template, user_template, endpoints, request_deadline,
                                 params, total => total, with_context => context IS NOT NULL);

    IF total > 0 THEN
        -- (it takes agents deleted meanwhile off the total)
        PERFORM swarm._build_step(new_job, 1, actions);
    END IF;
    RETURN swarm._enqueued(new_job);
END
$$;

COMMENT ON FUNCTION swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[], interval, boolean, jsonb, timestamptz, integer, integer) IS
'Run the platform for steps steps and return the job id. At each step a share (activity) of the agents is active; each sees its feed and its memory. Without actions, it writes a post, or with probability reply_share a reply to the top post of its feed (friends'' and communities'' posts, by tie strength and recency). With actions => true, it chooses one action (post, reply, quote, repost, like, dislike, follow, unfollow, mute, join_community, leave_community, do_nothing) through the endpoint''s structured output; valid actions change the simulation''s graph (swarm.actions, likes, reposts, follows, mutes, memberships) and the next step''s feeds, mixed by feed_weights ({"follows": 0.6, "interest": 0.2, "hot": 0.2}) from followed agents and communities, shared interests and popular posts; start_time gives the steps a clock (step_minutes apart, hours read in UTC) and each agent an activity profile; prompts stay within prompt_budget tokens. Step s + 1 starts when step s has ended and sees it. The same seed picks the same agents, feeds and prompts (given the same replies). See docs/interactions.md.';

-------------------------------------------------------------------------------
-- What follows a stored batch (called by the worker)
-------------------------------------------------------------------------------

--
-- Custom plans: a cached generic plan, made while swarm.messages was small or
-- empty, would scan it per batch once it has grown (measured: from 13 ms to
-- seconds per batch); planning each call costs about 1 us per result.
CREATE OR REPLACE FUNCTION swarm._advance(answered_requests bigint[], failed_requests bigint[], batch_jobs bigint[])
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
DECLARE
    advanced bigint[] := '{}';
    conversations boolean;
    simulations boolean;
BEGIN
    SELECT coalesce(bool_or(j.kind = 'interact'), false), coalesce(bool_or(j.kind = 'simulate'), false)
    INTO conversations, simulations
    FROM swarm.jobs j WHERE j.id = ANY (batch_jobs);

    IF conversations THEN
    -- Conversations: the agent spoken to answers in the next turn.
    WITH next_turns AS (
        INSERT INTO swarm.requests (job_id, agent_id, to_agent_id, conversation_id, turn, reply_to, vars, owner)
        SELECT m.job_id, m.to_agent_id, m.agent_id, m.conversation_id, m.turn + 1, m.id,
               jsonb_build_object('partner_name', coalesce(sp.name, 'agent ' || m.agent_id),
                                  'partner', swarm.persona_summary(sp.persona),
                                  'history', h.history),
               m.owner
        FROM swarm.messages m
        JOIN swarm.jobs j ON j.id = m.job_id
        LEFT JOIN swarm.agents sp ON sp.id = m.agent_id
        CROSS JOIN LATERAL (
            SELECT string_agg(coalesce(ha.name, 'agent ' || t.agent_id) || ': ' || left(coalesce(t.content, ''), 600),
                              E'\n' ORDER BY t.turn) AS history
            FROM (SELECT x.agent_id, x.content, x.turn FROM swarm.messages x
                  WHERE x.conversation_id = m.conversation_id
                  ORDER BY x.turn DESC LIMIT 8) t
            LEFT JOIN swarm.agents ha ON ha.id = t.agent_id) h
        WHERE m.request_id = ANY (answered_requests)
          AND j.kind = 'interact' AND j.status <> 'cancelled'
          AND m.turn < (j.params ->> 'turns')::integer
        ORDER BY m.id
        RETURNING job_id)
    SELECT advanced || coalesce(array_agg(DISTINCT job_id), '{}') INTO advanced FROM next_turns;

    -- A failed turn ends its conversation: its later turns come off the total.
    UPDATE swarm.jobs j SET total = j.total - c.skipped
    FROM (SELECT r.job_id, sum((jj.params ->> 'turns')::integer - r.turn) AS skipped
          FROM swarm.requests r JOIN swarm.jobs jj ON jj.id = r.job_id
          WHERE r.id = ANY (failed_requests) AND r.status = 'failed' AND jj.kind = 'interact'
          GROUP BY r.job_id) c
    WHERE j.id = c.job_id AND c.skipped > 0;
    END IF;

    IF NOT simulations THEN
        RETURN advanced;
    END IF;

    -- Simulations with actions: validate and apply what the agents chose.
    PERFORM swarm._apply_actions(answered_requests);

    -- Simulations: the author remembers what it said (or did) and saw, in
    -- the memory of the job's owner (one row per agent and owner; the
    -- latest post wins when an agent posted twice in the batch).
    INSERT INTO swarm.agent_memory AS am (agent_id, owner, memory, updated_at)
    SELECT DISTINCT ON (m.agent_id, j.owner)
           m.agent_id, j.owner,
           swarm._remembered(old.mem, d.said, g.glimpse, m.turn),
           now()
    FROM swarm.messages m
    JOIN swarm.jobs j ON j.id = m.job_id
    LEFT JOIN swarm.agent_memory prev ON prev.agent_id = m.agent_id AND prev.owner = j.owner
    CROSS JOIN LATERAL (SELECT swarm._unpack_or_null(prev.memory) AS mem OFFSET 0) old
    -- what it said: its message, or with actions what its action was
    CROSS JOIN LATERAL (
        SELECT CASE WHEN NOT j.params @> '{"actions": true}' THEN m.content
                    ELSE (SELECT swarm._action_said(act.kind, act.valid, act.content, act.community_id,
                                                    act.target_agent_id, ta.name)
                          FROM swarm.actions act
                          LEFT JOIN swarm.agents ta ON ta.id = act.target_agent_id
                          WHERE act.agent_id = m.agent_id AND act.id = m.id) END AS said) d
    CROSS JOIN LATERAL (
        SELECT jsonb_agg(left(coalesce(sa.name, 'agent ' || sp.agent_id) || ': ' || coalesce(sp.content, ''), 120)
                         ORDER BY u.ord) AS glimpse
        FROM unnest(m.seen[1:2]) WITH ORDINALITY AS u(id, ord)
        CROSS JOIN LATERAL (
            SELECT x.agent_id, x.content FROM swarm.messages x
            WHERE x.id = u.id AND NOT j.params @> '{"actions": true}'
            UNION ALL
            SELECT y.agent_id, y.content FROM swarm.actions y
            WHERE y.job_id = m.job_id AND y.id = u.id AND j.params @> '{"actions": true}') sp
        LEFT JOIN swarm.agents sa ON sa.id = sp.agent_id) g
    WHERE m.request_id = ANY (answered_requests) AND j.kind = 'simulate'
    ORDER BY m.agent_id, j.owner, m.id DESC
    ON CONFLICT (agent_id, owner) DO UPDATE SET memory = EXCLUDED.memory, updated_at = EXCLUDED.updated_at;

    -- ...and the step builder looks, at commit, for steps that have ended.
    PERFORM swarm._wake_step_builder();
    RETURN advanced;
END
$$;

COMMENT ON FUNCTION swarm._advance(bigint[], bigint[], bigint[]) IS
'Private, called by the worker in the transaction that stores a batch: given the requests just answered and just failed, and the interact/simulate jobs they belong to, enqueues the conversations'' next turns, records the simulations'' actions and the speakers'' memory, wakes the step builder (which builds the simulations'' next steps), and returns the ids of the jobs that got new requests.';

-------------------------------------------------------------------------------
-- Views for readers and BI tools
-------------------------------------------------------------------------------

CREATE OR REPLACE VIEW swarm.posts WITH (security_invoker = true) AS
    SELECT m.id,
           m.job_id,
           m.turn AS step,
           m.agent_id,
           coalesce(a.target_agent_id, m.to_agent_id) AS to_agent_id,
           coalesce(a.post_id, m.reply_to) AS reply_to,
           CASE WHEN a.id IS NULL THEN m.content ELSE a.content END AS content,
           cardinality(m.seen) AS feed_size,
           m.created_at,
           coalesce(a.kind, CASE WHEN m.reply_to IS NULL THEN 'post' ELSE 'reply' END) AS kind
    FROM swarm.messages m
    JOIN swarm.jobs j ON j.id = m.job_id
    LEFT JOIN swarm.actions a ON a.agent_id = m.agent_id AND a.id = m.id
    WHERE j.kind = 'simulate'
      AND (NOT j.params @> '{"actions": true}'
           OR (a.valid AND a.kind IN ('post', 'reply', 'quote', 'repost')));

COMMENT ON VIEW swarm.posts IS
'The posts of swarm.simulate() jobs: step, author, kind (post, reply; with actions also quote and repost), the author and the post answered or passed on (to_agent_id, reply_to) and the text (a repost''s is the text it passes on). Other actions (likes, follows, ...) are in swarm.actions. Rows are visible as the underlying swarm.messages rows are.';
-- pg_swarm: the swarm on Citus (docs/scale-out.md).
--
-- swarm.distribute() turns an installed pg_swarm into a distributed one:
-- the per-agent tables distributed by the agent's id and co-located, the
-- small shared tables as reference tables.  From then on every node's worker
-- claims and stores the requests of its own shards (src/shards.c) and the
-- coordinator's worker sums their progress (swarm._conduct()).

-- Where the per-agent tables are keyed by the agent (Citus wants every
-- unique key to hold the distribution column), and what Citus refuses
-- removed: the triggers on swarm.agents (replaced by foreign keys ON DELETE
-- CASCADE and swarm.delete_agents()), and the foreign keys between tables
-- that become reference tables, which a local table would block (they are
-- added again once both ends are distributed).  Run on every node, with
-- Citus's DDL propagation off (each node's extension has its own copy of
-- the tables until they are distributed).  Written to run again.
CREATE OR REPLACE FUNCTION swarm._distributable_shape_sql() RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT $sql$
SET LOCAL citus.enable_ddl_propagation TO off;
DROP TRIGGER IF EXISTS social_forget_deleted_agents ON swarm.agents;
DROP TRIGGER IF EXISTS social_forget_truncated_agents ON swarm.agents;
ALTER TABLE swarm.jobs DROP CONSTRAINT IF EXISTS jobs_kind_fkey;
ALTER TABLE swarm.community_members DROP CONSTRAINT IF EXISTS community_members_community_id_fkey;
ALTER TABLE swarm._endpoint_keys DROP CONSTRAINT IF EXISTS _endpoint_keys_endpoint_fkey;
ALTER TABLE swarm.requests DROP CONSTRAINT IF EXISTS requests_pkey,
    ADD CONSTRAINT requests_pkey PRIMARY KEY (agent_id, id);
ALTER TABLE swarm.messages DROP CONSTRAINT IF EXISTS messages_pkey,
    DROP CONSTRAINT IF EXISTS messages_request_id_key,
    DROP CONSTRAINT IF EXISTS messages_agent_request_key,
    ADD CONSTRAINT messages_pkey PRIMARY KEY (agent_id, id),
    ADD CONSTRAINT messages_agent_request_key UNIQUE (agent_id, request_id);
CREATE UNIQUE INDEX IF NOT EXISTS requests_turn_key ON swarm.requests (agent_id, conversation_id, turn);
$sql$
$$;

COMMENT ON FUNCTION swarm._distributable_shape_sql() IS
'Private: the statements swarm.distribute() runs on every node before distributing (keys that hold the agent id, no trigger on swarm.agents, no foreign key between future reference tables).';

CREATE OR REPLACE FUNCTION swarm.distribute(shard_count integer DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    our_version text;
    node record;
    group_id integer;
    shards integer;
    workers integer;
    t text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'swarm.distribute() needs Citus'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'The extension citus is not installed in this database.',
                  HINT = 'On every node: shared_preload_libraries = ''citus,pg_swarm'' and CREATE EXTENSION citus; on the coordinator: citus_add_node() for each worker; then CREATE EXTENSION pg_swarm and swarm.distribute() (docs/scale-out.md).';
    END IF;
    IF shard_count IS NOT NULL AND (shard_count < 1 OR shard_count > 64000) THEN
        RAISE EXCEPTION 'shard_count must be between 1 and 64000, not %', shard_count
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A few shards per node is enough (4 x nodes); NULL takes citus.shard_count.';
    END IF;
    EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_local_group' INTO group_id;
    IF group_id IS DISTINCT FROM 0 THEN
        RAISE EXCEPTION 'swarm.distribute() runs on the coordinator'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('This node is in Citus group %s.', group_id);
    END IF;
    IF swarm._is_distributed() THEN
        RAISE NOTICE 'the swarm is distributed already';
        RETURN 'already distributed';
    END IF;
    IF EXISTS (SELECT FROM swarm.jobs WHERE status IN ('queued', 'running')) THEN
        RAISE EXCEPTION 'jobs are running: distribute the swarm when none is'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Wait for them (swarm.wait()) or cancel them (swarm.cancel()).';
    END IF;
    SELECT extversion INTO our_version FROM pg_catalog.pg_extension WHERE extname = 'pg_swarm';
    workers := 0;
    FOR node IN EXECUTE 'SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers($c$SELECT coalesce((SELECT extversion FROM pg_catalog.pg_extension WHERE extname = ''pg_swarm''), ''none'') || '' '' || (SELECT setting FROM pg_catalog.pg_settings WHERE name = ''shared_preload_libraries'')$c$)'
    LOOP
        workers := workers + 1;
        IF NOT node.success OR split_part(node.result, ' ', 1) IS DISTINCT FROM our_version THEN
            RAISE EXCEPTION 'node %:% does not have pg_swarm %', node.nodename, node.nodeport, our_version
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = CASE WHEN node.success THEN format('It has %s.', split_part(node.result, ' ', 1))
                                    ELSE format('It did not answer: %s', node.result) END,
                      HINT = 'Every node needs the same pg_swarm (make install, and ALTER EXTENSION pg_swarm UPDATE on the coordinator).';
        END IF;
        IF position('pg_swarm' IN node.result) = 0 THEN
            RAISE EXCEPTION 'node %:% does not load pg_swarm', node.nodename, node.nodeport
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'Its worker would never send its shards'' requests.',
                      HINT = 'Set shared_preload_libraries = ''citus,pg_swarm'' there and restart it.';
        END IF;
    END LOOP;

    -- foreign keys to reference tables want one connection per node
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    -- every node: keys and constraints Citus accepts
    EXECUTE swarm._distributable_shape_sql();
    FOR node IN EXECUTE format('SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers(%L)',
                               'BEGIN; ' || swarm._distributable_shape_sql() || ' COMMIT;')
    LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'could not prepare node %:%: %', node.nodename, node.nodeport, node.result
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;
    PERFORM set_config('citus.enable_ddl_propagation', 'on', true);

    -- the small shared tables: a copy on every node
    FOREACH t IN ARRAY ARRAY['swarm.job_kinds', 'swarm.jobs', 'swarm.endpoints', 'swarm._endpoint_keys',
                             'swarm.communities']
    LOOP
        EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING t;
    END LOOP;
    -- the per-agent tables: by the agent's id, co-located
    IF shard_count IS NULL THEN
        EXECUTE $c$SELECT pg_catalog.create_distributed_table('swarm.agents', 'id')$c$;
    ELSE
        EXECUTE $c$SELECT pg_catalog.create_distributed_table('swarm.agents', 'id', shard_count => $1)$c$
            USING shard_count;
    END IF;
    FOREACH t IN ARRAY ARRAY['swarm.friendships', 'swarm.community_members', 'swarm.agent_memory',
                             'swarm.requests', 'swarm.messages', 'swarm.actions', 'swarm.likes', 'swarm.reposts',
                             'swarm.follows', 'swarm.mutes', 'swarm.memberships', 'swarm.responses']
    LOOP
        EXECUTE $c$SELECT pg_catalog.create_distributed_table($1, 'agent_id', colocate_with => 'swarm.agents')$c$
            USING t;
    END LOOP;
    -- the foreign keys again, and those that replace the triggers
    ALTER TABLE swarm.jobs ADD CONSTRAINT jobs_kind_fkey FOREIGN KEY (kind) REFERENCES swarm.job_kinds (name);
    ALTER TABLE swarm._endpoint_keys ADD CONSTRAINT _endpoint_keys_endpoint_fkey
        FOREIGN KEY (endpoint) REFERENCES swarm.endpoints (name) ON DELETE CASCADE;
    ALTER TABLE swarm.community_members ADD CONSTRAINT community_members_community_id_fkey
        FOREIGN KEY (community_id) REFERENCES swarm.communities (id) ON DELETE CASCADE;
    ALTER TABLE swarm.friendships ADD CONSTRAINT friendships_agent_id_fkey
        FOREIGN KEY (agent_id) REFERENCES swarm.agents (id) ON DELETE CASCADE;
    ALTER TABLE swarm.community_members ADD CONSTRAINT community_members_agent_id_fkey
        FOREIGN KEY (agent_id) REFERENCES swarm.agents (id) ON DELETE CASCADE;
    ALTER TABLE swarm.agent_memory ADD CONSTRAINT agent_memory_agent_id_fkey
        FOREIGN KEY (agent_id) REFERENCES swarm.agents (id) ON DELETE CASCADE;

    -- ids made on a worker node come from its own range: group << 48
    FOR node IN EXECUTE $c$SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers(
        $w$SELECT pg_catalog.setval('swarm.messages_id_seq',
                  greatest(pg_catalog.nextval('swarm.messages_id_seq'),
                           ((SELECT groupid FROM pg_catalog.pg_dist_local_group)::bigint << 48) + 1))$w$)$c$
    LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'could not set the message ids of node %:%: %', node.nodename, node.nodeport, node.result
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;

    -- the rows copied into the shards leave the coordinator's own tables
    FOREACH t IN ARRAY ARRAY['swarm.job_kinds', 'swarm.jobs', 'swarm.endpoints', 'swarm._endpoint_keys',
                             'swarm.communities', 'swarm.agents', 'swarm.friendships', 'swarm.community_members',
                             'swarm.agent_memory', 'swarm.requests', 'swarm.messages', 'swarm.actions',
                             'swarm.likes', 'swarm.reposts', 'swarm.follows', 'swarm.mutes', 'swarm.memberships',
                             'swarm.responses']
    LOOP
        EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING t;
    END LOOP;

    SELECT count(*) INTO shards FROM pg_catalog.pg_dist_shard WHERE logicalrelid = 'swarm.requests'::regclass;
    -- (no worker is woken here: before this commits they would see half of
    -- it; the first job wakes the coordinator's, which wakes the others)
    RETURN format('distributed: %s shards of each per-agent table over %s worker nodes', shards, workers);
END
$$;

COMMENT ON FUNCTION swarm.distribute(integer) IS
'Citus: distribute the swarm (run once, on the coordinator, with no job running): agents, friendships, community_members, agent_memory, requests, messages and what simulations with actions record (actions, likes, reposts, follows, mutes, memberships) and the response store (responses) by the agent id, co-located (shard_count shards each; NULL: citus.shard_count); job_kinds, jobs, endpoints, _endpoint_keys and communities as reference tables. Every node''s worker then sends its own shards'' requests. See docs/scale-out.md.';

-- Deleting agents on a distributed swarm, where no trigger runs: their own
-- friendships, memberships and memories go by ON DELETE CASCADE; the rows
-- that name them as a friend are removed here.  Works on one server too.
CREATE OR REPLACE FUNCTION swarm.delete_agents(ids bigint[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    DELETE FROM swarm.friendships WHERE friend_id = ANY (ids);
    DELETE FROM swarm.agents WHERE id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

COMMENT ON FUNCTION swarm.delete_agents(bigint[]) IS
'Delete agents with their friendships (both directions), memberships and memories; returns how many agents were deleted. On a distributed swarm, use it rather than DELETE FROM swarm.agents, which leaves the rows naming them as a friend.';

-- The coordinator's part on a distributed swarm, run by its worker every
-- 200 ms: mark new jobs running and wake the other nodes' workers, sum every
-- node's swarm.job_node_progress into swarm.jobs, complete the jobs whose
-- every request has ended, and NOTIFY each changed job's channel on the
-- coordinator, where clients LISTEN.  A round where a node does not answer
-- changes nothing (its counts would be missing from the sums).  Returns how
-- many jobs changed.
CREATE OR REPLACE FUNCTION swarm._conduct()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    active bigint[];
    fresh bigint[];
    ts timestamptz := clock_timestamp();
    answered boolean;
    results text[];
    j swarm.jobs;
    old_done bigint;
    old_failed bigint;
    kind text;
    made bigint;
    woken boolean := false;
    s record;
    changed integer := 0;
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(id ORDER BY id) FILTER (WHERE status = 'queued')
    INTO active, fresh
    FROM swarm.jobs WHERE status IN ('queued', 'running');
    IF active IS NULL THEN
        RETURN 0;
    END IF;
    IF fresh IS NOT NULL THEN
        UPDATE swarm.jobs SET status = 'running', started_at = ts
        WHERE id = ANY (fresh) AND status = 'queued';
        PERFORM pg_catalog.run_command_on_workers('SELECT swarm._wake_worker()');
    END IF;

    SELECT array_agg(result), bool_and(success) INTO results, answered
    FROM pg_catalog.run_command_on_all_nodes(format(
        'SELECT coalesce(json_agg(json_build_array(job_id, succeeded, failed, prompt_tokens, completion_tokens)), ''[]'') '
        'FROM swarm.job_node_progress WHERE job_id = ANY (%L::bigint[])', active));
    IF NOT answered THEN
        RETURN 0;
    END IF;

    FOR s IN SELECT (e ->> 0)::bigint AS job_id, sum((e ->> 1)::bigint)::bigint AS ok,
                    sum((e ->> 2)::bigint)::bigint AS bad, sum((e ->> 3)::bigint)::bigint AS pt,
                    sum((e ->> 4)::bigint)::bigint AS ct
             FROM unnest(results) AS r, json_array_elements(r::json) AS e
             GROUP BY 1 ORDER BY 1
    LOOP
        -- the job's row locked, as swarm.cancel() locks it: a job cancelled
        -- meanwhile stays as cancel() left it, and gets no next turn
        SELECT jj.succeeded + jj.failed, jj.failed, jj.kind INTO old_done, old_failed, kind
        FROM swarm.jobs jj
        WHERE jj.id = s.job_id AND jj.status = 'running'
        FOR UPDATE;
        CONTINUE WHEN old_done IS NULL OR old_done = s.ok + s.bad;
        IF kind = 'interact' THEN
            IF swarm._advance_conversations_distributed(s.job_id, old_failed <> s.bad) > 0 THEN
                woken := true;
            END IF;
        END IF;
        UPDATE swarm.jobs jj SET succeeded = s.ok, failed = s.bad, prompt_tokens = s.pt,
                                 completion_tokens = s.ct
        WHERE jj.id = s.job_id
        RETURNING * INTO j;
        -- (a simulation completes once its last step is settled too: the
        -- step builder does it then, if this has not)
        IF j.succeeded + j.failed + j.cancelled >= j.total
           AND (j.kind <> 'simulate'
                OR coalesce((j.params ->> 'settled')::integer, 0) >= (j.params ->> 'steps')::integer) THEN
            UPDATE swarm.jobs jj SET status = 'completed', finished_at = ts
            WHERE jj.id = s.job_id AND jj.status = 'running'
            RETURNING * INTO j;
        END IF;
        PERFORM pg_catalog.pg_notify(j.channel, swarm._progress_payload(j, s.ok + s.bad - old_done));
        changed := changed + 1;
    END LOOP;
    -- A conversation job that has stalled (nothing queued, not ended, its
    -- cursors still for 5 s: a turn stored in a shard while it moved to
    -- another node was read by neither): read its turns again from the
    -- start; a turn already followed is not followed twice.
    FOR s IN SELECT jj.id FROM swarm.jobs jj
             WHERE jj.status = 'running' AND jj.kind = 'interact'
               AND jj.succeeded + jj.failed + jj.cancelled < jj.total
    LOOP
        CONTINUE WHEN EXISTS (SELECT FROM swarm.job_conductor_cursors c
                              WHERE c.job_id = s.id AND c.updated_at > ts - interval '5 seconds');
        -- (SELECT 1: Citus plans an empty select list into a broken intermediate result)
        CONTINUE WHEN EXISTS (SELECT 1 FROM swarm.requests r WHERE r.job_id = s.id AND r.status = 'queued');
        PERFORM FROM swarm.jobs jj WHERE jj.id = s.id AND jj.status = 'running' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        DELETE FROM swarm.job_conductor_cursors c WHERE c.job_id = s.id;
        made := swarm._advance_conversations_distributed(s.id, true);
        RAISE LOG 'pg_swarm: interact job % had stalled: its turns were read again, % next turns enqueued', s.id, made;
        woken := woken OR made > 0;
    END LOOP;

    -- next turns were enqueued: the nodes claim them now rather than at their next poll
    IF woken THEN
        PERFORM pg_catalog.run_command_on_workers('SELECT swarm._wake_worker()');
    END IF;
    RETURN changed;
END
$$;

COMMENT ON FUNCTION swarm._conduct() IS
'Private, distributed swarm: run by the coordinator''s worker every 200 ms; sums the nodes'' progress into swarm.jobs, completes and announces jobs.';

-- interact() on a distributed swarm: the same conversations as on one server
-- (each opener with its strongest tie, ties to the lower id; conversation
-- ids in opener order), in steps Citus can run: the pairs from friendships
-- (one query per shard), the partners' names and personas, then one insert
-- from those local rows into the distributed queue.  Returns how many
-- conversations were opened.
CREATE OR REPLACE FUNCTION swarm._open_conversations_distributed(job bigint, agents bigint[], who name)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    made bigint;
BEGIN
    CREATE TEMP TABLE _swarm_pairs ON COMMIT DROP AS
    SELECT DISTINCT ON (f.agent_id) f.agent_id AS opener, f.friend_id AS partner
    FROM swarm.friendships f
    WHERE agents IS NULL OR f.agent_id = ANY (agents)
    ORDER BY f.agent_id, f.strength DESC, f.friend_id;
    CREATE TEMP TABLE _swarm_partners ON COMMIT DROP AS
    SELECT a.id, a.name, swarm.persona_summary(a.persona) AS summary
    FROM swarm.agents a WHERE a.id IN (SELECT partner FROM _swarm_pairs);
    CREATE TEMP TABLE _swarm_openings ON COMMIT DROP AS
    SELECT o.*, nextval('swarm.conversation_ids') AS conversation_id
    FROM (SELECT p.opener, p.partner, q.name, q.summary
          FROM _swarm_pairs p JOIN _swarm_partners q ON q.id = p.partner
          ORDER BY p.opener) o;
    INSERT INTO swarm.requests (job_id, agent_id, to_agent_id, conversation_id, turn, vars, owner)
    SELECT job, o.opener, o.partner, o.conversation_id, 1,
           jsonb_build_object('partner_name', o.name, 'partner', o.summary,
                              'history', '(nothing yet: you open the conversation)'),
           who
    FROM _swarm_openings o;
    GET DIAGNOSTICS made = ROW_COUNT;
    DROP TABLE _swarm_openings, _swarm_partners, _swarm_pairs;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._open_conversations_distributed(bigint, bigint[], name) IS
'Private: the first turns of swarm.interact() on a distributed swarm (Citus).';

-- On each node of a distributed swarm: this node's messages of interact job
-- `job` past the coordinator's cursors (`after`: node group -> last message
-- id read of the ids made on that node), read in one statement over the
-- node's shards of swarm.messages, so in one snapshot.  A node stores its
-- batches one at a time, in id order, so what one snapshot shows of the ids
-- a node made is all of them up to some point; a query through Citus reads
-- each shard in a snapshot of its own and could show a later id without an
-- earlier one.  Returns a JSON array of [id, agent_id, to_agent_id,
-- conversation_id, turn, owner].
CREATE OR REPLACE FUNCTION swarm._node_turns(job bigint, after jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shards text;
    ranges text;
    result text;
BEGIN
    SELECT string_agg(format('SELECT id, agent_id, to_agent_id, conversation_id, turn, owner FROM swarm.%I WHERE job_id = $1',
                             'messages_' || s.shardid), ' UNION ALL ')
    INTO shards
    FROM pg_catalog.pg_dist_shard s
    JOIN pg_catalog.pg_dist_placement p ON p.shardid = s.shardid
    WHERE s.logicalrelid = 'swarm.messages'::regclass
      AND p.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group);
    IF shards IS NULL THEN
        RETURN '[]';
    END IF;
    SELECT string_agg(format('(t.id > %s AND t.id < %s)', a.value::bigint, ((a.key::bigint + 1) << 48)), ' OR ')
    INTO ranges FROM jsonb_each_text(after) a;
    EXECUTE format('SELECT coalesce(json_agg(json_build_array(t.id, t.agent_id, t.to_agent_id, t.conversation_id, t.turn, t.owner)), ''[]'')
                    FROM (%s) t WHERE %s', shards, coalesce(ranges, 'true'))
    INTO result USING job;
    RETURN result;
END
$$;

COMMENT ON FUNCTION swarm._node_turns(bigint, jsonb) IS
'Private, distributed swarm: this node''s messages of an interact job past the coordinator''s cursors, in one snapshot (swarm._advance_conversations_distributed()).';

-- A node that did not answer swarm._node_turns(): the round fails (its turns
-- would be skipped), to be tried again.
CREATE OR REPLACE FUNCTION swarm._node_failed(result text)
RETURNS json
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'a node did not answer: %', result
        USING ERRCODE = 'connection_failure';
END
$$;

COMMENT ON FUNCTION swarm._node_failed(text) IS
'Private, distributed swarm: raises the error of a node that did not answer (swarm._advance_conversations_distributed()).';

-- The next turns of an interact job on a distributed swarm, run by the
-- coordinator's worker (swarm._conduct()): the messages each node stored
-- since the last call (job_conductor_cursors, read through
-- swarm._node_turns()), and for each one before the conversation's last
-- turn, the next turn: the agent spoken to answers, told the partner's name
-- and persona and the conversation so far (its last 8 messages), as
-- swarm._advance() does on one server.  The cursors move in the same
-- transaction as the inserts.  A next turn already stored or queued is not
-- made again (requests_turn_key (agent_id, conversation_id, turn), added by
-- swarm.distribute()): reading a turn twice is harmless, which the sweep of
-- a stalled job relies on (swarm._conduct()).  A turn that failed ends its
-- conversation: the job's total loses its later turns.  Called with the
-- job's row locked (swarm.cancel() takes the same lock).  Returns how many
-- turns were enqueued.
CREATE OR REPLACE FUNCTION swarm._advance_conversations_distributed(job bigint, failures_changed boolean)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    turns integer;
    after jsonb;
    made bigint := 0;
    skipped bigint;
BEGIN
    SELECT (j.params ->> 'turns')::integer INTO turns FROM swarm.jobs j WHERE j.id = job;
    SELECT jsonb_object_agg(g.groupid, coalesce(c.last_message_id, g.groupid::bigint << 48))
    INTO after
    FROM (SELECT DISTINCT n.groupid FROM pg_catalog.pg_dist_node n) g
    LEFT JOIN swarm.job_conductor_cursors c ON c.job_id = job AND c.node_group = g.groupid;
    CREATE TEMP TABLE _swarm_turns ON COMMIT DROP AS
    SELECT (e ->> 0)::bigint AS id, job AS job_id, (e ->> 1)::bigint AS agent_id, (e ->> 2)::bigint AS to_agent_id,
           (e ->> 3)::bigint AS conversation_id, (e ->> 4)::integer AS turn, (e ->> 5)::name AS owner
    FROM pg_catalog.run_command_on_all_nodes(format('SELECT swarm._node_turns(%s, %L)', job, after)) r,
         json_array_elements(CASE WHEN r.success THEN r.result::json ELSE swarm._node_failed(r.result) END) e;
    INSERT INTO swarm.job_conductor_cursors AS c (job_id, node_group, last_message_id)
    SELECT job, (t.id >> 48)::integer, max(t.id) FROM _swarm_turns t GROUP BY 2
    ON CONFLICT (job_id, node_group) DO UPDATE
        SET last_message_id = greatest(c.last_message_id, excluded.last_message_id), updated_at = now();
    DELETE FROM _swarm_turns WHERE turn >= turns;

    IF EXISTS (SELECT FROM _swarm_turns) THEN
        CREATE TEMP TABLE _swarm_history ON COMMIT DROP AS
        SELECT x.conversation_id, x.agent_id, x.content, x.turn
        FROM swarm.messages x
        WHERE x.job_id = job AND x.conversation_id IN (SELECT conversation_id FROM _swarm_turns);
        CREATE TEMP TABLE _swarm_people ON COMMIT DROP AS
        SELECT a.id, a.name, swarm.persona_summary(a.persona) AS summary
        FROM swarm.agents a
        WHERE a.id IN (SELECT agent_id FROM _swarm_history UNION SELECT agent_id FROM _swarm_turns);
        INSERT INTO swarm.requests (job_id, agent_id, to_agent_id, conversation_id, turn, reply_to, vars, owner)
        SELECT t.job_id, t.to_agent_id, t.agent_id, t.conversation_id, t.turn + 1, t.id,
               jsonb_build_object('partner_name', coalesce(sp.name, 'agent ' || t.agent_id),
                                  'partner', sp.summary,
                                  'history', h.history),
               t.owner
        FROM _swarm_turns t
        LEFT JOIN _swarm_people sp ON sp.id = t.agent_id
        CROSS JOIN LATERAL (
            SELECT string_agg(coalesce(hp.name, 'agent ' || l.agent_id) || ': ' || left(coalesce(l.content, ''), 600),
                              E'\n' ORDER BY l.turn) AS history
            FROM (SELECT x.agent_id, x.content, x.turn FROM _swarm_history x
                  WHERE x.conversation_id = t.conversation_id AND x.turn <= t.turn
                  ORDER BY x.turn DESC LIMIT 8) l
            LEFT JOIN _swarm_people hp ON hp.id = l.agent_id) h
        -- (a turn read twice whose next turn is stored already)
        WHERE NOT EXISTS (SELECT FROM _swarm_history d
                          WHERE d.conversation_id = t.conversation_id AND d.turn = t.turn + 1)
        ORDER BY t.id
        ON CONFLICT (agent_id, conversation_id, turn) DO NOTHING;
        GET DIAGNOSTICS made = ROW_COUNT;
    END IF;

    -- failed turns end their conversations: the total loses the turns after
    IF failures_changed THEN
        SELECT coalesce(sum(turns - r.turn), 0) INTO skipped
        FROM swarm.requests r WHERE r.job_id = job AND r.status = 'failed';
        UPDATE swarm.jobs j SET total = (j.params ->> 'conversations')::bigint * turns - skipped
        WHERE j.id = job AND j.total <> (j.params ->> 'conversations')::bigint * turns - skipped;
    END IF;
    DROP TABLE IF EXISTS _swarm_turns, _swarm_history, _swarm_people;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._advance_conversations_distributed(bigint, boolean) IS
'Private, distributed swarm: run by the coordinator''s worker; enqueues the next turns of an interact job''s stored turns (each once).';

-- Simulations on a distributed swarm: the actions and memories of step
-- `step` of simulation `job`, recorded and applied by the coordinator's step
-- builder once the step has ended, before it builds the next step (in the
-- same transaction, which also moves the job's params.settled on: once per
-- step).  On one server the worker does this as it stores each batch
-- (swarm._advance()); on a cluster that statement would read other nodes'
-- shards (the posts a feed offered, the agents named), so it runs here, in
-- statements Citus can plan: the step's messages, the posts of its window,
-- the agents named and the acting agents' follows, mutes, likes and
-- memberships are read into temporary tables (per-agent tables by lists of
-- agent ids), checked as swarm._apply_actions() checks them
-- (swarm._action_reason()), and written back with plain INSERTs and one
-- DELETE.  What a step's feeds see is the same: step s + 1 is built after
-- step s is applied, on one server as here.  Returns the messages settled.
CREATE OR REPLACE FUNCTION swarm._settle_step_distributed(job bigint, step integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
-- (JIT compiled the check of 10,000 actions for 1.8 s, to run it in 60 ms)
SET jit = off
SET work_mem = '256MB'
AS $$
#variable_conflict use_variable
DECLARE
    with_actions boolean;
    job_owner name;
    settled bigint;
    agent_ids bigint[];
BEGIN
    SELECT coalesce((j.params ->> 'actions')::boolean, false), j.owner INTO with_actions, job_owner
    FROM swarm.jobs j WHERE j.id = job;

    CREATE TEMP TABLE swarm_settle_messages ON COMMIT DROP AS
    SELECT m.agent_id, m.id, m.turn AS step, m.seen, m.content
    FROM swarm.messages m WHERE m.job_id = job AND m.turn = step;
    GET DIAGNOSTICS settled = ROW_COUNT;
    SELECT coalesce(array_agg(m.agent_id), '{}') INTO agent_ids FROM swarm_settle_messages m;

    -- the posts the feeds offered: those of the three steps before (with
    -- actions), or the messages (without)
    IF with_actions THEN
        CREATE TEMP TABLE swarm_settle_posts ON COMMIT DROP AS
        SELECT x.id, x.agent_id, x.content
        FROM swarm.actions x
        WHERE x.job_id = job AND x.step >= step - 3 AND x.step < step AND x.valid
          AND x.kind IN ('post', 'reply', 'quote', 'repost');
    ELSE
        CREATE TEMP TABLE swarm_settle_posts ON COMMIT DROP AS
        SELECT x.id, x.agent_id, x.content
        FROM swarm.messages x
        WHERE x.job_id = job AND x.turn >= step - 3 AND x.turn < step
          AND x.id = ANY (ARRAY(SELECT DISTINCT u.id FROM swarm_settle_messages m, unnest(m.seen[1:2]) AS u(id)));
    END IF;
    CREATE INDEX ON swarm_settle_posts (id);
    ANALYZE swarm_settle_posts;

    IF with_actions THEN
        CREATE TEMP TABLE swarm_settle_parsed ON COMMIT DROP AS
        SELECT c.*,
               CASE WHEN jsonb_typeof(c.j -> 'action') = 'string' THEN left(c.j ->> 'action', 40) END AS kind,
               swarm._json_int(c.j -> 'post_id') AS post_no,
               swarm._json_int(c.j -> 'agent_id') AS target,
               swarm._json_int(c.j -> 'community_id') AS community,
               CASE WHEN jsonb_typeof(c.j -> 'text') = 'string' THEN btrim(c.j ->> 'text') END AS said
        FROM (SELECT m.agent_id, m.id, m.step, m.seen, swarm._jsonb_or_null(m.content) AS j
              FROM swarm_settle_messages m) c;

        -- what the checks and the changes read: the agents named, the
        -- communities, and the acting agents' own follows, mutes, likes and
        -- memberships in this simulation
        CREATE TEMP TABLE swarm_settle_named ON COMMIT DROP AS
        SELECT a.id, a.name FROM swarm.agents a
        WHERE a.id = ANY (ARRAY(SELECT DISTINCT p.target FROM swarm_settle_parsed p WHERE p.target IS NOT NULL
                                UNION SELECT x.agent_id FROM swarm_settle_posts x));
        CREATE INDEX ON swarm_settle_named (id);
        CREATE TEMP TABLE swarm_settle_communities ON COMMIT DROP AS SELECT c.id FROM swarm.communities c;
        CREATE TEMP TABLE swarm_settle_ties ON COMMIT DROP AS
        SELECT f.agent_id, f.target_id, 'follow' AS what, NULL::integer AS value FROM swarm.follows f
        WHERE f.agent_id = ANY (agent_ids) AND f.job_id = job
        UNION ALL
        SELECT f.agent_id, f.target_id, 'mute', NULL FROM swarm.mutes f
        WHERE f.agent_id = ANY (agent_ids) AND f.job_id = job
        UNION ALL
        SELECT l.agent_id, l.post_id, 'like', l.value FROM swarm.likes l
        WHERE l.agent_id = ANY (agent_ids) AND l.job_id = job;
        CREATE TEMP TABLE swarm_settle_member ON COMMIT DROP AS
        SELECT ms.agent_id, ms.community_id, ms.member FROM swarm.memberships ms
        WHERE ms.agent_id = ANY (agent_ids) AND ms.job_id = job;
        CREATE TEMP TABLE swarm_settle_seeded ON COMMIT DROP AS
        SELECT cm.agent_id, cm.community_id FROM swarm.community_members cm
        WHERE cm.agent_id = ANY (ARRAY(SELECT p.agent_id FROM swarm_settle_parsed p
                                       WHERE p.kind IN ('join_community', 'leave_community')));
        -- (each looked up per action below)
        CREATE INDEX ON swarm_settle_ties (agent_id, target_id);
        CREATE INDEX ON swarm_settle_member (agent_id, community_id);
        CREATE INDEX ON swarm_settle_seeded (agent_id, community_id);
        ANALYZE swarm_settle_parsed, swarm_settle_named, swarm_settle_ties, swarm_settle_member,
                swarm_settle_seeded;

        CREATE TEMP TABLE swarm_settle_checked ON COMMIT DROP AS
        SELECT k.*,
               CASE WHEN k.reason IS NOT NULL THEN NULL
                    WHEN k.kind IN ('post', 'reply', 'quote', 'repost') THEN true
                    WHEN k.kind IN ('like', 'dislike') THEN NOT EXISTS (
                        SELECT 1 FROM swarm_settle_ties t
                        WHERE t.agent_id = k.agent_id AND t.target_id = k.post_id AND t.what = 'like'
                          AND t.value = CASE k.kind WHEN 'like' THEN 1 ELSE -1 END)
                    WHEN k.kind IN ('follow', 'mute') THEN NOT EXISTS (
                        SELECT 1 FROM swarm_settle_ties t
                        WHERE t.agent_id = k.agent_id AND t.target_id = k.target AND t.what = k.kind)
                    WHEN k.kind = 'unfollow' THEN EXISTS (
                        SELECT 1 FROM swarm_settle_ties t
                        WHERE t.agent_id = k.agent_id AND t.target_id = k.target AND t.what = 'follow')
                    -- a change of what the agent is in this simulation now:
                    -- its own join or leave, else the seeded membership
                    WHEN k.kind IN ('join_community', 'leave_community') THEN
                        (k.kind = 'join_community') IS DISTINCT FROM coalesce(
                            (SELECT ms.member FROM swarm_settle_member ms
                             WHERE ms.agent_id = k.agent_id AND ms.community_id = k.community),
                            EXISTS (SELECT 1 FROM swarm_settle_seeded cm
                                    WHERE cm.agent_id = k.agent_id AND cm.community_id = k.community))
                    ELSE false END AS changed
        FROM (SELECT p.agent_id, p.id, p.step, p.kind, p.target, p.community, p.said,
                     post.id AS post_id, post.agent_id AS post_author, post.content AS post_content,
                     swarm._action_reason(p.j, p.kind, p.said, p.post_no, p.target, p.community, p.agent_id,
                                          post.id IS NOT NULL,
                                          EXISTS (SELECT 1 FROM swarm_settle_named a WHERE a.id = p.target),
                                          EXISTS (SELECT 1 FROM swarm_settle_communities c WHERE c.id = p.community)) AS reason
              FROM swarm_settle_parsed p
              -- the post it names: number n of its feed (seen[n])
              LEFT JOIN swarm_settle_posts post
                     ON p.kind IN ('reply', 'quote', 'repost', 'like', 'dislike')
                    AND p.post_no BETWEEN 1 AND coalesce(cardinality(p.seen), 0)
                    AND post.id = p.seen[p.post_no]) k;

        INSERT INTO swarm.likes AS l (agent_id, job_id, post_id, value, step, action_id, owner)
        SELECT c.agent_id, job, c.post_id, CASE c.kind WHEN 'like' THEN 1 ELSE -1 END, c.step, c.id, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind IN ('like', 'dislike')
        ON CONFLICT (agent_id, job_id, post_id) DO UPDATE
            SET value = EXCLUDED.value, step = EXCLUDED.step, action_id = EXCLUDED.action_id;
        INSERT INTO swarm.reposts (agent_id, id, job_id, post_id, quote, step, owner)
        SELECT c.agent_id, c.id, job, c.post_id, c.kind = 'quote', c.step, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind IN ('repost', 'quote')
        ON CONFLICT DO NOTHING;
        INSERT INTO swarm.follows (agent_id, job_id, target_id, step, action_id, owner)
        SELECT c.agent_id, job, c.target, c.step, c.id, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind = 'follow'
        ON CONFLICT DO NOTHING;
        DELETE FROM swarm.follows f
        WHERE f.job_id = job AND f.agent_id = ANY (ARRAY(SELECT c.agent_id FROM swarm_settle_checked c
                                                          WHERE c.changed AND c.kind = 'unfollow'))
          AND (f.agent_id, f.target_id) IN (SELECT c.agent_id, c.target FROM swarm_settle_checked c
                                            WHERE c.changed AND c.kind = 'unfollow');
        INSERT INTO swarm.mutes (agent_id, job_id, target_id, step, action_id, owner)
        SELECT c.agent_id, job, c.target, c.step, c.id, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind = 'mute'
        ON CONFLICT DO NOTHING;
        INSERT INTO swarm.memberships AS ms (agent_id, job_id, community_id, member, step, action_id, owner)
        SELECT c.agent_id, job, c.community, c.kind = 'join_community', c.step, c.id, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind IN ('join_community', 'leave_community')
        ON CONFLICT (agent_id, job_id, community_id) DO UPDATE
            SET member = EXCLUDED.member, step = EXCLUDED.step, action_id = EXCLUDED.action_id;
        INSERT INTO swarm.actions (agent_id, id, job_id, step, kind, post_id, target_agent_id, community_id,
                                   content, valid, reason, changed, owner)
        SELECT c.agent_id, c.id, job, c.step, c.kind, c.post_id,
               CASE WHEN c.kind IN ('follow', 'unfollow', 'mute') THEN c.target ELSE c.post_author END,
               c.community,
               CASE WHEN c.reason IS NOT NULL THEN NULL
                    WHEN c.kind IN ('post', 'reply', 'quote') THEN c.said
                    WHEN c.kind = 'repost' THEN c.post_content END,
               c.reason IS NULL, c.reason, c.changed, job_owner
        FROM swarm_settle_checked c
        ON CONFLICT DO NOTHING;
    END IF;

    -- the authors' memories (of the job owner's simulations)
    CREATE TEMP TABLE swarm_settle_memory ON COMMIT DROP AS
    SELECT am.agent_id, swarm._unpack_or_null(am.memory) AS mem FROM swarm.agent_memory am
    WHERE am.agent_id = ANY (agent_ids) AND am.owner = job_owner;
    IF NOT with_actions THEN
        CREATE TEMP TABLE swarm_settle_named ON COMMIT DROP AS
        SELECT a.id, a.name FROM swarm.agents a
        WHERE a.id = ANY (ARRAY(SELECT DISTINCT x.agent_id FROM swarm_settle_posts x));
        -- (no action: what an author said is its message)
        CREATE TEMP TABLE swarm_settle_checked ON COMMIT DROP AS
        SELECT m.id, NULL::text AS kind, NULL::bigint AS target, NULL::bigint AS community, NULL::text AS said,
               NULL::bigint AS post_author, NULL::text AS reason
        FROM swarm_settle_messages m WHERE false;
    END IF;
    INSERT INTO swarm.agent_memory AS am (agent_id, owner, memory, updated_at)
    SELECT m.agent_id, job_owner,
           swarm._remembered(old.mem,
                             CASE WHEN with_actions
                                  THEN swarm._action_said(c.kind, c.reason IS NULL, c.said, c.community,
                                                          CASE WHEN c.kind IN ('follow', 'unfollow', 'mute') THEN c.target
                                                               ELSE c.post_author END, ta.name)
                                  ELSE m.content END,
                             g.glimpse, m.step),
           now()
    FROM swarm_settle_messages m
    LEFT JOIN swarm_settle_memory old ON old.agent_id = m.agent_id
    LEFT JOIN swarm_settle_checked c ON c.id = m.id
    LEFT JOIN swarm_settle_named ta
           ON ta.id = CASE WHEN c.kind IN ('follow', 'unfollow', 'mute') THEN c.target ELSE c.post_author END
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(left(coalesce(sa.name, 'agent ' || sp.agent_id) || ': ' || coalesce(sp.content, ''), 120)
                         ORDER BY u.ord) AS glimpse
        FROM unnest(m.seen[1:2]) WITH ORDINALITY AS u(id, ord)
        JOIN swarm_settle_posts sp ON sp.id = u.id
        LEFT JOIN swarm_settle_named sa ON sa.id = sp.agent_id) g ON true
    ON CONFLICT (agent_id, owner) DO UPDATE SET memory = EXCLUDED.memory, updated_at = EXCLUDED.updated_at;

    DROP TABLE IF EXISTS swarm_settle_messages, swarm_settle_posts, swarm_settle_parsed, swarm_settle_named,
                         swarm_settle_communities, swarm_settle_ties, swarm_settle_member, swarm_settle_seeded,
                         swarm_settle_checked, swarm_settle_memory;
    RETURN settled;
END
$$;

COMMENT ON FUNCTION swarm._settle_step_distributed(bigint, integer) IS
'Private, distributed swarm: run by the coordinator''s step builder when a simulation step has ended; records and applies its actions and the authors'' memories, as the worker does per batch on one server.';
-- pg_swarm: simulations with actions (swarm.simulate(actions => true)).
--
--   - the schema of one action, sent as the request's structured output;
--   - the time of day and who is active then (activity profiles);
--   - validating and applying a step's actions, in the worker's store
--     transaction (swarm._apply_actions(), called by swarm._advance());
--   - the recommender and the prompts of a step
--     (swarm._simulate_actions_step());
--   - the step builder's entry point (swarm._build_next_step(), run by its
--     own background worker, src/step_builder.c, never by the worker);
--   - views a BI tool charts per step.
-- The tables are in tables/70_actions.sql; docs/interactions.md tells the
-- whole story.

-------------------------------------------------------------------------------
-- The action
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._jsonb_or_null(reply text) RETURNS jsonb
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_jsonb_or_null';

COMMENT ON FUNCTION swarm._jsonb_or_null(text) IS
'Private: the text as jsonb, or NULL when it is not JSON (never an error: a model''s reply must not abort the worker''s store).';

CREATE OR REPLACE FUNCTION swarm.action_kinds() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY['post', 'reply', 'quote', 'repost', 'like', 'dislike', 'follow', 'unfollow', 'mute',
                 'join_community', 'leave_community', 'do_nothing']
$$;

COMMENT ON FUNCTION swarm.action_kinds() IS
'The actions an agent may choose in a simulation with actions.';

CREATE OR REPLACE FUNCTION swarm.action_schema() RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'type', 'object',
        'properties', jsonb_build_object(
            'action', jsonb_build_object('type', 'string', 'enum', to_jsonb(swarm.action_kinds())),
            'post_id', jsonb_build_object('type', jsonb_build_array('integer', 'null'),
                                          'description', 'the number of a post of your feed'),
            'agent_id', jsonb_build_object('type', jsonb_build_array('integer', 'null'),
                                           'description', 'the id of an agent'),
            'community_id', jsonb_build_object('type', jsonb_build_array('integer', 'null'),
                                               'description', 'the id of a community'),
            'text', jsonb_build_object('type', jsonb_build_array('string', 'null'),
                                       'description', 'what you write')),
        'required', jsonb_build_array('action', 'post_id', 'agent_id', 'community_id', 'text'),
        'additionalProperties', false)
$$;

COMMENT ON FUNCTION swarm.action_schema() IS
'The JSON schema of one action (strict: every key present, null where unused), sent as response_format json_schema or as the parameters of a tool, as the endpoint is configured (swarm.endpoints.structured_output).';

-- A JSON number that is a whole bigint, or NULL.  (This and the two hour
-- functions below are called once per row of large statements: without a
-- SET clause, and with every name in pg_catalog, the planner inlines them;
-- their callers pin the search_path.)
CREATE OR REPLACE FUNCTION swarm._json_int(v jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.jsonb_typeof(v) = 'number' AND (v #>> '{}') ~ '^-?[0-9]{1,18}$'
                THEN (v #>> '{}')::bigint END
$$;

-- The default templates of a simulation with actions: the instructions
-- first, then the persona (static for every step: endpoints' prefix caches
-- keep them), then what changes (the user message).
CREATE OR REPLACE FUNCTION swarm._action_system_template() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'You are a member of a social network. At each turn you choose exactly one action, '
        || 'as a JSON object with the keys action, post_id, agent_id, community_id and text (null when unused):' || E'\n'
        || '- post: write a new post (text)' || E'\n'
        || '- reply or quote: answer or quote post number post_id of your feed (text)' || E'\n'
        || '- like, dislike or repost: post number post_id of your feed' || E'\n'
        || '- follow, unfollow or mute: the agent agent_id (their number after "agent")' || E'\n'
        || '- join_community or leave_community: community community_id' || E'\n'
        || '- do_nothing' || E'\n'
        || 'Write as yourself, in one to three sentences, without hashtags.' || E'\n\n'
        || 'You are {name}. Your persona: {persona}'
$$;

CREATE OR REPLACE FUNCTION swarm._action_user_template() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '{clock}{memory}' || E'\n' || 'Your feed:' || E'\n' || '{feed}' || E'\n\n'
        || 'Your communities:' || E'\n' || '{communities}' || E'\n\n'
        || '{follows}Choose your action.'
$$;

COMMENT ON FUNCTION swarm._action_system_template() IS 'Private: the default system template of a simulation with actions.';
COMMENT ON FUNCTION swarm._action_user_template() IS 'Private: the default user template of a simulation with actions (after {context}, when given).';

-- feed_weights as the job keeps them: every source named, non-negative,
-- not all zero.
CREATE OR REPLACE FUNCTION swarm._check_feed_weights(weights jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w jsonb := coalesce(weights, '{"follows": 0.6, "interest": 0.2, "hot": 0.2}');
    k text;
BEGIN
    IF jsonb_typeof(w) <> 'object' THEN
        RAISE EXCEPTION 'feed_weights must be a JSON object, not %', w
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"follows": 0.6, "interest": 0.2, "hot": 0.2}.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(w) LOOP
        IF k NOT IN ('follows', 'interest', 'hot') THEN
            RAISE EXCEPTION 'feed_weights has no source "%"', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The sources are follows (friends, followed agents, communities), interest and hot.';
        END IF;
        IF jsonb_typeof(w -> k) <> 'number' OR (w ->> k)::numeric < 0 THEN
            RAISE EXCEPTION 'feed_weights.% must be a number >= 0, not %', k, w -> k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    w := jsonb_build_object('follows', coalesce((w ->> 'follows')::numeric, 0),
                            'interest', coalesce((w ->> 'interest')::numeric, 0),
                            'hot', coalesce((w ->> 'hot')::numeric, 0));
    IF (w ->> 'follows')::numeric + (w ->> 'interest')::numeric + (w ->> 'hot')::numeric = 0 THEN
        RAISE EXCEPTION 'feed_weights must give some source a weight above 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN w;
END
$$;

-------------------------------------------------------------------------------
-- Time of day and activity
-------------------------------------------------------------------------------

-- Each agent is most active at its own hour of the day, drawn from the seed
-- (between 09:00 and 22:00), and its activity falls off with the distance
-- from it: 1 at the peak, 0.1 twelve hours away.
CREATE OR REPLACE FUNCTION swarm._peak_hour(agent bigint, seed bigint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 9 + (((pg_catalog.hashint8extended(agent, seed # 2654435761) % 14) + 14) % 14)::integer
$$;

CREATE OR REPLACE FUNCTION swarm._hour_weight(hour integer, peak integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 0.1 + 0.45 * (1 + pg_catalog.cos(pg_catalog.pi() * least(pg_catalog.abs(hour - peak), 24 - pg_catalog.abs(hour - peak)) / 12.0))
$$;

CREATE OR REPLACE FUNCTION swarm.activity_profile(agent bigint, seed bigint) RETURNS real[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_agg(swarm._hour_weight(h, swarm._peak_hour(agent, seed))::real ORDER BY h)
    FROM generate_series(0, 23) AS h
$$;

COMMENT ON FUNCTION swarm.activity_profile(bigint, bigint) IS
'An agent''s relative activity at each hour of the day (element 1 is 00:00-01:00) in the simulations of a seed: 1 at its peak hour (drawn from the seed, between 09:00 and 22:00), falling to 0.1 twelve hours away. With a clock (simulate(start_time => ...)), who is active at a step follows these weights.';

-- How many more (or fewer) agents are active at an hour than on average
-- over the day: the population's mean weight at that hour over the mean at
-- every hour (peaks are uniform over 09:00-22:00, so it needs no agent).
CREATE OR REPLACE FUNCTION swarm._rhythm(hour integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT avg(swarm._hour_weight(hour, p)) FROM generate_series(9, 22) AS p)
         / (SELECT avg(swarm._hour_weight(h, p)) FROM generate_series(0, 23) AS h, generate_series(9, 22) AS p)
$$;

-- The simulated time of a step (NULL without a clock).
CREATE OR REPLACE FUNCTION swarm._step_time(params jsonb, step integer) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (params ->> 'start_time')::timestamptz
           + make_interval(mins => (params ->> 'step_minutes')::integer * (step - 1))
$$;

-- How many agents are active at a step: activity x population, times the
-- rhythm of the step's hour when the simulation has a clock.
CREATE OR REPLACE FUNCTION swarm._active_count(params jsonb, step integer) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN (params ->> 'population')::bigint = 0 THEN 0
        WHEN params ->> 'start_time' IS NULL THEN (params ->> 'active_per_step')::bigint
        ELSE least((params ->> 'population')::bigint,
                   greatest(1, round((params ->> 'population')::bigint * (params ->> 'activity')::double precision
                                     * swarm._rhythm(extract(hour FROM swarm._step_time(params, step)
                                                             AT TIME ZONE 'UTC')::integer)))::bigint)
        END
$$;

-------------------------------------------------------------------------------
-- Validating and applying actions (in the worker's store transaction)
-------------------------------------------------------------------------------

-- Why a reply is not a valid action (NULL: it is): `j` the reply as JSON,
-- the fields read from it, `post_found` whether post_no is a position of
-- the agent's feed, `target_exists` whether the agent named exists,
-- `community_exists` whether the community named does.  The checks run in
-- this order; the last three are asked only of the actions they concern
-- (the function is inlined: each is evaluated only when reached).
CREATE OR REPLACE FUNCTION swarm._action_reason(
    j jsonb, kind text, said text, post_no bigint, target bigint, community bigint, agent bigint,
    post_found boolean, target_exists boolean, community_exists boolean)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN jsonb_typeof(j) IS DISTINCT FROM 'object' THEN 'the reply is not a JSON object'
        WHEN kind IS NULL THEN 'the reply names no action'
        WHEN NOT kind = ANY (swarm.action_kinds()) THEN format('unknown action "%s"', kind)
        WHEN kind IN ('post', 'reply', 'quote') AND coalesce(said, '') = ''
            THEN format('%s needs a text', kind)
        WHEN kind IN ('post', 'reply', 'quote') AND length(said) > 2000
            THEN 'text longer than 2000 characters'
        WHEN kind IN ('reply', 'quote', 'repost', 'like', 'dislike') AND post_no IS NULL
            THEN format('%s needs a post_id', kind)
        WHEN kind IN ('reply', 'quote', 'repost', 'like', 'dislike') AND NOT post_found
            THEN format('post %s was not in the agent''s feed', post_no)
        WHEN kind IN ('follow', 'unfollow', 'mute') AND target IS NULL
            THEN format('%s needs an agent_id', kind)
        WHEN kind IN ('follow', 'unfollow', 'mute') AND target = agent
            THEN format('an agent cannot %s itself', kind)
        WHEN kind IN ('follow', 'unfollow', 'mute') AND NOT target_exists
            THEN format('agent %s does not exist', target)
        WHEN kind IN ('join_community', 'leave_community') AND community IS NULL
            THEN format('%s needs a community_id', kind)
        WHEN kind IN ('join_community', 'leave_community') AND NOT community_exists
            THEN format('community %s does not exist', community)
    END
$$;

-- What an agent remembers having done: a post's text, or "(you follow
-- Ann)", "(you like a post by Bob)", "(you join community 3)", ...
CREATE OR REPLACE FUNCTION swarm._action_said(
    kind text, valid boolean, content text, community_id bigint, target_agent_id bigint, target_name text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN NOT valid THEN '(you did nothing that step)'
                WHEN kind IN ('post', 'reply', 'quote') THEN content
                WHEN kind = 'do_nothing' THEN '(you just read)'
                ELSE format('(you %s %s)',
                            replace(replace(kind, '_community', ''), '_', ' '),
                            CASE WHEN community_id IS NOT NULL THEN 'community ' || community_id
                                 WHEN kind IN ('follow', 'unfollow', 'mute')
                                     THEN coalesce(target_name, 'agent ' || target_agent_id)
                                 ELSE 'a post by ' || coalesce(target_name, 'agent ' || target_agent_id) END) END
$$;

-- Validate the actions chosen by the messages of `answered_requests` that
-- belong to simulations with actions, and apply the valid ones, in one
-- statement: a like, dislike, reply, quote or repost must name a post of
-- the agent's feed (by its number there: request.seen[n]), a follow,
-- unfollow or mute an agent that exists and is not itself, a join or leave
-- a community that exists; a post, reply or quote needs a text.  Invalid
-- replies are recorded with their reason and change nothing.  Each action
-- is applied once: a message already in swarm.actions is passed over.
-- Returns how many actions were recorded.
CREATE OR REPLACE FUNCTION swarm._apply_actions(answered_requests bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
DECLARE
    recorded bigint;
BEGIN
    WITH chosen AS MATERIALIZED (
        SELECT m.agent_id, m.id, m.job_id, m.turn AS step, m.seen, m.owner,
               swarm._jsonb_or_null(m.content) AS j
        FROM swarm.messages m
        JOIN swarm.jobs jb ON jb.id = m.job_id
        WHERE m.request_id = ANY (answered_requests)
          AND jb.kind = 'simulate' AND jb.params @> '{"actions": true}'
          AND NOT EXISTS (SELECT 1 FROM swarm.actions x WHERE x.agent_id = m.agent_id AND x.id = m.id)),
    parsed AS MATERIALIZED (
        SELECT c.*,
               CASE WHEN jsonb_typeof(c.j -> 'action') = 'string' THEN left(c.j ->> 'action', 40) END AS kind,
               swarm._json_int(c.j -> 'post_id') AS post_no,
               swarm._json_int(c.j -> 'agent_id') AS target,
               swarm._json_int(c.j -> 'community_id') AS community,
               CASE WHEN jsonb_typeof(c.j -> 'text') = 'string' THEN btrim(c.j ->> 'text') END AS said
        FROM chosen c),
    checked AS MATERIALIZED (
        SELECT p.agent_id, p.id, p.job_id, p.step, p.owner, p.kind, p.target, p.community, p.said, post.id AS post_id,
               post.agent_id AS post_author, post.content AS post_content,
               swarm._action_reason(p.j, p.kind, p.said, p.post_no, p.target, p.community, p.agent_id,
                                    post.id IS NOT NULL,
                                    EXISTS (SELECT 1 FROM swarm.agents a WHERE a.id = p.target),
                                    EXISTS (SELECT 1 FROM swarm.communities c WHERE c.id = p.community)) AS reason
        FROM parsed p
        -- the post it names: number n of its feed (seen[n]), as recorded
        LEFT JOIN swarm.actions post
               ON p.kind IN ('reply', 'quote', 'repost', 'like', 'dislike')
              AND p.post_no BETWEEN 1 AND coalesce(cardinality(p.seen), 0)
              AND post.job_id = p.job_id AND post.id = p.seen[p.post_no]),
    ok AS (SELECT * FROM checked WHERE reason IS NULL),
    liked AS (
        INSERT INTO swarm.likes AS l (agent_id, job_id, post_id, value, step, action_id, owner)
        SELECT o.agent_id, o.job_id, o.post_id, CASE o.kind WHEN 'like' THEN 1 ELSE -1 END, o.step, o.id, o.owner
        FROM ok o WHERE o.kind IN ('like', 'dislike')
        ON CONFLICT (agent_id, job_id, post_id) DO UPDATE
            SET value = EXCLUDED.value, step = EXCLUDED.step, action_id = EXCLUDED.action_id
            WHERE l.value <> EXCLUDED.value
        RETURNING action_id),
    reposted AS (
        INSERT INTO swarm.reposts (agent_id, id, job_id, post_id, quote, step, owner)
        SELECT o.agent_id, o.id, o.job_id, o.post_id, o.kind = 'quote', o.step, o.owner
        FROM ok o WHERE o.kind IN ('repost', 'quote')
        ON CONFLICT DO NOTHING
        RETURNING id),
    followed AS (
        INSERT INTO swarm.follows (agent_id, job_id, target_id, step, action_id, owner)
        SELECT o.agent_id, o.job_id, o.target, o.step, o.id, o.owner
        FROM ok o WHERE o.kind = 'follow'
        ON CONFLICT DO NOTHING
        RETURNING action_id),
    unfollowed AS (
        DELETE FROM swarm.follows f
        USING ok o
        WHERE o.kind = 'unfollow' AND f.agent_id = o.agent_id AND f.job_id = o.job_id AND f.target_id = o.target
        RETURNING o.id),
    muted AS (
        INSERT INTO swarm.mutes (agent_id, job_id, target_id, step, action_id, owner)
        SELECT o.agent_id, o.job_id, o.target, o.step, o.id, o.owner
        FROM ok o WHERE o.kind = 'mute'
        ON CONFLICT DO NOTHING
        RETURNING action_id),
    moved AS (
        INSERT INTO swarm.memberships AS ms (agent_id, job_id, community_id, member, step, action_id, owner)
        SELECT o.agent_id, o.job_id, o.community, o.kind = 'join_community', o.step, o.id, o.owner
        FROM ok o
        WHERE o.kind IN ('join_community', 'leave_community')
          -- only a change of what the agent is in this simulation now: its
          -- own join or leave, else the seeded membership
          AND (o.kind = 'join_community') IS DISTINCT FROM coalesce(
                  (SELECT m.member FROM swarm.memberships m
                   WHERE m.agent_id = o.agent_id AND m.job_id = o.job_id AND m.community_id = o.community),
                  EXISTS (SELECT 1 FROM swarm.community_members cm
                          WHERE cm.agent_id = o.agent_id AND cm.community_id = o.community))
        ON CONFLICT (agent_id, job_id, community_id) DO UPDATE
            SET member = EXCLUDED.member, step = EXCLUDED.step, action_id = EXCLUDED.action_id
        RETURNING action_id),
    changes AS (
        SELECT action_id AS id FROM liked
        UNION ALL SELECT id FROM reposted
        UNION ALL SELECT action_id FROM followed
        UNION ALL SELECT id FROM unfollowed
        UNION ALL SELECT action_id FROM muted
        UNION ALL SELECT action_id FROM moved),
    inserted AS (
        INSERT INTO swarm.actions (agent_id, id, job_id, step, kind, post_id, target_agent_id, community_id,
                                   content, valid, reason, changed, owner)
        SELECT c.agent_id, c.id, c.job_id, c.step, c.kind, c.post_id,
               CASE WHEN c.kind IN ('follow', 'unfollow', 'mute') THEN c.target ELSE c.post_author END,
               c.community,
               CASE WHEN c.reason IS NOT NULL THEN NULL
                    WHEN c.kind IN ('post', 'reply', 'quote') THEN c.said
                    -- a repost carries the text it passes on
                    WHEN c.kind = 'repost' THEN c.post_content END,
               c.reason IS NULL, c.reason,
               CASE WHEN c.reason IS NOT NULL THEN NULL
                    WHEN c.kind IN ('post', 'reply', 'quote', 'repost') THEN true
                    ELSE c.id IN (SELECT id FROM changes) END,
               c.owner
        FROM checked c
        ON CONFLICT DO NOTHING
        RETURNING 1)
    SELECT count(*) INTO recorded FROM inserted;
    RETURN recorded;
END
$$;

COMMENT ON FUNCTION swarm._apply_actions(bigint[]) IS
'Private, called by the worker (through swarm._advance()) in the transaction that stores a batch: validates the actions of the simulations with actions among the answered requests, records each in swarm.actions (with the reason when invalid) and applies the valid ones to likes, reposts, follows, mutes and memberships.';

-------------------------------------------------------------------------------
-- A step: who is active, what they see, what they are asked
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._assemble_feeds(
    job bigint, feed_size integer, w_follows double precision, w_interest double precision,
    w_hot double precision, feed_chars integer)
RETURNS TABLE (viewer bigint, seen bigint[], feed text)
    LANGUAGE C VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'swarm_assemble_feeds';

COMMENT ON FUNCTION swarm._assemble_feeds(bigint, integer, double precision, double precision, double precision, integer) IS
'Private: each active agent''s feed of a simulation step with actions, from the temporary tables swarm._simulate_actions_step() made (src/feeds.c).';

-- Enqueue step `step` of simulation with actions `job`.
--
-- Active agents: the step's count (swarm._active_count()), drawn with the
-- seed; with a clock, weighted by each agent's activity at the step's hour
-- (sampling without replacement: the largest ln(u) / weight).
--
-- The feed of each active agent mixes three sources, each ranked on its
-- own, interleaved in proportion to the job's feed_weights (rank / weight,
-- smallest first; a short source leaves its places to the others):
--   follows:  posts of its friends (tie strength), of whom it follows in
--             this simulation (1) and of its communities (0.5), over age;
--   interest: the hottest posts of authors who share its interest of the
--             step (one of its interests, drawn with the seed each step);
--   hot:      the hottest posts of all;
-- never its own posts nor those of authors it muted.  "Hot" is engagement
-- (likes - dislikes + replies + 2 x reposts and quotes, within the window)
-- over (age + 1)^1.5.  Everything is read from the job's last three steps
-- through indexes (swarm.actions by job and step, friendships, follows,
-- mutes and memberships by agent): no table is rebuilt.
--
-- Every tie is broken by the post's step and author (newest step, then
-- highest agent id first), never by its id (ids
-- follow the order results happened to be stored in), so the same seed and
-- replies give the same feeds, crash or no crash.
--
-- Prompts stay within prompt_budget tokens (4 characters each): the static
-- parts first (instructions in the system template, then the persona), a
-- bounded memory, then as many feed lines as fit.  Post numbers in a prompt
-- are its feed's positions (request.seen holds the ids), so prompts are the
-- same from run to run for the same seed and replies.
CREATE OR REPLACE FUNCTION swarm._simulate_actions_step(job bigint, step integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET jit = off
SET work_mem = '256MB'
AS $$
#variable_conflict use_variable
DECLARE
    p jsonb;
    job_owner name;
    made bigint;
    wanted bigint;
    seed bigint;
    feed_size integer;
    w_follows double precision;
    w_interest double precision;
    w_hot double precision;
    feed_chars integer;
    hour integer;
    clock text;
    communities bigint[];
    active_ids bigint[];
    author_ids bigint[];
BEGIN
    SELECT j.params, j.owner INTO p, job_owner FROM swarm.jobs j WHERE j.id = job;
    seed := (p ->> 'seed')::bigint;
    feed_size := (p ->> 'feed_size')::integer;
    w_follows := (p -> 'feed_weights' ->> 'follows')::double precision;
    w_interest := (p -> 'feed_weights' ->> 'interest')::double precision;
    w_hot := (p -> 'feed_weights' ->> 'hot')::double precision;
    -- what the feed may take of the prompt: the budget less the static
    -- parts and the memory (their share is estimated at 40%)
    feed_chars := greatest(400, ((p ->> 'prompt_budget')::integer * 4 * 6) / 10);
    wanted := swarm._active_count(p, step);
    IF p ->> 'start_time' IS NOT NULL THEN
        hour := extract(hour FROM swarm._step_time(p, step) AT TIME ZONE 'UTC')::integer;
        clock := to_char(swarm._step_time(p, step) AT TIME ZONE 'UTC', 'FMDay HH24:MI') || '. ';
    END IF;

    -- (a step built earlier in this transaction left them: steps without
    -- agents are passed over in one)
    IF to_regclass('pg_temp.swarm_step_active') IS NOT NULL THEN
        DROP TABLE pg_temp.swarm_step_active, pg_temp.swarm_step_engagement, pg_temp.swarm_step_posts,
                   pg_temp.swarm_step_recent, pg_temp.swarm_step_ties, pg_temp.swarm_step_members,
                   pg_temp.swarm_step_social, pg_temp.swarm_step_viewers,
                   pg_temp.swarm_step_feeds, pg_temp.swarm_step_offers,
                   pg_temp.swarm_step_authors, pg_temp.swarm_step_author_communities,
                   pg_temp.swarm_step_mutes, pg_temp.swarm_step_follows,
                   pg_temp.swarm_step_names, pg_temp.swarm_step_memory,
                   pg_temp.swarm_step_communities;
    END IF;

    -- (the draw sorts ids and keys only; names and personas are read for
    -- the winners)
    CREATE TEMP TABLE swarm_step_active ON COMMIT DROP AS
    SELECT a.id, a.name, a.persona
    FROM (SELECT x.id
          FROM swarm.agents x
          ORDER BY CASE WHEN hour IS NULL THEN hashint8extended(x.id, seed + step)::double precision
                        ELSE ln(((hashint8extended(x.id, seed + step) & 9007199254740991)::double precision + 0.5)
                                / 9007199254740992.0)
                             / swarm._hour_weight(hour, swarm._peak_hour(x.id, seed)) END DESC,
                   x.id
          LIMIT wanted) drawn
    JOIN swarm.agents a ON a.id = drawn.id;
    ANALYZE swarm_step_active;
    -- Per-agent tables are read by lists of agent ids (= ANY: index probes
    -- on one server, each shard's share on a distributed swarm, where a
    -- join with a temporary table or a LATERAL subquery would not run)
    SELECT coalesce(array_agg(a.id ORDER BY a.id), '{}') INTO active_ids FROM swarm_step_active a;

    -- the engagement of the posts of the last three steps, then the posts
    -- with it and their author (each a table of its own, analyzed: the
    -- statistics of swarm.actions lag behind a running simulation, and a
    -- plan that believes a step has one action loops over them)
    CREATE TEMP TABLE swarm_step_engagement ON COMMIT DROP AS
    SELECT x.post_id AS id,
           sum(CASE x.kind WHEN 'like' THEN 1 WHEN 'dislike' THEN -1 WHEN 'reply' THEN 1 ELSE 2 END) AS engagement
    FROM swarm.actions x
    WHERE x.job_id = job AND x.step >= step - 3 AND x.step < step AND x.valid
      AND x.kind IN ('like', 'dislike', 'reply', 'quote', 'repost')
    GROUP BY x.post_id;
    ANALYZE swarm_step_engagement;

    CREATE TEMP TABLE swarm_step_posts ON COMMIT DROP AS
    SELECT r.id, r.agent_id, r.step, r.kind, left(coalesce(r.content, ''), 200) AS text,
           -- ranks break ties by this, never by id: ids follow the order
           -- results were stored in, which timing decides
           row_number() OVER (ORDER BY r.step DESC, r.agent_id DESC) AS ord
    FROM swarm.actions r
    WHERE r.job_id = job AND r.step >= step - 3 AND r.step < step AND r.valid
      AND r.kind IN ('post', 'reply', 'quote', 'repost');
    ANALYZE swarm_step_posts;

    -- the authors, by index: hashing every agent would read them all
    SELECT coalesce(array_agg(DISTINCT r.agent_id), '{}') INTO author_ids FROM swarm_step_posts r;
    CREATE TEMP TABLE swarm_step_authors ON COMMIT DROP AS
    SELECT x.id, x.name, x.persona -> 'interests' AS interests
    FROM swarm.agents x WHERE x.id = ANY (author_ids);
    CREATE INDEX ON swarm_step_authors (id);
    ANALYZE swarm_step_authors;

    CREATE TEMP TABLE swarm_step_recent ON COMMIT DROP AS
    SELECT r.id, r.agent_id AS author, r.step, r.kind, r.text, r.ord,
           au.name AS author_name, au.interests,
           -- (in double precision: numeric powers cost 15 us a row)
           (1 + coalesce(e.engagement, 0))::double precision
               / power((step - r.step + 1)::double precision, 1.5) AS hot
    FROM swarm_step_posts r
    LEFT JOIN swarm_step_authors au ON au.id = r.agent_id
    LEFT JOIN swarm_step_engagement e ON e.id = r.id;
    CREATE INDEX ON swarm_step_recent (author);
    CREATE INDEX ON swarm_step_recent (ord);
    ANALYZE swarm_step_recent;

    CREATE TEMP TABLE swarm_step_communities ON COMMIT DROP AS SELECT c.id, c.name FROM swarm.communities c;
    SELECT coalesce(array_agg(c.id ORDER BY c.id), '{}') INTO communities FROM swarm_step_communities c;

    -- The social candidates of each viewer: posts of its friends (tie
    -- strength), of whom it follows in this simulation (1) and of its
    -- communities (0.5; a community shows its feed_size hottest posts),
    -- over age.  The rest of the recommender is swarm._assemble_feeds().
    -- whom each viewer reads: its friends (tie strength), by index per
    -- active agent (OFFSET 0 keeps it so: hashing the whole graph would cost
    -- more than the lookups), and whom it follows in this simulation (1)
    CREATE TEMP TABLE swarm_step_ties ON COMMIT DROP AS
    SELECT f.agent_id AS viewer, f.friend_id AS author, f.strength::double precision AS weight
    FROM swarm.friendships f WHERE f.agent_id = ANY (active_ids);
    CREATE TEMP TABLE swarm_step_follows ON COMMIT DROP AS
    SELECT f.agent_id AS viewer, f.target_id, f.step
    FROM swarm.follows f WHERE f.agent_id = ANY (active_ids) AND f.job_id = job;
    INSERT INTO swarm_step_ties SELECT f.viewer, f.target_id, 1.0 FROM swarm_step_follows f;
    ANALYZE swarm_step_ties;

    -- each active agent's communities in this simulation: the seeded ones
    -- it did not leave, and those it joined (its feed's community posts,
    -- and the communities its prompt offers)
    CREATE TEMP TABLE swarm_step_members ON COMMIT DROP AS
    SELECT cm.agent_id AS viewer, cm.community_id
    FROM swarm.community_members cm
    WHERE cm.agent_id = ANY (active_ids)
      AND NOT EXISTS (SELECT 1 FROM swarm.memberships ms
                      WHERE ms.agent_id = cm.agent_id AND ms.job_id = job
                        AND ms.community_id = cm.community_id AND NOT ms.member)
    UNION
    SELECT ms.agent_id, ms.community_id
    FROM swarm.memberships ms
    WHERE ms.agent_id = ANY (active_ids) AND ms.job_id = job AND ms.member;
    ANALYZE swarm_step_members;

    -- the communities of the window's authors (a community shows its
    -- members its hottest posts)
    CREATE TEMP TABLE swarm_step_author_communities ON COMMIT DROP AS
    SELECT cm.agent_id AS author, cm.community_id
    FROM swarm.community_members cm WHERE cm.agent_id = ANY (author_ids);
    ANALYZE swarm_step_author_communities;

    CREATE TEMP TABLE swarm_step_social ON COMMIT DROP AS
    WITH
    community_posts AS (
        SELECT c.community_id, c.ord, c.step
        FROM (SELECT cm.community_id, r.ord, r.step,
                     row_number() OVER (PARTITION BY cm.community_id ORDER BY r.hot DESC, r.ord) AS rank
              FROM swarm_step_recent r
              JOIN swarm_step_author_communities cm ON cm.author = r.author) c
        WHERE c.rank <= feed_size)
    SELECT t.viewer, r.ord, t.weight / (step - r.step) AS score
    FROM swarm_step_ties t
    JOIN swarm_step_recent r ON r.author = t.author
    UNION ALL
    SELECT m.viewer, c.ord, 0.5 / (step - c.step)
    FROM swarm_step_members m
    JOIN community_posts c ON c.community_id = m.community_id;

    -- each viewer's interest of the step: one of its interests, drawn with
    -- the seed, so that the interest source costs one short list a viewer
    CREATE TEMP TABLE swarm_step_viewers ON COMMIT DROP AS
    SELECT a.id,
           CASE WHEN jsonb_typeof(a.persona -> 'interests') = 'array' AND jsonb_array_length(a.persona -> 'interests') > 0
                THEN a.persona -> 'interests' ->> ((((pg_catalog.hashint8extended(a.id, seed + 31 * step)
                                                      % jsonb_array_length(a.persona -> 'interests'))
                                                     + jsonb_array_length(a.persona -> 'interests'))
                                                    % jsonb_array_length(a.persona -> 'interests'))::integer) END AS interest
    FROM swarm_step_active a;

    CREATE TEMP TABLE swarm_step_mutes ON COMMIT DROP AS
    SELECT mu.agent_id AS viewer, mu.target_id AS author
    FROM swarm.mutes mu WHERE mu.agent_id = ANY (active_ids) AND mu.job_id = job;

    CREATE TEMP TABLE swarm_step_feeds ON COMMIT DROP AS
    SELECT * FROM swarm._assemble_feeds(job, feed_size, w_follows, w_interest, w_hot, feed_chars);
    ANALYZE swarm_step_feeds;

    -- what else each prompt offers: whom the agent follows (the last five,
    -- to unfollow) and its communities (three) and one more (to join)
    DELETE FROM swarm_step_follows f
    WHERE f.ctid IN (SELECT n.ctid FROM (SELECT x.ctid, row_number() OVER (PARTITION BY x.viewer
                                                                           ORDER BY x.step DESC, x.target_id) AS n
                                         FROM swarm_step_follows x) n
                     WHERE n.n > 5);
    CREATE TEMP TABLE swarm_step_names ON COMMIT DROP AS
    SELECT x.id, x.name FROM swarm.agents x
    WHERE x.id = ANY (ARRAY(SELECT DISTINCT f.target_id FROM swarm_step_follows f));
    CREATE TEMP TABLE swarm_step_offers ON COMMIT DROP AS
    WITH follows AS (
        SELECT fo.viewer,
               'You follow: ' || string_agg(format('%s (agent %s)', fa.name, fo.target_id), ', '
                                            ORDER BY fo.step DESC, fo.target_id) || E'.\n' AS text
        FROM swarm_step_follows fo
        JOIN swarm_step_names fa ON fa.id = fo.target_id
        GROUP BY fo.viewer),
    mine AS (
        SELECT m.viewer, m.community_id
        FROM (SELECT sm.viewer, sm.community_id,
                     row_number() OVER (PARTITION BY sm.viewer ORDER BY sm.community_id) AS n
              FROM swarm_step_members sm) m
        WHERE m.n <= 3),
    other AS (
        -- one more, drawn with the seed, when the agent is not in it
        SELECT a.id AS viewer,
               communities[1 + ((pg_catalog.hashint8extended(a.id, seed + 7 * step) % cardinality(communities)
                                 + cardinality(communities)) % cardinality(communities))::integer] AS community_id
        FROM swarm_step_active a
        WHERE cardinality(communities) > 0),
    offered AS (
        SELECT viewer, community_id, 'you are a member' AS what FROM mine
        UNION
        SELECT o.viewer, o.community_id, 'not a member'
        FROM other o
        WHERE NOT EXISTS (SELECT 1 FROM mine m WHERE m.viewer = o.viewer AND m.community_id = o.community_id)),
    community_text AS (
        SELECT o.viewer,
               string_agg(format('[community %s] %s (%s)', c.id, c.name, o.what), E'\n'
                          ORDER BY o.what DESC, c.id) AS text
        FROM offered o JOIN swarm_step_communities c ON c.id = o.community_id
        GROUP BY o.viewer)
    SELECT a.id AS viewer, fw.text AS follows, ct.text AS communities
    FROM swarm_step_active a
    LEFT JOIN follows fw ON fw.viewer = a.id
    LEFT JOIN community_text ct ON ct.viewer = a.id;
    ANALYZE swarm_step_offers;

    -- the memory of the job owner's simulations, never another user's
    CREATE TEMP TABLE swarm_step_memory ON COMMIT DROP AS
    SELECT am.agent_id, am.memory FROM swarm.agent_memory am
    WHERE am.agent_id = ANY (active_ids) AND am.owner = job_owner;

    INSERT INTO swarm.requests (job_id, agent_id, turn, seen, vars, owner)
    SELECT job, a.id, step, coalesce(f.seen, '{}'),
           jsonb_build_object(
               'clock', coalesce('It is ' || clock, ''),
               'feed', coalesce(f.feed, '(nothing new in your feed)'),
               'memory', swarm._memory_text(swarm._unpack_or_null(am.memory)),
               'follows', coalesce(o.follows, ''),
               'communities', coalesce(o.communities, '(none)')),
           job_owner
    FROM swarm_step_active a
    LEFT JOIN swarm_step_feeds f ON f.viewer = a.id
    LEFT JOIN swarm_step_offers o ON o.viewer = a.id
    LEFT JOIN swarm_step_memory am ON am.agent_id = a.id
    ORDER BY a.id;
    GET DIAGNOSTICS made = ROW_COUNT;

    -- fewer agents than planned (deleted meanwhile): the step has fewer requests
    IF made < wanted THEN
        UPDATE swarm.jobs j SET total = j.total - (wanted - made) WHERE j.id = job;
    END IF;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._simulate_actions_step(bigint, integer) IS
'Private: enqueues one step of a simulation with actions: its active agents (by the seed and the clock), each one''s feed from the recommender (follows, interest, hot, mixed by feed_weights, muted authors left out), communities, follows, memory and clock, within the prompt budget.';

-------------------------------------------------------------------------------
-- The step builder (src/step_builder.c calls this, in its own transactions)
-------------------------------------------------------------------------------

-- Build step `step` of simulation `job` (with or without actions) and
-- note it in swarm.simulation_steps.  Returns the requests it made.
CREATE OR REPLACE FUNCTION swarm._build_step(job bigint, step integer, actions boolean) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    began timestamptz := clock_timestamp();
    made bigint;
BEGIN
    IF actions THEN
        made := swarm._simulate_actions_step(job, _build_step.step);
    ELSE
        made := swarm._simulate_step(job, _build_step.step);
    END IF;
    INSERT INTO swarm.simulation_steps AS ss (job_id, step, requests, build_ms, built_at, owner)
    SELECT j.id, _build_step.step, made, extract(epoch FROM clock_timestamp() - began) * 1000, clock_timestamp(), j.owner
    FROM swarm.jobs j WHERE j.id = job
    ON CONFLICT ON CONSTRAINT simulation_steps_pkey DO UPDATE
        SET requests = EXCLUDED.requests, build_ms = EXCLUDED.build_ms, built_at = EXCLUDED.built_at;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._build_step(bigint, integer, boolean) IS
'Private: builds one step of a simulation and notes it (swarm.simulation_steps).';

-- Build the next step of one simulation whose current step has ended
-- (none of its requests is queued any more), locking its row; returns its
-- id, or NULL when no simulation has a step to build.  A step that cannot
-- be built ends its own job, saying why.
--
-- On a distributed swarm only the coordinator's builder works (the other
-- nodes' find nothing to do), and it first settles the step that ended
-- (swarm._settle_step_distributed(): its actions and memories, which on one
-- server the worker applies as it stores them), then builds the next, in
-- one transaction; params.settled says which steps are settled, so each is
-- settled once, the last one too, before the job completes.
CREATE OR REPLACE FUNCTION swarm._build_next_step() RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    distributed boolean := swarm._is_distributed();
    sim record;
    made bigint := 0;
    failure text;
    j swarm.jobs;
    chosen boolean := false;
    by_user boolean := false;  -- (the job was cancelled: its last step is settled, no next built)
BEGIN
    IF distributed THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_local_group g WHERE g.groupid = 0) THEN
            RETURN NULL;
        END IF;
        -- (each candidate's queue asked on its own: Citus plans no
        -- correlated subquery over a distributed table, nor FOR UPDATE
        -- with one)
        FOR sim IN
            SELECT jj.id, (jj.params ->> 'step')::integer AS step, (jj.params ->> 'steps')::integer AS steps,
                   coalesce((jj.params ->> 'settled')::integer, 0) AS settled,
                   coalesce((jj.params ->> 'actions')::boolean, false) AS actions
            FROM swarm.jobs jj
            WHERE jj.kind = 'simulate'
              AND coalesce((jj.params ->> 'settled')::integer, 0) < (jj.params ->> 'steps')::integer
              -- (a simulation cancelled by its user: what its last step
              -- stored is settled all the same, as on one server)
              AND (jj.status IN ('queued', 'running')
                   OR (jj.status = 'cancelled' AND jj.error IS NULL
                       AND coalesce((jj.params ->> 'settled')::integer, 0) < (jj.params ->> 'step')::integer))
            ORDER BY jj.id
        LOOP
            CONTINUE WHEN EXISTS (SELECT 1 FROM swarm.requests r WHERE r.job_id = sim.id AND r.status = 'queued');
            SELECT jj.status = 'cancelled' INTO by_user
            FROM swarm.jobs jj WHERE jj.id = sim.id AND jj.status IN ('queued', 'running', 'cancelled') FOR UPDATE;
            CONTINUE WHEN NOT FOUND;
            chosen := true;
            EXIT;
        END LOOP;
        IF NOT chosen THEN
            RETURN NULL;
        END IF;
    ELSE
        BEGIN
            SELECT jj.id, (jj.params ->> 'step')::integer AS step, (jj.params ->> 'steps')::integer AS steps,
                   NULL::integer AS settled, coalesce((jj.params ->> 'actions')::boolean, false) AS actions
            INTO sim
            FROM swarm.jobs jj
            WHERE jj.kind = 'simulate' AND jj.status IN ('queued', 'running')
              AND (jj.params ->> 'step')::integer < (jj.params ->> 'steps')::integer
              AND NOT EXISTS (SELECT 1 FROM swarm.requests r WHERE r.job_id = jj.id AND r.status = 'queued')
            ORDER BY jj.id
            LIMIT 1
            FOR UPDATE OF jj SKIP LOCKED;
        EXCEPTION WHEN feature_not_supported THEN
            -- swarm.distribute() committed after this transaction's snapshot:
            -- Citus already plans the queue as distributed
            RETURN NULL;
        END;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        -- (the lock re-read the row: a step built meanwhile moved it on, and
        -- the requests it made are visible now)
        IF EXISTS (SELECT 1 FROM swarm.requests r WHERE r.job_id = sim.id AND r.status = 'queued') THEN
            RETURN sim.id;
        END IF;
    END IF;

    BEGIN
        IF distributed AND sim.settled < sim.step THEN
            PERFORM swarm._settle_step_distributed(sim.id, sim.step);
            UPDATE swarm.jobs SET params = jsonb_set(params, '{settled}', to_jsonb(sim.step)) WHERE id = sim.id;
        END IF;
        -- (a step without agents, all deleted meanwhile, is passed over)
        WHILE sim.step < sim.steps AND NOT by_user LOOP
            sim.step := sim.step + 1;
            UPDATE swarm.jobs SET params = jsonb_set(params, '{step}', to_jsonb(sim.step)) WHERE id = sim.id;
            made := swarm._build_step(sim.id, sim.step, sim.actions);
            EXIT WHEN made > 0;
            -- (nothing to settle in a step without requests)
            IF distributed THEN
                UPDATE swarm.jobs SET params = jsonb_set(params, '{settled}', to_jsonb(sim.step)) WHERE id = sim.id;
            END IF;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT;
        -- a node that did not answer (restarting, unreachable): nothing of
        -- the step was settled or built; the builder tries again
        IF distributed AND (SQLSTATE LIKE '08%' OR SQLSTATE LIKE '57P%') THEN
            RAISE LOG 'pg_swarm: step % of simulation % waits for a node: %', sim.step, sim.id, failure;
            RETURN NULL;
        END IF;
        UPDATE swarm.jobs
        SET status = 'cancelled', finished_at = now(), total = succeeded + failed + cancelled,
            error = format('step %s could not be built: %s', sim.step, failure)
        WHERE id = sim.id;
        RETURN sim.id;
    END;
    -- the last step ended (and is settled), or the last steps had no agent
    -- at all: the job is done
    UPDATE swarm.jobs jj SET status = 'completed', finished_at = now()
    WHERE jj.id = sim.id AND jj.status = 'running' AND jj.succeeded + jj.failed + jj.cancelled >= jj.total
      AND coalesce((jj.params ->> 'settled')::integer, (jj.params ->> 'step')::integer) >= (jj.params ->> 'steps')::integer
    RETURNING * INTO j;
    IF j.id IS NOT NULL AND distributed THEN
        -- (on a cluster the conductor announces progress; this is the end)
        PERFORM pg_catalog.pg_notify(j.channel, swarm._progress_payload(j));
    END IF;
    IF distributed THEN
        PERFORM pg_catalog.run_command_on_workers('SELECT swarm._wake_worker()');
    ELSE
        PERFORM swarm._wake_worker();
    END IF;
    RETURN sim.id;
END
$$;

COMMENT ON FUNCTION swarm._build_next_step() IS
'Private, run by the step builder (its own background worker): builds the next step of one simulation whose current step has ended and returns the job''s id; NULL when there is none.';

-------------------------------------------------------------------------------
-- Views for charts (per job and step)
-------------------------------------------------------------------------------

CREATE OR REPLACE VIEW swarm.action_counts WITH (security_invoker = true) AS
    SELECT a.job_id, a.step, a.kind, a.valid, count(*) AS actions,
           count(*) FILTER (WHERE a.changed) AS changed
    FROM swarm.actions a
    GROUP BY a.job_id, a.step, a.kind, a.valid;

COMMENT ON VIEW swarm.action_counts IS
'How many actions of each kind each step of a simulation recorded, valid or not, and how many changed something.';

CREATE OR REPLACE VIEW swarm.invalid_actions WITH (security_invoker = true) AS
    SELECT a.job_id, a.step, a.agent_id, a.id AS message_id, a.kind, a.reason
    FROM swarm.actions a
    WHERE NOT a.valid;

COMMENT ON VIEW swarm.invalid_actions IS
'The replies that were not valid actions, with the reason; the message (swarm.messages) holds what the model said.';

-- In-degree of the follow graph after each step: follows and unfollows
-- that changed the graph, summed over the steps up to it.
CREATE OR REPLACE VIEW swarm.follow_degrees WITH (security_invoker = true) AS
    WITH changes AS (
        SELECT a.job_id, a.step, a.target_agent_id AS agent_id,
               sum(CASE a.kind WHEN 'follow' THEN 1 ELSE -1 END) AS delta
        FROM swarm.actions a
        WHERE a.changed AND a.kind IN ('follow', 'unfollow')
        GROUP BY a.job_id, a.step, a.target_agent_id),
    steps AS (
        SELECT DISTINCT a.job_id, a.step FROM swarm.actions a),
    degrees AS (
        SELECT s.job_id, s.step, c.agent_id, sum(c.delta) AS in_degree
        FROM steps s JOIN changes c ON c.job_id = s.job_id AND c.step <= s.step
        GROUP BY s.job_id, s.step, c.agent_id)
    SELECT d.job_id, d.step, d.in_degree, count(*) AS agents
    FROM degrees d
    WHERE d.in_degree > 0
    GROUP BY d.job_id, d.step, d.in_degree;

COMMENT ON VIEW swarm.follow_degrees IS
'The follow graph''s in-degree distribution after each step of a simulation (agents followed by in_degree others; agents nobody follows are left out): its drift over the steps.';

-- Follow edges alive after each step and how many are returned.
CREATE OR REPLACE VIEW swarm.follow_reciprocity WITH (security_invoker = true) AS
    WITH events AS (
        SELECT a.job_id, a.step, a.agent_id, a.target_agent_id, a.kind = 'follow' AS follows
        FROM swarm.actions a
        WHERE a.changed AND a.kind IN ('follow', 'unfollow')),
    steps AS (
        SELECT DISTINCT a.job_id, a.step FROM swarm.actions a),
    alive AS (
        SELECT s.job_id, s.step, last.agent_id, last.target_agent_id
        FROM steps s
        CROSS JOIN LATERAL (
            SELECT DISTINCT ON (e.agent_id, e.target_agent_id) e.agent_id, e.target_agent_id, e.follows
            FROM events e
            WHERE e.job_id = s.job_id AND e.step <= s.step
            ORDER BY e.agent_id, e.target_agent_id, e.step DESC) last
        WHERE last.follows)
    SELECT a.job_id, a.step, count(*) AS edges,
           count(*) FILTER (WHERE EXISTS (SELECT 1 FROM alive b
                                          WHERE b.job_id = a.job_id AND b.step = a.step
                                            AND b.agent_id = a.target_agent_id AND b.target_agent_id = a.agent_id))
               AS reciprocated,
           round(count(*) FILTER (WHERE EXISTS (SELECT 1 FROM alive b
                                                WHERE b.job_id = a.job_id AND b.step = a.step
                                                  AND b.agent_id = a.target_agent_id AND b.target_agent_id = a.agent_id))
                 ::numeric / count(*), 4) AS reciprocity
    FROM alive a
    GROUP BY a.job_id, a.step;

COMMENT ON VIEW swarm.follow_reciprocity IS
'After each step of a simulation: the follow edges alive, how many are returned (b follows a too), and their share.';

-- Community sizes after each step: the seeded members plus the joins and
-- less the leaves that changed them up to the step.
CREATE OR REPLACE VIEW swarm.community_sizes WITH (security_invoker = true) AS
    WITH changes AS (
        SELECT a.job_id, a.step, a.community_id,
               sum(CASE a.kind WHEN 'join_community' THEN 1 ELSE -1 END) AS delta
        FROM swarm.actions a
        WHERE a.changed AND a.kind IN ('join_community', 'leave_community')
        GROUP BY a.job_id, a.step, a.community_id),
    steps AS (
        SELECT DISTINCT a.job_id, a.step FROM swarm.actions a)
    SELECT s.job_id, s.step, c.id AS community_id, c.name,
           (SELECT count(*) FROM swarm.community_members cm WHERE cm.community_id = c.id)
           + coalesce((SELECT sum(ch.delta) FROM changes ch
                       WHERE ch.job_id = s.job_id AND ch.community_id = c.id AND ch.step <= s.step), 0) AS members
    FROM steps s CROSS JOIN swarm.communities c;

COMMENT ON VIEW swarm.community_sizes IS
'Each community''s members after each step of a simulation: seeded members, plus joins, less leaves.';

-- Repost cascades: from each post that was reposted or quoted, the tree of
-- reposts of it and of its reposts.
CREATE OR REPLACE VIEW swarm.repost_cascades WITH (security_invoker = true) AS
    WITH RECURSIVE tree AS (
        SELECT r.job_id, r.post_id AS root_post_id, r.id, 1 AS depth
        FROM swarm.reposts r
        WHERE NOT EXISTS (SELECT 1 FROM swarm.reposts up WHERE up.job_id = r.job_id AND up.id = r.post_id)
        UNION ALL
        SELECT t.job_id, t.root_post_id, r.id, t.depth + 1
        FROM tree t JOIN swarm.reposts r ON r.job_id = t.job_id AND r.post_id = t.id
        WHERE t.depth < 100)
    SELECT t.job_id, t.root_post_id, count(*) AS size, max(t.depth) AS depth,
           (SELECT max(n) FROM (SELECT count(*) AS n FROM tree t2
                                WHERE t2.job_id = t.job_id AND t2.root_post_id = t.root_post_id
                                GROUP BY t2.depth) w) AS breadth
    FROM tree t
    GROUP BY t.job_id, t.root_post_id;

COMMENT ON VIEW swarm.repost_cascades IS
'Each post that was passed on in a simulation: size (reposts and quotes of it and of them), depth (longest chain) and breadth (most at one depth).';

CREATE OR REPLACE VIEW swarm.step_tokens WITH (security_invoker = true) AS
    SELECT m.job_id, m.turn AS step, count(*) AS agents,
           round(avg(m.prompt_tokens), 1) AS prompt_tokens_avg,
           max(m.prompt_tokens) AS prompt_tokens_max,
           round(avg(m.completion_tokens), 1) AS completion_tokens_avg,
           sum(m.prompt_tokens) AS prompt_tokens,
           sum(m.completion_tokens) AS completion_tokens
    FROM swarm.messages m
    JOIN swarm.jobs j ON j.id = m.job_id
    WHERE j.kind = 'simulate'
    GROUP BY m.job_id, m.turn;

COMMENT ON VIEW swarm.step_tokens IS
'Prompt and completion tokens per agent-step of each simulation step (as the endpoint reported them): what a step costs, and whether prompts stay within their budget.';
-- pg_swarm: the response store and replay (tables/75_responses.sql,
-- docs/replay.md).
--
-- The worker keeps the answers of jobs made with swarm.response_store = on
-- in swarm.responses, in the transaction that stores their messages
-- (src/queue.c), and answers the requests of jobs made with swarm.replay =
-- on (or fallthrough) from there when it claims them, without a network
-- call.  What is here: pruning, and the step builder's expiry.

-- Delete stored answers: those older than `older_than`, those of job `job`,
-- or both conditions together; NULL for both deletes every one.  A user
-- deletes their own; a swarm_admin (or superuser) every user's.  Returns how
-- many were deleted.
CREATE OR REPLACE FUNCTION swarm.prune_responses(older_than interval DEFAULT NULL, job bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deleted bigint;
BEGIN
    IF older_than IS NOT NULL AND older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, not %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM swarm.responses r
    WHERE (older_than IS NULL OR r.created_at < now() - older_than)
      AND (prune_responses.job IS NULL OR r.job_id = prune_responses.job)
      AND (r.owner = swarm._caller() OR swarm._caller_is_admin());
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

COMMENT ON FUNCTION swarm.prune_responses(interval, bigint) IS
'Delete stored answers (swarm.responses) older than older_than and/or of job job (both NULL: all); one''s own, or everyone''s for swarm_admin. Returns how many.';

-- The step builder's expiry, once a minute: at most 10,000 answers older
-- than swarm.response_store_max_age (0: none; on a distributed swarm, the
-- coordinator's builder, all of them).  Returns how many.
CREATE OR REPLACE FUNCTION swarm._expire_responses()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- (in seconds: current_setting() would say '30d')
    max_age integer := (SELECT s.setting::integer FROM pg_catalog.pg_settings s
                        WHERE s.name = 'swarm.response_store_max_age');
    deleted bigint;
BEGIN
    IF max_age = 0 THEN
        RETURN 0;
    END IF;
    IF swarm._is_distributed() THEN
        -- the coordinator's builder alone, over every shard at once (Citus
        -- has no ctid to delete a batch by)
        IF NOT swarm._is_distributed('swarm.responses')
           OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_local_group g WHERE g.groupid = 0) THEN
            RETURN 0;
        END IF;
        DELETE FROM swarm.responses r WHERE r.created_at < now() - make_interval(secs => max_age);
        GET DIAGNOSTICS deleted = ROW_COUNT;
        RETURN deleted;
    END IF;
    DELETE FROM swarm.responses r
    WHERE r.ctid = ANY (ARRAY(SELECT x.ctid FROM swarm.responses x
                              WHERE x.created_at < now() - make_interval(secs => max_age)
                              LIMIT 10000));
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

COMMENT ON FUNCTION swarm._expire_responses() IS
'Private, run by the step builder once a minute: deletes up to 10,000 stored answers older than swarm.response_store_max_age.';
-- pg_swarm: roles, grants and row-level security.  Last fragment: it sees every
-- object the others created.  Written to run again on every upgrade: it takes
-- every privilege away first and grants exactly what this version grants, and
-- makes the policies anew, so that an upgraded database has the privileges of
-- a fresh install.
--
-- The tenancy model (docs/limits-and-security.md):
--   swarm_user   enqueues jobs only through the API (generate, interact,
--                simulate: SECURITY DEFINER, the job owned by the caller),
--                cancels, waits for and reads its own jobs, requests and
--                messages (row-level security), and reads the social world;
--                it writes no table directly;
--   swarm_admin  is a swarm_user that also sees and may cancel every job,
--                manages endpoints, and builds the social world (agents,
--                friendships, communities), which every user shares;
--   everyone else can do nothing here.
-- The worker runs as the bootstrap superuser and is not subject to RLS; it
-- only ever joins rows of the same job, and its session's search_path is
-- pinned.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'swarm_user') THEN
        CREATE ROLE swarm_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'swarm_admin') THEN
        CREATE ROLE swarm_admin NOLOGIN;
    END IF;
END
$$;
-- (00_core.sql checks, at install, that roles of these names it did not
-- make are not adopted silently; this comment says which ones it made)
COMMENT ON ROLE swarm_user IS 'pg_swarm: swarm_user';
COMMENT ON ROLE swarm_admin IS 'pg_swarm: swarm_admin';
GRANT swarm_user TO swarm_admin;

REVOKE ALL ON ALL TABLES IN SCHEMA swarm FROM PUBLIC, swarm_user, swarm_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA swarm FROM PUBLIC, swarm_user, swarm_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA swarm FROM PUBLIC, swarm_user, swarm_admin;

GRANT USAGE ON SCHEMA swarm TO swarm_user;

-- Read: the shared social world, one's own jobs (row-level security below),
-- and the views.
GRANT SELECT ON swarm.agents, swarm.friendships, swarm.communities, swarm.community_members, swarm.job_kinds,
      swarm.jobs, swarm.requests, swarm.messages, swarm.agent_memory, swarm.stats, swarm.job_progress,
      swarm.endpoint_status, swarm.endpoints, swarm.posts,
      swarm.actions, swarm.likes, swarm.reposts, swarm.follows, swarm.mutes, swarm.memberships,
      swarm.action_counts, swarm.invalid_actions, swarm.follow_degrees, swarm.follow_reciprocity,
      swarm.community_sizes, swarm.repost_cascades, swarm.step_tokens, swarm.simulation_steps,
      swarm.responses TO swarm_user;

-- Write: the social world, by its admins.
GRANT INSERT, UPDATE, DELETE, TRUNCATE ON swarm.agents, swarm.friendships, swarm.communities,
      swarm.community_members TO swarm_admin;
GRANT USAGE ON SEQUENCE swarm.agents_id_seq, swarm.communities_id_seq TO swarm_admin;

GRANT EXECUTE ON FUNCTION
    swarm.generate(text, bigint[], text, integer, text, text, text, text[], interval),
    swarm.interact(text, integer, bigint[], text, text, integer, text, text, text[], interval),
    swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[], interval,
                   boolean, jsonb, timestamptz, integer, integer),
    swarm.action_kinds(),
    swarm.action_schema(),
    swarm.activity_profile(bigint, bigint),
    swarm.cancel(bigint),
    swarm.prune_responses(interval, bigint),
    swarm.wait(bigint, interval),
    swarm.next_batch(bigint, bigint, integer, interval),
    swarm.persona_summary(jsonb),
    swarm.pack(jsonb),
    swarm.unpack(bytea),
    -- what wait() and next_batch(), which run with the caller's rights, use
    swarm._progress_generation(),
    -- what the views swarm.stats and swarm.endpoint_status read (functions
    -- a view calls run with the rights of whoever reads the view)
    swarm._stats(),
    swarm._endpoint_status(),
    swarm._sleep_for_progress(bigint, integer),
    swarm._xid_is_current(xid),
    -- next_batch() asks it
    swarm._is_distributed()
TO swarm_user;

GRANT EXECUTE ON FUNCTION
    swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], name[], integer, text),
    swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], text[], name[], integer, text),
    swarm.drop_endpoint(text),
    swarm.create_agents(integer, bigint),
    swarm.delete_agents(bigint[]),
    swarm.build_friendships(integer, text, bigint, integer),
    swarm.create_communities(text[], integer, text, bigint),
    swarm._persona_rows(integer, bigint),
    swarm._friendship_rows(integer, text, bigint, integer),
    swarm._community_slots(integer, integer, bigint)
TO swarm_admin;

-- Row-level security: a user sees only its own jobs and what belongs to
-- them; swarm_admin sees everything.  The calls are schema-qualified (a
-- pg_has_role() of the user's own making, earlier on a search_path, must not
-- decide who is an admin).  Each policy reads only its own row (requests
-- and messages carry their job's owner): Citus refuses a policy with a
-- subquery on a distributed table, and propagates these to every shard.
ALTER TABLE swarm.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE swarm.requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE swarm.messages ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS jobs_owner ON swarm.jobs;
CREATE POLICY jobs_owner ON swarm.jobs FOR SELECT
    USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'));

DROP POLICY IF EXISTS requests_owner ON swarm.requests;
CREATE POLICY requests_owner ON swarm.requests FOR SELECT
    USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'));

ALTER TABLE swarm.agent_memory ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS agent_memory_owner ON swarm.agent_memory;
CREATE POLICY agent_memory_owner ON swarm.agent_memory FOR SELECT
    USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'));

DROP POLICY IF EXISTS messages_owner ON swarm.messages;
CREATE POLICY messages_owner ON swarm.messages FOR SELECT
    USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'));

-- What simulations with actions record, and the answers kept for replay:
-- their job's owner reads it.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['actions', 'likes', 'reposts', 'follows', 'mutes', 'memberships', 'simulation_steps',
                             'responses']
    LOOP
        EXECUTE format('ALTER TABLE swarm.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS %I ON swarm.%I', t || '_owner', t);
        EXECUTE format($p$CREATE POLICY %I ON swarm.%I FOR SELECT
                           USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'))$p$,
                       t || '_owner', t);
    END LOOP;
END
$$;
