// A strict checkpoint loader: every tensor a model family declares must be there with
// the shape its config implies, and every tensor in the checkpoint must be used or
// declared ignorable. Errors name the tensor, its shard and the family; success gives a
// one-line report.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/io/safetensors.h"

namespace calibq {

class WeightLoader {
 public:
  WeightLoader(const SafetensorsCheckpoint& checkpoint, std::string family, at::ScalarType dtype, at::Device device);
  // Random weights for an architecture without a checkpoint (benchmarks at real sizes): every
  // take() gets N(0, std^2) of the shape the config implies, seeded; has() is false, so
  // families take their first (transformers) layout.
  static WeightLoader random(std::string family, at::ScalarType dtype, at::Device device, uint64_t seed, double std = 0.02);

  // The tensor under the first of `names` the checkpoint has (the later names are the
  // other layouts real checkpoints use: taking one counts as a rename), converted to the
  // model's dtype and device. Throws when none is there or the shape differs.
  at::Tensor take(const std::vector<std::string>& names, c10::IntArrayRef shape);
  at::Tensor take(const std::string& name, c10::IntArrayRef shape) { return take(std::vector<std::string>{name}, shape); }
  // Like take, or an undefined tensor when none of the names is there.
  at::Tensor take_optional(const std::vector<std::string>& names, c10::IntArrayRef shape);
  bool has(const std::string& name) const { return checkpoint_ && checkpoint_->contains(name); }
  // Models larger than one GPU: the decoder's layers spread evenly over `devices` (the first
  // also holds what comes before the layers, the last what comes after). Empty: all on the
  // loader's device.
  void split_layers(std::vector<at::Device> devices) { split_ = std::move(devices); }
  // The device of layer `layer` of `layers` under the split (the loader's device without one).
  at::Device layer_device(int64_t layer, int64_t layers) const;
  // Where the next take()s put their tensors; returns the previous device.
  at::Device set_device(at::Device device) {
    const at::Device old = device_;
    device_ = device;
    return old;
  }
  // Tensors with this prefix are allowed to stay unused (e.g. a vision tower's pooler).
  void ignore_prefix(const std::string& prefix) { ignorable_.push_back(prefix); }

  // Throws for tensors neither used nor ignorable; returns "llava: 87 tensors loaded,
  // 2 ignored, 0 renamed from ... (X MiB)".
  std::string finish();

 private:
  WeightLoader(std::string family, at::ScalarType dtype, at::Device device, uint64_t seed, double std);
  const SafetensorsCheckpoint* checkpoint_;  // null: random weights
  uint64_t seed_ = 0;
  double std_ = 0;
  std::string family_;
  at::ScalarType dtype_;
  at::Device device_;
  std::set<std::string> used_;
  std::vector<std::string> ignorable_;
  std::vector<at::Device> split_;
  size_t renamed_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace calibq
