// What the throughput benchmark stands on: real architectures by name with random weights,
// micro-batched prefill whose caches join for one decode, the cache's reserve, and the
// `bench throughput` command itself (on the CPU with a tiny architecture).
#include <ATen/ATen.h>
#include <algorithm>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "analysis/plots.h"
#include "core/config/hf_config.h"
#include "core/io/json_file.h"
#include "core/io/safetensors.h"
#include "core/kv/kv_cache.h"
#include "core/models/architectures.h"
#include "core/models/model.h"
#include "kernels/cuda_dispatch.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

std::string fixture(const std::string& name) { return std::string(CALIBQ_TEST_DATA) + "/models/" + name; }

TEST(Architectures, NamesAreStable) {
  EXPECT_EQ(architecture_names(), (std::vector<std::string>{"internvl2.5-8b", "llava-1.5-7b", "qwen2-vl-7b", "tiny-internvl",
                                                            "tiny-llava", "tiny-qwen2vl"}));
  test::expect_error([] { architecture_config("llava-7b"); }, {"llava-7b", "internvl2.5-8b", "llava-1.5-7b"});
}

// The built-in LLaVA-1.5-7B config reads as the hub's own config.json does.
TEST(Architectures, LlavaEqualsTheHubConfig) {
  const ModelConfig hub = parse_model_config(read_json_file(std::string(CALIBQ_TEST_DATA) + "/configs/llava-1.5-7b-hf.json"), "hub");
  const ModelConfig ours = architecture_config("llava-1.5-7b");
  EXPECT_EQ(ours.family, hub.family);
  for (auto [a, b] : {std::pair{ours.text.hidden_size, hub.text.hidden_size},
                      {ours.text.intermediate_size, hub.text.intermediate_size},
                      {ours.text.num_hidden_layers, hub.text.num_hidden_layers},
                      {ours.text.num_attention_heads, hub.text.num_attention_heads},
                      {ours.text.num_key_value_heads, hub.text.num_key_value_heads},
                      {ours.text.vocab_size, hub.text.vocab_size},
                      {ours.text.head_dim, hub.text.head_dim},
                      {ours.vision->hidden_size, hub.vision->hidden_size},
                      {ours.vision->num_hidden_layers, hub.vision->num_hidden_layers},
                      {ours.vision->image_size, hub.vision->image_size},
                      {ours.vision->patch_size, hub.vision->patch_size},
                      {*ours.image_token_id, *hub.image_token_id}})
    EXPECT_EQ(a, b);
  EXPECT_EQ(ours.vision_feature_layers, hub.vision_feature_layers);
  EXPECT_EQ(ours.vision->hidden_act, hub.vision->hidden_act);
  // Qwen2-VL-7B as its hub config.json reads.
  const ModelConfig qwen_hub =
      parse_model_config(read_json_file(std::string(CALIBQ_TEST_DATA) + "/configs/Qwen2-VL-7B-Instruct.json"), "hub");
  const ModelConfig qwen = architecture_config("qwen2-vl-7b");
  EXPECT_EQ(qwen.family, ModelFamily::Qwen2VL);
  EXPECT_EQ(qwen.text.hidden_size, qwen_hub.text.hidden_size);
  EXPECT_EQ(qwen.text.num_key_value_heads, qwen_hub.text.num_key_value_heads);
  EXPECT_EQ(qwen.text.rope.mrope_section, qwen_hub.text.rope.mrope_section);
  EXPECT_EQ(qwen.vision->hidden_size, qwen_hub.vision->hidden_size);
  EXPECT_EQ(*qwen.image_token_id, *qwen_hub.image_token_id);
  const ModelConfig internvl = architecture_config("internvl2.5-8b");
  EXPECT_EQ(internvl.text.num_key_value_heads, 8);
  EXPECT_EQ(internvl.text.intermediate_size, 14336);
  EXPECT_EQ(internvl.text.vocab_size, 92553);
  EXPECT_EQ(internvl.vision->image_size, 448);
  EXPECT_DOUBLE_EQ(internvl.downsample_ratio, 0.5);
}

