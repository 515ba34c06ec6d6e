-- pg_swarm demo: the design document's scenarios, run inside PostgreSQL.
\pset pager off
\timing off
CREATE EXTENSION pg_swarm;
SET client_min_messages = notice;

\echo
\echo '== 1. Mass agent creation: 500 agents with generated personas (seeded)'
SELECT clock_timestamp() AS t0 \gset
SELECT swarm.create_agents(500, seed => 42) AS agents_created;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 3) AS seconds,
       round(500 / greatest(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz), 1e-6)) AS agents_per_second;
SELECT id, name, persona->>'occupation' AS occupation, persona->>'location' AS location,
       persona->'interests' AS interests
FROM swarm.agents ORDER BY id LIMIT 3;

\echo
\echo '== 2. A social network: up to 5 friends each (small world), and communities'
SELECT swarm.build_friendships(5, 'small_world', seed => 42) AS friendships;
SELECT round((SELECT count(*) FROM swarm.friendships)::numeric / (SELECT count(*) FROM swarm.agents), 2)
           AS avg_friends_per_agent,
       (SELECT max(n) FROM (SELECT count(*) AS n FROM swarm.friendships GROUP BY agent_id) f) AS max_friends;
SELECT swarm.create_communities(ARRAY['chess club', 'jazz lovers', 'hikers', 'book circle'],
                                max_members_per_community => 150, strategy => 'friendships') AS memberships;
SELECT c.name, count(*) AS members FROM swarm.communities c
JOIN swarm.community_members m ON m.community_id = c.id GROUP BY c.name ORDER BY c.name;

\echo
\echo '== 3. Message generation for 100 and 500 agents (100 ms endpoint, 50 in flight)'
\echo '   (the design document: 0.5 s and 2.1 s)'
SET client_min_messages = warning;
SELECT swarm.generate('Say something about your day.', agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT 100)) AS job \gset
SELECT total AS agents, round(extract(epoch FROM finished_at - created_at)::numeric, 2) AS seconds FROM swarm.wait(:job);
SELECT swarm.generate('Say something about your day.', agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT 500)) AS job \gset
SELECT total AS agents, round(extract(epoch FROM finished_at - created_at)::numeric, 2) AS seconds FROM swarm.wait(:job);

\echo
\echo '== 4. Streaming: 50 agents, results committed in batches and announced on a channel'
LISTEN demo;
SELECT swarm.generate('What should the community build next?', channel => 'demo',
                      agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT 50)) AS job \gset
SELECT status, succeeded, failed FROM swarm.wait(:job);
SELECT a.name, left(m.content, 90) AS message
FROM swarm.messages m JOIN swarm.agents a ON a.id = m.agent_id
WHERE m.job_id = :job ORDER BY m.id LIMIT 5;
UNLISTEN demo;

\echo
\echo '== 5. Progress of every job, and the engine''s metrics'
SELECT job_id, status, total, done, failed, rate_per_second, elapsed FROM swarm.job_progress ORDER BY job_id;
\x on
SELECT * FROM swarm.stats;
\x off
