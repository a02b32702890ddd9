// CUDA kernels of decode attention over segments (decode_attention.h is the interface,
// decode_attention_cpu.cpp the specification). One thread block per (sequence, KV head,
// sequence split) serves all G query heads of its KV head, so K/V are read once per step
// (GQA without repeating them). Each split leaves its unnormalized output, maximum and sum
// of exponentials; merge combines the splits of all segments (log-sum-exp).
//
// The packed segment is attended on its codes. For 1- and 2-bit codes a byte holds 8 or 4
// codes, and both matmuls go through 256-entry tables per byte position instead of a
// multiply per code:
//   scores:  T[g][j][c] = Σ_k q'[g][j·cpb + k] · code_k(c), then score = Σ_j T[g][j][byte_j]
//   values:  H[g][j][c] = Σ_{tokens whose byte j is c} p, then out[d] = Σ_c H[g][j][c] · code_k(c)
// which cuts the work per token from D multiply-adds to D·bits/8 table reads.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <string>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "kernels/cuda_convert.cuh"
#include "kernels/decode_attention_cuda.h"

namespace calibq::kernels::cuda {

namespace {

constexpr int kFullThreads = 128;
constexpr int kPackedThreads = 256;
constexpr int kMaxPerLane = 8;  // head_dim <= 256 = 32 lanes x 8

struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Min {
  __device__ float operator()(float a, float b) const { return fminf(a, b); }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float x, Op op) {
  for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Every thread of the block gets the reduction of one value per thread. scratch: 32 floats.
template <typename Op>
__device__ float block_reduce(float x, float* scratch, Op op, float identity) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  x = warp_reduce(x, op);
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : identity;
  return warp_reduce(x, op);
}

// Rows g < G of `len` scores (row stride `stride`) become exp(s - max) in place; max and sum per row.
template <int G>
__device__ void softmax_rows(float* s, int64_t stride, int len, float* row_max, float* row_sum, float* scratch) {
  for (int g = 0; g < G; ++g) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < len; i += blockDim.x) m = fmaxf(m, s[g * stride + i]);
    m = block_reduce(m, scratch, Max{}, -INFINITY);
    float sum = 0.f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
      const float p = m == -INFINITY ? 0.f : expf(s[g * stride + i] - m);
      s[g * stride + i] = p;
      sum += p;
    }
    sum = block_reduce(sum, scratch, Sum{}, 0.f);
    if (threadIdx.x == 0) {
      row_max[g] = m;
      row_sum[g] = sum;
    }
  }
  __syncthreads();
}

// q's elements from their dtype, times the softmax scale.
struct QRow {
  const void* base;
  KVType type;
  float scale;
  __device__ __forceinline__ float operator[](int64_t i) const {
    switch (type) {
      case KVType::F32: return static_cast<const float*>(base)[i] * scale;
      case KVType::F16: return as_float(static_cast<const __half*>(base)[i]) * scale;
      case KVType::BF16: return as_float(static_cast<const __nv_bfloat16*>(base)[i]) * scale;
    }
    return 0.f;
  }
};
// 2^x by the one MUFU.EX2 instruction (relative error ~2^-22; results below 2^-126 flush to
// zero, which no softmax weight here misses); exp2f adds range handling around it.
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ QRow q_row(const DecodeShape& s, int64_t offset) {
  const size_t bytes = s.q_type == KVType::F32 ? 4 : 2;
  return {static_cast<const char*>(s.q) + offset * bytes, s.q_type, s.q_scale};
}

__device__ __forceinline__ void write_partial(const DecodeShape& s, int bh, int g, int split, float m, float l) {
  const int64_t r = (static_cast<int64_t>(bh) * s.groups + g) * s.total_splits + split;
  s.part_ml[r * 2] = m;
  s.part_ml[r * 2 + 1] = l;
}
__device__ __forceinline__ float* partial_out(const DecodeShape& s, int bh, int g, int split) {
  return s.part_o + ((static_cast<int64_t>(bh) * s.groups + g) * s.total_splits + split) * s.head_dim;
}


// A key's score from the dot product of q' with its codes: per-token key scales and zero-points
// apply after the sum, s_n (dot - z_n sum(q)); per-channel ones are in q' and the row constant.
__device__ __forceinline__ float key_score(const PackedSegmentArgs& a, const float* ks, const float* kz, int64_t n,
                                           float dot, float cst) {
  return a.k_token_axis ? ks[n] * (dot - kz[n] * cst) : dot + cst;
}

// A row's score range over every split, from the min/max pass's records [splits][2].
__device__ __forceinline__ void range_over_splits(const float* mm, int splits, float& lo, float& hi) {
  lo = INFINITY;
  hi = -INFINITY;
  for (int t = 0; t < splits; ++t) {
    lo = fminf(lo, mm[t * 2]);
    hi = fmaxf(hi, mm[t * 2 + 1]);
  }
}

// CalibQuant's map of a row's range [lo, hi] onto [lo + a, hi + b] as s' = alpha s + beta.
__device__ __forceinline__ void calibration_affine(float lo, float hi, const PackedSegmentArgs& a, float& alpha, float& beta) {
  alpha = hi > lo ? ((hi + a.calib_b) - (lo + a.calib_a)) / (hi - lo) : 0.f;
  beta = (lo + a.calib_a) - alpha * lo;
}

// A split's calibration of each row g < G (thread g) from the per-warp score ranges
// wrange [warps][G][2]: with several splits under calibration, the min/max pass records the
// split's range (minmax_only) and the second pass maps the range over every split;
// alpha s + beta is the calibrated score (alpha = 1, beta = 0 without calibration) and
// row_max the split's largest one (either end when alpha < 0).
__device__ __forceinline__ void split_calibration(const PackedSegmentArgs& a, int bh, int G, int split, bool minmax_only,
                                                  int len, const float* wrange, int warps, float* alpha_out,
                                                  float* beta_out, float* row_max_out) {
  if (static_cast<int>(threadIdx.x) >= G) return;
  const int g = threadIdx.x;
  float lo = INFINITY, hi = -INFINITY;
  for (int w = 0; w < warps; ++w) {
    lo = fminf(lo, wrange[(w * G + g) * 2]);
    hi = fmaxf(hi, wrange[(w * G + g) * 2 + 1]);
  }
  float al = 1.f, be = 0.f;
  if (a.calibrate) {
    float* mm = a.minmax + ((static_cast<int64_t>(bh) * G + g) * a.splits) * 2;
    if (minmax_only) {
      mm[split * 2] = lo;
      mm[split * 2 + 1] = hi;
    } else {
      float glo = lo, ghi = hi;
      if (a.splits > 1) range_over_splits(mm, a.splits, glo, ghi);
      calibration_affine(glo, ghi, a, al, be);
    }
  }
  alpha_out[g] = al;
  beta_out[g] = be;
  row_max_out[g] = len == 0 ? -INFINITY : fmaxf(al * hi + be, al * lo + be);
}

// CalibQuant's calibration of rows g < G of `len` scores: the row's range [m, M] over every
// split (from the min/max pass when there are several) onto [m + a, M + b]. With
// minmax_only, records this split's range and returns false (the caller stops there).
template <int G>
__device__ bool calibrate_rows(float* sc, int64_t chunk, int len, const PackedSegmentArgs& a, int bh, int split,
                               bool minmax_only, float* scratch, float* alpha, float* beta) {
  if (!a.calibrate) return true;
  for (int g = 0; g < G; ++g) {
    float lo = INFINITY, hi = -INFINITY;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
      lo = fminf(lo, sc[g * chunk + i]);
      hi = fmaxf(hi, sc[g * chunk + i]);
    }
    lo = block_reduce(lo, scratch, Min{}, INFINITY);
    hi = block_reduce(hi, scratch, Max{}, -INFINITY);
    float* mm = a.minmax + ((static_cast<int64_t>(bh) * G + g) * a.splits) * 2;
    if (minmax_only) {
      if (threadIdx.x == 0) {
        mm[split * 2] = lo;
        mm[split * 2 + 1] = hi;
      }
      continue;
    }
    if (a.splits > 1) range_over_splits(mm, a.splits, lo, hi);
    if (threadIdx.x == 0) calibration_affine(lo, hi, a, alpha[g], beta[g]);
  }
  if (minmax_only) return false;
  __syncthreads();
  for (int i = threadIdx.x; i < G * len; i += blockDim.x) {
    const int g = i / len, t = i % len;
    sc[g * chunk + t] = alpha[g] * sc[g * chunk + t] + beta[g];
  }
  __syncthreads();
  return true;
}

// Per-token value scales fold into the probabilities: p' = p s_n, and delta = -Σ p s_n z_n.
template <int G>
__device__ void fold_token_value_scales(float* sc, int64_t chunk, int len, int64_t n0, const float* vs, const float* vz,
                                        float* scratch, float* delta) {
  for (int g = 0; g < G; ++g) {
    float part = 0.f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
      const float p = sc[g * chunk + i] * vs[n0 + i];
      part += p * vz[n0 + i];
      sc[g * chunk + i] = p;
    }
    part = block_reduce(part, scratch, Sum{}, 0.f);
    if (threadIdx.x == 0) delta[g] = -part;
  }
  __syncthreads();
}

// A packed split's partial output element i = (g, d) from its code sums Σ p' c ([G][D] in
// shared memory): s_d (Σ p c - z_d Σ p) for per-channel value scales, Σ p' c - Σ p s z for
// per-token ones.
__device__ __forceinline__ float value_partial(const PackedSegmentArgs& a, const float* sums, const float* vs, const float* vz,
                                               const float* delta, const float* row_sum, int i, int g, int d) {
  return a.v_token_axis ? sums[i] + delta[g] : vs[d] * (sums[i] - vz[d] * row_sum[g]);
}

template <int G>
__device__ void write_value_partials(const DecodeShape& s, const PackedSegmentArgs& a, int bh, int split_index,
                                     const float* sums, const float* vs, const float* vz, const float* delta,
                                     const float* row_max, const float* row_sum) {
  const int D = s.head_dim;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    partial_out(s, bh, g, split_index)[d] = value_partial(a, sums, vs, vz, delta, row_sum, i, g, d);
  }
  if (threadIdx.x < G) write_partial(s, bh, threadIdx.x, split_index, row_max[threadIdx.x], row_sum[threadIdx.x]);
}

// Element i of the output [B, Hq, D] in the query's dtype.
__device__ __forceinline__ void store_output(void* out, KVType type, int64_t i, float v) {
  switch (type) {
    case KVType::F32: static_cast<float*>(out)[i] = v; break;
    case KVType::F16: static_cast<__half*>(out)[i] = from_float<__half>(v); break;
    case KVType::BF16: static_cast<__nv_bfloat16*>(out)[i] = from_float<__nv_bfloat16>(v); break;
  }
}

// A block that holds the packed segment whole ends the step itself: its rows' output from its
// own partial (value_partial, as write_value_partials writes it) and the split slots that the kernels
// launched before it wrote, combined as merge_kernel combines them (maxima, weights exp(m_t - M),
// sums over the slots in order). weights: G (S + 1) floats of shared memory, S = total splits.
template <int G>
__device__ __forceinline__ void write_merged_output(const DecodeShape& s, const PackedSegmentArgs& a, int bh, int own, const float* sums,
                                    const float* vs, const float* vz, const float* delta, const float* row_max,
                                    const float* row_sum, float* weights) {
  const int D = s.head_dim, S = s.total_splits;
  float* row_l = weights + G * S;
  if (static_cast<int>(threadIdx.x) < G) {
    const int g = threadIdx.x;
    const float* ml = s.part_ml + (static_cast<int64_t>(bh) * s.groups + g) * S * 2;
    float m = -INFINITY;
    for (int t = 0; t < S; ++t) m = fmaxf(m, t == own ? row_max[g] : ml[t * 2]);
    float l = 0.f;
    for (int t = 0; t < S; ++t) {
      const float mt = t == own ? row_max[g] : ml[t * 2], lt = t == own ? row_sum[g] : ml[t * 2 + 1];
      const float w = mt == -INFINITY ? 0.f : expf(mt - m);
      weights[g * S + t] = w;
      l += w * lt;
    }
    row_l[g] = l;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    const float mine = value_partial(a, sums, vs, vz, delta, row_sum, i, g, d);
    const float* po = partial_out(s, bh, g, 0) + d;  // slot t at po[t * D]
    float acc = 0.f;
    for (int t = 0; t < S; ++t) {
      const float w = weights[g * S + t];
      if (w != 0.f) acc += w * (t == own ? mine : po[static_cast<int64_t>(t) * D]);
    }
    store_output(a.out, s.q_type, (static_cast<int64_t>(bh) * G + g) * D + d, acc / row_l[g]);
  }
}

// ---------------------------------------------------------------- full-precision segments

// Which elements of a row of D a lane holds: with `vec` (D a multiple of 32, rows aligned),
// D/32 consecutive ones, read as one 4-32 byte load; else d = lane + 32 i.
struct LaneRow {
  bool vec;
  int D, per;
  __device__ __forceinline__ int dim(int lane, int i) const { return vec ? lane * per + i : lane + 32 * i; }
  __device__ __forceinline__ bool valid(int lane, int i) const { return vec ? i < per : lane + 32 * i < D; }
};

template <typename T>
__device__ __forceinline__ LaneRow lane_row(int D, const void* k, const void* v, bool strides_aligned) {
  const int per = D / 32, bytes = per * static_cast<int>(sizeof(T));
  const bool vec = strides_aligned && D % 32 == 0 && (bytes == 4 || bytes == 8 || bytes == 16 || bytes == 32) &&
                   reinterpret_cast<uintptr_t>(k) % 16 == 0 && reinterpret_cast<uintptr_t>(v) % 16 == 0 &&
                   (D * sizeof(T)) % 16 == 0;
  return {vec, D, per};
}

