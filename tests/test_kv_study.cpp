// calibq kv-stats CONFIG (statistics, error tables, score distributions and plots of a real
// model's prefill) and the throughput-versus-batch plot of `calibq plot --throughput`.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/io/json_file.h"
#include "core/io/safetensors.h"
#include "core/kv/kv_cache.h"
#include "datasets/images.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using json = nlohmann::json;
const std::string kData = CALIBQ_TEST_DATA;

std::string write_study_config(const test::TempDir& tmp) {
  std::ofstream jsonl(tmp.file("vqa.jsonl"));
  jsonl << json({{"id", "a"}, {"image", "chelsea.png"}, {"question", "What animal is this?"}, {"answers", {"cat"}}}).dump()
        << "\n"
        << json({{"id", "b"}, {"image", "rocket.jpg"}, {"question", "What is it?"}, {"answers", {"rocket"}}}).dump() << "\n";
  jsonl.close();
  std::ofstream y(tmp.file("exp.yaml"));
  y << "name: study\nmodel:\n  path: " << kData << "/models/llava-pipeline\n"
    << "dataset:\n  format: jsonl\n  annotations: vqa.jsonl\n  image_root: " << kData << "/images\n"
    << "sweep:\n  kv.quantizer: [none, uniform, calibquant]\n  kv.bits: [1, 2]\n";
  return tmp.file("exp.yaml");
}

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(test::read_bytes(path));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::istringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
    rows.push_back(cells);
  }
  return rows;
}

