#!/usr/bin/env bash
# Side by side, in one run, against the same mock and the same PostgreSQL:
#   pg_swarm (swarm.generate + the worker), the design document's Python asyncio
#   approach (peer_asyncio.py) and the sequential loop (peer_sequential.py).
# Prints three markdown tables:
#   1. the design document's own table (100 / 500 / 1,000 agents, 100 ms, 50 in flight);
#   2. CPU-bound and high-concurrency work (0 ms and 100 ms latency, 50 and 1,000 in flight);
#   3. queue bloat after three 1,000,000-request jobs (skipped with QUICK=1).
# Medians of REPEAT runs (default 3) for tables 1 and 2.  Run as root.
# QUICK=1: small tables 1-2 only; SKIP_MILLION=1: no table 3; ONLY_MILLION=1: table 3 only.
set -eu
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps python3-aiohttp python3-psycopg2
swarm_build
REPEAT=${REPEAT:-3}
PY=/usr/bin/python3

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_compare.XXXXXX)
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=$(swarm_free_port)
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"' EXIT
swarm_start_mock "$mock_port" --latency-ms 100
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" \
    "swarm.batch_size = 500" "swarm.flush_interval = 10ms" "max_wal_size = 4GB" "checkpoint_timeout = 30min"
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At "$@"; }
dsn="host=$SWARM_TMP/pg port=$pg_port user=postgres dbname=postgres"
base="http://127.0.0.1:$mock_port/v1"
hz=$(getconf CLK_TCK)

agents=${AGENTS:-1000000}
[ "${QUICK:-}" = 1 ] && agents=50000
psql_ -c "CREATE EXTENSION pg_swarm" \
      -c "INSERT INTO swarm.agents (name, persona) SELECT 'agent' || g, jsonb_build_object('age', 20 + g % 50, 'interests', jsonb_build_array('chess', 'jazz', 'hiking')) FROM generate_series(1, $agents) g" \
      -c "VACUUM ANALYZE swarm.agents"

