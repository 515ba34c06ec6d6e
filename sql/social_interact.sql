-- Interactions: conversations between friends (swarm.interact) and the feed
-- (swarm.simulate), run by the worker against the mock endpoint.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
-- (jobs of earlier tests must not run on while their tables are emptied)
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages, swarm.friendships,
         swarm.communities, swarm.community_members RESTART IDENTITY;
SELECT setval('swarm.conversation_ids', 1, false);

-- What an agent is told about the one it talks to.
SELECT swarm.persona_summary('{"age": 34, "occupation": "nurse", "location": "Lyon, France", "interests": ["chess", "jazz"], "writing_style": "warm and chatty"}');
SELECT swarm.persona_summary('{"mood": "grumpy"}');
SELECT swarm.persona_summary(NULL);
SELECT swarm.persona_summary('{"age": null, "occupation": "pilot", "interests": [], "writing_style": null}');
SELECT swarm.persona_summary('{"age": 40.5, "location": {"city": "Oslo"}, "interests": [null, "tea", 7]}');
SELECT swarm.persona_summary('["age", "occupation"]');
SELECT length(swarm.persona_summary(jsonb_build_object('bio', repeat('é', 400)))) AS fallback_chars;

-------------------------------------------------------------------------------
-- Conversations
-------------------------------------------------------------------------------

-- Ada's strongest friend is Bo; Cy talks to Di; every request that names
-- "Slow" waits a second at the mock; Loner has no friend.
INSERT INTO swarm.agents (name, persona) VALUES
    ('Ada', '{"occupation": "engineer"}'),
    ('Bo', '{"occupation": "baker"}'),
    ('Cy', '{"occupation": "pilot"}'),
    ('Di', '{"occupation": "diver"}'),
    ('Slow [[mock:delay=1000]]', '{"occupation": "sloth"}'),
    ('Eve', '{"occupation": "editor"}'),
    ('Loner', '{}');
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength)
SELECT a, b, now(), s FROM (VALUES (1, 2, 0.9), (1, 3, 0.3), (3, 4, 0.8), (5, 6, 0.7)) AS f(x, y, s),
     LATERAL (VALUES (x, y), (y, x)) AS d(a, b);

-- The history comes first in the user message, so that the mock's echo (the
-- first 160 bytes of each message) shows what each turn was told.
SELECT swarm.interact('a picnic', turns => 3, agents => ARRAY[1, 3, 5, 7],
                      system_template => '{name} to {partner_name} ({partner})',
                      user_template => '{history} || {context}') AS job \gset
SELECT kind, total, params->>'turns' AS turns FROM swarm.jobs WHERE id = :job;
SET client_min_messages = warning;

-- Read the job as a stream while it runs: every message once, in order.
CREATE TEMP TABLE streamed (id bigint, call integer);
DO $$
DECLARE
    last bigint := 0;
    calls integer := 0;
    got integer;
BEGIN
    LOOP
        calls := calls + 1;
        INSERT INTO streamed SELECT b.id, calls
        FROM swarm.next_batch((SELECT max(id) FROM swarm.jobs), last, batch_size => 2, wait => '10 s') b;
        GET DIAGNOSTICS got = ROW_COUNT;
        EXIT WHEN got = 0;
        last := (SELECT max(id) FROM streamed);
    END LOOP;
END
$$;
SELECT count(*) AS streamed, count(DISTINCT id) AS distinct_ids,
       (SELECT count(*) FROM swarm.messages WHERE job_id = :job) AS stored,
       bool_and(id > coalesce(prev, 0)) AS in_order
FROM (SELECT id, lag(id) OVER (ORDER BY call, id) AS prev FROM streamed) s;

SELECT status, total, succeeded, failed FROM swarm.jobs WHERE id = :job;

-- Each thread: turns 1..3, the two sides alternating, each turn answering the last.
SELECT o.name AS opener,
       string_agg(format('%s:%s>%s', m.turn, split_part(s.name, ' ', 1), split_part(t.name, ' ', 1)),
                  ' ' ORDER BY m.turn) AS thread,
       bool_and(CASE WHEN m.turn = 1 THEN m.reply_to IS NULL
                     ELSE m.reply_to = (SELECT p.id FROM swarm.messages p
                                        WHERE p.conversation_id = m.conversation_id AND p.turn = m.turn - 1) END) AS replies_chain
FROM swarm.messages m
JOIN swarm.agents s ON s.id = m.agent_id
JOIN swarm.agents t ON t.id = m.to_agent_id
JOIN swarm.messages first ON first.conversation_id = m.conversation_id AND first.turn = 1
JOIN swarm.agents o ON o.id = first.agent_id
WHERE m.job_id = :job
GROUP BY o.name ORDER BY o.name;