// A lane's elements of one row as float (zero where it holds none).
template <typename T>
__device__ __forceinline__ void load_lane_row(float (&x)[kMaxPerLane], const T* row, int lane, const LaneRow& r) {
  if (r.vec) {
    alignas(16) T tmp[kMaxPerLane * 4 / sizeof(T) > kMaxPerLane ? kMaxPerLane * 4 / sizeof(T) : kMaxPerLane];
    const T* p = row + lane * r.per;
    const int bytes = r.per * static_cast<int>(sizeof(T));
    if (bytes == 32) {
      reinterpret_cast<uint4*>(tmp)[0] = reinterpret_cast<const uint4*>(p)[0];
      reinterpret_cast<uint4*>(tmp)[1] = reinterpret_cast<const uint4*>(p)[1];
    } else if (bytes == 16) {
      reinterpret_cast<uint4*>(tmp)[0] = reinterpret_cast<const uint4*>(p)[0];
    } else if (bytes == 8) {
      reinterpret_cast<uint2*>(tmp)[0] = reinterpret_cast<const uint2*>(p)[0];
    } else {
      reinterpret_cast<uint32_t*>(tmp)[0] = reinterpret_cast<const uint32_t*>(p)[0];
    }
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) x[i] = i < r.per ? as_float(tmp[i]) : 0.f;
    return;
  }
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    x[i] = d < r.D ? as_float(row[d]) : 0.f;
  }
}

template <typename T, int G>
__global__ void __launch_bounds__(kFullThreads) full_segment_kernel(DecodeShape s, FullSegmentArgs a) {
  extern __shared__ float smem[];
  const int bh = blockIdx.x, split = blockIdx.y, b = bh / s.kv_heads;
  const int D = s.head_dim, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = kFullThreads / 32;
  // Splits are cut from the buffer's length; a device-side length (CUDA graphs) bounds them.
  const int64_t cap = a.length, L = a.length_dev ? *a.length_dev : cap, chunk = (cap + a.splits - 1) / a.splits;
  const int64_t n0 = split * chunk, n1 = n0 + chunk < L ? n0 + chunk : L;
  const int len = n1 > n0 ? static_cast<int>(n1 - n0) : 0;
  float* qs = smem;                    // [G][D]
  float* sc = qs + G * D;              // [G][chunk]
  float* red = sc + G * chunk;         // [warps][G][D]
  float* scratch = red + warps * G * D;  // 32 + 2G
  float* row_max = scratch + 32;
  float* row_sum = row_max + G;

  const QRow q = q_row(s, static_cast<int64_t>(bh) * G * D);
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) qs[i] = q[i];
  __syncthreads();
  const int h = bh - b * s.kv_heads;
  const T* K = static_cast<const T*>(a.k) + b * a.k_batch_stride + h * a.k_head_stride;
  const T* V = static_cast<const T*>(a.v) + b * a.v_batch_stride + h * a.v_head_stride;
  const LaneRow r =
      lane_row<T>(D, a.k, a.v, (a.v_head_stride * sizeof(T)) % 16 == 0 && (a.v_batch_stride * sizeof(T)) % 16 == 0);

  // Scores: one thread per key (no cross-lane reduction), eight elements per load.
  const bool vec8 = D % 8 == 0 && reinterpret_cast<uintptr_t>(a.k) % 16 == 0 && (D * sizeof(T)) % 16 == 0 &&
                    (a.k_head_stride * sizeof(T)) % 16 == 0 && (a.k_batch_stride * sizeof(T)) % 16 == 0;
  // GQA with 16-bit keys and D <= 128: the whole row is loaded before any arithmetic (16
  // loads in flight per thread rather than one), as the kernel is bound by bytes in flight
  // there (measured: 2.0 -> 1.87 ms at B = 125, G = 4, 3.5k tokens). Without GQA the extra
  // registers cost more than they bring (0.23 -> 0.27 ms at B = 32, H = 32): the plain loop.
  constexpr bool kBatchedLoads = sizeof(T) == 2 && G > 1;
  if (kBatchedLoads && vec8 && D <= 128) {
    for (int64_t n = n0 + threadIdx.x; n < n1; n += blockDim.x) {
      const uint4* row = reinterpret_cast<const uint4*>(K + n * D);
      uint4 raw[16];
#pragma unroll
      for (int c = 0; c < 16; ++c)
        if (c < D / 8) raw[c] = __ldg(row + c);
      float dot[G];
#pragma unroll
      for (int g = 0; g < G; ++g) dot[g] = 0.f;
#pragma unroll
      for (int c = 0; c < 16; ++c) {
        if (c >= D / 8) break;
        const T* x = reinterpret_cast<const T*>(&raw[c]);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float kv = as_float(x[j]);
#pragma unroll
          for (int g = 0; g < G; ++g) dot[g] += qs[g * D + c * 8 + j] * kv;
        }
      }
      const float m = a.mask ? a.mask[static_cast<int64_t>(b) * cap + n] : 0.f;
#pragma unroll
      for (int g = 0; g < G; ++g) sc[g * chunk + (n - n0)] = dot[g] + m;
    }
  } else
  for (int64_t n = n0 + threadIdx.x; n < n1; n += blockDim.x) {
    const T* row = K + n * D;
    float dot[G];
#pragma unroll
    for (int g = 0; g < G; ++g) dot[g] = 0.f;
    for (int d0 = 0; d0 < D; d0 += 8) {
      alignas(16) T x[8];
      if (vec8) {
#pragma unroll
        for (int w = 0; w < static_cast<int>(sizeof(T)) / 2; ++w)
          reinterpret_cast<uint4*>(x)[w] = reinterpret_cast<const uint4*>(row + d0)[w];
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) x[j] = d0 + j < D ? row[d0 + j] : T(0.f);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float kv = as_float(x[j]);
#pragma unroll
        for (int g = 0; g < G; ++g) dot[g] += d0 + j < D ? qs[g * D + d0 + j] * kv : 0.f;
      }
    }
    const float m = a.mask ? a.mask[static_cast<int64_t>(b) * cap + n] : 0.f;
#pragma unroll
    for (int g = 0; g < G; ++g) sc[g * chunk + (n - n0)] = dot[g] + m;
  }
  __syncthreads();
  softmax_rows<G>(sc, chunk, len, row_max, row_sum, scratch);

  float acc[G][kMaxPerLane];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) acc[g][i] = 0.f;
  // GQA: four value rows per warp in flight at once (one without GQA, as for the keys).
  constexpr int kRows = G > 1 ? 4 : 1;
  for (int64_t nb = n0 + warp; nb < n1; nb += warps * kRows) {
    float v[kRows][kMaxPerLane];
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const int64_t n = nb + u * warps;
      if (n < n1) {
        load_lane_row(v[u], V + n * D, lane, r);
      } else {
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) v[u][i] = 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < kRows; ++u) {
      const int64_t n = nb + u * warps;
      if (n >= n1) break;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float p = sc[g * chunk + (n - n0)];
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) acc[g][i] += p * v[u][i];
      }
    }
  }
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i)
      if (r.valid(lane, i)) red[(warp * G + g) * D + r.dim(lane, i)] = acc[g][i];
  __syncthreads();
  const int split_index = a.split_offset + split;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    float sum = 0.f;
    for (int w = 0; w < warps; ++w) sum += red[w * G * D + i];
    partial_out(s, bh, i / D, split_index)[i % D] = sum;
  }
  if (threadIdx.x < G) write_partial(s, bh, threadIdx.x, split_index, row_max[threadIdx.x], row_sum[threadIdx.x]);
}

// ---------------------------------------------------------------- 16-bit segments on the tensor cores
//
// Flash decoding for fp16/bf16 K and V. The full-precision segments of a step (system and text
// tokens) are one virtual sequence of 16-token tiles (a tile never straddles two segments), cut
// into splits; each warp of a block streams every fourth tile of its split through its own
// kFlashStages-deep ring in shared memory (cp.async: no block barrier in the loop), and keeps
// an online softmax and the output in registers; the block's warps combine at the end.
//   scores:  S^T = Q K^T on mma.m16n8k16: A = Q (heads x channels), B = K (channels x tokens)
//            read from the token rows with ldmatrix;
//   values:  O^T = P V: A = P straight from the score fragments (FlashAttention-2's layout
//            identity: the C fragment of two 8-token tiles is the A fragment of one 16-token
//            k-step), B = V with ldmatrix.trans.
// The 16 rows of A hold the G <= 8 query heads twice: row g = hi = T(q), row 8 + g = lo =
// T(q - hi), and the two rows' products are added, so q keeps ~22 (fp16) / ~16 (bf16) bits
// rather than being rounded to 16-bit; P goes in the same way. The rows are there anyway (an
// mma has 16), so the precision costs no tensor-core work.
// Shared memory rows are D 16-bit elements; their 16-byte chunks are XOR-swizzled by row so that
// the eight rows an ldmatrix reads fall in different banks.

constexpr int kFlashWarps = 4;
constexpr int kFlashThreads = kFlashWarps * 32;
constexpr int kFlashTile = 16;
// Two tiles per warp (one loading while one is computed) measured as fast as three on the H100
// and takes a third less shared memory (B = 125, G = 4, 3.5k tokens: 0.607 against 0.614 ms).
constexpr int kFlashStages = 2;

// The kernel's rings (`stages` tiles of K and V per warp); the combine at the end reuses them.
inline size_t flash_shared_bytes(int head_dim, int stages = kFlashStages) {
  return static_cast<size_t>(kFlashWarps) * stages * 2 * kFlashTile * head_dim * 2;
}

// fp16 or bf16 operands of mma.m16n8k16 (float accumulators): packing a pair, splitting a
// pair into hi and lo parts, the mma.
template <typename T>
struct Mma16 {
  static constexpr bool kHalf = std::is_same<T, __half>::value;
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    uint32_t bits;
    if constexpr (kHalf) {
      const __half2 h = __floats2half2_rn(a, b);
      memcpy(&bits, &h, 4);
    } else {
      const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
      memcpy(&bits, &h, 4);
    }
    return bits;
  }
  // A float pair as hi = T(x) and lo = T(x - hi), each packed: about twice T's bits of x as
  // two operands whose products add up.
  static __device__ __forceinline__ void split_pair(float a, float b, uint32_t& hi, uint32_t& lo) {
    const float ha = as_float(from_float<T>(a)), hb = as_float(from_float<T>(b));
    hi = pack(ha, hb);
    lo = pack(a - ha, b - hb);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (kHalf)
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap();
#endif
  }
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
#else
  __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

template <bool Trans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#else
  __trap();
#endif
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* smem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
#else
  __trap();
#endif
}

// Element offset of 16-byte chunk c of row r in a tile of rows of D elements (D / 8 chunks):
// power-of-two chunk counts are XOR-swizzled so that 8 consecutive rows at one chunk hit 8
// different 16-byte bank groups; others (D = 80, 96) keep their order (2-4 way conflicts).
template <int D>
__device__ __forceinline__ int flash_offset(int r, int c) {
  constexpr int C = D / 8;
  if constexpr (C >= 8 && (C & (C - 1)) == 0) return r * D + ((c ^ (r & 7)) << 3);
  else if constexpr (C == 4) return r * D + ((c ^ ((r >> 1) & 3)) << 3);
  else return r * D + (c << 3);
}

