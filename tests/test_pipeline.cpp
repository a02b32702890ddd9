// The whole LLaVA pipeline against transformers (scripts/fixtures/make_pipeline_fixtures.py):
// photographs -> image processor -> chat template -> tokenizer -> model -> greedy tokens ->
// text; padded batches, stop tokens and seeded sampling.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <deque>
#include <random>

#include "core/io/json_file.h"
#include "core/io/safetensors.h"
#include "core/models/model.h"
#include "core/models/processor.h"
#include "core/models/sampling.h"
#include "core/quant/registry.h"
#include "datasets/images.h"
#include "tests/pipeline_fixture.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;
const std::string kDir = std::string(CALIBQ_TEST_DATA) + "/models/llava-pipeline";
const std::string kImages = std::string(CALIBQ_TEST_DATA) + "/images/";

struct Pipeline : ::testing::Test, test::PipelineFixture {
  void SetUp() override {
    if (!load(kDir, kImages)) GTEST_SKIP() << "built without OpenCV";
  }
};

TEST_F(Pipeline, ChatTextIdsAndPixelsEqualTheProcessor) {
  auto pixels = SafetensorsCheckpoint::open(kDir + "/pipeline_pixels.safetensors");
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto& c = ref["cases"][i];
    EXPECT_EQ(samples[i].chat_text, c["chat_text"].get<std::string>());
    EXPECT_EQ(samples[i].ids, c["input_ids"].get<std::vector<int64_t>>()) << c["image"];
    at::Tensor want_px = pixels.tensor("pixel_values." + std::to_string(i));
    ASSERT_EQ(samples[i].pixel_values.sizes(), want_px.sizes());
    EXPECT_LE((samples[i].pixel_values - want_px).abs().max().item<double>(), 1e-5);
  }
}

GenerationConfig greedy(int64_t n) {
  GenerationConfig g;
  g.max_new_tokens = n;
  return g;
}

TEST_F(Pipeline, GreedyTokensAndTextEqualTransformersAloneAndInAPaddedBatch) {
  const int64_t n = ref["new_tokens"].get<int64_t>();
  const KVCacheConfig fp{nullptr, nullptr, SegmentSet{}};
  for (size_t i = 0; i < samples.size(); ++i) {
    GenerationResult r = model->generate(proc->collate({samples[i]}), greedy(n), fp);
    EXPECT_EQ(r.tokens[0], want(i)) << i;
    EXPECT_EQ(proc->decode(r.tokens[0]), ref["cases"][i]["text"].get<std::string>());
  }
  // The three prompts differ in length: the batch pads between image and text.
  ModelInputs batch = proc->collate(samples);
  ASSERT_GT(batch.attention_mask.eq(0).sum().item<int64_t>(), 0);
  GenerationResult r = model->generate(batch, greedy(n), fp);
  for (size_t i = 0; i < samples.size(); ++i) EXPECT_EQ(r.tokens[i], want(i)) << "batched sample " << i;
  EXPECT_EQ(r.steps, n - 1);
  EXPECT_GT(r.kv_bytes.visual, 0);
  // A quantized visual segment goes through the same batch path and changes the cache size.
  KVCacheConfig q{QuantizerRegistry::instance().make(parse_quantizer_spec("calibquant:bits=1"), KVRole::Key),
                  QuantizerRegistry::instance().make(parse_quantizer_spec("calibquant:bits=1"), KVRole::Value), SegmentSet{}};
  GenerationResult rq = model->generate(batch, greedy(n), q);
  EXPECT_LT(rq.kv_bytes.visual * 8, r.kv_bytes.visual);
  EXPECT_EQ(rq.kv_bytes.text, r.kv_bytes.text);
}

// token_drop ranks visual tokens by prefill attention, which the decoder computes only
// for caches that ask for it.
TEST_F(Pipeline, TokenDropGetsPrefillAttentionOnlyWhereItAsks) {
  auto q = [](const std::string& spec, KVRole role) {
    return QuantizerRegistry::instance().make(parse_quantizer_spec(spec), role);
  };
  const KVCacheConfig drop{q("token_drop:keep=0.5", KVRole::Key), q("token_drop:keep=0.5", KVRole::Value), SegmentSet{}};
  EXPECT_TRUE(LayerKVCache(drop).needs_visual_importance());
  EXPECT_FALSE(LayerKVCache({drop.key, drop.value, SegmentSet::parse("text")}).needs_visual_importance());
  EXPECT_FALSE(LayerKVCache({q("token_drop:select=uniform", KVRole::Key), q("token_drop:select=uniform", KVRole::Value),
                             SegmentSet{}}).needs_visual_importance());
  EXPECT_FALSE(LayerKVCache({q("uniform", KVRole::Key), q("uniform", KVRole::Value), SegmentSet{}}).needs_visual_importance());
  ModelInputs batch = proc->collate(samples);
  GenerationResult full = model->generate(batch, greedy(4), {nullptr, nullptr, SegmentSet{}});
  GenerationResult dropped = model->generate(batch, greedy(4), drop);
  // Half the visual tokens, plus their int64 indices.
  EXPECT_GT(dropped.kv_bytes.visual * 2, full.kv_bytes.visual);
  EXPECT_LT(dropped.kv_bytes.visual * 10, full.kv_bytes.visual * 6);
}

