// Qwen2-VL (transformers' Qwen2VLForConditionalGeneration): the Qwen2-VL vision transformer
// (a 3D patch embedding over temporal_patch_size frames, 2D RoPE, attention within each
// frame, a patch merger of spatial_merge_size^2 patches into one token) and a Qwen2 decoder
// with multimodal RoPE (M-RoPE: image tokens take (t, h, w) positions). Modules, the
// checkpoint-name table and forward.
#include <fmt/format.h>

#include <cmath>

#include "core/models/attention.h"
#include "core/models/model.h"
#include "core/models/vision_language_model.h"
#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {

namespace {

// The checkpoint-name table. Hub folders (and transformers 5's save_pretrained) use the
// original layout: visual.*, model.layers.*, lm_head; transformers' in-memory layout is
// model.visual.*, model.language_model.*.
const std::vector<std::string> kVisionPrefixes{"visual.", "model.visual."};
const std::vector<std::string> kDecoderPrefixes{"model.", "model.language_model."};
const std::vector<std::string> kLmHead{"lm_head.weight"};

struct VisionBlock {
  at::Tensor norm1_w, norm1_b, norm2_w, norm2_b, qkv, qkv_b, proj, proj_b, fc1, fc1_b, fc2, fc2_b;
};

class Qwen2VisionTower {
 public:
  Qwen2VisionTower(WeightLoader& w, const VisionConfig& c, const std::string& p, int64_t text_hidden) : c_(c) {
    const int64_t e = c.hidden_size, inter = c.intermediate_size, merged = e * c.spatial_merge_size * c.spatial_merge_size;
    if (c.num_attention_heads <= 0 || e % c.num_attention_heads != 0 || (e / c.num_attention_heads) % 4 != 0)
      fail("qwen2_vl: vision embed_dim {} over {} heads must give a head dim divisible by 4 (2D RoPE)", e,
           c.num_attention_heads);
    if (c.out_hidden_size != text_hidden)
      fail("qwen2_vl: vision_config.hidden_size {} (the merger's output) differs from the text hidden size {}",
           c.out_hidden_size, text_hidden);
    // Conv3d whose kernel equals its stride over one patch: a matmul of the flattened patch
    // (channel, frame, row, column: the processor's order) with the kernel, reshaped here.
    patch_ = w.take(p + "patch_embed.proj.weight", {e, c.num_channels, c.temporal_patch_size, c.patch_size, c.patch_size})
                 .reshape({e, -1});
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string l = p + "blocks." + std::to_string(i) + ".";
      VisionBlock b;
      b.norm1_w = w.take(l + "norm1.weight", {e});
      b.norm1_b = w.take(l + "norm1.bias", {e});
      b.norm2_w = w.take(l + "norm2.weight", {e});
      b.norm2_b = w.take(l + "norm2.bias", {e});
      b.qkv = w.take(l + "attn.qkv.weight", {3 * e, e});
      b.qkv_b = w.take(l + "attn.qkv.bias", {3 * e});
      b.proj = w.take(l + "attn.proj.weight", {e, e});
      b.proj_b = w.take(l + "attn.proj.bias", {e});
      b.fc1 = w.take(l + "mlp.fc1.weight", {inter, e});
      b.fc1_b = w.take(l + "mlp.fc1.bias", {inter});
      b.fc2 = w.take(l + "mlp.fc2.weight", {e, inter});
      b.fc2_b = w.take(l + "mlp.fc2.bias", {e});
      blocks_.push_back(std::move(b));
    }
    ln_q_w_ = w.take(p + "merger.ln_q.weight", {e});
    ln_q_b_ = w.take(p + "merger.ln_q.bias", {e});
    m0_ = w.take(p + "merger.mlp.0.weight", {merged, merged});
    m0_b_ = w.take(p + "merger.mlp.0.bias", {merged});
    m2_ = w.take(p + "merger.mlp.2.weight", {text_hidden, merged});
    m2_b_ = w.take(p + "merger.mlp.2.bias", {text_hidden});
    if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
      fail("qwen2_vl: vision hidden_act '{}' is not supported (supported: quick_gelu, gelu)", c.hidden_act);
  }

