#!/usr/bin/env bash
# C unit tests of the engine's pure modules, without a server.  Builds each
# test/unit/test_*.c against the very src/ files the extension compiles, with
# test/fuzz/fuzz_backend.c standing in for the backend pieces they use and
# Debian's libpgcommon/libpgport for the JSON parser; runs them with
# AddressSanitizer and UBSan when the compiler has them.  TAP output.
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

sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
echo 'int main(void){return 0;}' > "$out/probe.c"
cc $sanitize "$out/probe.c" -o "$out/probe" 2>/dev/null || sanitize=""

status=0
for test in "$here"/test_*.c; do
    name=$(basename "$test" .c)
    if ! cc -g -O1 $sanitize -Wall -Wno-ignored-attributes -D_GNU_SOURCE \
        -I"$root/src" -I"$root/test/fuzz" -I"$pginc" \
        "$test" "$root/test/fuzz/fuzz_backend.c" "$root/src/outcome.c" "$root/src/openai.c" \
        -Wl,--wrap=pg_parse_json "$pglib/libpgcommon.a" "$pglib/libpgport.a" -lm \
        -o "$out/$name" 2> "$out/$name.build"; then
        cat "$out/$name.build"
        echo "not ok - $name does not build"
        status=1
        continue
    fi
    ASAN_OPTIONS=detect_leaks=0 "$out/$name" "$root/test/fixtures/replies" || status=1
done
exit $status
