#include "experiments/runner/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/kv/kv_cache.h"
#include "core/quant/registry.h"
#include "core/util/error.h"

namespace calibq {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::map<std::string, std::vector<std::string>> kSchema = {
    {"", {"name", "model", "dataset", "generation", "kv", "sweep", "table"}},
    {"model", {"path", "dtype", "device"}},
    {"dataset", {"format", "annotations", "questions", "image_root", "split", "limit", "seed", "stride", "prompt",
                 "on_error", "check_images"}},
    {"generation", {"max_new_tokens", "batch_size", "temperature", "top_p", "seed"}},
    {"kv", {"quantizer", "bits", "options", "key", "value", "segments"}},
    {"table", {"rows", "columns", "metric"}},
};

struct Ctx {
  std::string file;
  bool lines = true;  // false for sweep cells: yaml-cpp's Clone keeps no positions
  std::string at(const YAML::Node& n) const {
    return !lines || n.Mark().is_null() ? file : fmt::format("{}:{}", file, n.Mark().line + 1);
  }
};

void check_keys(const Ctx& c, const YAML::Node& node, const std::string& section) {
  const std::string where = section.empty() ? "the top level" : "'" + section + "'";
  if (!node.IsMap()) fail("{}: {} must be a map", c.at(node), where);
  const auto& allowed = kSchema.at(section);
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      fail("{}: unknown key '{}{}' (allowed in {}: {})", c.at(kv.first), section.empty() ? "" : section + ".", key, where,
           fmt::join(allowed, ", "));
  }
}

std::string path_of(const std::string& section, const std::string& key) { return section + "." + key; }

template <typename T>
T scalar(const Ctx& c, const YAML::Node& n, const std::string& path, const char* type) {
  if (!n.IsScalar()) fail("{}: {} must be {}", c.at(n), path, type);
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail("{}: {} must be {}, got '{}'", c.at(n), path, type, n.Scalar());
  }
}

void read_string(const Ctx& c, const YAML::Node& sec, const std::string& s, const char* k, std::string& out) {
  if (sec[k]) out = scalar<std::string>(c, sec[k], path_of(s, k), "a string");
}
void read_int(const Ctx& c, const YAML::Node& sec, const std::string& s, const char* k, int64_t& out, int64_t min) {
  if (!sec[k]) return;
  out = scalar<int64_t>(c, sec[k], path_of(s, k), "an integer");
  if (out < min) fail("{}: {} must be at least {}, got {}", c.at(sec[k]), path_of(s, k), min, out);
}
void read_double(const Ctx& c, const YAML::Node& sec, const std::string& s, const char* k, double& out, double lo, double hi,
                 bool lo_open) {
  if (!sec[k]) return;
  out = scalar<double>(c, sec[k], path_of(s, k), "a number");
  if (out > hi || out < lo || (lo_open && out == lo))
    fail("{}: {} must be in {}{}, {}], got {}", c.at(sec[k]), path_of(s, k), lo_open ? "(" : "[", lo, hi, out);
}
void read_bool(const Ctx& c, const YAML::Node& sec, const std::string& s, const char* k, bool& out) {
  if (sec[k]) out = scalar<bool>(c, sec[k], path_of(s, k), "true or false");
}
std::vector<std::string> read_list(const Ctx& c, const YAML::Node& n, const std::string& path) {
  std::vector<std::string> out;
  if (n.IsScalar()) return {n.Scalar()};
  if (!n.IsSequence()) fail("{}: {} must be a string or a list of strings", c.at(n), path);
  for (const auto& x : n) out.push_back(scalar<std::string>(c, x, path, "a string"));
  return out;
}

std::string absolute_from(const std::string& base_dir, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return fs::weakly_canonical(fs::path(base_dir) / p).string();
}

