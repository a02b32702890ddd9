// Hugging Face config.json as typed structs, for the families calibq runs.
//
// Real hub configs leave out any field equal to its `transformers` default (LLaVA-1.5's
// text_config names only a handful of keys), so each sub-config is read over the
// defaults of its model_type. Both rope layouts are read: the older one (`rope_theta`
// and `rope_scaling` beside the other keys) and the newer `rope_parameters` map that
// transformers 5 writes.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace calibq {

enum class ModelFamily { TextOnly, Llava, InternVL, Qwen2VL };
const char* model_family_name(ModelFamily family);

enum class RopeType { Default, Linear, Dynamic, Llama3, MRope };
const char* rope_type_name(RopeType type);

struct RopeConfig {
  RopeType type = RopeType::Default;
  double theta = 10000.0;
  double factor = 1.0;                      // linear / dynamic / llama3
  double low_freq_factor = 1.0;             // llama3
  double high_freq_factor = 4.0;            // llama3
  int64_t original_max_position_embeddings = 0;  // llama3 / dynamic
  std::vector<int64_t> mrope_section;       // Qwen2-VL: rotary pairs for (t, h, w)
};

struct TextConfig {
  std::string model_type;  // llama, qwen2, internlm2, qwen2_vl_text
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  std::string hidden_act;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; LLaMA's attention_bias; InternLM2's bias
  bool o_bias = false;
  RopeConfig rope;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
};

struct VisionConfig {
  std::string model_type;  // clip_vision_model, intern_vit_6b, internvl_vision, qwen2_vl
  int64_t hidden_size = 0;       // width of the encoder's residual stream
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_channels = 3;
  int64_t image_size = 0;  // square input side (0 where the encoder takes any size)
  int64_t patch_size = 0;
  double layer_norm_eps = 1e-5;
  std::string hidden_act;
  // InternViT
  bool qkv_bias = true;
  bool qk_normalization = false;
  std::string norm_type = "layer_norm";  // layer_norm or rms_norm
  double layer_scale_init = 1.0;
  bool use_mean_pooling = true;  // transformers' InternVL: no final LayerNorm on the features
  // Qwen2-VL
  int64_t spatial_merge_size = 1;
  int64_t temporal_patch_size = 1;
  int64_t out_hidden_size = 0;  // the patch merger's output width (the LLM's hidden size)
  double rope_theta = 10000.0;  // the vision tower's 2D RoPE
};

struct ModelConfig {
  std::string source;  // the config.json it came from
  std::string model_type;
  ModelFamily family = ModelFamily::TextOnly;
  // true for InternVL's original trust_remote_code layout (`internvl_chat`).
  bool original_layout = false;
  TextConfig text;
  std::optional<VisionConfig> vision;
  // multimodal glue
  std::optional<int64_t> image_token_id;
  std::vector<int64_t> vision_feature_layers;     // LLaVA (one or several), InternVL select_layer
  std::string vision_feature_select_strategy;     // LLaVA: default (drop CLS) or full
  std::string projector_hidden_act;
  bool projector_bias = true;
  double downsample_ratio = 1.0;                  // InternVL pixel shuffle
  std::string pixel_shuffle_version = "v2";  // InternVL ps_version: transformers' shuffle is "v2"
  std::string template_name;                      // InternVL chat template name
  int64_t max_dynamic_patch = 0;                  // InternVL tiling
  int64_t min_dynamic_patch = 0;
  bool use_thumbnail = false;
  std::optional<int64_t> vision_start_token_id;   // Qwen2-VL
  std::optional<int64_t> vision_end_token_id;
};

// `path` is a checkpoint folder (its config.json is read) or a config.json file.
// Throws calibq::Error naming the file and key for anything missing, mistyped or
// unsupported.
ModelConfig load_model_config(const std::string& path);
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& source);

// A readable multi-line summary for `calibq inspect`.
std::string describe(const ModelConfig& config);
nlohmann::json to_json(const ModelConfig& config);

}  // namespace calibq
