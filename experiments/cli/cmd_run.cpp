// calibq run / merge / plot: the experiment runner's command line.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "analysis/plots.h"
#include "core/io/json_file.h"
#include "core/util/error.h"
#include "experiments/cli/commands.h"
#include "experiments/runner/runner.h"

namespace calibq::cli {

namespace {
struct RunArgs {
  std::string config, out, shard;
  bool dry_run = false;
};

RunOptions options_of(const RunArgs& a, const ExperimentConfig& exp, const char* verb) {
  RunOptions o;
  o.out_dir = a.out.empty() ? "runs/" + exp.name : a.out;
  parse_shard(a.shard, o.shard_index, o.shard_count);
  o.dry_run = a.dry_run;
  o.command = fmt::format("calibq {} {} --out {}", verb, a.config, o.out_dir);
  return o;
}
}  // namespace

void add_run_commands(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* run = app.add_subcommand("run", "Run an experiment YAML: every cell of its sweep, resumably");
  run->add_option("config", a->config, "experiment YAML (see configs/README.md)")->required();
  run->add_option("--out", a->out, "output folder (default: runs/<name>)");
  run->add_option("--shard", a->shard, "i/n: this process's share of the batches (default: Slurm array variables, else 0/1)");
  run->add_flag("--dry-run", a->dry_run, "print the grid of cells and exit");
  run->callback([a] {
    ExperimentConfig exp = load_experiment(a->config);
    RunOptions o = options_of(*a, exp, "run");
    run_experiment(exp, o);
    if (!o.dry_run && o.shard_count > 1)
      std::cerr << fmt::format("shard {}/{} done; when every shard is: calibq merge {} --out {}\n", o.shard_index,
                               o.shard_count, a->config, o.out_dir);
  });

  auto m = std::make_shared<RunArgs>();
  CLI::App* merge = app.add_subcommand("merge", "Join the outputs of `run --shard i/n` into one run's files");
  merge->add_option("config", m->config, "the experiment YAML the shards ran")->required();
  merge->add_option("--out", m->out, "the shards' output folder (default: runs/<name>)");
  merge->callback([m] {
    ExperimentConfig exp = load_experiment(m->config);
    RunArgs whole = *m;
    merge_experiment(exp, options_of(whole, exp, "run"));
  });

  struct PlotArgs {
    std::string dir, throughput, series = "kv", y = "decode_tok_s", x = "batch", rows = "rows";
  };
  auto p = std::make_shared<PlotArgs>();
  CLI::App* plot = app.add_subcommand("plot", "Re-render a run's plots (plots/*.gp) as PNG and SVG; with --throughput, "
                                              "first add the throughput-versus-batch plot of a benchmark's JSON");
  plot->add_option("dir", p->dir, "a run's output folder (plots go to DIR/plots)")->required();
  plot->add_option("--throughput", p->throughput, "benchmark JSON: a list of rows (or {\"rows\": [...]}) with batch and the y column");
  plot->add_option("--series", p->series, "the rows' column naming a series")->capture_default_str();
  plot->add_option("--y", p->y, "the rows' column to plot")->capture_default_str();
  plot->add_option("--x", p->x, "the rows' column on the x axis (batch: log scale; else linear, e.g. budget_gib)")
      ->capture_default_str();
  plot->add_option("--rows", p->rows, "the key of the JSON object's row list (e.g. budget_rows)")->capture_default_str();
  plot->callback([p] {
    if (!p->throughput.empty()) {
      const nlohmann::json doc = read_json_file(p->throughput);
      const nlohmann::json& rows = doc.is_object() && doc.contains(p->rows) ? doc.at(p->rows) : doc;
      const auto points = throughput_points(rows, p->series, p->y, p->throughput, p->x);
      if (p->x == "batch")
        plot_throughput(p->dir, points, p->y, "Throughput versus batch size (" + p->throughput + ")");
      else
        plot_throughput(p->dir, points, p->y, "Throughput versus " + p->x + " (" + p->throughput + ")",
                        ThroughputAxis{p->x, p->x, "throughput_vs_" + p->x, false});
    }
    std::cerr << render_plots(p->dir) << " plot scripts rendered\n";
  });
}

}  // namespace calibq::cli
