-- swarm.build_friendships: the four graph models and their defining properties.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_swarm;
TRUNCATE swarm.agents, swarm.friendships, swarm.communities, swarm.community_members RESTART IDENTITY CASCADE;

SELECT swarm.create_agents(3000, 7) AS agents;

-- Measures of the graph currently in swarm.friendships.
CREATE TEMP VIEW graph_stats AS
WITH deg AS (
    SELECT a.id, count(f.friend_id) AS d
    FROM swarm.agents a LEFT JOIN swarm.friendships f ON f.agent_id = a.id GROUP BY a.id),
tri AS (   -- closed pairs of friends around each agent
    SELECT f1.agent_id AS id, count(*) AS t
    FROM swarm.friendships f1
    JOIN swarm.friendships f2 ON f2.agent_id = f1.agent_id AND f2.friend_id > f1.friend_id
    JOIN swarm.friendships f3 ON f3.agent_id = f1.friend_id AND f3.friend_id = f2.friend_id
    GROUP BY f1.agent_id),
pairs AS (
    SELECT f.agent_id, f.friend_id,
           EXISTS (SELECT FROM jsonb_array_elements_text(a.persona->'interests') i
                   WHERE b.persona->'interests' ? i) AS share
    FROM swarm.friendships f
    JOIN swarm.agents a ON a.id = f.agent_id JOIN swarm.agents b ON b.id = f.friend_id
    WHERE f.agent_id < f.friend_id)
SELECT (SELECT count(*) FROM swarm.friendships) / 2 AS friendships,
       (SELECT max(d) FROM deg) AS max_degree,
       (SELECT avg(d) FROM deg) AS avg_degree,
       (SELECT avg(coalesce(t, 0)::float8 / (d * (d - 1) / 2.0))
        FROM deg LEFT JOIN tri USING (id) WHERE d >= 2) AS clustering,
       (SELECT avg(share::int) FROM pairs) AS shared_interest_rate,
       (SELECT count(*) FROM swarm.friendships WHERE agent_id = friend_id) AS self_loops,
       (SELECT count(*) FROM swarm.friendships f
        WHERE NOT EXISTS (SELECT FROM swarm.friendships g
                          WHERE g.agent_id = f.friend_id AND g.friend_id = f.agent_id
                            AND g.since = f.since AND g.strength = f.strength)) AS asymmetric,
       (SELECT count(*) FROM swarm.friendships WHERE NOT (strength > 0 AND strength <= 1)
                                                  OR since > now() OR since < now() - interval '366 days') AS bad_values,
       (SELECT md5(string_agg(agent_id || ':' || friend_id, ',' ORDER BY agent_id, friend_id))
        FROM swarm.friendships) AS fingerprint;

CREATE TEMP TABLE results (model text, cap int, built bigint, s graph_stats);

-- Each model with 10 friends at most.  (build_friendships truncates the
-- table, so it runs as a statement of its own, before the measures.)
SELECT swarm.build_friendships(10, 'random', 1) AS built \gset
INSERT INTO results SELECT 'random', 10, :built, s FROM graph_stats s;
SELECT swarm.build_friendships(10, 'small_world', 1) AS built \gset
INSERT INTO results SELECT 'small_world', 10, :built, s FROM graph_stats s;
SELECT swarm.build_friendships(10, 'preferential', 1) AS built \gset
INSERT INTO results SELECT 'preferential', 10, :built, s FROM graph_stats s;
SELECT swarm.build_friendships(10, 'homophily', 1) AS built \gset
INSERT INTO results SELECT 'homophily', 10, :built, s FROM graph_stats s;
-- Heavy tails need room above the mean: cap 200, mean 6 for both.
SELECT swarm.build_friendships(200, 'preferential', 1, avg_friends => 6) AS built \gset
INSERT INTO results SELECT 'preferential', 200, :built, s FROM graph_stats s;
SELECT swarm.build_friendships(200, 'random', 1, avg_friends => 6) AS built \gset
INSERT INTO results SELECT 'random', 200, :built, s FROM graph_stats s;

-- Common invariants: the count returned is of pairs; no self-loops; both
-- directions present with equal since/strength; nobody above the cap; values in range.
SELECT model, cap, built, built = (s).friendships AS count_is_pairs,
       (s).self_loops, (s).asymmetric, (s).bad_values, (s).max_degree <= cap AS under_cap
FROM results ORDER BY cap, model;

-- Mean degree: filled to the cap for random/small_world/homophily, about cap/2 for preferential.
SELECT model, cap, round((s).avg_degree, 1) AS avg_degree FROM results ORDER BY cap, model;

-- small_world (Watts-Strogatz): every agent keeps exactly 10 friends, and
-- clustering is far above the random graph's.
SELECT (sw.s).clustering > 0.4 AS small_world_clustered,
       (r.s).clustering < 0.02 AS random_not_clustered,
       (sw.s).clustering > 10 * (r.s).clustering AS ten_times_random
FROM results sw, results r
WHERE sw.model = 'small_world' AND r.model = 'random' AND sw.cap = 10 AND r.cap = 10;

-- ... and short paths: from agent 1 every agent is reached in a few hops
-- (a ring lattice of 3000 agents with 10 neighbours needs 75 on average).
CREATE FUNCTION pg_temp.mean_distance_from(start bigint) RETURNS TABLE (reached bigint, mean_hops numeric)
LANGUAGE plpgsql AS $$
DECLARE
    hops int := 0;
