-- Streaming results with swarm.next_batch(): a loop that asks for what is new
-- reads every message of a running job exactly once, in commit order.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
-- (jobs of earlier tests must not run on while their tables are emptied)
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages RESTART IDENTITY;
SET client_min_messages = warning;
INSERT INTO swarm.agents (name) SELECT 'agent' || g FROM generate_series(1, 300) g;

-- Results land over a third of a second (each agent waits its id in ms at the mock).
SELECT swarm.generate('stream', user_template => '[[mock:delay={agent_id}]] {context}') AS job \gset

CREATE TEMP TABLE seen (id bigint, request_id bigint, call integer);
DO $$
DECLARE
    last bigint := 0;
    calls integer := 0;
    got integer;
    job bigint := (SELECT max(id) FROM swarm.jobs);
BEGIN
    LOOP
        calls := calls + 1;
        INSERT INTO seen SELECT b.id, b.request_id, calls
        FROM swarm.next_batch(job, last, batch_size => 50, wait => '5 s') b;
        GET DIAGNOSTICS got = ROW_COUNT;
        EXIT WHEN got = 0;
        last := (SELECT max(id) FROM seen);
    END LOOP;
END
$$;

-- every message once, none missing, and each call's ids above the previous call's
SELECT count(*) AS read, count(DISTINCT request_id) AS distinct_requests,
       (SELECT count(*) FROM swarm.messages WHERE job_id = :job) AS stored,
       count(DISTINCT call) > 2 AS several_batches
FROM seen;
SELECT bool_and(prev_max < min_id) AS in_order
FROM (SELECT call, min(id) AS min_id,
             lag(max(id)) OVER (ORDER BY call) AS prev_max
      FROM seen GROUP BY call) c
WHERE prev_max IS NOT NULL;
SELECT status FROM swarm.jobs WHERE id = :job;

-- after the end: an empty answer at once
SELECT count(*) AS after_end FROM swarm.next_batch(:job, (SELECT max(id) FROM seen), wait => '10 s');
-- bad input
SELECT * FROM swarm.next_batch(:job, 0, batch_size => 0);
SELECT * FROM swarm.next_batch(:job, 0, wait => '-1 s');
SELECT * FROM swarm.next_batch(424242);
