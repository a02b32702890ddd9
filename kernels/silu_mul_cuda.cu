// CUDA kernel of the SwiGLU gate (silu_mul.h; silu_mul_cpu.cpp is the specification): a thread
// per output element, silu rounded to the dtype before the product as the tensor ops do.
#include <algorithm>

#include "kernels/cuda_convert.cuh"
#include "kernels/silu_mul_cuda.h"

namespace calibq::kernels::cuda {

namespace {

// Rows on the grid's y, columns on x: no index divisions (the 64-bit division and modulo of a
// flat index made the kernel compute-bound: 55 us at 630 x 14336, a third of the copy rate).
template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gu, T* __restrict__ out, int64_t rows, int64_t inter) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const T* g_row = gu + r * 2 * inter;
    const T* u_row = g_row + inter;
    T* o_row = out + r * inter;
    for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < inter;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const float g = as_float(g_row[c]);
      const T silu = from_float<T>(g / (1.f + expf(-g)));
      o_row[c] = from_float<T>(as_float(silu) * as_float(u_row[c]));
    }
  }
}

}  // namespace

cudaError_t launch_silu_mul(const void* gate_up, void* out, int64_t rows, int64_t inter, KVType type, cudaStream_t stream) {
  const int64_t total = rows * inter;
  if (total == 0) return cudaSuccess;
  const dim3 blocks(static_cast<unsigned>(std::min<int64_t>((inter + 255) / 256, 65535)),
                    static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  switch (type) {
    case KVType::F32: silu_mul_kernel<<<blocks, 256, 0, stream>>>(static_cast<const float*>(gate_up), static_cast<float*>(out), rows, inter); break;
    case KVType::F16: silu_mul_kernel<<<blocks, 256, 0, stream>>>(static_cast<const __half*>(gate_up), static_cast<__half*>(out), rows, inter); break;
    case KVType::BF16:
      silu_mul_kernel<<<blocks, 256, 0, stream>>>(static_cast<const __nv_bfloat16*>(gate_up), static_cast<__nv_bfloat16*>(out), rows, inter);
      break;
  }
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
