#!/usr/bin/env bash
# Interactions benchmark: swarm.interact() (conversations between friends, no
# barrier between turns) and swarm.simulate() (the feed, a barrier between
# steps) on 100,000 agents, against the mock at 100 ms latency, on a throwaway
# cluster.  Beside each interact run, in the same run, a plain swarm.generate()
# baseline of the same number of requests shows what the conversations cost
# per request (swarm._advance() building the next turn and its history in the
# store transaction).  Prints markdown tables; run as root.
#
#   bash test/bench/interact_bench.sh                       # 100,000 agents, 3 rounds
#   BENCH_AGENTS=20000 BENCH_ROUNDS=1 bash test/bench/interact_bench.sh   # quicker
#
# Environment: BENCH_AGENTS (100000), BENCH_ROUNDS (3: medians of 3),
# BENCH_CONCURRENT (2000), BENCH_LATENCY_MS (100), BENCH_STEPS (5),
# BENCH_BUILD=1 to run make && make install first (by default the installed
# extension is used as it is); for profiling, BENCH_AUTO_EXPLAIN=MS logs the
# plan of every statement slower than MS ms, the worker's nested ones included
# (auto_explain, plans without ANALYZE), and BENCH_KEEP_TMP=1 keeps the
# cluster's directory (server.log) after the run.
#
# Method (as in docs/benchmarks.md): a job's wall time is finished_at -
# created_at of its swarm.jobs row, from the call to the commit of its last
# result; worker CPU is utime + stime of the pg_swarm worker (/proc/PID/stat)
# over the job, which includes swarm._advance(): the worker runs it through SPI
# in the transaction that stores each batch.  The bound is max_concurrent /
# latency.  Message times are swarm.messages.created_at, the start of the
# transaction that stored the batch.
set -eu
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
if [ "${BENCH_BUILD:-}" = 1 ]; then swarm_build; fi

N=${BENCH_AGENTS:-100000}
ROUNDS=${BENCH_ROUNDS:-3}
CONC=${BENCH_CONCURRENT:-2000}
LATENCY=${BENCH_LATENCY_MS:-100}
STEPS=${BENCH_STEPS:-5}

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_ibench.XXXXXX)
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=$(swarm_free_port)
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"; [ "${BENCH_KEEP_TMP:-}" = 1 ] || rm -rf "$SWARM_TMP"' EXIT

explain=()
if [ -n "${BENCH_AUTO_EXPLAIN:-}" ]; then
    explain=("shared_preload_libraries = 'pg_swarm,auto_explain'" "auto_explain.log_nested_statements = on"
             "auto_explain.log_min_duration = '${BENCH_AUTO_EXPLAIN}ms'")
fi
swarm_start_mock "$mock_port" --latency-ms "$LATENCY" --threads 1
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" \
    "swarm.max_concurrent = $CONC" "swarm.batch_size = 500" "swarm.flush_interval = 50ms" \
    "max_wal_size = 4GB" "checkpoint_timeout = 30min" "work_mem = 64MB" ${explain[@]+"${explain[@]}"}
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
log() { echo "[$(date +%T)] $*" >&2; }

