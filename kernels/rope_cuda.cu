// CUDA kernel of the RoPE op (rope.h; rope_cpu.cpp is the specification): a block per row (b, h, t),
// the rounding of the three-op form (x * cos rounded to the dtype, then addcmul's float sum).
#include <algorithm>

#include "kernels/cuda_convert.cuh"
#include "kernels/rope_cuda.h"

namespace calibq::kernels::cuda {

namespace {

// Block (t, h, b), thread d: no index divisions (the 64-bit divisions of a flat index made the
// kernel compute-bound: 39 us for the queries of 630 sequences, a seventh of the copy rate).
template <typename T>
__global__ void rope_kernel(RopeArgs a) {
  const T* x = static_cast<const T*>(a.x);
  const T* cs = static_cast<const T*>(a.cos);
  const T* sn = static_cast<const T*>(a.sin);
  T* out = static_cast<T*>(a.out);
  const int64_t t = blockIdx.x, h = blockIdx.y, half = a.D / 2;
  for (int64_t b = blockIdx.z; b < a.B; b += gridDim.z) {
    const int64_t row = b * a.sx[0] + h * a.sx[1] + t * a.sx[2];
    const int64_t table = (b * a.T + t) * a.D, o = ((b * a.H + h) * a.T + t) * a.D;
    for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
      const float first = as_float(from_float<T>(as_float(x[row + d * a.sx[3]]) * as_float(cs[table + d])));
      const int dr = d < half ? d + half : d - half;
      const float rotated = as_float(x[row + dr * a.sx[3]]);
      out[o + d] = from_float<T>(first + rotated * as_float(sn[table + d]));
    }
  }
}

}  // namespace

cudaError_t launch_rope(const RopeArgs& a, cudaStream_t stream) {
  const int64_t total = a.B * a.H * a.T * a.D;
  if (total == 0) return cudaSuccess;
  if (a.T > 0x7fffffff || a.H > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.H), static_cast<unsigned>(std::min<int64_t>(a.B, 65535)));
  const unsigned threads = static_cast<unsigned>(std::min<int64_t>((a.D + 31) / 32 * 32, 256));
  switch (a.type) {
    case KVType::F32: rope_kernel<float><<<grid, threads, 0, stream>>>(a); break;
    case KVType::F16: rope_kernel<__half><<<grid, threads, 0, stream>>>(a); break;
    case KVType::BF16: rope_kernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
