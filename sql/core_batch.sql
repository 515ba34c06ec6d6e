-- Batch mode (docs/batch.md): a job's requests sent as files through the
-- endpoint's Files and Batch APIs by the batcher, stored as the synchronous
-- path stores them.
-- Endpoint: the mock's Batch API (test/run_all.sh starts it with batches
-- that validate in 20 ms, run 100 ms and finalize in 20 ms; the cluster
-- polls them every 50 ms); each line is answered as the chat endpoint
-- answers its body, so a batch job and a synchronous one of the same
-- prompts get the same words.  Its crashes and expiry: TAP 014.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages, swarm.responses, swarm.batches,
         swarm.friendships RESTART IDENTITY;
SET client_min_messages = warning;

-- A batch is marked stored in the transaction after its last lines are
-- stored: its job can end (swarm.wait() returns) a moment before.  This
-- waits (20 s at most) until every batch of `job` has settled.
CREATE FUNCTION pg_temp.batches_settled(job bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    FOR i IN 1 .. 400 LOOP
        IF NOT EXISTS (SELECT 1 FROM swarm.batches b
                       WHERE b.job_id = job AND b.state NOT IN ('stored', 'abandoned')) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN false;
END
$$;

INSERT INTO swarm.agents (name, persona)
SELECT 'agent' || g, jsonb_build_object('occupation', 'baker') FROM generate_series(1, 8) g;

-- Bad modes are refused, saying what is allowed.
SELECT swarm.generate('Say hi', mode => 'fast');
SELECT swarm.add_endpoint('batch_bad', current_setting('swarm.base_url'), mode => 'later');
SET swarm.replay = on;
SELECT swarm.generate('Say hi', mode => 'batch');
RESET swarm.replay;

-- 1. A batch job and a synchronous one of the same prompts: the same words,
-- one batch of 8 lines, stored once each.
SELECT swarm.generate('Say hi', mode => 'batch') AS batched \gset
SELECT swarm.generate('Say hi') AS synced \gset
SELECT status, succeeded, failed FROM swarm.wait(:batched);
SELECT status, succeeded, failed FROM swarm.wait(:synced);
SELECT pg_temp.batches_settled(:batched) AS settled;
SELECT count(*) AS pairs, count(*) FILTER (WHERE b.content = s.content) AS same_words,
       bool_and(b.attempts = 1) AS one_attempt
FROM swarm.messages b JOIN swarm.messages s USING (agent_id)
WHERE b.job_id = :batched AND s.job_id = :synced;
SELECT count(*) AS messages, count(DISTINCT request_id) AS requests FROM swarm.messages WHERE job_id = :batched;
SELECT state, status, requests, completed, failed, stored, retried, request_errors,
       input_file_id IS NOT NULL AS uploaded, provider_batch_id IS NOT NULL AS created,
       output_file_id IS NOT NULL AS output, error_file_id IS NULL AS no_errors,
       file_name ~ '^pg_swarm-[0-9]+-contrib_regression-batch-[0-9]+\.jsonl$' AS named, bytes > 0 AS sized
FROM swarm.batches WHERE job_id = :batched;
SELECT mode, batches FROM swarm.job_progress WHERE job_id IN (:batched, :synced) ORDER BY job_id;
SELECT count(*) AS requests_left FROM swarm.requests WHERE job_id = :batched;

-- 2. Errors, read as the synchronous path reads them: a 500 once is put back
-- and answered in a second batch; a 400 fails at once; a 503 every time
-- fails after swarm.max_retries (3) more batches.
SELECT swarm.generate('Once [[mock:status=500,times=1]]', agents => ARRAY[1, 2, 3], mode => 'batch') AS once \gset
SELECT swarm.generate('Bad [[mock:status=400]]', agents => ARRAY[4, 5], mode => 'batch') AS bad \gset
SELECT swarm.generate('Down [[mock:status=503]]', agents => ARRAY[6], mode => 'batch') AS down \gset
SELECT status, succeeded, failed FROM swarm.wait(:once);
SELECT status, succeeded, failed FROM swarm.wait(:bad);
SELECT status, succeeded, failed FROM swarm.wait(:down);
SELECT pg_temp.batches_settled(:once) AND pg_temp.batches_settled(:bad) AND pg_temp.batches_settled(:down) AS settled;
SELECT agent_id, attempts FROM swarm.messages WHERE job_id = :once ORDER BY agent_id;
SELECT job_id = :bad AS bad, agent_id, status, attempts, last_error
FROM swarm.requests WHERE job_id IN (:bad, :down) ORDER BY agent_id;
SELECT job_id = :once AS once, job_id = :bad AS bad, requests, stored, retried, request_errors
FROM swarm.batches WHERE job_id IN (:once, :bad, :down) ORDER BY id;

-- 3. Conversations: one batch per turn, the same words as synchronously.
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength)
SELECT a, b, date '2026-01-01', 0.5 FROM generate_series(1, 8) a, generate_series(1, 8) b WHERE a <> b AND abs(a - b) <= 2;
SELECT swarm.interact('Plan a picnic', turns => 3, agents => ARRAY[1, 3, 5], mode => 'batch') AS talk_b \gset
SELECT swarm.interact('Plan a picnic', turns => 3, agents => ARRAY[1, 3, 5]) AS talk_s \gset
SELECT status, succeeded, failed FROM swarm.wait(:talk_b);
SELECT status, succeeded, failed FROM swarm.wait(:talk_s);
SELECT pg_temp.batches_settled(:talk_b) AS settled;
SELECT count(*) AS turns, count(*) FILTER (WHERE b.content = s.content) AS same_words
FROM swarm.messages b JOIN swarm.messages s
  ON s.agent_id = b.agent_id AND s.turn = b.turn AND s.to_agent_id = b.to_agent_id
