#include "core/tokenizers/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <climits>
#include <functional>

#include <fmt/format.h>

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

// U+2581, SentencePiece's stand-in for a space.
constexpr const char* kMeta = "\xE2\x96\x81";

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

// The GPT-2 split pattern, for ByteLevel(use_regex=true).
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

BpeTokenizer::~BpeTokenizer() = default;
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;

BpeTokenizer BpeTokenizer::from_file(const std::string& path) {
  auto prepend_scheme = [](const std::string& text, const std::string& where) {
    if (text == "always") return Prepend::Always;
    if (text == "first") return Prepend::First;
    if (text == "never") return Prepend::Never;
    fail("{}: Metaspace prepend_scheme '{}' is not supported (supported: always, first, never)", where, text);
  };
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
  t.byte_fallback_ = m.value("byte_fallback", false);
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
  const json normalizer = j.value("normalizer", json());
  const json pre_json = j.value("pre_tokenizer", json());
  // SentencePiece-style files: a Metaspace pre-tokenizer, or no pre-tokenizer after the legacy
  // Prepend("\u2581") + Replace(" ", "\u2581") normalizer.
  t.sentencepiece_ = (pre_json.is_object() && pre_json.value("type", "") == "Metaspace") ||
                     (pre_json.is_null() && !normalizer.is_null());
  if (!normalizer.is_null()) {
    if (!t.sentencepiece_) fail("{}: normalizer '{}' is not supported with a byte-level pre-tokenizer", path, normalizer.value("type", "?"));
    std::function<void(const json&)> norm = [&](const json& n) {
      const std::string type = n.value("type", "");
      if (type == "Sequence") {
        for (const auto& x : n.at("normalizers")) norm(x);
      } else if (type == "Prepend") {
        t.prepend_ = n.at("prepend").get<std::string>();
      } else if (type == "Replace") {
        if (!n.at("pattern").contains("String")) fail("{}: normalizer Replace with a regex is not supported", path);
        t.replace_.emplace_back(n.at("pattern").at("String").get<std::string>(), n.at("content").get<std::string>());
      } else {
        fail("{}: normalizer '{}' is not supported (supported: Sequence, Prepend, Replace)", path, type);
      }
    };
    norm(normalizer);
  }
  if (t.sentencepiece_) {
    if (!pre_json.is_null()) {
      t.metaspace_ = true;
      if (pre_json.value("replacement", std::string(kMeta)) != kMeta)
        fail("{}: Metaspace replacement other than U+2581 is not supported", path);
      t.metaspace_split_ = pre_json.value("split", true);
      t.metaspace_prepend_ = prepend_scheme(
          pre_json.value("prepend_scheme", std::string(pre_json.value("add_prefix_space", true) ? "always" : "never")), path);
    }
    if (m.contains("unk_token") && m["unk_token"].is_string()) {
      auto it = t.vocab_.find(m["unk_token"].get<std::string>());
      if (it != t.vocab_.end()) t.unk_id_ = it->second;
    }
    std::function<void(const json&)> dec = [&](const json& d) {
      if (d.is_null()) return;
      const std::string type = d.value("type", "");
      if (type == "Sequence") {
        for (const auto& x : d.at("decoders")) dec(x);
      } else if (type == "Replace") {
        t.decoders_.push_back({DecodeStep::Replace, d.at("pattern").at("String").get<std::string>(),
                               d.at("content").get<std::string>()});
      } else if (type == "ByteFallback") {
        t.decoders_.push_back({DecodeStep::ByteFallback, "", ""});
      } else if (type == "Fuse") {
        t.decoders_.push_back({DecodeStep::Fuse, "", ""});
      } else if (type == "Strip") {
        DecodeStep st{DecodeStep::Strip, d.at("content").get<std::string>(), ""};
        st.start = d.value("start", int64_t{0});
        st.stop = d.value("stop", int64_t{0});
        t.decoders_.push_back(st);
      } else if (type == "Metaspace") {
        DecodeStep st{DecodeStep::Metaspace, "", ""};
        st.prepend = prepend_scheme(d.value("prepend_scheme", std::string("always")), path);
        t.decoders_.push_back(st);
      } else {
        fail("{}: decoder '{}' is not supported (supported: Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace)", path, type);
      }
    };
    try {
      dec(j.value("decoder", json()));
    } catch (const json::exception& e) {
      fail("{}: decoder: {}", path, e.what());
    }
  } else if (t.byte_fallback_) {
    fail("{}: byte_fallback with a byte-level pre-tokenizer is not supported", path);
  }

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

  if (t.sentencepiece_) return t;
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
  std::vector<std::string> sym;
  for (size_t i = 0; i < mapped.size();) {
    size_t len = utf8_len(static_cast<unsigned char>(mapped[i]));
    sym.push_back(mapped.substr(i, len));
    i += len;
  }
  encode_word(mapped, std::move(sym), out);
}

void BpeTokenizer::encode_word(const std::string& word, std::vector<std::string> symbols, std::vector<int64_t>& out) const {
  if (ignore_merges_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  for (const auto& piece : merge(std::move(symbols))) {
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) out.push_back(it->second);
    else if (unk_id_ >= 0) out.push_back(unk_id_);  // only SentencePiece-style files set one
    else fail("{}: BPE produced '{}', which the vocabulary lacks (no byte fallback or unk token)", source_, piece);
  }
}

// Merges by rank: the lowest-ranked adjacent pair everywhere at once, until none applies.
std::vector<std::string> BpeTokenizer::merge(std::vector<std::string> sym) const {
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
  return sym;
}

