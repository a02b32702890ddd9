// Model parity with transformers on the tiny random-weight fixtures made by
// scripts/fixtures/make_model_fixtures.py (transformers 5.17), on CPU in float32.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "core/io/safetensors.h"
#include "core/models/model.h"
#include "core/quant/registry.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

std::string fixture(const std::string& name) { return std::string(CALIBQ_TEST_DATA) + "/models/" + name; }

ModelInputs inputs_of(const std::string& dir) {
  auto ck = SafetensorsCheckpoint::open(dir + "/inputs.safetensors");
  ModelInputs in;
  in.input_ids = ck.tensor("input_ids").clone();
  in.attention_mask = ck.tensor("attention_mask").clone();
  in.pixel_values = ck.tensor("pixel_values").clone();
  if (ck.contains("image_grid_thw")) in.image_grid_thw = ck.tensor("image_grid_thw").clone();
  return in;
}

class ModelParity : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelParity, LogitsAndGreedyTokensEqualTransformers) {
  const std::string dir = fixture(GetParam());
  auto model = load_model(dir);
  EXPECT_NE(model->load_report().find(" tensors loaded, "), std::string::npos);
  ModelInputs in = inputs_of(dir);
  auto ref = SafetensorsCheckpoint::open(dir + "/reference.safetensors");
  at::Tensor want = ref.tensor("logits");
  at::Tensor got = model->forward_logits(in);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-4) << "max |logit difference|";
  at::Tensor gen = model->generate_greedy(in, 6, {nullptr, nullptr, SegmentSet{}});
  EXPECT_TRUE(at::equal(gen, ref.tensor("generated"))) << gen << "\nwant\n" << ref.tensor("generated");
  if (ref.contains("position_ids")) {  // Qwen2-VL: get_rope_index's M-RoPE positions
    const at::Tensor pos = model->forward_positions(in).cpu();
    EXPECT_TRUE(at::equal(pos, ref.tensor("position_ids"))) << pos << "\nwant\n" << ref.tensor("position_ids");
  }
}

INSTANTIATE_TEST_SUITE_P(Llava, ModelParity,
                         ::testing::Values("llava-gqa", "llava-full-tied", "llava-llama3-rope", "llava-linear-rope"));
// InternVL (transformers layout): InternViT + pixel shuffle + projector + Qwen2 decoder.
INSTANTIATE_TEST_SUITE_P(InternVL, ModelParity,
                         ::testing::Values("internvl-layernorm", "internvl-rmsnorm-qknorm", "internvl-original-internlm2",
                                           "internvl-original-long"));
// Qwen2-VL: its vision tower (2D RoPE, per-frame attention, merger) and M-RoPE; a 4x6 grid,
// two frames, and a sample with a masked token between its image and its text.
INSTANTIATE_TEST_SUITE_P(Qwen2VL, ModelParity, ::testing::Values("qwen2vl-gqa", "qwen2vl-tied-frames", "qwen2vl-padded"));

TEST(Qwen2VL, KVQuantizersRunInEveryLayerOverTheImageTokens) {
  const std::string dir = fixture("qwen2vl-gqa");
  auto model = load_model(dir);
  EXPECT_NE(model->load_report().find("qwen2_vl: "), std::string::npos) << model->load_report();
  ModelInputs in = inputs_of(dir);
  at::Tensor plain = model->generate_greedy(in, 4, {nullptr, nullptr, SegmentSet{}});
  // The visual segment is where the image tokens are: after 4 system tokens and <|vision_start|>.
  const auto [system_len, visual_len] = model->observe_prefill(in, {});
  EXPECT_EQ(system_len, 5);
  EXPECT_EQ(visual_len, 6);
  KVCacheConfig kv{make_quantizer("calibquant:bits=1", KVRole::Key), make_quantizer("calibquant:bits=1", KVRole::Value),
                   SegmentSet{}};
  at::Tensor q = model->generate_greedy(in, 4, kv);
  EXPECT_EQ(q.sizes(), plain.sizes());
  EXPECT_TRUE(at::equal(q.narrow(1, 0, in.input_ids.size(1)), in.input_ids));
}

