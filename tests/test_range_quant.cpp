// The uniform quantization specification (paper.md) and the formats built on it.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/quant/calibration.h"
#include "core/quant/range_quant.h"
#include "core/quant/registry.h"
#include "kernels/pack_bits.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using test::expect_error;

const UniformQuantized& as_uniform(const std::unique_ptr<QuantizedTensor>& t) {
  auto* u = dynamic_cast<const UniformQuantized*>(t.get());
  if (!u) throw std::runtime_error("not a UniformQuantized");
  return *u;
}

at::Tensor outlier_kv(uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn({2, 3, 41, 24});
  x.select(3, 5).mul_(12.0).add_(-4.0);
  return x;
}

TEST(UniformSpec, ErrorIsAtMostHalfAStepEverywhere) {
  at::Tensor x = outlier_kv(0);
  for (const std::string axis_opts : {"uniform:", "group:axis=channel,", "group:axis=token,",
                                      "group:axis=channel,group_size=8,", "group:axis=token,group_size=5,",
                                      "post_scaled:axis=channel,", "post_scaled:axis=token,", "post_scaled:axis=tensor,"}) {
    for (int bits : {1, 2, 3, 4, 8}) {
      std::string spec = axis_opts + fmt::format("bits={}", bits);
      auto q = make_quantizer(spec, KVRole::Key)->quantize(x);
      const auto& u = as_uniform(q);
      at::Tensor step = u.layout().expand(u.params().scale).expand_as(x);
      at::Tensor err = (q->dequantize() - x).abs();
      EXPECT_TRUE((err <= step * 0.5 + 1e-5).all().item<bool>())
          << spec << ": max err/step " << (err / step).max().item<double>();
    }
  }
}

TEST(UniformSpec, FormulasAsWritten) {
  // s = (max - min) / L, z = -min / s (not rounded), c = round(clamp(x/s + z, 0, L)).
  at::Tensor x = at::tensor({-1.0f, -0.2f, 0.35f, 0.9f, 2.0f}).view({1, 1, 5, 1});
  auto q = make_quantizer("group:bits=2,axis=channel", KVRole::Key)->quantize(x);
  const auto& u = as_uniform(q);
  EXPECT_FLOAT_EQ(u.params().scale.item<float>(), 1.0f);  // (2 - (-1)) / 3
  EXPECT_FLOAT_EQ(u.params().zero.item<float>(), 1.0f);
  at::Tensor expected_codes = at::tensor({0, 1, 1, 2, 3}, at::kInt).to(at::kByte).view({1, 1, 5, 1});
  EXPECT_TRUE(at::equal(q->codes(), expected_codes));  // 0.8 -> 1, 1.35 -> 1, 1.9 -> 2
  EXPECT_TRUE(at::allclose(q->dequantize(), at::tensor({-1.0f, 0.0f, 0.0f, 1.0f, 2.0f}).view({1, 1, 5, 1})));
}

TEST(UniformSpec, RoundsHalfToEven) {
  // x/s + z = 0.5, 1.5, 2.5 exactly: half-to-even gives 0, 2, 2 (torch.round's rule).
  at::Tensor x = at::tensor({0.0f, 0.5f, 1.5f, 2.5f, 3.0f}).view({1, 1, 5, 1});
  auto q = make_quantizer("group:bits=2,axis=channel", KVRole::Key)->quantize(x);
  EXPECT_TRUE(at::equal(q->codes().flatten(), at::tensor({0, 0, 2, 2, 3}, at::kInt).to(at::kByte)));
}

TEST(UniformSpec, OneBitIsAThresholdAtTheMidpoint) {
  at::Tensor x = outlier_kv(1);
  auto q = make_quantizer("group:bits=1,axis=channel", KVRole::Key)->quantize(x);
  at::Tensor mn = x.amin(2, true), mx = x.amax(2, true);
  // Ties (x exactly at the midpoint) round half to even, to 0; random data has none.
  EXPECT_TRUE(at::equal(q->codes(), (x > (mn + mx) / 2).to(at::kByte)));
  at::Tensor xh = q->dequantize();
  EXPECT_TRUE((at::isclose(xh, mn.expand_as(x), 1e-5, 1e-6) | at::isclose(xh, mx.expand_as(x), 1e-5, 1e-6)).all().item<bool>());
}

