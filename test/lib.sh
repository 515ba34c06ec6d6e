# Shared shell functions for the demo, the test runner and the benchmarks:
# install dependencies, build, and run a throwaway cluster and mock endpoint.
# Source it; every function is idempotent where that makes sense.

SWARM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

swarm_packages="build-essential postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev
  libmsgpack-dev libssl-dev libipc-run-perl curl ca-certificates stunnel4 openssl python3 nginx"

# Install what is missing (apt-get only when something is).
swarm_install_deps() {
    local missing=""
    for p in $swarm_packages "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "installing:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq $missing >/dev/null
    fi
}

# Remove every pg_swarm file an earlier `make install` left in the server's
# directories, so that the install below holds only what this checkout builds:
# a file missing from git (a frozen upgrade script, say) then fails here too,
# as it would on a fresh machine, instead of being served from an old install.
swarm_uninstall_previous() {
    local pg_config=${PG_CONFIG:-pg_config} sharedir pkglibdir
    sharedir=$("$pg_config" --sharedir) || return 1
    pkglibdir=$("$pg_config" --pkglibdir) || return 1
    rm -f "$sharedir"/extension/pg_swarm.control "$sharedir"/extension/pg_swarm--*.sql \
          "$pkglibdir"/pg_swarm.so "$pkglibdir"/pg_swarm_test.so
    rm -rf "$pkglibdir"/bitcode/pg_swarm "$pkglibdir"/bitcode/pg_swarm.index.bc
}

# Source files that .gitignore keeps out of every commit: a fresh clone (CI)
# lacks them, though this checkout has them.  Prints them and fails if any.
swarm_check_ignored() {
    git -C "$SWARM_ROOT" rev-parse --git-dir >/dev/null 2>&1 || return 0
    local ignored
    ignored=$(git -C "$SWARM_ROOT" ls-files -o -i --exclude-standard -- \
                  Makefile pg_swarm.control src sql expected test docs .ci |
              grep -vE '\.(o|so|bc|pyc)$|^test/mock/mock_llm$|^test/bench/results/')
    if [ -n "$ignored" ]; then
        echo "ERROR: these files are read by the build or the tests but ignored by git," >&2
        echo "so a fresh clone does not have them (commit them, or fix .gitignore):" >&2
        echo "$ignored" | sed 's/^/  /' >&2
        return 1
    fi
}

swarm_build() {
    make -C "$SWARM_ROOT" -s all >/dev/null || return 1
    swarm_uninstall_previous || return 1
    make -C "$SWARM_ROOT" -s install >/dev/null
}

# The test-only library (test/module/pg_swarm_test.c): entry points into the
# worker's own code for the tests, never installed by `make install`.
swarm_build_test_module() {
    make -C "$SWARM_ROOT/test/module" -s all >/dev/null || return 1
    make -C "$SWARM_ROOT/test/module" -s install >/dev/null
}

# Citus 13.2.2 for the distributed tests (vendor/citus, AGPL-3.0, see its
# README): built from the vendored source once per machine, when the server
# does not offer citus 13.2-1 yet; later runs find it installed.  Prints why
# and fails when it cannot be built (the tests that need it then skip).
swarm_citus_packages="liblz4-dev libzstd-dev libkrb5-dev"
swarm_citus_installed() {
    local control
    control="$(${PG_CONFIG:-pg_config} --sharedir)/extension/citus.control"
    grep -q "default_version = '13.2-1'" "$control" 2>/dev/null
}
swarm_install_citus() {
    local vendor=$SWARM_ROOT/vendor/citus src log
    swarm_citus_installed && return 0
    if ! echo "dd2453caec20a830e5e63f1def5c5a98cb6f57ae510407cdcd800916fcdab430  $vendor/citus-13.2.2.tar.gz" |
         sha256sum -c --status 2>/dev/null; then
        echo "citus: $vendor/citus-13.2.2.tar.gz is missing or not the expected source" >&2
        return 1
    fi
    swarm_install_deps $swarm_citus_packages || { echo "citus: could not install $swarm_citus_packages" >&2; return 1; }
    src=$(mktemp -d /tmp/citus_build.XXXXXX)
    log=$src/build.log
    echo "building Citus 13.2.2 (once per machine, a few minutes)"
    if ! ( tar xzf "$vendor/citus-13.2.2.tar.gz" -C "$src" &&
           cd "$src/citus-13.2.2" &&
           patch -s -p1 < "$vendor/citus-13.2.2-pg15-have_createdb_privilege.patch" &&
           ./configure PG_CONFIG="${PG_CONFIG:-pg_config}" &&
           make -j"$(nproc)" &&
           make install ) >"$log" 2>&1; then
        echo "citus: the build failed; the last lines of $log:" >&2
        tail -15 "$log" >&2
        return 1
    fi
    rm -rf "$src"
    swarm_citus_installed
}

swarm_free_port() {
    python3 - <<'PY'
import socket
s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()
PY
}

# swarm_start_mock PORT [mock options...]: starts test/mock/mock_llm, waits until ready.
swarm_start_mock() {
    local port=$1; shift
    local log=${SWARM_TMP:-/tmp}/mock_$port.log
    "$SWARM_ROOT/test/mock/mock_llm" --port "$port" --quiet "$@" >"$log" 2>&1 &
    echo $! >"${SWARM_TMP:-/tmp}/mock_$port.pid"
    for _ in $(seq 1 100); do
        grep -q "listening" "$log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "mock did not start:"; cat "$log"; return 1
}

swarm_stop_mock() {
    local port=$1 pidfile=${SWARM_TMP:-/tmp}/mock_$1.pid
    if [ -f "$pidfile" ]; then
        local pid; pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    fi
    rm -f "$pidfile"
}

# swarm_start_cluster DIR PORT DATABASE MOCK_PORT [extra conf lines...]
swarm_start_cluster() {
    local dir=$1 port=$2 db=$3 mockport=$4; shift 4
    rm -rf "$dir"; mkdir -p "$dir"; chown postgres "$dir"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -E UTF8 --locale=C.UTF-8 -A trust >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'pg_swarm'"
        echo "swarm.database = '$db'"
        echo "swarm.base_url = 'http://127.0.0.1:$mockport/v1'"
        echo "max_connections = 50"
        echo "shared_buffers = 512MB"
        for line in "$@"; do echo "$line"; done
    } >>"$dir/data/postgresql.conf"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
    if [ "$db" != postgres ]; then
        runuser -u postgres -- "$PG_BIN/createdb" -h "$dir" -p "$port" "$db"
    fi
    # the worker retries its connection every second until the database exists
    for _ in $(seq 1 100); do
        [ "$("$PG_BIN/psql" -h "$dir" -p "$port" -U postgres -d "$db" -XAtc \
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")" = 1 ] && return 0
        sleep 0.1
    done
    echo "pg_swarm worker did not start"; tail -20 "$dir/server.log"; return 1
}

swarm_stop_cluster() {
    local dir=$1
    [ -d "$dir/data" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
