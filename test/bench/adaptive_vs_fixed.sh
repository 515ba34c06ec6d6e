#!/usr/bin/env bash
# The adaptive limit's cost: test/bench/engine_bench.sh at one configuration
# (default: 100 ms, 2,000 in flight, 1,000,000 requests), alternating runs with
# the adaptive limit on and off (swarm.adaptive_concurrency), and optionally a
# run of an earlier commit with it on, round after round in the same minutes.
# Prints each run's table row (with the endpoint's limit and in-flight p10 /
# median) and the medians.  Endpoint behaviour: the mock at a fixed latency,
# no errors, never saturated, so the right limit is max_concurrent
# throughout.  Run as root.
#
#   bash test/bench/adaptive_vs_fixed.sh [ROUNDS] [EARLIER_REF] ["latency conc requests"]
set -eu
rounds=${1:-3} earlier=${2:-} cfg=${3:-"100 2000 1000000"}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/pg_swarm_adaptive.XXXXXX)
trap 'git -C "$root" worktree remove --force "$work/earlier" 2>/dev/null; rm -rf "$work"' EXIT
runs=("now on" "now off")
if [ -n "$earlier" ]; then
    git -C "$root" worktree add -q --detach "$work/earlier" "$earlier"
    cp "$root/test/bench/engine_bench.sh" "$work/earlier/test/bench/engine_bench.sh"
    runs=("earlier on" "${runs[@]}")
fi
for r in $(seq 1 "$rounds"); do
    for run in "${runs[@]}"; do
        set -- $run
        tree=$root; [ "$1" = earlier ] && tree=$work/earlier
        echo "round $r: $1, adaptive $2" >&2
        conf=""; [ "$2" = off ] && conf="swarm.adaptive_concurrency = off"
        BENCH_CONF=$conf bash "$tree/test/bench/engine_bench.sh" "$cfg" 2>/dev/null |
            grep -E '^\| [0-9]' | sed "s/^/$1-$2 /" | tee -a "$work/rows"
    done
done
python3 - "$work/rows" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    who, rest = line.split(' ', 1)
    f = [c.strip() for c in rest.strip().strip('|').split('|')]
    rows.setdefault(who, []).append(float(f[5].replace(',', '')))
print("| build, adaptive | requests/s (each run) | median |")
print("| --- | --- | --- |")
for who, rates in rows.items():
    print(f"| {who} | {'; '.join(f'{r:,.0f}' for r in rates)} | {statistics.median(rates):,.0f} |")
if 'now-on' in rows and 'now-off' in rows:
    ratios = sorted(a / b for a, b in zip(rows['now-on'], rows['now-off']))
    print(f"adaptive / fixed, run by run: {', '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})")
PY
