// BPE from a Hugging Face tokenizer.json, in its two flavours:
// - byte-level (GPT-2 / Qwen2 / LLaMA-3): added and special tokens split out first, the
//   pre-tokenizer's Unicode split regex (PCRE2 with UCP, so that \p{L} and \s are
//   Unicode-aware), GPT-2's byte-to-unicode map, then merges by rank;
// - SentencePiece-style (LLaMA-2 / Vicuna / InternLM2 converted by transformers): spaces
//   become U+2581 (a Metaspace pre-tokenizer, or the legacy Prepend + Replace normalizer),
//   merges over Unicode characters, characters outside the vocabulary as <0xXX> byte tokens
//   (byte_fallback) or the unk token; decoding through the file's decoder chain (Replace,
//   ByteFallback, Fuse, Strip, Metaspace).
//
// Written by hand: Debian ships no C++ port of the `tokenizers` library. Checked token for
// token against `tokenizers` on tests/data/tokenizers/ (made by
// scripts/fixtures/make_tokenizer_fixtures.py).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tokenizers/tokenizer.h"

namespace calibq {

// `bytes` with every ill-formed UTF-8 sequence replaced by U+FFFD, as Python decodes
// with errors="replace" (what tokenizers' decode returns for partial characters).
std::string valid_utf8(const std::string& bytes);

class BpeTokenizer : public Tokenizer {
 public:
  // Throws calibq::Error naming the file and key for anything it cannot read or does not support.
  static BpeTokenizer from_file(const std::string& tokenizer_json);
  ~BpeTokenizer() override;
  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;

  // Token ids of `text`, with no special tokens added (add_special_tokens=False).
  std::vector<int64_t> encode(const std::string& text) const override;
  // With the post-processor's special tokens around it (add_special_tokens=True), e.g. BOS.
  std::vector<int64_t> encode_with_special_tokens(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  // Throws for a token the vocabulary lacks.
  int64_t token_id(const std::string& token) const override;
  size_t vocab_size() const override { return id_to_token_.size(); }

 private:
  BpeTokenizer() = default;
  void encode_piece(const std::string& piece, std::vector<int64_t>& out) const;
  void encode_sentencepiece(const std::string& segment, bool at_start, std::vector<int64_t>& out) const;
  // The ids of one pre-tokenized word given as its initial symbols (both flavours): the word
  // whole when ignore_merges finds it in the vocabulary, else the symbols merged by rank.
  void encode_word(const std::string& word, std::vector<std::string> symbols, std::vector<int64_t>& out) const;
  std::vector<std::string> merge(std::vector<std::string> sym) const;
  std::string decode_sentencepiece(const std::vector<std::string>& tokens) const;

  // SentencePiece-style flavour (see above); false: byte-level.
  bool sentencepiece_ = false;
  std::string prepend_;                                          // normalizer Prepend
  std::vector<std::pair<std::string, std::string>> replace_;     // normalizer Replace, in order
  bool metaspace_ = false, metaspace_split_ = false;
  // Metaspace's prepend_scheme: a U+2581 before every segment, the input's first, or none.
  enum class Prepend { Always, First, Never };
  Prepend metaspace_prepend_ = Prepend::Never;
  bool byte_fallback_ = false;
  int64_t unk_id_ = -1;
  struct DecodeStep {
    enum Kind { Replace, ByteFallback, Fuse, Strip, Metaspace } kind;
    std::string a, b;  // Replace: pattern, content; Strip: content
    int64_t start = 0, stop = 0;
    Prepend prepend = Prepend::Always;  // Metaspace
  };
  std::vector<DecodeStep> decoders_;

  std::string source_;
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::vector<int64_t> prefix_, suffix_;                // post-processor's special tokens
  std::vector<std::pair<std::string, int64_t>> added_;  // longest first
  std::vector<bool> special_;                           // by id
  bool ignore_merges_ = false;
  std::string byte_to_char_[256];
  std::unordered_map<std::string, uint8_t> char_to_byte_;
  struct Regex;
  std::unique_ptr<Regex> split_;
};

}  // namespace calibq
