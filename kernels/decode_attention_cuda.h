// Raw-pointer launchers of the decode-attention kernels (no LibTorch here, so that nvcc
// compiles decode_attention_cuda.cu where LibTorch has no CUDA). Every launch writes
// partial results (unnormalized output, running max, sum of exponentials) of its
// sequence splits into shared buffers; the merge launch combines them (log-sum-exp).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda_types.h"

namespace calibq::kernels::cuda {

struct DecodeShape {
  int batch = 0, kv_heads = 0, groups = 1, head_dim = 0;  // query heads = kv_heads * groups
  const void* q = nullptr;    // [B, Hq, D] of q_type; the kernels multiply it by q_scale (the softmax scale)
  KVType q_type = KVType::F32;
  float q_scale = 1.f;
  float* part_o = nullptr;    // [B, Hq, total_splits, D]
  float* part_ml = nullptr;   // [B, Hq, total_splits, 2]: max, sum of exp
  int total_splits = 0;
};

struct FullSegmentArgs {
  const void* k = nullptr;    // [B, H, L, D] of `type`: token rows of D contiguous, the (b, h)
  const void* v = nullptr;    // rows at b * batch_stride + h * head_stride elements (H L D and
                              // L D when contiguous; batch_stride 0: one copy for the whole
                              // batch, e.g. a system prompt's KV that every sequence shares)
  int64_t k_head_stride = 0, v_head_stride = 0;
  int64_t k_batch_stride = 0, v_batch_stride = 0;
  const float* mask = nullptr;  // [B, L] or null
  KVType type = KVType::F32;
  int64_t length = 0;             // tokens in the buffers (splits are cut from it)
  const int* length_dev = nullptr;  // valid tokens, read on the device (<= length), or null: all
  int splits = 1, split_offset = 0;
};

// The full-precision segments of one step, attended by one launch of the tensor-core kernel
// as one sequence of 16-token tiles (each segment's tiles from its own buffers).
constexpr int kMaxFullSegments = 4;
struct FullSegmentList {
  FullSegmentArgs seg[kMaxFullSegments];
  int first_tile[kMaxFullSegments + 1] = {};  // tiles of segment j: [first_tile[j], first_tile[j + 1])
  int count = 0, tiles_per_split = 1, split_offset = 0;
};

struct PackedSegmentArgs {
  const uint8_t* k_packed = nullptr;  // [B, H, N, row_bytes]
  const float* k_scale = nullptr;     // channel axis: [B, H, D]; token axis: [B, H, N]
  const float* k_zero = nullptr;
  bool k_token_axis = false;
  const uint8_t* v_packed = nullptr;
  const float* v_scale = nullptr;
  const float* v_zero = nullptr;
  bool v_token_axis = false;
  int bits = 1;  // storage bits 1, 2, 4, 8
  int64_t length = 0;
  int row_bytes = 0;
  int splits = 1, split_offset = 0;
  bool calibrate = false;
  float calib_a = 0, calib_b = 0;
  float* minmax = nullptr;  // [B, Hq, splits, 2] workspace when calibrate and splits > 1
  // 1-bit values as token-major words ([B, H, ceil(N/32), D] uint32: bit i of word w of
  // channel d is the code of token 32 w + i), or null. With them (and head_dim a multiple
  // of 32), both matmuls run on the binary tensor cores.
  const uint32_t* v_token_words = nullptr;
  // [B, Hq, D] of q_type, or null. Where packed_segment_writes_output holds, the GQA kernel,
  // launched after the other segments' kernels, merges their split slots with its own and
  // writes the step's output: no merge launch (its partial never goes through memory).
  void* out = nullptr;
};

// The dynamic shared memory the packed-segment kernel needs for `chunk` tokens per split.
size_t packed_segment_shared_bytes(const DecodeShape& s, int bits, int row_bytes, int64_t chunk);
size_t full_segment_shared_bytes(const DecodeShape& s, int64_t chunk);
cudaError_t launch_full_segment(const DecodeShape& s, const FullSegmentArgs& a, cudaStream_t stream);
// The tensor-core (flash-decoding) kernel for 16-bit segments: whether it takes these (fp16 or
// bf16 alike, head_dim 32/64/80/96/128, 16-byte aligned rows, at most kMaxFullSegments), their
// 16-token tiles, how many of its blocks fit an SM, and one launch over all of them that
// writes split slots [split_offset, split_offset + splits). CALIBQ_FULL_KERNEL=loop turns it off.
bool full_segments_flash(const DecodeShape& s, const FullSegmentArgs* a, int count);
int full_segments_flash_tiles(const FullSegmentArgs* a, int count);
int full_segments_flash_blocks_per_sm(int head_dim);
cudaError_t launch_full_segments_flash(const DecodeShape& s, const FullSegmentArgs* a, int count, int splits,
                                       int split_offset, cudaStream_t stream);
cudaError_t launch_packed_segment(const DecodeShape& s, const PackedSegmentArgs& a, cudaStream_t stream);
// Whether launch_packed_segment can write the output itself (a.out): the GQA 1-bit kernel
// holding the segment in one split, with s.total_splits (set) few enough for its scratch.
bool packed_segment_writes_output(const DecodeShape& s, const PackedSegmentArgs& a);
// packed [rows, N, D/8] 1-bit codes -> words [rows, ceil(N/32), D] (bit i of word (w, d) = code of token 32w + i, channel d).
cudaError_t launch_token_words(const uint8_t* packed, uint32_t* words, int64_t rows, int64_t n, int d, cudaStream_t stream);
// out: [B, Hq, D] of q_type.
cudaError_t launch_merge(const DecodeShape& s, void* out, cudaStream_t stream);

}  // namespace calibq::kernels::cuda
