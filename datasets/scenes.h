// Synthetic scenes for the demo model (issue #11): shapes in named colours, sizes and
// positions on plain or textured backgrounds, some with a digit or a short word drawn in;
// for each image several reference captions from a small grammar and VQA questions with
// answers. Everything is a function of (split, seed, index), drawn with OpenCV's integer
// rasterizer, so a set is identical on every machine with the same OpenCV.
//
// A set is written in the formats the real loaders read, so the demo goes through the same
// code as COCO and VQAv2: captions.json (COCO captions), vqa_questions.json +
// vqa_annotations.json (VQAv2, ten identical answers per question), and scenes.jsonl (the
// ground truth of every scene, for training scripts and analysis).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/vision/image_processor.h"

namespace calibq::scenes {

enum class Shape { Circle, Square, Triangle, Star, Diamond };
enum class Colour { Red, Green, Blue, Yellow, Purple, Orange, White, Black };
enum class Background { White, Gray, Black, Striped, Checkered, Dotted };
// The cells of a 3x3 grid, in reading order.
enum class Cell { TopLeft, Top, TopRight, Left, Center, Right, BottomLeft, Bottom, BottomRight };

const char* shape_name(Shape s);
const char* colour_name(Colour c);
const char* background_name(Background b);
const char* cell_name(Cell c);  // "top left", "center", ...

struct SceneObject {
  Shape shape = Shape::Circle;
  Colour colour = Colour::Red;
  bool large = false;
  Cell cell = Cell::Center;
};

struct QuestionAnswer {
  std::string type;  // colour | shape | count | position | text | exists
  std::string question, answer;
};

struct Scene {
  int64_t index = 0;
  Background background = Background::Gray;
  std::vector<SceneObject> objects;  // in reading order of their cells
  std::string text;                  // a digit or a short word, or empty
  Cell text_cell = Cell::Center;
  std::vector<std::string> captions;      // distinct phrasings of the same content
  std::vector<QuestionAnswer> questions;  // every question the scene answers
};

// The scene of (seed, index): the same on every platform (mt19937_64 and integer draws only).
Scene make_scene(uint64_t seed, int64_t index);
// Its picture, size x size RGB.
RgbImage render_scene(const Scene& scene, int64_t size);

struct SceneSetSpec {
  std::string split = "test";  // train | val | test: each has its own stream of scenes
  int64_t count = 100;
  uint64_t seed = 0;           // added to the split's own seed
  int64_t size = 96;
  int64_t questions_per_image = 1;  // drawn (seeded) from the scene's questions
};
// The base seed of a split; throws naming the split and the valid ones.
uint64_t split_seed(const std::string& split);

// Writes images/<split>_<index>.png, captions.json, vqa_questions.json, vqa_annotations.json
// and scenes.jsonl into dir (each file atomically). Returns the number of questions.
int64_t write_scene_set(const SceneSetSpec& spec, const std::string& dir);

}  // namespace calibq::scenes
