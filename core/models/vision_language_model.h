// What LLaVA-style families share: text embeddings with the image features scattered over
// the image tokens, a LLaMA-family decoder with one LayerKVCache per layer, prefill logits
// and greedy decoding. A family supplies its vision tower and projector (image_features).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/models/llama_decoder.h"
#include "core/models/model.h"

namespace calibq {

class VisionLanguageModel : public MultimodalModel {
 public:
  at::Tensor forward_logits(const ModelInputs& inputs) override;
  at::Tensor generate_greedy(const ModelInputs& inputs, int64_t new_tokens, const KVCacheConfig& kv) override;
  GenerationResult generate(const ModelInputs& inputs, const GenerationConfig& gen, const KVCacheConfig& kv) override;
  GenerationResult generate_parts(int64_t batch, const InputsOf& part, const GenerationConfig& gen,
                                  const KVCacheConfig& kv) override;
  std::pair<int64_t, int64_t> observe_prefill(const ModelInputs& inputs, const PrefillObserver& observe) override;
  at::Tensor forward_positions(const ModelInputs& inputs) override { return rope_positions(inputs, mask_of(inputs), false).positions; }
  const ModelConfig& config() const override { return config_; }
  const std::string& load_report() const override { return report_; }

 protected:
  VisionLanguageModel(ModelConfig config, at::ScalarType dtype, at::Device device)
      : config_(std::move(config)), dtype_(dtype), device_(device) {}
  // Loads the decoder under the first of `prefixes` the checkpoint has, and its head under
  // the first of `lm_heads` it has (none: tied or missing, as the config says).
  void load_decoder(WeightLoader& w, const std::vector<std::string>& prefixes, const std::vector<std::string>& lm_heads,
                    const DecoderNames& names = DecoderNames{});
  // Pixels (the family's layout: [B, C, H, W], tiles, or Qwen2-VL's flattened patches with
  // their image_grid_thw) -> projected features, [..., text hidden], one row per image token.
  virtual at::Tensor image_features(const at::Tensor& pixel_values, const at::Tensor& image_grid_thw) const = 0;
  // RoPE positions of a prefill, [B, T] (or [3, B, T] for M-RoPE), and each sample's first
  // decode position [B, 1]. `mask` [B, T] (int64, on the device) is the attention mask.
  // The default is transformers': a forward numbers every token 0..T-1; generate counts the
  // unmasked ones (cumsum(mask) - 1, padded tokens at 1).
  struct RopePositions {
    at::Tensor positions, next;
  };
  virtual RopePositions rope_positions(const ModelInputs& in, const at::Tensor& mask, bool generating) const;

  // The attention mask on the device as int64 (ones where the inputs have none).
  at::Tensor mask_of(const ModelInputs& in) const;

  ModelConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  std::unique_ptr<LlamaDecoder> decoder_;
  std::string report_;

 private:
  std::vector<LayerKVCache> make_caches(const KVCacheConfig& kv) const;
  at::Tensor neg_inf() const;
  at::Tensor prefill_mask(const ModelInputs& in, const at::Tensor& embeds) const;
  // Embeddings with image features in place; the system length (tokens before the first
  // image token), the visual length, and whether the image tokens form one run (several
  // images with text between them do not: the cache's visual segment cannot hold them).
  struct Embedded {
    at::Tensor embeds;
    int64_t system_len = 0, visual_len = 0;
    bool visual_one_run = true;
  };
  Embedded input_embeddings(const ModelInputs& in) const;
};

// The first prefix under which `probe` exists in the checkpoint (else the first prefix).
std::string first_prefix(const WeightLoader& w, const std::vector<std::string>& prefixes, const std::string& probe);

}  // namespace calibq
