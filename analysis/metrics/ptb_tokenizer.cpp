#include "analysis/metrics/ptb_tokenizer.h"

#include <algorithm>
#include <set>

#include "analysis/metrics/utf8.h"

namespace calibq {

namespace {

using u32 = std::u32string;

bool is_letter(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7) ||
         (c >= 0x370 && c <= 0x3FF) || (c >= 0x400 && c <= 0x4FF);
}
bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool is_alnum(char32_t c) { return is_letter(c) || is_digit(c); }

u32 U(const char* s) { return utf8::decode(s); }

bool ends_with(const u32& s, const u32& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Words that keep their final period (CoreNLP's abbreviation list, the part captions use).
const std::set<u32>& abbreviations() {
  static const std::set<u32> list = [] {
    std::set<u32> s;
    for (const char* w : {"etc", "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "inc", "ltd", "co", "corp",
                          "mt", "ft", "ave", "blvd", "rd", "prof", "gen", "gov", "sen", "rep", "lt", "col",
                          "sgt", "capt", "jan", "feb", "mar", "apr", "aug", "sep", "sept", "oct", "nov", "dec",
                          "approx", "dept", "est", "fig", "hwy", "no", "vol"})
      s.insert(U(w));
    return s;
  }();
  return list;
}

// "u.s", "p.m", "e.g" (the final period already taken off), or a single letter.
bool is_abbreviation(const u32& word) {
  u32 w = utf8::lower(word);
  if (abbreviations().count(w)) return true;
  if (w.size() == 1 && is_letter(w[0])) return true;
  if (w.size() >= 3) {
    bool pattern = true;
    for (size_t i = 0; i < w.size(); ++i) pattern &= (i % 2 == 0) ? is_letter(w[i]) : w[i] == '.';
    if (pattern && w.size() % 2 == 1) return true;
  }
  return false;
}

// Replaces Unicode punctuation with what CoreNLP's PTB3 normalization emits.
u32 normalize(const u32& in) {
  u32 out;
  for (char32_t c : in) {
    switch (c) {
      case 0x2014: case 0x2013: case 0x2012: case 0x2015: out += U(" -- "); break;
      case 0x2026: out += U("..."); break;
      case 0x201C: case 0x201E: out += U(" `` "); break;
      case 0x201D: out += U(" '' "); break;
      case 0x2018: out += U(" ` "); break;
      case 0x2019: out += U("'"); break;  // an apostrophe in words; a closing quote at the end
      case 0xA0: out += U(" "); break;
      default: out.push_back(c);
    }
  }
  return out;
}

// Splits the clitics and assimilations of one word (no surrounding punctuation left).
void split_word(const u32& word, std::vector<u32>& out) {
  const u32 w = utf8::lower(word);
  static const std::vector<std::pair<u32, size_t>> whole = {
      {U("cannot"), 3}, {U("gonna"), 3}, {U("gotta"), 3}, {U("wanna"), 3}, {U("lemme"), 3}, {U("gimme"), 3}};
  for (const auto& [form, at] : whole) {
    if (w == form) {
      out.push_back(word.substr(0, at));
      out.push_back(word.substr(at));
      return;
    }
  }
  if (w == U("y'all")) {
    out.push_back(word.substr(0, 2));
    out.push_back(word.substr(2));
    return;
  }
  if (w == U("'tis") || w == U("'twas")) {
    out.push_back(word.substr(0, 2));
    out.push_back(word.substr(2));
    return;
  }
  if (w.size() > 3 && ends_with(w, U("n't")) && is_letter(w[w.size() - 4])) {
    out.push_back(word.substr(0, word.size() - 3));
    out.push_back(word.substr(word.size() - 3));
    return;
  }
  for (const char* clitic : {"'s", "'re", "'ve", "'ll", "'d", "'m"}) {
    u32 c = U(clitic);
    if (w.size() > c.size() && ends_with(w, c) && is_alnum(w[w.size() - c.size() - 1])) {
      out.push_back(word.substr(0, word.size() - c.size()));
      out.push_back(word.substr(word.size() - c.size()));
      return;
    }
  }
  out.push_back(word);
}

// Splits a word on the symbols PTB3 always separates inside a word (= and +; also < and >).
void split_symbols(const u32& word, std::vector<u32>& out) {
  u32 part;
  for (char32_t c : word) {
    if (c == '=' || c == '+' || c == '<' || c == '>') {
      if (!part.empty()) split_word(part, out);
      part.clear();
      out.push_back(u32(1, c));
    } else {
      part.push_back(c);
    }
  }
  if (!part.empty()) split_word(part, out);
}

void tokenize_chunk(u32 chunk, bool last_chunk, std::vector<u32>& out) {
  std::vector<u32> front, back;  // back is collected in reverse
  bool progress = true;
  while (!chunk.empty() && progress) {
    progress = false;
    char32_t c = chunk[0];
    if (c == '"') {
      front.push_back(U("``"));
    } else if (c == '`' && chunk.size() > 1 && chunk[1] == '`') {
      front.push_back(U("``"));
      chunk.erase(0, 1);
    } else if (c == '`') {
      front.push_back(U("`"));
    } else if (c == '(') {
      front.push_back(U("-LRB-"));
    } else if (c == '[') {
      front.push_back(U("-LSB-"));
    } else if (c == '{') {
      front.push_back(U("-LCB-"));
    } else if (c == '\'' && chunk.size() > 1) {
      u32 rest = utf8::lower(chunk.substr(1));
      bool clitic = false;
      for (const char* w : {"s", "re", "ve", "ll", "d", "m", "t", "tis", "twas", "em", "n"}) clitic |= rest == U(w);
      if (clitic || is_digit(chunk[1])) break;  // "'s" alone, "'90s"
      front.push_back(U("`"));
    } else if (c == '$' && chunk.size() > 1) {
      front.push_back(U("$"));
    } else if (ends_with(u32(chunk.begin(), chunk.begin() + std::min<size_t>(3, chunk.size())), U("...")) && chunk.size() > 3) {
      front.push_back(U("..."));
      chunk.erase(0, 2);
    } else if (c == '-' && chunk.size() > 2 && chunk[1] == '-') {
      front.push_back(U("--"));
      chunk.erase(0, 1);
    } else {
      break;
    }
    chunk.erase(0, 1);
    progress = true;
  }
  progress = true;
  while (!chunk.empty() && progress) {
    progress = false;
    const size_t n = chunk.size();
    char32_t c = chunk[n - 1];
    if (c == '"') {
      back.push_back(U("''"));
      chunk.pop_back();
      progress = true;
    } else if (c == ')' || c == ']' || c == '}') {
      back.push_back(c == ')' ? U("-RRB-") : c == ']' ? U("-RSB-") : U("-RCB-"));
      chunk.pop_back();
      progress = true;
    } else if (n >= 3 && ends_with(chunk, U("..."))) {
      size_t k = n;
      while (k > 0 && chunk[k - 1] == '.') --k;
      back.push_back(chunk.substr(k));
      chunk.erase(k);
      progress = true;
    } else if (c == '!' || c == '?') {
      size_t k = n;
      while (k > 0 && (chunk[k - 1] == '!' || chunk[k - 1] == '?')) --k;
      back.push_back(chunk.substr(k));
      chunk.erase(k);
      progress = true;
    } else if (c == ',' || c == ';' || c == ':') {
      back.push_back(u32(1, c));
      chunk.pop_back();
      progress = true;
    } else if (c == '%' && n > 1) {
      back.push_back(U("%"));
      chunk.pop_back();
      progress = true;
    } else if (c == '\'' && n > 1) {
      u32 w = utf8::lower(chunk);
      if (w == U("y'") || w == U("o'")) break;
      // A closing quote, or the apostrophe of a plural possessive ("boys'"): its own token.
      back.push_back(U("'"));
      chunk.pop_back();
      progress = true;
    } else if (c == '.' && n > 1) {
      u32 word = chunk.substr(0, n - 1);
      if (is_abbreviation(word)) {
        if (last_chunk && back.empty()) back.push_back(U("."));  // sentence-final: an extra period token
        break;
      }
      back.push_back(U("."));
      chunk.pop_back();
      progress = true;
    }
  }
  for (auto& t : front) out.push_back(t);
  if (!chunk.empty()) {
    if (chunk == U("--") || chunk == U("-") || chunk == U("...") || chunk.find_first_not_of(U("!?.,;:")) == u32::npos) {
      out.push_back(chunk);
    } else if (chunk == U("\"")) {
      out.push_back(U("''"));
    } else {
      split_symbols(chunk, out);
    }
  }
  for (auto it = back.rbegin(); it != back.rend(); ++it) out.push_back(*it);
}

}  // namespace

std::vector<std::string> ptb_tokens(const std::string& line) {
  u32 text = normalize(utf8::decode(line));
  std::vector<u32> chunks;
  u32 cur;
  for (char32_t c : text) {
    if (utf8::is_space(c)) {
      if (!cur.empty()) chunks.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) chunks.push_back(cur);
  std::vector<u32> tokens;
  for (size_t i = 0; i < chunks.size(); ++i) tokenize_chunk(chunks[i], i + 1 == chunks.size(), tokens);
  std::vector<std::string> out;
  for (const auto& t : tokens) out.push_back(utf8::encode(utf8::lower(t)));
  return out;
}

std::string coco_tokenize(const std::string& caption) {
  static const std::set<std::string> punctuation = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".",
                                                    "?",  "!", ",",  ":", "-",     "--",    "...",   ";"};
  std::string out;
  for (const auto& t : ptb_tokens(caption)) {
    if (punctuation.count(t)) continue;
    if (!out.empty()) out += ' ';
    out += t;
  }
  return out;
}

}  // namespace calibq
