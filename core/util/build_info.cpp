#include "core/util/build_info.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <fmt/format.h>

#include "kernels/cuda_dispatch.h"

#ifdef CALIBQ_WITH_CUDA
#include <cuda_runtime.h>
#endif

#ifndef CALIBQ_VERSION
#define CALIBQ_VERSION "unknown"
#endif

namespace calibq {

BuildInfo build_info() {
  BuildInfo info;
  info.calibq_version = CALIBQ_VERSION;
  info.torch_version = TORCH_VERSION;
#ifdef CALIBQ_WITH_CUDA
  info.cuda_built = true;
  if (kernels::cuda_available()) {
    int n = 0;
    if (cudaGetDeviceCount(&n) == cudaSuccess) info.cuda_devices = n;
    cudaDeviceProp prop{};
    if (n > 0 && cudaGetDeviceProperties(&prop, 0) == cudaSuccess) info.cuda_device_name = prop.name;
  }
#endif
  return info;
}

std::string version_text() {
  BuildInfo b = build_info();
  std::string cuda;
  if (!b.cuda_built) {
    cuda = "off (CPU build)";
  } else if (b.cuda_devices == 0) {
    cuda = "on (built with CUDA kernels; no device visible)";
  } else {
    cuda = fmt::format("on ({} device(s): {})", b.cuda_devices, b.cuda_device_name);
  }
  return fmt::format("calibq {}\nLibTorch {}\nCUDA {}\n", b.calibq_version, b.torch_version, cuda);
}

nlohmann::json to_json(const BuildInfo& b) {
  return {{"calibq", b.calibq_version}, {"torch", b.torch_version}, {"cuda_built", b.cuda_built},
          {"cuda_devices", b.cuda_devices}, {"cuda_device", b.cuda_device_name}};
}

}  // namespace calibq
