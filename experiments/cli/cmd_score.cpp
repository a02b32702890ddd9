// calibq score caption|vqa|anls: the scorers on JSON files, one JSON object out.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <memory>

#include "analysis/metrics/caption_metrics.h"
#include "analysis/metrics/java_metrics.h"
#include "analysis/metrics/ptb_tokenizer.h"
#include "analysis/metrics/vqa_metrics.h"
#include "core/io/json_file.h"
#include "core/util/error.h"
#include "experiments/cli/commands.h"

namespace calibq::cli {

namespace {

using json = nlohmann::json;

// {"id": ["a", "b"], ...}; a single string counts as a list of one.
std::map<std::string, std::vector<std::string>> string_lists(const std::string& path) {
  json j = read_json_file(path);
  if (!j.is_object()) fail("{}: expected an object {{\"id\": [\"text\", ...]}}", path);
  std::map<std::string, std::vector<std::string>> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.value().is_string()) {
      out[it.key()] = {it.value().get<std::string>()};
      continue;
    }
    if (!it.value().is_array() || it.value().empty())
      fail("{}: '{}' must be a non-empty list of strings", path, it.key());
    for (const auto& s : it.value()) {
      if (!s.is_string()) fail("{}: '{}' holds {}, not a string", path, it.key(), s.dump());
      out[it.key()].push_back(s.get<std::string>());
    }
  }
  return out;
}

std::map<std::string, std::string> strings(const std::string& path) {
  json j = read_json_file(path);
  if (!j.is_object()) fail("{}: expected an object {{\"id\": \"text\"}}", path);
  std::map<std::string, std::string> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string()) fail("{}: '{}' must be a string, got {}", path, it.key(), it.value().dump());
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

struct ScoreOptions {
  std::string refs, preds;
  bool tokenized = false;
  double threshold = 0.5;
  bool per_item = false;
  JavaMetricConfig java;
};

void score_caption(const ScoreOptions& o) {
  auto refs = string_lists(o.refs);
  auto preds = strings(o.preds);
  CaptionRefs r;
  CaptionCands c;
  for (const auto& [id, list] : refs)
    for (const auto& s : list) r[id].push_back(o.tokenized ? s : coco_tokenize(s));
  for (const auto& [id, s] : preds) c[id] = o.tokenized ? s : coco_tokenize(s);
  CaptionScores s = score_captions(r, c);
  json out = {{"BLEU_1", s.bleu[0]}, {"BLEU_2", s.bleu[1]}, {"BLEU_3", s.bleu[2]}, {"BLEU_4", s.bleu[3]},
              {"ROUGE_L", s.rouge_l}, {"CIDEr", s.cider}, {"images", s.images}};
  json absent = json::object();
  for (auto [name, result] : {std::pair{"METEOR", meteor_score(r, c, o.java)}, std::pair{"SPICE", spice_score(r, c, o.java)}}) {
    if (!result.available) {
      absent[name] = result.reason;
      continue;
    }
    out[name] = result.score;
    if (o.per_item) out[std::string(name) + "_per_image"] = result.per_image;
  }
  if (!absent.empty()) out["absent"] = absent;
  if (o.per_item) {
    out["CIDEr_per_image"] = cider_d_scores(r, c);
    out["ROUGE_L_per_image"] = rouge_l_scores(r, c);
  }
  std::cout << out.dump(1) << "\n";
}

void score_vqa(const ScoreOptions& o) {
  VqaScore s = vqa_accuracy(string_lists(o.refs), strings(o.preds));
  json out = {{"accuracy", s.accuracy}, {"accuracy_unrounded", s.accuracy_exact}, {"questions", s.questions}};
  if (o.per_item) out["per_question"] = s.per_question;
  std::cout << out.dump(1) << "\n";
}

void score_anls(const ScoreOptions& o) {
  AnlsScore s = anls_score(string_lists(o.refs), strings(o.preds), o.threshold);
  json out = {{"anls", s.anls}, {"threshold", o.threshold}, {"questions", s.questions}};
  if (o.per_item) out["per_question"] = s.per_question;
  std::cout << out.dump(1) << "\n";
}

}  // namespace

void add_score_commands(CLI::App& app) {
  CLI::App* score = app.add_subcommand("score", "Score predictions as the official evaluation code does");
  score->require_subcommand(1);

  auto c = std::make_shared<ScoreOptions>();
  CLI::App* cap = score->add_subcommand("caption", "BLEU-1..4, ROUGE-L, CIDEr (pycocoevalcap) of {id: caption}");
  cap->add_option("--refs", c->refs, "references {\"id\": [\"ref\", ...]}")->required();
  cap->add_option("--preds", c->preds, "candidates {\"id\": \"caption\"}")->required();
  cap->add_flag("--tokenized", c->tokenized, "inputs are already PTB-tokenized (skip calibq's tokenizer)");
  cap->add_flag("--per-item", c->per_item, "also print per-image CIDEr and ROUGE-L");
  cap->add_option("--meteor-jar", c->java.meteor_jar, "the official meteor-1.5.jar: adds METEOR");
  cap->add_option("--spice-jar", c->java.spice_jar, "the official spice-1.0.jar: adds SPICE");
  cap->add_option("--spice-cache", c->java.spice_cache, "SPICE's parse cache folder");
  cap->add_option("--java", c->java.java, "the java binary")->capture_default_str();
  cap->callback([c] { score_caption(*c); });

  auto v = std::make_shared<ScoreOptions>();
  CLI::App* vqa = score->add_subcommand("vqa", "VQA accuracy (the official vqaEval.py) of {qid: answer}");
  vqa->add_option("--gt", v->refs, "ground truth {\"qid\": [ten answers]}")->required();
  vqa->add_option("--preds", v->preds, "predictions {\"qid\": \"answer\"}")->required();
  vqa->add_flag("--per-item", v->per_item, "also print per-question accuracy");
  vqa->callback([v] { score_vqa(*v); });

  auto a = std::make_shared<ScoreOptions>();
  CLI::App* anls = score->add_subcommand("anls", "ANLS (DocVQA's rule) of {qid: answer}");
  anls->add_option("--gt", a->refs, "ground truth {\"qid\": [answers]}")->required();
  anls->add_option("--preds", a->preds, "predictions {\"qid\": \"answer\"}")->required();
  anls->add_option("--threshold", a->threshold, "NL threshold")->capture_default_str();
  anls->add_flag("--per-item", a->per_item, "also print per-question scores");
  anls->callback([a] { score_anls(*a); });
}

}  // namespace calibq::cli
