#!/bin/sh
# Build the libFuzzer target for the response parser (src/openai.c) and run it.
#   test/fuzz/run_fuzz_openai.sh [seconds]   fuzz (default 60 s)
#   test/fuzz/run_fuzz_openai.sh 0           only replay the seeds, checking every invariant
#   test/fuzz/run_fuzz_openai.sh coverage    line/branch coverage of src/openai.c by
#                                            the seeds plus the corpus of earlier runs
# Needs clang, libclang-rt-14-dev and postgresql-server-dev-15, whose
# libpgcommon.a/libpgport.a provide PostgreSQL's JSON parser:
#   apt-get install -y clang libclang-rt-14-dev postgresql-server-dev-15
# FUZZ_OUT (default /tmp/pg_swarm_fuzz_openai) keeps the binary, the growing
# corpus and any crash-* reproducer.  FUZZ_OPENAI_PRINT=1 prints what each
# replayed input parses to.
set -e
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../../src"
out="${FUZZ_OUT:-/tmp/pg_swarm_fuzz_openai}"
pg_config="${PG_CONFIG:-pg_config}"
pginc=$("$pg_config" --includedir-server)
pglib=$("$pg_config" --pkglibdir)
seconds="${1:-60}"
mkdir -p "$out/corpus"

if [ "$seconds" = coverage ]; then
    clang -g -O0 -fprofile-instr-generate -fcoverage-mapping -fsanitize=fuzzer \
        -Wno-ignored-attributes -I"$src" -I"$here" -I"$pginc" \
        "$here/fuzz_openai.c" "$here/fuzz_backend.c" "$src/openai.c" \
        -Wl,--wrap=pg_parse_json "$pglib/libpgcommon.a" "$pglib/libpgport.a" \
        -o "$out/fuzz_openai_cov"
    rm -rf "$out/cov_inputs" && mkdir -p "$out/cov_inputs"
    cp "$here"/openai_seeds/* "$out"/corpus/* "$out/cov_inputs/" 2>/dev/null || true
    LLVM_PROFILE_FILE="$out/openai.profraw" "$out/fuzz_openai_cov" -runs=0 \
        "$out/cov_inputs" >/dev/null 2>&1
    llvm-profdata merge -o "$out/openai.profdata" "$out/openai.profraw"
    llvm-cov report "$out/fuzz_openai_cov" -instr-profile="$out/openai.profdata" "$src/openai.c"
    echo "lines never run:"
    llvm-cov show "$out/fuzz_openai_cov" -instr-profile="$out/openai.profdata" \
        "$src/openai.c" -show-line-counts-or-regions | grep -E '^ +[0-9]+\| +0\|' || echo "  none"
    exit 0
fi

# src/openai.c exactly as the extension compiles it, against the server
# headers; fuzz_backend.c stands in for the backend pieces it calls, and
# --wrap lets it see the parser's nesting (see fuzz_backend.c).
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wno-ignored-attributes \
    -I"$src" -I"$here" -I"$pginc" \
    "$here/fuzz_openai.c" "$here/fuzz_backend.c" "$src/openai.c" \
    -Wl,--wrap=pg_parse_json "$pglib/libpgcommon.a" "$pglib/libpgport.a" \
    -o "$out/fuzz_openai"

if [ "$seconds" = 0 ]; then
    # regression run: every seed once, all invariants checked
    exec "$out/fuzz_openai" "$here"/openai_seeds/*
fi

cp "$here"/openai_seeds/* "$out/corpus/"
cd "$out"
nice -n 10 "$out/fuzz_openai" -max_total_time="$seconds" -max_len=8192 \
    -dict="$here/openai.dict" -print_final_stats=1 "$out/corpus" 2>&1 |
    tee "$out/last_run.log" | grep -v -e '^#[0-9]*.*\(NEW\|REDUCE\|pulse\)'
status=$(grep -c -e '^==[0-9]*==ERROR' -e 'INVARIANT VIOLATED' -e 'deadly signal' "$out/last_run.log" || true)
echo "corpus: $(ls "$out/corpus" | wc -l) files in $out/corpus; log: $out/last_run.log"
if [ "$status" != 0 ]; then
    echo "FAILED: see $out/last_run.log and the crash-* file in $out"
    exit 1
fi
echo "clean: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$out/last_run.log")"
