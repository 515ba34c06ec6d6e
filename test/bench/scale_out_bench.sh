#!/usr/bin/env bash
# Scale-out benchmark: one server against a Citus coordinator and two worker
# nodes, all on this machine, the same generate() job against the mock at a
# fixed latency (never saturated).  For each run: enqueue time, the job's
# wall time (started_at to finished_at), requests/s, and each pg_swarm
# worker's CPU per request.  Both set-ups get the same endpoint budget
# (swarm.max_concurrent in total: on the cluster each node's worker takes
# its share of the shards).  Runs alternate (one server, cluster, ...);
# prints one row per run, then medians.  Run as root; needs Citus
# (test/lib.sh swarm_install_citus).
#
#   bash test/bench/scale_out_bench.sh [requests] [latency_ms] [runs] [max_concurrent]
#
# On a 2-core machine the three servers, their workers and the mock share
# the CPU: the cluster cannot be faster here.  What it shows is each node's
# worker CPU per request, which is what predicts N machines (docs/benchmarks.md).
set -eu
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
swarm_build
swarm_install_citus

requests=${1:-100000}
latency=${2:-100}
runs=${3:-3}
conc=${4:-2000}

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_scale.XXXXXX)
chmod 755 "$SWARM_TMP"
mock_port=$(swarm_free_port)
dirs=()
cleanup() {
    for d in "${dirs[@]}"; do swarm_stop_cluster "$d"; done
    swarm_stop_mock "$mock_port"
}
trap cleanup EXIT
swarm_start_mock "$mock_port" --latency-ms "$latency" --threads 2

common=("swarm.max_concurrent = $conc" "swarm.batch_size = 500" "swarm.flush_interval = 50ms"
        "max_wal_size = 4GB" "checkpoint_timeout = 30min")
citus=("shared_preload_libraries = 'citus,pg_swarm'" "listen_addresses = '127.0.0.1'"
       "max_prepared_transactions = 20" "max_connections = 200")

