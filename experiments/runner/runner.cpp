#include "experiments/runner/runner.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <deque>
#include <map>
#include <set>

#include "analysis/metrics/caption_metrics.h"
#include "analysis/metrics/ptb_tokenizer.h"
#include "analysis/metrics/vqa_metrics.h"
#include "analysis/plots.h"
#include "analysis/table.h"
#include "core/io/atomic_file.h"
#include "core/io/json_file.h"
#include "core/models/model.h"
#include "core/models/processor.h"
#include "core/util/error.h"
#include "datasets/images.h"

namespace calibq {

using json = nlohmann::json;
namespace fs = std::filesystem;

void parse_shard(const std::string& text, int64_t& index, int64_t& count) {
  std::string t = text;
  if (t.empty()) {
    const char* id = std::getenv("SLURM_ARRAY_TASK_ID");
    const char* n = std::getenv("SLURM_ARRAY_TASK_COUNT");
    if (!id || !n) {
      index = 0;
      count = 1;
      return;
    }
    t = std::string(id) + "/" + n;
  }
  const size_t slash = t.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    size_t used = 0;
    index = std::stoll(t.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument("index");
    count = std::stoll(t.substr(slash + 1), &used);
    if (used != t.size() - slash - 1) throw std::invalid_argument("count");
  } catch (const std::exception&) {
    fail("--shard '{}' is not i/n (e.g. 0/4)", t);
  }
  if (count < 1 || index < 0 || index >= count) fail("--shard '{}': need 0 <= i < n", t);
}

namespace {

using clock_type = std::chrono::steady_clock;

// Items done, rate and time left, per cell and overall, redrawn in place on a terminal;
// on anything else one line per finished cell.
class Progress {
 public:
  Progress(int64_t total_items, size_t cells) : total_(total_items), cells_(cells), tty_(isatty(fileno(stderr)) != 0) {}
  void start_cell(size_t index, const std::string& label, int64_t items) {
    cell_ = index;
    label_ = label;
    cell_total_ = items;
    cell_done_ = 0;
    cell_start_ = clock_type::now();
  }
  void advance(int64_t n) {
    cell_done_ += n;
    done_ += n;
    if (!tty_) return;
    const double cell_s = seconds(cell_start_), all_s = seconds(start_);
    const double rate = cell_s > 0 ? cell_done_ / cell_s : 0, all_rate = all_s > 0 ? done_ / all_s : 0;
    std::fprintf(stderr, "\r\033[K[cell %zu/%zu %s] %lld/%lld  %.2f/s  left %s | all %lld/%lld  left %s", cell_ + 1, cells_,
                 label_.c_str(), static_cast<long long>(cell_done_), static_cast<long long>(cell_total_), rate,
                 eta(cell_total_ - cell_done_, rate).c_str(), static_cast<long long>(done_), static_cast<long long>(total_),
                 eta(total_ - done_, all_rate).c_str());
    std::fflush(stderr);
  }
  void skip(int64_t n) { total_ -= n; }
  void end_cell(const std::string& summary) {
    std::fprintf(stderr, "%s[cell %zu/%zu] %s: %s (%.1f s)\n", tty_ ? "\r\033[K" : "", cell_ + 1, cells_, label_.c_str(),
                 summary.c_str(), seconds(cell_start_));
  }

