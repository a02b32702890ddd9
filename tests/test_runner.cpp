// The experiment runner: grid expansion, every config error, a run killed by a real signal
// and resumed, shards merged, tables against metrics files, plots.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/io/json_file.h"
#include "datasets/images.h"
#include "experiments/runner/config.h"
#include "experiments/runner/runner.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;
const std::string kData = CALIBQ_TEST_DATA;

// An experiment file in `tmp` over the pipeline fixture; `extra` is appended.
std::string write_config(const test::TempDir& tmp, const std::string& body, int samples = 6) {
  std::ofstream jsonl(tmp.file("vqa.jsonl"));
  const char* images[] = {"chelsea.png", "rocket.jpg", "camera.png"};
  const char* questions[] = {"What is this?", "Is there a rocket here?", "What is the man holding in his hands?"};
  for (int i = 0; i < samples; ++i)
    jsonl << json({{"id", "q" + std::to_string(i)}, {"image", images[i % 3]}, {"question", questions[i % 3]},
                   {"answers", {"cat", "rocket", "camera"}}})
                 .dump()
          << "\n";
  jsonl.close();
  std::ofstream y(tmp.file("exp.yaml"));
  y << "name: t\nmodel:\n  path: " << kData << "/models/llava-pipeline\n"
    << "dataset:\n  format: jsonl\n  annotations: vqa.jsonl\n  image_root: " << kData << "/images\n"
    << body;
  return tmp.file("exp.yaml");
}

