#include "datasets/scenes.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "core/io/atomic_file.h"
#include "core/util/error.h"
#include "datasets/images.h"

#ifdef CALIBQ_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace calibq::scenes {
namespace fs = std::filesystem;
using json = nlohmann::json;

const char* shape_name(Shape s) {
  switch (s) {
    case Shape::Circle: return "circle";
    case Shape::Square: return "square";
    case Shape::Triangle: return "triangle";
    case Shape::Star: return "star";
    case Shape::Diamond: return "diamond";
  }
  return "?";
}

const char* colour_name(Colour c) {
  switch (c) {
    case Colour::Red: return "red";
    case Colour::Green: return "green";
    case Colour::Blue: return "blue";
    case Colour::Yellow: return "yellow";
    case Colour::Purple: return "purple";
    case Colour::Orange: return "orange";
    case Colour::White: return "white";
    case Colour::Black: return "black";
  }
  return "?";
}

const char* background_name(Background b) {
  switch (b) {
    case Background::White: return "white";
    case Background::Gray: return "gray";
    case Background::Black: return "black";
    case Background::Striped: return "striped";
    case Background::Checkered: return "checkered";
    case Background::Dotted: return "dotted";
  }
  return "?";
}

const char* cell_name(Cell c) {
  switch (c) {
    case Cell::TopLeft: return "top left";
    case Cell::Top: return "top";
    case Cell::TopRight: return "top right";
    case Cell::Left: return "left";
    case Cell::Center: return "center";
    case Cell::Right: return "right";
    case Cell::BottomLeft: return "bottom left";
    case Cell::Bottom: return "bottom";
    case Cell::BottomRight: return "bottom right";
  }
  return "?";
}

namespace {

constexpr int kShapes = 5, kColours = 8, kBackgrounds = 6, kCells = 9;
const std::array<const char*, 6> kWords{"cat", "sun", "box", "car", "dog", "hat"};
const std::array<const char*, 4> kCountWords{"zero", "one", "two", "three"};

std::array<uint8_t, 3> rgb_of(Colour c) {
  switch (c) {
    case Colour::Red: return {220, 40, 40};
    case Colour::Green: return {40, 170, 60};
    case Colour::Blue: return {40, 80, 220};
    case Colour::Yellow: return {235, 210, 40};
    case Colour::Purple: return {140, 60, 180};
    case Colour::Orange: return {245, 140, 30};
    case Colour::White: return {245, 245, 245};
    case Colour::Black: return {20, 20, 20};
  }
  return {0, 0, 0};
}

bool dark(Background b) { return b == Background::Black; }

// Integer draws straight from the engine: std::uniform_int_distribution differs between
// standard libraries, mt19937_64's output does not.
struct Draw {
  std::mt19937_64 rng;
  int64_t below(int64_t n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); }
  bool chance(int percent) { return below(100) < percent; }
};

std::string with_article(const std::string& phrase) {
  const char c = phrase.empty() ? 'x' : phrase[0];
  return (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' ? "an " : "a ") + phrase;
}

std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  return out;
}

// "in the top left", "at the top", "on the left", "in the center", ...
std::string where(Cell c) {
  switch (c) {
    case Cell::Top: return "at the top";
    case Cell::Bottom: return "at the bottom";
    case Cell::Left: return "on the left";
    case Cell::Right: return "on the right";
    case Cell::TopLeft:
    case Cell::TopRight:
    case Cell::Center:
    case Cell::BottomLeft:
    case Cell::BottomRight: return std::string("in the ") + cell_name(c);
  }
  return "";
}

bool is_digit_text(const std::string& t) { return t.size() == 1 && t[0] >= '0' && t[0] <= '9'; }

std::string object_phrase(const SceneObject& o, bool size) {
  return with_article(std::string(size ? (o.large ? "large " : "small ") : "") + colour_name(o.colour) + " " +
                      shape_name(o.shape));
}