BEGIN
    CREATE TEMP TABLE seen (id bigint PRIMARY KEY, d int);
    INSERT INTO seen VALUES (start, 0);
    LOOP
        hops := hops + 1;
        INSERT INTO seen
        SELECT DISTINCT f.friend_id, hops FROM seen s JOIN swarm.friendships f ON f.agent_id = s.id
        WHERE s.d = hops - 1 ON CONFLICT DO NOTHING;
        EXIT WHEN NOT FOUND;
    END LOOP;
    RETURN QUERY SELECT count(*), round(avg(d), 1) FROM seen;
    DROP TABLE seen;
END $$;
SELECT swarm.build_friendships(10, 'small_world', 1) AS built;
SELECT count(*) FILTER (WHERE c <> 10) AS agents_without_exactly_10
FROM (SELECT count(f.agent_id) c FROM swarm.agents a LEFT JOIN swarm.friendships f ON f.agent_id = a.id GROUP BY a.id) x;
SELECT reached = 3000 AS all_reached, mean_hops < 8 AS short_paths FROM pg_temp.mean_distance_from(1);

-- preferential (Barabasi-Albert): with room above the mean, hubs form; the
-- largest degree dwarfs the random graph's with the same mean.
SELECT (p.s).max_degree >= 60 AS has_hubs,
       (r.s).max_degree <= 25 AS random_has_none,
       (p.s).max_degree > 3 * (r.s).max_degree AS heavy_tail
FROM results p, results r
WHERE p.model = 'preferential' AND r.model = 'random' AND p.cap = 200 AND r.cap = 200;

-- ... and with cap 10 the cap truncates the tail: hubs stop at 10.
SELECT (s).max_degree = 10 AS hubs_capped FROM results WHERE model = 'preferential' AND cap = 10;

-- homophily: friends share an interest far more often than chance (the random graph).
SELECT (h.s).shared_interest_rate > 0.8 AS mostly_shared,
       (h.s).shared_interest_rate > 1.5 * (r.s).shared_interest_rate AS above_chance
FROM results h, results r
WHERE h.model = 'homophily' AND r.model = 'random' AND h.cap = 10 AND r.cap = 10;

-- Homophily also follows communities: with one community per half of the
-- agents and no interests in common, friends are found inside communities.
UPDATE swarm.agents SET persona = persona - 'interests';
SELECT swarm.create_communities(ARRAY['evens', 'odds'], 1500, 'random', 3) AS members;
SELECT swarm.build_friendships(10, 'homophily', 1) > 0 AS built;
SELECT avg((ma.community_id = mb.community_id)::int) > 0.75 AS same_community
FROM swarm.friendships f
JOIN swarm.community_members ma ON ma.agent_id = f.agent_id
JOIN swarm.community_members mb ON mb.agent_id = f.friend_id;
TRUNCATE swarm.communities, swarm.community_members RESTART IDENTITY;

-- Deterministic: the same seed gives the same graph, another seed another.
SELECT swarm.build_friendships(10, 'small_world', 99) AS built;
CREATE TEMP TABLE fp AS SELECT (s).fingerprint FROM graph_stats s;
SELECT swarm.build_friendships(10, 'small_world', 99) AS built;
SELECT (SELECT fingerprint FROM fp) = (s).fingerprint AS same_seed_same_graph FROM graph_stats s;
SELECT swarm.build_friendships(10, 'small_world', 100) AS built;
SELECT (SELECT fingerprint FROM fp) <> (s).fingerprint AS other_seed_other_graph FROM graph_stats s;

-- The graph is rebuilt, not added to: a second build replaces the first.
SELECT swarm.build_friendships(4, 'random', 5) AS built;
SELECT (SELECT count(*) FROM swarm.friendships) / 2 AS friendships,
       (SELECT max(c) FROM (SELECT count(*) c FROM swarm.friendships GROUP BY agent_id) x) AS max_degree;

-- Deleting agents removes their friendships in both directions.
DELETE FROM swarm.agents WHERE id <= 100;
SELECT count(*) AS dangling FROM swarm.friendships WHERE agent_id <= 100 OR friend_id <= 100;

-- Small graphs: a lattice needs fewer friends than agents.
TRUNCATE swarm.agents RESTART IDENTITY CASCADE;
SELECT swarm.build_friendships() AS no_agents;
SELECT swarm.create_agents(1, 1) AS one;
SELECT m, swarm.build_friendships(10, m, 1) AS lone_agent
FROM unnest(ARRAY['random', 'small_world', 'preferential', 'homophily']) m;
SELECT swarm.create_agents(3, 2) AS three_more;
SELECT m, swarm.build_friendships(10, m, 1) AS complete_graph_of_4
FROM unnest(ARRAY['random', 'small_world', 'homophily']) m;
SELECT agent_id, friend_id FROM swarm.friendships ORDER BY 1, 2;

-- Bad input is refused with a clear error.
SELECT swarm.build_friendships(0);
SELECT swarm.build_friendships(-5, 'random');
SELECT swarm.build_friendships(NULL);
SELECT swarm.build_friendships(10, 'scale_free');
SELECT swarm.build_friendships(10, NULL);
SELECT swarm.build_friendships(10, 'random', 1, avg_friends => 11);
SELECT swarm.build_friendships(10, 'random', 1, avg_friends => 0);

-- Nothing is granted to PUBLIC.
SELECT has_function_privilege('public', 'swarm.build_friendships(integer, text, bigint, integer)', 'EXECUTE') AS public_can_execute,
       has_table_privilege('public', 'swarm.friendships', 'SELECT') AS public_can_read;

TRUNCATE swarm.agents, swarm.friendships RESTART IDENTITY CASCADE;