std::string error_of(const std::string& path) {
  try {
    load_experiment(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RunnerConfig, GridIsTheCartesianProductWithZipGroupsAndDuplicatesDropped) {
  test::TempDir tmp;
  auto exp = load_experiment(write_config(tmp,
                                          "sweep:\n  kv.quantizer: [fp16, uniform, group]\n  kv.bits: [1, 2]\n"
                                          "  zip:\n    - {generation.max_new_tokens: [2, 3], generation.batch_size: [1, 2]}\n"));
  // fp16 takes no bits: its two bit cells are one. (1 + 2 + 2) x 2 zip values.
  EXPECT_EQ(exp.cells.size(), 10u);
  EXPECT_EQ(exp.duplicates.size(), 2u);
  EXPECT_EQ(exp.sweep_keys, (std::vector<std::string>{"kv.quantizer", "kv.bits", "generation.max_new_tokens", "generation.batch_size"}));
  std::set<std::string> hashes, dirs;
  for (const auto& c : exp.cells) {
    hashes.insert(c.hash);
    dirs.insert(c.dir);
    EXPECT_EQ(c.generation.batch_size, c.generation.max_new_tokens - 1) << "zip keeps values together: " << c.label;
  }
  EXPECT_EQ(hashes.size(), exp.cells.size());
  EXPECT_EQ(dirs.size(), exp.cells.size());
  EXPECT_EQ(exp.cells[2].kv.key_spec(), "uniform:bits=1");
  EXPECT_EQ(exp.cells[2].dataset.annotations, (tmp.path() / "vqa.jsonl").string());  // relative to the file
  // A config change is a new cell.
  test::TempDir tmp2;
  auto other = load_experiment(write_config(tmp2, "generation: {max_new_tokens: 5}\n"));
  auto same = load_experiment(write_config(tmp2, "generation: {max_new_tokens: 5}\n"));
  auto changed = load_experiment(write_config(tmp2, "generation: {max_new_tokens: 6}\n"));
  EXPECT_EQ(other.cells[0].hash, same.cells[0].hash);
  EXPECT_NE(other.cells[0].hash, changed.cells[0].hash);
}

// kv.options.<quantizer>: options that only one quantizer of a sweep gets (and can be swept).
TEST(RunnerConfig, OptionsScopedToOneQuantizer) {
  test::TempDir tmp;
  auto exp = load_experiment(write_config(
      tmp, "kv: {options: {kivi: {residual: 0, group_size: 16}, clip: 0.9}}\n"
           "sweep:\n  kv.quantizer: [uniform, kivi]\n  kv.bits: [1]\n  kv.options.kivi.residual: [0, 8]\n"));
  std::set<std::string> specs;
  for (const auto& c : exp.cells) specs.insert(c.kv.key_spec());
  EXPECT_EQ(specs, (std::set<std::string>{"uniform:bits=1,clip=0.9", "kivi:bits=1,clip=0.9,group_size=16,residual=0",
                                          "kivi:bits=1,clip=0.9,group_size=16,residual=8"}));
  EXPECT_EQ(exp.duplicates.size(), 1u);  // uniform does not see kivi's residual
  const std::string err = error_of(write_config(tmp, "kv: {quantizer: kivi, options: {kiwi: {residual: 0}}}\n"));
  EXPECT_NE(err.find("kiwi"), std::string::npos) << err;
  EXPECT_NE(err.find("kivi"), std::string::npos) << err;  // the valid keys are listed
  EXPECT_NE(error_of(write_config(tmp, "kv: {quantizer: kivi, options: {kivi: {residu: 0}}}\n")).find("residu"),
            std::string::npos);
}

TEST(RunnerConfig, EveryErrorNamesFileLineKeyAndAllowed) {
  test::TempDir tmp;
  struct Case {
    std::string body, expect;
  };
  const std::vector<Case> cases = {
      {"generaton: {max_new_tokens: 2}\n", "exp.yaml:8: unknown key 'generaton' (allowed in the top level: name, model"},
      {"generation: {max_new_token: 2}\n", "unknown key 'generation.max_new_token' (allowed in 'generation': max_new_tokens"},
      {"generation: {max_new_tokens: many}\n", "exp.yaml:8: generation.max_new_tokens must be an integer, got 'many'"},
      {"generation: {max_new_tokens: 0}\n", "generation.max_new_tokens must be at least 1"},
      {"generation: {top_p: 1.5}\n", "generation.top_p must be in (0, 1], got 1.5"},
      {"kv: {quantizer: unifrom}\n", "unifrom"},
      {"kv: {quantizer: uniform, options: {group: diagonal}}\n", "quantizer 'uniform' has no option 'group' (options: bits, clip)"},
      {"kv: {segments: visuals}\n", "visuals"},
      {"sweep:\n  kv.bitz: [1, 2]\n", "sweep key 'kv.bitz' is not a configuration key"},
      {"sweep:\n  kv.bits: 1\n", "sweep.kv.bits must be a non-empty list"},
      {"sweep:\n  zip:\n    - {kv.bits: [1, 2], generation.max_new_tokens: [1]}\n", "zipped lists must be equally long"},
      {"sweep:\n  kv.quantizer: [uniform]\n  kv.bits: [1, 3, 16]\n", "(in the sweep cell kv.quantizer=uniform kv.bits=16)"},
      {"sweep:\n  kv.bits: [1]\ntable: {rows: kv.quantizer}\n", "table.rows key 'kv.quantizer' is not a sweep key"},
      {"model: {dtype: fp16}\n", ""},  // placeholder replaced below
  };
  for (size_t i = 0; i + 1 < cases.size(); ++i) {
    const std::string err = error_of(write_config(tmp, cases[i].body));
    EXPECT_NE(err.find(cases[i].expect), std::string::npos) << "case " << i << ": " << err;
    EXPECT_NE(err.find("exp.yaml"), std::string::npos) << err;
  }
  // Impossible combinations.
  std::ofstream(tmp.file("fp16cpu.yaml")) << "model: {path: x, dtype: fp16, device: cpu}\ndataset: {annotations: a}\n";
  EXPECT_NE(error_of(tmp.file("fp16cpu.yaml")).find("fp16cpu.yaml:1: model.dtype fp16 with model.device cpu"), std::string::npos);
  std::ofstream(tmp.file("vqa.yaml")) << "model: {path: x}\ndataset: {format: vqav2, annotations: a}\n";
  EXPECT_NE(error_of(tmp.file("vqa.yaml")).find("vqav2 needs dataset.questions"), std::string::npos);
  std::ofstream(tmp.file("bad.yaml")) << "model: [\n";
  EXPECT_NE(error_of(tmp.file("bad.yaml")).find("not valid YAML"), std::string::npos);
  EXPECT_NE(error_of(tmp.file("missing.yaml")).find("missing.yaml: cannot read"), std::string::npos);
  int64_t i = 0, n = 0;
  EXPECT_THROW(parse_shard("3/3", i, n), Error);
  EXPECT_THROW(parse_shard("a/b", i, n), Error);
  parse_shard("2/5", i, n);
  EXPECT_EQ(i, 2);
  EXPECT_EQ(n, 5);
}

const char* kSweep =
    "generation: {max_new_tokens: 6, batch_size: 2}\nsweep:\n  kv.quantizer: [none, calibquant]\n  kv.bits: [1, 2]\n";

// Every file a run writes, except timing (wall clock) and the config's absolute paths.
std::map<std::string, std::string> outputs(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = std::filesystem::relative(e.path(), dir).string();
    if (rel.find("timing") != std::string::npos || rel.find("shard") != std::string::npos || rel.find(".png") != std::string::npos ||
        rel.find(".svg") != std::string::npos || rel.find("command.txt") != std::string::npos ||
        rel.find("summary.") != std::string::npos)
      continue;
    files[rel] = test::read_bytes(e.path().string());
  }
  return files;
}

TEST(Runner, KilledMidCellAndResumedGivesTheSameFiles) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  test::TempDir tmp;
  const std::string cfg = write_config(tmp, kSweep, 18);
  ASSERT_EQ(test::run_calibq("run " + cfg + " --out " + tmp.file("whole")).exit_code, 0);

  // The same run, killed with SIGKILL once the first cell has written its first batch.
  const std::string out = tmp.file("killed");
  pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stderr);
    execl(CALIBQ_BINARY, CALIBQ_BINARY, "run", cfg.c_str(), "--out", out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  bool killed_mid_run = false;
  for (int spin = 0; spin < 20000; ++spin) {
    bool started = false;
    if (std::filesystem::exists(out + "/cells"))
      for (const auto& e : std::filesystem::recursive_directory_iterator(out + "/cells"))
        if (e.path().filename() == "predictions.jsonl" && std::filesystem::file_size(e.path()) > 0) started = true;
    if (started) {
      kill(pid, SIGKILL);
      killed_mid_run = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(killed_mid_run);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before the kill";
  EXPECT_FALSE(std::filesystem::exists(out + "/summary.md"));
  // Simulate a torn write too: half a line at the end of some predictions file.
  for (const auto& e : std::filesystem::recursive_directory_iterator(out + "/cells"))
    if (e.path().filename() == "predictions.jsonl") {
      std::ofstream(e.path(), std::ios::app) << "{\"batch\": 8, \"id\": \"q1";
      break;
    }
  auto resumed = test::run_calibq("run " + cfg + " --out " + out);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  const auto a = outputs(tmp.file("whole")), b = outputs(out);
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, bytes] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_EQ(bytes, b.at(name)) << name;
  }
  EXPECT_EQ(test::read_bytes(tmp.file("whole") + "/summary.csv"), test::read_bytes(out + "/summary.csv"));
  // A finished run restarted does nothing and changes nothing.
  auto again = test::run_calibq("run " + cfg + " --out " + out);
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_EQ(outputs(out), b);
}

