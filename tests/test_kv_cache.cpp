// The segment-aware KV cache: what is quantized, what stays exact, one softmax over all
// segments, decode appends, and true bytes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/kv/kv_cache.h"
#include "core/quant/calibration.h"
#include "core/quant/registry.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using test::expect_error;

// Plain attention with GQA by repeating kv heads, as transformers' eager path does.
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                               int64_t visual_begin = 0, int64_t visual_len = 0, const KVQuantizer* calib = nullptr,
                               const at::Tensor& mask = {}) {
  const int64_t groups = q.size(1) / k.size(1);
  at::Tensor kr = k.repeat_interleave(groups, 1), vr = v.repeat_interleave(groups, 1);
  at::Tensor s = at::matmul(q, kr.transpose(-1, -2)) * scale;
  if (calib && visual_len > 0) {
    at::Tensor vis = s.narrow(-1, visual_begin, visual_len);
    vis.copy_(calib->calibrate_scores(vis.clone()));
  }
  if (mask.defined()) s = s + mask;
  return at::matmul(at::softmax(s, -1), vr);
}

struct Prefill {
  at::Tensor k, v;
  int64_t sys = 5, vis = 40, text = 7;
};

Prefill make_prefill(uint64_t seed, int64_t b = 2, int64_t h = 2, int64_t d = 16) {
  at::manual_seed(seed);
  Prefill p;
  p.k = at::randn({b, h, p.sys + p.vis + p.text, d});
  p.k.select(3, 3).mul_(6.0);
  p.v = at::randn({b, h, p.sys + p.vis + p.text, d});
  return p;
}

KVCacheConfig config(const std::string& k, const std::string& v, const std::string& segments = "visual") {
  return {make_quantizer(k, KVRole::Key), make_quantizer(v, KVRole::Value), SegmentSet::parse(segments)};
}

TEST(SegmentSet, ParsesNamesAllAndLists) {
  EXPECT_EQ(SegmentSet{}.to_string(), "visual");
  EXPECT_EQ(SegmentSet::parse("all").to_string(), "all");
  EXPECT_EQ(SegmentSet::parse("system,text").to_string(), "system,text");
  expect_error([] { SegmentSet::parse("visual,image", "cfg.yaml:kv.segments"); },
               {"cfg.yaml:kv.segments", "segment 'image'", "system, visual, text"});
}

TEST(KVCache, OnlyTheVisualSegmentIsQuantizedByDefault) {
  Prefill p = make_prefill(0);
  LayerKVCache cache(config("calibquant:bits=1", "calibquant:bits=1"));
  cache.prefill(p.k, p.v, p.sys, p.vis);
  at::Tensor k = cache.keys(), v = cache.values();
  EXPECT_TRUE(at::equal(k.narrow(2, 0, p.sys), p.k.narrow(2, 0, p.sys)));
  EXPECT_TRUE(at::equal(k.narrow(2, p.sys + p.vis, p.text), p.k.narrow(2, p.sys + p.vis, p.text)));
  EXPECT_TRUE(at::equal(v.narrow(2, p.sys + p.vis, p.text), p.v.narrow(2, p.sys + p.vis, p.text)));
  at::Tensor kq = make_quantizer("calibquant:bits=1", KVRole::Key)->quantize(p.k.narrow(2, p.sys, p.vis))->dequantize();
  EXPECT_TRUE(at::equal(k.narrow(2, p.sys, p.vis), kq));
  EXPECT_FALSE(at::equal(kq, p.k.narrow(2, p.sys, p.vis)));
}

TEST(KVCache, AttentionIsOneSoftmaxOverAllSegmentsWithCalibratedVisualScores) {
  Prefill p = make_prefill(1);
  for (int64_t hq : {2, 4, 8}) {  // GQA groups 1, 2, 4
    for (const std::string spec : {"calibquant:bits=1", "calibquant:bits=2", "post_scaled:bits=1", "group:bits=2",
                                   "kivi:bits=2,group_size=8,residual=4", "fp16", "quantile:bits=2,levels=quantile"}) {
      LayerKVCache cache(config(spec, spec));
      cache.prefill(p.k, p.v, p.sys, p.vis);
      at::Tensor q = at::randn({2, hq, 3, 16});
      const double scale = 1.0 / std::sqrt(16.0);
      at::Tensor out = cache.attend(q, scale);
      at::Tensor ref = reference_attention(q, cache.keys(), cache.values(), scale, p.sys, p.vis, cache.config().key.get());
      EXPECT_LT((out - ref).abs().max().item<double>(), 1e-5) << spec << " hq=" << hq;
    }
  }
}

