#include "core/tokenizers/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <climits>
#include <functional>

#include "core/io/json_file.h"
#include "core/util/error.h"

namespace calibq {

using json = nlohmann::json;

struct BpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

namespace {

// GPT-2's printable stand-ins for the 256 byte values.
std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1; }

// The GPT-2 split pattern, for ByteLevel(use_regex=true).
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

BpeTokenizer::~BpeTokenizer() = default;
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;

BpeTokenizer BpeTokenizer::from_file(const std::string& path) {
  json j = read_json_file(path);
  BpeTokenizer t;
  t.source_ = path;
  if (!j.contains("model") || j["model"].value("type", "") != "BPE")
    fail("{}: model.type must be BPE (got {})", path, j.contains("model") ? j["model"].value("type", "none") : "none");
  const json& m = j["model"];
  if (!m["vocab"].is_object()) fail("{}: model.vocab must be an object", path);
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    int64_t id = it.value().get<int64_t>();
    t.vocab_[it.key()] = id;
    if (id >= static_cast<int64_t>(t.id_to_token_.size())) t.id_to_token_.resize(id + 1);
    t.id_to_token_[id] = it.key();
  }
  int rank = 0;
  for (const auto& merge : m["merges"]) {
    std::pair<std::string, std::string> p;
    if (merge.is_string()) {
      std::string s = merge.get<std::string>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) fail("{}: model.merges[{}] '{}' is not 'a b'", path, rank, s);
      p = {s.substr(0, sp), s.substr(sp + 1)};
    } else {
      p = {merge.at(0).get<std::string>(), merge.at(1).get<std::string>()};
    }
    t.ranks_.emplace(p, rank++);
  }
  t.ignore_merges_ = m.value("ignore_merges", false);
  if (m.value("byte_fallback", false)) fail("{}: byte_fallback BPE is not supported (use the SentencePiece loader)", path);
  for (const auto& a : j.value("added_tokens", json::array())) {
    std::string content = a.at("content").get<std::string>();
    int64_t id = a.at("id").get<int64_t>();
    if (a.value("lstrip", false) || a.value("rstrip", false) || a.value("single_word", false))
      fail("{}: added token '{}' uses lstrip/rstrip/single_word, which calibq does not support", path, content);
    t.added_.emplace_back(content, id);
    t.vocab_[content] = id;
    if (id >= static_cast<int64_t>(t.id_to_token_.size())) t.id_to_token_.resize(id + 1);
    t.id_to_token_[id] = content;
    if (t.special_.size() <= static_cast<size_t>(id)) t.special_.resize(id + 1, false);
    t.special_[id] = a.value("special", false);
  }
  t.special_.resize(t.id_to_token_.size(), false);
  std::sort(t.added_.begin(), t.added_.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  if (j.contains("normalizer") && !j["normalizer"].is_null())
    fail("{}: normalizer '{}' is not supported yet", path, j["normalizer"].value("type", "?"));

  // The post-processor: what add_special_tokens=True puts around one sequence
  // (TemplateProcessing's `single`; ByteLevel and RobertaProcessing-free setups add nothing).
  std::function<void(const json&)> post = [&](const json& pp) {
    if (pp.is_null()) return;
    const std::string type = pp.value("type", "");
    if (type == "Sequence") {
      for (const auto& p : pp.at("processors")) post(p);
    } else if (type == "TemplateProcessing") {
      bool after = false;
      for (const auto& piece : pp.at("single")) {
        if (piece.contains("Sequence")) {
          after = true;
          continue;
        }
        const std::string name = piece.at("SpecialToken").at("id").get<std::string>();
        const json& ids = pp.at("special_tokens").at(name).at("ids");
        for (const auto& id : ids) (after ? t.suffix_ : t.prefix_).push_back(id.get<int64_t>());
      }
    } else if (type != "ByteLevel") {
      fail("{}: post_processor '{}' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)", path, type);
    }
  };
  try {
    post(j.value("post_processor", json()));
  } catch (const json::exception& e) {
    fail("{}: post_processor: {}", path, e.what());
  }

  // The pre-tokenizer: Split(regex, Isolated) + ByteLevel(use_regex=false), or ByteLevel(use_regex=true).
  std::string pattern;
  const json& pre = j.value("pre_tokenizer", json());
  auto byte_level = [&](const json& p) { return p.value("type", "") == "ByteLevel"; };
  if (byte_level(pre) && pre.value("use_regex", true)) {
    if (pre.value("add_prefix_space", false)) fail("{}: ByteLevel add_prefix_space is not supported", path);
    pattern = kGpt2Pattern;
  } else if (pre.value("type", "") == "Sequence" && pre["pretokenizers"].size() == 2 &&
             pre["pretokenizers"][0].value("type", "") == "Split" && byte_level(pre["pretokenizers"][1]) &&
             !pre["pretokenizers"][1].value("use_regex", true)) {
    const json& split = pre["pretokenizers"][0];
    if (split.value("behavior", "") != "Isolated" || split.value("invert", false))
      fail("{}: pre_tokenizer Split must be Isolated and not inverted", path);
    pattern = split.at("pattern").at("Regex").get<std::string>();
  } else {
    fail("{}: pre_tokenizer {} is not supported (supported: ByteLevel with its regex, or Split(Regex, Isolated) + ByteLevel)",
         path, pre.dump().substr(0, 200));
  }
  int err = 0;
  PCRE2_SIZE offset = 0;
  t.split_ = std::make_unique<Regex>();
  t.split_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                 &err, &offset, nullptr);
  if (!t.split_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("{}: pre-tokenizer regex does not compile at offset {}: {}", path, offset, reinterpret_cast<char*>(msg));
  }

  // bytes_to_unicode: printable bytes map to themselves, the rest to 256 + n.
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    uint32_t cp = printable ? b : 256 + n++;
    t.byte_to_char_[b] = utf8_of(cp);
    t.char_to_byte_[t.byte_to_char_[b]] = static_cast<uint8_t>(b);
  }
  return t;
}

