// calibq list quantizers / calibq quantize / calibq kv-error / calibq kv-stats: the
// quantization library from the command line.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "analysis/kv_stats.h"
#include "analysis/quant_error.h"
#include "analysis/synthetic_kv.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "core/kv/kv_cache.h"
#include "core/quant/registry.h"
#include "core/util/build_info.h"
#include "core/util/error.h"
#include "core/util/shape.h"
#include "experiments/cli/commands.h"
#include "experiments/runner/kv_study.h"

namespace calibq::cli {

namespace {

std::string command_line(int argc, char** argv) {
  std::string out;
  for (int i = 0; i < argc; ++i) out += (i ? " " : "") + std::string(argv[i]);
  return out;
}

void run_list_quantizers() {
  for (const auto& name : QuantizerRegistry::instance().names()) {
    const QuantizerEntry& e = QuantizerRegistry::instance().entry(name);
    std::cout << name << "\n    " << e.summary << "\n";
    for (const auto& o : e.options)
      std::cout << fmt::format("    {:<11} default {:<9} {} ({})\n", o.name, o.default_value, o.help, o.allowed_text());
  }
}

// --- calibq quantize ---

struct QuantizeOptions {
  std::string input, tensor, method, out, axis, role = "key";
  int bits = 0;
  int64_t group_size = -1;
  std::string clip;
  std::vector<std::string> extra;  // key=value
};

void run_quantize(const QuantizeOptions& o) {
  QuantizerSpec spec = parse_quantizer_spec(o.method, "--method");
  auto set = [&](const std::string& k, const std::string& v) {
    if (!v.empty()) spec.options[k] = v;
  };
  set("bits", o.bits ? std::to_string(o.bits) : "");
  set("axis", o.axis);
  set("group_size", o.group_size >= 0 ? std::to_string(o.group_size) : "");
  set("clip", o.clip);
  for (const auto& kv : o.extra) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos) fail("--option '{}' is not key=value", kv);
    spec.options[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (o.role != "key" && o.role != "value") fail("--role '{}' is not one of key, value", o.role);
  auto quantizer = QuantizerRegistry::instance().make(spec, o.role == "key" ? KVRole::Key : KVRole::Value, "--method");
  auto ck = SafetensorsCheckpoint::open(o.input);
  at::Tensor x = ck.tensor(o.tensor);
  const std::string who = fmt::format("{}: tensor '{}'", o.input, o.tensor);
  if (x.dim() != 4) fail("{}: expected [batch, kv_heads, tokens, head_dim], got {}", who, shape_str(x.sizes()));
  if (!at::isFloatingType(x.scalar_type())) fail("{}: expected a floating-point tensor", who);
  auto q = quantizer->quantize(x);
  NamedTensors out = {{"dequantized", q->dequantize().to(at::kFloat)}};
  at::Tensor codes = q->codes();
  if (codes.defined()) out.emplace_back("codes", codes);
  write_safetensors(o.out, out, {{"quantizer", quantizer->describe().dump()}, {"source", o.input + ":" + o.tensor}});
  double mse = (q->dequantize().to(at::kFloat) - x.to(at::kFloat)).pow(2).mean().item<double>();
  std::cout << fmt::format("{} {} -> {}: {} bytes ({:.4f} of fp16), MSE {:.6g}{}\n", quantizer->label(),
                           shape_str(x.sizes()), o.out, q->nbytes(), q->nbytes() / (2.0 * x.numel()), mse,
                           codes.defined() ? "" : " (this format has no codes)");
}

// --- inputs shared by kv-error and kv-stats ---

struct KVInputOptions {
  bool synthetic = false;
  uint64_t seed = 0;
  std::string input, keys = "keys", values = "values", queries = "queries";
  int64_t system = -1, visual = -1;
  int64_t visual_tokens = 576;
};

// One or more layers of (K, V, Q) with segment lengths.
std::vector<QuantErrorInput> load_kv(const KVInputOptions& o) {
  if (o.synthetic == !o.input.empty()) fail("give exactly one of --synthetic and --input FILE");
  if (o.synthetic) {
    SyntheticKVShape shape;
    shape.visual = o.visual_tokens;
    return {make_synthetic_kv(shape, o.seed)};
  }
  auto ck = SafetensorsCheckpoint::open(o.input);
  at::Tensor k = ck.tensor(o.keys), v = ck.tensor(o.values);
  at::Tensor q = ck.contains(o.queries) ? ck.tensor(o.queries) : at::Tensor();
  auto layers = [&](at::Tensor t, const std::string& name) {
    if (t.dim() == 4) t = t.unsqueeze(0);
    if (t.dim() != 5)
      fail("{}: tensor '{}' must be [batch, heads, tokens, head_dim] or [layers, batch, heads, tokens, head_dim], got {}",
           o.input, name, shape_str(t.sizes()));
    return t;
  };
  k = layers(k, o.keys);
  v = layers(v, o.values);
  if (k.sizes() != v.sizes())
    fail("{}: keys {} and values {} differ in shape", o.input, shape_str(k.sizes()), shape_str(v.sizes()));
  if (q.defined()) q = layers(q, o.queries);
  const int64_t n = k.size(3);
  // A dump of `kv-stats CONFIG --dump` records its segment lengths; flags override them.
  auto recorded = [&](const char* key, int64_t flag, int64_t fallback) -> int64_t {
    if (flag >= 0) return flag;
    auto it = ck.metadata().find(key);
    return it == ck.metadata().end() ? fallback : std::stoll(it->second);
  };
  const int64_t system = recorded("system", o.system, 0);
  const int64_t visual = recorded("visual", o.visual, n - system);
  if (system + visual > n) fail("--system {} + --visual {} exceed the {} tokens of '{}'", system, visual, n, o.keys);
  std::vector<QuantErrorInput> out;
  for (int64_t l = 0; l < k.size(0); ++l) {
    QuantErrorInput in;
    in.k = k[l];
    in.v = v[l];
    // Without recorded queries, the last tokens' keys stand in for them (one per head).
    in.q = q.defined() ? q[l] : in.k.narrow(2, n - std::min<int64_t>(n, 8), std::min<int64_t>(n, 8));
    in.system_len = system;
    in.visual_len = visual;
    out.push_back(in);
  }
  return out;
}

void add_kv_input_options(CLI::App* cmd, KVInputOptions& o) {
  cmd->add_flag("--synthetic", o.synthetic, "Use a synthetic K/V with planted outlier channels in the keys");
  cmd->add_option("--seed", o.seed, "Seed of the synthetic K/V");
  cmd->add_option("--visual-tokens", o.visual_tokens, "Visual tokens of the synthetic K/V")->capture_default_str();
  cmd->add_option("--input", o.input, "A safetensors file with keys/values ([B,H,N,D] or [L,B,H,N,D])");
  cmd->add_option("--keys", o.keys, "Name of the keys tensor")->capture_default_str();
  cmd->add_option("--values", o.values, "Name of the values tensor")->capture_default_str();
  cmd->add_option("--queries", o.queries, "Name of the queries tensor [.., B, Hq, T, D] (optional)")->capture_default_str();
  cmd->add_option("--system", o.system, "System-prompt tokens at the start (default: the file's metadata, else 0)");
  cmd->add_option("--visual", o.visual, "Visual tokens after them (default: the file's metadata, else all the rest)");
}

// --- calibq kv-error ---

struct KVErrorOptions {
  KVInputOptions in;
  std::vector<std::string> methods;
  std::vector<int> bits{1, 2, 4};
  std::string segments = "visual";
  std::string out;
};

std::vector<std::pair<std::string, std::string>> error_specs(const KVErrorOptions& o) {
  std::vector<std::string> methods = o.methods.empty() ? QuantizerRegistry::instance().names() : o.methods;
  std::vector<std::pair<std::string, std::string>> out;  // (key spec, value spec)
  for (const auto& m : methods) {
    QuantizerSpec spec = parse_quantizer_spec(m, "--methods");
    const QuantizerEntry& e = QuantizerRegistry::instance().entry(spec.method, "--methods");
    bool has_bits = false;
    for (const auto& opt : e.options) has_bits |= opt.name == "bits";
    if (spec.method == "token_drop" && !spec.options.count("keep")) {
      // The same memory as b-bit codes: keep b/16 of the tokens.
      for (int b : o.bits) out.emplace_back(m + (m.find(':') == std::string::npos ? ":" : ",") + fmt::format("keep={}", b / 16.0), "");
    } else if (has_bits && !spec.options.count("bits")) {
      for (int b : o.bits) out.emplace_back(m + (m.find(':') == std::string::npos ? ":" : ",") + fmt::format("bits={}", b), "");
    } else {
      out.emplace_back(m, "");
    }
  }
  for (auto& p : out) p.second = p.first;
  return out;
}

void run_kv_error(const KVErrorOptions& o, const std::string& cmdline) {
  std::vector<QuantErrorInput> layers = load_kv(o.in);
  SegmentSet segments = SegmentSet::parse(o.segments, "--segments");
  std::vector<QuantErrorResult> rows;
  for (const auto& [kspec, vspec] : error_specs(o)) {
    KVCacheConfig cfg{make_quantizer(kspec, KVRole::Key), make_quantizer(vspec, KVRole::Value), segments};
    std::vector<QuantErrorResult> per_layer;
    for (const auto& layer : layers) per_layer.push_back(quant_error(layer, cfg));
    rows.push_back(mean_quant_error(per_layer));
  }
  Table table = quant_error_table(rows);
  const auto& l0 = layers.front();
  std::string source = o.in.synthetic ? fmt::format("synthetic K/V (seed {}, planted outlier key channels)", o.in.seed)
                                      : o.in.input;
  std::string header = fmt::format(
      "Quantization error of the {} segment(s): {} layer(s) of K/V {}, queries {}, {} system + {} visual tokens. "
      "Errors are against the same cache in full precision; 'bytes' counts the quantized segments' K and V.\n",
      segments.to_string(), layers.size(), shape_str(l0.k.sizes()), shape_str(l0.q.sizes()), l0.system_len, l0.visual_len);
  std::cout << header << "\n" << table.markdown();
  if (!o.out.empty()) {
    namespace fs = std::filesystem;
    std::string md = fmt::format("<!-- made by: {} -->\n{}\nSource: {}\n\n{}", cmdline, header, source, table.markdown());
    write_text_atomically((fs::path(o.out) / "kv_error.md").string(), md);
    write_text_atomically((fs::path(o.out) / "kv_error.csv").string(), table.csv());
    write_text_atomically((fs::path(o.out) / "kv_error.tex").string(), table.latex(header));
    nlohmann::json j = {{"command", cmdline}, {"source", source}, {"segments", segments.to_string()},
                        {"build", to_json(build_info())}, {"rows", table.json()}};
    write_text_atomically((fs::path(o.out) / "kv_error.json").string(), j.dump(2) + "\n");
    std::cout << fmt::format("\nwrote {}/kv_error.{{md,csv,tex,json}}\n", o.out);
  }
}

// --- calibq kv-stats ---

struct KVStatsOptions {
  KVInputOptions in;
  std::string config;
  KVStudyOptions study;
  std::string out;
  int64_t bins = 64;
  double outlier_factor = 3.0;
};

void run_kv_stats(const KVStatsOptions& o, const std::string& cmdline) {
  if (!o.config.empty()) {
    if (o.in.synthetic || !o.in.input.empty()) fail("kv-stats: give an experiment CONFIG or --input/--synthetic, not both");
    ExperimentConfig exp = load_experiment(o.config);
    KVStudyOptions study = o.study;
    study.out_dir = o.out.empty() ? "runs/" + exp.name + "/kv-stats" : o.out;
    study.bins = o.bins;
    study.outlier_factor = o.outlier_factor;
    study.command = cmdline;
    run_kv_study(exp, study);
    return;
  }
  if (o.out.empty()) fail("kv-stats: --out is required with --input or --synthetic");
  std::vector<QuantErrorInput> layers = load_kv(o.in);
  KVStatsConfig cfg;
  cfg.bins = o.bins;
  cfg.outlier_factor = o.outlier_factor;
  KVStatsCollector stats(cfg);
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& in = layers[l];
    const int64_t n = in.k.size(2), text = n - in.system_len - in.visual_len;
    const std::array<std::tuple<Segment, int64_t, int64_t>, 3> segs = {
        std::tuple{Segment::System, int64_t{0}, in.system_len}, {Segment::Visual, in.system_len, in.visual_len},
        {Segment::Text, in.system_len + in.visual_len, text}};
    for (const auto& [seg, begin, len] : segs) {
      if (len == 0) continue;
      stats.add(static_cast<int64_t>(l), KVRole::Key, seg, in.k.narrow(2, begin, len));
      stats.add(static_cast<int64_t>(l), KVRole::Value, seg, in.v.narrow(2, begin, len));
    }
  }
  stats.write(o.out);
  Table heads = stats.head_table();
  std::cout << heads.markdown() << fmt::format("\nwrote {}/kv_channel_stats.csv, kv_head_stats.csv, kv_histograms.safetensors\n", o.out);
}

}  // namespace

