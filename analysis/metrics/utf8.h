// UTF-8 helpers for the scorers: code points, and the lower-casing that Java's and
// Python's str.lower apply to the letters captions and answers contain.
#pragma once

#include <string>

namespace calibq::utf8 {

// Invalid bytes decode to U+FFFD, one per byte.
std::u32string decode(const std::string& s);
std::string encode(const std::u32string& s);
// Lower case for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic (the blocks seen in
// COCO, VQA and TextVQA text); other code points are left as they are.
char32_t lower(char32_t c);
std::u32string lower(const std::u32string& s);
std::string lower(const std::string& s);
// Python's str.isspace for the characters that occur in practice.
bool is_space(char32_t c);
// " ".join(s.split()) as Python does it, and s.strip().
std::string collapse_spaces(const std::string& s);
std::string strip(const std::string& s);

}  // namespace calibq::utf8
