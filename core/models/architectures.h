// Real architectures by name, for benchmarks without a checkpoint: the config.json of each
// hub model (transformers layout), to be built with random weights (model.h: random_model).
#pragma once

#include <string>
#include <vector>

#include "core/config/hf_config.h"

namespace calibq {

// The names architecture_config knows: "llava-1.5-7b", "internvl2.5-8b", and tiny ones of
// the same families for tests ("tiny-llava", "tiny-internvl").
std::vector<std::string> architecture_names();
// The named architecture's config; an unknown name is an error listing the known ones.
ModelConfig architecture_config(const std::string& name);

}  // namespace calibq
