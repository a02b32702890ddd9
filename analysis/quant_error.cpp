#include "analysis/quant_error.h"

#include <cmath>

#include "core/util/error.h"

namespace calibq {

namespace {

double rel_fro(const at::Tensor& approx, const at::Tensor& exact) {
  double denom = exact.norm().item<double>();
  double num = (approx - exact).norm().item<double>();
  return denom > 0 ? num / denom : num;
}

// Positions of the cache covered by quantized segments.
at::Tensor quantized_positions(const QuantErrorInput& in, const SegmentSet& set) {
  const int64_t n = in.k.size(2);
  at::Tensor mask = at::zeros({n}, at::kBool);
  const int64_t text = n - in.system_len - in.visual_len;
  if (set.contains(Segment::System)) mask.narrow(0, 0, in.system_len).fill_(true);
  if (set.contains(Segment::Visual)) mask.narrow(0, in.system_len, in.visual_len).fill_(true);
  if (set.contains(Segment::Text)) mask.narrow(0, n - text, text).fill_(true);
  return mask.nonzero().flatten();
}

double scale_of(const QuantErrorInput& in) {
  return in.scale > 0 ? in.scale : 1.0 / std::sqrt(static_cast<double>(in.k.size(3)));
}

}  // namespace

at::Tensor visual_attention_importance(const QuantErrorInput& in) {
  LayerKVCache full(KVCacheConfig{nullptr, nullptr, SegmentSet{}});
  full.prefill(in.k, in.v, in.system_len, in.visual_len);
  at::Tensor p = at::softmax(full.scores(in.q, scale_of(in)), -1).narrow(-1, in.system_len, in.visual_len);
  const int64_t b = in.k.size(0), h = in.k.size(1);
  return p.sum(2).reshape({b, h, -1, in.visual_len}).sum(2);
}

QuantErrorResult quant_error(const QuantErrorInput& in, const KVCacheConfig& config) {
  const double scale = scale_of(in);
  LayerKVCache full(KVCacheConfig{nullptr, nullptr, config.quantized});
  full.prefill(in.k, in.v, in.system_len, in.visual_len);
  LayerKVCache quant(config);
  at::Tensor importance;
  if ((config.key && config.key->name() == "token_drop") || (config.value && config.value->name() == "token_drop"))
    importance = visual_attention_importance(in);
  quant.prefill(in.k, in.v, in.system_len, in.visual_len, importance);

  QuantErrorResult r;
  r.key_method = config.key ? config.key->label() : "none";
  r.value_method = config.value ? config.value->label() : "none";
  at::Tensor pos = quantized_positions(in, config.quantized);
  at::Tensor k = in.k.to(at::kFloat).index_select(2, pos), v = in.v.to(at::kFloat).index_select(2, pos);
  at::Tensor kq = quant.keys().to(at::kFloat).index_select(2, pos), vq = quant.values().to(at::kFloat).index_select(2, pos);
  r.key_mse = (kq - k).pow(2).mean().item<double>();
  r.key_rel = rel_fro(kq, k);
  r.value_mse = (vq - v).pow(2).mean().item<double>();
  r.value_rel = rel_fro(vq, v);

  at::Tensor s_full = full.scores(in.q, scale), s_quant = quant.scores(in.q, scale);
  at::Tensor finite = at::isfinite(s_quant);
  r.scores_rel = rel_fro(s_quant.masked_select(finite), s_full.masked_select(finite));
  r.output_rel = rel_fro(quant.attend(in.q, scale), full.attend(in.q, scale));
  at::Tensor lp_full = at::log_softmax(s_full, -1), lp_quant = at::log_softmax(s_quant, -1);
  // 0 * log(0) terms are 0; a token the quantized cache drops (p = 0) makes KL infinite.
  at::Tensor terms = lp_full.exp() * (lp_full - lp_quant);
  r.kl = terms.sum(-1).mean().item<double>();

  SegmentBytes bytes = quant.bytes();
  r.cache_bytes = bytes.total();
  const int64_t per_token_fp16 = 2 * 2 * in.k.size(0) * in.k.size(1) * in.k.size(3);
  r.quantized_fp16_bytes = per_token_fp16 * pos.numel();
  r.quantized_bytes = (config.quantized.contains(Segment::System) ? bytes.system : 0) +
                      (config.quantized.contains(Segment::Visual) ? bytes.visual : 0) +
                      (config.quantized.contains(Segment::Text) ? bytes.text : 0);
  return r;
}

QuantErrorResult mean_quant_error(const std::vector<QuantErrorResult>& rows) {
  QuantErrorResult sum;
  if (rows.empty()) return sum;
  const double n = static_cast<double>(rows.size());
  sum.key_method = rows.front().key_method;
  sum.value_method = rows.front().value_method;
  for (const auto& r : rows) {
    sum.key_mse += r.key_mse / n;
    sum.key_rel += r.key_rel / n;
    sum.value_mse += r.value_mse / n;
    sum.value_rel += r.value_rel / n;
    sum.scores_rel += r.scores_rel / n;
    sum.output_rel += r.output_rel / n;
    sum.kl += r.kl / n;
    sum.quantized_bytes += r.quantized_bytes;
    sum.quantized_fp16_bytes += r.quantized_fp16_bytes;
    sum.cache_bytes += r.cache_bytes;
  }
  return sum;
}

Table quant_error_table(const std::vector<QuantErrorResult>& rows) {
  Table t({"keys", "values", "K rel err", "V rel err", "K MSE", "V MSE", "score rel err", "output rel err",
           "KL", "bytes", "vs fp16"});
  for (const auto& r : rows) {
    double ratio = r.quantized_fp16_bytes ? static_cast<double>(r.quantized_bytes) / r.quantized_fp16_bytes : 0;
    t.add_row({r.key_method, r.value_method, cell(r.key_rel), cell(r.value_rel), cell(r.key_mse, 5),
               cell(r.value_mse, 5), cell(r.scores_rel), cell(r.output_rel), cell(r.kl, 5),
               std::to_string(r.quantized_bytes), cell(ratio, 4)});
  }
  return t;
}

}  // namespace calibq