template <typename T, int D, int kStages>
__global__ void __launch_bounds__(kFlashThreads) full_segment_flash_kernel(DecodeShape s, FullSegmentList f) {
  extern __shared__ __align__(16) unsigned char flash_smem[];
  constexpr int C = D / 8, KT = D / 16, NT = D / 8, kTileElems = kFlashTile * D;
  using M = Mma16<T>;
  const int bh = blockIdx.x, b = bh / s.kv_heads, G = s.groups;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int t0 = blockIdx.y * f.tiles_per_split, t1 = min(t0 + f.tiles_per_split, f.first_tile[f.count]);
  T* ring = reinterpret_cast<T*>(flash_smem) + warp * kStages * 2 * kTileElems;

  // Valid tokens per segment (a device-side length bounds the buffer's, for CUDA graphs).
  int valid[kMaxFullSegments];
#pragma unroll
  for (int j = 0; j < kMaxFullSegments; ++j)
    valid[j] = j < f.count ? (f.seg[j].length_dev ? min(static_cast<int64_t>(*f.seg[j].length_dev), f.seg[j].length)
                                                  : f.seg[j].length)
                           : 0;
  // A tile's K, V and mask rows and its count of valid rows (segments picked by unrolled
  // selects: a parameter array indexed at run time would go through local memory).
  struct TileRef {
    const T* k;
    const T* v;
    const float* mask;
    int rows;
  };
  auto locate = [&](int t) {
    TileRef r{nullptr, nullptr, nullptr, 0};
#pragma unroll
    for (int j = 0; j < kMaxFullSegments; ++j)
      if (j < f.count && t >= f.first_tile[j]) {
        const FullSegmentArgs& a = f.seg[j];
        const int n = (t - f.first_tile[j]) * kFlashTile;
        const int h = bh - b * s.kv_heads;
        r.k = static_cast<const T*>(a.k) + b * a.k_batch_stride + h * a.k_head_stride + static_cast<int64_t>(n) * D;
        r.v = static_cast<const T*>(a.v) + b * a.v_batch_stride + h * a.v_head_stride + static_cast<int64_t>(n) * D;
        r.mask = a.mask ? a.mask + static_cast<int64_t>(b) * a.length + n : nullptr;
        r.rows = valid[j] - n;
      }
    return r;
  };
  auto load_tile = [&](int i, int stage) {
    const int t = t0 + warp + i * kFlashWarps;
    if (t < t1) {
      const TileRef tr = locate(t);
      T* sk = ring + stage * 2 * kTileElems;
#pragma unroll
      for (int c = lane; c < kFlashTile * C; c += 32) {
        const int r = c / C, ch = c % C;
        const bool ok = r < tr.rows;
        cp_async16(sk + flash_offset<D>(r, ch), ok ? tr.k + r * D + ch * 8 : tr.k, ok);
        cp_async16(sk + kTileElems + flash_offset<D>(r, ch), ok ? tr.v + r * D + ch * 8 : tr.v, ok);
      }
    }
    cp_async_commit();
  };
  const int mine = t1 - t0 - warp > 0 ? (t1 - t0 - warp + kFlashWarps - 1) / kFlashWarps : 0;
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) load_tile(i, i);

  // Q as A fragments: row gq = hi, row gq + 8 = lo of query head gq (zero for gq >= G).
  uint32_t qa[KT][4];
  {
    const QRow q = q_row(s, (static_cast<int64_t>(bh) * G + gq) * D);
#pragma unroll
    for (int ks = 0; ks < KT; ++ks)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int d = ks * 16 + half * 8 + 2 * tq;
        M::split_pair(gq < G ? q[d] : 0.f, gq < G ? q[d + 1] : 0.f, qa[ks][half * 2], qa[ks][half * 2 + 1]);
      }
  }

  float acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
  float row_m = -INFINITY, row_l = 0.f;  // of head gq, over this warp's tokens

  for (int i = 0; i < mine; ++i) {
    load_tile(i + kStages - 1, (i + kStages - 1) % kStages);
    cp_async_wait<kStages - 1>();
    __syncwarp();
    const T* sk = ring + (i % kStages) * 2 * kTileElems;
    const T* sv = sk + kTileElems;

    // Scores of tokens 8 nt + 2 tq (+1): hi row + lo row.
    float sacc[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.f;
      const int r = nt * 8 + (lane & 7);
#pragma unroll
      for (int ks = 0; ks + 1 < KT; ks += 2) {
        uint32_t kb[4];
        ldmatrix_x4<false>(kb, sk + flash_offset<D>(r, ks * 2 + (lane >> 3)));
        M::mma(sacc[nt], qa[ks], kb[0], kb[1]);
        M::mma(sacc[nt], qa[ks + 1], kb[2], kb[3]);
      }
      if constexpr (KT % 2 == 1) {
        uint32_t kb[2];
        ldmatrix_x2(kb, sk + flash_offset<D>(r, (KT - 1) * 2 + ((lane >> 3) & 1)));
        M::mma(sacc[nt], qa[KT - 1], kb[0], kb[1]);
      }
    }
    const TileRef tr = locate(t0 + warp + i * kFlashWarps);
    float sc[2][2];
    float tmax = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int r = nt * 8 + 2 * tq + e;
        float v = -INFINITY;
        if (r < tr.rows) v = sacc[nt][e] + sacc[nt][e + 2] + (tr.mask ? __ldg(tr.mask + r) : 0.f);
        sc[nt][e] = v;
        tmax = fmaxf(tmax, v);
      }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    const float m_new = fmaxf(row_m, tmax);
    if (__any_sync(0xffffffffu, m_new != row_m)) {
      const float factor = m_new == row_m ? 1.f : (row_m == -INFINITY ? 0.f : __expf(row_m - m_new));
      row_l *= factor;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] *= factor;
    }
    row_m = m_new;
    const float shift = row_m == -INFINITY ? 0.f : row_m;
    uint32_t pa[4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const float p0 = gq < G ? __expf(sc[nt][0] - shift) : 0.f, p1 = gq < G ? __expf(sc[nt][1] - shift) : 0.f;
      row_l += p0 + p1;
      M::split_pair(p0, p1, pa[nt * 2], pa[nt * 2 + 1]);
    }
    // Values: output tiles of 8 channels, two per ldmatrix.
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t vb[4];
      const int mi = lane >> 3, r = (mi & 1) * 8 + (lane & 7);
      ldmatrix_x4<true>(vb, sv + flash_offset<D>(r, np * 2 + (mi >> 1)));
      M::mma(acc[np * 2], pa, vb[0], vb[1]);
      M::mma(acc[np * 2 + 1], pa, vb[2], vb[3]);
    }
    __syncwarp();
  }
  cp_async_wait<0>();
  row_l += __shfl_xor_sync(0xffffffffu, row_l, 1);
  row_l += __shfl_xor_sync(0xffffffffu, row_l, 2);

  // Combine the warps: rescale each to the block's maximum, sum through shared memory.
  __syncthreads();
  float* wm = reinterpret_cast<float*>(flash_smem);  // [warps][8]
  float* wl = wm + kFlashWarps * 8;                   // [warps][8]
  float* red = wl + kFlashWarps * 8;                  // [warps][8][D]
  if (tq == 0) {
    wm[warp * 8 + gq] = row_m;
    wl[warp * 8 + gq] = row_l;
  }
  __syncthreads();
  float block_m = -INFINITY;
#pragma unroll
  for (int w = 0; w < kFlashWarps; ++w) block_m = fmaxf(block_m, wm[w * 8 + gq]);
  const float factor = row_m == -INFINITY ? 0.f : __expf(row_m - block_m);
  if (gq < G)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      float* o = red + (warp * 8 + gq) * D + nt * 8 + 2 * tq;
      o[0] = (acc[nt][0] + acc[nt][2]) * factor;
      o[1] = (acc[nt][1] + acc[nt][3]) * factor;
    }
  __syncthreads();
  const int split_index = f.split_offset + blockIdx.y;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kFlashWarps; ++w) sum += red[w * 8 * D + i];
    partial_out(s, bh, i / D, split_index)[i % D] = sum;
  }
  if (threadIdx.x < G) {
    const int g = threadIdx.x;
    float m = -INFINITY, l = 0.f;
    for (int w = 0; w < kFlashWarps; ++w) m = fmaxf(m, wm[w * 8 + g]);
    for (int w = 0; w < kFlashWarps; ++w)
      if (wm[w * 8 + g] != -INFINITY) l += __expf(wm[w * 8 + g] - m) * wl[w * 8 + g];
    write_partial(s, bh, g, split_index, m, l);
  }
}

// ---------------------------------------------------------------- the packed segment

struct PackedLayout {
  int D, P, cpb, Dp;  // head dim, bytes per row, codes per byte, padded dim P * cpb
  int64_t chunk;
  bool table;
};

__host__ __device__ inline PackedLayout packed_layout(int G, int D, int bits, int row_bytes, int64_t chunk) {
  PackedLayout l;
  l.D = D;
  l.P = row_bytes;
  l.cpb = 8 / bits;
  l.Dp = row_bytes * (8 / bits);
  l.chunk = chunk;
  // 256-entry tables per byte position for 1-2 bits, where they fit 64 KiB; direct decode otherwise.
  l.table = bits <= 2 && static_cast<int64_t>(G) * row_bytes * 256 * 4 <= 64 * 1024;
  return l;
}

// Floats of dynamic shared memory: q' [G][Dp], scores [G][chunk], table [G][P][256],
// outputs [G][D], scratch 32 + 8G.
__host__ __device__ inline int64_t packed_floats(int G, const PackedLayout& l) {
  return static_cast<int64_t>(G) * l.Dp + G * l.chunk + (l.table ? static_cast<int64_t>(G) * l.P * 256 : 0) +
         static_cast<int64_t>(G) * l.D + 32 + 8 * G;
}

template <int G>
__device__ __forceinline__ void score_byte(float (&acc)[G], unsigned c, int j, const PackedLayout& l, const float* table,
                                           const float* qp, int bits, unsigned mask) {
  if (l.table) {
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g] += table[(g * l.P + j) * 256 + c];
  } else {
    for (int k = 0; k < l.cpb; ++k) {
      const float code = static_cast<float>((c >> (k * bits)) & mask);
#pragma unroll
      for (int g = 0; g < G; ++g) acc[g] += qp[g * l.Dp + j * l.cpb + k] * code;
    }
  }
}

template <int G>
__global__ void __launch_bounds__(kPackedThreads)
    packed_segment_kernel(DecodeShape s, PackedSegmentArgs a, PackedLayout l, bool minmax_only) {
  extern __shared__ float smem[];
  const int bh = blockIdx.x, split = blockIdx.y;
  const int D = l.D, P = l.P, bits = a.bits;
  const unsigned mask = (1u << bits) - 1u;
  const int64_t N = a.length, chunk = l.chunk;
  const int64_t n0 = split * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
  const int len = n1 > n0 ? static_cast<int>(n1 - n0) : 0;
  float* qp = smem;                                   // [G][Dp]
  float* sc = qp + G * l.Dp;                          // [G][chunk]
  float* table = sc + G * chunk;                      // [G][P][256] (1-2 bits)
  float* outs = table + (l.table ? G * P * 256 : 0);  // [G][D]
  float* scratch = outs + G * D;                      // 32
  float* cst = scratch + 32;                          // [G]: -Σ q' z (channel keys) or Σ q (token keys)
  float* row_max = cst + G;
  float* row_sum = row_max + G;
  float* alpha = row_sum + G;
  float* beta = alpha + G;
  float* delta = beta + G;                            // Σ p s_n z_n (token values)

  // 1. q' = q ⊙ s (channel keys) or q, zero beyond D; the per-row constant.
  const QRow q = q_row(s, static_cast<int64_t>(bh) * G * D);
  const float* ks = a.k_scale + (a.k_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  const float* kz = a.k_zero + (a.k_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  for (int i = threadIdx.x; i < G * l.Dp; i += blockDim.x) {
    const int g = i / l.Dp, d = i % l.Dp;
    float v = d < D ? q[g * D + d] : 0.f;
    if (!a.k_token_axis && d < D) v *= ks[d];
    qp[i] = v;
  }
  __syncthreads();
  for (int g = 0; g < G; ++g) {
    float part = 0.f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) part += a.k_token_axis ? qp[g * l.Dp + d] : -qp[g * l.Dp + d] * kz[d];
    part = block_reduce(part, scratch, Sum{}, 0.f);
    if (threadIdx.x == 0) cst[g] = part;
  }
  // 2. Score tables (1-2 bits).
  if (l.table) {
    for (int i = threadIdx.x; i < G * P * 256; i += blockDim.x) {
      const int g = i / (P * 256), j = (i / 256) % P;
      const unsigned c = i & 255;
      float t = 0.f;
      for (int k = 0; k < l.cpb; ++k) t += qp[g * l.Dp + j * l.cpb + k] * static_cast<float>((c >> (k * bits)) & mask);
      table[i] = t;
    }
  }
  __syncthreads();

  // 3. Scores, one thread per token (rows of 16 or 4 bytes read as one word when aligned).
  const uint8_t* KP = a.k_packed + static_cast<int64_t>(bh) * N * P;
  const bool vec16 = (P % 16 == 0) && (reinterpret_cast<uintptr_t>(a.k_packed) % 16 == 0);
  const bool vec4 = (P % 4 == 0) && (reinterpret_cast<uintptr_t>(a.k_packed) % 4 == 0);
  for (int64_t n = n0 + threadIdx.x; n < n1; n += blockDim.x) {
    float acc[G];
#pragma unroll
    for (int g = 0; g < G; ++g) acc[g] = 0.f;
    const uint8_t* row = KP + n * P;
    if (vec16) {
      for (int j0 = 0; j0 < P; j0 += 16) {
        const uint4 w = *reinterpret_cast<const uint4*>(row + j0);
        const unsigned words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int e = 0; e < 16; ++e) score_byte<G>(acc, (words[e >> 2] >> ((e & 3) * 8)) & 255u, j0 + e, l, table, qp, bits, mask);
      }
    } else if (vec4) {
      for (int j0 = 0; j0 < P; j0 += 4) {
        const unsigned w = *reinterpret_cast<const unsigned*>(row + j0);
#pragma unroll
        for (int e = 0; e < 4; ++e) score_byte<G>(acc, (w >> (e * 8)) & 255u, j0 + e, l, table, qp, bits, mask);
      }
    } else {
      for (int j = 0; j < P; ++j) score_byte<G>(acc, row[j], j, l, table, qp, bits, mask);
    }
#pragma unroll
    for (int g = 0; g < G; ++g)
      sc[g * chunk + (n - n0)] = key_score(a, ks, kz, n, acc[g], cst[g]);
  }
  __syncthreads();

  // 4. Calibration: the row's score range [m, M] (over every split) onto [m + a, M + b].
  if (!calibrate_rows<G>(sc, chunk, len, a, bh, split, minmax_only, scratch, alpha, beta)) return;

  // 5. Softmax over this split.
  softmax_rows<G>(sc, chunk, len, row_max, row_sum, scratch);

  // 6. Weighted sum of value codes. Per-token value scales fold into p.
  const uint8_t* VP = a.v_packed + static_cast<int64_t>(bh) * N * P;
  const float* vs = a.v_scale + (a.v_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  const float* vz = a.v_zero + (a.v_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  if (a.v_token_axis) fold_token_value_scales<G>(sc, chunk, len, n0, vs, vz, scratch, delta);
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) outs[i] = 0.f;
  if (l.table) {
    for (int i = threadIdx.x; i < G * P * 256; i += blockDim.x) table[i] = 0.f;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < static_cast<int64_t>(len) * P; i += blockDim.x) {
      const int t = static_cast<int>(i / P), j = static_cast<int>(i % P);
      const unsigned c = VP[(n0 + t) * P + j];
#pragma unroll
      for (int g = 0; g < G; ++g) atomicAdd(&table[(g * P + j) * 256 + c], sc[g * chunk + t]);
    }
    __syncthreads();
    const int outputs = G * D;
    const int parts = outputs >= static_cast<int>(blockDim.x) ? 1 : static_cast<int>(blockDim.x) / outputs;
    for (int i = threadIdx.x; i < outputs * parts; i += blockDim.x) {
      const int o = i / parts, part = i % parts, g = o / D, d = o % D, j = d / l.cpb, k = d % l.cpb;
      const int c0 = part * 256 / parts, c1 = (part + 1) * 256 / parts;
      const float* h = table + (g * P + j) * 256;
      float sum = 0.f;
      for (int c = c0; c < c1; ++c) sum += h[c] * static_cast<float>((static_cast<unsigned>(c) >> (k * bits)) & mask);
      atomicAdd(&outs[o], sum);
    }
  } else {
    __syncthreads();
    const int lanes = static_cast<int>(blockDim.x) / P;  // token lanes; P <= 256 = blockDim
    const int j = threadIdx.x % P, lane = threadIdx.x / P;
    if (lane < lanes) {
      float acc[G][8];
#pragma unroll
      for (int g = 0; g < G; ++g)
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[g][k] = 0.f;
      for (int t = lane; t < len; t += lanes) {
        const unsigned c = VP[(n0 + t) * P + j];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          if (k >= l.cpb) break;
          const float code = static_cast<float>((c >> (k * bits)) & mask);
#pragma unroll
          for (int g = 0; g < G; ++g) acc[g][k] += sc[g * chunk + t] * code;
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g)
        for (int k = 0; k < l.cpb; ++k) {
          const int d = j * l.cpb + k;
          if (d < D) atomicAdd(&outs[g * D + d], acc[g][k]);
        }
    }
  }
  __syncthreads();

  // 7. Scale and zero-point after the sum.
  write_value_partials<G>(s, a, bh, a.split_offset + split, outs, vs, vz, delta, row_max, row_sum);
}


