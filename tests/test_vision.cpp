// Image preprocessing against transformers' image processors on real photographs
// (tests/data/images/, references made by scripts/fixtures/make_pipeline_fixtures.py).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/io/json_file.h"
#include "core/io/safetensors.h"
#include "core/vision/image_processor.h"
#include "datasets/images.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;
const std::string kImages = std::string(CALIBQ_TEST_DATA) + "/images/";

RgbImage gradient(int64_t w, int64_t h) {
  RgbImage img{w, h, std::vector<uint8_t>(w * h * 3)};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img.pixels[(y * w + x) * 3 + c] = static_cast<uint8_t>((x * 7 + y * 3 + c * 50) % 256);
  return img;
}

TEST(ImageProcessor, ResizeToSameSizeIsIdentityAndConstantStaysConstant) {
  RgbImage g = gradient(37, 23);
  for (ResizeBackend b : {ResizeBackend::Torch, ResizeBackend::Pil}) {
    EXPECT_EQ(resize_bicubic(g, 37, 23, b).pixels, g.pixels);
    RgbImage flat{50, 30, std::vector<uint8_t>(50 * 30 * 3, 200)};
    for (auto [w, h] : {std::pair<int64_t, int64_t>{17, 11}, {120, 71}}) {
      RgbImage r = resize_bicubic(flat, w, h, b);
      ASSERT_EQ(r.width, w);
      ASSERT_EQ(r.height, h);
      for (uint8_t v : r.pixels) ASSERT_EQ(v, 200) << resize_backend_name(b);
    }
  }
}

TEST(ImageProcessor, CenterCropOffsetsAreFloorOfHalf) {
  RgbImage g = gradient(9, 4);  // 9 -> 6: offset 3 // 2 = 1 (torchvision's own crop would take 2)
  EXPECT_EQ(center_crop(g, 6, 4).at(0, 0, 0), g.at(0, 1, 0));
  RgbImage big = center_crop(gradient(2, 2), 4, 4);  // smaller: zero padding
  EXPECT_EQ(big.at(0, 0, 0), 0);
  EXPECT_EQ(big.at(1, 1, 0), gradient(2, 2).at(0, 0, 0));
}

TEST(ImageProcessor, PadToSquareCentresTheImage) {
  RgbImage g = gradient(6, 2);
  RgbImage sq = pad_to_square(g, {1, 2, 3});
  ASSERT_EQ(sq.width, 6);
  ASSERT_EQ(sq.height, 6);
  EXPECT_EQ(sq.at(0, 0, 2), 3);
  EXPECT_EQ(sq.at(2, 4, 0), g.at(0, 4, 0));
  EXPECT_EQ(sq.at(5, 0, 1), 2);
}

TEST(ImageProcessor, ConfigErrorsNameTheFileAndKey) {
  auto err = [](const json& j) {
    try {
      ImageProcessorConfig::from_json(j, "proc.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err({{"image_processor_type", "SiglipImageProcessor"}}).find("proc.json: image_processor_type 'SiglipImageProcessor'"),
            std::string::npos);
  EXPECT_NE(err({{"size", {{"shortest_edge", 10}}}, {"crop_size", 10}, {"resample", 2}}).find("resample 2"), std::string::npos);
  EXPECT_NE(err({{"size", "big"}}).find("size must be"), std::string::npos);
  EXPECT_NE(err({{"size", 8}, {"crop_size", 8}, {"image_mean", {0.5, 0.5}}}).find("image_mean must be a list of 3"),
            std::string::npos);
}

// Every (processor class, size, image) that transformers produced: pixel_values within 1e-5.
TEST(ImageProcessor, MatchesTransformersOnPhotographs) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  json meta = read_json_file(kImages + "reference_pixels.json");
  auto refs = SafetensorsCheckpoint::open(kImages + "reference_pixels.safetensors");
  int checked = 0;
  std::set<std::string> classes;
  for (const auto& c : meta["cases"]) {
    ASSERT_FALSE(c.contains("error")) << c.dump();
    const int64_t size = c["size"].get<int64_t>();
    json cfg = {{"image_processor_type", c["class"]}, {"size", {{"shortest_edge", size}}},
                {"crop_size", {{"height", size}, {"width", size}}}, {"do_pad", c["pad"]}};
    ImageProcessorConfig pc = ImageProcessorConfig::from_json(cfg, "case");
    at::Tensor got = preprocess_image(read_rgb_image(kImages + c["image"].get<std::string>()), pc);
    at::Tensor want = refs.tensor(c["key"].get<std::string>());
    ASSERT_EQ(got.sizes(), want.sizes()) << c["key"];
    const double diff = (got - want).abs().max().item<double>();
    EXPECT_LE(diff, 1e-5) << c["key"] << " (one grey level is " << 1.0 / 255 / 0.27 << ")";
    classes.insert(c["class"].get<std::string>());
    ++checked;
  }
  EXPECT_GE(checked, 13);
  EXPECT_TRUE(classes.count("CLIPImageProcessor") && classes.count("CLIPImageProcessorPil") &&
              classes.count("LlavaImageProcessor") && classes.count("LlavaImageProcessorPil"));
}

TEST(ImageProcessor, UnreadableImageIsOneClearError) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  test::TempDir tmp;
  test::write_bytes(tmp.file("bad.png"), "not a png");
  try {
    read_rgb_image(tmp.file("bad.png"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.png"), std::string::npos);
  }
}

}  // namespace
}  // namespace calibq
