// calibq bench throughput: end-to-end decode throughput of a real-size architecture (random
// weights) or a checkpoint, for 16-bit KV and each quantizer given, over a batch sweep and a
// memory-budget sweep (the batch that fits each budget). A batch larger than one prefill can
// hold is prefilled in micro-batches whose caches quantize right away and then join; the
// whole batch decodes together. Rows go to Markdown and JSON, throughput plots to gnuplot
// scripts (analysis/plots.h), and a transformers peer's JSON (bench/transformers_throughput.py,
// run on the same GPU) is read in for the ratios.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>

#include "analysis/plots.h"
#include "core/io/atomic_file.h"
#include "core/io/json_file.h"
#include "core/models/architectures.h"
#include "core/models/model.h"
#include "core/util/build_info.h"
#include "core/util/error.h"
#include "experiments/cli/commands.h"
#include "kernels/cuda_dispatch.h"

#ifdef CALIBQ_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>
#endif

namespace calibq::cli {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct ThroughputOptions {
  std::string arch, model_dir;
  bool random_weights = false;
  std::vector<std::string> batches{"1", "8", "32", "auto"};
  std::vector<double> budgets_gib;
  int64_t image_tokens = 0;  // 0: one image (LLaVA) or 13 tiles (InternVL)
  int64_t system_tokens = 41, prompt_tokens = 30, new_tokens = 128;
  std::vector<std::string> kv{"none", "calibquant:bits=1"};
  std::string dtype = "bf16", device = "cuda";
  int64_t micro_batch = 0;  // 0: from the prompt length
  int64_t repeats = 1;      // runs per measured configuration; the row is the median run's
  bool reuse_prefill = false, no_cuda_graph = false;
  double margin_gib = 1.5;
  uint64_t seed = 0;
  std::string json_out, md_out, plots_dir, peer_json;
};

// GPU memory as the caching allocator counts it (0 on the CPU).
struct Memory {
  // The caching allocator answers only once it has allocated (else "invalid device").
  static bool ready() {
#ifdef CALIBQ_WITH_CUDA
    static const bool ok = kernels::cuda_available() && at::empty({1}, at::TensorOptions().device(at::kCUDA)).defined();
    return ok;
#else
    return false;
#endif
  }
  static void reset() {
#ifdef CALIBQ_WITH_CUDA
    if (ready()) {
      c10::cuda::device_synchronize();
      c10::cuda::CUDACachingAllocator::emptyCache();
      c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
    }
#endif
  }
  // (allocated now, peak allocated, peak reserved) in bytes.
  static std::array<double, 3> stats() {
#ifdef CALIBQ_WITH_CUDA
    if (ready()) {
      const auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
      const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
      return {static_cast<double>(s.allocated_bytes[agg].current), static_cast<double>(s.allocated_bytes[agg].peak),
              static_cast<double>(s.reserved_bytes[agg].peak)};
    }
#endif
    return {0, 0, 0};
  }
  // Free device memory now (bytes), or 0 without CUDA.
  static double free_bytes() {
#ifdef CALIBQ_WITH_CUDA
    if (kernels::cuda_available()) {
      size_t free = 0, total = 0;
      cudaMemGetInfo(&free, &total);
      return static_cast<double>(free);
    }
#endif
    return 0;
  }
};

bool is_out_of_memory(const std::exception& e) {
  const std::string what = e.what();
  return what.find("out of memory") != std::string::npos;
}

class ThroughputBench {
 public:
  ThroughputBench(const ThroughputOptions& o, std::string cmdline) : o_(o), cmdline_(std::move(cmdline)) {
    const bool by_arch = o.random_weights && !o.arch.empty(), by_dir = !o.random_weights && !o.model_dir.empty();
    if (!by_arch && !by_dir) fail("bench throughput: give --arch NAME --random-weights, or --model DIR");
    if (!o.model_dir.empty() && !o.arch.empty()) fail("bench throughput: --arch and --model exclude each other");
    dtype_ = parse_dtype(o.dtype);
    device_ = parse_device(o.device);
    if (o.new_tokens < 1) fail("--new-tokens must be at least 1, got {}", o.new_tokens);
    if (o.system_tokens < 0 || o.prompt_tokens < 1)
      fail("--system-tokens must be >= 0 and --prompt-tokens >= 1 (got {} and {})", o.system_tokens, o.prompt_tokens);
    for (const auto& b : o.batches)
      if (b != "auto" && parse_batch(b) < 1) fail("--batch: '{}' is not a positive count or 'auto'", b);
    if (o.repeats < 1) fail("--repeats must be at least 1, got {}", o.repeats);
    for (const auto& spec : o.kv) kv_config(spec);  // bad specs fail before the model loads
    free_at_start_ = Memory::free_bytes();
    Memory::reset();
    const auto t0 = std::chrono::steady_clock::now();
    if (o.random_weights) {
      config_ = architecture_config(o.arch);
      model_ = random_model(config_, dtype_, device_, o.seed);
    } else {
      model_ = load_model(o.model_dir, dtype_, device_);
      config_ = model_->config();
    }
    weights_bytes_ = Memory::stats()[0];
    std::cerr << model_->load_report() << fmt::format(" in {:.1f} s\n", seconds_since(t0));
    setup_layout();
  }

