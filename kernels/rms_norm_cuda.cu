// CUDA kernel of the RMSNorm op (rms_norm.h; rms_norm_cpu.cpp is the specification): one block
// per row, the sum of squares in float over the block, the two roundings of LlamaRMSNorm.
#include "kernels/cuda_convert.cuh"
#include "kernels/rms_norm_cuda.h"

namespace calibq::kernels::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                            T* __restrict__ out, int64_t n, float eps) {
  __shared__ float partial[kThreads / 32];
  const T* xr = x + blockIdx.x * n;
  T* orow = out + blockIdx.x * n;
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = as_float(xr[i]);
    sum += v * v;
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
  const float rstd = rsqrtf(total / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const T normalized = from_float<T>(as_float(xr[i]) * rstd);
    orow[i] = from_float<T>(as_float(w[i]) * as_float(normalized));
  }
}

}  // namespace

cudaError_t launch_rms_norm(const void* x, const void* w, void* out, int64_t rows, int64_t n, float eps, KVType type,
                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(rows));
  switch (type) {
    case KVType::F32:
      rms_norm_kernel<float><<<grid, kThreads, 0, stream>>>(static_cast<const float*>(x), static_cast<const float*>(w),
                                                            static_cast<float*>(out), n, eps);
      break;
    case KVType::F16:
      rms_norm_kernel<__half><<<grid, kThreads, 0, stream>>>(static_cast<const __half*>(x), static_cast<const __half*>(w),
                                                             static_cast<__half*>(out), n, eps);
      break;
    case KVType::BF16:
      rms_norm_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w), static_cast<__nv_bfloat16*>(out), n, eps);
      break;
  }
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