TEST(KVCache, CalibrationChangesTheVisualScoresOnly) {
  Prefill p = make_prefill(2);
  LayerKVCache on(config("calibquant:bits=1", "calibquant:bits=1"));
  LayerKVCache off(config("calibquant:bits=1,calibrate=off", "calibquant:bits=1"));
  on.prefill(p.k, p.v, p.sys, p.vis);
  off.prefill(p.k, p.v, p.sys, p.vis);
  at::Tensor q = at::randn({2, 2, 1, 16});
  at::Tensor s_on = on.scores(q, 0.25), s_off = off.scores(q, 0.25);
  EXPECT_TRUE(at::equal(s_on.narrow(-1, 0, p.sys), s_off.narrow(-1, 0, p.sys)));
  EXPECT_TRUE(at::equal(s_on.narrow(-1, p.sys + p.vis, p.text), s_off.narrow(-1, p.sys + p.vis, p.text)));
  at::Tensor vis_on = s_on.narrow(-1, p.sys, p.vis), vis_off = s_off.narrow(-1, p.sys, p.vis);
  EXPECT_TRUE(at::allclose(vis_on.amax(-1), vis_off.amax(-1) - 3.0, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(vis_on.amin(-1), vis_off.amin(-1), 1e-5, 1e-5));
}

// Decoding appends into a buffer that doubles when full: after many steps the text block holds
// exactly the appended tokens, and attention over it equals attention over a fresh prefill.
TEST(KVCache, ManyDecodeStepsKeepEveryTokenAcrossBufferGrowth) {
  Prefill p = make_prefill(5);
  LayerKVCache grown(config("calibquant:bits=1", "calibquant:bits=1"));
  grown.prefill(p.k, p.v, p.sys, p.vis);
  std::vector<at::Tensor> ks{p.k}, vs{p.v};
  for (int step = 0; step < 150; ++step) {  // past capacities 64, 128 and 256
    at::Tensor k = at::randn({2, 2, 1 + step % 2, 16}), v = at::randn({2, 2, 1 + step % 2, 16});
    grown.append(k, v);
    ks.push_back(k);
    vs.push_back(v);
  }
  const at::Tensor all_k = at::cat(ks, 2), all_v = at::cat(vs, 2);
  EXPECT_TRUE(at::equal(grown.keys().narrow(2, p.sys + p.vis, all_k.size(2) - p.sys - p.vis),
                        all_k.narrow(2, p.sys + p.vis, all_k.size(2) - p.sys - p.vis)));
  LayerKVCache fresh(config("calibquant:bits=1", "calibquant:bits=1"));
  fresh.prefill(all_k, all_v, p.sys, p.vis);
  const at::Tensor q = at::randn({2, 4, 1, 16});
  EXPECT_LT((grown.attend(q, 0.25) - fresh.attend(q, 0.25)).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(grown.bytes().text, fresh.bytes().text);
}

TEST(KVCache, DecodeAppendsFullPrecisionTextAndMasksWork) {
  Prefill p = make_prefill(3);
  LayerKVCache cache(config("calibquant:bits=1", "calibquant:bits=1"));
  cache.prefill(p.k, p.v, p.sys, p.vis);
  const int64_t n0 = cache.length();
  const int64_t visual_bytes = cache.bytes().visual;
  at::Tensor k_new = at::randn({2, 2, 3, 16}), v_new = at::randn({2, 2, 3, 16});
  cache.append(k_new, v_new);
  cache.append(k_new.narrow(2, 0, 1), v_new.narrow(2, 0, 1));
  EXPECT_EQ(cache.length(), n0 + 4);
  EXPECT_TRUE(at::equal(cache.keys().narrow(2, n0, 3), k_new));
  EXPECT_EQ(cache.bytes().visual, visual_bytes);
  EXPECT_EQ(cache.bytes().text, 2 * 2 * 2 * (p.text + 4) * 16 * 4);
  // Several new queries at once with a causal mask over the new tokens.
  at::Tensor q = at::randn({2, 4, 2, 16});
  at::Tensor mask = at::zeros({1, 1, 2, cache.length()});
  mask[0][0][0][cache.length() - 1] = -INFINITY;
  at::Tensor out = cache.attend(q, 0.25, mask);
  at::Tensor ref = reference_attention(q, cache.keys(), cache.values(), 0.25, p.sys, p.vis, cache.config().key.get(), mask);
  EXPECT_LT((out - ref).abs().max().item<double>(), 1e-5);
  expect_error([&] { cache.append(at::randn({2, 3, 1, 16}), at::randn({2, 3, 1, 16})); }, {"expected [B, 2, T, 16]"});
}

TEST(KVCache, WithoutQuantizersItIsPlainAttention) {
  Prefill p = make_prefill(4);
  LayerKVCache cache(KVCacheConfig{nullptr, nullptr, SegmentSet{}});
  cache.prefill(p.k, p.v, p.sys, p.vis);
  at::Tensor q = at::randn({2, 4, 1, 16});
  EXPECT_LT((cache.attend(q, 0.25) - reference_attention(q, p.k, p.v, 0.25)).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(cache.bytes().total(), 2 * static_cast<int64_t>(p.k.nbytes()));
}

// share_system: the system segment held once for the batch (every sequence's system tokens
// the same). The same attention as a cache holding every row, a third of the system bytes for
// three sequences; joined micro-batches stay one copy when all are shared, else copies.
TEST(KVCache, ASharedSystemPromptIsHeldOnce) {
  Prefill p = make_prefill(6, 3);
  for (at::Tensor* t : {&p.k, &p.v}) t->narrow(2, 0, p.sys).copy_(t->narrow(0, 0, 1).narrow(2, 0, p.sys).expand({3, -1, -1, -1}));
  LayerKVCache shared(config("calibquant:bits=1", "calibquant:bits=1")), own(config("calibquant:bits=1", "calibquant:bits=1"));
  shared.prefill(p.k, p.v, p.sys, p.vis, {}, true);
  own.prefill(p.k, p.v, p.sys, p.vis);
  const int64_t system_bytes = 2 * 2 * p.sys * 16 * 4;  // one sequence's K and V, float32
  EXPECT_EQ(shared.bytes().system, system_bytes);
  EXPECT_EQ(own.bytes().system, 3 * system_bytes);
  EXPECT_TRUE(at::equal(shared.keys(), own.keys()));
  EXPECT_TRUE(at::equal(shared.values(), own.values()));
  at::Tensor q = at::randn({3, 4, 1, 16});
  EXPECT_LT((shared.attend(q, 0.25) - own.attend(q, 0.25)).abs().max().item<double>(), 1e-6);
  // Decode appends stay per sequence.
  at::Tensor k1 = at::randn({3, 2, 1, 16}), v1 = at::randn({3, 2, 1, 16});
  shared.append(k1, v1);
  own.append(k1, v1);
  EXPECT_LT((shared.attend(q, 0.25) - own.attend(q, 0.25)).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(shared.bytes().system, system_bytes);

  LayerKVCache a(config("calibquant:bits=1", "calibquant:bits=1")), b(config("calibquant:bits=1", "calibquant:bits=1"));
  a.prefill(p.k, p.v, p.sys, p.vis, {}, true);
  b.prefill(p.k.narrow(0, 0, 1), p.v.narrow(0, 0, 1), p.sys, p.vis, {}, true);
  LayerKVCache joined = LayerKVCache::concat_batch({&a, &b});
  EXPECT_EQ(joined.batch(), 4);
  EXPECT_EQ(joined.bytes().system, system_bytes);
  EXPECT_TRUE(at::equal(joined.keys().narrow(0, 0, 3), own.keys().narrow(2, 0, own.length() - 1)));
  LayerKVCache c(config("calibquant:bits=1", "calibquant:bits=1"));
  c.prefill(p.k.narrow(0, 0, 1), p.v.narrow(0, 0, 1), p.sys, p.vis);  // not shared
  LayerKVCache mixed = LayerKVCache::concat_batch({&a, &c});
  EXPECT_EQ(mixed.bytes().system, 4 * system_bytes);
  EXPECT_TRUE(at::equal(mixed.keys().narrow(0, 0, 3), joined.keys().narrow(0, 0, 3)));
}

TEST(KVCache, QuantizingAllSegmentsAndTrueBytes) {
  Prefill p = make_prefill(5);
  p.k = p.k.to(at::kHalf);
  p.v = p.v.to(at::kHalf);
  LayerKVCache cache(config("calibquant:bits=1", "calibquant:bits=1", "all"));
  cache.prefill(p.k, p.v, p.sys, p.vis);
  at::Tensor k = cache.keys();
  EXPECT_EQ(k.scalar_type(), at::kHalf);
  EXPECT_FALSE(at::equal(k.narrow(2, 0, p.sys), p.k.narrow(2, 0, p.sys)));
  EXPECT_FALSE(at::equal(k.narrow(2, p.sys + p.vis, p.text), p.k.narrow(2, p.sys + p.vis, p.text)));
  // bytes: per segment, 1-bit codes (16 channels = 2 bytes a token) + float32 scale/zero per channel, K and V.
  auto seg = [](int64_t n) { return 2 * (2 * 2 * n * 2 + 2 * 2 * 2 * 16 * 4); };
  SegmentBytes b = cache.bytes();
  EXPECT_EQ(b.system, seg(p.sys));
  EXPECT_EQ(b.visual, seg(p.vis));
  EXPECT_EQ(b.text, seg(p.text));
  EXPECT_EQ(cache.fp16_bytes(), 2 * static_cast<int64_t>(p.k.nbytes()));
}

TEST(KVCache, TokenDropMustDropTheSameTokensFromKeysAndValues) {
  expect_error([] { LayerKVCache(config("token_drop", "fp16")); }, {"token_drop drops tokens from keys and values together"});
  expect_error([] { LayerKVCache(config("token_drop:keep=0.5", "token_drop:keep=0.4")); }, {"same options"});
  Prefill p = make_prefill(6);
  LayerKVCache cache(config("token_drop:keep=0.25", "token_drop:keep=0.25"));
  at::Tensor imp = at::rand({2, 2, p.vis});
  cache.prefill(p.k, p.v, p.sys, p.vis, imp);
  at::Tensor q = at::randn({2, 2, 1, 16});
  at::Tensor s = cache.scores(q, 0.25);
  EXPECT_EQ(at::isinf(s).sum().item<int64_t>(), 2 * 2 * (p.vis - 10));
  // Attention over the kept tokens only: dropped ones get zero weight.
  at::Tensor keep = at::ones({2, 2, 1, cache.length()});
  keep.narrow(-1, p.sys, p.vis).copy_((cache.keys().narrow(2, p.sys, p.vis) != 0).any(-1).unsqueeze(2).to(at::kFloat));
  at::Tensor mask = at::where(keep > 0, at::zeros_like(keep), at::full_like(keep, -INFINITY));
  at::Tensor ref = reference_attention(q, p.k, p.v, 0.25, 0, 0, nullptr, mask);
  EXPECT_LT((cache.attend(q, 0.25) - ref).abs().max().item<double>(), 1e-5);
}

TEST(KVCache, RejectsBadShapes) {
  LayerKVCache cache(config("group:bits=2", "group:bits=2"));
  expect_error([&] { cache.prefill(at::randn({1, 2, 10, 8}), at::randn({1, 2, 9, 8}), 2, 3); }, {"differ in shape"});
  expect_error([&] { cache.prefill(at::randn({1, 2, 10, 8}), at::randn({1, 2, 10, 8}), 6, 5); }, {"exceed the 10 tokens"});
  expect_error([&] { cache.attend(at::randn({1, 2, 1, 8}), 1.0); }, {"before prefill"});
  cache.prefill(at::randn({1, 2, 10, 8}), at::randn({1, 2, 10, 8}), 2, 3);
  expect_error([&] { cache.attend(at::randn({1, 3, 1, 8}), 1.0); }, {"3 query heads is not a multiple of 2 kv heads"});
  expect_error([&] { cache.attend(at::randn({1, 2, 1, 4}), 1.0); }, {"expected queries [B, Hq, T, 8]"});
}

}  // namespace
}  // namespace calibq