  void run() {
    nlohmann::json rows = nlohmann::json::array(), budget_rows = nlohmann::json::array();
    const size_t total = o_.kv.size() * (o_.batches.size() + o_.budgets_gib.size());
    size_t done = 0;
    const auto start = std::chrono::steady_clock::now();
    auto progress = [&](const nlohmann::json& row) {
      ++done;
      const double elapsed = seconds_since(start);
      std::cerr << fmt::format("[{}/{}] {} batch {}: {}  ({:.0f} s elapsed, ~{:.0f} s left)\n", done, total,
                               row["kv"].get<std::string>(), row["batch"].dump(), summary_of(row), elapsed,
                               elapsed / done * (total - done));
    };
    for (const auto& spec : o_.kv) {
      // The files are rewritten (atomically) after every configuration: a sweep cut short
      // keeps what it measured.
      for (const auto& b : o_.batches) {
        nlohmann::json row =
            b == "auto" ? run_auto(spec, default_budget()) : run_repeated(spec, parse_batch(b), micro_, o_.repeats);
        row["sweep"] = "batch";
        progress(row);
        rows.push_back(row);
        write_outputs(rows, budget_rows, false);
      }
      for (double gib : o_.budgets_gib) {
        nlohmann::json row = run_auto(spec, gib * kGiB);
        row["sweep"] = "budget";
        progress(row);
        budget_rows.push_back(row);
        write_outputs(rows, budget_rows, false);
      }
    }
    write_outputs(rows, budget_rows, true);
  }

 private:
  static int64_t parse_batch(const std::string& s) {
    try {
      size_t used = 0;
      const int64_t v = std::stoll(s, &used);
      return used == s.size() ? v : -1;
    } catch (const std::exception&) {
      return -1;
    }
  }
  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }
  // "none": the cache in the model's 16-bit dtype ("fp16" and "bf16" are registry quantizers,
  // which cast the visual segment; they are not this).
  static bool unquantized(const std::string& spec) { return spec == "none"; }
  static KVCacheConfig kv_config(const std::string& spec) {
    if (unquantized(spec)) return make_kv_cache_config("", "", "visual", "--kv ");
    return make_kv_cache_config(spec, spec, "visual", "--kv ");
  }
  static std::string summary_of(const nlohmann::json& r) {
    if (r.value("oom", false)) return "out of memory";
    return fmt::format("prefill {:.2f} s, {:.2f} ms/step, {:.0f} decode tok/s, peak {:.1f} GiB",
                       r["prefill_s"].get<double>(), r["decode_ms_per_step"].get<double>(),
                       r["decode_tok_s"].get<double>(), r["peak_gib"].get<double>());
  }