TEST(UniformSpec, ClippingShrinksTheRangeAboutZero) {
  at::Tensor x = outlier_kv(2);
  at::Tensor mn = x.amin(2, true), mx = x.amax(2, true);
  for (auto [role, factor] : {std::pair{KVRole::Key, 0.5}, std::pair{KVRole::Value, 0.3}}) {
    // clip=auto is the authors' 0.5 (keys) / 0.3 (values) at 1 bit.
    at::Tensor xh = make_quantizer("group:bits=1,axis=channel,clip=auto", role)->quantize(x)->dequantize();
    at::Tensor lo = (mn * factor).expand_as(x), hi = (mx * factor).expand_as(x);
    EXPECT_TRUE((at::isclose(xh, lo, 1e-5, 1e-6) | at::isclose(xh, hi, 1e-5, 1e-6)).all().item<bool>());
  }
  // ... and 1.0 at other bit-widths.
  auto two = make_quantizer("group:bits=2,clip=auto", KVRole::Key)->quantize(x);
  EXPECT_TRUE(at::allclose(as_uniform(two).params().scale, (mx - mn) / 3));
}

TEST(UniformSpec, ConstantGroupsAreExact) {
  // s = 0: the authors' code divides by zero; calibq codes such a group exactly.
  at::Tensor x = at::full({1, 2, 6, 4}, 3.25f);
  x.select(3, 2).fill_(-1.5f);
  for (const std::string spec : {"uniform:bits=1", "group:bits=2,axis=channel", "post_scaled:bits=1", "calibquant:bits=1,clip=1"}) {
    auto q = make_quantizer(spec, KVRole::Key)->quantize(x);
    if (spec == "uniform:bits=1") continue;  // the whole tensor is not constant
    EXPECT_TRUE(at::equal(q->dequantize(), x)) << spec;
    at::Tensor qq = at::randn({1, 2, 3, 4});
    EXPECT_TRUE(at::allclose(q->scores(qq), at::matmul(qq, x.transpose(-1, -2)), 1e-5, 1e-5)) << spec;
  }
}

TEST(UniformSpec, MemoryIsWhatTheFormatImplies) {
  // 1-bit post-scaled visual K on an fp16 segment: 1/16 of fp16 plus per-channel scales.
  const int64_t b = 2, h = 8, n = 576, d = 128;
  at::Tensor x = at::randn({b, h, n, d}).to(at::kHalf);
  for (int bits : {1, 2, 4, 8}) {
    auto q = make_quantizer(fmt::format("post_scaled:bits={}", bits), KVRole::Key)->quantize(x);
    const int64_t codes = b * h * n * d * bits / 8;
    const int64_t scales = 2 * b * h * d * 4;  // scale and zero-point, float32, per (b, h, channel)
    EXPECT_EQ(q->nbytes(), codes + scales) << bits;
  }
  auto one = make_quantizer("calibquant:bits=1", KVRole::Key)->quantize(x);
  const double fp16 = static_cast<double>(x.nbytes());
  // 1/16 of fp16 for the codes, plus 64 bytes of float32 (scale, zero) per (b, h, channel).
  EXPECT_NEAR(one->nbytes() / fp16, 1.0 / 16 + (2.0 * b * h * d * 4) / fp16, 1e-12);
  EXPECT_LT(one->nbytes() / fp16, 1.0 / 16 * 1.12);
  // 3-bit codes travel in 4-bit slots.
  EXPECT_EQ(make_quantizer("group:bits=3", KVRole::Key)->quantize(x)->nbytes(), b * h * n * d / 2 + 2 * b * h * d * 4);
  // fp16 stores 2 bytes an element; group with g tokens per group stores ceil(n/g) scales.
  EXPECT_EQ(make_quantizer("fp16", KVRole::Key)->quantize(x)->nbytes(), b * h * n * d * 2);
  EXPECT_EQ(make_quantizer("group:bits=2,group_size=100", KVRole::Key)->quantize(x)->nbytes(),
            b * h * n * d / 4 + 2 * b * h * 6 * d * 4);
}

