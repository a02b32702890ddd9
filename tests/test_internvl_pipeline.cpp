// InternVL's processor against transformers 5 (scripts/fixtures/make_internvl_pipeline_fixtures.py):
// GotOcr2's tile grid, tiles and thumbnail pixels for both resize backends, and the whole
// pipeline (chat template, <img><IMG_CONTEXT>...</img> expansion, tokenizer, tiles, greedy tokens).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <deque>

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
const std::string kDir = std::string(CALIBQ_TEST_DATA) + "/models/internvl-pipeline";

TEST(InternVLTiles, GridEqualsGetOptimalTiledCanvas) {
  const json ref = read_json_file(kImages + "internvl_tiles.json");
  ASSERT_GE(ref["grids"].size(), 40u);
  for (const auto& g : ref["grids"]) {
    const auto got = optimal_tile_grid(g["height"].get<int64_t>(), g["width"].get<int64_t>(), 448, 448,
                                       g["min"].get<int64_t>(), g["max"].get<int64_t>());
    EXPECT_EQ(got, std::make_pair(g["columns"].get<int64_t>(), g["rows"].get<int64_t>())) << g.dump();
  }
  EXPECT_THROW(optimal_tile_grid(10, 10, 448, 448, 3, 2), Error);
}

TEST(InternVLTiles, TilesAndThumbnailEqualGotOcr2Processors) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  const json ref = read_json_file(kImages + "internvl_tiles.json");
  auto tensors = SafetensorsCheckpoint::open(kImages + "internvl_tiles.safetensors");
  ASSERT_GE(ref["cases"].size(), 18u);  // two classes x three tilings x three photographs
  for (const auto& c : ref["cases"]) {
    const int64_t tile = c["tile"].get<int64_t>();
    const json cfg = {{"image_processor_type", c["class"]},
                      {"size", {{"height", tile}, {"width", tile}}},
                      {"crop_to_patches", true},
                      {"min_patches", c["min"]},
                      {"max_patches", c["max"]},
                      {"image_mean", {0.485, 0.456, 0.406}},
                      {"image_std", {0.229, 0.224, 0.225}}};
    const ImageProcessorConfig config = ImageProcessorConfig::from_json(cfg, "test");
    at::Tensor got = preprocess_image_tiles(read_rgb_image(kImages + c["image"].get<std::string>()), config);
    at::Tensor want = tensors.tensor(c["key"].get<std::string>());
    ASSERT_EQ(got.sizes(), want.sizes()) << c["key"];
    EXPECT_EQ(got.size(0), c["num_patches"].get<int64_t>());
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-5) << c["key"];
  }
}

struct InternVLPipeline : ::testing::Test, test::PipelineFixture {
  void SetUp() override {
    if (!load(kDir, kImages)) GTEST_SKIP() << "built without OpenCV";
  }
};

TEST_F(InternVLPipeline, ChatTextIdsTilesAndGreedyTokensEqualTransformers) {
  auto pixels = SafetensorsCheckpoint::open(kDir + "/pipeline_pixels.safetensors");
  GenerationConfig g;
  g.max_new_tokens = ref["new_tokens"].get<int64_t>();
  for (size_t i = 0; i < samples.size(); ++i) {
    expect_case(i, pixels, g);
    EXPECT_EQ(samples[i].pixel_values.size(0), ref["cases"][i]["tiles"].get<int64_t>());
  }
  // Two photographs with the same tile grid batch together (prompts of different lengths:
  // the padding goes between </img> and the text); their tiles are concatenated.
  ASSERT_EQ(samples[0].pixel_values.size(0), samples[1].pixel_values.size(0));
  ModelInputs batch = proc->collate({samples[0], samples[1]});
  EXPECT_EQ(batch.pixel_values.size(0), 2 * samples[0].pixel_values.size(0));
  GenerationResult r = model->generate(batch, g, {nullptr, nullptr, SegmentSet{}});
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(r.tokens[i], ref["cases"][i]["generated"].get<std::vector<int64_t>>()) << i;
  // Images of different grids make different layouts: one clear error.
  EXPECT_THROW(proc->collate({samples[0], samples[2]}), Error);
}

// An original release folder (internvl_chat config, InternLM2 weights with fused wqkv, a
// SentencePiece tokenizer.model, the internvl2_5 template with its system turn, load_image's
// tiles through torchvision), checked against that code's ids and pixels and against
// transformers' greedy tokens with the same weights
// (scripts/fixtures/make_internvl_original_pipeline_fixtures.py).
struct InternVLOriginalPipeline : ::testing::Test, test::PipelineFixture {
  void SetUp() override {
    if (!load(std::string(CALIBQ_TEST_DATA) + "/models/internvl-original-pipeline", kImages))
      GTEST_SKIP() << "built without OpenCV";
  }
};

TEST_F(InternVLOriginalPipeline, TemplateTokenizerModelTilesAndGreedyTokensEqualTheRelease) {
  auto pixels = SafetensorsCheckpoint::open(std::string(CALIBQ_TEST_DATA) +
                                            "/models/internvl-original-pipeline/pipeline_pixels.safetensors");
  GenerationConfig g;
  g.max_new_tokens = ref["new_tokens"].get<int64_t>();
  for (size_t i = 0; i < samples.size(); ++i) {
    expect_case(i, pixels, g);
    EXPECT_EQ(samples[i].pixel_values.size(0), ref["cases"][i]["tiles"].get<int64_t>());
  }
}

}  // namespace
}  // namespace calibq
