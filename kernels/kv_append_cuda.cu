// CUDA kernel of the token append (kv_append.h; kv_append_cpu.cpp is the specification): a warp
// per (b, h) row, eight rows per block, the key and the value row copied element by element
// (coalesced). Every block reads the position first; the last block to finish (a count of
// finished blocks, as CUDA's threadFenceReduction sample does it) advances it and zeroes the
// count, so no block can read a position already advanced.
#include "kernels/kv_append_cuda.h"

namespace calibq::kernels::cuda {

namespace {

constexpr int kAppendWarps = 8;

template <typename E>
__global__ void __launch_bounds__(kAppendWarps * 32) append_token_kernel(AppendTokenArgs a, unsigned rows) {
  __shared__ int pos_shared;
  if (threadIdx.x == 0) pos_shared = *a.length;
  __syncthreads();
  const int pos = pos_shared;
  const unsigned r = blockIdx.x * kAppendWarps + (threadIdx.x >> 5);
  if (r < rows && pos >= 0 && pos < a.capacity) {
    const unsigned h = r % static_cast<unsigned>(a.H), b = r / static_cast<unsigned>(a.H);
    const int64_t dst = (static_cast<int64_t>(r) * a.capacity + pos) * a.D;
    const E* k = static_cast<const E*>(a.k) + b * a.k_stride[0] + h * a.k_stride[1];
    const E* v = static_cast<const E*>(a.v) + b * a.v_stride[0] + h * a.v_stride[1];
    E* ks = static_cast<E*>(a.k_store) + dst;
    E* vs = static_cast<E*>(a.v_store) + dst;
    // Four elements of each per lane at a time, loaded before any is stored (the stores could
    // alias the loads as far as the compiler knows; at batch 1 the loads' latency is the time).
    constexpr int kUnroll = 4;
    for (int64_t d0 = threadIdx.x & 31; d0 < a.D; d0 += 32 * kUnroll) {
      E kv[kUnroll], vv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t d = d0 + 32 * u;
        if (d < a.D) kv[u] = k[d * a.k_stride[3]], vv[u] = v[d * a.v_stride[3]];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t d = d0 + 32 * u;
        if (d < a.D) ks[d] = kv[u], vs[d] = vv[u];
      }
    }
  }
  __syncthreads();  // every thread of this block has read the position (above) before the count
  if (threadIdx.x == 0) {
    if (atomicAdd(a.done, 1) == static_cast<int>(gridDim.x) - 1) {
      *a.done = 0;
      if (pos >= 0 && pos < a.capacity) *a.length = pos + 1;
    }
  }
}

}  // namespace

cudaError_t launch_append_token(const AppendTokenArgs& a, cudaStream_t stream) {
  const int64_t rows = a.B * a.H;
  if (rows == 0) return cudaSuccess;
  if (rows > 0x7fffffff || (a.element_bytes != 2 && a.element_bytes != 4)) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>((rows + kAppendWarps - 1) / kAppendWarps);
  if (a.element_bytes == 2)
    append_token_kernel<uint16_t><<<blocks, kAppendWarps * 32, 0, stream>>>(a, static_cast<unsigned>(rows));
  else
    append_token_kernel<uint32_t><<<blocks, kAppendWarps * 32, 0, stream>>>(a, static_cast<unsigned>(rows));
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
