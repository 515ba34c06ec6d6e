#!/usr/bin/env bash
# Replay benchmark: the response store (swarm.response_store) and replay
# (swarm.replay), docs/replay.md.  Against the mock at a fixed 0 ms latency
# (no spread, never saturated, no errors, plain HTTP/1.1): the synchronous
# path at its fastest, so that the replay's gain is the least it can be; a
# real endpoint answers in hundreds of ms, and a replay does not wait for it.
# Prints markdown tables; run as root.
#
#   bash test/bench/replay_bench.sh                 # 100,000 agents (~5 min)
#   BENCH_AGENTS=20000 bash test/bench/replay_bench.sh
#
# Environment: BENCH_AGENTS (100000), BENCH_STEPS (5), BENCH_ACTIVITY (0.1),
# BENCH_CONCURRENT (500), BENCH_BUILD=1 to run make && make install first.
#
# Method:
#   1. Set-up: create_agents, build_friendships(10, 'small_world'),
#      create_communities(8 topics, agents / 20, 'interests').
#   2. Throughput, one generate() over every agent each, one after the
#      other: (a) synchronous, nothing kept; (b) synchronous with
#      swarm.response_store = on (the store's cost); (c) swarm.replay = on,
#      the same prompts, routed to an endpoint that refuses connections (so a
#      request that reached the network would fail).  requests/s = total /
#      (finished_at - created_at); worker CPU per request = utime + stime of
#      the pg_swarm worker over the job / requests.
#   3. A simulation with actions, BENCH_STEPS steps, seed 7, recorded with
#      swarm.response_store = on, then replayed with swarm.replay = on
#      through the refusing endpoint, each from empty memories; checksums of
#      messages, actions (a post named by its author and step), likes,
#      reposts, follows, mutes, memberships and memories compared.
# The mock, the worker, the step builder and PostgreSQL share this
# machine's cores: the figures say how they share the CPU.
set -eu
shopt -s inherit_errexit
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
if [ "${BENCH_BUILD:-}" = 1 ]; then swarm_build; fi

N=${BENCH_AGENTS:-100000}
STEPS=${BENCH_STEPS:-5}
ACTIVITY=${BENCH_ACTIVITY:-0.1}
CONC=${BENCH_CONCURRENT:-500}

SWARM_TMP=$(mktemp -d /tmp/pg_swarm_rbench.XXXXXX)
export SWARM_TMP
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=$(swarm_free_port)
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"; rm -rf "$SWARM_TMP"' EXIT

