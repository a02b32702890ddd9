#include "core/tokenizers/sentencepiece_tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <mutex>

#include <nlohmann/json.hpp>

#include "core/io/json_file.h"
#include "core/util/error.h"

namespace calibq {

namespace {

namespace fs = std::filesystem;

// The C interface of core/tokenizers/sentencepiece_shim/shim.cpp.
struct Module {
  void* lib = nullptr;
  std::string path, error;
  void* (*load)(const char*, char*, size_t) = nullptr;
  void (*free)(void*) = nullptr;
  int (*encode)(void*, const char*, size_t, void (*)(void*, int), void*, char*, size_t) = nullptr;
  int (*decode)(void*, const int*, size_t, void (*)(void*, const char*, size_t), void*, char*, size_t) = nullptr;
  int (*size)(void*) = nullptr;
  int (*piece_to_id)(void*, const char*) = nullptr;
  const char* (*id_to_piece)(void*, int) = nullptr;
  int (*kind)(void*, int) = nullptr;
  int (*bos_id)(void*) = nullptr;
  int (*eos_id)(void*) = nullptr;
};

constexpr const char* kModuleName = "libcalibq_sentencepiece.so";

// Where to look, in order: $CALIBQ_SENTENCEPIECE_MODULE, beside the running executable, and
// where the build put it (the tests run from other folders).
std::vector<std::string> candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("CALIBQ_SENTENCEPIECE_MODULE"); env && *env) out.push_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) out.push_back((exe.parent_path() / kModuleName).string());
#ifdef CALIBQ_SENTENCEPIECE_MODULE_PATH
  out.push_back(CALIBQ_SENTENCEPIECE_MODULE_PATH);
#endif
  return out;
}

const Module& module() {
  static Module m;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    for (const std::string& path : candidates()) {
      if (!fs::exists(path)) {
        tried += "\n  " + path + " (not there)";
        continue;
      }
      // Its own symbol scope first: libsentencepiece's protobuf must not meet LibTorch's.
      void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!lib) {
        tried += "\n  " + path + ": " + dlerror();
        continue;
      }
      auto abi = reinterpret_cast<int (*)()>(dlsym(lib, "calibq_spm_abi"));
      if (!abi || abi() != 1) {
        tried += "\n  " + path + ": not calibq's sentencepiece module of interface 1";
        dlclose(lib);
        continue;
      }
      auto sym = [&](auto& fn, const char* name) { fn = reinterpret_cast<std::decay_t<decltype(fn)>>(dlsym(lib, name)); };
      sym(m.load, "calibq_spm_load");
      sym(m.free, "calibq_spm_free");
      sym(m.encode, "calibq_spm_encode");
      sym(m.decode, "calibq_spm_decode");
      sym(m.size, "calibq_spm_size");
      sym(m.piece_to_id, "calibq_spm_piece_to_id");
      sym(m.id_to_piece, "calibq_spm_id_to_piece");
      sym(m.kind, "calibq_spm_kind");
      sym(m.bos_id, "calibq_spm_bos_id");
      sym(m.eos_id, "calibq_spm_eos_id");
      m.lib = lib;
      m.path = path;
      return;
    }
    m.error = "calibq's sentencepiece module (" + std::string(kModuleName) +
              ", built where libsentencepiece-dev is installed) could not be loaded; tried:" + tried;
  });
  return m;
}

