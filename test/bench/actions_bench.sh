#!/usr/bin/env bash
# Actions benchmark: swarm.simulate(..., actions => true) on 1,000,000 agents,
# against the mock at a fixed 100 ms latency (no spread, never saturated, no
# errors, plain HTTP/1.1, every reply a valid action unless
# BENCH_INVALID_ACTIONS), on a throwaway cluster.  Real endpoints vary ten
# times and more and saturate; this measures pg_swarm's side only.  Each active
# agent answers a step with one action (structured output); the worker
# validates and applies the actions in its store transaction
# (swarm._apply_actions()), and the step builder, a background worker of its
# own, builds each next step.  It measures what a step costs to build, what
# a simulation with actions does to a plain swarm.generate() job running
# beside it, and how fast a step's actions are validated and applied.
# Prints markdown tables; run as root.
#
#   bash test/bench/actions_bench.sh                     # 1,000,000 agents, 10 steps (~10-15 min)
#   BENCH_AGENTS=20000 BENCH_STEPS=4 BENCH_GENERATE=5000 bash test/bench/actions_bench.sh   # quick
#
# Environment: BENCH_AGENTS (1000000), BENCH_STEPS (10, at least 3),
# BENCH_ACTIVITY (0.1: the share of agents active at each step),
# BENCH_GENERATE (100000: the requests of the generate job, the first agents
# by id), BENCH_CONCURRENT (2000), BENCH_LATENCY_MS (100),
# BENCH_INVALID_ACTIONS (0: the mock's --invalid-actions share, to exercise
# the invalid path), BENCH_PART_AGENTS (swarm.step_part_agents; unset: its
# default, 10,000; 0: every step built whole), BENCH_BUILD=1 to run make && make install first (by
# default the installed extension is used as it is), BENCH_KEEP_TMP=1 keeps
# the cluster's directory (server.log) after the run.
#
# Method (as in docs/benchmarks.md): a job's wall time is finished_at -
# created_at of its swarm.jobs row, from the call to the commit of its last
# result.
#   1. Set-up: create_agents, build_friendships(10, 'small_world'),
#      create_communities(8 topics, agents / 20, 'interests'), each timed.
#   2. Generate alone: swarm.generate('Say hi.') over the first
#      BENCH_GENERATE agents; its requests/s.
#   3. The simulation: swarm.simulate(BENCH_STEPS, activity => BENCH_ACTIVITY,
#      seed => 1, actions => true).  As soon as its step 3 is built (a row in
#      swarm.simulation_steps) the same generate job is started beside it;
#      its requests/s against the alone run's say what the simulation costs
#      other jobs.  CPU is utime + stime (/proc/PID/stat) of the pg_swarm
#      worker and of the step builder from the simulate() call until both
#      jobs have ended.
#   4. Per step, from swarm.simulation_steps: parts (a step of more agents
#      than swarm.step_part_agents is built in parts, each committed on its
#      own while the worker sends the ones before), ready_ms (from the start
#      of the step's build to its first part's requests: what the
#      simulation waited for the step), build_ms (the step builder's own
#      measure, all parts), and the step's wall: from the start of its
#      build (started_at) to the start of the next one's (the last step:
#      finished_at), so that each row's shares are of its own wall.  Tokens per agent-step from
#      swarm.step_tokens (the mock counts message bytes / 4, as the prompt
#      budget does), actions from swarm.actions.
#   5. Apply: the last step's actions and what they changed are taken back
#      out (swarm.actions, reposts by step; likes, follows, mutes and
#      memberships by action id, each restored to what the step before left,
#      from the earlier steps' changed actions), then swarm._apply_actions()
#      is called over that step's messages' request ids in batches of 500
#      (the worker's batch size), in store order, each batch committed
#      (synchronous_commit off, as the worker); actions/s = actions recorded /
#      total seconds of the calls and commits.  Checked: one action recorded
#      per message, each equal to the one the simulation recorded, the typed
#      tables of the job exactly as before.
# The machine's cores are shared by the mock, the worker, the step builder,
# the backends and WAL writing: the figures say how they share the CPU.
set -eu
shopt -s inherit_errexit
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
if [ "${BENCH_BUILD:-}" = 1 ]; then swarm_build; fi

N=${BENCH_AGENTS:-1000000}
STEPS=${BENCH_STEPS:-10}
ACTIVITY=${BENCH_ACTIVITY:-0.1}
GEN=${BENCH_GENERATE:-100000}
CONC=${BENCH_CONCURRENT:-2000}
LATENCY=${BENCH_LATENCY_MS:-100}
INVALID=${BENCH_INVALID_ACTIONS:-0}
BATCH=500

