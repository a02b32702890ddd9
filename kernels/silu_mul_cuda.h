// Raw-pointer launcher of the SwiGLU gate kernel (silu_mul.h). No LibTorch here, so that nvcc
// compiles silu_mul_cuda.cu where LibTorch has no CUDA (CI).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda_types.h"

namespace calibq::kernels::cuda {

// gate_up: rows x 2 inter contiguous; out: rows x inter.
cudaError_t launch_silu_mul(const void* gate_up, void* out, int64_t rows, int64_t inter, KVType type, cudaStream_t stream);

}  // namespace calibq::kernels::cuda
