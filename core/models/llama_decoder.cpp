#include "core/models/llama_decoder.h"

#include <c10/core/DeviceGuard.h>

#include <cmath>
#include <deque>
#include <tuple>

#include "core/models/attention.h"
#include "core/util/error.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/silu_mul.h"

namespace calibq {

DecoderWeights load_llama_decoder(WeightLoader& w, const TextConfig& c, const std::string& p, const std::string& lm_head,
                                  const DecoderNames& n) {
  DecoderWeights d;
  const int64_t h = c.hidden_size, hd = c.head_dim, nq = c.num_attention_heads * hd, nkv = c.num_key_value_heads * hd;
  const int64_t layers = c.num_hidden_layers;
  d.embed = w.take(p + n.embed, {c.vocab_size, h});
  // Split across GPUs: the final norm and the head go with the last layer.
  const at::Device first = w.set_device(w.layer_device(layers - 1, layers));
  d.norm = w.take(p + n.norm, {h});
  if (c.tie_word_embeddings) {
    d.lm_head = d.embed.to(d.norm.device());  // the same tensor on one device; a copy across two
    w.ignore_prefix(lm_head);  // some writers store the tied head anyway
  } else {
    d.lm_head = w.take(lm_head, {c.vocab_size, h});
  }
  // On CUDA the head gets zero rows up to a multiple of 64 (logits() returns the vocabulary's
  // columns): with an odd vocabulary (InternVL2.5's 92553) the logits' rows are not 16-byte
  // aligned and cuBLAS falls back to a Turing-era kernel (cutlass_75_..._align1): 5.5 ms of a
  // 52 ms batch-630 decode step under Nsight Compute, ~7x slower than the aligned GEMM.
  if (d.lm_head.is_cuda() && d.lm_head.size(0) % 64 != 0) {
    const int64_t rows = d.lm_head.size(0), padded = (rows + 63) / 64 * 64;
    d.lm_head = at::cat({d.lm_head, at::zeros({padded - rows, h}, d.lm_head.options())});
  }
  const int64_t kv_heads = c.num_key_value_heads, groups = c.num_attention_heads / kv_heads;
  // InternLM2's wqkv rows: for each KV head, its `groups` query heads, its key, its value.
  auto split_fused = [&](const at::Tensor& t, at::Tensor& q, at::Tensor& k, at::Tensor& v) {
    // Rows grouped per KV head; a weight keeps its input dimension, a bias has none.
    std::vector<int64_t> tail(t.sizes().begin() + 1, t.sizes().end());
    auto shape = [&](std::vector<int64_t> lead) {
      lead.insert(lead.end(), tail.begin(), tail.end());
      return lead;
    };
    at::Tensor x = t.view(shape({kv_heads, groups + 2, hd}));
    q = x.narrow(1, 0, groups).reshape(shape({nq})).contiguous();
    k = x.select(1, groups).reshape(shape({nkv})).contiguous();
    v = x.select(1, groups + 1).reshape(shape({nkv})).contiguous();
  };
  for (int64_t i = 0; i < layers; ++i) {
    w.set_device(w.layer_device(i, layers));
    const std::string l = p + "layers." + std::to_string(i) + ".";
    DecoderLayerWeights x;
    x.input_norm = w.take(l + n.input_norm, {h});
    x.post_norm = w.take(l + n.post_norm, {h});
    if (!n.fused_qkv.empty()) {
      split_fused(w.take(l + n.fused_qkv + ".weight", {nq + 2 * nkv, h}), x.q, x.k, x.v);
      if (c.qkv_bias) split_fused(w.take(l + n.fused_qkv + ".bias", {nq + 2 * nkv}), x.q_bias, x.k_bias, x.v_bias);
    } else {
      x.q = w.take(l + n.q + ".weight", {nq, h});
      x.k = w.take(l + n.k + ".weight", {nkv, h});
      x.v = w.take(l + n.v + ".weight", {nkv, h});
      if (c.qkv_bias) {
        x.q_bias = w.take(l + n.q + ".bias", {nq});
        x.k_bias = w.take(l + n.k + ".bias", {nkv});
        x.v_bias = w.take(l + n.v + ".bias", {nkv});
      }
    }
    x.o = w.take(l + n.o + ".weight", {h, nq});
    if (c.o_bias) x.o_bias = w.take(l + n.o + ".bias", {h});
    x.gate = w.take(l + n.gate, {c.intermediate_size, h});
    x.up = w.take(l + n.up, {c.intermediate_size, h});
    x.down = w.take(l + n.down, {h, c.intermediate_size});
    d.layers.push_back(std::move(x));
  }
  w.set_device(first);
  return d;
}

LlamaDecoder::LlamaDecoder(TextConfig config, DecoderWeights weights) : config_(std::move(config)), w_(std::move(weights)) {
  for (auto& l : w_.layers) {
    const int64_t nq = l.q.size(0), nkv = l.k.size(0), inter = l.gate.size(0);
    l.qkv = at::cat({l.q, l.k, l.v}, 0);
    l.q = l.qkv.narrow(0, 0, nq);
    l.k = l.qkv.narrow(0, nq, nkv);
    l.v = l.qkv.narrow(0, nq + nkv, nkv);
    if (l.q_bias.defined()) {
      l.qkv_bias = at::cat({l.q_bias, l.k_bias, l.v_bias}, 0);
      l.q_bias = l.qkv_bias.narrow(0, 0, nq);
      l.k_bias = l.qkv_bias.narrow(0, nq, nkv);
      l.v_bias = l.qkv_bias.narrow(0, nq + nkv, nkv);
    }
    l.gate_up = at::cat({l.gate, l.up}, 0);
    l.gate = l.gate_up.narrow(0, 0, inter);
    l.up = l.gate_up.narrow(0, inter, inter);
  }
  if (config_.hidden_act != "silu") fail("LLaMA decoder: hidden_act '{}' is not supported (supported: silu)", config_.hidden_act);
  const RopeConfig& r = config_.rope;
  switch (r.type) {
    case RopeType::Default:
    case RopeType::Linear:
    case RopeType::Dynamic:  // dynamic NTK: the default frequencies up to the original length (rope() scales beyond)
      break;
    case RopeType::MRope: {
      // Qwen2-VL: the rotary pairs split into (temporal, height, width) sections, each rotated
      // by its own position; column j of cos/sin takes the position of section j's axis.
      int64_t pairs = 0;
      for (int64_t n : r.mrope_section) pairs += n;
      if (pairs != config_.head_dim / 2)
        fail("LLaMA decoder: mrope_section sums to {} rotary pairs, head_dim {} has {}", pairs, config_.head_dim,
             config_.head_dim / 2);
      if (r.mrope_section.size() != 3) fail("LLaMA decoder: mrope_section needs 3 sections (t, h, w), got {}", r.mrope_section.size());
      // transformers splits cat(freqs, freqs) by mrope_section * 2 and takes chunk i from axis i % 3.
      std::vector<int64_t> axis;
      for (size_t i = 0; i < 6; ++i) axis.insert(axis.end(), r.mrope_section[i % 3], static_cast<int64_t>(i % 3));
      mrope_axis_ = at::tensor(axis, at::kLong).to(w_.embed.device());
      break;
    }
    case RopeType::Llama3:
      if (r.original_max_position_embeddings <= 0 || r.high_freq_factor <= r.low_freq_factor)
        fail("LLaMA decoder: llama3 RoPE needs original_max_position_embeddings > 0 and high_freq_factor > "
             "low_freq_factor (got {}, {}, {})", r.original_max_position_embeddings, r.high_freq_factor, r.low_freq_factor);
      break;
  }
  // As transformers computes it: float32 exponents of an int64 arange.
  const int64_t d = config_.head_dim;
  rope_exponents_ = at::arange(0, d, 2, at::kLong).to(at::kFloat) / static_cast<double>(d);
  inv_freq_ = 1.0 / at::pow(at::scalar_tensor(r.theta, at::kFloat), rope_exponents_);
  if (r.type == RopeType::Linear) inv_freq_ = inv_freq_ / r.factor;
  if (r.type == RopeType::Llama3) {
    // transformers' _compute_llama3_parameters, in its float32 arithmetic: long wavelengths
    // (beyond original / low_freq_factor) divided by `factor`, short ones (below original /
    // high_freq_factor) kept, those between blended smoothly.
    const double old_len = static_cast<double>(r.original_max_position_embeddings);
    const double low_wavelen = old_len / r.low_freq_factor, high_wavelen = old_len / r.high_freq_factor;
    const at::Tensor wavelen = 2 * M_PI / inv_freq_;
    const at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq_ / r.factor, inv_freq_);
    const at::Tensor smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    const at::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
    const at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv_freq_ = at::where(medium, smoothed, scaled);
  }
  inv_freq_ = inv_freq_.to(w_.embed.device());
  rope_exponents_ = rope_exponents_.to(w_.embed.device());
}

