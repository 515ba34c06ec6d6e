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
    request_deadline interval DEFAULT NULL,
    mode text DEFAULT NULL)
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
                                                    'agents', CASE WHEN agents IS NULL THEN 'all' ELSE 'list' END,
                                                    'mode', mode));

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

COMMENT ON FUNCTION swarm.interact(text, integer, bigint[], text, text, integer, text, text, text[], interval, text) IS
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
    prompt_budget integer DEFAULT 1000,
    mode text DEFAULT NULL)
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
                                 'seed', coalesce(seed, (random() * 1e15)::bigint),
                                 'mode', mode);
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

COMMENT ON FUNCTION swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[], interval, boolean, jsonb, timestamptz, integer, integer, text) IS
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
