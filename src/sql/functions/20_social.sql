-- pg_swarm: the social world's functions: compact agent state (MessagePack),
-- personas, friendships, communities (their tables: tables/20_social.sql).
-- C code: src/social/ (personas.c, friendship_models.c, communities.c,
-- msgpack_codec.c).  See docs/social.md.
--
-- Nothing here is granted to PUBLIC: functions have EXECUTE revoked from PUBLIC
-- and tables have no grants; the extension's owner grants what a deployment needs.

-------------------------------------------------------------------------------
-- Compact agent state: jsonb <-> MessagePack
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm.pack(state jsonb) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_pack';

COMMENT ON FUNCTION swarm.pack(jsonb) IS
'Encodes a jsonb value as MessagePack (for swarm.agents.state). Integral numbers that fit 64 bits become MessagePack ints, numbers a float64 holds exactly become float64, any other number (0.10, 1e400) becomes extension type 1 holding its decimal text, so swarm.unpack(swarm.pack(x)) = x for every jsonb x. NULL gives NULL.';

CREATE OR REPLACE FUNCTION swarm.unpack(state bytea) RETURNS jsonb
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_unpack';

COMMENT ON FUNCTION swarm.unpack(bytea) IS
'Decodes one MessagePack value into jsonb. Refuses with an error (never a crash): truncated input, trailing bytes, non-string map keys, bin, NaN/Infinity, extension types other than 1, invalid UTF-8 and U+0000 in strings. NULL gives NULL.';