// ---------------------------------------------------------------- 1 bit on binary tensor cores
//
// With 1-bit codes both matmuls become AND + popcount on the tensor cores
// (mma ... .b1.b1.s32.and.popc): the float operand is written in fixed point and split into
// bit planes, one plane per row of the A matrix, and the plane sums are weighted by 2^i:
//   scores: q' ≈ lo + Δ u (u < 2^15, 15 planes, the 16th row all ones gives Σ_d c_nd):
//           Σ_d q'_d c_nd = lo · popc(c_n) + Δ Σ_i 2^i popc(plane_i ∧ c_n)
//   values: p' ≈ Δp u (u < 2^16, 16 planes), Σ_n p'_n c_nd = Δp Σ_i 2^i popc(plane_i ∧ c_·d)
// with K read as stored (D bits per token) and V as token-major words (32 tokens of one
// channel per word). Fragment layouts are those of PTX's mma.m16n8k128 / m16n8k256 for .b1:
// lane (g = lane / 4, t = lane % 4) holds A words (row g [+8], word t [+4]), B words
// (column g, word t [+4]) and C entries (row g [+8], column 2t [+1]).

// A 32 x 32 bit matrix held one row per lane (lane r: bits c = M[r][c]) transposed across the
// warp: lane c gets column c (bit r = M[r][c]). Five rounds swap off-diagonal blocks of 16, 8,
// 4, 2, 1 between lane pairs (l, l ^ j): one shuffle and a few logic ops each, where 32
// ballots (each with its own select) did it before.
__device__ __forceinline__ uint32_t transpose_bits(uint32_t x, int lane) {
  constexpr uint32_t kLow[5] = {0x0000FFFFu, 0x00FF00FFu, 0x0F0F0F0Fu, 0x33333333u, 0x55555555u};
#pragma unroll
  for (int i = 0; i < 5; ++i) {
    const int j = 16 >> i;
    const uint32_t m = kLow[i];
    const uint32_t y = __shfl_xor_sync(0xffffffffu, x, j);
    x = (lane & j) ? (x & ~m) | ((y >> j) & m) : (x & m) | ((y & m) << j);
  }
  return x;
}

// q' in 15-bit fixed point over its range, u = rint((q' - lo) / step) <= 32767, as bit-plane
// words of the warp's 32 channels: lane i stores plane i (i < 15) at plane0[i * stride], and
// lane 15 the row of channels that exist (`ones`), which carries lo's weight in the scores.
__device__ __forceinline__ void store_q_planes(float qv, float lo, float step, bool ones, int lane, uint32_t* plane0,
                                               int stride) {
  const uint32_t u = ones && step > 0.f ? min(32767u, static_cast<uint32_t>(rintf((qv - lo) / step))) : 0u;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const uint32_t word = __ballot_sync(0xffffffffu, i < 15 ? (u >> i) & 1u : ones);
    if (lane == i) plane0[i * stride] = word;
  }
}

// q' in balanced ternary for the GQA kernel's scores: v = rint(q' / step), |v| <= kTritMax
// (step = max |q'| / kTritMax over the head: ~15.85 bits over q's symmetric range, where the
// 15-bit planes spanned [lo, hi] in steps of (hi - lo) / 32767. Whenever a head's q' has both
// signs, max |q'| <= hi - lo and the step is at most 1.11 times the old one (half of it for a
// range symmetric about 0); only a head whose q' all share one sign, far from 0, gets coarser),
// written as v = sum_j 3^j t_j, t_j in {-1, 0, 1}: the digits
// d_j of v + kTritMax in base 3, t_j = d_j - 1. Bit-plane words of the warp's 32 channels:
// x_j (t_j = 1) at plane0[2 j * stride], y_j (t_j = -1) at plane0[(2 j + 1) * stride]. Returns
// the lane's sum_j 3^j [t_j = -1]: summed over the channels, it is the offset that the scores'
// complement form adds (packed_b1_mma_kernel, phase 3).
constexpr int kTrits = 10;
constexpr int kTritMax = 29524;  // (3^10 - 1) / 2
__device__ __forceinline__ int store_q_trits(float qv, float step, int lane, uint32_t* plane0, int stride) {
  int n = step > 0.f ? max(-kTritMax, min(kTritMax, __float2int_rn(qv / step))) + kTritMax : kTritMax;
  int neg = 0, weight = 1;
#pragma unroll
  for (int j = 0; j < kTrits; ++j) {
    const int d = n % 3;
    n /= 3;
    const uint32_t x = __ballot_sync(0xffffffffu, d == 2), y = __ballot_sync(0xffffffffu, d == 0);
    if (lane == 2 * j) plane0[2 * j * stride] = x;
    if (lane == 2 * j + 1) plane0[(2 * j + 1) * stride] = y;
    if (d == 0) neg += weight;
    weight *= 3;
  }
  return neg;
}

__device__ __forceinline__ void mma_b1_k128(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a0), "r"(a1), "r"(b0));
#else
  __trap();
#endif
}

__device__ __forceinline__ void mma_b1_k256(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

constexpr int kB1Threads = 128;  // 4 warps, up to 8 blocks per SM: blocks in different phases overlap
constexpr int kB1Chunk = 256;  // splits hold whole m16n8k256 token blocks

__host__ __device__ inline int64_t b1_floats(int G, int D, int64_t chunk) {
  return static_cast<int64_t>(G) * D * 2 + G * chunk + G * 16 * 8 + G * 16 * (chunk / 32) + 32 + 12 * G + 8 * G;
}

// KWc: the words per K row (head_dim / 32) when known at compile time (4: head_dim 128), else 0.
// With it, the K and V offsets become immediates and no register holds an unused chunk (this
// kernel has 64 registers: eight blocks per SM hold a whole B = 32, H = 32 grid at once).
template <int G, int KWc>
__global__ void __launch_bounds__(kB1Threads, 8) packed_b1_kernel(DecodeShape s, PackedSegmentArgs a, int64_t chunk,
                                                               bool minmax_only) {
  extern __shared__ float smem[];
  const int bh = blockIdx.x, split = blockIdx.y;
  const int D = KWc > 0 ? KWc * 32 : s.head_dim, KW = KWc > 0 ? KWc : D / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = kB1Threads / 32;
  const int gq = lane >> 2, tq = lane & 3;
  const int64_t N = a.length, n0 = split * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
  const int len = n1 > n0 ? static_cast<int>(n1 - n0) : 0;
  const int Wc = static_cast<int>(chunk / 32);
  float* qf = smem;                                             // [G][D] q'
  float* sc = qf + G * D;                                       // [G][chunk]
  uint32_t* qplanes = reinterpret_cast<uint32_t*>(sc + G * chunk);  // [G][16][8]
  uint32_t* pplanes = qplanes + G * 16 * 8;                     // [G][16][Wc]
  float* red = reinterpret_cast<float*>(pplanes + G * 16 * Wc);  // [G][D]
  float* scratch = red + G * D;                                 // 32
  float* qlo = scratch + 32;
  float* qstep = qlo + G;
  float* cst = qstep + G;
  float* row_max = cst + G;
  float* row_sum = row_max + G;
  float* alpha = row_sum + G;
  float* beta = alpha + G;
  float* delta = beta + G;
  float* pstep = delta + G;

  // 1. q' (float), its range, the per-row constant.
  const QRow q = q_row(s, static_cast<int64_t>(bh) * G * D);
  const float* ks = a.k_scale + (a.k_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  const float* kz = a.k_zero + (a.k_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) qf[i] = a.k_token_axis ? q[i] : q[i] * ks[i % D];
  __syncthreads();
  for (int g = 0; g < G; ++g) {
    float lo = INFINITY, hi = -INFINITY, c = 0.f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      const float v = qf[g * D + d];
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
      c += a.k_token_axis ? v : -v * kz[d];
    }
    lo = block_reduce(lo, scratch, Min{}, INFINITY);
    hi = block_reduce(hi, scratch, Max{}, -INFINITY);
    c = block_reduce(c, scratch, Sum{}, 0.f);
    if (threadIdx.x == 0) {
      qlo[g] = lo;
      qstep[g] = (hi - lo) / 32767.f;
      cst[g] = c;
    }
  }
  __syncthreads();
  // 2. Bit planes of q' (15) and the all-ones row, words of 32 channels, zero past D.
  for (int idx = warp; idx < G * 8; idx += warps) {
    const int g = idx / 8, w = idx % 8, d = w * 32 + lane;
    store_q_planes(d < D ? qf[g * D + d] : 0.f, qlo[g], qstep[g], d < D, lane, qplanes + g * 16 * 8 + w, 8);
  }
  __syncthreads();

  // 3. Scores: sixteen tokens per pair of mmas, K bits as the A operand (rows: tokens) and the
  //    query planes as B (columns: planes 0-7, then 8-15), every query head of the group against
  //    the same K words. A lane holds two tokens x four planes; the plane sums are weighted and
  //    reduced over the 4 lanes of a row.
  uint32_t qb[G][2][2];  // [head][k128 chunk][planes gq / 8 + gq]
  float wp[G][4];        // weights of planes 2t, 2t + 1, 8 + 2t, 9 + 2t (plane 15: the all-ones row, weight lo)
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      qb[g][c][0] = qplanes[(g * 16 + gq) * 8 + 4 * c + tq];
      qb[g][c][1] = qplanes[(g * 16 + gq + 8) * 8 + 4 * c + tq];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int plane = (i >> 1) * 8 + 2 * tq + (i & 1);
      wp[g][i] = plane == 15 ? qlo[g] : qstep[g] * static_cast<float>(1u << plane);
    }
  }
  const uint32_t* Kb = reinterpret_cast<const uint32_t*>(a.k_packed) + (static_cast<int64_t>(bh) * N + n0) * KW;
  const int chunks = (KW + 3) / 4;
  float rlo[G], rhi[G];  // the range of the scores this lane writes, per head
#pragma unroll
  for (int g = 0; g < G; ++g) {
    rlo[g] = INFINITY;
    rhi[g] = -INFINITY;
  }
  // 16-token units per warp per round: their loads are all in flight at once (eight where the
  // unused second chunk frees the registers).
  constexpr int kUnits = KWc == 4 ? 8 : 4;
  float cst_reg[G];
#pragma unroll
  for (int g = 0; g < G; ++g) cst_reg[g] = cst[g];
  // This lane's words: token gq (+8) of each unit, word tq (+4); 32-bit offsets from there.
  const uint32_t* __restrict__ kl = Kb + gq * KW + tq;
  const bool word_ok[2] = {tq < KW, chunks > 1 && 4 + tq < KW};
  for (int u0 = warp * kUnits; u0 * 16 < len; u0 += warps * kUnits) {
    uint32_t kb[kUnits][2][2];  // [unit][chunk][token gq / gq + 8]
#pragma unroll
    for (int k = 0; k < kUnits; ++k)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int t = (u0 + k) * 16 + gq + 8 * r;  // token within the split
        const uint32_t* row = kl + ((u0 + k) * 16 + 8 * r) * KW;
#pragma unroll
        for (int c = 0; c < 2; ++c) kb[k][c][r] = word_ok[c] && t < len ? __ldg(row + 4 * c) : 0u;
      }
