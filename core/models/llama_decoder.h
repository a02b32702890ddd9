// The LLaMA-family decoder the multimodal models share (LLaMA/Vicuna, Qwen2 with q/k/v
// biases, InternLM2 with its fused wqkv split at load time): RMSNorm, RoPE (default,
// linear, dynamic below its limit, Qwen2-VL's M-RoPE), GQA attention, SwiGLU MLP. Prefill attends in full precision and hands each layer's K/V to
// its LayerKVCache, which quantizes the configured segments; decode steps attend through
// the caches.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/config/hf_config.h"
#include "core/kv/kv_cache.h"
#include "core/models/weight_loader.h"

namespace calibq {

struct DecoderLayerWeights {
  at::Tensor input_norm, post_norm;
  at::Tensor q, k, v, o;                 // [out, in]
  at::Tensor q_bias, k_bias, v_bias, o_bias;  // undefined where the config has none
  at::Tensor gate, up, down;
  // Fused at load time (LlamaDecoder's constructor): one matmul for q, k and v and one for
  // gate and up, whose rows q/k/v and gate/up then view. A decode step is bound by the host's
  // per-operation cost at small batches, so fewer, larger operations are faster.
  at::Tensor qkv, qkv_bias, gate_up;
};

struct DecoderWeights {
  at::Tensor embed, norm, lm_head;  // lm_head is embed when the embeddings are tied
  std::vector<DecoderLayerWeights> layers;
};

// Checkpoint names of a decoder's tensors, relative to its prefix (layer names to
// "layers.N."). The defaults are transformers' LLaMA / Qwen2 names; a family whose original
// checkpoints use others (InternLM2 in InternVL's trust_remote_code folders) passes its table.
struct DecoderNames {
  std::string embed = "embed_tokens.weight", norm = "norm.weight";
  std::string input_norm = "input_layernorm.weight", post_norm = "post_attention_layernorm.weight";
  std::string q = "self_attn.q_proj", k = "self_attn.k_proj", v = "self_attn.v_proj", o = "self_attn.o_proj";
  // Non-empty: q, k and v are one fused tensor in InternLM2's layout, per KV head its
  // query heads, then its key, then its value ([kv_heads, groups + 2, head_dim, hidden]);
  // split at load time.
  std::string fused_qkv;
  std::string gate = "mlp.gate_proj.weight", up = "mlp.up_proj.weight", down = "mlp.down_proj.weight";
};

// A LLaMA-layout decoder under `prefix` ("language_model.model.") and its head (`lm_head`,
// e.g. "language_model.lm_head.weight").
DecoderWeights load_llama_decoder(WeightLoader& loader, const TextConfig& config, const std::string& prefix,
                                  const std::string& lm_head, const DecoderNames& names = DecoderNames{});

// Sees each layer's prefill queries, keys (both after RoPE) and values, [B, heads, T, d],
// as attention gets them (KV statistics, quantization error on real activations).
using PrefillObserver = std::function<void(size_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v)>;

class LlamaDecoder {
 public:
  LlamaDecoder(TextConfig config, DecoderWeights weights);

  at::Tensor embed(const at::Tensor& ids) const;
  // embeds [B, T, H]; positions [B, T] (int64), or [3, B, T] for M-RoPE; additive mask [B, 1, T, T], or undefined for
  // plain causal attention (no padding: CUDA then takes the flash kernel). Fills `caches`
  // (one per layer, already configured) with each layer's keys after RoPE and values, the
  // first system_len tokens as the system segment and the next visual_len as visual.
  // `observe`, when given, sees every layer's q, k, v. share_system: every sequence's system
  // tokens are the same (LayerKVCache::prefill holds them once).
  at::Tensor prefill(const at::Tensor& embeds, const at::Tensor& positions, const at::Tensor& mask,
                     std::vector<LayerKVCache>& caches, int64_t system_len, int64_t visual_len,
                     const PrefillObserver& observe = {}, bool share_system = false) const;
  // One decode step: embeds [B, 1, H] at positions [B, 1]; attends over the caches.
  at::Tensor decode(const at::Tensor& embeds, const at::Tensor& positions, std::vector<LayerKVCache>& caches,
                    const at::Tensor& mask = {}) const;
  // Final norm already applied by prefill/decode: hidden [B, T, H] -> logits [B, T, V].
  at::Tensor logits(const at::Tensor& hidden) const;
  const TextConfig& config() const { return config_; }
  // Whether the layers sit on more than one device (a model split across GPUs).
  bool spans_devices() const;

 private:
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) const;
  std::pair<at::Tensor, at::Tensor> rope(const at::Tensor& positions, at::ScalarType dtype) const;
  // The MLP's output (down(silu(gate) * up)), without the residual: the next norm adds it.
  at::Tensor mlp(const DecoderLayerWeights& l, const at::Tensor& x) const;
  // {x + delta, rms_norm(x + delta, w)}; with delta undefined (before the first layer's norm),
  // {x, rms_norm(x, w)}.
  std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w) const;
  // Every layer with `attend(layer, q, k, v)` ([B, heads, T, d], after RoPE) supplying the
  // attention output [B, heads, T, d]; returns the final-normed hidden states.
  using Attend = std::function<at::Tensor(size_t, const at::Tensor&, const at::Tensor&, const at::Tensor&)>;
  at::Tensor run_layers(const at::Tensor& embeds, const at::Tensor& positions, const Attend& attend) const;

  TextConfig config_;
  DecoderWeights w_;
  at::Tensor rope_exponents_;  // float32 [head_dim / 2]: 0, 2, 4, ... over head_dim (the dynamic base's too)
  at::Tensor inv_freq_;  // float32 [head_dim / 2]
  at::Tensor mrope_axis_;  // M-RoPE: per column of cos/sin, the position axis (0 t, 1 h, 2 w) it takes
};

}  // namespace calibq
