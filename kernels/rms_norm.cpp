// Device dispatch of the RMSNorm op: the CUDA kernel for CUDA tensors (when built with CUDA), the
// plain-loop reference otherwise.
#include "kernels/rms_norm.h"

#include "kernels/cuda_dispatch.h"

#ifdef CALIBQ_WITH_CUDA
#include "kernels/rms_norm_cuda.h"
#endif

namespace calibq::kernels {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  if (!x.is_cuda()) return rms_norm_cpu(x, w, eps);
#ifdef CALIBQ_WITH_CUDA
  check_rms_norm_inputs(x, w);
  const at::Tensor xc = x.contiguous(), wc = w.contiguous();
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  const int64_t n = xc.size(-1), rows = xc.numel() / n;
  check_cuda(cuda::launch_rms_norm(xc.data_ptr(), nullptr, wc.data_ptr(), out.data_ptr(), nullptr, rows, n, static_cast<float>(eps),
                                   element_type(x, "rms_norm"), current_stream(xc)),
             "rms_norm");
  return out;
#else
  fail_no_cuda("rms_norm");
#endif
}

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w, double eps) {
  if (!x.is_cuda()) return add_rms_norm_cpu(x, delta, w, eps);
#ifdef CALIBQ_WITH_CUDA
  check_add_rms_norm_inputs(x, delta, w);
  const at::Tensor xc = x.contiguous(), dc = delta.contiguous(), wc = w.contiguous();
  at::Tensor sum = at::empty(xc.sizes(), xc.options()), out = at::empty(xc.sizes(), xc.options());
  const int64_t n = xc.size(-1), rows = xc.numel() / n;
  check_cuda(cuda::launch_rms_norm(xc.data_ptr(), dc.data_ptr(), wc.data_ptr(), out.data_ptr(), sum.data_ptr(), rows, n,
                                   static_cast<float>(eps), element_type(x, "add_rms_norm"), current_stream(xc)),
             "add_rms_norm");
  return {sum, out};
#else
  fail_no_cuda("add_rms_norm");
#endif
}

}  // namespace calibq::kernels
