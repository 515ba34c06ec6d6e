-- swarm.create_agents: generated personas.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_swarm;
TRUNCATE swarm.agents RESTART IDENTITY CASCADE;

-- Create 5000 agents with a fixed seed; the count made is returned.
SELECT swarm.create_agents(5000, 42) AS made;

-- Every persona has the documented shape.
SELECT count(*) FILTER (WHERE jsonb_typeof(persona->'age') = 'number'
                          AND (persona->>'age')::int BETWEEN 18 AND 80) AS age_ok,
       count(*) FILTER (WHERE persona->>'occupation' <> '') AS occupation_ok,
       count(*) FILTER (WHERE persona->>'location' LIKE '%, %') AS location_ok,
       count(*) FILTER (WHERE jsonb_array_length(persona->'interests') BETWEEN 3 AND 6) AS interests_ok,
       count(*) FILTER (WHERE (SELECT count(*) FROM jsonb_object_keys(persona->'big_five')) = 5
                          AND (SELECT bool_and(v::int BETWEEN 1 AND 99)
                               FROM jsonb_each_text(persona->'big_five') AS b(k, v))) AS big_five_ok,
       count(*) FILTER (WHERE persona->>'writing_style' <> '') AS style_ok,
       count(*) FILTER (WHERE persona->>'bio' LIKE '%' || (persona->>'location') || '%') AS bio_ok
FROM swarm.agents;

-- The stored jsonb is canonical (keys in jsonb order): it equals its own re-parse.
SELECT bool_and(persona = persona::text::jsonb) AS canonical FROM swarm.agents;

-- Names are unique; interests within a persona are distinct.
SELECT count(DISTINCT name) = count(*) AS names_unique FROM swarm.agents;
SELECT bool_and(n = d) AS interests_distinct
FROM (SELECT id, count(*) n, count(DISTINCT i) d
      FROM swarm.agents, jsonb_array_elements_text(persona->'interests') i GROUP BY id) s;

-- Variety: at least 100 interests, dozens of occupations and locations in use.
SELECT count(DISTINCT i) >= 100 AS many_interests
FROM swarm.agents, jsonb_array_elements_text(persona->'interests') i;
SELECT count(DISTINCT persona->>'occupation') >= 90 AS many_occupations,
       count(DISTINCT persona->>'location') >= 90 AS many_locations,
       count(DISTINCT persona->>'writing_style') >= 20 AS many_styles,
       count(DISTINCT persona->>'age') >= 50 AS many_ages
FROM swarm.agents;

-- Big Five traits spread around the middle.
SELECT avg((persona->'big_five'->>'openness')::int) BETWEEN 45 AND 55 AS openness_centred
FROM swarm.agents;

-- Deterministic: the same seed gives the same agents (first three shown).
SELECT id, name, persona->>'occupation' AS occupation, persona->>'location' AS location,
       persona->'interests' AS interests
FROM swarm.agents ORDER BY id LIMIT 3;
SELECT bool_and(a.name = p.name AND a.persona = p.persona) AS same_again
FROM (SELECT row_number() OVER (ORDER BY id) AS n, name, persona FROM swarm.agents) a
JOIN (SELECT row_number() OVER () AS n, name, persona FROM swarm._persona_rows(5000, 42)) p USING (n);

-- A different seed gives different agents.
SELECT count(*) FILTER (WHERE a.name = p.name) < 10 AS different_seed
FROM (SELECT row_number() OVER (ORDER BY id) AS n, name FROM swarm.agents) a
JOIN (SELECT row_number() OVER () AS n, name FROM swarm._persona_rows(5000, 43)) p USING (n);

-- No seed: still valid personas.
SELECT count(*) AS unseeded FROM swarm._persona_rows(10, NULL) WHERE persona ? 'interests';

-- Past 1,040,000 names, a number keeps them unique (name generation only).
SELECT name FROM swarm._persona_rows(1040002, 7) OFFSET 1040000;

-- Zero agents is fine; bad counts are refused.
SELECT swarm.create_agents(0) AS none;
SELECT swarm.create_agents(-1);
SELECT swarm.create_agents(NULL);
SELECT count(*) AS still_5000 FROM swarm.agents;

-- Nothing is granted to PUBLIC.
SELECT has_function_privilege('public', 'swarm.create_agents(integer, bigint)', 'EXECUTE') AS public_can_execute;
