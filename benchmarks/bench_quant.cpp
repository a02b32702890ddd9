// CPU benchmark of the quantization library's reference paths: quantizing a visual
// segment after prefill, and one decode step of attention over a [system | visual | text]
// cache, for each quantizer at 1 bit against fp16. Run:
//   build/benchmarks/calibq_bench_quant --benchmark_min_time=0.2
// Report ratios between rows of one run; these are the CPU references, not the kernels.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "analysis/synthetic_kv.h"
#include "core/kv/kv_cache.h"
#include "core/quant/registry.h"

namespace calibq {
namespace {

const char* kSpecs[] = {"fp16", "uniform:bits=1", "group:bits=1", "quantile:bits=1", "post_scaled:bits=1",
                        "calibquant:bits=1", "kivi:bits=2", "token_drop:keep=0.0625"};

QuantErrorInput input() {
  static QuantErrorInput in = [] {
    SyntheticKVShape shape;  // 8 kv heads, 32 query heads, D = 128, 41 + 576 + 30 tokens
    return make_synthetic_kv(shape, 0);
  }();
  return in;
}

void BM_QuantizeVisualSegment(benchmark::State& state) {
  const std::string spec = kSpecs[state.range(0)];
  QuantErrorInput in = input();
  auto kq = make_quantizer(spec, KVRole::Key);
  at::Tensor visual = in.k.narrow(2, in.system_len, in.visual_len).contiguous();
  QuantContext ctx{at::rand({visual.size(0), visual.size(1), visual.size(2)})};
  for (auto _ : state) benchmark::DoNotOptimize(kq->quantize(visual, ctx));
  state.SetLabel(spec);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(visual.nbytes()));
}

void BM_DecodeAttention(benchmark::State& state) {
  const std::string spec = kSpecs[state.range(0)];
  QuantErrorInput in = input();
  LayerKVCache cache({make_quantizer(spec, KVRole::Key), make_quantizer(spec, KVRole::Value), SegmentSet{}});
  at::Tensor imp = at::rand({in.k.size(0), in.k.size(1), in.visual_len});
  cache.prefill(in.k, in.v, in.system_len, in.visual_len, imp);
  at::Tensor q = in.q.narrow(2, 0, 1).contiguous();  // one decode query per head
  for (auto _ : state) benchmark::DoNotOptimize(cache.attend(q, 1.0 / std::sqrt(128.0)));
  state.SetLabel(spec);
  state.counters["cache_bytes"] = static_cast<double>(cache.bytes().total());
}

BENCHMARK(BM_QuantizeVisualSegment)->DenseRange(0, std::size(kSpecs) - 1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeAttention)->DenseRange(0, std::size(kSpecs) - 1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace calibq

BENCHMARK_MAIN();