 private:
  static double seconds(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }
  static std::string eta(int64_t left, double rate) {
    if (rate <= 0) return "?";
    const auto s = static_cast<int64_t>(left / rate);
    return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
  }
  int64_t total_, done_ = 0, cell_total_ = 0, cell_done_ = 0;
  size_t cells_, cell_ = 0;
  bool tty_;
  std::string label_;
  clock_type::time_point start_ = clock_type::now(), cell_start_;
};

struct Batch {
  int64_t index = 0;
  std::vector<size_t> samples;
};

// One forward pass needs every sample's image tokens at the same positions. InternVL images
// of different tile grids (different numbers of visual tokens) cannot share one: such a batch
// runs as one generate() per layout, and the results come back in the batch's order.
GenerationResult generate_by_layout(MultimodalModel& model, const ModelProcessor& proc,
                                    const std::vector<ProcessedSample>& samples, const GenerationConfig& gen,
                                    const KVCacheConfig& kv) {
  std::map<size_t, std::vector<size_t>> groups;  // end of the image tokens -> samples
  for (size_t i = 0; i < samples.size(); ++i) groups[proc.image_end(samples[i])].push_back(i);
  if (groups.size() == 1) return model.generate(proc.collate(samples), gen, kv);
  GenerationResult all;
  all.tokens.resize(samples.size());
  all.stopped.resize(samples.size());
  for (const auto& [end, members] : groups) {
    std::vector<ProcessedSample> part;
    for (size_t i : members) part.push_back(samples[i]);
    GenerationResult r = model.generate(proc.collate(part), gen, kv);
    for (size_t k = 0; k < members.size(); ++k) {
      all.tokens[members[k]] = std::move(r.tokens[k]);
      all.stopped[members[k]] = r.stopped[k];
    }
    all.steps += r.steps;
    all.prefill_seconds += r.prefill_seconds;
    all.decode_seconds += r.decode_seconds;
    all.kv_bytes += r.kv_bytes;
    all.kv_fp16_bytes += r.kv_fp16_bytes;
  }
  return all;
}

std::vector<Batch> make_batches(size_t n, int64_t batch_size) {
  std::vector<Batch> out;
  for (size_t i = 0; i < n; i += static_cast<size_t>(batch_size)) {
    Batch b{static_cast<int64_t>(out.size()), {}};
    for (size_t k = i; k < std::min(n, i + static_cast<size_t>(batch_size)); ++k) b.samples.push_back(k);
    out.push_back(std::move(b));
  }
  return out;
}

std::string shard_file(int64_t i, int64_t n) { return fmt::format("predictions.shard-{}-of-{}.jsonl", i, n); }

// The complete batches of a predictions file, in file order; a batch with fewer lines than
// it has samples (a run killed while writing) is dropped, and so is a torn last line.
// `dropped` (when given) tells whether the file held anything else.
std::map<int64_t, std::vector<std::string>> read_complete_batches(const std::string& path, const std::vector<Batch>& batches,
                                                                  bool* dropped = nullptr) {
  std::map<int64_t, std::vector<std::string>> by_batch;
  if (dropped) *dropped = false;
  std::ifstream in(path, std::ios::binary);
  if (!in) return by_batch;
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t kept_bytes = 0;
  size_t start = 0;
  for (size_t nl; (nl = content.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string line = content.substr(start, nl - start);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      continue;
    }
    const int64_t b = j.value("batch", int64_t{-1});
    if (b >= 0 && b < static_cast<int64_t>(batches.size())) by_batch[b].push_back(line);
  }
  for (auto it = by_batch.begin(); it != by_batch.end();)
    it = it->second.size() == batches[it->first].samples.size() ? std::next(it) : by_batch.erase(it);
  for (const auto& [b, lines] : by_batch)
    for (const auto& l : lines) kept_bytes += l.size() + 1;
  if (dropped) *dropped = kept_bytes != content.size();
  return by_batch;
}

void write_lines(const std::string& path, const std::map<int64_t, std::vector<std::string>>& by_batch) {
  write_file_atomically(path, [&](std::ostream& out) {
    for (const auto& [b, lines] : by_batch)
      for (const auto& l : lines) out << l << '\n';
  });
}

// Appends one batch's lines in one write, flushed to disk before the next batch starts.
void append_batch(const std::string& path, const std::vector<std::string>& lines) {
  std::string chunk;
  for (const auto& l : lines) chunk += l + "\n";
  FILE* f = std::fopen(path.c_str(), "ab");
  if (!f) fail("{}: cannot append", path);
  const bool ok = std::fwrite(chunk.data(), 1, chunk.size(), f) == chunk.size() && std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) fail("{}: write failed (disk full?)", path);
}

std::string main_metric(TaskKind k) {
  switch (k) {
    case TaskKind::Caption: return "CIDEr";
    case TaskKind::Vqa: return "accuracy";
    case TaskKind::Anls: return "ANLS";
  }
  return "";
}

json score(TaskKind kind, const std::vector<json>& preds) {
  json m;
  switch (kind) {
    case TaskKind::Caption: {
      CaptionRefs refs;
      CaptionCands cands;
      for (const auto& p : preds) {
        const std::string id = p.at("id").get<std::string>();
        for (const auto& r : p.at("references")) refs[id].push_back(coco_tokenize(r.get<std::string>()));
        cands[id] = coco_tokenize(p.at("prediction").get<std::string>());
      }
      CaptionScores s = score_captions(refs, cands);
      for (int n = 0; n < 4; ++n) m[fmt::format("Bleu_{}", n + 1)] = s.bleu[n];
      m["ROUGE_L"] = s.rouge_l;
      m["CIDEr"] = s.cider;
      m["images"] = s.images;
      break;
    }
    case TaskKind::Vqa:
    case TaskKind::Anls: {
      std::map<std::string, std::vector<std::string>> gt;
      std::map<std::string, std::string> answers;
      for (const auto& p : preds) {
        const std::string id = p.at("id").get<std::string>();
        gt[id] = p.at("references").get<std::vector<std::string>>();
        answers[id] = p.at("prediction").get<std::string>();
      }
      if (kind == TaskKind::Vqa) {
        VqaScore s = vqa_accuracy(gt, answers);
        m["accuracy"] = s.accuracy;
        m["questions"] = s.questions;
      } else {
        AnlsScore s = anls_score(gt, answers);
        m["ANLS"] = s.anls;
        m["questions"] = s.questions;
      }
      break;
    }
  }
  return m;
}

struct Loaded {
  std::string key;
  std::unique_ptr<MultimodalModel> model;
  std::unique_ptr<ModelProcessor> processor;
};

at::ScalarType dtype_of(const std::string& s) { return s == "fp16" ? at::kHalf : s == "bf16" ? at::kBFloat16 : at::kFloat; }

class Runner {
 public:
  Runner(const ExperimentConfig& exp, const RunOptions& o) : exp_(exp), o_(o) {}

