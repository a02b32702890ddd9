// Plots as gnuplot scripts beside their data: every figure is NAME.dat (the numbers),
// NAME.gp (the script, kept so a researcher can edit and re-render it) and the NAME.png
// and NAME.svg the script renders. gnuplot is the renderer (a Debian package); nothing
// here draws by hand.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace calibq {

struct GnuplotFigure {
  std::string name;      // file stem in the plots folder
  std::string comment;   // what the figure shows (first line of the script)
  std::string settings;  // commands before the terminals (labels, scales, ...)
  std::string body;      // the drawing commands (plot ..., or a multiplot), run for PNG then SVG
  int width = 900, height = 500;
};

// Writes dir/NAME.dat and dir/NAME.gp atomically (dir is created). Does not render.
void write_gnuplot_figure(const std::string& dir, const GnuplotFigure& figure, const std::string& data);

// Renders every DIR/plots/*.gp with gnuplot (PNG and SVG beside it); returns how many.
// Fails naming the script and gnuplot's message.
int render_plots(const std::string& dir);

// A histogram: bins + 1 edges, bins counts.
struct Histogram {
  std::vector<double> edges;
  std::vector<double> counts;
};

// One series of a throughput-versus-batch plot (from benchmark output).
struct ThroughputPoint {
  std::string series;  // e.g. the KV format ("fp16", "calibquant:bits=1")
  double batch = 0;
  double tokens_per_second = 0;
};
// Benchmark rows (a JSON list of objects, or {"rows": [...]}) as points: the series from
// `series_key`, x from `x_key`, y from `y_key` (rows whose x or y is null are skipped: a batch
// that did not fit). Fails naming a row without them.
std::vector<ThroughputPoint> throughput_points(const nlohmann::json& rows, const std::string& series_key,
                                               const std::string& y_key, const std::string& source,
                                               const std::string& x_key = "batch");
// The x axis of a throughput plot and the figure's file stem.
struct ThroughputAxis {
  std::string key = "batch", label = "batch (sequences)", figure = "throughput_vs_batch";
  bool log2 = true;
};
// plots/FIGURE.{dat,gp} under dir (rendered by render_plots).
void plot_throughput(const std::string& dir, const std::vector<ThroughputPoint>& points, const std::string& y_label,
                     const std::string& title, const ThroughputAxis& axis = {});

}  // namespace calibq
