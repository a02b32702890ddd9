// KV statistics, quantization-error measurement and tables.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "analysis/kv_stats.h"
#include "analysis/quant_error.h"
#include "analysis/synthetic_kv.h"
#include "core/io/safetensors.h"
#include "core/quant/registry.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

TEST(KVStats, ChannelStatisticsMatchTheirDefinitions) {
  // One head, two channels over 2 x 4 entries: known moments.
  at::Tensor x = at::zeros({2, 1, 4, 2});
  std::vector<float> a = {1, 2, 3, 4, 5, 6, 7, 8};
  for (int i = 0; i < 8; ++i) x[i / 4][0][i % 4][0] = a[i];
  x.select(3, 1).fill_(-2.0);
  KVStatsConfig cfg;
  cfg.quantiles = {0.5};
  cfg.bins = 4;
  KVStatsCollector stats(cfg);
  stats.add(3, KVRole::Key, Segment::Visual, x);
  Table t = stats.channel_table();
  ASSERT_EQ(t.rows().size(), 2u);
  auto col = [&](const std::string& name, int row) {
    auto it = std::find(t.columns().begin(), t.columns().end(), name);
    return std::stod(t.rows()[row][it - t.columns().begin()]);
  };
  EXPECT_EQ(t.rows()[0][0], "3");
  EXPECT_EQ(t.rows()[0][1], "key");
  EXPECT_EQ(t.rows()[0][2], "visual");
  EXPECT_DOUBLE_EQ(col("min", 0), 1.0);
  EXPECT_DOUBLE_EQ(col("max", 0), 8.0);
  EXPECT_DOUBLE_EQ(col("mean", 0), 4.5);
  EXPECT_NEAR(col("std", 0), std::sqrt(5.25), 1e-6);  // population std of 1..8
  // kurtosis of 1..8: m4 / m2^2 = 1.76190...
  EXPECT_NEAR(col("kurtosis", 0), 48.5625 / (5.25 * 5.25), 1e-4);
  EXPECT_DOUBLE_EQ(col("q0.5", 0), 4.5);
  EXPECT_DOUBLE_EQ(col("absmax", 1), 2.0);
  EXPECT_DOUBLE_EQ(col("kurtosis", 1), 0.0);  // constant channel
}

TEST(KVStats, CountsPlantedOutlierChannelsAndWritesFiles) {
  SyntheticKVShape shape;
  shape.visual = 64;
  QuantErrorInput in = make_synthetic_kv(shape, 1);
  KVStatsCollector stats;
  stats.add(0, KVRole::Key, Segment::Visual, in.k.narrow(2, in.system_len, in.visual_len));
  stats.add(0, KVRole::Value, Segment::Visual, in.v.narrow(2, in.system_len, in.visual_len));
  Table heads = stats.head_table();
  ASSERT_EQ(heads.rows().size(), 16u);
  for (const auto& r : heads.rows()) EXPECT_EQ(r[5], r[1] == "key" ? "4" : "0") << r[1] << " head " << r[3];
  test::TempDir dir;
  stats.write(dir.path().string());
  std::string csv = test::read_bytes(dir.file("kv_channel_stats.csv"));
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 2 * 8 * 128);
  auto hist = SafetensorsCheckpoint::open(dir.file("kv_histograms.safetensors"));
  at::Tensor counts = hist.tensor("layer0.key.visual.counts");
  EXPECT_EQ(counts.sizes(), (std::vector<int64_t>{8, 64}));
  EXPECT_EQ(counts.sum().item<int64_t>(), 8 * 64 * 128);  // every entry lands in a bin
  EXPECT_EQ(hist.tensor("layer0.value.visual.edges").sizes(), (std::vector<int64_t>{8, 65}));
}

TEST(QuantError, ZeroForLosslessAndOrderedByBits) {
  SyntheticKVShape shape;
  shape.visual = 96;
  QuantErrorInput in = make_synthetic_kv(shape, 2);
  KVCacheConfig lossless{make_quantizer("fp16", KVRole::Key), make_quantizer("fp16", KVRole::Value), SegmentSet{}};
  QuantErrorResult r = quant_error(in, lossless);
  EXPECT_EQ(r.key_rel, 0.0);
  EXPECT_EQ(r.output_rel, 0.0);
  EXPECT_NEAR(r.kl, 0.0, 1e-9);
  EXPECT_EQ(r.quantized_bytes, r.quantized_fp16_bytes);
  double previous = INFINITY;
  for (int bits : {1, 2, 4, 8}) {
    std::string spec = fmt::format("post_scaled:bits={}", bits);
    KVCacheConfig cfg{make_quantizer(spec, KVRole::Key), make_quantizer(spec, KVRole::Value), SegmentSet{}};
    QuantErrorResult q = quant_error(in, cfg);
    EXPECT_LT(q.kl, previous) << bits;
    EXPECT_GT(q.key_rel, 0.0);
    previous = q.kl;
  }
}

TEST(QuantError, OneBitCalibQuantBeatsPlainOneBitOnOutlierKeys) {
  // The paper's claim in miniature: clipping plus calibration keep the attention
  // distribution far closer than plain per-channel 1-bit codes.
  SyntheticKVShape shape;
  shape.visual = 256;
  QuantErrorInput in = make_synthetic_kv(shape, 3);
  auto run = [&](const std::string& spec) {
    return quant_error(in, {make_quantizer(spec, KVRole::Key), make_quantizer(spec, KVRole::Value), SegmentSet{}});
  };
  QuantErrorResult calib = run("calibquant:bits=1"), plain = run("post_scaled:bits=1");
  EXPECT_LT(calib.kl, plain.kl);
  EXPECT_LT(calib.key_rel, plain.key_rel);
  EXPECT_EQ(calib.quantized_bytes, plain.quantized_bytes);
}

TEST(Table, WritesMarkdownCsvLatexAndJson) {
  Table t({"method", "bits", "note"});
  t.add_row({"calib_quant", "1", "a, \"b\""});
  t.add_row({"fp16", "16", "x"});
  EXPECT_EQ(t.csv(), "method,bits,note\ncalib_quant,1,\"a, \"\"b\"\"\"\nfp16,16,x\n");
  EXPECT_NE(t.markdown().find("| calib_quant | 1    | a, \"b\" |"), std::string::npos) << t.markdown();
  EXPECT_NE(t.latex().find("calib\\_quant & 1"), std::string::npos);
  EXPECT_EQ(t.json()[1]["bits"], 16.0);
  EXPECT_EQ(t.json()[0]["method"], "calib_quant");
  EXPECT_THROW(t.add_row({"only one"}), Error);
  EXPECT_EQ(cell(INFINITY), "inf");
}

}  // namespace
}  // namespace calibq