  Dataset& dataset(const CellConfig& cell) {
    const std::string key = cell.resolved.at("dataset").dump();
    auto it = datasets_.find(key);
    if (it == datasets_.end()) it = datasets_.emplace(key, load_dataset(cell.dataset)).first;
    return it->second;
  }

  Loaded& model(const CellConfig& cell) {
    const std::string key = cell.resolved.at("model").dump();
    if (loaded_.key != key) {
      loaded_.model.reset();
      at::Device device = cell.model.device == "cpu" ? at::Device(at::kCPU) : at::Device(cell.model.device);
      if (device.is_cuda() && !at::hasCUDA()) fail("{}: model.device {}: this calibq has no CUDA device", exp_.file, cell.model.device);
      loaded_.model = load_model(cell.model.path, dtype_of(cell.model.dtype), device);
      loaded_.processor = std::make_unique<ModelProcessor>(ModelProcessor::load(cell.model.path, loaded_.model->config()));
      loaded_.key = key;
      std::cerr << loaded_.model->load_report() << "\n";
    }
    return loaded_;
  }

  std::string cell_dir(const CellConfig& cell) const { return (fs::path(o_.out_dir) / "cells" / cell.dir).string(); }

  void write_cell_config(const CellConfig& cell) {
    const std::string dir = cell_dir(cell);
    fs::create_directories(dir);
    json j = {{"experiment", exp_.name}, {"file", fs::absolute(exp_.file).string()}, {"label", cell.label},
              {"values", cell.values}, {"hash", cell.hash}, {"config", cell.resolved}};
    write_text_atomically(dir + "/config.json", j.dump(1) + "\n");
  }

