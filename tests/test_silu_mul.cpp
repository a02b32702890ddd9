// The SwiGLU gate: the plain-loop reference equals the tensor ops the decoder uses on the CPU
// (silu of the gate half, times the up half), and the CUDA kernel equals the reference.
#include <gtest/gtest.h>

#include "kernels/cuda_dispatch.h"
#include "kernels/silu_mul.h"
#include "tests/device_test.h"

namespace calibq {
namespace {

using SiluMul = test::OnEachDevice;

TEST_P(SiluMul, EqualsSiluTimesUpForEveryDtype) {
  at::manual_seed(37);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    // Widths for the kernel's 16-byte path (448, 4104: several blocks per row), for its one-element
    // path (1, 5) and for both by dtype (12: four floats per load, not eight halves).
    for (int64_t inter : {1, 5, 12, 448, 4104}) {
      const at::Tensor gu = (at::randn({2, 3, 2 * inter}) * 4.0).to(dtype);
      const at::Tensor gate = gu.narrow(-1, 0, inter).to(at::kFloat), up = gu.narrow(-1, inter, inter).to(at::kFloat);
      const at::Tensor ops = (at::silu(gate).to(dtype).to(at::kFloat) * up).to(dtype);  // the two ops' roundings
      const at::Tensor reference = kernels::silu_mul_cpu(gu);
      const std::string what = std::string(c10::toString(dtype)) + " I=" + std::to_string(inter);
      test::expect_rounded_alike(reference, ops, at::zeros_like(ops), dtype, 4, 0.02, what + " reference vs silu * up");
      const at::Tensor got = kernels::silu_mul(gu.to(at::Device(GetParam())));
      ASSERT_EQ(got.size(-1), inter);
      test::expect_rounded_alike(got, reference, at::zeros_like(reference), dtype, 4, 0.02, what + " kernel vs reference");
    }
}

TEST_P(SiluMul, OddWidthIsOneClearError) {
  EXPECT_THROW(kernels::silu_mul(at::randn({2, 7}, at::Device(GetParam()))), c10::Error);
}

CALIBQ_ON_EACH_DEVICE(SiluMul);

}  // namespace
}  // namespace calibq
