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
    job bigint, step integer, seed bigint, feed_size integer, w_follows double precision,
    w_interest double precision, w_hot double precision, feed_chars integer, part integer)
RETURNS TABLE (viewer bigint, seen bigint[], feed text, follows text, communities text)
    LANGUAGE C VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'swarm_assemble_feeds';

COMMENT ON FUNCTION swarm._assemble_feeds(bigint, integer, bigint, integer, double precision, double precision, double precision, integer, integer) IS
'Private: each active agent''s feed of step `step` of simulation with actions `job` (NULL when it has nothing to read), and what else its prompt offers (whom it follows, its communities and one to join): from the posts of the last three steps, their authors, the viewers'' friendships and the temporary tables swarm._simulate_actions_step() made (src/feeds.c).  `part` 0: a whole step; 1: the first part of a step built in parts (what every part shares is read and kept in the backend); > 1: a later part (what was kept for the same job and step is used).';

-- The active agents of step `step` of simulation `job`, ascending: `wanted`
-- of them drawn with the seed; with a clock, weighted by each agent's
-- activity at the step's hour (sampling without replacement: the largest
-- ln(u) / weight).  The draw sorts ids and keys only (an index-only scan).
CREATE OR REPLACE FUNCTION swarm._draw_active(job bigint, step integer, wanted bigint) RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET work_mem = '256MB'
AS $$
#variable_conflict use_variable
DECLARE
    p jsonb;
    seed bigint;
    hour integer;
    drawn bigint[];
BEGIN
    SELECT j.params INTO p FROM swarm.jobs j WHERE j.id = job;
    seed := (p ->> 'seed')::bigint;
    IF p ->> 'start_time' IS NOT NULL THEN
        hour := extract(hour FROM swarm._step_time(p, step) AT TIME ZONE 'UTC')::integer;
    END IF;
    SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}') INTO drawn
    FROM (SELECT x.id
          FROM swarm.agents x
          ORDER BY CASE WHEN hour IS NULL THEN hashint8extended(x.id, seed + step)::double precision
                        ELSE ln(((hashint8extended(x.id, seed + step) & 9007199254740991)::double precision + 0.5)
                                / 9007199254740992.0)
                             / swarm._hour_weight(hour, swarm._peak_hour(x.id, seed)) END DESC,
                   x.id
          LIMIT wanted) d;
    RETURN drawn;
END
$$;

COMMENT ON FUNCTION swarm._draw_active(bigint, integer, bigint) IS
'Private: the active agents of a step of a simulation with actions, ascending: `wanted` of them, drawn with the seed (and the clock''s hour, weighted by each agent''s activity profile).';

CREATE OR REPLACE FUNCTION swarm._release_step_feeds() RETURNS void
    LANGUAGE C VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'swarm_release_step_feeds';

COMMENT ON FUNCTION swarm._release_step_feeds() IS
'Private: lets go of what the parts of a step built in parts shared (swarm._assemble_feeds() keeps it in the backend from the first part for the next ones), after the last part.';

