// A pipeline fixture folder (pipeline_reference.json written by scripts/fixtures/make_*pipeline_fixtures.py):
// its model, its processor, and each case's photograph processed with its prompt.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "core/io/json_file.h"
#include "core/io/safetensors.h"
#include "core/models/model.h"
#include "core/models/processor.h"
#include "datasets/images.h"

namespace calibq::test {

struct PipelineFixture {
  // Returns false (the caller skips) in builds without OpenCV.
  bool load(const std::string& dir, const std::string& images_dir) {
    if (!images_supported()) return false;
    ref = read_json_file(dir + "/pipeline_reference.json");
    model = load_model(dir);
    proc = std::make_unique<ModelProcessor>(ModelProcessor::load(dir, model->config()));
    for (const auto& c : ref["cases"])
      samples.push_back(proc->process(&images.emplace_back(read_rgb_image(images_dir + c["image"].get<std::string>())),
                                      c["prompt"].get<std::string>()));
    return true;
  }
  std::vector<int64_t> want(size_t i) const { return ref["cases"][i]["generated"].get<std::vector<int64_t>>(); }
  // Case i against the reference: chat text, ids, pixels within 1e-5 of `pixels`' tensor
  // "pixel_values.i", then greedy tokens of the sample alone (and its decoded text where the
  // reference has one).
  void expect_case(size_t i, const SafetensorsCheckpoint& pixels, const GenerationConfig& g) const {
    const auto& c = ref["cases"][i];
    EXPECT_EQ(samples[i].chat_text, c["chat_text"].get<std::string>());
    EXPECT_EQ(samples[i].ids, c["input_ids"].get<std::vector<int64_t>>()) << c["image"];
    const at::Tensor want_px = pixels.tensor("pixel_values." + std::to_string(i));
    ASSERT_EQ(samples[i].pixel_values.sizes(), want_px.sizes()) << c["image"];
    EXPECT_LE((samples[i].pixel_values - want_px).abs().max().item<double>(), 1e-5) << c["image"];
    GenerationResult r = model->generate(proc->collate({samples[i]}), g, {nullptr, nullptr, SegmentSet{}});
    EXPECT_EQ(r.tokens[0], want(i)) << c["image"];
    if (c.contains("text")) {
      EXPECT_EQ(proc->decode(r.tokens[0]), c["text"].get<std::string>());
    }
  }

  nlohmann::json ref;
  std::unique_ptr<MultimodalModel> model;
  std::unique_ptr<ModelProcessor> proc;
  std::deque<RgbImage> images;
  std::vector<ProcessedSample> samples;
};

}  // namespace calibq::test
