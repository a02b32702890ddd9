// LLaVA-1.5 (LlavaForConditionalGeneration): a CLIP ViT vision tower, a 2-layer GELU
// projector, and a LLaMA decoder; image features replace the image-token embeddings.
// This file holds the family: its modules (CLIP vision, projector), its checkpoint-name
// table and its forward.
#include <fmt/format.h>

#include <cmath>

#include "core/models/attention.h"
#include "core/io/safetensors.h"
#include "core/models/llama_decoder.h"
#include "core/models/model.h"
#include "core/models/vision_language_model.h"
#include "core/models/weight_loader.h"
#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {

namespace {

// --- checkpoint names: transformers' layout first, then the older hub layout ---
struct LlavaNames {
  std::vector<std::string> vision;  // prefixes of the CLIP vision transformer
  std::string projector = "multi_modal_projector.";
  std::vector<std::string> decoder;  // prefixes of the decoder's "model."
  std::vector<std::string> lm_head;
};
const LlavaNames kNames = {
    {"vision_tower.", "vision_tower.vision_model.", "model.vision_tower."},
    "multi_modal_projector.",
    {"language_model.model.", "model.language_model."},
    {"language_model.lm_head.weight", "lm_head.weight"}};

struct ClipLayer {
  at::Tensor ln1_w, ln1_b, ln2_w, ln2_b, q, q_b, k, k_b, v, v_b, o, o_b, fc1, fc1_b, fc2, fc2_b;
};

class ClipVision {
 public:
  ClipVision(WeightLoader& w, const VisionConfig& c, const std::string& p) : c_(c) {
    const int64_t h = c.hidden_size, n = (c.image_size / c.patch_size) * (c.image_size / c.patch_size) + 1;
    class_embedding_ = w.take(p + "embeddings.class_embedding", {h});
    patch_ = w.take(p + "embeddings.patch_embedding.weight", {h, c.num_channels, c.patch_size, c.patch_size});
    position_ = w.take(p + "embeddings.position_embedding.weight", {n, h});
    pre_w_ = w.take(p + "pre_layrnorm.weight", {h});
    pre_b_ = w.take(p + "pre_layrnorm.bias", {h});
    w.ignore_prefix(p + "post_layernorm.");  // the pooled output LLaVA does not use
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string l = p + "encoder.layers." + std::to_string(i) + ".";
      ClipLayer x;
      x.ln1_w = w.take(l + "layer_norm1.weight", {h});
      x.ln1_b = w.take(l + "layer_norm1.bias", {h});
      x.ln2_w = w.take(l + "layer_norm2.weight", {h});
      x.ln2_b = w.take(l + "layer_norm2.bias", {h});
      for (auto [name, weight, bias] : {std::tuple{"q_proj", &x.q, &x.q_b}, {"k_proj", &x.k, &x.k_b},
                                        {"v_proj", &x.v, &x.v_b}, {"out_proj", &x.o, &x.o_b}}) {
        *weight = w.take(l + "self_attn." + name + ".weight", {h, h});
        *bias = w.take(l + "self_attn." + name + ".bias", {h});
      }
      x.fc1 = w.take(l + "mlp.fc1.weight", {c.intermediate_size, h});
      x.fc1_b = w.take(l + "mlp.fc1.bias", {c.intermediate_size});
      x.fc2 = w.take(l + "mlp.fc2.weight", {h, c.intermediate_size});
      x.fc2_b = w.take(l + "mlp.fc2.bias", {h});
      layers_.push_back(std::move(x));
    }
  }

