// The quantizer registry, options, and properties every quantizer must have.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/quant/calibration.h"
#include "core/quant/range_quant.h"
#include "core/quant/registry.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using test::expect_error;

std::shared_ptr<KVQuantizer> make(const std::string& spec, KVRole role = KVRole::Key) {
  return make_quantizer(spec, role);
}

// K-like data: a few channels with large magnitude and offset (outlier channels).
at::Tensor kv_like(std::vector<int64_t> shape, uint64_t seed = 0) {
  at::manual_seed(seed);
  at::Tensor x = at::randn(shape);
  x.select(3, 1).mul_(8.0).add_(3.0);
  return x;
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

TEST(QuantizerRegistry, HoldsExactlyTheseKeys) {
  // Keys are recorded in results: never rename one; adding one means adding it here.
  std::vector<std::string> expected = {"bf16", "calibquant", "fp16",   "fp32",       "group",
                                       "kivi", "post_scaled", "quantile", "token_drop", "uniform"};
  EXPECT_EQ(QuantizerRegistry::instance().names(), expected);
}

TEST(QuantizerRegistry, UnknownKeyListsTheValidOnes) {
  expect_error([] { make("unifrom:bits=2"); }, {"unknown quantizer 'unifrom'", "registered: bf16, calibquant"});
}

TEST(QuantizerOptions, MalformedOptionsAreRejectedWithTheAllowedSet) {
  expect_error([] { make("uniform:bits=5"); }, {"option bits=5 is not allowed", "one of 1, 2, 3, 4, 8"});
  expect_error([] { make("uniform:bitz=2"); }, {"has no option 'bitz'", "options: bits, clip"});
  expect_error([] { make("group:clip=2"); }, {"clip=2", "a number in [0.001, 1] or auto"});
  expect_error([] { make("group:clip=-0.5"); }, {"clip=-0.5"});
  expect_error([] { make("group:clip=abc"); }, {"clip=abc"});
  expect_error([] { make("group:axis=diagonal"); }, {"axis=diagonal", "one of channel, token"});
  expect_error([] { make("group:group_size=-1"); }, {"group_size=-1", "an integer in [0, 1048576]"});
  expect_error([] { make("group:group_size=2.5"); }, {"group_size=2.5"});
  expect_error([] { make("quantile:levels=quantile,bits=8"); }, {"levels=quantile supports bits 1 to 4"});
  expect_error([] { make("kivi:residual=-3"); }, {"residual=-3"});
  expect_error([] { make("token_drop:keep=1.5"); }, {"keep=1.5", "in [0, 1]"});
  expect_error([] { make("calibquant:calibrate=maybe"); }, {"calibrate=maybe", "one of auto, on, off"});
  expect_error([] { make("fp16:bits=4"); }, {"quantizer 'fp16' has no option 'bits' (options: none)"});
  expect_error([] { parse_quantizer_spec("uniform:bits"); }, {"'bits' is not key=value"});
  expect_error([] { parse_quantizer_spec("uniform:bits=1,bits=2"); }, {"option 'bits' given twice"});
  expect_error([] { parse_quantizer_spec(":bits=1"); }, {"names no method"});
}

TEST(QuantizerOptions, SpecsFromTextAndYamlAgree) {
  auto a = QuantizerRegistry::instance().make(parse_quantizer_spec("group:bits=2,axis=token,group_size=32"), KVRole::Value);
  YAML::Node node = YAML::Load("{method: group, bits: 2, axis: token, group_size: 32}");
  auto b = QuantizerRegistry::instance().make(parse_quantizer_spec(node, "cfg.yaml:kv.value"), KVRole::Value);
  EXPECT_EQ(a->describe(), b->describe());
  EXPECT_EQ(a->describe()["bits"], 2);
  EXPECT_EQ(a->describe()["clip"], 1.0);
  EXPECT_EQ(a->label(), "group:axis=token,bits=2,group_size=32");
  EXPECT_EQ(make("calibquant")->label(), "calibquant:bits=1");
  expect_error([] { parse_quantizer_spec(YAML::Load("{bits: 2}"), "cfg.yaml:kv.key"); }, {"cfg.yaml:kv.key", "no 'method'"});
  expect_error([] { QuantizerRegistry::instance().make(parse_quantizer_spec(YAML::Load("{method: group, bits: 9}"), "cfg.yaml:kv.key"), KVRole::Key); },
               {"cfg.yaml:kv.key", "bits=9"});
}

// --- one suite over the whole registry ---

struct Case {
  std::string spec;
  KVRole role;
};

std::vector<Case> registry_cases() {
  std::vector<Case> out;
  for (const auto& name : QuantizerRegistry::instance().names()) {
    for (KVRole role : {KVRole::Key, KVRole::Value}) {
      if (name == "fp16" || name == "bf16" || name == "fp32") {
        out.push_back({name, role});
      } else if (name == "token_drop") {
        out.push_back({name + ":select=uniform,keep=0.3", role});
        out.push_back({name + ":select=attention,keep=0.6", role});
      } else {
        for (int bits : {1, 2, 4, 8}) {
          if (name == "kivi") out.push_back({fmt::format("kivi:bits={},group_size=8,residual=5", bits), role});
          else out.push_back({fmt::format("{}:bits={}", name, bits), role});
        }
      }
    }
  }
  return out;
}

class EveryQuantizer : public ::testing::TestWithParam<Case> {};

TEST_P(EveryQuantizer, QuantizesAndAttendsConsistently) {
  const Case& c = GetParam();
  auto quantizer = make(c.spec, c.role);
  at::Tensor x = kv_like({2, 3, 37, 16}, 1);  // odd token count
  QuantContext ctx;
  ctx.importance = at::rand({2, 3, 37});
  auto qt = quantizer->quantize(x, ctx);
  at::Tensor xh = qt->dequantize();
  EXPECT_EQ(xh.sizes(), x.sizes());
  EXPECT_EQ(xh.scalar_type(), x.scalar_type());
  EXPECT_GT(qt->nbytes(), 0);
  EXPECT_LE(qt->nbytes(), static_cast<int64_t>(x.nbytes()) + 37 * 16 * 4) << "no format stores more than float32";

  // The attention path of the format (codes, for post-scaled ones) equals
  // dequantize-then-attend.
  at::Tensor q = at::randn({2, 3, 5, 16});
  at::Tensor s = qt->scores(q);
  at::Tensor s_ref = at::matmul(q, xh.to(at::kFloat).transpose(-1, -2));
  at::Tensor finite = at::isfinite(s);
  EXPECT_LT(max_rel(s.masked_select(finite), s_ref.masked_select(finite)), 1e-5) << c.spec;
  at::Tensor p = at::softmax(s, -1);
  EXPECT_LT(max_rel(qt->weighted_sum(p), at::matmul(p, xh.to(at::kFloat))), 1e-5) << c.spec;
  if (quantizer->name() != "token_drop") {
    EXPECT_TRUE(finite.all().item<bool>());
  }

  at::Tensor codes = qt->codes();
  if (codes.defined()) {
    EXPECT_EQ(codes.sizes(), x.sizes());
    EXPECT_LT(codes.max().item<int>(), 1 << static_cast<int>(quantizer->nominal_bits()));
  }
}

TEST_P(EveryQuantizer, RejectsTensorsOfTheWrongShape) {
  auto quantizer = make(GetParam().spec, GetParam().role);
  expect_error([&] { quantizer->quantize(at::randn({3, 37, 16})); }, {"[batch, kv_heads, tokens, head_dim]", "[3, 37, 16]"});
  expect_error([&] { quantizer->quantize(at::ones({1, 1, 4, 4}, at::kLong)); }, {"floating-point"});
}

INSTANTIATE_TEST_SUITE_P(Registry, EveryQuantizer, ::testing::ValuesIn(registry_cases()), [](const auto& info) {
  std::string n = info.param.spec + (info.param.role == KVRole::Key ? "_key" : "_value");
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
});

TEST(EveryRangeQuantizer, ErrorShrinksWithBits) {
  at::Tensor x = kv_like({1, 4, 64, 32}, 3);
  for (const std::string name : {"uniform", "group", "quantile", "post_scaled", "calibquant", "kivi"}) {
    double previous = INFINITY;
    for (int bits : {1, 2, 4, 8}) {
      std::string spec = fmt::format("{}:bits={}", name, bits) + (name == "kivi" ? ",residual=0" : "");
      double mse = (make(spec)->quantize(x)->dequantize() - x).pow(2).mean().item<double>();
      EXPECT_LT(mse, previous) << spec;
      previous = mse;
    }
  }
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

// The quantizers run on CUDA tensors too (bit-packing through the CUDA kernels) and give
// what the CPU reference gives.
TEST(QuantizersOnCuda, MatchTheCpuReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::Tensor x = kv_like({2, 3, 37, 16}, 9);
  QuantContext ctx{at::rand({2, 3, 37})}, ctx_cuda{ctx.importance.cuda()};
  for (const auto& c : registry_cases()) {
    auto quantizer = make(c.spec, c.role);
    auto cpu = quantizer->quantize(x, ctx);
    auto gpu = quantizer->quantize(x.cuda(), ctx_cuda);
    at::Tensor d_gpu = gpu->dequantize();
    EXPECT_TRUE(d_gpu.is_cuda()) << c.spec;
    EXPECT_TRUE(at::allclose(d_gpu.cpu(), cpu->dequantize(), 1e-5, 1e-5)) << c.spec;
    EXPECT_EQ(gpu->nbytes(), cpu->nbytes()) << c.spec;
    at::Tensor q = at::randn({2, 3, 4, 16});
    at::Tensor s_gpu = gpu->scores(q.cuda()).cpu(), s_cpu = cpu->scores(q);
    at::Tensor finite = at::isfinite(s_cpu);
    EXPECT_TRUE(at::equal(finite, at::isfinite(s_gpu))) << c.spec;
    EXPECT_LT(max_rel(s_gpu.masked_select(finite), s_cpu.masked_select(finite)), 1e-4) << c.spec;
  }
}

}  // namespace
}  // namespace calibq