  // The synthetic prompt: system tokens, the image tokens, question tokens.
  void setup_layout() {
    if (!config_.image_token_id) fail("bench throughput: {} has no image token", config_.source);
    const VisionConfig& v = *config_.vision;
    if (config_.family == ModelFamily::Qwen2VL) {
      // Any number of tokens: one image whose merged grid is the most nearly square factoring
      // (default 35 x 35 = 1225 tokens, a 980 x 980 image, about Qwen2-VL's default max_pixels).
      image_tokens_ = tokens_per_image_ = o_.image_tokens > 0 ? o_.image_tokens : 1225;
      merged_rows_ = static_cast<int64_t>(std::sqrt(static_cast<double>(image_tokens_)));
      while (image_tokens_ % merged_rows_ != 0) --merged_rows_;
    } else {
      const int64_t side = v.image_size / v.patch_size;
      const double ds = config_.family == ModelFamily::InternVL ? config_.downsample_ratio : 1.0;
      tokens_per_image_ = std::llround(side * side * ds * ds);
      image_tokens_ = o_.image_tokens > 0 ? o_.image_tokens
                      : config_.family == ModelFamily::InternVL ? 13 * tokens_per_image_ : tokens_per_image_;
      if (image_tokens_ % tokens_per_image_ != 0 || (config_.family != ModelFamily::InternVL && image_tokens_ != tokens_per_image_))
        fail("--image-tokens {}: {} takes {} per image{}", image_tokens_, model_family_name(config_.family), tokens_per_image_,
             config_.family == ModelFamily::InternVL ? " (tile)" : ", one image");
    }
    images_per_sample_ = image_tokens_ / tokens_per_image_;
    seq_len_ = o_.system_tokens + image_tokens_ + o_.prompt_tokens;
    // Micro-batches of about 32k prompt tokens (13-tile InternVL: 9 sequences).
    micro_ = o_.micro_batch > 0 ? o_.micro_batch : std::max<int64_t>(1, 32768 / seq_len_);
    std::cerr << fmt::format("prompt: {} system + {} image ({} x {}) + {} question tokens = {}; {} new tokens; "
                             "prefill micro-batches of {}{}\n",
                             o_.system_tokens, image_tokens_, images_per_sample_, tokens_per_image_, o_.prompt_tokens,
                             seq_len_, o_.new_tokens, micro_, o_.reuse_prefill ? " (the first one's caches reused)" : "");
  }

  ModelInputs inputs(int64_t n) const {
    std::vector<int64_t> ids;
    const int64_t vocab = std::min<int64_t>(config_.text.vocab_size, 30000), img = *config_.image_token_id;
    for (int64_t i = 0; i < seq_len_; ++i) {
      const bool image = i >= o_.system_tokens && i < o_.system_tokens + image_tokens_;
      int64_t t = (i * 7919 + 13) % vocab;
      if (t == img) t = (t + 1) % vocab;
      ids.push_back(image ? img : t);
    }
    ModelInputs in;
    in.input_ids = at::tensor(ids, at::kLong).view({1, seq_len_}).expand({n, seq_len_}).contiguous();
    const VisionConfig& v = *config_.vision;
    if (config_.family == ModelFamily::Qwen2VL) {  // flattened patches and their grid
      const int64_t m = v.spatial_merge_size, rows = merged_rows_ * m, cols = image_tokens_ / merged_rows_ * m;
      const int64_t dim = v.num_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
      at::Tensor one = at::sin(at::arange(rows * cols * dim, at::kFloat) * 0.37).view({rows * cols, dim});
      in.pixel_values = one.to(device_, dtype_).repeat({n, 1});
      in.image_grid_thw = at::tensor(std::vector<int64_t>{1, rows, cols}, at::kLong).view({1, 3}).repeat({n, 1});
      return in;
    }
    // Identical pixels for every sample (so that reused caches equal a real prefill).
    at::Tensor one = at::sin(at::arange(3 * v.image_size * v.image_size * images_per_sample_, at::kFloat) * 0.37)
                         .view({images_per_sample_, 3, v.image_size, v.image_size});
    in.pixel_values = one.to(device_, dtype_).repeat({n, 1, 1, 1});
    return in;
  }

