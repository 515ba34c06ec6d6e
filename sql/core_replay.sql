-- The response store and replay (docs/replay.md): answers kept under the
-- SHA-256 of their request body, replayed without a network call.
-- Endpoint: the mock (deterministic words from the body), and 'replay_dead', an
-- endpoint that refuses every connection: a job routed there succeeds only
-- if it calls no endpoint.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages, swarm.responses RESTART IDENTITY;
SET client_min_messages = warning;

INSERT INTO swarm.agents (name, persona)
SELECT 'agent' || g, jsonb_build_object('occupation', 'baker') FROM generate_series(1, 8) g;
SELECT swarm.add_endpoint('replay_dead', 'http://127.0.0.1:1/v1');

-- The settings: off by default, any user may set them, bad values refused.
SHOW swarm.response_store;
SHOW swarm.replay;
SET swarm.replay = 'sometimes';
SET swarm.replay = true;
SHOW swarm.replay;
RESET swarm.replay;

-- 1. Kept: with swarm.response_store = on, each answer is kept once, under
-- a 32-byte key, with its tokens and the endpoint that gave it.
SET swarm.response_store = on;
SELECT swarm.generate('Say hi', agents => ARRAY[1, 2, 3, 4, 5]) AS recorded \gset
SELECT status, succeeded FROM swarm.wait(:recorded);
SELECT params -> 'response_store' AS kept, params ? 'replay' AS replayed FROM swarm.jobs WHERE id = :recorded;
SELECT count(*) AS responses, count(DISTINCT key) AS keys, bool_and(length(key) = 32) AS sha256,
       bool_and(r.content = m.content AND r.model = m.model AND r.finish_reason = m.finish_reason
                AND r.prompt_tokens = m.prompt_tokens AND r.completion_tokens = m.completion_tokens) AS as_stored,
       bool_and(r.endpoint = 'default') AS endpoint, bool_and(r.owner = current_user) AS owner
FROM swarm.responses r JOIN swarm.messages m ON m.job_id = r.job_id AND m.agent_id = r.agent_id
WHERE r.job_id = :recorded;

-- The same prompts again, still storing: the first answer stays.
SELECT swarm.generate('Say hi', agents => ARRAY[1, 2, 3, 4, 5]) AS again \gset
SELECT status FROM swarm.wait(:again);
SELECT count(*) AS responses, count(*) FILTER (WHERE job_id = :recorded) AS first_kept FROM swarm.responses;
RESET swarm.response_store;

-- A job made without the setting keeps nothing.
SELECT swarm.generate('Say bye', agents => ARRAY[1]) AS unkept \gset
SELECT status FROM swarm.wait(:unkept);
SELECT count(*) AS kept_of_unkept FROM swarm.responses WHERE job_id = :unkept;

-- 2. Replayed: the same prompts answered from the store, routed to an
-- endpoint that refuses every connection: no network call, the same words;
-- agent 6 was never asked this prompt: its request fails, saying why.
SET swarm.replay = on;
SELECT swarm.generate('Say hi', agents => ARRAY[1, 2, 3, 4, 5, 6], endpoints => ARRAY['replay_dead']) AS replay \gset
SELECT status, succeeded, failed FROM swarm.wait(:replay);
SELECT params ->> 'replay' AS replay_mode FROM swarm.jobs WHERE id = :replay;
SELECT count(*) AS replayed,
       bool_and(m.content = o.content) AS same_words,
       bool_and(m.latency_ms = 0) AS no_latency,
       bool_and(m.prompt_tokens = o.prompt_tokens AND m.completion_tokens = o.completion_tokens) AS same_tokens
FROM swarm.messages m JOIN swarm.messages o ON o.job_id = :recorded AND o.agent_id = m.agent_id
WHERE m.job_id = :replay;
SELECT agent_id, status, last_error FROM swarm.requests WHERE job_id = :replay;

-- Another prompt is another key: nothing to replay.
SELECT swarm.generate('Say hello', agents => ARRAY[1], endpoints => ARRAY['replay_dead']) AS other \gset
SELECT status, succeeded, failed FROM swarm.wait(:other);

-- 3. fallthrough: a stored answer is replayed, a missing one is sent.
SET swarm.replay = fallthrough;
SELECT swarm.generate('Say hi', agents => ARRAY[5, 6]) AS mixed \gset
SELECT status, succeeded, failed FROM swarm.wait(:mixed);
SELECT agent_id, latency_ms = 0 AS from_store FROM swarm.messages WHERE job_id = :mixed ORDER BY agent_id;
RESET swarm.replay;

-- 4. Another user: sees none of these answers, and replays none of them.
CREATE ROLE swarm_regress_carol IN ROLE swarm_user;
SET ROLE swarm_regress_carol;
SELECT count(*) AS carol_sees FROM swarm.responses;
SET swarm.replay = on;
SELECT swarm.generate('Say hi', agents => ARRAY[1, 2]) AS carol_job \gset
SELECT status, succeeded, failed FROM swarm.wait(:carol_job);
SELECT swarm.prune_responses() AS carol_pruned;
RESET swarm.replay;
RESET ROLE;
SELECT count(*) AS still_kept FROM swarm.responses;

-- 5. Simulations: a run with actions recorded, then replayed through the
-- dead endpoint, gives the same posts and actions (a seeded run with the same
-- answers builds the same prompts, step after step).
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength)
SELECT a, b, date '2026-01-01', 0.5 FROM generate_series(1, 8) a, generate_series(1, 8) b WHERE a <> b AND abs(a - b) <= 2;
SET swarm.response_store = on;
SELECT swarm.simulate(3, activity => 0.5, seed => 42, actions => true) AS sim \gset
SELECT status, succeeded FROM swarm.wait(:sim);
SELECT count(*) AS kept_of_sim, count(*) FILTER (WHERE content LIKE '{%') AS actions_kept
FROM swarm.responses WHERE job_id = :sim;
RESET swarm.response_store;
TRUNCATE swarm.agent_memory;
SET swarm.replay = on;
SELECT swarm.simulate(3, activity => 0.5, seed => 42, actions => true, endpoints => ARRAY['replay_dead']) AS sim_replay \gset
SELECT status, succeeded, failed FROM swarm.wait(:sim_replay);
RESET swarm.replay;
SELECT (SELECT md5(string_agg(concat_ws(':', agent_id, turn, content), ',' ORDER BY agent_id, turn))
        FROM swarm.messages WHERE job_id = :sim)
     = (SELECT md5(string_agg(concat_ws(':', agent_id, turn, content), ',' ORDER BY agent_id, turn))
        FROM swarm.messages WHERE job_id = :sim_replay) AS same_messages,
       (SELECT md5(string_agg(concat_ws(':', agent_id, step, kind, valid, target_agent_id, content), ',' ORDER BY agent_id, step))
        FROM swarm.actions WHERE job_id = :sim)
     = (SELECT md5(string_agg(concat_ws(':', agent_id, step, kind, valid, target_agent_id, content), ',' ORDER BY agent_id, step))
        FROM swarm.actions WHERE job_id = :sim_replay) AS same_actions;

-- 6. Pruning: by job, by age; bad ages refused.
SELECT swarm.prune_responses(job => :recorded) AS pruned_job;
SELECT swarm.prune_responses(interval '1 hour') AS pruned_old;
SELECT swarm.prune_responses(interval '-1 hour');
SELECT swarm.prune_responses() AS pruned_all;
SELECT count(*) AS left_over FROM swarm.responses;

SELECT swarm.drop_endpoint('replay_dead');
DROP ROLE swarm_regress_carol;
