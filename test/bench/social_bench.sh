#!/bin/bash
# social_bench.sh: the social world at a million agents, on a throwaway cluster.
#
#   test/bench/social_bench.sh [agents]        (default 1000000)
#
# Environment: PG_CONFIG (default: pg_config on PATH) names the installation
# that has pg_swarm installed; BENCH_PORT (default 5498); BENCH_DIR (default a
# fresh mktemp -d).  Run as root, the cluster runs as the postgres user.
#
# It initdb's a cluster, runs each step in its own backend, and prints a table:
# wall time, peak private memory of the backend (max RssAnon sampled every
# 50 ms) and its VmHWM (which also counts the shared buffers it touched); then
# MessagePack vs jsonb sizes of a typical agent state; then the same work done
# in plain SQL, and the ratio.  The cluster is stopped and removed at the end.
set -euo pipefail

N=${1:-1000000}
PG_CONFIG=${PG_CONFIG:-pg_config}
BIN=$("$PG_CONFIG" --bindir)
PORT=${BENCH_PORT:-5498}
DIR=${BENCH_DIR:-$(mktemp -d /tmp/swarm_bench.XXXXXX)}
RUNAS=()
if [ "$(id -u)" = 0 ]; then
    RUNAS=(runuser -u postgres --)
    chown postgres "$DIR"
fi
PSQL=("${RUNAS[@]}" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -d bench)

cleanup() {
    "${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"${RUNAS[@]}" "$BIN/initdb" -D "$DIR/data" -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$DIR/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_buffers = 1GB
work_mem = 64MB
maintenance_work_mem = 512MB
max_wal_size = 16GB
checkpoint_timeout = 30min
EOF
"${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start >/dev/null
"${RUNAS[@]}" "$BIN/createdb" -h "$DIR" -p "$PORT" bench
"${PSQL[@]}" -c "CREATE EXTENSION pg_swarm"

ROWS=()
# step LABEL SQL: runs SQL in a fresh backend; records seconds and memory.
step() {
    local label=$1 sql=$2 pidfile="$DIR/pid" peak=0 hwm=0 t0 t1 pid
    rm -f "$pidfile"
    t0=$(date +%s.%N)
    "${PSQL[@]}" -c "COPY (SELECT pg_backend_pid()) TO STDOUT" -c "$sql" > "$DIR/out" &
    local psql_pid=$!
    while kill -0 "$psql_pid" 2>/dev/null; do
        if [ -z "${pid:-}" ] && [ -s "$DIR/out" ]; then pid=$(head -1 "$DIR/out"); fi
        if [ -n "${pid:-}" ] && [ -r "/proc/$pid/status" ]; then
            local a h
            a=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            h=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ "${a:-0}" -gt "$peak" ] && peak=$a
            [ "${h:-0}" -gt "$hwm" ] && hwm=$h
        fi
        sleep 0.05
    done
    wait "$psql_pid"
    t1=$(date +%s.%N)
    local result
    result=$(tail -n +2 "$DIR/out" | tr '\n' ' ')
    ROWS+=("$(printf '%-44s %9.2f %12d %12d   %s' "$label" "$(echo "$t1 - $t0" | bc)" $((peak / 1024)) $((hwm / 1024)) "$result")")
    echo "$(echo "$t1 - $t0" | bc)" > "$DIR/last_seconds"
    unset pid
}

NAMES="(SELECT array_agg('community ' || i) FROM generate_series(1, greatest(1, $N / 1000)) i)"

step "create_agents($N)" "COPY (SELECT swarm.create_agents($N, 1)) TO STDOUT"
T_AGENTS=$(cat "$DIR/last_seconds")
step "build_friendships(10, small_world)" "COPY (SELECT swarm.build_friendships(10, 'small_world', 1)) TO STDOUT"
T_FRIENDS=$(cat "$DIR/last_seconds")
step "create_communities($((N / 1000)) x 1000, friendships)" \
     "COPY (SELECT swarm.create_communities($NAMES, 1000, 'friendships', 1)) TO STDOUT"
