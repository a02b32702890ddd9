// What this binary was built with, for `calibq --version` and every result file.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace calibq {

struct BuildInfo {
  std::string calibq_version;
  std::string torch_version;
  bool cuda_built = false;     // compiled with the CUDA kernels
  int cuda_devices = 0;        // devices visible now
  std::string cuda_device_name;  // of device 0, when there is one
};

BuildInfo build_info();
std::string version_text();
nlohmann::json to_json(const BuildInfo& info);

}  // namespace calibq