at::Tensor LlamaDecoder::embed(const at::Tensor& ids) const { return at::embedding(w_.embed, ids); }

at::Tensor LlamaDecoder::rms_norm(const at::Tensor& x, const at::Tensor& w) const {
  // On CUDA one kernel (kernels/rms_norm.h) with transformers' two roundings; the CPU keeps
  // the tensor-op form (the kernel's CPU reference is a plain loop, slower at prefill sizes).
  if (x.is_cuda()) return kernels::rms_norm(x, w, config_.rms_norm_eps);
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor var = xf.pow(2).mean(-1, true);
  return w * (xf * at::rsqrt(var + config_.rms_norm_eps)).to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> LlamaDecoder::rope(const at::Tensor& positions, at::ScalarType dtype) const {
  // transformers' dynamic NTK scaling: the default frequencies while the longest position
  // seen (max(position_ids) + 1, over the batch) stays within original_max_position_embeddings;
  // beyond it, the base grows to base * (factor * len / original - (factor - 1))^(d / (d - 2))
  // for that forward (keys already cached keep the rotation they got, as there). Computed on
  // the device in float32, as transformers does from its tensor seq_len, and chosen with a
  // `where`: no host read, so a captured decode graph recomputes it every step.
  at::Tensor inv_freq = inv_freq_;
  const RopeConfig& r = config_.rope;
  if (r.type == RopeType::Dynamic && positions.numel() > 0) {
    const int64_t original = r.original_max_position_embeddings > 0 ? r.original_max_position_embeddings
                                                                     : config_.max_position_embeddings;
    const double d = static_cast<double>(config_.head_dim);
    const at::Tensor len = positions.max() + 1;
    const at::Tensor base = at::pow(len * r.factor / static_cast<double>(original) - (r.factor - 1), d / (d - 2)) * r.theta;
    inv_freq = at::where(len > original, 1.0 / at::pow(base.to(at::kFloat), rope_exponents_), inv_freq_);
  }
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, d/2] (M-RoPE: [3, B, T, d/2])
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos().to(dtype), sin = emb.sin().to(dtype);
  if (positions.dim() == 3) {
    // M-RoPE positions [3, B, T] (t, h, w): each column from its section's axis, after the
    // dtype cast as transformers selects. 2-D positions (decode steps, text only) are the
    // three axes at one position, where M-RoPE is the plain RoPE.
    if (!mrope_axis_.defined()) fail("LLaMA decoder: [3, batch, seq] positions need an mrope rope type");
    const at::Tensor idx = mrope_axis_.view({1, 1, 1, -1}).expand({1, emb.size(1), emb.size(2), emb.size(3)});
    cos = cos.gather(0, idx).squeeze(0);
    sin = sin.gather(0, idx).squeeze(0);
  }
  cos = cos.unsqueeze(1);  // [B, 1, T, d]
  sin = sin.unsqueeze(1);
  const int64_t half = sin.size(-1) / 2;
  sin = at::cat({-sin.narrow(-1, 0, half), sin.narrow(-1, half, half)}, -1);  // for apply_rope's roll
  return {cos, sin};
}

