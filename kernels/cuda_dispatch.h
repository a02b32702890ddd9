// Shared glue (kernels report errors through TORCH_CHECK: they know nothing of core/) between LibTorch tensors and the raw-pointer CUDA launchers.
#pragma once

#include <ATen/ATen.h>

#ifdef CALIBQ_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>
#endif

namespace calibq::kernels {

// Whether this build has the CUDA kernels and a device to run them on.
bool cuda_available();

#ifdef CALIBQ_WITH_CUDA
inline cudaStream_t current_stream(const at::Tensor& t) {
  return at::cuda::getCurrentCUDAStream(t.device().index()).stream();
}
inline void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(err));
}
#else
[[noreturn]] inline void fail_no_cuda(const char* op) {
  TORCH_CHECK(false, op, ": a CUDA tensor was given, but this calibq was built without CUDA");
}
#endif

}  // namespace calibq::kernels
