#include "analysis/plots.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "core/io/atomic_file.h"
#include "core/util/error.h"

namespace calibq {

namespace fs = std::filesystem;

void write_gnuplot_figure(const std::string& dir, const GnuplotFigure& f, const std::string& data) {
  fs::create_directories(dir);
  write_text_atomically((fs::path(dir) / (f.name + ".dat")).string(), data);
  const std::string gp = fmt::format(
      "# {}\n# Data: {}.dat. Re-render with `calibq plot <run folder>` or `gnuplot {}.gp` in this folder.\n"
      "set termoption noenhanced\n{}\n"
      "set terminal pngcairo noenhanced size {},{} font \",10\"\nset output \"{}.png\"\n{}\n"
      "set terminal svg noenhanced size {},{} dynamic\nset output \"{}.svg\"\n{}\n",
      f.comment, f.name, f.name, f.settings, f.width, f.height, f.name, f.body, f.width, f.height, f.name, f.body);
  write_text_atomically((fs::path(dir) / (f.name + ".gp")).string(), gp);
}

int render_plots(const std::string& dir) {
  const fs::path plots = fs::path(dir) / "plots";
  if (!fs::is_directory(plots)) fail("{}: no plots folder", plots.string());
  int n = 0;
  for (const auto& e : fs::directory_iterator(plots)) {
    if (e.path().extension() != ".gp") continue;
    const std::string cmd = fmt::format("cd '{}' && gnuplot '{}' 2>&1", plots.string(), e.path().filename().string());
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) fail("cannot run gnuplot");
    std::string out;
    char buf[512];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    const int rc = pclose(p);
    if (rc != 0) fail("{}: gnuplot failed ({}): {}", e.path().string(), rc, out.substr(0, 400));
    ++n;
  }
  return n;
}

std::vector<ThroughputPoint> throughput_points(const nlohmann::json& doc, const std::string& series_key,
                                               const std::string& y_key, const std::string& source,
                                               const std::string& x_key) {
  const nlohmann::json& rows = doc.is_object() && doc.contains("rows") ? doc.at("rows") : doc;
  if (!rows.is_array()) fail("{}: expected a list of benchmark rows (or {{\"rows\": [...]}})", source);
  std::vector<ThroughputPoint> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    for (const auto& key : {series_key, x_key, y_key})
      if (!r.is_object() || !r.contains(key))
        fail("{}: row {} has no '{}' (needs '{}', '{}' and '{}')", source, i, key, series_key, x_key, y_key);
    if (r.at(y_key).is_null() || r.at(x_key).is_null()) continue;  // a batch that did not fit: no point
    ThroughputPoint p;
    p.series = r.at(series_key).is_string() ? r.at(series_key).get<std::string>() : r.at(series_key).dump();
    p.batch = r.at(x_key).get<double>();
    p.tokens_per_second = r.at(y_key).get<double>();
    out.push_back(p);
  }
  if (out.empty()) fail("{}: no benchmark rows with '{}'", source, y_key);
  return out;
}

void plot_throughput(const std::string& dir, const std::vector<ThroughputPoint>& points, const std::string& y_label,
                     const std::string& title, const ThroughputAxis& axis) {
  std::map<std::string, std::map<double, double>> series;
  for (const auto& p : points) series[p.series][p.batch] = p.tokens_per_second;
  std::string data, plot;
  int index = 0;
  for (const auto& [name, pts] : series) {
    data += "# " + name + "\n# " + axis.key + " " + y_label + "\n";
    for (const auto& [b, y] : pts) data += fmt::format("{} {:.6g}\n", b, y);
    data += "\n\n";
    plot += fmt::format("{}'{}.dat' index {} using 1:2 with linespoints lw 2 pt 7 title \"{}\"", index ? ", " : "",
                        axis.figure, index, name);
    ++index;
  }
  GnuplotFigure f;
  f.name = axis.figure;
  f.comment = title;
  f.settings = fmt::format("set title \"{}\"\nset xlabel \"{}\"\nset ylabel \"{}\"\n{}set grid\nset key left top", title,
                           axis.label, y_label, axis.log2 ? "set logscale x 2\n" : "");
  f.body = "plot " + plot;
  write_gnuplot_figure((fs::path(dir) / "plots").string(), f, data);
}

}  // namespace calibq
