#include "analysis/kv_plots.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "analysis/plots.h"
#include "core/util/error.h"

namespace calibq {

namespace {

// gnuplot multiplot with one panel per column of `panels` (and `rows` rows).
std::string multiplot(int rows, int cols, const std::string& title, const std::vector<std::string>& panels) {
  std::string body = fmt::format("set multiplot layout {},{} title \"{}\"\n", rows, cols, title);
  for (const auto& p : panels) body += p + "\n";
  return body + "unset multiplot";
}

}  // namespace

void plot_channel_ranges(const std::string& plots_dir, const std::vector<LayerKV>& layers, const std::string& what) {
  if (layers.empty()) fail("plot_channel_ranges: no layers");
  std::string data;
  std::vector<std::string> top, bottom;
  int index = 0;
  for (const char* role : {"keys", "values"}) {
    for (const auto& l : layers) {
      const at::Tensor& x = role[0] == 'k' ? l.k : l.v;
      // [H, D, B * N] -> per (head, channel) min and max, channel index h * D + d.
      at::Tensor flat = x.to(at::kFloat).permute({1, 3, 0, 2}).reshape({x.size(1) * x.size(3), -1});
      at::Tensor lo = flat.amin(-1).contiguous(), hi = flat.amax(-1).contiguous();
      data += fmt::format("# layer {} {}: channel (head*D+d) min max\n", l.layer, role);
      const float* plo = lo.data_ptr<float>();
      const float* phi = hi.data_ptr<float>();
      for (int64_t c = 0; c < lo.numel(); ++c) data += fmt::format("{} {:.6g} {:.6g}\n", c, plo[c], phi[c]);
      data += "\n\n";
      const std::string panel = fmt::format(
          "set title \"layer {} {}\"\nplot 'kv_channel_ranges.dat' index {} using 1:2:3 with filledcurves "
          "lc rgb \"{}\" notitle, '' index {} using 1:2 with lines lc rgb \"#333333\" lw 0.5 notitle, '' index {} "
          "using 1:3 with lines lc rgb \"#333333\" lw 0.5 notitle",
          l.layer, role, index, role[0] == 'k' ? "#4477aa" : "#cc6677", index, index);
      (role[0] == 'k' ? top : bottom).push_back(panel);
      ++index;
    }
  }
  top.insert(top.end(), bottom.begin(), bottom.end());
  GnuplotFigure f;
  f.name = "kv_channel_ranges";
  f.comment = "Per-channel range (min to max over tokens) of " + what + " keys and values, per layer";
  f.settings = "set xlabel \"channel (head * head_dim + d)\"\nset ylabel \"value\"\nset grid";
  f.body = multiplot(2, static_cast<int>(layers.size()), "Per-channel ranges: " + what, top);
  f.width = std::max(700, 380 * static_cast<int>(layers.size()));
  f.height = 700;
  write_gnuplot_figure(plots_dir, f, data);
}

void plot_kv_histograms(const std::string& plots_dir, const std::vector<LayerKV>& layers, const std::string& what,
                        int64_t bins) {
  if (layers.empty()) fail("plot_kv_histograms: no layers");
  std::string data;
  std::vector<std::string> panels;
  int index = 0;
  for (const char* role : {"keys", "values"}) {
    std::string plot = "plot ";
    for (size_t i = 0; i < layers.size(); ++i) {
      const at::Tensor x = (role[0] == 'k' ? layers[i].k : layers[i].v).to(at::kFloat).flatten();
      const double lo = x.min().item<double>();
      double hi = x.max().item<double>();
      if (hi <= lo) hi = lo + 1;
      at::Tensor counts = at::histc(x, bins, lo, hi).contiguous();
      const double width = (hi - lo) / static_cast<double>(bins);
      data += fmt::format("# layer {} {}: bin centre, count\n", layers[i].layer, role);
      const float* c = counts.data_ptr<float>();
      for (int64_t b = 0; b < bins; ++b) data += fmt::format("{:.6g} {}\n", lo + (b + 0.5) * width, c[b]);
      data += "\n\n";
      plot += fmt::format("{}'kv_histograms.dat' index {} using 1:($2 > 0 ? $2 : 1/0) with steps lw 1.5 title \"layer {}\"",
                          i ? ", " : "", index, layers[i].layer);
      ++index;
    }
    panels.push_back(fmt::format("set title \"{}\"\n{}", role, plot));
  }
  GnuplotFigure f;
  f.name = "kv_histograms";
  f.comment = "Histograms of all " + what + " key and value entries per layer (log counts)";
  f.settings = "set xlabel \"value\"\nset ylabel \"count\"\nset logscale y\nset grid\nset key top right";
  f.body = multiplot(1, 2, "K and V entries: " + what, panels);
  f.width = 1100;
  write_gnuplot_figure(plots_dir, f, data);
}

void plot_score_distributions(const std::string& plots_dir, const std::vector<ScoreSamples>& layers, int64_t bins) {
  if (layers.empty()) fail("plot_score_distributions: no layers");
  std::string data;
  std::vector<std::string> panels;
  int index = 0;
  for (const auto& l : layers) {
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& s : l.scores) {
      at::Tensor finite = s.masked_select(at::isfinite(s));
      if (finite.numel() == 0) continue;
      lo = std::min(lo, finite.min().item<double>());
      hi = std::max(hi, finite.max().item<double>());
    }
    if (!(hi > lo)) hi = lo + 1;
    const double width = (hi - lo) / static_cast<double>(bins);
    std::string plot = "plot ";
    for (size_t i = 0; i < l.names.size(); ++i) {
      at::Tensor finite = l.scores[i].masked_select(at::isfinite(l.scores[i])).to(at::kFloat);
      at::Tensor counts = at::histc(finite, bins, lo, hi).contiguous();
      const double norm = std::max<double>(1, finite.numel()) * width;  // density: integrates to 1
      data += fmt::format("# layer {} {}: score, density\n", l.layer, l.names[i]);
      const float* c = counts.data_ptr<float>();
      for (int64_t b = 0; b < bins; ++b) data += fmt::format("{:.6g} {:.6g}\n", lo + (b + 0.5) * width, c[b] / norm);
      data += "\n\n";
      plot += fmt::format("{}'visual_scores.dat' index {} using 1:2 with steps lw 2 title \"{}\"", i ? ", " : "", index,
                          l.names[i]);
      ++index;
    }
    panels.push_back(fmt::format("set title \"layer {}\"\n{}", l.layer, plot));
  }
  GnuplotFigure f;
  f.name = "visual_scores";
  f.comment = "Pre-softmax scores (after 1/sqrt(d)) of text queries on visual keys: full precision, quantized, "
              "quantized and calibrated";
  f.settings = "set xlabel \"pre-softmax score\"\nset ylabel \"density\"\nset grid\nset key outside right top";
  f.body = multiplot(static_cast<int>(layers.size()), 1, "Visual pre-softmax scores", panels);
  f.width = 900;
  f.height = std::max(400, 330 * static_cast<int>(layers.size()));
  write_gnuplot_figure(plots_dir, f, data);
}

}  // namespace calibq
