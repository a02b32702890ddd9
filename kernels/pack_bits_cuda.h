// Raw-pointer launchers of the bit-packing kernels. No LibTorch here, so that nvcc
// compiles pack_bits_cuda.cu on machines whose LibTorch has no CUDA (CI).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace calibq::kernels::cuda {

// codes: rows x n; packed: rows x m (m = packed_bytes(n, bits)); bits in {1, 2, 4, 8}.
cudaError_t launch_pack_codes(const uint8_t* codes, uint8_t* packed, int64_t rows, int64_t n,
                              int64_t m, int bits, cudaStream_t stream);
cudaError_t launch_unpack_codes(const uint8_t* packed, uint8_t* codes, int64_t rows, int64_t n,
                                int64_t m, int bits, cudaStream_t stream);

}  // namespace calibq::kernels::cuda
