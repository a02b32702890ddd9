// CUDA quantize-and-pack (quantize_pack.h; quantize_pack_cpu.cpp is the specification):
// a statistics pass (per channel: threads over channels, looping over tokens, coalesced; per
// token: one warp per token) that writes scale and zero-point, then one thread per packed
// byte computing its codes with the same float32 operations.
#include <cfloat>

#include "kernels/quantize_pack_cuda.h"

namespace calibq::kernels::cuda {

namespace {

// Scale and zero-point of a group from its range; flat (hi == lo after clipping) groups get code 0.
__device__ __forceinline__ void finish_group(float lo, float hi, float clip, float levels, int64_t g, float* scale,
                                             float* zero, uint8_t* flat) {
  lo *= clip;
  hi *= clip;
  float s = (hi - lo) / levels;
  if (s <= 0.f) s = 1.f;
  scale[g] = s;
  zero[g] = -lo / s;
  flat[g] = hi - lo <= 0.f;
}

// One block per row; thread t takes channel t % D over the token lane t / D, lanes combined in shared memory.
__global__ void channel_stats_kernel(const float* __restrict__ x, int64_t n, int d, float clip, float levels,
                                     float* __restrict__ scale, float* __restrict__ zero, uint8_t* __restrict__ flat) {
  extern __shared__ float part[];  // [lanes][d][2]
  const int row = blockIdx.x, lanes = blockDim.x / d;
  const int c = threadIdx.x % d, lane = threadIdx.x / d;
  float lo = INFINITY, hi = -INFINITY;
  if (lane < lanes) {
    const float* xr = x + static_cast<int64_t>(row) * n * d;
    for (int64_t t = lane; t < n; t += lanes) {
      const float v = xr[t * d + c];
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
    }
    part[(lane * d + c) * 2] = lo;
    part[(lane * d + c) * 2 + 1] = hi;
  }
  __syncthreads();
  if (lane == 0) {
    for (int l = 1; l < lanes; ++l) {
      lo = fminf(lo, part[(l * d + c) * 2]);
      hi = fmaxf(hi, part[(l * d + c) * 2 + 1]);
    }
    finish_group(lo, hi, clip, levels, static_cast<int64_t>(row) * d + c, scale, zero, flat);
  }
}

// One warp per (row, token).
__global__ void token_stats_kernel(const float* __restrict__ x, int64_t groups, int d, float clip, float levels,
                                   float* __restrict__ scale, float* __restrict__ zero, uint8_t* __restrict__ flat) {
  const int64_t g = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (g >= groups) return;
  const float* xr = x + g * d;
  float lo = INFINITY, hi = -INFINITY;
  for (int c = lane; c < d; c += 32) {
    lo = fminf(lo, xr[c]);
    hi = fmaxf(hi, xr[c]);
  }
  for (int o = 16; o > 0; o >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
  if (lane == 0) finish_group(lo, hi, clip, levels, g, scale, zero, flat);
}

// One thread per packed byte: its codes from x, scale and zero (code 0 in flat groups, as
// the tensor-op path does).
__global__ void codes_kernel(const float* __restrict__ x, int64_t rows, int64_t n, int d, int storage, bool token_axis,
                             float levels, const float* __restrict__ scale, const float* __restrict__ zero,
                             const uint8_t* __restrict__ flat, uint8_t* __restrict__ packed) {
  const int per = 8 / storage, row_bytes = (d * storage + 7) / 8;
  const int64_t total = rows * n * row_bytes;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t rt = idx / row_bytes;  // row * n + token
    const int j = static_cast<int>(idx % row_bytes);
    const int64_t row = rt / n;
    unsigned byte = 0;
    for (int k = 0; k < per; ++k) {
      const int c = j * per + k;
      if (c >= d) break;
      const int64_t g = token_axis ? rt : row * d + c;
      if (flat[g]) continue;
      const float v = fminf(fmaxf(x[rt * d + c] / scale[g] + zero[g], 0.f), levels);
      byte |= static_cast<unsigned>(rintf(v)) << (k * storage);
    }
    packed[idx] = static_cast<uint8_t>(byte);
  }
}

}  // namespace

cudaError_t launch_quantize_pack(const float* x, int64_t rows, int64_t n, int d, int bits, int storage_bits,
                                 bool token_axis, float clip, float* scale, float* zero, uint8_t* flat,
                                 uint8_t* packed, cudaStream_t stream) {
  if (rows == 0 || n == 0 || d == 0) return cudaSuccess;
  const float levels = static_cast<float>((1 << bits) - 1);
  const int64_t groups = token_axis ? rows * n : rows * d;
  if (token_axis) {
    const int64_t threads = groups * 32;
    token_stats_kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(x, groups, d, clip, levels,
                                                                                          scale, zero, flat);
  } else {
    const int threads = d <= 256 ? (256 / d) * d : d;
    channel_stats_kernel<<<static_cast<unsigned>(rows), threads, (threads / d) * d * 2 * sizeof(float), stream>>>(
        x, n, d, clip, levels, scale, zero, flat);
  }
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  const int64_t total = rows * n * ((d * storage_bits + 7) / 8);
  const int64_t blocks = (total + 255) / 256 < 65535 * 16 ? (total + 255) / 256 : 65535 * 16;
  codes_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(x, rows, n, d, storage_bits, token_axis, levels, scale,
                                                                  zero, flat, packed);
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
