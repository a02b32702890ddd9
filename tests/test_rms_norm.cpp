// The RMSNorm op: the plain-loop reference equals the tensor-op form the decoder uses on the CPU
// (transformers' LlamaRMSNorm order), and the CUDA kernel equals the reference.
#include <gtest/gtest.h>

#include "kernels/cuda_dispatch.h"
#include "kernels/rms_norm.h"
#include "tests/device_test.h"

namespace calibq {
namespace {

using RmsNorm = test::OnEachDevice;

TEST_P(RmsNorm, EqualsTheTensorOpFormForEveryDtypeAndWidth) {
  at::manual_seed(31);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t n : {1, 7, 256, 4096, 5000, 9000}) {  // the CUDA kernel's three paths: <= 4,096, <= 8,192, wider
      const at::Tensor x = (at::randn({3, 5, n}) * 3.0).to(dtype), w = (at::rand({n}) + 0.5).to(dtype);
      const double eps = 1e-6;
      const at::Tensor xf = x.to(at::kFloat);
      const at::Tensor ops = (w.to(at::kFloat) * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps)).to(dtype).to(at::kFloat)).to(dtype);
      const at::Tensor reference = kernels::rms_norm_cpu(x, w, eps);
      const std::string what = std::string(c10::toString(dtype)) + " n=" + std::to_string(n);
      test::expect_rounded_alike(reference, ops, at::zeros_like(ops), dtype, 4, 0.02, what + " reference vs tensor ops");
      const at::Device dev(GetParam());
      const at::Tensor got = kernels::rms_norm(x.to(dev), w.to(dev), eps);
      ASSERT_EQ(got.sizes(), x.sizes());
      ASSERT_EQ(got.device().type(), GetParam());
      test::expect_rounded_alike(got, reference, at::zeros_like(reference), dtype, 4, 0.02, what + " kernel vs reference");
    }
}

// The residual add fused before the norm: the sum exactly as `x + delta` rounds it (the decoder
// adds on the CPU and on CUDA that way before), the norm as rms_norm's of that sum.
TEST_P(RmsNorm, AddThenNormEqualsTheAddAndTheNorm) {
  at::manual_seed(37);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t n : {1, 7, 4096, 5000, 9000}) {
      const at::Tensor x = (at::randn({3, 2, n}) * 3.0).to(dtype), delta = (at::randn({3, 2, n}) * 0.7).to(dtype);
      const at::Tensor w = (at::rand({n}) + 0.5).to(dtype);
      const double eps = 1e-5;
      const std::string what = std::string(c10::toString(dtype)) + " n=" + std::to_string(n);
      const auto [ref_sum, ref_out] = kernels::add_rms_norm_cpu(x, delta, w, eps);
      // The reference against the ops it stands for (float32 only: LibTorch 1.13's CPU add
      // of 16-bit tensors rounds per op the same way, but is not what is being specified).
      if (dtype == at::kFloat) EXPECT_TRUE(at::equal(ref_sum, x + delta)) << what;
      EXPECT_TRUE(at::equal(ref_out, kernels::rms_norm_cpu(ref_sum, w, eps))) << what;
      const at::Device dev(GetParam());
      const auto [sum, out] = kernels::add_rms_norm(x.to(dev), delta.to(dev), w.to(dev), eps);
      ASSERT_EQ(sum.sizes(), x.sizes());
      ASSERT_EQ(out.device().type(), GetParam());
      EXPECT_TRUE(at::equal(sum.cpu(), ref_sum)) << what << " sum";
      if (GetParam() == at::kCUDA) EXPECT_TRUE(at::equal(sum.cpu(), (x.to(dev) + delta.to(dev)).cpu())) << what << " CUDA add";
      test::expect_rounded_alike(out, ref_out, at::zeros_like(ref_out), dtype, 4, 0.02, what + " kernel vs reference");
    }
  const at::Device dev(GetParam());
  EXPECT_THROW(kernels::add_rms_norm(at::randn({2, 8}, dev), at::randn({2, 7}, dev), at::ones({8}, dev), 1e-6), c10::Error);
}

TEST_P(RmsNorm, MisshapenWeightIsOneClearError) {
  const at::Device dev(GetParam());
  const at::Tensor x = at::randn({2, 8}, dev);
  EXPECT_THROW(kernels::rms_norm(x, at::ones({7}, dev), 1e-6), c10::Error);
  EXPECT_THROW(kernels::rms_norm(x, at::ones({8}, dev).to(at::kHalf), 1e-6), c10::Error);
}

CALIBQ_ON_EACH_DEVICE(RmsNorm);

}  // namespace
}  // namespace calibq
