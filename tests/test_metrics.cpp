// Caption, VQA and ANLS scorers: hand-worked examples (the arithmetic is written out),
// and agreement with the official evaluation code on real annotation subsets.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>

#include "analysis/metrics/caption_metrics.h"
#include "analysis/metrics/ptb_tokenizer.h"
#include "analysis/metrics/vqa_metrics.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;

std::string eval_data(const std::string& name) { return std::string(CALIBQ_SHARED_DIR) + "/eval-data/" + name; }

#define REQUIRE_EVAL_DATA()                                                                           \
  if (!std::filesystem::exists(eval_data("README.md")))                                               \
  GTEST_SKIP() << "../shared/eval-data is absent (a clone outside the workplace): official-output " \
                  "comparisons skipped"

json load(const std::string& name) { return json::parse(test::read_bytes(eval_data(name))); }

class PtbTokenizerOnCoco : public ::testing::TestWithParam<std::string> {};

TEST_P(PtbTokenizerOnCoco, EqualsTheOfficialTokenizerOutput) {
  REQUIRE_EVAL_DATA();
  const std::string set = GetParam();
  json refs = load("caption_" + set + "_refs.json"), cands = load("caption_" + set + "_cands.json");
  json tokens = load("caption_" + set + "_tokens.json");
  int total = 0, wrong = 0;
  for (auto it = refs.begin(); it != refs.end(); ++it) {
    for (size_t i = 0; i < it.value().size(); ++i) {
      std::string raw = it.value()[i], want = tokens["refs"][it.key()][i];
      std::string got = coco_tokenize(raw);
      ++total;
      if (got != want && ++wrong <= 10) ADD_FAILURE() << "ref " << it.key() << ": " << json(raw) << "\n got  " << json(got) << "\n want " << json(want);
    }
  }
  for (auto it = cands.begin(); it != cands.end(); ++it) {
    std::string raw = it.value(), want = tokens["cands"][it.key()];
    std::string got = coco_tokenize(raw);
    ++total;
    if (got != want && ++wrong <= 10) ADD_FAILURE() << "cand " << it.key() << ": " << json(raw) << "\n got  " << json(got) << "\n want " << json(want);
  }
  EXPECT_EQ(wrong, 0) << "of " << total << " captions";
  EXPECT_GT(total, 100);
}

INSTANTIATE_TEST_SUITE_P(EvalData, PtbTokenizerOnCoco, ::testing::Values("fakecap", "heldout", "edge"));

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

json official() { return json::parse(test::read_bytes(std::string(CALIBQ_TEST_DATA) + "/metrics/official_scores.json")); }

class CaptionScoresOnCoco : public ::testing::TestWithParam<std::string> {};

TEST_P(CaptionScoresOnCoco, EqualTheOfficialCodeFromRawCaptions) {
  REQUIRE_EVAL_DATA();
  const std::string set = GetParam();
  json refs = load("caption_" + set + "_refs.json"), cands = load("caption_" + set + "_cands.json");
  CaptionRefs r;
  CaptionCands c;
  // From the raw captions, through calibq's PTB tokenizer: the whole pipeline.
  for (auto it = refs.begin(); it != refs.end(); ++it)
    for (const auto& s : it.value()) r[it.key()].push_back(coco_tokenize(s.get<std::string>()));
  for (auto it = cands.begin(); it != cands.end(); ++it) c[it.key()] = coco_tokenize(it.value().get<std::string>());
  CaptionScores s = score_captions(r, c);
  json want = official()["caption_" + set];
  for (int n = 0; n < 4; ++n) EXPECT_NEAR(s.bleu[n], want["BLEU_" + std::to_string(n + 1)].get<double>(), 1e-9) << n;
  EXPECT_NEAR(s.rouge_l, want["ROUGE_L"].get<double>(), 1e-12);
  EXPECT_NEAR(s.cider, want["CIDEr"].get<double>(), 1e-9);
  auto cider = cider_d_scores(r, c);
  auto rouge = rouge_l_scores(r, c);
  for (auto it = want["CIDEr_per_image"].begin(); it != want["CIDEr_per_image"].end(); ++it)
    EXPECT_NEAR(cider.at(it.key()), it.value().get<double>(), 1e-9) << it.key();
  for (auto it = want["ROUGE_L_per_image"].begin(); it != want["ROUGE_L_per_image"].end(); ++it)
    EXPECT_NEAR(rouge.at(it.key()), it.value().get<double>(), 1e-12) << it.key();
}

