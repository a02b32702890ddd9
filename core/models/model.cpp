#include "core/models/model.h"

#include <torch/version.h>

#include "core/io/safetensors.h"
#include "core/models/weight_loader.h"
#include "core/util/error.h"

namespace calibq {

// One factory per family file.
std::unique_ptr<MultimodalModel> make_llava_model(ModelConfig config, WeightLoader& weights, at::ScalarType dtype,
                                                  at::Device device);
std::unique_ptr<MultimodalModel> make_internvl_model(ModelConfig config, WeightLoader& weights, at::ScalarType dtype,
                                                     at::Device device);
std::unique_ptr<MultimodalModel> make_qwen2vl_model(ModelConfig config, WeightLoader& weights, at::ScalarType dtype,
                                                    at::Device device);

namespace {
// LibTorch 1.13's CPU kernels have no float16 matmul or convolution (2.x has them): ask
// before loading, so that the answer is one clear error rather than a kernel's name.
bool cpu_supports_half() {
  try {
    at::Tensor x = at::ones({1, 1, 2, 2}, at::kHalf);
    at::matmul(x, x);
    at::conv2d(x, at::ones({1, 1, 1, 1}, at::kHalf));
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}
}  // namespace

namespace {
std::unique_ptr<MultimodalModel> make_model(ModelConfig config, WeightLoader& weights, at::ScalarType dtype,
                                            at::Device device) {
  switch (config.family) {
    case ModelFamily::Llava:
      return make_llava_model(std::move(config), weights, dtype, device);
    case ModelFamily::InternVL:
      return make_internvl_model(std::move(config), weights, dtype, device);
    case ModelFamily::Qwen2VL:
      return make_qwen2vl_model(std::move(config), weights, dtype, device);
    case ModelFamily::TextOnly:
      fail("{}: the {} family has no vision tower; calibq runs multimodal families (llava, internvl, qwen2_vl)",
           config.source, model_family_name(config.family));
  }
  fail("internal: bad model family");
}

void check_half_on_cpu(const std::string& what, at::ScalarType dtype, at::Device device) {
  if (device.is_cpu() && dtype == at::kHalf && !cpu_supports_half())
    fail("{}: float16 on the CPU needs kernels this LibTorch ({}) lacks; use bf16 or fp32 on the CPU, or fp16 on CUDA",
         what, TORCH_VERSION);
}
}  // namespace

std::unique_ptr<MultimodalModel> load_model(const std::string& dir, at::ScalarType dtype, at::Device device) {
  return load_model(dir, dtype, std::vector<at::Device>{device});
}

std::unique_ptr<MultimodalModel> load_model(const std::string& dir, at::ScalarType dtype,
                                            const std::vector<at::Device>& devices) {
  if (devices.empty()) fail("{}: no device to load the model on", dir);
  for (const at::Device& d : devices) check_half_on_cpu(dir, dtype, d);
  ModelConfig config = load_model_config(dir);
  if (static_cast<int64_t>(devices.size()) > config.text.num_hidden_layers)
    fail("{}: {} devices for {} decoder layers", dir, devices.size(), config.text.num_hidden_layers);
  SafetensorsCheckpoint ck = SafetensorsCheckpoint::open(dir);
  WeightLoader weights(ck, model_family_name(config.family), dtype, devices.front());
  if (devices.size() > 1) weights.split_layers(devices);
  return make_model(std::move(config), weights, dtype, devices.front());
}

std::unique_ptr<MultimodalModel> random_model(const ModelConfig& config, at::ScalarType dtype, at::Device device,
                                              uint64_t seed) {
  check_half_on_cpu(config.source, dtype, device);
  WeightLoader weights = WeightLoader::random(model_family_name(config.family), dtype, device, seed);
  return make_model(config, weights, dtype, device);
}

}  // namespace calibq