std::vector<std::string> make_captions(const Scene& s) {
  std::vector<std::string> plain, sized, placed;
  for (const auto& o : s.objects) {
    plain.push_back(object_phrase(o, false));
    sized.push_back(object_phrase(o, true));
    placed.push_back(object_phrase(o, false) + " " + where(o.cell));
  }
  const std::string bg = with_article(std::string(background_name(s.background)) + " background");
  std::string text, text_placed;
  if (!s.text.empty()) {
    text = is_digit_text(s.text) ? "the digit " + s.text : "the word " + s.text;
    text_placed = text + " " + where(s.text_cell);
  }
  const size_t n = s.objects.size();
  std::vector<std::string> caps;
  caps.push_back(join_list(plain) + " on " + bg + (text.empty() ? "" : " with " + text));
  std::vector<std::string> sized_all = sized;
  if (!text.empty()) sized_all.push_back(text);
  caps.push_back(join_list(sized_all));
  std::vector<std::string> placed_all = placed;
  if (!text.empty()) placed_all.push_back(text_placed);
  caps.push_back(join_list(placed_all));
  caps.push_back(std::string(kCountWords[n]) + (n == 1 ? " shape" : " shapes") + " on " + bg + ", " + join_list(plain) +
                 (text.empty() ? "" : " and " + text));
  caps.push_back("a picture of " + join_list(plain) + (text.empty() ? "" : " and " + text));
  return caps;
}

std::vector<QuestionAnswer> make_questions(const Scene& s, Draw& d) {
  std::map<Shape, int> shapes;
  std::map<Colour, int> colours;
  std::map<std::pair<Colour, Shape>, int> pairs;
  for (const auto& o : s.objects) {
    ++shapes[o.shape];
    ++colours[o.colour];
    ++pairs[{o.colour, o.shape}];
  }
  std::vector<QuestionAnswer> qs;
  for (const auto& o : s.objects) {
    const std::string sh = shape_name(o.shape), co = colour_name(o.colour);
    if (shapes[o.shape] == 1) qs.push_back({"colour", "what color is the " + sh + "?", co});
    if (colours[o.colour] == 1) qs.push_back({"shape", "what shape is the " + co + " object?", sh});
    if (pairs[{o.colour, o.shape}] == 1) {
      qs.push_back({"position", "where is the " + co + " " + sh + "?", cell_name(o.cell)});
      qs.push_back({"size", "is the " + co + " " + sh + " large or small?", o.large ? "large" : "small"});
    }
  }
  qs.push_back({"count", "how many shapes are there?", std::to_string(s.objects.size())});
  if (!s.text.empty())
    qs.push_back(is_digit_text(s.text) ? QuestionAnswer{"text", "what digit is shown?", s.text}
                                       : QuestionAnswer{"text", "what word is written?", s.text});
  const SceneObject& present = s.objects[static_cast<size_t>(d.below(static_cast<int64_t>(s.objects.size())))];
  qs.push_back({"exists", "is there " + object_phrase(present, false) + "?", "yes"});
  for (int tries = 0; tries < 50; ++tries) {
    const auto c = static_cast<Colour>(d.below(kColours));
    const auto sh = static_cast<Shape>(d.below(kShapes));
    if (pairs.count({c, sh})) continue;
    qs.push_back({"exists", "is there " + with_article(std::string(colour_name(c)) + " " + shape_name(sh)) + "?", "no"});
    break;
  }
  return qs;
}

}  // namespace

