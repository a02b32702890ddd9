// fp16 / bf16 / fp32: no quantization, the segment stored in that dtype.
#include "core/quant/registry.h"
#include "core/util/error.h"

namespace calibq {
namespace {

class DenseTensor : public QuantizedTensor {
 public:
  DenseTensor(const at::Tensor& x, at::ScalarType storage) : stored_(x.to(storage)), dtype_(x.scalar_type()) {}
  at::Tensor dequantize() const override { return stored_.to(dtype_); }
  int64_t nbytes() const override { return static_cast<int64_t>(stored_.nbytes()); }
  std::unique_ptr<QuantizedTensor> concat_batch(const std::vector<const QuantizedTensor*>& more) const override {
    std::vector<at::Tensor> parts{stored_};
    for (const QuantizedTensor* t : more) {
      const auto* d = dynamic_cast<const DenseTensor*>(t);
      if (!d || d->stored_.scalar_type() != stored_.scalar_type()) fail("KV cache: micro-batches to join differ in format");
      parts.push_back(d->stored_);
    }
    auto out = std::make_unique<DenseTensor>(*this);
    out->stored_ = at::cat(parts, 0);
    return out;
  }

 private:
  at::Tensor stored_;
  at::ScalarType dtype_;
};

class CastQuantizer : public KVQuantizer {
 public:
  CastQuantizer(std::string name, KVRole role, QuantizerOptions options, at::ScalarType storage)
      : KVQuantizer(std::move(name), role, std::move(options)), storage_(storage) {}
  std::unique_ptr<QuantizedTensor> quantize(const at::Tensor& x, const QuantContext&) const override {
    check_kv_tensor(x, name());
    return std::make_unique<DenseTensor>(x, storage_);
  }
  double nominal_bits() const override { return static_cast<double>(c10::elementSize(storage_) * 8); }

 private:
  at::ScalarType storage_;
};

QuantizerEntry cast_entry(const std::string& name, at::ScalarType storage, const std::string& summary) {
  return {name, summary, {}, [name, storage](const QuantizerOptions& o, KVRole role) {
            return std::make_shared<CastQuantizer>(name, role, o, storage);
          }};
}

}  // namespace

CALIBQ_REGISTER_QUANTIZER(cast_entry("fp16", at::kHalf, "no quantization: the segment kept in float16 (the baseline)"));
CALIBQ_REGISTER_QUANTIZER(cast_entry("bf16", at::kBFloat16, "no quantization: the segment kept in bfloat16"));
CALIBQ_REGISTER_QUANTIZER(cast_entry("fp32", at::kFloat, "no quantization: the segment kept in float32"));

}  // namespace calibq
