#!/usr/bin/env bash
# HTTPS benchmark: the same job over plain HTTP/1.1 straight to the mock, and
# over HTTPS through nginx (TLS 1.3, certificate verified against a test CA)
# with HTTP/2 and with HTTP/1.1 only, side by side in one run: requests/s,
# worker CPU per request, and the connections the worker held (distinct
# connections in nginx's access log; for plain HTTP, peak connections the
# mock saw).  Endpoint: the mock at a fixed 100 ms, behind nginx for HTTPS
# (nginx proxies to it over kept-alive HTTP/1.1).  Run as root.
#
#   bash test/bench/https_bench.sh [requests] [max_concurrent] [rounds]
#   BENCH_NO_BUILD=1 ...   measure the pg_swarm installed now (another build)
#   BENCH_CONF="swarm.adaptive_concurrency = off" ...   one more setting
#   BENCH_NGINX_WORKERS=2 ...   nginx worker processes (default 2)
#   BENCH_EPS="plain https_h2" ...   which transports to run (default all three)
#   BENCH_H2_STREAMS=10 ...   streams nginx allows per HTTP/2 connection (default 128)
set -eu
. "$(dirname "$0")/../lib.sh"
cd "$SWARM_ROOT"
n=${1:-100000} conc=${2:-2000} rounds=${3:-1}
swarm_install_deps
[ "${BENCH_NO_BUILD:-}" = 1 ] || swarm_build

export SWARM_TMP=$(mktemp -d /tmp/pg_swarm_hbench.XXXXXX)
chmod 755 "$SWARM_TMP"
pg_port=$(swarm_free_port)
mock_port=$(swarm_free_port)
h2_port=$(swarm_free_port)
h1_port=$(swarm_free_port)
trap 'swarm_stop_cluster "$SWARM_TMP/pg"; swarm_stop_mock "$mock_port"; [ -s "$SWARM_TMP/tls/nginx.pid" ] && kill -QUIT "$(cat "$SWARM_TMP/tls/nginx.pid")"' EXIT

# a CA and a certificate for localhost, and nginx serving it
tls=$SWARM_TMP/tls; mkdir -p "$tls"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/ca.key" \
    -out "$tls/ca.crt" -days 2 -subj "/CN=bench CA" -addext "basicConstraints = critical, CA:TRUE" \
    -addext "keyUsage = critical, keyCertSign, cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/server.key" \
    -out "$tls/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost\n' > "$tls/ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -set_serial 2 -days 2 \
    -extfile "$tls/ext" -out "$tls/server.crt" 2>/dev/null
