// The KV figures of the paper's analysis, as gnuplot data + scripts (analysis/plots.h):
// per-channel key and value ranges per layer (where the outlier channels are), histograms
// of K and V entries, and the distribution of the visual tokens' pre-softmax scores in
// full precision, after quantization, and after quantization plus calibration.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace calibq {

struct LayerKV {
  int64_t layer = 0;
  at::Tensor k, v;  // [B, H, N, D] of one segment
};

// plots/kv_channel_ranges: for each given layer, min and max over batch and tokens of every
// (head, channel), channels numbered head * D + d; keys on top, values below.
void plot_channel_ranges(const std::string& plots_dir, const std::vector<LayerKV>& layers, const std::string& what);

// plots/kv_histograms: histograms (log counts) of all K and of all V entries, one line per layer.
void plot_kv_histograms(const std::string& plots_dir, const std::vector<LayerKV>& layers, const std::string& what,
                        int64_t bins = 100);

struct ScoreSamples {
  int64_t layer = 0;
  std::vector<std::string> names;   // e.g. "fp", "calibquant:bits=1,calibrate=off", "calibquant:bits=1"
  std::vector<at::Tensor> scores;   // flat float32 values, one per name
};
// plots/visual_scores: per layer, the density of each score variant on a common range.
void plot_score_distributions(const std::string& plots_dir, const std::vector<ScoreSamples>& layers, int64_t bins = 80);

}  // namespace calibq
