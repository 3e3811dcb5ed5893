#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan + UBSan) into build-fuzz/ and runs each;
# fails on any finding (the crashing input is left in build-fuzz/findings/; add it to
# fuzz/regressions/TARGET/ with the fix so that every later run replays it).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   explore with a random seed (default 60 s per target)
#        MACH_FUZZ_RUNS=N scripts/fuzz.sh       N inputs per target from seed 1: the same inputs on every
#                                              machine, so a CI result does not depend on luck or speed
# Needs clang and libclang-rt-14-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ not found: apt-get install clang libclang-rt-14-dev" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DMACH_FUZZ=ON >/dev/null
targets=$(cd fuzz && ls *_fuzz.cpp | sed 's/\.cpp$//')
# shellcheck disable=SC2086
cmake --build build-fuzz -j "$(nproc)" --target $targets
mkdir -p build-fuzz/findings
for t in $targets; do
  mkdir -p "build-fuzz/corpus/$t"
  dict=()
  if [ "$t" = template_fuzz ]; then dict=(-dict=fuzz/jinja.dict); fi
  if [ "$t" = http_request_fuzz ]; then dict=(-dict=fuzz/http.dict); fi
  if [ -n "${MACH_FUZZ_RUNS:-}" ]; then
    budget=(-runs="$MACH_FUZZ_RUNS" -seed=1)
    echo "fuzz: $t, $MACH_FUZZ_RUNS inputs from seed 1"
  else
    budget=(-max_total_time="$seconds")
    echo "fuzz: $t for ${seconds}s"
  fi
  # The first directory collects new inputs; fuzz/regressions/$t holds past findings, replayed first.
  build-fuzz/fuzz/"$t" "${budget[@]}" -print_final_stats=1 -timeout=10 "${dict[@]}" \
    -artifact_prefix=build-fuzz/findings/"$t"- "build-fuzz/corpus/$t" "fuzz/regressions/$t"
done
echo "fuzz: no findings"