-- Each speaker was told who it talks to, and the conversation so far.
SELECT m.turn,
       m.content LIKE '[mock] ' || split_part(s.name, ' ', 1) || '% to ' || split_part(t.name, ' ', 1) || '%' AS knows_partner,
       CASE WHEN m.turn = 1 THEN m.content LIKE '%:: (nothing yet: you open the conversation) || a picnic%'
            ELSE m.content LIKE '%:: Ada: [mock] Ada to Bo%' END AS saw_history
FROM swarm.messages m
JOIN swarm.agents s ON s.id = m.agent_id
JOIN swarm.agents t ON t.id = m.to_agent_id
WHERE m.job_id = :job AND s.name = 'Ada' OR m.job_id = :job AND t.name = 'Ada'
ORDER BY m.turn;

-- No barrier: both fast conversations ended before the slow one's first turn
-- was even stored.
SELECT (SELECT max(m.id) FROM swarm.messages m JOIN swarm.agents a ON a.id = m.agent_id
        WHERE m.job_id = :job AND m.turn = 3 AND a.name IN ('Ada', 'Cy'))
     < (SELECT m.id FROM swarm.messages m JOIN swarm.agents a ON a.id = m.agent_id
        WHERE m.job_id = :job AND m.turn = 1 AND a.name LIKE 'Slow%') AS fast_threads_did_not_wait;

-- A failed turn ends its conversation; its later turns come off the total.
INSERT INTO swarm.agents (name, persona) VALUES ('Hal', '{}'), ('Ivy', '{"note": "[[mock:status=400]]"}');
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength) VALUES (8, 9, now(), 0.5), (9, 8, now(), 0.5);
SELECT swarm.interact('x', turns => 3, agents => ARRAY[8], system_template => '{name} {persona.note}') AS job2 \gset
SELECT status, total, succeeded, failed FROM swarm.wait(:job2, '20 s');
SELECT turn, status, last_error LIKE 'HTTP 400%' AS http_400 FROM swarm.requests WHERE job_id = :job2;

-- Cancelled while its first turn is in flight: the late answer is dropped and
-- no later turn is ever enqueued.
INSERT INTO swarm.agents (name) VALUES ('Pat [[mock:delay=800]]'), ('Quin');
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength) VALUES (10, 11, now(), 0.5), (11, 10, now(), 0.5);
SELECT swarm.interact('y', turns => 3, agents => ARRAY[10]) AS job4 \gset
SELECT pg_sleep(0.3);
SELECT swarm.cancel(:job4);
SELECT pg_sleep(1.2);
SELECT status, total, succeeded, cancelled FROM swarm.jobs WHERE id = :job4;
SELECT (SELECT count(*) FROM swarm.messages WHERE job_id = :job4) AS messages,
       (SELECT string_agg(turn || ':' || status, ' ') FROM swarm.requests WHERE job_id = :job4) AS requests;

-- Nobody with a friend: an empty job, ended at once.
SET client_min_messages = notice;
SELECT swarm.interact('alone', agents => ARRAY[7]) AS job3 \gset
SELECT status, total FROM swarm.jobs WHERE id = :job3;

-- Bad input
SELECT swarm.interact(NULL);
SELECT swarm.interact('x', turns => 0);
SELECT swarm.interact('x', turns => 101);
SELECT swarm.interact('x', agents => ARRAY[1, 4242]);
SET client_min_messages = warning;

-------------------------------------------------------------------------------
-- The feed
-------------------------------------------------------------------------------

SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages, swarm.agent_memory RESTART IDENTITY;
SELECT swarm.create_agents(30, 5);
SELECT swarm.build_friendships(3, 'random', 5) > 0 AS has_friends;
SELECT swarm.create_communities(ARRAY['red', 'blue'], 10, 'random', 5);
-- state that is not MessagePack: the simulation neither reads nor writes it
UPDATE swarm.agents SET state = '\xc1' WHERE id % 2 = 0;

