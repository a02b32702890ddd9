// InternVL (transformers' InternVLForConditionalGeneration: InternVL 2/2.5/3 "-hf"
// checkpoints): the InternViT vision tower (layer scale, LayerNorm or RMSNorm, optional
// QK-norm), pixel shuffle (downsample_ratio 0.5: 4 patches -> 1 token), an MLP projector with
// a LayerNorm, and a Qwen2 / LLaMA decoder. Modules, checkpoint-name table and forward.
#include <fmt/format.h>

#include <cmath>

#include "core/io/safetensors.h"
#include "core/models/attention.h"
#include "core/models/model.h"
#include "core/models/vision_language_model.h"
#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {

namespace {

// The checkpoint-name table, in both layouts real checkpoints carry: transformers' (-hf
// folders) and the original trust_remote_code one (vision_model.*, mlp1.*, InternLM2's
// fused wqkv), which transformers' convert_internvl_weights_to_hf.py maps onto the first.
struct VitNames {
  std::vector<std::string> prefixes;
  std::string cls, patch, pos, layer, before, after, q, k, v, fused_qkv, proj, q_norm, k_norm, fc1, fc2, ls1, ls2, final_norm;
};
const VitNames kVitHf{{"vision_tower.", "model.vision_tower."},
                      "embeddings.cls_token", "embeddings.patch_embeddings.projection", "embeddings.position_embeddings",
                      "encoder.layer.", "layernorm_before", "layernorm_after", "attention.q_proj", "attention.k_proj",
                      "attention.v_proj", "", "attention.projection_layer", "attention.q_norm", "attention.k_norm",
                      "mlp.fc1", "mlp.fc2", "lambda_1", "lambda_2", "layernorm"};
const VitNames kVitOriginal{{"vision_model."},
                            "embeddings.class_embedding", "embeddings.patch_embedding", "embeddings.position_embedding",
                            "encoder.layers.", "norm1", "norm2", "", "", "", "attn.qkv", "attn.proj", "attn.q_norm",
                            "attn.k_norm", "mlp.fc1", "mlp.fc2", "ls1", "ls2", ""};

struct ProjectorNames {
  std::vector<std::string> prefixes;
  std::string norm, linear1, linear2;
};
const ProjectorNames kProjectorHf{{"multi_modal_projector.", "model.multi_modal_projector."}, "layer_norm", "linear_1", "linear_2"};
const ProjectorNames kProjectorOriginal{{"mlp1."}, "0", "1", "3"};

struct TextNames {
  std::vector<std::string> prefixes, lm_head;
  DecoderNames decoder;
};
const TextNames kTextHf{{"language_model.model.", "model.language_model."}, {"language_model.lm_head.weight", "lm_head.weight"}, {}};
// Original folders keep the LLM's own names: Qwen2 / LLaMA ones as they are, InternLM2's its own.
const TextNames kTextOriginal{{"language_model.model."}, {"language_model.lm_head.weight"}, {}};
TextNames internlm2_names() {
  TextNames t{{"language_model.model."}, {"language_model.output.weight"}, {}};
  t.decoder.embed = "tok_embeddings.weight";
  t.decoder.input_norm = "attention_norm.weight";
  t.decoder.post_norm = "ffn_norm.weight";
  t.decoder.fused_qkv = "attention.wqkv";
  t.decoder.o = "attention.wo";
  t.decoder.gate = "feed_forward.w1.weight";
  t.decoder.up = "feed_forward.w3.weight";
  t.decoder.down = "feed_forward.w2.weight";
  return t;
}

struct Norm {
  at::Tensor w, b;  // b undefined for RMSNorm
};

struct VitLayer {
  Norm before, after;
  at::Tensor q, q_b, k, k_b, v, v_b, o, o_b, q_norm, k_norm, fc1, fc1_b, fc2, fc2_b, lambda1, lambda2;
};

class InternViT {
 public:
  InternViT(WeightLoader& w, const VisionConfig& c, const VitNames& n, const std::string& p) : c_(c) {
    const int64_t h = c.hidden_size, np = (c.image_size / c.patch_size) * (c.image_size / c.patch_size) + 1;
    cls_ = w.take(p + n.cls, {1, 1, h});
    patch_w_ = w.take(p + n.patch + ".weight", {h, c.num_channels, c.patch_size, c.patch_size});
    patch_b_ = w.take(p + n.patch + ".bias", {h});
    pos_ = w.take(p + n.pos, {1, np, h});
    rms_ = c.norm_type == "rms_norm";
    auto norm = [&](const std::string& name) {
      Norm x{w.take(name + ".weight", {h}), {}};
      if (!rms_) x.b = w.take(name + ".bias", {h});
      return x;
    };
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string l = p + n.layer + std::to_string(i) + ".";
      VitLayer x;
      x.before = norm(l + n.before);
      x.after = norm(l + n.after);
      if (!n.fused_qkv.empty()) {  // rows: all of q, then k, then v
        at::Tensor qkv = w.take(l + n.fused_qkv + ".weight", {3 * h, h});
        x.q = qkv.narrow(0, 0, h).contiguous();
        x.k = qkv.narrow(0, h, h).contiguous();
        x.v = qkv.narrow(0, 2 * h, h).contiguous();
        if (c.qkv_bias) {
          at::Tensor b = w.take(l + n.fused_qkv + ".bias", {3 * h});
          x.q_b = b.narrow(0, 0, h).contiguous();
          x.k_b = b.narrow(0, h, h).contiguous();
          x.v_b = b.narrow(0, 2 * h, h).contiguous();
        }
      } else {
        for (auto [name, weight, bias] : {std::tuple{&n.q, &x.q, &x.q_b}, {&n.k, &x.k, &x.k_b}, {&n.v, &x.v, &x.v_b}}) {
          *weight = w.take(l + *name + ".weight", {h, h});
          if (c.qkv_bias) *bias = w.take(l + *name + ".bias", {h});
        }
      }
      x.o = w.take(l + n.proj + ".weight", {h, h});
      x.o_b = w.take(l + n.proj + ".bias", {h});
      if (c.qk_normalization) {
        x.q_norm = w.take(l + n.q_norm + ".weight", {h});
        x.k_norm = w.take(l + n.k_norm + ".weight", {h});
      }
      x.fc1 = w.take(l + n.fc1 + ".weight", {c.intermediate_size, h});
      x.fc1_b = w.take(l + n.fc1 + ".bias", {c.intermediate_size});
      x.fc2 = w.take(l + n.fc2 + ".weight", {h, c.intermediate_size});
      x.fc2_b = w.take(l + n.fc2 + ".bias", {h});
      x.lambda1 = w.take(l + n.ls1, {h});
      x.lambda2 = w.take(l + n.ls2, {h});
      layers_.push_back(std::move(x));
    }
    // The original InternViT has no final norm (the converted config's use_mean_pooling makes
    // transformers' an identity too).
    if (!c.use_mean_pooling && !n.final_norm.empty()) final_ = norm(p + n.final_norm);
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
      at::Tensor a = full_attention(heads_of(q), heads_of(k), heads_of(v), scale, {}, false, false)
                         .transpose(1, 2)
                         .reshape({b, n, h});
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
  InternVLModel(ModelConfig config, WeightLoader& w, at::ScalarType dtype, at::Device device)
      : VisionLanguageModel(std::move(config), dtype, device) {
    const bool original = config_.original_layout;
    if (original && config_.pixel_shuffle_version != "v2")
      fail("{}: ps_version '{}': only InternVL's v2 pixel shuffle (transformers') is implemented", config_.source,
           config_.pixel_shuffle_version);
    const VisionConfig& vc = *config_.vision;
    const VitNames& vn = original ? kVitOriginal : kVitHf;
    vision_ = std::make_unique<InternViT>(w, vc, vn, first_prefix(w, vn.prefixes, vn.cls));
    const int64_t th = config_.text.hidden_size;
    const int64_t r = std::llround(1.0 / config_.downsample_ratio);
    const int64_t in = vc.hidden_size * r * r;
    const ProjectorNames& pn = original ? kProjectorOriginal : kProjectorHf;
    const std::string pp = first_prefix(w, pn.prefixes, pn.linear1 + ".weight");
    ln_w_ = w.take(pp + pn.norm + ".weight", {in});
    ln_b_ = w.take(pp + pn.norm + ".bias", {in});
    proj1_ = w.take(pp + pn.linear1 + ".weight", {th, in});
    proj1_b_ = w.take(pp + pn.linear1 + ".bias", {th});
    proj2_ = w.take(pp + pn.linear2 + ".weight", {th, th});
    proj2_b_ = w.take(pp + pn.linear2 + ".bias", {th});
    const TextNames text = !original ? kTextHf : config_.text.model_type == "internlm2" ? internlm2_names() : kTextOriginal;
    load_decoder(w, text.prefixes, text.lm_head, text.decoder);
    report_ = w.finish();
    if (config_.vision_feature_layers.size() != 1) fail("{}: internvl: one vision_feature_layer is supported", config_.source);
    if (config_.projector_hidden_act != "gelu")
      fail("{}: internvl: projector_hidden_act '{}' is not supported (supported: gelu)", config_.source, config_.projector_hidden_act);
  }

 protected:
  at::Tensor image_features(const at::Tensor& pixels, const at::Tensor& /*image_grid_thw*/) const override {
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

std::unique_ptr<MultimodalModel> make_internvl_model(ModelConfig config, WeightLoader& w, at::ScalarType dtype,
                                                  at::Device device) {
  return std::make_unique<InternVLModel>(std::move(config), w, dtype, device);
}

}  // namespace calibq
