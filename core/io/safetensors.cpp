#include "core/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/io/atomic_file.h"
#include "core/io/json_file.h"
#include "core/io/mapped_file.h"
#include "core/util/error.h"

namespace calibq {

namespace fs = std::filesystem;

at::ScalarType to_scalar_type(StDtype dtype) {
  switch (dtype) {
    case StDtype::F64: return at::kDouble;
    case StDtype::F32: return at::kFloat;
    case StDtype::F16: return at::kHalf;
    case StDtype::BF16: return at::kBFloat16;
    case StDtype::I64: return at::kLong;
    case StDtype::I32: return at::kInt;
    case StDtype::I16: return at::kShort;
    case StDtype::I8: return at::kChar;
    case StDtype::U8: return at::kByte;
    case StDtype::BOOL: return at::kBool;
  }
  fail("internal: bad StDtype {}", static_cast<int>(dtype));
}

StDtype to_st_dtype(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return StDtype::F64;
    case at::kFloat: return StDtype::F32;
    case at::kHalf: return StDtype::F16;
    case at::kBFloat16: return StDtype::BF16;
    case at::kLong: return StDtype::I64;
    case at::kInt: return StDtype::I32;
    case at::kShort: return StDtype::I16;
    case at::kChar: return StDtype::I8;
    case at::kByte: return StDtype::U8;
    case at::kBool: return StDtype::BOOL;
    default:
      fail("safetensors: cannot store scalar type {} (supported: {})", c10::toString(type),
           st_dtype_names());
  }
}

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& path) {
  SafetensorsCheckpoint ck;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: no such file or folder", path);

  // shard file (relative to root) -> the names the index assigns to it; empty when unsharded.
  std::map<std::string, std::set<std::string>> index_names;
  std::string index_path;
  if (fs::is_directory(path)) {
    ck.root_ = path;
    index_path = (fs::path(path) / "model.safetensors.index.json").string();
    if (fs::exists(index_path)) {
      nlohmann::json index = read_json_file(index_path);
      if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        fail("{}: no \"weight_map\" object", index_path);
      for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
        if (!it.value().is_string())
          fail("{}: weight_map entry '{}' must name a shard file", index_path, it.key());
        std::string shard = it.value().get<std::string>();
        if (!fs::exists(fs::path(path) / shard))
          fail("{}: tensor '{}' is mapped to shard '{}', which does not exist", index_path,
               it.key(), shard);
        index_names[shard].insert(it.key());
      }
      if (index_names.empty()) fail("{}: weight_map is empty", index_path);
      for (const auto& [shard, names] : index_names) ck.shards_.push_back(shard);
    } else if (fs::exists(fs::path(path) / "model.safetensors")) {
      ck.shards_.push_back("model.safetensors");
      index_path.clear();
    } else {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(path))
        if (e.path().extension() == ".safetensors") found.push_back(e.path().filename().string());
      if (found.size() != 1)
        fail("{}: no model.safetensors.index.json or model.safetensors, and {} other "
             ".safetensors files (need exactly one)",
             path, found.size());
      ck.shards_ = found;
      index_path.clear();
    }
  } else {
    ck.root_ = fs::path(path).parent_path().string();
    ck.shards_.push_back(fs::path(path).filename().string());
  }

  for (size_t s = 0; s < ck.shards_.size(); ++s) {
    std::string file = (fs::path(ck.root_) / ck.shards_[s]).string();
    auto mapped = MappedFile::open(file);
    StHeader header = parse_safetensors_header(mapped->data(), mapped->size(), mapped->size(), file);
    if (!index_path.empty()) {
      const auto& expected = index_names[ck.shards_[s]];
      for (const auto& t : header.tensors)
        if (!expected.count(t.name))
          fail("{}: holds tensor '{}', which {} does not map to this shard", file, t.name,
               index_path);
      for (const auto& name : expected)
        if (!header.find(name))
          fail("{}: maps tensor '{}' to {}, which does not hold it", index_path, name, file);
    }
    for (const auto& t : header.tensors) {
      if (ck.by_name_.count(t.name))
        fail("{}: tensor '{}' is also in {}", file, t.name,
             ck.tensors_[ck.by_name_[t.name]].shard);
      ck.by_name_[t.name] = ck.tensors_.size();
      ck.tensors_.push_back(CheckpointTensor{t, ck.shards_[s], s});
    }
    for (const auto& [k, v] : header.metadata) ck.metadata_[k] = v;
    ck.files_.push_back(std::move(mapped));
    ck.headers_.push_back(std::move(header));
  }
  std::sort(ck.tensors_.begin(), ck.tensors_.end(),
            [](const auto& a, const auto& b) { return a.info.name < b.info.name; });
  ck.by_name_.clear();
  for (size_t i = 0; i < ck.tensors_.size(); ++i) ck.by_name_[ck.tensors_[i].info.name] = i;
  return ck;
}

bool SafetensorsCheckpoint::contains(const std::string& name) const {
  return by_name_.count(name) != 0;
}

const CheckpointTensor& SafetensorsCheckpoint::entry(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) fail("{}: no tensor named '{}'", root_.empty() ? "." : root_, name);
  return tensors_[it->second];
}

uint64_t SafetensorsCheckpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors_) n += t.info.nbytes();
  return n;
}

at::Tensor SafetensorsCheckpoint::tensor(const std::string& name) const {
  const CheckpointTensor& e = entry(name);
  const auto& file = files_[e.shard_index];
  const auto& header = headers_[e.shard_index];
  auto options = at::TensorOptions().dtype(to_scalar_type(e.info.dtype)).device(at::kCPU);
  if (e.info.nbytes() == 0) return at::empty(e.info.shape, options);
  uint8_t* ptr = file->data() + header.data_start + e.info.begin;
  if (reinterpret_cast<uintptr_t>(ptr) % st_dtype_size(e.info.dtype) != 0) {
    // The format does not promise alignment; LibTorch kernels assume it.
    at::Tensor out = at::empty(e.info.shape, options);
    std::memcpy(out.data_ptr(), ptr, e.info.nbytes());
    return out;
  }
  std::shared_ptr<MappedFile> keep = file;
  return at::from_blob(ptr, e.info.shape, [keep](void*) mutable { keep.reset(); }, options);
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<StTensorInfo> infos;
  std::vector<at::Tensor> data;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail("{}: '__metadata__' is reserved, not a tensor name", path);
    if (!names.insert(name).second) fail("{}: tensor '{}' given twice", path, name);
    if (!tensor.defined()) fail("{}: tensor '{}' is undefined", path, name);
    StTensorInfo info;
    info.name = name;
    info.dtype = to_st_dtype(tensor.scalar_type());
    info.shape = tensor.sizes().vec();
    info.begin = offset;
    info.end = offset + static_cast<uint64_t>(tensor.numel()) * st_dtype_size(info.dtype);
    offset = info.end;
    infos.push_back(info);
    data.push_back(tensor.to(at::kCPU).contiguous());
  }
  std::string header = serialize_safetensors_header(infos, metadata);
  write_file_atomically(path, [&](std::ostream& out) {
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& t : data)
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  });
}

NamedTensors read_safetensors(const std::string& path) {
  auto ck = SafetensorsCheckpoint::open(path);
  NamedTensors out;
  for (const auto& t : ck.tensors()) out.emplace_back(t.info.name, ck.tensor(t.info.name).clone());
  return out;
}

}  // namespace calibq
