-- Simulations with actions: the action schema, validating and applying each
-- action (valid and invalid), the next step seeing the changed graph, the
-- recommender's mix and mutes, the clock, reproducibility under a seed, and
-- whole runs through the mock's structured replies (json_schema and tools).
-- Endpoint: the project's mock (test/mock/mock_llm) as the test runner starts
-- it, over plain HTTP/1.1, answering at once with valid actions drawn from
-- the prompt (or, where a context says [[mock:invalid_action]], invalid ones);
-- no latency spread, no saturation, no errors: what a real model does with
-- the schema is not tested here.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages, swarm.friendships,
         swarm.communities, swarm.community_members, swarm.agent_memory, swarm.actions, swarm.likes,
         swarm.reposts, swarm.follows, swarm.mutes, swarm.memberships, swarm.simulation_steps RESTART IDENTITY;

-------------------------------------------------------------------------------
-- The action and its schema
-------------------------------------------------------------------------------

SELECT swarm.action_kinds();
SELECT jsonb_pretty(swarm.action_schema());

-------------------------------------------------------------------------------
-- Validating and applying, one action of each kind
-------------------------------------------------------------------------------

-- Twelve agents (Ann .. Lee), a friendship, two communities Ann and Bob are in.
INSERT INTO swarm.agents (name, persona)
SELECT n, jsonb_build_object('interests', CASE WHEN i % 2 = 0 THEN '["chess"]'::jsonb ELSE '["jazz"]' END)
FROM unnest(ARRAY['Ann', 'Bob', 'Cat', 'Dan', 'Eva', 'Fay', 'Gus', 'Hal', 'Ivy', 'Jon', 'Kim', 'Lee'])
     WITH ORDINALITY AS t(n, i);
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength)
VALUES (1, 2, now(), 0.9), (2, 1, now(), 0.9);
INSERT INTO swarm.communities (name, max_members, strategy) VALUES ('chess club', 10, 'random'), ('jazz bar', 10, 'random');
INSERT INTO swarm.community_members (community_id, agent_id) VALUES (1, 1), (1, 2), (2, 2);

-- A simulation with actions, made by hand (the worker stores nothing of it:
-- it is completed), whose messages are written here as the worker would.
INSERT INTO swarm.jobs (kind, status, context, model, max_tokens, channel, system_template, user_template, params)
VALUES ('simulate', 'completed', '', 'm', 10, 'swarm', 's', 'u',
        jsonb_build_object('actions', true, 'seed', 5, 'step', 1, 'steps', 9, 'feed_size', 3,
                           'population', 12, 'active_per_step', 12, 'activity', 1,
                           'feed_weights', '{"follows": 1, "interest": 0, "hot": 0}'::jsonb,
                           'prompt_budget', 1000, 'step_minutes', 60));
CREATE FUNCTION pg_temp.say(step integer, agent bigint, reply text, feed bigint[] DEFAULT '{}')
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO swarm.messages (job_id, request_id, agent_id, content, turn, seen, owner)
    VALUES (1, 1000 * step + agent, agent, reply, step, feed, current_user)
    RETURNING request_id