TEST(Qwen2VL, MissingAndMisshapenTensorsNameKeyAndFamily) {
  test::TempDir dir;
  const std::string src = fixture("qwen2vl-gqa");
  std::filesystem::copy_file(src + "/config.json", dir.file("config.json"));
  const NamedTensors tensors = read_safetensors(src + "/model.safetensors");
  auto write = [&](const std::string& drop, const std::string& shrink) {
    NamedTensors t;
    for (auto [name, x] : tensors) {
      if (name == drop) continue;
      if (name == shrink) x = x.narrow(0, 0, x.size(0) - 1);
      t.emplace_back(name, x);
    }
    write_safetensors(dir.file("model.safetensors"), t);
  };
  write("visual.blocks.1.attn.qkv.weight", "");
  test::expect_error([&] { load_model(dir.path().string()); },
                     {"qwen2_vl: tensor 'visual.blocks.1.attn.qkv.weight' is missing"});
  write("", "visual.merger.mlp.2.weight");
  test::expect_error([&] { load_model(dir.path().string()); },
                     {"model.safetensors", "tensor 'visual.merger.mlp.2.weight' has shape [63, 128]", "implies [64, 128]"});
}

TEST(Qwen2VL, BadGridsAreOneClearError) {
  const std::string dir = fixture("qwen2vl-gqa");
  auto model = load_model(dir);
  ModelInputs in = inputs_of(dir);
  ModelInputs no_grid = in;
  no_grid.image_grid_thw = at::Tensor();
  test::expect_error([&] { model->forward_logits(no_grid); }, {"qwen2_vl: pixel_values need image_grid_thw"});
  ModelInputs wrong = in;
  wrong.image_grid_thw = in.image_grid_thw.clone();
  wrong.image_grid_thw[1][2] = 8;  // 4 x 8 patches: more than pixel_values holds
  test::expect_error([&] { model->forward_logits(wrong); }, {"pixel_values has 48 patches, image_grid_thw describes 56"});
}

TEST(LlavaGeneration, AnyQuantizerRunsInEveryLayerAndLosslessOnesChangeNothing) {
  const std::string dir = fixture("llava-gqa");
  auto model = load_model(dir);
  ModelInputs in = inputs_of(dir);
  at::Tensor plain = model->generate_greedy(in, 4, {nullptr, nullptr, SegmentSet{}});
  KVCacheConfig fp32{make_quantizer("fp32", KVRole::Key), make_quantizer("fp32", KVRole::Value), SegmentSet::parse("all")};
  EXPECT_TRUE(at::equal(model->generate_greedy(in, 4, fp32), plain));
  for (const std::string spec : {"calibquant:bits=1", "kivi:bits=2,residual=4,group_size=4", "group:bits=4"}) {
    KVCacheConfig kv{make_quantizer(spec, KVRole::Key), make_quantizer(spec, KVRole::Value), SegmentSet{}};
    at::Tensor out = model->generate_greedy(in, 4, kv);
    EXPECT_EQ(out.sizes(), plain.sizes()) << spec;
    EXPECT_TRUE(at::equal(out.narrow(1, 0, in.input_ids.size(1)), in.input_ids)) << spec;
  }
}