T_COMM=$(cat "$DIR/last_seconds")
step "build_friendships(10, random)" "COPY (SELECT swarm.build_friendships(10, 'random', 1)) TO STDOUT"
step "build_friendships(20, preferential)" "COPY (SELECT swarm.build_friendships(20, 'preferential', 1)) TO STDOUT"
step "build_friendships(10, homophily)" "COPY (SELECT swarm.build_friendships(10, 'homophily', 1)) TO STDOUT"
step "create_communities(interests)" \
     "COPY (SELECT swarm.create_communities((SELECT array_agg('topic ' || i) FROM generate_series(1, 100) i), 10000, 'interests', 1)) TO STDOUT"

# A typical agent state: counters, mood, goals, 20 recent memories.
STATE_EXPR="jsonb_build_object(
    'counters', jsonb_build_object('posts', 10 + a.id % 500, 'likes', a.id % 9000, 'followers', a.id % 1234),
    'mood', jsonb_build_object('valence', round(((a.id % 200) / 100.0 - 1)::numeric, 2), 'arousal', round((a.id % 97) / 97.0, 3)),
    'goals', jsonb_build_array('make friends', 'share ' || (a.persona->'interests'->>0)),
    'last_seen', 1700000000 + a.id,
    'memory', (SELECT jsonb_agg(jsonb_build_object('t', 1700000000 + a.id * 7 + k, 'with', (a.id * 31 + k) % $N,
                     'text', 'talked about ' || (a.persona->'interests'->>(k % 3)), 'sentiment', (k % 5) * 0.25))
               FROM generate_series(1, 20) k))"
step "store 100,000 states as MessagePack" \
     "UPDATE swarm.agents a SET state = swarm.pack($STATE_EXPR) WHERE a.id <= 100000"
"${PSQL[@]}" -At -F ' ' > "$DIR/sizes" <<SQL
CREATE TEMP TABLE st AS SELECT $STATE_EXPR AS s FROM swarm.agents a WHERE a.id <= 100000;
CREATE TEMP TABLE packed AS SELECT swarm.pack(s) AS p FROM st LIMIT 0;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
INSERT INTO packed SELECT swarm.pack(s) FROM st;
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
CREATE TEMP TABLE unpacked AS SELECT swarm.unpack(p) AS u FROM packed;
SELECT extract(epoch FROM clock_timestamp()) AS t2 \gset
SELECT round(avg(octet_length(s::text))), round(avg(pg_column_size(s::text::jsonb))), round(avg(pg_column_size(s))),
       round(avg(octet_length(swarm.pack(s)))),
       (SELECT round(avg(pg_column_size(state))) FROM swarm.agents WHERE id <= 100000),
       bool_and(swarm.unpack(swarm.pack(s)) = s),
       round((:t1 - :t0)::numeric, 2), round((:t2 - :t1)::numeric, 2)
FROM st;
SQL

