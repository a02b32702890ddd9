#include "analysis/synthetic_kv.h"

#include "core/util/error.h"

namespace calibq {

QuantErrorInput make_synthetic_kv(const SyntheticKVShape& s, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const int64_t n = s.system + s.visual + s.text;
  QuantErrorInput in;
  in.k = at::randn({s.batch, s.kv_heads, n, s.head_dim}, gen, at::kFloat);
  for (int64_t c : s.outlier_channels) {
    if (c < 0 || c >= s.head_dim) fail("synthetic KV: outlier channel {} is outside head_dim {}", c, s.head_dim);
    in.k.select(3, c).mul_(s.outlier_scale).add_(s.outlier_offset);
  }
  in.v = at::randn({s.batch, s.kv_heads, n, s.head_dim}, gen, at::kFloat) * 0.5;
  // Queries that line up with the keys' structure (as trained queries do), so that the
  // outlier channels matter for the scores.
  in.q = at::randn({s.batch, s.query_heads, s.queries, s.head_dim}, gen, at::kFloat);
  for (int64_t c : s.outlier_channels) in.q.select(3, c).mul_(2.0);
  // A model's cache holds fp16 (or bf16): so does this one, so that byte counts are real.
  in.k = in.k.to(at::kHalf);
  in.v = in.v.to(at::kHalf);
  in.q = in.q.to(at::kHalf);
  in.system_len = s.system;
  in.visual_len = s.visual;
  return in;
}

}  // namespace calibq
