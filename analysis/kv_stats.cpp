#include "analysis/kv_stats.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/quant/range_quant.h"
#include "core/util/error.h"

namespace calibq {

void KVStatsCollector::add(int64_t layer, KVRole role, Segment segment, const at::Tensor& x_in) {
  check_kv_tensor(x_in, "kv-stats");
  if (x_in.size(2) == 0) return;
  // [H, D, B * N]: every statistic reduces the last dim.
  at::Tensor x = x_in.to(at::kDouble).permute({1, 3, 0, 2}).reshape({x_in.size(1), x_in.size(3), -1});
  Entry e;
  e.layer = layer;
  e.role = role;
  e.segment = segment;
  e.min = x.amin(-1);
  e.max = x.amax(-1);
  e.mean = x.mean(-1);
  at::Tensor centered = x - e.mean.unsqueeze(-1);
  at::Tensor m2 = centered.pow(2).mean(-1);
  e.std = m2.sqrt();  // population standard deviation
  e.absmax = x.abs().amax(-1);
  // Pearson kurtosis m4 / m2^2 (3 for a normal distribution); 0 where the channel is constant.
  at::Tensor m4 = centered.pow(4).mean(-1);
  e.kurtosis = at::where(m2 > 0, m4 / (m2 * m2).clamp_min(1e-300), at::zeros_like(m2));
  std::vector<at::Tensor> qs;
  for (double q : config_.quantiles) qs.push_back(quantile_along(x, q, -1).squeeze(-1));
  e.quantiles = qs.empty() ? at::empty({0}) : at::stack(qs);
  at::Tensor median_absmax = std::get<0>(e.absmax.median(-1, true));
  e.outlier = e.absmax > median_absmax * config_.outlier_factor;
  // Histograms per head over all its entries, each on its own range.
  at::Tensor per_head = x.reshape({x.size(0), -1}).to(at::kFloat);
  std::vector<at::Tensor> counts, edges;
  for (int64_t h = 0; h < per_head.size(0); ++h) {
    at::Tensor row = per_head[h];
    double lo = row.min().item<double>(), hi = row.max().item<double>();
    if (hi <= lo) hi = lo + 1.0;
    counts.push_back(at::histc(row, config_.bins, lo, hi).to(at::kLong));
    edges.push_back(at::linspace(lo, hi, config_.bins + 1));
  }
  e.hist_counts = at::stack(counts);
  e.hist_edges = at::stack(edges);
  entries_.push_back(std::move(e));
}

Table KVStatsCollector::channel_table() const {
  std::vector<std::string> cols = {"layer", "kind", "segment", "head", "channel", "min", "max",
                                   "mean", "std", "absmax", "kurtosis"};
  for (double q : config_.quantiles) cols.push_back(fmt::format("q{}", q));
  cols.push_back("outlier");
  Table t(cols);
  for (const Entry& e : entries_) {
    const int64_t heads = e.min.size(0), channels = e.min.size(1);
    auto a = [](const at::Tensor& t) { return t.contiguous().data_ptr<double>(); };
    const double *mn = a(e.min), *mx = a(e.max), *me = a(e.mean), *sd = a(e.std), *am = a(e.absmax), *ku = a(e.kurtosis);
    at::Tensor qc = e.quantiles.contiguous();
    const double* qd = qc.numel() ? qc.data_ptr<double>() : nullptr;
    at::Tensor out = e.outlier.contiguous();
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t d = 0; d < channels; ++d) {
        const int64_t i = h * channels + d;
        std::vector<std::string> row = {std::to_string(e.layer), kv_role_name(e.role), segment_name(e.segment),
                                        std::to_string(h), std::to_string(d), cell(mn[i], 6), cell(mx[i], 6),
                                        cell(me[i], 6), cell(sd[i], 6), cell(am[i], 6), cell(ku[i], 4)};
        for (size_t q = 0; q < config_.quantiles.size(); ++q) row.push_back(cell(qd[q * heads * channels + i], 6));
        row.push_back(out[h][d].item<bool>() ? "1" : "0");
        t.add_row(row);
      }
    }
  }
  return t;
}

Table KVStatsCollector::head_table() const {
  Table t({"layer", "kind", "segment", "head", "channels", "outlier_channels", "absmax_max", "absmax_median",
           "kurtosis_max"});
  for (const Entry& e : entries_) {
    for (int64_t h = 0; h < e.min.size(0); ++h) {
      t.add_row({std::to_string(e.layer), kv_role_name(e.role), segment_name(e.segment), std::to_string(h),
                 std::to_string(e.min.size(1)), std::to_string(e.outlier[h].sum().item<int64_t>()),
                 cell(e.absmax[h].max().item<double>(), 6), cell(std::get<0>(e.absmax[h].median(0)).item<double>(), 6),
                 cell(e.kurtosis[h].max().item<double>(), 4)});
    }
  }
  return t;
}

void KVStatsCollector::write(const std::string& dir) const {
  namespace fs = std::filesystem;
  write_text_atomically((fs::path(dir) / "kv_channel_stats.csv").string(), channel_table().csv());
  write_text_atomically((fs::path(dir) / "kv_head_stats.csv").string(), head_table().csv());
  NamedTensors hist;
  for (const Entry& e : entries_) {
    std::string key = fmt::format("layer{}.{}.{}", e.layer, kv_role_name(e.role), segment_name(e.segment));
    hist.emplace_back(key + ".counts", e.hist_counts);
    hist.emplace_back(key + ".edges", e.hist_edges);
  }
  write_safetensors((fs::path(dir) / "kv_histograms.safetensors").string(), hist,
                    {{"format", "calibq kv histograms: <layer>.<kind>.<segment>.counts [heads, bins] and .edges [heads, bins+1]"}});
}

}  // namespace calibq