worker_pid() { psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# machine-wide "busy idle" jiffies, to tell how loaded the two cores were
sys_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
hz=$(getconf CLK_TCK)
ncpu=$(nproc)

# background load before a run: share of the machine busy over one idle second
idle_load() {
    local a b
    a=($(sys_ticks)); sleep 1; b=($(sys_ticks))
    python3 -c "b=$((${b[0]} - ${a[0]})); i=$((${b[1]} - ${a[1]})); print(round(100 * b / max(b + i, 1)))"
}

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

clean() {
    psql_ -c "SET client_min_messages = warning" \
          -c "SELECT swarm.cancel(id) FROM swarm.jobs WHERE status IN ('queued', 'running')" >/dev/null
    sleep 0.5   # let the worker drop what it held of the cancelled jobs
    psql_ -c "TRUNCATE swarm.jobs, swarm.requests, swarm.messages RESTART IDENTITY" \
          -c "VACUUM ANALYZE swarm.jobs, swarm.requests, swarm.messages" >/dev/null
}

wait_job() { psql_ -c "SET client_min_messages = warning" -c "SELECT status FROM swarm.wait($1)" >/dev/null; }

RESULTS=$SWARM_TMP/results
: >"$RESULTS"

# ---------------------------------------------------------------- set-up ----
log "set-up: $N agents, friendships, communities"
psql_ -c "CREATE EXTENSION pg_swarm"
IFS=$'\t' read -r t_agents r_agents <<<"$(timed "SELECT swarm.create_agents($N, 1)")"
IFS=$'\t' read -r t_friends r_friends <<<"$(timed "SELECT swarm.build_friendships(10, 'small_world', 1)")"
IFS=$'\t' read -r t_comm r_comm <<<"$(timed "SELECT swarm.create_communities(ARRAY['chess', 'jazz', 'hiking', 'cooking', 'films', 'running', 'gardening', 'photography', 'gaming', 'travel', 'poetry', 'science', 'football', 'yoga', 'history', 'music', 'painting', 'cycling', 'baking', 'astronomy'], 10000, 'interests', 1)")"
IFS=$'\t' read -r t_analyze _ <<<"$(timed "VACUUM ANALYZE swarm.agents, swarm.friendships, swarm.community_members")"
read -r n_comm_used comm_min comm_max <<<"$(psql_ -F ' ' -c "SELECT count(*), min(n), max(n) FROM (SELECT community_id, count(*) n FROM swarm.community_members GROUP BY 1) c")"
printf 'setup\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t_agents" "$r_agents" "$t_friends" "$r_friends" \
    "$t_comm" "$r_comm" "$t_analyze" "$n_comm_used" "$comm_min" "$comm_max" >>"$RESULTS"

# ------------------------------------------------------------------ runs ----
# run_interact ROUND: one swarm.interact(turns => 2) over every agent
run_interact() {
    local round=$1 load pid c0 c1 s0 s1 out job enqueue
    clean
    load=$(idle_load)
    pid=$(worker_pid)
    c0=$(cpu_ticks "$pid"); s0=$(sys_ticks)
    IFS=$'\t' read -r enqueue job <<<"$(timed "SELECT swarm.interact('Catch up with your friend about your week.', turns => 2)")"
    wait_job "$job"
    c1=$(cpu_ticks "$pid"); s1=$(sys_ticks)
    [ "$(worker_pid)" = "$pid" ] || { echo "the worker restarted during the run"; exit 1; }
    out=$(psql_ -F $'\t' -c "
        WITH t AS (
            SELECT min(created_at) FILTER (WHERE turn = 1) AS first1,
                   max(created_at) FILTER (WHERE turn = 1) AS last1,
                   min(created_at) FILTER (WHERE turn = 2) AS first2,
                   max(created_at) FILTER (WHERE turn = 2) AS last2,
                   count(*) FILTER (WHERE turn = 1) AS n1,
                   count(*) FILTER (WHERE turn = 2) AS n2
            FROM swarm.messages WHERE job_id = $job)
        SELECT extract(epoch FROM j.finished_at - j.created_at), j.succeeded, j.failed,
               t.n1, t.n2,
               extract(epoch FROM j.started_at - j.created_at),
               extract(epoch FROM t.first1 - j.created_at), extract(epoch FROM t.last1 - j.created_at),
               extract(epoch FROM t.first2 - j.created_at), extract(epoch FROM t.last2 - j.created_at),
               (SELECT count(*) FROM swarm.messages m WHERE m.job_id = $job AND m.turn = 2 AND m.created_at < t.last1),
               -- per conversation, turn 1 stored -> turn 2 stored: p50, p99
               (SELECT concat_ws(' ', extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY m2.created_at - m1.created_at)),
                                      extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY m2.created_at - m1.created_at)))
                FROM swarm.messages m2 JOIN swarm.messages m1 ON m1.id = m2.reply_to
                WHERE m2.job_id = $job AND m2.turn = 2),
               -- each turn 2 answers its turn 1: the partner speaks, replying to that message
               (SELECT count(*) FROM swarm.messages m2 JOIN swarm.messages m1 ON m1.id = m2.reply_to
                WHERE m2.job_id = $job AND m2.turn = 2
                  AND (m1.turn <> 1 OR m1.conversation_id <> m2.conversation_id
                       OR m1.agent_id <> m2.to_agent_id OR m1.to_agent_id <> m2.agent_id
                       OR m2.created_at < m1.created_at))
        FROM swarm.jobs j, t WHERE j.id = $job")
    printf 'interact\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$enqueue" "$out" "$((c1 - c0))" "$s0 $s1" "$load" "$job" >>"$RESULTS"
    log "interact round $round: $(echo "$out" | cut -f1-2) (wall s, succeeded)"
}

