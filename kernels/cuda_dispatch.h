// Shared glue (kernels report errors through TORCH_CHECK: they know nothing of core/) between LibTorch tensors and the raw-pointer CUDA launchers.
#pragma once

#include <ATen/ATen.h>

#ifdef CALIBQ_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>

#include "kernels/cuda_types.h"
#endif

namespace calibq::kernels {

// Whether this build has the CUDA kernels and a device to run them on.
bool cuda_available();

// The one dtype check of the element-wise kernels: float32, float16 or bfloat16.
inline void check_float_dtype(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16, op,
              ": float32, float16 or bfloat16 expected, got ", t.scalar_type());
}

#ifdef CALIBQ_WITH_CUDA
inline cudaStream_t current_stream(const at::Tensor& t) {
  return at::cuda::getCurrentCUDAStream(t.device().index()).stream();
}
inline void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(err));
}
// A float32, float16 or bfloat16 tensor's element type as the launchers take it.
inline cuda::KVType element_type(const at::Tensor& t, const char* op) {
  check_float_dtype(t, op);
  return t.scalar_type() == at::kHalf ? cuda::KVType::F16 : t.scalar_type() == at::kBFloat16 ? cuda::KVType::BF16 : cuda::KVType::F32;
}
#else
[[noreturn]] inline void fail_no_cuda(const char* op) {
  TORCH_CHECK(false, op, ": a CUDA tensor was given, but this calibq was built without CUDA");
}
#endif

}  // namespace calibq::kernels
