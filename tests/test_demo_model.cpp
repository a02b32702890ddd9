// The trained demo model (models/calibq-demo-llava, scripts/demo_model/train_demo_model.py)
// through calibq's ordinary LLaVA path, against transformers' fp32 CPU outputs on
// test-split scenes (tests/data/models/calibq-demo-parity, written by the same script).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <deque>

#include "core/io/json_file.h"
#include "core/io/safetensors.h"
#include "core/models/model.h"
#include "core/models/processor.h"
#include "datasets/images.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

const std::string kModel = std::string(CALIBQ_SOURCE_DIR) + "/models/calibq-demo-llava";
const std::string kParity = std::string(CALIBQ_TEST_DATA) + "/models/calibq-demo-parity";
const std::string kImages = std::string(CALIBQ_SOURCE_DIR) + "/datasets/demo/scenes/images/";

TEST(DemoModel, LogitsTokensTextAndInputsEqualTransformers) {
  if (!images_supported()) GTEST_SKIP() << "built without OpenCV";
  const nlohmann::json ref = read_json_file(kParity + "/parity_reference.json");
  auto tensors = SafetensorsCheckpoint::open(kParity + "/parity.safetensors");
  auto model = load_model(kModel);  // fp16 weights, run in fp32 as the reference was
  EXPECT_EQ(model->config().family, ModelFamily::Llava);
  ModelProcessor proc = ModelProcessor::load(kModel, model->config());
  ASSERT_GE(ref["cases"].size(), 6u);
  for (size_t i = 0; i < ref["cases"].size(); ++i) {
    const auto& c = ref["cases"][i];
    const RgbImage image = read_rgb_image(kImages + c["image"].get<std::string>());
    ProcessedSample s = proc.process(&image, c["prompt"].get<std::string>());
    EXPECT_EQ(s.chat_text, c["chat_text"].get<std::string>());
    ASSERT_EQ(s.ids, c["input_ids"].get<std::vector<int64_t>>()) << i;
    at::Tensor px = tensors.tensor("pixel_values." + std::to_string(i));
    EXPECT_LE((s.pixel_values - px).abs().max().item<double>(), 1e-5) << i;
    ModelInputs in = proc.collate({s});
    // Greedy until </s>, as transformers' generate stops.
    std::vector<int64_t> gen = c["generated"].get<std::vector<int64_t>>();
    GenerationConfig g;
    g.max_new_tokens = 40;
    g.stop_ids = proc.stop_ids();
    GenerationResult r = model->generate(in, g, {nullptr, nullptr, SegmentSet{}});
    ASSERT_TRUE(c["stopped"].get<bool>());
    EXPECT_TRUE(r.stopped[0]);
    EXPECT_EQ(proc.decode(r.tokens[0]), c["text"].get<std::string>());
    std::vector<int64_t> answer(gen.begin(), gen.end() - 1);  // the stop token is not in calibq's tokens
    EXPECT_EQ(r.tokens[0], answer) << "case " << i;
    // The logits of prompt + answer + </s> in one forward: prompt and decode positions.
    std::vector<int64_t> all = s.ids;
    all.insert(all.end(), gen.begin(), gen.end());
    ModelInputs full{at::tensor(all, at::kLong).unsqueeze(0), at::Tensor(), in.pixel_values, at::Tensor()};
    at::Tensor want = tensors.tensor("logits." + std::to_string(i));
    at::Tensor got = model->forward_logits(full)[0];
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-4) << "case " << i;
  }
}

}  // namespace
}  // namespace calibq
