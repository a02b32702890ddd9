// Element types the raw-pointer CUDA launchers take (no LibTorch here, so that nvcc compiles
// the .cu files where LibTorch has no CUDA).
#pragma once

namespace calibq::kernels::cuda {

// float32, float16 or bfloat16 elements (K/V, queries, activations).
enum class KVType { F32, F16, BF16 };

}  // namespace calibq::kernels::cuda
