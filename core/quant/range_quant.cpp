#include "core/quant/range_quant.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/util/error.h"
#include "kernels/pack_bits.h"
#include "kernels/quantize_pack.h"

namespace calibq {

const char* granularity_name(Granularity g) {
  switch (g) {
    case Granularity::Tensor: return "tensor";
    case Granularity::Channel: return "channel";
    case Granularity::Token: return "token";
  }
  return "?";
}

Granularity parse_granularity(const std::string& text) {
  if (text == "tensor") return Granularity::Tensor;
  if (text == "channel") return Granularity::Channel;
  if (text == "token") return Granularity::Token;
  fail("axis '{}' is not one of tensor, channel, token", text);
}

GroupLayout group_layout(const at::Tensor& x, Granularity g, int64_t group_size) {
  GroupLayout l;
  l.granularity = g;
  l.tokens = x.size(2);
  l.channels = x.size(3);
  switch (g) {
    case Granularity::Tensor: l.group_size = 0; break;
    case Granularity::Channel: l.group_size = group_size > 0 ? group_size : std::max<int64_t>(l.tokens, 1); break;
    case Granularity::Token: l.group_size = group_size > 0 ? group_size : std::max<int64_t>(l.channels, 1); break;
  }
  return l;
}

at::Tensor GroupLayout::expand(const at::Tensor& compact) const {
  switch (granularity) {
    case Granularity::Tensor: return compact;
    case Granularity::Channel:
      if (compact.size(2) == 1) return compact;
      return compact.repeat_interleave(group_size, 2).narrow(2, 0, tokens);
    case Granularity::Token:
      if (compact.size(3) == 1) return compact;
      return compact.repeat_interleave(group_size, 3).narrow(3, 0, channels);
  }
  return compact;
}

at::Tensor reduce_groups(const at::Tensor& x, const GroupLayout& layout,
                         const std::function<at::Tensor(const at::Tensor&, int64_t)>& reduce) {
  if (layout.granularity == Granularity::Tensor) {
    at::Tensor flat = x.reshape({x.size(0), -1});
    return reduce(flat, 1).reshape({x.size(0), 1, 1, 1});
  }
  const int64_t dim = layout.granularity == Granularity::Channel ? 2 : 3;
  const int64_t n = x.size(dim);
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < n; start += layout.group_size)
    parts.push_back(reduce(x.narrow(dim, start, std::min(layout.group_size, n - start)), dim));
  return at::cat(parts, dim);
}

at::Tensor quantile_along(const at::Tensor& x, double q, int64_t dim) {
  at::Tensor sorted = std::get<0>(x.sort(dim));
  const int64_t n = x.size(dim);
  const double pos = q * static_cast<double>(n - 1);
  const int64_t lo = static_cast<int64_t>(std::floor(pos));
  const int64_t hi = std::min<int64_t>(lo + 1, n - 1);
  const double frac = pos - static_cast<double>(lo);
  at::Tensor a = sorted.narrow(dim, lo, 1), b = sorted.narrow(dim, hi, 1);
  return frac == 0.0 ? a.clone() : at::lerp(a, b, frac);
}

UniformParams uniform_params(const at::Tensor& lo, const at::Tensor& hi, int bits) {
  const double levels = static_cast<double>((1 << bits) - 1);
  at::Tensor scale = (hi - lo) / levels;
  at::Tensor degenerate = scale <= 0;  // hi == lo: the authors' code has no guard here
  scale = at::where(degenerate, at::ones_like(scale), scale);
  at::Tensor zero = -lo / scale;
  return {scale, zero};
}

at::Tensor uniform_codes(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero, int bits) {
  const double levels = static_cast<double>((1 << bits) - 1);
  // at::round rounds half to even, as torch.round does.
  return at::round(at::clamp(x / scale + zero, 0.0, levels)).to(at::kByte);
}

double resolve_clip(const QuantizerOptions& options, KVRole role, int bits) {
  if (!options.is("clip", "auto")) return options.number("clip");
  if (bits != 1) return 1.0;
  return role == KVRole::Key ? 0.5 : 0.3;
}