namespace {
// A tensor and its copies on the devices of a decoder split across GPUs, each made once (the
// RoPE tables and masks every layer reads).
class PerDevice {
 public:
  explicit PerDevice(at::Tensor t) : t_(std::move(t)) {}
  const at::Tensor& on(const at::Device& device) {
    if (!t_.defined() || t_.device() == device) return t_;
    for (const auto& [d, copy] : copies_)
      if (d == device) return copy;
    copies_.emplace_back(device, t_.to(device));
    return copies_.back().second;
  }

 private:
  at::Tensor t_;
  std::deque<std::pair<at::Device, at::Tensor>> copies_;  // a deque: references stay valid
};

// x cos + rotate_half(x) sin with rotate_half(x) = [-x2, x1]: as a roll of x by half the head
// dimension times sin with its first half negated (rope() returns it so). On CUDA one kernel
// (kernels/rope.h, contiguous output); on the CPU three operations (mul, roll, addcmul)
// instead of seven.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin) {
  if (x.is_cuda()) return kernels::rope(x, cos, signed_sin);
  return at::addcmul(x * cos, at::roll(x, {x.size(-1) / 2}, {-1}), signed_sin);
}
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}
}  // namespace

at::Tensor LlamaDecoder::mlp(const DecoderLayerWeights& l, const at::Tensor& x) const {
  const at::Tensor gu = at::linear(x, l.gate_up);
  const int64_t inter = l.gate.size(0);
  // On CUDA one kernel for silu and the product.
  const at::Tensor gated =
      gu.is_cuda() ? kernels::silu_mul(gu) : at::silu(gu.narrow(-1, 0, inter)) * gu.narrow(-1, inter, inter);
  return at::linear(gated, l.down);
}