# run_generate ROUND: the baseline, two swarm.generate() over every agent, back to back
run_generate() {
    local round=$1 load pid c0 c1 s0 s1 out jobs jobs2 enqueue enqueue2
    clean
    load=$(idle_load)
    pid=$(worker_pid)
    c0=$(cpu_ticks "$pid"); s0=$(sys_ticks)
    IFS=$'\t' read -r enqueue jobs <<<"$(timed "SELECT swarm.generate('Catch up with your friends about your week.')")"
    IFS=$'\t' read -r enqueue2 jobs2 <<<"$(timed "SELECT swarm.generate('Catch up with your friends about your week.')")"
    wait_job "$jobs"; wait_job "$jobs2"
    c1=$(cpu_ticks "$pid"); s1=$(sys_ticks)
    [ "$(worker_pid)" = "$pid" ] || { echo "the worker restarted during the run"; exit 1; }
    out=$(psql_ -F $'\t' -c "
        SELECT extract(epoch FROM max(finished_at) - min(created_at)), sum(succeeded), sum(failed)
        FROM swarm.jobs WHERE id IN ($jobs, $jobs2)")
    printf 'generate\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$(python3 -c "print(f'{$enqueue + $enqueue2:.2f}')")" \
        "$out" "$((c1 - c0))" "$s0 $s1" "$load" >>"$RESULTS"
    log "generate round $round: $(echo "$out" | cut -f1-2) (wall s, succeeded)"
}

# run_simulate LABEL CLEAN: swarm.simulate() over every agent; CLEAN=1 empties the
# tables first (swarm.messages then looks empty to the planner, as on a fresh
# install, until autovacuum analyzes it), CLEAN=0 keeps the previous run's
# posts and ANALYZEs them first
run_simulate() {
    local label=$1 load pid c0 c1 s0 s1 job enqueue
    if [ "$2" = 1 ]; then clean; else psql_ -c "ANALYZE swarm.messages"; fi
    load=$(idle_load)
    pid=$(worker_pid)
    c0=$(cpu_ticks "$pid"); s0=$(sys_ticks)
    IFS=$'\t' read -r enqueue job <<<"$(timed "SELECT swarm.simulate($STEPS, 'A normal day', activity => 0.1, seed => 1)")"
    wait_job "$job"
    c1=$(cpu_ticks "$pid"); s1=$(sys_ticks)
    [ "$(worker_pid)" = "$pid" ] || { echo "the worker restarted during the run"; exit 1; }
    printf 'simulate\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$enqueue" \
        "$(psql_ -F $'\t' -c "SELECT extract(epoch FROM finished_at - created_at), succeeded, failed FROM swarm.jobs WHERE id = $job")" \
        "$((c1 - c0))" "$s0 $s1" "$load" >>"$RESULTS"
    # per step: posts, replies, average feed, first and last post after the
    # job's creation, and the end of the step before (the barrier)
    psql_ -F $'\t' -c "
        SELECT s.turn, s.n, s.replies, round(s.feed, 1),
               extract(epoch FROM s.first - j.created_at), extract(epoch FROM s.last - j.created_at),
               extract(epoch FROM lag(s.last, 1, j.created_at) OVER (ORDER BY s.turn) - j.created_at)
        FROM (SELECT turn, count(*) n, count(reply_to) replies, avg(cardinality(seen)) feed,
                     min(created_at) first, max(created_at) last
              FROM swarm.messages WHERE job_id = $job GROUP BY turn) s,
             swarm.jobs j
        WHERE j.id = $job ORDER BY s.turn" | sed "s/^/step\t$label\t/" >>"$RESULTS"
    log "simulate ($label): $(tail -1 "$RESULTS" | cut -f8) s"
}

for r in $(seq 1 "$ROUNDS"); do
    log "round $r of $ROUNDS"
    run_interact "$r"
    run_generate "$r"
done
log "simulate($STEPS, activity => 0.1), emptied tables"
run_simulate cold 1
log "simulate($STEPS, activity => 0.1) again, swarm.messages kept and analyzed"
run_simulate warm 0

# ---------------------------------------------------------------- report ----
lib=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)/pg_swarm.so
libinfo="$(date -u -r "$lib" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null), $(md5sum "$lib" | cut -c1-12)"
gitinfo="$(git -C "$SWARM_ROOT" log -1 --format='%h %ci' 2>/dev/null || echo unknown)"
python3 - "$RESULTS" "$N" "$CONC" "$LATENCY" "$hz" "$ncpu" "$("$PG_BIN/postgres" --version | awk '{print $3}')" \
    "$libinfo" "$gitinfo" <<'PY'
