// Raw-pointer launcher of the token-append kernel (kv_append.h). No LibTorch here, so that nvcc
// compiles kv_append_cuda.cu where LibTorch has no CUDA (CI).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace calibq::kernels::cuda {

struct AppendTokenArgs {
  void* k_store = nullptr;  // [B, H, capacity, D] contiguous
  void* v_store = nullptr;
  const void* k = nullptr;  // [B, H, 1, D], element strides below
  const void* v = nullptr;
  int64_t k_stride[4] = {}, v_stride[4] = {};
  int64_t B = 0, H = 0, capacity = 0, D = 0;
  int element_bytes = 2;  // 2 or 4
  int* length = nullptr;  // the position, advanced by one
  int* done = nullptr;    // finished blocks, zero before and after
};

cudaError_t launch_append_token(const AppendTokenArgs& a, cudaStream_t stream);

}  // namespace calibq::kernels::cuda
