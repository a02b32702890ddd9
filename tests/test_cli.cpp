// The calibq binary, run as a user runs it.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/version.h>

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using test::run_calibq;
using test::TempDir;

TEST(Cli, VersionNamesLibTorchAndCuda) {
  auto r = run_calibq("--version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("calibq "), std::string::npos);
  EXPECT_NE(r.out.find("LibTorch " + std::string(TORCH_VERSION)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CUDA "), std::string::npos);
}

TEST(Cli, HelpListsInspect) {
  auto r = run_calibq("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("inspect"), std::string::npos);
}

TEST(Cli, InspectPrintsTensorsAndConfig) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"),
                    {{"language_model.lm_head.weight", at::zeros({8, 4}, at::kHalf)}, {"b", at::zeros({3}, at::kByte)}});
  std::filesystem::copy_file(std::string(CALIBQ_TEST_DATA) + "/configs/llava-1.5-7b-hf.json", dir.file("config.json"));
  auto r = run_calibq(dir.path().string());
  EXPECT_NE(r.exit_code, 0) << "a path without a subcommand must be refused";
  r = run_calibq("inspect " + dir.path().string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("language_model.lm_head.weight  F16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[8, 4]"), std::string::npos);
  EXPECT_NE(r.out.find("64"), std::string::npos);
  EXPECT_NE(r.out.find("2 tensors"), std::string::npos);
  EXPECT_NE(r.out.find("family llava"), std::string::npos);
  EXPECT_NE(r.out.find("32 layers, hidden 4096"), std::string::npos);

  r = run_calibq("inspect --json " + dir.path().string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tensors"].size(), 2u);
  EXPECT_EQ(j["tensors"][1]["bytes"], 64);
  EXPECT_EQ(j["config"]["text"]["hidden_size"], 4096);
}

TEST(Cli, InspectOfACorruptFileIsOneErrorAndNoOutput) {
  TempDir dir;
  write_safetensors(dir.file("a.safetensors"), {{"w", at::zeros({4})}});
  std::string bytes = test::read_bytes(dir.file("a.safetensors"));
  bytes.resize(bytes.size() - 3);  // truncated
  test::write_bytes(dir.file("a.safetensors"), bytes);
  auto r = run_calibq("inspect " + dir.file("a.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("calibq: error: " + dir.file("a.safetensors")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tensor 'w'"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;

  r = run_calibq("inspect " + dir.file("missing"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no such file"), std::string::npos);
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

TEST(Cli, ListQuantizersShowsEveryKeyWithOptions) {
  auto r = test::run_calibq("list quantizers");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"calibquant", "uniform", "group", "quantile", "post_scaled", "kivi", "token_drop", "fp16"})
    EXPECT_NE(r.out.find(std::string(name) + "\n"), std::string::npos) << name;
  EXPECT_NE(r.out.find("calib_b     default -3"), std::string::npos) << r.out;
}

TEST(Cli, QuantizeWritesDequantizedAndUnpackedCodes) {
  test::TempDir dir;
  at::manual_seed(0);
  at::Tensor x = at::randn({1, 2, 9, 4});
  write_safetensors(dir.file("kv.safetensors"), {{"layer0.key", x}});
  auto r = test::run_calibq("quantize --input " + dir.file("kv.safetensors") +
                            " --tensor layer0.key --method group --bits 2 --axis token --out " + dir.file("q.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = SafetensorsCheckpoint::open(dir.file("q.safetensors"));
  at::Tensor deq = out.tensor("dequantized"), codes = out.tensor("codes");
  EXPECT_EQ(deq.scalar_type(), at::kFloat);
  EXPECT_EQ(codes.scalar_type(), at::kByte);
  EXPECT_EQ(codes.sizes(), x.sizes());
  // --axis token: each (batch, head, token) has its own range over its channels.
  at::Tensor mn = x.amin(3, true), mx = x.amax(3, true);
  at::Tensor s = (mx - mn) / 3;
  EXPECT_TRUE(at::allclose(deq, s * (codes.to(at::kFloat) - (-mn / s)), 1e-5, 1e-5));
  EXPECT_NE(out.metadata().at("quantizer").find("\"axis\":\"token\""), std::string::npos);

  r = test::run_calibq("quantize --input " + dir.file("kv.safetensors") +
                       " --tensor layer0.key --method group --bits 5 --out " + dir.file("bad.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("option bits=5 is not allowed"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad.safetensors")));
  r = test::run_calibq("quantize --input " + dir.file("kv.safetensors") +
                       " --tensor nope --method group --out " + dir.file("bad.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no tensor named 'nope'"), std::string::npos) << r.err;
}

TEST(Cli, KvErrorAndKvStatsWriteTheirFiles) {
  test::TempDir dir;
  auto r = test::run_calibq("kv-error --synthetic --visual-tokens 64 --methods 'calibquant;fp16' --bits 1,2 --out " +
                            dir.path().string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(test::read_bytes(dir.file("kv_error.json")));
  ASSERT_EQ(j["rows"].size(), 3u);
  EXPECT_EQ(j["rows"][0]["keys"], "calibquant:bits=1");
  EXPECT_EQ(j["rows"][2]["K rel err"], 0.0);
  EXPECT_NE(test::read_bytes(dir.file("kv_error.md")).find("made by: "), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir.file("kv_error.tex")));

  // A dump of two layers: [L, B, H, N, D].
  at::Tensor k = at::randn({2, 1, 2, 12, 8}), v = at::randn({2, 1, 2, 12, 8});
  write_safetensors(dir.file("dump.safetensors"), {{"keys", k}, {"values", v}});
  r = test::run_calibq("kv-stats --input " + dir.file("dump.safetensors") + " --system 2 --visual 8 --out " + dir.file("stats"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string csv = test::read_bytes(dir.file("stats/kv_head_stats.csv"));
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 2 * 2 * 3 * 2);  // layers x kinds x segments x heads
  r = test::run_calibq("kv-error --input " + dir.file("dump.safetensors") + " --system 2 --visual 20");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("exceed the 12 tokens"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace calibq
