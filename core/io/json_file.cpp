#include "core/io/json_file.h"

#include <fstream>

#include "core/util/error.h"

namespace calibq {

nlohmann::json read_json_file(const std::string& path) {
  if (path.empty()) fail("no JSON file given");
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
}

}  // namespace calibq
