// Qwen2-VL's processor against transformers 5 (scripts/fixtures/make_qwen2vl_pipeline_fixtures.py):
// smart_resize on a table of sizes, the patches of both resize backends on the photographs,
// and the whole pipeline (chat template, <|image_pad|> expansion, tokenizer, patches and
// image_grid_thw, greedy tokens).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/io/json_file.h"
#include "core/io/safetensors.h"
#include "core/models/model.h"
#include "core/models/processor.h"
#include "datasets/images.h"
#include "tests/pipeline_fixture.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;
const std::string kImages = std::string(CALIBQ_TEST_DATA) + "/images/";
const std::string kDir = std::string(CALIBQ_TEST_DATA) + "/models/qwen2vl-pipeline";

TEST(Qwen2VLPatches, SmartResizeEqualsTransformers) {
  const json ref = read_json_file(kImages + "qwen2vl_patches.json");
  ASSERT_GE(ref["resize"].size(), 80u);
  for (const auto& r : ref["resize"]) {
    const int64_t h = r["height"].get<int64_t>(), w = r["width"].get<int64_t>();
    const int64_t lo = r["min_pixels"].get<int64_t>(), hi = r["max_pixels"].get<int64_t>();
    if (r.contains("error")) {
      EXPECT_THROW(smart_resize(h, w, 28, lo, hi), Error) << r.dump();
      continue;
    }
    const auto want = r["resized"].get<std::vector<int64_t>>();
    EXPECT_EQ(smart_resize(h, w, 28, lo, hi), std::make_pair(want[0], want[1])) << r.dump();
  }
  // Python's round is half to even: 70 / 28 = 2.5 rounds to 2, 42 / 28 = 1.5 to 2.
  EXPECT_EQ(smart_resize(70, 70, 28, 28 * 28, 28 * 28 * 100), std::make_pair(int64_t{56}, int64_t{56}));
  test::expect_error([] { smart_resize(10, 2500, 28, 56 * 56, 28 * 28 * 1280); }, {"aspect ratio 250 is above 200"});
}

TEST(Qwen2VLPatches, PatchesEqualQwen2VLImageProcessors) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  const json ref = read_json_file(kImages + "qwen2vl_patches.json");
  auto tensors = SafetensorsCheckpoint::open(kImages + "qwen2vl_patches.safetensors");
  ASSERT_GE(ref["cases"].size(), 12u);  // two classes x two settings x three photographs
  for (const auto& c : ref["cases"]) {
    const json cfg = {{"image_processor_type", c["class"]},
                      {"size", {{"shortest_edge", c["min_pixels"]}, {"longest_edge", c["max_pixels"]}}},
                      {"patch_size", 14},
                      {"temporal_patch_size", 2},
                      {"merge_size", 2}};
    const ImageProcessorConfig config = ImageProcessorConfig::from_json(cfg, "test");
    ImagePatches got = preprocess_image_patches(read_rgb_image(kImages + c["image"].get<std::string>()), config);
    at::Tensor want = tensors.tensor(c["key"].get<std::string>());
    ASSERT_EQ(got.pixel_values.sizes(), want.sizes()) << c["key"];
    const auto grid = c["grid_thw"].get<std::vector<int64_t>>();
    EXPECT_EQ(std::vector<int64_t>(got.grid_thw.begin(), got.grid_thw.end()), grid) << c["key"];
    EXPECT_LE((got.pixel_values - want).abs().max().item<double>(), 1e-5) << c["key"];
  }
}

TEST(Qwen2VLPatches, HubConfigKeysOverrideSize) {
  // Qwen2-VL-7B-Instruct's preprocessor_config.json gives min_pixels / max_pixels, not size.
  const json hub = {{"image_processor_type", "Qwen2VLImageProcessor"}, {"min_pixels", 3136}, {"max_pixels", 12845056},
                    {"patch_size", 14},  {"temporal_patch_size", 2},  {"merge_size", 2}};
  const ImageProcessorConfig c = ImageProcessorConfig::from_json(hub, "preprocessor_config.json");
  EXPECT_TRUE(c.smart_resize);
  EXPECT_EQ(c.min_pixels, 3136);
  EXPECT_EQ(c.max_pixels, 12845056);
  EXPECT_FALSE(c.do_center_crop);
  json bad = hub;
  bad["max_pixels"] = 100;
  test::expect_error([&] { ImageProcessorConfig::from_json(bad, "preprocessor_config.json"); },
                     {"preprocessor_config.json", "max_pixels 100"});
}

struct Qwen2VLPipeline : ::testing::Test, test::PipelineFixture {
  void SetUp() override {
    if (!load(kDir, kImages)) GTEST_SKIP() << "built without OpenCV";
  }
};

TEST_F(Qwen2VLPipeline, ChatTextIdsPatchesAndGreedyTokensEqualTransformers) {
  auto pixels = SafetensorsCheckpoint::open(kDir + "/pipeline_pixels.safetensors");
  GenerationConfig g;
  g.max_new_tokens = ref["new_tokens"].get<int64_t>();
  for (size_t i = 0; i < samples.size(); ++i) {
    expect_case(i, pixels, g);
    EXPECT_TRUE(at::equal(samples[i].image_grid_thw[0],
                          at::tensor(ref["cases"][i]["grid_thw"].get<std::vector<int64_t>>(), at::kLong)));
  }
  // Two photographs with the same patch grid batch together (prompts of different lengths,
  // so one sample is padded; M-RoPE positions skip the padding); patches are concatenated.
  ASSERT_TRUE(at::equal(samples[0].image_grid_thw, samples[1].image_grid_thw));
  ASSERT_NE(samples[0].ids.size(), samples[1].ids.size());
  ModelInputs batch = proc->collate({samples[0], samples[1]});
  EXPECT_EQ(batch.pixel_values.size(0), 2 * samples[0].pixel_values.size(0));
  EXPECT_EQ(batch.image_grid_thw.sizes(), (std::vector<int64_t>{2, 3}));
  GenerationResult r = model->generate(batch, g, {nullptr, nullptr, SegmentSet{}});
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(r.tokens[i], ref["cases"][i]["generated"].get<std::vector<int64_t>>()) << i;
  EXPECT_THROW(proc->collate({samples[0], samples[2]}), Error);
}

}  // namespace
}  // namespace calibq