#pragma unroll
    for (int k = 0; k < kUnits; ++k) {
      const int u = u0 + k;
      if (u * 16 >= len) break;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        int lo8[4] = {0, 0, 0, 0}, hi8[4] = {0, 0, 0, 0};
#pragma unroll
        for (int c = 0; c < 2; ++c)
          if (c < chunks) {
            mma_b1_k128(lo8, kb[k][c][0], kb[k][c][1], qb[g][c][0]);
            mma_b1_k128(hi8, kb[k][c][0], kb[k][c][1], qb[g][c][1]);
          }
        float t0 = lo8[0] * wp[g][0] + lo8[1] * wp[g][1] + hi8[0] * wp[g][2] + hi8[1] * wp[g][3];
        float t1 = lo8[2] * wp[g][0] + lo8[3] * wp[g][1] + hi8[2] * wp[g][2] + hi8[3] * wp[g][3];
        // Reduce over the row's 4 lanes so that lane 0 ends with token gq and lane 2 with
        // token gq + 8: half the shuffles of reducing both everywhere, one store per lane.
        const bool upper = tq & 2;
        float dot = (upper ? t1 : t0) + __shfl_xor_sync(0xffffffffu, upper ? t0 : t1, 2);
        dot += __shfl_xor_sync(0xffffffffu, dot, 1);
        const int t = u * 16 + gq + (upper ? 8 : 0);
        if ((tq & 1) == 0 && t < len) {
          const float v = key_score(a, ks, kz, n0 + t, dot, cst_reg[g]);
          sc[g * chunk + t] = v;
          rlo[g] = fminf(rlo[g], v);
          rhi[g] = fmaxf(rhi[g], v);
        }
      }
    }
  }

  // 4-5. The split's score range per head (from the lanes that wrote the scores, then across
  //      warps), calibration as s' = alpha s + beta and the split's largest s': no pass over
  //      the scores until the one that turns them into probability planes.
  float* wrange = pstep + G;  // [warps][G][2]
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float lo = warp_reduce(rlo[g], Min{}), hi = warp_reduce(rhi[g], Max{});
    if (lane == 0) {
      wrange[(warp * G + g) * 2] = lo;
      wrange[(warp * G + g) * 2 + 1] = hi;
    }
  }
  __syncthreads();
  split_calibration(a, bh, G, split, minmax_only, len, wrange, warps, alpha, beta, row_max);
  if (a.calibrate && minmax_only) return;
  __syncthreads();

  // 6. Values: p' in 16-bit fixed point, bit planes by ballot, then AND + popcount against
  //    the token-major value words; each warp owns channel groups of 8 over the whole split.
  //    With channel-axis value scales p = exp(s' - max) <= 1 is made in the planes pass itself
  //    (step 1 / 65535); per-token scales fold into p first (p' = p s_n), which needs its maximum.
  const float* vs = a.v_scale + (a.v_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  const float* vz = a.v_zero + (a.v_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  const bool fused = !a.v_token_axis;
  if (!fused) {
    for (int g = 0; g < G; ++g) {
      float sum = 0.f;
      for (int i = threadIdx.x; i < len; i += blockDim.x) {
        const float p = expf(alpha[g] * sc[g * chunk + i] + beta[g] - row_max[g]);
        sc[g * chunk + i] = p;
        sum += p;
      }
      sum = block_reduce(sum, scratch, Sum{}, 0.f);
      if (threadIdx.x == 0) row_sum[g] = sum;
    }
    __syncthreads();
    fold_token_value_scales<G>(sc, chunk, len, n0, vs, vz, scratch, delta);
    for (int g = 0; g < G; ++g) {
      float m = 0.f;
      for (int i = threadIdx.x; i < len; i += blockDim.x) m = fmaxf(m, sc[g * chunk + i]);
      m = block_reduce(m, scratch, Max{}, 0.f);
      if (threadIdx.x == 0) pstep[g] = m / 65535.f;
    }
  } else if (threadIdx.x < G) {
    pstep[threadIdx.x] = 1.f / 65535.f;
  }
  __syncthreads();
  float psum[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    psum[g] = 0.f;
    const float al2 = alpha[g] * 1.4426950408889634f, sh2 = (beta[g] - row_max[g]) * 1.4426950408889634f;
    const float inv_step = pstep[g] > 0.f ? 1.f / pstep[g] : 0.f;
    for (int w = warp; w < Wc; w += warps) {
      const int t = w * 32 + lane;
      uint32_t u = 0;
      if (t < len) {
        float p;
        if (fused) {
          p = exp2f(fmaf(al2, sc[g * chunk + t], sh2));
          psum[g] += p;
        } else {
          p = sc[g * chunk + t];
        }
        u = min(65535u, static_cast<uint32_t>(rintf(p * inv_step)));
      }
      // The warp's 32 x 16-bit values transposed to 16 plane words (lane i: plane i).
      const uint32_t plane = transpose_bits(u, lane);
      if (lane < 16) pplanes[(g * 16 + lane) * Wc + w] = plane;
    }
  }
  if (fused) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float l = warp_reduce(psum[g], Sum{});
      if (lane == 0) wrange[warp * G + g] = l;
    }
  }
  __syncthreads();
  if (fused && threadIdx.x < G) {
    float l = 0.f;
    for (int w = 0; w < warps; ++w) l += wrange[w * G + threadIdx.x];
    row_sum[threadIdx.x] = l;
  }
  const int64_t Wtot = (N + 31) / 32, w0 = n0 / 32;
  const uint32_t* VTb = a.v_token_words + (static_cast<int64_t>(bh) * Wtot + w0) * D;
  const int Wleft = static_cast<int>(Wtot - w0);
  // Two channel groups per warp at once (cg and cg + warps): two independent mma chains, twice
  // the value loads in flight, and the probability planes read once for both.
  for (int cg = warp; cg < D / 8; cg += 2 * warps) {
    const bool two = cg + warps < D / 8;
    int acc[2][G][4];
#pragma unroll
    for (int c = 0; c < 2; ++c)
#pragma unroll
      for (int g = 0; g < G; ++g) acc[c][g][0] = acc[c][g][1] = acc[c][g][2] = acc[c][g][3] = 0;
    const int blocks = (len + 255) / 256;
    // Word tq (+4) of each 256-token block, channel cg * 8 + gq (and warps * 8 channels on).
    const uint32_t* __restrict__ vl = VTb + tq * D + cg * 8 + gq;
    const uint32_t* pl0 = pplanes + gq * Wc + tq;  // planes gq (+8), word tq (+4)
    for (int tb0 = 0; tb0 < blocks; tb0 += 4) {
      uint32_t bw[2][4][2];
#pragma unroll
      for (int c = 0; c < 2; ++c)
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int wa = (tb0 + k) * 8 + tq;  // words from the split's first
          const bool ok = (c == 0 || two) && tb0 + k < blocks;
          const uint32_t* v = vl + c * warps * 8 + (tb0 + k) * 8 * D;
          bw[c][k][0] = ok && wa < Wleft ? __ldg(v) : 0u;
          bw[c][k][1] = ok && wa + 4 < Wleft ? __ldg(v + 4 * D) : 0u;
        }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (tb0 + k >= blocks) break;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const uint32_t* pl = pl0 + g * 16 * Wc + (tb0 + k) * 8;
          const uint32_t af[4] = {pl[0], pl[8 * Wc], pl[4], pl[8 * Wc + 4]};
          mma_b1_k256(acc[0][g], af, bw[0][k][0], bw[0][k][1]);
          if (two) mma_b1_k256(acc[1][g], af, bw[1][k][0], bw[1][k][1]);
        }
      }
    }
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      if (c == 1 && !two) break;
      const int cgc = cg + c * warps;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float lo_w = static_cast<float>(1u << gq), hi_w = static_cast<float>(1u << (gq + 8));
        float t0 = acc[c][g][0] * lo_w + acc[c][g][2] * hi_w;
        float t1 = acc[c][g][1] * lo_w + acc[c][g][3] * hi_w;
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) {
          t0 += __shfl_xor_sync(0xffffffffu, t0, o);
          t1 += __shfl_xor_sync(0xffffffffu, t1, o);
        }
        if (gq == 0) {
          red[g * D + cgc * 8 + 2 * tq] = t0 * pstep[g];
          red[g * D + cgc * 8 + 2 * tq + 1] = t1 * pstep[g];
        }
      }
    }
  }
  __syncthreads();

  // 7. Scale and zero-point after the sums.
  write_value_partials<G>(s, a, bh, a.split_offset + split, red, vs, vz, delta, row_max, row_sum);
}

// ---------------------------------------------------------------- 1 bit on the binary tensor cores, GQA
//
// The path for GQA and large batches (G > 1, head_dim 32, 64 or 128): one block per
// (sequence, KV head) and split, the G query heads against one pass over the codes, all of it
// on mma .b1 (AND + popcount, int32 sums) with the codes as stored:
//   scores: A = K rows and their complement (16 tokens x [k | ~k], 256 bits), B = q' in
//           balanced ternary (an x and a y plane per trit), 8 columns of (head, trit) per mma;
//           a lane combines one head's 10 trit sums of its two tokens by multiply-adds (phase 3);
//   values: A = bit planes of p' in 16-bit fixed point (16 planes x 256 tokens), B = the
//           token-major value words (256 tokens x 8 channels) (phase 6).
// Fragment layouts are PTX's for mma .b1: lane (g = lane / 4, t = lane % 4) holds A words
// (row g [+8], k 32 t [+128]), B words (k 32 t [+128], column g) and C (row g [+8], column 2t [+1]).
// (Until 3e1f500 the values, and until the commit after it the scores, ran on the bf16 tensor
// cores with each code expanded to a bf16 by an AND: the floor of that form was an instruction
// per two codes, and the expansion alone was a quarter of the block's instructions. Until
// 2026-12-07 the scores took q' as 15 bit planes and an all-ones row on mma.m16n8k128.)
// A block that holds its segment whole (one split) also merges the other segments' splits
// and writes the output (write_merged_output): no merge launch after it.

// The values' fixed point: p' ~ vstep * u with u < 2^16 (planes 0-15). One level below 65535
// of headroom: p = exp2(...) of the row's largest score may round a hair above 1.
constexpr float kPlaneLevels = 65534.f;
constexpr float kRoundMagic = 12582912.f;  // 1.5 * 2^23: fmaf(x, s, it)'s low 16 bits are rint(x s)

// Slot (8 bytes: planes r and r + 8) of head g's planes r, r + 8 in word w's region. The
// offset 4 (w % 4) keeps the value phase's loads off each other's banks: a half-warp reads
// rows gq = 0..3 (or 4..7) of one head in words w % 4 = tq = 0..3, 16 slots in 16 bank pairs
// (regions are whole multiples of 32 banks). Below 8 G + 12 slots, within the 32 G floats.
__device__ __forceinline__ int plane_slot(int w, int g, int r) { return 8 * g + r + 4 * (w & 3); }

// transpose_bits with each lane's rotate amounts and masks made once: a round is a shuffle, a
// rotate and one LOP3, where transpose_bits' per-lane selects take about six instructions.
// Lower lanes of a pair keep the low blocks (x & m) and take the partner's low blocks rotated
// up by j; upper lanes keep the high blocks and take the partner's high blocks rotated down
// (the bits a rotate wraps around land where the mask drops them).
struct BitTranspose {
  uint32_t keep[5];
  int amount[5];
  __device__ explicit BitTranspose(int lane) {
    constexpr uint32_t kLow[5] = {0x0000FFFFu, 0x00FF00FFu, 0x0F0F0F0Fu, 0x33333333u, 0x55555555u};
#pragma unroll
    for (int i = 0; i < 5; ++i) {
      const int j = 16 >> i;
      const bool upper = lane & j;
      keep[i] = upper ? ~kLow[i] : kLow[i];
      amount[i] = upper ? 32 - j : j;
    }
  }
  __device__ __forceinline__ uint32_t operator()(uint32_t x) const {
#pragma unroll
    for (int i = 0; i < 5; ++i) {
      const uint32_t y = __shfl_xor_sync(0xffffffffu, x, 16 >> i);
      const uint32_t r = __funnelshift_l(y, y, amount[i]);
      // (x & keep) | (r & ~keep) as one LOP3 with keep in a register (written as C, the
      // compiler split keep into an immediate and a lane flag: three LOP3s).
      asm("lop3.b32 %0, %1, %2, %3, 0xE4;" : "=r"(x) : "r"(x), "r"(r), "r"(keep[i]));
    }
    return x;
  }
};

constexpr int kMmaThreads = 256;  // 8 warps: for head_dim 128, a 16-channel value tile each

// head_dim 32, 64 or 128: a K row within one mma's 128 k-bits, whole 16-channel value tiles.
__host__ __device__ inline bool mma_shape(const DecodeShape& s) {
  return s.head_dim == 32 || s.head_dim == 64 || s.head_dim == 128;
}

// Floats per 32-token word of a split: its scores [G][32], then, written over them, its p
// planes (16 per head, 8-byte slots by plane_slot, all below 32 G floats).
__host__ __device__ constexpr int mma_word_floats(int G) { return 32 * G; }
// Token t's score of head h sits in word t / 32's region at 32 h + (t % 32 ^ 8 (h % 4)): the
// eight tokens x four heads that one store of the score loop writes fall in 32 banks.
__device__ __forceinline__ int score_head_swizzle(int h) { return 8 * (h & 3); }

__host__ __device__ inline int64_t mma_floats(int G, int D, int64_t chunk) {
  // The value sums [G][D], the words' q planes / scores / p planes [chunk / 32][word floats],
  // scratch, per-row values, per-warp ranges and sums [8][G][2]. (Was 2x larger with the
  // scores and p apart: two blocks per SM, too few warps to hide the loads.)
  return static_cast<int64_t>(G) * D + chunk / 32 * mma_word_floats(G) + 32 + 12 * G + 16 * G;
}

// Blocks per SM asked of the register allocator: four for G = 4 at head_dim 128 (32 warps, 64
// registers, ~56 KB of shared memory at 3.3k tokens; ptxas spills 28 bytes, and it still beats
// three blocks at 80 registers: 0.357 against 0.368 ms at B = 630), three for G = 3 and for G = 4
// at head_dim 32/64 (80 registers, no spills; at 64 the latter spilled 100 bytes); two for the
// others, which would spill (and for G > 4 need twice the shared memory).
// CALIBQ_MMA_BLOCKS=3 takes three for G = 4 at head_dim 128 too (for comparisons).
template <int G, int KWc>
constexpr int kMmaMinBlocks = G == 4 && KWc == 4 ? 4 : G == 3 || G == 4 ? 3 : 2;

