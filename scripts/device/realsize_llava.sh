#!/usr/bin/env bash
# On the GPU machine after scripts/device/build.sh: a real-size LLaVA-1.5-7B or (ARCH=internvl)
# InternVL2.5-8B-shaped model (random bf16 weights) through prefill and 32 greedy decode steps
# with calibq, bf16 KV and 1-bit CalibQuant visual KV; prints wall time and the peak GPU
# memory nvidia-smi saw.
set -euo pipefail
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH="${CALIBQ_DEVICE_PREFIX:-/tmp/calibq-prefix}/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
arch=${ARCH:-llava}  # llava (LLaVA-1.5-7B) or internvl (InternVL2.5-8B shape)
dir=${1:-/tmp/$arch-random}
[ -f "$dir/inputs.safetensors" ] || python3 scripts/device/realsize_$arch.py "$dir" "${BATCH:-2}" 2>&1 | grep -v -i warn | tail -2
for kv in "" "calibquant:bits=1"; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/mem.log &
  mon=$!
  start=$(date +%s.%N)
  build-device/bin/calibq logits --model "$dir" --inputs "$dir/inputs.safetensors" --out /tmp/out.safetensors \
    --generate 32 --dtype bf16 --device cuda ${kv:+--kv $kv} 2>&1 | tail -n 2
  end=$(date +%s.%N)
  kill $mon
  echo "kv=${kv:-none (bf16 cache)}: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s for load + prefill logits + prefill + 32 decode steps; peak GPU memory $(sort -n /tmp/mem.log | tail -1) MiB"
done
