// Raw-pointer launchers of quantize-and-pack (no LibTorch here; see quantize_pack.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace calibq::kernels::cuda {

// x: [rows, N, D] float32 (rows = B * H). Channel axis: scale/zero/flat [rows, D]; token
// axis: [rows, N] (flat: a workspace, 1 where the group's clipped range is empty).
// packed: [rows, N, ceil(D * storage_bits / 8)].
cudaError_t launch_quantize_pack(const float* x, int64_t rows, int64_t n, int d, int bits, int storage_bits,
                                 bool token_axis, float clip, float* scale, float* zero, uint8_t* flat,
                                 uint8_t* packed, cudaStream_t stream);

}  // namespace calibq::kernels::cuda