namespace {

// The kernels' scale axis for groups that span the whole segment (a channel over all its
// tokens, or a token over all its channels); nothing for per-tensor or smaller groups.
std::optional<kernels::ScaleAxis> whole_segment_axis(const GroupLayout& l) {
  switch (l.granularity) {
    case Granularity::Tensor: return std::nullopt;
    case Granularity::Channel:
      return l.group_size >= l.tokens ? std::optional(kernels::ScaleAxis::Channel) : std::nullopt;
    case Granularity::Token:
      return l.group_size >= l.channels ? std::optional(kernels::ScaleAxis::Token) : std::nullopt;
  }
  return std::nullopt;
}

// Compact lo/hi ranges of x (float32) for `config`.
std::pair<at::Tensor, at::Tensor> group_ranges(const at::Tensor& x, const GroupLayout& layout,
                                               const RangeConfig& config) {
  at::Tensor lo, hi;
  if (config.source == RangeSource::MinMax) {
    lo = reduce_groups(x, layout, [](const at::Tensor& t, int64_t d) { return t.amin(d, true); });
    hi = reduce_groups(x, layout, [](const at::Tensor& t, int64_t d) { return t.amax(d, true); });
  } else {
    const double q = config.quantile;
    lo = reduce_groups(x, layout, [q](const at::Tensor& t, int64_t d) { return quantile_along(t, q, d); });
    hi = reduce_groups(x, layout, [q](const at::Tensor& t, int64_t d) { return quantile_along(t, 1.0 - q, d); });
  }
  if (config.clip != 1.0) {
    lo = lo * config.clip;
    hi = hi * config.clip;
  }
  return {lo, hi};
}

}  // namespace

UniformQuantized::UniformQuantized(const at::Tensor& x, const RangeConfig& config, bool code_domain)
    : bits_(config.bits),
      code_domain_(code_domain),
      dtype_(x.scalar_type()),
      shape_(x.sizes().vec()),
      layout_(group_layout(x, config.granularity, config.group_size)) {
  // On CUDA, whole-segment min-max groups (per channel or per token) take the fused
  // quantize-and-pack kernel: the same float32 steps, so the same codes, in one launch pair.
  const std::optional<kernels::ScaleAxis> axis = whole_segment_axis(layout_);
  if (x.is_cuda() && x.numel() > 0 && config.source == RangeSource::MinMax && axis) {
    kernels::PackedKV p = kernels::quantize_pack(x, bits_, *axis, config.clip);
    packed_ = p.packed;
    params_ = {p.scale, p.zero};
    return;
  }
  at::Tensor xf = x.to(at::kFloat);
  if (x.numel() == 0) {
    packed_ = kernels::pack_codes(at::zeros(shape_, x.options().dtype(at::kByte)), bits_);
    params_ = {at::empty({0}, xf.options()), at::empty({0}, xf.options())};
    return;
  }
  auto [lo, hi] = group_ranges(xf, layout_, config);
  params_ = uniform_params(lo, hi, bits_);
  at::Tensor codes = uniform_codes(xf, layout_.expand(params_.scale), layout_.expand(params_.zero), bits_);
  // Groups with s = 0 hold one value: code 0, so that x̂ = s (0 - z) = lo.
  codes = at::where(layout_.expand(hi - lo) <= 0, at::zeros_like(codes), codes);
  packed_ = kernels::pack_codes(codes, bits_);
}

std::optional<kernels::PackedKV> UniformQuantized::packed_kv() const {
  if (!code_domain_ || params_.scale.numel() == 0) return std::nullopt;
  kernels::PackedKV p;
  p.packed = packed_;
  p.bits = kernels::storage_bits(bits_);
  if (layout_.granularity == Granularity::Tensor) {  // one scale per sequence: as per channel, repeated
    const int64_t b = shape_[0], h = shape_[1], d = shape_[3];
    p.axis = kernels::ScaleAxis::Channel;
    p.scale = params_.scale.expand({b, h, 1, d}).contiguous();
    p.zero = params_.zero.expand({b, h, 1, d}).contiguous();
    return p;
  }
  const std::optional<kernels::ScaleAxis> axis = whole_segment_axis(layout_);
  if (!axis) return std::nullopt;  // groups of tokens or of channels: not a kernel layout
  p.axis = *axis;
  p.scale = params_.scale;
  p.zero = params_.zero;
  return p;
}

