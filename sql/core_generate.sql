-- End to end against the mock endpoint: generate() -> worker -> messages.
-- The mock answers "[mock] <system message> :: <user message> w.. w..", so each
-- message shows which prompt it answers.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
-- (jobs of earlier tests must not run on while their tables are emptied)
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages RESTART IDENTITY;
SET client_min_messages = warning;	-- wait()'s progress NOTICEs vary with timing

INSERT INTO swarm.agents (name, persona)
SELECT 'agent' || g,
       jsonb_build_object('occupation', (ARRAY['baker', 'pilot', 'poet'])[1 + g % 3],
                          'interests', jsonb_build_array('chess', 'jazz'))
FROM generate_series(1, 300) g;

-- One request per agent; wait() returns the finished job.
SELECT swarm.generate('Introduce yourself') AS job \gset
SELECT id, status, total, succeeded, failed, cancelled,
       started_at >= created_at AS started, finished_at >= started_at AS finished
FROM swarm.wait(:job);

-- Every agent got exactly one message, answering its own prompt.
SELECT count(*) AS messages,
       count(DISTINCT m.agent_id) AS agents,
       count(DISTINCT m.request_id) AS requests,
       bool_and(m.content LIKE '[mock] You are ' || a.name || ',%') AS content_matches_agent,
       bool_and(m.content LIKE '%:: Introduce yourself%') AS content_matches_context,
       bool_and(m.model = 'gpt-3.5-turbo') AS model,
       bool_and(m.finish_reason = 'stop') AS finish_reason,
       bool_and(m.prompt_tokens > 0 AND m.completion_tokens > 0) AS usage,
       bool_and(m.latency_ms > 0) AS latency,
       bool_and(m.attempts = 1) AS first_attempt
FROM swarm.messages m JOIN swarm.agents a ON a.id = m.agent_id
WHERE m.job_id = :job;

-- Answered requests leave the queue; the job's token counts add up.
SELECT count(*) AS left_in_queue FROM swarm.requests WHERE job_id = :job;
SELECT j.prompt_tokens = sum(m.prompt_tokens) AS prompt_sum,
       j.completion_tokens = sum(m.completion_tokens) AS completion_sum
FROM swarm.jobs j JOIN swarm.messages m ON m.job_id = j.id
WHERE j.id = :job GROUP BY j.id;

-- A subset of agents, a model, max_tokens and both templates.
SELECT swarm.generate('the weather', agents => ARRAY[3, 1, 2, 3]::bigint[],
                      model => 'tiny-model', max_tokens => 3,
                      system_template => 'Agent {agent_id} ({persona.occupation}; likes {persona.interests}; unknown: [{persona.nope}] {braces})',
                      user_template => '{name} asks about {context}') AS job \gset
SELECT status, total, succeeded FROM swarm.wait(:job);
SELECT agent_id, content, model, completion_tokens
FROM swarm.messages WHERE job_id = :job ORDER BY agent_id;

-- The default system template uses name and persona as JSON.
SELECT system_template, user_template FROM swarm.jobs WHERE id = 1;

-- No agents selected: the job is complete at once.
CREATE TEMP TABLE no_agents AS SELECT id FROM swarm.agents WHERE false;
SELECT swarm.generate('nobody listens', agents => ARRAY(SELECT id FROM no_agents)) AS job \gset
SELECT status, total, finished_at IS NOT NULL AS finished FROM swarm.jobs WHERE id = :job;
SELECT (swarm.wait(:job)).status;

-- A timeout returns the job as it is.
SELECT swarm.generate('slow [[mock:delay=1000]]', agents => ARRAY[1]::bigint[]) AS job \gset
SELECT status FROM swarm.wait(:job, '200 milliseconds');
SELECT status, succeeded FROM swarm.wait(:job);

-- Progress views.
SELECT job_id, status, total, done, percent, eta FROM swarm.job_progress ORDER BY job_id;
SELECT total_operations >= 305 AS counted, succeeded >= 305 AS succeeded,
       success_rate > 0 AS rate, avg_response_ms > 0 AS avg, p50_ms <= p95_ms AND p95_ms <= p99_ms AS percentiles,
       peak_concurrency >= 1 AS peak, batches_committed > 0 AS batches, uptime > '0' AS up
FROM swarm.stats;