TEST(PostScaled, ScoresAndOutputsEqualDequantizeThenAttend) {
  at::Tensor x = outlier_kv(3);
  at::Tensor q = at::randn({2, 3, 7, 24});
  for (const std::string axis : {"channel", "token", "tensor"}) {
    for (int bits : {1, 2, 3, 4, 8}) {
      auto qt = make_quantizer(fmt::format("post_scaled:bits={},axis={}", bits, axis), KVRole::Key)->quantize(x);
      ASSERT_TRUE(qt->code_domain());
      at::Tensor xh = qt->dequantize();
      at::Tensor s_ref = at::matmul(q, xh.transpose(-1, -2));
      at::Tensor s = qt->scores(q);
      EXPECT_LT(((s - s_ref).abs().max() / s_ref.abs().max()).item<double>(), 1e-5) << axis << bits;
      at::Tensor p = at::softmax(s_ref, -1);
      at::Tensor o_ref = at::matmul(p, xh);
      EXPECT_LT(((qt->weighted_sum(p) - o_ref).abs().max() / o_ref.abs().max()).item<double>(), 1e-5) << axis << bits;
    }
  }
}

TEST(Quantile, RangeFromQuantilesMatchesTorch) {
  at::manual_seed(4);
  at::Tensor x = at::randn({1, 2, 50, 3});
  at::Tensor mine = quantile_along(x, 0.05, 2);
  at::Tensor torchs = at::quantile(x, 0.05, 2, true);
  EXPECT_TRUE(at::allclose(mine, torchs, 1e-6, 1e-6));
  auto q = make_quantizer("quantile:bits=2,q=0.05", KVRole::Key)->quantize(x);
  EXPECT_TRUE(at::allclose(as_uniform(q).params().scale, (at::quantile(x, 0.95, 2, true) - torchs) / 3, 1e-5, 1e-6));
}

TEST(Quantile, CodebookLevelsSitAtQuantilesAndCodeToTheNearest) {
  at::manual_seed(5);
  at::Tensor x = at::randn({1, 1, 400, 2});
  auto q = make_quantizer("quantile:bits=2,levels=quantile", KVRole::Key)->quantize(x);
  at::Tensor xh = q->dequantize();
  for (int64_t ch = 0; ch < 2; ++ch) {
    at::Tensor col = x.select(3, ch).flatten();
    std::vector<float> levels;
    for (double prob : {0.125, 0.375, 0.625, 0.875}) levels.push_back(at::quantile(col, prob).item<float>());
    at::Tensor lv = at::tensor(levels);
    at::Tensor nearest = lv.index_select(0, (col.unsqueeze(1) - lv.unsqueeze(0)).abs().argmin(1));
    EXPECT_TRUE(at::allclose(xh.select(3, ch).flatten(), nearest, 1e-5, 1e-6));
  }
}

