// Range-based quantization: the specification every range quantizer (uniform, group,
// quantile, post_scaled, calibquant, kivi) and the CUDA kernels follow.
//
// For b bits, L = 2^b - 1 levels above zero; for a group with range [lo, hi]:
//   s = (hi - lo) / L,  z = -lo / s (a float, not rounded),
//   c = round_half_even(clamp(x / s + z, 0, L)),  x̂ = s (c - z).
// A group with hi == lo (s = 0) gets s = 1, c = 0, so that x̂ = lo exactly (the authors'
// code divides by zero there). Clipping multiplies lo and hi by a factor (about zero, not
// about the midpoint), as the authors' code does.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "core/quant/options.h"
#include "core/quant/quantizer.h"

namespace calibq {

// Over which elements one (scale, zero-point) is computed.
enum class Granularity {
  Tensor,   // all elements of one sequence (each batch entry separately)
  Channel,  // the tokens of one (batch, head, channel); with group_size g, g tokens at a time
  Token,    // the channels of one (batch, head, token); with group_size g, g channels at a time
};
const char* granularity_name(Granularity g);
Granularity parse_granularity(const std::string& text);

enum class RangeSource { MinMax, Quantile };

struct RangeConfig {
  int bits = 1;
  Granularity granularity = Granularity::Tensor;
  int64_t group_size = 0;  // 0: the whole axis
  double clip = 1.0;
  RangeSource source = RangeSource::MinMax;
  double quantile = 0.0;  // q: the range is [quantile(q), quantile(1 - q)]
};

// Per-group statistics in compact form: for x [B, H, N, D],
//   Tensor [B,1,1,1]; Channel [B,H,ceil(N/g),D] (g = N when 0); Token [B,H,N,ceil(D/g)].
struct GroupLayout {
  Granularity granularity;
  int64_t group_size;  // resolved: never 0
  int64_t tokens, channels;
  // Compact [.., groups, ..] -> full [B, H, N, D] (by repetition).
  at::Tensor expand(const at::Tensor& compact) const;
};
GroupLayout group_layout(const at::Tensor& x, Granularity g, int64_t group_size);

// Reduces every group of x (float32) with `reduce(t, dim)` (keepdim) into compact form.
at::Tensor reduce_groups(const at::Tensor& x, const GroupLayout& layout,
                         const std::function<at::Tensor(const at::Tensor&, int64_t)>& reduce);
// Linear-interpolated quantile along `dim` (keepdim), as torch.quantile's default, but
// without its 2^24-element limit.
at::Tensor quantile_along(const at::Tensor& x, double q, int64_t dim);

struct UniformParams {
  at::Tensor scale;  // compact, float32
  at::Tensor zero;   // compact, float32
};
// Scale and zero-point from compact ranges.
UniformParams uniform_params(const at::Tensor& lo, const at::Tensor& hi, int bits);
// Codes (uint8, full shape) of x (float32) for full-shape scale/zero.
at::Tensor uniform_codes(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero, int bits);

// The clipping factor of option `clip` ("auto": the authors' 0.5 for keys and 0.3 for
// values at 1 bit, 1.0 otherwise).
double resolve_clip(const QuantizerOptions& options, KVRole role, int bits);

// A uniformly quantized tensor: bit-packed codes and compact scale/zero.
class UniformQuantized : public QuantizedTensor {
 public:
  UniformQuantized(const at::Tensor& x, const RangeConfig& config, bool code_domain);
  at::Tensor dequantize() const override;
  int64_t nbytes() const override;
  at::Tensor codes() const override;
  at::Tensor scores(const at::Tensor& q) const override;
  at::Tensor weighted_sum(const at::Tensor& p) const override;
  bool code_domain() const override { return code_domain_; }
  std::optional<kernels::PackedKV> packed_kv() const override;
  std::unique_ptr<QuantizedTensor> concat_batch(const std::vector<const QuantizedTensor*>& more) const override;

  const at::Tensor& packed() const { return packed_; }
  const UniformParams& params() const { return params_; }
  const GroupLayout& layout() const { return layout_; }

 private:
  UniformQuantized() = default;
  at::Tensor codes_float() const;
  int bits_;
  bool code_domain_;
  at::ScalarType dtype_;
  std::vector<int64_t> shape_;
  GroupLayout layout_;
  at::Tensor packed_;
  UniformParams params_;
};

// Levels at quantiles of each group (a non-uniform codebook): 2^b levels at the
// probabilities (i + 1/2) / 2^b, each element coded to its nearest level.
class CodebookQuantized : public QuantizedTensor {
 public:
  CodebookQuantized(const at::Tensor& x, int bits, Granularity granularity, int64_t group_size);
  at::Tensor dequantize() const override;
  int64_t nbytes() const override;
  at::Tensor codes() const override;

 private:
  int bits_;
  at::ScalarType dtype_;
  std::vector<int64_t> shape_;
  GroupLayout layout_;
  at::Tensor packed_;
  at::Tensor levels_;  // compact groups x 2^b, float32
};

// A quantizer that is one RangeConfig and a storage format: uniform, group, quantile and
// post_scaled are each this class with different options.
class RangeQuantizer : public KVQuantizer {
 public:
  enum class Format { Uniform, PostScaled, Codebook };
  RangeQuantizer(std::string name, KVRole role, QuantizerOptions options, RangeConfig config, Format format);
  std::unique_ptr<QuantizedTensor> quantize(const at::Tensor& x, const QuantContext& context) const override;
  double nominal_bits() const override { return config_.bits; }
  const RangeConfig& config() const { return config_; }

 private:
  RangeConfig config_;
  Format format_;
};

// bits and clip (resolved for the role) of a range quantizer's options.
RangeConfig range_config(const QuantizerOptions& options, KVRole role, Granularity granularity);

// The option declarations shared by range quantizers.
OptionSpec bits_option(const std::string& default_bits);
OptionSpec clip_option(const std::string& default_clip);
OptionSpec axis_option(const std::string& default_axis, bool with_tensor);
OptionSpec group_size_option();

}  // namespace calibq
