// Raw-pointer launcher of the RoPE kernel (rope.h). No LibTorch here, so that nvcc compiles
// rope_cuda.cu where LibTorch has no CUDA (CI).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda_types.h"

namespace calibq::kernels::cuda {

struct RopeArgs {
  const void* x = nullptr;  // [B, H, T, D] with element strides sx[4]
  int64_t sx[4] = {};
  const void* cos = nullptr;  // [B, 1, T, D] contiguous
  const void* sin = nullptr;  // signed sin, same layout
  void* out = nullptr;        // [B, H, T, D] contiguous
  int64_t B = 0, H = 0, T = 0, D = 0;
  KVType type = KVType::F32;
};

cudaError_t launch_rope(const RopeArgs& a, cudaStream_t stream);

}  // namespace calibq::kernels::cuda
