#!/usr/bin/env bash
# On the GPU machine after scripts/device/build.sh: calibq's end-to-end throughput benchmark
# beside its transformers peer, on one architecture with random weights.
#   bench/throughput.sh OUT_DIR [ARCH] [PEER_BATCHES] [-- extra flags for calibq bench throughput]
# Writes OUT_DIR/transformers.json (the peer), OUT_DIR/ARCH.{json,md} and OUT_DIR/plots/*.gp.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; arch=${2:-internvl2.5-8b}; peer_batches=${3:-1,8,32,48}
shift $(( $# < 3 ? $# : 3 )); [ "${1:-}" = "--" ] && shift
export LD_LIBRARY_PATH="${CALIBQ_DEVICE_PREFIX:-/tmp/calibq-prefix}/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
if [ "$peer_batches" != "none" ] && [ ! -f "$out/transformers.json" ]; then
  python3 bench/transformers_throughput.py --arch "$arch" --batch "$peer_batches" --out "$out/transformers.json" 2>&1 |
    grep -v -i warn
fi
peer=(); [ -f "$out/transformers.json" ] && peer=(--transformers "$out/transformers.json")
# Caches of a thousand sequences are joined layer by layer: expandable segments keep the
# freed parts reusable instead of fragmenting the reserved memory.
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
build-device/bin/calibq bench throughput --arch "$arch" --random-weights "${peer[@]}" \
  --json "$out/$arch.json" --md "$out/$arch.md" --plots "$out" "$@"
