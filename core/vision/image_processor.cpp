#include "core/vision/image_processor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <filesystem>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/io/json_file.h"
#include "core/util/error.h"

namespace calibq {

using json = nlohmann::json;

const char* resize_backend_name(ResizeBackend b) {
  switch (b) {
    case ResizeBackend::Torch: return "torch";
    case ResizeBackend::Pil: return "pil";
  }
  return "?";
}

namespace {

// Keys' cubic convolution with a = -0.5, the antialiasing filter of Pillow and of PyTorch.
double cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// One axis of a separable resize: per output index the first input index, the tap count
// and the fixed-point weights.
struct AxisWeights {
  std::vector<int64_t> first, taps;
  std::vector<int32_t> weights;  // out x ksize
  int64_t ksize = 0;
  int precision = 0;
};

AxisWeights axis_weights(int64_t in, int64_t out, ResizeBackend backend) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double support = scale >= 1.0 ? 2.0 * scale : 2.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  AxisWeights a;
  a.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  a.first.resize(out);
  a.taps.resize(out);
  std::vector<double> w(out * a.ksize, 0.0);
  double w_max = 0.0;
  for (int64_t i = 0; i < out; ++i) {
    const double center = scale * (static_cast<double>(i) + 0.5);
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in) - lo;
    double total = 0.0;
    for (int64_t j = 0; j < n; ++j) total += (w[i * a.ksize + j] = cubic((j + lo - center + 0.5) * invscale));
    if (total != 0.0)
      for (int64_t j = 0; j < n; ++j) w_max = std::max(w_max, w[i * a.ksize + j] /= total);
    a.first[i] = lo;
    a.taps[i] = n;
  }
  switch (backend) {
    case ResizeBackend::Pil: a.precision = 22; break;  // Pillow's PRECISION_BITS = 32 - 8 - 2
    case ResizeBackend::Torch:
      // PyTorch's uint8 kernels hold weights in int16: the most fractional bits for which
      // the largest weight still fits.
      for (a.precision = 0; a.precision < 22; ++a.precision)
        if (static_cast<int>(0.5 + w_max * (1 << (a.precision + 1))) >= (1 << 15)) break;
      break;
  }
  a.weights.resize(w.size());
  for (size_t k = 0; k < w.size(); ++k) {
    const double v = w[k] * static_cast<double>(1 << a.precision);
    a.weights[k] = static_cast<int32_t>(v < 0 ? v - 0.5 : v + 0.5);
  }
  return a;
}

uint8_t clamp8(int64_t sum, int precision) {
  return static_cast<uint8_t>(std::clamp<int64_t>(sum >> precision, 0, 255));
}

// One pass of the separable resize, along x (horizontal) or y, rounded to uint8.
RgbImage resample_axis(const RgbImage& in, int64_t out_len, bool horizontal, ResizeBackend backend) {
  const AxisWeights a = axis_weights(horizontal ? in.width : in.height, out_len, backend);
  RgbImage out{horizontal ? out_len : in.width, horizontal ? in.height : out_len, {}};
  out.pixels.resize(static_cast<size_t>(out.width * out.height * 3));
  for (int64_t y = 0; y < out.height; ++y)
    for (int64_t x = 0; x < out.width; ++x) {
      const int64_t o = horizontal ? x : y;
      for (int c = 0; c < 3; ++c) {
        int64_t sum = int64_t{1} << (a.precision - 1);
        for (int64_t j = 0; j < a.taps[o]; ++j) {
          const int64_t src = a.first[o] + j;
          sum += (horizontal ? in.at(y, src, c) : in.at(src, x, c)) * a.weights[o * a.ksize + j];
        }
        out.pixels[(y * out.width + x) * 3 + c] = clamp8(sum, a.precision);
      }
    }
  return out;
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& image, int64_t out_width, int64_t out_height, ResizeBackend backend) {
  if (out_width <= 0 || out_height <= 0) fail("resize: output size {}x{} must be positive", out_width, out_height);
  // Horizontal first, as Pillow and PyTorch do; an axis already at its size is not touched.
  RgbImage cur = out_width != image.width ? resample_axis(image, out_width, true, backend) : image;
  return out_height != cur.height ? resample_axis(cur, out_height, false, backend) : cur;
}

