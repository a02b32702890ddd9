// The error a KV quantizer pair causes, measured through the real KV cache: error of the
// quantized keys and values, of the pre-softmax scores (after calibration), of the
// attention output, and the KL divergence of the attention distributions, each against
// the same cache in full precision.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "analysis/table.h"
#include "core/kv/kv_cache.h"

namespace calibq {

struct QuantErrorInput {
  at::Tensor k, v;        // [B, H, N, D]
  at::Tensor q;           // [B, Hq, T, D]
  int64_t system_len = 0;
  int64_t visual_len = 0;  // N - system - visual tokens are text
  double scale = 0.0;      // 0: 1/sqrt(D)
};

struct QuantErrorResult {
  std::string key_method, value_method;  // labels with options
  double key_mse = 0, key_rel = 0;        // over the quantized segments
  double value_mse = 0, value_rel = 0;
  double scores_rel = 0;   // relative Frobenius error of the finite pre-softmax scores
  double output_rel = 0;   // relative Frobenius error of the attention output
  double kl = 0;           // mean over (batch, head, query) of KL(p_full || p_quantized)
  int64_t quantized_bytes = 0;   // bytes of the quantized segments (K and V)
  int64_t quantized_fp16_bytes = 0;  // the same segments in fp16
  int64_t cache_bytes = 0;  // the whole cache
};

// visual_importance for token_drop is taken from the full-precision attention of `q`.
QuantErrorResult quant_error(const QuantErrorInput& input, const KVCacheConfig& config);

// The accumulated attention each visual token receives from queries q in full precision
// ([B, H, N_visual]: summed over queries and over the query heads of each kv head).
at::Tensor visual_attention_importance(const QuantErrorInput& input);

// The mean of per-layer (or per-sample) results of one quantizer pair: errors averaged,
// bytes summed (the whole model's cache).
QuantErrorResult mean_quant_error(const std::vector<QuantErrorResult>& rows);

Table quant_error_table(const std::vector<QuantErrorResult>& rows);

}  // namespace calibq