std::string spec_text(const std::string& method, int64_t bits, const std::map<std::string, std::string>& options) {
  if (method == "none") return "";
  std::vector<std::string> parts;
  const auto& entry = QuantizerRegistry::instance().entry(method);
  const bool takes_bits =
      std::any_of(entry.options.begin(), entry.options.end(), [](const OptionSpec& o) { return o.name == "bits"; });
  if (bits > 0 && takes_bits) parts.push_back(fmt::format("bits={}", bits));
  for (const auto& [k, v] : options) {
    const size_t dot = k.find('.');
    if (dot == std::string::npos) {
      parts.push_back(k + "=" + v);
    } else if (k.compare(0, dot, method) == 0 && dot == method.size()) {
      parts.push_back(k.substr(dot + 1) + "=" + v);  // scoped to this quantizer
    }
  }
  return parts.empty() ? method : method + ":" + fmt::format("{}", fmt::join(parts, ","));
}

// One cell from a fully resolved YAML tree (sweep already applied).
CellConfig parse_cell(const Ctx& c, const YAML::Node& root, const std::string& base_dir) {
  CellConfig cell;
  for (const char* s : {"model", "dataset", "generation", "kv", "table"})
    if (root[s]) check_keys(c, root[s], s);
  if (!root["model"] || !root["model"]["path"]) fail("{}: model.path is required", c.at(root));
  const YAML::Node m = root["model"];
  read_string(c, m, "model", "path", cell.model.path);
  read_string(c, m, "model", "dtype", cell.model.dtype);
  read_string(c, m, "model", "device", cell.model.device);
  if (cell.model.dtype != "fp32" && cell.model.dtype != "fp16" && cell.model.dtype != "bf16")
    fail("{}: model.dtype '{}' is not one of fp32, fp16, bf16", c.at(m["dtype"]), cell.model.dtype);
  if (cell.model.device != "cpu" && cell.model.device != "cuda" && cell.model.device.rfind("cuda:", 0) != 0)
    fail("{}: model.device '{}' is not cpu, cuda or cuda:N", c.at(m["device"]), cell.model.device);
  if (cell.model.dtype == "fp16" && cell.model.device == "cpu")
    fail("{}: model.dtype fp16 with model.device cpu: CPU LibTorch has no half-precision matmul (use fp32 or bf16)",
         c.at(m["dtype"]));
  cell.model.path = absolute_from(base_dir, cell.model.path);

  if (!root["dataset"]) fail("{}: dataset is required", c.at(root));
  const YAML::Node d = root["dataset"];
  std::string format = "coco_captions", on_error = "skip";
  read_string(c, d, "dataset", "format", format);
  cell.dataset.format = parse_dataset_format(format, c.at(d["format"] ? d["format"] : d) + ": dataset.format");
  read_string(c, d, "dataset", "annotations", cell.dataset.annotations);
  read_string(c, d, "dataset", "questions", cell.dataset.questions);
  read_string(c, d, "dataset", "image_root", cell.dataset.image_root);
  read_string(c, d, "dataset", "split", cell.dataset.split);
  read_int(c, d, "dataset", "limit", cell.dataset.limit, 0);
  int64_t seed = 0;
  read_int(c, d, "dataset", "seed", seed, 0);
  cell.dataset.seed = static_cast<uint64_t>(seed);
  read_int(c, d, "dataset", "stride", cell.dataset.stride, 1);
  read_string(c, d, "dataset", "prompt", cell.dataset.prompt);
  read_string(c, d, "dataset", "on_error", on_error);
  if (on_error != "skip" && on_error != "fail")
    fail("{}: dataset.on_error '{}' is not one of skip, fail", c.at(d["on_error"]), on_error);
  cell.dataset.on_error = on_error == "skip" ? OnError::Skip : OnError::Fail;
  read_bool(c, d, "dataset", "check_images", cell.dataset.check_images);
  if (cell.dataset.annotations.empty()) fail("{}: dataset.annotations is required", c.at(d));
  if (cell.dataset.format == DatasetFormat::VqaV2 && cell.dataset.questions.empty())
    fail("{}: dataset.format vqav2 needs dataset.questions (the questions file)", c.at(d));
  cell.dataset.annotations = absolute_from(base_dir, cell.dataset.annotations);
  cell.dataset.questions = absolute_from(base_dir, cell.dataset.questions);
  cell.dataset.image_root = absolute_from(base_dir, cell.dataset.image_root);

  if (root["generation"]) {
    const YAML::Node g = root["generation"];
    read_int(c, g, "generation", "max_new_tokens", cell.generation.max_new_tokens, 1);
    read_int(c, g, "generation", "batch_size", cell.generation.batch_size, 1);
    read_double(c, g, "generation", "temperature", cell.generation.temperature, 0.0, 100.0, false);
    read_double(c, g, "generation", "top_p", cell.generation.top_p, 0.0, 1.0, true);
    int64_t gseed = 0;
    read_int(c, g, "generation", "seed", gseed, 0);
    cell.generation.seed = static_cast<uint64_t>(gseed);
  }

  if (root["kv"]) {
    const YAML::Node k = root["kv"];
    read_string(c, k, "kv", "quantizer", cell.kv.quantizer);
    read_int(c, k, "kv", "bits", cell.kv.bits, 0);
    read_string(c, k, "kv", "key", cell.kv.key);
    read_string(c, k, "kv", "value", cell.kv.value);
    read_string(c, k, "kv", "segments", cell.kv.segments);
    if (k["options"]) {
      if (!k["options"].IsMap()) fail("{}: kv.options must be a map of option: value", c.at(k["options"]));
      for (const auto& o : k["options"]) {
        const std::string name = o.first.as<std::string>();
        if (!o.second.IsMap()) {
          cell.kv.options[name] = scalar<std::string>(c, o.second, "kv.options." + name, "a scalar");
          continue;
        }
        // kv.options.<quantizer>: options that only that quantizer gets (a sweep over
        // quantizers can then give, e.g., kivi its group size and residual alone).
        QuantizerRegistry::instance().entry(name, c.at(o.second) + ": kv.options." + name);
        for (const auto& so : o.second)
          cell.kv.options[name + "." + so.first.as<std::string>()] =
              scalar<std::string>(c, so.second, "kv.options." + name + "." + so.first.as<std::string>(), "a scalar");
      }
    }
    SegmentSet::parse(cell.kv.segments, c.at(k["segments"] ? k["segments"] : k) + ": kv.segments");
    // The quantizers are built once here, so that an unknown method or option fails at load.
    const std::string where = c.at(k) + ": kv";
    if (cell.kv.quantizer != "none") QuantizerRegistry::instance().entry(cell.kv.quantizer, where + ".quantizer");
    for (const auto& [spec, role, name] : {std::tuple{cell.kv.key_spec(), KVRole::Key, "kv.key"},
                                           std::tuple{cell.kv.value_spec(), KVRole::Value, "kv.value"}})
      if (!spec.empty()) QuantizerRegistry::instance().make(parse_quantizer_spec(spec, where), role, c.at(k) + ": " + name);
  }
  return cell;
}

