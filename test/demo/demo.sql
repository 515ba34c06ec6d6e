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
\echo '== 5. Conversations: each of 500 agents talks to its closest friend, 3 turns each'
\echo '   A session without LISTEN watches the job stream in with swarm.next_batch();'
\echo '   turn 2 of a conversation starts as soon as its turn 1 lands (no barrier).'
SELECT swarm.interact('Plan something fun for the weekend.', turns => 3, channel => 'demo') AS job \gset
SET client_min_messages = notice;
DO $$
DECLARE
    job bigint := (SELECT max(id) FROM swarm.jobs);
    t0 timestamptz := clock_timestamp();
    reported timestamptz := clock_timestamp();
    watched bigint;
    last bigint := 0;
    m record;
    per_turn integer[] := ARRAY[0, 0, 0];
    n integer;
BEGIN
    LOOP
        n := 0;
        FOR m IN SELECT * FROM swarm.next_batch(job, last, batch_size => 500) LOOP
            n := n + 1;
            per_turn[m.turn] := per_turn[m.turn] + 1;
            last := m.id;
            watched := coalesce(watched, m.conversation_id);
            IF m.conversation_id = watched THEN
                RAISE NOTICE '  conversation %, turn %: % -> %: %', watched, m.turn,
                    (SELECT name FROM swarm.agents WHERE id = m.agent_id),
                    (SELECT name FROM swarm.agents WHERE id = m.to_agent_id), left(m.content, 40);
            END IF;
        END LOOP;
        IF n = 0 OR clock_timestamp() - reported > interval '0.5 s' THEN
            RAISE NOTICE '% s: turn 1: % stored, turn 2: %, turn 3: %',
                round(extract(epoch FROM clock_timestamp() - t0)::numeric, 1), per_turn[1], per_turn[2], per_turn[3];
            reported := clock_timestamp();
        END IF;
        EXIT WHEN n = 0;
    END LOOP;
END
$$;
SET client_min_messages = warning;
SELECT total, succeeded, round(extract(epoch FROM finished_at - started_at)::numeric, 2) AS seconds
FROM swarm.jobs WHERE id = :job;
-- a thread reads back in order
SELECT m.turn, a.name AS speaker, b.name AS listener, m.reply_to, left(m.content, 60) AS message
FROM swarm.messages m JOIN swarm.agents a ON a.id = m.agent_id JOIN swarm.agents b ON b.id = m.to_agent_id
WHERE m.conversation_id = (SELECT min(conversation_id) FROM swarm.messages WHERE job_id = :job)
ORDER BY m.turn;

\echo
\echo '== 6. The feed: 4 steps, a fifth of the agents active at each; each sees its'
\echo '   friends'' and communities'' recent posts and its own memory'
SELECT swarm.simulate(4, 'A heatwave hits the city.', activity => 0.2, seed => 42) AS sim \gset
SELECT status, total, succeeded, round(extract(epoch FROM finished_at - started_at)::numeric, 2) AS seconds
FROM swarm.wait(:sim);
-- posts and replies per step
SELECT step, count(*) AS posts, count(reply_to) AS replies, round(avg(feed_size), 1) AS avg_feed
FROM swarm.posts WHERE job_id = :sim GROUP BY step ORDER BY step;
-- posts per community per step (a chart's series)
SELECT c.name AS community, p.step, count(*) AS posts
FROM swarm.posts p JOIN swarm.community_members cm ON cm.agent_id = p.agent_id
JOIN swarm.communities c ON c.id = cm.community_id
WHERE p.job_id = :sim GROUP BY c.name, p.step ORDER BY c.name, p.step;
-- what one agent remembers (MessagePack in swarm.agents.state)
SELECT name, jsonb_pretty(swarm.unpack(state) -> 'memory') AS memory
FROM swarm.agents WHERE state IS NOT NULL
ORDER BY (swarm.unpack(state) -> 'memory' ->> 'posts')::integer DESC, id LIMIT 1;

\echo
\echo '== 7. Progress of every job, and the engine''s metrics'
SELECT job_id, status, total, done, failed, rate_per_second, elapsed FROM swarm.job_progress ORDER BY job_id;
\x on
SELECT * FROM swarm.stats;
\x off
