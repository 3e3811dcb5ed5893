#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan + UBSan) into build-fuzz/ and runs each for a
# bounded time; fails on any finding (the crashing input is left in build-fuzz/findings/).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; needs clang and libclang-rt-14-dev)
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
  echo "fuzz: $t for ${seconds}s"
  dict=()
  if [ "$t" = template_fuzz ]; then dict=(-dict=fuzz/jinja.dict); fi
  build-fuzz/fuzz/"$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 "${dict[@]}" \
    -artifact_prefix=build-fuzz/findings/"$t"- "build-fuzz/corpus/$t"
done
echo "fuzz: no findings"
