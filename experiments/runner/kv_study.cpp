#include "experiments/runner/kv_study.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <set>

#include <unistd.h>

#include "analysis/kv_plots.h"
#include "analysis/kv_stats.h"
#include "analysis/plots.h"
#include "analysis/quant_error.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/models/model.h"
#include "core/models/processor.h"
#include "core/quant/registry.h"
#include "core/util/build_info.h"
#include "core/util/error.h"
#include "datasets/images.h"

namespace calibq {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// One sample's prefill activations: per layer k, v [1, H, N, D] and the text queries
// [1, Hq, T, D], in float32 on the CPU.
struct Captured {
  std::vector<at::Tensor> k, v, q;
  int64_t system = 0, visual = 0;
};

std::vector<int64_t> plot_layers(const std::vector<int64_t>& asked, int64_t n_layers) {
  std::vector<int64_t> out = asked;
  if (out.empty()) {
    std::set<int64_t> s{0, n_layers / 2, n_layers - 1};
    out.assign(s.begin(), s.end());
  }
  for (int64_t l : out)
    if (l < 0 || l >= n_layers) fail("--layers: layer {} does not exist (the model has {} layers: 0..{})", l, n_layers, n_layers - 1);
  return out;
}

at::Tensor cat_tokens(const std::vector<Captured>& all, size_t layer, bool keys, int64_t begin_of(const Captured&),
                      int64_t len_of(const Captured&)) {
  std::vector<at::Tensor> parts;
  for (const auto& c : all) {
    const at::Tensor& x = keys ? c.k[layer] : c.v[layer];
    if (len_of(c) > 0) parts.push_back(x.narrow(2, begin_of(c), len_of(c)));
  }
  return parts.empty() ? at::Tensor() : at::cat(parts, 2);
}

int64_t sys_begin(const Captured&) { return 0; }
int64_t sys_len(const Captured& c) { return c.system; }
int64_t vis_begin(const Captured& c) { return c.system; }
int64_t vis_len(const Captured& c) { return c.visual; }
int64_t text_begin(const Captured& c) { return c.system + c.visual; }
int64_t text_len(const Captured& c) { return c.k[0].size(2) - c.system - c.visual; }

}  // namespace

