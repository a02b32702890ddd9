#include "datasets/dataset.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "core/io/json_file.h"
#include "core/util/error.h"

namespace calibq {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* dataset_format_name(DatasetFormat f) {
  switch (f) {
    case DatasetFormat::CocoCaptions: return "coco_captions";
    case DatasetFormat::Karpathy: return "karpathy";
    case DatasetFormat::VqaV2: return "vqav2";
    case DatasetFormat::TextVqa: return "textvqa";
    case DatasetFormat::DocVqa: return "docvqa";
    case DatasetFormat::Jsonl: return "jsonl";
  }
  return "?";
}

DatasetFormat parse_dataset_format(const std::string& t, const std::string& where) {
  if (t == "coco_captions" || t == "nocaps") return DatasetFormat::CocoCaptions;
  if (t == "karpathy") return DatasetFormat::Karpathy;
  if (t == "vqav2") return DatasetFormat::VqaV2;
  if (t == "textvqa") return DatasetFormat::TextVqa;
  if (t == "docvqa") return DatasetFormat::DocVqa;
  if (t == "jsonl") return DatasetFormat::Jsonl;
  fail("{}dataset format '{}' is not one of coco_captions, nocaps, karpathy, vqav2, textvqa, docvqa, jsonl",
       where.empty() ? "" : where + ": ", t);
}

const char* task_kind_name(TaskKind k) {
  switch (k) {
    case TaskKind::Caption: return "caption";
    case TaskKind::Vqa: return "vqa";
    case TaskKind::Anls: return "anls";
  }
  return "?";
}

std::string default_prompt(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::CocoCaptions:
    case DatasetFormat::Karpathy:
      return "Provide a one-sentence caption for the provided image.";
    case DatasetFormat::VqaV2:
    case DatasetFormat::TextVqa:
    case DatasetFormat::DocVqa:
    case DatasetFormat::Jsonl:
      return "{question}\nAnswer the question using a single word or phrase.";
  }
  return "{question}";
}

std::vector<size_t> subset_indices(size_t n, uint64_t seed, int64_t stride, int64_t limit) {
  if (stride < 1) fail("dataset subset: stride must be at least 1, got {}", stride);
  if (limit < 0) fail("dataset subset: limit must be 0 (all) or positive, got {}", limit);
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  if (seed != 0) {
    // std::shuffle's algorithm differs between standard libraries; this one does not.
    std::mt19937_64 gen(seed);
    for (size_t i = n; i > 1; --i) std::swap(idx[i - 1], idx[gen() % i]);
  }
  std::vector<size_t> out;
  for (size_t i = 0; i < idx.size(); i += static_cast<size_t>(stride)) {
    if (limit > 0 && out.size() >= static_cast<size_t>(limit)) break;
    out.push_back(idx[i]);
  }
  return out;
}

namespace {

// A record's field as text: strings as they are, integers printed (ids are either).
bool text_of(const json& j, const char* key, std::string& out) {
  if (!j.is_object() || !j.contains(key)) return false;
  const json& v = j[key];
  if (v.is_string()) out = v.get<std::string>();
  else if (v.is_number_integer()) out = std::to_string(v.get<int64_t>());
  else return false;
  return true;
}

bool strings_of(const json& v, std::vector<std::string>& out) {
  if (!v.is_array() || v.empty()) return false;
  for (const auto& e : v) {
    if (e.is_string()) out.push_back(e.get<std::string>());
    else if (e.is_object() && e.contains("answer") && e["answer"].is_string()) out.push_back(e["answer"].get<std::string>());
    else if (e.is_object() && e.contains("raw") && e["raw"].is_string()) out.push_back(e["raw"].get<std::string>());
    else return false;
  }
  return true;
}

// Collects records, reporting the bad ones.
struct Builder {
  const DatasetSpec& spec;
  Dataset data;
  std::vector<Sample> all;

  void bad(const std::string& id, const std::string& file, const std::string& reason) {
    if (spec.on_error == OnError::Fail) fail("{}: record {}: {}", file, id, reason);
    data.problems.push_back({id, file, reason});
  }
  std::string image_path(const std::string& file) const {
    return spec.image_root.empty() ? file : (fs::path(spec.image_root) / file).string();
  }
  void add(Sample s) { all.push_back(std::move(s)); }
};

const json& array_field(const json& j, const char* key, const std::string& file) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_array()) fail("{}: no \"{}\" list", file, key);
  return j[key];
}

