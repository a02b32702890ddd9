// Device dispatch of the RMSNorm op: the CUDA kernel for CUDA tensors (when built with CUDA), the
// plain-loop reference otherwise.
#include "kernels/rms_norm.h"

#include "kernels/cuda_dispatch.h"

#ifdef CALIBQ_WITH_CUDA
#include "kernels/rms_norm_cuda.h"
#endif

namespace calibq::kernels {

#ifdef CALIBQ_WITH_CUDA
namespace {
// The one launch behind both ops: {sum, normed}, sum undefined without delta.
std::pair<at::Tensor, at::Tensor> launch_on_cuda(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w, double eps,
                                                 const char* what) {
  const at::Tensor xc = x.contiguous(), wc = w.contiguous();
  const at::Tensor dc = delta.defined() ? delta.contiguous() : at::Tensor();
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  at::Tensor sum = delta.defined() ? at::empty(xc.sizes(), xc.options()) : at::Tensor();
  const int64_t n = xc.size(-1), rows = xc.numel() / n;
  check_cuda(cuda::launch_rms_norm(xc.data_ptr(), dc.defined() ? dc.data_ptr() : nullptr, wc.data_ptr(), out.data_ptr(),
                                   sum.defined() ? sum.data_ptr() : nullptr, rows, n, static_cast<float>(eps),
                                   element_type(x, what), current_stream(xc)),
             what);
  return {sum, out};
}
}  // namespace
#endif

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  if (!x.is_cuda()) return rms_norm_cpu(x, w, eps);
#ifdef CALIBQ_WITH_CUDA
  check_rms_norm_inputs(x, w);
  return launch_on_cuda(x, at::Tensor(), w, eps, "rms_norm").second;
#else
  fail_no_cuda("rms_norm");
#endif
}

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w, double eps) {
  if (!x.is_cuda()) return add_rms_norm_cpu(x, delta, w, eps);
#ifdef CALIBQ_WITH_CUDA
  check_add_rms_norm_inputs(x, delta, w);
  return launch_on_cuda(x, delta, w, eps, "add_rms_norm");
#else
  fail_no_cuda("add_rms_norm");
#endif
}

}  // namespace calibq::kernels
