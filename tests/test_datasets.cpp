// Dataset loaders on small files in each format, with bad records, subsets and images.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "datasets/dataset.h"
#include "datasets/images.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// A folder with fixture images under the names the annotation files use.
struct Fixture {
  test::TempDir dir;
  std::string root() const { return dir.path().string(); }
  void image(const std::string& rel) {
    fs::create_directories((dir.path() / rel).parent_path());
    if (!images_supported()) {  // the loaders only check that the file is there
      test::write_bytes((dir.path() / rel).string(), "image");
      return;
    }
    auto made = write_fixture_images((dir.path() / "made").string(), 1, 32);
    fs::rename(made[0], dir.path() / rel);
  }
  std::string write(const std::string& name, const std::string& text) {
    test::write_bytes(dir.file(name), text);
    return dir.file(name);
  }
};

TEST(Datasets, CocoCaptionsWithBadRecordsReported) {
  Fixture f;
  f.image("val2014/a.jpg");
  f.image("val2014/b.jpg");
  json j = {{"images", {{{"id", 1}, {"file_name", "val2014/a.jpg"}}, {{"id", 2}, {"file_name", "val2014/b.jpg"}},
                        {{"id", 3}, {"file_name", "val2014/missing.jpg"}}, {{"id", 4}}}},
            {"annotations", {{{"image_id", 1}, {"caption", "A cat."}}, {{"image_id", 1}, {"caption", "A kitten."}},
                             {{"image_id", 2}, {"caption", "A dog."}}, {{"image_id", 3}, {"caption", "A bird."}},
                             {{"image_id", 9}, {"caption", "Orphan."}}, {{"image_id", 2}}}}};
  DatasetSpec spec;
  spec.format = DatasetFormat::CocoCaptions;
  spec.annotations = f.write("captions_val2014.json", j.dump());
  spec.image_root = f.root();
  Dataset d = load_dataset(spec);
  EXPECT_EQ(d.kind, TaskKind::Caption);
  ASSERT_EQ(d.samples.size(), 2u);
  EXPECT_EQ(d.samples[0].id, "1");
  EXPECT_EQ(d.samples[0].references, (std::vector<std::string>{"A cat.", "A kitten."}));
  EXPECT_EQ(d.samples[0].prompt, "Provide a one-sentence caption for the provided image.");
  EXPECT_EQ(d.samples[1].image, f.root() + "/val2014/b.jpg");
  // The image entry without file_name, the orphan caption, the caption without text, the missing image.
  ASSERT_EQ(d.problems.size(), 4u);
  std::set<std::string> reasons;
  for (const auto& p : d.problems) reasons.insert(p.id + ": " + p.reason);
  EXPECT_TRUE(reasons.count("3: image file missing"));
  EXPECT_TRUE(reasons.count("9: caption for an image the file does not list"));
  // The same file, with on_error: fail, stops at the first bad record and names it.
  spec.on_error = OnError::Fail;
  test::expect_error([&] { load_dataset(spec); }, {"captions_val2014.json", "record #3", "without id or file_name"});
}

TEST(Datasets, KarpathySplitCocoAndFlickr) {
  Fixture f;
  f.image("val2014/COCO_val2014_1.jpg");
  f.image("2.jpg");
  json coco = {{"images",
                {{{"filepath", "val2014"}, {"filename", "COCO_val2014_1.jpg"}, {"split", "test"}, {"cocoid", 1},
                  {"sentences", {{{"raw", "A man."}, {"tokens", {"a", "man"}}}, {{"raw", "A person."}}}}},
                 {{"filepath", "train2014"}, {"filename", "x.jpg"}, {"split", "train"}, {"cocoid", 5}, {"sentences", {{{"raw", "x"}}}}},
                 {{"filepath", "val2014"}, {"filename", "y.jpg"}, {"split", "test"}, {"cocoid", 6}}}}};
  DatasetSpec spec;
  spec.format = DatasetFormat::Karpathy;
  spec.annotations = f.write("dataset_coco.json", coco.dump());
  spec.image_root = f.root();
  Dataset d = load_dataset(spec);
  ASSERT_EQ(d.samples.size(), 1u);  // the train image is another split; the third has no sentences
  EXPECT_EQ(d.samples[0].references, (std::vector<std::string>{"A man.", "A person."}));
  ASSERT_EQ(d.problems.size(), 1u);
  EXPECT_EQ(d.problems[0].id, "6");
  json flickr = {{"images", {{{"filename", "2.jpg"}, {"split", "test"}, {"imgid", 2}, {"sentences", {{{"raw", "Two dogs run."}}}}}}}};
  spec.annotations = f.write("dataset_flickr30k.json", flickr.dump());
  d = load_dataset(spec);
  ASSERT_EQ(d.samples.size(), 1u);
  EXPECT_EQ(d.samples[0].image, f.root() + "/2.jpg");
}