REVOKE EXECUTE ON FUNCTION swarm.pack(jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.unpack(bytea) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Agents: personas
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._persona_rows(count integer, seed bigint)
    RETURNS TABLE (name text, persona jsonb)
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'swarm_persona_rows';

COMMENT ON FUNCTION swarm._persona_rows(integer, bigint) IS
'Private: generates count (name, persona) rows, deterministic for a seed (a NULL seed draws one at random). Used by swarm.create_agents().';

CREATE OR REPLACE FUNCTION swarm.create_agents(count integer, seed bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    made bigint;
BEGIN
    -- The SRF runs in the target list (ProjectSet), so rows stream into the
    -- heap instead of being materialised in a tuplestore first.
    INSERT INTO swarm.agents (name, persona)
    SELECT (p.r).name, (p.r).persona
    FROM (SELECT swarm._persona_rows(count, seed) AS r OFFSET 0) AS p;
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm.create_agents(integer, bigint) IS
'Creates count agents with generated personas (age, occupation, location, interests, Big Five, writing style, bio) and unique names; the same seed gives the same agents. Returns the number created.';

REVOKE EXECUTE ON FUNCTION swarm._persona_rows(integer, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.create_agents(integer, bigint) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Friendships
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._friendship_rows(max_friends integer, model text, seed bigint, avg_friends integer)
    RETURNS TABLE (agent_id bigint, friend_id bigint, since timestamptz, strength real)
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'swarm_friendship_rows';

COMMENT ON FUNCTION swarm._friendship_rows(integer, text, bigint, integer) IS
'Private: builds a friendship graph over swarm.agents in memory and returns both directions of every friendship, sorted. Used by swarm.build_friendships().';

CREATE OR REPLACE FUNCTION swarm.build_friendships(max_friends_per_agent integer DEFAULT 10,
                                        model text DEFAULT 'small_world',
                                        seed bigint DEFAULT NULL,
                                        avg_friends integer DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    made bigint;
BEGIN
    IF max_friends_per_agent IS NULL OR max_friends_per_agent < 1 THEN
        RAISE EXCEPTION 'max_friends_per_agent must be at least 1'
            USING ERRCODE = CASE WHEN max_friends_per_agent IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  DETAIL = format('The value given was %s.', coalesce(max_friends_per_agent::text, 'NULL'));
    END IF;
    IF model IS NULL OR model NOT IN ('random', 'small_world', 'preferential', 'homophily') THEN
        RAISE EXCEPTION 'unknown friendship model "%"', coalesce(model, 'NULL')
            USING ERRCODE = CASE WHEN model IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  HINT = 'Use one of random, small_world, preferential, homophily.';
    END IF;
    IF avg_friends IS NOT NULL AND (avg_friends < 1 OR avg_friends > max_friends_per_agent) THEN
        RAISE EXCEPTION 'avg_friends must be between 1 and max_friends_per_agent (%)', max_friends_per_agent
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The value given was %s.', avg_friends);
    END IF;

    -- The graph is rebuilt: the old one goes first (TRUNCATE: fast, and the
    -- new rows then fill the primary key at its right edge).
    TRUNCATE swarm.friendships;
    INSERT INTO swarm.friendships (agent_id, friend_id, since, strength)
    SELECT (e.r).agent_id, (e.r).friend_id, (e.r).since, (e.r).strength
    FROM (SELECT swarm._friendship_rows(max_friends_per_agent, model, seed, avg_friends) AS r OFFSET 0) AS e;
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made / 2;
END
$$;

COMMENT ON FUNCTION swarm.build_friendships(integer, text, bigint, integer) IS
'Replaces the friendship graph with a new one over all agents and returns the number of friendships (pairs). Models: random (Erdos-Renyi), small_world (Watts-Strogatz), preferential (Barabasi-Albert), homophily (shared interests and communities). No agent gets more than max_friends_per_agent friends; avg_friends is the target mean (default: max_friends_per_agent, or half of it for preferential so that hubs can form). The same seed gives the same graph.';

REVOKE EXECUTE ON FUNCTION swarm._friendship_rows(integer, text, bigint, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.build_friendships(integer, text, bigint, integer) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Communities
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._community_slots(k integer, max_members integer, seed bigint)
    RETURNS TABLE (slot integer, agent_id bigint)
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'swarm_community_slots';

COMMENT ON FUNCTION swarm._community_slots(integer, integer, bigint) IS
'Private: label propagation over swarm.friendships, clusters packed largest first into k slots of at most max_members agents. Used by swarm.create_communities().';

CREATE OR REPLACE FUNCTION swarm.create_communities(names text[],
                                         max_members_per_community integer DEFAULT 1000,
                                         strategy text DEFAULT 'random',
                                         seed bigint DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    made bigint;
    k integer;
    taken text;
    s bigint := coalesce(seed, (random() * 9.2e18)::bigint);
BEGIN
    IF names IS NULL OR cardinality(names) = 0 THEN
        RAISE EXCEPTION 'names must be a non-empty array'
            USING ERRCODE = CASE WHEN names IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  HINT = 'Pass one name per community to create, e.g. ARRAY[''chess'', ''hiking''].';
    END IF;
    IF EXISTS (SELECT FROM unnest(names) n WHERE n IS NULL OR btrim(n) = '') THEN
        RAISE EXCEPTION 'community names must not be null or blank'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT n INTO taken FROM unnest(names) n GROUP BY n HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'community name "%" is given more than once', taken
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.name INTO taken FROM swarm.communities c WHERE c.name = ANY (names) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'community "%" already exists', taken
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose new names, or delete the old community first.';
    END IF;
    IF max_members_per_community IS NULL OR max_members_per_community < 1 THEN
        RAISE EXCEPTION 'max_members_per_community must be at least 1'
            USING ERRCODE = CASE WHEN max_members_per_community IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  DETAIL = format('The value given was %s.', coalesce(max_members_per_community::text, 'NULL'));
    END IF;
    IF strategy IS NULL OR strategy NOT IN ('random', 'interests', 'friendships') THEN
        RAISE EXCEPTION 'unknown community strategy "%"', coalesce(strategy, 'NULL')
            USING ERRCODE = CASE WHEN strategy IS NULL THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  HINT = 'Use one of random, interests, friendships.';
    END IF;
    k := cardinality(names);

    -- distributed (Citus): the agents read in parallel, then a write to the
    -- reference table communities, which a distributed table references,
    -- must share one connection per node
    IF swarm._is_distributed() THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    CREATE TEMP TABLE _swarm_new_communities (slot integer, id bigint, topic text) ON COMMIT DROP;

    IF strategy = 'interests' THEN
        -- Each community gathers one persona interest: the one it is named
        -- after (case-insensitive) if agents have it, otherwise the most
        -- popular interests not yet taken, in the order the names are given.
        WITH pop AS (
            SELECT i AS interest, count(*) AS n
            FROM swarm.agents a, jsonb_array_elements_text(
                     CASE WHEN jsonb_typeof(a.persona->'interests') = 'array'
                          THEN a.persona->'interests' ELSE '[]' END) AS i
            GROUP BY i),
        given AS (
            SELECT g.ord::integer - 1 AS slot, g.name,
                   (SELECT p.interest FROM pop p WHERE lower(p.interest) = lower(btrim(g.name))
                    ORDER BY p.n DESC, p.interest LIMIT 1) AS exact
            FROM unnest(names) WITH ORDINALITY AS g(name, ord)),
        free AS (
            SELECT p.interest, row_number() OVER (ORDER BY p.n DESC, p.interest) AS rank
            FROM pop p WHERE p.interest NOT IN (SELECT exact FROM given WHERE exact IS NOT NULL)),
        unmatched AS (
            SELECT slot, row_number() OVER (ORDER BY slot) AS rank FROM given WHERE exact IS NULL)
        INSERT INTO _swarm_new_communities (slot, topic)
        SELECT g.slot, coalesce(g.exact, f.interest)
        FROM given g LEFT JOIN unmatched u USING (slot) LEFT JOIN free f ON f.rank = u.rank;
    ELSE
        INSERT INTO _swarm_new_communities (slot)
        SELECT g.ord::integer - 1 FROM unnest(names) WITH ORDINALITY AS g(name, ord);
    END IF;

    WITH ins AS (
        INSERT INTO swarm.communities (name, max_members, strategy, topic)
        SELECT names[n.slot + 1], max_members_per_community, strategy, n.topic
        FROM _swarm_new_communities n ORDER BY n.slot
        RETURNING id, name)
    UPDATE _swarm_new_communities n SET id = ins.id
    FROM ins WHERE ins.name = names[n.slot + 1];

    IF strategy = 'random' THEN
        -- Agents in a seeded random order, dealt round-robin; each agent
        -- joins at most one of these communities.
        INSERT INTO swarm.community_members (community_id, agent_id)
        SELECT n.id, r.agent_id
        FROM (SELECT a.id AS agent_id,
                     row_number() OVER (ORDER BY hashint8extended(a.id, s), a.id) - 1 AS rn
              FROM swarm.agents a) r
        JOIN _swarm_new_communities n ON n.slot = r.rn % k
        WHERE r.rn < k::bigint * max_members_per_community;
    ELSIF strategy = 'interests' THEN
        -- Every agent with the topic among its interests is a candidate;
        -- candidates in seeded random order fill the community up to the cap.
        -- An agent may join several communities, one per matching interest.
        INSERT INTO swarm.community_members (community_id, agent_id)
        SELECT c.id, c.agent_id
        FROM (SELECT n.id, a.id AS agent_id,
                     row_number() OVER (PARTITION BY n.id ORDER BY hashint8extended(a.id, s), a.id) AS rn
              FROM _swarm_new_communities n
              JOIN swarm.agents a ON jsonb_typeof(a.persona->'interests') = 'array'
                                 AND a.persona->'interests' ? n.topic) c
        WHERE c.rn <= max_members_per_community;
    ELSE
        INSERT INTO swarm.community_members (community_id, agent_id)
        SELECT n.id, (x.r).agent_id
        FROM (SELECT swarm._community_slots(k, max_members_per_community, s) AS r OFFSET 0) x
        JOIN _swarm_new_communities n ON n.slot = (x.r).slot;
    END IF;
    GET DIAGNOSTICS made = ROW_COUNT;
    DROP TABLE _swarm_new_communities;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm.create_communities(text[], integer, text, bigint) IS
'Creates one community per name and assigns agents, never more than max_members_per_community each; returns the memberships made. Strategies: random (agents dealt at random, one community each), interests (each community gathers the agents sharing one persona interest: the one it is named after, else the most popular free one), friendships (label propagation over swarm.friendships; the clusters found are packed largest first into the communities). The same seed gives the same result.';

REVOKE EXECUTE ON FUNCTION swarm._community_slots(integer, integer, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.create_communities(text[], integer, text, bigint) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Keeping the social tables consistent with swarm.agents
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._social_forget_agents() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- When the same TRUNCATE lists these tables too, they are empty by
        -- now (and may not be truncated again in this statement).
        IF EXISTS (SELECT FROM swarm.friendships) THEN
            TRUNCATE swarm.friendships;
        END IF;
        IF EXISTS (SELECT FROM swarm.community_members) THEN
            TRUNCATE swarm.community_members;
        END IF;
        IF EXISTS (SELECT FROM swarm.agent_memory) THEN
            TRUNCATE swarm.agent_memory;
        END IF;
    ELSE
        DELETE FROM swarm.friendships f USING gone g WHERE f.agent_id = g.id;
        DELETE FROM swarm.friendships f USING gone g WHERE f.friend_id = g.id;
        DELETE FROM swarm.community_members m USING gone g WHERE m.agent_id = g.id;
        DELETE FROM swarm.agent_memory m USING gone g WHERE m.agent_id = g.id;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION swarm._social_forget_agents() IS
'Private trigger: removes the friendships, memberships and memories of agents deleted or truncated from swarm.agents.';

-- On one server only: Citus refuses triggers on a distributed table, and
-- swarm.distribute() replaces these by foreign keys (ON DELETE CASCADE) and
-- swarm.delete_agents() (docs/scale-out.md).
DO $$
BEGIN
    IF NOT swarm._is_distributed() THEN
        CREATE OR REPLACE TRIGGER social_forget_deleted_agents
            AFTER DELETE ON swarm.agents REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION swarm._social_forget_agents();
        CREATE OR REPLACE TRIGGER social_forget_truncated_agents
            AFTER TRUNCATE ON swarm.agents
            FOR EACH STATEMENT EXECUTE FUNCTION swarm._social_forget_agents();
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION swarm._social_forget_agents() FROM PUBLIC;
