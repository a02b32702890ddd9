// kivi: KIVI (Liu et al., 2024) as a baseline: keys per channel in groups of group_size
// tokens, values per token in groups of group_size channels, and the most recent
// `residual` tokens of the segment kept in full precision.
#include "core/quant/range_quant.h"
#include "core/quant/registry.h"

namespace calibq {
namespace {

class KiviTensor : public QuantizedTensor {
 public:
  KiviTensor(std::unique_ptr<UniformQuantized> quantized, at::Tensor residual)
      : quantized_(std::move(quantized)), residual_(std::move(residual)) {}
  at::Tensor dequantize() const override {
    return quantized_ ? at::cat({quantized_->dequantize(), residual_}, 2) : residual_;
  }
  int64_t nbytes() const override {
    return (quantized_ ? quantized_->nbytes() : 0) + static_cast<int64_t>(residual_.nbytes());
  }

 private:
  std::unique_ptr<UniformQuantized> quantized_;  // the older tokens; null when all are recent
  at::Tensor residual_;                          // the recent tokens, as given
};

class KiviQuantizer : public KVQuantizer {
 public:
  KiviQuantizer(KVRole role, QuantizerOptions options)
      : KVQuantizer("kivi", role, options),
        config_(range_config(options, role, role == KVRole::Key ? Granularity::Channel : Granularity::Token)),
        residual_(options.integer("residual")) {
    config_.group_size = options.integer("group_size");
  }
  std::unique_ptr<QuantizedTensor> quantize(const at::Tensor& x, const QuantContext&) const override {
    check_kv_tensor(x, label());
    const int64_t n = x.size(2);
    int64_t n_quant = std::max<int64_t>(0, n - residual_);
    // Keys are grouped along tokens: only whole groups are quantized, the rest waits in
    // the full-precision window (as KIVI does).
    if (role() == KVRole::Key) n_quant -= n_quant % config_.group_size;
    std::unique_ptr<UniformQuantized> q;
    if (n_quant > 0) q = std::make_unique<UniformQuantized>(x.narrow(2, 0, n_quant), config_, false);
    return std::make_unique<KiviTensor>(std::move(q), x.narrow(2, n_quant, n - n_quant).clone());
  }
  double nominal_bits() const override { return config_.bits; }

 private:
  RangeConfig config_;
  int64_t residual_;
};

}  // namespace

CALIBQ_REGISTER_QUANTIZER(QuantizerEntry{
    "kivi",
    "KIVI baseline: keys per channel in groups of group_size tokens, values per token in groups of "
    "group_size channels, the last `residual` tokens in full precision",
    {bits_option("2"), clip_option("1"),
     {"group_size", OptionType::Int, "32", "tokens per key group / channels per value group", {}, 1, 1 << 20},
     {"residual", OptionType::Int, "128", "recent tokens kept in full precision", {}, 0, 1 << 30}},
    [](const QuantizerOptions& o, KVRole role) { return std::make_shared<KiviQuantizer>(role, o); }});

}  // namespace calibq