-- (the task and the memory come first in the messages, for the mock's echo)
SELECT swarm.simulate(3, 'A rainy Monday', activity => 0.5, feed_size => 4, seed => 9,
                      system_template => '{name}: {memory}',
                      user_template => '{task} || {feed}') AS sim \gset
SELECT status, total, succeeded, failed, params->>'active_per_step' AS per_step
FROM swarm.wait(:sim, '30 s') j;

-- Each step: its share of agents, each once; step s+1 was stored after step s.
SELECT step, count(*) AS posts, count(DISTINCT agent_id) AS authors, max(feed_size) <= 4 AS feed_capped,
       bool_and(step = 1) = bool_and(feed_size = 0) AS first_step_feeds_empty
FROM swarm.posts WHERE job_id = :sim GROUP BY step ORDER BY step;
SELECT bool_and(prev_max < min_id) AS steps_in_order
FROM (SELECT step, min(id) AS min_id, lag(max(id)) OVER (ORDER BY step) AS prev_max
      FROM swarm.posts WHERE job_id = :sim GROUP BY step) s
WHERE prev_max IS NOT NULL;

-- The feed only shows what the agent could have seen: earlier posts of the
-- same simulation, by a friend or a member of one of its communities.
SELECT count(*) > 0 AS feeds_shown,
       count(*) FILTER (WHERE NOT (
           s.job_id = p.job_id AND s.step < p.step AND s.agent_id <> p.agent_id
           AND (EXISTS (SELECT 1 FROM swarm.friendships f WHERE f.agent_id = p.agent_id AND f.friend_id = s.agent_id)
                OR EXISTS (SELECT 1 FROM swarm.community_members a JOIN swarm.community_members b USING (community_id)
                           WHERE a.agent_id = p.agent_id AND b.agent_id = s.agent_id)))) AS not_visible
FROM swarm.posts p
JOIN swarm.messages pm ON pm.id = p.id
CROSS JOIN LATERAL unnest(pm.seen) AS seen(post)
LEFT JOIN swarm.posts s ON s.id = seen.post
WHERE p.job_id = :sim;

-- A reply answers the top post of the feed, addressed to its author.
SELECT count(*) > 0 AS some_replies,
       bool_and(m.reply_to = m.seen[1]) AS replies_top_post,
       bool_and(m.to_agent_id = r.agent_id) AS addressed_to_author,
       bool_and(m.content LIKE '%:: Reply to %''s post [1]%') AS was_asked_to_reply
FROM swarm.messages m JOIN swarm.messages r ON r.id = m.reply_to
WHERE m.job_id = :sim;
SELECT count(*) AS posts_with_target_but_no_reply FROM swarm.posts
WHERE job_id = :sim AND (reply_to IS NULL) <> (to_agent_id IS NULL);

-- Memory: what each author said last, and how often, as MessagePack in
-- swarm.agent_memory, under the job's owner; the agents' own state is as it was.
SELECT count(*) AS authors,
       bool_and(am.owner = j.owner) AS owner_is_jobs,
       bool_and((swarm.unpack(am.memory) ->> 'posts')::bigint = w.posts) AS counts_posts,
       bool_and(swarm.unpack(am.memory) -> 'said' ->> -1 = left(w.last_content, 160)) AS remembers_last_post,
       bool_and(jsonb_array_length(swarm.unpack(am.memory) -> 'said') <= 3) AS kept_short
FROM swarm.agent_memory am
JOIN swarm.jobs j ON j.id = :sim
JOIN (SELECT agent_id, count(*) AS posts, (array_agg(content ORDER BY id DESC))[1] AS last_content
      FROM swarm.posts WHERE job_id = :sim GROUP BY agent_id) w ON w.agent_id = am.agent_id;
SELECT count(*) FILTER (WHERE state = '\xc1') AS odd_states_untouched,
       count(*) FILTER (WHERE state IS NOT NULL AND state <> '\xc1') AS states_written
FROM swarm.agents;
-- ...and the memory is in the prompt of the author's next post.
SELECT count(*) > 0 AS memory_in_prompts
FROM swarm.posts p WHERE p.job_id = :sim AND p.content LIKE '%Lately you wrote%';

-- Charts: posts and replies per community per step.
SELECT c.name AS community, p.step, count(*) > 0 AS has_posts
FROM swarm.posts p
JOIN swarm.community_members cm ON cm.agent_id = p.agent_id
JOIN swarm.communities c ON c.id = cm.community_id
WHERE p.job_id = :sim
GROUP BY c.name, p.step ORDER BY c.name, p.step;

-- Bad input
SELECT swarm.simulate(0);
SELECT swarm.simulate(2, activity => 0);
SELECT swarm.simulate(2, activity => 1.5);
SELECT swarm.simulate(2, feed_size => -1);
SELECT swarm.simulate(2, reply_share => 2);
SELECT swarm.simulate(2, context => '  ');

-------------------------------------------------------------------------------
-- A conversation's next turn goes out ahead of turns that open others: with
-- 1,000 conversations and 200 in flight, most second turns are stored before
-- the last first turn (claimed first turns before next turns, none would be).
-------------------------------------------------------------------------------

SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages RESTART IDENTITY;
SELECT swarm.create_agents(1000, 2);
SELECT swarm.build_friendships(3, 'random', 2) > 0 AS has_friends;
SELECT swarm.interact('busy', turns => 2, user_template => '[[mock:delay=50]] {context}') AS busy \gset
SELECT status, succeeded = total AS all_stored FROM swarm.wait(:busy, '60 s');
SELECT count(*) FILTER (WHERE turn = 2 AND id < (SELECT max(id) FROM swarm.messages
                                                  WHERE job_id = :busy AND turn = 1)) > 300
           AS next_turns_went_first
FROM swarm.messages WHERE job_id = :busy;