import sys, statistics
path, n, conc, lat, hz, ncpu, pgver, libinfo, gitinfo = sys.argv[1:]
n, conc, lat, hz, ncpu = int(n), int(conc), float(lat), int(hz), int(ncpu)
bound = conc / (lat / 1000)
rows = [l.rstrip('\n').split('\t') for l in open(path)]
setup = next(r for r in rows if r[0] == 'setup')
inter = [r for r in rows if r[0] == 'interact']
gen = [r for r in rows if r[0] == 'generate']
sims = [r for r in rows if r[0] == 'simulate']
steps = [r for r in rows if r[0] == 'step']

def busy(s):  # machine CPU busy over the run, in cores
    a0, i0, a1, i1 = map(int, s.split())
    return (a1 - a0) / max((a1 - a0) + (i1 - i0), 1) * ncpu
def med(xs):
    return statistics.median(xs)
noisy = []      # another process was busy before a run
outliers = []   # the worker itself did much more work in a run

print(f"\n# pg_swarm interactions benchmark: {n:,} agents, mock at {lat:g} ms, "
      f"max_concurrent {conc}, {ncpu} cores, PostgreSQL {pgver}\n")
print(f"Installed library: pg_swarm.so of {libinfo}; repository at {gitinfo}.\n")
print("## Set-up\n")
print("| step | seconds | result |")
print("|---|---|---|")
print(f"| swarm.create_agents({n}, 1) | {setup[1]} | {int(setup[2]):,} agents |")
print(f"| swarm.build_friendships(10, 'small_world', 1) | {setup[3]} | {int(setup[4]):,} friendships (pairs) |")
print(f"| swarm.create_communities(20 names, 10000, 'interests', 1) | {setup[5]} | {int(setup[6]):,} memberships in {setup[8]} communities ({int(setup[9]):,}–{int(setup[10]):,} members) |")
print(f"| VACUUM ANALYZE of the three tables | {setup[7]} | |")

I = []
for r in inter:
    (_, rnd, enq, wall, ok, failed, convs, n2, started, first1, last1, first2, last2,
     n2early, gap, bad, cpu, sysv, load, job) = r
    wall, ok, convs, n2, cpu = float(wall), int(ok), int(convs), int(n2), int(cpu)
    assert int(failed) == 0, f"interact round {rnd}: {failed} requests failed"
    assert ok == 2 * convs and n2 == convs, f"interact round {rnd}: {ok} messages for {convs} conversations"
    assert int(bad) == 0, f"interact round {rnd}: {bad} turn-2 messages do not answer their turn 1"
    if int(load) > 10: noisy.append(f"interact round {rnd}: the machine was {load}% busy before the run")
    gap50, gap99 = map(float, gap.split())
    I.append(dict(rnd=rnd, enq=float(enq), wall=wall, ok=ok, convs=convs, rate=ok / wall, crate=convs / wall,
                  pct=100 * ok / wall / bound, cpu_s=cpu / hz, cpu_us=cpu / hz * 1e6 / ok,
                  started=float(started), first1=float(first1), last1=float(last1), first2=float(first2),
                  last2=float(last2), n2early=int(n2early), gap50=gap50, gap99=gap99,
                  busy=busy(sysv), load=int(load)))