const Module& loaded_module(const std::string& what) {
  const Module& m = module();
  if (!m.lib) fail("{}: {}", what, m.error);
  return m;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

std::string SentencePieceTokenizer::module_status() {
  const Module& m = module();
  return m.lib ? "loaded from " + m.path : m.error;
}

std::shared_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_file(const std::string& model_path,
                                                                          const std::string& tokenizer_config) {
  const Module& m = loaded_module(model_path);
  if (!fs::exists(model_path)) fail("{}: missing", model_path);
  auto t = std::shared_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer());
  t->source_ = model_path;
  char err[512] = {0};
  t->handle_ = m.load(model_path.c_str(), err, sizeof err);
  if (!t->handle_) fail("{}: not a SentencePiece model: {}", model_path, err);
  t->bos_ = m.bos_id(t->handle_);
  t->eos_ = m.eos_id(t->handle_);
  if (!tokenizer_config.empty()) {
    const nlohmann::json c = read_json_file(tokenizer_config);
    try {
      t->add_bos_ = c.value("add_bos_token", true);
      t->add_eos_ = c.value("add_eos_token", false);
      const nlohmann::json added = c.value("added_tokens_decoder", nlohmann::json::object());
      for (const auto& [id, tok] : added.items()) {
        if (tok.value("single_word", false))
          fail("{}: added token '{}' uses single_word, which calibq does not support", tokenizer_config,
               tok.value("content", std::string()));
        t->added_.push_back({tok.at("content").get<std::string>(), std::stoll(id), tok.value("special", false),
                             tok.value("lstrip", false), tok.value("rstrip", false)});
      }
    } catch (const nlohmann::json::exception& e) {
      fail("{}: {}", tokenizer_config, e.what());
    }
  }
  std::stable_sort(t->added_.begin(), t->added_.end(),
                   [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
  if (t->add_bos_ && t->bos_ < 0) fail("{}: add_bos_token is set but the model has no BOS piece", tokenizer_config);
  if (t->add_eos_ && t->eos_ < 0) fail("{}: add_eos_token is set but the model has no EOS piece", tokenizer_config);
  return t;
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (handle_) module().free(handle_);
}

std::vector<int64_t> SentencePieceTokenizer::encode_text(const std::string& text) const {
  std::vector<int64_t> ids;
  if (text.empty()) return ids;
  char err[512] = {0};
  auto sink = [](void* ctx, int id) { static_cast<std::vector<int64_t>*>(ctx)->push_back(id); };
  if (module().encode(handle_, text.data(), text.size(), sink, &ids, err, sizeof err) != 0)
    fail("{}: sentencepiece could not encode a text of {} bytes: {}", source_, text.size(), err);
  return ids;
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  // transformers' tokenize(): split on the added tokens, strip the text beside those with
  // rstrip / lstrip, encode each piece of text on its own.
  std::vector<TextPiece> pieces =
      split_on_added_tokens(text, added_, [](const Added& a) -> const std::string& { return a.content; });
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (pieces[i].added < 0) continue;
    const Added& a = added_[static_cast<size_t>(pieces[i].added)];
    if (a.rstrip && i + 1 < pieces.size() && pieces[i + 1].added < 0) {
      TextPiece& r = pieces[i + 1];
      while (r.length > 0 && is_space(text[r.begin])) ++r.begin, --r.length;
    }
    if (a.lstrip && i > 0 && pieces[i - 1].added < 0) {
      TextPiece& l = pieces[i - 1];
      while (l.length > 0 && is_space(text[l.begin + l.length - 1])) --l.length;
    }
  }
  std::vector<int64_t> ids;
  for (const TextPiece& p : pieces) {
    if (p.added >= 0) {
      ids.push_back(added_[static_cast<size_t>(p.added)].id);
    } else {
      const std::vector<int64_t> piece = encode_text(text.substr(p.begin, p.length));
      ids.insert(ids.end(), piece.begin(), piece.end());
    }
  }
  return ids;
}

std::vector<int64_t> SentencePieceTokenizer::encode_with_special_tokens(const std::string& text) const {
  std::vector<int64_t> ids;
  if (add_bos_) ids.push_back(bos_);
  const std::vector<int64_t> body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (add_eos_) ids.push_back(eos_);
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Module& m = module();
  const int pieces = m.size(handle_);
  std::string out;
  std::vector<int> run;  // consecutive sentencepiece ids, decoded together
  auto flush = [&] {
    if (run.empty()) return;
    char err[512] = {0};
    auto sink = [](void* ctx, const char* s, size_t n) { static_cast<std::string*>(ctx)->append(s, n); };
    if (m.decode(handle_, run.data(), run.size(), sink, &out, err, sizeof err) != 0)
      fail("{}: sentencepiece could not decode {} ids: {}", source_, run.size(), err);
    run.clear();
  };
  for (int64_t id : ids) {
    const auto added = std::find_if(added_.begin(), added_.end(), [&](const Added& a) { return a.id == id; });
    if (added != added_.end()) {
      if (skip_special_tokens && added->special) continue;
      flush();
      out += added->content;
      continue;
    }
    if (id < 0 || id >= pieces) fail("{}: id {} is outside the vocabulary of {}", source_, id, pieces);
    if (skip_special_tokens && m.kind(handle_, static_cast<int>(id)) == 1) continue;
    run.push_back(static_cast<int>(id));
  }
  flush();
  return out;
}

int64_t SentencePieceTokenizer::token_id(const std::string& token) const {
  for (const Added& a : added_)
    if (a.content == token) return a.id;
  const Module& m = module();
  const int id = m.piece_to_id(handle_, token.c_str());
  if (m.kind(handle_, id) == 2 && token != m.id_to_piece(handle_, id))
    fail("{}: token '{}' is not in the vocabulary", source_, token);
  return id;
}

size_t SentencePieceTokenizer::vocab_size() const {
  int64_t n = module().size(handle_);
  for (const Added& a : added_) n = std::max(n, a.id + 1);
  return static_cast<size_t>(n);
}

}  // namespace calibq
