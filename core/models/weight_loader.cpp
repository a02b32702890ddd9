#include "core/models/weight_loader.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {

WeightLoader::WeightLoader(const SafetensorsCheckpoint& checkpoint, std::string family, at::ScalarType dtype,
                           at::Device device)
    : checkpoint_(&checkpoint), family_(std::move(family)), dtype_(dtype), device_(device) {}

WeightLoader::WeightLoader(std::string family, at::ScalarType dtype, at::Device device, uint64_t seed, double std)
    : checkpoint_(nullptr), seed_(seed), std_(std), family_(std::move(family)), dtype_(dtype), device_(device) {}

WeightLoader WeightLoader::random(std::string family, at::ScalarType dtype, at::Device device, uint64_t seed, double std) {
  at::manual_seed(seed);
  return WeightLoader(std::move(family), dtype, device, seed, std);
}

at::Tensor WeightLoader::take_optional(const std::vector<std::string>& names, c10::IntArrayRef shape) {
  if (!checkpoint_) {
    // Drawn on the device (gigabytes of them at real sizes) from the global generators,
    // which random() seeded: the same weights on every run.
    at::Tensor t = at::randn(shape, at::TensorOptions().dtype(at::kFloat).device(device_)).mul_(std_);
    used_.insert(names.front());
    bytes_ += static_cast<uint64_t>(t.numel()) * c10::elementSize(dtype_);
    return t.to(device_, dtype_).contiguous();
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (!checkpoint_->contains(names[i])) continue;
    const CheckpointTensor& e = checkpoint_->entry(names[i]);
    if (c10::IntArrayRef(e.info.shape) != shape)
      fail("{}: {}: tensor '{}' has shape {}, but the config implies {}",
           (std::filesystem::path(checkpoint_->root()) / e.shard).string(), family_, names[i],
           shape_str(e.info.shape), shape_str(shape));
    used_.insert(names[i]);
    renamed_ += i > 0;
    bytes_ += e.info.nbytes();
    return checkpoint_->tensor(names[i]).to(device_, dtype_).contiguous();
  }
  return {};
}

at::Device WeightLoader::layer_device(int64_t layer, int64_t layers) const {
  if (split_.empty() || layers <= 0) return device_;
  return split_[static_cast<size_t>(layer * static_cast<int64_t>(split_.size()) / layers)];
}

at::Tensor WeightLoader::take(const std::vector<std::string>& names, c10::IntArrayRef shape) {
  at::Tensor t = take_optional(names, shape);
  if (!t.defined())
    fail("{}: {}: tensor '{}' is missing{}", checkpoint_->root(), family_, names.front(),
         names.size() > 1 ? fmt::format(" (also looked for '{}')", names.back()) : "");
  return t;
}

std::string WeightLoader::finish() {
  if (!checkpoint_)
    return fmt::format("{}: {} tensors of random weights, seed {} ({:.1f} MiB)", family_, used_.size(), seed_,
                       bytes_ / 1048576.0);
  size_t ignored = 0;
  for (const auto& t : checkpoint_->tensors()) {
    if (used_.count(t.info.name)) continue;
    bool ok = false;
    for (const auto& p : ignorable_) ok |= t.info.name.rfind(p, 0) == 0;
    if (!ok)
      fail("{}: {}: tensor '{}' is not part of the {} architecture this config describes",
           (std::filesystem::path(checkpoint_->root()) / t.shard).string(), family_, t.info.name, family_);
    ++ignored;
  }
  return fmt::format("{}: {} tensors loaded, {} ignored, {} renamed ({:.1f} MiB)", family_, used_.size(), ignored,
                     renamed_, bytes_ / 1048576.0);
}

}  // namespace calibq
