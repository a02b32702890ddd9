#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/config/hf_config.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;
using test::expect_error;

std::string config_path(const std::string& name) { return std::string(CALIBQ_TEST_DATA) + "/configs/" + name; }

json load_json(const std::string& name) { return json::parse(test::read_bytes(config_path(name))); }

TEST(HfConfig, LlavaHubConfigFillsLlamaDefaults) {
  ModelConfig m = load_model_config(config_path("llava-1.5-7b-hf.json"));
  EXPECT_EQ(m.family, ModelFamily::Llava);
  // text_config names only a few keys: the rest are LlamaConfig's defaults.
  EXPECT_EQ(m.text.model_type, "llama");
  EXPECT_EQ(m.text.hidden_size, 4096);
  EXPECT_EQ(m.text.intermediate_size, 11008);
  EXPECT_EQ(m.text.num_hidden_layers, 32);
  EXPECT_EQ(m.text.num_key_value_heads, 32);
  EXPECT_EQ(m.text.head_dim, 128);
  EXPECT_EQ(m.text.vocab_size, 32064);
  EXPECT_EQ(m.text.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(m.text.rms_norm_eps, 1e-5);
  EXPECT_EQ(m.text.rope.type, RopeType::Default);
  EXPECT_DOUBLE_EQ(m.text.rope.theta, 10000.0);
  EXPECT_FALSE(m.text.qkv_bias);
  ASSERT_TRUE(m.vision.has_value());
  EXPECT_EQ(m.vision->model_type, "clip_vision_model");
  EXPECT_EQ(m.vision->image_size, 336);
  EXPECT_EQ(m.vision->patch_size, 14);
  EXPECT_EQ(m.vision->hidden_act, "quick_gelu");
  EXPECT_EQ(m.image_token_id, 32000);
  EXPECT_EQ(m.vision_feature_layers, std::vector<int64_t>{-2});
  EXPECT_EQ(m.vision_feature_select_strategy, "default");
}

TEST(HfConfig, InternVLOriginalLayout) {
  ModelConfig m = load_model_config(config_path("InternVL2_5-8B.json"));
  EXPECT_EQ(m.family, ModelFamily::InternVL);
  EXPECT_TRUE(m.original_layout);
  EXPECT_EQ(m.text.model_type, "internlm2");
  EXPECT_EQ(m.text.num_key_value_heads, 8);
  EXPECT_EQ(m.text.intermediate_size, 14336);
  EXPECT_EQ(m.text.vocab_size, 92553);
  EXPECT_FALSE(m.text.qkv_bias);  // "bias": false overrides InternLM2's default
  EXPECT_EQ(m.text.rope.type, RopeType::Dynamic);
  EXPECT_DOUBLE_EQ(m.text.rope.factor, 2.0);
  EXPECT_DOUBLE_EQ(m.text.rope.theta, 1e6);  // an integer in the file
  EXPECT_EQ(m.vision->model_type, "intern_vit_6b");
  EXPECT_EQ(m.vision->norm_type, "layer_norm");
  EXPECT_TRUE(m.vision->qkv_bias);
  EXPECT_FALSE(m.vision->qk_normalization);
  EXPECT_DOUBLE_EQ(m.downsample_ratio, 0.5);
  EXPECT_EQ(m.max_dynamic_patch, 12);
  EXPECT_EQ(m.template_name, "internvl2_5");
  EXPECT_EQ(m.vision_feature_layers, std::vector<int64_t>{-1});
}

TEST(HfConfig, Qwen2VLTopLevelTextAndMRope) {
  ModelConfig m = load_model_config(config_path("Qwen2-VL-7B-Instruct.json"));
  EXPECT_EQ(m.family, ModelFamily::Qwen2VL);
  EXPECT_EQ(m.text.hidden_size, 3584);
  EXPECT_EQ(m.text.num_attention_heads, 28);
  EXPECT_EQ(m.text.num_key_value_heads, 4);
  EXPECT_TRUE(m.text.qkv_bias);
  EXPECT_FALSE(m.text.o_bias);
  EXPECT_EQ(m.text.rope.type, RopeType::MRope);
  EXPECT_EQ(m.text.rope.mrope_section, (std::vector<int64_t>{16, 24, 24}));
  EXPECT_DOUBLE_EQ(m.text.rope.theta, 1e6);
  EXPECT_EQ(m.vision->hidden_size, 1280);
  EXPECT_EQ(m.vision->num_hidden_layers, 32);
  EXPECT_EQ(m.vision->intermediate_size, 5120);
  EXPECT_EQ(m.vision->out_hidden_size, 3584);
  EXPECT_EQ(m.vision->spatial_merge_size, 2);
  EXPECT_EQ(m.image_token_id, 151655);
  EXPECT_EQ(m.text.eos_token_ids, std::vector<int64_t>{151645});
}

TEST(HfConfig, Transformers5RopeParametersAndListSizes) {
  ModelConfig m = load_model_config(config_path("internvl-tiny-transformers5.json"));
  EXPECT_EQ(m.family, ModelFamily::InternVL);
  EXPECT_FALSE(m.original_layout);
  EXPECT_EQ(m.text.model_type, "qwen2");
  EXPECT_DOUBLE_EQ(m.text.rope.theta, 1e6);
  EXPECT_EQ(m.text.rope.type, RopeType::Default);
  EXPECT_TRUE(m.text.tie_word_embeddings);
  EXPECT_EQ(m.vision->image_size, 56);  // written as [56, 56]
  EXPECT_EQ(m.vision->patch_size, 14);
  EXPECT_DOUBLE_EQ(m.vision->layer_scale_init, 0.1);
  EXPECT_EQ(m.image_token_id, 151667);
}

TEST(HfConfig, BothRopeLayoutsGiveTheSameResult) {
  json old_layout = load_json("llava-1.5-7b-hf.json");
  old_layout["text_config"]["rope_theta"] = 500000.0;
  old_layout["text_config"]["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  json new_layout = load_json("llava-1.5-7b-hf.json");
  new_layout["text_config"]["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 500000.0}};
  for (const json& j : {old_layout, new_layout}) {
    ModelConfig m = parse_model_config(j, "x/config.json");
    EXPECT_EQ(m.text.rope.type, RopeType::Linear);
    EXPECT_DOUBLE_EQ(m.text.rope.factor, 4.0);
    EXPECT_DOUBLE_EQ(m.text.rope.theta, 500000.0);
  }
}

TEST(HfConfig, ErrorsNameFileAndKey) {
  json j = load_json("llava-1.5-7b-hf.json");
  j["text_config"]["hidden_size"] = "big";
  expect_error([&] { parse_model_config(j, "m/config.json"); },
               {"m/config.json", "text_config.hidden_size must be an integer", "\"big\""});

  j = load_json("llava-1.5-7b-hf.json");
  j["model_type"] = "llava_next_video";
  expect_error([&] { parse_model_config(j, "m/config.json"); },
               {"model_type 'llava_next_video' is not supported", "llava, internvl"});

  j = load_json("llava-1.5-7b-hf.json");
  j["vision_config"]["model_type"] = "siglip_vision_model";
  expect_error([&] { parse_model_config(j, "m/config.json"); },
               {"vision_config.model_type 'siglip_vision_model'", "clip_vision_model"});

  j = load_json("llava-1.5-7b-hf.json");
  j.erase("vision_config");
  expect_error([&] { parse_model_config(j, "m/config.json"); }, {"vision_config is missing"});

  j = load_json("llava-1.5-7b-hf.json");
  j["text_config"]["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  expect_error([&] { parse_model_config(j, "m/config.json"); },
               {"text_config.rope_scaling.rope_type", "rope type 'yarn' is not supported"});

  j = load_json("llava-1.5-7b-hf.json");
  j["text_config"]["num_key_value_heads"] = 5;
  expect_error([&] { parse_model_config(j, "m/config.json"); }, {"not a multiple of num_key_value_heads 5"});

  j = load_json("llava-1.5-7b-hf.json");
  j["vision_feature_select_strategy"] = "cls";
  expect_error([&] { parse_model_config(j, "m/config.json"); }, {"vision_feature_select_strategy 'cls'"});

  expect_error([&] { load_model_config(config_path("missing.json")); }, {"missing.json", "cannot open"});
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

TEST(HfConfig, TopLevelTieWordEmbeddingsGovernsMultimodalModels) {
  // transformers 5 ties an InternVL/LLaVA head through the top-level flag, whatever
  // text_config says (a real-size random InternVL checkpoint saved no lm_head for this reason).
  ModelConfig m = load_model_config(std::string(CALIBQ_TEST_DATA) + "/configs/internvl-8b-shaped-transformers5.json");
  EXPECT_TRUE(m.text.tie_word_embeddings);
  EXPECT_EQ(m.text.model_type, "llama");
  EXPECT_EQ(m.vision->image_size, 448);
}

}  // namespace
}  // namespace calibq
