// Plain-loop reference of the RoPE op (rope.h): the specification the CUDA kernel is tested against.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "kernels/cuda_dispatch.h"
#include "kernels/rope.h"

namespace calibq::kernels {

namespace {

template <typename T>
void rope_loops(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& ssin, at::Tensor& out) {
  const int64_t B = x.size(0), H = x.size(1), T_ = x.size(2), D = x.size(3), half = D / 2;
  auto xa = x.accessor<T, 4>();
  auto ca = cos.accessor<T, 4>();
  auto sa = ssin.accessor<T, 4>();
  auto oa = out.accessor<T, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T_; ++t)
        for (int64_t d = 0; d < D; ++d) {
          const float rotated = static_cast<float>(xa[b][h][t][(d + half) % D]);
          // x * cos rounded to the dtype (a separate op in the three-op form), then
          // addcmul's float sum rounded once.
          const float first = static_cast<float>(static_cast<T>(static_cast<float>(xa[b][h][t][d]) * static_cast<float>(ca[b][0][t][d])));
          oa[b][h][t][d] = static_cast<T>(first + rotated * static_cast<float>(sa[b][0][t][d]));
        }
}

}  // namespace

void check_rope_inputs(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin) {
  check_float_dtype(x, "rope");
  TORCH_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "rope: x must be [B, H, T, D] with D even, got ", x.sizes());
  TORCH_CHECK(cos.dim() == 4 && cos.size(0) == x.size(0) && cos.size(1) == 1 && cos.size(2) == x.size(2) &&
                  cos.size(3) == x.size(3) && signed_sin.sizes() == cos.sizes(),
              "rope: cos and signed_sin must be [B, 1, T, D] = [", x.size(0), ", 1, ", x.size(2), ", ", x.size(3),
              "], got ", cos.sizes(), " and ", signed_sin.sizes());
  TORCH_CHECK(cos.scalar_type() == x.scalar_type() && signed_sin.scalar_type() == x.scalar_type(),
              "rope: cos and signed_sin must have x's dtype ", x.scalar_type());
  TORCH_CHECK(cos.device() == x.device() && signed_sin.device() == x.device(), "rope: cos and signed_sin must be on x's device");
}

at::Tensor rope_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin) {
  check_rope_inputs(x, cos, signed_sin);
  const at::Tensor xc = x.cpu(), cc = cos.cpu(), sc = signed_sin.cpu();
  at::Tensor out = at::empty(x.sizes(), xc.options().memory_format(at::MemoryFormat::Contiguous));
  switch (x.scalar_type()) {
    case at::kFloat: rope_loops<float>(xc, cc, sc, out); break;
    case at::kHalf: rope_loops<c10::Half>(xc, cc, sc, out); break;
    case at::kBFloat16: rope_loops<c10::BFloat16>(xc, cc, sc, out); break;
    default: break;  // rejected by check_rope_inputs
  }
  return out;
}

}  // namespace calibq::kernels
