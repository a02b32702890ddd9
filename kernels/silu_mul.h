// SwiGLU's gate: silu(gate) * up from one [..., 2 I] tensor holding gate then up (the fused
// gate/up projection's output), rounded as the two tensor ops round it (silu to the dtype, then
// the product). On CUDA one kernel where silu, mul and their temporaries took two.
#pragma once

#include <ATen/ATen.h>

namespace calibq::kernels {

// gate_up: [..., 2 I] (last dimension contiguous). Returns a contiguous [..., I] tensor.
at::Tensor silu_mul(const at::Tensor& gate_up);

// The plain-loop reference (the specification), CPU only.
at::Tensor silu_mul_cpu(const at::Tensor& gate_up);

void check_silu_mul_inputs(const at::Tensor& gate_up);

}  // namespace calibq::kernels
