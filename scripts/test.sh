#!/usr/bin/env bash
# Runs the whole test suite (ctest) against build/, then each fuzz target for a bounded time
# ($MACH_FUZZ_SECONDS, default 20). Tests run the real shaders on the first Vulkan device; on a machine
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
# The parsers' fuzz targets (safetensors headers, tokenizer, templates, model output), each
# for a bounded time; a finding fails the run and leaves the input in build-fuzz/findings/.
scripts/fuzz.sh "${MACH_FUZZ_SECONDS:-20}"
