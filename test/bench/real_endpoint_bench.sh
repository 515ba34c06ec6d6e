#!/usr/bin/env bash
# Real-endpoint benchmark: how the adaptive concurrency limit behaves against
# endpoints whose latency varies like real LLMs', and against one that
# saturates.  Each run names the endpoint behaviour (mock_llm settings) it
# ran against.  Prints markdown tables; run as root.
#
#   bash test/bench/real_endpoint_bench.sh              # everything
#   BENCH_PARTS="latency" bash test/bench/real_endpoint_bench.sh
#
# Part "latency": 3,000 requests at swarm.max_concurrent = 200 (defaults
# otherwise) against fixed 800 ms, lognormal (median 800 ms, sigma 0.4),
# lognormal (median 600 ms, sigma 1.0) and uniform 100-3,000 ms latency,
# never a 429: the median and p10 of the requests in flight the endpoint saw
# at each arrival (mock's /mock/stats), over max_concurrent; the adaptive
# limit at the end; the time against the C/L bound (3,000 x mean latency /
# 200).
# Part "saturate": an endpoint that serves at most K = 50 at once, each in a
# lognormal time (median 200 ms, sigma 0.4; the rest wait in a FIFO, as a
# vLLM server past max_num_seqs), 6,000 requests at max_concurrent = 200:
# where the limit settles, throughput against the endpoint's best (K / mean
# service time) and the median latency against the unloaded one; then the
# same with identical service times (fixed 200 ms), where the queue moves in
# lock-step.
set -eu
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
# BENCH_NO_BUILD=1: measure whatever pg_swarm is installed (an older build, for
# a before/after); BENCH_TIME_CAP: give up on a job after this (default 10 min)
[ "${BENCH_NO_BUILD:-}" = 1 ] || swarm_build
parts=${BENCH_PARTS:-latency saturate}
cap=${BENCH_TIME_CAP:-10 min}

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_rbench.XXXXXX)
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=$(swarm_free_port)
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"' EXIT
swarm_start_mock "$mock_port" --threads 2
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" \
    "swarm.max_concurrent = 200" ${BENCH_EXTRA_CONF:+"$BENCH_EXTRA_CONF"}
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At "$@"; }
psql_ -c "CREATE EXTENSION pg_swarm" -c "SELECT swarm.create_agents(6000, 1)" >/dev/null
stat() { curl -s "127.0.0.1:$mock_port/mock/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# run_job N MOCK_ARGS...: restarts the mock with MOCK_ARGS, runs generate over
# the first N agents, prints "seconds limit_after arrival_p50 arrival_p90 latency_p50_ms"
run_job() {
    local n=$1; shift
    swarm_stop_mock "$mock_port"
    swarm_start_mock "$mock_port" --threads 2 "$@"
    # a restart: each endpoint behaviour meets a worker that has not seen another
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$SWARM_TMP/pg/data" -w -m fast restart >/dev/null
    until [ "$(psql_ -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")" = 1 ]; do sleep 0.2; done
    local job
    job=$(psql_ -c "SELECT swarm.generate('bench', agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT $n))")
    psql_ -c "SET client_min_messages = warning" -c "SELECT status FROM swarm.wait($job, '$cap')" >/dev/null
    local secs limit lat
    secs=$(psql_ -c "SELECT round(extract(epoch FROM coalesce(finished_at, now()) - started_at)::numeric, 1) FROM swarm.jobs WHERE id = $job")
    limit=$(psql_ -c "SELECT concurrency_limit FROM swarm.endpoint_status WHERE endpoint = 'default'")
    lat=$(psql_ -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::numeric) FROM swarm.messages WHERE job_id = $job")
    echo "$secs $limit $(stat inflight_at_arrival_p50) $(stat inflight_at_arrival_p90) $lat $(psql_ -c "SELECT succeeded FROM swarm.jobs WHERE id = $job")"
}

if [[ " $parts " == *" latency "* ]]; then
    echo
    echo "### 3,000 requests, max_concurrent 200, endpoint never refuses"
    echo
    echo "| endpoint latency (mock) | mean latency ms | seconds | C/L bound s | median in flight / 200 | adaptive limit after | succeeded |"
    echo "|---|---|---|---|---|---|---|"
    for spec in "fixed:800 800" "lognormal:800,0.4 866" "lognormal:600,1.0 989" "uniform:100-3000 1550"; do
        set -- $spec
        read secs limit p50 p90 lat ok <<<"$(run_job 3000 --latency "$1")"
        bound=$(python3 -c "print(round(3000 * $2 / 1000 / 200, 1))")
        echo "| $1 | $2 | $secs | $bound | $(python3 -c "print(f'{$p50/200:.0%}')") | $limit | $ok |"
    done
fi

if [[ " $parts " == *" saturate "* ]]; then
    echo
    echo "### An endpoint that serves at most 50 at once (FIFO beyond), 6,000 requests, max_concurrent 200"
    echo
    echo "| service time (mock) | endpoint's best requests/s | requests/s | % of best | limit after | median in flight | median latency ms | unloaded median ms | latency / unloaded |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for spec in "lognormal:200,0.4 216.6 200" "fixed:200 200 200"; do
        set -- $spec
        read secs limit p50 p90 lat ok <<<"$(run_job 6000 --latency "$1" --saturate 50)"
        python3 - "$1" "$2" "$3" "$secs" "$limit" "$p50" "$lat" "$ok" <<'PY'
import sys
spec, mean, unloaded, secs, limit, p50, lat, ok = sys.argv[1:]
best = 50 / (float(mean) / 1000)
rate = int(ok) / float(secs)
print(f"| {spec} | {best:.0f} | {rate:.0f} | {100 * rate / best:.0f}% | {limit} | {p50} | {lat} | {unloaded} | {float(lat) / float(unloaded):.2f} |")
PY
    done
fi
