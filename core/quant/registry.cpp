#include "core/quant/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/util/error.h"

namespace calibq {

namespace {
std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}
}  // namespace

QuantizerSpec parse_quantizer_spec(const std::string& text, const std::string& where) {
  const std::string prefix = where.empty() ? "" : where + ": ";
  QuantizerSpec spec;
  spec.where = where;
  size_t colon = text.find(':');
  spec.method = trim(text.substr(0, colon));
  if (spec.method.empty()) fail("{}quantizer spec '{}' names no method", prefix, text);
  if (colon == std::string::npos) return spec;
  std::string rest = text.substr(colon + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    size_t comma = rest.find(',', start);
    std::string item = trim(rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (!item.empty()) {
      size_t eq = item.find('=');
      if (eq == std::string::npos)
        fail("{}quantizer spec '{}': '{}' is not key=value", prefix, text, item);
      std::string key = trim(item.substr(0, eq));
      if (spec.options.count(key)) fail("{}quantizer spec '{}': option '{}' given twice", prefix, text, key);
      spec.options[key] = trim(item.substr(eq + 1));
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return spec;
}

QuantizerSpec parse_quantizer_spec(const YAML::Node& node, const std::string& where) {
  QuantizerSpec spec;
  spec.where = where;
  if (node.IsScalar()) return parse_quantizer_spec(node.Scalar(), where);
  if (!node.IsMap()) fail("{}: a quantizer must be a name or a map with 'method'", where);
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (!kv.second.IsScalar())
      fail("{}.{}: quantizer options must be scalars", where, key);
    if (key == "method") spec.method = kv.second.Scalar();
    else spec.options[key] = kv.second.Scalar();
  }
  if (spec.method.empty()) fail("{}: quantizer map has no 'method'", where);
  return spec;
}

QuantizerRegistry& QuantizerRegistry::instance() {
  static QuantizerRegistry registry;
  return registry;
}

bool QuantizerRegistry::add(QuantizerEntry entry) {
  if (entries_.count(entry.name)) fail("internal: quantizer '{}' registered twice", entry.name);
  std::string name = entry.name;
  entries_.emplace(name, std::move(entry));
  return true;
}

std::vector<std::string> QuantizerRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

const QuantizerEntry& QuantizerRegistry::entry(const std::string& name, const std::string& where) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    fail("{}unknown quantizer '{}' (registered: {})", where.empty() ? "" : where + ": ", name,
         fmt::join(names(), ", "));
  return it->second;
}

std::shared_ptr<KVQuantizer> QuantizerRegistry::make(const QuantizerSpec& spec, KVRole role,
                                                     const std::string& where_given) const {
  const std::string& where = where_given.empty() ? spec.where : where_given;
  const QuantizerEntry& e = entry(spec.method, where);
  return e.make(QuantizerOptions::resolve(e.name, e.options, spec.options, where), role);
}

}  // namespace calibq
