// Quantizer options: declared by each quantizer (name, default, allowed values, help),
// given as text (a YAML map or a CLI string), validated once at construction and read
// back typed. A bad option is one error naming the quantizer, the option, the value and
// the allowed set.
#pragma once

#include <nlohmann/json.hpp>

#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace calibq {

enum class OptionType { Int, Float, Choice };

struct OptionSpec {
  std::string name;
  OptionType type = OptionType::Choice;
  std::string default_value;
  std::string help;
  std::vector<std::string> choices;  // Choice: the allowed values; Int/Float: extra allowed words ("auto")
  double min = -std::numeric_limits<double>::infinity();  // Int/Float bounds, inclusive
  double max = std::numeric_limits<double>::infinity();
  std::string allowed_text() const;  // "one of 1, 2, 4" / "a number in [0, 1] or auto"
};

class QuantizerOptions {
 public:
  QuantizerOptions() = default;
  // Checks `given` against `specs` and fills in defaults. `where` prefixes errors (a file
  // and YAML path, or "--kv-key").
  static QuantizerOptions resolve(const std::string& quantizer, const std::vector<OptionSpec>& specs,
                                  const std::map<std::string, std::string>& given,
                                  const std::string& where = "");

  const std::string& text(const std::string& name) const;
  bool is(const std::string& name, const std::string& word) const { return text(name) == word; }
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  const std::map<std::string, std::string>& values() const { return values_; }
  // Whether the user gave this option (rather than taking its default).
  bool given(const std::string& name) const { return given_.count(name) != 0; }
  nlohmann::json to_json() const;  // numbers as numbers, words as strings

 private:
  std::string quantizer_;
  std::map<std::string, std::string> values_;
  std::map<std::string, OptionType> types_;
  std::set<std::string> given_;
};

}  // namespace calibq
