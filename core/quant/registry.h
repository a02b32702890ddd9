// The quantizer registry, keyed by stable names that results record (never rename one).
// Each quantizer lives in its own file under core/quant/quantizers/ and registers itself
// there with CALIBQ_REGISTER_QUANTIZER; those files form an OBJECT library so that the
// linker keeps every registration.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/quant/quantizer.h"

namespace calibq {

struct QuantizerEntry {
  std::string name;
  std::string summary;
  std::vector<OptionSpec> options;
  std::function<std::shared_ptr<KVQuantizer>(const QuantizerOptions&, KVRole)> make;
};

// A quantizer as the user names it: the registry key and its options as text.
struct QuantizerSpec {
  std::string method;
  std::map<std::string, std::string> options;
  std::string where;  // where it was given (file and YAML path, or a flag), for errors
};

// "method" or "method:key=value,key=value" (e.g. "calibquant:bits=1,calib_b=-2").
QuantizerSpec parse_quantizer_spec(const std::string& text, const std::string& where = "");
// A YAML scalar ("fp16") or map ({method: uniform, bits: 2}). `where` names file and path.
QuantizerSpec parse_quantizer_spec(const YAML::Node& node, const std::string& where);

class QuantizerRegistry {
 public:
  static QuantizerRegistry& instance();
  bool add(QuantizerEntry entry);
  std::vector<std::string> names() const;
  // Throws calibq::Error listing the registered names for an unknown one.
  const QuantizerEntry& entry(const std::string& name, const std::string& where = "") const;
  std::shared_ptr<KVQuantizer> make(const QuantizerSpec& spec, KVRole role, const std::string& where = "") const;

 private:
  std::map<std::string, QuantizerEntry> entries_;
};

inline std::shared_ptr<KVQuantizer> make_quantizer(const std::string& spec, KVRole role) {
  return QuantizerRegistry::instance().make(parse_quantizer_spec(spec), role);
}

}  // namespace calibq

#define CALIBQ_QUANT_CONCAT_(a, b) a##b
#define CALIBQ_QUANT_CONCAT(a, b) CALIBQ_QUANT_CONCAT_(a, b)
// Registers a QuantizerEntry at static-initialization time.
#define CALIBQ_REGISTER_QUANTIZER(...)                                                   \
  static const bool CALIBQ_QUANT_CONCAT(calibq_registered_quantizer_, __LINE__) =        \
      ::calibq::QuantizerRegistry::instance().add(__VA_ARGS__)
