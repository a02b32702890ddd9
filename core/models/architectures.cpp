#include "core/models/architectures.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <map>

#include "core/util/error.h"

namespace calibq {

namespace {

// llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px (576 tokens, features of the
// second-to-last layer), a 2-layer GELU projector, Vicuna-7B (LLaMA-2 shape, 32 heads, no GQA).
const char* kLlava15_7b = R"({
  "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
  "image_token_index": 32000, "projector_hidden_act": "gelu", "multimodal_projector_bias": true,
  "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "tie_word_embeddings": false,
  "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": false},
  "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
    "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "projection_dim": 768}
})";

// OpenGVLab/InternVL2_5-8B in transformers' layout (-hf): InternViT-300M (448 px tiles,
// 256 tokens each after pixel shuffle), an MLP projector, InternLM2.5-7B as a LLaMA-shaped
// decoder (hidden 4096, 32 heads over 8 KV heads, MLP 14336, vocab 92553).
const char* kInternVL25_8b = R"({
  "architectures": ["InternVLForConditionalGeneration"], "model_type": "internvl",
  "image_token_id": 92546, "image_seq_length": 256, "downsample_ratio": 0.5, "projector_hidden_act": "gelu",
  "vision_feature_layer": -1, "vision_feature_select_strategy": "default", "tie_word_embeddings": false,
  "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 92553, "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "hidden_act": "silu", "tie_word_embeddings": false},
  "vision_config": {"model_type": "internvl_vision", "hidden_size": 1024, "intermediate_size": 4096,
    "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": [448, 448], "patch_size": [14, 14],
    "attention_bias": true, "norm_type": "layer_norm", "use_qk_norm": false, "layer_norm_eps": 1e-06,
    "layer_scale_init_value": 0.1, "use_mean_pooling": true, "hidden_act": "gelu", "num_channels": 3}
})";

// Qwen/Qwen2-VL-7B-Instruct: the Qwen2-VL vision transformer (675M: 32 blocks of width 1280,
// a 2x2 patch merger), Qwen2-7B with M-RoPE (hidden 3584, 28 heads over 4 KV heads, MLP 18944).
const char* kQwen2VL_7b = R"({
  "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
  "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
  "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu",
  "hidden_size": 3584, "intermediate_size": 18944, "max_position_embeddings": 32768, "num_attention_heads": 28,
  "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "tie_word_embeddings": false, "vocab_size": 152064,
  "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
    "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
  "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}
})";

// Tiny members of the same families (tests of the benchmark's code path on the CPU).
const char* kTinyLlava = R"({
  "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
  "image_token_index": 250, "projector_hidden_act": "gelu",
  "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
  "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 512,
    "rms_norm_eps": 1e-05, "hidden_act": "silu"},
  "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 56, "patch_size": 14, "hidden_act": "quick_gelu"}
})";

const char* kTinyInternVL = R"({
  "architectures": ["InternVLForConditionalGeneration"], "model_type": "internvl",
  "image_token_id": 250, "image_seq_length": 4, "downsample_ratio": 0.5, "projector_hidden_act": "gelu",
  "vision_feature_layer": -1, "vision_feature_select_strategy": "default",
  "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 256, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-05, "hidden_act": "silu"},
  "vision_config": {"model_type": "internvl_vision", "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": [56, 56], "patch_size": [14, 14],
    "attention_bias": true, "norm_type": "layer_norm", "use_qk_norm": false, "layer_norm_eps": 1e-06,
    "hidden_act": "gelu", "num_channels": 3}
})";

const char* kTinyQwen2VL = R"({
  "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
  "vision_start_token_id": 247, "vision_end_token_id": 248, "image_token_id": 250, "video_token_id": 249,
  "text_config": {"model_type": "qwen2_vl_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-06, "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
  "vision_config": {"model_type": "qwen2_vl_vision", "depth": 2, "embed_dim": 32, "hidden_size": 64, "mlp_ratio": 2,
    "num_heads": 4, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
    "hidden_act": "quick_gelu"}
})";

const std::map<std::string, const char*>& table() {
  static const std::map<std::string, const char*> t = {{"llava-1.5-7b", kLlava15_7b},
                                                       {"internvl2.5-8b", kInternVL25_8b},
                                                       {"qwen2-vl-7b", kQwen2VL_7b},
                                                       {"tiny-llava", kTinyLlava},
                                                       {"tiny-internvl", kTinyInternVL},
                                                       {"tiny-qwen2vl", kTinyQwen2VL}};
  return t;
}

}  // namespace

std::vector<std::string> architecture_names() {
  std::vector<std::string> names;
  for (const auto& [name, json] : table()) names.push_back(name);
  return names;
}

ModelConfig architecture_config(const std::string& name) {
  auto it = table().find(name);
  if (it == table().end()) fail("--arch: unknown architecture '{}' (known: {})", name, fmt::join(architecture_names(), ", "));
  return parse_model_config(nlohmann::json::parse(it->second), "architecture " + name);
}

}  // namespace calibq
