#!/usr/bin/env bash
# Runs on the GPU machine from the repo root, after tools/device_stage.sh here:
#   source .device/vulkan-env.sh; bash .device/device_run.sh [ops_bench filter]
# Runs every staged test binary, then the op benchmarks; logs land in $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
./.device/mach devices --json | tee "$out/devices.json"
status=0
for t in .device/*_test; do
  echo "== $t"
  "$t" --gtest_brief=1 > "$out/$(basename "$t").log" 2>&1 || { status=1; tail -30 "$out/$(basename "$t").log"; }
  tail -3 "$out/$(basename "$t").log"
done
echo "== ops_bench"
./.device/ops_bench --repeats 20 ${1:+--filter "$1"} | tee "$out/ops_bench.jsonl"
exit $status
