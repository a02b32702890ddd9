// calibq kv-stats CONFIG: the KV statistics of a real model on a sample of an experiment's
// dataset. Prefill runs in full precision on each sample (the first cell's model and
// dataset); every layer's keys (after RoPE), values and text queries are kept, and from
// them come the statistics per layer/head/channel (analysis/kv_stats), the error of every
// KV quantizer pair the sweep names (analysis/quant_error) per layer and overall, the
// visual pre-softmax scores before and after quantization and calibration, and the plots.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "experiments/runner/config.h"

namespace calibq {

struct KVStudyOptions {
  std::string out_dir;
  int64_t samples = 4;                 // from the start of the (limited, shuffled) dataset
  std::vector<int64_t> layers;         // layers for the plots; empty: first, middle, last
  std::string score_quantizer = "calibquant:bits=1";  // for the score-distribution plot
  int64_t bins = 64;
  double outlier_factor = 3.0;
  bool dump = false;                   // kv_dump.safetensors of the first sample (for kv-error --input)
  std::string command;
};

void run_kv_study(const ExperimentConfig& exp, const KVStudyOptions& options);

}  // namespace calibq
