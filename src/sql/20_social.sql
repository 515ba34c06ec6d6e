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
