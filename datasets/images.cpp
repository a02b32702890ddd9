#include "datasets/images.h"

#include <filesystem>

#include "core/util/error.h"

#ifdef CALIBQ_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace calibq {

#ifdef CALIBQ_WITH_OPENCV

bool images_supported() { return true; }

cv::Mat read_image(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) fail("{}: image file missing", path);
  cv::Mat img;
  try {
    // As Pillow: EXIF orientation ignored, grey replicated to RGB, alpha dropped.
    img = cv::imread(path, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    fail("{}: cannot decode the image: {}", path, e.what());
  }
  if (img.empty()) fail("{}: cannot decode the image (not an image, or corrupt)", path);
  return img;
}

RgbImage read_rgb_image(const std::string& path) {
  cv::Mat bgr = read_image(path);
  if (bgr.depth() != CV_8U) fail("{}: only 8-bit images are supported", path);
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  RgbImage out{rgb.cols, rgb.rows, {}};
  out.pixels.resize(static_cast<size_t>(rgb.cols) * rgb.rows * 3);
  for (int y = 0; y < rgb.rows; ++y) std::copy_n(rgb.ptr<uint8_t>(y), rgb.cols * 3, &out.pixels[static_cast<size_t>(y) * rgb.cols * 3]);
  return out;
}

size_t verify_images(Dataset& data, OnError on_error) {
  std::vector<Sample> kept;
  size_t dropped = 0;
  for (auto& s : data.samples) {
    try {
      read_image(s.image);
      kept.push_back(std::move(s));
    } catch (const Error& e) {
      if (on_error == OnError::Fail) fail("sample {}: {}", s.id, e.what());
      data.problems.push_back({s.id, s.image, e.what()});
      ++dropped;
    }
  }
  data.samples = std::move(kept);
  return dropped;
}

std::vector<std::string> write_fixture_images(const std::string& dir, int n, int size) {
  std::filesystem::create_directories(dir);
  const cv::Scalar colours[] = {{40, 40, 220}, {40, 200, 40}, {220, 80, 30}, {30, 200, 230}, {200, 60, 200}};
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    cv::Mat img(size, size, CV_8UC3, cv::Scalar(235, 235, 235));
    const cv::Scalar& c = colours[i % 5];
    const int r = size / 4 + (i % 3) * size / 16;
    const cv::Point centre(size / 2 + (i % 2 ? size / 8 : -size / 8), size / 2);
    if (i % 2 == 0) cv::circle(img, centre, r, c, cv::FILLED, cv::LINE_AA);
    else cv::rectangle(img, centre - cv::Point(r, r), centre + cv::Point(r, r), c, cv::FILLED);
    std::string path = (std::filesystem::path(dir) / ("fixture_" + std::to_string(i) + ".png")).string();
    if (!cv::imwrite(path, img)) fail("{}: cannot write the fixture image", path);
    out.push_back(path);
  }
  return out;
}

#else

bool images_supported() { return false; }

RgbImage read_rgb_image(const std::string& path) {
  fail("{}: this calibq was built without OpenCV, so it cannot decode images", path);
}

size_t verify_images(Dataset&, OnError) { fail("this calibq was built without OpenCV, so it cannot decode images"); }

std::vector<std::string> write_fixture_images(const std::string& dir, int, int) {
  fail("{}: this calibq was built without OpenCV, so it cannot draw fixture images", dir);
}

#endif

}  // namespace calibq