G = []
for r in gen:
    _, rnd, enq, wall, ok, failed, cpu, sysv, load = r
    wall, ok, cpu = float(wall), int(ok), int(cpu)
    assert int(failed) == 0 and ok == 2 * n, f"generate round {rnd}: {ok} succeeded, {failed} failed"
    if int(load) > 10: noisy.append(f"generate round {rnd}: the machine was {load}% busy before the run")
    G.append(dict(rnd=rnd, enq=float(enq), wall=wall, ok=ok, rate=ok / wall, pct=100 * ok / wall / bound,
                  cpu_s=cpu / hz, cpu_us=cpu / hz * 1e6 / ok, busy=busy(sysv), load=int(load)))
for name, xs in (('interact', I), ('generate', G)):
    m = med([x['cpu_us'] for x in xs])
    for x in xs:
        if x['cpu_us'] > 1.3 * m:
            outliers.append(f"{name} round {x['rnd']}: worker CPU {x['cpu_us']:.0f} µs/request, over 1.3x the "
                            f"median ({m:.0f})")

print(f"\n## swarm.interact(turns => 2) over all agents, and the swarm.generate() baseline\n")
print(f"Bound: max_concurrent / latency = {bound:,.0f} requests/s. Interact: one job, turn 2 of a "
      f"conversation enqueued by swarm._advance() when its turn 1 is stored. Generate: two jobs of {n:,} "
      f"requests submitted back to back ({2 * n:,} requests queued at once). Wall: from the call to the "
      f"last result committed. 'machine busy' is the CPU of both cores in use during the run "
      f"(of {ncpu}.0), 'idle load' the machine's load in the second before it.\n")