std::pair<at::Tensor, at::Tensor> LlamaDecoder::add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                                             const at::Tensor& w) const {
  // No delta before the first layer: the norm alone. On CUDA one kernel (the add's rounding,
  // then the norm's); on the CPU the two ops as they were.
  if (!delta.defined()) return {x, rms_norm(x, w)};
  if (x.is_cuda()) return kernels::add_rms_norm(x, delta, w, config_.rms_norm_eps);
  at::Tensor sum = x + delta;
  return {sum, rms_norm(sum, w)};
}

at::Tensor LlamaDecoder::run_layers(const at::Tensor& embeds, const at::Tensor& positions, const Attend& attend) const {
  const int64_t b = embeds.size(0), t = embeds.size(1), hd = config_.head_dim;
  const int64_t nh = config_.num_attention_heads, nkv = config_.num_key_value_heads;
  auto [cos0, sin0] = rope(positions, embeds.scalar_type());
  PerDevice cos(cos0), sin(sin0);
  // The residual stream x and the last MLP's output `delta`, added by the next norm (each
  // residual add is fused with the RMSNorm after it: add_rms_norm).
  at::Tensor x = embeds, delta;
  const auto move_to = [&](const at::Device& dev) {
    if (x.device() != dev) x = x.to(dev);
    if (delta.defined() && delta.device() != dev) delta = delta.to(dev);
  };
  for (size_t i = 0; i < w_.layers.size(); ++i) {
    const auto& l = w_.layers[i];
    // Split across GPUs: the hidden state follows the layer's weights; the guard makes the
    // layer's device current for calibq's own kernels (ATen's ops guard themselves).
    const at::Device dev = l.input_norm.device();
    const c10::DeviceGuard guard(dev);
    move_to(dev);
    at::Tensor h;
    std::tie(x, h) = add_rms_norm(x, delta, l.input_norm);
    const at::Tensor qkv = linear(h, l.qkv, l.qkv_bias);
    at::Tensor q = qkv.narrow(-1, 0, nh * hd).view({b, t, nh, hd}).transpose(1, 2);
    at::Tensor k = qkv.narrow(-1, nh * hd, nkv * hd).view({b, t, nkv, hd}).transpose(1, 2);
    at::Tensor v = qkv.narrow(-1, (nh + nkv) * hd, nkv * hd).view({b, t, nkv, hd}).transpose(1, 2);
    q = apply_rope(q, cos.on(dev), sin.on(dev));
    k = apply_rope(k, cos.on(dev), sin.on(dev)).contiguous();
    // v as a view of the projection: the decode append reads it strided (no copy kernel);
    // prefill makes it contiguous.
    at::Tensor a = attend(i, q, k, v).transpose(1, 2).reshape({b, t, nh * hd});
    std::tie(x, h) = add_rms_norm(x, linear(a, l.o, l.o_bias), l.post_norm);
    delta = mlp(l, h);
  }
  move_to(w_.norm.device());
  return add_rms_norm(x, delta, w_.norm).second;
}