void add_quant_commands(CLI::App& app, int argc, char** argv) {
  const std::string cmdline = command_line(argc, argv);
  CLI::App* list = app.add_subcommand("list", "List what calibq has registered");
  list->require_subcommand(1);
  list->add_subcommand("quantizers", "Each quantizer with its options and defaults")->callback(run_list_quantizers);

  auto q = std::make_shared<QuantizeOptions>();
  CLI::App* quant = app.add_subcommand("quantize", "Quantize one tensor of a safetensors file and write the "
                                                   "dequantized tensor and the codes");
  quant->add_option("--input", q->input, "safetensors file")->required();
  quant->add_option("--tensor", q->tensor, "tensor name ([batch, kv_heads, tokens, head_dim])")->required();
  quant->add_option("--method", q->method, "quantizer (see calibq list quantizers), with options as method:key=value,...")->required();
  quant->add_option("--bits", q->bits, "bits per element");
  quant->add_option("--axis", q->axis, "channel: statistics over the tokens of each channel; token: over the channels of each token");
  quant->add_option("--group-size", q->group_size, "group size along the statistics axis (0: whole axis)");
  quant->add_option("--clip", q->clip, "clipping factor on the range, or auto");
  quant->add_option("--role", q->role, "key or value (matters for clip=auto and role-specific quantizers)")->capture_default_str();
  quant->add_option("--option", q->extra, "another quantizer option, key=value (repeatable)");
  quant->add_option("--out", q->out, "output safetensors file")->required();
  quant->callback([q] { run_quantize(*q); });

  auto e = std::make_shared<KVErrorOptions>();
  CLI::App* err = app.add_subcommand("kv-error", "Error table of quantizers on a K/V (a dump, or synthetic)");
  add_kv_input_options(err, e->in);
  err->add_option("--methods", e->methods, "quantizer specs (default: every registered one)")->delimiter(';');
  err->add_option("--bits", e->bits, "bit-widths for quantizers with a bits option")->delimiter(',')->capture_default_str();
  err->add_option("--segments", e->segments, "segments to quantize: visual, all, or a list")->capture_default_str();
  err->add_option("--out", e->out, "folder for kv_error.{md,csv,tex,json}");
  err->callback([e, cmdline] { run_kv_error(*e, cmdline); });

  auto s = std::make_shared<KVStatsOptions>();
  CLI::App* st = app.add_subcommand(
      "kv-stats", "Per layer/head/channel KV statistics, quantizer error tables and KV plots: of a model's prefill on "
                  "an experiment's dataset (CONFIG), or of a K/V dump or a synthetic K/V");
  st->add_option("config", s->config, "experiment YAML: its first cell's model and dataset, its sweep's quantizers");
  add_kv_input_options(st, s->in);
  st->add_option("--out", s->out, "output folder (default with CONFIG: runs/<name>/kv-stats)");
  st->add_option("--samples", s->study.samples, "dataset samples to prefill (with CONFIG)")->capture_default_str();
  st->add_option("--layers", s->study.layers, "layers to plot (with CONFIG; default: first, middle, last)")->delimiter(',');
  st->add_option("--score-quantizer", s->study.score_quantizer,
                 "key quantizer of the score-distribution plot (with CONFIG)")->capture_default_str();
  st->add_flag("--dump", s->study.dump, "also write kv_dump.safetensors of the first sample (kv-error --input reads it)");
  st->add_option("--bins", s->bins, "histogram bins")->capture_default_str();
  st->add_option("--outlier-factor", s->outlier_factor, "outlier: absmax above this times the head's median")->capture_default_str();
  st->callback([s, cmdline] { run_kv_stats(*s, cmdline); });
}

}  // namespace calibq::cli