TEST(Calibration, MapsTheRangeExactlyAndLinearly) {
  at::manual_seed(6);
  at::Tensor s = at::randn({2, 4, 3, 100}) * 5;
  at::Tensor c = calibrate_score_range(s, 0.0, -3.0);
  EXPECT_TRUE(at::allclose(c.amin(-1), s.amin(-1), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(c.amax(-1), s.amax(-1) - 3.0, 1e-5, 1e-5));
  at::Tensor c2 = calibrate_score_range(s, 1.0, -2.0);
  EXPECT_TRUE(at::allclose(c2.amin(-1), s.amin(-1) + 1.0, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(c2.amax(-1), s.amax(-1) - 2.0, 1e-5, 1e-5));
  // Affine per row: the relative position of every score in its range is kept.
  auto rel = [](const at::Tensor& t) { return (t - t.amin(-1, true)) / (t.amax(-1, true) - t.amin(-1, true)); };
  EXPECT_TRUE(at::allclose(rel(c), rel(s), 1e-4, 1e-5));
  // A constant row maps to m + a.
  EXPECT_TRUE(at::allclose(calibrate_score_range(at::full({1, 5}, 2.0f), 0.5, -3.0), at::full({1, 5}, 2.5f)));
}

TEST(Calibration, CalibQuantCalibratesKeysAtOneAndTwoBits) {
  at::Tensor s = at::randn({1, 2, 1, 30});
  for (auto [spec, role, expect] : std::vector<std::tuple<std::string, KVRole, bool>>{
           {"calibquant:bits=1", KVRole::Key, true}, {"calibquant:bits=2", KVRole::Key, true},
           {"calibquant:bits=4", KVRole::Key, false}, {"calibquant:bits=4,calibrate=on", KVRole::Key, true},
           {"calibquant:bits=1,calibrate=off", KVRole::Key, false}, {"calibquant:bits=1", KVRole::Value, false},
           {"post_scaled:bits=1", KVRole::Key, false}}) {
    auto q = make_quantizer(spec, role);
    EXPECT_EQ(q->calibrates(), expect) << spec;
    EXPECT_EQ(at::equal(q->calibrate_scores(s), s), !expect) << spec;
  }
}

TEST(Kivi, RecentWindowStaysFullPrecision) {
  at::Tensor x = outlier_kv(7);  // 41 tokens
  // keys: (41 - 10) = 31 -> 24 whole groups of 8 quantized, the last 17 tokens exact.
  auto k = make_quantizer("kivi:bits=2,group_size=8,residual=10", KVRole::Key)->quantize(x)->dequantize();
  EXPECT_TRUE(at::equal(k.narrow(2, 24, 17), x.narrow(2, 24, 17)));
  EXPECT_FALSE(at::equal(k.narrow(2, 0, 24), x.narrow(2, 0, 24)));
  // values: per token, so exactly the last 10 tokens are exact.
  auto v = make_quantizer("kivi:bits=2,group_size=8,residual=10", KVRole::Value)->quantize(x)->dequantize();
  EXPECT_TRUE(at::equal(v.narrow(2, 31, 10), x.narrow(2, 31, 10)));
  EXPECT_FALSE(at::equal(v.narrow(2, 30, 1), x.narrow(2, 30, 1)));
  // memory: 24 tokens of 2-bit codes, ceil(24/8)=3 key groups per channel, plus 17 fp32 tokens.
  auto kq = make_quantizer("kivi:bits=2,group_size=8,residual=10", KVRole::Key)->quantize(x);
  EXPECT_EQ(kq->nbytes(), 2 * 3 * 24 * 24 / 4 + 2 * (2 * 3 * 3 * 24) * 4 + 2 * 3 * 17 * 24 * 4);
}

TEST(TokenDrop, KeepsTheMostAttendedOrEvenlySpacedTokens) {
  at::Tensor x = at::randn({1, 2, 10, 4});
  at::Tensor imp = at::zeros({1, 2, 10});
  imp.index_put_({0, 0, at::tensor({1, 7, 8}, at::kLong)}, 1.0);
  imp.index_put_({0, 1, at::tensor({0, 2, 9}, at::kLong)}, 1.0);
  QuantContext ctx{imp};
  auto q = make_quantizer("token_drop:keep=0.3", KVRole::Key)->quantize(x, ctx);
  at::Tensor xh = q->dequantize();
  at::Tensor kept = (xh != 0).any(-1);
  EXPECT_TRUE(at::equal(kept[0][0], imp[0][0] > 0));
  EXPECT_TRUE(at::equal(kept[0][1], imp[0][1] > 0));
  EXPECT_EQ(q->nbytes(), 2 * 3 * 4 * 4 + 2 * 3 * 4);
  at::Tensor s = q->scores(at::randn({1, 2, 1, 4}));
  EXPECT_EQ(at::isinf(s).sum().item<int64_t>(), 2 * 7);
  auto u = make_quantizer("token_drop:keep=0.3,select=uniform", KVRole::Key)->quantize(x);
  at::Tensor ku = (u->dequantize() != 0).any(-1)[0][0];
  EXPECT_TRUE(at::equal(ku.nonzero().flatten(), at::tensor({1, 5, 8}, at::kLong)));  // floor((i + 1/2) * 10 / 3)
  expect_error([&] { make_quantizer("token_drop", KVRole::Key)->quantize(x); }, {"select=attention needs"});
}

}  // namespace
}  // namespace calibq
