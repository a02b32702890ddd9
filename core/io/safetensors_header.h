// The safetensors header: parsing and validation, with no dependency on LibTorch so
// that the libFuzzer target can build it alone.
//
// Written by hand: Debian ships no C/C++ safetensors library. The format
// (https://github.com/huggingface/safetensors) is: an 8-byte little-endian header length
// N, N bytes of JSON mapping tensor names to {dtype, shape, data_offsets} (offsets
// relative to the byte after the header) plus an optional "__metadata__" string map,
// then the data. The checks follow the reference implementation's: offsets must tile the
// data section exactly, in order, with no gap, overlap or trailing bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace calibq {

enum class StDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t st_dtype_size(StDtype dtype);
const char* st_dtype_name(StDtype dtype);
std::optional<StDtype> st_dtype_from_name(std::string_view name);
// "F64, F32, ..." for error messages.
std::string st_dtype_names();

struct StTensorInfo {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets relative to the start of the data section
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

struct StHeader {
  uint64_t header_length = 0;  // N
  uint64_t data_start = 0;     // 8 + N: file offset of the data section
  uint64_t data_size = 0;      // bytes after the header
  std::vector<StTensorInfo> tensors;  // in data order (ascending offsets)
  std::map<std::string, std::string> metadata;
  const StTensorInfo* find(std::string_view name) const;
};

// The largest header the reference implementation accepts.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u * 1000u * 1000u;

// Parses and validates the header of a safetensors file whose first `available` bytes
// are at `bytes` and whose total size is `file_size` (available may be less than
// file_size: only 8 + N bytes are read). Throws calibq::Error naming `source` and the
// tensor at fault.
StHeader parse_safetensors_header(const uint8_t* bytes, size_t available, uint64_t file_size,
                                  const std::string& source);

// Serializes a header (the JSON, padded with spaces to a multiple of 8 bytes so that
// the data section is 8-byte aligned, preceded by its length).
std::string serialize_safetensors_header(const std::vector<StTensorInfo>& tensors,
                                         const std::map<std::string, std::string>& metadata);

}  // namespace calibq