swarm_start_mock "$mock_port" --latency-ms 0 --threads 2
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" \
    "swarm.max_concurrent = $CONC" "swarm.batch_size = 500" "swarm.flush_interval = 50ms" \
    "shared_buffers = 1GB" "max_wal_size = 4GB" "checkpoint_timeout = 30min"
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
log() { echo "[$(date +%T)] $*" >&2; }
worker_pid() { psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run_job "SETTINGS" "CALL": makes the job with the settings, waits for it;
# prints "job<TAB>requests<TAB>seconds<TAB>worker CPU seconds<TAB>failed"
run_job() {
    local pid before job after
    pid=$(worker_pid)
    before=$(cpu_ticks "$pid")
    job=$(psql_ -c "$1" -c "SELECT $2")
    psql_ -c "SET client_min_messages = warning" -c "SELECT status FROM swarm.wait($job, interval '2 hours')" >/dev/null
    after=$(cpu_ticks "$pid")
    psql_ -c "SELECT id, total, extract(epoch FROM finished_at - created_at), $(( after - before )) / $hz::numeric, failed
              FROM swarm.jobs WHERE id = $job" | tr '|' '\t'
}

log "set-up: $N agents, friendships, communities"
psql_ -c "CREATE EXTENSION pg_swarm"
psql_ -c "SELECT swarm.create_agents($N, 1)" >/dev/null
psql_ -c "SELECT swarm.build_friendships(10, 'small_world', 1)" >/dev/null
psql_ -c "SELECT swarm.create_communities(ARRAY['sports', 'music', 'politics', 'science', 'cooking', 'travel', 'gaming', 'art'], $N / 20, 'interests', 1)" >/dev/null
psql_ -c "VACUUM ANALYZE swarm.agents, swarm.friendships, swarm.community_members"
psql_ -c "SELECT swarm.add_endpoint('refusing', 'http://127.0.0.1:1/v1', max_in_flight => $CONC)" >/dev/null

log "throughput: synchronous, nothing kept"
IFS=$'\t' read -r _ sync_n sync_s sync_cpu sync_failed <<<"$(run_job "SET swarm.replay = off" "swarm.generate('Say hi.')")"
log "throughput: synchronous, kept"
IFS=$'\t' read -r _ keep_n keep_s keep_cpu keep_failed <<<"$(run_job "SET swarm.response_store = on" "swarm.generate('Say hi.')")"
log "throughput: replayed"
IFS=$'\t' read -r replay_job replay_n replay_s replay_cpu replay_failed <<<"$(run_job "SET swarm.replay = on" "swarm.generate('Say hi.', endpoints => ARRAY['refusing'])")"
same_words=$(psql_ -c "SELECT count(*) FILTER (WHERE r.content = o.content) || ' of ' || count(*)
                       FROM swarm.messages r JOIN swarm.responses o ON o.agent_id = r.agent_id
                       JOIN swarm.jobs j ON j.id = o.job_id AND j.context = 'Say hi.'
                       WHERE r.job_id = $replay_job")
store_rows=$(psql_ -c "SELECT count(*) FROM swarm.responses")
store_size=$(psql_ -c "SELECT pg_size_pretty(pg_total_relation_size('swarm.responses'))")

sums() {
    psql_ <<SQL
WITH p AS (SELECT a.id, a.agent_id, a.step FROM swarm.actions a WHERE a.job_id = $1)
SELECT 'actions ' || count(*) || ' ' || md5(string_agg(concat_ws(':', a.agent_id, a.step, a.kind, a.valid, a.reason,
       a.target_agent_id, a.community_id, a.content, a.changed, p.agent_id, p.step), ',' ORDER BY a.agent_id, a.step))
FROM swarm.actions a LEFT JOIN p ON p.id = a.post_id WHERE a.job_id = $1;
SELECT 'messages ' || count(*) || ' ' || md5(string_agg(concat_ws(':', agent_id, turn, content, cardinality(seen)), ',' ORDER BY agent_id, turn))
FROM swarm.messages WHERE job_id = $1;
WITH p AS (SELECT a.id, a.agent_id, a.step FROM swarm.actions a WHERE a.job_id = $1)
SELECT 'likes ' || count(*) || ' ' || md5(string_agg(concat_ws(':', l.agent_id, l.value, l.step, p.agent_id, p.step), ',' ORDER BY l.agent_id, p.agent_id, p.step))
FROM swarm.likes l JOIN p ON p.id = l.post_id WHERE l.job_id = $1;
SELECT 'reposts ' || count(*) || ' ' || md5(string_agg(concat_ws(':', agent_id, quote, step), ',' ORDER BY agent_id, step)) FROM swarm.reposts WHERE job_id = $1;
SELECT 'follows ' || count(*) || ' ' || md5(string_agg(concat_ws(':', agent_id, target_id, step), ',' ORDER BY agent_id, target_id)) FROM swarm.follows WHERE job_id = $1;
SELECT 'mutes ' || count(*) || ' ' || md5(string_agg(concat_ws(':', agent_id, target_id, step), ',' ORDER BY agent_id, target_id)) FROM swarm.mutes WHERE job_id = $1;
SELECT 'memberships ' || count(*) || ' ' || md5(string_agg(concat_ws(':', agent_id, community_id, member, step), ',' ORDER BY agent_id, community_id)) FROM swarm.memberships WHERE job_id = $1;
SELECT 'memory ' || count(*) || ' ' || md5(string_agg(agent_id || ':' || swarm.unpack(memory)::text, ',' ORDER BY agent_id)) FROM swarm.agent_memory;
SQL
}

SIM="swarm.simulate($STEPS, activity => $ACTIVITY, seed => 7, actions => true"
log "simulation: recorded"
psql_ -c "TRUNCATE swarm.agent_memory"
IFS=$'\t' read -r sim_job sim_n sim_s sim_cpu sim_failed <<<"$(run_job "SET swarm.response_store = on" "$SIM)")"
sim_sums=$(sums "$sim_job")
log "simulation: replayed"
psql_ -c "TRUNCATE swarm.agent_memory"
IFS=$'\t' read -r rsim_job rsim_n rsim_s rsim_cpu rsim_failed <<<"$(run_job "SET swarm.replay = on" "$SIM, endpoints => ARRAY['refusing'])")"
rsim_sums=$(sums "$rsim_job")
sim_build=$(psql_ -c "SELECT round((sum(build_ms) / 1000)::numeric, 1) FROM swarm.simulation_steps WHERE job_id = $sim_job")
rsim_build=$(psql_ -c "SELECT round((sum(build_ms) / 1000)::numeric, 1) FROM swarm.simulation_steps WHERE job_id = $rsim_job")

rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
per() { python3 -c "print(f'{$1 * 1e6 / $2:.0f}')"; }
ratio() { python3 -c "print(f'{($1 / $2) / ($3 / $4):.1f}')"; }

cat <<EOF2
# pg_swarm replay benchmark: $N agents, mock at 0 ms, max_concurrent $CONC, $(nproc) cores, $("$PG_BIN/postgres" --version | awk '{print $NF}')

Repository at $(git rev-parse --short HEAD 2>/dev/null || echo '?'). The mock, the worker, the step builder and PostgreSQL share the machine's cores: the figures say how they share the CPU.

## Throughput: generate() over every agent

| run | requests | failed | seconds | requests/s | worker CPU µs per request |
|---|---|---|---|---|---|
| synchronous, nothing kept | $sync_n | $sync_failed | $(printf %.2f "$sync_s") | $(rate "$sync_n" "$sync_s") | $(per "$sync_cpu" "$sync_n") |
| synchronous, swarm.response_store = on | $keep_n | $keep_failed | $(printf %.2f "$keep_s") | $(rate "$keep_n" "$keep_s") | $(per "$keep_cpu" "$keep_n") |
| swarm.replay = on (the endpoint refuses connections) | $replay_n | $replay_failed | $(printf %.2f "$replay_s") | $(rate "$replay_n" "$replay_s") | $(per "$replay_cpu" "$replay_n") |

Replay / synchronous at 0 ms: **$(ratio "$replay_n" "$replay_s" "$sync_n" "$sync_s")x** requests/s. Replayed answers equal to the kept ones: $same_words. The store: $store_rows answers, $store_size.

## A simulation with actions, recorded and replayed

swarm.simulate($STEPS, activity => $ACTIVITY, seed => 7, actions => true), each run from empty memories.

| run | requests | failed | seconds | requests/s | step builds, s |
|---|---|---|---|---|---|
| recorded (swarm.response_store = on) | $sim_n | $sim_failed | $(printf %.2f "$sim_s") | $(rate "$sim_n" "$sim_s") | $sim_build |
| replayed (swarm.replay = on, the endpoint refuses connections) | $rsim_n | $rsim_failed | $(printf %.2f "$rsim_s") | $(rate "$rsim_n" "$rsim_s") | $rsim_build |

| checksum | recorded | replayed | equal |
|---|---|---|---|
EOF2
paste -d'\t' <(echo "$sim_sums") <(echo "$rsim_sums") | while IFS=$'\t' read -r a b; do
    echo "| ${a%% *} | ${a#* } | ${b#* } | $([ "$a" = "$b" ] && echo yes || echo '**no**') |"
done
[ "$sim_sums" = "$rsim_sums" ] || { echo "the replayed simulation differs from the recorded one" >&2; exit 1; }
