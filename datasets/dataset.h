// Evaluation datasets from the files researchers already have: COCO-style caption
// annotations (COCO 2014/2017, NoCaps), Karpathy split files (COCO, Flickr30k), VQAv2
// questions + annotations, TextVQA, DocVQA, and a generic JSONL. Every format becomes
// the same list of samples: an image, a prompt, and the references (captions) or answers
// the scorers take. Deterministic subsets; bad records reported, skipped or fatal.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace calibq {

enum class DatasetFormat { CocoCaptions, Karpathy, VqaV2, TextVqa, DocVqa, Jsonl };
const char* dataset_format_name(DatasetFormat f);
// "coco_captions" (also "nocaps"), "karpathy", "vqav2", "textvqa", "docvqa", "jsonl".
DatasetFormat parse_dataset_format(const std::string& text, const std::string& where = "");

// How a sample is scored.
enum class TaskKind { Caption, Vqa, Anls };
const char* task_kind_name(TaskKind k);

struct Sample {
  std::string id;
  std::string image;     // a path: image_root joined with the file the annotations name
  std::string question;  // empty for captioning
  std::string prompt;    // what the model is asked: the task prompt with the question filled in
  std::vector<std::string> references;  // captions, or the answers
};

struct SampleProblem {
  std::string id;      // the record's id where it has one, else "#<index>"
  std::string file;    // the annotation file or the image at fault
  std::string reason;
};

enum class OnError { Skip, Fail };

struct DatasetSpec {
  DatasetFormat format = DatasetFormat::CocoCaptions;
  std::string annotations;  // the main file (captions / annotations / Karpathy / TextVQA / DocVQA / JSONL)
  std::string questions;    // VQAv2's questions file
  std::string image_root;   // joined with each record's image file
  std::string split;        // Karpathy: "test" (default), "val", "train", "restval"
  int64_t limit = 0;        // 0: all
  uint64_t seed = 0;        // 0: file order; else a seeded shuffle before stride and limit
  int64_t stride = 1;       // every stride-th sample
  std::string prompt;       // empty: the task's default (as lmms-eval words it); may hold {question}
  OnError on_error = OnError::Skip;
  bool check_images = true;  // a missing image file is a problem like a malformed record
};

struct Dataset {
  std::string name;
  TaskKind kind = TaskKind::Caption;
  std::vector<Sample> samples;
  std::vector<SampleProblem> problems;  // what was skipped, and why
};

// The default prompt of a format's task (lmms-eval's wording).
std::string default_prompt(DatasetFormat format);

// Throws calibq::Error naming the file (and record) for an unreadable file, and for a bad
// record when on_error is Fail.
Dataset load_dataset(const DatasetSpec& spec);

// The indices a subset keeps from n records: a seeded Fisher-Yates shuffle (mt19937_64, so
// the same on every platform) when seed != 0, then every stride-th, then the first limit.
std::vector<size_t> subset_indices(size_t n, uint64_t seed, int64_t stride, int64_t limit);

}  // namespace calibq
