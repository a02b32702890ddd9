// Safetensors checkpoints as LibTorch tensors: one file, or a sharded folder with
// model.safetensors.index.json. Tensors are memory-mapped (copy-on-write), so opening a
// checkpoint reads only headers; and the writer used for KV dumps and fixtures.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/io/safetensors_header.h"

namespace calibq {

class MappedFile;

at::ScalarType to_scalar_type(StDtype dtype);
// Throws calibq::Error for a scalar type safetensors (as calibq supports it) cannot hold.
StDtype to_st_dtype(at::ScalarType type);

struct CheckpointTensor {
  StTensorInfo info;      // offsets relative to its shard's data section
  std::string shard;      // file name relative to the checkpoint root
  size_t shard_index = 0;
};

class SafetensorsCheckpoint {
 public:
  // `path` is a .safetensors file or a folder holding model.safetensors.index.json,
  // model.safetensors, or exactly one *.safetensors file. Every header is read and
  // validated; a sharded index must name existing shards and exactly the tensors they
  // hold. Throws calibq::Error naming the file and tensor at fault.
  static SafetensorsCheckpoint open(const std::string& path);

  const std::string& root() const { return root_; }
  const std::vector<std::string>& shards() const { return shards_; }
  // Tensors sorted by name.
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  const CheckpointTensor& entry(const std::string& name) const;
  uint64_t total_bytes() const;

  // The tensor, aliasing the mapped file (copied only when its bytes are misaligned for
  // its dtype). Throws calibq::Error for an unknown name.
  at::Tensor tensor(const std::string& name) const;

 private:
  std::string root_;
  std::vector<std::string> shards_;
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::vector<StHeader> headers_;
  std::vector<CheckpointTensor> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes tensors (any device, any layout: copied to contiguous CPU) in the given order.
// Atomic: written to a temporary file beside `path`, then renamed over it.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Reads every tensor of a checkpoint into memory (a convenience for small files).
NamedTensors read_safetensors(const std::string& path);

}  // namespace calibq