json resolved_json(const CellConfig& c) {
  return {{"model", {{"path", c.model.path}, {"dtype", c.model.dtype}, {"device", c.model.device}}},
          {"dataset",
           {{"format", dataset_format_name(c.dataset.format)}, {"annotations", c.dataset.annotations},
            {"questions", c.dataset.questions}, {"image_root", c.dataset.image_root}, {"split", c.dataset.split},
            {"limit", c.dataset.limit}, {"seed", c.dataset.seed}, {"stride", c.dataset.stride}, {"prompt", c.dataset.prompt},
            {"on_error", c.dataset.on_error == OnError::Skip ? "skip" : "fail"}, {"check_images", c.dataset.check_images}}},
          {"generation",
           {{"max_new_tokens", c.generation.max_new_tokens}, {"batch_size", c.generation.batch_size},
            {"temperature", c.generation.temperature}, {"top_p", c.generation.top_p}, {"seed", c.generation.seed}}},
          {"kv", {{"key", c.kv.key_spec()}, {"value", c.kv.value_spec()}, {"segments", SegmentSet::parse(c.kv.segments).to_string()}}}};
}

std::string hash_hex(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ULL;
  return fmt::format("{:016x}", h).substr(0, 8);
}

// Sets `value` at a dotted path ("kv.options.group") of `root`, creating maps.
void set_path(YAML::Node root, const std::string& path, const YAML::Node& value) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot; (dot = path.find('.', start)) != std::string::npos; start = dot + 1) parts.push_back(path.substr(start, dot - start));
  parts.push_back(path.substr(start));
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (!chain.back()[parts[i]]) chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
    chain.push_back(chain.back()[parts[i]]);
  }
  chain.back()[parts.back()] = YAML::Clone(value);
}