TEST(KVStudy, StatisticsErrorsAndScoresComeFromTheModelsPrefill) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  if (!test::has_gnuplot()) GTEST_SKIP() << "no gnuplot";
  test::TempDir tmp;
  const std::string cfg = write_study_config(tmp), out = tmp.file("stats");
  auto r = test::run_calibq("kv-stats " + cfg + " --out " + out + " --samples 1 --dump");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // The dump is what the model's prefill gave: [layers, 1, heads, tokens, head_dim].
  auto dump = SafetensorsCheckpoint::open(out + "/kv_dump.safetensors");
  const at::Tensor k = dump.tensor("keys"), v = dump.tensor("values"), q = dump.tensor("queries");
  ASSERT_EQ(k.dim(), 5);
  const int64_t layers = k.size(0), heads = k.size(2), dim = k.size(4);
  const int64_t sys = std::stoll(dump.metadata().at("system")), vis = std::stoll(dump.metadata().at("visual"));
  EXPECT_EQ(vis, 64);  // the fixture's 112 px / 14 px patches
  EXPECT_GT(sys, 0);

  // Channel statistics of the visual keys equal the dump's own per-channel min and max.
  const at::Tensor vk = k.narrow(3, sys, vis);  // [L, 1, H, V, D]
  int checked = 0;
  auto rows = read_csv(out + "/kv_channel_stats.csv");
  ASSERT_EQ(rows[0][5], "min");
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& c = rows[i];
    if (c[1] != "key" || c[2] != "visual") continue;
    const int64_t l = std::stoll(c[0]), h = std::stoll(c[3]), d = std::stoll(c[4]);
    at::Tensor x = vk[l][0][h].select(-1, d);
    EXPECT_NEAR(std::stod(c[5]), x.min().item<double>(), 1e-5);
    EXPECT_NEAR(std::stod(c[6]), x.max().item<double>(), 1e-5);
    ++checked;
  }
  EXPECT_EQ(checked, layers * heads * dim);
  // Every (layer, kind, segment, head, channel) has its row.
  EXPECT_EQ(rows.size(), 1 + static_cast<size_t>(layers * 2 * 3 * heads * dim));

  // One error row per quantizer pair of the sweep (none excluded), one per layer in the by-layer table.
  json err = read_json_file(out + "/kv_error.json");
  ASSERT_EQ(err.at("rows").size(), 4u);
  EXPECT_EQ(err.at("rows")[0].at("keys"), "uniform:bits=1");
  EXPECT_EQ(err.at("rows")[3].at("keys"), "calibquant:bits=2");
  EXPECT_EQ(read_csv(out + "/kv_error_by_layer.csv").size(), 1 + 4 * static_cast<size_t>(layers));
  // `kv-error --input` on the dump reads its segment lengths and gives the same row.
  auto again = test::run_calibq("kv-error --input " + out + "/kv_dump.safetensors --methods calibquant --bits 2 --out " +
                                tmp.file("err"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const json direct = read_json_file(tmp.file("err") + "/kv_error.json").at("rows").at(0);
  EXPECT_EQ(direct, err.at("rows")[3]);

  // Score distributions: the calibrated rows map [m, M] to [m + 0, M - 3] (the authors' constants),
  // recomputed here from the dump's queries and keys.
  json scores = read_json_file(out + "/score_summary.json");
  std::map<std::pair<int64_t, std::string>, json> by;
  for (const auto& s : scores.at("rows")) by[{s.at("layer").get<int64_t>(), s.at("variant").get<std::string>()}] = s;
  for (int64_t l : {int64_t{0}, layers - 1}) {
    LayerKVCache cache(make_kv_cache_config("calibquant:bits=1,calibrate=off", "", "visual"));
    cache.prefill(k[l], v[l], sys, vis);
    at::Tensor s = cache.scores(q[l], 1.0 / std::sqrt(static_cast<double>(dim))).narrow(-1, sys, vis).to(at::kDouble);
    at::Tensor m = s.amin(-1), big = s.amax(-1);
    const auto& uncal = by.at({l, "calibquant:bits=1,calibrate=off"});
    const auto& cal = by.at({l, "calibquant:bits=1"});
    EXPECT_NEAR(uncal.at("mean_row_max").get<double>(), big.mean().item<double>(), 1e-5);
    EXPECT_NEAR(cal.at("mean_row_max").get<double>(), at::maximum(m, big - 3).mean().item<double>(), 1e-4);
    EXPECT_NEAR(cal.at("mean_row_min").get<double>(), at::minimum(m, big - 3).mean().item<double>(), 1e-4);
    EXPECT_GT(std::abs(by.at({l, "fp"}).at("mean_row_max").get<double>() - uncal.at("mean_row_max").get<double>()), 1e-4);
  }
  for (const char* plot : {"kv_channel_ranges", "kv_histograms", "visual_scores"}) test::expect_rendered_plot(out + "/plots", plot);
}

TEST(KVStudy, BadArgumentsAreNamed) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  test::TempDir tmp;
  const std::string cfg = write_study_config(tmp);
  auto r = test::run_calibq("kv-stats " + cfg + " --out " + tmp.file("o") + " --samples 1 --layers 0,7");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--layers: layer 7 does not exist (the model has 2 layers"), std::string::npos) << r.err;
  r = test::run_calibq("kv-stats " + cfg + " --synthetic --out " + tmp.file("o"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not both"), std::string::npos) << r.err;
  r = test::run_calibq("kv-stats " + cfg + " --samples 1 --score-quantizer nosuch --out " + tmp.file("o"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
}

TEST(Plots, ThroughputVersusBatchFromBenchmarkRows) {
  if (!test::has_gnuplot()) GTEST_SKIP() << "no gnuplot";
  test::TempDir tmp;
  json rows = json::array({{{"kv", "fp16"}, {"batch", 8}, {"decode_tok_s", 700.0}},
                           {{"kv", "fp16"}, {"batch", 1}, {"decode_tok_s", 100.0}},
                           {{"kv", "calibquant:bits=1"}, {"batch", 64}, {"decode_tok_s", 5000.0}},
                           {{"kv", "fp16"}, {"batch", 64}, {"decode_tok_s", nullptr}}});  // did not fit
  test::write_bytes(tmp.file("bench.json"), json({{"rows", rows}}).dump());
  auto r = test::run_calibq("plot " + tmp.file("run") + " --throughput " + tmp.file("bench.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string dat = test::read_bytes(tmp.file("run") + "/plots/throughput_vs_batch.dat");
  // Series by name, points by batch; the batch that did not fit has no point.
  EXPECT_EQ(dat, "# calibquant:bits=1\n# batch decode_tok_s\n64 5000\n\n\n# fp16\n# batch decode_tok_s\n1 100\n8 700\n\n\n");
  test::expect_rendered_plot(tmp.file("run") + "/plots", "throughput_vs_batch");

  test::write_bytes(tmp.file("bad.json"), json::array({{{"kv", "fp16"}, {"batch", 1}, {"decode_tok_s", 1.0}},
                                                       {{"kv", "fp16"}, {"decode_tok_s", 2.0}}}).dump());
  r = test::run_calibq("plot " + tmp.file("run") + " --throughput " + tmp.file("bad.json"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("bad.json: row 1 has no 'batch'"), std::string::npos) << r.err;

  // The memory-budget sweep of `bench throughput`: its own row list, against the budget.
  json budget = json::array({{{"kv", "none"}, {"budget_gib", 40}, {"batch", 54}, {"decode_tok_s", 1173.0}},
                             {{"kv", "none"}, {"budget_gib", 20}, {"batch", 8}, {"decode_tok_s", 583.0}}});
  test::write_bytes(tmp.file("sweep.json"), json({{"rows", rows}, {"budget_rows", budget}}).dump());
  r = test::run_calibq("plot " + tmp.file("run2") + " --throughput " + tmp.file("sweep.json") +
                       " --x budget_gib --rows budget_rows");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_bytes(tmp.file("run2") + "/plots/throughput_vs_budget_gib.dat"),
            "# none\n# budget_gib decode_tok_s\n20 583\n40 1173\n\n\n");
  test::expect_rendered_plot(tmp.file("run2") + "/plots", "throughput_vs_budget_gib");
}

}  // namespace
}  // namespace calibq
