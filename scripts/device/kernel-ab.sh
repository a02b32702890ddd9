#!/usr/bin/env bash
# HERE (nvcc compiles, no GPU needed): builds benchmarks/decode_attention_ab.cu against the
# decode-attention kernel files of two revisions and packs both binaries with a runner into
# .device-exp/kernel-ab/ (ignored), so that one `device` call, carrying only .device-exp,
# compares them side by side without building calibq there (a build costs ~200 s of the
# session's device time):
#   bash scripts/device/kernel-ab.sh [REV_A [REV_B]]     # default: HEAD against the working tree
#   then on the device: bash .device-exp/kernel-ab/run.sh [BATCH ...]   # default batch 630
# Revisions from 5c39f5b on (the interface the benchmark calls).
set -euo pipefail
cd "$(dirname "$0")/../.."
rev_a=${1:-HEAD}; rev_b=${2:-WORKTREE}
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "kernel-ab.sh: no nvcc" >&2; exit 2; }
out=.device-exp/kernel-ab
rm -rf "$out"; mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
files="kernels/decode_attention_cuda.cu kernels/decode_attention_cuda.h kernels/cuda_types.h kernels/cuda_convert.cuh"
pids=()
for side in a b; do
  rev=$rev_a; [ $side = b ] && rev=$rev_b
  mkdir -p "$tmp/$side/kernels"
  for f in $files; do
    if [ "$rev" = WORKTREE ]; then cp "$f" "$tmp/$side/$f"; else git show "$rev:$f" > "$tmp/$side/$f"; fi
  done
  label=$rev; [ "$rev" = WORKTREE ] || label="$rev ($(git rev-parse --short "$rev"))"
  echo "$label" > "$out/label_$side"
  "$nvcc" -O3 -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -I"$tmp/$side" \
    -DKERNEL_CU="\"$tmp/$side/kernels/decode_attention_cuda.cu\"" benchmarks/decode_attention_ab.cu \
    -o "$out/bench_$side" > "$tmp/build_$side.log" 2>&1 &
  pids+=($!)
done
for i in 0 1; do wait "${pids[$i]}" || { cat "$tmp"/build_*.log; echo "kernel-ab.sh: build failed" >&2; exit 1; }; done
xz -9 -T2 "$out/bench_a" "$out/bench_b"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine: both builds at each batch, alternating, twice; then their outputs compared.
set -uo pipefail
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for v in a b; do xz -dkf "bench_$v.xz"; chmod +x "bench_$v"; done
for B in ${*:-630}; do
  for r in 1 2; do
    for v in a b; do echo "== $(cat label_$v)"; ./bench_$v "$B" "/tmp/kernel-ab-$v-$B.bin" || exit 1; done
  done
  ./bench_a compare "/tmp/kernel-ab-a-$B.bin" "/tmp/kernel-ab-b-$B.bin"
done
RUN
chmod +x "$out/run.sh"
echo "kernel-ab.sh: $(cat $out/label_a) against $(cat $out/label_b) in $out ($(du -sh $out | cut -f1)); on the device: bash $out/run.sh [BATCH ...]"
