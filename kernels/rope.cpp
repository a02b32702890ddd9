// Device dispatch of the RoPE op: the CUDA kernel for CUDA tensors (when built with CUDA), the
// plain-loop reference otherwise.
#include "kernels/rope.h"

#include "kernels/cuda_dispatch.h"

#ifdef CALIBQ_WITH_CUDA
#include "kernels/rope_cuda.h"
#endif

namespace calibq::kernels {

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin) {
  if (!x.is_cuda()) return rope_cpu(x, cos, signed_sin);
#ifdef CALIBQ_WITH_CUDA
  check_rope_inputs(x, cos, signed_sin);
  const at::Tensor c = cos.contiguous(), s = signed_sin.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  cuda::RopeArgs a;
  a.x = x.data_ptr();
  for (int i = 0; i < 4; ++i) a.sx[i] = x.stride(i);
  a.cos = c.data_ptr();
  a.sin = s.data_ptr();
  a.out = out.data_ptr();
  a.B = x.size(0);
  a.H = x.size(1);
  a.T = x.size(2);
  a.D = x.size(3);
  a.type = element_type(x, "rope");
  check_cuda(cuda::launch_rope(a, current_stream(x)), "rope");
  return out;
#else
  fail_no_cuda("rope");
#endif
}

}  // namespace calibq::kernels
