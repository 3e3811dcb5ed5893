#!/usr/bin/env bash
# Runs the whole test suite (ctest) against build/, then each fuzz target on a fixed, seeded set of
# inputs ($MACH_FUZZ_RUNS per target, default 300000: under a minute each on 2 cores). Tests run the real shaders on the first Vulkan device; on a machine
# without a GPU that is Mesa's lavapipe.
# Usage: scripts/test.sh [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x build/mach ]; then
  echo "test: build/mach is missing; run scripts/setup.sh first" >&2
  exit 1
fi
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure --timeout 900 -j "$(nproc)" "$@"
# The parsers' fuzz targets (safetensors headers, tokenizer, templates, model output), each on the same
# seeded inputs everywhere (a CI verdict must not depend on luck); a finding fails the run and leaves
# the input in build-fuzz/findings/. Explore further with scripts/fuzz.sh SECONDS.
MACH_FUZZ_RUNS="${MACH_FUZZ_RUNS:-300000}" scripts/fuzz.sh