Scene make_scene(uint64_t seed, int64_t index) {
  Draw d{std::mt19937_64(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull + 1)};
  Scene s;
  s.index = index;
  s.background = static_cast<Background>(d.below(kBackgrounds));
  const int64_t n = 1 + d.below(3);
  std::array<int, kCells> cells{0, 1, 2, 3, 4, 5, 6, 7, 8};
  for (int i = kCells - 1; i > 0; --i) std::swap(cells[i], cells[d.below(i + 1)]);
  for (int64_t i = 0; i < n; ++i) {
    SceneObject o;
    o.shape = static_cast<Shape>(d.below(kShapes));
    do o.colour = static_cast<Colour>(d.below(kColours));
    while ((o.colour == Colour::White && (s.background == Background::White)) ||
           (o.colour == Colour::Black && s.background == Background::Black));
    o.large = d.chance(50);
    o.cell = static_cast<Cell>(cells[i]);
    s.objects.push_back(o);
  }
  std::sort(s.objects.begin(), s.objects.end(),
            [](const SceneObject& a, const SceneObject& b) { return a.cell < b.cell; });
  if (d.chance(40)) {
    s.text = d.chance(60) ? std::to_string(d.below(10)) : kWords[d.below(kWords.size())];
    s.text_cell = static_cast<Cell>(cells[n]);
  }
  s.captions = make_captions(s);
  s.questions = make_questions(s, d);
  return s;
}

#ifdef CALIBQ_WITH_OPENCV
namespace {

cv::Scalar scalar(const std::array<uint8_t, 3>& c) { return cv::Scalar(c[0], c[1], c[2]); }
cv::Scalar grey(int v) { return cv::Scalar(v, v, v); }

void draw_background(cv::Mat& img, Background b, int64_t size) {
  const int step = static_cast<int>(std::max<int64_t>(4, size / 12));
  switch (b) {
    case Background::White: img.setTo(grey(245)); return;
    case Background::Gray: img.setTo(grey(128)); return;
    case Background::Black: img.setTo(grey(25)); return;
    case Background::Striped:
      img.setTo(grey(205));
      for (int y = 0; y < img.rows; y += 2 * step) cv::rectangle(img, {0, y}, {img.cols - 1, y + step - 1}, grey(160), cv::FILLED);
      return;
    case Background::Checkered:
      img.setTo(grey(210));
      for (int y = 0; y < img.rows; y += step)
        for (int x = (y / step) % 2 * step; x < img.cols; x += 2 * step)
          cv::rectangle(img, {x, y}, {x + step - 1, y + step - 1}, grey(165), cv::FILLED);
      return;
    case Background::Dotted:
      img.setTo(grey(220));
      for (int y = step / 2; y < img.rows; y += step)
        for (int x = step / 2; x < img.cols; x += step) cv::circle(img, {x, y}, std::max(1, step / 5), grey(150), cv::FILLED);
      return;
  }
}

cv::Point cell_centre(Cell c, int64_t size) {
  const int64_t k = static_cast<int64_t>(c), third = size / 3;
  return {static_cast<int>((k % 3) * third + third / 2), static_cast<int>((k / 3) * third + third / 2)};
}

void draw_shape(cv::Mat& img, const SceneObject& o, int64_t size) {
  const cv::Point c = cell_centre(o.cell, size);
  const double r = (o.large ? 13.0 : 8.0) * static_cast<double>(size) / 96.0;
  const cv::Scalar col = scalar(rgb_of(o.colour));
  auto pt = [&](double dx, double dy) { return cv::Point(c.x + static_cast<int>(std::lround(dx)), c.y + static_cast<int>(std::lround(dy))); };
  std::vector<cv::Point> poly;
  switch (o.shape) {
    case Shape::Circle: cv::circle(img, c, static_cast<int>(std::lround(r)), col, cv::FILLED, cv::LINE_AA); return;
    case Shape::Square: poly = {pt(-0.85 * r, -0.85 * r), pt(0.85 * r, -0.85 * r), pt(0.85 * r, 0.85 * r), pt(-0.85 * r, 0.85 * r)}; break;
    case Shape::Triangle: poly = {pt(0, -r), pt(r, 0.8 * r), pt(-r, 0.8 * r)}; break;
    case Shape::Diamond: poly = {pt(0, -r), pt(0.75 * r, 0), pt(0, r), pt(-0.75 * r, 0)}; break;
    case Shape::Star:
      // Unit star corners (outer radius 1, inner 0.45, first point up), written out so that
      // no libm difference can move a vertex.
      static const double kStar[10][2] = {{0, -1},         {0.2645, -0.3641}, {0.9511, -0.3090}, {0.4280, 0.1391},
                                          {0.5878, 0.8090}, {0, 0.45},        {-0.5878, 0.8090}, {-0.4280, 0.1391},
                                          {-0.9511, -0.3090}, {-0.2645, -0.3641}};
      for (const auto& p : kStar) poly.push_back(pt(p[0] * r * 1.1, p[1] * r * 1.1));
      break;
  }
  cv::fillPoly(img, std::vector<std::vector<cv::Point>>{poly}, col, cv::LINE_AA);
}

void draw_text(cv::Mat& img, const Scene& s, int64_t size) {
  const bool digit = is_digit_text(s.text);
  const double scale = (digit ? 0.8 : 0.5) * static_cast<double>(size) / 96.0;
  const int thick = digit ? 2 : 1;
  int base = 0;
  const cv::Size ts = cv::getTextSize(s.text, cv::FONT_HERSHEY_SIMPLEX, scale, thick, &base);
  const cv::Point c = cell_centre(s.text_cell, size);
  cv::putText(img, s.text, {c.x - ts.width / 2, c.y + ts.height / 2}, cv::FONT_HERSHEY_SIMPLEX, scale,
              dark(s.background) ? grey(245) : grey(15), thick, cv::LINE_AA);
}

}  // namespace