TEST(RandomModel, SameSeedSameWeightsAndAReport) {
  const ModelConfig c = architecture_config("tiny-internvl");
  auto a = random_model(c, at::kFloat, at::kCPU, 3);
  auto b = random_model(c, at::kFloat, at::kCPU, 3);
  auto d = random_model(c, at::kFloat, at::kCPU, 4);
  EXPECT_NE(a->load_report().find("tensors of random weights, seed 3"), std::string::npos) << a->load_report();
  ModelInputs in;
  in.input_ids = at::tensor({5, 6, 250, 250, 250, 250, 7, 8}, at::kLong).view({1, 8});
  in.pixel_values = at::rand({1, 3, 56, 56});
  const at::Tensor la = a->forward_logits(in);
  EXPECT_TRUE(at::equal(la, b->forward_logits(in)));
  EXPECT_FALSE(at::equal(la, d->forward_logits(in)));
}

// Prefill in micro-batches (each cache quantized on its own, then joined) gives exactly the
// tokens of one prefill of the whole batch, for 16-bit and quantized visual KV.
TEST(MicroBatchedPrefill, EqualsOnePrefillOfTheBatch) {
  const std::string dir = fixture("llava-gqa");
  auto model = load_model(dir);
  auto ck = SafetensorsCheckpoint::open(dir + "/inputs.safetensors");
  ModelInputs one;
  one.input_ids = ck.tensor("input_ids").narrow(0, 0, 1).clone();
  one.pixel_values = ck.tensor("pixel_values").narrow(0, 0, 1).clone();
  // Three samples with the same layout and different images.
  ModelInputs in;
  in.input_ids = one.input_ids.repeat({3, 1});
  in.pixel_values = at::cat({one.pixel_values, one.pixel_values.flip(-1), one.pixel_values * 0.5}, 0);
  for (const std::string spec : {"", "calibquant:bits=1", "post_scaled:bits=2,axis=token"}) {
    const KVCacheConfig kv = make_kv_cache_config(spec, spec, "visual");
    GenerationConfig gen;
    gen.max_new_tokens = 5;
    const GenerationResult whole = model->generate(in, gen, kv);
    EXPECT_EQ(whole.prefill_parts, 1);
    for (int64_t micro : {1, 2}) {
      gen.prefill_micro_batch = micro;
      const GenerationResult parts = model->generate(in, gen, kv);
      EXPECT_EQ(parts.prefill_parts, micro == 1 ? 3 : 2) << spec;
      EXPECT_EQ(parts.tokens, whole.tokens) << spec << " micro-batch " << micro;
      EXPECT_EQ(parts.kv_bytes.total(), whole.kv_bytes.total()) << spec;
    }
    // The samples differ, so that equal tokens say the joined caches keep their order.
    EXPECT_NE(whole.tokens[0], whole.tokens[1]) << spec;
  }
  // Reusing the first micro-batch's caches equals a prefill of identical samples.
  ModelInputs same;
  same.input_ids = in.input_ids;
  same.pixel_values = one.pixel_values.repeat({3, 1, 1, 1});
  GenerationConfig gen;
  gen.max_new_tokens = 4;
  const KVCacheConfig kv = make_kv_cache_config("calibquant:bits=1", "calibquant:bits=1", "visual");
  const GenerationResult whole = model->generate(same, gen, kv);
  gen.prefill_micro_batch = 1;
  gen.reuse_first_prefill = true;
  const GenerationResult reused = model->generate(same, gen, kv);
  EXPECT_EQ(reused.prefill_parts, 1);
  EXPECT_EQ(reused.tokens, whole.tokens);
  // Formats that cannot join are one clear error.
  gen.reuse_first_prefill = false;
  test::expect_error([&] { model->generate(in, gen, make_kv_cache_config("kivi:bits=2", "kivi:bits=2", "visual")); },
                     {"cannot join prefill micro-batches", "prefill the whole batch at once"});
}

