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
    const auto& c = ref["cases"][i];
    EXPECT_EQ(samples[i].chat_text, c["chat_text"].get<std::string>());
    EXPECT_EQ(samples[i].ids, c["input_ids"].get<std::vector<int64_t>>()) << c["image"];
    at::Tensor want_px = pixels.tensor("pixel_values." + std::to_string(i));
    ASSERT_EQ(samples[i].pixel_values.sizes(), want_px.sizes()) << c["image"];
    EXPECT_EQ(samples[i].pixel_values.size(0), c["tiles"].get<int64_t>());
    EXPECT_LE((samples[i].pixel_values - want_px).abs().max().item<double>(), 1e-5);
    GenerationResult r = model->generate(proc->collate({samples[i]}), g, {nullptr, nullptr, SegmentSet{}});
    EXPECT_EQ(r.tokens[0], c["generated"].get<std::vector<int64_t>>()) << c["image"];
    EXPECT_EQ(proc->decode(r.tokens[0]), c["text"].get<std::string>());
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

}  // namespace
}  // namespace calibq
