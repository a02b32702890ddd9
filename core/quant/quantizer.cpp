#include "core/quant/quantizer.h"

#include <fmt/format.h>

#include "core/quant/calibration.h"
#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {

const char* kv_role_name(KVRole role) {
  switch (role) {
    case KVRole::Key: return "key";
    case KVRole::Value: return "value";
  }
  return "?";
}

at::Tensor QuantizedTensor::scores(const at::Tensor& q) const {
  return at::matmul(q, dequantize().to(at::kFloat).transpose(-1, -2));
}

at::Tensor QuantizedTensor::weighted_sum(const at::Tensor& p) const {
  return at::matmul(p, dequantize().to(at::kFloat));
}

at::Tensor KVQuantizer::calibrate_scores(const at::Tensor& scores) const {
  const ScoreCalibration c = score_calibration();
  return c.on ? calibrate_score_range(scores, c.a, c.b) : scores;
}

nlohmann::json KVQuantizer::describe() const {
  nlohmann::json out = options_.to_json();
  out["method"] = name_;
  return out;
}

std::string KVQuantizer::label() const {
  std::string opts;
  for (const auto& [k, v] : options_.values())
    if (k == "bits" || options_.given(k)) opts += fmt::format("{}{}={}", opts.empty() ? "" : ",", k, v);
  return opts.empty() ? name_ : fmt::format("{}:{}", name_, opts);
}

void check_kv_tensor(const at::Tensor& x, const std::string& who) {
  if (!x.defined()) fail("{}: the tensor is undefined", who);
  if (x.dim() != 4)
    fail("{}: expected a [batch, kv_heads, tokens, head_dim] tensor, got {} dimensions {}", who, x.dim(),
         shape_str(x.sizes()));
  if (!at::isFloatingType(x.scalar_type()))
    fail("{}: expected a floating-point tensor, got {}", who, c10::toString(x.scalar_type()));
}

at::Tensor fold_query_heads(const at::Tensor& q, int64_t kv_heads) {
  const int64_t b = q.size(0), hq = q.size(1), t = q.size(2), d = q.size(3);
  if (kv_heads <= 0 || hq % kv_heads != 0)
    fail("attention: {} query heads is not a multiple of {} kv heads", hq, kv_heads);
  return q.reshape({b, kv_heads, (hq / kv_heads) * t, d});
}

at::Tensor unfold_query_heads(const at::Tensor& x, int64_t query_heads, int64_t tokens) {
  return x.reshape({x.size(0), query_heads, tokens, x.size(-1)});
}

std::unique_ptr<QuantizedTensor> QuantizedTensor::concat_batch(const std::vector<const QuantizedTensor*>&) const {
  fail("KV cache: this quantized format cannot join prefill micro-batches (those that can: fp16, bf16, fp32, uniform, "
       "group, post_scaled, calibquant); prefill the whole batch at once");
}

}  // namespace calibq
