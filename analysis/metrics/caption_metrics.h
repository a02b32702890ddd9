// COCO caption metrics exactly as pycocoevalcap computes them, on tokenized captions
// (coco_tokenize's output): BLEU-1..4 (corpus level, "closest" reference length, its
// 1e-9 / 1e-15 smoothing constants), ROUGE-L (beta 1.2, LCS over single-space tokens,
// best precision and best recall over references, averaged over images) and CIDEr-D
// (n = 1..4, sigma 6, document frequencies from the evaluated references, clipped tf-idf,
// the Gaussian length penalty on bigram counts, mean over n, divided by the number of
// references, x10). METEOR and SPICE are Java programs: see java_metrics.h.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace calibq {

// id -> tokenized references / one tokenized candidate. The ids of both must agree.
using CaptionRefs = std::map<std::string, std::vector<std::string>>;
using CaptionCands = std::map<std::string, std::string>;

struct BleuScore {
  double bleu[4] = {0, 0, 0, 0};
  double testlen = 0, reflen = 0;  // corpus totals, for the brevity penalty
};
BleuScore bleu_score(const CaptionRefs& refs, const CaptionCands& cands);
// Per-image ROUGE-L scores, in id order; the metric is their mean.
std::map<std::string, double> rouge_l_scores(const CaptionRefs& refs, const CaptionCands& cands);
std::map<std::string, double> cider_d_scores(const CaptionRefs& refs, const CaptionCands& cands);

struct CaptionScores {
  double bleu[4];
  double rouge_l;
  double cider;
  size_t images;
};
// Tokenized inputs (checks that ids agree and every image has references).
CaptionScores score_captions(const CaptionRefs& refs, const CaptionCands& cands);

}  // namespace calibq