psql_at() { local dir=$1 port=$2; shift 2; "$PG_BIN/psql" -h "$dir" -p "$port" -U postgres -X -q -At "$@"; }
worker_pid() { psql_at "$1" "$2" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# one server
one=$SWARM_TMP/one; one_port=$(swarm_free_port); dirs+=("$one")
swarm_start_cluster "$one" "$one_port" postgres "$mock_port" "${common[@]}"
psql_at "$one" "$one_port" -c "CREATE EXTENSION pg_swarm" -c "SELECT swarm.create_agents($requests, 1)" >/dev/null

# the cluster: a coordinator (no shards) and two worker nodes
ports=()
for name in coord w1 w2; do
    d=$SWARM_TMP/$name; p=$(swarm_free_port); dirs+=("$d"); ports+=("$p")
    swarm_start_cluster "$d" "$p" postgres "$mock_port" "${common[@]}" "${citus[@]}"
    psql_at "$d" "$p" -c "CREATE EXTENSION citus"
done
coord=$SWARM_TMP/coord
psql_at "$coord" "${ports[0]}" -c "SELECT citus_set_coordinator_host('127.0.0.1', ${ports[0]})" \
    -c "SELECT citus_add_node('127.0.0.1', ${ports[1]})" -c "SELECT citus_add_node('127.0.0.1', ${ports[2]})" >/dev/null
psql_at "$coord" "${ports[0]}" -c "CREATE EXTENSION pg_swarm" -c "SELECT swarm.create_agents($requests, 1)" \
    -c "SELECT swarm.distribute(shard_count => 8)" >/dev/null 2>&1

# run_job DIR PORT -> "enqueue_s wall_s" (waits for the job to end)
run_job() {
    local dir=$1 port=$2 out job
    out=$(psql_at "$dir" "$port" -c "SELECT clock_timestamp()" -c "SELECT swarm.generate('bench')" -c "SELECT clock_timestamp()")
    job=$(echo "$out" | sed -n 2p)
    local enq
    enq=$(psql_at "$dir" "$port" -c "SELECT extract(epoch FROM '$(echo "$out" | sed -n 3p)'::timestamptz - '$(echo "$out" | sed -n 1p)'::timestamptz)")
    until [ "$(psql_at "$dir" "$port" -c "SELECT status FROM swarm.jobs WHERE id = $job")" = completed ]; do sleep 0.2; done
    echo "$enq $(psql_at "$dir" "$port" -c "SELECT extract(epoch FROM finished_at - started_at), succeeded FROM swarm.jobs WHERE id = $job" | tr '|' ' ')"
}

echo
echo "Endpoint: mock, fixed ${latency} ms, 2 threads, never saturated; $requests requests per job; max_concurrent $conc in total."
echo "CPU-bound 2-core box: the servers, workers and mock share two cores."
echo
echo "| run | set-up | enqueue s | wall s | requests/s | worker CPU µs/request (per node) |"
echo "|---|---|---|---|---|---|"
one_rates=(); cl_rates=(); one_cpu=(); cl_cpu=()
for r in $(seq 1 "$runs"); do
    psql_at "$one" "$one_port" -c "TRUNCATE swarm.messages, swarm.requests" >/dev/null
    pid=$(worker_pid "$one" "$one_port"); t0=$(cpu_ticks "$pid")
    read -r enq wall ok <<<"$(run_job "$one" "$one_port")"
    t1=$(cpu_ticks "$pid")
    cpu=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$ok" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    rate=$(awk -v n="$ok" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
    one_rates+=("$rate"); one_cpu+=("$cpu")
    echo "| $r | one server | $enq | $wall | $rate | $cpu |"

    psql_at "$coord" "${ports[0]}" -c "TRUNCATE swarm.messages, swarm.requests" >/dev/null
    for i in 1 2; do
        psql_at "$SWARM_TMP/w$i" "${ports[$i]}" -c "TRUNCATE swarm.job_node_progress" >/dev/null
    done
    p1=$(worker_pid "$SWARM_TMP/w1" "${ports[1]}"); p2=$(worker_pid "$SWARM_TMP/w2" "${ports[2]}")
    pc=$(worker_pid "$coord" "${ports[0]}")
    a1=$(cpu_ticks "$p1"); a2=$(cpu_ticks "$p2"); ac=$(cpu_ticks "$pc")
    read -r enq wall ok <<<"$(run_job "$coord" "${ports[0]}")"
    b1=$(cpu_ticks "$p1"); b2=$(cpu_ticks "$p2"); bc=$(cpu_ticks "$pc")
    n1=$(psql_at "$SWARM_TMP/w1" "${ports[1]}" -c "SELECT coalesce(sum(succeeded), 0) FROM swarm.job_node_progress")
    n2=$(psql_at "$SWARM_TMP/w2" "${ports[2]}" -c "SELECT coalesce(sum(succeeded), 0) FROM swarm.job_node_progress")
    c1=$(awk -v t="$((b1 - a1))" -v hz="$hz" -v n="$n1" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    c2=$(awk -v t="$((b2 - a2))" -v hz="$hz" -v n="$n2" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    cc=$(awk -v t="$((bc - ac))" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
    rate=$(awk -v n="$ok" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
    cl_rates+=("$rate"); cl_cpu+=("$(awk -v a="$c1" -v b="$c2" 'BEGIN { printf "%.1f", (a + b) / 2 }')")
    echo "| $r | coordinator + 2 workers | $enq | $wall | $rate | w1 $c1 ($n1 requests), w2 $c2 ($n2), coordinator's worker $cc s in all |"
done

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo
echo "medians: one server $(median "${one_rates[@]}") requests/s, $(median "${one_cpu[@]}") µs/request;" \
     "cluster $(median "${cl_rates[@]}") requests/s, $(median "${cl_cpu[@]}") µs/request per worker node"
