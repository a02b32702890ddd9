#include "core/models/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/util/error.h"

namespace calibq {

std::vector<int64_t> next_tokens(const at::Tensor& logits, const SamplingSettings& s, std::mt19937_64& rng) {
  if (logits.dim() != 2) fail("sampling: logits must be [batch, vocab]");
  if (!(s.temperature >= 0.0)) fail("sampling: temperature {} must be >= 0", s.temperature);
  if (!(s.top_p > 0.0 && s.top_p <= 1.0)) fail("sampling: top_p {} must be in (0, 1]", s.top_p);
  const int64_t b = logits.size(0), v = logits.size(1);
  std::vector<int64_t> out(b);
  if (s.temperature == 0.0) {
    at::Tensor ids = logits.argmax(-1).cpu();
    for (int64_t r = 0; r < b; ++r) out[r] = ids[r].item<int64_t>();
    return out;
  }
  at::Tensor l = logits.to(at::kCPU, at::kDouble).contiguous();
  const double* data = l.data_ptr<double>();
  std::vector<double> p(v);
  std::vector<int64_t> order(v);
  for (int64_t r = 0; r < b; ++r) {
    const double* row = data + r * v;
    const double mx = *std::max_element(row, row + v);
    double total = 0;
    for (int64_t k = 0; k < v; ++k) total += (p[k] = std::exp((row[k] - mx) / s.temperature));
    for (double& x : p) x /= total;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) { return p[a] > p[c]; });
    // The nucleus: most likely first, until the mass reaches top_p (at least one token).
    int64_t keep = 0;
    double mass = 0;
    while (keep < v && (keep == 0 || mass < s.top_p)) mass += p[order[keep++]];
    // 53 random bits -> u in [0, 1): the same on every platform (unlike std distributions).
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * mass;
    double acc = 0;
    out[r] = order[keep - 1];
    for (int64_t k = 0; k < keep; ++k)
      if ((acc += p[order[k]]) > u) {
        out[r] = order[k];
        break;
      }
  }
  return out;
}

}  // namespace calibq