set_mock() { swarm_stop_mock "$mock_port"; swarm_start_mock "$mock_port" --latency-ms "$1"; }
set_concurrency() {
    psql_ -c "ALTER SYSTEM SET swarm.max_concurrent = $1" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.3
}
worker_pid() { psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_swarm N -> "seconds requests_per_s cpu_us_per_request"
run_swarm() {
    local n=$1 pid t0 t1 job
    psql_ -c "TRUNCATE swarm.messages" >/dev/null
    pid=$(worker_pid); t0=$(cpu_ticks "$pid")
    job=$(psql_ -c "SELECT swarm.generate('bench', agents => CASE WHEN $n < $agents THEN ARRAY(SELECT id FROM swarm.agents WHERE id <= $n) END)")
    psql_ -c "SET client_min_messages = warning" -c "SELECT status FROM swarm.wait($job)" >/dev/null
    t1=$(cpu_ticks "$pid")
    psql_ -F ' ' -c "SELECT round(extract(epoch FROM finished_at - created_at)::numeric, 3),
                            round(succeeded / extract(epoch FROM finished_at - created_at)),
                            round(($t1 - $t0)::numeric / $hz * 1e6 / greatest(succeeded, 1)),
                            succeeded = $n
                     FROM swarm.jobs WHERE id = $job"
}

# run_peer asyncio|sequential N CONCURRENCY [extra] -> "seconds rps cpu_us ok"
run_peer() {
    local impl=$1 n=$2 c=$3; shift 3
    local out
    if [ "$impl" = asyncio ]; then
        out=$($PY test/bench/peer_asyncio.py --dsn "$dsn" --base-url "$base" --agents "$n" --concurrency "$c" --batch 100 "$@")
    else
        out=$($PY test/bench/peer_sequential.py --dsn "$dsn" --base-url "$base" --agents "$n" --batch 100 "$@")
    fi
    echo "$out" | $PY -c '
import json, sys
d = json.loads(sys.stdin.read())
cpu = (d["cpu_s"] + (d.get("backend_cpu_s") or 0)) * 1e6 / max(d["succeeded"], 1)
ok = str(d["succeeded"] == d["requests"]).lower()
print("%.3f %.0f %.0f %s" % (d["wall_s"], d["rps"], cpu, ok))'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# repeat CMD... -> median of each of the first three fields over REPEAT runs
repeat() {
    local runs=() i
    for i in $(seq 1 "$REPEAT"); do runs+=("$("$@")"); done
    local s r c ok=true
    s=$(printf '%s\n' "${runs[@]}" | awk '{print $1}' | median)
    r=$(printf '%s\n' "${runs[@]}" | awk '{print $2}' | median)
    c=$(printf '%s\n' "${runs[@]}" | awk '{print $3}' | median)
    printf '%s\n' "${runs[@]}" | grep -q ' false$' && ok=false
    echo "$s $r $c $ok"
}

if [ "${ONLY_MILLION:-}" != 1 ]; then
echo
echo "### 1. The design document's table (100 ms latency, 50 in flight; medians of $REPEAT runs)"
echo
echo "| agents | design document async | pg_swarm s | asyncio + aiohttp s | sequential s | pg_swarm vs asyncio | pg_swarm vs sequential |"
echo "|---|---|---|---|---|---|---|"
set_mock 100; set_concurrency 50
seq_rate=$(run_peer sequential 100 1 | awk '{print $2}')
for pair in "100 0.5" "500 2.1" "1000 3.8"; do
    set -- $pair; n=$1 theirs=$2
    read s_s s_r s_c s_ok <<<"$(repeat run_swarm "$n")"
    read a_s a_r a_c a_ok <<<"$(repeat run_peer asyncio "$n" 50)"
    q_s=$($PY -c "print(f'{$n / $seq_rate:.1f}')")
    [ "$n" = 100 ] || q_s="≈ $q_s (at the measured rate)"
    $PY -c "print(f'| $n | $theirs s | $s_s | $a_s | $q_s | {$a_s / $s_s:.1f}x | {$n / $seq_rate / $s_s:.0f}x |')"
done

echo
echo "### 2. Throughput and CPU side by side (medians of $REPEAT runs; CPU = client process + the backend writing its results)"
echo
echo "| latency ms | in flight | requests | pg_swarm req/s | asyncio req/s | ratio | pg_swarm CPU µs/req | asyncio CPU µs/req | CPU ratio | all stored |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for cfg in "0 50 20000" "0 1000 20000" "100 50 5000" "100 500 20000" "100 1000 20000"; do
    set -- $cfg; lat=$1 c=$2 n=$3
    set_mock "$lat"; set_concurrency "$c"
    read s_s s_r s_c s_ok <<<"$(repeat run_swarm "$n")"
    read a_s a_r a_c a_ok <<<"$(repeat run_peer asyncio "$n" "$c")"
    ok=$([ "$s_ok" = true ] && [ "$a_ok" = true ] && echo yes || echo NO)
    $PY -c "print(f'| $lat | $c | {$n:,} | {$s_r:,.0f} | {$a_r:,.0f} | {$s_r / $a_r:.1f}x | $s_c | $a_c | {$a_c / $s_c:.1f}x | $ok |')"
done

fi  # ONLY_MILLION

if [ "${QUICK:-}" != 1 ] && [ "${SKIP_MILLION:-}" != 1 ]; then
    echo
    echo "### 3. Three 1,000,000-request jobs at 100 ms, 2,000 in flight, then table sizes"
    echo
    echo "| job | seconds | requests/s | worker CPU µs/req | swarm.requests size after | dead rows after |"
    echo "|---|---|---|---|---|---|"
    set_mock 100; set_concurrency 2000
    for j in 1 2 3; do
        read s r c ok <<<"$(run_swarm "$agents")"
        size=$(psql_ -c "SELECT pg_size_pretty(pg_total_relation_size('swarm.requests'))")
        dead=$(psql_ -c "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'swarm.requests'::regclass")
        echo "| $j | $s | $r | $c | $size | $dead |"
        psql_ -c "TRUNCATE swarm.messages" >/dev/null   # keep only the queue's own growth in view
    done
    echo
    echo "| relation | total size (with indexes and TOAST) | live rows | dead rows |"
    echo "|---|---|---|---|"
    psql_ -F ' | ' -c "SELECT '| ' || c.relname, pg_size_pretty(pg_total_relation_size(c.oid)), s.n_live_tup, s.n_dead_tup || ' |'
                       FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
                       WHERE s.schemaname = 'swarm' AND c.relname IN ('requests', 'jobs', 'messages') ORDER BY 1"
fi
