// A SentencePiece tokenizer.model as transformers' slow sentencepiece tokenizers use it
// (LlamaTokenizer with legacy=True, InternLM2Tokenizer): the added tokens of
// tokenizer_config.json split out first (longest match, their lstrip/rstrip honoured), every
// piece of text between them encoded by sentencepiece on its own (so each gets the model's
// dummy prefix), BOS / EOS as add_bos_token / add_eos_token say.
//
// The model itself runs in Debian's libsentencepiece, loaded at run time through a small
// module of calibq's (core/tokenizers/sentencepiece_shim/shim.cpp says why it cannot be linked
// into a process with LibTorch).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tokenizers/tokenizer.h"

namespace calibq {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // `tokenizer_config` may be empty (no added tokens, BOS added, no EOS: LlamaTokenizer's defaults).
  static std::shared_ptr<SentencePieceTokenizer> from_file(const std::string& model_path,
                                                           const std::string& tokenizer_config = "");
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text) const override;
  std::vector<int64_t> encode_with_special_tokens(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  int64_t token_id(const std::string& token) const override;
  size_t vocab_size() const override;
  // Where the sentencepiece module was loaded from (or why it could not be): for error messages.
  static std::string module_status();

 private:
  SentencePieceTokenizer() = default;
  std::vector<int64_t> encode_text(const std::string& text) const;  // sentencepiece alone

  struct Added {
    std::string content;
    int64_t id = 0;
    bool special = false, lstrip = false, rstrip = false;
  };
  void* handle_ = nullptr;
  std::string source_;
  std::vector<Added> added_;  // longest first
  bool add_bos_ = true, add_eos_ = false;
  int64_t bos_ = -1, eos_ = -1;
};

}  // namespace calibq
