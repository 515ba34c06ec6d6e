#!/usr/bin/env bash
# Batch benchmark: batch mode (swarm.generate(..., mode => 'batch'), the
# pg_swarm batcher, src/batcher.c) beside the synchronous path, on one
# cluster, against one mock: chat completions at a fixed 0 ms latency (no
# spread, never saturated, no errors, plain HTTP/1.1), and a Batch API whose
# batches are validating 100 ms, in_progress 1,000 ms, finalizing 100 ms
# (docs/mock.md, "Batch API"; a real provider takes minutes to a day).  So
# the synchronous path is at its fastest and the batch's wait at the provider
# is short: what is measured is pg_swarm's own cost on each path, not the
# endpoint's.  Prints markdown tables; run as root.
#
#   bash test/bench/batch_bench.sh                  # 1,000,000 agents (~4 min)
#   BENCH_AGENTS=20000 bash test/bench/batch_bench.sh
#
# Environment: BENCH_AGENTS (1000000), BENCH_CONCURRENT (500),
# BENCH_POLL (200ms, swarm.batch_poll_interval), BENCH_VALIDATING_MS (100),
# BENCH_PROCESSING_MS (1000), BENCH_FINALIZING_MS (100) (the mock's batch
# life), BENCH_SAMPLE (1000, agents whose words are compared),
# BENCH_BUILD=1 to run make && make install first.
#
# Method:
#   1. Set-up: create_agents(N, 1) (no friendships: generate() needs none).
#   2. Synchronous: generate('Say something about your day') over every
#      agent, sent by the pg_swarm worker.  seconds = finished_at -
#      created_at of the job; worker CPU per request = utime + stime of the
#      pg_swarm worker (/proc/PID/stat) over the job / requests; peak RSS =
#      its VmHWM (/proc/PID/status) after the job (a lifetime peak: the one
#      before the job is printed too; it counts the shared buffers the process
#      touched), and its RssAnon (private memory) sampled every 0.2 s.
#   3. Batch: the same prompt with mode => 'batch', so the same bodies, sent
#      by the pg_swarm batcher in files of at most
#      swarm.batch_file_max_requests lines; the same figures for the batcher
#      process, and from swarm.batches: the batches, the bytes uploaded,
#      build + upload + create = sum(bytes) / sum(submitted_at - created_at)
#      (a batch's row is made in the transaction that writes its file, so
#      created_at is when the writing began), download + store =
#      sum(requests) / sum(finished_at - ended_at) (ended_at: the poll that
#      saw the batch end), and the median of each of the three spans per
#      batch.  The batch job's messages are counted (one per request, each
#      request once) and their words compared with the synchronous job's for
#      BENCH_SAMPLE agents spread over the ids (the mock answers the same
#      body with the same words on both paths).
# The mock, the worker, the batcher and PostgreSQL share this machine's
# cores: the figures say how they share the CPU.  PostgreSQL's own backends'
# CPU is not measured.
set -eu
shopt -s inherit_errexit
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
swarm_install_deps
if [ "${BENCH_BUILD:-}" = 1 ]; then swarm_build; fi

N=${BENCH_AGENTS:-1000000}
CONC=${BENCH_CONCURRENT:-500}
POLL=${BENCH_POLL:-200ms}
VALIDATING=${BENCH_VALIDATING_MS:-100}
PROCESSING=${BENCH_PROCESSING_MS:-1000}
FINALIZING=${BENCH_FINALIZING_MS:-100}
SAMPLE=${BENCH_SAMPLE:-1000}
PROMPT='Say something about your day'

SWARM_TMP=$(mktemp -d /tmp/pg_swarm_bbench.XXXXXX)
export SWARM_TMP
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=$(swarm_free_port)
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && [ -f "$SWARM_TMP/pg/server.log" ]; then
        echo "exit status $rc; the server log's errors and batcher lines (last 40):" >&2
        grep -E 'ERROR|FATAL|PANIC|WARNING|pg_swarm batcher' "$SWARM_TMP/pg/server.log" | tail -40 >&2 || true
    fi
    swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"; rm -rf "$SWARM_TMP"
}
trap cleanup EXIT

MOCK_OPTS="--latency-ms 0 --threads 2 --batch-validating-ms $VALIDATING --batch-processing-ms $PROCESSING --batch-finalizing-ms $FINALIZING"
SETTINGS=("swarm.max_concurrent = $CONC" "swarm.batch_size = 500" "swarm.flush_interval = 50ms"
          "swarm.batch_poll_interval = $POLL"
          "shared_buffers = 1GB" "max_wal_size = 4GB" "checkpoint_timeout = 30min")
