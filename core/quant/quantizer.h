// The KV quantizer strategy interface.
//
// Tensors use the cache layout [batch, kv_heads, tokens, head_dim]. A KVQuantizer is
// built for one role (keys or values: they are configured separately) and turns a
// full-precision segment into a QuantizedTensor, which knows its true storage bytes and
// how to take part in attention: either dequantize-then-attend (the default) or, for the
// post-scaled formats, directly on the codes. Quantizers know no model family and no
// cache object.
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/quant/options.h"
#include "kernels/decode_attention.h"

namespace calibq {

enum class KVRole { Key, Value };
const char* kv_role_name(KVRole role);

// What a quantizer may use besides the tensor itself.
struct QuantContext {
  // [B, H, N]: attention each token received during prefill (token_drop's ranking).
  at::Tensor importance;
};

// CalibQuant's calibration of the visual scores (core/quant/calibration.h).
struct ScoreCalibration {
  bool on = false;
  double a = 0, b = 0;
};

class QuantizedTensor {
 public:
  virtual ~QuantizedTensor() = default;
  // [B, H, N, D] in the dtype of the tensor that was quantized.
  virtual at::Tensor dequantize() const = 0;
  // True storage bytes: codes, scales, zero-points, codebooks, full-precision parts.
  virtual int64_t nbytes() const = 0;
  // One code per element, unpacked ([B, H, N, D] uint8); undefined for formats without codes.
  virtual at::Tensor codes() const { return {}; }
  // q: [B, H, M, D] float32 (query heads of a GQA group folded into M). Returns
  // q · x̂ᵀ as [B, H, M, N] float32; -inf for tokens the format does not keep.
  virtual at::Tensor scores(const at::Tensor& q) const;
  // p: [B, H, M, N] float32. Returns p · x̂ as [B, H, M, D] float32.
  virtual at::Tensor weighted_sum(const at::Tensor& p) const;
  // Whether scores/weighted_sum work on the codes (post-scaling) rather than on x̂.
  virtual bool code_domain() const { return false; }
  // The codes, scale and zero-point as the decode-attention kernels take them, for
  // post-scaled formats whose scales cover the whole segment per channel or per token.
  virtual std::optional<kernels::PackedKV> packed_kv() const { return std::nullopt; }
  // This tensor followed by `more` (same format and layout, the same shape but for the batch)
  // as one batch: how the caches of prefill micro-batches join for decoding. Formats that
  // cannot join throw calibq::Error.
  virtual std::unique_ptr<QuantizedTensor> concat_batch(const std::vector<const QuantizedTensor*>& more) const;
};

class KVQuantizer {
 public:
  KVQuantizer(std::string name, KVRole role, QuantizerOptions options)
      : name_(std::move(name)), role_(role), options_(std::move(options)) {}
  virtual ~KVQuantizer() = default;

  // x: [B, H, N, D], any floating dtype. Throws calibq::Error for a wrong shape.
  virtual std::unique_ptr<QuantizedTensor> quantize(const at::Tensor& x,
                                                    const QuantContext& context = {}) const = 0;
  // The calibration of the visual tokens' pre-softmax scores ([B, Hq, T, N_visual], after
  // the 1/sqrt(d) scaling): each row's range [m, M] mapped onto [m + a, M + b] where
  // score_calibration() is on (CalibQuant), the identity otherwise.
  at::Tensor calibrate_scores(const at::Tensor& scores) const;
  bool calibrates() const { return score_calibration().on; }
  virtual ScoreCalibration score_calibration() const { return {}; }
  // Whether quantize() ranks tokens by QuantContext::importance (prefill attention), which
  // the model then computes; false spares every prefill that work.
  virtual bool needs_importance() const { return false; }
  // Nominal bits per element (16 for fp16, 32 for fp32); for tables.
  virtual double nominal_bits() const = 0;

  const std::string& name() const { return name_; }
  KVRole role() const { return role_; }
  const QuantizerOptions& options() const { return options_; }
  // {"method": name, options...}: what results record.
  nlohmann::json describe() const;
  // "group:bits=2,axis=token" for tables and logs: the name, bits, and the options the
  // user gave (the rest are defaults, which describe() records in full).
  std::string label() const;

 private:
  std::string name_;
  KVRole role_;
  QuantizerOptions options_;
};

// Checks that x is a floating [B, H, N, D] tensor; `who` names the caller in the error.
void check_kv_tensor(const at::Tensor& x, const std::string& who);

// Folds the query heads of GQA groups into the row axis: q [B, Hq, T, D] with Hq = G * H
// becomes [B, H, G * T, D], so that query head h meets kv head h / G (as transformers'
// repeat_kv pairs them), and unfold_query_heads undoes it for [B, H, G * T, X].
at::Tensor fold_query_heads(const at::Tensor& q, int64_t kv_heads);
at::Tensor unfold_query_heads(const at::Tensor& x, int64_t query_heads, int64_t tokens);

}  // namespace calibq
