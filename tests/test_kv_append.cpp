// The token append of graph decoding (kernels/kv_append.h): the token lands in row `length` of
// every (batch, head) of both buffers, from strided views as the decoder hands them, length
// advances by one and nothing else changes; a full buffer is left alone. One body for the
// plain-loop reference and the CUDA kernel (several blocks, so that the last-block count runs).
#include <gtest/gtest.h>

#include <initializer_list>
#include <utility>

#include "kernels/kv_append.h"
#include "tests/device_test.h"

namespace calibq {
namespace {

using AppendToken = test::OnEachDevice;

TEST_P(AppendToken, WritesRowLengthFromStridedViewsAndAdvancesIt) {
  at::manual_seed(41);
  const at::Device dev(GetParam());
  for (auto dtype : {at::kFloat, at::kBFloat16})
    // 37 x 8 rows: 37 blocks of eight warps on CUDA; D = 200: a lane's second round of four
    // elements, partly past the row's end.
    for (auto [B, D] : std::initializer_list<std::pair<int64_t, int64_t>>{{1, 128}, {37, 128}, {3, 200}}) {
      const int64_t H = 8, cap = 6;
      at::Tensor ks = at::randn({B, H, cap, D}).to(dtype).to(dev), vs = at::randn({B, H, cap, D}).to(dtype).to(dev);
      const at::Tensor k0 = ks.clone(), v0 = vs.clone();
      at::Tensor length = at::full({1}, 2, at::kInt).to(dev), done = at::zeros({1}, at::kInt).to(dev);
      for (int step = 0; step < 2; ++step) {
        // A fused projection [B, 1, (H + 2H) D]: k and v as head-split views of it.
        const at::Tensor proj = at::randn({B, 1, 3 * H * D}).to(dtype).to(dev);
        const at::Tensor k = proj.narrow(-1, H * D, H * D).view({B, 1, H, D}).transpose(1, 2);
        const at::Tensor v = proj.narrow(-1, 2 * H * D, H * D).view({B, 1, H, D}).transpose(1, 2);
        if (B > 1) {
          ASSERT_FALSE(v.is_contiguous());  // sequences 3 H D apart
        }
        kernels::append_token(ks, vs, k, v, length, done);
        const int64_t row = 2 + step;
        EXPECT_EQ(length.cpu().item<int>(), row + 1) << c10::toString(dtype) << " B=" << B << " D=" << D;
        EXPECT_EQ(done.cpu().item<int>(), 0);
        EXPECT_TRUE(at::equal(ks.narrow(2, row, 1).cpu(), k.cpu())) << c10::toString(dtype) << " B=" << B << " D=" << D;
        EXPECT_TRUE(at::equal(vs.narrow(2, row, 1).cpu(), v.cpu())) << c10::toString(dtype) << " B=" << B << " D=" << D;
      }
      // The other rows untouched.
      for (int64_t row : {0, 1, 4, 5}) {
        EXPECT_TRUE(at::equal(ks.narrow(2, row, 1).cpu(), k0.narrow(2, row, 1).cpu())) << "row " << row;
        EXPECT_TRUE(at::equal(vs.narrow(2, row, 1).cpu(), v0.narrow(2, row, 1).cpu())) << "row " << row;
      }
      // Full: nothing written, the length kept.
      length.fill_(static_cast<int>(cap));
      const at::Tensor before = ks.clone();
      kernels::append_token(ks, vs, at::zeros({B, H, 1, D}, ks.options()), at::zeros({B, H, 1, D}, ks.options()), length, done);
      EXPECT_EQ(length.cpu().item<int>(), cap);
      EXPECT_TRUE(at::equal(ks.cpu(), before.cpu()));
    }
}

TEST_P(AppendToken, MisshapenInputsAreOneClearError) {
  const at::Device dev(GetParam());
  at::Tensor ks = at::zeros({2, 3, 4, 8}, dev), vs = at::zeros({2, 3, 4, 8}, dev);
  at::Tensor length = at::zeros({1}, at::TensorOptions(dev).dtype(at::kInt)), done = length.clone();
  EXPECT_THROW(kernels::append_token(ks, vs, at::zeros({2, 3, 2, 8}, dev), at::zeros({2, 3, 1, 8}, dev), length, done),
               c10::Error);
  at::Tensor wide = at::zeros({1}, at::TensorOptions(dev).dtype(at::kLong));
  EXPECT_THROW(kernels::append_token(ks, vs, at::zeros({2, 3, 1, 8}, dev), at::zeros({2, 3, 1, 8}, dev), wide, done),
               c10::Error);
}

CALIBQ_ON_EACH_DEVICE(AppendToken);

}  // namespace
}  // namespace calibq
