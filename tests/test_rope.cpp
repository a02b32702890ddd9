// The RoPE op: the plain-loop reference equals the three-op form the decoder uses on the CPU
// (x * cos, roll, addcmul), and the CUDA kernel equals the reference, on strided inputs as the
// decoder hands them (a head-split view of a fused q/k/v projection).
#include <gtest/gtest.h>

#include "kernels/cuda_dispatch.h"
#include "kernels/rope.h"
#include "tests/device_test.h"

namespace calibq {
namespace {

using Rope = test::OnEachDevice;

TEST_P(Rope, EqualsTheThreeOpFormOnStridedViews) {
  at::manual_seed(29);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (int64_t D : {16, 64, 128}) {
      const int64_t B = 2, H = 3, KVH = 1, T = 5;
      // [B, T, (H + 2 KVH) D] as a fused projection, q taken as the decoder takes it.
      const at::Tensor qkv = at::randn({B, T, (H + 2 * KVH) * D}).to(dtype);
      const at::Tensor q = qkv.narrow(-1, 0, H * D).view({B, T, H, D}).transpose(1, 2);
      const at::Tensor angle = at::rand({B, 1, T, D / 2}) * 50.0;
      const at::Tensor emb = at::cat({angle, angle}, -1);
      const at::Tensor cos = emb.cos().to(dtype), sin = emb.sin().to(dtype);
      const at::Tensor ssin = at::cat({-sin.narrow(-1, 0, D / 2), sin.narrow(-1, D / 2, D / 2)}, -1);
      const std::string what = std::string(c10::toString(dtype)) + " D=" + std::to_string(D);

      const at::Tensor rolled = at::roll(q, {D / 2}, {-1});
      const at::Tensor scale = (q.to(at::kDouble) * cos.to(at::kDouble)).abs() + (rolled.to(at::kDouble) * ssin.to(at::kDouble)).abs();
      // The three-op form with addcmul's arithmetic (float sum, one rounding): LibTorch 1.13
      // has no CPU addcmul for float16, so it is written out; on CUDA the real ops are compared.
      const at::Tensor three_ops =
          ((q * cos).to(at::kFloat) + rolled.to(at::kFloat) * ssin.to(at::kFloat)).to(dtype);
      const at::Tensor reference = kernels::rope_cpu(q, cos, ssin);
      test::expect_rounded_alike(reference, three_ops, scale, dtype, 2, 0.02, what + " reference vs three ops");
      // rotate_half as transformers writes it, in float: the formula itself.
      const at::Tensor qf = q.to(at::kFloat), x1 = qf.narrow(-1, 0, D / 2), x2 = qf.narrow(-1, D / 2, D / 2);
      const at::Tensor hf = qf * cos.to(at::kFloat) + at::cat({-x2, x1}, -1) * sin.to(at::kFloat);
      EXPECT_LE((reference.to(at::kFloat) - hf).abs().max().item<double>(),
                (dtype == at::kFloat ? 1e-5 : dtype == at::kHalf ? 2e-2 : 1e-1)) << what;

      const at::Device dev(GetParam());
      const at::Tensor got = kernels::rope(q.to(dev), cos.to(dev), ssin.to(dev));
      ASSERT_TRUE(got.is_contiguous());
      ASSERT_EQ(got.device().type(), GetParam());
      test::expect_rounded_alike(got, reference, scale, dtype, 2, 0.02, what + " kernel vs reference");
      if (GetParam() == at::kCUDA) {
        const at::Tensor qd = q.to(dev), cd = cos.to(dev), sd = ssin.to(dev);
        const at::Tensor ops = at::addcmul(qd * cd, at::roll(qd, {D / 2}, {-1}), sd);
        test::expect_rounded_alike(got, ops, scale, dtype, 2, 0.02, what + " kernel vs the CUDA three ops");
      }
    }
}

TEST_P(Rope, MisshapenTablesAreOneClearError) {
  const at::Device dev(GetParam());
  const at::Tensor x = at::randn({1, 2, 3, 8}, dev), cos = at::randn({1, 1, 3, 8}, dev);
  EXPECT_THROW(kernels::rope(x, cos.narrow(2, 0, 2), cos.narrow(2, 0, 2)), c10::Error);
  EXPECT_THROW(kernels::rope(x, cos.to(at::kHalf), cos.to(at::kHalf)), c10::Error);
  EXPECT_THROW(kernels::rope(x.narrow(3, 0, 7), cos, cos), c10::Error);
}

CALIBQ_ON_EACH_DEVICE(Rope);

}  // namespace
}  // namespace calibq
