// InternVL (transformers' InternVLForConditionalGeneration: InternVL 2/2.5/3 "-hf"
// checkpoints): the InternViT vision tower (layer scale, LayerNorm or RMSNorm, optional
// QK-norm), pixel shuffle (downsample_ratio 0.5: 4 patches -> 1 token), an MLP projector with
// a LayerNorm, and a Qwen2 / LLaMA decoder. Modules, checkpoint-name table and forward.
#include <fmt/format.h>

#include <cmath>

#include "core/io/safetensors.h"
#include "core/models/model.h"
#include "core/models/vision_language_model.h"
#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {

namespace {

struct InternVLNames {
  std::vector<std::string> vision{"vision_tower.", "model.vision_tower."};
  std::vector<std::string> projector{"multi_modal_projector.", "model.multi_modal_projector."};
  std::vector<std::string> decoder{"language_model.model.", "model.language_model."};
  std::vector<std::string> lm_head{"language_model.lm_head.weight", "lm_head.weight"};
};
const InternVLNames kNames;

struct Norm {
  at::Tensor w, b;  // b undefined for RMSNorm
};

struct VitLayer {
  Norm before, after;
  at::Tensor q, q_b, k, k_b, v, v_b, o, o_b, q_norm, k_norm, fc1, fc1_b, fc2, fc2_b, lambda1, lambda2;
};

class InternViT {
 public:
  InternViT(WeightLoader& w, const VisionConfig& c, const std::string& p) : c_(c) {
    const int64_t h = c.hidden_size, n = (c.image_size / c.patch_size) * (c.image_size / c.patch_size) + 1;
    cls_ = w.take(p + "embeddings.cls_token", {1, 1, h});
    patch_w_ = w.take(p + "embeddings.patch_embeddings.projection.weight", {h, c.num_channels, c.patch_size, c.patch_size});
    patch_b_ = w.take(p + "embeddings.patch_embeddings.projection.bias", {h});
    pos_ = w.take(p + "embeddings.position_embeddings", {1, n, h});
    rms_ = c.norm_type == "rms_norm";
    auto norm = [&](const std::string& name) {
      Norm x{w.take(name + ".weight", {h}), {}};
      if (!rms_) x.b = w.take(name + ".bias", {h});
      return x;
    };
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string l = p + "encoder.layer." + std::to_string(i) + ".";
      VitLayer x;
      x.before = norm(l + "layernorm_before");
      x.after = norm(l + "layernorm_after");
      for (auto [name, weight, bias] : {std::tuple{"q_proj", &x.q, &x.q_b}, {"k_proj", &x.k, &x.k_b}, {"v_proj", &x.v, &x.v_b}}) {
        *weight = w.take(l + "attention." + name + ".weight", {h, h});
        if (c.qkv_bias) *bias = w.take(l + "attention." + name + ".bias", {h});
      }
      x.o = w.take(l + "attention.projection_layer.weight", {h, h});
      x.o_b = w.take(l + "attention.projection_layer.bias", {h});
      if (c.qk_normalization) {
        x.q_norm = w.take(l + "attention.q_norm.weight", {h});
        x.k_norm = w.take(l + "attention.k_norm.weight", {h});
      }
      x.fc1 = w.take(l + "mlp.fc1.weight", {c.intermediate_size, h});
      x.fc1_b = w.take(l + "mlp.fc1.bias", {c.intermediate_size});
      x.fc2 = w.take(l + "mlp.fc2.weight", {h, c.intermediate_size});
      x.fc2_b = w.take(l + "mlp.fc2.bias", {h});
      x.lambda1 = w.take(l + "lambda_1", {h});
      x.lambda2 = w.take(l + "lambda_2", {h});
      layers_.push_back(std::move(x));
    }
    if (!c.use_mean_pooling) final_ = norm(p + "layernorm");
  }

  // Hidden states after `layers` layers (-1: all, then the final norm as last_hidden_state).
  at::Tensor forward(const at::Tensor& pixels, int64_t feature_layer) const {
    const int64_t b = pixels.size(0), h = c_.hidden_size;
    if (pixels.dim() != 4 || pixels.size(1) != c_.num_channels || pixels.size(2) != c_.image_size ||
        pixels.size(3) != c_.image_size)
      fail("internvl: pixel_values must be [tiles, {}, {}, {}], got {}", c_.num_channels, c_.image_size, c_.image_size,
           shape_str(pixels.sizes()));
    at::Tensor x = at::conv2d(pixels, patch_w_, patch_b_, c_.patch_size).flatten(2).transpose(1, 2);
    x = at::cat({cls_.expand({b, 1, h}), x}, 1) + pos_;
    const int64_t layers = static_cast<int64_t>(layers_.size());
    const int64_t stop = feature_layer < 0 ? layers + 1 + feature_layer : feature_layer;
    if (stop < 0 || stop > layers) fail("internvl: vision_feature_layer {} is outside the {} layers", feature_layer, layers);
    const int64_t heads = c_.num_attention_heads, hd = h / heads, n = x.size(1);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (int64_t i = 0; i < stop; ++i) {
      const VitLayer& l = layers_[i];
      at::Tensor y = apply(l.before, x);
      at::Tensor q = at::linear(y, l.q, l.q_b), k = at::linear(y, l.k, l.k_b), v = at::linear(y, l.v, l.v_b);
      if (l.q_norm.defined()) {
        q = rms(q, l.q_norm, 1e-6);  // InternVLVisionRMSNorm's default eps
        k = rms(k, l.k_norm, 1e-6);
      }
      auto heads_of = [&](const at::Tensor& t) { return t.view({b, n, heads, hd}).transpose(1, 2); };
      at::Tensor p = at::softmax(at::matmul(heads_of(q), heads_of(k).transpose(-1, -2)) * scale, -1);
      at::Tensor a = at::matmul(p, heads_of(v)).transpose(1, 2).reshape({b, n, h});
      x = x + l.lambda1 * at::linear(a, l.o, l.o_b);
      y = at::linear(activation(at::linear(apply(l.after, x), l.fc1, l.fc1_b)), l.fc2, l.fc2_b);
      x = x + l.lambda2 * y;
    }
    // transformers returns last_hidden_state (after the final norm) for layer -1.
    if (stop == layers && final_.w.defined()) x = apply(final_, x);
    return x;
  }