TEST(Datasets, VqaV2QuestionsAndAnnotations) {
  Fixture f;
  f.image("val2014/COCO_val2014_000000262148.jpg");
  json q = {{"data_subtype", "val2014"},
            {"questions", {{{"image_id", 262148}, {"question", "Where is he looking?"}, {"question_id", 262148000}},
                           {{"image_id", 262148}, {"question", "Unanswered?"}, {"question_id", 262148001}}}}};
  json answers = json::array();
  for (int i = 0; i < 10; ++i) answers.push_back({{"answer", i < 7 ? "down" : "table"}, {"answer_confidence", "yes"}, {"answer_id", i + 1}});
  json a = {{"annotations", {{{"question_id", 262148000}, {"image_id", 262148}, {"answers", answers}, {"question_type", "none of the above"}}}}};
  DatasetSpec spec;
  spec.format = DatasetFormat::VqaV2;
  spec.questions = f.write("q.json", q.dump());
  spec.annotations = f.write("a.json", a.dump());
  spec.image_root = f.root();
  Dataset d = load_dataset(spec);
  ASSERT_EQ(d.samples.size(), 1u);
  EXPECT_EQ(d.samples[0].id, "262148000");
  EXPECT_EQ(d.samples[0].references.size(), 10u);
  EXPECT_EQ(d.samples[0].prompt, "Where is he looking?\nAnswer the question using a single word or phrase.");
  ASSERT_EQ(d.problems.size(), 1u);
  EXPECT_EQ(d.problems[0].reason, "question without an annotation");
  spec.questions.clear();
  test::expect_error([&] { load_dataset(spec); }, {"needs its questions file"});
}

TEST(Datasets, TextVqaDocVqaAndJsonl) {
  Fixture f;
  f.image("abc.jpg");
  f.image("documents/d1.png");
  f.image("img/x.png");
  json t = {{"data", {{{"question_id", 34602}, {"question", "what brand?"}, {"image_id", "abc"}, {"answers", json::array({"nokia", "nokia"})}},
                      {{"question_id", 34603}, {"question", "no answers"}, {"image_id", "abc"}}}}};
  DatasetSpec spec;
  spec.format = DatasetFormat::TextVqa;
  spec.annotations = f.write("TextVQA_0.5.1_val.json", t.dump());
  spec.image_root = f.root();
  Dataset d = load_dataset(spec);
  ASSERT_EQ(d.samples.size(), 1u);
  EXPECT_EQ(d.samples[0].image, f.root() + "/abc.jpg");
  EXPECT_EQ(d.problems.size(), 1u);

  json doc = {{"data", {{{"questionId", 1}, {"question", "What is the date?"}, {"image", "documents/d1.png"}, {"answers", {"1/2/2020"}}}}}};
  spec.format = DatasetFormat::DocVqa;
  spec.annotations = f.write("val_v1.0.json", doc.dump());
  d = load_dataset(spec);
  EXPECT_EQ(d.kind, TaskKind::Anls);
  ASSERT_EQ(d.samples.size(), 1u);

  spec.format = DatasetFormat::Jsonl;
  spec.annotations = f.write("custom.jsonl",
                             "{\"id\": \"a\", \"image\": \"img/x.png\", \"question\": \"Colour?\", \"answers\": [\"red\"]}\n"
                             "\n"
                             "{\"id\": \"b\", \"image\": \"img/x.png\", \"references\": [\"A red square.\"], \"prompt\": \"Describe.\"}\n"
                             "{not json\n"
                             "{\"id\": \"a\", \"image\": \"img/x.png\", \"answers\": [\"dup\"]}\n"
                             "{\"id\": \"c\", \"image\": \"img/x.png\", \"answers\": []}\n");
  spec.prompt = "Q: {question} A:";
  d = load_dataset(spec);
  ASSERT_EQ(d.samples.size(), 2u);
  EXPECT_EQ(d.samples[0].prompt, "Q: Colour? A:");
  EXPECT_EQ(d.samples[1].prompt, "Describe.");  // a record's own prompt wins
  ASSERT_EQ(d.problems.size(), 3u);
  EXPECT_EQ(d.problems[0].id, "line 4");
  EXPECT_NE(d.problems[0].reason.find("not valid JSON"), std::string::npos);
  EXPECT_EQ(d.problems[1].reason, "record without answers or references (a non-empty list of strings)");
  EXPECT_NE(d.problems[2].reason.find("id given twice"), std::string::npos);
}