  // Generates this shard's missing batches of a cell; true when it generated anything.
  bool generate_cell(const CellConfig& cell, Progress& progress, size_t cell_index) {
    const bool sharded = o_.shard_count > 1;
    const std::string dir = cell_dir(cell);
    const std::string pred = dir + "/" + (sharded ? shard_file(o_.shard_index, o_.shard_count) : "predictions.jsonl");
    Dataset& data = dataset(cell);
    const std::vector<Batch> batches = make_batches(data.samples.size(), cell.generation.batch_size);
    bool dropped = false;
    auto done = read_complete_batches(pred, batches, &dropped);
    if (dropped) write_lines(pred, done);  // drops a half-written batch from the file
    std::vector<const Batch*> todo;
    int64_t mine = 0;
    for (const auto& b : batches) {
      if (b.index % o_.shard_count != o_.shard_index) continue;
      mine += static_cast<int64_t>(b.samples.size());
      if (!done.count(b.index)) todo.push_back(&b);
    }
    int64_t todo_items = 0;
    for (const auto* b : todo) todo_items += static_cast<int64_t>(b->samples.size());
    progress.skip(mine - todo_items);
    progress.start_cell(cell_index, cell.label, todo_items);
    if (todo.empty()) return false;

    Loaded& m = model(cell);
    const KVCacheConfig kv = make_kv_cache_config(cell.kv.key_spec(), cell.kv.value_spec(), cell.kv.segments,
                                                  cell.label + ": kv.");
    GenerationConfig gen;
    gen.max_new_tokens = cell.generation.max_new_tokens;
    gen.temperature = cell.generation.temperature;
    gen.top_p = cell.generation.top_p;
    gen.stop_ids = m.processor->stop_ids();
    gen.pad_id = m.processor->pad_id();

    double prefill_s = 0, decode_s = 0;
    int64_t new_tokens = 0, samples = 0, steps = 0, kv_bytes = 0, kv_fp16_bytes = 0;
    for (const Batch* b : todo) {
      std::vector<ProcessedSample> processed;
      std::deque<RgbImage> images;
      for (size_t s : b->samples) {
        const Sample& sample = data.samples[s];
        images.push_back(read_rgb_image(sample.image));
        processed.push_back(m.processor->process(&images.back(), sample.prompt));
      }
      // Sampling seeds by batch, so that a shard or a resumed run draws what one run draws.
      gen.seed = cell.generation.seed * 1000003ULL + static_cast<uint64_t>(b->index);
      GenerationResult r = generate_by_layout(*m.model, *m.processor, processed, gen, kv);
      std::vector<std::string> lines;
      for (size_t k = 0; k < b->samples.size(); ++k) {
        const Sample& sample = data.samples[b->samples[k]];
        json line = {{"batch", b->index},
                     {"id", sample.id},
                     {"image", fs::path(sample.image).filename().string()},
                     {"prompt", sample.prompt},
                     {"prediction", m.processor->decode(r.tokens[k])},
                     {"references", sample.references},
                     {"new_tokens", r.tokens[k].size()},
                     {"stopped", static_cast<bool>(r.stopped[k])}};
        lines.push_back(line.dump());
        new_tokens += static_cast<int64_t>(r.tokens[k].size());
      }
      append_batch(pred, lines);
      prefill_s += r.prefill_seconds;
      decode_s += r.decode_seconds;
      samples += static_cast<int64_t>(b->samples.size());
      steps += r.steps;
      kv_bytes += r.kv_bytes.total();
      kv_fp16_bytes += r.kv_fp16_bytes;
      progress.advance(static_cast<int64_t>(b->samples.size()));
    }
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const json timing = {{"prefill_seconds", prefill_s},
                         {"decode_seconds", decode_s},
                         {"new_tokens", new_tokens},
                         {"samples", samples},
                         {"decode_steps", steps},
                         {"kv_bytes", kv_bytes},
                         {"kv_fp16_bytes", kv_fp16_bytes},
                         {"decode_tokens_per_second", decode_s > 0 ? new_tokens / decode_s : 0.0},
                         {"kv_bytes_per_sample", kv_bytes / std::max<int64_t>(1, samples)},
                         {"peak_rss_mib", ru.ru_maxrss / 1024.0},
                         {"device", cell.model.device},
                         {"note", "this process's share: a resumed or sharded run times only the batches it generated"}};
    write_text_atomically(dir + "/" + (sharded ? fmt::format("timing.shard-{}-of-{}.json", o_.shard_index, o_.shard_count)
                                               : std::string("timing.json")),
                          timing.dump(1) + "\n");
    return true;
  }

