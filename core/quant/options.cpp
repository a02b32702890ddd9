#include "core/quant/options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/util/error.h"

namespace calibq {

namespace {

bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  out = v;
  return true;
}

bool parse_float(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(v)) return false;
  out = v;
  return true;
}

std::string bound(double v) { return fmt::format("{}", v); }

}  // namespace

std::string OptionSpec::allowed_text() const {
  switch (type) {
    case OptionType::Choice:
      return fmt::format("one of {}", fmt::join(choices, ", "));
    case OptionType::Int:
    case OptionType::Float: {
      std::string kind = type == OptionType::Int ? "an integer" : "a number";
      std::string range;
      if (std::isfinite(min) && std::isfinite(max)) range = fmt::format(" in [{}, {}]", bound(min), bound(max));
      else if (std::isfinite(min)) range = fmt::format(" >= {}", bound(min));
      else if (std::isfinite(max)) range = fmt::format(" <= {}", bound(max));
      std::string words = choices.empty() ? "" : fmt::format(" or {}", fmt::join(choices, ", "));
      return kind + range + words;
    }
  }
  return "?";
}

QuantizerOptions QuantizerOptions::resolve(const std::string& quantizer, const std::vector<OptionSpec>& specs,
                                           const std::map<std::string, std::string>& given,
                                           const std::string& where) {
  const std::string prefix = where.empty() ? "" : where + ": ";
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  for (const auto& [key, value] : given) {
    if (std::find(names.begin(), names.end(), key) == names.end())
      fail("{}quantizer '{}' has no option '{}' (options: {})", prefix, quantizer, key,
           names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", ")));
  }
  QuantizerOptions out;
  out.quantizer_ = quantizer;
  for (const auto& spec : specs) {
    auto it = given.find(spec.name);
    const std::string value = it == given.end() ? spec.default_value : it->second;
    bool ok = std::find(spec.choices.begin(), spec.choices.end(), value) != spec.choices.end();
    if (!ok && spec.type == OptionType::Int) {
      int64_t v = 0;
      ok = parse_int(value, v) && v >= spec.min && v <= spec.max;
    } else if (!ok && spec.type == OptionType::Float) {
      double v = 0;
      ok = parse_float(value, v) && v >= spec.min && v <= spec.max;
    }
    if (!ok)
      fail("{}quantizer '{}': option {}={} is not allowed ({} must be {})", prefix, quantizer, spec.name,
           value.empty() ? "''" : value, spec.name, spec.allowed_text());
    out.values_[spec.name] = value;
    if (it != given.end()) out.given_.insert(spec.name);
    out.types_[spec.name] = spec.type;
  }
  return out;
}

const std::string& QuantizerOptions::text(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) fail("internal: quantizer '{}' read undeclared option '{}'", quantizer_, name);
  return it->second;
}

int64_t QuantizerOptions::integer(const std::string& name) const {
  int64_t v = 0;
  if (!parse_int(text(name), v))
    fail("internal: quantizer '{}' option {}={} read as an integer", quantizer_, name, text(name));
  return v;
}

double QuantizerOptions::number(const std::string& name) const {
  double v = 0;
  if (!parse_float(text(name), v))
    fail("internal: quantizer '{}' option {}={} read as a number", quantizer_, name, text(name));
  return v;
}

nlohmann::json QuantizerOptions::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, value] : values_) {
    int64_t i = 0;
    double f = 0;
    OptionType type = types_.at(name);
    if (type == OptionType::Int && parse_int(value, i)) out[name] = i;
    else if (type == OptionType::Float && parse_float(value, f)) out[name] = f;
    else if (type == OptionType::Choice && parse_int(value, i)) out[name] = i;
    else out[name] = value;
  }
  return out;
}

}  // namespace calibq
