// CUDA kernel of the RoPE op (rope.h; rope_cpu.cpp is the specification): one thread per output
// element, the rounding of the three-op form (x * cos rounded to the dtype, then addcmul's float sum).
#include <algorithm>

#include "kernels/cuda_convert.cuh"
#include "kernels/rope_cuda.h"

namespace calibq::kernels::cuda {

namespace {

template <typename T>
__global__ void rope_kernel(RopeArgs a) {
  const T* x = static_cast<const T*>(a.x);
  const T* cs = static_cast<const T*>(a.cos);
  const T* sn = static_cast<const T*>(a.sin);
  T* out = static_cast<T*>(a.out);
  const int64_t total = a.B * a.H * a.T * a.D, half = a.D / 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % a.D, t = (i / a.D) % a.T, h = (i / (a.D * a.T)) % a.H, b = i / (a.D * a.T * a.H);
    const int64_t row = b * a.sx[0] + h * a.sx[1] + t * a.sx[2];
    const int64_t table = (b * a.T + t) * a.D + d;
    const float first = as_float(from_float<T>(as_float(x[row + d * a.sx[3]]) * as_float(cs[table])));
    const float rotated = as_float(x[row + ((d + half) % a.D) * a.sx[3]]);
    out[i] = from_float<T>(first + rotated * as_float(sn[table]));
  }
}

}  // namespace

cudaError_t launch_rope(const RopeArgs& a, cudaStream_t stream) {
  const int64_t total = a.B * a.H * a.T * a.D;
  if (total == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 65535 * 8));
  switch (a.type) {
    case KVType::F32: rope_kernel<float><<<blocks, 256, 0, stream>>>(a); break;
    case KVType::F16: rope_kernel<__half><<<blocks, 256, 0, stream>>>(a); break;
    case KVType::BF16: rope_kernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