// A model split by layers across devices: with two GPUs the layers sit on cuda:0 and cuda:1;
// with one, on cuda:0 and the CPU (hidden states, RoPE tables and masks cross devices at the
// layer boundary as they do between GPUs); without CUDA a split over {cpu, cpu} runs the same
// code path without transfers. Always: the reference's logits and greedy tokens, padding included.
TEST(ModelSplit, LayersAcrossDevicesGiveTheReferenceLogitsAndTokens) {
  const int64_t gpus = at::hasCUDA() ? static_cast<int64_t>(at::getNumGPUs()) : 0;
  const std::vector<at::Device> devices =
      gpus >= 2   ? std::vector<at::Device>{at::Device(at::kCUDA, 0), at::Device(at::kCUDA, 1)}
      : gpus == 1 ? std::vector<at::Device>{at::Device(at::kCUDA, 0), at::kCPU}
                  : std::vector<at::Device>{at::kCPU, at::kCPU};
  for (const std::string name : {"llava-gqa", "internvl-original-internlm2", "qwen2vl-padded", "llava-full-tied"}) {
    const std::string dir = fixture(name);
    auto model = load_model(dir, at::kFloat, devices);
    ModelInputs in = inputs_of(dir);
    auto ref = SafetensorsCheckpoint::open(dir + "/reference.safetensors");
    EXPECT_LT((model->forward_logits(in).cpu() - ref.tensor("logits")).abs().max().item<double>(), 1e-4) << name;
    EXPECT_TRUE(at::equal(model->generate_greedy(in, 6, {nullptr, nullptr, SegmentSet{}}).cpu(), ref.tensor("generated")))
        << name;
    KVCacheConfig kv{make_quantizer("calibquant:bits=1", KVRole::Key), make_quantizer("calibquant:bits=1", KVRole::Value),
                     SegmentSet{}};
    EXPECT_EQ(model->generate_greedy(in, 3, kv).size(1), in.input_ids.size(1) + 3) << name;
  }
  test::expect_error([&] { load_model(fixture("llava-gqa"), at::kFloat, std::vector<at::Device>(3, at::kCPU)); },
                     {"3 devices for 2 decoder layers"});
}

TEST(ModelGeneration, ImageTokensOutOfOneRunAreOneClearError) {
  // Forward takes image tokens anywhere (as transformers does); generate's KV cache needs them in
  // one run, so text between them is refused rather than quantized as visual.
  const std::string dir = fixture("llava-gqa");
  auto model = load_model(dir);
  ModelInputs in = inputs_of(dir);
  const int64_t image = 319, last = in.input_ids.size(1) - 4;  // the last image token
  ASSERT_EQ(in.input_ids[0][last].item<int64_t>(), image);
  ASSERT_NE(in.input_ids[0][last + 1].item<int64_t>(), image);
  in.input_ids.select(1, last + 1).fill_(image);
  in.input_ids.select(1, last).fill_(20);
  EXPECT_EQ(model->forward_logits(in).size(1), in.input_ids.size(1));
  test::expect_error([&] { model->generate_greedy(in, 2, {nullptr, nullptr, SegmentSet{}}); },
                     {"image tokens of a sample must form one run"});
}