TEST_F(Pipeline, StopTokensEndEachSampleOnItsOwn) {
  GenerationConfig g = greedy(8);
  g.stop_ids = {want(0)[2]};  // sample 0 stops after two tokens
  ModelInputs batch = proc->collate(samples);
  GenerationResult r = model->generate(batch, g, {nullptr, nullptr, SegmentSet{}});
  EXPECT_TRUE(r.stopped[0]);
  const auto w0 = want(0);
  EXPECT_EQ(r.tokens[0], std::vector<int64_t>(w0.begin(), w0.begin() + 2));
  for (size_t i = 1; i < samples.size(); ++i) {
    // Others run on unchanged until their own stop token or the length.
    const auto w = want(i);
    auto stop = std::find(w.begin(), w.end(), g.stop_ids[0]);
    EXPECT_EQ(r.tokens[i], std::vector<int64_t>(w.begin(), stop)) << i;
    EXPECT_EQ(r.stopped[i], stop != w.end());
  }
}

TEST_F(Pipeline, SamplingIsSeededAndReducesToGreedy) {
  ModelInputs batch = proc->collate(samples);
  const KVCacheConfig fp{nullptr, nullptr, SegmentSet{}};
  GenerationConfig g = greedy(8);
  g.temperature = 1.5;
  g.seed = 42;
  GenerationResult a = model->generate(batch, g, fp), b = model->generate(batch, g, fp);
  EXPECT_EQ(a.tokens, b.tokens);
  g.seed = 43;
  EXPECT_NE(model->generate(batch, g, fp).tokens, a.tokens);
  g.top_p = 1e-9;  // the nucleus is the argmax alone
  GenerationResult c = model->generate(batch, g, fp);
  for (size_t i = 0; i < samples.size(); ++i) EXPECT_EQ(c.tokens[i], want(i));
}

TEST_F(Pipeline, GenerateCommandPrintsTheAnswer) {
  auto r = test::run_calibq("generate --model " + kDir + " --image " + kImages + "rocket.jpg --prompt '" +
                            ref["cases"][1]["prompt"].get<std::string>() + "' --max-new-tokens 8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, ref["cases"][1]["text"].get<std::string>() + "\n");
  auto bad = test::run_calibq("generate --model " + kDir + " --image /nonexistent.png --prompt hi");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("/nonexistent.png: image file missing"), std::string::npos) << bad.err;
}

TEST(Sampling, FollowsTheDistributionAndTheNucleus) {
  at::Tensor logits = at::log(at::tensor({0.5, 0.3, 0.15, 0.05}, at::kDouble)).view({1, 4});
  std::mt19937_64 rng(1);
  std::vector<int> count(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++count[next_tokens(logits, {1.0, 1.0}, rng)[0]];
  EXPECT_NEAR(count[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(count[3] / double(n), 0.05, 0.01);
  std::fill(count.begin(), count.end(), 0);
  for (int i = 0; i < n; ++i) ++count[next_tokens(logits, {1.0, 0.7}, rng)[0]];  // {0, 1} reach 0.8 >= 0.7
  EXPECT_EQ(count[2] + count[3], 0);
  EXPECT_NEAR(count[0] / double(n), 0.5 / 0.8, 0.02);
  EXPECT_THROW(next_tokens(logits, {-1.0, 1.0}, rng), Error);
  EXPECT_THROW(next_tokens(logits, {1.0, 0.0}, rng), Error);
}

TEST(ProcessorErrors, MissingTokenizerIsNamed) {
  test::TempDir tmp;
  std::filesystem::copy_file(kDir + "/config.json", tmp.file("config.json"));
  try {
    ModelProcessor::load(tmp.path().string(), load_model_config(tmp.path().string()));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer (tokenizer.json or a SentencePiece tokenizer.model)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace calibq
