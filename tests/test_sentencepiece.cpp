// SentencePieceTokenizer (tokenizer.model through libsentencepiece, loaded into this process
// beside LibTorch) against the sentencepiece library's own ids and transformers' slow
// tokenizers' added-token rule, on tests/data/tokenizers/spm-model and spm-model-raw-spaces (whose
// model keeps whitespace, so that stripping beside an added token shows in the ids)
// (scripts/fixtures/make_sentencepiece_model_fixtures.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/io/json_file.h"
#include "core/tokenizers/sentencepiece_tokenizer.h"
#include "core/tokenizers/tokenizer.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

std::string dir_of(const std::string& name) { return std::string(CALIBQ_TEST_DATA) + "/tokenizers/" + name; }

std::vector<int64_t> ids_of(const nlohmann::json& v) { return v.get<std::vector<int64_t>>(); }

class SentencePieceModels : public ::testing::TestWithParam<std::string> {};

TEST_P(SentencePieceModels, IdsAndTextEqualTheSentencepieceLibrary) {
  const std::string dir = dir_of(GetParam());
  auto tok = SentencePieceTokenizer::from_file(dir + "/tokenizer.model");  // no config: no added tokens
  const nlohmann::json ref = read_json_file(dir + "/reference_ids.json");
  ASSERT_GE(ref["cases"].size(), 300u);
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int64_t> want = ids_of(c["ids"]);
    EXPECT_EQ(tok->encode(text), want) << text;
    EXPECT_EQ(tok->decode(want), c["decoded"].get<std::string>()) << text;
  }
  EXPECT_EQ(tok->encode_with_special_tokens("hello").front(), 1);  // BOS by default, as LlamaTokenizer
  EXPECT_EQ(tok->token_id("<s>"), 1);
  test::expect_error([&] { tok->token_id("<no such piece>"); }, {"tokenizer.model", "'<no such piece>' is not in the vocabulary"});
}

TEST_P(SentencePieceModels, AddedTokensSplitFirstAsSlowTokenizersDo) {
  const std::string dir = dir_of(GetParam());
  auto tok = load_tokenizer(dir);  // no tokenizer.json: tokenizer.model with tokenizer_config.json
  const nlohmann::json ref = read_json_file(dir + "/reference_ids.json");
  size_t with_added = 0;
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(tok->encode_with_special_tokens(text), ids_of(c["ids_with_added"])) << text;
    with_added += ids_of(c["ids_with_added"]).size() != ids_of(c["ids"]).size() + 1;
  }
  EXPECT_GE(with_added, 50u) << "cases whose added tokens change the ids";
  EXPECT_EQ(tok->token_id("<IMG_CONTEXT>"), 504);
  EXPECT_EQ(tok->vocab_size(), 506u);
  // Special tokens skipped when asked, kept otherwise.
  const auto ids = tok->encode("<|im_start|>hello<|im_end|>");
  EXPECT_EQ(tok->decode(ids, true), "hello");
  EXPECT_EQ(tok->decode(ids, false), "<|im_start|>hello<|im_end|>");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SentencePieceModels, ::testing::Values("spm-model", "spm-model-raw-spaces"));

TEST(SentencePieceModel, StrippingBesideAnAddedTokenShowsWhereSpacesAreKept) {
  // <image> has lstrip and rstrip in the raw-spaces fixture: the spaces next to it go.
  auto tok = load_tokenizer(dir_of("spm-model-raw-spaces"));
  EXPECT_EQ(tok->encode("<image>   after"), tok->encode("<image>after"));
  EXPECT_EQ(tok->encode("before   <image>"), tok->encode("before<image>"));
  EXPECT_NE(tok->encode("   after"), tok->encode("after"));  // the model itself keeps them
}

TEST(SentencePieceModel, MissingAndCorruptFilesAreOneClearError) {
  test::TempDir dir;
  test::expect_error([&] { SentencePieceTokenizer::from_file(dir.file("tokenizer.model")); },
                     {"tokenizer.model: missing"});
  test::write_bytes(dir.file("tokenizer.model"), "not a protobuf at all");
  test::expect_error([&] { SentencePieceTokenizer::from_file(dir.file("tokenizer.model")); },
                     {"tokenizer.model: not a SentencePiece model"});
  test::expect_error([&] { load_tokenizer(dir.file("nowhere")); }, {"no tokenizer (tokenizer.json or a SentencePiece tokenizer.model)"});
}

}  // namespace
}  // namespace calibq
