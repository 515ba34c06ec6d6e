#!/usr/bin/env bash
# The social world at scale on one server and on a Citus coordinator with two
# worker nodes (distributed first, then built), all on this machine: the same
# calls with the same seeds, timed, and md5 checksums of agents, friendships
# (without 'since', drawn back from the day they are built), communities and
# members, which must be equal.  Run as root; needs Citus.
#
#   bash test/bench/scale_out_social.sh [agents]
set -eu
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
swarm_build
swarm_install_citus

agents=${1:-1000000}
latency=0
conc=50

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_social.XXXXXX)
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

# one server
one=$SWARM_TMP/one; one_port=$(swarm_free_port); dirs+=("$one")
swarm_start_cluster "$one" "$one_port" postgres "$mock_port" "${common[@]}"
psql_at "$one" "$one_port" -c "CREATE EXTENSION pg_swarm" >/dev/null

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
psql_at "$coord" "${ports[0]}" -c "CREATE EXTENSION pg_swarm" -c "SELECT swarm.distribute(shard_count => 8)" >/dev/null 2>&1

steps=("SELECT swarm.create_agents($agents, 7)"
       "SELECT swarm.build_friendships(10, 'small_world', 7)"
       "SELECT swarm.create_communities(ARRAY['a', 'b', 'c', 'd'], $((agents / 10)), 'friendships', 7)"
       "SELECT swarm.create_communities(ARRAY['e', 'f'], $((agents / 20)), 'interests', 8)")
checks=("SELECT count(*) || ' ' || md5(string_agg(id || name || persona::text, ',' ORDER BY id)) FROM swarm.agents"
        "SELECT count(*) || ' ' || md5(string_agg(agent_id || ':' || friend_id || ':' || strength, ',' ORDER BY agent_id, friend_id)) FROM swarm.friendships"
        "SELECT count(*) || ' ' || md5(string_agg(id || name || coalesce(topic, ''), ',' ORDER BY id)) FROM swarm.communities"
        "SELECT count(*) || ' ' || md5(string_agg(community_id || ':' || agent_id, ',' ORDER BY community_id, agent_id)) FROM swarm.community_members")
names=(agents friendships communities members)

echo
echo "$agents agents; one server against a coordinator + 2 worker nodes (8 shards), on this 2-core machine."
echo
echo "| step | one server s | cluster s |"
echo "|---|---|---|"
for st in "${steps[@]}"; do
    t0=$(date +%s.%N); psql_at "$one" "$one_port" -c "$st" >/dev/null; t1=$(date +%s.%N)
    psql_at "$coord" "${ports[0]}" -c "$st" >/dev/null; t2=$(date +%s.%N)
    echo "| \`$st\` | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') | $(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", b - a }') |"
done
echo
echo "| table | one server | cluster | equal |"
echo "|---|---|---|---|"
status=0
for i in 0 1 2 3; do
    a=$(psql_at "$one" "$one_port" -c "${checks[$i]}")
    b=$(psql_at "$coord" "${ports[0]}" -c "SET citus.max_intermediate_result_size = -1" -c "${checks[$i]}")
    eq=yes; [ "$a" = "$b" ] || { eq=NO; status=1; }
    echo "| ${names[$i]} | $a | $b | $eq |"
done
exit $status
