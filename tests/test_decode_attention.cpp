// Decode attention over segments with a packed low-bit segment: one test body for the CPU
// reference and the CUDA kernels, each against attention written with tensor ops on the
// dequantized cache (double precision); and the KV cache's use of the kernel.
#include <gtest/gtest.h>

#include <random>

#include "core/kv/kv_cache.h"
#include "core/quant/range_quant.h"
#include "kernels/cuda_dispatch.h"
#include "kernels/decode_attention.h"
#include "kernels/pack_bits.h"
#include "tests/device_test.h"

namespace calibq {
namespace {

using kernels::DecodeAttentionInputs;
using kernels::ScaleAxis;

struct Case {
  int64_t batch, kv_heads, groups, head_dim, system, visual, text;
  int bits;
  ScaleAxis key_axis, value_axis;
  bool calibrate, mask;
  at::ScalarType dtype;
  int64_t splits;
  double value_gain = 1.0;  // the visual values' magnitude (their per-token scales grow with it)
  bool shared_system = false;  // the system segment one copy for the batch (batch stride 0)
  std::string str() const {
    return "B=" + std::to_string(batch) + " H=" + std::to_string(kv_heads) + " G=" + std::to_string(groups) +
           " D=" + std::to_string(head_dim) + " sys=" + std::to_string(system) + " vis=" + std::to_string(visual) +
           " text=" + std::to_string(text) + " bits=" + std::to_string(bits) +
           " k=" + (key_axis == ScaleAxis::Channel ? "channel" : "token") +
           " v=" + (value_axis == ScaleAxis::Channel ? "channel" : "token") + " calib=" + std::to_string(calibrate) +
           " mask=" + std::to_string(mask) + " dtype=" + std::string(c10::toString(dtype)) + " splits=" + std::to_string(splits) +
           " value_gain=" + std::to_string(value_gain) + " shared_system=" + std::to_string(shared_system);
  }
};

// K/V with a few outlier key channels, as real keys have.
at::Tensor random_kv(int64_t b, int64_t h, int64_t n, int64_t d, bool keys) {
  at::Tensor x = at::randn({b, h, n, d});
  if (keys && d > 3) x.select(-1, 3).mul_(6.0);
  return x;
}

kernels::PackedKV pack(const at::Tensor& x, int bits, ScaleAxis axis) {
  RangeConfig rc;
  rc.bits = bits;
  rc.granularity = axis == ScaleAxis::Channel ? Granularity::Channel : Granularity::Token;
  rc.clip = bits == 1 ? 0.5 : 1.0;
  UniformQuantized q(x, rc, true);
  return *q.packed_kv();
}

struct Built {
  DecodeAttentionInputs in;
  double value_step = 0;  // the largest quantization step of the values
};

Built build(const Case& c) {
  Built out;
  auto& in = out.in;
  const int64_t hq = c.kv_heads * c.groups;
  in.q = at::randn({c.batch, hq, c.head_dim}).to(c.dtype);
  in.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  for (int seg = 0; seg < 2; ++seg) {  // system, text
    const int64_t len = seg == 0 ? c.system : c.text;
    kernels::FullKV f{random_kv(c.batch, c.kv_heads, len, c.head_dim, true).to(c.dtype),
                      random_kv(c.batch, c.kv_heads, len, c.head_dim, false).to(c.dtype), {}, {}};
    if (c.shared_system && seg == 0) {  // row 0 of the system segment for every sequence
      f.k = f.k.narrow(0, 0, 1).expand(f.k.sizes());
      f.v = f.v.narrow(0, 0, 1).expand(f.v.sizes());
    }
    if (c.mask && len > 1) {  // the first tokens of each sequence but the last padded away
      f.mask = at::zeros({c.batch, len});
      for (int64_t b = 0; b + 1 < c.batch; ++b) f.mask[b].narrow(0, 0, std::min<int64_t>(len - 1, b + 1)).fill_(-INFINITY);
    }
    in.full.push_back(f);
  }
  if (c.visual > 0) {
    in.has_packed = true;
    in.key = pack(random_kv(c.batch, c.kv_heads, c.visual, c.head_dim, true), c.bits, c.key_axis);
    in.value = pack(random_kv(c.batch, c.kv_heads, c.visual, c.head_dim, false) * c.value_gain, c.bits, c.value_axis);
    in.calibrate = c.calibrate;
    in.calib_a = 0.0;
    in.calib_b = -3.0;
    out.value_step = in.value.scale.abs().max().item<double>();
  }
  in.splits = c.splits;
  return out;
}

// The same attention with tensor ops on the dequantized cache, in double precision.
at::Tensor expected_attention(const DecodeAttentionInputs& in) {
  const int64_t hq = in.q.size(1), d = in.q.size(2);
  const auto dd = at::kDouble;
  std::vector<at::Tensor> ks, vs, masks;
  for (const auto& f : in.full) {
    ks.push_back(f.k.to(dd));
    vs.push_back(f.v.to(dd));
    masks.push_back(f.mask.defined() ? f.mask.to(dd) : at::zeros({f.k.size(0), f.k.size(2)}, dd));
  }
  auto dequant = [&](const kernels::PackedKV& p) {
    at::Tensor c = kernels::unpack_codes(p.packed, p.bits, d).to(dd);
    return p.scale.to(dd) * (c - p.zero.to(dd));
  };
  at::Tensor q = in.q.to(dd).unsqueeze(2);  // [B, Hq, 1, D]
  auto scores_of = [&](const at::Tensor& k) {
    at::Tensor kr = k.repeat_interleave(hq / k.size(1), 1);
    return at::matmul(q, kr.transpose(-1, -2)) * in.scale;  // [B, Hq, 1, L]
  };
  std::vector<at::Tensor> parts, values;
  for (size_t i = 0; i < ks.size(); ++i) {
    parts.push_back(scores_of(ks[i]) + masks[i].unsqueeze(1).unsqueeze(1));
    values.push_back(vs[i]);
  }
  if (in.has_packed) {
    at::Tensor s = scores_of(dequant(in.key));
    if (in.calibrate) {
      at::Tensor m = s.amin(-1, true), big = s.amax(-1, true);
      s = at::where(big > m, (m + in.calib_a) + (s - m) / (big - m) * ((big + in.calib_b) - (m + in.calib_a)),
                    m + in.calib_a + at::zeros_like(s));
    }
    parts.push_back(s);
    values.push_back(dequant(in.value));
  }
  at::Tensor p = at::softmax(at::cat(parts, -1), -1);
  at::Tensor v = at::cat(values, 2);
  return at::matmul(p, v.repeat_interleave(hq / v.size(1), 1)).squeeze(2);
}

DecodeAttentionInputs to_device(DecodeAttentionInputs in, at::Device dev) {
  in.q = in.q.to(dev);
  // A segment shared over the batch stays one copy there (`to` would materialize the rows).
  auto move = [&](const at::Tensor& t) {
    return t.size(0) > 1 && t.stride(0) == 0 ? t.narrow(0, 0, 1).to(dev).expand(t.sizes()) : t.to(dev);
  };
  for (auto& f : in.full) {
    f.k = move(f.k);
    f.v = move(f.v);
    if (f.mask.defined()) f.mask = f.mask.to(dev);
  }
  for (kernels::PackedKV* p : {&in.key, &in.value})
    if (p->packed.defined()) {
      p->packed = p->packed.to(dev);
      p->scale = p->scale.to(dev);
      p->zero = p->zero.to(dev);
    }
  return in;
}

using DecodeAttention = test::OnEachDevice;

TEST_P(DecodeAttention, MatchesAttentionOnTheDequantizedCache) {
  at::manual_seed(7);
  std::mt19937 rng(11);
  auto pick = [&](std::initializer_list<int64_t> v) { return *(v.begin() + rng() % v.size()); };
  std::vector<Case> cases = {
      // The paper's setting: 1-bit per-channel K and V with calibration, GQA 4, odd lengths.
      {2, 2, 4, 128, 5, 37, 13, 1, ScaleAxis::Channel, ScaleAxis::Channel, true, true, at::kFloat, 0},
      // Sequence splits with calibration: the score range is taken over every split.
      {1, 1, 8, 64, 3, 301, 2, 1, ScaleAxis::Channel, ScaleAxis::Channel, true, false, at::kFloat, 5},
      // Per-token scales, fp16 and bf16 queries, head_dim 80.
      {3, 2, 1, 80, 0, 29, 7, 2, ScaleAxis::Token, ScaleAxis::Token, false, true, at::kHalf, 0},
      {1, 4, 2, 80, 4, 17, 0, 4, ScaleAxis::Channel, ScaleAxis::Token, true, false, at::kBFloat16, 3},
      // Long visual segments: several score and value chunks of the 1-bit tensor-core path.
      {1, 2, 1, 128, 3, 2100, 5, 1, ScaleAxis::Channel, ScaleAxis::Channel, true, true, at::kHalf, 0},
      {2, 1, 8, 64, 0, 1500, 1, 1, ScaleAxis::Token, ScaleAxis::Channel, true, false, at::kFloat, 0},
      // 64 x 32 x 4 = 8192 query rows: on CUDA the merge's warp-per-row kernel (large batches).
      {64, 32, 4, 64, 3, 37, 5, 1, ScaleAxis::Channel, ScaleAxis::Token, true, false, at::kHalf, 0},
      // Per-token value scales near 100: p times the scale is the GQA kernel's value operand
      // (bf16 times a power of two until 3e1f500, which overflowed to inf from a scale of 4;
      // now 16-bit fixed point up to the split's largest scale).
      {2, 2, 4, 128, 3, 300, 5, 1, ScaleAxis::Channel, ScaleAxis::Token, true, false, at::kBFloat16, 0, 40.0},
      // The GQA 1-bit kernel's other shapes: an odd group (its last head pair has one head)
      // at head_dim 32 (four warps per 16-channel tile), a partial last 256-token block; and
      // groups of 2 at head_dim 128 over two splits.
      {1, 2, 3, 32, 2, 700, 3, 1, ScaleAxis::Channel, ScaleAxis::Token, true, false, at::kHalf, 0},
      {2, 1, 2, 128, 0, 520, 4, 1, ScaleAxis::Token, ScaleAxis::Channel, false, true, at::kBFloat16, 2},
      // The system segment one copy for the whole batch (a shared system prompt): batch stride 0
      // in the 16-bit kernels, bf16 on the tensor-core kernel, fp32 on the CUDA-core one, with
      // and without a padding mask.
      {3, 2, 4, 128, 41, 300, 9, 1, ScaleAxis::Channel, ScaleAxis::Channel, true, false, at::kBFloat16, 0, 1.0, true},
      {40, 8, 4, 128, 41, 64, 30, 1, ScaleAxis::Channel, ScaleAxis::Channel, true, false, at::kHalf, 0, 1.0, true},
      {3, 2, 2, 64, 7, 37, 5, 1, ScaleAxis::Token, ScaleAxis::Channel, false, true, at::kFloat, 0, 1.0, true},
  };
  for (int i = 0; i < 28; ++i) {
    Case c;
    c.batch = pick({1, 3});
    c.kv_heads = pick({1, 2});
    c.groups = pick({1, 4, 8});
    c.head_dim = pick({64, 80, 128});
    c.system = pick({0, 5});
    c.visual = pick({1, 37, 130});
    c.text = pick({0, 1, 13});
    c.bits = static_cast<int>(pick({1, 2, 4, 8}));
    c.key_axis = rng() % 2 ? ScaleAxis::Channel : ScaleAxis::Token;
    c.value_axis = rng() % 2 ? ScaleAxis::Channel : ScaleAxis::Token;
    c.calibrate = rng() % 2;
    c.mask = rng() % 2;
    c.dtype = std::vector<at::ScalarType>{at::kFloat, at::kHalf, at::kBFloat16}[rng() % 3];
    c.splits = pick({0, 1, 4});
    cases.push_back(c);
  }
  for (const Case& c : cases) {
    Built b = build(c);
    const at::Tensor want = expected_attention(b.in);
    DecodeAttentionInputs dev = to_device(b.in, GetParam());
    // The text segment as a cache holds it: a view of the first tokens of a larger buffer.
    for (at::Tensor* t : {&dev.full[1].k, &dev.full[1].v}) {
      at::Tensor big = at::zeros({t->size(0), t->size(1), t->size(2) + 5, t->size(3)}, t->options());
      big.narrow(2, 0, t->size(2)).copy_(*t);
      *t = big.narrow(2, 0, t->size(2));
    }
    const at::Tensor got = kernels::decode_attention(dev).cpu().to(at::kDouble);
    ASSERT_EQ(got.sizes(), want.sizes()) << c.str();
    // Allowed: a thousandth of the largest value quantization step (float32 accumulation
    // order) plus the rounding of the output to the query's dtype.
    const double eps = c.dtype == at::kFloat ? 1e-6 : c.dtype == at::kHalf ? 1e-3 : 8e-3;
    const double tol = 1e-3 * std::max(b.value_step, 1.0) + 2 * eps * want.abs().max().item<double>();
    const double err = (got - want).abs().max().item<double>();
    EXPECT_LE(err, tol) << c.str();
  }
}

// 16-bit segments alone (on CUDA the tensor-core kernel: tiles of 16 tokens across segments,
// splits, warps' online softmax): lengths off the tile size, one to three segments, masks,
// a device-side length below the buffer's, every head dim the kernel takes and GQA 1-8.
TEST_P(DecodeAttention, SixteenBitSegmentsOfAnyLength) {
  at::manual_seed(17);
  std::mt19937 rng(23);
  auto pick = [&](std::initializer_list<int64_t> v) { return *(v.begin() + rng() % v.size()); };
  for (int i = 0; i < 24; ++i) {
    const int64_t B = pick({1, 2, 3}), H = pick({1, 2}), G = pick({1, 3, 4, 8}), D = pick({32, 64, 80, 96, 128});
    const at::ScalarType dtype = rng() % 2 ? at::kHalf : at::kBFloat16;
    DecodeAttentionInputs in;
    in.q = at::randn({B, H * G, D}).to(dtype);
    in.scale = 1.0 / std::sqrt(static_cast<double>(D));
    in.splits = pick({0, 0, 1, 3, 7});
    const int64_t segments = pick({1, 2, 3});
    for (int64_t j = 0; j < segments; ++j) {
      const int64_t len = pick({1, 15, 16, 17, 41, 300, 1027});
      kernels::FullKV f{random_kv(B, H, len, D, true).to(dtype), random_kv(B, H, len, D, false).to(dtype), {}, {}};
      if (rng() % 2 && len > 1) {
        f.mask = at::zeros({B, len});
        for (int64_t b = 0; b + 1 < B; ++b) f.mask[b].narrow(0, 0, std::min<int64_t>(len - 1, 5 * b + 3)).fill_(-INFINITY);
      }
      if (rng() % 3 == 0) f.length = at::full({1}, static_cast<int>(rng() % len) + 1, at::kInt);
      in.full.push_back(f);
    }
    // The reference over the valid tokens only.
    DecodeAttentionInputs valid = in;
    for (auto& f : valid.full)
      if (f.length.defined()) {
        const int64_t n = f.length.item<int>();
        f.k = f.k.narrow(2, 0, n);
        f.v = f.v.narrow(2, 0, n);
        if (f.mask.defined()) f.mask = f.mask.narrow(1, 0, n);
        f.length = at::Tensor();
      }
    const at::Tensor want = expected_attention(valid);
    DecodeAttentionInputs dev = to_device(in, GetParam());
    for (auto& f : dev.full)
      if (f.length.defined()) f.length = f.length.to(GetParam());
    const at::Tensor got = kernels::decode_attention(dev).cpu().to(at::kDouble);
    const double eps = dtype == at::kHalf ? 1e-3 : 8e-3;
    const double err = (got - want).abs().max().item<double>();
    EXPECT_LE(err, 2 * eps * want.abs().max().item<double>())
        << "B=" << B << " H=" << H << " G=" << G << " D=" << D << " " << c10::toString(dtype) << " segments=" << segments
        << " splits=" << in.splits;
  }
}

TEST_P(DecodeAttention, RejectsMisshapenInputs) {
  Built b = build({1, 2, 2, 64, 2, 9, 3, 1, ScaleAxis::Channel, ScaleAxis::Channel, true, false, at::kFloat, 0});
  auto in = to_device(b.in, GetParam());
  auto bad = in;
  bad.key.packed = bad.key.packed.narrow(3, 0, 4);
  EXPECT_THROW(kernels::decode_attention(bad), c10::Error);
  bad = in;
  bad.full[0].k = bad.full[0].k.to(at::kHalf);
  EXPECT_THROW(kernels::decode_attention(bad), c10::Error);
  bad = in;
  bad.q = bad.q.narrow(1, 0, 3);  // 3 query heads over 2 KV heads
  EXPECT_THROW(kernels::decode_attention(bad), c10::Error);
}

TEST_P(DecodeAttention, TokenWordsHoldThirtyTwoTokensOfOneChannel) {
  const at::Tensor codes = at::randint(0, 2, {2, 3, 77, 64}, at::kByte);
  const at::Tensor words = kernels::token_words(kernels::pack_codes(codes, 1).to(GetParam()), 77).cpu();
  ASSERT_EQ(words.sizes(), (std::vector<int64_t>{2, 3, 3, 64}));
  const auto* w = reinterpret_cast<const uint32_t*>(words.data_ptr<int32_t>());
  auto c = codes.accessor<uint8_t, 4>();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t t = 0; t < 96; ++t)
        for (int64_t d = 0; d < 64; d += 7) {
          const uint32_t bit = (w[((b * 3 + h) * 3 + t / 32) * 64 + d] >> (t % 32)) & 1u;
          ASSERT_EQ(bit, t < 77 ? c[b][h][t][d] : 0u) << b << " " << h << " " << t << " " << d;
        }
}

CALIBQ_ON_EACH_DEVICE(DecodeAttention);

// The cache hands the kernel exactly its blocks: the reference on the cache's kernel inputs
// equals the cache's own attention (tensor-op path), for the layouts the kernel takes.
TEST(DecodeAttentionCache, KernelInputsAreTheCachesAttention) {
  at::manual_seed(3);
  for (const std::string spec : {"calibquant:bits=1", "calibquant:bits=2", "post_scaled:bits=1,axis=token",
                                 "post_scaled:bits=4,axis=tensor"}) {
    LayerKVCache cache(make_kv_cache_config(spec, spec, "visual"));
    const int64_t b = 2, h = 2, d = 64;
    cache.prefill(random_kv(b, h, 40, d, true), random_kv(b, h, 40, d, false), 4, 25);
    cache.append(at::randn({b, h, 1, d}), at::randn({b, h, 1, d}));
    const at::Tensor q = at::randn({b, 8, 1, d});
    at::Tensor mask = at::zeros({b, 1, 1, cache.length()});
    mask[0][0][0][30] = -INFINITY;  // a padded text position
    auto in = cache.decode_kernel_inputs(q, 0.125, mask);
    ASSERT_TRUE(in.has_value()) << spec;
    EXPECT_EQ(in->calibrate, spec.rfind("calibquant", 0) == 0) << spec;  // calibquant calibrates at 1-2 bits
    const at::Tensor want = cache.attend(q, 0.125, mask).squeeze(2);
    const at::Tensor got = kernels::decode_attention_cpu(*in);
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-4) << spec;
  }
  // Layouts the kernel does not take fall back to the tensor-op path.
  for (const std::string spec : {"uniform:bits=2", "group:bits=2,axis=channel,group_size=8", "token_drop"}) {
    LayerKVCache cache(make_kv_cache_config(spec, spec, "visual"));
    cache.prefill(at::randn({1, 2, 40, 64}), at::randn({1, 2, 40, 64}), 4, 25,
                  spec == "token_drop" ? at::rand({1, 2, 25}) : at::Tensor());
    EXPECT_FALSE(cache.decode_kernel_inputs(at::randn({1, 2, 1, 64}), 0.125).has_value()) << spec;
  }
}