void load_coco_captions(Builder& b) {
  const std::string& file = b.spec.annotations;
  json j = read_json_file(file);
  std::map<std::string, std::string> files;
  std::vector<std::string> order;
  const json& images = array_field(j, "images", file);
  for (size_t i = 0; i < images.size(); ++i) {
    std::string id, name;
    if (!text_of(images[i], "id", id) || !text_of(images[i], "file_name", name)) {
      b.bad("#" + std::to_string(i), file, "image entry without id or file_name");
      continue;
    }
    if (!files.count(id)) order.push_back(id);
    files[id] = name;
  }
  std::map<std::string, std::vector<std::string>> caps;
  const json& anns = array_field(j, "annotations", file);
  for (size_t i = 0; i < anns.size(); ++i) {
    std::string id, cap;
    if (!text_of(anns[i], "image_id", id) || !anns[i].contains("caption") || !anns[i]["caption"].is_string()) {
      b.bad("#" + std::to_string(i), file, "annotation without image_id or caption");
      continue;
    }
    if (!files.count(id)) {
      b.bad(id, file, "caption for an image the file does not list");
      continue;
    }
    caps[id].push_back(anns[i]["caption"].get<std::string>());
  }
  for (const auto& id : order) {
    if (!caps.count(id)) {
      b.bad(id, file, "image without captions");
      continue;
    }
    b.add({id, b.image_path(files[id]), "", "", caps[id]});
  }
}

void load_karpathy(Builder& b) {
  const std::string& file = b.spec.annotations;
  const std::string split = b.spec.split.empty() ? "test" : b.spec.split;
  json j = read_json_file(file);
  const json& images = array_field(j, "images", file);
  for (size_t i = 0; i < images.size(); ++i) {
    const json& im = images[i];
    std::string s;
    if (!text_of(im, "split", s)) {
      b.bad("#" + std::to_string(i), file, "image without split");
      continue;
    }
    if (s != split) continue;
    std::string id, name, folder;
    if (!text_of(im, "cocoid", id) && !text_of(im, "imgid", id)) id = "#" + std::to_string(i);
    if (!text_of(im, "filename", name)) {
      b.bad(id, file, "image without filename");
      continue;
    }
    text_of(im, "filepath", folder);  // COCO: val2014/...; Flickr30k has none
    std::vector<std::string> refs;
    if (!im.contains("sentences") || !strings_of(im["sentences"], refs)) {
      b.bad(id, file, "image without sentences[].raw");
      continue;
    }
    b.add({id, b.image_path(folder.empty() ? name : (fs::path(folder) / name).string()), "", "", refs});
  }
}

void load_vqav2(Builder& b) {
  const std::string& afile = b.spec.annotations;
  const std::string& qfile = b.spec.questions;
  if (qfile.empty()) fail("{}: VQAv2 needs its questions file too (questions:)", afile);
  json q = read_json_file(qfile), a = read_json_file(afile);
  std::map<std::string, std::vector<std::string>> answers;
  const json& anns = array_field(a, "annotations", afile);
  for (size_t i = 0; i < anns.size(); ++i) {
    std::string qid;
    std::vector<std::string> ans;
    if (!text_of(anns[i], "question_id", qid) || !anns[i].contains("answers") || !strings_of(anns[i]["answers"], ans)) {
      b.bad("#" + std::to_string(i), afile, "annotation without question_id or answers[].answer");
      continue;
    }
    answers[qid] = ans;
  }
  // COCO_val2014_000000262148.jpg: the split comes from the questions file's data_subtype.
  std::string subtype = q.value("data_subtype", std::string("val2014"));
  const json& qs = array_field(q, "questions", qfile);
  for (size_t i = 0; i < qs.size(); ++i) {
    std::string qid, image_id;
    if (!text_of(qs[i], "question_id", qid) || !text_of(qs[i], "image_id", image_id) || !qs[i].contains("question") ||
        !qs[i]["question"].is_string()) {
      b.bad("#" + std::to_string(i), qfile, "question without question_id, image_id or question");
      continue;
    }
    if (!answers.count(qid)) {
      b.bad(qid, afile, "question without an annotation");
      continue;
    }
    char name[64];
    std::snprintf(name, sizeof name, "COCO_%s_%012lld.jpg", subtype.c_str(), std::stoll(image_id));
    std::string image = b.image_path(fs::path(subtype) / name);
    // Sets written losslessly (calibq's synthetic scenes) keep the name with a .png.
    if (!fs::exists(image)) {
      const std::string png = image.substr(0, image.size() - 4) + ".png";
      if (fs::exists(png)) image = png;
    }
    b.add({qid, image, qs[i]["question"].get<std::string>(), "", answers[qid]});
  }
}

