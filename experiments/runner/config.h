// The experiment YAML (documented key by key in configs/README.md): one base configuration
// of model, dataset, generation and KV quantization, and a `sweep` block whose lists expand
// to a grid of cells (cartesian product, plus `zip` groups that vary together). Every key
// is checked at load: an unknown or misspelled key, a wrong type or an impossible
// combination is one error naming the file, the line, the key and what is allowed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "datasets/dataset.h"

namespace calibq {

struct ModelSection {
  std::string path;
  std::string dtype = "fp32";   // fp32, fp16, bf16
  std::string device = "cpu";   // cpu, cuda, cuda:N
};

struct GenerationSection {
  int64_t max_new_tokens = 32;
  int64_t batch_size = 1;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
};

struct KvSection {
  std::string quantizer = "none";  // a registry key, or none (the model's dtype)
  int64_t bits = 0;                // 0: the quantizer's default
  std::map<std::string, std::string> options;
  std::string key, value;          // full specs ("uniform:bits=2,group=channel") overriding the above
  std::string segments = "visual";
  // The resolved specs for keys and values ("" = no quantization).
  std::string key_spec() const;
  std::string value_spec() const;
};

struct TableSection {
  std::vector<std::string> rows{"kv.quantizer"};
  std::vector<std::string> columns{"kv.bits"};
  std::string metric;  // empty: the task's main metric (CIDEr, accuracy, ANLS)
};

struct CellConfig {
  std::string label;                           // "kv.quantizer=uniform kv.bits=1"
  std::string dir;                             // "kv.quantizer=uniform,kv.bits=1-3f2a9c1d"
  std::map<std::string, std::string> values;   // the sweep values of this cell, as text
  ModelSection model;
  DatasetSpec dataset;
  GenerationSection generation;
  KvSection kv;
  nlohmann::json resolved;  // the whole configuration of the cell, paths absolute
  std::string hash;         // of `resolved`: a changed config is a new cell
};

struct ExperimentConfig {
  std::string file;
  std::string name;
  std::vector<std::string> sweep_keys;  // in grid order
  std::vector<CellConfig> cells;
  std::vector<std::string> duplicates;  // cells that resolved to an earlier cell (e.g. bits of fp16)
  TableSection table;
};

// Reads and checks `path`; relative paths in it are taken from the file's folder.
ExperimentConfig load_experiment(const std::string& path);

}  // namespace calibq