std::unique_ptr<QuantizedTensor> UniformQuantized::concat_batch(const std::vector<const QuantizedTensor*>& more) const {
  std::vector<at::Tensor> packed{packed_}, scale{params_.scale}, zero{params_.zero};
  std::unique_ptr<UniformQuantized> out(new UniformQuantized());
  *out = *this;
  for (const QuantizedTensor* t : more) {
    const auto* u = dynamic_cast<const UniformQuantized*>(t);
    if (!u || u->bits_ != bits_ || u->code_domain_ != code_domain_ || u->layout_.granularity != layout_.granularity ||
        u->layout_.group_size != layout_.group_size || u->params_.scale.numel() == 0 || params_.scale.numel() == 0 ||
        !std::equal(shape_.begin() + 1, shape_.end(), u->shape_.begin() + 1))
      fail("KV cache: quantized micro-batches to join differ in format or shape");
    packed.push_back(u->packed_);
    scale.push_back(u->params_.scale);
    zero.push_back(u->params_.zero);
    out->shape_[0] += u->shape_[0];
  }
  out->packed_ = at::cat(packed, 0);
  out->params_ = {at::cat(scale, 0), at::cat(zero, 0)};
  return out;
}

at::Tensor UniformQuantized::codes() const { return kernels::unpack_codes(packed_, bits_, shape_.back()); }

at::Tensor UniformQuantized::codes_float() const { return codes().to(at::kFloat); }

at::Tensor UniformQuantized::dequantize() const {
  if (params_.scale.numel() == 0) return at::zeros(shape_, packed_.options().dtype(dtype_));
  at::Tensor s = layout_.expand(params_.scale), z = layout_.expand(params_.zero);
  return (s * (codes_float() - z)).to(dtype_);
}

int64_t UniformQuantized::nbytes() const {
  return packed_.numel() + (params_.scale.numel() + params_.zero.numel()) * 4;
}

// Post-scaling: the matmuls run on the codes and (scale, zero-point) come after.
//   per channel (s, z over d):  q · x̂_n = (q ⊙ s) · c_n - q · (s ⊙ z)
//                               Σ_n p_n x̂_n = s ⊙ (Σ_n p_n c_n) - (s ⊙ z) Σ_n p_n
//   per token (s_n, z_n):       q · x̂_n = s_n (q · c_n - z_n Σ_d q_d)
//                               Σ_n p_n x̂_n = Σ_n (p_n s_n) c_n - Σ_n p_n s_n z_n
at::Tensor UniformQuantized::scores(const at::Tensor& q) const {
  if (!code_domain_) return QuantizedTensor::scores(q);
  at::Tensor c = codes_float();
  const at::Tensor& s = params_.scale;
  const at::Tensor& z = params_.zero;
  if (layout_.granularity == Granularity::Token) {
    at::Tensor st = s.transpose(-1, -2), zt = z.transpose(-1, -2);  // [B,H,1,N]
    return (at::matmul(q, c.transpose(-1, -2)) - q.sum(-1, true) * zt) * st;
  }
  at::Tensor qs = q * s;  // s: [B,H,1,D] or [B,1,1,1]
  return at::matmul(qs, c.transpose(-1, -2)) - (qs * z).sum(-1, true);
}

at::Tensor UniformQuantized::weighted_sum(const at::Tensor& p) const {
  if (!code_domain_) return QuantizedTensor::weighted_sum(p);
  at::Tensor c = codes_float();
  const at::Tensor& s = params_.scale;
  const at::Tensor& z = params_.zero;
  if (layout_.granularity == Granularity::Token) {
    at::Tensor ps = p * s.transpose(-1, -2);  // [B,H,M,N]
    return at::matmul(ps, c) - (ps * z.transpose(-1, -2)).sum(-1, true);
  }
  return s * at::matmul(p, c) - (s * z) * p.sum(-1, true);
}

