// Rotary position embedding applied to one [B, H, T, D] tensor (queries or keys):
//   out = x * cos + roll(x, D / 2) * signed_sin
// with cos, signed_sin [B, 1, T, D] in x's dtype (signed_sin: sin with its first half negated,
// so that roll(x) * signed_sin = rotate_half(x) * sin). Rounded as the tensor ops round it
// (x * cos to the dtype, then the product added in float and rounded once, as addcmul does),
// so that the CUDA kernel and the three-op form give the same bits. The kernel is one launch
// where the tensor ops took three (mul, roll, addcmul) and a copy for a strided x.
#pragma once

#include <ATen/ATen.h>

namespace calibq::kernels {

// x: [B, H, T, D] (any strides, D elements contiguous or not); cos, signed_sin: [B, 1, T, D].
// Returns a contiguous [B, H, T, D] tensor on x's device.
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin);

// The plain-loop reference (the specification), CPU only.
at::Tensor rope_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin);

// The shape, dtype and device checks both paths make (one clear error naming the sizes).
void check_rope_inputs(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin);

}  // namespace calibq::kernels