template <int G, int KWc, int kMinBlocks = kMmaMinBlocks<G, KWc>>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks) packed_b1_mma_kernel(DecodeShape s, PackedSegmentArgs a, int64_t chunk,
                                                                   bool minmax_only) {
  extern __shared__ float smem[];
  constexpr int WS = mma_word_floats(G);
  const int bh = blockIdx.x, split = blockIdx.y;
  const int D = KWc > 0 ? KWc * 32 : s.head_dim, KW = KWc > 0 ? KWc : D / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = kMmaThreads / 32;
  const int gq = lane >> 2, tq = lane & 3;
  const int64_t N = a.length, n0 = split * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
  const int len = n1 > n0 ? static_cast<int>(n1 - n0) : 0;
  const int Wc = static_cast<int>(chunk / 32), Wlen = (len + 31) / 32;
  float* red = smem;                  // [G][D] the value sums (phase 6)
  float* words = red + G * D;         // [Wc][WS]: the q planes (phase 1), then a word's scores, then its p planes
  float* scratch = words + Wc * WS;   // 32
  float* qoff = scratch + 32;
  float* qstep = qoff + G;
  float* cst = qstep + G;
  float* row_max = cst + G;
  float* row_sum = row_max + G;
  float* alpha = row_sum + G;
  float* beta = alpha + G;
  float* delta = beta + G;

  // 0. The split's K codes start streaming into L2 now (a block's share is ~53 KB at 3328
  //    tokens): every later load, issued in rounds, then waits on L2 rather than on DRAM. Its
  //    V codes follow once the scores are done (phase 6): prefetched here with K, the ~528
  //    blocks resident at once held more than the 50 MB L2, and the value loads waited on DRAM.
  const uint32_t* Kb = reinterpret_cast<const uint32_t*>(a.k_packed) + (static_cast<int64_t>(bh) * N + n0) * KW;
  const int64_t Wtot = (N + 31) / 32, w0 = n0 / 32;
  const uint32_t* VTb = a.v_token_words + (static_cast<int64_t>(bh) * Wtot + w0) * D;
  auto prefetch_l2 = [&](const uint32_t* base, int lines) {  // 128-byte lines
    for (int i = threadIdx.x; i < lines; i += blockDim.x) asm volatile("prefetch.global.L2 [%0];" ::"l"(base + i * 32));
  };
  prefetch_l2(Kb, (len * KW + 31) / 32);

  // 1. q' (q times the channel-axis key scales), its per-row constant, and q' in balanced
  //    ternary (store_q_trits): ten x and ten y planes, a word per 32 channels, in the word
  //    area (no scores yet). A warp per head with warp shuffles only: the block reductions they
  //    replace (three per head) had the block waiting at 24 barriers (Nsight: a third of the
  //    kernel's stall samples).
  static_assert(G <= kMmaThreads / 32, "a warp per query head");
  const float* ks = a.k_scale + (a.k_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  const float* kz = a.k_zero + (a.k_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  constexpr int kPlanes = 2 * kTrits;
  uint32_t* qplanes = reinterpret_cast<uint32_t*>(words);  // [G][kPlanes][KW]
  if (warp < G) {
    const int g = warp;
    const QRow q = q_row(s, static_cast<int64_t>(bh) * G * D);
    constexpr int kMaxWords = 4;  // head_dim <= 128
    float x[kMaxWords];
    float amax = 0.f, c = 0.f;
#pragma unroll
    for (int w = 0; w < kMaxWords; ++w) {
      if (w >= KW) break;
      const int d = 32 * w + lane;
      const float v = a.k_token_axis ? q[g * D + d] : q[g * D + d] * ks[d];
      x[w] = v;
      amax = fmaxf(amax, fabsf(v));
      c += a.k_token_axis ? v : -v * kz[d];
    }
    amax = warp_reduce(amax, Max{});
    c = warp_reduce(c, Sum{});
    const float step = amax / static_cast<float>(kTritMax);
    int neg = 0;
#pragma unroll
    for (int w = 0; w < kMaxWords; ++w) {
      if (w >= KW) break;
      neg += store_q_trits(x[w], step, lane, qplanes + g * kPlanes * KW + w, KW);
    }
    const float ysum = warp_reduce(static_cast<float>(neg), Sum{});  // exact: below 128 * kTritMax < 2^24
    if (lane == 0) {
      qoff[g] = -step * ysum;
      qstep[g] = step;
      cst[g] = c;
    }
  }
  // The split's largest token-axis value scale (p' = p s_n <= it bounds the values' fixed
  // point): per warp here, over the warps in phase 6.
  float* vmax_w = scratch;  // [warps]
  if (a.v_token_axis) {
    const float* vs = a.v_scale + static_cast<int64_t>(bh) * N + n0;
    float m = 0.f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) m = fmaxf(m, vs[i]);
    m = warp_reduce(m, Max{});
    if (lane == 0) vmax_w[warp] = m;
  }
  __syncthreads();
  // 2. The lane's B fragments in registers. In mma j of a head set, column c is head
  //    c / 2 + 4 set, trit 2 j + c % 2 (its x plane in the first 128 rows of k, its y plane in
  //    the second): the lane of tq then holds all ten trit sums of head tq + 4 set (its C
  //    columns 2 tq, 2 tq + 1) and combines them without shuffles.
  constexpr int kSets = (G + 3) / 4, kMmas = kTrits / 2;
  uint32_t qb[kSets][kMmas][2];
  float head_step[kSets], head_off[kSets], head_cst[kSets];
#pragma unroll
  for (int set = 0; set < kSets; ++set) {
    const int col_head = gq / 2 + 4 * set, head = tq + 4 * set;
#pragma unroll
    for (int j = 0; j < kMmas; ++j)
#pragma unroll
      for (int xy = 0; xy < 2; ++xy)
        qb[set][j][xy] = col_head < G && tq < KW ? qplanes[(col_head * kPlanes + 2 * (2 * j + (gq & 1)) + xy) * KW + tq] : 0u;
    head_step[set] = head < G ? qstep[head] : 0.f;
    head_off[set] = head < G ? qoff[head] : 0.f;
    head_cst[set] = head < G ? cst[head] : 0.f;
  }
  __syncthreads();  // the planes are in registers: scores may overwrite the word area

  // 3. Scores on the binary tensor cores: a 16-token unit per warp and round. A = the K rows
  //    as stored (rows gq and gq + 8: tokens; lane tq: the row's word tq) and their complement,
  //    [k | ~k] (256 bits), B = [x_j | y_j], so that mma.m16n8k256 .b1 (AND + popcount) gives
  //      popc(x_j & k) + popc(y_j & ~k) = sum_d t_jd k_d + popc(y_j)
  //    (t = x - y; popc(y_j & ~k) = popc(y_j) - popc(y_j & k)): a signed trit sum with no
  //    ones row, its constant sum_j 3^j popc(y_j) folded into the head's offset. A score is
  //    step * sum_j 3^j (trit sum j) + offset: nine multiply-adds per token and head for five
  //    mmas, where the 15-bit planes took eight mmas, fourteen shift-adds and a ones row.
  float rlo[kSets], rhi[kSets];
#pragma unroll
  for (int set = 0; set < kSets; ++set) {
    rlo[set] = INFINITY;
    rhi[set] = -INFINITY;
  }
  // A warp's units are all warp (mod 8): the same half of their words, so the lane's slots
  // (head tq + 4 set, tokens gq and gq + 8) are constants within a word's region, and the
  // regions of its units are 4 WS floats apart. Everything the loop addresses goes through
  // running pointers stepped by a constant per round (the SASS of the indexed form rebuilt
  // the K words' 64-bit addresses and the slots from lane bits every round: ~26 of its 97
  // instructions per unit).
  static_assert(kMmaThreads / 32 % 2 == 0, "a warp's units keep their half of a word");
  float* slot0[kSets];
  int slot_d1[kSets];  // token gq + 8's slot less token gq's: +-8 (the head swizzle flips bit 3)
#pragma unroll
  for (int set = 0; set < kSets; ++set) {
    const int head = tq + 4 * set;
    const int s0 = head * 32 + ((16 * (warp & 1) + gq) ^ score_head_swizzle(head));
    const int s1 = head * 32 + ((16 * (warp & 1) + gq + 8) ^ score_head_swizzle(head));
    slot0[set] = words + (warp >> 1) * WS + s0;
    slot_d1[set] = s1 - s0;
  }
  const bool word_ok = tq < KW;
  // Row gq of the warp's first unit, word tq; a round steps `warps` units.
  const uint32_t* kp = Kb + (warp * 16 + gq) * KW + tq;
  const int kstep = warps * 16 * KW;
  int trow = warp * 16 + gq;  // the token of row gq in this round's unit
  // The rows of the unit two rounds ahead into k (two registers).
  auto load_ahead = [&](uint32_t (&k)[2]) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
      k[r] = word_ok && trow + 2 * warps * 16 + 8 * r < len ? __ldg(kp + 2 * kstep + 8 * r * KW) : 0u;
  };
  // One round: the unit's scores from k, then k refilled two rounds ahead.
  auto round = [&](uint32_t (&k)[2]) {
    const uint32_t af[4] = {k[0], k[1], ~k[0], ~k[1]};
    load_ahead(k);
    const bool whole = trow - gq + 16 <= len;  // no per-token test (all units but a short last one)
#pragma unroll
    for (int set = 0; set < kSets; ++set) {
      // Trits 9 and 8 first, then 7..0 by multiply-adds (|sums| < 2^23: exact in int32 and as float).
      int c[4] = {0, 0, 0, 0};
      mma_b1_k256(c, af, qb[set][kMmas - 1][0], qb[set][kMmas - 1][1]);
      int sum0 = 3 * c[1] + c[0], sum1 = 3 * c[3] + c[2];
#pragma unroll
      for (int j = kMmas - 2; j >= 0; --j) {
        int p[4] = {0, 0, 0, 0};
        mma_b1_k256(p, af, qb[set][j][0], qb[set][j][1]);
        sum0 = 9 * sum0 + 3 * p[1] + p[0];
        sum1 = 9 * sum1 + 3 * p[3] + p[2];
      }
      const int head = tq + 4 * set;
      if (head < G) {
        const float dots[2] = {fmaf(head_step[set], static_cast<float>(sum0), head_off[set]),
                               fmaf(head_step[set], static_cast<float>(sum1), head_off[set])};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int t = trow + 8 * r;
          if (whole || t < len) {
            const float v = key_score(a, ks, kz, n0 + t, dots[r], head_cst[set]);
            slot0[set][r == 0 ? 0 : slot_d1[set]] = v;
            rlo[set] = fminf(rlo[set], v);
            rhi[set] = fmaxf(rhi[set], v);
          }
        }
      }
      slot0[set] += 4 * WS;
    }
    kp += kstep;
    trow += warps * 16;
  };
  // Rows loaded two units ahead: k0 holds this round's, k1 the next one's.
  uint32_t k0[2], k1[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    k0[r] = word_ok && trow + 8 * r < len ? __ldg(kp + 8 * r * KW) : 0u;
    k1[r] = word_ok && trow + warps * 16 + 8 * r < len ? __ldg(kp + kstep + 8 * r * KW) : 0u;
  }
  while (trow - gq < len) {
    round(k0);
    if (trow - gq >= len) break;
    round(k1);
  }
  // 4. The split's score range per head: over the 8 lanes of each tq, then over the warps.
  float* wrange = delta + G;  // [warps][G][2]