$$;
-- the id of the post an agent made at a step
CREATE FUNCTION pg_temp.post_of(step integer, agent bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT id FROM swarm.actions WHERE job_id = 1 AND step = $1 AND agent_id = $2
$$;

-- Step 1: Ann, Bob and Cat post.
SELECT swarm._apply_actions(ARRAY[
    pg_temp.say(1, 1, '{"action": "post", "post_id": null, "agent_id": null, "community_id": null, "text": "Ann opens the board"}'),
    pg_temp.say(1, 2, '{"action": "post", "text": "  Bob plays jazz  "}'),
    pg_temp.say(1, 3, '{"action": "post", "text": "Cat naps"}')]) AS recorded;

-- Step 2: everyone's feed is [Ann's post, Bob's post]; each agent does one thing.
CREATE TEMP TABLE feed AS SELECT ARRAY[pg_temp.post_of(1, 1), pg_temp.post_of(1, 2)] AS seen;
SELECT swarm._apply_actions(array_agg(pg_temp.say(2, a, r, (SELECT seen FROM feed)) ORDER BY a)) AS recorded
FROM (VALUES
    (1, '{"action": "reply", "post_id": 2, "text": "nice tune, Bob"}'),
    (2, '{"action": "like", "post_id": 1}'),
    (3, '{"action": "dislike", "post_id": 2}'),
    (4, '{"action": "repost", "post_id": 1}'),
    (5, '{"action": "quote", "post_id": 2, "text": "listen to this"}'),
    (6, '{"action": "follow", "agent_id": 1}'),
    (7, '{"action": "unfollow", "agent_id": 1}'),
    (8, '{"action": "mute", "agent_id": 2}'),
    (9, '{"action": "join_community", "community_id": 2}'),
    (10, '{"action": "leave_community", "community_id": 1}'),
    (11, '{"action": "do_nothing"}'),
    (12, '{"action": "follow", "agent_id": 2}')) AS t(a, r);

SELECT a.agent_id, ag.name, a.kind, a.valid, a.changed,
       au.name AS post_author, ta.name AS target, a.community_id, a.content
FROM swarm.actions a
JOIN swarm.agents ag ON ag.id = a.agent_id
LEFT JOIN swarm.actions p ON p.job_id = a.job_id AND p.id = a.post_id
LEFT JOIN swarm.agents au ON au.id = p.agent_id
LEFT JOIN swarm.agents ta ON ta.id = a.target_agent_id
ORDER BY a.step, a.agent_id;

-- The typed tables hold what changed.
SELECT l.agent_id, l.value, p.agent_id AS post_author FROM swarm.likes l JOIN swarm.actions p ON p.id = l.post_id ORDER BY 1;
SELECT r.agent_id, r.quote, p.agent_id AS post_author FROM swarm.reposts r JOIN swarm.actions p ON p.id = r.post_id ORDER BY 1;
SELECT agent_id, target_id, step FROM swarm.follows ORDER BY 1, 2;
SELECT agent_id, target_id, step FROM swarm.mutes ORDER BY 1, 2;
SELECT agent_id, community_id, member, step FROM swarm.memberships ORDER BY 1, 2;
-- ...and the seeded world is untouched.
SELECT count(*) AS friendships, (SELECT count(*) FROM swarm.community_members) AS seeded_members FROM swarm.friendships;

-- Applying the same messages again records and changes nothing.
SELECT swarm._apply_actions(ARRAY(SELECT request_id FROM swarm.messages WHERE job_id = 1)) AS recorded_again;
SELECT count(*) AS actions, count(DISTINCT id) AS distinct_messages FROM swarm.actions;

-- Invalid replies: recorded with the reason, never applied.
SELECT swarm._apply_actions(array_agg(pg_temp.say(3, a, r, (SELECT seen FROM feed)) ORDER BY a)) AS recorded
FROM (VALUES
    (1, 'I think I will like it'),
    (2, '["like", 1]'),
    (3, '{"post_id": 1}'),
    (4, '{"action": "dance"}'),
    (5, '{"action": "post", "text": "   "}'),
    (6, '{"action": "like"}'),
    (7, '{"action": "like", "post_id": 3}'),
    (8, '{"action": "repost", "post_id": 0}'),
    (9, '{"action": "follow", "agent_id": 9}'),
    (10, '{"action": "mute", "agent_id": 999}'),
    (11, '{"action": "join_community", "community_id": 77}'),
    (12, '{"action": "reply", "post_id": "1", "text": "hm"}')) AS t(a, r);
SELECT agent_id, kind, valid, reason, changed, content FROM swarm.actions WHERE step = 3 ORDER BY agent_id;
SELECT agent_id, reason FROM swarm.invalid_actions ORDER BY agent_id;
-- a reply that is not JSON, holds \u0000 or is too long is invalid, never an
-- error (which would abort the worker's store); deep nesting is read
SELECT swarm._jsonb_or_null('{"a": "\u0000"}') IS NULL AS nul,
       jsonb_typeof(swarm._jsonb_or_null(repeat('[', 10000) || repeat(']', 10000))) AS deep,
       swarm._jsonb_or_null('{"text": "' || repeat('x', 70000) || '"}') IS NULL AS huge,
       swarm._jsonb_or_null('{"action": "post"}') AS fine;
-- nothing of step 3 changed the graph
SELECT (SELECT count(*) FROM swarm.likes) AS likes, (SELECT count(*) FROM swarm.follows) AS follows,
       (SELECT count(*) FROM swarm.mutes) AS mutes, (SELECT count(*) FROM swarm.memberships) AS memberships;

-- Step 4: changes of mind.  Cat likes what she disliked, Lee follows again
-- whom he follows (no change), Gus follows Ann and Fay unfollows her, Jon
-- leaves the jazz bar he never was in (no change), Ivy leaves what she
-- joined; Bob and Kim post at length.
SELECT swarm._apply_actions(array_agg(pg_temp.say(4, a, r, (SELECT seen FROM feed)) ORDER BY a)) AS recorded
FROM (VALUES
    (2, '{"action": "post", "text": "Bob hums ' || repeat('la ', 60) || '"}'),
    (11, '{"action": "post", "text": "Kim writes ' || repeat('on ', 60) || '"}'),
    (3, '{"action": "like", "post_id": 2}'),
    (6, '{"action": "unfollow", "agent_id": 1}'),
    (7, '{"action": "follow", "agent_id": 1}'),
    (12, '{"action": "follow", "agent_id": 2}'),
    (10, '{"action": "leave_community", "community_id": 2}'),
    (9, '{"action": "leave_community", "community_id": 2}')) AS t(a, r);
SELECT agent_id, kind, changed FROM swarm.actions WHERE step = 4 ORDER BY agent_id;
SELECT agent_id, value FROM swarm.likes ORDER BY 1;
SELECT agent_id, target_id, step FROM swarm.follows ORDER BY 1, 2;
SELECT agent_id, community_id, member, step FROM swarm.memberships ORDER BY 1, 2;

-- The chart views, over steps 1 to 4.
SELECT * FROM swarm.action_counts WHERE step = 2 ORDER BY kind;
SELECT step, in_degree, agents FROM swarm.follow_degrees ORDER BY step, in_degree;
SELECT step, edges, reciprocated, reciprocity FROM swarm.follow_reciprocity ORDER BY step;
SELECT step, name, members FROM swarm.community_sizes ORDER BY step, community_id;
SELECT (SELECT agent_id FROM swarm.actions WHERE id = root_post_id) AS root_author, size, depth, breadth
FROM swarm.repost_cascades ORDER BY 1;
SELECT step, kind, agent_id, to_agent_id, content FROM swarm.posts WHERE job_id = 1 ORDER BY step, agent_id;

-------------------------------------------------------------------------------
-- The next step sees the changed graph: the recommender
-------------------------------------------------------------------------------

-- Step 5 of the hand-made job: every agent is active (activity 1), feeds of
-- 3 posts from the last three steps.  Only the follows source counts here
-- (weights 1/0/0): friends' posts (Ann and Bob are friends), followed
-- agents' posts and the communities' posts.
BEGIN;
SELECT swarm._simulate_actions_step(1, 5) AS requests;
SELECT a.name, r.vars ->> 'feed' AS feed FROM swarm.requests r JOIN swarm.agents a ON a.id = r.agent_id
WHERE r.job_id = 1 AND r.turn = 5 AND a.id IN (1, 2, 3, 7, 8, 12) ORDER BY a.id;
-- what else Gus (follows Ann) and Jon (left the chess club) are offered
SELECT a.name, r.vars ->> 'follows' AS follows, r.vars ->> 'communities' AS communities
FROM swarm.requests r JOIN swarm.agents a ON a.id = r.agent_id
WHERE r.job_id = 1 AND r.turn = 5 AND a.id IN (2, 7, 10) ORDER BY a.id;
-- seen holds the feed's posts in order: post n of the prompt is seen[n]
SELECT bool_and(cardinality(r.seen) = (SELECT count(*) FROM regexp_matches(r.vars ->> 'feed', '\[post \d+\]', 'g')))
       AS seen_matches_feed
FROM swarm.requests r WHERE r.job_id = 1 AND r.turn = 5;
ROLLBACK;

-- Only the hot source: everyone sees the hottest posts (the newest first,
-- here: none has engagement yet), never their own, and Hal, who muted Bob,
-- never Bob's.
UPDATE swarm.jobs SET params = params || '{"feed_weights": {"follows": 0, "interest": 0, "hot": 1}}' WHERE id = 1;
BEGIN;
SELECT swarm._simulate_actions_step(1, 5) AS requests;
SELECT a.name, r.vars ->> 'feed' AS feed FROM swarm.requests r JOIN swarm.agents a ON a.id = r.agent_id
WHERE r.job_id = 1 AND r.turn = 5 AND a.id IN (1, 2, 8) ORDER BY a.id;
ROLLBACK;

-- Only the interest source: chess players (even ids) see chess players' posts.
UPDATE swarm.jobs SET params = params || '{"feed_weights": {"follows": 0, "interest": 1, "hot": 0}}' WHERE id = 1;
BEGIN;
SELECT swarm._simulate_actions_step(1, 5) AS requests;
SELECT a.name, a.persona -> 'interests' AS interests, r.vars ->> 'feed' AS feed
FROM swarm.requests r JOIN swarm.agents a ON a.id = r.agent_id
WHERE r.job_id = 1 AND r.turn = 5 AND a.id IN (3, 4, 6) ORDER BY a.id;
ROLLBACK;

-- A mix: half follows, half hot; the feed interleaves them in proportion.
UPDATE swarm.jobs SET params = params || '{"feed_weights": {"follows": 1, "interest": 0, "hot": 1}, "feed_size": 4}' WHERE id = 1;
BEGIN;
SELECT swarm._simulate_actions_step(1, 5) AS requests;
SELECT a.name, r.vars ->> 'feed' AS feed FROM swarm.requests r JOIN swarm.agents a ON a.id = r.agent_id
WHERE r.job_id = 1 AND r.turn = 5 AND a.id IN (7) ORDER BY a.id;
ROLLBACK;

-- A step built in parts, as the step builder builds a large one (each part
-- its slice of the draw, in a transaction of its own; the first part reads
-- what every part shares and keeps it for the next), makes the requests of
-- the whole step, in the same order.
BEGIN;
SELECT swarm._simulate_actions_step(1, 5) AS requests;
SELECT md5(string_agg(r.agent_id || ':' || r.seen::text || ':' || r.vars::text, E'\n' ORDER BY r.id)) AS whole
FROM swarm.requests r WHERE r.job_id = 1 AND r.turn = 5 \gset
ROLLBACK;
BEGIN;
SELECT swarm._draw_active(1, 5, swarm._active_count(params, 5)) AS drawn FROM swarm.jobs WHERE id = 1 \gset
SELECT k AS part, swarm._simulate_actions_step(1, 5, (:'drawn'::bigint[])[(k - 1) * 5 + 1 : k * 5], k) AS requests
FROM generate_series(1, 3) k;
SELECT md5(string_agg(r.agent_id || ':' || r.seen::text || ':' || r.vars::text, E'\n' ORDER BY r.id)) = :'whole'
       AS parts_make_the_whole
FROM swarm.requests r WHERE r.job_id = 1 AND r.turn = 5;
ROLLBACK;
SELECT swarm._assemble_feeds(1, 5, 1, 3, 1, 1, 1, 400, -1);

-- The prompt budget cuts the feed (the first post always stays): 1,000
-- tokens leave room for Ann's four posts, 200 for the two long ones only.
BEGIN;
SELECT swarm._simulate_actions_step(1, 5) AS requests;
SELECT cardinality(r.seen) AS posts, length(r.vars ->> 'feed') AS feed_chars
FROM swarm.requests r WHERE r.job_id = 1 AND r.turn = 5 AND r.agent_id = 1;
ROLLBACK;
UPDATE swarm.jobs SET params = params || '{"prompt_budget": 200}' WHERE id = 1;
BEGIN;
SELECT swarm._simulate_actions_step(1, 5) AS requests;
SELECT cardinality(r.seen) AS posts, length(r.vars ->> 'feed') AS feed_chars
FROM swarm.requests r WHERE r.job_id = 1 AND r.turn = 5 AND r.agent_id = 1;
ROLLBACK;
-- feed_size 0: nothing to read, but the prompt still offers whom the agent
-- follows and its communities.
UPDATE swarm.jobs SET params = params || '{"feed_size": 0}' WHERE id = 1;
BEGIN;
SELECT swarm._simulate_actions_step(1, 5) AS requests;
SELECT r.agent_id, r.seen, r.vars ->> 'feed' AS feed, r.vars ->> 'follows' AS follows,
       r.vars ->> 'communities' AS communities
FROM swarm.requests r WHERE r.job_id = 1 AND r.turn = 5
  AND r.agent_id IN (2, (SELECT min(agent_id) FROM swarm.follows WHERE job_id = 1)) ORDER BY r.agent_id;
ROLLBACK;
UPDATE swarm.jobs SET params = params || '{"feed_size": 4, "prompt_budget": 200}' WHERE id = 1;

-------------------------------------------------------------------------------
-- Time of day
-------------------------------------------------------------------------------

SELECT swarm.activity_profile(7, 1);
SELECT array_position(p, 1) - 1 AS peak_hour, min(x) AS least, max(x) AS most
FROM (SELECT swarm.activity_profile(7, 1) AS p) s, unnest(p) AS x GROUP BY p;
-- the population's rhythm: quiet at night, busy in the evening, 1 on average
SELECT h, round(swarm._rhythm(h)::numeric, 3) AS rhythm FROM generate_series(0, 23, 4) AS h;
SELECT round(avg(swarm._rhythm(h))::numeric, 6) AS mean_rhythm FROM generate_series(0, 23) AS h;

-------------------------------------------------------------------------------
-- Arguments
-------------------------------------------------------------------------------

SELECT swarm.simulate(2, actions => NULL);
SELECT swarm.simulate(2, actions => true, feed_weights => '[1, 2]');
SELECT swarm.simulate(2, actions => true, feed_weights => '{"friends": 1}');
SELECT swarm.simulate(2, actions => true, feed_weights => '{"hot": -1}');
SELECT swarm.simulate(2, actions => true, feed_weights => '{"hot": "lots"}');
SELECT swarm.simulate(2, actions => true, feed_weights => '{"hot": 0, "follows": 0}');
SELECT swarm.simulate(2, feed_weights => '{"hot": 1}');
SELECT swarm.simulate(2, start_time => now());
SELECT swarm.simulate(2, actions => true, step_minutes => 0);
SELECT swarm.simulate(2, actions => true, prompt_budget => 100);
SELECT count(*) AS jobs_made FROM swarm.jobs;

-------------------------------------------------------------------------------
-- Whole runs through the mock
-------------------------------------------------------------------------------

TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages, swarm.friendships,
         swarm.communities, swarm.community_members, swarm.agent_memory, swarm.actions, swarm.likes,
         swarm.reposts, swarm.follows, swarm.mutes, swarm.memberships, swarm.simulation_steps RESTART IDENTITY;
SELECT swarm.create_agents(300, 11);
SELECT swarm.build_friendships(4, 'small_world', 11);
SELECT swarm.create_communities(ARRAY['chess', 'jazz', 'hiking'], 60, 'interests', 11);
-- (wait()'s progress notices depend on timing)
SET client_min_messages = warning;

-- json_schema (the default endpoint's way): 4 steps of 60 agents.
SELECT swarm.simulate(4, activity => 0.2, seed => 42, actions => true) AS job \gset
SELECT status, total, succeeded, failed FROM swarm.wait(:job, '120 s');
-- the request asked for the schema; each message is one action, stored once
SELECT count(*) AS messages, count(DISTINCT m.id) AS distinct_messages,
       (SELECT count(*) FROM swarm.actions a WHERE a.job_id = :job) AS actions,
       (SELECT count(*) FROM swarm.actions a WHERE a.job_id = :job AND a.valid) AS valid
FROM swarm.messages m WHERE m.job_id = :job;
SELECT step, requests FROM swarm.simulation_steps WHERE job_id = :job ORDER BY step;
-- nearly every kind appears (the mock draws them by weight), and what
-- changed is in the typed tables
SELECT count(DISTINCT kind) >= 10 AS most_kinds FROM swarm.actions WHERE job_id = :job;
SELECT (SELECT count(*) FROM swarm.actions WHERE job_id = :job AND kind IN ('like', 'dislike') AND changed)
           >= (SELECT count(*) FROM swarm.likes WHERE job_id = :job) AS likes_ok,
       (SELECT count(*) FROM swarm.actions WHERE job_id = :job AND kind IN ('repost', 'quote'))
           = (SELECT count(*) FROM swarm.reposts WHERE job_id = :job) AS reposts_ok,
       (SELECT count(*) FROM swarm.actions WHERE job_id = :job AND kind = 'follow' AND changed)
           - (SELECT count(*) FROM swarm.actions WHERE job_id = :job AND kind = 'unfollow' AND changed)
           = (SELECT count(*) FROM swarm.follows WHERE job_id = :job) AS follows_ok,
       (SELECT count(*) FROM swarm.actions WHERE job_id = :job AND kind = 'mute' AND changed)
           = (SELECT count(*) FROM swarm.mutes WHERE job_id = :job) AS mutes_ok;
-- a like names a post the agent saw at that step
SELECT bool_and(a.post_id = ANY (m.seen)) AS liked_what_was_seen
FROM swarm.actions a JOIN swarm.messages m ON m.id = a.id
WHERE a.job_id = :job AND a.kind IN ('like', 'dislike', 'repost', 'quote', 'reply');
-- step 2 on sees step 1's posts: feeds are not empty
SELECT turn, count(*) FILTER (WHERE cardinality(seen) > 0) AS with_a_feed FROM swarm.messages
WHERE job_id = :job GROUP BY turn ORDER BY turn;
SELECT step, agents, prompt_tokens_max <= 1000 AS within_budget FROM swarm.step_tokens WHERE job_id = :job ORDER BY step;

-- Reproducible: the same seed, from the same memory, makes the same
-- prompts (the mock's replies hash them), so the same actions.
SELECT md5(string_agg(format('%s/%s/%s', m.turn, m.agent_id, m.content), '|' ORDER BY m.turn, m.agent_id)) AS run_a
FROM swarm.messages m WHERE m.job_id = :job \gset
DELETE FROM swarm.agent_memory;
SELECT swarm.simulate(4, activity => 0.2, seed => 42, actions => true) AS job_b \gset
SELECT status FROM swarm.wait(:job_b, '120 s');
SELECT md5(string_agg(format('%s/%s/%s', m.turn, m.agent_id, m.content), '|' ORDER BY m.turn, m.agent_id)) = :'run_a'
       AS same_run
FROM swarm.messages m WHERE m.job_id = :job_b;
-- each run grows its own graph
SELECT (SELECT count(*) FROM swarm.follows WHERE job_id = :job) = (SELECT count(*) FROM swarm.follows WHERE job_id = :job_b)
       AS same_graph_size;

-- The step builder builds a step of more agents than swarm.step_part_agents
-- in parts, each committed on its own (here 20: a first part of 4, then 20
-- at a time), and the worker sends the first while the next are built: the
-- same run again, each step noted with its parts, all built.
ALTER SYSTEM SET swarm.step_part_agents = 20;
SELECT pg_reload_conf();
SELECT pg_sleep(1);
DELETE FROM swarm.agent_memory;
SELECT swarm.simulate(4, activity => 0.2, seed => 42, actions => true) AS job_p \gset
SELECT status FROM swarm.wait(:job_p, '120 s');
SELECT md5(string_agg(format('%s/%s/%s', m.turn, m.agent_id, m.content), '|' ORDER BY m.turn, m.agent_id)) = :'run_a'
       AS same_run_in_parts
FROM swarm.messages m WHERE m.job_id = :job_p;
SELECT step, requests, parts, parts_built, part_size, agents IS NULL AS agents_let_go,
       ready_ms > 0 AND ready_ms <= build_ms AS ready_before_built
FROM swarm.simulation_steps WHERE job_id = :job_p ORDER BY step;
-- The parts left of a step whose simulation has ended (cancelled, say) are
-- not built: the step is closed at the parts it has.
BEGIN;
INSERT INTO swarm.simulation_steps (job_id, step, requests, build_ms, built_at, owner, parts, parts_built,
                                    part_size, agents, started_at)
VALUES (:job_p, 5, 4, 1, now(), current_user, 3, 1, 20, '{1,2,3,4,5,6,7,8,9,10}', now());
SELECT swarm._continue_step_build() = :job_p AS closed_the_step;
SELECT parts, parts_built, agents IS NULL AS agents_let_go FROM swarm.simulation_steps WHERE job_id = :job_p AND step = 5;
SELECT count(*) AS requests_made FROM swarm.requests WHERE job_id = :job_p AND turn = 5;
SELECT swarm._continue_step_build() IS NULL AS nothing_left;
ROLLBACK;
-- A part that cannot be built ends its simulation, saying why, and cancels
-- what the step's earlier parts had queued.
BEGIN;
INSERT INTO swarm.simulation_steps (job_id, step, requests, build_ms, built_at, owner, parts, parts_built,
                                    part_size, agents, started_at)
VALUES (:job_p, 5, 1, 1, now(), current_user, 3, 1, 20, '{1,2,3,4,5,6,7,8,9,10}', now());
INSERT INTO swarm.requests (job_id, agent_id, turn, owner) VALUES (:job_p, 1, 5, current_user);
SELECT swarm._fail_simulation(:job_p, 5, 'no room left');
SELECT status, error, cancelled, total = succeeded + failed + cancelled AS total_is_what_ended
FROM swarm.jobs WHERE id = :job_p;
SELECT status FROM swarm.requests WHERE job_id = :job_p AND turn = 5;
SELECT parts, parts_built, agents IS NULL AS agents_let_go FROM swarm.simulation_steps WHERE job_id = :job_p AND step = 5;
ROLLBACK;
ALTER SYSTEM RESET swarm.step_part_agents;
SELECT pg_reload_conf();
DELETE FROM swarm.agent_memory;
SELECT swarm.simulate(4, activity => 0.2, seed => 43, actions => true) AS job_c \gset
SELECT status FROM swarm.wait(:job_c, '120 s');
SELECT md5(string_agg(format('%s/%s/%s', m.turn, m.agent_id, m.content), '|' ORDER BY m.turn, m.agent_id)) <> :'run_a'
       AS another_seed_another_run
FROM swarm.messages m WHERE m.job_id = :job_c;

-- tools: an endpoint configured for them gets a tool and tool_choice, and
-- the call's arguments are read as the action.
SELECT swarm.add_endpoint('toolish', current_setting('swarm.base_url'), structured_output => 'tools');
SELECT structured_output FROM swarm.endpoints WHERE name = 'toolish';
SELECT swarm.simulate(2, activity => 0.1, seed => 42, actions => true, endpoints => ARRAY['toolish']) AS job_t \gset
SELECT status, total, succeeded FROM swarm.wait(:job_t, '120 s');
SELECT count(*) AS actions, count(*) FILTER (WHERE valid) AS valid FROM swarm.actions WHERE job_id = :job_t;
-- the mock answers a tool call with finish_reason tool_calls, a json_schema
-- request with stop: each job went the way its endpoint asks
SELECT (SELECT string_agg(DISTINCT finish_reason, ',') FROM swarm.messages WHERE job_id = :job_t) AS tools_job,
       (SELECT string_agg(DISTINCT finish_reason, ',') FROM swarm.messages WHERE job_id = :job) AS json_schema_job;
SELECT swarm.add_endpoint('bad', 'http://127.0.0.1:1', structured_output => 'grammar');
SELECT swarm.alter_endpoint('toolish', structured_output => 'json_schema');
SELECT structured_output FROM swarm.endpoints WHERE name = 'toolish';
SELECT swarm.drop_endpoint('toolish');

-- A model that answers nonsense: every reply recorded invalid, none applied,
-- the steps go on.
SELECT swarm.simulate(2, '[[mock:invalid_action]]', activity => 0.1, seed => 5, actions => true) AS job_i \gset
SELECT status, total, succeeded FROM swarm.wait(:job_i, '120 s');
SELECT count(*) AS actions, count(*) FILTER (WHERE valid) AS valid, count(DISTINCT reason) > 1 AS several_reasons
FROM swarm.actions WHERE job_id = :job_i;
SELECT (SELECT count(*) FROM swarm.likes WHERE job_id = :job_i) + (SELECT count(*) FROM swarm.follows WHERE job_id = :job_i)
       + (SELECT count(*) FROM swarm.reposts WHERE job_id = :job_i) AS applied;

-- With a clock: steps an hour apart from 03:00, fewer agents at night.
SELECT swarm.simulate(4, activity => 0.2, seed => 42, actions => true, start_time => '2026-03-02 03:00+00') AS job_k \gset
SELECT status, total FROM swarm.wait(:job_k, '120 s');
SELECT step, requests FROM swarm.simulation_steps WHERE job_id = :job_k ORDER BY step;
-- a fifth step would be at 07:00, and says so
BEGIN;
SELECT swarm._simulate_actions_step(:job_k, 5) > 0 AS built;
SELECT DISTINCT vars ->> 'clock' AS clock FROM swarm.requests WHERE job_id = :job_k AND turn = 5;
ROLLBACK;

RESET client_min_messages;

-- Row-level security: a user sees only their own simulations' actions.
CREATE ROLE actions_reader LOGIN;
GRANT swarm_user TO actions_reader;
SET ROLE actions_reader;
SELECT count(*) AS actions_seen, (SELECT count(*) FROM swarm.follows) AS follows_seen,
       (SELECT count(*) FROM swarm.simulation_steps) AS steps_seen FROM swarm.actions;
RESET ROLE;
DROP ROLE actions_reader;
