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

// A piece of a text split on added tokens: plain text at [begin, begin + length), or the added
// token `added` (an index into the list split on) there.
struct TextPiece {
  size_t begin = 0, length = 0;
  int64_t added = -1;
};

// The added-token split of transformers' tokenizers: scanning left to right, at each position
// the first of `added` whose content (`content(a)`) matches there (callers order them longest
// first); the text between matches as plain pieces, empty ones left out.
template <class Added, class Content>
std::vector<TextPiece> split_on_added_tokens(const std::string& text, const std::vector<Added>& added, Content content) {
  std::vector<TextPiece> pieces;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    int64_t hit = -1;
    for (size_t a = 0; a < added.size() && hit < 0; ++a) {
      const std::string& c = content(added[a]);
      if (!c.empty() && text.compare(i, c.size(), c) == 0) hit = static_cast<int64_t>(a);
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    if (i > start) pieces.push_back({start, i - start, -1});
    const size_t n = content(added[static_cast<size_t>(hit)]).size();
    pieces.push_back({i, n, hit});
    i += n;
    start = i;
  }
  if (start < text.size()) pieces.push_back({start, text.size() - start, -1});
  return pieces;
}

// The tokenizer of a checkpoint folder: tokenizer.json when it is there (the fast tokenizer
// transformers loads first), else tokenizer.model with tokenizer_config.json. Throws naming
// the folder when it has neither.
std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& dir);

}  // namespace calibq