TEST(ModelLoader, MissingExtraAndMisshapenTensorsAreErrors) {
  test::TempDir dir;
  const std::string src = fixture("llava-gqa");
  std::filesystem::copy_file(src + "/config.json", dir.file("config.json"));
  NamedTensors tensors = read_safetensors(src + "/model.safetensors");
  auto write_without = [&](const std::string& drop, const std::string& reshape, bool extra) {
    NamedTensors t;
    for (auto [name, x] : tensors) {
      if (name == drop) continue;
      if (name == reshape) x = x.narrow(0, 0, x.size(0) - 1);
      t.emplace_back(name, x);
    }
    if (extra) t.emplace_back("language_model.model.layers.9.mlp.up_proj.weight", at::zeros({2, 2}));
    write_safetensors(dir.file("model.safetensors"), t);
  };
  write_without("language_model.model.layers.1.self_attn.k_proj.weight", "", false);
  test::expect_error([&] { load_model(dir.path().string()); },
                     {"llava: tensor 'language_model.model.layers.1.self_attn.k_proj.weight' is missing"});
  write_without("", "multi_modal_projector.linear_1.weight", false);
  test::expect_error([&] { load_model(dir.path().string()); },
                     {"model.safetensors", "tensor 'multi_modal_projector.linear_1.weight' has shape [63, 32]", "implies [64, 32]"});
  write_without("", "", true);
  test::expect_error([&] { load_model(dir.path().string()); },
                     {"model.safetensors", "'language_model.model.layers.9.mlp.up_proj.weight' is not part of the llava"});
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

TEST(Cli, LogitsWritesLogitsAndGreedyTokens) {
  test::TempDir dir;
  const std::string m = fixture("llava-full-tied");
  auto r = test::run_calibq("logits --model " + m + " --inputs " + m + "/inputs.safetensors --out " + dir.file("out.safetensors") +
                            " --generate 6");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("llava: "), std::string::npos) << "the load report";
  auto out = SafetensorsCheckpoint::open(dir.file("out.safetensors"));
  auto ref = SafetensorsCheckpoint::open(m + "/reference.safetensors");
  EXPECT_LT((out.tensor("logits") - ref.tensor("logits")).abs().max().item<double>(), 1e-4);
  EXPECT_TRUE(at::equal(out.tensor("generated"), ref.tensor("generated")));
  r = test::run_calibq("logits --model " + m + " --inputs " + m + "/inputs.safetensors --out " + dir.file("q.safetensors") +
                       " --generate 2 --kv calibquant:bits=1 --kv-segments all");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_calibq("logits --model " + m + " --inputs " + m + "/inputs.safetensors --out " + dir.file("x.safetensors") +
                       " --kv calibquant:bitz=1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--kv-key: quantizer 'calibquant' has no option 'bitz'"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.safetensors")));
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

TEST(ModelPadding, APaddedTokenChangesNothingElse) {
  // Row 1 with its first token masked out (as left padding is) must give, on its other
  // tokens, the logits of the same row without that token: RoPE scores depend on position
  // differences only, and masked keys get no weight. With a -inf mask the padded query row
  // would be NaN and spread through its K/V.
  const std::string dir = fixture("llava-gqa");
  auto model = load_model(dir);
  ModelInputs in = inputs_of(dir);
  in.attention_mask = at::ones_like(in.input_ids);
  in.attention_mask[1][0] = 0;
  at::Tensor padded = model->forward_logits(in);
  EXPECT_TRUE(at::isfinite(padded).all().item<bool>());
  ModelInputs alone;
  alone.input_ids = in.input_ids.narrow(0, 1, 1).narrow(1, 1, in.input_ids.size(1) - 1).contiguous();
  alone.pixel_values = in.pixel_values.narrow(0, 1, 1).contiguous();
  at::Tensor want = model->forward_logits(alone);
  at::Tensor got = padded.narrow(0, 1, 1).narrow(1, 1, padded.size(1) - 1);
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-4);
  // Row 0 is untouched by its neighbour's padding.
  EXPECT_LT((padded[0] - model->forward_logits(inputs_of(dir))[0]).abs().max().item<double>(), 1e-5);
}

}  // namespace
}  // namespace calibq

namespace calibq {
namespace {

TEST(ModelDtypes, Bf16OnCpuIsCloseAndFp16IsRunOrRefusedClearly) {
  const std::string dir = fixture("llava-gqa");
  auto ref = SafetensorsCheckpoint::open(dir + "/reference.safetensors").tensor("logits");
  at::Tensor bf16 = load_model(dir, at::kBFloat16)->forward_logits(inputs_of(dir));
  EXPECT_LT((bf16 - ref).abs().max().item<double>(), 0.1) << "bf16 keeps 8 mantissa bits";
  try {
    at::Tensor fp16 = load_model(dir, at::kHalf)->forward_logits(inputs_of(dir));
    EXPECT_LT((fp16 - ref).abs().max().item<double>(), 0.02);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("float16 on the CPU needs kernels this LibTorch"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace calibq
