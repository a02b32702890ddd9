// The SwiGLU gate: the plain-loop reference equals the tensor ops the decoder uses on the CPU
// (silu of the gate half, times the up half), and the CUDA kernel equals the reference.
#include <gtest/gtest.h>

#include "kernels/cuda_dispatch.h"
#include "kernels/silu_mul.h"

namespace calibq {
namespace {

class SiluMul : public ::testing::TestWithParam<at::DeviceType> {
 protected:
  void SetUp() override {
    if (GetParam() == at::kCUDA && !kernels::cuda_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(SiluMul, EqualsSiluTimesUpForEveryDtype) {
  at::manual_seed(37);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t inter : {1, 5, 448}) {
      const at::Tensor gu = (at::randn({2, 3, 2 * inter}) * 4.0).to(dtype);
      const at::Tensor gate = gu.narrow(-1, 0, inter).to(at::kFloat), up = gu.narrow(-1, inter, inter).to(at::kFloat);
      const at::Tensor ops = (at::silu(gate).to(dtype).to(at::kFloat) * up).to(dtype);  // the two ops' roundings
      const at::Tensor reference = kernels::silu_mul_cpu(gu);
      const double ulp = dtype == at::kFloat ? 1.2e-7 : dtype == at::kHalf ? 9.8e-4 : 7.9e-3;
      const std::string what = std::string(c10::toString(dtype)) + " I=" + std::to_string(inter);
      auto close = [&](const at::Tensor& a, const at::Tensor& b) {
        const at::Tensor x = a.cpu().to(at::kDouble), y = b.cpu().to(at::kDouble);
        return ((x - y).abs() <= 4 * ulp * y.abs() + 1e-30).all().item<bool>();
      };
      EXPECT_TRUE(close(reference, ops)) << what << " reference vs silu * up";
      const at::Tensor got = kernels::silu_mul(gu.to(at::Device(GetParam())));
      ASSERT_EQ(got.size(-1), inter);
      EXPECT_TRUE(close(got, reference)) << what << " kernel vs reference";
    }
}

TEST_P(SiluMul, OddWidthIsOneClearError) {
  EXPECT_THROW(kernels::silu_mul(at::randn({2, 7}, at::Device(GetParam()))), c10::Error);
}

INSTANTIATE_TEST_SUITE_P(Devices, SiluMul, ::testing::Values(at::kCPU, at::kCUDA),
                         [](const auto& info) { return info.param == at::kCPU ? std::string("CPU") : std::string("CUDA"); });

}  // namespace
}  // namespace calibq
