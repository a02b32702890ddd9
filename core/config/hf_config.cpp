#include "core/config/hf_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <fstream>

#include "core/io/json_file.h"
#include "core/util/error.h"

namespace calibq {

using json = nlohmann::json;

const char* model_family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::TextOnly: return "text-only";
    case ModelFamily::Llava: return "llava";
    case ModelFamily::InternVL: return "internvl";
    case ModelFamily::Qwen2VL: return "qwen2_vl";
  }
  return "?";
}

const char* rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Dynamic: return "dynamic";
    case RopeType::Llama3: return "llama3";
    case RopeType::MRope: return "mrope";
  }
  return "?";
}

namespace {

// The `transformers` defaults of each config class, for the keys calibq reads. A hub
// config that omits a key means this value.
const json& text_defaults(const std::string& model_type) {
  static const json llama = {
      {"hidden_size", 4096}, {"intermediate_size", 11008}, {"num_hidden_layers", 32},
      {"num_attention_heads", 32}, {"vocab_size", 32000}, {"max_position_embeddings", 2048},
      {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"}, {"tie_word_embeddings", false},
      {"attention_bias", false}, {"rope_theta", 10000.0}, {"bos_token_id", 1},
      {"eos_token_id", 2}};
  static const json qwen2 = {
      {"hidden_size", 4096}, {"intermediate_size", 22016}, {"num_hidden_layers", 32},
      {"num_attention_heads", 32}, {"num_key_value_heads", 32}, {"vocab_size", 151936},
      {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"},
      {"tie_word_embeddings", false}, {"rope_theta", 10000.0}};
  static const json internlm2 = {
      {"hidden_size", 4096}, {"intermediate_size", 11008}, {"num_hidden_layers", 32},
      {"num_attention_heads", 32}, {"vocab_size", 103168}, {"max_position_embeddings", 2048},
      {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"}, {"tie_word_embeddings", false},
      {"bias", true}, {"rope_theta", 10000.0}, {"bos_token_id", 1}, {"eos_token_id", 2},
      {"pad_token_id", 0}};
  static const json qwen2_vl_text = {
      {"hidden_size", 8192}, {"intermediate_size", 29568}, {"num_hidden_layers", 80},
      {"num_attention_heads", 64}, {"num_key_value_heads", 8}, {"vocab_size", 152064},
      {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-5}, {"hidden_act", "silu"},
      {"tie_word_embeddings", false}, {"rope_theta", 1000000.0}};
  static const json none = json::object();
  if (model_type == "llama") return llama;
  if (model_type == "qwen2") return qwen2;
  if (model_type == "internlm2") return internlm2;
  if (model_type == "qwen2_vl" || model_type == "qwen2_vl_text") return qwen2_vl_text;
  return none;
}

const json& vision_defaults(const std::string& model_type) {
  static const json clip = {
      {"hidden_size", 768}, {"intermediate_size", 3072}, {"num_hidden_layers", 12},
      {"num_attention_heads", 12}, {"num_channels", 3}, {"image_size", 224},
      {"patch_size", 32}, {"hidden_act", "quick_gelu"}, {"layer_norm_eps", 1e-5}};
  // InternVisionConfig (the original trust_remote_code class).
  static const json intern_vit = {
      {"hidden_size", 3200}, {"intermediate_size", 12800}, {"num_hidden_layers", 48},
      {"num_attention_heads", 25}, {"num_channels", 3}, {"image_size", 224},
      {"patch_size", 14}, {"hidden_act", "gelu"}, {"layer_norm_eps", 1e-6},
      {"qkv_bias", false}, {"qk_normalization", true}, {"norm_type", "rms_norm"},
      {"initializer_factor", 0.1}};
  // InternVLVisionConfig (transformers-native).
  static const json internvl_vision = {
      {"hidden_size", 1024}, {"intermediate_size", 4096}, {"num_hidden_layers", 24},
      {"num_attention_heads", 16}, {"num_channels", 3}, {"image_size", 448},
      {"patch_size", 14}, {"hidden_act", "gelu"}, {"layer_norm_eps", 1e-6},
      {"attention_bias", false}, {"use_qk_norm", false}, {"norm_type", "layer_norm"},
      {"layer_scale_init_value", 0.1}};
  static const json qwen2_vl = {
      {"depth", 32}, {"embed_dim", 1280}, {"hidden_size", 3584}, {"mlp_ratio", 4},
      {"num_heads", 16}, {"in_channels", 3}, {"patch_size", 14}, {"spatial_merge_size", 2},
      {"temporal_patch_size", 2}, {"hidden_act", "quick_gelu"}};
  static const json none = json::object();
  if (model_type == "clip_vision_model") return clip;
  if (model_type == "intern_vit_6b") return intern_vit;
  if (model_type == "internvl_vision") return internvl_vision;
  if (model_type == "qwen2_vl" || model_type == "qwen2_vl_vision") return qwen2_vl;
  return none;
}

constexpr const char* kTextTypes = "llama, qwen2, internlm2, qwen2_vl_text";
constexpr const char* kVisionTypes = "clip_vision_model, intern_vit_6b, internvl_vision, qwen2_vl, qwen2_vl_vision";

// Typed access to one (sub-)config, over its defaults; errors name file and key path.
class Reader {
 public:
  Reader(json given, const json& defaults, std::string source, std::string path)
      : source_(std::move(source)), path_(std::move(path)) {
    merged_ = defaults;
    for (auto it = given.begin(); it != given.end(); ++it) merged_[it.key()] = it.value();
  }
  bool has(const std::string& key) const {
    return merged_.contains(key) && !merged_[key].is_null();
  }
  const json& at(const std::string& key) const {
    if (!has(key)) fail("{}: {} is missing", source_, where(key));
    return merged_[key];
  }
  std::string where(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  int64_t i(const std::string& key) const {
    const json& v = at(key);
    // Some encoders (InternVL's) write sizes as [h, w]: accept squares.
    if (v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[0] == v[1])
      return v[0].get<int64_t>();
    if (!v.is_number_integer()) fail("{}: {} must be an integer, got {}", source_, where(key), v.dump());
    return v.get<int64_t>();
  }
  int64_t i(const std::string& key, int64_t fallback) const { return has(key) ? i(key) : fallback; }
  double d(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_number()) fail("{}: {} must be a number, got {}", source_, where(key), v.dump());
    return v.get<double>();
  }
  double d(const std::string& key, double fallback) const { return has(key) ? d(key) : fallback; }
  bool b(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = merged_[key];
    if (!v.is_boolean()) fail("{}: {} must be true or false, got {}", source_, where(key), v.dump());
    return v.get<bool>();
  }
  std::string s(const std::string& key) const {
    const json& v = at(key);
    if (!v.is_string()) fail("{}: {} must be a string, got {}", source_, where(key), v.dump());
    return v.get<std::string>();
  }
  std::string s(const std::string& key, const std::string& fallback) const {
    return has(key) ? s(key) : fallback;
  }
  std::optional<int64_t> opt_i(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    return i(key);
  }
  // An integer or a list of integers (eos_token_id, vision_feature_layer).
  std::vector<int64_t> ints(const std::string& key) const {
    if (!has(key)) return {};
    const json& v = merged_[key];
    std::vector<int64_t> out;
    if (v.is_number_integer()) return {v.get<int64_t>()};
    if (!v.is_array()) fail("{}: {} must be an integer or a list of integers, got {}", source_, where(key), v.dump());
    for (const auto& e : v) {
      if (!e.is_number_integer()) fail("{}: {} must hold integers, got {}", source_, where(key), v.dump());
      out.push_back(e.get<int64_t>());
    }
    return out;
  }
  const json& raw() const { return merged_; }
  const std::string& source() const { return source_; }

 private:
  json merged_;
  std::string source_;
  std::string path_;
};

RopeConfig parse_rope(const Reader& r) {
  RopeConfig rope;
  // Newer layout: everything under rope_parameters. Older: rope_theta + rope_scaling.
  json params = json::object();
  std::string params_key;
  if (r.has("rope_parameters")) {
    params = r.at("rope_parameters");
    params_key = "rope_parameters";
  } else if (r.has("rope_scaling")) {
    params = r.at("rope_scaling");
    params_key = "rope_scaling";
  }
  if (!params.is_object())
    fail("{}: {} must be an object, got {}", r.source(), r.where(params_key), params.dump());
  Reader p(params, json::object(), r.source(), r.where(params_key));
  rope.theta = p.has("rope_theta") ? p.d("rope_theta") : r.d("rope_theta", 10000.0);
  std::string type = p.has("rope_type") ? p.s("rope_type") : p.s("type", "default");
  rope.mrope_section = p.ints("mrope_section");
  if (type == "default") {
    rope.type = rope.mrope_section.empty() ? RopeType::Default : RopeType::MRope;
  } else if (type == "mrope") {
    rope.type = RopeType::MRope;
    if (rope.mrope_section.empty())
      fail("{}: {} is mrope but has no mrope_section", r.source(), r.where(params_key));
  } else if (type == "linear") {
    rope.type = RopeType::Linear;
  } else if (type == "dynamic") {
    rope.type = RopeType::Dynamic;
  } else if (type == "llama3") {
    rope.type = RopeType::Llama3;
  } else {
    fail("{}: {}: rope type '{}' is not supported (supported: default, linear, dynamic, llama3, mrope)",
         r.source(), r.where(params_key + ".rope_type"), type);
  }
  if (rope.type == RopeType::Linear || rope.type == RopeType::Dynamic || rope.type == RopeType::Llama3)
    rope.factor = p.d("factor");
  rope.low_freq_factor = p.d("low_freq_factor", 1.0);
  rope.high_freq_factor = p.d("high_freq_factor", 4.0);
  rope.original_max_position_embeddings =
      p.i("original_max_position_embeddings", r.i("max_position_embeddings", 0));
  return rope;
}

TextConfig parse_text(const json& given, const std::string& model_type, const std::string& source,
                      const std::string& path) {
  const json& defaults = text_defaults(model_type);
  if (defaults.empty())
    fail("{}: {}.model_type '{}' is not a supported language model (supported: {})", source, path,
         model_type, kTextTypes);
  Reader r(given, defaults, source, path);
  TextConfig t;
  t.model_type = model_type;
  t.hidden_size = r.i("hidden_size");
  t.intermediate_size = r.i("intermediate_size");
  t.num_hidden_layers = r.i("num_hidden_layers");
  t.num_attention_heads = r.i("num_attention_heads");
  t.num_key_value_heads = r.i("num_key_value_heads", t.num_attention_heads);
  if (t.num_attention_heads <= 0 || t.hidden_size % t.num_attention_heads != 0)
    fail("{}: {}: hidden_size {} is not a multiple of num_attention_heads {}", source, path,
         t.hidden_size, t.num_attention_heads);
  t.head_dim = r.i("head_dim", t.hidden_size / t.num_attention_heads);
  if (t.num_key_value_heads <= 0 || t.num_attention_heads % t.num_key_value_heads != 0)
    fail("{}: {}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source,
         path, t.num_attention_heads, t.num_key_value_heads);
  t.vocab_size = r.i("vocab_size");
  t.max_position_embeddings = r.i("max_position_embeddings");
  t.rms_norm_eps = r.d("rms_norm_eps");
  t.hidden_act = r.s("hidden_act");
  t.tie_word_embeddings = r.b("tie_word_embeddings", false);
  if (model_type == "qwen2" || model_type == "qwen2_vl" || model_type == "qwen2_vl_text") {
    t.qkv_bias = true;  // Qwen2 has q/k/v biases and no o bias, by architecture
  } else if (model_type == "internlm2") {
    t.qkv_bias = t.o_bias = r.b("bias", true);
  } else {
    t.qkv_bias = t.o_bias = r.b("attention_bias", false);
  }
  t.rope = parse_rope(r);
  t.eos_token_ids = r.ints("eos_token_id");
  t.bos_token_id = r.opt_i("bos_token_id");
  t.pad_token_id = r.opt_i("pad_token_id");
  return t;
}

VisionConfig parse_vision(const json& given, const std::string& source, const std::string& path,
                          const std::string& default_type = "") {
  if (!given.is_object()) fail("{}: {} must be an object", source, path);
  // Hub configs of Qwen2-VL name no model_type in vision_config.
  std::string model_type = given.value("model_type", default_type);
  // Original InternVL vision configs sometimes omit model_type; their keys tell.
  if (model_type.empty() && given.contains("qk_normalization")) model_type = "intern_vit_6b";
  const json& defaults = vision_defaults(model_type);
  if (defaults.empty())
    fail("{}: {}.model_type '{}' is not a supported vision encoder (supported: {})", source, path,
         model_type, kVisionTypes);
  Reader r(given, defaults, source, path);
  VisionConfig v;
  v.model_type = model_type;
  // transformers 5 names Qwen2-VL's vision config qwen2_vl_vision; hub configs name none.
  if (model_type == "qwen2_vl" || model_type == "qwen2_vl_vision") {
    v.model_type = "qwen2_vl";
    v.hidden_size = r.i("embed_dim");
    v.num_hidden_layers = r.i("depth");
    v.num_attention_heads = r.i("num_heads");
    v.intermediate_size = static_cast<int64_t>(r.d("mlp_ratio") * static_cast<double>(v.hidden_size));
    v.num_channels = r.has("in_chans") ? r.i("in_chans") : r.i("in_channels");
    v.patch_size = r.i("patch_size");
    v.spatial_merge_size = r.i("spatial_merge_size");
    v.temporal_patch_size = r.i("temporal_patch_size");
    v.out_hidden_size = r.i("hidden_size");
    v.hidden_act = r.s("hidden_act");
    v.layer_norm_eps = 1e-6;  // Qwen2-VL's vision LayerNorms use eps 1e-6
    v.image_size = 0;
    // The 2D RoPE's base: transformers 5 writes rope_parameters; older configs fix it at 10000.
    if (given.contains("rope_parameters") && given["rope_parameters"].is_object())
      v.rope_theta = given["rope_parameters"].value("rope_theta", 10000.0);
    return v;
  }
  v.hidden_size = r.i("hidden_size");
  v.intermediate_size = r.i("intermediate_size");
  v.num_hidden_layers = r.i("num_hidden_layers");
  v.num_attention_heads = r.i("num_attention_heads");
  v.num_channels = r.i("num_channels");
  v.image_size = r.i("image_size");
  v.patch_size = r.i("patch_size");
  v.hidden_act = r.s("hidden_act");
  v.layer_norm_eps = r.d("layer_norm_eps");
  if (model_type == "intern_vit_6b") {
    v.qkv_bias = r.b("qkv_bias", false);
    v.qk_normalization = r.b("qk_normalization", false);
    v.norm_type = r.s("norm_type");
    v.layer_scale_init = r.d("initializer_factor");
  } else if (model_type == "internvl_vision") {
    v.qkv_bias = r.b("attention_bias", false);
    v.qk_normalization = r.b("use_qk_norm", false);
    v.norm_type = r.s("norm_type");
    v.layer_scale_init = r.d("layer_scale_init_value");
    v.use_mean_pooling = r.b("use_mean_pooling", true);
    if (!r.b("use_absolute_position_embeddings", true))
      fail("{}: {}.use_absolute_position_embeddings false is not supported", source, path);
  }
  if (v.norm_type != "layer_norm" && v.norm_type != "rms_norm")
    fail("{}: {}.norm_type '{}' is not supported (supported: layer_norm, rms_norm)", source, path,
         v.norm_type);
  if (v.patch_size <= 0 || v.image_size % v.patch_size != 0)
    fail("{}: {}: image_size {} is not a multiple of patch_size {}", source, path, v.image_size,
         v.patch_size);
  return v;
}

const json& sub_object(const json& config, const std::string& key, const std::string& source) {
  if (!config.contains(key)) fail("{}: {} is missing", source, key);
  if (!config[key].is_object()) fail("{}: {} must be an object", source, key);
  return config[key];
}

}  // namespace

ModelConfig parse_model_config(const json& config, const std::string& source) {
  if (!config.is_object()) fail("{}: not a JSON object", source);
  if (!config.contains("model_type") || !config["model_type"].is_string())
    fail("{}: model_type is missing", source);
  ModelConfig m;
  m.source = source;
  m.model_type = config["model_type"].get<std::string>();
  Reader top(config, json::object(), source, "");

  auto text_of = [&](const std::string& key, const std::string& fallback_type) {
    const json& sub = sub_object(config, key, source);
    std::string type = sub.value("model_type", fallback_type);
    return parse_text(sub, type, source, key);
  };

  if (m.model_type == "llava") {
    m.family = ModelFamily::Llava;
    m.text = text_of("text_config", "llama");
    m.vision = parse_vision(sub_object(config, "vision_config", source), source, "vision_config");
    m.image_token_id = top.has("image_token_id") ? top.opt_i("image_token_id")
                                                 : std::optional<int64_t>(top.i("image_token_index", 32000));
    m.vision_feature_layers = top.has("vision_feature_layer") ? top.ints("vision_feature_layer")
                                                              : std::vector<int64_t>{-2};
    m.vision_feature_select_strategy = top.s("vision_feature_select_strategy", "default");
    m.projector_hidden_act = top.s("projector_hidden_act", "gelu");
    m.projector_bias = top.b("multimodal_projector_bias", true);
  } else if (m.model_type == "internvl") {
    m.family = ModelFamily::InternVL;
    m.text = text_of("text_config", "qwen2");
    m.vision = parse_vision(sub_object(config, "vision_config", source), source, "vision_config");
    m.image_token_id = top.opt_i("image_token_id");
    m.vision_feature_layers = top.has("vision_feature_layer") ? top.ints("vision_feature_layer")
                                                              : std::vector<int64_t>{-1};
    m.vision_feature_select_strategy = top.s("vision_feature_select_strategy", "default");
    m.projector_hidden_act = top.s("projector_hidden_act", "gelu");
    m.downsample_ratio = top.d("downsample_ratio", 0.5);
    m.max_dynamic_patch = 12;
    m.min_dynamic_patch = 1;
    m.use_thumbnail = true;
  } else if (m.model_type == "internvl_chat") {
    m.family = ModelFamily::InternVL;
    m.original_layout = true;
    const json& llm = sub_object(config, "llm_config", source);
    std::string type = llm.value("model_type", std::string("internlm2"));
    m.text = parse_text(llm, type, source, "llm_config");
    m.vision = parse_vision(sub_object(config, "vision_config", source), source, "vision_config");
    if (top.has("force_image_size")) m.vision->image_size = top.i("force_image_size");
    m.vision_feature_layers = {top.i("select_layer", -1)};
    m.vision_feature_select_strategy = "default";  // InternVLChatModel drops the CLS token
    m.projector_hidden_act = "gelu";
    m.downsample_ratio = top.d("downsample_ratio", 0.5);
    m.template_name = top.s("template", "");
    m.pixel_shuffle_version = top.s("ps_version", "v1");  // InternVLChatConfig's default
    m.max_dynamic_patch = top.i("max_dynamic_patch", 12);
    m.min_dynamic_patch = top.i("min_dynamic_patch", 1);
    m.use_thumbnail = top.b("use_thumbnail", true);
  } else if (m.model_type == "qwen2_vl") {
    m.family = ModelFamily::Qwen2VL;
    // Hub configs keep the language model's keys at the top level; transformers 5
    // writes them under text_config as well.
    if (config.contains("text_config") && config["text_config"].is_object()) {
      m.text = parse_text(config["text_config"], "qwen2_vl_text", source, "text_config");
    } else {
      m.text = parse_text(config, "qwen2_vl_text", source, "");
    }
    m.vision = parse_vision(sub_object(config, "vision_config", source), source, "vision_config", "qwen2_vl");
    m.image_token_id = top.i("image_token_id", 151655);
    m.vision_start_token_id = top.i("vision_start_token_id", 151652);
    m.vision_end_token_id = top.i("vision_end_token_id", 151653);
  } else if (!text_defaults(m.model_type).empty()) {
    m.family = ModelFamily::TextOnly;
    m.text = parse_text(config, m.model_type, source, "");
  } else {
    fail("{}: model_type '{}' is not supported (supported: llava, internvl, internvl_chat, "
         "qwen2_vl, and the language models {})",
         source, m.model_type, kTextTypes);
  }
  // transformers 5 ties the head through the top-level flag of multimodal configs; hub
  // configs of the older layout carry it there too.
  if (m.family != ModelFamily::TextOnly && m.family != ModelFamily::Qwen2VL && config.contains("tie_word_embeddings") &&
      config["tie_word_embeddings"].is_boolean())
    m.text.tie_word_embeddings = config["tie_word_embeddings"].get<bool>();
  if (m.family == ModelFamily::Llava && m.vision_feature_select_strategy != "default" &&
      m.vision_feature_select_strategy != "full")
    fail("{}: vision_feature_select_strategy '{}' is not supported (supported: default, full)",
         source, m.vision_feature_select_strategy);
  return m;
}

ModelConfig load_model_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::string file = fs::is_directory(path) ? (fs::path(path) / "config.json").string() : path;
  ModelConfig m = parse_model_config(read_json_file(file), file);
  if (m.original_layout && !m.image_token_id) {
    // Original InternVL folders do not write the image token's id in config.json: the model
    // looks "<IMG_CONTEXT>" up in its tokenizer. So does calibq: tokenizer_config.json's
    // added_tokens_decoder, then added_tokens.json, then the id transformers' conversion uses
    // for the LLM (InternLM2 92546, Qwen2 151667).
    const fs::path dir = fs::path(file).parent_path();
    const std::string tc = (dir / "tokenizer_config.json").string(), added = (dir / "added_tokens.json").string();
    if (fs::exists(tc)) {
      const json j = read_json_file(tc);
      const json decoder = j.value("added_tokens_decoder", json::object());  // kept alive while iterated
      for (const auto& [id, tok] : decoder.items())
        if (tok.is_object() && tok.value("content", std::string()) == "<IMG_CONTEXT>") m.image_token_id = std::stoll(id);
    }
    if (!m.image_token_id && fs::exists(added)) {
      const json j = read_json_file(added);
      if (j.contains("<IMG_CONTEXT>")) m.image_token_id = j["<IMG_CONTEXT>"].get<int64_t>();
    }
    if (!m.image_token_id) m.image_token_id = m.text.model_type == "internlm2" ? 92546 : 151667;
  }
  return m;
}

json to_json(const ModelConfig& m) {
  const TextConfig& t = m.text;
  json text = {{"model_type", t.model_type}, {"hidden_size", t.hidden_size},
               {"intermediate_size", t.intermediate_size}, {"num_hidden_layers", t.num_hidden_layers},
               {"num_attention_heads", t.num_attention_heads},
               {"num_key_value_heads", t.num_key_value_heads}, {"head_dim", t.head_dim},
               {"vocab_size", t.vocab_size}, {"max_position_embeddings", t.max_position_embeddings},
               {"rms_norm_eps", t.rms_norm_eps}, {"hidden_act", t.hidden_act},
               {"tie_word_embeddings", t.tie_word_embeddings}, {"qkv_bias", t.qkv_bias},
               {"o_bias", t.o_bias},
               {"rope", {{"type", rope_type_name(t.rope.type)}, {"theta", t.rope.theta},
                         {"factor", t.rope.factor}, {"mrope_section", t.rope.mrope_section}}},
               {"eos_token_ids", t.eos_token_ids}};
  json out = {{"source", m.source}, {"model_type", m.model_type},
              {"family", model_family_name(m.family)}, {"original_layout", m.original_layout},
              {"text", text}};
  if (m.vision) {
    const VisionConfig& v = *m.vision;
    out["vision"] = {{"model_type", v.model_type}, {"hidden_size", v.hidden_size},
                     {"intermediate_size", v.intermediate_size},
                     {"num_hidden_layers", v.num_hidden_layers},
                     {"num_attention_heads", v.num_attention_heads}, {"image_size", v.image_size},
                     {"patch_size", v.patch_size}, {"hidden_act", v.hidden_act},
                     {"layer_norm_eps", v.layer_norm_eps}, {"norm_type", v.norm_type},
                     {"qk_normalization", v.qk_normalization},
                     {"spatial_merge_size", v.spatial_merge_size},
                     {"temporal_patch_size", v.temporal_patch_size},
                     {"out_hidden_size", v.out_hidden_size}};
    out["multimodal"] = {{"image_token_id", m.image_token_id ? json(*m.image_token_id) : json()},
                         {"vision_feature_layers", m.vision_feature_layers},
                         {"vision_feature_select_strategy", m.vision_feature_select_strategy},
                         {"projector_hidden_act", m.projector_hidden_act},
                         {"downsample_ratio", m.downsample_ratio},
                         {"max_dynamic_patch", m.max_dynamic_patch}};
  }
  return out;
}

std::string describe(const ModelConfig& m) {
  const TextConfig& t = m.text;
  std::string out = fmt::format("config {}: {} (family {}{})\n", m.source, m.model_type,
                                model_family_name(m.family), m.original_layout ? ", original layout" : "");
  out += fmt::format(
      "  text   {}: {} layers, hidden {}, mlp {}, heads {} / kv {} x {}, vocab {}, rope {} theta {}{}\n",
      t.model_type, t.num_hidden_layers, t.hidden_size, t.intermediate_size, t.num_attention_heads,
      t.num_key_value_heads, t.head_dim, t.vocab_size, rope_type_name(t.rope.type), t.rope.theta,
      t.rope.mrope_section.empty() ? std::string()
                                   : fmt::format(" section [{}]", fmt::join(t.rope.mrope_section, ", ")));
  if (m.vision) {
    const VisionConfig& v = *m.vision;
    out += fmt::format("  vision {}: {} layers, hidden {}, mlp {}, heads {}, image {}, patch {}\n",
                       v.model_type, v.num_hidden_layers, v.hidden_size, v.intermediate_size,
                       v.num_attention_heads, v.image_size, v.patch_size);
  }
  return out;
}

}  // namespace calibq
