// CUDA kernel of the RMSNorm op and of the residual add fused before it (rms_norm.h;
// rms_norm_cpu.cpp is the specification): one block per row, the sum of squares in float over
// the block, the two roundings of LlamaRMSNorm.
#include "kernels/cuda_convert.cuh"
#include "kernels/rms_norm_cuda.h"

namespace calibq::kernels::cuda {

namespace {

constexpr int kThreads = 256;

// The row's value at i: x, or with `delta` (add_rms_norm) x + delta rounded to T as `x + delta`
// rounds it (then also written to `sum`).
template <typename T>
__device__ __forceinline__ float row_value(const T* __restrict__ x, const T* __restrict__ delta, T* __restrict__ sum_out,
                                           int64_t i, bool write_sum) {
  if (!delta) return as_float(x[i]);
  const T s = from_float<T>(as_float(x[i]) + as_float(delta[i]));
  if (write_sum) sum_out[i] = s;
  return as_float(s);
}

// kPer > 0: the row (n <= kPer * kThreads) is held in registers, element threadIdx.x + j * kThreads
// in v[j], its loads all issued before the first is used. A decode step of batch 1 runs a single
// row per launch, so the kernel's time is the latency of its loads: a loop that waits on each in
// turn (the loads of one iteration behind the sum's store of the last) took several times longer.
// kPer == 0: any width, two passes over the row (the second recomputes x + delta rather than
// reading back `sum`, so every pointer is __restrict__).
template <typename T, int kPer>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ delta,
                                                            const T* __restrict__ w, T* __restrict__ out,
                                                            T* __restrict__ sum_out, int64_t n, float eps) {
  __shared__ float partial[kThreads / 32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * n;
  x += base;
  out += base;
  if (delta) delta += base, sum_out += base;
  float sum = 0.f;
  float v[kPer > 0 ? kPer : 1];
  if constexpr (kPer > 0) {
    float d[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t i = threadIdx.x + j * kThreads;
      v[j] = i < n ? as_float(x[i]) : 0.f;
      d[j] = delta && i < n ? as_float(delta[i]) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t i = threadIdx.x + j * kThreads;
      if (delta && i < n) {
        const T s = from_float<T>(v[j] + d[j]);
        sum_out[i] = s;
        v[j] = as_float(s);
      }
      sum += v[j] * v[j];
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const float value = row_value(x, delta, sum_out, i, true);
      sum += value * value;
    }
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) total += partial[i];
  const float rstd = rsqrtf(total / static_cast<float>(n) + eps);
  if constexpr (kPer > 0) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t i = threadIdx.x + j * kThreads;
      if (i < n) out[i] = from_float<T>(as_float(w[i]) * as_float(from_float<T>(v[j] * rstd)));
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const T normalized = from_float<T>(row_value(x, delta, sum_out, i, false) * rstd);
      out[i] = from_float<T>(as_float(w[i]) * as_float(normalized));
    }
  }
}

template <typename T>
void launch_typed(const void* x, const void* delta, const void* w, void* out, void* sum, int64_t rows, int64_t n, float eps,
                  cudaStream_t stream) {
  const auto* xt = static_cast<const T*>(x);
  const auto* dt = static_cast<const T*>(delta);
  const auto* wt = static_cast<const T*>(w);
  auto* ot = static_cast<T*>(out);
  auto* st = static_cast<T*>(sum);
  const unsigned grid = static_cast<unsigned>(rows);
  // Rows up to 4,096 (LLaMA-7B's, InternVL2.5-8B's and Qwen2-VL-7B's hidden sizes) and 8,192 in
  // registers; wider ones in two passes.
  if (n <= 16 * kThreads)
    rms_norm_kernel<T, 16><<<grid, kThreads, 0, stream>>>(xt, dt, wt, ot, st, n, eps);
  else if (n <= 32 * kThreads)
    rms_norm_kernel<T, 32><<<grid, kThreads, 0, stream>>>(xt, dt, wt, ot, st, n, eps);
  else
    rms_norm_kernel<T, 0><<<grid, kThreads, 0, stream>>>(xt, dt, wt, ot, st, n, eps);
}

}  // namespace

cudaError_t launch_rms_norm(const void* x, const void* delta, const void* w, void* out, void* sum, int64_t rows, int64_t n,
                            float eps, KVType type, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if ((delta == nullptr) != (sum == nullptr) || rows > 0x7fffffff) return cudaErrorInvalidValue;
  switch (type) {
    case KVType::F32: launch_typed<float>(x, delta, w, out, sum, rows, n, eps, stream); break;
    case KVType::F16: launch_typed<__half>(x, delta, w, out, sum, rows, n, eps, stream); break;
    case KVType::BF16: launch_typed<__nv_bfloat16>(x, delta, w, out, sum, rows, n, eps, stream); break;
  }
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