WHERE b.job_id = :talk_b AND s.job_id = :talk_s;
SELECT count(*) AS batches, sum(requests) AS lines, bool_and(state = 'stored') AS stored
FROM swarm.batches WHERE job_id = :talk_b;

-- 4. A simulation with actions, one batch per step, its answers kept; then
-- replayed synchronously from the store: the same posts and actions.  With
-- swarm.step_part_agents = 1 the replay's steps are built in parts of one
-- agent, but a batch-mode simulation's never are (a step is one batch
-- file): each of its steps is built whole, and the runs are the same.
ALTER SYSTEM SET swarm.step_part_agents = 1;
SELECT pg_reload_conf();
SELECT pg_sleep(1);
SET swarm.response_store = on;
SELECT swarm.simulate(3, activity => 0.5, seed => 42, actions => true, mode => 'batch') AS sim \gset
SELECT status, succeeded, failed FROM swarm.wait(:sim);
SELECT pg_temp.batches_settled(:sim) AS settled;
RESET swarm.response_store;
SELECT count(*) AS batches, sum(requests) AS lines FROM swarm.batches WHERE job_id = :sim;
SELECT string_agg(format('%s: %s agents, %s part(s)', step, requests, parts), '; ' ORDER BY step) AS batch_steps
FROM swarm.simulation_steps WHERE job_id = :sim;
SELECT count(*) AS kept FROM swarm.responses WHERE job_id = :sim;
TRUNCATE swarm.agent_memory;
SET swarm.replay = on;
SELECT swarm.simulate(3, activity => 0.5, seed => 42, actions => true) AS sim_replay \gset
SELECT status, succeeded, failed FROM swarm.wait(:sim_replay);
RESET swarm.replay;
SELECT string_agg(format('%s: %s agents, %s part(s)', step, requests, parts), '; ' ORDER BY step) AS replay_steps
FROM swarm.simulation_steps WHERE job_id = :sim_replay;
ALTER SYSTEM RESET swarm.step_part_agents;
SELECT pg_reload_conf();
SELECT pg_sleep(1);
SELECT (SELECT md5(string_agg(concat_ws(':', agent_id, turn, content), ',' ORDER BY agent_id, turn))
        FROM swarm.messages WHERE job_id = :sim)
     = (SELECT md5(string_agg(concat_ws(':', agent_id, turn, content), ',' ORDER BY agent_id, turn))
        FROM swarm.messages WHERE job_id = :sim_replay) AS same_messages,
       (SELECT md5(string_agg(concat_ws(':', agent_id, step, kind, valid, target_agent_id, content), ',' ORDER BY agent_id, step))
        FROM swarm.actions WHERE job_id = :sim)
     = (SELECT md5(string_agg(concat_ws(':', agent_id, step, kind, valid, target_agent_id, content), ',' ORDER BY agent_id, step))
        FROM swarm.actions WHERE job_id = :sim_replay) AS same_actions;

-- 5. An endpoint whose mode is batch: its jobs run in batch mode unless they
-- say otherwise; endpoint_status shows it.
SELECT swarm.add_endpoint('batch_ep', current_setting('swarm.base_url'), mode => 'batch');
SELECT swarm.generate('Say hi', agents => ARRAY[1, 2], endpoints => ARRAY['batch_ep']) AS by_endpoint \gset
SELECT swarm.generate('Say hi', agents => ARRAY[1, 2], endpoints => ARRAY['batch_ep'], mode => 'sync') AS sync_anyway \gset
SELECT status, succeeded FROM swarm.wait(:by_endpoint);
SELECT status, succeeded FROM swarm.wait(:sync_anyway);
SELECT pg_temp.batches_settled(:by_endpoint) AS settled;
SELECT job_id = :by_endpoint AS by_endpoint, mode FROM swarm.job_progress WHERE job_id IN (:by_endpoint, :sync_anyway) ORDER BY job_id;
SELECT endpoint, requests FROM swarm.batches WHERE job_id = :by_endpoint;
SELECT mode, batch_requests FROM swarm.endpoint_status WHERE endpoint = 'batch_ep';
SELECT swarm.alter_endpoint('batch_ep', mode => 'sync');
SELECT mode FROM swarm.endpoints WHERE name = 'batch_ep';
SELECT swarm.alter_endpoint('batch_ep', mode => 'never');

-- 6. Another user sees none of these batches.
CREATE ROLE swarm_regress_dave IN ROLE swarm_user;
SET ROLE swarm_regress_dave;
SELECT count(*) AS dave_sees FROM swarm.batches;
SELECT count(*) AS dave_jobs, count(*) FILTER (WHERE batches IS NOT NULL) AS dave_batches FROM swarm.job_progress;
SELECT count(*) > 0 AS dave_reads_status FROM swarm.endpoint_status WHERE mode IS NOT NULL;
RESET ROLE;

SELECT swarm.drop_endpoint('batch_ep');
DROP ROLE swarm_regress_dave;

-- (what the simulations recorded goes: later files reuse these job ids)
TRUNCATE swarm.actions, swarm.likes, swarm.reposts, swarm.follows, swarm.mutes, swarm.memberships,
         swarm.simulation_steps, swarm.agent_memory, swarm.responses, swarm.batches;
