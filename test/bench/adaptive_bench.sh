#!/usr/bin/env bash
# Adaptive concurrency against an endpoint that answers 429 above N requests
# in flight (the mock's --max-inflight): the engine should settle near N
# without a storm of 429s, and climb again when the endpoint's limit rises.
# Prints a time series (every second: the adaptive limit, requests in flight,
# completions and 429s in that second) and a summary.  Run as root.
#
#   bash test/bench/adaptive_bench.sh [N_BEFORE=100] [N_AFTER=300] [SECONDS_EACH=20]
set -eu
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
swarm_build
n1=${1:-100}; n2=${2:-300}; each=${3:-20}

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_adaptive.XXXXXX)
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=$(swarm_free_port)
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"' EXIT
swarm_start_mock "$mock_port" --latency-ms 100 --max-inflight "$n1"
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" \
    "swarm.max_concurrent = 2000" "swarm.max_retries = 20"
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At "$@"; }
psql_ -c "CREATE EXTENSION pg_swarm" \
      -c "INSERT INTO swarm.agents (name) SELECT 'agent' || g FROM generate_series(1, 200000) g" \
      -c "SELECT swarm.add_endpoint('capped', 'http://127.0.0.1:$mock_port/v1', max_in_flight => 1000)" >/dev/null
job=$(psql_ -c "SELECT swarm.generate('adaptive', endpoints => ARRAY['capped'])")

echo "| t s | endpoint limit N | adaptive limit | in flight | completed/s | 429/s |"
echo "|---|---|---|---|---|---|"
prev_ok=0; prev_429=0; total_429_phase1=0; ok_phase1=0; ok_phase2=0; total_429_phase2=0
for t in $(seq 1 $((2 * each))); do
    sleep 1
    if [ "$t" = $((each + 1)) ]; then
        swarm_stop_mock "$mock_port"
        swarm_start_mock "$mock_port" --latency-ms 100 --max-inflight "$n2"
    fi
    n=$([ "$t" -le "$each" ] && echo "$n1" || echo "$n2")
    read limit inflight ok r429 <<<"$(psql_ -F ' ' -c "SELECT concurrency_limit, in_flight, succeeded, rate_limited FROM swarm.endpoint_status WHERE endpoint = 'capped'")"
    d_ok=$((ok - prev_ok)); d_429=$((r429 - prev_429)); prev_ok=$ok; prev_429=$r429
    if [ "$t" -le "$each" ]; then ok_phase1=$((ok_phase1 + d_ok)); total_429_phase1=$((total_429_phase1 + d_429));
    else ok_phase2=$((ok_phase2 + d_ok)); total_429_phase2=$((total_429_phase2 + d_429)); fi
    echo "| $t | $n | $limit | $inflight | $d_ok | $d_429 |"
done
psql_ -c "SELECT swarm.cancel($job)" >/dev/null
echo
python3 - "$n1" "$n2" "$each" "$ok_phase1" "$total_429_phase1" "$ok_phase2" "$total_429_phase2" <<'PY'
import sys
n1, n2, each, ok1, e1, ok2, e2 = map(int, sys.argv[1:])
print(f"phase 1 (N={n1}): {ok1/each:,.0f} completions/s (bound {n1*10:,}/s, {100*ok1/each/(n1*10):.0f}%), "
      f"{e1:,} 429s = {100*e1/max(ok1+e1,1):.1f}% of attempts")
print(f"phase 2 (N={n2}): {ok2/each:,.0f} completions/s (bound {n2*10:,}/s, {100*ok2/each/(n2*10):.0f}%), "
      f"{e2:,} 429s = {100*e2/max(ok2+e2,1):.1f}% of attempts")
PY