CodebookQuantized::CodebookQuantized(const at::Tensor& x, int bits, Granularity granularity, int64_t group_size)
    : bits_(bits), dtype_(x.scalar_type()), shape_(x.sizes().vec()),
      layout_(group_layout(x, granularity, group_size)) {
  at::Tensor xf = x.to(at::kFloat);
  const int k = 1 << bits;
  if (x.numel() == 0) {
    packed_ = kernels::pack_codes(at::zeros(shape_, x.options().dtype(at::kByte)), bits_);
    levels_ = at::empty({0, k}, xf.options());
    return;
  }
  std::vector<at::Tensor> levels;
  for (int i = 0; i < k; ++i) {
    const double prob = (i + 0.5) / k;
    levels.push_back(reduce_groups(xf, layout_, [prob](const at::Tensor& t, int64_t d) { return quantile_along(t, prob, d); }));
  }
  levels_ = at::stack(levels, -1);  // compact x k, ascending along the last dim
  // Nearest level: a code counts the level midpoints at or below x.
  std::vector<at::Tensor> full_levels;
  for (int i = 0; i < k; ++i) full_levels.push_back(layout_.expand(levels_.select(-1, i)));
  at::Tensor codes = at::zeros(shape_, xf.options().dtype(at::kLong));
  for (int i = 0; i + 1 < k; ++i) {
    at::Tensor mid = (full_levels[i] + full_levels[i + 1]) * 0.5;
    codes += (xf >= mid).to(at::kLong);
  }
  packed_ = kernels::pack_codes(codes.to(at::kByte), bits_);
}

at::Tensor CodebookQuantized::codes() const { return kernels::unpack_codes(packed_, bits_, shape_.back()); }

at::Tensor CodebookQuantized::dequantize() const {
  if (levels_.numel() == 0) return at::zeros(shape_, packed_.options().dtype(dtype_));
  const int k = 1 << bits_;
  at::Tensor c = codes().to(at::kLong);
  at::Tensor out = at::zeros(shape_, c.options().dtype(at::kFloat));
  for (int i = 0; i < k; ++i) out = at::where(c == i, layout_.expand(levels_.select(-1, i)), out);
  return out.to(dtype_);
}

int64_t CodebookQuantized::nbytes() const { return packed_.numel() + levels_.numel() * 4; }

OptionSpec bits_option(const std::string& default_bits) {
  return {"bits", OptionType::Choice, default_bits, "bits per element", {"1", "2", "3", "4", "8"}};
}

OptionSpec clip_option(const std::string& default_clip) {
  return {"clip", OptionType::Float, default_clip,
          "factor on the range's min and max (auto: 0.5 keys / 0.3 values at 1 bit, else 1)",
          {"auto"}, 0.001, 1.0};
}

OptionSpec axis_option(const std::string& default_axis, bool with_tensor) {
  std::vector<std::string> choices = {"channel", "token"};
  if (with_tensor) choices.insert(choices.begin(), "tensor");
  return {"axis", OptionType::Choice, default_axis,
          "statistics per channel (over tokens), per token (over channels) or per tensor", choices};
}

OptionSpec group_size_option() {
  return {"group_size", OptionType::Int, "0",
          "tokens (axis=channel) or channels (axis=token) per group; 0: the whole axis", {}, 0, 1 << 20};
}

}  // namespace calibq

namespace calibq {

RangeQuantizer::RangeQuantizer(std::string name, KVRole role, QuantizerOptions options, RangeConfig config,
                               Format format)
    : KVQuantizer(std::move(name), role, std::move(options)), config_(config), format_(format) {}

std::unique_ptr<QuantizedTensor> RangeQuantizer::quantize(const at::Tensor& x, const QuantContext&) const {
  check_kv_tensor(x, label());
  switch (format_) {
    case Format::Uniform: return std::make_unique<UniformQuantized>(x, config_, false);
    case Format::PostScaled: return std::make_unique<UniformQuantized>(x, config_, true);
    case Format::Codebook:
      return std::make_unique<CodebookQuantized>(x, config_.bits, config_.granularity, config_.group_size);
  }
  fail("internal: bad range format");
}

RangeConfig range_config(const QuantizerOptions& options, KVRole role, Granularity granularity) {
  RangeConfig c;
  c.bits = static_cast<int>(options.integer("bits"));
  c.granularity = granularity;
  c.clip = resolve_clip(options, role, c.bits);
  return c;
}

}  // namespace calibq