void check_sweep_path(const Ctx& c, const YAML::Node& key_node, const std::string& path) {
  const size_t dot = path.find('.');
  const std::string section = dot == std::string::npos ? "" : path.substr(0, dot);
  const std::string rest = dot == std::string::npos ? path : path.substr(dot + 1);
  std::vector<std::string> sweepable;
  for (const char* s : {"model", "dataset", "generation", "kv"})
    for (const auto& k : kSchema.at(s)) sweepable.push_back(std::string(s) + "." + k);
  const bool ok = (section == "kv" && rest.rfind("options.", 0) == 0 && rest.size() > 8) ||
                  std::find(sweepable.begin(), sweepable.end(), path) != sweepable.end();
  if (!ok)
    fail("{}: sweep key '{}' is not a configuration key (allowed: {}, kv.options.<name>, zip)", c.at(key_node), path,
         fmt::join(sweepable, ", "));
}

struct Axis {
  std::vector<std::string> paths;
  std::vector<std::vector<YAML::Node>> values;  // per path, the list
  size_t size() const { return values.front().size(); }
};

std::vector<YAML::Node> list_of(const Ctx& c, const YAML::Node& n, const std::string& path) {
  if (!n.IsSequence() || n.size() == 0) fail("{}: sweep.{} must be a non-empty list", c.at(n), path);
  std::vector<YAML::Node> out;
  for (const auto& x : n) {
    if (!x.IsScalar()) fail("{}: sweep.{}: each value must be a scalar", c.at(x), path);
    out.push_back(x);
  }
  return out;
}

}  // namespace

std::string KvSection::key_spec() const { return !key.empty() ? (key == "none" ? "" : key) : spec_text(quantizer, bits, options); }
std::string KvSection::value_spec() const {
  return !value.empty() ? (value == "none" ? "" : value) : spec_text(quantizer, bits, options);
}