 private:
  at::Tensor rms(const at::Tensor& x, const at::Tensor& w, double eps) const {
    at::Tensor xf = x.to(at::kFloat);
    return w * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps)).to(x.scalar_type());
  }
  at::Tensor apply(const Norm& n, const at::Tensor& x) const {
    return rms_ ? rms(x, n.w, c_.layer_norm_eps) : at::layer_norm(x, {x.size(-1)}, n.w, n.b, c_.layer_norm_eps);
  }
  at::Tensor activation(const at::Tensor& x) const {
    if (c_.hidden_act == "gelu") return at::gelu(x);
    fail("internvl: vision hidden_act '{}' is not supported (supported: gelu)", c_.hidden_act);
  }
  VisionConfig c_;
  bool rms_ = false;
  at::Tensor cls_, patch_w_, patch_b_, pos_;
  std::vector<VitLayer> layers_;
  Norm final_;
};

// transformers' InternVLModel.pixel_shuffle: [B, W, H, C] -> [B, W*s, H*s, C/s^2].
at::Tensor pixel_shuffle(const at::Tensor& x, double s) {
  const int64_t b = x.size(0), w = x.size(1), h = x.size(2), c = x.size(3);
  const int64_t hs = static_cast<int64_t>(h * s), ws = static_cast<int64_t>(w * s);
  if (hs * std::llround(1 / s) != h || ws * std::llround(1 / s) != w)
    fail("internvl: a {}x{} feature grid does not divide by downsample_ratio {}", w, h, s);
  at::Tensor y = x.reshape({b, w, hs, static_cast<int64_t>(c / s)}).permute({0, 2, 1, 3}).contiguous();
  y = y.view({b, hs, ws, static_cast<int64_t>(c / (s * s))});
  return y.permute({0, 2, 1, 3}).contiguous();
}

class InternVLModel : public VisionLanguageModel {
 public:
  InternVLModel(ModelConfig config, const SafetensorsCheckpoint& ck, at::ScalarType dtype, at::Device device)
      : VisionLanguageModel(std::move(config), dtype, device) {
    if (config_.original_layout)
      fail("{}: InternVL's original (trust_remote_code) layout cannot run yet; the transformers layout (-hf) can",
           config_.source);
    WeightLoader w(ck, "internvl", dtype, device);
    const VisionConfig& vc = *config_.vision;
    vision_ = std::make_unique<InternViT>(w, vc, first_prefix(w, kNames.vision, "embeddings.cls_token"));
    const int64_t th = config_.text.hidden_size;
    const int64_t r = std::llround(1.0 / config_.downsample_ratio);
    const int64_t in = vc.hidden_size * r * r;
    const std::string pp = first_prefix(w, kNames.projector, "linear_1.weight");
    ln_w_ = w.take(pp + "layer_norm.weight", {in});
    ln_b_ = w.take(pp + "layer_norm.bias", {in});
    proj1_ = w.take(pp + "linear_1.weight", {th, in});
    proj1_b_ = w.take(pp + "linear_1.bias", {th});
    proj2_ = w.take(pp + "linear_2.weight", {th, th});
    proj2_b_ = w.take(pp + "linear_2.bias", {th});
    load_decoder(w, kNames.decoder, kNames.lm_head);
    report_ = w.finish();
    if (config_.vision_feature_layers.size() != 1) fail("{}: internvl: one vision_feature_layer is supported", config_.source);
    if (config_.projector_hidden_act != "gelu")
      fail("{}: internvl: projector_hidden_act '{}' is not supported (supported: gelu)", config_.source, config_.projector_hidden_act);
  }

 protected:
  at::Tensor image_features(const at::Tensor& pixels) const override {
    at::Tensor f = vision_->forward(pixels, config_.vision_feature_layers[0]);
    if (config_.vision_feature_select_strategy == "default") f = f.narrow(1, 1, f.size(1) - 1);
    const int64_t b = f.size(0), side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(f.size(1)))));
    f = pixel_shuffle(f.reshape({b, side, side, -1}), config_.downsample_ratio);
    f = f.reshape({b, -1, f.size(-1)});
    f = at::layer_norm(f, {f.size(-1)}, ln_w_, ln_b_, 1e-5);  // nn.LayerNorm's default eps
    return at::linear(at::gelu(at::linear(f, proj1_, proj1_b_)), proj2_, proj2_b_);
  }

 private:
  std::unique_ptr<InternViT> vision_;
  at::Tensor ln_w_, ln_b_, proj1_, proj1_b_, proj2_, proj2_b_;
};

}  // namespace

std::unique_ptr<MultimodalModel> make_internvl_model(ModelConfig config, const SafetensorsCheckpoint& ck,
                                                     at::ScalarType dtype, at::Device device) {
  return std::make_unique<InternVLModel>(std::move(config), ck, dtype, device);
}

}  // namespace calibq
