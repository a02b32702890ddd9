// The per-layer KV cache with segments [system | visual | text].
//
// After prefill the chosen segments (default: visual only, as in the paper) are
// quantized once by the key and value quantizers; decode steps append full-precision
// text tokens. Attention runs one softmax over all segments: full-precision blocks by
// plain matmuls, quantized ones through their QuantizedTensor (dequantize-then-attend,
// or on the codes for post-scaled formats), with the key quantizer's calibration applied
// to the visual scores. On CUDA, one-token decode steps over post-scaled visual codes run
// the fused decode-attention kernel instead. The cache knows no model family.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/quant/quantizer.h"
#include "kernels/decode_attention.h"

namespace calibq {

enum class Segment { System, Visual, Text };
const char* segment_name(Segment s);

// Which segments are quantized: parsed from "visual" (the default), "all", or a comma
// list of system, visual, text.
struct SegmentSet {
  std::array<bool, 3> on{false, true, false};
  bool contains(Segment s) const { return on[static_cast<size_t>(s)]; }
  std::string to_string() const;
  static SegmentSet parse(const std::string& text, const std::string& where = "");
};

struct KVCacheConfig {
  std::shared_ptr<const KVQuantizer> key;    // null: no quantization
  std::shared_ptr<const KVQuantizer> value;  // null: no quantization
  SegmentSet quantized;
};

struct SegmentBytes {
  int64_t system = 0, visual = 0, text = 0;
  int64_t total() const { return system + visual + text; }
  SegmentBytes& operator+=(const SegmentBytes& o) {
    system += o.system;
    visual += o.visual;
    text += o.text;
    return *this;
  }
};

// The cache configuration from quantizer specs as users write them ("calibquant:bits=1";
// empty: no quantization) and a segment list. Errors name them as `prefix` + "key",
// "value" or "segments" (e.g. prefix "--kv-" names the flags).
KVCacheConfig make_kv_cache_config(const std::string& key_spec, const std::string& value_spec,
                                   const std::string& segments, const std::string& prefix = "");

class LayerKVCache {
 public:
  // Checks the pairing of the quantizers (token_drop must drop the same tokens of K and V).
  explicit LayerKVCache(KVCacheConfig config);

  // k, v: [B, H, N, D] after prefill (keys after RoPE), N = system_len + visual_len + text.
  // visual_importance: [B, H, visual_len], the prefill attention each visual token
  // received (for token_drop select=attention); may be undefined.
  // share_system: the caller says that every sequence's system tokens are the same tokens (the
  // same for every cache this one will be joined with): the system segment is then held once,
  // row 0's keys and values expanded over the batch (batch stride 0), so the cache holds 1/B
  // of its bytes and the decode kernel reads one copy for every sequence. Other rows' own
  // values are dropped: they equal row 0's up to the last bits of the batch's arithmetic.
  void prefill(const at::Tensor& k, const at::Tensor& v, int64_t system_len, int64_t visual_len,
               const at::Tensor& visual_importance = {}, bool share_system = false);
  // k, v: [B, H, T, D] of T new tokens, kept in full precision as text.
  void append(const at::Tensor& k, const at::Tensor& v);
  // Room for `tokens` more appended tokens, allocated now: decoding then never regrows the
  // text buffer (a doubling would copy it and, at large batches, waste up to half of it).
  void reserve(int64_t tokens);
  // CUDA graphs: from begin_graph_decode on, append() writes its token at a device-side
  // position and the decode kernel reads the text block's device-side length, so that one
  // captured decode step replays for every later token. Possible with CUDA, a reserved text
  // buffer and a layout the decode kernel takes (no padding mask); begin throws otherwise.
  bool graph_decode_possible() const;
  void begin_graph_decode();
  // Host bookkeeping after `tokens` graph replays appended that many tokens each.
  void advance_graph_decode(int64_t tokens);

  // The caches of prefill micro-batches as one batch, in order (each part's blocks equal in
  // segments and lengths; a part may appear more than once). Join layer by layer and drop
  // each layer's parts right after, so that at most one extra copy of a layer is held.
  static LayerKVCache concat_batch(const std::vector<const LayerKVCache*>& parts);

  // q: [B, Hq, T, D] (Hq a multiple of H). Pre-softmax scores [B, Hq, T, length()],
  // scaled by `scale` and with the visual calibration applied.
  at::Tensor scores(const at::Tensor& q, double scale) const;
  // softmax(scores + mask) · V as [B, Hq, T, D] in q's dtype. additive_mask broadcasts to
  // [B, Hq, T, length()] (e.g. causal masking of several new tokens); may be undefined.
  at::Tensor attend(const at::Tensor& q, double scale, const at::Tensor& additive_mask = {}) const;

  // The inputs of the fused decode-attention kernel (kernels/decode_attention.h) for one new
  // token q [B, Hq, 1, D], when this cache's layout is one it takes: full-precision blocks
  // and at most one quantized block, the visual one, whose keys and values are both
  // post-scaled codes with whole-segment scales (post_scaled, calibquant). attend() runs the
  // kernel on CUDA whenever this gives inputs; std::nullopt otherwise.
  std::optional<kernels::DecodeAttentionInputs> decode_kernel_inputs(const at::Tensor& q, double scale,
                                                                     const at::Tensor& additive_mask = {}) const;

  // Whether prefill should pass visual_importance (a quantizer of the visual segment ranks
  // tokens by prefill attention).
  bool needs_visual_importance() const;

  int64_t length() const { return length_; }
  int64_t batch() const { return batch_; }
  int64_t kv_heads() const { return kv_heads_; }
  // True bytes held, per segment: codes, scales, full-precision parts.
  SegmentBytes bytes() const;
  // What the cache would hold in fp16 without quantization.
  int64_t fp16_bytes() const;
  // Keys or values as attention sees them ([B, H, length(), D]; dropped tokens as zeros).
  at::Tensor keys() const;
  at::Tensor values() const;
  const KVCacheConfig& config() const { return config_; }

 private:
  struct Block {
    Segment segment;
    int64_t begin = 0, length = 0;
    at::Tensor k, v;                       // full precision (when not quantized)
    // The text block's storage once decoding appends to it: k and v are views of its first
    // `length` tokens, and the capacity doubles when full, so a decode step copies only its
    // own tokens (a concatenation would copy the whole block every step).
    at::Tensor k_store, v_store;
    bool shared = false;                   // one row for the whole batch (share_system)
    std::unique_ptr<QuantizedTensor> qk, qv;
    // The decode kernel's view of qk/qv (visual block, post-scaled formats), made once at
    // prefill: on CUDA it includes 1-bit values as token-major words.
    std::optional<kernels::PackedKV> kernel_k, kernel_v;
  };
  // The text block's storage made `capacity` tokens long, its tokens copied in.
  void grow_store(Block& b, int64_t capacity) const;
  // Per block, [B, H, M, len] float32 scores for folded queries qf ([B, H, M, D], scaled).
  std::vector<at::Tensor> block_scores(const at::Tensor& qf) const;

  KVCacheConfig config_;
  std::vector<Block> blocks_;
  int64_t length_ = 0;
  int64_t batch_ = 0;
  int64_t kv_heads_ = 0;
  int64_t head_dim_ = 0;
  int64_t reserved_ = 0;  // appended tokens to make room for when the text buffer is made
  // Graph decoding: the text block's length on the device (where append_token writes and the
  // decode kernel reads) and append_token's block counter; undefined otherwise.
  at::Tensor graph_len_, graph_done_;
};

}  // namespace calibq