  // predictions.jsonl -> metrics.json.
  json finalize_cell(const CellConfig& cell) {
    const std::string dir = cell_dir(cell);
    Dataset& data = dataset(cell);
    std::vector<json> preds;
    std::ifstream in(dir + "/predictions.jsonl");
    for (std::string line; std::getline(in, line);) preds.push_back(json::parse(line));
    if (preds.size() != data.samples.size())
      fail("{}/predictions.jsonl: {} predictions for {} samples", dir, preds.size(), data.samples.size());
    json metrics = score(data.kind, preds);
    metrics["task"] = task_kind_name(data.kind);
    metrics["samples"] = preds.size();
    metrics["skipped_samples"] = data.problems.size();
    write_text_atomically(dir + "/metrics.json", metrics.dump(1) + "\n");
    return metrics;
  }

  void summary() {
    const std::vector<std::string>& keys = exp_.sweep_keys;
    std::string metric = exp_.table.metric;
    std::vector<json> metrics;
    for (const auto& cell : exp_.cells) {
      const std::string path = cell_dir(cell) + "/metrics.json";
      if (!fs::exists(path)) fail("{}: missing (cell {} not finished)", path, cell.label);
      metrics.push_back(read_json_file(path));
      if (metric.empty()) metric = main_metric(dataset(cell).kind);
    }
    // Every cell with every metric (a long table).
    std::vector<std::string> metric_names;
    for (const auto& [k, v] : metrics.front().items())
      if (v.is_number_float()) metric_names.push_back(k);
    std::vector<std::string> cols = keys;
    cols.push_back("kv.key");
    cols.push_back("kv.value");
    for (const auto& m : metric_names) cols.push_back(m);
    Table all(cols);
    for (size_t i = 0; i < exp_.cells.size(); ++i) {
      std::vector<std::string> row;
      for (const auto& k : keys) row.push_back(exp_.cells[i].values.at(k));
      row.push_back(exp_.cells[i].kv.key_spec().empty() ? "none" : exp_.cells[i].kv.key_spec());
      row.push_back(exp_.cells[i].kv.value_spec().empty() ? "none" : exp_.cells[i].kv.value_spec());
      for (const auto& m : metric_names) row.push_back(cell(metrics[i].at(m).get<double>(), 4));
      all.add_row(row);
    }
    const std::string out = o_.out_dir;
    write_text_atomically(out + "/cells.csv", all.csv());
    write_text_atomically(out + "/cells.md", all.markdown());

    // The paper-style table: rows x columns of one metric.
    auto is_key = [&](const std::string& k) { return std::find(keys.begin(), keys.end(), k) != keys.end(); };
    std::vector<std::string> rows, columns;
    for (const auto& k : exp_.table.rows)
      if (is_key(k)) rows.push_back(k);
    for (const auto& k : exp_.table.columns)
      if (is_key(k) && std::find(rows.begin(), rows.end(), k) == rows.end()) columns.push_back(k);
    for (const auto& k : keys)
      if (std::find(rows.begin(), rows.end(), k) == rows.end() && std::find(columns.begin(), columns.end(), k) == columns.end())
        rows.push_back(k);  // every sweep key shows somewhere
    auto key_of = [&](const CellConfig& c, const std::vector<std::string>& ks) {
      std::vector<std::string> v;
      for (const auto& k : ks) v.push_back(c.values.at(k));
      return fmt::format("{}", fmt::join(v, " "));
    };
    std::vector<std::string> row_keys, col_keys;
    for (const auto& c : exp_.cells) {
      const std::string r = key_of(c, rows), k = key_of(c, columns);
      if (std::find(row_keys.begin(), row_keys.end(), r) == row_keys.end()) row_keys.push_back(r);
      if (std::find(col_keys.begin(), col_keys.end(), k) == col_keys.end()) col_keys.push_back(k);
    }
    std::vector<std::string> header{rows.empty() ? std::string("cell") : fmt::format("{}", fmt::join(rows, " "))};
    for (const auto& k : col_keys) header.push_back(columns.empty() ? metric : fmt::format("{}={}", fmt::join(columns, ","), k));
    Table t(header);
    for (const auto& r : row_keys) {
      std::vector<std::string> line{r.empty() ? std::string("base") : r};
      for (const auto& k : col_keys) {
        std::string v = "-";
        for (size_t i = 0; i < exp_.cells.size(); ++i)
          if (key_of(exp_.cells[i], rows) == r && key_of(exp_.cells[i], columns) == k && metrics[i].contains(metric))
            v = cell(metrics[i].at(metric).get<double>(), 4);
        line.push_back(v);
      }
      t.add_row(line);
    }
    const std::string caption = fmt::format("{}: {} ({})", exp_.name, metric, fs::path(exp_.file).filename().string());
    write_text_atomically(out + "/summary.md", "# " + caption + "\n\n" + t.markdown() + "\nCommand: `" + o_.command + "`\n");
    write_text_atomically(out + "/summary.csv", t.csv());
    write_text_atomically(out + "/summary.tex", t.latex(caption));
    write_text_atomically(out + "/summary.json",
                          json({{"experiment", exp_.name}, {"metric", metric}, {"rows", t.json()}, {"cells", all.json()},
                                {"command", o_.command}}).dump(1) + "\n");
    write_text_atomically(out + "/command.txt", o_.command + "\n");
    plot_metric(metric, metrics);
    std::cerr << "\n" << t.markdown();
  }