TEST(KVCache, ReserveKeepsDecodingInOneBuffer) {
  LayerKVCache cache(make_kv_cache_config("", "", "visual"));
  cache.prefill(at::randn({2, 2, 10, 16}), at::randn({2, 2, 10, 16}), 2, 5);
  cache.reserve(40);
  cache.append(at::randn({2, 2, 1, 16}), at::randn({2, 2, 1, 16}));
  const void* first = cache.keys().data_ptr();  // keys() concatenates: check through the view below
  (void)first;
  const at::Tensor q = at::randn({2, 4, 1, 16});
  std::vector<at::Tensor> ks;
  for (int i = 0; i < 39; ++i) {
    const at::Tensor k = at::randn({2, 2, 1, 16}), v = at::randn({2, 2, 1, 16});
    ks.push_back(k);
    cache.append(k, v);
  }
  EXPECT_EQ(cache.length(), 50);
  // The appended keys are where they were put, after the prefill's text tokens.
  EXPECT_TRUE(at::equal(cache.keys().narrow(2, 11, 39), at::cat(ks, 2)));
  // Joined caches attend as the one cache of the whole batch.
  LayerKVCache a(make_kv_cache_config("calibquant:bits=1", "calibquant:bits=1", "visual"));
  LayerKVCache b(make_kv_cache_config("calibquant:bits=1", "calibquant:bits=1", "visual"));
  LayerKVCache both(make_kv_cache_config("calibquant:bits=1", "calibquant:bits=1", "visual"));
  const at::Tensor k = at::randn({3, 2, 12, 16}), v = at::randn({3, 2, 12, 16});
  a.prefill(k.narrow(0, 0, 1), v.narrow(0, 0, 1), 3, 6);
  b.prefill(k.narrow(0, 1, 2), v.narrow(0, 1, 2), 3, 6);
  both.prefill(k, v, 3, 6);
  LayerKVCache joined = LayerKVCache::concat_batch({&a, &b});
  EXPECT_EQ(joined.batch(), 3);
  EXPECT_EQ(joined.bytes().total(), both.bytes().total());
  const at::Tensor q3 = at::randn({3, 4, 1, 16});
  EXPECT_TRUE(at::allclose(joined.attend(q3, 0.25), both.attend(q3, 0.25), 1e-6, 1e-6));
  LayerKVCache other(make_kv_cache_config("calibquant:bits=1", "calibquant:bits=1", "visual"));
  other.prefill(k.narrow(0, 0, 1), v.narrow(0, 0, 1), 2, 6);
  test::expect_error([&] { LayerKVCache::concat_batch({&a, &other}); }, {"differ in their system segment"});
}