TEST(Runner, ThreeShardsMergedEqualOneRun) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  test::TempDir tmp;
  const std::string cfg = write_config(tmp, kSweep, 9);
  ASSERT_EQ(test::run_calibq("run " + cfg + " --out " + tmp.file("one")).exit_code, 0);
  for (int i = 0; i < 3; ++i) {
    auto r = test::run_calibq("run " + cfg + " --out " + tmp.file("sharded") + " --shard " + std::to_string(i) + "/3");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (i < 2) {  // merging before every shard ran names what is missing
      auto early = test::run_calibq("merge " + cfg + " --out " + tmp.file("sharded"));
      EXPECT_EQ(early.exit_code, 1);
      EXPECT_NE(early.err.find("run the missing shards first"), std::string::npos) << early.err;
    }
  }
  auto m = test::run_calibq("merge " + cfg + " --out " + tmp.file("sharded"));
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_EQ(outputs(tmp.file("one")), outputs(tmp.file("sharded")));
  EXPECT_EQ(test::read_bytes(tmp.file("one") + "/summary.csv"), test::read_bytes(tmp.file("sharded") + "/summary.csv"));
}

TEST(Runner, TablesMatchTheMetricsFilesAndPlotsAreValid) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  test::TempDir tmp;
  const std::string cfg = write_config(tmp, std::string(kSweep) + "table: {rows: kv.quantizer, columns: kv.bits}\n", 3);
  auto dry = test::run_calibq("run " + cfg + " --dry-run");
  EXPECT_EQ(dry.exit_code, 0);
  EXPECT_NE(dry.out.find("3 cells (1 duplicates dropped)"), std::string::npos) << dry.out;
  const std::string out = tmp.file("run");
  auto r = test::run_calibq("run " + cfg + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExperimentConfig exp = load_experiment(cfg);
  json summary = read_json_file(out + "/summary.json");
  EXPECT_EQ(summary["metric"], "accuracy");
  int checked = 0;
  for (const auto& c : exp.cells) {
    json m = read_json_file(out + "/cells/" + c.dir + "/metrics.json");
    json cfg_json = read_json_file(out + "/cells/" + c.dir + "/config.json");
    EXPECT_EQ(cfg_json["hash"], c.hash);
    EXPECT_TRUE(std::filesystem::exists(out + "/cells/" + c.dir + "/timing.json"));
    for (const auto& row : summary["rows"]) {
      if (row["kv.quantizer"] != c.values.at("kv.quantizer")) continue;
      const std::string col = "kv.bits=" + c.values.at("kv.bits");
      ASSERT_TRUE(row.contains(col));
      EXPECT_NEAR(row[col].get<double>(), m["accuracy"].get<double>(), 1e-4) << c.label;
      ++checked;
    }
    // Every prediction line has what a researcher needs.
    std::ifstream in(out + "/cells/" + c.dir + "/predictions.jsonl");
    std::string line;
    ASSERT_TRUE(std::getline(in, line));
    json p = json::parse(line);
    for (const char* k : {"id", "image", "prompt", "prediction", "references", "batch", "new_tokens", "stopped"})
      EXPECT_TRUE(p.contains(k)) << k;
  }
  EXPECT_EQ(checked, 3);
  EXPECT_NE(test::read_bytes(out + "/summary.md").find("| kv.quantizer | kv.bits=1"), std::string::npos);
  EXPECT_NE(test::read_bytes(out + "/summary.tex").find("\\begin{tabular}"), std::string::npos);
  test::expect_rendered_plot(out + "/plots", "metric_vs_bits");
  // calibq plot re-renders from the kept script.
  std::filesystem::remove(out + "/plots/metric_vs_bits.png");
  EXPECT_EQ(test::run_calibq("plot " + out).exit_code, 0);
  EXPECT_TRUE(std::filesystem::exists(out + "/plots/metric_vs_bits.png"));
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {
// Every shipped config loads (paths are placeholders until filled in; loading opens no file).
TEST(RunnerConfig, EveryShippedConfigLoads) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(CALIBQ_TEST_DATA) + "/../../configs")) {
    if (e.path().extension() != ".yaml") continue;
    EXPECT_NO_THROW({
      auto exp = load_experiment(e.path().string());
      EXPECT_FALSE(exp.cells.empty()) << e.path();
    }) << e.path();
    ++n;
  }
  EXPECT_GE(n, 6);
}
}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