TEST(Datasets, UnreadableFilesAreOneClearError) {
  Fixture f;
  DatasetSpec spec;
  spec.annotations = f.dir.file("nope.json");
  test::expect_error([&] { load_dataset(spec); }, {"nope.json", "cannot open"});
  spec.annotations = f.write("broken.json", "{\"images\": [");
  test::expect_error([&] { load_dataset(spec); }, {"broken.json", "not valid JSON"});
  spec.annotations = f.write("wrong.json", "{\"pictures\": []}");
  test::expect_error([&] { load_dataset(spec); }, {"wrong.json", "no \"images\" list"});
  test::expect_error([] { parse_dataset_format("coco", "cfg.yaml:dataset.format"); }, {"cfg.yaml:dataset.format", "'coco'", "karpathy"});
}

TEST(Datasets, SubsetsAreDeterministic) {
  // Stride then limit on file order: 0 3 6 9, limit 3.
  EXPECT_EQ(subset_indices(10, 0, 3, 3), (std::vector<size_t>{0, 3, 6}));
  EXPECT_EQ(subset_indices(5, 0, 1, 0), (std::vector<size_t>{0, 1, 2, 3, 4}));
  auto a = subset_indices(100, 7, 1, 10), b = subset_indices(100, 7, 1, 10), c = subset_indices(100, 8, 1, 10);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // mt19937_64 is specified by the standard, so a seeded subset is the same everywhere.
  EXPECT_EQ(subset_indices(6, 1, 1, 0), subset_indices(6, 1, 1, 0));
  std::set<size_t> unique(a.begin(), a.end());
  EXPECT_EQ(unique.size(), 10u);
  test::expect_error([] { subset_indices(5, 0, 0, 0); }, {"stride must be at least 1"});
}

#ifndef CALIBQ_WITH_OPENCV
TEST(Images, WithoutOpenCVDecodingIsAClearError) {
  EXPECT_FALSE(images_supported());
  test::expect_error([] { write_fixture_images("/tmp/x", 1); }, {"built without OpenCV"});
}
#else
TEST(Images, FixturesDecodeAndCorruptImagesAreReported) {
  Fixture f;
  auto paths = write_fixture_images(f.dir.file("fx"), 3, 48);
  ASSERT_EQ(paths.size(), 3u);
  EXPECT_EQ(read_image(paths[0]).rows, 48);
  test::write_bytes(f.dir.file("corrupt.png"), "\x89PNG\r\n\x1a\nnot really");
  test::expect_error([&] { read_image(f.dir.file("corrupt.png")); }, {"corrupt.png", "cannot decode"});
  Dataset d;
  d.samples = {{"ok", paths[1], "", "p", {"r"}}, {"bad", f.dir.file("corrupt.png"), "", "p", {"r"}}};
  EXPECT_EQ(verify_images(d, OnError::Skip), 1u);
  ASSERT_EQ(d.samples.size(), 1u);
  EXPECT_EQ(d.samples[0].id, "ok");
  ASSERT_EQ(d.problems.size(), 1u);
  EXPECT_EQ(d.problems[0].id, "bad");
  d.samples.push_back({"bad2", f.dir.file("corrupt.png"), "", "p", {"r"}});
  test::expect_error([&] { verify_images(d, OnError::Fail); }, {"sample bad2", "corrupt.png"});
}
#endif

}  // namespace
}  // namespace calibq