// One segment between added tokens, SentencePiece-style: normalizer, Metaspace, then BPE over
// characters with byte fallback.
void BpeTokenizer::encode_sentencepiece(const std::string& segment, bool at_start, std::vector<int64_t>& out) const {
  std::string text = segment;
  if (!prepend_.empty()) text = prepend_ + text;
  for (const auto& [from, to] : replace_) text = replace_all(text, from, to);
  std::vector<std::string> words;
  if (metaspace_) {
    text = replace_all(text, " ", kMeta);
    const bool prepend = metaspace_prepend_ == Prepend::Always || (metaspace_prepend_ == Prepend::First && at_start);
    if (prepend && text.compare(0, 3, kMeta) != 0) text = kMeta + text;
    if (metaspace_split_) {
      // MergedWithNext: every U+2581 starts a new word.
      size_t from = 0;
      for (size_t at = text.find(kMeta, 1); at != std::string::npos; at = text.find(kMeta, at + 3)) {
        words.push_back(text.substr(from, at - from));
        from = at;
      }
      words.push_back(text.substr(from));
    } else {
      words.push_back(text);
    }
  } else {
    words.push_back(text);
  }
  for (const std::string& word : words) {
    if (word.empty()) continue;
    // Characters the vocabulary lacks become their UTF-8 bytes' <0xXX> tokens (or unk).
    std::vector<std::string> sym;
    for (size_t i = 0; i < word.size();) {
      const size_t len = std::min(utf8_len(static_cast<unsigned char>(word[i])), word.size() - i);
      const std::string ch = word.substr(i, len);
      if (byte_fallback_ && !vocab_.count(ch)) {
        for (unsigned char b : ch) sym.push_back(fmt::format("<0x{:02X}>", b));
      } else {
        sym.push_back(ch);  // unk in encode_word when the vocabulary lacks it
      }
      i += len;
    }
    encode_word(word, std::move(sym), out);
  }
}

std::string BpeTokenizer::decode_sentencepiece(const std::vector<std::string>& pieces) const {
  std::vector<std::string> toks = pieces;
  for (const DecodeStep& d : decoders_) {
    switch (d.kind) {
      case DecodeStep::Replace:
        for (auto& tk : toks) tk = replace_all(tk, d.a, d.b);
        break;
      case DecodeStep::ByteFallback: {
        // Runs of <0xXX> tokens become their bytes, as one string when valid UTF-8, else one
        // U+FFFD per byte (tokenizers' ByteFallback).
        std::vector<std::string> next;
        std::string bytes;
        size_t run = 0;
        auto flush = [&] {
          if (run == 0) return;
          if (valid_utf8(bytes) == bytes) next.push_back(bytes);
          else for (size_t k = 0; k < run; ++k) next.push_back("\xEF\xBF\xBD");
          bytes.clear();
          run = 0;
        };
        for (const auto& tk : toks) {
          if (tk.size() == 6 && tk.compare(0, 3, "<0x") == 0 && tk[5] == '>') {
            bytes += static_cast<char>(std::stoi(tk.substr(3, 2), nullptr, 16));
            ++run;
          } else {
            flush();
            next.push_back(tk);
          }
        }
        flush();
        toks.swap(next);
        break;
      }
      case DecodeStep::Fuse: {
        std::string all;
        for (const auto& tk : toks) all += tk;
        toks = {all};
        break;
      }
      case DecodeStep::Strip:
        for (auto& tk : toks) {
          for (int64_t k = 0; k < d.start && tk.compare(0, d.a.size(), d.a) == 0; ++k) tk.erase(0, d.a.size());
          for (int64_t k = 0; k < d.stop && tk.size() >= d.a.size() &&
                              tk.compare(tk.size() - d.a.size(), d.a.size(), d.a) == 0;
               ++k)
            tk.erase(tk.size() - d.a.size());
        }
        break;
      case DecodeStep::Metaspace:
        for (size_t i = 0; i < toks.size(); ++i) {
          toks[i] = replace_all(toks[i], kMeta, " ");
          if (i == 0 && d.prepend != Prepend::Never && !toks[i].empty() && toks[i][0] == ' ') toks[i].erase(0, 1);
        }
        break;
    }
  }
  std::string out;
  for (const auto& tk : toks) out += tk;
  return out;
}

std::vector<int64_t> BpeTokenizer::encode_with_special_tokens(const std::string& text) const {
  std::vector<int64_t> ids = prefix_;
  for (int64_t id : encode(text)) ids.push_back(id);
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out;
  pcre2_match_data* md = split_ ? pcre2_match_data_create_from_pattern(split_->code, nullptr) : nullptr;
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
  auto segment = [&](size_t from, size_t n) {
    if (sentencepiece_) encode_sentencepiece(text.substr(from, n), from == 0, out);
    else split_and_encode(text.substr(from, n));
  };
  // Added tokens first: the leftmost match, longest first at a position.
  for (const TextPiece& p : split_on_added_tokens(text, added_, [](const auto& a) -> const std::string& { return a.first; })) {
    if (p.added >= 0) out.push_back(added_[static_cast<size_t>(p.added)].second);
    else segment(p.begin, p.length);
  }
  if (md) pcre2_match_data_free(md);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> pieces;  // SentencePiece-style: through the decoder chain
  std::string out;                  // byte-level: bytes straight away
  for (int64_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(id_to_token_.size())) fail("{}: token id {} is out of range", source_, id);
    if (skip_special_tokens && special_[id]) continue;
    const std::string& tok = id_to_token_[id];
    if (sentencepiece_) {
      pieces.push_back(tok);
      continue;
    }
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
  return sentencepiece_ ? decode_sentencepiece(pieces) : valid_utf8(out);
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