INSTANTIATE_TEST_SUITE_P(EvalData, CaptionScoresOnCoco, ::testing::Values("fakecap", "heldout", "edge"));

std::map<std::string, std::vector<std::string>> answers_of(const json& j) {
  std::map<std::string, std::vector<std::string>> out;
  for (auto it = j.begin(); it != j.end(); ++it) out[it.key()] = it.value().get<std::vector<std::string>>();
  return out;
}

TEST(VqaAccuracyOnVqa, EqualsTheOfficialCode) {
  REQUIRE_EVAL_DATA();
  auto gt = answers_of(load("vqa_gt.json"));
  auto preds = load("vqa_preds.json").get<std::map<std::string, std::string>>();
  VqaScore s = vqa_accuracy(gt, preds);
  json want = official()["vqa"];
  EXPECT_EQ(s.accuracy, want["accuracy"].get<double>());
  EXPECT_EQ(s.questions, 300u);
  for (auto it = want["per_question"].begin(); it != want["per_question"].end(); ++it)
    EXPECT_NEAR(s.per_question.at(it.key()), it.value().get<double>(), 1e-12) << it.key() << " pred " << json(preds[it.key()]);
}

TEST(AnlsOnTextVqa, EqualsTheOfficialRule) {
  REQUIRE_EVAL_DATA();
  auto gt = answers_of(load("anls_gt.json"));
  auto preds = load("anls_preds.json").get<std::map<std::string, std::string>>();
  AnlsScore s = anls_score(gt, preds);
  json want = official()["anls"];
  EXPECT_NEAR(s.anls, want["anls"].get<double>(), 1e-12);
  for (auto it = want["per_question"].begin(); it != want["per_question"].end(); ++it)
    EXPECT_NEAR(s.per_question.at(it.key()), it.value().get<double>(), 1e-12) << it.key() << " pred " << json(preds[it.key()]);
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

// --- hand-worked examples: the arithmetic is in the comments ---

TEST(PtbTokenizer, HandWorkedRules) {
  EXPECT_EQ(coco_tokenize("Don't stop (now)!"), "do n't stop -lrb- now -rrb-");  // n't split, brackets escaped, ! removed
  EXPECT_EQ(coco_tokenize("\"Hi,\" she said."), "hi she said");                  // `` '' , . removed
  EXPECT_EQ(coco_tokenize("I cannot go, gonna stay"), "i can not go gon na stay");
  EXPECT_EQ(coco_tokenize("It's 5 p.m. in the U.S."), "it 's 5 p.m. in the u.s.");  // abbreviations keep their period
  EXPECT_EQ(coco_tokenize("The boys' toys cost $5, 50% off"), "the boys toys cost $ 5 50 % off");
  EXPECT_EQ(coco_tokenize("Wow!! A cat..."), "wow !! a cat");  // "!!" is not in the removal list
  EXPECT_EQ(coco_tokenize("A CAFÉ in ZÜRICH"), "a café in zürich");
  EXPECT_EQ(coco_tokenize("a—b… ‘c’ “d”"), "a b c d");
  EXPECT_EQ(ptb_tokens("(a)"), (std::vector<std::string>{"-lrb-", "a", "-rrb-"}));
}

TEST(Bleu, HandWorked) {
  // cand "a b c d", refs "a b c e" and "a b". Clipped matches / candidate n-grams:
  //   1-grams 3/4 (a b c), 2-grams 2/3 (ab bc), 3-grams 1/2 (abc), 4-grams 0/1.
  // Closest reference length to 4 is 4: no brevity penalty (up to the 1e-9 constants).
  //   BLEU-1 = 0.75, BLEU-2 = sqrt(0.75 * 2/3) = sqrt(0.5), BLEU-3 = (0.75 * 2/3 * 1/2)^(1/3) = 0.25^(1/3),
  //   BLEU-4 = (0.25 * 1e-15 / 1)^(1/4) (the "tiny" constant keeps it above zero).
  BleuScore b = bleu_score({{"1", {"a b c e", "a b"}}}, {{"1", "a b c d"}});
  EXPECT_NEAR(b.bleu[0], 0.75, 1e-8);
  EXPECT_NEAR(b.bleu[1], std::sqrt(0.5), 1e-8);
  EXPECT_NEAR(b.bleu[2], std::cbrt(0.25), 1e-8);
  EXPECT_NEAR(b.bleu[3], std::pow(0.25e-15, 0.25), 1e-10);
  // Brevity penalty: cand "a b" against refs of 4 and 5 words: closest is 4,
  //   ratio 2/4, BP = exp(1 - 4/2) = e^-1; 1-gram precision 2/2.
  BleuScore bp = bleu_score({{"1", {"a b c d", "a b c d e"}}}, {{"1", "a b"}});
  EXPECT_NEAR(bp.bleu[0], std::exp(-1.0), 1e-8);
  EXPECT_EQ(bp.reflen, 4);
  // A tie in |l - testlen| takes the shorter reference: lengths 2 and 4 for a 3-word candidate.
  EXPECT_EQ(bleu_score({{"1", {"x y z w", "x y"}}}, {{"1", "x y z"}}).reflen, 2);
}

TEST(RougeL, HandWorked) {
  // cand "a b c d", ref "a c d e f": LCS "a c d" = 3; P = 3/4, R = 3/5;
  // F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 2.44 * 0.45 / (0.6 + 1.08) = 1.098 / 1.68.
  auto s = rouge_l_scores({{"1", {"a c d e f"}}}, {{"1", "a b c d"}});
  EXPECT_NEAR(s["1"], 1.098 / 1.68, 1e-12);
  // Best precision and best recall may come from different references.
  // ref1 "a b" (LCS 2: P 2/4, R 2/2), ref2 "a b c d e f g h" (LCS 4: P 4/4, R 4/8): P = 1, R = 1.
  auto t = rouge_l_scores({{"1", {"a b", "a b c d e f g h"}}}, {{"1", "a b c d"}});
  EXPECT_NEAR(t["1"], 1.0, 1e-12);
}

TEST(CiderD, HandWorked) {
  // Two images, so ref_len = log 2; every n-gram below occurs in one image's references:
  // idf = log 2 - log(max(1, df)) = log 2 - log 1 = log 2 (0 for df 0 would also give log 2).
  // Image 2: cand "c d" = ref "c d": unigram and bigram cosines are 1, no 3- or 4-grams
  //   (zero norms give 0), no length penalty: (1 + 1 + 0 + 0) / 4 / 1 ref * 10 = 5.
  // Image 1: cand "a b b", ref "a b".
  //   unigrams: cand (a: L, b: 2L), ref (a: L, b: L), L = log 2. Clipped dot = L*L + min(2L, L)*L = 2L^2;
  //     norms sqrt(5) L and sqrt(2) L: cosine 2 / sqrt(10).
  //   bigrams: cand (ab: L, bb: L), ref (ab: L): dot L^2, norms sqrt(2) L and L: 1 / sqrt(2).
  //   length (bigram counts, as the official code counts it) 2 vs 1: penalty exp(-1 / (2 * 36)).
  //   score = (2/sqrt(10) + 1/sqrt(2)) * exp(-1/72) / 4 * 10.
  auto s = cider_d_scores({{"1", {"a b"}}, {"2", {"c d"}}}, {{"1", "a b b"}, {"2", "c d"}});
  EXPECT_NEAR(s["2"], 5.0, 1e-12);
  EXPECT_NEAR(s["1"], (2 / std::sqrt(10.0) + 1 / std::sqrt(2.0)) * std::exp(-1.0 / 72) / 4 * 10, 1e-12);
}

TEST(VqaNormalization, PunctuationRulesAsTheOfficialCode) {
  EXPECT_EQ(vqa_process_punctuation("yes."), "yes");          // a period not before a digit goes
  EXPECT_EQ(vqa_process_punctuation("3.5"), "3.5");           // ... one before a digit stays
  EXPECT_EQ(vqa_process_punctuation("a,b"), "a b");           // no ", " or " ,": replaced by a space
  EXPECT_EQ(vqa_process_punctuation("hello , world"), "hello  world");  // " ," present: removed
  EXPECT_EQ(vqa_process_punctuation("1,000 (approx)"), "1000 approx");  // digit,digit: every mark removed
  EXPECT_EQ(vqa_process_punctuation("don't"), "don t");
  EXPECT_EQ(vqa_process_punctuation("wow!"), "wow!");         // '!' and '-' are not in the list
  EXPECT_EQ(vqa_process_punctuation("x-ray"), "x-ray");
  // re.UNICODE is passed as sub()'s count: only the first 32 periods are removed.
  EXPECT_EQ(vqa_process_punctuation(std::string(40, '.')), std::string(8, '.'));
}

TEST(VqaNormalization, DigitArticleAndContractionRules) {
  EXPECT_EQ(vqa_process_digit_article("Two Dogs"), "2 dogs");
  EXPECT_EQ(vqa_process_digit_article("the none of a ten"), "0 of 10");
  EXPECT_EQ(vqa_process_digit_article("dont  know"), "don\u2019t know");  // the official table's typographic apostrophe
  EXPECT_EQ(vqa_process_digit_article("whats up"), "what\u2019s up");
  EXPECT_EQ(vqa_normalize_prediction("  The Two\tcats.\n"), "2 cats");
}

TEST(VqaAccuracy, LeaveOneOutArithmetic) {
  std::vector<std::string> gt(10, "blue");
  for (int i = 0; i < 3; ++i) gt[i] = "red";
  // "red": leaving out one of the 3 reds leaves 2 matches (2/3); leaving out a blue leaves 3 (1).
  //   (3 * 2/3 + 7 * 1) / 10 = 0.9.
  EXPECT_NEAR(vqa_question_accuracy(gt, "red"), 0.9, 1e-12);
  EXPECT_NEAR(vqa_question_accuracy(gt, "Blue."), 1.0, 1e-12);
  EXPECT_NEAR(vqa_question_accuracy(gt, "green"), 0.0, 1e-12);
  // One match: every subset that keeps it scores 1/3; the one leaving it out scores 0: 9/10 * 1/3.
  std::vector<std::string> one(10, "x");
  one[0] = "cat";
  EXPECT_NEAR(vqa_question_accuracy(one, "cat"), 0.3, 1e-12);
  // Ground truth is punctuation-processed only when the answers differ (the official quirk):
  std::vector<std::string> same(10, "yes.");
  EXPECT_EQ(vqa_question_accuracy(same, "yes."), 0.0);  // the prediction loses its period, the answers keep theirs
  std::vector<std::string> mixed(10, "yes.");
  mixed[9] = "yes";
  EXPECT_NEAR(vqa_question_accuracy(mixed, "yes"), 1.0, 1e-12);
  // Overall: 100 x the mean, rounded to 2 decimals: (1 + 0 + 0) / 3 = 33.333...
  VqaScore s = vqa_accuracy({{"a", gt}, {"b", gt}, {"c", gt}}, {{"a", "blue"}, {"b", "green"}, {"c", "pink"}});
  EXPECT_EQ(s.accuracy, 33.33);
  EXPECT_NEAR(s.accuracy_exact, 100.0 / 3, 1e-12);
  test::expect_error([&] { vqa_accuracy({{"a", gt}}, {{"b", "x"}}); }, {"question 'b'"});
  test::expect_error([&] { vqa_accuracy({{"a", gt}}, {}); }, {"no prediction for question 'a'"});
}

TEST(Anls, HandWorked) {
  // Levenshtein("hello", "helo") = 1, over max(len) = 5: NL 0.2, score 0.8.
  EXPECT_NEAR(anls_question({"hello"}, "helo"), 0.8, 1e-12);
  // NL exactly 0.5 keeps 0.5 (only scores below the threshold become 0): "ab" vs "ax".
  EXPECT_NEAR(anls_question({"ab"}, "ax"), 0.5, 1e-12);
  EXPECT_EQ(anls_question({"hello"}, "abc"), 0.0);  // distance 5 / 5
  // Case and spaces are normalized for the distance, but the length is the raw strings':
  //   " helo " -> "helo": distance 1, length max(5, 6) = 6: 1 - 1/6.
  EXPECT_NEAR(anls_question({"Hello"}, " HELO "), 1 - 1.0 / 6, 1e-12);
  // The best answer counts.
  EXPECT_NEAR(anls_question({"abc", "hello"}, "hello"), 1.0, 1e-12);
  // Lengths are in characters, not bytes: "café" vs "cafe" is 1 / 4.
  EXPECT_NEAR(anls_question({"café"}, "cafe"), 0.75, 1e-12);
  EXPECT_NEAR(anls_score({{"1", {"hello"}}, {"2", {"ab"}}}, {{"1", "helo"}, {"2", "zz"}}).anls, 0.4, 1e-12);
}

TEST(ExactAndRelaxed, HandWorked) {
  EXPECT_EQ(exact_match({"Two dogs"}, "2 dogs."), 1.0);
  EXPECT_EQ(exact_match({"cat"}, "cats"), 0.0);
  EXPECT_EQ(relaxed_accuracy({"100"}, "104"), 1.0);   // |104 - 100| / 100 = 4% <= 5%
  EXPECT_EQ(relaxed_accuracy({"100"}, "106"), 0.0);
  EXPECT_EQ(relaxed_accuracy({"12%"}, "12.5"), 1.0);  // 0.5 / 12 = 4.2%
  EXPECT_EQ(relaxed_accuracy({"Paris"}, " paris "), 1.0);
}

TEST(CaptionScores, RejectMismatchedIds) {
  test::expect_error([] { score_captions({{"1", {"a"}}}, {{"2", "a"}}); }, {"candidate '2' has no references"});
  test::expect_error([] { score_captions({{"1", {"a"}}, {"2", {"b"}}}, {{"1", "a"}}); }, {"image '2'"});
  test::expect_error([] { score_captions({{"1", {}}}, {{"1", "a"}}); }, {"empty reference list"});
}

TEST(Cli, ScoreCommandsPrintOneJsonObject) {
  test::TempDir dir;
  test::write_bytes(dir.file("refs.json"), R"({"1": ["a b c e", "a b"]})");
  test::write_bytes(dir.file("preds.json"), R"({"1": "A b c d."})");
  auto r = test::run_calibq("score caption --refs " + dir.file("refs.json") + " --preds " + dir.file("preds.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_NEAR(j["BLEU_1"].get<double>(), 0.75, 1e-8);  // the hand-worked BLEU example, through the tokenizer
  EXPECT_TRUE(j.contains("CIDEr"));
  EXPECT_FALSE(j.contains("METEOR")) << "never a made-up METEOR";
  EXPECT_TRUE(j["absent"].contains("METEOR"));
  test::write_bytes(dir.file("gt.json"), R"({"q1": ["red","red","red","blue","blue","blue","blue","blue","blue","blue"]})");
  test::write_bytes(dir.file("ans.json"), R"({"q1": "Red"})");
  r = test::run_calibq("score vqa --gt " + dir.file("gt.json") + " --preds " + dir.file("ans.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["accuracy"], 90.0);
  r = test::run_calibq("score anls --gt " + dir.file("gt.json") + " --preds " + dir.file("ans.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["anls"], 1.0);
  test::write_bytes(dir.file("bad.json"), R"({"q1": [3]})");
  r = test::run_calibq("score vqa --gt " + dir.file("bad.json") + " --preds " + dir.file("ans.json"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.json: 'q1' holds 3, not a string"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace calibq

#include "analysis/metrics/java_metrics.h"

namespace calibq {
namespace {

TEST(JavaMetrics, AbsentWithoutJarOrJavaAndNeverANumber) {
  CaptionRefs r = {{"1", {"a b"}}};
  CaptionCands c = {{"1", "a b"}};
  JavaMetricConfig cfg;
  JavaMetricResult m = meteor_score(r, c, cfg);
  EXPECT_FALSE(m.available);
  EXPECT_EQ(m.reason, "METEOR: no jar given");
  cfg.meteor_jar = "/nonexistent/meteor-1.5.jar";
  EXPECT_EQ(meteor_score(r, c, cfg).reason, "METEOR: /nonexistent/meteor-1.5.jar does not exist");
  cfg.meteor_jar = std::string(CALIBQ_TEST_DATA) + "/fake_java/meteor-1.5.jar";
  cfg.java = "/nonexistent/java";
  EXPECT_EQ(meteor_score(r, c, cfg).reason, "METEOR: '/nonexistent/java' does not run");
  EXPECT_FALSE(spice_score(r, c, cfg).available);
}

TEST(JavaMetrics, DrivesTheJarsAsPycocoevalcapDoes) {
  // The fake java checks the command line and protocol and answers with numbers derived
  // from what it was sent (see tests/data/fake_java/java).
  JavaMetricConfig cfg;
  cfg.java = std::string(CALIBQ_TEST_DATA) + "/fake_java/java";
  cfg.meteor_jar = std::string(CALIBQ_TEST_DATA) + "/fake_java/meteor-1.5.jar";
  cfg.spice_jar = std::string(CALIBQ_TEST_DATA) + "/fake_java/spice-1.0.jar";
  CaptionRefs r = {{"1", {"a b", "c d", "e"}}, {"2", {"x"}}};
  CaptionCands c = {{"1", "a ||| b"}, {"2", "y"}};
  JavaMetricResult m = meteor_score(r, c, cfg);
  ASSERT_TRUE(m.available) << m.reason;
  EXPECT_DOUBLE_EQ(m.per_image["1"], 0.3);  // 3 references
  EXPECT_DOUBLE_EQ(m.per_image["2"], 0.1);
  EXPECT_DOUBLE_EQ(m.score, 0.2);
  JavaMetricResult s = spice_score(r, c, cfg);
  ASSERT_TRUE(s.available) << s.reason;
  EXPECT_DOUBLE_EQ(s.score, 0.25);
  EXPECT_EQ(s.per_image.size(), 2u);
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

TEST(Cli, ScoreCaptionAddsMeteorAndSpiceWithTheirJars) {
  test::TempDir dir;
  test::write_bytes(dir.file("refs.json"), R"({"1": ["A dog.", "A puppy."], "2": ["A cat."]})");
  test::write_bytes(dir.file("preds.json"), R"({"1": "A dog.", "2": "A cat."})");
  const std::string fake = std::string(CALIBQ_TEST_DATA) + "/fake_java/";
  auto r = test::run_calibq("score caption --refs " + dir.file("refs.json") + " --preds " + dir.file("preds.json") +
                            " --java " + fake + "java --meteor-jar " + fake + "meteor-1.5.jar --spice-jar " + fake + "spice-1.0.jar");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_DOUBLE_EQ(j["METEOR"].get<double>(), 0.15);  // the fake's (2 + 1) / 10 / 2
  EXPECT_DOUBLE_EQ(j["SPICE"].get<double>(), 0.25);
  EXPECT_FALSE(j.contains("absent"));
}

}  // namespace
}  // namespace calibq
