// What the processors need of a tokenizer, whichever file it comes from: tokenizer.json
// (BpeTokenizer, byte-level or SentencePiece-style BPE) or a SentencePiece tokenizer.model
// (SentencePieceTokenizer, through libsentencepiece).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace calibq {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text`, with no special tokens added (add_special_tokens=False).
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // With the special tokens the tokenizer puts around a sequence (add_special_tokens=True), e.g. BOS.
  virtual std::vector<int64_t> encode_with_special_tokens(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const = 0;
  // Throws for a token the vocabulary lacks.
  virtual int64_t token_id(const std::string& token) const = 0;
  virtual size_t vocab_size() const = 0;
};

// The tokenizer of a checkpoint folder: tokenizer.json when it is there (the fast tokenizer
// transformers loads first), else tokenizer.model with tokenizer_config.json. Throws naming
// the folder when it has neither.
std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& dir);

}  // namespace calibq
