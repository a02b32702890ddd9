// calibq inspect PATH: a checkpoint folder's or file's tensors and parsed config.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>
#include <memory>

#include "core/config/hf_config.h"
#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "experiments/cli/commands.h"

namespace calibq::cli {

namespace {

struct InspectOptions {
  std::string path;
  std::string filter;
  bool json = false;
};

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.2f} {}", v, units[u]);
}

void run_inspect(const InspectOptions& opt) {
  namespace fs = std::filesystem;
  if (!fs::exists(opt.path)) fail("{}: no such file or folder", opt.path);
  const bool is_dir = fs::is_directory(opt.path);
  const bool is_config = !is_dir && fs::path(opt.path).extension() == ".json";

  std::optional<ModelConfig> config;
  if (is_config || (is_dir && fs::exists(fs::path(opt.path) / "config.json")))
    config = load_model_config(opt.path);

  std::optional<SafetensorsCheckpoint> ck;
  if (!is_config) ck = SafetensorsCheckpoint::open(opt.path);

  if (opt.json) {
    nlohmann::json out = nlohmann::json::object();
    out["path"] = opt.path;
    if (config) out["config"] = to_json(*config);
    if (ck) {
      nlohmann::json tensors = nlohmann::json::array();
      for (const auto& t : ck->tensors()) {
        if (!opt.filter.empty() && t.info.name.find(opt.filter) == std::string::npos) continue;
        tensors.push_back({{"name", t.info.name}, {"dtype", st_dtype_name(t.info.dtype)},
                           {"shape", t.info.shape}, {"bytes", t.info.nbytes()}, {"shard", t.shard}});
      }
      out["tensors"] = tensors;
      out["shards"] = ck->shards();
      out["total_bytes"] = ck->total_bytes();
      out["metadata"] = ck->metadata();
    }
    std::cout << out.dump(2) << "\n";
    return;
  }

  if (config) std::cout << describe(*config);
  if (!ck) return;
  size_t width = 4;
  for (const auto& t : ck->tensors()) width = std::max(width, t.info.name.size());
  const bool sharded = ck->shards().size() > 1;
  std::cout << fmt::format("{:<{}}  {:<5} {:<22} {:>12}{}\n", "name", width, "dtype", "shape",
                           "bytes", sharded ? "  shard" : "");
  size_t shown = 0;
  for (const auto& t : ck->tensors()) {
    if (!opt.filter.empty() && t.info.name.find(opt.filter) == std::string::npos) continue;
    ++shown;
    std::cout << fmt::format("{:<{}}  {:<5} {:<22} {:>12}{}\n", t.info.name, width,
                             st_dtype_name(t.info.dtype), fmt::format("[{}]", fmt::join(t.info.shape, ", ")),
                             t.info.nbytes(), sharded ? "  " + t.shard : "");
  }
  std::cout << fmt::format("{} tensors{}, {} ({} bytes) in {} shard(s)\n", ck->tensors().size(),
                           opt.filter.empty() ? "" : fmt::format(" ({} shown)", shown),
                           human_bytes(ck->total_bytes()), ck->total_bytes(), ck->shards().size());
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto opt = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Print a checkpoint's tensors (name, dtype, shape, bytes) and its parsed config");
  cmd->add_option("path", opt->path,
                  "A checkpoint folder, a .safetensors file, or a config.json")
      ->required();
  cmd->add_option("--filter", opt->filter, "Only tensors whose name contains this");
  cmd->add_flag("--json", opt->json, "Print JSON instead of a table");
  cmd->callback([opt] { run_inspect(*opt); });
}

}  // namespace calibq::cli
