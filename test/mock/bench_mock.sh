#!/usr/bin/env bash
#
# test/mock/bench_mock.sh
#	Capacity of mock_llm under wrk: the table in docs/mock.md comes from here.
#
# For each row, starts a fresh mock on a free port with the given options,
# runs wrk with test/mock/post.lua (keep-alive, one small chat completion per
# request), and prints requests/s, wrk's error counts, mean latency and the
# mock's own peak counters from /mock/stats, as a markdown table.
#
# Usage: test/mock/bench_mock.sh [DURATION]     (default 10s; needs wrk)
#
# wrk and the mock share the machine's cores, so the numbers are a floor
# for the mock alone; run it on an otherwise idle machine.

set -u

here=$(cd "$(dirname "$0")" && pwd)
MOCK=${MOCK_LLM:-$here/mock_llm}
duration=${1:-10s}
tmp=$(mktemp -d)
mock_pid=

cleanup() {
	[ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

command -v wrk > /dev/null || { echo "wrk not installed (apt-get install -y wrk)"; exit 1; }
[ -x "$MOCK" ] || { echo "$MOCK not built (make mock)"; exit 1; }
ulimit -n "$(ulimit -Hn)"

# run_row "MOCK OPTIONS" "WRK OPTIONS"
run_row() {
	local mock_options=$1 wrk_options=$2 port line
	rm -f "$tmp/ready"		# the last row's line must not be read as this one's
	# shellcheck disable=SC2086
	"$MOCK" --port 0 --quiet $mock_options > "$tmp/ready" &
	mock_pid=$!
	for _ in $(seq 100); do grep -q listening "$tmp/ready" 2>/dev/null && break; sleep 0.05; done
	port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$tmp/ready")
	# shellcheck disable=SC2086
	wrk $wrk_options -d"$duration" -s "$here/post.lua" "http://127.0.0.1:$port" > "$tmp/wrk" 2>&1
	curl -sS --max-time 5 "http://127.0.0.1:$port/mock/stats" > "$tmp/stats"
	kill "$mock_pid"
	wait "$mock_pid" 2>/dev/null
	mock_pid=
	line=$(python3 - "$tmp/wrk" "$tmp/stats" "$mock_options" "$wrk_options" <<'EOF'
import json, re, sys
wrk = open(sys.argv[1]).read()
stats = json.load(open(sys.argv[2]))
rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk)
latency = re.search(r"Latency\s+(\S+)", wrk)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
errors = re.search(r"Socket errors: (.*)", wrk)
print("| `%s` | `wrk %s` | %s | %s | %s | %s | %d | %d |" % (
    sys.argv[3], sys.argv[4],
    "{:,.0f}".format(float(rps.group(1))) if rps else "?",
    latency.group(1) if latency else "?",
    non2xx.group(1) if non2xx else "0",
    errors.group(1) if errors else "none",
    stats["peak_connections"], stats["peak_inflight"]))
EOF
)
	echo "$line"
}

echo "| mock options | wrk options | requests/s | mean latency | non-2xx | socket errors | peak connections | peak inflight |"
echo "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |"
run_row "--threads 1" "-t1 -c50"
run_row "--threads 1" "-t1 -c200"
run_row "--threads 2" "-t1 -c50"
run_row "--threads 2" "-t1 -c200"
run_row "--threads 2" "-t2 -c200"
run_row "--threads 1 --latency-ms 100" "-t2 -c1000"
run_row "--threads 1 --latency-ms 100" "-t2 -c4000"
run_row "--threads 2 --latency-ms 100" "-t2 -c4000"
