// The choice of the next token from logits: greedy, or temperature + top-p sampling with
// calibq's own seeded draw (mt19937_64 and an inverse CDF in double), so that a seed gives
// the same tokens on CPU and CUDA and on every LibTorch version.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <random>
#include <vector>

namespace calibq {

struct SamplingSettings {
  double temperature = 0.0;  // 0: greedy (argmax; the lowest id on ties, as torch.argmax)
  double top_p = 1.0;        // the smallest set of most likely tokens whose mass reaches top_p
};

// logits: [B, V] (any dtype, any device). One token per row.
std::vector<int64_t> next_tokens(const at::Tensor& logits, const SamplingSettings& s, std::mt19937_64& rng);

}  // namespace calibq
