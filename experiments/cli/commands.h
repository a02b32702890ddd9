// The calibq subcommands. Each adds itself to the CLI11 app; its callback runs the
// command and throws calibq::Error (or another std::exception) on failure.
#pragma once

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>

#include <string>

namespace calibq::cli {

void add_inspect_command(CLI::App& app);
// list quantizers, quantize, kv-error, kv-stats; argv is recorded in result files.
void add_quant_commands(CLI::App& app, int argc, char** argv);
// score caption / vqa / anls.
void add_score_commands(CLI::App& app);
// logits.
void add_model_commands(CLI::App& app);
// run, merge, plot: the experiment runner.
void add_run_commands(CLI::App& app);
// scenes: synthetic scene sets (the demo model's data).
void add_data_commands(CLI::App& app);
// bench kernels: the decode-attention kernels against PyTorch's fp16 SDPA (CUDA builds).
void add_bench_commands(CLI::App& app, int argc, char** argv);
// bench throughput (under bench): end-to-end decode throughput of a model.
void add_throughput_command(CLI::App* bench, const std::string& cmdline);

// --dtype fp32|fp16|bf16 and --device cpu|cuda[:N], with errors naming the flag.
at::ScalarType parse_dtype(const std::string& s);
at::Device parse_device(const std::string& s);
// One device, a comma-separated list, or cuda:all (every visible GPU): a model split by layers.
std::vector<at::Device> parse_devices(const std::string& s);

}  // namespace calibq::cli
