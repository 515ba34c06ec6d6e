-- swarm.create_communities: the three strategies, the cap, bad input.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_swarm;
TRUNCATE swarm.agents, swarm.friendships, swarm.communities, swarm.community_members RESTART IDENTITY CASCADE;

SELECT swarm.create_agents(3000, 11) AS agents;
SELECT swarm.build_friendships(10, 'small_world', 11) AS friendships;

-- Share of friendships that stay inside one community of the given strategy.
CREATE TEMP VIEW intra AS
SELECT c.strategy, round(avg((ma.community_id = mb.community_id)::int), 2) AS intra_share
FROM swarm.friendships f
JOIN swarm.community_members ma ON ma.agent_id = f.agent_id
JOIN swarm.community_members mb ON mb.agent_id = f.friend_id
JOIN swarm.communities c ON c.id = ma.community_id
JOIN swarm.communities c2 ON c2.id = mb.community_id AND c2.strategy = c.strategy
GROUP BY c.strategy;

-- random: agents dealt round-robin in a seeded order; 3 x 500 = 1500 places.
SELECT swarm.create_communities(ARRAY['red', 'green', 'blue'], 500, 'random', 1) AS memberships;
SELECT c.name, c.max_members, c.strategy, count(m.agent_id) AS members
FROM swarm.communities c LEFT JOIN swarm.community_members m ON m.community_id = c.id
GROUP BY c.id ORDER BY c.id;
SELECT count(*) = count(DISTINCT agent_id) AS one_each FROM swarm.community_members;

-- Deterministic: the same seed deals the same agents.
CREATE TEMP TABLE first_deal AS
SELECT c.name, m.agent_id FROM swarm.community_members m JOIN swarm.communities c ON c.id = m.community_id;
DELETE FROM swarm.communities;                      -- members go with their community
SELECT count(*) AS members_left FROM swarm.community_members;
SELECT swarm.create_communities(ARRAY['red', 'green', 'blue'], 500, 'random', 1) AS memberships;
SELECT NOT EXISTS (
    SELECT c.name, m.agent_id FROM swarm.community_members m JOIN swarm.communities c ON c.id = m.community_id
    EXCEPT SELECT * FROM first_deal) AS same_deal;

-- More room than agents: everyone joins exactly one, sizes differ by at most one.
TRUNCATE swarm.communities, swarm.community_members RESTART IDENTITY;
SELECT swarm.create_communities(ARRAY['a', 'b', 'c', 'd', 'e', 'f', 'g'], 1000, 'random', 2) AS memberships;
SELECT max(n) - min(n) <= 1 AS balanced
FROM (SELECT count(*) n FROM swarm.community_members GROUP BY community_id) x;
SELECT * FROM intra;

-- interests: each community gathers the agents sharing one persona interest:
-- the one it is named after (case-insensitive), else the most popular free one.
TRUNCATE swarm.communities, swarm.community_members RESTART IDENTITY;
SELECT swarm.create_communities(ARRAY['Chess', 'book clubs', 'Night Owls', 'Misc'], 200, 'interests', 3) AS memberships;
SELECT c.name, c.topic IS NOT NULL AS has_topic, lower(c.name) = c.topic AS named_topic,
       count(m.agent_id) AS members, count(m.agent_id) <= c.max_members AS within_cap
FROM swarm.communities c LEFT JOIN swarm.community_members m ON m.community_id = c.id
GROUP BY c.id ORDER BY c.id;
SELECT count(DISTINCT topic) = 4 AS distinct_topics FROM swarm.communities;
SELECT bool_and(a.persona->'interests' ? c.topic) AS members_share_topic
FROM swarm.community_members m
JOIN swarm.communities c ON c.id = m.community_id JOIN swarm.agents a ON a.id = m.agent_id;
-- Under the cap, every agent with the interest joins.
TRUNCATE swarm.communities, swarm.community_members RESTART IDENTITY;
SELECT swarm.create_communities(ARRAY['chess'], 100000, 'interests') =
       (SELECT count(*) FROM swarm.agents WHERE persona->'interests' ? 'chess') AS all_chess_players;

-- friendships: label propagation on the graph, clusters packed into the
-- communities; friends end up together far more often than by chance (1/6;
-- the small world's ~10% rewired long-range ties bound what is reachable).
TRUNCATE swarm.communities, swarm.community_members RESTART IDENTITY;
SELECT swarm.create_communities(ARRAY['north', 'south', 'east', 'west', 'up', 'down'], 500, 'friendships', 4) AS memberships;
SELECT count(*) = count(DISTINCT agent_id) AS one_each,
       max(n) <= 500 AS within_cap
FROM swarm.community_members, LATERAL (SELECT count(*) n FROM swarm.community_members x
                                       WHERE x.community_id = community_members.community_id) s;
SELECT intra_share > 0.6 AS friends_together FROM intra;
TRUNCATE swarm.communities, swarm.community_members RESTART IDENTITY;
SELECT swarm.create_communities(ARRAY['north', 'south', 'east', 'west', 'up', 'down'], 500, 'random', 4) AS memberships;
SELECT intra_share < 0.25 AS random_mixes FROM intra;

-- The cap holds when the graph's clusters are bigger than it: 4 x 100 places.
TRUNCATE swarm.communities, swarm.community_members RESTART IDENTITY;
SELECT swarm.create_communities(ARRAY['w', 'x', 'y', 'z'], 100, 'friendships', 5) AS memberships;
SELECT bool_and(n = 100) AS full_not_over
FROM (SELECT count(*) n FROM swarm.community_members GROUP BY community_id) x;

-- Agents without friends still get places (as clusters of one).
TRUNCATE swarm.friendships;
TRUNCATE swarm.communities, swarm.community_members RESTART IDENTITY;
SELECT swarm.create_communities(ARRAY['loners'], 50, 'friendships', 6) AS memberships;

-- Bad input is refused with a clear error, and nothing is created.
SELECT swarm.create_communities(ARRAY[]::text[]);
SELECT swarm.create_communities(NULL);
SELECT swarm.create_communities(ARRAY['ok', '  ']);
SELECT swarm.create_communities(ARRAY['ok', NULL]);
SELECT swarm.create_communities(ARRAY['twice', 'twice']);
SELECT swarm.create_communities(ARRAY['loners']);
SELECT swarm.create_communities(ARRAY['new'], 0);
SELECT swarm.create_communities(ARRAY['new'], NULL);
SELECT swarm.create_communities(ARRAY['new'], 10, 'astrology');
SELECT count(*) AS communities FROM swarm.communities;

-- Deleting agents removes their memberships; truncating agents empties all.
DELETE FROM swarm.agents WHERE id IN (SELECT agent_id FROM swarm.community_members LIMIT 5);
SELECT count(*) AS members_left FROM swarm.community_members;
TRUNCATE swarm.agents;
SELECT (SELECT count(*) FROM swarm.community_members) + (SELECT count(*) FROM swarm.friendships) AS rows_left;

-- Nothing is granted to PUBLIC.
SELECT has_function_privilege('public', 'swarm.create_communities(text[], integer, text, bigint)', 'EXECUTE') AS public_can_execute,
       has_table_privilege('public', 'swarm.communities', 'SELECT') AS public_can_read;

TRUNCATE swarm.agents, swarm.friendships, swarm.communities, swarm.community_members RESTART IDENTITY CASCADE;
