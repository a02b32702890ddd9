// scenes: the synthetic scene sets of the demo model (datasets/scenes.h).
#include <cstdio>
#include <memory>

#include "datasets/scenes.h"
#include "experiments/cli/commands.h"

namespace calibq::cli {

void add_data_commands(CLI::App& app) {
  auto spec = std::make_shared<scenes::SceneSetSpec>();
  auto out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "scenes", "Write a synthetic scene set (images, COCO captions, VQAv2 questions and answers) for the demo model");
  cmd->add_option("--split", spec->split, "train | val | test: each split draws its own scenes")->capture_default_str();
  cmd->add_option("--count", spec->count, "number of images")->capture_default_str();
  cmd->add_option("--seed", spec->seed, "added to the split's seed")->capture_default_str();
  cmd->add_option("--size", spec->size, "image side in pixels")->capture_default_str();
  cmd->add_option("--questions", spec->questions_per_image, "questions kept per image")->capture_default_str();
  cmd->add_option("--out", *out, "output folder")->required();
  cmd->callback([spec, out] {
    const int64_t q = scenes::write_scene_set(*spec, *out);
    std::printf("%s: %lld %s scenes (%lldx%lld), %lld questions\n", out->c_str(), static_cast<long long>(spec->count),
                spec->split.c_str(), static_cast<long long>(spec->size), static_cast<long long>(spec->size),
                static_cast<long long>(q));
  });
}

}  // namespace calibq::cli