RgbImage center_crop(const RgbImage& image, int64_t width, int64_t height) {
  // floor(d / 2), as transformers' center_crop (both its numpy and its torchvision paths;
  // torchvision's own center_crop would round half to even instead).
  auto offset = [](int64_t d) -> int64_t { return d >= 0 ? d / 2 : -((-d + 1) / 2); };
  const int64_t top = offset(image.height - height), left = offset(image.width - width);
  RgbImage out{width, height, std::vector<uint8_t>(width * height * 3, 0)};
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x) {
      const int64_t sy = y + top, sx = x + left;
      if (sy < 0 || sx < 0 || sy >= image.height || sx >= image.width) continue;
      for (int c = 0; c < 3; ++c) out.pixels[(y * width + x) * 3 + c] = image.at(sy, sx, c);
    }
  return out;
}

RgbImage pad_to_square(const RgbImage& image, const std::array<uint8_t, 3>& fill) {
  const int64_t side = std::max(image.width, image.height);
  if (image.width == image.height) return image;
  RgbImage out{side, side, std::vector<uint8_t>(side * side * 3)};
  for (int64_t k = 0; k < side * side; ++k)
    for (int c = 0; c < 3; ++c) out.pixels[k * 3 + c] = fill[c];
  const int64_t top = (side - image.height) / 2, left = (side - image.width) / 2;
  for (int64_t y = 0; y < image.height; ++y)
    std::copy_n(&image.pixels[y * image.width * 3], image.width * 3, &out.pixels[((y + top) * side + left) * 3]);
  return out;
}

namespace {

// {"height": h, "width": w}, {"shortest_edge": s} or a bare int (square).
void read_size(const json& j, const std::string& key, const std::string& where, int64_t& h, int64_t& w, int64_t* shortest) {
  const json& s = j.at(key);
  if (s.is_number_integer()) {
    h = w = s.get<int64_t>();
  } else if (s.contains("shortest_edge") && shortest) {
    if (s.contains("longest_edge")) fail("{}: {}.longest_edge is not supported", where, key);
    *shortest = s.at("shortest_edge").get<int64_t>();
  } else if (s.contains("height") && s.contains("width")) {
    h = s.at("height").get<int64_t>();
    w = s.at("width").get<int64_t>();
  } else {
    fail("{}: {} must be an int, {{height, width}}{}; got {}", where, key, shortest ? " or {shortest_edge}" : "", s.dump());
  }
}

}  // namespace

namespace {
void check_rgb(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0 || image.pixels.size() != static_cast<size_t>(image.width * image.height * 3))
    fail("preprocess: image of {}x{} with {} bytes is not 8-bit RGB", image.width, image.height, image.pixels.size());
}

// Rescale and normalize, in the arithmetic of the backend's library, to [3, H, W] float32.
at::Tensor pixel_tensor(const RgbImage& img, const ImageProcessorConfig& c) {

  at::Tensor out = at::empty({3, img.height, img.width}, at::kFloat);
  float* o = out.data_ptr<float>();
  const int64_t plane = img.height * img.width;
  for (int ch = 0; ch < 3; ++ch) {
    const float mean = static_cast<float>(c.mean[ch]), std = static_cast<float>(c.std[ch]);
    const float inv_rescale = static_cast<float>(1.0 / c.rescale_factor);
    for (int64_t k = 0; k < plane; ++k) {
      const uint8_t u = img.pixels[k * 3 + ch];
      float v = 0.0f;
      switch (c.backend) {
        case ResizeBackend::Torch:
          // torchvision path: rescale folded into mean and std, float32 throughout.
          if (c.do_rescale && c.do_normalize) v = (static_cast<float>(u) - mean * inv_rescale) / (std * inv_rescale);
          else if (c.do_rescale) v = static_cast<float>(u) * static_cast<float>(c.rescale_factor);
          else if (c.do_normalize) v = (static_cast<float>(u) - mean) / std;
          else v = static_cast<float>(u);
          break;
        case ResizeBackend::Pil:
          // numpy path: rescale in float64 then float32, normalize in float32; ToTensor divides
          // in float32.
          v = !c.do_rescale         ? static_cast<float>(u)
              : c.to_tensor_rescale ? static_cast<float>(u) / 255.0f
                                    : static_cast<float>(static_cast<double>(u) * c.rescale_factor);
          if (c.do_normalize) v = (v - mean) / std;
          break;
      }
      o[ch * plane + k] = v;
    }
  }
  return out;
}

}  // namespace

