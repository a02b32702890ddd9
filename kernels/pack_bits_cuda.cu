#include "kernels/pack_bits_cuda.h"

namespace calibq::kernels::cuda {

namespace {

// One thread per output byte: it gathers its 8/bits codes (adjacent threads read
// adjacent codes, so loads coalesce).
__global__ void pack_kernel(const uint8_t* __restrict__ codes, uint8_t* __restrict__ packed,
                            int64_t rows, int64_t n, int64_t m, int bits) {
  const int per_byte = 8 / bits;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < rows * m;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / m, b = idx % m;
    const uint8_t* src = codes + r * n;
    unsigned byte = 0;
    for (int j = 0; j < per_byte; ++j) {
      const int64_t i = b * per_byte + j;
      if (i < n) byte |= static_cast<unsigned>(src[i]) << (j * bits);
    }
    packed[idx] = static_cast<uint8_t>(byte);
  }
}

__global__ void unpack_kernel(const uint8_t* __restrict__ packed, uint8_t* __restrict__ codes,
                              int64_t rows, int64_t n, int64_t m, int bits) {
  const int per_byte = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < rows * n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / n, i = idx % n;
    codes[idx] = static_cast<uint8_t>((packed[r * m + i / per_byte] >> ((i % per_byte) * bits)) & mask);
  }
}

int grid_for(int64_t work, int threads) {
  int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 16 ? (blocks > 0 ? blocks : 1) : 65535 * 16);
}

}  // namespace

cudaError_t launch_pack_codes(const uint8_t* codes, uint8_t* packed, int64_t rows, int64_t n,
                              int64_t m, int bits, cudaStream_t stream) {
  if (rows * m == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  pack_kernel<<<grid_for(rows * m, kThreads), kThreads, 0, stream>>>(codes, packed, rows, n, m, bits);
  return cudaGetLastError();
}

cudaError_t launch_unpack_codes(const uint8_t* packed, uint8_t* codes, int64_t rows, int64_t n,
                                int64_t m, int bits, cudaStream_t stream) {
  if (rows * n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  unpack_kernel<<<grid_for(rows * n, kThreads), kThreads, 0, stream>>>(packed, codes, rows, n, m, bits);
  return cudaGetLastError();
}

}  // namespace calibq::kernels::cuda
