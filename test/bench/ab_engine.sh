#!/usr/bin/env bash
# Side by side: the engine benchmark (test/bench/engine_bench.sh) of two
# commits, run alternately A B A B ... on this machine, with the median of
# each figure per configuration.  For "no regression" claims: both builds see
# the same machine load, in the same minutes.
#
#   bash test/bench/ab_engine.sh REF_A REF_B [ROUNDS] ["latency conc requests" ...]
#
# Each round installs the build it runs (as root; wrap in
# `flock /tmp/pg_swarm_install.lock` when others install too).  The mock runs
# with the fixed latency each configuration names (no variation): this
# compares two builds of the engine, not endpoints.
set -eu
a=$1 b=$2 rounds=${3:-3}
shift $(( $# >= 3 ? 3 : $# ))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=("0 50 50000" "100 1000 50000" "100 2000 100000")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/pg_swarm_ab.XXXXXX)
trap 'git -C "$root" worktree remove --force "$work/A" 2>/dev/null; git -C "$root" worktree remove --force "$work/B" 2>/dev/null; rm -rf "$work"' EXIT
git -C "$root" worktree add -q --detach "$work/A" "$a"
git -C "$root" worktree add -q --detach "$work/B" "$b"
# both measured by the same script: B's (the newer one, normally)
for side in A B; do cp "$root/test/bench/engine_bench.sh" "$work/$side/test/bench/engine_bench.sh"; done

for r in $(seq 1 "$rounds"); do
    for side in A B; do
        echo "round $r: $side" >&2
        bash "$work/$side/test/bench/engine_bench.sh" "${configs[@]}" 2>/dev/null |
            grep -E '^\| [0-9]' | sed "s/^/$side /" >> "$work/rows"
    done
done
python3 - "$work/rows" "$a" "$b" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    side, rest = line.split(' ', 1)
    f = [c.strip() for c in rest.strip().strip('|').split('|')]
    key = (f[0], f[1], f[2])
    rows.setdefault((key, side), []).append(f)
print(f"A = {sys.argv[2]}, B = {sys.argv[3]}; medians of {max(len(v) for v in rows.values())} runs each, alternated")
print("| latency ms | max_concurrent | requests | A requests/s | B requests/s | B/A | A µs/request | B µs/request | A private MB | B private MB |")
print("|---|---|---|---|---|---|---|---|---|---|")
keys = sorted({k for k, _ in rows}, key=lambda k: (float(k[0]), int(k[1]), int(k[2].replace(',', ''))))
num = lambda s: float(s.replace(',', '').replace('*', ''))
for k in keys:
    A, B = rows.get((k, 'A'), []), rows.get((k, 'B'), [])
    med = lambda rs, i: statistics.median(num(r[i]) for r in rs) if rs else float('nan')
    ra, rb = med(A, 5), med(B, 5)
    print(f"| {k[0]} | {k[1]} | {k[2]} | {ra:,.0f} | {rb:,.0f} | {rb/ra:.2f} | {med(A, 8):.0f} | {med(B, 8):.0f} | {med(A, 9):.0f} | {med(B, 9):.0f} |")
PY
