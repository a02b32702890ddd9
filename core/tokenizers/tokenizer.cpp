#include "core/tokenizers/tokenizer.h"

#include <filesystem>

#include "core/tokenizers/bpe_tokenizer.h"
#include "core/tokenizers/sentencepiece_tokenizer.h"
#include "core/util/error.h"

namespace calibq {

std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path json = fs::path(dir) / "tokenizer.json", model = fs::path(dir) / "tokenizer.model";
  if (fs::exists(json)) return std::make_shared<BpeTokenizer>(BpeTokenizer::from_file(json.string()));
  if (fs::exists(model)) {
    const fs::path config = fs::path(dir) / "tokenizer_config.json";
    return SentencePieceTokenizer::from_file(model.string(), fs::exists(config) ? config.string() : std::string());
  }
  fail("{}: no tokenizer (tokenizer.json or a SentencePiece tokenizer.model)", dir);
}

}  // namespace calibq
