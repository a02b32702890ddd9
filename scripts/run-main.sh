#!/usr/bin/env bash
# Installs, builds and runs calibq's default job: the demo experiment (configs/demo.yaml:
# every quantizer at 1, 2 and 4 bits on the shipped LLaVA checkpoint and sample photos, on
# CPU) into runs/demo/, then the quantizer error study on a synthetic prefill K/V and the KV
# statistics and plots of the demo model's prefill.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
out=${1:-runs/demo}
./build/bin/calibq --version
./build/bin/calibq run configs/demo.yaml --out "$out"
./build/bin/calibq kv-error --synthetic --bits 1,2,4 --out "$out/kv-error" | tail -n 3
./build/bin/calibq kv-stats configs/demo.yaml --samples 3 --out "$out/kv-stats" 2>&1 | tail -n 1
echo "summary: $out/summary.md; plot: $out/plots/metric_vs_bits.png"