for t in client_body proxy fastcgi uwsgi scgi; do mkdir -p "$tls/$t"; done
# nginx needs two descriptors per proxied request (client side and upstream);
# raise its own limit as far as the hard limit allows, as the worker does
nofile=$(runuser -u postgres -- bash -c 'ulimit -Hn'); [ "$nofile" = unlimited ] && nofile=65536
cat > "$tls/nginx.conf" <<EOF
worker_processes ${BENCH_NGINX_WORKERS:-2};
worker_rlimit_nofile $((nofile < 65536 ? nofile : 65536));
pid $tls/nginx.pid;
error_log $tls/error.log warn;
events { worker_connections 16384; }
http {
    log_format swarm '\$connection \$server_protocol';
    access_log $tls/access.log swarm buffer=256k flush=1s;
    client_body_temp_path $tls/client_body; proxy_temp_path $tls/proxy;
    fastcgi_temp_path $tls/fastcgi; uwsgi_temp_path $tls/uwsgi; scgi_temp_path $tls/scgi;
    keepalive_requests 1000000; keepalive_timeout 120s;
    ssl_certificate $tls/server.crt; ssl_certificate_key $tls/server.key;
    ssl_session_cache shared:swarm:10m;
    upstream mock { server 127.0.0.1:$mock_port; keepalive 1024; }
    server { listen 127.0.0.1:$h2_port ssl http2; http2_max_concurrent_streams ${BENCH_H2_STREAMS:-128};
             location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; } }
    server { listen 127.0.0.1:$h1_port ssl;
             location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
EOF
chown -R postgres "$tls"
runuser -u postgres -- nginx -q -p "$tls" -c "$tls/nginx.conf"

swarm_start_mock "$mock_port" --latency-ms 100 --threads 1
swarm_start_cluster "$SWARM_TMP/pg" "$pg_port" postgres "$mock_port" \
    "swarm.max_concurrent = $conc" "swarm.ca_file = '$tls/ca.crt'" \
    "swarm.batch_size = 500" "swarm.flush_interval = 50ms" "max_wal_size = 4GB" \
    ${BENCH_CONF:+"$BENCH_CONF"}
psql_() { "$PG_BIN/psql" -h "$SWARM_TMP/pg" -p "$pg_port" -U postgres -X -q -At "$@"; }
psql_ -c "CREATE EXTENSION pg_swarm" -c "SELECT swarm.create_agents($n, 1)" \
      -c "SELECT swarm.add_endpoint('https_h2', 'https://localhost:$h2_port/v1', max_in_flight => $conc)" \
      -c "SELECT swarm.add_endpoint('https_h1', 'https://localhost:$h1_port/v1', max_in_flight => $conc)" \
      -c "SELECT swarm.add_endpoint('plain', 'http://127.0.0.1:$mock_port/v1', max_in_flight => $conc)" >/dev/null
pid=$(psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")
hz=$(getconf CLK_TCK)

echo
echo "$n requests, max_concurrent $conc, mock at 100 ms; medians of $rounds"
echo
echo "| transport | requests/s | C/L bound | worker CPU µs/request | nginx CPU µs/request | mock CPU µs/request | connections held |"
echo "|---|---|---|---|---|---|---|"
# CPU seconds (user + system) of a set of processes so far
cpu_of() { local sum=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$sum"; }
nginx_pids() { pgrep -P "$(cat "$tls/nginx.pid")" | tr '\n' ' '; }
mock_pid=$(cat "$SWARM_TMP/mock_$mock_port.pid")
for ep in ${BENCH_EPS:-plain https_h2 https_h1}; do
    for r in $(seq 1 "$rounds"); do
        : > "$tls/access.log"; kill -USR1 "$(cat "$tls/nginx.pid")"; sleep 0.5
        curl -s -X POST "127.0.0.1:$mock_port/mock/reset" >/dev/null
        # a fresh worker: no connections, sessions or limits from the last run
        psql_ -c "SELECT pg_terminate_backend($pid)" >/dev/null; sleep 1.5
        pid=$(psql_ -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")
        t0=$(cpu_of "$pid"); n0=$(cpu_of $(nginx_pids)); m0=$(cpu_of "$mock_pid")
        log0=$(wc -l < "$SWARM_TMP/pg/server.log")
        job=$(psql_ -c "SELECT swarm.generate('bench', endpoints => ARRAY['$ep'])")
        # sample in flight, the limit and the latency ratio every half second while it runs
        ( while :; do psql_ -F ' ' -c "SELECT in_flight, concurrency_limit, round(latency_ratio::numeric, 2), coalesce(waiting_for, '-'), errors, retries FROM swarm.endpoint_status WHERE endpoint = '$ep'"; sleep 0.5; done ) > "$SWARM_TMP/samples_$ep" 2>/dev/null &
        sampler=$!
        psql_ -c "SET client_min_messages = warning" -c "SELECT status FROM swarm.wait($job)" >/dev/null
        kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
        t1=$(cpu_of "$pid"); n1=$(cpu_of $(nginx_pids)); m1=$(cpu_of "$mock_pid")
        read wall done <<<"$(psql_ -F ' ' -c "SELECT extract(epoch FROM finished_at - created_at), succeeded FROM swarm.jobs WHERE id = $job")"
        sleep 1.2
        if [ "$ep" = plain ]; then
            conns=$(curl -s "127.0.0.1:$mock_port/mock/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['peak_connections'])")
        else
            conns=$(awk '{print $1}' "$tls/access.log" | sort -u | wc -l)
        fi
        limit=$(psql_ -c "SELECT concurrency_limit FROM swarm.endpoint_status WHERE endpoint = '$ep'")
        echo "$ep $wall $done $t0 $t1 $conns $((n1 - n0)) $((m1 - m0))" >> "$SWARM_TMP/rows"
        echo "$ep: $(python3 -c "print(round($done / $wall))") requests/s, limit after $limit, median in flight $(awk '{print $1}' "$SWARM_TMP/samples_$ep" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" >&2
        # the worker raised the HTTP/2 connection cap (a server allowing few streams)
        tail -n +"$((log0 + 1))" "$SWARM_TMP/pg/server.log" | grep -A1 'requests per connection' | sed 's/^[^]]*] //' >&2 || true
        [ -z "${BENCH_TRACE:-}" ] || cat "$SWARM_TMP/samples_$ep" >&2
    done
done
python3 - "$SWARM_TMP/rows" "$hz" "$conc" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    ep, wall, done, t0, t1, conns, ncpu, mcpu = line.split()
    per = lambda ticks: int(ticks) / int(sys.argv[2]) * 1e6 / int(done)
    rows.setdefault(ep, []).append((int(done) / float(wall), per(int(t1) - int(t0)), int(conns), per(ncpu), per(mcpu)))
names = {'plain': 'plain HTTP/1.1 (straight to the mock)', 'https_h2': 'HTTPS, HTTP/2 (nginx)', 'https_h1': 'HTTPS, HTTP/1.1 only (nginx)'}
base = statistics.median(r[0] for r in rows['plain']) if 'plain' in rows else None
for ep in ('plain', 'https_h2', 'https_h1'):
    if ep not in rows:
        continue
    med = lambda i: statistics.median(r[i] for r in rows[ep])
    share = f" ({100 * med(0) / base:.0f}%)" if base else ""
    nginx = f"{med(3):.0f}" if ep != 'plain' else "–"
    print(f"| {names[ep]} | {med(0):,.0f}{share} | {int(sys.argv[3]) / 0.1:,.0f} | {med(1):.0f} | {nginx} | {med(4):.0f} | {med(2):,.0f} |")
PY
