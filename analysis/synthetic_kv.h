// A synthetic prefill K/V with the structure the paper describes: keys with a few
// outlier channels (large magnitude and offset), values more uniform across channels,
// laid out as [system | visual | text] with GQA queries. Deterministic from a seed; for
// the error tables and benchmarks where no model is loaded.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "analysis/quant_error.h"

namespace calibq {

struct SyntheticKVShape {
  int64_t batch = 1;
  int64_t kv_heads = 8;
  int64_t query_heads = 32;
  int64_t head_dim = 128;
  int64_t system = 41;   // the authors' InternVL2.5 system prompt
  int64_t visual = 576;  // LLaVA-1.5's 24 x 24 patches
  int64_t text = 30;
  int64_t queries = 8;
  std::vector<int64_t> outlier_channels{7, 33, 90, 121};
  double outlier_scale = 12.0;
  double outlier_offset = 4.0;
};

QuantErrorInput make_synthetic_kv(const SyntheticKVShape& shape, uint64_t seed);

}  // namespace calibq
