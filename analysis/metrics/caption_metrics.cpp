#include "analysis/metrics/caption_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>

#include "core/util/error.h"

namespace calibq {

namespace {

using NGram = std::vector<std::string>;
using Counts = std::map<NGram, int>;

// Python's str.split(): runs of whitespace, no empty tokens.
std::vector<std::string> split_ws(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// str.split(" "): empty strings where spaces repeat (ROUGE-L uses this split).
std::vector<std::string> split_space(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t sp = s.find(' ', start);
    out.push_back(s.substr(start, sp == std::string::npos ? std::string::npos : sp - start));
    if (sp == std::string::npos) break;
    start = sp + 1;
  }
  return out;
}

Counts ngram_counts(const std::vector<std::string>& words, int n = 4) {
  Counts counts;
  for (int k = 1; k <= n; ++k)
    for (size_t i = 0; i + k <= words.size(); ++i) ++counts[NGram(words.begin() + i, words.begin() + i + k)];
  return counts;
}

void check_ids(const CaptionRefs& refs, const CaptionCands& cands) {
  for (const auto& [id, c] : cands)
    if (!refs.count(id)) fail("caption scores: candidate '{}' has no references", id);
  for (const auto& [id, r] : refs) {
    if (!cands.count(id)) fail("caption scores: image '{}' has references but no candidate", id);
    if (r.empty()) fail("caption scores: image '{}' has an empty reference list", id);
  }
}

}  // namespace

BleuScore bleu_score(const CaptionRefs& refs, const CaptionCands& cands) {
  check_ids(refs, cands);
  constexpr double small = 1e-9, tiny = 1e-15;
  double testlen = 0, reflen = 0;
  double guess[4] = {0, 0, 0, 0}, correct[4] = {0, 0, 0, 0};
  for (const auto& [id, cand] : cands) {
    // cook_refs: every reference length, and each n-gram's max count over references.
    std::vector<int> lengths;
    std::map<NGram, int> maxcounts;
    for (const auto& r : refs.at(id)) {
      auto words = split_ws(r);
      lengths.push_back(static_cast<int>(words.size()));
      for (const auto& [g, c] : ngram_counts(words)) maxcounts[g] = std::max(maxcounts[g], c);
    }
    auto words = split_ws(cand);
    const int tl = static_cast<int>(words.size());
    // "closest": min over (|l - testlen|, l), so a tie takes the shorter reference.
    std::pair<int, int> best{INT32_MAX, 0};
    for (int l : lengths) best = std::min(best, std::pair<int, int>{std::abs(l - tl), l});
    testlen += tl;
    reflen += best.second;
    for (int k = 0; k < 4; ++k) guess[k] += std::max(0, tl - k);
    for (const auto& [g, c] : ngram_counts(words)) {
      auto it = maxcounts.find(g);
      correct[g.size() - 1] += std::min(it == maxcounts.end() ? 0 : it->second, c);
    }
  }
  BleuScore out;
  out.testlen = testlen;
  out.reflen = reflen;
  const double ratio = (testlen + tiny) / (reflen + small);
  for (int nn = 1; nn <= 4; ++nn) {
    double b = 1.0;
    for (int k = 0; k < nn; ++k) b *= (correct[k] + tiny) / (guess[k] + small);
    b = std::pow(b, 1.0 / nn);
    if (ratio < 1) b *= std::exp(1 - 1 / ratio);
    out.bleu[nn - 1] = b;
  }
  return out;
}

std::map<std::string, double> rouge_l_scores(const CaptionRefs& refs, const CaptionCands& cands) {
  check_ids(refs, cands);
  constexpr double beta = 1.2;
  std::map<std::string, double> out;
  for (const auto& [id, cand] : cands) {
    auto c = split_space(cand);
    double prec_max = 0, rec_max = 0;
    for (const auto& ref : refs.at(id)) {
      auto r = split_space(ref);
      // Longest common subsequence length.
      std::vector<int> prev(c.size() + 1, 0), cur(c.size() + 1, 0);
      for (size_t i = 1; i <= r.size(); ++i) {
        for (size_t j = 1; j <= c.size(); ++j)
          cur[j] = r[i - 1] == c[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
        std::swap(prev, cur);
      }
      const double lcs = prev[c.size()];
      prec_max = std::max(prec_max, lcs / c.size());
      rec_max = std::max(rec_max, lcs / r.size());
    }
    out[id] = (prec_max != 0 && rec_max != 0)
                  ? ((1 + beta * beta) * prec_max * rec_max) / (rec_max + beta * beta * prec_max)
                  : 0.0;
  }
  return out;
}

std::map<std::string, double> cider_d_scores(const CaptionRefs& refs, const CaptionCands& cands) {
  check_ids(refs, cands);
  constexpr int n = 4;
  constexpr double sigma = 6.0;
  // Document frequency: in how many images' reference sets an n-gram occurs.
  std::map<NGram, double> df;
  std::map<std::string, std::vector<Counts>> ref_counts;
  for (const auto& [id, rs] : refs) {
    std::set<NGram> seen;
    for (const auto& r : rs) {
      ref_counts[id].push_back(ngram_counts(split_ws(r)));
      for (const auto& [g, c] : ref_counts[id].back()) seen.insert(g);
    }
    for (const auto& g : seen) df[g] += 1;
  }
  const double ref_len = std::log(static_cast<double>(refs.size()));
  struct Vec {
    std::vector<std::map<NGram, double>> v = std::vector<std::map<NGram, double>>(n);
    double norm[n] = {0, 0, 0, 0};
    int length = 0;  // as the official code counts it: the number of bigrams (index n == 1)
  };
  auto to_vec = [&](const Counts& counts) {
    Vec out;
    for (const auto& [g, tf] : counts) {
      auto it = df.find(g);
      const double d = std::log(std::max(1.0, it == df.end() ? 0.0 : it->second));
      const size_t k = g.size() - 1;
      const double w = static_cast<double>(tf) * (ref_len - d);
      out.v[k][g] = w;
      out.norm[k] += w * w;
      if (k == 1) out.length += tf;
    }
    for (double& x : out.norm) x = std::sqrt(x);
    return out;
  };
  std::map<std::string, double> out;
  for (const auto& [id, cand] : cands) {
    Vec hyp = to_vec(ngram_counts(split_ws(cand)));
    double score[n] = {0, 0, 0, 0};
    for (const auto& rc : ref_counts[id]) {
      Vec ref = to_vec(rc);
      const double delta = static_cast<double>(hyp.length - ref.length);
      for (int k = 0; k < n; ++k) {
        double val = 0;
        for (const auto& [g, w] : hyp.v[k]) {
          auto it = ref.v[k].find(g);
          const double wr = it == ref.v[k].end() ? 0.0 : it->second;
          val += std::min(w, wr) * wr;  // clipped
        }
        if (hyp.norm[k] != 0 && ref.norm[k] != 0) val /= hyp.norm[k] * ref.norm[k];
        val *= std::exp(-(delta * delta) / (2 * sigma * sigma));
        score[k] += val;
      }
    }
    double mean = (score[0] + score[1] + score[2] + score[3]) / n;
    out[id] = mean / static_cast<double>(ref_counts[id].size()) * 10.0;
  }
  return out;
}

CaptionScores score_captions(const CaptionRefs& refs, const CaptionCands& cands) {
  if (cands.empty()) fail("caption scores: no candidates");
  CaptionScores s{};
  BleuScore b = bleu_score(refs, cands);
  std::copy(std::begin(b.bleu), std::end(b.bleu), s.bleu);
  auto mean = [](const std::map<std::string, double>& m) {
    double sum = 0;
    for (const auto& [k, v] : m) sum += v;
    return sum / static_cast<double>(m.size());
  };
  s.rouge_l = mean(rouge_l_scores(refs, cands));
  s.cider = mean(cider_d_scores(refs, cands));
  s.images = cands.size();
  return s;
}

}  // namespace calibq