ExperimentConfig load_experiment(const std::string& path) {
  Ctx c{path};
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("{}: cannot read the experiment file", path);
  } catch (const YAML::Exception& e) {
    fail("{}:{}: not valid YAML: {}", path, e.mark.line + 1, e.msg);
  }
  if (!root || !root.IsMap()) fail("{}: the experiment file must be a YAML map", path);
  check_keys(c, root, "");
  const std::string base_dir = fs::absolute(path).parent_path().string();
  ExperimentConfig exp;
  exp.file = path;
  exp.name = root["name"] ? scalar<std::string>(c, root["name"], "name", "a string") : fs::path(path).stem().string();
  if (root["table"]) {
    const YAML::Node t = root["table"];
    check_keys(c, t, "table");
    if (t["rows"]) exp.table.rows = read_list(c, t["rows"], "table.rows");
    if (t["columns"]) exp.table.columns = read_list(c, t["columns"], "table.columns");
    if (t["metric"]) exp.table.metric = scalar<std::string>(c, t["metric"], "table.metric", "a string");
  }

  std::vector<Axis> axes;
  if (root["sweep"]) {
    const YAML::Node s = root["sweep"];
    if (!s.IsMap()) fail("{}: sweep must be a map of key: [values] (and zip: [groups])", c.at(s));
    for (const auto& kv : s) {
      const std::string key = kv.first.as<std::string>();
      if (key == "zip") {
        if (!kv.second.IsSequence()) fail("{}: sweep.zip must be a list of groups (maps of key: [values])", c.at(kv.second));
        for (const auto& group : kv.second) {
          if (!group.IsMap() || group.size() == 0) fail("{}: each sweep.zip group must be a map of key: [values]", c.at(group));
          Axis a;
          for (const auto& g : group) {
            const std::string p = g.first.as<std::string>();
            check_sweep_path(c, g.first, p);
            a.paths.push_back(p);
            a.values.push_back(list_of(c, g.second, "zip." + p));
            if (a.values.back().size() != a.values.front().size())
              fail("{}: sweep.zip group: '{}' has {} values but '{}' has {} (zipped lists must be equally long)",
                   c.at(g.second), p, a.values.back().size(), a.paths.front(), a.values.front().size());
          }
          axes.push_back(std::move(a));
        }
        continue;
      }
      check_sweep_path(c, kv.first, key);
      axes.push_back({{key}, {list_of(c, kv.second, key)}});
    }
  }
  for (const auto& a : axes)
    for (const auto& p : a.paths) {
      if (std::find(exp.sweep_keys.begin(), exp.sweep_keys.end(), p) != exp.sweep_keys.end())
        fail("{}: sweep key '{}' appears twice", path, p);
      exp.sweep_keys.push_back(p);
    }
  // A table the file asks for must be laid out by sweep keys (the defaults adapt instead).
  if (root["table"] && !exp.sweep_keys.empty())
    for (const auto& [what, keys] : {std::pair{"rows", &exp.table.rows}, std::pair{"columns", &exp.table.columns}})
      for (const auto& key : *keys)
        if (std::find(exp.sweep_keys.begin(), exp.sweep_keys.end(), key) == exp.sweep_keys.end())
          fail("{}: table.{} key '{}' is not a sweep key (sweep keys: {})", path, what, key, fmt::join(exp.sweep_keys, ", "));

  // The base configuration first, where every node still has its line (a base that only
  // the sweep completes is checked per cell instead).
  try {
    YAML::Node base = root;
    parse_cell(c, base, base_dir);
  } catch (const Error&) {
    if (axes.empty()) throw;
  }
  const Ctx cell_ctx{path, false};

  // The grid: the last axis varies fastest.
  std::vector<size_t> index(axes.size(), 0);
  std::set<std::string> seen;
  for (bool more = true; more;) {
    YAML::Node cell_root = YAML::Clone(root);
    cell_root.remove("sweep");
    std::map<std::string, std::string> values;
    std::vector<std::string> label;
    for (size_t a = 0; a < axes.size(); ++a)
      for (size_t p = 0; p < axes[a].paths.size(); ++p) {
        const YAML::Node& v = axes[a].values[p][index[a]];
        set_path(cell_root, axes[a].paths[p], v);
        values[axes[a].paths[p]] = v.Scalar();
        label.push_back(axes[a].paths[p] + "=" + v.Scalar());
      }
    CellConfig cell;
    try {
      cell = parse_cell(cell_ctx, cell_root, base_dir);
    } catch (const Error& e) {
      if (label.empty()) throw;
      fail("{} (in the sweep cell {})", e.what(), fmt::join(label, " "));
    }
    cell.values = values;
    cell.label = label.empty() ? "base" : fmt::format("{}", fmt::join(label, " "));
    cell.resolved = resolved_json(cell);
    cell.hash = hash_hex(cell.resolved.dump());
    std::string dir_name;
    for (const auto& [k, v] : values) {
      const std::string short_key = k.substr(k.rfind('.') + 1);
      dir_name += (dir_name.empty() ? "" : ",") + short_key + "=" + v;
    }
    for (char& ch : dir_name)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '=' && ch != ',' && ch != '.' && ch != '-' && ch != '_') ch = '_';
    cell.dir = (dir_name.empty() ? std::string("cell") : dir_name) + "-" + cell.hash;
    if (seen.insert(cell.hash).second) exp.cells.push_back(std::move(cell));
    else exp.duplicates.push_back(cell.label);
    more = false;
    for (size_t a = axes.size(); a-- > 0;) {
      if (++index[a] < axes[a].size()) {
        more = true;
        break;
      }
      index[a] = 0;
    }
  }
  return exp;
}

}  // namespace calibq
