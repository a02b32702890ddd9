#!/usr/bin/env bash
# On the GPU machine after scripts/device/build.sh: runs every model fixture through
# `calibq logits` on CUDA in fp32, bf16 and fp16 and prints, per fixture and dtype, the max
# |logit - transformers' fp32 logit| and whether the greedy tokens match; where they part, the
# reference's fp32 top-2 logit margin at that step (a flip where the margin is below the dtype's
# logit error is a near tie that the dtype cannot resolve, not a fault).
set -euo pipefail
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH="${CALIBQ_DEVICE_PREFIX:-/tmp/calibq-prefix}/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=${CALIBQ_DEVICE_BUILD:-build-device}/bin/calibq
tmp=$(mktemp -d)
for dir in tests/data/models/*/; do
  name=$(basename "$dir")
  [ -f "$dir/reference.safetensors" ] || continue  # pipeline folders: their own tests
  for dtype in fp32 bf16 fp16; do
    n=$(python3 -c "from safetensors.torch import load_file; r=load_file('$dir/reference.safetensors'); i=load_file('$dir/inputs.safetensors'); print(r['generated'].shape[1]-i['input_ids'].shape[1])")
    "$bin" logits --model "$dir" --inputs "$dir/inputs.safetensors" --out "$tmp/$name-$dtype.safetensors" \
      --generate "$n" --dtype "$dtype" --device cuda 2>/dev/null
    python3 - "$dir" "$tmp/$name-$dtype.safetensors" "$name" "$dtype" "$bin" "$tmp" <<'PY'
import subprocess, sys
from safetensors.torch import load_file, save_file
ref, out = load_file(sys.argv[1] + "/reference.safetensors"), load_file(sys.argv[2])
d = (out["logits"] - ref["logits"]).abs().max().item()
scale = ref["logits"].abs().max().item()
same = bool((out["generated"] == ref["generated"]).all())
line = f"{sys.argv[3]:<16} {sys.argv[4]}: max |dlogit| {d:.2e} (logits up to {scale:.2f}), greedy tokens {'equal' if same else 'DIFFER'}"
if not same:
    # Where the greedy tokens part, how close was the reference's choice? The fp32 logits of the
    # reference sequence (calibq fp32 equals transformers within ~2e-6) give the top-2 margin at
    # that step: below the dtype's logit error, the flip is a near tie, not a fault.
    r, c = [int(x) for x in (out["generated"] != ref["generated"]).nonzero()[0]]
    inputs = load_file(sys.argv[1] + "/inputs.safetensors")
    prompt_len = inputs["input_ids"].shape[1]
    seq = ref["generated"].contiguous()
    mask = seq.new_ones(seq.shape)
    mask[:, :prompt_len] = inputs["attention_mask"]
    inputs.update(input_ids=seq, attention_mask=mask)
    save_file(inputs, sys.argv[6] + "/seq.safetensors")
    subprocess.run([sys.argv[5], "logits", "--model", sys.argv[1], "--inputs", sys.argv[6] + "/seq.safetensors", "--out",
                    sys.argv[6] + "/seq-logits.safetensors", "--dtype", "fp32", "--device", "cuda"], check=True,
                   stderr=subprocess.DEVNULL)
    top = load_file(sys.argv[6] + "/seq-logits.safetensors")["logits"][r, c - 1].topk(2).values
    margin = (top[0] - top[1]).item()
    line += (f"; first at sample {r}, new token {c - prompt_len}: the reference's fp32 top-2 margin there is "
             f"{margin:.2e} ({'a near tie: below' if margin < 2 * d else 'NOT a near tie: above'} 2 x max |dlogit|)")
print(line)
PY
  done
done