  void plot_metric(const std::string& metric, const std::vector<json>& metrics) {
    const std::string plots = o_.out_dir + "/plots";
    fs::create_directories(plots);
    const bool by_bits = std::find(exp_.sweep_keys.begin(), exp_.sweep_keys.end(), "kv.bits") != exp_.sweep_keys.end();
    std::map<std::string, std::vector<std::pair<std::string, double>>> series;  // label -> (x, y)
    for (size_t i = 0; i < exp_.cells.size(); ++i) {
      const auto& c = exp_.cells[i];
      std::vector<std::string> rest;
      for (const auto& [k, v] : c.values)
        if (k != "kv.bits") rest.push_back(v);
      const std::string label = rest.empty() ? metric : fmt::format("{}", fmt::join(rest, " "));
      if (!metrics[i].contains(metric)) continue;
      const double y = metrics[i].at(metric).get<double>();
      if (by_bits && c.kv.key_spec().find("bits=") == std::string::npos && c.kv.value_spec().find("bits=") == std::string::npos) {
        // A quantizer without bits (none, fp16, token_drop): a flat reference line.
        std::set<int64_t> all_bits;
        for (const auto& other : exp_.cells) all_bits.insert(std::stoll(other.values.at("kv.bits")));
        for (int64_t b : all_bits) series[label + " (no bits)"].emplace_back(std::to_string(b), y);
        continue;
      }
      series[by_bits ? label : metric].emplace_back(by_bits ? c.values.at("kv.bits") : c.label, y);
    }
    double max_bits = 1;
    if (by_bits)
      for (const auto& c : exp_.cells) max_bits = std::max(max_bits, std::stod(c.values.at("kv.bits")));
    std::string dat, plot_cmd;
    int idx = 0;
    for (const auto& [label, pts] : series) {
      dat += "# " + label + "\n";
      for (size_t k = 0; k < pts.size(); ++k)
        dat += by_bits ? fmt::format("{} {:.6f}\n", pts[k].first, pts[k].second) : fmt::format("{} \"{}\" {:.6f}\n", k, pts[k].first, pts[k].second);
      dat += "\n\n";
      const bool flat = label.find(" (no bits)") != std::string::npos;
      plot_cmd += fmt::format("{}'metric_vs_bits.dat' index {} using {} with {} title \"{}\"", idx ? ", " : "", idx,
                              by_bits ? "1:2" : "1:3:xtic(2)",
                              by_bits ? (flat ? "lines dt 2 lw 2" : "linespoints lw 2 pt 7") : "boxes", label);
      ++idx;
    }
    GnuplotFigure f;
    f.name = "metric_vs_bits";
    f.comment = metric + " of every cell";
    f.settings = fmt::format(
        "set ylabel \"{}\"\nset grid\nset key outside right\n{}", metric,
        by_bits ? fmt::format("set xlabel \"bits\"\nset logscale x 2\nset xrange [0.8:{}]", max_bits * 1.3)
                : "set style fill solid 0.6\nset boxwidth 0.7\nset xtics rotate by -30");
    f.body = "plot " + plot_cmd;
    write_gnuplot_figure(plots, f, dat);
    render_plots(o_.out_dir);
  }

