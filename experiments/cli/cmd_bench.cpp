// calibq bench kernels: the decode-attention kernels timed against PyTorch's fp16 SDPA on
// the same shapes in the same run, with bytes moved, GB/s and the fraction of the measured
// device-copy bandwidth. Times are GPU times of CUDA-graph replays (both sides alike); the
// eager time of the whole step, host dispatch included, is recorded beside them. Inputs are random (codes, scales, fp16 K/V): the kernels' time does
// not depend on the values.
#include <fmt/format.h>

#include <iostream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/io/atomic_file.h"
#include "core/util/build_info.h"
#include "core/util/error.h"
#include "experiments/cli/commands.h"
#include "kernels/cuda_dispatch.h"
#include "kernels/decode_attention.h"
#include "kernels/pack_bits.h"

#ifdef CALIBQ_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#endif

namespace calibq::cli {

namespace {

struct BenchShape {
  int64_t B = 32, H = 32, G = 1, N = 3328, D = 128, bits = 1, sys = 41, text = 300;
  bool calibrate = true;
};

// "B=32,H=32,G=1,N=3328,D=128,bits=1,sys=41,text=300,calib=1"; keys left out keep the defaults
// (the InternVL2.5 shape: 13 tiles, 1-bit K and V, 41 system and 300 text tokens).
BenchShape parse_shape(const std::string& text) {
  BenchShape s;
  std::map<std::string, int64_t*> keys = {{"B", &s.B},   {"H", &s.H},       {"G", &s.G},   {"N", &s.N},
                                          {"D", &s.D},   {"bits", &s.bits}, {"sys", &s.sys}, {"text", &s.text}};
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const auto eq = item.find('=');
    const std::string key = item.substr(0, eq);
    if (eq == std::string::npos) fail("--shapes: '{}' is not key=value (in '{}')", item, text);
    int64_t value = 0;
    try {
      value = std::stoll(item.substr(eq + 1));
    } catch (const std::exception&) {
      fail("--shapes: '{}' needs an integer (in '{}')", item, text);
    }
    if (key == "calib") {
      s.calibrate = value != 0;
      continue;
    }
    auto it = keys.find(key);
    if (it == keys.end()) fail("--shapes: unknown key '{}' (allowed: B, H, G, N, D, bits, sys, text, calib)", key);
    *it->second = value;
  }
  if (s.bits != 1 && s.bits != 2 && s.bits != 4 && s.bits != 8) fail("--shapes: bits must be 1, 2, 4 or 8, got {}", s.bits);
  return s;
}

struct BenchOptions {
  std::vector<std::string> shapes{"B=32,H=32,N=3328,D=128,bits=1", "B=32,H=32,N=3328,D=128,bits=2",
                                  "B=32,H=8,G=4,N=3328,D=128,bits=1", "B=1,H=32,N=3328,D=128,bits=1",
                                  "B=8,H=28,N=1296,D=128,bits=1", "B=32,H=32,N=576,D=128,bits=1"};
  int iters = 200;
  std::string json_out;
};

#ifdef CALIBQ_WITH_CUDA
// Mean GPU milliseconds of fn: captured once in a CUDA graph and replayed `iters` times
// between CUDA events, so that host-side dispatch (which a real decode step overlaps with
// the previous layer's GPU work) does not count. fn must only queue GPU work.
template <typename Fn>
double time_ms(Fn&& fn, int iters) {
  at::cuda::CUDAStream stream = at::cuda::getStreamFromPool();
  at::cuda::CUDAStreamGuard guard(stream);
  for (int i = 0; i < 3; ++i) fn();  // warm-up: allocations and kernel attributes happen here
  stream.synchronize();
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  fn();
  graph.capture_end();
  for (int i = 0; i < 5; ++i) graph.replay();
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  start.record(stream);
  for (int i = 0; i < iters; ++i) graph.replay();
  stop.record(stream);
  stop.synchronize();
  return static_cast<double>(start.elapsed_time(stop)) / iters;
}

// Mean wall milliseconds of fn called eagerly (host dispatch included).
template <typename Fn>
double eager_ms(Fn&& fn, int iters) {
  for (int i = 0; i < 10; ++i) fn();
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  auto stream = at::cuda::getCurrentCUDAStream();
  start.record(stream);
  for (int i = 0; i < iters; ++i) fn();
  stop.record(stream);
  stop.synchronize();
  return static_cast<double>(start.elapsed_time(stop)) / iters;
}

void run_bench_kernels(const BenchOptions& o, const std::string& cmdline) {
  if (!kernels::cuda_available()) fail("bench kernels: no CUDA device");
  const auto* prop = at::cuda::getCurrentDeviceProperties();
  int driver = 0;
  cudaDriverGetVersion(&driver);
  // The device copy bandwidth: a 1 GiB device-to-device copy reads and writes every byte.
  const int64_t copy_bytes = int64_t{1} << 30;
  at::Tensor src = at::empty({copy_bytes}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA));
  at::Tensor dst = at::empty_like(src);
  const double copy_ms = eager_ms([&] { dst.copy_(src); }, 20);
  const double copy_gbps = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
  src.reset();
  dst.reset();
  std::cout << fmt::format("{} (driver {}.{}, {} SMs): device copy {:.0f} GB/s\n\n", prop->name, driver / 1000,
                           (driver % 1000) / 10, prop->multiProcessorCount, copy_gbps);
  std::cout << "| B | H | G | N | D | bits | calibq visual ms | SDPA fp16 visual ms | GB/s | of copy | calibq whole ms | "
               "SDPA fp16 whole ms | whole speed-up |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  nlohmann::json rows = nlohmann::json::array();
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  for (const auto& text : o.shapes) {
    const BenchShape s = parse_shape(text);
    const int64_t hq = s.H * s.G, row = kernels::packed_bytes(s.D, static_cast<int>(s.bits));
    auto packed_kv = [&] {
      kernels::PackedKV p;
      p.packed = at::randint(0, 256, {s.B, s.H, s.N, row}, cuda.dtype(at::kByte));
      p.scale = at::rand({s.B, s.H, 1, s.D}, cuda.dtype(at::kFloat)) * 0.2 + 0.05;
      p.zero = at::rand({s.B, s.H, 1, s.D}, cuda.dtype(at::kFloat)) * float((1 << s.bits) - 1);
      p.bits = static_cast<int>(s.bits);
      return p;
    };
    kernels::DecodeAttentionInputs visual;
    visual.q = at::randn({s.B, hq, s.D}, cuda.dtype(at::kHalf));
    visual.has_packed = true;
    visual.key = packed_kv();
    visual.value = packed_kv();
    // As a cache holds them after prefill: 1-bit values also as token-major words.
    if (s.bits == 1 && s.D % 32 == 0) visual.value.token_words = kernels::token_words(visual.value.packed, s.N);
    visual.scale = 1.0 / std::sqrt(static_cast<double>(s.D));
    visual.calibrate = s.calibrate;
    visual.calib_b = -3.0;
    kernels::DecodeAttentionInputs whole = visual;
    for (int64_t len : {s.sys, s.text})
      if (len > 0)
        whole.full.push_back({at::randn({s.B, s.H, len, s.D}, cuda.dtype(at::kHalf)),
                              at::randn({s.B, s.H, len, s.D}, cuda.dtype(at::kHalf)), {}});
    const double ours_visual = time_ms([&] { kernels::decode_attention(visual); }, o.iters);
    const double ours_whole = time_ms([&] { kernels::decode_attention(whole); }, o.iters);
    const double ours_whole_eager = eager_ms([&] { kernels::decode_attention(whole); }, o.iters);
    // PyTorch's fp16 SDPA over the same tokens (K/V repeated for GQA before timing).
    auto sdpa = [&](int64_t tokens) {
      at::Tensor q = at::randn({s.B, hq, 1, s.D}, cuda.dtype(at::kHalf));
      at::Tensor k = at::randn({s.B, hq, tokens, s.D}, cuda.dtype(at::kHalf));
      at::Tensor v = at::randn({s.B, hq, tokens, s.D}, cuda.dtype(at::kHalf));
      return time_ms([&] { at::scaled_dot_product_attention(q, k, v); }, o.iters);
    };
    const double sdpa_visual = sdpa(s.N);
    const double sdpa_whole = sdpa(s.sys + s.N + s.text);
    // Bytes the visual kernel must move: codes of K and V, scales and zero-points, q in, output out.
    const double visual_bytes = 2.0 * s.B * s.H * s.N * row + 4.0 * s.B * s.H * s.D * 4 + 2.0 * s.B * hq * s.D * 2;
    const double whole_bytes = visual_bytes + 2.0 * s.B * s.H * (s.sys + s.text) * s.D * 2;
    const double gbps = visual_bytes / (ours_visual * 1e-3) / 1e9;
    std::cout << fmt::format("| {} | {} | {} | {} | {} | {} | {:.4f} | {:.4f} | {:.0f} | {:.0f}% | {:.4f} | {:.4f} | {:.1f}x |\n",
                             s.B, s.H, s.G, s.N, s.D, s.bits, ours_visual, sdpa_visual, gbps, 100 * gbps / copy_gbps,
                             ours_whole, sdpa_whole, sdpa_whole / ours_whole)
              << std::flush;
    rows.push_back({{"B", s.B}, {"H", s.H}, {"G", s.G}, {"N", s.N}, {"D", s.D}, {"bits", s.bits},
                    {"system", s.sys}, {"text", s.text}, {"calibrate", s.calibrate},
                    {"calibq_ms", ours_visual}, {"sdpa_fp16_ms", sdpa_visual}, {"bytes", visual_bytes}, {"GBps", gbps},
                    {"fraction_of_copy", gbps / copy_gbps}, {"calibq_whole_ms", ours_whole},
                    {"sdpa_fp16_whole_ms", sdpa_whole}, {"whole_bytes", whole_bytes},
                    {"whole_GBps", whole_bytes / (ours_whole * 1e-3) / 1e9}, {"whole_speedup", sdpa_whole / ours_whole},
                    {"calibq_whole_eager_ms", ours_whole_eager}});
  }
  if (!o.json_out.empty()) {
    nlohmann::json doc = {{"command", cmdline},
                          {"gpu", prop->name},
                          {"driver", fmt::format("{}.{}", driver / 1000, (driver % 1000) / 10)},
                          {"copy_GBps", copy_gbps},
                          {"build", to_json(build_info())},
                          {"rows", rows}};
    write_text_atomically(o.json_out, doc.dump(1) + "\n");
    std::cout << "\nwrote " << o.json_out << "\n";
  }
}
#else
void run_bench_kernels(const BenchOptions& o, const std::string&) {
  for (const auto& s : o.shapes) parse_shape(s);  // the flags are still checked
  fail("bench kernels: this calibq was built without CUDA (build against a CUDA LibTorch: scripts/device/build.sh)");
}
#endif

}  // namespace

void add_bench_commands(CLI::App& app, int argc, char** argv) {
  std::string cmdline;
  for (int i = 0; i < argc; ++i) cmdline += (i ? " " : "") + std::string(argv[i]);
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks on the GPU");
  bench->require_subcommand(1);
  auto o = std::make_shared<BenchOptions>();
  CLI::App* k = bench->add_subcommand("kernels", "Decode attention over 1-8-bit visual codes (and fp16 system/text "
                                                 "tokens) against PyTorch's fp16 SDPA on the same shapes");
  k->add_option("--shapes", o->shapes, "shapes as key=value lists (B,H,G,N,D,bits,sys,text,calib), separated by ';'")
      ->delimiter(';');
  k->add_option("--iters", o->iters, "timed iterations per measurement")->capture_default_str();
  k->add_option("--json", o->json_out, "write the rows (with GPU, driver and command) to this JSON file");
  k->callback([o, cmdline] { run_bench_kernels(*o, cmdline); });
  add_throughput_command(bench, cmdline);
}

}  // namespace calibq::cli
