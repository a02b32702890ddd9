// Byte-level BPE against the `tokenizers` library (fixture: tests/data/tokenizers/).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/tokenizers/bpe_tokenizer.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;

std::string tok_dir(const std::string& name) { return std::string(CALIBQ_TEST_DATA) + "/tokenizers/" + name; }

TEST(BpeTokenizer, TokenIdsEqualTheTokenizersLibrary) {
  auto tok = BpeTokenizer::from_file(tok_dir("bpe-qwen2") + "/tokenizer.json");
  json ref = json::parse(test::read_bytes(tok_dir("bpe-qwen2") + "/reference_ids.json"));
  ASSERT_GT(ref["cases"].size(), 250u);
  int wrong = 0;
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"];
    std::vector<int64_t> want = c["ids"].get<std::vector<int64_t>>();
    std::vector<int64_t> got = tok.encode(text);
    if (got != want && ++wrong <= 8) ADD_FAILURE() << json(text) << "\n got  " << json(got) << "\n want " << json(want);
    EXPECT_EQ(tok.decode(got), text) << "decode(encode(x)) must give x back: " << json(text);
  }
  EXPECT_EQ(wrong, 0);
}

// SentencePiece-style BPE in transformers' three layouts (legacy LLaMA normalizer, Metaspace
// with prepend_scheme never as InternVL's InternLM2 tokenizer, Metaspace always + split).
class SentencePieceBpe : public ::testing::TestWithParam<std::string> {};

TEST_P(SentencePieceBpe, TokenIdsAndDecodedTextEqualTheTokenizersLibrary) {
  auto tok = BpeTokenizer::from_file(tok_dir(GetParam()) + "/tokenizer.json");
  json ref = json::parse(test::read_bytes(tok_dir(GetParam()) + "/reference_ids.json"));
  ASSERT_GT(ref["cases"].size(), 250u);
  int wrong = 0, fallback = 0;
  const int64_t first_byte = tok.token_id("<0x00>");
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"];
    std::vector<int64_t> want = c["ids"].get<std::vector<int64_t>>();
    std::vector<int64_t> got = tok.encode(text);
    if (got != want && ++wrong <= 8) ADD_FAILURE() << json(text) << "\n got  " << json(got) << "\n want " << json(want);
    fallback += std::any_of(want.begin(), want.end(), [&](int64_t id) { return id >= first_byte && id < first_byte + 256; });
    EXPECT_EQ(tok.decode(want), c["decoded"].get<std::string>()) << json(text);
    EXPECT_EQ(tok.decode(want, true), c["decoded_skip"].get<std::string>()) << json(text);
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_GT(fallback, 20);  // the byte fallback is exercised
}

INSTANTIATE_TEST_SUITE_P(Layouts, SentencePieceBpe, ::testing::Values("spbpe-legacy", "spbpe-never", "spbpe-split"));

TEST(BpeTokenizer, SpecialTokensAndErrors) {
  auto tok = BpeTokenizer::from_file(tok_dir("bpe-qwen2") + "/tokenizer.json");
  const int64_t image = tok.token_id("<image>"), end = tok.token_id("<|im_end|>");
  std::vector<int64_t> ids = tok.encode("<image><|im_end|>");
  EXPECT_EQ(ids, (std::vector<int64_t>{image, end}));
  EXPECT_EQ(tok.decode(ids, true), "");
  test::expect_error([&] { tok.token_id("<nope>"); }, {"no token '<nope>'"});
  test::expect_error([&] { tok.decode({999999}); }, {"token id 999999 is out of range"});
  test::TempDir dir;
  test::write_bytes(dir.file("t.json"), R"({"model": {"type": "Unigram"}})");
  test::expect_error([&] { BpeTokenizer::from_file(dir.file("t.json")); }, {"t.json", "model.type must be BPE"});
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {
// Expected strings as Python's bytes.decode("utf-8", errors="replace") gives them.
TEST(ValidUtf8, ReplacesMaximalIllFormedSubpartsAsPython) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(valid_utf8("plain \xC3\xA9"), "plain \xC3\xA9");
  EXPECT_EQ(valid_utf8("a\xC3"), "a" + r);
  EXPECT_EQ(valid_utf8("\xE0\x80"), r + r);            // E0 needs A0..BF next
  EXPECT_EQ(valid_utf8("\xF0\x9F\x98"), r);             // truncated emoji: one replacement
  EXPECT_EQ(valid_utf8("\xF0\x9F\x98x"), r + "x");
  EXPECT_EQ(valid_utf8("\xED\xA0\x80"), r + r + r);     // a surrogate is three faults
  EXPECT_EQ(valid_utf8("\x80\xC1\xF5"), r + r + r);     // no lead bytes
  EXPECT_EQ(valid_utf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}
}  // namespace
}  // namespace calibq
