// Reading a JSON file with one clear error naming it when it is missing or malformed.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace calibq {

nlohmann::json read_json_file(const std::string& path);

}  // namespace calibq
