#!/usr/bin/env bash
# Run ON THE GPU MACHINE (Ubuntu 24.04, PyTorch 2.11 + CUDA 13, no package registry),
# from the repository root, with .device-debs carried:
#   scripts/device/build.sh [--test] [--jobs N]
# Unpacks the carried Debian packages into a prefix (never into /), builds calibq with
# CUDA against the Python install's LibTorch, and optionally runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
run_tests=0; jobs=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --test) run_tests=1 ;;
    --jobs) jobs=$2; shift ;;
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
prefix=${CALIBQ_DEVICE_PREFIX:-/tmp/calibq-prefix}
build=${CALIBQ_DEVICE_BUILD:-build-device}
ls .device-debs/*.deb >/dev/null 2>&1 || { echo "build.sh: no .device-debs/*.deb; run scripts/device/fetch-debs.sh here and carry .device-debs" >&2; exit 2; }
start=$(date +%s)
mkdir -p "$prefix"
for f in .device-debs/*.deb; do dpkg -x "$f" "$prefix"; done
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake -S . -B "$build" -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" \
  -DCMAKE_CUDA_ARCHITECTURES=90 >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
grep -E "calibq:|Found Torch|CUDA" "$build.configure.log" | head -5
cmake --build "$build" -j "$jobs" >"$build.build.log" 2>&1 || { grep -E "error|FAILED" -A6 "$build.build.log" | head -n 80; exit 1; }
echo "build.sh: configured and built in $(( $(date +%s) - start )) s"
"$build/bin/calibq" --version
if [ "$run_tests" = 1 ]; then
  (cd "$build" && ctest -j "$jobs" --output-on-failure 2>&1 | tail -n 40)
fi
