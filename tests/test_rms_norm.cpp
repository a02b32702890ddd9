// The RMSNorm op: the plain-loop reference equals the tensor-op form the decoder uses on the CPU
// (transformers' LlamaRMSNorm order), and the CUDA kernel equals the reference.
#include <gtest/gtest.h>

#include "kernels/cuda_dispatch.h"
#include "kernels/rms_norm.h"

namespace calibq {
namespace {

// Two units in the last place of the dtype (sums in another order may move rstd by an ulp of
// float, which can flip one rounding of the normalized value).
void expect_close(const at::Tensor& got, const at::Tensor& want, at::ScalarType dtype, const std::string& what) {
  const double ulp = dtype == at::kFloat ? 1.2e-7 : dtype == at::kHalf ? 9.8e-4 : 7.9e-3;
  const at::Tensor g = got.cpu().to(at::kDouble), w = want.cpu().to(at::kDouble);
  EXPECT_TRUE(((g - w).abs() <= 4 * ulp * w.abs() + 1e-12).all().item<bool>())
      << what << ": max |diff| " << (g - w).abs().max().item<double>();
}

class RmsNorm : public ::testing::TestWithParam<at::DeviceType> {
 protected:
  void SetUp() override {
    if (GetParam() == at::kCUDA && !kernels::cuda_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(RmsNorm, EqualsTheTensorOpFormForEveryDtypeAndWidth) {
  at::manual_seed(31);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t n : {1, 7, 256, 4096, 5000}) {
      const at::Tensor x = (at::randn({3, 5, n}) * 3.0).to(dtype), w = (at::rand({n}) + 0.5).to(dtype);
      const double eps = 1e-6;
      const at::Tensor xf = x.to(at::kFloat);
      const at::Tensor ops = (w.to(at::kFloat) * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps)).to(dtype).to(at::kFloat)).to(dtype);
      const at::Tensor reference = kernels::rms_norm_cpu(x, w, eps);
      const std::string what = std::string(c10::toString(dtype)) + " n=" + std::to_string(n);
      expect_close(reference, ops, dtype, what + " reference vs tensor ops");
      const at::Device dev(GetParam());
      const at::Tensor got = kernels::rms_norm(x.to(dev), w.to(dev), eps);
      ASSERT_EQ(got.sizes(), x.sizes());
      ASSERT_EQ(got.device().type(), GetParam());
      expect_close(got, reference, dtype, what + " kernel vs reference");
    }
}

TEST_P(RmsNorm, MisshapenWeightIsOneClearError) {
  const at::Device dev(GetParam());
  const at::Tensor x = at::randn({2, 8}, dev);
  EXPECT_THROW(kernels::rms_norm(x, at::ones({7}, dev), 1e-6), c10::Error);
  EXPECT_THROW(kernels::rms_norm(x, at::ones({8}, dev).to(at::kHalf), 1e-6), c10::Error);
}

INSTANTIATE_TEST_SUITE_P(Devices, RmsNorm, ::testing::Values(at::kCPU, at::kCUDA),
                         [](const auto& info) { return info.param == at::kCPU ? std::string("CPU") : std::string("CUDA"); });

}  // namespace
}  // namespace calibq
