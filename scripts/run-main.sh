#!/usr/bin/env bash
# Installs, builds and runs calibq's default job: the demo experiment on calibq's own small
# LLaVA trained on synthetic scenes (configs/demo.yaml: captioning, configs/demo_vqa.yaml:
# VQA; every quantizer at 1, 2 and 4 bits on the visual KV, on CPU) into runs/demo/ and
# runs/demo-vqa/, then the KV statistics and plots of the demo model's prefill and the
# quantizer error study on a synthetic prefill K/V.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
out=${1:-runs/demo}
./build/bin/calibq --version
./build/bin/calibq run configs/demo.yaml --out "$out"
./build/bin/calibq run configs/demo_vqa.yaml --out "$out-vqa"
./build/bin/calibq kv-stats configs/demo.yaml --samples 8 --out "$out/kv-stats" 2>&1 | tail -n 1
./build/bin/calibq kv-error --synthetic --bits 1,2,4 --out "$out/kv-error" | tail -n 3
echo "captioning: $out/summary.md; VQA: $out-vqa/summary.md; plots: $out/plots/, $out/kv-stats/plots/"