  // pixel_values [B, C, S, S] -> hidden states of every layer (index 0: the embeddings after
  // pre_layrnorm, as transformers' hidden_states tuple).
  std::vector<at::Tensor> hidden_states(const at::Tensor& pixels, int64_t up_to_layer) const {
    const int64_t b = pixels.size(0), h = c_.hidden_size;
    if (pixels.dim() != 4 || pixels.size(1) != c_.num_channels || pixels.size(2) != c_.image_size ||
        pixels.size(3) != c_.image_size)
      fail("llava: pixel_values must be [batch, {}, {}, {}], got {}", c_.num_channels, c_.image_size, c_.image_size,
           shape_str(pixels.sizes()));
    at::Tensor x = at::conv2d(pixels.to(patch_.scalar_type()), patch_, {}, c_.patch_size).flatten(2).transpose(1, 2);
    x = at::cat({class_embedding_.expand({b, 1, h}), x}, 1) + position_.unsqueeze(0);
    x = at::layer_norm(x, {h}, pre_w_, pre_b_, c_.layer_norm_eps);
    std::vector<at::Tensor> out = {x};
    const int64_t heads = c_.num_attention_heads, hd = h / heads, n = x.size(1);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (int64_t i = 0; i < up_to_layer; ++i) {
      const ClipLayer& l = layers_[i];
      at::Tensor r = x;
      at::Tensor y = at::layer_norm(x, {h}, l.ln1_w, l.ln1_b, c_.layer_norm_eps);
      auto split = [&](const at::Tensor& w, const at::Tensor& bias) {
        return at::linear(y, w, bias).view({b, n, heads, hd}).transpose(1, 2);
      };
      at::Tensor q = split(l.q, l.q_b), k = split(l.k, l.k_b), v = split(l.v, l.v_b);
      y = at::linear(full_attention(q, k, v, scale, {}, false, true).transpose(1, 2).reshape({b, n, h}), l.o, l.o_b);
      x = r + y;
      r = x;
      y = at::layer_norm(x, {h}, l.ln2_w, l.ln2_b, c_.layer_norm_eps);
      y = at::linear(activation(at::linear(y, l.fc1, l.fc1_b)), l.fc2, l.fc2_b);
      x = r + y;
      out.push_back(x);
    }
    return out;
  }

 private:
  at::Tensor activation(const at::Tensor& x) const {
    if (c_.hidden_act == "quick_gelu") return x * at::sigmoid(1.702 * x);
    if (c_.hidden_act == "gelu") return at::gelu(x);
    fail("llava: vision hidden_act '{}' is not supported (supported: quick_gelu, gelu)", c_.hidden_act);
  }
  VisionConfig c_;
  at::Tensor class_embedding_, patch_, position_, pre_w_, pre_b_;
  std::vector<ClipLayer> layers_;
};

class LlavaModel : public VisionLanguageModel {
 public:
  LlavaModel(ModelConfig config, WeightLoader& w, at::ScalarType dtype, at::Device device)
      : VisionLanguageModel(std::move(config), dtype, device) {
    const VisionConfig& vc = *config_.vision;
    vision_ = std::make_unique<ClipVision>(w, vc, first_prefix(w, kNames.vision, "embeddings.class_embedding"));
    const int64_t th = config_.text.hidden_size;
    const std::string& pp = kNames.projector;
    proj1_ = w.take(pp + "linear_1.weight", {th, vc.hidden_size});
    proj2_ = w.take(pp + "linear_2.weight", {th, th});
    if (config_.projector_bias) {
      proj1_b_ = w.take(pp + "linear_1.bias", {th});
      proj2_b_ = w.take(pp + "linear_2.bias", {th});
    }
    load_decoder(w, kNames.decoder, kNames.lm_head);
    report_ = w.finish();
    if (config_.vision_feature_layers.size() != 1)
      fail("{}: llava: several vision_feature_layers are not supported yet", config_.source);
    int64_t layer = config_.vision_feature_layers[0];
    feature_index_ = layer < 0 ? vc.num_hidden_layers + 1 + layer : layer;
    if (feature_index_ < 0 || feature_index_ > vc.num_hidden_layers)
      fail("{}: vision_feature_layer {} is outside the {} layers of the vision tower", config_.source, layer, vc.num_hidden_layers);
  }

 protected:
  at::Tensor image_features(const at::Tensor& pixels, const at::Tensor& /*image_grid_thw*/) const override {
    at::Tensor f = vision_->hidden_states(pixels, feature_index_)[feature_index_];
    if (config_.vision_feature_select_strategy == "default") f = f.narrow(1, 1, f.size(1) - 1);
    return at::linear(at::gelu(at::linear(f, proj1_, proj1_b_)), proj2_, proj2_b_);
  }

 private:
  std::unique_ptr<ClipVision> vision_;
  at::Tensor proj1_, proj1_b_, proj2_, proj2_b_;
  int64_t feature_index_ = 0;
};

}  // namespace

std::unique_ptr<MultimodalModel> make_llava_model(ModelConfig config, WeightLoader& w, at::ScalarType dtype,
                                                  at::Device device) {
  return std::make_unique<LlavaModel>(std::move(config), w, dtype, device);
}

}  // namespace calibq