print("| run | enqueue s | wall s | requests | requests/s | conversations/s | % of bound | worker CPU s | worker CPU µs/request | machine busy (cores) | idle load |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for i, g in zip(I, G):
    print(f"| interact #{i['rnd']} | {i['enq']:.2f} | {i['wall']:.2f} | {i['ok']:,} | {i['rate']:,.0f} | {i['crate']:,.0f} | {i['pct']:.0f}% | {i['cpu_s']:.2f} | {i['cpu_us']:.0f} | {i['busy']:.2f} | {i['load']}% |")
    print(f"| generate #{g['rnd']} | {g['enq']:.2f} | {g['wall']:.2f} | {g['ok']:,} | {g['rate']:,.0f} | - | {g['pct']:.0f}% | {g['cpu_s']:.2f} | {g['cpu_us']:.0f} | {g['busy']:.2f} | {g['load']}% |")
mi = {k: med([x[k] for x in I]) for k in ('enq', 'wall', 'rate', 'crate', 'pct', 'cpu_s', 'cpu_us', 'busy')}
mg = {k: med([x[k] for x in G]) for k in ('enq', 'wall', 'rate', 'pct', 'cpu_s', 'cpu_us', 'busy')}
print(f"| **interact, median of {len(I)}** | {mi['enq']:.2f} | **{mi['wall']:.2f}** | {2 * I[0]['convs']:,} | **{mi['rate']:,.0f}** | **{mi['crate']:,.0f}** | **{mi['pct']:.0f}%** | {mi['cpu_s']:.2f} | **{mi['cpu_us']:.0f}** | {mi['busy']:.2f} | |")
print(f"| **generate, median of {len(G)}** | {mg['enq']:.2f} | **{mg['wall']:.2f}** | {2 * n:,} | **{mg['rate']:,.0f}** | - | **{mg['pct']:.0f}%** | {mg['cpu_s']:.2f} | **{mg['cpu_us']:.0f}** | {mg['busy']:.2f} | |")
print(f"\nInteract / generate, same run (median of the per-round ratios): wall "
      f"{med([i['wall'] / g['wall'] for i, g in zip(I, G)]):.2f}x, requests/s "
      f"{med([i['rate'] / g['rate'] for i, g in zip(I, G)]):.2f}x, worker CPU per request "
      f"{med([i['cpu_us'] / g['cpu_us'] for i, g in zip(I, G)]):.2f}x "
      f"(+{med([i['cpu_us'] - g['cpu_us'] for i, g in zip(I, G)]):.0f} µs per request for the conversations).")

print(f"\n### No barrier between turns (seconds after the interact job was created)\n")
print("| run | started | first turn 1 stored | first turn 2 stored | last turn 1 stored | last turn 2 stored | turn 2 stored before the last turn 1 | turn 1 → turn 2 per conversation, p50 / p99 s |")
print("|---|---|---|---|---|---|---|---|")
for i in I:
    print(f"| interact #{i['rnd']} | {i['started']:.2f} | {i['first1']:.2f} | **{i['first2']:.2f}** | **{i['last1']:.2f}** | {i['last2']:.2f} | {i['n2early']:,} of {i['convs']:,} ({100 * i['n2early'] / i['convs']:.0f}%) | {i['gap50']:.2f} / {i['gap99']:.2f} |")
print(f"| median | {med([i['started'] for i in I]):.2f} | {med([i['first1'] for i in I]):.2f} | **{med([i['first2'] for i in I]):.2f}** | **{med([i['last1'] for i in I]):.2f}** | {med([i['last2'] for i in I]):.2f} | {med([100 * i['n2early'] / i['convs'] for i in I]):.0f}% | {med([i['gap50'] for i in I]):.2f} / {med([i['gap99'] for i in I]):.2f} |")

S = {}
for r in sims:
    _, label, enq, wall, ok, failed, cpu, sysv, load = r
    S[label] = dict(enq=float(enq), wall=float(wall), ok=int(ok), failed=int(failed), cpu=int(cpu), busy=busy(sysv), load=int(load))
    if int(load) > 10: noisy.append(f"simulate ({label}): the machine was {load}% busy before the run")
nsteps = max(int(s[2]) for s in steps)
print(f"\n## swarm.simulate({nsteps}, 'A normal day', activity => 0.1, seed => 1)\n")
print("'cold': right after the tables were emptied (swarm.messages looks empty to the planner, as on a "
      "fresh install, until autovacuum analyzes it); 'warm': run again with the first run's posts kept and "
      "ANALYZEd. A step's time runs from the last post of the step before (the barrier; step 1: the job's "
      "creation, which includes building step 1 in swarm.simulate()) to its own last post; 'to first post' is "
      "the part before the step's first post was stored: building the step (swarm._advance() → "
      "swarm._simulate_step()) plus one round trip.\n")
print("| run | step | posts | replies | average feed | step s | to first post s | posts/s | step ends at s |")
print("|---|---|---|---|---|---|---|---|---|")
for label in S:
    for _, lab, turn, cnt, replies, feed, first, last, prev in (s for s in steps if s[1] == label):
        cnt, first, last, prev = int(cnt), float(first), float(last), float(prev)
        print(f"| {label} | {turn} | {cnt:,} | {int(replies):,} | {feed} | {last - prev:.2f} | {first - prev:.2f} | {cnt / (last - prev):,.0f} | {last:.2f} |")
    x = S[label]
    print(f"| **{label}, total** | | {x['ok']:,} | {sum(int(s[4]) for s in steps if s[1] == label):,} | | **{x['wall']:.2f}** | | **{x['ok'] / x['wall']:,.0f}** | |")
print()
for label, x in S.items():
    print(f"- {label}: the simulate() call (step 1 built) took {x['enq']:.2f} s; failed {x['failed']}; worker CPU "
          f"{x['cpu'] / hz:.2f} s, {x['cpu'] / hz * 1e6 / max(x['ok'], 1):.0f} µs per post; machine busy "
          f"{x['busy']:.2f} of {ncpu} cores; idle load before {x['load']}%.")
if outliers:
    print("\nOUTLIERS: " + "; ".join(outliers) + ". Worker CPU counts the worker's own work only, so this is not "
          "another process's load: the worker did more work per request in that run (for instance a cached plan "
          "made while swarm.messages looked empty; BENCH_AUTO_EXPLAIN=100 BENCH_KEEP_TMP=1 logs the slow "
          "statements). The run is still counted in the medians.")
if noisy:
    print("\nNOISE: " + "; ".join(noisy) + ". The machine is shared (another engineer may be running tests): "
          "treat those figures with care; the medians are less affected.")
else:
    print(f"\nThe machine was idle (≤ 10% busy) in the second before each run. Its {ncpu} cores are shared by "
          f"the worker, the backends, WAL writing and the mock, so figures move by about ±10% between runs.")
PY