ImageProcessorConfig ImageProcessorConfig::from_json(const json& j, const std::string& where) {
  ImageProcessorConfig c;
  try {
    c.type = j.value("image_processor_type", std::string("CLIPImageProcessor"));
    static const std::vector<std::string> known = {"CLIPImageProcessor",    "CLIPImageProcessorFast",    "CLIPImageProcessorPil",
                                                   "LlavaImageProcessor",   "LlavaImageProcessorFast",   "LlavaImageProcessorPil",
                                                   "GotOcr2ImageProcessor", "GotOcr2ImageProcessorFast", "GotOcr2ImageProcessorPil",
                                                   "Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast", "Qwen2VLImageProcessorPil"};
    if (std::find(known.begin(), known.end(), c.type) == known.end())
      fail("{}: image_processor_type '{}' is not supported (supported: {})", where, c.type, fmt::join(known, ", "));
    c.backend = c.type.size() > 3 && c.type.compare(c.type.size() - 3, 3, "Pil") == 0 ? ResizeBackend::Pil : ResizeBackend::Torch;
    const bool got_ocr2 = c.type.rfind("GotOcr2", 0) == 0;
    c.smart_resize = c.type.rfind("Qwen2VL", 0) == 0;
    c.do_resize = j.value("do_resize", true);
    c.do_center_crop = j.value("do_center_crop", !got_ocr2 && !c.smart_resize);  // neither crops
    if (c.smart_resize) {
      // Qwen2VLImageProcessor.__init__: size {shortest_edge: min, longest_edge: max} pixels,
      // then min_pixels / max_pixels (the hub's preprocessor_config.json keys) override it.
      if (j.contains("size") && j["size"].is_object()) {
        c.min_pixels = j["size"].value("shortest_edge", c.min_pixels);
        c.max_pixels = j["size"].value("longest_edge", c.max_pixels);
      }
      if (j.contains("min_pixels") && !j["min_pixels"].is_null()) c.min_pixels = j["min_pixels"].get<int64_t>();
      if (j.contains("max_pixels") && !j["max_pixels"].is_null()) c.max_pixels = j["max_pixels"].get<int64_t>();
      c.patch_size = j.value("patch_size", c.patch_size);
      c.temporal_patch_size = j.value("temporal_patch_size", c.temporal_patch_size);
      c.merge_size = j.value("merge_size", c.merge_size);
      if (c.min_pixels <= 0 || c.max_pixels < c.min_pixels || c.patch_size <= 0 || c.temporal_patch_size <= 0 ||
          c.merge_size <= 0)
        fail("{}: min_pixels {}, max_pixels {}, patch_size {}, temporal_patch_size {}, merge_size {}: need "
             "0 < min <= max and positive sizes", where, c.min_pixels, c.max_pixels, c.patch_size, c.temporal_patch_size,
             c.merge_size);
    }
    if (got_ocr2) {
      c.crop_to_patches = j.value("crop_to_patches", false);
      c.min_patches = j.value("min_patches", int64_t{1});
      c.max_patches = j.value("max_patches", int64_t{12});
      if (c.min_patches < 1 || c.max_patches < c.min_patches)
        fail("{}: min_patches {} and max_patches {} must satisfy 1 <= min <= max", where, c.min_patches, c.max_patches);
    }
    c.do_rescale = j.value("do_rescale", true);
    c.do_normalize = j.value("do_normalize", true);
    c.do_pad = j.value("do_pad", false);
    c.rescale_factor = j.value("rescale_factor", 1.0 / 255.0);
    if (c.do_resize && !c.smart_resize) {
      read_size(j, "size", where, c.size_height, c.size_width, &c.shortest_edge);
      const int resample = j.value("resample", 3);
      if (resample != 3) fail("{}: resample {} is not supported (3: bicubic)", where, resample);
    }
    if (c.do_center_crop) read_size(j, "crop_size", where, c.crop_height, c.crop_width, nullptr);
    for (const char* key : {"image_mean", "image_std"}) {
      if (!j.contains(key)) continue;
      const json& v = j.at(key);
      if (!v.is_array() || v.size() != 3) fail("{}: {} must be a list of 3 numbers, got {}", where, key, v.dump());
      auto& dst = std::string(key) == "image_mean" ? c.mean : c.std;
      for (int k = 0; k < 3; ++k) dst[k] = v[k].get<double>();
    }
  } catch (const json::exception& e) {
    fail("{}: {}", where, e.what());
  }
  return c;
}