# the build the cluster loads at start (the installed library, and whether the
# sources differ from the commit)
so_file=$(pg_config --pkglibdir)/pg_swarm.so
so_id="$(md5sum "$so_file" | cut -c1-12), installed $(date -r "$so_file" '+%F %T')"
head=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
dirty=$(git status --porcelain -- src sql '*.sql' Makefile 2>/dev/null | wc -l)
# shellcheck disable=SC2086
swarm_start_mock "$mock_port" $MOCK_OPTS
mock_pid=$(cat "$SWARM_TMP/mock_$mock_port.pid")
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" "${SETTINGS[@]}"
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
log() { echo "[$(date +%T)] $*" >&2; }
backend_pid() { psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = '$1'"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }
hz=$(getconf CLK_TCK)
script_pid=$$

for _ in $(seq 1 100); do
    [ -n "$(backend_pid 'pg_swarm batcher')" ] && break
    sleep 0.1
done
[ -n "$(backend_pid 'pg_swarm batcher')" ] || { echo "the pg_swarm batcher did not start" >&2; exit 1; }

# anon_sampler PID FILE: while FILE.run exists, writes to FILE the largest
# RssAnon (kB) of PID seen, every 0.2 s (VmHWM counts the shared buffers a
# process has touched; RssAnon is its private memory)
anon_sampler() {
    local pid=$1 out=$2 max=0 v
    while [ -e "$out.run" ] && kill -0 "$script_pid" 2>/dev/null; do
        v=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")
        if [ -n "$v" ] && [ "$v" -gt "$max" ]; then max=$v; echo "$max" >"$out"; fi
        sleep 0.2
    done
}

# run_job PROCESS "CALL": makes the job, waits for it; prints "job<TAB>requests
# <TAB>succeeded<TAB>failed<TAB>seconds<TAB>PROCESS CPU seconds<TAB>PROCESS VmHWM
# kB before<TAB>after<TAB>peak RssAnon kB<TAB>mock CPU seconds"
run_job() {
    local pid before hwm0 mock0 job after hwm1 mock1 sampler anon=$SWARM_TMP/anon
    pid=$(backend_pid "$1")
    before=$(cpu_ticks "$pid"); hwm0=$(hwm_kb "$pid"); mock0=$(cpu_ticks "$mock_pid")
    echo 0 >"$anon"; touch "$anon.run"
    anon_sampler "$pid" "$anon" >/dev/null 2>&1 &   # (not holding the caller's $(...) open)
    sampler=$!
    job=$(psql_ -c "SELECT $2")
    psql_ -c "SET client_min_messages = warning" -c "SELECT status FROM swarm.wait($job, interval '2 hours')" >/dev/null
    after=$(cpu_ticks "$pid"); hwm1=$(hwm_kb "$pid"); mock1=$(cpu_ticks "$mock_pid")
    rm -f "$anon.run"; wait "$sampler"
    psql_ -c "SELECT id, total, succeeded, failed, extract(epoch FROM finished_at - created_at),
                     round($(( after - before )) / $hz::numeric, 2), $hwm0, $hwm1, $(cat "$anon"),
                     round($(( mock1 - mock0 )) / $hz::numeric, 2)
              FROM swarm.jobs WHERE id = $job AND status = 'completed'" | tr '|' '\t'
}

t0=$(now)
log "set-up: $N agents"
psql_ -c "CREATE EXTENSION pg_swarm"
psql_ -c "SELECT swarm.create_agents($N, 1)" >/dev/null
psql_ -c "VACUUM ANALYZE swarm.agents"
t1=$(now)

log "synchronous: generate() over $N agents"
IFS=$'\t' read -r sync_job sync_n sync_ok sync_failed sync_s sync_cpu sync_hwm0 sync_hwm1 sync_anon sync_mock \
    <<<"$(run_job 'pg_swarm worker' "swarm.generate('$PROMPT')")"
[ -n "$sync_job" ] || { echo "the synchronous job did not complete" >&2; exit 1; }
t2=$(now)
psql_ -c "VACUUM ANALYZE swarm.requests, swarm.messages"

log "batch: generate(mode => 'batch') over $N agents"
t3=$(now)
IFS=$'\t' read -r batch_job batch_n batch_ok batch_failed batch_s batch_cpu batch_hwm0 batch_hwm1 batch_anon batch_mock \
    <<<"$(run_job 'pg_swarm batcher' "swarm.generate('$PROMPT', mode => 'batch')")"
[ -n "$batch_job" ] || { echo "the batch job did not complete" >&2; exit 1; }
t4=$(now)

log "checks: the batches"
IFS=$'\t' read -r nb bytes requests stored retried req_errors polls not_stored errors build_mbs store_rps \
    med_submit med_run med_store first_batch <<<"$(psql_ -c "
    SELECT count(*), sum(b.bytes), sum(b.requests), sum(b.stored), sum(b.retried), sum(b.request_errors), sum(b.polls),
           count(*) FILTER (WHERE b.state <> 'stored'), count(*) FILTER (WHERE b.last_error IS NOT NULL),
           round((sum(bytes) / 1e6 / nullif(extract(epoch FROM sum(b.submitted_at - b.created_at)), 0))::numeric, 1),
           round((sum(requests) / nullif(extract(epoch FROM sum(b.finished_at - b.ended_at)), 0))::numeric),
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM b.submitted_at - b.created_at))::numeric, 3),
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM b.ended_at - b.submitted_at))::numeric, 3),
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM b.finished_at - b.ended_at))::numeric, 3),
           round(extract(epoch FROM min(b.created_at) - min(j.created_at))::numeric, 3)
    FROM swarm.batches b JOIN swarm.jobs j ON j.id = b.job_id WHERE b.job_id = $batch_job" | tr '|' '\t')"
