// A multimodal model as the harness drives it: prefill logits, and greedy generation
// with the KV quantizers of the quantization library in every layer. One implementation
// per model family (llava.cpp, ...); load_model picks it from config.json.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "core/config/hf_config.h"
#include "core/kv/kv_cache.h"

namespace calibq {

// The tensors transformers' forward takes.
struct ModelInputs {
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor attention_mask;  // [B, T]; undefined: all ones
  at::Tensor pixel_values;    // family-specific layout; undefined: text only
  at::Tensor image_grid_thw;  // Qwen2-VL
};

class MultimodalModel {
 public:
  virtual ~MultimodalModel() = default;
  // Logits of every position, float32 [B, T, V], as transformers' forward gives them.
  virtual at::Tensor forward_logits(const ModelInputs& inputs) = 0;
  // The input ids followed by `new_tokens` greedy tokens (no early stop), [B, T + N].
  // `kv` configures every layer's cache (quantizers and segments); the visual segment is
  // where the image tokens are.
  virtual at::Tensor generate_greedy(const ModelInputs& inputs, int64_t new_tokens, const KVCacheConfig& kv) = 0;
  virtual const ModelConfig& config() const = 0;
  // "llava: 87 tensors loaded, 2 ignored, 0 renamed (0.6 MiB)".
  virtual const std::string& load_report() const = 0;
};

// `dir` holds config.json and the safetensors weights. Throws calibq::Error naming the
// file and tensor for anything missing, extra or misshapen.
std::unique_ptr<MultimodalModel> load_model(const std::string& dir, at::ScalarType dtype = at::kFloat,
                                            at::Device device = at::kCPU);

}  // namespace calibq
