#!/usr/bin/env bash
# Installs, builds and runs every test: the GoogleTest suite (through CTest) and a
# bounded libFuzzer run of the safetensors header parser.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/build.sh
(cd build && ctest -j "$(nproc)" --output-on-failure --timeout 900)

fuzz_seconds=${CALIBQ_FUZZ_SECONDS:-60}
cmake -S tests/fuzz -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc)" >/dev/null
mkdir -p build-fuzz/corpus
echo "fuzz: safetensors header parser for ${fuzz_seconds} s"
./build-fuzz/fuzz_safetensors_header -max_total_time="$fuzz_seconds" -max_len=4096 -print_final_stats=1 \
  build-fuzz/corpus tests/fuzz/corpus 2>build-fuzz/fuzz.log || { tail -n 60 build-fuzz/fuzz.log; exit 1; }
grep -E "stat::number_of_executed_units" build-fuzz/fuzz.log || true
echo "run-tests: done in $(( $(date +%s) - start )) s"
