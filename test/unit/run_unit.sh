#!/usr/bin/env bash
# C unit tests of the engine's pure modules, without a server.  Builds each
# test/unit/test_*.c against the very src/ files the extension compiles (the
# ones listed for it in `sources` below), with test/fuzz/fuzz_backend.c
# standing in for the backend pieces they use (palloc, ereport) and Debian's
# libpgcommon/libpgport for what fuzz_backend.c and the JSON parser need;
# runs them with AddressSanitizer and UBSan when the compiler has them.  TAP
# output.  A test_*.c with no entry in `sources` is reported as not built.
# Tests of modules that switch memory contexts (jobs.c, request.c) link
# test/unit/unit_backend.c instead (real memory contexts, ereport, a
# pairingheap stand-in, a test clock): see `backend` below.
#
#   bash test/unit/run_unit.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
root="$here/../.."
pg_config="${PG_CONFIG:-pg_config}"
pginc=$("$pg_config" --includedir-server)
pglib=$("$pg_config" --pkglibdir)
out=$(mktemp -d /tmp/pg_swarm_unit.XXXXXX)
trap 'rm -rf "$out"' EXIT

# The src/ files each test is linked with: one line per test.
declare -A sources=(
    [test_outcome]="outcome.c openai.c"
    [test_endpoint]="endpoint.c"
    [test_jobs]="jobs.c"
    [test_request]="request.c jobs.c openai.c outcome.c"
    [test_batch_lines]="batch_lines.c"
)

# The backend stand-in each test links, when not test/fuzz/fuzz_backend.c,
# with its include directory and link flags.
declare -A backend=(
    [test_jobs]=unit
    [test_request]=unit
)

sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
echo 'int main(void){return 0;}' > "$out/probe.c"
cc $sanitize "$out/probe.c" -o "$out/probe" 2>/dev/null || sanitize=""

status=0
for test in "$here"/test_*.c; do
    name=$(basename "$test" .c)
    if [ -z "${sources[$name]+set}" ]; then
        echo "not ok - $name has no line in run_unit.sh's sources list"
        status=1
        continue
    fi
    srcs=()
    for f in ${sources[$name]}; do
        srcs+=("$root/src/$f")
    done
    # fuzz_backend.c wraps pg_parse_json and uses libpgcommon's UTF-8 and
    # psprintf, hence --wrap and the libraries; unit_backend.c needs no wrap.
    # (-lcrypto: libpgcommon's SHA-256, request.c's response-store keys)
    if [ "${backend[$name]:-fuzz}" = unit ]; then
        stand_in=("-I$root/test/unit" "$root/test/unit/unit_backend.c")
        wrap=()
    else
        stand_in=("-I$root/test/fuzz" "$root/test/fuzz/fuzz_backend.c")
        wrap=(-Wl,--wrap=pg_parse_json)
    fi
    if ! cc -g -O1 $sanitize -Wall -Wno-ignored-attributes -D_GNU_SOURCE \
        -I"$root/src" "${stand_in[0]}" -I"$pginc" \
        "$test" "${stand_in[1]}" "${srcs[@]}" \
        "${wrap[@]}" "$pglib/libpgcommon.a" "$pglib/libpgport.a" -lcrypto -lm \
        -o "$out/$name" 2> "$out/$name.build"; then
        cat "$out/$name.build"
        echo "not ok - $name does not build"
        status=1
        continue
    fi
    # warnings are shown (as TAP comments), not fatal
    [ -s "$out/$name.build" ] && sed 's/^/# /' "$out/$name.build"
    ASAN_OPTIONS=detect_leaks=0 "$out/$name" "$root/test/fixtures/replies" || status=1
done
exit $status