#pragma unroll
  for (int set = 0; set < kSets; ++set) {
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
      rlo[set] = fminf(rlo[set], __shfl_xor_sync(0xffffffffu, rlo[set], o));
      rhi[set] = fmaxf(rhi[set], __shfl_xor_sync(0xffffffffu, rhi[set], o));
    }
    const int head = tq + 4 * set;
    if (gq == 0 && head < G) {
      wrange[(warp * G + head) * 2] = rlo[set];
      wrange[(warp * G + head) * 2 + 1] = rhi[set];
    }
  }
  __syncthreads();
  // 5. Calibration maps the row's range [m, M] (over every split) onto [m + a, M + b]:
  //    s' = alpha s + beta, so that softmax needs exp(alpha s + beta - max') only, and no
  //    pass rewrites the scores.
  split_calibration(a, bh, G, split, minmax_only, len, wrange, warps, alpha, beta, row_max);
  if (a.calibrate && minmax_only) return;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) red[i] = 0.f;
  __syncthreads();

  // 6. Values on the binary tensor cores. p' = exp(s' - max), times the token's scale for
  //    token-axis values, in 16-bit fixed point: p' ~ vstep * u, u = sum_b 2^b plane_b. A
  //    word's 32 tokens give 16 plane words per head (bit r: token r), written over the word's
  //    scores; then mma.m16n8k256 .b1 (AND + popcount) of the planes (A: 16 planes x 256
  //    tokens) against the token-major value words (B: 256 tokens x 8 channels) sums u over
  //    the tokens whose code is 1, per plane and channel, in int32. The value codes enter the
  //    tensor cores as stored: the bf16 path before spent an AND per two codes and a bf16
  //    hi/lo pair per p (Nsight's SASS at B = 630: 22.5k of the block's 52.2k warp
  //    instructions in those two phases).
  prefetch_l2(VTb, (Wlen * D + 31) / 32);
  const int Wr = (Wlen + 7) / 8 * 8;  // whole 256-token blocks (<= Wc): planes past len are zeros
  const float* vs = a.v_scale + (a.v_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  const float* vz = a.v_zero + (a.v_token_axis ? static_cast<int64_t>(bh) * N : static_cast<int64_t>(bh) * D);
  float vmax = 0.f;
  if (a.v_token_axis)
    for (int w = 0; w < warps; ++w) vmax = fmaxf(vmax, vmax_w[w]);
  const float vstep = a.v_token_axis ? vmax / kPlaneLevels : 1.f / kPlaneLevels;
  const float inv_vstep = vstep > 0.f ? 1.f / vstep : 0.f;
  float psum[G], dsum[G];
#pragma unroll
  for (int g = 0; g < G; ++g) psum[g] = dsum[g] = 0.f;
  // exp(alpha s + beta - max) as exp2(alpha' s + shift') (ex2 is one instruction).
  float al2[G], sh2[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    al2[g] = alpha[g] * 1.4426950408889634f;
    sh2[g] = (beta[g] - row_max[g]) * 1.4426950408889634f;
  }
  {
    const BitTranspose transpose(lane);
    // A warp per word, a lane per token: the word's scores of every head into registers, then
    // its planes over them (only this warp touches the word in this phase). A warp's words are
    // all warp (mod 8): their w % 4, and so the lane's plane slots, are constants.
    static_assert(kMmaThreads / 32 == 8, "a warp's words share w % 4");
    const int plane_lane = 2 * plane_slot(warp, lane >> 4, lane & 7) + ((lane >> 3) & 1);  // + 16 g0
    const float* vs_lane = vs + n0 + warp * 32 + lane;  // token-axis scales of token t, stepped with w
    const float* vz_lane = vz + n0 + warp * 32 + lane;
    for (int w = warp; w < Wr; w += warps, vs_lane += warps * 32, vz_lane += warps * 32) {
      const int t = w * 32 + lane;
      const bool in = t < len;
      float* region = words + w * WS;
      float x[G];
#pragma unroll
      for (int g = 0; g < G; ++g) x[g] = region[32 * g + (lane ^ score_head_swizzle(g))];
      __syncwarp();
      float sv = 1.f, svz = 0.f;
      if (a.v_token_axis) {
        sv = in ? *vs_lane : 0.f;
        svz = in ? sv * *vz_lane : 0.f;
      }
      uint32_t u[G];
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float p = in ? ex2_approx(fmaf(al2[g], x[g], sh2[g])) : 0.f;
        psum[g] += p;
        if (a.v_token_axis) dsum[g] = fmaf(p, svz, dsum[g]);
        // Rounded to an integer in the low mantissa bits: 1.5 * 2^23 + v has a unit step.
        u[g] = __float_as_uint(fmaf(a.v_token_axis ? p * sv : p, inv_vstep, kRoundMagic));
      }
      uint32_t* planes = reinterpret_cast<uint32_t*>(region);
#pragma unroll
      for (int g0 = 0; g0 < G; g0 += 2) {
        // Heads g0 and g0 + 1 as the low and high halves: lane i gets plane i % 16 of head
        // g0 + i / 16.
        const uint32_t bits = transpose(__byte_perm(u[g0], g0 + 1 < G ? u[g0 + 1] : 0u, 0x5410));
        if (g0 + 1 < G || lane < 16) planes[16 * g0 + plane_lane] = bits;
      }
    }
  }
  // Row sums (and the token-axis zero-point terms) over the block: warp, then across warps.
#pragma unroll
  for (int g = 0; g < G; ++g) {
    psum[g] = warp_reduce(psum[g], Sum{});
    if (a.v_token_axis) dsum[g] = warp_reduce(dsum[g], Sum{});
  }
  if (lane == 0)
#pragma unroll
    for (int g = 0; g < G; ++g) {
      wrange[(warp * G + g) * 2] = psum[g];
      wrange[(warp * G + g) * 2 + 1] = dsum[g];
    }
  __syncthreads();
  if (threadIdx.x < G) {
    const int g = threadIdx.x;
    float l = 0.f, dz = 0.f;
    for (int w = 0; w < warps; ++w) {
      l += wrange[(w * G + g) * 2];
      dz += wrange[(w * G + g) * 2 + 1];
    }
    row_sum[g] = l;
    delta[g] = -dz;
  }
  // A warp takes a 16-channel tile (column gq of its two 8-channel mmas: channels 16 tile + gq
  // and 16 tile + 8 + gq) and every (warps / tiles)-th 256-token block: all G heads' planes
  // against the same value words.
  const int tiles = D / 16, tile = warp % tiles, tile_warps = warps / tiles;
  int acc[2][G][4];
#pragma unroll
  for (int c = 0; c < 2; ++c)
#pragma unroll
    for (int g = 0; g < G; ++g) acc[c][g][0] = acc[c][g][1] = acc[c][g][2] = acc[c][g][3] = 0;
  const int blocks = Wr / 8, whole = Wlen / 8;  // whole: blocks all of whose words are below Wlen
  // Words tq and tq + 4 of a block (the B pair of each mma, loaded straight into it), from a
  // pointer that steps with the block; in the last block, words past Wlen read the last word
  // (its planes there are zeros).
  const int first = warp / tiles, step = tile_warps * 8 * D;
  const uint32_t* __restrict__ vcol = VTb + tile * 16 + gq;
  const uint32_t* vnext = vcol + (first * 8 + tq) * D;  // word tq of the next block to load
  int blk_next = first;
  auto load_values = [&](uint32_t (&v)[2][2]) {
    if (blk_next < whole) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        v[c][0] = __ldg(vnext + 8 * c);
        v[c][1] = __ldg(vnext + 4 * D + 8 * c);
      }
    } else if (blk_next < blocks) {
      const int wa = min(blk_next * 8 + tq, Wlen - 1), wb = min(blk_next * 8 + tq + 4, Wlen - 1);
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        v[c][0] = __ldg(vcol + wa * D + 8 * c);
        v[c][1] = __ldg(vcol + wb * D + 8 * c);
      }
    }
    vnext += step;
    blk_next += tile_warps;
  };
  // The lane's plane slots (rows gq, gq + 8) in words tq and tq + 4: one per head, an immediate apart.
  const uint2* pl = reinterpret_cast<const uint2*>(words) + tq * (WS / 2) + plane_slot(tq, 0, gq);
  auto multiply = [&](const uint32_t (&v)[2][2], int blk) {
    const uint2* pw = pl + blk * 8 * (WS / 2);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const uint2 pa = pw[8 * g], pb = pw[4 * (WS / 2) + 8 * g];
      const uint32_t af[4] = {pa.x, pa.y, pb.x, pb.y};
      mma_b1_k256(acc[0][g], af, v[0][0], v[0][1]);
      mma_b1_k256(acc[1][g], af, v[1][0], v[1][1]);
    }
  };
  // Three buffers: a block's value words are loaded two blocks ahead (Nsight: with one block
  // ahead, the first mma of every other block waited on L2); the first two loads are issued
  // before the barrier.
  uint32_t v0[2][2], v1[2][2], v2[2][2];
  load_values(v0);
  load_values(v1);
  __syncthreads();  // every word's planes are written
  for (int blk = first; blk < blocks;) {
    load_values(v2);
    multiply(v0, blk);
    if ((blk += tile_warps) >= blocks) break;
    load_values(v0);
    multiply(v1, blk);
    if ((blk += tile_warps) >= blocks) break;
    load_values(v1);
    multiply(v2, blk);
    blk += tile_warps;
  }
  // C rows gq and gq + 8 are planes gq and gq + 8; columns 2 tq and 2 tq + 1 channels
  // 16 tile + 8 c + 2 tq (+1) of group c. Planes gq and gq + 8 combine exactly in int32
  // (popcounts <= len), then 2^gq as float; the sum over gq halves the values each round
  // (lane bit 16, 8, 4), so that lane gq ends with values gq * kPer + k of the kVals.
  constexpr int kVals = (4 * G + 7) / 8 * 8, kPer = kVals / 8;
  float vals[kVals];
  const float wq = static_cast<float>(1u << gq) * vstep;
#pragma unroll
  for (int i = 0; i < kVals; ++i) {
    const int cg = i >> 1, e = i & 1, c = cg / G, g = cg % G;
    vals[i] = i < 4 * G ? static_cast<float>(acc[c][g][e] + (acc[c][g][e + 2] << 8)) * wq : 0.f;
  }
#pragma unroll
  for (int r = 0; r < 3; ++r) {
    const int bit = 16 >> r, half = kVals >> (r + 1);
    const bool upper = lane & bit;
#pragma unroll
    for (int k = 0; k < half; ++k) {
      const float send = upper ? vals[k] : vals[k + half];
      const float keep = upper ? vals[k + half] : vals[k];
      vals[k] = keep + __shfl_xor_sync(0xffffffffu, send, bit);
    }
  }
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = gq * kPer + k;
    if (i < 4 * G) {
      const int cg = i >> 1, c = cg / G, g = cg % G;
      atomicAdd(&red[g * D + tile * 16 + 8 * c + 2 * tq + (i & 1)], vals[k]);
    }
  }
  __syncthreads();

  // 7. Scale and zero-point after the sums; with a.out, the merge with the other segments too.
  if (a.out != nullptr)
    write_merged_output<G>(s, a, bh, a.split_offset + split, red, vs, vz, delta, row_max, row_sum, scratch);
  else
    write_value_partials<G>(s, a, bh, a.split_offset + split, red, vs, vz, delta, row_max, row_sum);
}

__global__ void token_words_kernel(const uint8_t* __restrict__ packed, uint32_t* __restrict__ words, int64_t rows,
                                   int64_t n, int d) {
  const int64_t W = (n + 31) / 32, row_bytes = d / 8;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < rows * W * d;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / (W * d), w = (idx / d) % W;
    const int c = static_cast<int>(idx % d);
    uint32_t word = 0;
    for (int i = 0; i < 32; ++i) {
      const int64_t t = w * 32 + i;
      if (t < n) word |= static_cast<uint32_t>((packed[(r * n + t) * row_bytes + c / 8] >> (c % 8)) & 1u) << i;
    }
    words[idx] = word;
  }
}

// ---------------------------------------------------------------- merge

// Splits of a row (sequence, query head) merged by log-sum-exp: their maxima and weights taken
// in parallel (at batch 1 a row has a few dozen splits, and one thread walking them took 17 us
// per layer), then each output element sums its splits' partial outputs. kWarpRow: a warp per
// row, reduced by shuffles, for large batches (a block per row with two block reductions ran at
// a third of the copy bandwidth at batch 630: 29 us per layer under Nsight Compute); else a
// block per row, whose 128 threads share the dozens of splits of a small batch.
constexpr int kMergeThreads = 128, kMergeWarps = kMergeThreads / 32;
template <bool kWarpRow>
__global__ void __launch_bounds__(kMergeThreads) merge_kernel(DecodeShape s, void* out, int64_t rows) {
  extern __shared__ float merge_smem[];  // [kMergeWarps or 1][total_splits]
  __shared__ float scratch[32];
  const int lane = kWarpRow ? threadIdx.x & 31 : threadIdx.x, width = kWarpRow ? 32 : kMergeThreads;
  const int warp = threadIdx.x >> 5;
  const int64_t row = kWarpRow ? blockIdx.x * static_cast<int64_t>(kMergeWarps) + warp : blockIdx.x;
  if (row >= rows) return;  // whole warps (or no block) leave
  const int S = s.total_splits;
  float* weight = merge_smem + (kWarpRow ? warp * S : 0);
  const float* ml = s.part_ml + row * S * 2;
  float m = -INFINITY;
  for (int t = lane; t < S; t += width) m = fmaxf(m, ml[t * 2]);
  m = kWarpRow ? warp_reduce(m, Max{}) : block_reduce(m, scratch, Max{}, -INFINITY);
  float l = 0.f;
  for (int t = lane; t < S; t += width) {
    const float w = ml[t * 2] == -INFINITY ? 0.f : expf(ml[t * 2] - m);
    weight[t] = w;
    l += w * ml[t * 2 + 1];
  }
  if constexpr (kWarpRow) {
    l = warp_reduce(l, Sum{});
    __syncwarp();  // publishes `weight` to the warp
  } else {
    l = block_reduce(l, scratch, Sum{}, 0.f);  // its barriers also publish `weight`
  }
  const float* po = s.part_o + row * S * s.head_dim;
  for (int d = lane; d < s.head_dim; d += width) {
    float acc = 0.f;
#pragma unroll 4
    for (int t = 0; t < S; ++t)
      if (weight[t] != 0.f) acc += weight[t] * po[static_cast<int64_t>(t) * s.head_dim + d];
    store_output(out, s.q_type, row * s.head_dim + d, acc / l);
  }
}

// Opts a kernel in to more than 48 KiB of dynamic shared memory, once per kernel (the
// attribute call costs host time on every decode step otherwise).
template <typename Kernel>
cudaError_t allow_shared(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  static std::mutex mutex;
  static std::unordered_map<const void*, size_t> allowed;
  std::lock_guard<std::mutex> lock(mutex);
  size_t& have = allowed[reinterpret_cast<const void*>(kernel)];
  if (have >= bytes) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e == cudaSuccess) have = bytes;
  return e;
}

template <typename T, int G>
cudaError_t launch_full_typed(const DecodeShape& s, const FullSegmentArgs& a, cudaStream_t stream) {
  const int64_t chunk = (a.length + a.splits - 1) / a.splits;
  const size_t bytes = full_segment_shared_bytes(s, chunk);
  auto kernel = full_segment_kernel<T, G>;
  if (cudaError_t e = allow_shared(kernel, bytes); e != cudaSuccess) return e;
  kernel<<<dim3(s.batch * s.kv_heads, a.splits), kFullThreads, bytes, stream>>>(s, a);
  return cudaGetLastError();
}

