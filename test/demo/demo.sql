-- pg_swarm demo: the design document's scenarios, run inside PostgreSQL.
\pset pager off
\timing off
CREATE EXTENSION pg_swarm;
SET client_min_messages = notice;

\echo
\echo '== 1. Mass agent creation: 1,000 agents'
\timing on
SELECT to_regproc('swarm.create_agents') IS NOT NULL AS have_generator \gset
\if :have_generator
SELECT swarm.create_agents(1000, seed => 42) AS agents_created;
\else
INSERT INTO swarm.agents (name, persona)
SELECT 'Agent ' || g, jsonb_build_object('interests', jsonb_build_array('chess', 'jazz'))
FROM generate_series(1, 1000) g;
\endif
\timing off
SELECT id, name, left(persona::text, 110) AS persona FROM swarm.agents ORDER BY id LIMIT 3;

\echo
\echo '== 2. Message generation for 100, 500 and 1,000 agents (100 ms endpoint, 50 in flight)'
\echo '   (the design document: 0.5 s, 2.1 s, 3.8 s)'
SET client_min_messages = warning;
SELECT swarm.generate('Say something about your day.', agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT 100)) AS job \gset
SELECT total AS agents, round(extract(epoch FROM finished_at - created_at)::numeric, 2) AS seconds FROM swarm.wait(:job);
SELECT swarm.generate('Say something about your day.', agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT 500)) AS job \gset
SELECT total AS agents, round(extract(epoch FROM finished_at - created_at)::numeric, 2) AS seconds FROM swarm.wait(:job);
SELECT swarm.generate('Say something about your day.') AS job \gset
SELECT total AS agents, round(extract(epoch FROM finished_at - created_at)::numeric, 2) AS seconds FROM swarm.wait(:job);

\echo
\echo '== 3. Streaming: results arrive in committed batches, announced on a channel'
LISTEN demo;
SELECT swarm.generate('What should the community build next?', channel => 'demo',
                      agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT 50)) AS job \gset
SELECT status, succeeded, failed FROM swarm.wait(:job);
SELECT a.name, left(m.content, 90) AS message
FROM swarm.messages m JOIN swarm.agents a ON a.id = m.agent_id
WHERE m.job_id = :job ORDER BY m.id LIMIT 5;
UNLISTEN demo;

\echo
\echo '== 4. Progress of every job, and the engine''s metrics'
SELECT job_id, status, total, done, failed, rate_per_second, elapsed FROM swarm.job_progress ORDER BY job_id;
\x on
SELECT * FROM swarm.stats;
\x off