// On CUDA, the cache's attend runs the kernel and agrees with the same cache on the CPU.
TEST(DecodeAttentionCache, CudaAttendEqualsCpu) {
  if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(5);
  for (auto dtype : {at::kFloat, at::kHalf}) {
    const at::Tensor k = random_kv(2, 2, 300, 128, true).to(dtype), v = random_kv(2, 2, 300, 128, false).to(dtype);
    const at::Tensor q = at::randn({2, 8, 1, 128}).to(dtype);
    LayerKVCache cpu(make_kv_cache_config("calibquant", "calibquant", "visual"));
    LayerKVCache gpu(make_kv_cache_config("calibquant", "calibquant", "visual"));
    cpu.prefill(k.to(at::kFloat), v.to(at::kFloat), 20, 256);
    gpu.prefill(k.cuda(), v.cuda(), 20, 256);
    ASSERT_TRUE(gpu.decode_kernel_inputs(q.cuda(), 0.088).has_value());
    const at::Tensor want = cpu.attend(q.to(at::kFloat), 0.088);
    const at::Tensor got = gpu.attend(q.cuda(), 0.088).cpu().to(at::kFloat);
    EXPECT_LE((got - want).abs().max().item<double>(), dtype == at::kFloat ? 1e-3 : 2e-2) << c10::toString(dtype);
  }
}

}  // namespace
}  // namespace calibq
