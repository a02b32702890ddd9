// Full attention for prefill and vision towers: PyTorch's fused scaled_dot_product_attention
// on CUDA (LibTorch 2.x: flash or memory-efficient kernels, which never hold the [T, T]
// scores: a 13-tile InternVL prefill of 16 sequences would need ~24 GB for them), the
// explicit softmax(q kᵀ · scale + mask) v elsewhere (the CPU reference path, whose order of
// operations the parity fixtures were checked with).
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

namespace calibq {

// q, k, v [B, heads, T, d] (k/v already repeated for GQA). mask: additive, broadcast to
// [B, heads, Tq, Tk], or undefined (with causal: the causal mask; else none). softmax_in_float:
// the explicit path takes the softmax in float32 (CLIP, LLaMA) rather than in q's dtype.
inline at::Tensor full_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                 const at::Tensor& mask, bool causal, bool softmax_in_float) {
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda())
    return at::scaled_dot_product_attention(q, k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt, 0.0,
                                            causal && !mask.defined(), scale);
#endif
  at::Tensor s = at::matmul(q, k.transpose(-1, -2)) * scale;
  if (mask.defined()) {
    s = s + mask;
  } else if (causal) {
    const int64_t tq = q.size(-2), tk = k.size(-2);
    s = s.masked_fill(at::ones({tq, tk}, q.options().dtype(at::kBool)).triu(tk - tq + 1), -INFINITY);
  }
  at::Tensor p = softmax_in_float ? at::softmax(s.to(at::kFloat), -1).to(q.scalar_type()) : at::softmax(s, -1);
  return at::matmul(p, v);
}

}  // namespace calibq
