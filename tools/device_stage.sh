#!/usr/bin/env bash
# Stages what a run on the GPU machine needs into .device/ (git-ignored): the Vulkan loader debs from
# ../shared/device and this build's test and bench binaries. Then call the device tool with carry [".device"]
# and a command that starts with `source .device/vulkan-env.sh;` (see tools/device_run.sh).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .git/info
bash ../shared/device/prepare.sh
build=${1:-build}
cp "$build"/mach .device/
# MACH_STAGE=bench stages only mach (for tools/device_bench.sh): all test binaries together pass the device
# tool's 64 MiB limit on what it carries.
if [ "${MACH_STAGE:-all}" != bench ]; then
  find "$build"/tests "$build"/bench -maxdepth 1 -type f -perm -u+x \( -name '*_test' -o -name '*_bench' \) -exec cp {} .device/ \;
fi
cp tools/device_run.sh tools/device_bench.sh .device/
# mach links ICU; the GPU machine's Debian may lack these exact versions.
mkdir -p .device/lib
cp -L /usr/lib/x86_64-linux-gnu/libicuuc.so.72 /usr/lib/x86_64-linux-gnu/libicudata.so.72 .device/lib/
[ -d tests/fixtures ] && [ -f tools/make_fixtures.py ] && cp tools/make_fixtures.py .device/ || true
du -sh .device
