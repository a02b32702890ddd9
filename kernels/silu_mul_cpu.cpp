// Plain-loop reference of the SwiGLU gate (silu_mul.h): the specification the CUDA kernel is tested against.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>

#include "kernels/cuda_dispatch.h"
#include "kernels/silu_mul.h"

namespace calibq::kernels {

namespace {

template <typename T>
void silu_mul_loops(const T* gu, T* out, int64_t rows, int64_t inter) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < inter; ++i) {
      const float g = static_cast<float>(gu[r * 2 * inter + i]);
      const T silu = static_cast<T>(g / (1.f + std::exp(-g)));
      out[r * inter + i] = static_cast<T>(static_cast<float>(silu) * static_cast<float>(gu[r * 2 * inter + inter + i]));
    }
}

}  // namespace

void check_silu_mul_inputs(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0,
              "silu_mul: the gate/up tensor needs an even last dimension (gate then up), got ", gate_up.sizes());
  check_float_dtype(gate_up, "silu_mul");
}

at::Tensor silu_mul_cpu(const at::Tensor& gate_up) {
  check_silu_mul_inputs(gate_up);
  const at::Tensor gu = gate_up.cpu().contiguous();
  auto sizes = gu.sizes().vec();
  const int64_t inter = sizes.back() / 2, rows = inter == 0 ? 0 : gu.numel() / (2 * inter);
  sizes.back() = inter;
  at::Tensor out = at::empty(sizes, gu.options());
  switch (gu.scalar_type()) {
    case at::kFloat: silu_mul_loops(gu.data_ptr<float>(), out.data_ptr<float>(), rows, inter); break;
    case at::kHalf: silu_mul_loops(gu.data_ptr<c10::Half>(), out.data_ptr<c10::Half>(), rows, inter); break;
    case at::kBFloat16: silu_mul_loops(gu.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(), rows, inter); break;
    default: break;  // rejected above
  }
  return out;
}

}  // namespace calibq::kernels
