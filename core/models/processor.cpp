#include "core/models/processor.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/io/json_file.h"
#include "core/util/error.h"

namespace calibq {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {
std::vector<int64_t> ids_of(const json& v) {
  std::vector<int64_t> out;
  if (v.is_number_integer()) out.push_back(v.get<int64_t>());
  if (v.is_array())
    for (const auto& x : v) out.push_back(x.get<int64_t>());
  return out;
}
}  // namespace

// The original InternVL releases (trust_remote_code folders): the chat template their
// config.json names, from InternVL's conversation.py (MPT style: system, then role + message +
// separator per turn), "<image>\n" before the question, replaced by <img> + <IMG_CONTEXT> x
// (tile tokens x tiles) + </img>; images through their load_image: dynamic_preprocess's tiles
// and thumbnail resized by PIL (torchvision's Resize on a PIL image), ToTensor, Normalize with
// ImageNet's mean and std.
void ModelProcessor::load_original_internvl(const std::string& dir, const ModelConfig& config) {
  static const std::vector<std::pair<std::string, std::string>> kSystem = {
      // InternVL 2.5 and 3.
      {"internvl2_5", "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"}};
  const auto it = std::find_if(kSystem.begin(), kSystem.end(), [&](const auto& t) { return t.first == config.template_name; });
  if (it == kSystem.end())
    fail("{}: config.json's template '{}' is not in calibq (supported: internvl2_5)", dir, config.template_name);
  system_message_ = it->second;
  placeholder_ = "<image>";
  image_token_ = "<IMG_CONTEXT>";
  const VisionConfig& v = *config.vision;
  image_seq_length_ = std::llround((v.image_size / v.patch_size) * (v.image_size / v.patch_size) *
                                   config.downsample_ratio * config.downsample_ratio);
  ImageProcessorConfig c;
  c.type = "InternVL load_image";
  c.backend = ResizeBackend::Pil;
  c.do_center_crop = false;
  c.size_height = c.size_width = v.image_size;
  c.crop_to_patches = true;
  c.min_patches = config.min_dynamic_patch;
  c.max_patches = config.max_dynamic_patch;
  c.thumbnail = config.use_thumbnail;
  c.to_tensor_rescale = true;
  c.mean = {0.485, 0.456, 0.406};
  c.std = {0.229, 0.224, 0.225};
  image_ = c;
}

ModelProcessor ModelProcessor::load(const std::string& dir, const ModelConfig& config) {
  switch (config.family) {
    case ModelFamily::Llava:
    case ModelFamily::InternVL:
    case ModelFamily::Qwen2VL: break;
    case ModelFamily::TextOnly:
      fail("{}: a {} model has no image processor; calibq's processors are llava's, internvl's and qwen2_vl's", dir,
           model_family_name(config.family));
  }
  ModelProcessor p(load_tokenizer(dir));
  p.family_ = config.family;
  if (!(config.family == ModelFamily::InternVL && config.original_layout)) p.image_ = ImageProcessorConfig::from_model_dir(dir);
  const std::string proc_path = (fs::path(dir) / "processor_config.json").string();
  json proc = fs::exists(proc_path) ? read_json_file(proc_path) : json::object();
  const std::string tc_path = (fs::path(dir) / "tokenizer_config.json").string();
  json tc = fs::exists(tc_path) ? read_json_file(tc_path) : json::object();
  switch (config.family) {
    case ModelFamily::Llava:
      try {
        p.image_token_ = proc.value("image_token", std::string("<image>"));
        p.patch_size_ = proc.value("patch_size", config.vision ? config.vision->patch_size : int64_t{14});
        p.extra_image_tokens_ = proc.value("num_additional_image_tokens", int64_t{1});
        p.drop_cls_ = proc.value("vision_feature_select_strategy", config.vision_feature_select_strategy) != "full";
      } catch (const json::exception& e) {
        fail("{}: {}", proc_path, e.what());
      }
      break;
    case ModelFamily::InternVL:
      if (config.original_layout) {
        p.load_original_internvl(dir, config);
        break;
      }
      // InternVLProcessor: its tokens are the tokenizer's extra special tokens; it tiles every
      // image (its images_kwargs default crop_to_patches=True over the image processor's own).
      try {
        // transformers 5 saves them as top-level keys; older folders under extra_special_tokens.
        const json extra = tc.contains("extra_special_tokens") && tc["extra_special_tokens"].is_object()
                               ? tc["extra_special_tokens"]
                               : json::object();
        auto token = [&](const char* key, const char* fallback) {
          if (tc.contains(key) && tc[key].is_string()) return tc[key].get<std::string>();
          return extra.value(key, std::string(fallback));
        };
        p.image_token_ = token("context_image_token", "<IMG_CONTEXT>");
        p.start_image_token_ = token("start_image_token", "<img>");
        p.end_image_token_ = token("end_image_token", "</img>");
        p.image_seq_length_ = proc.value("image_seq_length", int64_t{256});
      } catch (const json::exception& e) {
        fail("{} / {}: {}", tc_path, proc_path, e.what());
      }
      p.image_.crop_to_patches = true;
      if (p.image_.type.rfind("GotOcr2", 0) != 0)
        fail("{}: InternVL's image processor must be GotOcr2ImageProcessor(Fast), got {}", dir, p.image_.type);
      break;
    case ModelFamily::Qwen2VL:
      // Qwen2VLProcessor: the tokenizer's image_token if it names one, else <|image_pad|>.
      p.image_token_ = tc.contains("image_token") && tc["image_token"].is_string() ? tc["image_token"].get<std::string>()
                                                                                   : std::string("<|image_pad|>");
      if (!p.image_.smart_resize)
        fail("{}: Qwen2-VL's image processor must be Qwen2VLImageProcessor(Fast/Pil), got {}", dir, p.image_.type);
      break;
    case ModelFamily::TextOnly: break;  // refused above
  }
  if (p.placeholder_.empty()) p.placeholder_ = p.image_token_;
  p.image_token_id_ = p.tokenizer_->token_id(p.image_token_);
  if (config.image_token_id && *config.image_token_id != p.image_token_id_)
    fail("{}: the tokenizer's '{}' is id {} but config.json says image_token_index {}", dir, p.image_token_,
         p.image_token_id_, *config.image_token_id);
  // Stop on generation_config.json's eos ids (else config.json's); pad with the tokenizer's pad.
  const std::string gen_path = (fs::path(dir) / "generation_config.json").string();
  if (fs::exists(gen_path)) p.stop_ids_ = ids_of(read_json_file(gen_path).value("eos_token_id", json()));
  if (p.stop_ids_.empty()) p.stop_ids_ = config.text.eos_token_ids;
  if (tc.contains("pad_token") && tc["pad_token"].is_string()) p.pad_id_ = p.tokenizer_->token_id(tc["pad_token"].get<std::string>());
  else if (config.text.pad_token_id) p.pad_id_ = *config.text.pad_token_id;
  else if (!p.stop_ids_.empty()) p.pad_id_ = p.stop_ids_.front();
  return p;
}

std::string ModelProcessor::chat_text(const std::string& prompt, bool with_image) const {
  switch (family_) {
    case ModelFamily::Llava:
      // llava-hf's template: "USER: " + "<image>\n" per image + each text + " " + "ASSISTANT:".
      return "USER: " + (with_image ? image_token_ + "\n" : std::string()) + prompt + " ASSISTANT:";
    case ModelFamily::InternVL:
      // The chat template transformers' InternVL conversion gives every -hf checkpoint: ChatML,
      // no system turn, "<IMG_CONTEXT>\n" per image before the text. The original releases'
      // template adds its system turn, with "<image>\n" as the placeholder.
      return (system_message_.empty() ? std::string() : "<|im_start|>system\n" + system_message_ + "<|im_end|>\n") +
             "<|im_start|>user\n" + (with_image ? placeholder_ + "\n" : std::string()) + prompt +
             "<|im_end|>\n<|im_start|>assistant\n";
    case ModelFamily::Qwen2VL:
      // Qwen2-VL-7B-Instruct's template: the default system turn, then the image's
      // <|vision_start|><|image_pad|><|vision_end|> and the text in the user turn.
      return "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" +
             (with_image ? "<|vision_start|>" + image_token_ + "<|vision_end|>" : std::string()) + prompt +
             "<|im_end|>\n<|im_start|>assistant\n";
    case ModelFamily::TextOnly: break;
  }
  fail("chat template of {} is not in calibq", model_family_name(family_));
}

ProcessedSample ModelProcessor::process(const RgbImage* image, const std::string& prompt) const {
  ProcessedSample s;
  s.chat_text = chat_text(prompt, image != nullptr);
  std::string text = s.chat_text;
  if (image) {
    std::string expanded;
    switch (family_) {
      case ModelFamily::Llava: {
        s.pixel_values = preprocess_image(*image, image_);
        // LlavaProcessor: (H / patch) * (W / patch) + additional tokens, less CLS for "default".
        const int64_t n = (s.pixel_values.size(1) / patch_size_) * (s.pixel_values.size(2) / patch_size_) +
                          extra_image_tokens_ - (drop_cls_ ? 1 : 0);
        for (int64_t i = 0; i < n; ++i) expanded += image_token_;
        break;
      }
      case ModelFamily::InternVL: {
        s.pixel_values = preprocess_image_tiles(*image, image_);
        const int64_t n = s.pixel_values.size(0) * image_seq_length_;
        expanded = start_image_token_;
        for (int64_t i = 0; i < n; ++i) expanded += image_token_;
        expanded += end_image_token_;
        break;
      }
      case ModelFamily::Qwen2VL: {
        ImagePatches patches = preprocess_image_patches(*image, image_);
        s.pixel_values = patches.pixel_values;
        s.image_grid_thw = at::tensor(std::vector<int64_t>(patches.grid_thw.begin(), patches.grid_thw.end()), at::kLong)
                               .view({1, 3});
        const int64_t n = patches.pixel_values.size(0) / (image_.merge_size * image_.merge_size);
        for (int64_t i = 0; i < n; ++i) expanded += image_token_;
        break;
      }
      case ModelFamily::TextOnly: fail("internal: no image processing for {}", model_family_name(family_));
    }
    text.replace(text.find(placeholder_), placeholder_.size(), expanded);
  }
  s.ids = tokenizer_->encode_with_special_tokens(text);
  return s;
}

ModelInputs ModelProcessor::collate(const std::vector<ProcessedSample>& samples) const {
  if (samples.empty()) fail("collate: no samples");
  // Split point per sample: after its last image token (0 without an image).
  std::vector<size_t> split(samples.size());
  size_t longest = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    split[i] = image_end(samples[i]);
    longest = std::max(longest, samples[i].ids.size());
    if (samples[i].pixel_values.defined() != samples[0].pixel_values.defined())
      fail("collate: a batch must be all with images or all without");
    if (split[i] != split[0])
      fail("collate: sample {} has its image tokens ending at {}, sample 0 at {}: batch only samples of one layout", i,
           split[i], split[0]);
  }
  const int64_t b = static_cast<int64_t>(samples.size()), t = static_cast<int64_t>(longest);
  at::Tensor ids = at::full({b, t}, pad_id_, at::kLong), mask = at::zeros({b, t}, at::kLong);
  auto id_acc = ids.accessor<int64_t, 2>();
  auto mask_acc = mask.accessor<int64_t, 2>();
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto& v = samples[i].ids;
    const size_t pad = longest - v.size();
    for (size_t k = 0; k < v.size(); ++k) {
      const size_t dst = k < split[i] ? k : k + pad;
      id_acc[i][dst] = v[k];
      mask_acc[i][dst] = 1;
    }
  }
  ModelInputs in;
  in.input_ids = ids;
  in.attention_mask = mask;
  if (samples[0].pixel_values.defined()) {
    std::vector<at::Tensor> px;
    for (const auto& s : samples) px.push_back(s.pixel_values);
    // LLaVA takes [B, 3, H, W]; InternVL and Qwen2-VL every sample's tiles or patches, one
    // after another.
    in.pixel_values = family_ == ModelFamily::Llava ? at::stack(px) : at::cat(px);
    if (family_ == ModelFamily::Qwen2VL) {
      std::vector<at::Tensor> grids;
      for (const auto& s : samples) grids.push_back(s.image_grid_thw);
      in.image_grid_thw = at::cat(grids);
    }
  }
  return in;
}

size_t ModelProcessor::image_end(const ProcessedSample& sample) const {
  size_t end = 0;
  for (size_t k = 0; k < sample.ids.size(); ++k)
    if (sample.ids[k] == image_token_id_) end = k + 1;
  return end;
}

std::string ModelProcessor::decode(const std::vector<int64_t>& ids) const { return tokenizer_->decode(ids, true); }

}  // namespace calibq
