// RMSNorm over the last dimension, rounded as transformers' LlamaRMSNorm rounds it:
//   out = w * dtype(x_f / sqrt(mean(x_f^2) + eps))
// (the normalized value cast to x's dtype, then multiplied by the weight in that dtype). On CUDA
// one block per row: LibTorch's fused rms_norm ran a 4096-wide row on a single block for ~10 us,
// twice per layer of a batch-1 decode step.
#pragma once

#include <ATen/ATen.h>

namespace calibq::kernels {

// x: [..., N]; w: [N] in x's dtype. Returns a contiguous tensor of x's shape on x's device.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);

// The plain-loop reference (the specification), CPU only.
at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& w, double eps);

// The checks both paths make (one clear error naming the sizes).
void check_rms_norm_inputs(const at::Tensor& x, const at::Tensor& w);

}  // namespace calibq::kernels
