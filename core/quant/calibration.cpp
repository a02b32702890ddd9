#include "core/quant/calibration.h"

namespace calibq {

at::Tensor calibrate_score_range(const at::Tensor& scores, double a, double b) {
  if (scores.numel() == 0 || scores.size(-1) == 0) return scores;
  at::Tensor m = scores.amin(-1, true);
  at::Tensor big_m = scores.amax(-1, true);
  at::Tensor span = big_m - m;
  at::Tensor safe = at::where(span > 0, span, at::ones_like(span));
  at::Tensor t = at::where(span > 0, (scores - m) / safe, at::zeros_like(scores));
  // (m + a) + t ((M + b) - (m + a))
  return (m + a) + t * (span + (b - a));
}

}  // namespace calibq
