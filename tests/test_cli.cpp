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
