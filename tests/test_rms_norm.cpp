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
    for (int64_t n : {1, 7, 256, 4096, 5000}) {
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

TEST_P(RmsNorm, MisshapenWeightIsOneClearError) {
  const at::Device dev(GetParam());
  const at::Tensor x = at::randn({2, 8}, dev);
  EXPECT_THROW(kernels::rms_norm(x, at::ones({7}, dev), 1e-6), c10::Error);
  EXPECT_THROW(kernels::rms_norm(x, at::ones({8}, dev).to(at::kHalf), 1e-6), c10::Error);
}

CALIBQ_ON_EACH_DEVICE(RmsNorm);

}  // namespace
}  // namespace calibq
