#!/usr/bin/env bash
# Installs, builds and runs calibq's default job. Until the experiment runner lands,
# that is the quantizer study on a synthetic prefill K/V with planted outlier key
# channels: the error table of every registered quantizer at 1, 2 and 4 bits, and the
# per-channel KV statistics, written to runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
out=${1:-runs/demo}
./build/bin/calibq --version
./build/bin/calibq kv-error --synthetic --bits 1,2,4 --out "$out"
./build/bin/calibq kv-stats --synthetic --out "$out/kv-stats" | tail -n 3
