// token_drop: keep a fraction of the segment's tokens (by the attention they received in
// prefill, or evenly spaced) in full precision and drop the rest (paper v1's comparison).
// Keys and values must drop the same tokens: the KV cache checks that both use it alike.
#include <cmath>

#include "core/quant/registry.h"
#include "core/util/error.h"
#include "core/util/shape.h"

namespace calibq {
namespace {

class TokenDropTensor : public QuantizedTensor {
 public:
  TokenDropTensor(at::Tensor kept, at::Tensor index, int64_t tokens)
      : kept_(std::move(kept)), index_(std::move(index)), tokens_(tokens) {}
  at::Tensor dequantize() const override {
    auto sizes = kept_.sizes().vec();
    sizes[2] = tokens_;
    at::Tensor out = at::zeros(sizes, kept_.options());
    return out.scatter(2, index_.unsqueeze(-1).expand_as(kept_), kept_);
  }
  // Kept tokens plus their indices (int32 would do: counted as 4 bytes each).
  int64_t nbytes() const override { return static_cast<int64_t>(kept_.nbytes()) + index_.numel() * 4; }
  at::Tensor scores(const at::Tensor& q) const override {
    at::Tensor kept_scores = at::matmul(q, kept_.to(at::kFloat).transpose(-1, -2));  // [B,H,M,K]
    at::Tensor full = at::full({q.size(0), q.size(1), q.size(2), tokens_},
                               -std::numeric_limits<float>::infinity(), q.options());
    return full.scatter(3, index_.unsqueeze(2).expand_as(kept_scores), kept_scores);
  }
  at::Tensor weighted_sum(const at::Tensor& p) const override {
    at::Tensor idx = index_.unsqueeze(2).expand({p.size(0), p.size(1), p.size(2), index_.size(-1)});
    return at::matmul(p.gather(3, idx), kept_.to(at::kFloat));
  }

 private:
  at::Tensor kept_;   // [B, H, K, D]
  at::Tensor index_;  // [B, H, K] int64, ascending
  int64_t tokens_;
};

class TokenDropQuantizer : public KVQuantizer {
 public:
  TokenDropQuantizer(KVRole role, QuantizerOptions options)
      : KVQuantizer("token_drop", role, options), keep_(options.number("keep")),
        by_attention_(options.is("select", "attention")) {}
  std::unique_ptr<QuantizedTensor> quantize(const at::Tensor& x, const QuantContext& context) const override {
    check_kv_tensor(x, label());
    const int64_t b = x.size(0), h = x.size(1), n = x.size(2);
    const int64_t k = n == 0 ? 0 : std::max<int64_t>(1, std::llround(keep_ * static_cast<double>(n)));
    at::Tensor index;
    if (by_attention_) {
      const at::Tensor& imp = context.importance;
      if (!imp.defined())
        fail("{}: select=attention needs the attention each token received in prefill; none was given "
             "(use select=uniform where no prefill attention is available)", label());
      if (imp.dim() != 3 || imp.size(0) != b || imp.size(1) != h || imp.size(2) != n)
        fail("{}: importance must be [{}, {}, {}], got {}", label(), b, h, n, shape_str(imp.sizes()));
      index = std::get<0>(std::get<1>(imp.to(at::kFloat).topk(k, -1)).sort(-1));
    } else {
      std::vector<int64_t> even(k);
      for (int64_t i = 0; i < k; ++i) even[i] = static_cast<int64_t>(std::floor((i + 0.5) * n / k));
      index = at::tensor(even, at::kLong).view({1, 1, k}).expand({b, h, k}).contiguous();
    }
    index = index.to(x.device());
    at::Tensor kept = x.gather(2, index.unsqueeze(-1).expand({b, h, k, x.size(3)}));
    return std::make_unique<TokenDropTensor>(kept, index, n);
  }
  double nominal_bits() const override { return 16.0 * keep_; }
  bool needs_importance() const override { return by_attention_; }

 private:
  double keep_;
  bool by_attention_;
};

}  // namespace

CALIBQ_REGISTER_QUANTIZER(QuantizerEntry{
    "token_drop",
    "token dropping: keep a fraction of the segment's tokens (by prefill attention, or evenly spaced), "
    "drop the rest; keys and values must both use it with the same options",
    {{"keep", OptionType::Float, "0.5", "fraction of tokens kept", {}, 0.0, 1.0},
     {"select", OptionType::Choice, "attention", "rank tokens by prefill attention, or keep evenly spaced ones",
      {"attention", "uniform"}}},
    [](const QuantizerOptions& o, KVRole role) { return std::make_shared<TokenDropQuantizer>(role, o); }});

}  // namespace calibq