TEST(BenchThroughput, TinyArchitectureOnTheCpu) {
  test::TempDir dir;
  nlohmann::json peer = {{"rows", {{{"batch", 1}, {"decode_tok_s", 2.0}, {"oom", false}}, {{"batch", 3}, {"oom", true}}}}};
  test::write_bytes(dir.file("peer.json"), peer.dump());
  auto r = test::run_calibq("bench throughput --arch tiny-internvl --random-weights --device cpu --dtype bf16 --batch 1,3 "
                            "--micro-batch 2 --image-tokens 8 --system-tokens 3 --prompt-tokens 4 --new-tokens 3 "
                            "--kv none --kv calibquant:bits=1 --repeats 3 --json " + dir.file("t.json") + " --md " + dir.file("t.md") +
                            " --plots " + dir.path().string() + " --transformers " + dir.file("peer.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("[4/4]"), std::string::npos) << r.err;  // progress per configuration
  const nlohmann::json doc = read_json_file(dir.file("t.json"));
  ASSERT_EQ(doc["rows"].size(), 4u);
  for (const auto& row : doc["rows"]) {
    EXPECT_FALSE(row["oom"].get<bool>());
    EXPECT_EQ(row["decode_steps"], 2);  // three tokens: the first from prefill, two decode steps
    EXPECT_GT(row["decode_tok_s"].get<double>(), 0);
    EXPECT_EQ(row["prefill_parts_run"], row["batch"] == 3 ? 2 : 1);
    EXPECT_FALSE(row["cuda_graph"].get<bool>());  // the CPU steps eagerly
    // Three runs each, reported as the median one.
    ASSERT_EQ(row["decode_ms_per_step_runs"].size(), 3u) << row.dump();
    std::vector<double> ms = row["decode_ms_per_step_runs"].get<std::vector<double>>();
    std::sort(ms.begin(), ms.end());
    EXPECT_EQ(row["decode_ms_per_step"].get<double>(), ms[1]) << row.dump();
    // On the CPU (no kernel copies) the cache holds exactly what the format's arithmetic says.
    EXPECT_DOUBLE_EQ(row["kv_bytes_per_seq_measured"].get<double>(), row["kv_bytes_per_seq_arithmetic"].get<double>())
        << row.dump();
  }
  const auto& rows = doc["rows"];
  EXPECT_LT(rows[2]["kv_bytes_per_seq_measured"].get<double>(), rows[0]["kv_bytes_per_seq_measured"].get<double>());
  EXPECT_EQ(doc["summary"]["fp16_batch1_ms_per_step"], rows[0]["decode_ms_per_step"]);
  EXPECT_DOUBLE_EQ(doc["summary"]["transformers_max_tok_s"].get<double>(), 2.0);
  EXPECT_TRUE(doc["summary"].contains("ratio_vs_calibq_fp16"));
  const std::string md = test::read_bytes(dir.file("t.md"));
  EXPECT_NE(md.find("| calibquant:bits=1 | 3 |"), std::string::npos) << md;
  EXPECT_TRUE(std::filesystem::exists(dir.file("plots/throughput_vs_batch.gp")));
  EXPECT_NE(test::read_bytes(dir.file("plots/throughput_vs_batch.dat")).find("# transformers (16-bit)"), std::string::npos);
  // Qwen2-VL: 6 image tokens make a 2 x 3 merged grid (4 x 6 patches).
  r = test::run_calibq("bench throughput --arch tiny-qwen2vl --random-weights --device cpu --batch 2 --image-tokens 6 "
                       "--system-tokens 3 --prompt-tokens 4 --new-tokens 3 --kv none --kv calibquant:bits=1 --json " +
                       dir.file("q.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_json_file(dir.file("q.json"))["rows"].size(), 2u);
  // Flags are checked before anything loads.
  r = test::run_calibq("bench throughput --arch tiny-llava --random-weights --device cpu --batch 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--batch: '0'"), std::string::npos) << r.err;
  r = test::run_calibq("bench throughput --arch tiny-llava --random-weights --device cpu --repeats 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--repeats must be at least 1, got 0"), std::string::npos) << r.err;
  r = test::run_calibq("bench throughput --arch nope --random-weights --device cpu");
  EXPECT_NE(r.err.find("unknown architecture 'nope'"), std::string::npos) << r.err;
  if (!kernels::cuda_available()) {
    r = test::run_calibq("bench throughput --arch tiny-llava --random-weights --device cpu --batch auto --new-tokens 2");
    EXPECT_NE(r.err.find("needs a CUDA device"), std::string::npos) << r.err;
  }
}

TEST(Plots, ThroughputAgainstAnyColumn) {
  test::TempDir dir;
  const nlohmann::json rows = {{{"kv", "a"}, {"budget_gib", 20}, {"batch", 7}, {"decode_tok_s", 100}},
                               {{"kv", "a"}, {"budget_gib", 40}, {"batch", 15}, {"decode_tok_s", 180}},
                               {{"kv", "b"}, {"budget_gib", 40}, {"batch", 60}, {"decode_tok_s", nullptr}}};
  const auto points = throughput_points(rows, "kv", "decode_tok_s", "rows", "budget_gib");
  ASSERT_EQ(points.size(), 2u);  // the null row is left out
  EXPECT_EQ(points[1].batch, 40);
  plot_throughput(dir.path().string(), points, "tok/s", "t", ThroughputAxis{"budget_gib", "budget", "tp_budget", false});
  const std::string dat = test::read_bytes(dir.file("plots/tp_budget.dat"));
  EXPECT_NE(dat.find("# budget_gib tok/s\n20 100\n40 180\n"), std::string::npos) << dat;
  EXPECT_EQ(test::read_bytes(dir.file("plots/tp_budget.gp")).find("logscale"), std::string::npos);
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

// On CUDA the decode steps after the first replay one captured graph: the same tokens as
// stepping eagerly, and (fp32, a small random model) as the CPU reference path, for 16-bit
// and 1-bit CalibQuant visual KV. The speed must not come from skipping work.
TEST(DecodeGraph, ReplaysEqualEagerStepsAndTheCpu) {
  if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = fixture("llava-gqa");
  auto ck = SafetensorsCheckpoint::open(dir + "/inputs.safetensors");
  ModelInputs in;
  in.input_ids = ck.tensor("input_ids").narrow(0, 0, 1).repeat({2, 1});
  const at::Tensor px = ck.tensor("pixel_values").narrow(0, 0, 1);
  in.pixel_values = at::cat({px, px.flip(-1)}, 0);
  auto gpu = load_model(dir, at::kFloat, at::kCUDA);
  auto cpu = load_model(dir, at::kFloat, at::kCPU);
  for (const std::string spec : {"", "calibquant:bits=1"}) {
    const KVCacheConfig kv = make_kv_cache_config(spec, spec, "visual");
    GenerationConfig gen;
    gen.max_new_tokens = 8;
    const GenerationResult graph = gpu->generate(in, gen, kv);
    EXPECT_TRUE(graph.cuda_graph) << spec;
    gen.cuda_graph = false;
    const GenerationResult eager = gpu->generate(in, gen, kv);
    EXPECT_FALSE(eager.cuda_graph);
    EXPECT_EQ(graph.tokens, eager.tokens) << spec;
    EXPECT_EQ(graph.tokens, cpu->generate(in, gen, kv).tokens) << spec;
  }
}

// Dynamic NTK RoPE (InternLM2): the graph recomputes the frequencies from the positions on the
// device every step, within the original length (fixed there) and beyond it (a new base every
// step): the reference's tokens either way.
TEST(DecodeGraph, DynamicRopeReplaysWithinAndBeyondItsOriginalLength) {
  if (!kernels::cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (const std::string name : {"internvl-original-internlm2", "internvl-original-long"}) {
    const std::string dir = fixture(name);
    auto ck = SafetensorsCheckpoint::open(dir + "/inputs.safetensors");
    ModelInputs in;
    in.input_ids = ck.tensor("input_ids");
    in.pixel_values = ck.tensor("pixel_values");
    auto gpu = load_model(dir, at::kFloat, at::kCUDA);
    GenerationConfig gen;
    gen.max_new_tokens = 6;
    const GenerationResult r = gpu->generate(in, gen, make_kv_cache_config("", "", "visual"));
    EXPECT_TRUE(r.cuda_graph) << name;
    const at::Tensor want = SafetensorsCheckpoint::open(dir + "/reference.safetensors").tensor("generated");
    for (int64_t s = 0; s < want.size(0); ++s)
      for (int64_t j = 0; j < 6; ++j) EXPECT_EQ(r.tokens[s][j], want[s][in.input_ids.size(1) + j].item<int64_t>()) << name;
  }
}

}  // namespace
}  // namespace calibq
