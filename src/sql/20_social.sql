-- pg_swarm: the social world: compact agent state (MessagePack), personas,
-- friendships, communities.  C code: src/msgpack_codec.c, src/persona.c,
-- src/graph.c.  See docs/social.md.
--
-- Nothing here is granted to PUBLIC: functions have EXECUTE revoked from PUBLIC
-- and tables have no grants; the extension's owner grants what a deployment needs.

-------------------------------------------------------------------------------
-- Compact agent state: jsonb <-> MessagePack
-------------------------------------------------------------------------------

CREATE FUNCTION swarm.pack(state jsonb) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_pack';

COMMENT ON FUNCTION swarm.pack(jsonb) IS
'Encodes a jsonb value as MessagePack (for swarm.agents.state). Integral numbers that fit 64 bits become MessagePack ints, numbers a float64 holds exactly become float64, any other number (0.10, 1e400) becomes extension type 1 holding its decimal text, so swarm.unpack(swarm.pack(x)) = x for every jsonb x. NULL gives NULL.';

CREATE FUNCTION swarm.unpack(state bytea) RETURNS jsonb
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'swarm_unpack';

COMMENT ON FUNCTION swarm.unpack(bytea) IS
'Decodes one MessagePack value into jsonb. Refuses with an error (never a crash): truncated input, trailing bytes, non-string map keys, bin, NaN/Infinity, extension types other than 1, invalid UTF-8 and U+0000 in strings. NULL gives NULL.';

REVOKE EXECUTE ON FUNCTION swarm.pack(jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION swarm.unpack(bytea) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Agents: personas
-------------------------------------------------------------------------------

CREATE FUNCTION swarm._persona_rows(count integer, seed bigint)
    RETURNS TABLE (name text, persona jsonb)
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'swarm_persona_rows';

COMMENT ON FUNCTION swarm._persona_rows(integer, bigint) IS
'Private: generates count (name, persona) rows, deterministic for a seed (a NULL seed draws one at random). Used by swarm.create_agents().';

CREATE FUNCTION swarm.create_agents(count integer, seed bigint DEFAULT NULL)
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
