// Decode attention over a KV cache in segments, with a low-bit segment attended on its codes
// (post-scaling, paper.md): one new query token per sequence against
//   - any number of full-precision segments (system prompt, text, generated tokens), and
//   - at most one packed segment (the visual tokens): bit-packed codes c with a scale s and
//     zero-point z per channel (over the segment's tokens) or per token (over its channels),
//     x̂ = s (c - z). Scores are taken on the codes and scaled afterwards,
//       q · x̂ = (q ⊙ s) · c - (q ⊙ s) · z            (keys per channel)
//       q · x̂ = s_n (q · c_n - z_n Σ q)               (keys per token),
//     and the weighted sum of values likewise; CalibQuant's calibration maps each row's
//     visual scores from [m, M] onto [m + a, M + b] before the one softmax over all segments.
// GQA: query head h' meets KV head h' / G (G = Hq / H), as transformers' repeat_kv pairs them;
// K/V are never repeated. The kernels know no cache object: the cache hands them tensors.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace calibq::kernels {

enum class ScaleAxis { Channel, Token };

// One packed K or V segment.
struct PackedKV {
  at::Tensor packed;       // [B, H, N, packed_bytes(D, bits)] uint8, codes packed along D (pack_bits.h)
  at::Tensor scale, zero;  // float32: Channel [B, H, 1, D]; Token [B, H, N, 1]
  ScaleAxis axis = ScaleAxis::Channel;
  int bits = 1;            // storage bits: 1, 2, 4 or 8
  // Values only, optional: 1-bit codes as token-major words (token_words below). The CUDA
  // kernels make them when absent; a cache makes them once, after prefill.
  at::Tensor token_words;
};

// 1-bit codes [.., N, D/8] (packed along D) -> int32 words [.., ceil(N/32), D] holding 32
// consecutive tokens of one channel (bit i: token 32 w + i), the layout the tensor-core path
// reads values in. D must be a multiple of 8.
at::Tensor token_words(const at::Tensor& packed, int64_t tokens);
at::Tensor token_words_cpu(const at::Tensor& packed, int64_t tokens);

// One full-precision segment.
struct FullKV {
  // [B, H, L, D] in the query's dtype; rows of D contiguous, and (b, h) rows evenly strided
  // (a view of the first L tokens of a larger buffer is taken as it is, without a copy).
  at::Tensor k, v;
  at::Tensor mask;   // [B, L] float32 added to the scores (0 or -inf), or undefined
  // int32 [1] on q's device: how many of the L tokens are valid (the rest are ignored), read
  // by the kernel when it runs, so that a CUDA graph captured once serves a segment that grows
  // between replays (L is then the buffer's capacity). Undefined: all L.
  at::Tensor length;
};

struct DecodeAttentionInputs {
  at::Tensor q;                 // [B, Hq, D]: float32, float16 or bfloat16
  std::vector<FullKV> full;
  bool has_packed = false;
  PackedKV key, value;          // the packed segment (has_packed); D and N shared by both
  double scale = 0;             // multiplies q · k (e.g. 1/sqrt(D))
  bool calibrate = false;       // CalibQuant's calibration of the packed segment's scores
  double calib_a = 0, calib_b = 0;
  int64_t splits = 0;           // sequence splits per segment (flash decoding); 0: chosen from the shapes
};

// [B, Hq, D] in q's dtype: the CUDA kernels for CUDA tensors, the reference otherwise.
at::Tensor decode_attention(const DecodeAttentionInputs& in);
// The plain-loop reference (the specification): dequantize, attend in double precision.
at::Tensor decode_attention_cpu(const DecodeAttentionInputs& in);
// Checks shapes, dtypes and devices; throws (TORCH_CHECK) naming the tensor at fault.
void check_decode_attention_inputs(const DecodeAttentionInputs& in);
// Whether the CUDA kernels take these shapes (GQA group <= 8, head_dim <= 256).
bool decode_attention_cuda_supports(int64_t query_heads, int64_t kv_heads, int64_t head_dim);

}  // namespace calibq::kernels
