#!/usr/bin/env bash
# Installs the dependencies (scripts/setup.sh), configures and builds calibq into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
generator=()
command -v ninja >/dev/null && [ ! -f build/Makefile ] && generator=(-G Ninja)
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >build.configure.log 2>&1 \
  || { cat build.configure.log; exit 1; }
grep "calibq:" build.configure.log || true
cmake --build build -j "$(nproc)"
