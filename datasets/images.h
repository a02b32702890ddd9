// Images of samples: decoding with a clear error, a check that removes undecodable
// images from a dataset (reported like malformed records), and small fixture images
// drawn with OpenCV for tests and demos (no downloads).
#pragma once

#include <string>
#include <vector>

#include "core/vision/image_processor.h"
#include "datasets/dataset.h"

#ifdef CALIBQ_WITH_OPENCV
#include <opencv2/core.hpp>
#endif

namespace calibq {

// Whether this build decodes images (OpenCV found at configure time).
bool images_supported();

#ifdef CALIBQ_WITH_OPENCV
// Decodes an image to 8-bit BGR; throws calibq::Error naming the file when it is missing,
// unreadable or not an image. (Only in builds with OpenCV.)
cv::Mat read_image(const std::string& path);
#endif

// Decodes an image to 8-bit RGB as Pillow's Image.open(path).convert("RGB") does; throws
// calibq::Error naming the file (also in builds without OpenCV, saying so).
RgbImage read_rgb_image(const std::string& path);

// Decodes every sample's image; a failure becomes a SampleProblem (or an error, when
// on_error is Fail) and the sample leaves the dataset. Returns how many were dropped.
size_t verify_images(Dataset& data, OnError on_error);

// Writes n deterministic fixture images (shapes in colours on plain backgrounds) as PNG into
// dir, named fixture_<i>.png; returns their paths.
std::vector<std::string> write_fixture_images(const std::string& dir, int n, int size = 64);

}  // namespace calibq