  // Bytes per sequence of the KV cache from the format's arithmetic: 16 bits per element
  // for the full-precision parts, and for a quantized visual segment b bits per element plus
  // a float32 scale and zero-point per channel of K and of V. Every sample has the same system
  // tokens, so the cache holds them once for the batch.
  double arithmetic_kv_bytes(const std::string& spec, int64_t tokens_after_prefill, int64_t batch) const {
    const TextConfig& t = config_.text;
    const double per_token_16 = 2.0 * 2 * t.num_key_value_heads * t.head_dim * t.num_hidden_layers;
    const KVCacheConfig kv = kv_config(spec);
    const double system = static_cast<double>(o_.system_tokens);
    const double full_tokens = tokens_after_prefill - (kv.key ? image_tokens_ : 0) - system + system / batch;
    double bytes = full_tokens * per_token_16;
    if (kv.key) {
      const double bits = kv.key->nominal_bits();
      bytes += t.num_hidden_layers * t.num_key_value_heads *
               (2.0 * image_tokens_ * t.head_dim * bits / 8 + 2 * 2 * t.head_dim * 4.0);
    }
    return bytes;
  }

  // `repeats` runs of one configuration, reported as the run of median ms per step (so that
  // the row's numbers all come from one run), every run's ms per step beside it: a decode of
  // a few hundred steps at batch 1 varies by ~10% from run to run on the H100 (7.2-8.2 ms).
  nlohmann::json run_repeated(const std::string& spec, int64_t batch, int64_t micro, int64_t repeats) {
    std::vector<nlohmann::json> runs;
    for (int64_t i = 0; i < repeats; ++i) {
      runs.push_back(run_batch(spec, batch, micro));
      if (runs.back()["oom"].get<bool>()) return runs.back();
    }
    std::vector<double> ms;
    for (const auto& r : runs) ms.push_back(r["decode_ms_per_step"].get<double>());
    std::vector<size_t> order(runs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ms[a] < ms[b]; });
    nlohmann::json row = runs[order[(order.size() - 1) / 2]];
    row["repeats"] = repeats;
    row["decode_ms_per_step_runs"] = ms;
    return row;
  }

  nlohmann::json run_batch(const std::string& spec, int64_t batch, int64_t micro = 0) {
    if (micro <= 0) micro = micro_;
    nlohmann::json row = {{"kv", spec}, {"batch", batch}, {"micro_batch", std::min(micro, batch)}};
    Memory::reset();
    GenerationConfig gen;
    gen.max_new_tokens = o_.new_tokens;
    gen.prefill_micro_batch = micro;
    gen.reuse_first_prefill = o_.reuse_prefill;
    gen.cuda_graph = !o_.no_cuda_graph;
    GenerationResult r;
    try {
      r = model_->generate_parts(batch, [&](int64_t b0, int64_t b1) { return inputs(b1 - b0); }, gen, kv_config(spec));
    } catch (const std::exception& e) {
      if (!is_out_of_memory(e)) throw;
      Memory::reset();
      row["oom"] = true;
      for (const char* k : {"prefill_s", "decode_ms_per_step", "decode_tok_s", "e2e_tok_s", "peak_gib"}) row[k] = nullptr;
      return row;
    }
    const std::array<double, 3> memory = Memory::stats();
    const double peak = memory[1], reserved = memory[2];
    const int64_t parts_total = (batch + micro - 1) / micro;
    // With reused caches only r.prefill_parts micro-batches ran: scale to the whole batch.
    const double prefill = r.prefill_seconds * static_cast<double>(parts_total) / static_cast<double>(r.prefill_parts);
    const double per_step = r.decode_seconds / std::max<int64_t>(r.steps, 1);
    row["oom"] = false;
    row["prefill_parts_run"] = r.prefill_parts;
    row["cuda_graph"] = r.cuda_graph;
    row["prefill_s"] = prefill;
    row["prefill_s_measured"] = r.prefill_seconds;
    row["decode_steps"] = r.steps;
    row["decode_ms_per_step"] = per_step * 1e3;
    row["decode_tok_s"] = batch / per_step;
    row["e2e_tok_s"] = static_cast<double>(batch * o_.new_tokens) / (prefill + r.decode_seconds);
    row["peak_gib"] = peak / kGiB;
    row["peak_reserved_gib"] = reserved / kGiB;
    row["kv_bytes_per_seq_measured"] = static_cast<double>(r.kv_bytes.total()) / batch;
    row["kv_bytes_per_seq_arithmetic"] = arithmetic_kv_bytes(spec, seq_len_, batch);
    row["kv_bytes_per_seq_final_arithmetic"] = arithmetic_kv_bytes(spec, seq_len_ + o_.new_tokens, batch);
    row["kv_visual_bytes_per_seq_measured"] = static_cast<double>(r.kv_bytes.visual) / batch;
    return row;
  }

  double default_budget() const {
    if (free_at_start_ <= 0) fail("bench throughput: --batch auto needs a CUDA device (its free memory is the budget)");
    return free_at_start_ - o_.margin_gib * kGiB;
  }

  // The largest batch whose measured peak (reserved) stays within the budget. A probe of
  // one micro-batch (halved until it fits: a small budget cannot hold a prefill of nine
  // 3.4k-token sequences) gives the fixed and per-sequence bytes; the estimate is then
  // shrunk while it does not fit and grown while a run leaves room.
  nlohmann::json run_auto(const std::string& spec, double budget) {
    if (!kernels::cuda_available()) fail("bench throughput: --batch auto and --memory-budget need a CUDA device");
    auto fits = [&](const nlohmann::json& r) {
      return !r["oom"].get<bool>() && r["peak_reserved_gib"].get<double>() * kGiB <= budget;
    };
    int64_t micro = micro_;
    nlohmann::json probe = run_batch(spec, micro, micro);
    while (!fits(probe) && micro > 1) {
      micro = std::max<int64_t>(1, micro / 2);
      probe = run_batch(spec, micro, micro);
    }
    if (!fits(probe)) {
      probe["oom"] = true;  // not even one sequence fits this budget
      probe["budget_gib"] = budget / kGiB;
      return probe;
    }
    const double per_seq_cache = probe["kv_bytes_per_seq_final_arithmetic"].get<double>() +
                                 (probe["kv_bytes_per_seq_measured"].get<double>() - probe["kv_bytes_per_seq_arithmetic"].get<double>());
    const double fixed = std::max(probe["peak_reserved_gib"].get<double>() * kGiB - micro * per_seq_cache, weights_bytes_);
    // Per sequence in decode: its cache, a layer's share for the join, logits in bf16 and float.
    double per_seq = per_seq_cache * (1.0 + 1.0 / config_.text.num_hidden_layers) + config_.text.vocab_size * 10.0 + 64 * 1024;
    auto whole_micro_batches = [&](double b) { return std::max<int64_t>(static_cast<int64_t>(b) / micro * micro, micro); };
    nlohmann::json best = probe;
    int64_t batch = whole_micro_batches((budget - fixed) / per_seq);
    for (int attempt = 0; attempt < 6 && batch > best["batch"].get<int64_t>(); ++attempt) {
      nlohmann::json row = run_batch(spec, batch, micro);
      if (fits(row)) {
        best = row;
        // Room left: grow by what this run measured per sequence.
        const double used = row["peak_reserved_gib"].get<double>() * kGiB;
        if (budget - used < 0.05 * budget) break;
        per_seq = std::max(per_seq, (used - fixed) / batch);
        batch = whole_micro_batches(batch + 0.9 * (budget - used) / per_seq);
      } else {
        batch = whole_micro_batches(batch * 0.93);
      }
    }
    // The search's runs were one each: the batch it found is measured again, `repeats` times.
    if (o_.repeats > 1 && !best["oom"].get<bool>()) {
      nlohmann::json again = run_repeated(spec, best["batch"].get<int64_t>(), micro, o_.repeats);
      if (fits(again)) best = again;
    }
    best["budget_gib"] = budget / kGiB;
    best["auto"] = true;
    return best;
  }

  void write_outputs(const nlohmann::json& rows, const nlohmann::json& budget_rows, bool final) {
    nlohmann::json peer = nlohmann::json::array();
    if (!o_.peer_json.empty()) {
      const nlohmann::json doc = read_json_file(o_.peer_json);
      peer = doc.is_object() && doc.contains("rows") ? doc.at("rows") : doc;
    }
    auto peer_at = [&](int64_t batch) -> std::optional<double> {
      for (const auto& p : peer)
        if (p.value("batch", -1) == batch && !p.value("oom", false) && p.contains("decode_tok_s"))
          return p.at("decode_tok_s").get<double>();
      return std::nullopt;
    };
    std::string md = fmt::format("Architecture: {} ({}), {}; prompt {} system + {} image + {} question tokens, {} new "
                                 "tokens; prefill micro-batches of {}{}.\n\n",
                                 o_.random_weights ? o_.arch + " with random weights" : o_.model_dir,
                                 model_family_name(config_.family), o_.dtype, o_.system_tokens, image_tokens_,
                                 o_.prompt_tokens, o_.new_tokens, micro_,
                                 o_.reuse_prefill ? " (the first micro-batch prefilled, its caches standing for the rest; "
                                                    "prefill times scaled to the batch)"
                                                  : "");
    md += "| KV | batch | prefill s | ms/step | decode tok/s | e2e tok/s | peak GiB | KV MiB/seq (measured) | KV MiB/seq "
          "(arithmetic) | transformers tok/s | ratio |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    auto line = [&](const nlohmann::json& r) {
      if (r["oom"].get<bool>()) return fmt::format("| {} | {} | out of memory | | | | | | | | |\n", r["kv"].get<std::string>(), r["batch"].dump());
      const auto p = peer_at(r["batch"].get<int64_t>());
      return fmt::format("| {} | {} | {:.2f} | {:.2f} | {:.0f} | {:.0f} | {:.1f} | {:.1f} | {:.1f} | {} | {} |\n",
                         r["kv"].get<std::string>(), r["batch"].dump(), r["prefill_s"].get<double>(),
                         r["decode_ms_per_step"].get<double>(), r["decode_tok_s"].get<double>(), r["e2e_tok_s"].get<double>(),
                         r["peak_gib"].get<double>(), r["kv_bytes_per_seq_measured"].get<double>() / 1048576.0,
                         r["kv_bytes_per_seq_arithmetic"].get<double>() / 1048576.0, p ? fmt::format("{:.0f}", *p) : "",
                         p ? fmt::format("{:.1f}x", r["decode_tok_s"].get<double>() / *p) : "");
    };
    for (const auto& r : rows) md += line(r);
    if (!budget_rows.empty()) {
      md += "\nMemory budget sweep (the largest batch within each budget):\n\n| KV | budget GiB | batch | ms/step | decode "
            "tok/s | peak GiB (reserved) |\n|---|---|---|---|---|---|\n";
      for (const auto& r : budget_rows)
        md += r["oom"].get<bool>()
                  ? fmt::format("| {} | {:.0f} | out of memory | | | |\n", r["kv"].get<std::string>(), r["budget_gib"].get<double>())
                  : fmt::format("| {} | {:.0f} | {} | {:.2f} | {:.0f} | {:.1f} |\n", r["kv"].get<std::string>(),
                                r["budget_gib"].get<double>(), r["batch"].dump(), r["decode_ms_per_step"].get<double>(),
                                r["decode_tok_s"].get<double>(), r["peak_reserved_gib"].get<double>());
    }
    // The summary the issue asks for: 16-bit KV against the first quantizer given.
    auto best = [&](const std::function<bool(const nlohmann::json&)>& pred) {
      const nlohmann::json* b = nullptr;
      for (const auto* list : {&rows, &budget_rows})
        for (const auto& r : *list)
          if (pred(r) && !r["oom"].get<bool>() && (!b || r["decode_tok_s"].get<double>() > (*b)["decode_tok_s"].get<double>()))
            b = &r;
      return b;
    };
    auto is16 = [](const nlohmann::json& r) { return unquantized(r["kv"].get<std::string>()); };
    nlohmann::json summary = nlohmann::json::object();
    for (const auto& r : rows)
      if (is16(r) && r["batch"] == 1 && !r["oom"].get<bool>()) summary["fp16_batch1_ms_per_step"] = r["decode_ms_per_step"];
    const nlohmann::json* f = best(is16);
    const nlohmann::json* c = best([&](const nlohmann::json& r) { return !is16(r); });
    if (f) {
      summary["fp16_max_batch"] = (*f)["batch"];
      summary["fp16_max_tok_s"] = (*f)["decode_tok_s"];
    }
    if (c) {
      summary["calibquant_kv"] = (*c)["kv"];
      summary["calibquant_max_batch"] = (*c)["batch"];
      summary["calibquant_max_tok_s"] = (*c)["decode_tok_s"];
    }
    if (f && c) summary["ratio_vs_calibq_fp16"] = (*c)["decode_tok_s"].get<double>() / (*f)["decode_tok_s"].get<double>();
    double peer_best = 0;
    for (const auto& p : peer)
      if (!p.value("oom", false) && p.contains("decode_tok_s")) peer_best = std::max(peer_best, p.at("decode_tok_s").get<double>());
    if (c && peer_best > 0) {
      summary["transformers_max_tok_s"] = peer_best;
      summary["ratio_vs_transformers_fp16"] = (*c)["decode_tok_s"].get<double>() / peer_best;
    }
    md += "\nSummary: " + summary.dump() + "\n";
    if (final) std::cout << "\n" << md << std::flush;

    std::string gpu = "cpu";
    std::string driver;
