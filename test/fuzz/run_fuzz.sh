#!/bin/sh
# Build the libFuzzer target for the MessagePack decoder and run it.
#   test/fuzz/run_fuzz.sh [seconds]   (default 60)
# Needs clang and libclang-rt-14-dev (apt-get install -y clang libclang-rt-14-dev).
set -e
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../../src/social"
out="${FUZZ_OUT:-/tmp/pg_swarm_fuzz}"
mkdir -p "$out/corpus"
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -DSWARM_MSGPACK_STANDALONE -I"$src" \
    "$here/fuzz_unpack.c" "$src/msgpack_codec.c" -o "$out/fuzz_unpack"
# seed corpus: a few valid encodings of the shapes swarm.pack writes
printf '\x82\xa1a\x93\x01\xcb\x3f\xb9\x99\x99\x99\x99\x99\x9a\xc0\xa1b\xc7\x03\x01\x31\x2e\x30' > "$out/corpus/seed1"
printf '\x91\x91\x91\x80' > "$out/corpus/seed2"
printf '\xd3\x80\x00\x00\x00\x00\x00\x00\x00' > "$out/corpus/seed3"
printf '\xa4\xf0\x9f\x98\x80' > "$out/corpus/seed4"
"$out/fuzz_unpack" -max_total_time="${1:-60}" -max_len=4096 "$out/corpus"
