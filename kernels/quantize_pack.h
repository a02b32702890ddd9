// Quantize-and-pack of one K or V segment after prefill, in the layout the decode kernels
// read (decode_attention.h's PackedKV). The specification is range_quant.h's: for b bits,
// L = 2^b - 1 levels; per group (a channel over the segment's tokens, or a token over its
// channels) lo = clip · min, hi = clip · max, s = (hi - lo) / L (1 where hi == lo),
// z = -lo / s, c = round_half_even(clamp(x / s + z, 0, L)) (0 where hi == lo); codes packed
// along D in storage_bits(b) slots. Every step is the same float32 operation as the tensor-op
// path, so the codes are bit-identical to it.
#pragma once

#include <ATen/ATen.h>

#include "kernels/decode_attention.h"

namespace calibq::kernels {

// x: [B, H, N, D] float32, float16 or bfloat16; bits 1..8; clip > 0.
PackedKV quantize_pack(const at::Tensor& x, int bits, ScaleAxis axis, double clip);
// The plain-loop reference, CPU only.
PackedKV quantize_pack_cpu(const at::Tensor& x, int bits, ScaleAxis axis, double clip);

}  // namespace calibq::kernels