bool LlamaDecoder::spans_devices() const {
  const at::Device first = w_.embed.device();
  if (w_.lm_head.device() != first) return true;
  for (const auto& l : w_.layers)
    if (l.input_norm.device() != first) return true;
  return false;
}

at::Tensor LlamaDecoder::prefill(const at::Tensor& embeds, const at::Tensor& positions, const at::Tensor& mask_on_first,
                                 std::vector<LayerKVCache>& caches, int64_t system_len, int64_t visual_len,
                                 const PrefillObserver& observe, bool share_system) const {
  if (caches.size() != w_.layers.size()) fail("LLaMA decoder: {} caches for {} layers", caches.size(), w_.layers.size());
  const int64_t groups = config_.num_attention_heads / config_.num_key_value_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(config_.head_dim));
  PerDevice masks(mask_on_first);
  return run_layers(embeds, positions, [&](size_t i, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v_view) {
    const at::Tensor& mask = masks.on(q.device());
    const at::Tensor v = v_view.contiguous();
    if (observe) observe(i, q, k, v);
    // Prefill attends in full precision (the paper's setting); the cache quantizes after.
    at::Tensor kr = k.repeat_interleave(groups, 1), vr = v.repeat_interleave(groups, 1);
    const bool importance_needed = visual_len > 0 && caches[i].needs_visual_importance();
    if (!importance_needed) {
      // Fused attention where nothing needs the probabilities (CUDA; explicit on the CPU).
      caches[i].prefill(k, v, system_len, visual_len, {}, share_system);
      return full_attention(q, kr, vr, scale, mask, true, true);
    }
    const int64_t t = q.size(2);
    const at::Tensor causal =
        mask.defined() ? mask
                       : at::zeros({t, t}, q.options()).masked_fill(at::ones({t, t}, q.options().dtype(at::kBool)).triu(1), -INFINITY);
    at::Tensor s = at::matmul(q, kr.transpose(-1, -2)) * scale + causal;
    at::Tensor pf = at::softmax(s.to(at::kFloat), -1);
    at::Tensor p = pf.to(q.scalar_type());
    // The attention each visual token received, averaged over the queries and over the
    // query heads that share its KV head (what token_drop's select=attention ranks by).
    at::Tensor importance;
    if (visual_len > 0 && caches[i].needs_visual_importance()) {
      const int64_t b = q.size(0), t = q.size(2), kvh = config_.num_key_value_heads;
      importance = pf.narrow(-1, system_len, visual_len).sum(2).div(static_cast<double>(t))
                       .view({b, kvh, groups, visual_len}).mean(2);
    }
    caches[i].prefill(k, v, system_len, visual_len, importance, share_system);
    return at::matmul(p, vr);
  });
}

at::Tensor LlamaDecoder::decode(const at::Tensor& embeds, const at::Tensor& positions, std::vector<LayerKVCache>& caches,
                                const at::Tensor& mask) const {
  const double scale = 1.0 / std::sqrt(static_cast<double>(config_.head_dim));
  PerDevice masks(mask);
  return run_layers(embeds, positions, [&](size_t i, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    caches[i].append(k, v);
    return caches[i].attend(q, scale, masks.on(q.device()));
  });
}

at::Tensor LlamaDecoder::logits(const at::Tensor& hidden) const {
  return at::linear(hidden, w_.lm_head).narrow(-1, 0, config_.vocab_size);  // the head may be padded (above)
}

}  // namespace calibq