per_batch=$(psql_ -c "
    SELECT '| ' || concat_ws(' | ', b.id, b.state, b.status, b.requests, round(b.bytes / 1e6, 1), b.polls,
                             b.stored, b.retried,
                             round(extract(epoch FROM b.created_at - j.created_at)::numeric, 2),
                             round(extract(epoch FROM b.submitted_at - b.created_at)::numeric, 2),
                             round(extract(epoch FROM b.ended_at - b.submitted_at)::numeric, 2),
                             round(extract(epoch FROM b.finished_at - b.ended_at)::numeric, 2)) || ' |'
    FROM swarm.batches b JOIN swarm.jobs j ON j.id = b.job_id WHERE b.job_id = $batch_job ORDER BY b.id")
log "checks: the messages"
IFS=$'\t' read -r msgs distinct_reqs <<<"$(psql_ -c "
    SELECT count(*), count(DISTINCT request_id) FROM swarm.messages WHERE job_id = $batch_job" | tr '|' '\t')"
log "checks: the words of $SAMPLE agents"
IFS=$'\t' read -r pairs same_words <<<"$(psql_ -c "
    WITH sample AS (SELECT ARRAY(SELECT id FROM swarm.agents WHERE id % greatest($N / $SAMPLE, 1) = 0
                                 ORDER BY id LIMIT $SAMPLE) AS ids),
         m AS MATERIALIZED (SELECT m.agent_id, m.job_id, m.content FROM swarm.messages m, sample
                            WHERE m.agent_id = ANY (sample.ids) AND m.job_id IN ($batch_job, $sync_job))
    SELECT count(*), count(*) FILTER (WHERE b.content = s.content)
    FROM m b JOIN m s ON s.agent_id = b.agent_id
    WHERE b.job_id = $batch_job AND s.job_id = $sync_job" | tr '|' '\t')"
log "checks: done"
avg_line=$(psql_ -c "SELECT round(sum(bytes)::numeric / sum(requests)) FROM swarm.batches WHERE job_id = $batch_job")
log_errors=$(grep -cE 'ERROR|FATAL|PANIC' "$SWARM_TMP/pg/server.log" || true)
log_warnings=$(grep -c 'WARNING' "$SWARM_TMP/pg/server.log" || true)
batcher_lines=$(grep -c 'pg_swarm batcher' "$SWARM_TMP/pg/server.log" || true)
mock_hwm=$(hwm_kb "$mock_pid")
file_max_requests=$(psql_ -c "SHOW swarm.batch_file_max_requests")
file_max_bytes=$(psql_ -c "SHOW swarm.batch_file_max_bytes")
t5=$(now)

rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
per() { python3 -c "print(f'{$1 * 1e6 / $2:.1f}')"; }
mb() { python3 -c "print(f'{$1 / 1024:,.0f}')"; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }
ratio() { python3 -c "print(f'{($1 / $2) / ($3 / $4):.2f}')"; }
fmt() { python3 -c "print(f'{$1:,}')"; }

# shellcheck disable=SC2016
cat <<EOF2
# pg_swarm batch benchmark: $(fmt "$N") agents, synchronous vs batch mode, $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')

Repository at $head when the cluster started ($dirty source files differed from it); pg_swarm.so md5 $so_id. The mock, the pg_swarm worker, the pg_swarm batcher and PostgreSQL share the machine's $(nproc) cores (on 2 shared cores they compete for the CPU: the figures say how they share it, not what each would do alone).

- mock: \`mock_llm $MOCK_OPTS\` (chat completions answered at 0 ms; a batch validating ${VALIDATING} ms, in_progress ${PROCESSING} ms, finalizing ${FINALIZING} ms)
- settings: $(printf '`%s`, ' "${SETTINGS[@]}")\`swarm.batch_file_max_requests = $file_max_requests\`, \`swarm.batch_file_max_bytes = $file_max_bytes\`
- prompt: \`swarm.generate('$PROMPT')\` over every agent, then the same with \`mode => 'batch'\` (the same request bodies)

## generate() over every agent

| path | process | requests | succeeded | failed | seconds | requests/s | process CPU µs per request | process VmHWM MB (before) | process peak RssAnon MB | mock CPU s |
|---|---|---|---|---|---|---|---|---|---|---|
| synchronous | pg_swarm worker | $sync_n | $sync_ok | $sync_failed | $(printf %.2f "$sync_s") | $(rate "$sync_n" "$sync_s") | $(per "$sync_cpu" "$sync_n") | $(mb "$sync_hwm1") ($(mb "$sync_hwm0")) | $(mb "$sync_anon") | $sync_mock |
| batch | pg_swarm batcher | $batch_n | $batch_ok | $batch_failed | $(printf %.2f "$batch_s") | $(rate "$batch_n" "$batch_s") | $(per "$batch_cpu" "$batch_n") | $(mb "$batch_hwm1") ($(mb "$batch_hwm0")) | $(mb "$batch_anon") | $batch_mock |

Batch / synchronous: **$(ratio "$batch_n" "$batch_s" "$sync_n" "$sync_s")x** requests/s, **$(python3 -c "print(f'{($batch_cpu / $batch_n) / ($sync_cpu / $sync_n):.2f}')")x** CPU per request. seconds = finished_at - created_at of the job. VmHWM is the process's lifetime peak RSS after the job (in parentheses: before it); it counts the pages of shared_buffers the process has touched. Peak RssAnon, its private memory, is sampled every 0.2 s during the job.

## The batch job's batches

| batches | requests | bytes uploaded | bytes per line | polls | stored | retried | request errors | not stored | with last_error |
|---|---|---|---|---|---|---|---|---|---|
| $nb | $requests | $(fmt "$bytes") ($(python3 -c "print(f'{$bytes / 1e6:,.1f}')") MB) | $avg_line | $polls | $stored | $retried | $req_errors | $not_stored | $errors |

| phase | throughput | median per batch, s |
|---|---|---|
| build + upload + create (created_at → submitted_at) | $build_mbs MB/s (sum(bytes) / sum of spans) | $med_submit |
| at the provider (submitted_at → ended_at: validating, in_progress, finalizing, plus the wait until the batcher polls it) | | $med_run |
| download + store (ended_at → finished_at) | $(python3 -c "print(f'{$store_rps:,.0f}')") requests/s (sum(requests) / sum of spans) | $med_store |

From the job's created_at to its first batch's created_at: $first_batch s. MB = 10^6 bytes.

| batch | state | status | requests | MB | polls | stored | retried | job created → created, s | created → submitted, s | submitted → ended, s | ended → finished, s |
|---|---|---|---|---|---|---|---|---|---|---|---|
$per_batch

## Checks

- the batch job's messages: $msgs, distinct request_id: $distinct_reqs (agents: $N) — $([ "$msgs" = "$N" ] && [ "$distinct_reqs" = "$N" ] && echo ok || echo '**MISMATCH**')
- the same words as the synchronous job, for a sample of $SAMPLE agents spread over the ids: $same_words of $pairs — $([ "$same_words" = "$pairs" ] && [ "$pairs" -gt 0 ] && echo ok || echo '**MISMATCH**')
- server log: $log_errors ERROR/FATAL/PANIC lines, $log_warnings WARNING lines, $batcher_lines lines naming the pg_swarm batcher
- mock peak RSS (it keeps every file in memory): $(mb "$mock_hwm") MB

## Wall-clock of this run

| part | seconds |
|---|---|
| set-up (create_agents($N, 1), VACUUM ANALYZE) | $(secs "$t0" "$t1") |
| synchronous job (made, waited for) | $(secs "$t1" "$t2") |
| VACUUM ANALYZE between the jobs | $(secs "$t2" "$t3") |
| batch job (made, waited for) | $(secs "$t3" "$t4") |
| checks | $(secs "$t4" "$t5") |
EOF2
if ! { [ "$msgs" = "$N" ] && [ "$distinct_reqs" = "$N" ] && [ "$same_words" = "$pairs" ] && [ "$pairs" -gt 0 ]; }; then
    echo "the batch job's messages are not one per agent, or differ from the synchronous job's" >&2
    exit 1
fi
