// CUDA kernel of the SwiGLU gate (silu_mul.h; silu_mul_cpu.cpp is the specification): 16 bytes
// of output per thread (one element where the width does not allow it), silu rounded to the
// dtype before the product as the tensor ops do.
#include <algorithm>

#include "kernels/cuda_convert.cuh"
#include "kernels/silu_mul_cuda.h"

namespace calibq::kernels::cuda {

namespace {

template <typename T>
__device__ __forceinline__ T silu_mul_one(T g, T u) {
  const T silu = from_float<T>(as_float(g) / (1.f + expf(-as_float(g))));
  return from_float<T>(as_float(silu) * as_float(u));
}

// Rows on the grid's y, columns on x: no index divisions (the 64-bit division and modulo of a
// flat index made the kernel compute-bound: 55 us at 630 x 14336, a third of the copy rate).
// kVec elements per thread (16-byte loads and stores where the row length and the pointers
// allow: with one element per thread it still ran at ~1/3 of the copy rate, 50 us per layer
// at batch 630 under Nsight), else one.
template <typename T, int kVec>
__global__ void silu_mul_kernel(const T* __restrict__ gu, T* __restrict__ out, int64_t rows, int64_t inter) {
  struct alignas(sizeof(T) * kVec) Pack {
    T x[kVec];
  };
  const int64_t packs = inter / kVec;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const Pack* g_row = reinterpret_cast<const Pack*>(gu + r * 2 * inter);
    const Pack* u_row = g_row + packs;
    Pack* o_row = reinterpret_cast<Pack*>(out + r * inter);
    for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < packs;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const Pack g = g_row[c], u = u_row[c];
      Pack o;
#pragma unroll
      for (int i = 0; i < kVec; ++i) o.x[i] = silu_mul_one(g.x[i], u.x[i]);
      o_row[c] = o;
    }
  }
}

template <typename T>
void launch_typed(const void* gate_up, void* out, int64_t rows, int64_t inter, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = inter % kVec == 0 && reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t per_row = vec ? inter / kVec : inter;
  const dim3 blocks(static_cast<unsigned>(std::min<int64_t>((per_row + 255) / 256, 65535)),
                    static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  const T* in = static_cast<const T*>(gate_up);
  T* o = static_cast<T*>(out);
  if (vec)
    silu_mul_kernel<T, kVec><<<blocks, 256, 0, stream>>>(in, o, rows, inter);
  else
    silu_mul_kernel<T, 1><<<blocks, 256, 0, stream>>>(in, o, rows, inter);
}

}  // namespace

cudaError_t launch_silu_mul(const void* gate_up, void* out, int64_t rows, int64_t inter, KVType type, cudaStream_t stream) {
  if (rows * inter == 0) return cudaSuccess;
  switch (type) {
    case KVType::F32: launch_typed<float>(gate_up, out, rows, inter, stream); break;
    case KVType::F16: launch_typed<__half>(gate_up, out, rows, inter, stream); break;
    case KVType::BF16: launch_typed<__nv_bfloat16>(gate_up, out, rows, inter, stream); break;
  }
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
