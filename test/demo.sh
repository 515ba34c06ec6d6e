#!/usr/bin/env bash
# The pg_swarm demo: on a fresh Debian 12 machine (as root) it installs what it
# needs, builds and installs the extension, starts a throwaway PostgreSQL with
# pg_swarm preloaded and the mock LLM endpoint (100 ms latency, like the design
# document's simulation), runs test/demo/demo.sql, and stops everything.
#
#   bash test/demo.sh              # the demo against the mock
#   SWARM_BASE_URL=https://api.openai.com/v1 SWARM_API_KEY_FILE=/root/key \
#   SWARM_MODEL=gpt-4o-mini bash test/demo.sh   # against a real endpoint
set -eu
. "$(dirname "$0")/lib.sh"
cd "$SWARM_ROOT"

swarm_install_deps
swarm_build

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_demo.XXXXXX)
chmod 755 "$SWARM_TMP"
mock_port=$(swarm_free_port)
pg_port=$(swarm_free_port)
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"' EXIT

swarm_start_mock "$mock_port" --latency-ms 100 --jitter-ms 60
extra=()
[ -n "${SWARM_BASE_URL:-}" ] && extra+=("swarm.base_url = '$SWARM_BASE_URL'")
[ -n "${SWARM_API_KEY_FILE:-}" ] && extra+=("swarm.api_key_file = '$SWARM_API_KEY_FILE'")
[ -n "${SWARM_MODEL:-}" ] && extra+=("swarm.model = '$SWARM_MODEL'")
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" "${extra[@]}"

echo "PostgreSQL on port $pg_port (socket $SWARM_TMP/pg), mock endpoint on 127.0.0.1:$mock_port"
"$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -v ON_ERROR_STOP=1 \
    -f test/demo/demo.sql