// Calls fn(std::integral_constant<int, G>) for the GQA group size G = groups (1..8): the
// kernels are instantiated per G so that per-head accumulators stay in registers.
template <typename Fn>
cudaError_t with_groups(int groups, Fn&& fn) {
  switch (groups) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    case 7: return fn(std::integral_constant<int, 7>{});
    case 8: return fn(std::integral_constant<int, 8>{});
  }
  return cudaErrorInvalidValue;
}

// Ring depth: CALIBQ_FLASH_STAGES=3 for comparisons; by default kFlashStages (2).
inline int flash_stages() {
  static const int forced = [] {
    const char* v = std::getenv("CALIBQ_FLASH_STAGES");
    return v && *v ? std::atoi(v) : 0;
  }();
  return forced == 3 ? 3 : kFlashStages;
}

template <typename T, int D>
cudaError_t launch_flash_typed(const DecodeShape& s, const FullSegmentList& f, int splits, cudaStream_t stream) {
  const int stages = flash_stages();
  const size_t bytes = flash_shared_bytes(D, stages);
  auto kernel = stages == 3 ? full_segment_flash_kernel<T, D, 3> : full_segment_flash_kernel<T, D, kFlashStages>;
  if (cudaError_t e = allow_shared(kernel, bytes); e != cudaSuccess) return e;
  kernel<<<dim3(s.batch * s.kv_heads, splits), kFlashThreads, bytes, stream>>>(s, f);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_flash_dims(const DecodeShape& s, const FullSegmentList& f, int splits, cudaStream_t stream) {
  switch (s.head_dim) {
    case 32: return launch_flash_typed<T, 32>(s, f, splits, stream);
    case 64: return launch_flash_typed<T, 64>(s, f, splits, stream);
    case 80: return launch_flash_typed<T, 80>(s, f, splits, stream);
    case 96: return launch_flash_typed<T, 96>(s, f, splits, stream);
    case 128: return launch_flash_typed<T, 128>(s, f, splits, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t launch_full_groups(const DecodeShape& s, const FullSegmentArgs& a, cudaStream_t stream) {
  return with_groups(s.groups, [&](auto g) { return launch_full_typed<T, decltype(g)::value>(s, a, stream); });
}

// Whether environment variable `name` is set to `value`: the kernel-variant switches below, each
// read once into its caller's static.
bool env_equals(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::string(v) == value;
}

// CALIBQ_MMA_BLOCKS=3: the GQA 1-bit kernel for G = 4 compiled for three blocks per SM (80
// registers) rather than four (64), for side-by-side measurements.
inline bool mma_three_blocks() {
  static const bool three = env_equals("CALIBQ_MMA_BLOCKS", "3");
  return three;
}
template <int G, int KWc>
auto mma_kernel() {
  if constexpr (G == 4)
    if (mma_three_blocks()) return packed_b1_mma_kernel<G, KWc, 3>;
  return packed_b1_mma_kernel<G, KWc>;
}

// The 1-bit kernels (bit planes, or fp16 mma for GQA): whole 256-token blocks per split,
// and with calibration over several splits a first pass for the rows' score ranges.
template <int G, bool Mma>
cudaError_t launch_b1_typed(const DecodeShape& s, const PackedSegmentArgs& a, cudaStream_t stream) {
  const int64_t chunk = ((a.length + a.splits - 1) / a.splits + kB1Chunk - 1) / kB1Chunk * kB1Chunk;
  const size_t bytes = static_cast<size_t>(Mma ? mma_floats(G, s.head_dim, chunk) : b1_floats(G, s.head_dim, chunk)) * sizeof(float);
  auto kernel = Mma ? (s.head_dim == 128 ? mma_kernel<G, 4>() : mma_kernel<G, 0>())
                    : (s.head_dim == 128 ? packed_b1_kernel<G, 4> : packed_b1_kernel<G, 0>);
  const int threads = Mma ? kMmaThreads : kB1Threads;
  if (cudaError_t e = allow_shared(kernel, bytes); e != cudaSuccess) return e;
  const dim3 grid(s.batch * s.kv_heads, a.splits);
  if (a.calibrate && a.splits > 1) kernel<<<grid, threads, bytes, stream>>>(s, a, chunk, true);
  kernel<<<grid, threads, bytes, stream>>>(s, a, chunk, false);
  return cudaGetLastError();
}

template <int G>
cudaError_t launch_packed_typed(const DecodeShape& s, const PackedSegmentArgs& a, cudaStream_t stream) {
  const int64_t chunk = (a.length + a.splits - 1) / a.splits;
  const PackedLayout l = packed_layout(G, s.head_dim, a.bits, a.row_bytes, chunk);
  const size_t bytes = packed_segment_shared_bytes(s, a.bits, a.row_bytes, chunk);
  auto kernel = packed_segment_kernel<G>;
  if (cudaError_t e = allow_shared(kernel, bytes); e != cudaSuccess) return e;
  const dim3 grid(s.batch * s.kv_heads, a.splits);
  if (a.calibrate && a.splits > 1) kernel<<<grid, kPackedThreads, bytes, stream>>>(s, a, l, true);
  kernel<<<grid, kPackedThreads, bytes, stream>>>(s, a, l, false);
  return cudaGetLastError();
}

}  // namespace

// CALIBQ_FULL_KERNEL=loop keeps the CUDA-core kernel for 16-bit segments too (for benchmarks
// side by side).
static bool flash_allowed() {
  static const bool loop = env_equals("CALIBQ_FULL_KERNEL", "loop");
  return !loop;
}

bool full_segments_flash(const DecodeShape& s, const FullSegmentArgs* a, int count) {
  if (count < 1 || count > kMaxFullSegments || !flash_allowed() || s.groups > 8) return false;
  const int D = s.head_dim;
  if (D != 32 && D != 64 && D != 80 && D != 96 && D != 128) return false;
  for (int i = 0; i < count; ++i) {
    const FullSegmentArgs& x = a[i];
    if (x.type == KVType::F32 || x.type != a[0].type) return false;
    // cp.async moves 16-byte chunks: rows and (b, h) strides 16-byte aligned.
    if (reinterpret_cast<uintptr_t>(x.k) % 16 != 0 || reinterpret_cast<uintptr_t>(x.v) % 16 != 0) return false;
    if ((x.k_head_stride * 2) % 16 != 0 || (x.v_head_stride * 2) % 16 != 0) return false;
    if ((x.k_batch_stride * 2) % 16 != 0 || (x.v_batch_stride * 2) % 16 != 0) return false;
    if (x.length > (int64_t{1} << 30)) return false;
  }
  return true;
}

int full_segments_flash_tiles(const FullSegmentArgs* a, int count) {
  int64_t tiles = 0;
  for (int i = 0; i < count; ++i) tiles += (a[i].length + kFlashTile - 1) / kFlashTile;
  return static_cast<int>(tiles);
}

int full_segments_flash_blocks_per_sm(int head_dim) {
  return std::max(1, std::min(16, static_cast<int>((227 * 1024) / flash_shared_bytes(head_dim, flash_stages()))));
}

cudaError_t launch_full_segments_flash(const DecodeShape& s, const FullSegmentArgs* a, int count, int splits,
                                       int split_offset, cudaStream_t stream) {
  if (!full_segments_flash(s, a, count)) return cudaErrorInvalidValue;
  FullSegmentList f;
  f.count = count;
  f.first_tile[0] = 0;
  for (int i = 0; i < count; ++i) {
    f.seg[i] = a[i];
    f.first_tile[i + 1] = f.first_tile[i] + static_cast<int>((a[i].length + kFlashTile - 1) / kFlashTile);
  }
  for (int i = count + 1; i <= kMaxFullSegments; ++i) f.first_tile[i] = f.first_tile[count];
  const int tiles = f.first_tile[count];
  if (tiles == 0) return cudaSuccess;
  splits = std::max(1, std::min(splits, tiles));
  f.tiles_per_split = (tiles + splits - 1) / splits;
  f.split_offset = split_offset;
  // Every split slot is written (an empty one as max -inf), as the merge reads them all.
  switch (a[0].type) {
    case KVType::F16: return launch_flash_dims<__half>(s, f, splits, stream);
    case KVType::BF16: return launch_flash_dims<__nv_bfloat16>(s, f, splits, stream);
    case KVType::F32: break;
  }
  return cudaErrorInvalidValue;
}

size_t full_segment_shared_bytes(const DecodeShape& s, int64_t chunk) {
  const int64_t G = s.groups, D = s.head_dim;
  return static_cast<size_t>(G * D + G * chunk + (kFullThreads / 32) * G * D + 32 + 2 * G) * sizeof(float);
}

size_t packed_segment_shared_bytes(const DecodeShape& s, int bits, int row_bytes, int64_t chunk) {
  const int64_t rounded = (chunk + kB1Chunk - 1) / kB1Chunk * kB1Chunk;
  if (bits == 1 && s.groups > 1 && mma_shape(s)) return static_cast<size_t>(mma_floats(s.groups, s.head_dim, rounded)) * sizeof(float);
  if (bits == 1 && s.head_dim % 32 == 0 && s.head_dim <= 256)  // the binary tensor-core path (with token words)
    return static_cast<size_t>(b1_floats(s.groups, s.head_dim, rounded)) * sizeof(float);
  return static_cast<size_t>(packed_floats(s.groups, packed_layout(s.groups, s.head_dim, bits, row_bytes, chunk))) * sizeof(float);
}

cudaError_t launch_full_segment(const DecodeShape& s, const FullSegmentArgs& a, cudaStream_t stream) {
  if (a.length == 0) return cudaSuccess;
  switch (a.type) {
    case KVType::F32: return launch_full_groups<float>(s, a, stream);
    case KVType::F16: return launch_full_groups<__half>(s, a, stream);
    case KVType::BF16: return launch_full_groups<__nv_bfloat16>(s, a, stream);
  }
  return cudaErrorInvalidValue;
}

static bool b1_path(const DecodeShape& s, const PackedSegmentArgs& a) {
  return a.bits == 1 && a.v_token_words != nullptr && s.head_dim % 32 == 0 && s.head_dim <= 256 &&
         reinterpret_cast<uintptr_t>(a.k_packed) % 4 == 0;
}

// CALIBQ_B1_KERNEL=planes keeps the bit-plane kernel (a query head per block) for every 1-bit
// shape (for benchmarks side by side); the default takes the GQA kernel wherever it applies.
static bool mma_preferred() {
  static const bool planes = env_equals("CALIBQ_B1_KERNEL", "planes");
  return !planes;
}

// CALIBQ_FUSED_MERGE=0 keeps the merge launch after the GQA kernel (for side-by-side measurements).
static bool fused_merge_allowed() {
  static const bool off = env_equals("CALIBQ_FUSED_MERGE", "0");
  return !off;
}

// Whether launch_packed_segment takes the 1-bit GQA kernel (the one that can write the output).
// Without GQA the bit-plane kernel is faster (the GQA kernel's score columns hold four heads'
// planes: with one head, three quarters of them would idle).
static bool gqa_kernel_takes(const DecodeShape& s, const PackedSegmentArgs& a) {
  return b1_path(s, a) && s.groups > 1 && mma_shape(s) && mma_preferred();
}

bool packed_segment_writes_output(const DecodeShape& s, const PackedSegmentArgs& a) {
  return a.length > 0 && gqa_kernel_takes(s, a) && a.splits == 1 && s.groups * (s.total_splits + 1) <= 32 &&
         fused_merge_allowed();
}

cudaError_t launch_packed_segment(const DecodeShape& s, const PackedSegmentArgs& a, cudaStream_t stream) {
  if (a.length == 0) return cudaSuccess;
  if (gqa_kernel_takes(s, a))
    return with_groups(s.groups, [&](auto g) { return launch_b1_typed<decltype(g)::value, true>(s, a, stream); });
  if (b1_path(s, a))
    return with_groups(s.groups, [&](auto g) { return launch_b1_typed<decltype(g)::value, false>(s, a, stream); });
  return with_groups(s.groups, [&](auto g) { return launch_packed_typed<decltype(g)::value>(s, a, stream); });
}

cudaError_t launch_token_words(const uint8_t* packed, uint32_t* words, int64_t rows, int64_t n, int d, cudaStream_t stream) {
  const int64_t work = rows * ((n + 31) / 32) * d;
  if (work == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((work + 255) / 256, 65535 * 16);
  token_words_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(packed, words, rows, n, d);
  return cudaGetLastError();
}

cudaError_t launch_merge(const DecodeShape& s, void* out, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(s.batch) * s.kv_heads * s.groups;
  if (rows == 0) return cudaSuccess;
  // A warp per row from 8192 rows (batch 256 with 32 query heads), where blocks of one row
  // would be tens of thousands of short blocks; a block per row below, where rows are few and
  // their splits many.
  if (rows >= 8192) {
    const size_t bytes = static_cast<size_t>(kMergeWarps) * s.total_splits * sizeof(float);
    if (cudaError_t e = allow_shared(merge_kernel<true>, bytes); e != cudaSuccess) return e;
    merge_kernel<true><<<static_cast<unsigned>((rows + kMergeWarps - 1) / kMergeWarps), kMergeThreads, bytes, stream>>>(s, out, rows);
  } else {
    const size_t bytes = static_cast<size_t>(s.total_splits) * sizeof(float);
    if (cudaError_t e = allow_shared(merge_kernel<false>, bytes); e != cudaSuccess) return e;
    merge_kernel<false><<<static_cast<unsigned>(rows), kMergeThreads, bytes, stream>>>(s, out, rows);
  }
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
