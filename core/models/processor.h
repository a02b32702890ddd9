// What turns an (image, prompt) pair into the tensors a model takes, as the family's
// Hugging Face processor does: the chat template (written here in C++, checked against
// apply_chat_template), the image placeholder expanded to one token per visual feature,
// the tokenizer (with BOS), the image processor; and back from tokens to text.
// Batches pad between the image and the text, so that every sample's image tokens sit at
// the same positions (the layout the KV cache's segments need) and positions and masks
// make the padding invisible.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config/hf_config.h"
#include "core/models/model.h"
#include "core/tokenizers/tokenizer.h"
#include "core/vision/image_processor.h"

namespace calibq {

struct ProcessedSample {
  std::string chat_text;       // the template's text, placeholder not yet expanded
  std::vector<int64_t> ids;    // placeholder expanded, special tokens added
  at::Tensor pixel_values;     // LLaVA [3, H, W]; InternVL [tiles, 3, H, W]; Qwen2-VL [patches, 3 * 2 * 14 * 14];
                               // undefined without an image
  at::Tensor image_grid_thw;   // Qwen2-VL: [1, 3] (t, h, w) in patches
};

class ModelProcessor {
 public:
  // Reads the tokenizer (tokenizer.json, else tokenizer.model), the image processor config
  // and generation_config.json of `dir`.
  static ModelProcessor load(const std::string& dir, const ModelConfig& config);

  // One user turn (the image first, then the text) and the assistant's generation prompt.
  std::string chat_text(const std::string& prompt, bool with_image) const;
  ProcessedSample process(const RgbImage* image, const std::string& prompt) const;
  // LLaVA: pixel_values [B, 3, H, W]; InternVL and Qwen2-VL: every sample's tiles or patches
  // one after another (Qwen2-VL with image_grid_thw [B, 3]).
  // Pads between the visual and the text tokens (left of everything without an image).
  ModelInputs collate(const std::vector<ProcessedSample>& samples) const;
  // Where a sample's image tokens end (one past the last; 0 without an image): samples batch
  // together only when this is equal (InternVL images of different tile grids differ).
  size_t image_end(const ProcessedSample& sample) const;
  std::string decode(const std::vector<int64_t>& ids) const;  // special tokens skipped

  const std::vector<int64_t>& stop_ids() const { return stop_ids_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t image_token_id() const { return image_token_id_; }
  const ImageProcessorConfig& image_config() const { return image_; }

 private:
  explicit ModelProcessor(std::shared_ptr<const Tokenizer> tok) : tokenizer_(std::move(tok)) {}
  void load_original_internvl(const std::string& dir, const ModelConfig& config);
  ModelFamily family_ = ModelFamily::Llava;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ImageProcessorConfig image_;
  std::string image_token_ = "<image>";
  int64_t image_token_id_ = 0;
  int64_t patch_size_ = 14;
  int64_t extra_image_tokens_ = 1;  // CLS
  bool drop_cls_ = true;            // vision_feature_select_strategy "default"
  // InternVL: <img> + <IMG_CONTEXT> x image_seq_length per tile + </img>. Qwen2-VL: its
  // template writes <|vision_start|><|image_pad|><|vision_end|>; the pad becomes one token per
  // merged patch.
  std::string start_image_token_ = "<img>", end_image_token_ = "</img>";
  // What the chat text holds where the image goes (the image token, or the original InternVL
  // releases' "<image>"), and the original template's system message (empty: none).
  std::string placeholder_;
  std::string system_message_;
  int64_t image_seq_length_ = 256;
  std::vector<int64_t> stop_ids_;
  int64_t pad_id_ = 0;
};

}  // namespace calibq