#ifdef CALIBQ_WITH_CUDA
    if (kernels::cuda_available()) {
      cudaDeviceProp prop{};
      cudaGetDeviceProperties(&prop, c10::cuda::current_device());
      gpu = prop.name;
      int d = 0;
      cudaDriverGetVersion(&d);
      driver = fmt::format("{}.{}", d / 1000, (d % 1000) / 10);
    }
#endif
    nlohmann::json doc = {{"command", cmdline_},
                          {"gpu", gpu},
                          {"cuda_driver", driver},
                          {"build", to_json(build_info())},
                          {"architecture", o_.random_weights ? o_.arch : o_.model_dir},
                          {"random_weights", o_.random_weights},
                          {"dtype", o_.dtype},
                          {"system_tokens", o_.system_tokens},
                          {"image_tokens", image_tokens_},
                          {"prompt_tokens", o_.prompt_tokens},
                          {"new_tokens", o_.new_tokens},
                          {"micro_batch", micro_},
                          {"reuse_prefill", o_.reuse_prefill},
                          {"weights_gib", weights_bytes_ / kGiB},
                          {"rows", rows},
                          {"budget_rows", budget_rows},
                          {"transformers", peer},
                          {"summary", summary}};
    if (!o_.json_out.empty()) write_text_atomically(o_.json_out, doc.dump(1) + "\n");
    if (!o_.md_out.empty()) write_text_atomically(o_.md_out, md);
    if (final && !o_.plots_dir.empty() && !rows.empty()) {
      nlohmann::json batch_points = nlohmann::json::array();
      for (const auto& r : rows) batch_points.push_back(r);
      for (const auto& p : peer) {
        nlohmann::json q = p;
        q["kv"] = "transformers (16-bit)";
        if (!q.contains("decode_tok_s")) q["decode_tok_s"] = nullptr;
        batch_points.push_back(q);
      }
      plot_throughput(o_.plots_dir, throughput_points(batch_points, "kv", "decode_tok_s", "bench throughput"),
                      "decode tokens/s", "Decode throughput versus batch (" + o_.arch + o_.model_dir + ")");
      if (!budget_rows.empty())
        plot_throughput(o_.plots_dir, throughput_points(budget_rows, "kv", "decode_tok_s", "bench throughput", "budget_gib"),
                        "decode tokens/s", "Decode throughput versus GPU memory budget (" + o_.arch + o_.model_dir + ")",
                        ThroughputAxis{"budget_gib", "GPU memory budget (GiB)", "throughput_vs_memory", false});
    }
  }

  ThroughputOptions o_;
  std::string cmdline_;
  at::ScalarType dtype_;
  at::Device device_ = at::kCPU;
  ModelConfig config_;
  std::unique_ptr<MultimodalModel> model_;
  double weights_bytes_ = 0, free_at_start_ = 0;
  int64_t tokens_per_image_ = 0, image_tokens_ = 0, images_per_sample_ = 1, seq_len_ = 0, micro_ = 1;
  int64_t merged_rows_ = 1;  // Qwen2-VL: rows of the image's merged token grid
};

}  // namespace

