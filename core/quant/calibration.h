// CalibQuant's calibration of the visual tokens' pre-softmax scores (paper.md): per row
// (one query of one batch entry and head), the scores' range [m, M] over the visual
// tokens is mapped linearly onto [m + a, M + b]. The authors' defaults are a = 0, b = -3:
// 1-bit keys inflate the largest scores, and this pulls them back down.
#pragma once

#include <ATen/ATen.h>

namespace calibq {

// scores: [..., N] float. A row with M == m becomes m + a.
at::Tensor calibrate_score_range(const at::Tensor& scores, double a, double b);

}  // namespace calibq
