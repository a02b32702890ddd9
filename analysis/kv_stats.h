// KV statistics: per layer, head and channel, for keys and values and each cache segment
// (min, max, mean, std, absmax, kurtosis, quantiles), per-head histograms, and outlier
// channel counts. Written as tidy CSV and a safetensors file of raw histograms.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "analysis/table.h"
#include "core/kv/kv_cache.h"
#include "core/quant/quantizer.h"

namespace calibq {

struct KVStatsConfig {
  std::vector<double> quantiles{0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999};
  int64_t bins = 64;
  // A channel is an outlier when its absolute maximum exceeds this many times the median
  // absolute maximum of its head's channels.
  double outlier_factor = 3.0;
};

class KVStatsCollector {
 public:
  explicit KVStatsCollector(KVStatsConfig config = {}) : config_(std::move(config)) {}
  // x: [B, H, N, D], one segment of one layer's keys or values; statistics over B and N.
  void add(int64_t layer, KVRole role, Segment segment, const at::Tensor& x);

  // One row per (layer, kind, segment, head, channel).
  Table channel_table() const;
  // One row per (layer, kind, segment, head): outlier channels and the head's spread.
  Table head_table() const;
  // Writes kv_channel_stats.csv, kv_head_stats.csv and kv_histograms.safetensors into dir.
  void write(const std::string& dir) const;

 private:
  struct Entry {
    int64_t layer;
    KVRole role;
    Segment segment;
    at::Tensor min, max, mean, std, absmax, kurtosis;  // [H, D]
    at::Tensor quantiles;                                // [Q, H, D]
    at::Tensor outlier;                                  // [H, D] bool
    at::Tensor hist_counts, hist_edges;                  // [H, bins], [H, bins + 1]
  };
  KVStatsConfig config_;
  std::vector<Entry> entries_;
};

}  // namespace calibq