void run_kv_study(const ExperimentConfig& exp, const KVStudyOptions& o) {
  if (exp.cells.empty()) fail("{}: no cells", exp.file);
  if (o.samples <= 0) fail("--samples must be positive, got {}", o.samples);
  const CellConfig& base = exp.cells.front();
  Dataset data = load_dataset(base.dataset);
  if (data.samples.empty()) fail("{}: the dataset has no samples", exp.file);
  const size_t n = std::min(data.samples.size(), static_cast<size_t>(o.samples));
  const at::ScalarType dtype = base.model.dtype == "fp16" ? at::kHalf : base.model.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const at::Device device = base.model.device == "cpu" ? at::Device(at::kCPU) : at::Device(base.model.device);
  auto model = load_model(base.model.path, dtype, device);
  std::cerr << model->load_report() << "\n";
  const ModelProcessor processor = ModelProcessor::load(base.model.path, model->config());

  // 1. Prefill each sample and keep its activations.
  std::vector<Captured> captured;
  const bool tty = isatty(fileno(stderr)) != 0;
  for (size_t i = 0; i < n; ++i) {
    const Sample& s = data.samples[i];
    RgbImage image = read_rgb_image(s.image);
    ModelInputs in = processor.collate({processor.process(&image, s.prompt)});
    Captured c;
    auto [sys, vis] = model->observe_prefill(in, [&](size_t, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      c.k.push_back(k.to(at::kCPU, at::kFloat));
      c.v.push_back(v.to(at::kCPU, at::kFloat));
      c.q.push_back(q.to(at::kCPU, at::kFloat));
    });
    c.system = sys;
    c.visual = vis;
    if (vis == 0) fail("{}: sample '{}' has no image tokens", exp.file, s.id);
    for (auto& q : c.q) q = q.narrow(2, sys + vis, q.size(2) - sys - vis).contiguous();
    if (c.q.front().size(2) == 0) fail("{}: sample '{}' has no text tokens after the image", exp.file, s.id);
    captured.push_back(std::move(c));
    if (tty) std::cerr << fmt::format("\rkv-stats: prefill {}/{}", i + 1, n) << std::flush;
  }
  std::cerr << fmt::format("{}kv-stats: {} samples prefilled\n", tty ? "\r" : "", n);
  const size_t n_layers = captured.front().k.size();
  fs::create_directories(o.out_dir);

  // 2. Statistics per layer, segment, head and channel (samples pooled along the tokens).
  KVStatsConfig scfg;
  scfg.bins = o.bins;
  scfg.outlier_factor = o.outlier_factor;
  KVStatsCollector stats(scfg);
  const std::array<std::tuple<Segment, int64_t (*)(const Captured&), int64_t (*)(const Captured&)>, 3> segments = {
      std::tuple{Segment::System, &sys_begin, &sys_len}, {Segment::Visual, &vis_begin, &vis_len},
      {Segment::Text, &text_begin, &text_len}};
  for (size_t l = 0; l < n_layers; ++l)
    for (const auto& [seg, begin, len] : segments)
      for (bool keys : {true, false}) {
        at::Tensor x = cat_tokens(captured, l, keys, begin, len);
        if (x.defined()) stats.add(static_cast<int64_t>(l), keys ? KVRole::Key : KVRole::Value, seg, x);
      }
  stats.write(o.out_dir);

  // 3. Error of every quantizer pair of the sweep, per layer (mean over samples) and overall.
  std::vector<std::pair<std::string, std::string>> pairs;
  std::string segments_text = base.kv.segments;
  for (const auto& c : exp.cells) {
    std::pair<std::string, std::string> p{c.kv.key_spec(), c.kv.value_spec()};
    if ((p.first.empty() && p.second.empty()) || std::find(pairs.begin(), pairs.end(), p) != pairs.end()) continue;
    pairs.push_back(p);
  }
  std::vector<QuantErrorResult> overall;
  Table by_layer({"layer", "key", "value", "key_rel", "value_rel", "scores_rel", "output_rel", "kl"});
  for (const auto& [kspec, vspec] : pairs) {
    const KVCacheConfig cfg = make_kv_cache_config(kspec, vspec, segments_text, "kv.");
    std::vector<QuantErrorResult> layers_mean;
    for (size_t l = 0; l < n_layers; ++l) {
      std::vector<QuantErrorResult> per_sample;
      for (const auto& c : captured) {
        QuantErrorInput in{c.k[l], c.v[l], c.q[l], c.system, c.visual, 0.0};
        per_sample.push_back(quant_error(in, cfg));
      }
      QuantErrorResult m = mean_quant_error(per_sample);
      by_layer.add_row({std::to_string(l), m.key_method, m.value_method, cell(m.key_rel), cell(m.value_rel),
                        cell(m.scores_rel), cell(m.output_rel), cell(m.kl, 6)});
      layers_mean.push_back(m);
    }
    overall.push_back(mean_quant_error(layers_mean));
  }
  const std::string source = fmt::format("{} ({} samples of {}; model {})", exp.file, n, data.name, base.model.path);
  if (!overall.empty()) {
    Table t = quant_error_table(overall);
    const std::string header = fmt::format(
        "Quantization error on real prefill activations: {} layers, {} samples, {} system + {} visual tokens, "
        "segments {}. Errors against the same cache in full precision, averaged over layers and samples; bytes summed "
        "over layers and samples.",
        n_layers, n, captured.front().system, captured.front().visual, segments_text);
    write_text_atomically(o.out_dir + "/kv_error.md",
                          fmt::format("<!-- made by: {} -->\n{}\n\nSource: {}\n\n{}", o.command, header, source, t.markdown()));
    write_text_atomically(o.out_dir + "/kv_error.csv", t.csv());
    write_text_atomically(o.out_dir + "/kv_error.tex", t.latex(header));
    write_text_atomically(o.out_dir + "/kv_error.json",
                          json({{"command", o.command}, {"source", source}, {"rows", t.json()}}).dump(1) + "\n");
    write_text_atomically(o.out_dir + "/kv_error_by_layer.csv", by_layer.csv());
    std::cerr << t.markdown();
  }

  // 4. Visual pre-softmax scores: full precision, quantized, quantized + calibrated.
  const std::vector<int64_t> layers = plot_layers(o.layers, static_cast<int64_t>(n_layers));
  QuantizerSpec spec = parse_quantizer_spec(o.score_quantizer, "--score-quantizer");
  const QuantizerEntry& entry = QuantizerRegistry::instance().entry(spec.method, "--score-quantizer");
  std::vector<std::pair<std::string, std::string>> variants{{"fp", ""}};
  bool has_calibrate = false;
  for (const auto& opt : entry.options) has_calibrate |= opt.name == "calibrate";
  if (has_calibrate && make_quantizer(o.score_quantizer, KVRole::Key)->calibrates()) {
    const std::string uncal = o.score_quantizer + (o.score_quantizer.find(':') == std::string::npos ? ":" : ",") + "calibrate=off";
    variants.emplace_back(uncal, uncal);
  }
  variants.emplace_back(o.score_quantizer, o.score_quantizer);
  std::vector<ScoreSamples> score_plots;
  json summary = json::array();
  for (int64_t l : layers) {
    ScoreSamples ss;
    ss.layer = l;
    for (const auto& [name, kspec] : variants) {
      const KVCacheConfig cfg = make_kv_cache_config(kspec, "", "visual", "--score-quantizer ");
      std::vector<at::Tensor> flat;
      double row_max = 0, row_min = 0;
      int64_t rows = 0;
      for (const auto& c : captured) {
        LayerKVCache cache(cfg);
        cache.prefill(c.k[l], c.v[l], c.system, c.visual);
        const double scale = 1.0 / std::sqrt(static_cast<double>(c.k[l].size(3)));
        at::Tensor s = cache.scores(c.q[l], scale).narrow(-1, c.system, c.visual);  // [1, Hq, T, V]
        row_max += s.amax(-1).sum().item<double>();
        row_min += s.amin(-1).sum().item<double>();
        rows += s.numel() / s.size(-1);
        flat.push_back(s.flatten());
      }
      ss.names.push_back(name);
      ss.scores.push_back(at::cat(flat));
      summary.push_back({{"layer", l}, {"variant", name}, {"rows", rows}, {"mean_row_max", row_max / rows},
                         {"mean_row_min", row_min / rows}, {"mean", ss.scores.back().mean().item<double>()},
                         {"std", ss.scores.back().std().item<double>()}});
    }
    score_plots.push_back(std::move(ss));
  }
  write_text_atomically(o.out_dir + "/score_summary.json",
                        json({{"command", o.command}, {"source", source}, {"rows", summary}}).dump(1) + "\n");

  // 5. Plots of the visual segment (and the scores).
  std::vector<LayerKV> visual;
  for (int64_t l : layers)
    visual.push_back({l, cat_tokens(captured, static_cast<size_t>(l), true, &vis_begin, &vis_len),
                      cat_tokens(captured, static_cast<size_t>(l), false, &vis_begin, &vis_len)});
  const std::string plots = o.out_dir + "/plots";
  plot_channel_ranges(plots, visual, "visual tokens");
  plot_kv_histograms(plots, visual, "visual tokens");
  plot_score_distributions(plots, score_plots);
  const int rendered = render_plots(o.out_dir);

  if (o.dump) {
    const Captured& c = captured.front();
    write_safetensors(o.out_dir + "/kv_dump.safetensors",
                      {{"keys", at::stack(c.k)}, {"values", at::stack(c.v)}, {"queries", at::stack(c.q)}},
                      {{"system", std::to_string(c.system)}, {"visual", std::to_string(c.visual)},
                       {"sample", data.samples.front().id}, {"model", base.model.path}});
  }
  write_text_atomically(o.out_dir + "/command.txt", o.command + "\n");
  std::cerr << fmt::format("wrote {}: kv_channel_stats.csv, kv_head_stats.csv, kv_histograms.safetensors, kv_error.*, "
                           "score_summary.json, {} plots{}\n",
                           o.out_dir, rendered, o.dump ? ", kv_dump.safetensors" : "");
}

}  // namespace calibq