  // pixels [patches, C * temporal * patch * patch]; grid [images, 3] (t, h, w in patches).
  // Returns [patches / merge^2, text hidden]: the image tokens of every image in order.
  at::Tensor forward(const at::Tensor& pixels, const at::Tensor& grid_thw) const {
    const int64_t e = c_.hidden_size, heads = c_.num_attention_heads, hd = e / heads, m = c_.spatial_merge_size;
    const int64_t patch_dim = c_.num_channels * c_.temporal_patch_size * c_.patch_size * c_.patch_size;
    if (!grid_thw.defined()) fail("qwen2_vl: pixel_values need image_grid_thw");
    const at::Tensor grid = grid_thw.to(at::kCPU, at::kLong).contiguous();
    if (grid.dim() != 2 || grid.size(1) != 3) fail("qwen2_vl: image_grid_thw must be [images, 3], got {}", shape_str(grid.sizes()));
    if (pixels.dim() != 2 || pixels.size(1) != patch_dim)
      fail("qwen2_vl: pixel_values must be [patches, {}], got {}", patch_dim, shape_str(pixels.sizes()));
    // Per patch its (row, column) in the image, in the processor's order: merge blocks of
    // m x m patches row by row, each block's patches row by row (transformers' rot_pos_emb).
    std::vector<int64_t> rows, cols, frames;  // frames: patches per frame, for the attention
    int64_t max_side = 0;
    auto g = grid.accessor<int64_t, 2>();
    for (int64_t i = 0; i < grid.size(0); ++i) {
      const int64_t t = g[i][0], h = g[i][1], w = g[i][2];
      if (t <= 0 || h <= 0 || w <= 0 || h % m != 0 || w % m != 0)
        fail("qwen2_vl: image_grid_thw row {} is ({}, {}, {}): positive, with h and w divisible by the merge size {}", i, t,
             h, w, m);
      max_side = std::max({max_side, h, w});
      for (int64_t f = 0; f < t; ++f) {
        frames.push_back(h * w);
        for (int64_t bh = 0; bh < h / m; ++bh)
          for (int64_t bw = 0; bw < w / m; ++bw)
            for (int64_t ih = 0; ih < m; ++ih)
              for (int64_t iw = 0; iw < m; ++iw) {
                rows.push_back(bh * m + ih);
                cols.push_back(bw * m + iw);
              }
      }
    }
    const int64_t n = static_cast<int64_t>(rows.size());
    if (pixels.size(0) != n) fail("qwen2_vl: pixel_values has {} patches, image_grid_thw describes {}", pixels.size(0), n);
    // 2D RoPE (VisionRotaryEmbedding(head_dim / 2)): float32 frequencies of the row and the
    // column, each over a quarter of the head dim, then cat(freqs, freqs).
    const int64_t dim = hd / 2;
    at::Tensor inv_freq = 1.0 / at::pow(at::scalar_tensor(c_.rope_theta, at::kFloat),
                                        at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim));
    at::Tensor table = at::outer(at::arange(max_side, at::kFloat), inv_freq);  // [max_side, dim / 2]
    at::Tensor rot = at::cat({table.index_select(0, at::tensor(rows, at::kLong)),
                              table.index_select(0, at::tensor(cols, at::kLong))}, 1);  // [n, dim]
    at::Tensor emb = at::cat({rot, rot}, 1).to(pixels.device());                      // [n, hd]
    const at::Tensor cos = emb.cos().unsqueeze(1), sin = emb.sin().unsqueeze(1);      // [n, 1, hd]
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

    at::Tensor x = at::linear(pixels, patch_);
    for (const VisionBlock& b : blocks_) {
      at::Tensor y = at::layer_norm(x, {e}, b.norm1_w, b.norm1_b, c_.layer_norm_eps);
      at::Tensor qkv = at::linear(y, b.qkv, b.qkv_b).view({n, 3, heads, hd});
      at::Tensor q = rotate(qkv.select(1, 0), cos, sin), k = rotate(qkv.select(1, 1), cos, sin);
      at::Tensor v = qkv.select(1, 2);
      // Attention within each frame (transformers' cu_seqlens), [heads, tokens, hd] per frame.
      q = q.transpose(0, 1), k = k.transpose(0, 1), v = v.transpose(0, 1);
      std::vector<at::Tensor> outs;
      int64_t start = 0;
      for (int64_t len : frames) {
        auto part = [&](const at::Tensor& t) { return t.narrow(1, start, len).unsqueeze(0); };
        outs.push_back(full_attention(part(q), part(k), part(v), scale, {}, false, true).squeeze(0));
        start += len;
      }
      at::Tensor a = (outs.size() == 1 ? outs.front() : at::cat(outs, 1)).transpose(0, 1).reshape({n, e});
      x = x + at::linear(a, b.proj, b.proj_b);
      y = at::layer_norm(x, {e}, b.norm2_w, b.norm2_b, c_.layer_norm_eps);
      x = x + at::linear(activation(at::linear(y, b.fc1, b.fc1_b)), b.fc2, b.fc2_b);
    }
    // The merger: m x m neighbouring patches (consecutive in this order) into one token.
    at::Tensor y = at::layer_norm(x, {e}, ln_q_w_, ln_q_b_, 1e-6).reshape({n / (m * m), e * m * m});
    return at::linear(at::gelu(at::linear(y, m0_, m0_b_)), m2_, m2_b_);
  }

 private:
  // transformers' apply_rotary_pos_emb_vision: in float32, back to the input's dtype.
  static at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    const at::Tensor xf = x.to(at::kFloat);
    const int64_t half = xf.size(-1) / 2;
    const at::Tensor rotated = at::cat({-xf.narrow(-1, half, half), xf.narrow(-1, 0, half)}, -1);
    return (xf * cos + rotated * sin).to(x.scalar_type());
  }
  at::Tensor activation(const at::Tensor& x) const {
    if (c_.hidden_act == "quick_gelu") return x * at::sigmoid(1.702 * x);
    return at::gelu(x);
  }

  VisionConfig c_;
  at::Tensor patch_;
  std::vector<VisionBlock> blocks_;
  at::Tensor ln_q_w_, ln_q_b_, m0_, m0_b_, m2_, m2_b_;
};