  const ExperimentConfig& exp_;
  const RunOptions& o_;
  std::map<std::string, Dataset> datasets_;
  Loaded loaded_;
};

}  // namespace

int run_experiment(const ExperimentConfig& exp, const RunOptions& o) {
  if (o.dry_run) {
    std::cout << fmt::format("{}: {} cells ({} duplicates dropped), sweep over {}\n", exp.file, exp.cells.size(),
                             exp.duplicates.size(), exp.sweep_keys.empty() ? "nothing" : fmt::format("{}", fmt::join(exp.sweep_keys, ", ")));
    for (size_t i = 0; i < exp.cells.size(); ++i) {
      const auto& c = exp.cells[i];
      std::cout << fmt::format("{:3d}  {}  key={} value={} segments={}  -> cells/{}\n", i + 1, c.label,
                               c.kv.key_spec().empty() ? "none" : c.kv.key_spec(),
                               c.kv.value_spec().empty() ? "none" : c.kv.value_spec(), c.kv.segments, c.dir);
    }
    for (const auto& d : exp.duplicates) std::cout << "     (duplicate of an earlier cell: " << d << ")\n";
    return 0;
  }
  fs::create_directories(o.out_dir);
  Runner r(exp, o);
  int64_t total = 0;
  for (const auto& c : exp.cells) total += static_cast<int64_t>(r.dataset(c).samples.size());
  Progress progress(total, exp.cells.size());
  int finished = 0;
  for (size_t i = 0; i < exp.cells.size(); ++i) {
    const CellConfig& c = exp.cells[i];
    r.write_cell_config(c);
    const bool unsharded = o.shard_count == 1;
    if (unsharded && fs::exists(r.cell_dir(c) + "/metrics.json")) {
      progress.skip(static_cast<int64_t>(r.dataset(c).samples.size()));
      continue;
    }
    r.generate_cell(c, progress, i);
    if (unsharded) {
      json m = r.finalize_cell(c);
      const std::string metric = main_metric(r.dataset(c).kind);
      progress.end_cell(fmt::format("{} {:.4f}", metric, m.value(metric, 0.0)));
      ++finished;
    } else {
      progress.end_cell(fmt::format("shard {}/{} done", o.shard_index, o.shard_count));
    }
  }
  if (o.shard_count == 1) r.summary();
  return finished;
}

void merge_experiment(const ExperimentConfig& exp, const RunOptions& o) {
  Runner r(exp, o);
  for (const auto& c : exp.cells) {
    const std::string dir = r.cell_dir(c);
    Dataset& data = r.dataset(c);
    const std::vector<Batch> batches = make_batches(data.samples.size(), c.generation.batch_size);
    std::map<int64_t, std::vector<std::string>> all;
    int64_t shards = 0;
    if (fs::is_directory(dir))
      for (const auto& e : fs::directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        if (name.rfind("predictions.shard-", 0) != 0) continue;
        ++shards;
        for (auto& [b, lines] : read_complete_batches(e.path().string(), batches)) all[b] = lines;
      }
    if (all.size() != batches.size())
      fail("{}: shards hold {} of {} batches of cell {} ({} shard files): run the missing shards first", dir, all.size(),
           batches.size(), c.label, shards);
    write_lines(dir + "/predictions.jsonl", all);
    r.finalize_cell(c);
  }
  r.summary();
}

}  // namespace calibq
