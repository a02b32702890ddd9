// Runs an experiment's cells: predictions (JSONL, flushed per batch), metrics, timing and
// the resolved config per cell; a summary across cells (Markdown, CSV, LaTeX, JSON) laid
// out as the config's table asks; gnuplot plots with their scripts kept beside them.
// Resumable (a restarted run redoes no finished batch and keeps no half-written one),
// shardable by batch (--shard i/n, or the Slurm array variables), and `merge` joins shard
// outputs into exactly the files one process writes (timing.json aside).
#pragma once

#include <string>

#include "experiments/runner/config.h"

namespace calibq {

struct RunOptions {
  std::string out_dir;
  int64_t shard_index = 0, shard_count = 1;
  bool dry_run = false;
  std::string command;  // the command line, recorded beside the summary
};

// Parses "i/n" (0 <= i < n); empty: SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when set, else 0/1.
void parse_shard(const std::string& text, int64_t& index, int64_t& count);

// Returns the number of cells finished by this call (0 for a dry run).
int run_experiment(const ExperimentConfig& exp, const RunOptions& options);

// Joins the shard outputs under out_dir into predictions.jsonl and metrics.json per cell
// and writes the summary; fails naming a cell whose shards are incomplete.
void merge_experiment(const ExperimentConfig& exp, const RunOptions& options);

}  // namespace calibq