-- Enqueue step `step` of simulation with actions `job`; given `agents`
-- (ascending), the part of it they make: part `part` of a step built in
-- parts (swarm._build_step_part()), whose feeds are the same as a whole
-- step's.
--
-- Active agents: the step's count (swarm._active_count()), drawn with the
-- seed (swarm._draw_active()).
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
CREATE OR REPLACE FUNCTION swarm._simulate_actions_step(job bigint, step integer, agents bigint[] DEFAULT NULL,
                                                        part integer DEFAULT 0) RETURNS bigint
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
    clock text;
    active_ids bigint[];
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
    IF p ->> 'start_time' IS NOT NULL THEN
        clock := to_char(swarm._step_time(p, step) AT TIME ZONE 'UTC', 'FMDay HH24:MI') || '. ';
    END IF;

    -- (a step built earlier in this transaction left them: steps without
    -- agents are passed over in one)
    IF to_regclass('pg_temp.swarm_step_active') IS NOT NULL THEN
        DROP TABLE pg_temp.swarm_step_active, pg_temp.swarm_step_members, pg_temp.swarm_step_mutes,
                   pg_temp.swarm_step_follows, pg_temp.swarm_step_memory;
    END IF;

    -- The winners are read by index, each with its interest of the step: one
    -- of its interests, drawn with the seed, so that the interest source
    -- costs one short list a viewer.  Per-agent tables are read by lists of
    -- agent ids (= ANY: index probes on one server, each shard's share on a
    -- distributed swarm, where a join with a temporary table or a LATERAL
    -- subquery would not run).
    IF agents IS NULL THEN
        wanted := swarm._active_count(p, step);
        active_ids := swarm._draw_active(job, step, wanted);
    ELSE
        wanted := cardinality(agents);
        active_ids := agents;
    END IF;
    -- On one server these statements are planned generically, never for
    -- their list's length: for a part's 10,000 agents the planner would scan
    -- all of swarm.agent_memory (0.4 s a part) rather than probe its index,
    -- and for a whole step's 100,000 it spends 0.1 s a statement estimating
    -- the list.  (Citus cannot plan a distributed query with a parameter
    -- left in it: there the list is a constant, each shard's share of it.
    -- The function's SET clause undoes this at its end.)
    IF NOT swarm._is_distributed() THEN
        PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    END IF;
    CREATE TEMP TABLE swarm_step_active (id bigint, interest text) ON COMMIT DROP;
    INSERT INTO swarm_step_active
    SELECT a.id,
           CASE WHEN jsonb_typeof(a.interests) = 'array' AND jsonb_array_length(a.interests) > 0
                THEN a.interests ->> ((((pg_catalog.hashint8extended(a.id, seed + 31 * step)
                                         % jsonb_array_length(a.interests))
                                        + jsonb_array_length(a.interests))
                                       % jsonb_array_length(a.interests))::integer) END AS interest
    FROM (SELECT x.id, x.persona -> 'interests' AS interests
          FROM swarm.agents x WHERE x.id = ANY (active_ids) OFFSET 0) a;
    ANALYZE swarm_step_active;

    -- whom each viewer follows in this simulation (a tie of weight 1 in
    -- its feed, beside its friendships, which swarm._assemble_feeds() reads)
    CREATE TEMP TABLE swarm_step_follows (viewer bigint, target_id bigint, step integer) ON COMMIT DROP;
    INSERT INTO swarm_step_follows
    SELECT f.agent_id, f.target_id, f.step
    FROM swarm.follows f WHERE f.agent_id = ANY (active_ids) AND f.job_id = job;

    -- each active agent's communities in this simulation: the seeded ones
    -- it did not leave, and those it joined (its feed's community posts,
    -- and the communities its prompt offers)
    CREATE TEMP TABLE swarm_step_members (viewer bigint, community_id bigint) ON COMMIT DROP;
    INSERT INTO swarm_step_members
    SELECT cm.agent_id, cm.community_id
    FROM swarm.community_members cm
    WHERE cm.agent_id = ANY (active_ids)
      AND NOT EXISTS (SELECT 1 FROM swarm.memberships ms
                      WHERE ms.agent_id = cm.agent_id AND ms.job_id = job
                        AND ms.community_id = cm.community_id AND NOT ms.member)
    UNION
    SELECT ms.agent_id, ms.community_id
    FROM swarm.memberships ms
    WHERE ms.agent_id = ANY (active_ids) AND ms.job_id = job AND ms.member;

    CREATE TEMP TABLE swarm_step_mutes (viewer bigint, author bigint) ON COMMIT DROP;
    INSERT INTO swarm_step_mutes
    SELECT mu.agent_id, mu.target_id
    FROM swarm.mutes mu WHERE mu.agent_id = ANY (active_ids) AND mu.job_id = job;

    -- the memory of the job owner's simulations, never another user's
    CREATE TEMP TABLE swarm_step_memory (agent_id bigint, memory bytea) ON COMMIT DROP;
    INSERT INTO swarm_step_memory
    SELECT am.agent_id, am.memory FROM swarm.agent_memory am
    WHERE am.agent_id = ANY (active_ids) AND am.owner = job_owner;

    INSERT INTO swarm.requests (job_id, agent_id, turn, seen, vars, owner)
    SELECT job, a.id, step, coalesce(f.seen, '{}'),
           jsonb_build_object(
               'clock', coalesce('It is ' || clock, ''),
               'feed', coalesce(f.feed, '(nothing new in your feed)'),
               'memory', swarm._memory_text(swarm._unpack_or_null(am.memory)),
               'follows', coalesce(f.follows, ''),
               'communities', coalesce(f.communities, '(none)')),
           job_owner
    FROM swarm_step_active a
    -- (the feeds and offers are made here, never written to a table of their own)
    LEFT JOIN swarm._assemble_feeds(job, step, seed, feed_size, w_follows, w_interest, w_hot, feed_chars, part) f
           ON f.viewer = a.id
    LEFT JOIN swarm_step_memory am ON am.agent_id = a.id
    ORDER BY a.id;
    GET DIAGNOSTICS made = ROW_COUNT;

    -- fewer agents than planned (deleted meanwhile): the step has fewer requests
    -- (a part: fewer than it was given; the draw's own shortfall is
    -- swarm._build_step()'s)
    IF made < wanted THEN
        UPDATE swarm.jobs j SET total = j.total - (wanted - made) WHERE j.id = job;
    END IF;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._simulate_actions_step(bigint, integer, bigint[], integer) IS
'Private: enqueues one step of a simulation with actions, or the part of it made of `agents` (part `part` of a step built in parts): its active agents (by the seed and the clock), each one''s feed from the recommender (follows, interest, hot, mixed by feed_weights, muted authors left out), communities, follows, memory and clock, within the prompt budget.';

-------------------------------------------------------------------------------
-- The step builder (src/step_builder.c calls this, in its own transactions)
-------------------------------------------------------------------------------

-- Build step `step` of simulation `job` (with or without actions) and
-- note it in swarm.simulation_steps.  Returns the requests it made.
--
-- On one server, a step of a simulation with actions (not in batch mode) of
-- more agents than swarm.step_part_agents is built in parts: its agents are drawn and kept
-- in its swarm.simulation_steps row, and only the first part is built here;
-- the step builder builds the others, each in a transaction of its own
-- (swarm._continue_step_build()), while the worker sends the first.  The
-- parts' requests are the ones the whole step would make.
CREATE OR REPLACE FUNCTION swarm._build_step(job bigint, step integer, actions boolean) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    began timestamptz := clock_timestamp();
    part_size integer := current_setting('swarm.step_part_agents')::integer;
    made bigint;
    wanted bigint;
    drawn bigint[];
BEGIN
    -- (batch mode: a step's requests go out as batch files, whose answers
    -- take minutes or hours; parts would only make more files)
    IF actions AND part_size > 0 AND NOT swarm._is_distributed() THEN
        SELECT swarm._active_count(j.params, _build_step.step) INTO wanted FROM swarm.jobs j
        WHERE j.id = job AND coalesce(j.params ->> 'mode', 'sync') <> 'batch';
        IF wanted > part_size THEN
            drawn := swarm._draw_active(job, _build_step.step, wanted);
            -- (fewer agents than planned: the step has fewer requests)
            IF cardinality(drawn) < wanted THEN
                UPDATE swarm.jobs j SET total = j.total - (wanted - cardinality(drawn)) WHERE j.id = job;
            END IF;
            INSERT INTO swarm.simulation_steps AS ss (job_id, step, requests, build_ms, built_at, owner,
                                                      parts, parts_built, part_size, agents, ready_ms, started_at)
            SELECT j.id, _build_step.step, 0, extract(epoch FROM clock_timestamp() - began) * 1000, clock_timestamp(),
                   j.owner, 1 + ceil(greatest(cardinality(drawn) - greatest(1, part_size / 5), 0)::numeric
                                     / part_size)::integer, 0, part_size, drawn,
                   NULL, began
            FROM swarm.jobs j WHERE j.id = job
            ON CONFLICT ON CONSTRAINT simulation_steps_pkey DO UPDATE
                SET requests = 0, build_ms = EXCLUDED.build_ms, built_at = EXCLUDED.built_at,
                    parts = EXCLUDED.parts, parts_built = 0, part_size = EXCLUDED.part_size,
                    agents = EXCLUDED.agents, ready_ms = NULL, started_at = EXCLUDED.started_at;
            made := swarm._build_step_part(job, _build_step.step);
            UPDATE swarm.simulation_steps ss SET ready_ms = extract(epoch FROM clock_timestamp() - began) * 1000
            WHERE ss.job_id = job AND ss.step = _build_step.step;
            RETURN made;
        END IF;
    END IF;
    IF actions THEN
        made := swarm._simulate_actions_step(job, _build_step.step);
    ELSE
        made := swarm._simulate_step(job, _build_step.step);
    END IF;
    INSERT INTO swarm.simulation_steps AS ss (job_id, step, requests, build_ms, built_at, owner,
                                              parts, parts_built, part_size, agents, ready_ms, started_at)
    SELECT j.id, _build_step.step, made, extract(epoch FROM clock_timestamp() - began) * 1000, clock_timestamp(), j.owner,
           1, 1, NULL, NULL, extract(epoch FROM clock_timestamp() - began) * 1000, began
    FROM swarm.jobs j WHERE j.id = job
    ON CONFLICT ON CONSTRAINT simulation_steps_pkey DO UPDATE
        SET requests = EXCLUDED.requests, build_ms = EXCLUDED.build_ms, built_at = EXCLUDED.built_at,
            parts = 1, parts_built = 1, part_size = NULL, agents = NULL, ready_ms = EXCLUDED.ready_ms,
            started_at = EXCLUDED.started_at;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._build_step(bigint, integer, boolean) IS
'Private: builds one step of a simulation, or the first part of a step built in parts (swarm.step_part_agents), and notes it (swarm.simulation_steps).';

-- Build the next part of step `step` of simulation `job`, a step built in
-- parts (its agents, drawn by swarm._build_step(), are in its
-- swarm.simulation_steps row), and note it there; the row's agents are let
-- go with the last part.  Returns the requests it made (0 when no part is
-- left).  Each part is its agents' slice of the draw, ascending, so the
-- parts' requests come in the order of a whole step's: the first
-- part_size / 5 agents, then part_size at a time.
CREATE OR REPLACE FUNCTION swarm._build_step_part(job bigint, step integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    began timestamptz := clock_timestamp();
    ss swarm.simulation_steps;
    part integer;
    first integer;
    made bigint;
BEGIN
    SELECT * INTO ss FROM swarm.simulation_steps s
    WHERE s.job_id = job AND s.step = _build_step_part.step
    FOR UPDATE;
    IF NOT FOUND OR ss.parts_built >= ss.parts THEN
        RETURN 0;
    END IF;
    -- (swarm.cancel() locks this row too, before it cancels the queued
    -- requests: a part is built before a cancel, whose statements then see
    -- its requests, or after it, and then not at all)
    IF NOT EXISTS (SELECT 1 FROM swarm.jobs j WHERE j.id = job AND j.status IN ('queued', 'running')) THEN
        UPDATE swarm.simulation_steps s SET parts = s.parts_built, agents = NULL
        WHERE s.job_id = job AND s.step = _build_step_part.step;
        RETURN 0;
    END IF;
    part := ss.parts_built + 1;
    -- (the first part is a fifth of the others: the worker has requests
    -- sooner, and sends them while the second is built)
    first := greatest(1, ss.part_size / 5);
    made := swarm._simulate_actions_step(job, _build_step_part.step,
                                         CASE WHEN part = 1 THEN coalesce(ss.agents[1 : first], '{}')
                                              ELSE coalesce(ss.agents[first + (part - 2) * ss.part_size + 1
                                                                      : first + (part - 1) * ss.part_size], '{}') END,
                                         part);
    IF part = ss.parts THEN
        PERFORM swarm._release_step_feeds();
    END IF;
    UPDATE swarm.simulation_steps s
    SET parts_built = part, requests = s.requests + made,
        build_ms = s.build_ms + extract(epoch FROM clock_timestamp() - began) * 1000,
        built_at = clock_timestamp(),
        agents = CASE WHEN part < s.parts THEN s.agents END
    WHERE s.job_id = job AND s.step = _build_step_part.step;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._build_step_part(bigint, integer) IS
'Private: builds the next part of a step built in parts and notes it (swarm.simulation_steps.parts_built).';

-- End simulation `job`, whose step `step` could not be built, saying why:
-- cancelled, with the requests its step's parts already built (none when
-- the step was built whole: its build rolled back).
CREATE OR REPLACE FUNCTION swarm._fail_simulation(job bigint, step integer, failure text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM swarm.simulation_steps s
               WHERE s.job_id = job AND s.step = _fail_simulation.step AND s.parts_built < s.parts) THEN
        UPDATE swarm.requests r SET status = 'cancelled', finished_at = now()
        WHERE r.job_id = job AND r.status = 'queued';
        GET DIAGNOSTICS n = ROW_COUNT;
        UPDATE swarm.simulation_steps s SET parts = s.parts_built, agents = NULL
        WHERE s.job_id = job AND s.step = _fail_simulation.step;
    END IF;
    UPDATE swarm.jobs j
    SET status = 'cancelled', finished_at = now(), cancelled = j.cancelled + n,
        total = j.succeeded + j.failed + j.cancelled + n,
        error = format('step %s could not be built: %s', _fail_simulation.step, failure)
    WHERE j.id = job;
END
$$;

COMMENT ON FUNCTION swarm._fail_simulation(bigint, integer, text) IS
'Private: ends a simulation whose step could not be built (cancelled, with the error), and the requests its step''s parts already made.';

-- Build the next part of one step built in parts whose simulation still
-- runs, in the step builder's transaction, and wake the worker for it;
-- returns the job's id, or NULL when no step has parts left.  The parts of
-- a simulation cancelled (or gone) meanwhile are not built; a part that
-- cannot be built ends its job, saying why, as a step does.  The job's row
-- is not locked meanwhile: the worker stores the step's first parts'
-- results (and updates the row) while the next part is built.
CREATE OR REPLACE FUNCTION swarm._continue_step_build() RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pending record;
    failure text;
BEGIN
    FOR pending IN
        SELECT s.job_id, s.step FROM swarm.simulation_steps s
        WHERE s.parts_built < s.parts
        ORDER BY s.job_id, s.step
        LIMIT 1
    LOOP
        -- (the job's row is not locked: the worker updates it as it stores
        -- the step's first parts; swarm._build_step_part() locks the step's
        -- row, which swarm.cancel() waits for, and closes the step of a
        -- simulation that has ended)
        BEGIN
            PERFORM swarm._build_step_part(pending.job_id, pending.step);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS failure = MESSAGE_TEXT;
            PERFORM swarm._fail_simulation(pending.job_id, pending.step, failure);
        END;
        PERFORM swarm._wake_worker();
        RETURN pending.job_id;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION swarm._continue_step_build() IS
'Private, run by the step builder (its own background worker): builds the next part of one step built in parts and returns the job''s id; NULL when no step has parts left.';

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
              -- (a step built in parts has not ended before its last part)
              AND NOT EXISTS (SELECT 1 FROM swarm.simulation_steps ss
                              WHERE ss.job_id = jj.id AND ss.parts_built < ss.parts)
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
        IF EXISTS (SELECT 1 FROM swarm.requests r WHERE r.job_id = sim.id AND r.status = 'queued')
           OR EXISTS (SELECT 1 FROM swarm.simulation_steps ss WHERE ss.job_id = sim.id AND ss.parts_built < ss.parts) THEN
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
            -- (a step built in parts whose first part had no agent left)
            EXIT WHEN EXISTS (SELECT 1 FROM swarm.simulation_steps ss
                              WHERE ss.job_id = sim.id AND ss.step = sim.step AND ss.parts_built < ss.parts);
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
        PERFORM swarm._fail_simulation(sim.id, sim.step, failure);
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