class Qwen2VLModel : public VisionLanguageModel {
 public:
  Qwen2VLModel(ModelConfig config, WeightLoader& w, at::ScalarType dtype, at::Device device)
      : VisionLanguageModel(std::move(config), dtype, device) {
    if (config_.text.rope.type != RopeType::MRope)
      fail("{}: qwen2_vl needs M-RoPE (rope_parameters / rope_scaling with mrope_section)", config_.source);
    if (!config_.vision_start_token_id) fail("{}: qwen2_vl needs vision_start_token_id", config_.source);
    vision_ = std::make_unique<Qwen2VisionTower>(w, *config_.vision, first_prefix(w, kVisionPrefixes, "patch_embed.proj.weight"),
                                                 config_.text.hidden_size);
    load_decoder(w, kDecoderPrefixes, kLmHead);
    report_ = w.finish();
  }

 protected:
  at::Tensor image_features(const at::Tensor& pixels, const at::Tensor& grid_thw) const override {
    return vision_->forward(pixels, grid_thw);
  }

  // transformers' Qwen2VLModel.get_rope_index, for forward and generate alike: over each
  // sample's unmasked tokens, text tokens take one position on all three axes; an image's
  // tokens take (t, h, w) on its merged grid, offset by the position after the text before
  // it; text after an image continues from the largest position so far plus one. Masked
  // tokens sit at 0 (transformers 5.17; its 4.x releases put them at 1: only the masked
  // rows' own logits differ); decoding continues from each sample's largest position plus one.
  RopePositions rope_positions(const ModelInputs& in, const at::Tensor& mask, bool /*generating*/) const override {
    const at::Tensor ids = in.input_ids.to(at::kCPU, at::kLong).contiguous();
    const at::Tensor keep = mask.to(at::kCPU).contiguous();
    const int64_t b = ids.size(0), t = ids.size(1), m = config_.vision->spatial_merge_size;
    at::Tensor pos = at::zeros({3, b, t}, at::kLong), next = at::empty({b, 1}, at::kLong);
    auto p = pos.accessor<int64_t, 3>();
    auto id = ids.accessor<int64_t, 2>();
    auto k = keep.accessor<int64_t, 2>();
    // Without pixels, image tokens are text (as get_rope_index without image_grid_thw).
    const bool with_images = in.pixel_values.defined() && in.image_grid_thw.defined();
    const at::Tensor grid = with_images ? in.image_grid_thw.to(at::kCPU, at::kLong).contiguous() : at::zeros({0, 3}, at::kLong);
    const auto g = grid.accessor<int64_t, 2>();
    const int64_t images = grid.size(0), image_token = *config_.image_token_id;
    int64_t image = 0;  // images are numbered across the batch, in order
    for (int64_t s = 0; s < b; ++s) {
      int64_t next_pos = 0;  // the position the next text token takes
      for (int64_t j = 0; j < t;) {
        if (k[s][j] == 0) {
          ++j;
          continue;
        }
        if (id[s][j] != image_token || !with_images) {
          for (int a = 0; a < 3; ++a) p[a][s][j] = next_pos;
          ++next_pos, ++j;
          continue;
        }
        if (image >= images) fail("qwen2_vl: more images in input_ids than rows of image_grid_thw ({})", images);
        const int64_t gt = g[image][0], gh = g[image][1] / m, gw = g[image][2] / m;
        ++image;
        for (int64_t f = 0; f < gt; ++f)
          for (int64_t r = 0; r < gh; ++r)
            for (int64_t c = 0; c < gw; ++c) {
              while (j < t && k[s][j] == 0) ++j;  // masked tokens inside an image keep their 0
              if (j >= t || id[s][j] != image_token)
                fail("qwen2_vl: sample {} has fewer image tokens than image_grid_thw row {} implies ({})", s, image - 1,
                     gt * gh * gw);
              p[0][s][j] = next_pos + f, p[1][s][j] = next_pos + r, p[2][s][j] = next_pos + c;
              ++j;
            }
        next_pos += std::max({gt, gh, gw});  // one past the image's largest position
      }
      next[s][0] = next_pos;
    }
    return {pos.to(device_), next.to(device_)};
  }

 private:
  std::unique_ptr<Qwen2VisionTower> vision_;
};

}  // namespace

std::unique_ptr<MultimodalModel> make_qwen2vl_model(ModelConfig config, WeightLoader& w, at::ScalarType dtype,
                                                    at::Device device) {
  return std::make_unique<Qwen2VLModel>(std::move(config), w, dtype, device);
}

}  // namespace calibq
