#!/usr/bin/env bash
# On the GPU machine after scripts/device/build.sh: runs every model fixture through
# `calibq logits` on CUDA in fp32, bf16 and fp16 and prints, per fixture and dtype, the max
# |logit - transformers' fp32 logit| and whether the greedy tokens match.
set -euo pipefail
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH="${CALIBQ_DEVICE_PREFIX:-/tmp/calibq-prefix}/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=${CALIBQ_DEVICE_BUILD:-build-device}/bin/calibq
tmp=$(mktemp -d)
for dir in tests/data/models/*/; do
  name=$(basename "$dir")
  for dtype in fp32 bf16 fp16; do
    n=$(python3 -c "from safetensors.torch import load_file; r=load_file('$dir/reference.safetensors'); i=load_file('$dir/inputs.safetensors'); print(r['generated'].shape[1]-i['input_ids'].shape[1])")
    "$bin" logits --model "$dir" --inputs "$dir/inputs.safetensors" --out "$tmp/$name-$dtype.safetensors" \
      --generate "$n" --dtype "$dtype" --device cuda 2>/dev/null
    python3 - "$dir" "$tmp/$name-$dtype.safetensors" "$name" "$dtype" <<'PY'
import sys
from safetensors.torch import load_file
ref, out = load_file(sys.argv[1] + "/reference.safetensors"), load_file(sys.argv[2])
d = (out["logits"] - ref["logits"]).abs().max().item()
scale = ref["logits"].abs().max().item()
same = bool((out["generated"] == ref["generated"]).all())
print(f"{sys.argv[3]:<16} {sys.argv[4]}: max |dlogit| {d:.2e} (logits up to {scale:.2f}), greedy tokens {'equal' if same else 'DIFFER'}")
PY
  done
done
