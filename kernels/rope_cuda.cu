// CUDA kernel of the RoPE op (rope.h; rope_cpu.cpp is the specification): a warp per row (b, h, t),
// the rounding of the three-op form (x * cos rounded to the dtype, then addcmul's float sum).
#include "kernels/cuda_convert.cuh"
#include "kernels/rope_cuda.h"

namespace calibq::kernels::cuda {

namespace {

// A warp per row (b, h, t), eight rows per block, lane d + 32 i of the row: coalesced reads of
// x, cos and sin and one write per element. (A block per row of 128 threads took 17.8 us for the
// queries of 630 sequences under Nsight Compute, 20k blocks of one row each; before that, 64-bit
// divisions of a flat index per element made it compute-bound at 39 us.) The row's (b, h, t) is
// taken apart once per warp, in 32 bits.
constexpr int kRopeWarps = 8;

template <typename T>
__global__ void __launch_bounds__(kRopeWarps * 32) rope_kernel(RopeArgs a, uint32_t rows) {
  const T* x = static_cast<const T*>(a.x);
  const T* cs = static_cast<const T*>(a.cos);
  const T* sn = static_cast<const T*>(a.sin);
  T* out = static_cast<T*>(a.out);
  const uint32_t r = blockIdx.x * kRopeWarps + (threadIdx.x >> 5);
  if (r >= rows) return;
  const uint32_t T_ = static_cast<uint32_t>(a.T), H = static_cast<uint32_t>(a.H);
  const uint32_t t = r % T_, bh = r / T_, h = bh % H, b = bh / H;
  const int half = static_cast<int>(a.D / 2), D = static_cast<int>(a.D);
  const T* xr = x + b * a.sx[0] + h * a.sx[1] + t * a.sx[2];
  const int64_t table = (static_cast<int64_t>(b) * a.T + t) * a.D;
  T* o = out + static_cast<int64_t>(r) * a.D;  // rows in (b, h, t) order: out is contiguous
  // Four elements per lane at a time, loaded before any is stored: the stores could alias the
  // loads as far as the compiler knows, and at batch 1 (a few warps in all) waiting on each load
  // in turn is the kernel's time.
  constexpr int kUnroll = 4;
  for (int d0 = threadIdx.x & 31; d0 < D; d0 += 32 * kUnroll) {
    float xv[kUnroll], rot[kUnroll], c[kUnroll], sv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int d = d0 + 32 * u, dr = d < half ? d + half : d - half;
      if (d < D) {
        xv[u] = as_float(xr[d * a.sx[3]]);
        rot[u] = as_float(xr[dr * a.sx[3]]);
        c[u] = as_float(cs[table + d]);
        sv[u] = as_float(sn[table + d]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int d = d0 + 32 * u;
      if (d < D) o[d] = from_float<T>(as_float(from_float<T>(xv[u] * c[u])) + rot[u] * sv[u]);
    }
  }
}

}  // namespace

cudaError_t launch_rope(const RopeArgs& a, cudaStream_t stream) {
  const int64_t rows = a.B * a.H * a.T;
  if (rows == 0 || a.D == 0) return cudaSuccess;
  if (rows > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((rows + kRopeWarps - 1) / kRopeWarps));
  const unsigned threads = kRopeWarps * 32;
  const uint32_t n = static_cast<uint32_t>(rows);
  switch (a.type) {
    case KVType::F32: rope_kernel<float><<<grid, threads, 0, stream>>>(a, n); break;
    case KVType::F16: rope_kernel<__half><<<grid, threads, 0, stream>>>(a, n); break;
    case KVType::BF16: rope_kernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(a, n); break;
  }
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