ImageProcessorConfig ImageProcessorConfig::from_model_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string processor = (fs::path(dir) / "processor_config.json").string();
  if (fs::exists(processor)) {
    json j = read_json_file(processor);
    if (j.contains("image_processor")) return from_json(j["image_processor"], processor + ": image_processor");
  }
  const std::string pre = (fs::path(dir) / "preprocessor_config.json").string();
  if (fs::exists(pre)) return from_json(read_json_file(pre), pre);
  fail("{}: no image processor config (processor_config.json with image_processor, or preprocessor_config.json)", dir);
}

at::Tensor preprocess_image(const RgbImage& input, const ImageProcessorConfig& c) {
  check_rgb(input);
  RgbImage img = input;
  if (c.do_pad) {
    std::array<uint8_t, 3> fill{};
    for (int k = 0; k < 3; ++k) fill[k] = static_cast<uint8_t>(static_cast<int>(c.mean[k] * 255));
    img = pad_to_square(img, fill);
  }
  if (c.do_resize) {
    int64_t h = c.size_height, w = c.size_width;
    if (c.shortest_edge > 0) {  // transformers' get_resize_output_image_size(default_to_square=False)
      const bool wide = img.width > img.height;
      const int64_t s = wide ? img.height : img.width, l = wide ? img.width : img.height;
      const int64_t long_side = static_cast<int64_t>(static_cast<double>(c.shortest_edge) * l / s);
      h = wide ? c.shortest_edge : long_side;
      w = wide ? long_side : c.shortest_edge;
    }
    img = resize_bicubic(img, w, h, c.backend);
  }
  if (c.do_center_crop) img = center_crop(img, c.crop_width, c.crop_height);
  return pixel_tensor(img, c);
}

std::pair<int64_t, int64_t> smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                         int64_t max_pixels) {
  if (height <= 0 || width <= 0 || factor <= 0) fail("smart_resize: bad sizes ({}x{}, factor {})", height, width, factor);
  const double h = static_cast<double>(height), w = static_cast<double>(width), f = static_cast<double>(factor);
  if (std::max(h, w) / std::min(h, w) > 200)
    fail("smart_resize: a {}x{} image's aspect ratio {} is above 200", width, height, std::max(h, w) / std::min(h, w));
  // std::nearbyint rounds half to even, as Python's round does.
  int64_t h_bar = static_cast<int64_t>(std::nearbyint(h / f)) * factor;
  int64_t w_bar = static_cast<int64_t>(std::nearbyint(w / f)) * factor;
  if (h_bar * w_bar > max_pixels) {
    const double beta = std::sqrt(h * w / static_cast<double>(max_pixels));
    h_bar = std::max(factor, static_cast<int64_t>(std::floor(h / beta / f)) * factor);
    w_bar = std::max(factor, static_cast<int64_t>(std::floor(w / beta / f)) * factor);
  } else if (h_bar * w_bar < min_pixels) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / (h * w));
    h_bar = static_cast<int64_t>(std::ceil(h * beta / f)) * factor;
    w_bar = static_cast<int64_t>(std::ceil(w * beta / f)) * factor;
  }
  return {h_bar, w_bar};
}

ImagePatches preprocess_image_patches(const RgbImage& input, const ImageProcessorConfig& c) {
  if (!c.smart_resize) fail("preprocess: {} does not cut images into patches", c.type);
  check_rgb(input);
  const int64_t factor = c.patch_size * c.merge_size;
  if (!c.do_resize && (input.height % factor != 0 || input.width % factor != 0))
    fail("preprocess: without do_resize a {}x{} image must have sides divisible by {}", input.width, input.height, factor);
  RgbImage resized;
  if (c.do_resize) {
    const auto [h, w] = smart_resize(input.height, input.width, factor, c.min_pixels, c.max_pixels);
    resized = resize_bicubic(input, w, h, c.backend);
  }
  const RgbImage& img = c.do_resize ? resized : input;
  const int64_t tp = c.temporal_patch_size, ps = c.patch_size, m = c.merge_size;
  const int64_t gh = img.height / ps, gw = img.width / ps;
  // One image is one frame, repeated to fill the temporal patch (transformers pads a clip
  // with copies of its last frame).
  at::Tensor frames = pixel_tensor(img, c).unsqueeze(0).expand({tp, 3, img.height, img.width});
  at::Tensor x = frames.reshape({tp, 3, gh / m, m, ps, gw / m, m, ps}).permute({2, 5, 3, 6, 1, 0, 4, 7});
  return {x.reshape({gh * gw, 3 * tp * ps * ps}).contiguous(), {1, gh, gw}};
}

