// VQA accuracy exactly as the official VQA evaluation code (vqaEval.py) computes it, and
// ANLS as the DocVQA / ST-VQA evaluation computes it.
//
// VQA: the prediction has newlines and tabs replaced by spaces, is stripped, then goes
// through processPunctuation and processDigitArticle; the ten ground-truth answers go
// through processPunctuation only, and only when they are not all the same (as the
// official code does). Accuracy of one question: the mean over the ten leave-one-out
// subsets of min(1, matches among the other nine / 3). Overall: 100 x the mean, which the
// official code rounds to 2 decimals.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace calibq {

// The official normalizations, exposed for tests and for the datasets' answer matching.
std::string vqa_process_punctuation(const std::string& text);
std::string vqa_process_digit_article(const std::string& text);
std::string vqa_normalize_prediction(const std::string& text);

double vqa_question_accuracy(const std::vector<std::string>& gt_answers, const std::string& prediction);

struct VqaScore {
  double accuracy = 0;        // percent, rounded to 2 decimals as the official code reports it
  double accuracy_exact = 0;  // percent, unrounded
  size_t questions = 0;
  std::map<std::string, double> per_question;  // fraction in [0, 1]
};
VqaScore vqa_accuracy(const std::map<std::string, std::vector<std::string>>& gt,
                      const std::map<std::string, std::string>& preds);

// ANLS: per question max over answers of 1 - NL (0 where NL >= threshold), NL the
// Levenshtein distance of the lower-cased, whitespace-collapsed strings divided by the
// longer of the two original strings' lengths (as the official script measures it).
double anls_question(const std::vector<std::string>& answers, const std::string& prediction, double threshold = 0.5);
struct AnlsScore {
  double anls = 0;  // fraction in [0, 1]
  size_t questions = 0;
  std::map<std::string, double> per_question;
};
AnlsScore anls_score(const std::map<std::string, std::vector<std::string>>& gt,
                     const std::map<std::string, std::string>& preds, double threshold = 0.5);

// Options researchers also report: exact match (after VQA normalization of both sides)
// and relaxed accuracy (ChartQA: numbers within 5% relative, else exact match).
double exact_match(const std::vector<std::string>& answers, const std::string& prediction);
double relaxed_accuracy(const std::vector<std::string>& answers, const std::string& prediction, double tolerance = 0.05);

}  // namespace calibq
