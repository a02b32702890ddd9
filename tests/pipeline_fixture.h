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

  nlohmann::json ref;
  std::unique_ptr<MultimodalModel> model;
  std::unique_ptr<ModelProcessor> proc;
  std::deque<RgbImage> images;
  std::vector<ProcessedSample> samples;
};

}  // namespace calibq::test
