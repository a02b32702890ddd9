// Raw-pointer launcher of the RMSNorm kernel (rms_norm.h). No LibTorch here, so that nvcc
// compiles rms_norm_cuda.cu where LibTorch has no CUDA (CI).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda_types.h"

namespace calibq::kernels::cuda {

// x, out: rows x n contiguous; w: n. With delta (rows x n), x + delta is normalized and
// written to sum (rows x n); without, both are null.
cudaError_t launch_rms_norm(const void* x, const void* delta, const void* w, void* out, void* sum, int64_t rows, int64_t n,
                            float eps, KVType type, cudaStream_t stream);

}  // namespace calibq::kernels::cuda
