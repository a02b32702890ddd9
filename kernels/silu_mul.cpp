// Device dispatch of the SwiGLU gate: the CUDA kernel for CUDA tensors (when built with CUDA),
// the plain-loop reference otherwise.
#include "kernels/silu_mul.h"

#include "kernels/cuda_dispatch.h"

#ifdef CALIBQ_WITH_CUDA
#include "kernels/silu_mul_cuda.h"
#endif

namespace calibq::kernels {

at::Tensor silu_mul(const at::Tensor& gate_up) {
  if (!gate_up.is_cuda()) return silu_mul_cpu(gate_up);
#ifdef CALIBQ_WITH_CUDA
  check_silu_mul_inputs(gate_up);
  const at::Tensor gu = gate_up.contiguous();
  auto sizes = gu.sizes().vec();
  const int64_t inter = sizes.back() / 2, rows = inter == 0 ? 0 : gu.numel() / (2 * inter);
  sizes.back() = inter;
  at::Tensor out = at::empty(sizes, gu.options());
  check_cuda(cuda::launch_silu_mul(gu.data_ptr(), out.data_ptr(), rows, inter, element_type(gu, "silu_mul"), current_stream(gu)), "silu_mul");
  return out;
#else
  fail_no_cuda("silu_mul");
#endif
}

}  // namespace calibq::kernels