RgbImage render_scene(const Scene& scene, int64_t size) {
  if (size < 24 || size > 4096) fail("scene size {} is out of range (24..4096)", size);
  cv::Mat img(static_cast<int>(size), static_cast<int>(size), CV_8UC3);  // drawn as RGB
  draw_background(img, scene.background, size);
  for (const auto& o : scene.objects) draw_shape(img, o, size);
  if (!scene.text.empty()) draw_text(img, scene, size);
  RgbImage out;
  out.width = out.height = size;
  out.pixels.assign(img.data, img.data + img.total() * 3);
  return out;
}
#else
RgbImage render_scene(const Scene&, int64_t) { fail("drawing scenes needs OpenCV, and this build has none"); }
#endif

uint64_t split_seed(const std::string& split) {
  if (split == "train") return 1000003;
  if (split == "val") return 2000003;
  if (split == "test") return 3000017;
  fail("unknown scene split '{}' (valid: train, val, test)", split);
}

int64_t write_scene_set(const SceneSetSpec& spec, const std::string& dir) {
  if (spec.count < 1) fail("scene count must be positive (got {})", spec.count);
  if (spec.questions_per_image < 1) fail("questions per image must be positive (got {})", spec.questions_per_image);
  const uint64_t seed = split_seed(spec.split) + spec.seed;
#ifndef CALIBQ_WITH_OPENCV
  (void)seed;
  fail("writing scenes to {} needs OpenCV, and this build has none", dir);
#else
  const std::string subtype = "scenes_" + spec.split;
  fs::create_directories(fs::path(dir) / "images" / subtype);
  json images = json::array(), caps = json::array(), questions = json::array(), answers = json::array();
  std::string truth;
  for (int64_t i = 0; i < spec.count; ++i) {
    const Scene s = make_scene(seed, i);
    char name[96];
    // The VQAv2 loader's naming (COCO_<subtype>_<12-digit id>), so both loaders find it.
    std::snprintf(name, sizeof name, "%s/COCO_%s_%012lld.png", subtype.c_str(), subtype.c_str(), static_cast<long long>(i));
    const RgbImage img = render_scene(s, spec.size);
    cv::Mat rgb(static_cast<int>(img.height), static_cast<int>(img.width), CV_8UC3, const_cast<uint8_t*>(img.pixels.data())), bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    const fs::path path = fs::path(dir) / "images" / name;
    const fs::path tmp = path.string() + ".tmp.png";
    if (!cv::imwrite(tmp.string(), bgr)) fail("cannot write {}", tmp.string());
    fs::rename(tmp, path);
    images.push_back({{"id", i}, {"file_name", name}, {"width", spec.size}, {"height", spec.size}});
    for (size_t k = 0; k < s.captions.size(); ++k)
      caps.push_back({{"id", i * 10 + static_cast<int64_t>(k)}, {"image_id", i}, {"caption", s.captions[k]}});
    // The questions kept: a seeded draw without repeats from the scene's questions.
    std::vector<size_t> order(s.questions.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    Draw d{std::mt19937_64(seed ^ (static_cast<uint64_t>(i) * 0x2545F4914F6CDD1Dull))};
    for (size_t k = order.size(); k > 1; --k) std::swap(order[k - 1], order[static_cast<size_t>(d.below(static_cast<int64_t>(k)))]);
    order.resize(std::min(order.size(), static_cast<size_t>(spec.questions_per_image)));
    json scene_questions = json::array();
    for (size_t k : order) {
      const QuestionAnswer& qa = s.questions[k];
      const int64_t qid = i * 100 + static_cast<int64_t>(k);
      questions.push_back({{"image_id", i}, {"question", qa.question}, {"question_id", qid}});
      json ans = json::array();
      for (int a = 1; a <= 10; ++a) ans.push_back({{"answer", qa.answer}, {"answer_confidence", "yes"}, {"answer_id", a}});
      const std::string atype = qa.type == "count" ? "number" : qa.type == "exists" || qa.type == "size" ? "yes/no" : "other";
      answers.push_back({{"question_id", qid}, {"image_id", i}, {"question_type", qa.type}, {"answer_type", atype},
                         {"multiple_choice_answer", qa.answer}, {"answers", ans}});
      scene_questions.push_back({{"question_id", qid}, {"type", qa.type}, {"question", qa.question}, {"answer", qa.answer}});
    }
    json objs = json::array();
    for (const auto& o : s.objects)
      objs.push_back({{"shape", shape_name(o.shape)}, {"color", colour_name(o.colour)}, {"large", o.large}, {"cell", cell_name(o.cell)}});
    json all_q = json::array();
    for (const auto& qa : s.questions) all_q.push_back({{"type", qa.type}, {"question", qa.question}, {"answer", qa.answer}});
    truth += json{{"image_id", i}, {"file_name", name}, {"background", background_name(s.background)}, {"objects", objs},
                  {"text", s.text}, {"text_cell", s.text.empty() ? "" : cell_name(s.text_cell)}, {"captions", s.captions},
                  {"questions", all_q}, {"kept_questions", scene_questions}}
                 .dump() +
             "\n";
  }
  const json info = {{"description", "calibq synthetic scenes"}, {"split", spec.split}, {"seed", spec.seed},
                     {"count", spec.count}, {"size", spec.size}, {"made_by", "calibq scenes"}};
  write_text_atomically((fs::path(dir) / "captions.json").string(),
                        json{{"info", info}, {"images", images}, {"annotations", caps}}.dump(1) + "\n");
  write_text_atomically((fs::path(dir) / "vqa_questions.json").string(),
                        json{{"info", info}, {"data_subtype", subtype}, {"questions", questions}}.dump(1) + "\n");
  write_text_atomically((fs::path(dir) / "vqa_annotations.json").string(),
                        json{{"info", info}, {"data_subtype", subtype}, {"annotations", answers}}.dump(1) + "\n");
  write_text_atomically((fs::path(dir) / "scenes.jsonl").string(), truth);
  return static_cast<int64_t>(questions.size());
#endif
}

}  // namespace calibq::scenes