// InternVL images of different tile grids in one batch: the runner generates each layout
// apart and writes what batches of one sample write.
TEST(Runner, BatchesOfMixedImageLayoutsEqualSamplesAlone) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  test::TempDir tmp;
  std::ofstream jsonl(tmp.file("vqa.jsonl"));
  const char* images[] = {"chelsea.png", "camera.png", "rocket.jpg"};  // 7, 5 and 7 tiles
  for (int i = 0; i < 3; ++i)
    jsonl << json({{"id", "q" + std::to_string(i)}, {"image", images[i]}, {"question", "What is this?"}, {"answers", {"cat"}}})
                 .dump()
          << "\n";
  jsonl.close();
  auto config = [&](int batch) {
    std::ofstream y(tmp.file("b" + std::to_string(batch) + ".yaml"));
    y << "name: t\nmodel:\n  path: " << kData << "/models/internvl-pipeline\n"
      << "dataset:\n  format: jsonl\n  annotations: vqa.jsonl\n  image_root: " << kData << "/images\n"
      << "generation: {max_new_tokens: 6, batch_size: " << batch << "}\n";
    return tmp.file("b" + std::to_string(batch) + ".yaml");
  };
  auto predictions = [&](const std::string& out) {
    std::vector<std::string> texts;
    for (const auto& e : std::filesystem::recursive_directory_iterator(out))
      if (e.path().filename() == "predictions.jsonl") {
        std::ifstream in(e.path());
        for (std::string line; std::getline(in, line);) texts.push_back(json::parse(line)["prediction"]);
      }
    return texts;
  };
  for (int batch : {3, 1}) {
    auto r = test::run_calibq("run " + config(batch) + " --out " + tmp.file("out" + std::to_string(batch)));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const auto mixed = predictions(tmp.file("out3")), alone = predictions(tmp.file("out1"));
  ASSERT_EQ(mixed.size(), 3u);
  EXPECT_EQ(mixed, alone);
}

}  // namespace
}  // namespace calibq
