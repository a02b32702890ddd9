// The synthetic scene generator of the demo model: deterministic, truthful captions and
// answers (checked against the rendered pixels), and files the real loaders read.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/io/json_file.h"
#include "datasets/dataset.h"
#include "datasets/images.h"
#include "datasets/scenes.h"
#include "tests/test_util.h"

namespace calibq::scenes {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

TEST(Scenes, SameSeedSameSceneOtherSeedOtherScenes) {
  std::set<std::string> captions;
  for (int64_t i = 0; i < 50; ++i) {
    const Scene a = make_scene(7, i), b = make_scene(7, i);
    ASSERT_EQ(a.captions, b.captions);
    ASSERT_EQ(a.questions.size(), b.questions.size());
    captions.insert(a.captions[0]);
  }
  EXPECT_GT(captions.size(), 45u);  // fifty draws, (almost) all different
  EXPECT_NE(make_scene(7, 3).captions, make_scene(8, 3).captions);
  EXPECT_THROW(split_seed("training"), Error);
}

TEST(Scenes, CaptionsAndAnswersSayWhatIsDrawn) {
  for (int64_t i = 0; i < 40; ++i) {
    const Scene s = make_scene(11, i);
    ASSERT_GE(s.objects.size(), 1u);
    ASSERT_LE(s.objects.size(), 3u);
    ASSERT_EQ(s.captions.size(), 5u);
    for (const auto& o : s.objects) {
      const std::string phrase = std::string(colour_name(o.colour)) + " " + shape_name(o.shape);
      for (const auto& c : s.captions) EXPECT_NE(c.find(phrase), std::string::npos) << c;
    }
    for (const auto& q : s.questions) {
      if (q.type == "count") { EXPECT_EQ(q.answer, std::to_string(s.objects.size())); }
      if (q.type == "text") { EXPECT_EQ(q.answer, s.text); }
    }
    if (!images_supported()) continue;
    // The centre pixel of every object has the colour its name says (shapes are drawn
    // filled and centred on their cell), and the text cell holds dark or light ink.
    const RgbImage img = render_scene(s, 96);
    for (const auto& o : s.objects) {
      const int64_t k = static_cast<int64_t>(o.cell), x = (k % 3) * 32 + 16, y = (k / 3) * 32 + 16;
      const std::string name = colour_name(o.colour);
      const int r = img.at(y, x, 0), g = img.at(y, x, 1), b = img.at(y, x, 2);
      if (name == "red") { EXPECT_TRUE(r > 200 && g < 60 && b < 60) << i; }
      if (name == "blue") { EXPECT_TRUE(b > 200 && r < 60) << i; }
      if (name == "white") { EXPECT_TRUE(r > 240 && g > 240 && b > 240) << i; }
      if (name == "black") { EXPECT_TRUE(r < 30 && g < 30 && b < 30) << i; }
    }
  }
}

TEST(Scenes, WrittenSetsLoadAsCocoCaptionsAndVqaV2) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  test::TempDir dir;
  SceneSetSpec spec;
  spec.split = "val";
  spec.count = 12;
  spec.questions_per_image = 2;
  EXPECT_EQ(write_scene_set(spec, dir.path().string()), 24);

  DatasetSpec caps;
  caps.format = DatasetFormat::CocoCaptions;
  caps.annotations = dir.file("captions.json");
  caps.image_root = dir.file("images");
  Dataset c = load_dataset(caps);
  ASSERT_EQ(c.samples.size(), 12u);
  EXPECT_TRUE(c.problems.empty());
  EXPECT_EQ(c.samples[3].references, make_scene(split_seed("val"), 3).captions);

  DatasetSpec vqa;
  vqa.format = DatasetFormat::VqaV2;
  vqa.annotations = dir.file("vqa_annotations.json");
  vqa.questions = dir.file("vqa_questions.json");
  vqa.image_root = dir.file("images");
  Dataset v = load_dataset(vqa);
  ASSERT_EQ(v.samples.size(), 24u);
  EXPECT_TRUE(v.problems.empty());
  for (const auto& s : v.samples) {
    ASSERT_EQ(s.references.size(), 10u);
    EXPECT_EQ(fs::path(s.image).extension(), ".png");
  }
  // The pictures on disk are the rendered scenes, pixel for pixel (PNG is lossless).
  const RgbImage disk = read_rgb_image(c.samples[5].image), drawn = render_scene(make_scene(split_seed("val"), 5), 96);
  EXPECT_EQ(disk.pixels, drawn.pixels);
}

// The committed test split of the demo is what the generator writes today: a changed
// generator must regenerate it (calibq scenes --split test --count 300 --out datasets/demo/scenes).
TEST(Scenes, CommittedDemoSplitIsReproducible) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  const std::string root = std::string(CALIBQ_SOURCE_DIR) + "/datasets/demo/scenes";
  const json committed = read_json_file(root + "/captions.json");
  ASSERT_EQ(committed["info"]["count"].get<int64_t>(), 300);
  for (int64_t i : {0, 1, 150, 299}) {
    const Scene s = make_scene(split_seed("test"), i);
    std::vector<std::string> refs;
    for (const auto& a : committed["annotations"])
      if (a["image_id"].get<int64_t>() == i) refs.push_back(a["caption"].get<std::string>());
    EXPECT_EQ(refs, s.captions) << i;
    const std::string file = committed["images"][static_cast<size_t>(i)]["file_name"].get<std::string>();
    EXPECT_EQ(read_rgb_image(root + "/images/" + file).pixels, render_scene(s, 96).pixels) << file;
  }
}

TEST(Scenes, BadSpecsAreNamed) {
  test::TempDir dir;
  SceneSetSpec spec;
  spec.count = 0;
  try {
    write_scene_set(spec, dir.path().string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("count"), std::string::npos) << e.what();
  }
  spec.count = 1;
  spec.split = "dev";
  EXPECT_THROW(write_scene_set(spec, dir.path().string()), Error);
}

}  // namespace
}  // namespace calibq::scenes