int64_t BpeTokenizer::token_id(const std::string& token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) fail("{}: no token '{}' in the vocabulary", source_, token);
  return it->second;
}

void BpeTokenizer::encode_piece(const std::string& piece, std::vector<int64_t>& out) const {
  std::string mapped;
  for (unsigned char c : piece) mapped += byte_to_char_[c];
  if (ignore_merges_) {
    auto it = vocab_.find(mapped);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<std::string> sym;
  for (size_t i = 0; i < mapped.size();) {
    size_t len = utf8_len(static_cast<unsigned char>(mapped[i]));
    sym.push_back(mapped.substr(i, len));
    i += len;
  }
  while (sym.size() > 1) {
    int best = INT_MAX;
    std::pair<std::string, std::string> best_pair;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = ranks_.find({sym[i], sym[i + 1]});
      if (it != ranks_.end() && it->second < best) {
        best = it->second;
        best_pair = it->first;
      }
    }
    if (best == INT_MAX) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < sym.size();) {
      if (i + 1 < sym.size() && sym[i] == best_pair.first && sym[i + 1] == best_pair.second) {
        merged.push_back(sym[i] + sym[i + 1]);
        i += 2;
      } else {
        merged.push_back(sym[i++]);
      }
    }
    sym.swap(merged);
  }
  for (const auto& s : sym) {
    auto it = vocab_.find(s);
    if (it == vocab_.end()) fail("{}: BPE produced '{}', which the vocabulary lacks (no unk token)", source_, s);
    out.push_back(it->second);
  }
}

std::vector<int64_t> BpeTokenizer::encode_with_special_tokens(const std::string& text) const {
  std::vector<int64_t> ids = prefix_;
  for (int64_t id : encode(text)) ids.push_back(id);
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(split_->code, nullptr);
  auto split_and_encode = [&](const std::string& seg) {
    size_t pos = 0, covered = 0;
    while (pos <= seg.size()) {
      int rc = pcre2_match(split_->code, reinterpret_cast<PCRE2_SPTR>(seg.data()), seg.size(), pos, 0, md, nullptr);
      if (rc < 0) break;
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (b > covered) encode_piece(seg.substr(covered, b - covered), out);  // Isolated keeps the gaps too
      if (e > b) encode_piece(seg.substr(b, e - b), out);
      covered = e;
      pos = e > b ? e : e + utf8_len(static_cast<unsigned char>(seg[e < seg.size() ? e : 0]));
      if (e == b && e >= seg.size()) break;
    }
    if (covered < seg.size()) encode_piece(seg.substr(covered), out);
  };
  // Added tokens first: the leftmost match, longest first at a position.
  size_t start = 0, i = 0;
  while (i < text.size()) {
    bool matched = false;
    for (const auto& [content, id] : added_) {
      if (!content.empty() && text.compare(i, content.size(), content) == 0) {
        if (i > start) split_and_encode(text.substr(start, i - start));
        out.push_back(id);
        i += content.size();
        start = i;
        matched = true;
        break;
      }
    }
    if (!matched) ++i;
  }
  if (start < text.size()) split_and_encode(text.substr(start));
  pcre2_match_data_free(md);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string out;
  for (int64_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(id_to_token_.size())) fail("{}: token id {} is out of range", source_, id);
    if (skip_special_tokens && special_[id]) continue;
    const std::string& tok = id_to_token_[id];
    bool added = std::any_of(added_.begin(), added_.end(), [&](const auto& a) { return a.second == id; });
    if (added) {
      out += tok;
      continue;
    }
    for (size_t i = 0; i < tok.size();) {
      size_t len = utf8_len(static_cast<unsigned char>(tok[i]));
      auto it = char_to_byte_.find(tok.substr(i, len));
      out += it == char_to_byte_.end() ? tok.substr(i, len) : std::string(1, static_cast<char>(it->second));
      i += len;
    }
  }
  return valid_utf8(out);
}

// Python's bytes.decode("utf-8", errors="replace"): each maximal ill-formed subsequence
// becomes one U+FFFD (Unicode's "substitution of maximal subparts").
std::string valid_utf8(const std::string& bytes) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  std::string out;
  const size_t n = bytes.size();
  for (size_t i = 0; i < n;) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (b < 0x80) {
      out += static_cast<char>(b);
      ++i;
      continue;
    }
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b >= 0xE0 && b <= 0xEF) need = 2, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
    else if (b >= 0xF0 && b <= 0xF4) need = 3, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    if (need == 0) {  // not a lead byte
      out += kReplacement;
      ++i;
      continue;
    }
    size_t k = 1;
    for (; k <= need && i + k < n; ++k) {
      const auto c = static_cast<unsigned char>(bytes[i + k]);
      if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) break;
    }
    if (k == need + 1) out.append(bytes, i, k);
    else out += kReplacement;  // the lead and the valid continuation bytes before the fault
    i += k;
  }
  return out;
}

}  // namespace calibq
