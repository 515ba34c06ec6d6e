#!/usr/bin/env bash
# Engine benchmark: requests/s end to end (generate() to the job's end, every
# result committed), worker CPU per request and worker memory, for a set of
# (endpoint latency, max_concurrent, requests) configurations, against the mock
# on this machine.  Prints a markdown table; run as root.
#
#   bash test/bench/engine_bench.sh                 # the standard set
#   bash test/bench/engine_bench.sh "100 1000 100000" "0 50 20000"   # custom: "latency_ms max_concurrent requests"
set -eu
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
swarm_build

configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
    configs=("0 50 20000" "0 1000 50000" "100 50 5000" "100 1000 50000" "100 2000 100000")
fi

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_bench.XXXXXX)
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=0
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; [ "$mock_port" != 0 ] && swarm_stop_mock "$mock_port"' EXIT

# the cluster points at a fixed mock port; each configuration restarts the mock
mock_port=$(swarm_free_port)
swarm_start_mock "$mock_port" --threads 1
# BENCH_CONF: one more setting, e.g. "swarm.adaptive_concurrency = off"
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" \
    "swarm.batch_size = 500" "swarm.flush_interval = 50ms" "max_wal_size = 4GB" "checkpoint_timeout = 30min" \
    ${BENCH_CONF:+"$BENCH_CONF"}
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At "$@"; }

max_requests=0
for c in "${configs[@]}"; do set -- $c; [ "$3" -gt "$max_requests" ] && max_requests=$3; done
psql_ -c "CREATE EXTENSION pg_swarm" \
      -c "INSERT INTO swarm.agents (name, persona) SELECT 'agent' || g, jsonb_build_object('age', 20 + g % 50, 'interests', jsonb_build_array('chess', 'jazz', 'hiking')) FROM generate_series(1, $max_requests) g"

worker_pid() { psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

echo
echo "| latency ms | max_concurrent | requests | enqueue s | wall s | requests/s | C/L bound | % of bound | worker CPU µs/request | worker private MB | worker peak RSS MB (incl. shared buffers) | limit p10 / median | in flight p10 / median |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for c in "${configs[@]}"; do
    set -- $c
    latency=$1 conc=$2 n=$3
    if [ "${BENCH_KEEP_MOCK:-}" != 1 ]; then
        swarm_stop_mock "$mock_port"
        swarm_start_mock "$mock_port" --latency-ms "$latency" --threads 1
    fi
    psql_ -c "ALTER SYSTEM SET swarm.max_concurrent = $conc" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
    psql_ -c "TRUNCATE swarm.messages" -c "VACUUM ANALYZE swarm.requests, swarm.jobs" >/dev/null
    pid=$(worker_pid)
    t0=$(cpu_ticks "$pid")
    out=$(psql_ -c "SELECT clock_timestamp()" -c "SELECT swarm.generate('bench', agents => CASE WHEN $n < $max_requests THEN ARRAY(SELECT id FROM swarm.agents WHERE id <= $n) END)" -c "SELECT clock_timestamp()")
    job=$(echo "$out" | sed -n 2p)
    enqueue=$(psql_ -c "SELECT round(extract(epoch FROM '$(echo "$out" | sed -n 3p)'::timestamptz - '$(echo "$out" | sed -n 1p)'::timestamptz)::numeric, 2)")
    # the endpoint's adaptive limit and requests in flight, sampled each second while the job runs
    ( while [ "$(psql_ -c "SELECT status FROM swarm.jobs WHERE id = $job")" != completed ]; do
          psql_ -F ' ' -c "SELECT concurrency_limit, in_flight FROM swarm.endpoint_status WHERE endpoint = 'default'"
          sleep 1
      done > "$SWARM_TMP/limits" ) &
    sampler=$!
    psql_ -c "SET client_min_messages = warning" -c "SELECT status FROM swarm.wait($job)" >/dev/null
    wait "$sampler"
    t1=$(cpu_ticks "$pid")
    read wall done <<<"$(psql_ -F ' ' -c "SELECT extract(epoch FROM finished_at - created_at), succeeded FROM swarm.jobs WHERE id = $job")"
    # private memory (RssAnon): VmRSS also counts the shared buffers the worker touched
    rss=$(awk '/RssAnon/ {print int($2/1024)}' "/proc/$pid/status")
    hwm=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$pid/status")
    python3 - "$latency" "$conc" "$n" "$enqueue" "$wall" "$done" "$t0" "$t1" "$hz" "$rss" "$hwm" "$SWARM_TMP/limits" <<'PY'
import sys, statistics
lat, conc, n, enq, wall, done, t0, t1, hz, rss, hwm, limits = sys.argv[1:]
samples = [tuple(map(int, l.split())) for l in open(limits) if len(l.split()) == 2]
samples = samples[len(samples) // 10:]    # the first tenth is the ramp-up
def p10_med(xs):
    if not xs: return "-"
    xs = sorted(xs)
    return f"{xs[len(xs) // 10]:,} / {statistics.median(xs):,.0f}"
limit_s, flight_s = p10_med([s[0] for s in samples]), p10_med([s[1] for s in samples])
lat, conc, n, wall, done = float(lat), int(conc), int(n), float(wall), int(done)
rate = done / wall
bound = conc / (lat / 1000) if lat > 0 else float('inf')
pct = f"{100 * rate / bound:.0f}%" if lat > 0 else "-"
bound_s = f"{bound:,.0f}" if lat > 0 else "-"
cpu_us = (int(t1) - int(t0)) / int(hz) * 1e6 / max(done, 1)
assert done == n, f"only {done} of {n} succeeded"
print(f"| {lat:g} | {conc} | {n:,} | {enq} | {wall:.2f} | {rate:,.0f} | {bound_s} | {pct} | {cpu_us:.0f} | {rss} | {hwm} | {limit_s} | {flight_s} |")
PY
done