void add_throughput_command(CLI::App* bench, const std::string& cmdline) {
  auto o = std::make_shared<ThroughputOptions>();
  CLI::App* t = bench->add_subcommand(
      "throughput", "End-to-end decode throughput (prefill, ms per step, tokens/s, peak memory, KV bytes per sequence) for "
                    "16-bit KV and each --kv, over batches and memory budgets");
  t->add_option("--arch", o->arch, "an architecture at its real size: " + fmt::format("{}", fmt::join(architecture_names(), ", ")));
  t->add_flag("--random-weights", o->random_weights, "random weights for --arch (no checkpoint needed)");
  t->add_option("--model", o->model_dir, "a checkpoint folder instead of --arch");
  t->add_option("--batch", o->batches, "batch sizes, or 'auto' (the largest that fits the free memory)")
      ->delimiter(',')
      ->capture_default_str();
  t->add_option("--memory-budget", o->budgets_gib, "GiB budgets: for each, the largest batch that fits it")->delimiter(',');
  t->add_option("--image-tokens", o->image_tokens, "image tokens per sequence (default: one LLaVA image, 13 InternVL tiles, 1225 Qwen2-VL tokens)");
  t->add_option("--system-tokens", o->system_tokens, "text tokens before the image")->capture_default_str();
  t->add_option("--prompt-tokens", o->prompt_tokens, "question tokens after the image")->capture_default_str();
  t->add_option("--new-tokens", o->new_tokens, "greedy tokens generated per sequence (no early stop)")->capture_default_str();
  t->add_option("--kv", o->kv, "KV formats: 'none' (16-bit) or a quantizer spec for the visual K and V")->capture_default_str();
  t->add_option("--dtype", o->dtype, "fp32, fp16 or bf16")->capture_default_str();
  t->add_option("--device", o->device, "cuda or cpu")->capture_default_str();
  t->add_option("--micro-batch", o->micro_batch, "sequences per prefill micro-batch (default: ~32k prompt tokens)");
  t->add_flag("--reuse-prefill", o->reuse_prefill,
              "prefill one micro-batch and let its caches stand for the others (every sample has the same inputs); "
              "prefill times are scaled to the batch");
  t->add_option("--repeats", o->repeats,
                "runs of each configuration; its row is the run of median ms per step, with every run's beside it")
      ->capture_default_str();
  t->add_flag("--no-cuda-graph", o->no_cuda_graph, "run every decode step eagerly (no captured CUDA graph)");
  t->add_option("--margin", o->margin_gib, "GiB left free under --batch auto")->capture_default_str();
  t->add_option("--seed", o->seed, "random-weights seed")->capture_default_str();
  t->add_option("--json", o->json_out, "write the rows, summary, GPU, driver and command as JSON");
  t->add_option("--md", o->md_out, "write the tables as Markdown");
  t->add_option("--plots", o->plots_dir, "write throughput plots (gnuplot scripts) under DIR/plots");
  t->add_option("--transformers", o->peer_json, "the JSON of bench/transformers_throughput.py from the same GPU");
  t->callback([o, cmdline] { ThroughputBench(*o, cmdline).run(); });
}

}  // namespace calibq::cli
