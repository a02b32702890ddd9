#include "core/io/safetensors_header.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include <fmt/ranges.h>

#include "core/util/error.h"

namespace calibq {

namespace {
using json = nlohmann::json;

struct DtypeRow {
  StDtype dtype;
  const char* name;
  size_t size;
};
constexpr DtypeRow kDtypes[] = {
    {StDtype::F64, "F64", 8}, {StDtype::F32, "F32", 4}, {StDtype::F16, "F16", 2},
    {StDtype::BF16, "BF16", 2}, {StDtype::I64, "I64", 8}, {StDtype::I32, "I32", 4},
    {StDtype::I16, "I16", 2}, {StDtype::I8, "I8", 1}, {StDtype::U8, "U8", 1},
    {StDtype::BOOL, "BOOL", 1},
};

const DtypeRow& row(StDtype dtype) {
  for (const auto& r : kDtypes)
    if (r.dtype == dtype) return r;
  fail("internal: unknown safetensors dtype {}", static_cast<int>(dtype));
}

// Reads a JSON number that must be a non-negative integer (as the format's u64/usize).
uint64_t as_u64(const json& v, const std::string& source, const std::string& tensor,
                const char* field) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  fail("{}: tensor '{}': {} must hold non-negative integers, got {}", source, tensor, field,
       v.dump());
}
}  // namespace

size_t st_dtype_size(StDtype dtype) { return row(dtype).size; }
const char* st_dtype_name(StDtype dtype) { return row(dtype).name; }

std::optional<StDtype> st_dtype_from_name(std::string_view name) {
  for (const auto& r : kDtypes)
    if (name == r.name) return r.dtype;
  return std::nullopt;
}

std::string st_dtype_names() {
  std::string out;
  for (const auto& r : kDtypes) {
    if (!out.empty()) out += ", ";
    out += r.name;
  }
  return out;
}

int64_t StTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const StTensorInfo* StHeader::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

StHeader parse_safetensors_header(const uint8_t* bytes, size_t available, uint64_t file_size,
                                  const std::string& source) {
  if (file_size < 8 || available < 8)
    fail("{}: too short for a safetensors file ({} bytes): the 8-byte header length is missing",
         source, file_size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian, whatever the host
  if (n > file_size - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes)", source, n, file_size);
  if (n > kMaxSafetensorsHeaderBytes)
    fail("{}: header length {} exceeds the format's limit of {} bytes", source, n,
         kMaxSafetensorsHeaderBytes);
  if (n > available - 8)
    fail("{}: only {} of the header's {} bytes could be read", source, available - 8, n);
  if (n == 0 || bytes[8] != '{')
    fail("{}: header is not a JSON object (it must start with '{{')", source);

  const char* text = reinterpret_cast<const char*>(bytes + 8);
  // nlohmann::json keeps the last of two equal keys silently; the callback sees every
  // top-level key, so a repeated tensor name is caught here.
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, text + n, on_event);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", source, e.what());
  }
  if (!header.is_object()) fail("{}: header is not a JSON object", source);
  if (!duplicate.empty()) fail("{}: tensor '{}' appears twice in the header", source, duplicate);

  StHeader out;
  out.header_length = n;
  out.data_start = 8 + n;
  out.data_size = file_size - out.data_start;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("{}: __metadata__ must be an object of strings", source);
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          fail("{}: __metadata__ key '{}' must be a string, got {}", source, m.key(),
               m.value().dump());
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) fail("{}: tensor '{}': entry is not an object", source, name);
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(field)) fail("{}: tensor '{}': missing '{}'", source, name, field);
    for (auto f = entry.begin(); f != entry.end(); ++f)
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets")
        fail("{}: tensor '{}': unknown field '{}'", source, name, f.key());

    StTensorInfo info;
    info.name = name;
    const json& dtype = entry["dtype"];
    if (!dtype.is_string()) fail("{}: tensor '{}': dtype must be a string", source, name);
    auto parsed = st_dtype_from_name(dtype.get<std::string>());
    if (!parsed)
      fail("{}: tensor '{}': unsupported dtype '{}' (supported: {})", source, name,
           dtype.get<std::string>(), st_dtype_names());
    info.dtype = *parsed;

    const json& shape = entry["shape"];
    if (!shape.is_array()) fail("{}: tensor '{}': shape must be an array", source, name);
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : shape) {
      uint64_t dim = as_u64(d, source, name, "shape");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("{}: tensor '{}': dimension {} is too large", source, name, dim);
      info.shape.push_back(static_cast<int64_t>(dim));
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) overflow = true;
      numel *= dim;
    }
    const json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2)
      fail("{}: tensor '{}': data_offsets must be [begin, end]", source, name);
    info.begin = as_u64(offsets[0], source, name, "data_offsets");
    info.end = as_u64(offsets[1], source, name, "data_offsets");
    if (info.end < info.begin)
      fail("{}: tensor '{}': data_offsets [{}, {}) end before they begin", source, name, info.begin,
           info.end);
    if (info.end > out.data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}) run past the data section ({} bytes)", source,
           name, info.begin, info.end, out.data_size);
    size_t elem = st_dtype_size(info.dtype);
    if (overflow || numel > std::numeric_limits<uint64_t>::max() / elem ||
        numel * elem != info.nbytes())
      fail("{}: tensor '{}': shape [{}] of {} needs {} bytes but data_offsets span {}", source,
           name, fmt::join(info.shape, ", "), st_dtype_name(info.dtype),
           overflow ? std::string("more than 2^64") : std::to_string(numel * elem), info.nbytes());
    out.tensors.push_back(std::move(info));
  }

  std::sort(out.tensors.begin(), out.tensors.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const StTensorInfo* previous = nullptr;
  for (const auto& t : out.tensors) {
    if (t.begin < covered)
      fail("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", source, previous->name,
           previous->begin, previous->end, t.name, t.begin, t.end);
    if (t.begin > covered)
      fail("{}: {} unused bytes before tensor '{}' (data_offsets [{}, {}))", source,
           t.begin - covered, t.name, t.begin, t.end);
    covered = t.end;
    previous = &t;
  }
  if (covered != out.data_size)
    fail("{}: the data section has {} bytes but its tensors cover {}", source, out.data_size,
         covered);
  return out;
}

std::string serialize_safetensors_header(const std::vector<StTensorInfo>& tensors,
                                         const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the tensors in data order, as the reference writer does.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", st_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {t.begin, t.end}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

}  // namespace calibq
