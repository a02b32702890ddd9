// RMSNorm over the last dimension, rounded as transformers' LlamaRMSNorm rounds it:
//   out = w * dtype(x_f / sqrt(mean(x_f^2) + eps))
// (the normalized value cast to x's dtype, then multiplied by the weight in that dtype). On CUDA
// one block per row: LibTorch's fused rms_norm ran a 4096-wide row on a single block for ~10 us,
// twice per layer of a batch-1 decode step.
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace calibq::kernels {

// x: [..., N]; w: [N] in x's dtype. Returns a contiguous tensor of x's shape on x's device.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);

// The plain-loop reference (the specification), CPU only.
at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& w, double eps);

// The residual add before a norm, fused: sum = x + delta rounded to x's dtype (as `x + delta`
// rounds it) and rms_norm(sum, w, eps); returns {sum, normed}, both contiguous. On CUDA one
// kernel where the add and the norm took two (each a few microseconds, twice per layer).
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w, double eps);
// The reference: the add, then rms_norm_cpu.
std::pair<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w, double eps);

// The checks both paths make (one clear error naming the sizes).
void check_rms_norm_inputs(const at::Tensor& x, const at::Tensor& w);
void check_add_rms_norm_inputs(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w);

}  // namespace calibq::kernels