void load_data_list(Builder& b, bool docvqa) {
  const std::string& file = b.spec.annotations;
  json j = read_json_file(file);
  const json& data = array_field(j, "data", file);
  for (size_t i = 0; i < data.size(); ++i) {
    const json& r = data[i];
    std::string id, image, question;
    std::vector<std::string> answers;
    if (!text_of(r, docvqa ? "questionId" : "question_id", id)) id = "#" + std::to_string(i);
    if (!text_of(r, "question", question)) {
      b.bad(id, file, "record without question");
      continue;
    }
    if (docvqa ? !text_of(r, "image", image) : !text_of(r, "image_id", image)) {
      b.bad(id, file, docvqa ? "record without image" : "record without image_id");
      continue;
    }
    if (!r.contains("answers") || !strings_of(r["answers"], answers)) {
      b.bad(id, file, "record without answers (a test split has none: it cannot be scored)");
      continue;
    }
    b.add({id, b.image_path(docvqa ? image : image + ".jpg"), question, "", answers});
  }
}

void load_jsonl(Builder& b) {
  const std::string& file = b.spec.annotations;
  std::ifstream in(file);
  if (!in) fail("{}: cannot open", file);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "line " + std::to_string(n);
    json r;
    try {
      r = json::parse(line);
    } catch (const json::exception& e) {
      b.bad(where, file, std::string("not valid JSON: ") + e.what());
      continue;
    }
    Sample s;
    if (!text_of(r, "id", s.id)) s.id = where;
    if (!text_of(r, "image", s.image)) {
      b.bad(s.id, file, "record without image");
      continue;
    }
    s.image = b.image_path(s.image);
    if (!text_of(r, "question", s.question)) text_of(r, "prompt", s.prompt);
    const char* key = r.contains("answers") ? "answers" : "references";
    if (!r.contains(key) || !strings_of(r[key], s.references)) {
      b.bad(s.id, file, "record without answers or references (a non-empty list of strings)");
      continue;
    }
    b.add(std::move(s));
  }
}

}  // namespace

Dataset load_dataset(const DatasetSpec& spec) {
  Builder b{spec, {}, {}};
  switch (spec.format) {
    case DatasetFormat::CocoCaptions: b.data.kind = TaskKind::Caption; load_coco_captions(b); break;
    case DatasetFormat::Karpathy: b.data.kind = TaskKind::Caption; load_karpathy(b); break;
    case DatasetFormat::VqaV2: b.data.kind = TaskKind::Vqa; load_vqav2(b); break;
    case DatasetFormat::TextVqa: b.data.kind = TaskKind::Vqa; load_data_list(b, false); break;
    case DatasetFormat::DocVqa: b.data.kind = TaskKind::Anls; load_data_list(b, true); break;
    case DatasetFormat::Jsonl: b.data.kind = TaskKind::Vqa; load_jsonl(b); break;
  }
  b.data.name = dataset_format_name(spec.format);
  // Duplicate ids would mix two samples' results.
  std::set<std::string> ids;
  std::vector<Sample> unique;
  for (auto& s : b.all) {
    if (!ids.insert(s.id).second) {
      b.bad(s.id, spec.annotations, "id given twice (the second record is dropped)");
      continue;
    }
    unique.push_back(std::move(s));
  }
  const std::string prompt = spec.prompt.empty() ? default_prompt(spec.format) : spec.prompt;
  for (size_t i : subset_indices(unique.size(), spec.seed, spec.stride, spec.limit)) {
    Sample s = unique[i];
    if (spec.check_images && !fs::is_regular_file(s.image)) {
      b.bad(s.id, s.image, "image file missing");
      continue;
    }
    if (s.prompt.empty()) {
      s.prompt = prompt;
      const std::string key = "{question}";
      size_t at = s.prompt.find(key);
      if (at != std::string::npos) s.prompt.replace(at, key.size(), s.question);
    }
    b.data.samples.push_back(std::move(s));
  }
  return b.data;
}

}  // namespace calibq
