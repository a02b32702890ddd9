#include "core/models/model.h"

#include "core/io/safetensors.h"
#include "core/util/error.h"

namespace calibq {

// One factory per family file.
std::unique_ptr<MultimodalModel> make_llava_model(ModelConfig config, const SafetensorsCheckpoint& ck,
                                                  at::ScalarType dtype, at::Device device);
std::unique_ptr<MultimodalModel> make_internvl_model(ModelConfig config, const SafetensorsCheckpoint& ck,
                                                     at::ScalarType dtype, at::Device device);

std::unique_ptr<MultimodalModel> load_model(const std::string& dir, at::ScalarType dtype, at::Device device) {
  ModelConfig config = load_model_config(dir);
  SafetensorsCheckpoint ck = SafetensorsCheckpoint::open(dir);
  switch (config.family) {
    case ModelFamily::Llava:
      return make_llava_model(std::move(config), ck, dtype, device);
    case ModelFamily::InternVL:
      return make_internvl_model(std::move(config), ck, dtype, device);
    case ModelFamily::Qwen2VL:
    case ModelFamily::TextOnly:
      fail("{}: the {} family cannot run yet (runs: llava, internvl)", config.source, model_family_name(config.family));
  }
  fail("internal: bad model family");
}

}  // namespace calibq