if [ "$STEPS" -lt 3 ]; then echo "BENCH_STEPS must be at least 3 (the generate job starts at step 3)" >&2; exit 1; fi
if [ "$GEN" -gt "$N" ]; then GEN=$N; fi

SWARM_TMP=$(mktemp -d /tmp/pg_swarm_abench.XXXXXX)
export SWARM_TMP
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=$(swarm_free_port)
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"; [ "${BENCH_KEEP_TMP:-}" = 1 ] || rm -rf "$SWARM_TMP"' EXIT

mock_args=(--latency-ms "$LATENCY" --threads 2)
if [ "$INVALID" != 0 ]; then mock_args+=(--invalid-actions "$INVALID"); fi
swarm_start_mock "$mock_port" "${mock_args[@]}"
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" \
    "swarm.max_concurrent = $CONC" "swarm.batch_size = $BATCH" "swarm.flush_interval = 50ms" \
    "shared_buffers = 2GB" "max_wal_size = 4GB" "checkpoint_timeout = 30min" "work_mem = 64MB" \
    ${BENCH_PART_AGENTS:+"swarm.step_part_agents = $BENCH_PART_AGENTS"}
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
log() { echo "[$(date +%T)] $*" >&2; }

backend_pid() { psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = '$1'"; }
worker_pid() { backend_pid 'pg_swarm worker'; }
builder_pid() { backend_pid 'pg_swarm step builder'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# machine-wide "busy idle" jiffies
sys_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
hz=$(getconf CLK_TCK)
ncpu=$(nproc)
cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)

# timed SQL: prints "seconds<TAB>result"
timed() {
    local out
    out=$(psql_ -c "SELECT extract(epoch FROM clock_timestamp())" -c "$1" -c "SELECT extract(epoch FROM clock_timestamp())")
    python3 - "$out" <<'PY'
import sys
lines = sys.argv[1].splitlines()
print(f"{float(lines[-1]) - float(lines[0]):.2f}\t{' '.join(lines[1:-1])}")
PY
}

# wait_job JOB: until it ends (3 hours at most); fails unless it completed
wait_job() {
    local status
    status=$(psql_ -c "SET client_min_messages = warning" -c "SELECT status FROM swarm.wait($1, interval '3 hours')")
    [ "$status" = completed ] || { echo "job $1 ended $status" >&2; return 1; }
}

# the step builder starts beside the worker: wait for it
for _ in $(seq 1 100); do
    [ -n "$(builder_pid)" ] && break
    sleep 0.1
done
[ -n "$(builder_pid)" ] || { echo "the pg_swarm step builder did not start" >&2; exit 1; }

RESULTS=$SWARM_TMP/results
: >"$RESULTS"
GEN_SQL="SELECT swarm.generate('Say hi.', agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT $GEN))"

# ---------------------------------------------------------------- set-up ----
log "set-up: $N agents, friendships, communities"
psql_ -c "CREATE EXTENSION pg_swarm"
r=$(timed "SELECT swarm.create_agents($N, 1)"); IFS=$'\t' read -r t_agents r_agents <<<"$r"
r=$(timed "SELECT swarm.build_friendships(10, 'small_world', 1)"); IFS=$'\t' read -r t_friends r_friends <<<"$r"
r=$(timed "SELECT swarm.create_communities(ARRAY['chess', 'jazz', 'hiking', 'cooking', 'films', 'running', 'gardening', 'photography'], $((N / 20)), 'interests', 1)")
IFS=$'\t' read -r t_comm r_comm <<<"$r"
r=$(timed "VACUUM ANALYZE swarm.agents, swarm.friendships, swarm.communities, swarm.community_members"); IFS=$'\t' read -r t_analyze _ <<<"$r"
r=$(psql_ -F ' ' -c "SELECT count(*), min(n), max(n) FROM (SELECT community_id, count(*) n FROM swarm.community_members GROUP BY 1) c")
read -r n_comm_used comm_min comm_max <<<"$r"
printf 'setup\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t_agents" "$r_agents" "$t_friends" "$r_friends" \
    "$t_comm" "$r_comm" "$t_analyze" "$n_comm_used" "$comm_min" "$comm_max" >>"$RESULTS"
log "set-up: agents ${t_agents} s, friendships ${t_friends} s, communities ${t_comm} s"

# ------------------------------------------------------- generate alone ----
log "generate alone: $GEN requests"
wpid=$(worker_pid)
c0=$(cpu_ticks "$wpid")
r=$(timed "$GEN_SQL"); IFS=$'\t' read -r enq_alone gen_alone <<<"$r"
wait_job "$gen_alone"
c1=$(cpu_ticks "$wpid")
[ "$(worker_pid)" = "$wpid" ] || { echo "the worker restarted during the run" >&2; exit 1; }
r=$(psql_ -F $'\t' -c "SELECT extract(epoch FROM finished_at - created_at), succeeded, failed FROM swarm.jobs WHERE id = $gen_alone")
printf 'gen_alone\t%s\t%s\t%s\t%s\n' "$enq_alone" "$r" "$((c1 - c0))" "$gen_alone" >>"$RESULTS"
log "generate alone: $(cut -f1 <<<"$r") s"
psql_ -c "VACUUM ANALYZE swarm.jobs, swarm.requests, swarm.messages"

# ----------------------------------------------------------- simulation ----
log "simulate($STEPS, activity => $ACTIVITY, seed => 1, actions => true)"
wpid=$(worker_pid); bpid=$(builder_pid)
cw0=$(cpu_ticks "$wpid"); cb0=$(cpu_ticks "$bpid"); s0=$(sys_ticks)
r=$(timed "SELECT swarm.simulate($STEPS, activity => $ACTIVITY, seed => 1, actions => true)")
IFS=$'\t' read -r enq_sim sim <<<"$r"

# at the start of step 3, the same generate job beside the simulation
t_start=$(date +%s)
while :; do
    r=$(psql_ -F ' ' -c "SELECT EXISTS (SELECT 1 FROM swarm.simulation_steps WHERE job_id = $sim AND step = 3),
                                status FROM swarm.jobs WHERE id = $sim")
    read -r seen3 sim_status <<<"$r"
    [ "$seen3" = t ] && break
    case $sim_status in completed|cancelled)
        echo "the simulation ended ($sim_status) before its step 3 was built" >&2; exit 1;;
    esac
    [ $(($(date +%s) - t_start)) -lt 10800 ] || { echo "step 3 not built after 3 hours" >&2; exit 1; }
    sleep 0.02
done
r=$(timed "$GEN_SQL"); IFS=$'\t' read -r enq_beside gen_beside <<<"$r"
log "step 3 built: generate job $gen_beside started beside the simulation"
wait_job "$sim"
log "simulation done"
wait_job "$gen_beside"
cw1=$(cpu_ticks "$wpid"); cb1=$(cpu_ticks "$bpid"); s1=$(sys_ticks)
[ "$(worker_pid)" = "$wpid" ] || { echo "the worker restarted during the run" >&2; exit 1; }
[ "$(builder_pid)" = "$bpid" ] || { echo "the step builder restarted during the run" >&2; exit 1; }

r=$(psql_ -F $'\t' -c "SELECT extract(epoch FROM finished_at - created_at), total, succeeded, failed,
                              params ->> 'prompt_budget', (SELECT count(*) FROM swarm.simulation_steps WHERE job_id = $sim)
                       FROM swarm.jobs WHERE id = $sim")
printf 'sim\t%s\t%s\t%s\t%s\t%s\t%s\n' "$enq_sim" "$r" "$((cw1 - cw0))" "$((cb1 - cb0))" "$s0 $s1" "$sim" >>"$RESULTS"
# the generate beside: its wall, when it started (after the simulation's
# creation, after step 3's built_at) and how much of it overlapped the simulation
r=$(psql_ -F $'\t' -c "
    SELECT extract(epoch FROM g.finished_at - g.created_at), g.succeeded, g.failed,
           extract(epoch FROM g.created_at - s.created_at),
           extract(epoch FROM g.created_at - ss.built_at),
           extract(epoch FROM least(g.finished_at, s.finished_at) - g.created_at)
    FROM swarm.jobs g, swarm.jobs s, swarm.simulation_steps ss
    WHERE g.id = $gen_beside AND s.id = $sim AND ss.job_id = $sim AND ss.step = 3")
printf 'gen_beside\t%s\t%s\t%s\n' "$enq_beside" "$r" "$gen_beside" >>"$RESULTS"

# per step: the builder's record, tokens, actions
psql_ -F $'\t' -c "
    WITH s AS (
        SELECT ss.step, ss.requests, ss.build_ms, ss.built_at, ss.parts, coalesce(ss.ready_ms, ss.build_ms) AS ready_ms,
               coalesce(ss.started_at, ss.built_at - ss.build_ms * interval '1 ms') AS build_start,
               lead(coalesce(ss.started_at, ss.built_at - ss.build_ms * interval '1 ms')) OVER w AS next_start
        FROM swarm.simulation_steps ss WHERE ss.job_id = $sim
        WINDOW w AS (ORDER BY ss.step)),
    tok AS (SELECT t.step, t.agents, t.prompt_tokens_avg, t.prompt_tokens_max, t.completion_tokens_avg
            FROM swarm.step_tokens t WHERE t.job_id = $sim),
    act AS (SELECT a.step, count(*) AS n, count(*) FILTER (WHERE a.valid) AS valid
            FROM swarm.actions a WHERE a.job_id = $sim GROUP BY a.step)
    SELECT s.step, s.requests, round(s.build_ms::numeric, 1), round(s.ready_ms::numeric, 1), s.parts,
           extract(epoch FROM coalesce(s.next_start, j.finished_at) - s.build_start),
           coalesce(tok.agents, 0), coalesce(tok.prompt_tokens_avg, 0), coalesce(tok.prompt_tokens_max, 0),
           coalesce(tok.completion_tokens_avg, 0), coalesce(act.n, 0), coalesce(act.valid, 0)
    FROM s JOIN swarm.jobs j ON j.id = $sim
    LEFT JOIN tok ON tok.step = s.step LEFT JOIN act ON act.step = s.step
    ORDER BY s.step" | sed 's/^/step\t/' >>"$RESULTS"

# every message has its action, every action its message
r=$(psql_ -F $'\t' -c "
    SELECT (SELECT count(*) FROM swarm.actions a WHERE a.job_id = $sim),
           (SELECT count(*) FROM swarm.actions a WHERE a.job_id = $sim AND a.valid),
           (SELECT count(*) FROM swarm.actions a WHERE a.job_id = $sim
              AND EXISTS (SELECT 1 FROM swarm.messages m WHERE m.id = a.id AND m.job_id = a.job_id
                                                          AND m.agent_id = a.agent_id AND m.turn = a.step)),
           (SELECT count(*) FROM swarm.messages m WHERE m.job_id = $sim),
           (SELECT count(*) FROM swarm.messages m WHERE m.job_id = $sim
              AND NOT EXISTS (SELECT 1 FROM swarm.actions a WHERE a.agent_id = m.agent_id AND a.id = m.id))")
printf 'actions\t%s\n' "$r" >>"$RESULTS"
psql_ -F $'\t' -c "SELECT kind, count(*), count(*) FILTER (WHERE valid), count(*) FILTER (WHERE changed)
                   FROM swarm.actions WHERE job_id = $sim GROUP BY kind ORDER BY count(*) DESC, kind" |
    sed 's/^/kind\t/' >>"$RESULTS"

# ------------------------------------------------------ apply throughput ----
log "apply: step $STEPS's actions taken out and applied again, batches of $BATCH"
# what the job's typed tables hold, in a stable order
DIGEST="SELECT md5(concat_ws('|',
    (SELECT string_agg(concat_ws('/', agent_id, post_id, value, step, action_id, owner), ',' ORDER BY agent_id, post_id)
     FROM swarm.likes WHERE job_id = $sim),
    (SELECT string_agg(concat_ws('/', agent_id, id, post_id, quote, step, owner), ',' ORDER BY agent_id, id)
     FROM swarm.reposts WHERE job_id = $sim),
    (SELECT string_agg(concat_ws('/', agent_id, target_id, step, action_id, owner), ',' ORDER BY agent_id, target_id)
     FROM swarm.follows WHERE job_id = $sim),
    (SELECT string_agg(concat_ws('/', agent_id, target_id, step, action_id, owner), ',' ORDER BY agent_id, target_id)
     FROM swarm.mutes WHERE job_id = $sim),
    (SELECT string_agg(concat_ws('/', agent_id, community_id, member, step, action_id, owner), ',' ORDER BY agent_id, community_id)
     FROM swarm.memberships WHERE job_id = $sim)))"
digest_before=$(psql_ -c "$DIGEST")
psql_ -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE bench_orig AS
    SELECT agent_id, id, job_id, step, kind, post_id, target_agent_id, community_id, content, valid, reason, changed, owner
    FROM swarm.actions WHERE job_id = $sim AND step = $STEPS;
CREATE INDEX ON bench_orig (id);
ANALYZE bench_orig;
BEGIN;
-- likes: the step's changed reactions, back to the reaction each replaced
DELETE FROM swarm.likes l USING bench_orig o WHERE l.agent_id = o.agent_id AND l.job_id = $sim AND l.action_id = o.id;
INSERT INTO swarm.likes (agent_id, job_id, post_id, value, step, action_id, owner)
SELECT DISTINCT ON (a.agent_id, a.post_id) a.agent_id, a.job_id, a.post_id,
       CASE a.kind WHEN 'like' THEN 1 ELSE -1 END, a.step, a.id, a.owner
FROM swarm.actions a
JOIN bench_orig o ON o.agent_id = a.agent_id AND o.post_id = a.post_id AND o.changed AND o.kind IN ('like', 'dislike')
WHERE a.job_id = $sim AND a.step < $STEPS AND a.changed AND a.kind IN ('like', 'dislike')
ORDER BY a.agent_id, a.post_id, a.step DESC;
-- follows: the step's new ones out, the ones it unfollowed back
DELETE FROM swarm.follows f USING bench_orig o WHERE f.agent_id = o.agent_id AND f.job_id = $sim AND f.action_id = o.id;
INSERT INTO swarm.follows (agent_id, job_id, target_id, step, action_id, owner)
SELECT DISTINCT ON (a.agent_id, a.target_agent_id) a.agent_id, a.job_id, a.target_agent_id, a.step, a.id, a.owner
FROM swarm.actions a
JOIN bench_orig o ON o.agent_id = a.agent_id AND o.target_agent_id = a.target_agent_id AND o.changed AND o.kind = 'unfollow'
WHERE a.job_id = $sim AND a.step < $STEPS AND a.changed AND a.kind = 'follow'
ORDER BY a.agent_id, a.target_agent_id, a.step DESC;
DELETE FROM swarm.mutes x USING bench_orig o WHERE x.agent_id = o.agent_id AND x.job_id = $sim AND x.action_id = o.id;
-- memberships: back to the step before's join or leave (none: the seeded membership)
DELETE FROM swarm.memberships ms USING bench_orig o WHERE ms.agent_id = o.agent_id AND ms.job_id = $sim AND ms.action_id = o.id;
INSERT INTO swarm.memberships (agent_id, job_id, community_id, member, step, action_id, owner)
SELECT DISTINCT ON (a.agent_id, a.community_id) a.agent_id, a.job_id, a.community_id,
       a.kind = 'join_community', a.step, a.id, a.owner
FROM swarm.actions a
JOIN bench_orig o ON o.agent_id = a.agent_id AND o.community_id = a.community_id AND o.changed
                 AND o.kind IN ('join_community', 'leave_community')
WHERE a.job_id = $sim AND a.step < $STEPS AND a.changed AND a.kind IN ('join_community', 'leave_community')
ORDER BY a.agent_id, a.community_id, a.step DESC;
DELETE FROM swarm.reposts WHERE job_id = $sim AND step = $STEPS;
DELETE FROM swarm.actions WHERE job_id = $sim AND step = $STEPS;
COMMIT;
VACUUM ANALYZE swarm.actions, swarm.likes, swarm.reposts, swarm.follows, swarm.mutes, swarm.memberships;

-- the step's messages in store order, in batches of $BATCH
CREATE TABLE bench_batches AS
    SELECT b AS batch, array_agg(request_id ORDER BY id) AS ids, count(*) AS n,
           NULL::bigint AS recorded, NULL::double precision AS seconds
    FROM (SELECT m.id, m.request_id, (row_number() OVER (ORDER BY m.id) - 1) / $BATCH AS b
          FROM swarm.messages m WHERE m.job_id = $sim AND m.turn = $STEPS) x
    GROUP BY b;
CREATE PROCEDURE bench_apply() LANGUAGE plpgsql AS \$\$
DECLARE
    r record;
    t0 timestamptz;
    got bigint;
    batches bigint[] := '{}';
    recs bigint[] := '{}';
    secs double precision[] := '{}';
BEGIN
    FOR r IN SELECT batch, ids FROM bench_batches ORDER BY batch LOOP
        t0 := clock_timestamp();
        got := swarm._apply_actions(r.ids);
        COMMIT;
        batches := batches || r.batch;
        recs := recs || got;
        secs := secs || extract(epoch FROM clock_timestamp() - t0)::double precision;
    END LOOP;
    UPDATE bench_batches b SET recorded = x.rec, seconds = x.sec
    FROM unnest(batches, recs, secs) AS x(batch, rec, sec) WHERE b.batch = x.batch;
END
\$\$;
SQL
psql_ -c "SET synchronous_commit = off" -c "CALL bench_apply()"
digest_after=$(psql_ -c "$DIGEST")
r=$(psql_ -F $'\t' -c "
    SELECT count(*), sum(n), sum(recorded), sum(seconds),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) * 1000, max(seconds) * 1000,
           (SELECT count(*) FROM swarm.actions a WHERE a.job_id = $sim AND a.step = $STEPS),
           (SELECT count(*) FROM bench_orig),
           (SELECT count(*) FROM bench_orig o JOIN swarm.actions a ON a.agent_id = o.agent_id AND a.id = o.id
            WHERE (a.job_id, a.step, a.kind, a.post_id, a.target_agent_id, a.community_id, a.content, a.valid,
                   a.reason, a.changed, a.owner)
                  IS NOT DISTINCT FROM (o.job_id, o.step, o.kind, o.post_id, o.target_agent_id, o.community_id,
                                        o.content, o.valid, o.reason, o.changed, o.owner))
    FROM bench_batches")
printf 'apply\t%s\t%s\t%s\n' "$r" "$([ "$digest_before" = "$digest_after" ] && echo same || echo different)" "$STEPS" >>"$RESULTS"
log "apply: $(cut -f3,4 <<<"$r") (actions, seconds)"

# ---------------------------------------------------------------- report ----
lib=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)/pg_swarm.so
libinfo="$(date -u -r "$lib" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null), $(md5sum "$lib" | cut -c1-12)"
gitinfo="$(git -C "$SWARM_ROOT" log -1 --format='%h %ci' 2>/dev/null || echo unknown)"
python3 - "$RESULTS" "$N" "$STEPS" "$ACTIVITY" "$GEN" "$CONC" "$LATENCY" "$INVALID" "$hz" "$ncpu" \
    "$("$PG_BIN/postgres" --version | awk '{print $3}')" "$libinfo" "$gitinfo" "$cpu_model" "$BATCH" <<'PY'
import os, sys, statistics
(path, n, steps, activity, gen, conc, lat, invalid, hz, ncpu, pgver, libinfo, gitinfo,
 cpu_model, batch) = sys.argv[1:]
n, steps, gen, conc, hz, ncpu, batch = int(n), int(steps), int(gen), int(conc), int(hz), int(ncpu), int(batch)
lat = float(lat)
bound = conc / (lat / 1000)
rows = [l.rstrip('\n').split('\t') for l in open(path)]
one = lambda tag: next(r for r in rows if r[0] == tag)
setup, ga, sim, gb, act, ap = (one(t) for t in ('setup', 'gen_alone', 'sim', 'gen_beside', 'actions', 'apply'))
steprows = [r for r in rows if r[0] == 'step']
kinds = [r for r in rows if r[0] == 'kind']
problems = []

def busy(s):  # machine CPU busy over the run, in cores
    a0, i0, a1, i1 = map(int, s.split())
    return (a1 - a0) / max((a1 - a0) + (i1 - i0), 1) * ncpu
def pct(a, b):
    return 100 * a / b if b else float('nan')

print(f"\n# pg_swarm actions benchmark: {n:,} agents, {steps} steps at activity {activity}, mock at "
      f"{lat:g} ms, max_concurrent {conc}, {ncpu} cores, PostgreSQL {pgver}\n")
print(f"Installed library: pg_swarm.so of {libinfo}; repository at {gitinfo}. "
      f"swarm.step_part_agents = {os.environ.get('BENCH_PART_AGENTS') or '10000 (the default)'}.\n")
print(f"Machine: {ncpu} cores ({cpu_model}). The mock (2 threads), the worker, the step builder and "
      f"PostgreSQL's backends and WAL writing share these {ncpu} cores: the figures say how they share "
      f"the CPU, not what each would do on a machine of its own.\n")

print("## Set-up\n")
print("| step | seconds | result |")
print("|---|---|---|")
print(f"| swarm.create_agents({n}, 1) | {setup[1]} | {int(setup[2]):,} agents |")
print(f"| swarm.build_friendships(10, 'small_world', 1) | {setup[3]} | {int(setup[4]):,} friendships (pairs) |")
print(f"| swarm.create_communities(8 topics, {n // 20}, 'interests', 1) | {setup[5]} | {int(setup[6]):,} memberships "
      f"in {setup[8]} communities ({int(setup[9]):,}–{int(setup[10]):,} members) |")
print(f"| VACUUM ANALYZE of agents, friendships, communities | {setup[7]} | |")

# generate alone / beside
_, ga_enq, ga_wall, ga_ok, ga_failed, ga_cpu, _ = ga
ga_wall, ga_ok, ga_cpu = float(ga_wall), int(ga_ok), int(ga_cpu)
_, gb_enq, gb_wall, gb_ok, gb_failed, gb_after_sim, gb_after_step3, gb_overlap, _ = gb
gb_wall, gb_ok, gb_overlap = float(gb_wall), int(gb_ok), float(gb_overlap)
for name, ok, failed in (('generate alone', ga_ok, ga_failed), ('generate beside', gb_ok, gb_failed)):
    if int(failed) != 0 or ok != gen:
        problems.append(f"{name}: {ok:,} succeeded, {failed} failed of {gen:,}")
ga_rate, gb_rate = ga_ok / ga_wall, gb_ok / gb_wall

# the simulation
(_, sim_enq, sim_wall, sim_total, sim_ok, sim_failed, budget, nsteps, cw, cb, sysv, sim_job) = sim
sim_wall, sim_total, sim_ok, budget, cw, cb = float(sim_wall), int(sim_total), int(sim_ok), int(budget), int(cw), int(cb)
if int(sim_failed) != 0 or sim_ok != sim_total:
    problems.append(f"simulation: {sim_ok:,} succeeded, {sim_failed} failed of {sim_total:,}")
if int(nsteps) != steps:
    problems.append(f"simulation: {nsteps} steps recorded in swarm.simulation_steps, not {steps}")

S = []
for r in steprows:
    (_, st, req, build, ready, parts, wall, agents, p_avg, p_max, c_avg, nact, nvalid) = r
    S.append(dict(step=int(st), req=int(req), build=float(build), ready=float(ready), parts=int(parts), wall=float(wall),
                  agents=int(agents), p_avg=float(p_avg), p_max=int(p_max), c_avg=float(c_avg),
                  nact=int(nact), nvalid=int(nvalid)))

print(f"\n## swarm.simulate({steps}, activity => {activity}, seed => 1, actions => true)\n")
print(f"Job {sim_job}: {sim_total:,} requests in {sim_wall:.2f} s ({sim_ok / sim_wall:,.0f} requests/s, "
      f"{pct(sim_ok / sim_wall, bound):.0f}% of the {bound:,.0f}/s bound max_concurrent / latency); the "
      f"simulate() call (step 1 built) took {float(sim_enq):.2f} s. A generate job of {gen:,} requests ran "
      f"beside it from step 3 on.\n")
print("'parts': the parts the step was built in (swarm.step_part_agents), each committed on its own while the "
      "worker sends the parts before it. 'ready ms': from the start of the step's build to its first part's "
      "requests being ready (swarm.simulation_steps.ready_ms): what the simulation waited for the step. "
      "'build ms': the step builder's time on the step, all its parts (build_ms): the database work of the "
      "build, most of it beside the sending when the step has parts. 'wall': from the start of this step's "
      "build (started_at) to the start of the next one's (the last step: finished_at); the shares are of that "
      "wall. Tokens are per agent-step as the mock reports them (message bytes / 4).\n")
print("| step | requests | parts | ready ms | build ms | wall s | ready share of wall | build share of wall | "
      "requests/s of wall | prompt tokens mean | prompt tokens max | completion tokens mean | actions | valid |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in S:
    print(f"| {s['step']} | {s['req']:,} | {s['parts']} | {s['ready']:,.0f} | {s['build']:,.0f} | {s['wall']:.2f} | "
          f"{pct(s['ready'] / 1000, s['wall']):.0f}% | "
          f"{pct(s['build'] / 1000, s['wall']):.0f}% | {s['req'] / s['wall']:,.0f} | {s['p_avg']:.1f} | "
          f"{s['p_max']:,} | {s['c_avg']:.1f} | {s['nact']:,} | {pct(s['nvalid'], s['nact']):.1f}% |")
    if s['agents'] != s['req'] or s['nact'] != s['req']:
        problems.append(f"step {s['step']}: {s['req']:,} requests, {s['agents']:,} messages, {s['nact']:,} actions")

later = [s['build'] for s in S if s['step'] >= 2]
later_ready = [s['ready'] for s in S if s['step'] >= 2]
worst = max(S, key=lambda s: s['build'])
n_act, n_valid, n_with_msg, n_msgs, n_msg_noact = map(int, act[1:6])
if n_with_msg != n_act or n_msg_noact != 0 or n_act != n_msgs:
    problems.append(f"{n_act:,} actions for {n_msgs:,} messages: {n_act - n_with_msg:,} actions without their "
                    f"message, {n_msg_noact:,} messages without an action")
p_max = max(s['p_max'] for s in S)
if p_max > budget:
    problems.append(f"a prompt of {p_max:,} tokens is over the {budget:,}-token budget")
w_req = sim_ok + gb_ok
ga_us = ga_cpu / hz * 1e6 / ga_ok
est_sim_us = (cw / hz * 1e6 - gb_ok * ga_us) / sim_ok

print("\n### Summary\n")
print("| measure | value |")
print("|---|---|")
print(f"| a step's first requests ready (ready ms), median of steps 2–{steps} (step 1 has no posts to rank) | "
      f"**{statistics.median(later_ready):,.0f}** (max {max(later_ready):,.0f}) |")
print(f"| ready time, all steps / job wall | {sum(s['ready'] for s in S) / 1000:.2f} s of {sim_wall:.2f} s "
      f"({pct(sum(s['ready'] for s in S) / 1000, sim_wall):.0f}%) |")
print(f"| step build ms (all parts), median of steps 2–{steps} | **{statistics.median(later):,.0f}** |")
print(f"| step build ms, max | {worst['build']:,.0f} (step {worst['step']}) |")
print(f"| build time, all steps / job wall | {sum(s['build'] for s in S) / 1000:.2f} s of {sim_wall:.2f} s "
      f"({pct(sum(s['build'] for s in S) / 1000, sim_wall):.0f}%) |")
print(f"| actions recorded | {n_act:,} for {n_msgs:,} messages |")
print(f"| valid | {n_valid:,} ({pct(n_valid, n_act):.1f}%) |")
print(f"| actions whose message exists | {n_with_msg:,} ({pct(n_with_msg, n_act):.1f}%) |")
print(f"| prompt tokens, max of any agent-step vs the budget | {p_max:,} of {budget:,} ({pct(p_max, budget):.0f}%) |")
print(f"| worker CPU over the simulation (and the generate beside it) | {cw / hz:.2f} s, "
      f"{cw / hz * 1e6 / w_req:.0f} µs per request ({w_req:,} requests); {pct(cw / hz, sim_wall):.0f}% of a core "
      f"over the simulation's wall |")
print(f"| worker CPU per simulation request, estimated (the generate's share at its alone cost taken off) | "
      f"{est_sim_us:.0f} µs (generate alone: {ga_us:.0f} µs per request) |")
print(f"| step builder CPU | {cb / hz:.2f} s ({pct(cb / hz, sum(s['build'] for s in S) / 1000):.0f}% of the "
      f"steps' build time; the rest is the backends it waits on and I/O) |")
print(f"| machine busy over the simulation | {busy(sysv):.2f} of {ncpu} cores |")
print(f"| generate alone, {gen:,} requests | {ga_wall:.2f} s, **{ga_rate:,.0f} requests/s** "
      f"({pct(ga_rate, bound):.0f}% of bound) |")
print(f"| generate beside the simulation, same job | {gb_wall:.2f} s, **{gb_rate:,.0f} requests/s** "
      f"({pct(gb_rate, bound):.0f}% of bound) |")
print(f"| beside / alone | **{gb_rate / ga_rate:.2f}x** |")
print(f"| generate beside: started after the simulation's creation / after step 3's built_at | "
      f"{float(gb_after_sim):.2f} s / {float(gb_after_step3):.2f} s; {pct(max(gb_overlap, 0), gb_wall):.0f}% of "
      f"its wall overlapped the simulation |")

print("\n### Actions by kind (the whole simulation)\n")
print("| kind | actions | valid | changed something |")
print("|---|---|---|---|")
for _, kind, cnt, valid, changed in kinds:
    print(f"| {kind or '(none)'} | {int(cnt):,} | {int(valid):,} | {int(changed):,} |")

(_, nb, nmsg, nrec, secs, med_ms, max_ms, n_now, n_orig, n_same, digest, last) = ap
nb, nmsg, nrec, secs, n_now, n_orig, n_same = int(nb), int(nmsg), int(nrec), float(secs), int(n_now), int(n_orig), int(n_same)
print(f"\n## Applying a step's actions: swarm._apply_actions() over step {last}'s messages\n")
print(f"Step {last}'s actions and their changes taken out (typed tables restored to what step {int(last) - 1} "
      f"left), then its {nmsg:,} messages' request ids passed to swarm._apply_actions() in {nb:,} batches of "
      f"up to {batch} (the worker's batch size), in store order, each batch committed (synchronous_commit "
      f"off); nothing else running.\n")
print("| messages | actions recorded | seconds (calls + commits) | actions/s | µs per action | batch ms, median | batch ms, max | same as the simulation's | typed tables after |")
print("|---|---|---|---|---|---|---|---|---|")
print(f"| {nmsg:,} | {nrec:,} | {secs:.2f} | **{nrec / secs:,.0f}** | {secs * 1e6 / max(nrec, 1):.0f} | "
      f"{float(med_ms):.1f} | {float(max_ms):.1f} | {n_same:,} of {n_orig:,} | {digest} as before |")
if nrec != nmsg or n_now != nmsg:
    problems.append(f"apply: {nrec:,} actions recorded ({n_now:,} in swarm.actions) for {nmsg:,} messages")
if n_same != n_orig:
    problems.append(f"apply: {n_orig - n_same:,} of {n_orig:,} re-applied actions differ from the simulation's")
if digest != 'same':
    problems.append("apply: the typed tables (likes, reposts, follows, mutes, memberships) differ from before")

if problems:
    print("\nPROBLEMS: " + "; ".join(problems) + ".")
    sys.exit(1)
print(f"\nChecked: every request succeeded, one action per message, every action's message exists, every "
      f"prompt within its budget, the re-applied step equal to the simulation's.")
PY