# ---- the same work in plain SQL ------------------------------------------
"${PSQL[@]}" -c "
CREATE TABLE plain_agents (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL,
                           persona jsonb NOT NULL DEFAULT '{}', state bytea, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE plain_friendships (agent_id bigint, friend_id bigint, since timestamptz NOT NULL, strength real NOT NULL,
                                PRIMARY KEY (agent_id, friend_id));
CREATE TABLE plain_members (community int, agent_id bigint, PRIMARY KEY (community, agent_id));"

step "plain SQL: $N agents (jsonb_build_object)" "
INSERT INTO plain_agents (name, persona)
SELECT v.f[1 + (random() * 199)::int] || ' ' || chr(65 + (random() * 25)::int) || '. ' || v.l[1 + (random() * 199)::int],
       jsonb_build_object(
         'age', 18 + (random() * 62)::int,
         'bio', v.o[1 + (random() * 99)::int] || ' from ' || v.c[1 + (random() * 99)::int] || ' who loves ' || v.i[1 + (random() * 119)::int],
         'big_five', jsonb_build_object('openness', (random() * 98 + 1)::int, 'neuroticism', (random() * 98 + 1)::int,
                                        'extraversion', (random() * 98 + 1)::int, 'agreeableness', (random() * 98 + 1)::int,
                                        'conscientiousness', (random() * 98 + 1)::int),
         'location', v.c[1 + (random() * 99)::int],
         'interests', (SELECT jsonb_agg(DISTINCT v.i[1 + (random() * 119)::int + 0 * k]) FROM generate_series(1, 3 + (random() * 3)::int + 0 * g) k),
         'occupation', v.o[1 + (random() * 99)::int],
         'writing_style', v.s[1 + (random() * 23)::int])
FROM generate_series(1, $N) g,
     (SELECT array(SELECT 'First' || k FROM generate_series(1, 200) k) f, array(SELECT 'Last' || k FROM generate_series(1, 200) k) l,
             array(SELECT 'occupation ' || k FROM generate_series(1, 100) k) o, array(SELECT 'City ' || k FROM generate_series(1, 100) k) c,
             array(SELECT 'interest ' || k FROM generate_series(1, 120) k) i, array(SELECT 'style ' || k FROM generate_series(1, 24) k) s) v"
P_AGENTS=$(cat "$DIR/last_seconds")

# Watts-Strogatz in SQL: ring lattice of 10 neighbours, 10% of edges to a random
# target, both directions, duplicates dropped by the key (no degree cap: SQL has
# no cheap way to enforce it, so this baseline does strictly less work).
step "plain SQL: small-world friendships" "
INSERT INTO plain_friendships
SELECT a, b, now() - random() * interval '365 days', 1 - random()
FROM (SELECT i AS a, CASE WHEN random() < 0.1 THEN 1 + floor(random() * $N)::bigint ELSE 1 + (i - 1 + j) % $N END AS b
      FROM generate_series(1, $N) i, generate_series(1, 5) j) e,
     LATERAL (VALUES (e.a, e.b), (e.b, e.a)) AS d(x, y)
WHERE a <> b
ON CONFLICT DO NOTHING"
P_FRIENDS=$(cat "$DIR/last_seconds")

# Label propagation in SQL: 5 synchronous rounds of 'most frequent label among
# friends' (the C version runs until fewer than 0.1% change), then fixed-size
# runs of agents ordered by label.
step "plain SQL: label propagation (5 rounds) + cut" "
CREATE TEMP TABLE lbl AS SELECT id, id AS label FROM swarm.agents;
ALTER TABLE lbl ADD PRIMARY KEY (id);
DO \$\$ BEGIN FOR r IN 1..5 LOOP
  CREATE TEMP TABLE nxt AS
  SELECT DISTINCT ON (f.agent_id) f.agent_id AS id, l.label
  FROM swarm.friendships f JOIN lbl l ON l.id = f.friend_id
  GROUP BY f.agent_id, l.label ORDER BY f.agent_id, count(*) DESC, l.label;
  UPDATE lbl SET label = n.label FROM nxt n WHERE n.id = lbl.id AND lbl.label <> n.label;
  DROP TABLE nxt;
END LOOP; END \$\$;
INSERT INTO plain_members SELECT ((row_number() OVER (ORDER BY label, id) - 1) / 1000)::int, id FROM lbl"
P_COMM=$(cat "$DIR/last_seconds")

echo
echo "pg_swarm social benchmark: $N agents, $(nproc) cores, PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}')"
echo
printf '%-44s %9s %12s %12s   %s\n' "step" "seconds" "peak anon MB" "VmHWM MB" "result"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
read -r TXT_SIZE JB_SIZE JB_STORED MP_SIZE MP_STORED OK PACK_S UNPACK_S < "$DIR/sizes"
echo "typical agent state (100,000 samples: counters, mood, goals, 20 memories), average bytes:"
printf '  JSON text %s   jsonb %s (stored, TOAST-compressed: %s)   MessagePack %s (stored: %s)\n' \
    "$TXT_SIZE" "$JB_SIZE" "$JB_STORED" "$MP_SIZE" "$MP_STORED"
printf '  MessagePack / jsonb: %.2f raw, %.2f stored   round trip exact: %s\n' \
    "$(echo "$MP_SIZE / $JB_SIZE" | bc -l)" "$(echo "$MP_STORED / $JB_STORED" | bc -l)" "$OK"
printf '  swarm.pack of 100,000 states: %s s   swarm.unpack of 100,000: %s s\n' "$PACK_S" "$UNPACK_S"
echo
printf 'plain SQL / pg_swarm:  agents %.1fx   friendships %.1fx   communities %.1fx (SQL: 5 rounds only)\n' \
    "$(echo "$P_AGENTS / $T_AGENTS" | bc -l)" "$(echo "$P_FRIENDS / $T_FRIENDS" | bc -l)" "$(echo "$P_COMM / $T_COMM" | bc -l)"
