#include "analysis/metrics/vqa_metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "analysis/metrics/utf8.h"
#include "core/util/error.h"

namespace calibq {

namespace {

// vqaEval.py's tables, verbatim (note the typographic apostrophes in most contractions).
const std::map<std::string, std::string>& contractions() {
  static const std::map<std::string, std::string> m = {
      {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"}, {"couldnt", "couldn't"},
      {"couldn'tve", "couldn’t’ve"}, {"couldnt’ve", "couldn’t’ve"}, {"didnt", "didn’t"}, {"doesnt", "doesn’t"},
      {"dont", "don’t"}, {"hadnt", "hadn’t"}, {"hadnt’ve", "hadn’t’ve"}, {"hadn'tve", "hadn’t’ve"},
      {"hasnt", "hasn’t"}, {"havent", "haven’t"}, {"hed", "he’d"}, {"hed’ve", "he’d’ve"}, {"he’dve", "he’d’ve"},
      {"hes", "he’s"}, {"howd", "how’d"}, {"howll", "how’ll"}, {"hows", "how’s"}, {"Id’ve", "I’d’ve"},
      {"I’dve", "I’d’ve"}, {"Im", "I’m"}, {"Ive", "I’ve"}, {"isnt", "isn’t"}, {"itd", "it’d"},
      {"itd’ve", "it’d’ve"}, {"it’dve", "it’d’ve"}, {"itll", "it’ll"}, {"let’s", "let’s"}, {"maam", "ma’am"},
      {"mightnt", "mightn’t"}, {"mightnt’ve", "mightn’t’ve"}, {"mightn’tve", "mightn’t’ve"}, {"mightve", "might’ve"},
      {"mustnt", "mustn’t"}, {"mustve", "must’ve"}, {"neednt", "needn’t"}, {"notve", "not’ve"},
      {"oclock", "o’clock"}, {"oughtnt", "oughtn’t"}, {"ow’s’at", "’ow’s’at"}, {"’ows’at", "’ow’s’at"},
      {"’ow’sat", "’ow’s’at"}, {"shant", "shan’t"}, {"shed’ve", "she’d’ve"}, {"she’dve", "she’d’ve"},
      {"she’s", "she’s"}, {"shouldve", "should’ve"}, {"shouldnt", "shouldn’t"}, {"shouldnt’ve", "shouldn’t’ve"},
      {"shouldn’tve", "shouldn’t’ve"}, {"somebody’d", "somebodyd"}, {"somebodyd’ve", "somebody’d’ve"},
      {"somebody’dve", "somebody’d’ve"}, {"somebodyll", "somebody’ll"}, {"somebodys", "somebody’s"},
      {"someoned", "someone’d"}, {"someoned’ve", "someone’d’ve"}, {"someone’dve", "someone’d’ve"},
      {"someonell", "someone’ll"}, {"someones", "someone’s"}, {"somethingd", "something’d"},
      {"somethingd’ve", "something’d’ve"}, {"something’dve", "something’d’ve"}, {"somethingll", "something’ll"},
      {"thats", "that’s"}, {"thered", "there’d"}, {"thered’ve", "there’d’ve"}, {"there’dve", "there’d’ve"},
      {"therere", "there’re"}, {"theres", "there’s"}, {"theyd", "they’d"}, {"theyd’ve", "they’d’ve"},
      {"they’dve", "they’d’ve"}, {"theyll", "they’ll"}, {"theyre", "they’re"}, {"theyve", "they’ve"},
      {"twas", "’twas"}, {"wasnt", "wasn’t"}, {"wed’ve", "we’d’ve"}, {"we’dve", "we’d’ve"}, {"weve", "we've"},
      {"werent", "weren’t"}, {"whatll", "what’ll"}, {"whatre", "what’re"}, {"whats", "what’s"},
      {"whatve", "what’ve"}, {"whens", "when’s"}, {"whered", "where’d"}, {"wheres", "where's"},
      {"whereve", "where’ve"}, {"whod", "who’d"}, {"whod’ve", "who’d’ve"}, {"who’dve", "who’d’ve"},
      {"wholl", "who’ll"}, {"whos", "who’s"}, {"whove", "who've"}, {"whyll", "why’ll"}, {"whyre", "why’re"},
      {"whys", "why’s"}, {"wont", "won’t"}, {"wouldve", "would’ve"}, {"wouldnt", "wouldn’t"},
      {"wouldnt’ve", "wouldn’t’ve"}, {"wouldn’tve", "wouldn’t’ve"}, {"yall", "y’all"}, {"yall’ll", "y’all’ll"},
      {"y’allll", "y’all’ll"}, {"yall’d’ve", "y’all’d’ve"}, {"y’alld’ve", "y’all’d’ve"}, {"y’all’dve", "y’all’d’ve"},
      {"youd", "you’d"}, {"youd’ve", "you’d’ve"}, {"you’dve", "you’d’ve"}, {"youll", "you’ll"},
      {"youre", "you’re"}, {"youve", "you’ve"}};
  return m;
}

const std::map<std::string, std::string>& number_words() {
  static const std::map<std::string, std::string> m = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"}, {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"}, {"seven", "7"}, {"eight", "8"}, {"nine", "9"}, {"ten", "10"}};
  return m;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

bool digit_comma_digit(const std::string& s) {
  for (size_t i = 1; i + 1 < s.size(); ++i)
    if (s[i] == ',' && std::isdigit(static_cast<unsigned char>(s[i - 1])) && std::isdigit(static_cast<unsigned char>(s[i + 1])))
      return true;
  return false;
}

// Python's str.split(): whitespace runs.
std::vector<std::string> py_split(const std::string& s) {
  std::vector<std::string> out;
  std::u32string cur;
  for (char32_t c : utf8::decode(s)) {
    if (utf8::is_space(c)) {
      if (!cur.empty()) out.push_back(utf8::encode(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(utf8::encode(cur));
  return out;
}

}  // namespace

std::string vqa_process_punctuation(const std::string& in) {
  static const std::vector<std::string> punct = {";", ":", "/", "'", "[", "]", "\"", "(", ")", "=",
                                                 "+", "\\", "_", ">", "<", "@", "`", ",", "?"};
  std::string out = in;
  const bool comma_digits = digit_comma_digit(in);
  for (const auto& p : punct) {
    // The test looks at the original text, the replacement acts on the text so far.
    if (in.find(p + " ") != std::string::npos || in.find(" " + p) != std::string::npos || comma_digits)
      replace_all(out, p, "");
    else
      replace_all(out, p, " ");
  }
  // periodStrip = "(?!<=\d)(\.)(?!\d)": the first group is a lookahead (a typo for a
  // lookbehind), so it removes every period not followed by a digit; and re.UNICODE is
  // passed as sub()'s count, so at most 32 of them.
  std::string result;
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const bool next_digit = i + 1 < out.size() && std::isdigit(static_cast<unsigned char>(out[i + 1]));
    if (out[i] == '.' && !next_digit && removed < 32) {
      ++removed;
      continue;
    }
    result += out[i];
  }
  return result;
}

std::string vqa_process_digit_article(const std::string& in) {
  std::vector<std::string> words;
  for (std::string w : py_split(utf8::lower(in))) {
    auto it = number_words().find(w);
    if (it != number_words().end()) w = it->second;
    if (w == "a" || w == "an" || w == "the") continue;
    words.push_back(w);
  }
  std::string out;
  for (auto& w : words) {
    auto it = contractions().find(w);
    if (it != contractions().end()) w = it->second;
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

std::string vqa_normalize_prediction(const std::string& text) {
  std::string s = text;
  replace_all(s, "\n", " ");
  replace_all(s, "\t", " ");
  return vqa_process_digit_article(vqa_process_punctuation(utf8::strip(s)));
}

double vqa_question_accuracy(const std::vector<std::string>& gt_answers, const std::string& prediction) {
  if (gt_answers.empty()) fail("VQA accuracy: a question without ground-truth answers");
  const std::string pred = vqa_normalize_prediction(prediction);
  std::vector<std::string> gts = gt_answers;
  bool all_same = std::all_of(gts.begin(), gts.end(), [&](const std::string& a) { return a == gts[0]; });
  if (!all_same)
    for (auto& a : gts) a = vqa_process_punctuation(a);
  double sum = 0;
  for (size_t i = 0; i < gts.size(); ++i) {
    int matches = 0;
    for (size_t j = 0; j < gts.size(); ++j)
      if (j != i && gts[j] == pred) ++matches;
    sum += std::min(1.0, matches / 3.0);
  }
  return sum / static_cast<double>(gts.size());
}

namespace {
// Scores every question of `gt` with `score(answers, prediction)`; every prediction must
// answer a ground-truth question and every question must have a prediction. Returns the
// per-question scores and their mean.
template <typename Score>
std::pair<double, std::map<std::string, double>> score_questions(const char* metric,
                                                                 const std::map<std::string, std::vector<std::string>>& gt,
                                                                 const std::map<std::string, std::string>& preds,
                                                                 Score score) {
  for (const auto& [id, p] : preds)
    if (!gt.count(id)) fail("{}: prediction for question '{}', which the ground truth lacks", metric, id);
  if (gt.empty()) fail("{}: no questions", metric);
  std::map<std::string, double> per;
  double sum = 0;
  for (const auto& [id, answers] : gt) {
    auto it = preds.find(id);
    if (it == preds.end()) fail("{}: no prediction for question '{}'", metric, id);
    sum += per[id] = score(answers, it->second);
  }
  return {sum / static_cast<double>(gt.size()), std::move(per)};
}
}  // namespace

VqaScore vqa_accuracy(const std::map<std::string, std::vector<std::string>>& gt,
                      const std::map<std::string, std::string>& preds) {
  VqaScore s;
  auto [mean, per] = score_questions("VQA accuracy", gt, preds, vqa_question_accuracy);
  s.per_question = std::move(per);
  s.questions = gt.size();
  s.accuracy_exact = 100.0 * mean;
  s.accuracy = std::strtod(fmt::format("{:.2f}", s.accuracy_exact).c_str(), nullptr);
  return s;
}

namespace {
size_t levenshtein(const std::u32string& a, const std::u32string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace

double anls_question(const std::vector<std::string>& answers, const std::string& prediction, double threshold) {
  if (answers.empty()) fail("ANLS: a question without answers");
  const std::u32string det = utf8::decode(utf8::lower(utf8::collapse_spaces(utf8::strip(prediction))));
  double best_nl = 1.0;
  for (const auto& a : answers) {
    const std::u32string gt = utf8::decode(utf8::lower(utf8::collapse_spaces(utf8::strip(a))));
    const size_t len = std::max(utf8::decode(a).size(), utf8::decode(prediction).size());
    const double nl = len == 0 ? 0.0 : static_cast<double>(levenshtein(gt, det)) / static_cast<double>(len);
    best_nl = std::min(best_nl, nl);
  }
  const double score = 1.0 - best_nl;
  return score < threshold ? 0.0 : score;
}

AnlsScore anls_score(const std::map<std::string, std::vector<std::string>>& gt,
                     const std::map<std::string, std::string>& preds, double threshold) {
  AnlsScore s;
  auto [mean, per] = score_questions("ANLS", gt, preds, [threshold](const auto& answers, const std::string& p) {
    return anls_question(answers, p, threshold);
  });
  s.anls = mean;
  s.per_question = std::move(per);
  s.questions = gt.size();
  return s;
}

double exact_match(const std::vector<std::string>& answers, const std::string& prediction) {
  const std::string p = vqa_normalize_prediction(prediction);
  for (const auto& a : answers)
    if (vqa_normalize_prediction(a) == p) return 1.0;
  return 0.0;
}

double relaxed_accuracy(const std::vector<std::string>& answers, const std::string& prediction, double tolerance) {
  auto number = [](std::string s, double& v) {
    s = utf8::strip(s);
    if (!s.empty() && s.back() == '%') s.pop_back();
    char* end = nullptr;
    v = std::strtod(s.c_str(), &end);
    return !s.empty() && *end == '\0';
  };
  double p = 0;
  const bool p_num = number(prediction, p);
  for (const auto& a : answers) {
    double t = 0;
    if (p_num && number(a, t)) {
      if (t == 0 ? p == 0 : std::fabs(p - t) / std::fabs(t) <= tolerance) return 1.0;
    } else if (utf8::lower(utf8::strip(a)) == utf8::lower(utf8::strip(prediction))) {
      return 1.0;
    }
  }
  return 0.0;
}

}  // namespace calibq
