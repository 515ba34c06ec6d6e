-- swarm.pack / swarm.unpack: compact agent state as MessagePack.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_swarm;

-- Every kind of JSON value survives the round trip exactly.
WITH v(x) AS (VALUES
    ('null'::jsonb), ('true'), ('false'),
    ('0'), ('1'), ('-1'), ('127'), ('128'), ('-32'), ('-33'), ('255'), ('256'),
    ('65535'), ('65536'), ('4294967295'), ('4294967296'),
    ('9223372036854775807'), ('-9223372036854775808'),          -- int64 edges
    ('18446744073709551615'),                                   -- uint64 max
    ('18446744073709551616'), ('-9223372036854775809'),         -- beyond 64 bits
    ('0.1'), ('1.5'), ('-2.25e-10'), ('1e20'), ('3.141592653589793'),
    ('1.0'), ('0.10'), ('0.0'), ('-0'), ('1e400'), ('1e-400'),     -- not float-exact
    ('123456789012345678901234567890.123456789'),
    ('""'), ('"plain"'), ('"héllo wörld"'), ('"日本語"'), ('"😀 astral 𝄞"'),
    ('"quote \" backslash \\ tab \t newline \n"'), ('"\u0001"'),
    ('[]'), ('{}'), ('[[], {}, [[[]]]]'),
    ('{"a": 1, "b": [true, false, null], "c": {"d": {"e": "f"}}, "": ""}'),
    ('{"memory": [{"t": 1700000000, "text": "met Bob", "mood": 0.75}], "counters": {"posts": 12, "likes": -3}}')
)
SELECT left(x::text, 40) AS value,
       swarm.unpack(swarm.pack(x)) = x AND swarm.unpack(swarm.pack(x))::text = x::text AS exact
FROM v;

-- Encodings chosen: smallest ints, float64 when exact, ext type 1 (decimal text) otherwise.
SELECT x, swarm.pack(x) FROM (VALUES
    ('1'::jsonb), ('-1'), ('300'), ('9223372036854775807'), ('-9223372036854775808'),
    ('18446744073709551615'), ('0.5'), ('1.0'), ('"a"'), ('[1]'), ('{"k": null}')) v(x);

-- Deep nesting (beyond msgpack-c's own 32-level unpacker limit) round-trips.
SELECT swarm.unpack(swarm.pack(j)) = j AS deep_ok, jsonb_typeof(j)
FROM (SELECT repeat('[', 5000) || repeat(']', 5000) AS s) t, LATERAL (SELECT s::jsonb AS j) u;

-- A large state: 10,000 memories round-trip, and MessagePack is smaller than jsonb.
WITH s AS (
    SELECT jsonb_build_object(
        'memory', jsonb_agg(jsonb_build_object('t', 1700000000 + i, 'who', i % 97,
                                               'text', 'message number ' || i, 'mood', (i % 7) / 4.0)),
        'counters', jsonb_build_object('posts', 10000, 'likes', 123456)) AS j
    FROM generate_series(1, 10000) i)
SELECT swarm.unpack(swarm.pack(j)) = j AS big_ok,
       octet_length(swarm.pack(j)) < pg_column_size(j) AS smaller_than_jsonb
FROM s;

-- Foreign MessagePack: float32, fixext decimal, non-canonical int widths decode.
SELECT swarm.unpack('\xca3dcccccd') AS float32,
       swarm.unpack('\xd40134') AS one_digit_ext,        -- fixext1 type 1 holding "4"
       swarm.unpack('\xd000') AS int8_zero,
       swarm.unpack('\xd1ff85') AS int16_neg,
       swarm.unpack('\xcd0001') AS uint16_one,
       swarm.unpack('\xda0003616263') AS str16,
       swarm.unpack('\xdc0002c2c3') AS array16,
       swarm.unpack('\xde0001a16bc0') AS map16;

-- NULL in, NULL out (SQL NULL is not the JSON null).
SELECT swarm.pack(NULL) IS NULL AS pack_null, swarm.unpack(NULL) IS NULL AS unpack_null,
       swarm.pack('null') AS json_null;

-- State stored in swarm.agents reads back.
TRUNCATE swarm.agents RESTART IDENTITY CASCADE;
INSERT INTO swarm.agents (name, state) VALUES ('Ada', swarm.pack('{"seen": [1, 2, 3], "mood": "curious"}'));
SELECT name, swarm.unpack(state) FROM swarm.agents;
TRUNCATE swarm.agents RESTART IDENTITY CASCADE;

-- Invalid MessagePack: a clear error, never a crash.
SELECT swarm.unpack('\x');                       -- empty
SELECT swarm.unpack('\x92');                     -- array of 2, no elements
SELECT swarm.unpack('\x9201');                   -- array of 2, one element
SELECT swarm.unpack('\xa5616263');               -- string cut short
SELECT swarm.unpack('\xcd01');                   -- uint16 cut short
SELECT swarm.unpack('\xdb7fffffff');             -- absurd string length
SELECT swarm.unpack('\xdfffffffff');             -- absurd map size
SELECT swarm.unpack('\xc0c0');                   -- trailing bytes
SELECT swarm.unpack('\x8101c0');                 -- integer map key
SELECT swarm.unpack('\x81c0c0');                 -- nil map key
SELECT swarm.unpack('\x8191a1616161');           -- array map key
SELECT swarm.unpack('\xc1');                     -- reserved byte
SELECT swarm.unpack('\xc403010203');             -- bin
SELECT swarm.unpack('\xd6ff00000000');           -- timestamp ext (-1)
SELECT swarm.unpack('\xd40500');                 -- unknown ext type 5
SELECT swarm.unpack('\xc70201312e');             -- decimal ext "1." is not a number
SELECT swarm.unpack('\xc7000100');               -- decimal ext: empty, then trailing byte
SELECT swarm.unpack('\xc70501');                 -- ext cut short
SELECT swarm.unpack('\xcb7ff8000000000000');     -- NaN
SELECT swarm.unpack('\xcb7ff0000000000000');     -- +Infinity
SELECT swarm.unpack('\xa2c328');                 -- invalid UTF-8
SELECT swarm.unpack('\xa3eda080');               -- UTF-16 surrogate encoded in UTF-8
SELECT swarm.unpack('\xa2c0af');                 -- overlong encoding of '/'
SELECT swarm.unpack('\xa100');                   -- U+0000