std::pair<int64_t, int64_t> optimal_tile_grid(int64_t height, int64_t width, int64_t tile_height, int64_t tile_width,
                                              int64_t min_tiles, int64_t max_tiles) {
  if (height <= 0 || width <= 0 || tile_height <= 0 || tile_width <= 0 || min_tiles < 1 || max_tiles < min_tiles)
    fail("tile grid: bad sizes ({}x{} image, {}x{} tiles, {}..{} tiles)", height, width, tile_height, tile_width, min_tiles,
         max_tiles);
  // Every (columns, rows) with min <= columns * rows <= max, ordered as Python's stable sort
  // by tile count leaves them: by count, then columns, then rows.
  std::vector<std::pair<int64_t, int64_t>> grids;
  for (int64_t cols = 1; cols <= max_tiles; ++cols)
    for (int64_t rows = 1; rows <= max_tiles; ++rows)
      if (cols * rows >= min_tiles && cols * rows <= max_tiles) grids.push_back({cols, rows});
  std::stable_sort(grids.begin(), grids.end(),
                   [](const auto& a, const auto& b) { return a.first * a.second < b.first * b.second; });
  const double aspect = static_cast<double>(width) / static_cast<double>(height);
  const double area = static_cast<double>(width) * static_cast<double>(height);
  double best_diff = std::numeric_limits<double>::infinity();
  std::pair<int64_t, int64_t> best{1, 1};
  for (const auto& g : grids) {
    const double diff = std::abs(aspect - static_cast<double>(g.first) / static_cast<double>(g.second));
    if (diff < best_diff) {
      best_diff = diff;
      best = g;
    } else if (diff == best_diff &&
               area > 0.5 * static_cast<double>(tile_height) * static_cast<double>(tile_width) *
                          static_cast<double>(g.first * g.second)) {
      best = g;
    }
  }
  return best;
}

std::vector<RgbImage> crop_to_tiles(const RgbImage& image, const ImageProcessorConfig& c) {
  const auto [cols, rows] =
      optimal_tile_grid(image.height, image.width, c.size_height, c.size_width, c.min_patches, c.max_patches);
  const RgbImage canvas = resize_bicubic(image, c.size_width * cols, c.size_height * rows, c.backend);
  std::vector<RgbImage> tiles;
  for (int64_t i = 0; i < cols * rows; ++i) {
    const int64_t x0 = (i % cols) * c.size_width, y0 = (i / cols) * c.size_height;
    RgbImage t;
    t.width = c.size_width;
    t.height = c.size_height;
    t.pixels.resize(static_cast<size_t>(t.width * t.height * 3));
    for (int64_t y = 0; y < t.height; ++y)
      std::copy_n(&canvas.pixels[static_cast<size_t>(((y0 + y) * canvas.width + x0) * 3)], t.width * 3,
                  &t.pixels[static_cast<size_t>(y * t.width * 3)]);
    tiles.push_back(std::move(t));
  }
  if (tiles.size() > 1 && c.thumbnail) tiles.push_back(resize_bicubic(image, c.size_width, c.size_height, c.backend));
  return tiles;
}

at::Tensor preprocess_image_tiles(const RgbImage& input, const ImageProcessorConfig& c) {
  if (!(c.crop_to_patches && c.max_patches > 1)) return preprocess_image(input, c).unsqueeze(0);
  if (c.size_height <= 0 || c.size_width <= 0) fail("preprocess: tiling needs size {{height, width}}");
  ImageProcessorConfig per_tile = c;  // each tile then goes through resize, rescale, normalize
  per_tile.do_pad = false;
  per_tile.crop_to_patches = false;
  std::vector<at::Tensor> out;
  for (const RgbImage& tile : crop_to_tiles(input, c)) out.push_back(preprocess_image(tile, per_tile));
  return at::stack(out);
}

}  // namespace calibq