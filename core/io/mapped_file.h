// A read-only view of a whole file, memory-mapped. Tensors handed out by the
// safetensors reader alias this mapping and keep it alive through a shared_ptr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace calibq {

class MappedFile {
 public:
  // Throws calibq::Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Pages are mapped copy-on-write: a caller that writes into a tensor changes its
  // private copy, never the file.
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  uint8_t* data_;
  size_t size_;
};

}  // namespace calibq
