#!/usr/bin/env bash
# Runs on the GPU machine from the repo root (after tools/device_stage.sh here):
#   source .device/vulkan-env.sh; bash .device/device_bench.sh [resident|streaming SLOTS...]
# Writes a Qwen3-30B-A3B-shaped q4 checkpoint with `mach synth` (once per machine: it stays in $MACH_SYNTH_DIR)
# and runs `mach bench` on it, resident or streaming through SLOTS expert slots per layer; JSON lines land
# in $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
dir=${MACH_SYNTH_DIR:-/tmp/qwen3-30b-a3b-q4}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if [ ! -f "$dir/config.json" ]; then
  start=$(date +%s.%N)
  ./.device/mach synth --shape qwen3-30b-a3b --quant q4 --out "$dir" 2>&1 | tail -3 | tee "$out/synth.log"
  echo "synth_seconds $(python3 -c "import time; print(round(time.time() - $start, 2))")" | tee -a "$out/synth.log"
  du -sh "$dir" "$dir/expert_sidecar" | tee -a "$out/synth.log"
fi
mode=${1:-resident}
shift || true
if [ "$mode" = resident ]; then
  # The figures, then per-op profiles of a decode token, a verify block and a prefill chunk, in one load.
  ./.device/mach bench "$dir" --quant q4 --repeats 3 --profile-after 1,16,512 ${MACH_BENCH_ARGS:-} \
    | tee "$out/bench_resident.jsonl"
else
  for slots in "$@"; do
    # Drop the page cache's copy of the sidecar where allowed, so misses read the disk (O_DIRECT bypasses it anyway).
    sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
    ./.device/mach bench "$dir" --quant q4 --repeats 3 --streaming --expert-slots "$slots" ${MACH_BENCH_ARGS:-} \
      | tee "$out/bench_streaming_$slots.jsonl"
  done
fi
