// Plain-loop reference of the RMSNorm op (rms_norm.h): the specification the CUDA kernel is tested against.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>

#include "kernels/cuda_dispatch.h"
#include "kernels/rms_norm.h"

namespace calibq::kernels {

namespace {

template <typename T>
void rms_norm_loops(const T* x, const T* w, T* out, int64_t rows, int64_t n, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(static_cast<float>(xr[i])) * static_cast<float>(xr[i]);
    const float rstd = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) {
      const T normalized = static_cast<T>(static_cast<float>(xr[i]) * rstd);
      out[r * n + i] = static_cast<T>(static_cast<float>(w[i]) * static_cast<float>(normalized));
    }
  }
}

}  // namespace

void check_rms_norm_inputs(const at::Tensor& x, const at::Tensor& w) {
  check_float_dtype(x, "rms_norm");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, "rms_norm: x needs a non-empty last dimension, got ", x.sizes());
  TORCH_CHECK(w.dim() == 1 && w.size(0) == x.size(-1), "rms_norm: the weight must be [", x.size(-1), "], got ", w.sizes());
  TORCH_CHECK(w.scalar_type() == x.scalar_type(), "rms_norm: the weight must have x's dtype ", x.scalar_type(), ", got ",
              w.scalar_type());
  TORCH_CHECK(w.device() == x.device(), "rms_norm: the weight must be on x's device");
}

void check_add_rms_norm_inputs(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w) {
  check_rms_norm_inputs(x, w);
  TORCH_CHECK(delta.sizes() == x.sizes() && delta.scalar_type() == x.scalar_type() && delta.device() == x.device(),
              "add_rms_norm: delta must match x (", x.sizes(), ", ", x.scalar_type(), "), got ", delta.sizes(), ", ",
              delta.scalar_type());
}

std::pair<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w, double eps) {
  check_add_rms_norm_inputs(x, delta, w);
  // x + delta as LibTorch's add rounds it (the sum in float, one rounding), written out: the
  // reference must not lean on the op it stands for.
  const at::Tensor sum = (x.cpu().to(at::kFloat) + delta.cpu().to(at::kFloat)).to(x.scalar_type()).contiguous();
  return {sum, rms_norm_cpu(sum, w, eps)};
}

at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& w, double eps) {
  check_rms_norm_inputs(x, w);
  const at::Tensor xc = x.cpu().contiguous(), wc = w.cpu().contiguous();
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  const int64_t n = xc.size(-1), rows = xc.numel() / n;
  switch (x.scalar_type()) {
    case at::kFloat: rms_norm_loops(xc.data_ptr<float>(), wc.data_ptr<float>(), out.data_ptr<float>(), rows, n, eps); break;
    case at::kHalf:
      rms_norm_loops(xc.data_ptr<c10::Half>(), wc.data_ptr<c10::Half>(), out.data_ptr<c10::Half>(), rows, n, eps);
      break;
    case at::kBFloat16:
      rms_norm_loops(xc.data_ptr<c10::BFloat16>(), wc.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(), rows, n, eps);
      break;
    default: break;  // rejected by check_rms_norm_inputs
  }
  return out;
}

}  // namespace calibq::kernels
