// Image preprocessing exactly as the Hugging Face image processors do it, on decoded 8-bit
// RGB pixels (decoding is the caller's: datasets/images.h reads files with OpenCV).
//
// transformers 5's default image processors resize with torchvision on uint8 tensors, whose
// antialiased bicubic is PyTorch's fixed-point kernel (int16 weights with a per-axis
// precision); its "...Pil" classes resize with Pillow (int32 weights, 22 fractional bits).
// The two differ by one grey level here and there, so both are written out below (by hand:
// no Debian library reproduces either bit for bit; OpenCV's INTER_CUBIC/INTER_AREA do not).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace calibq {

struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // height x width x 3, row-major
  uint8_t at(int64_t y, int64_t x, int c) const { return pixels[(y * width + x) * 3 + c]; }
};

// Whose uint8 arithmetic a resize follows.
enum class ResizeBackend { Torch, Pil };
const char* resize_backend_name(ResizeBackend b);

// Antialiased bicubic (a = -0.5), horizontal pass first, each pass rounded to uint8.
RgbImage resize_bicubic(const RgbImage& image, int64_t out_width, int64_t out_height, ResizeBackend backend);
// The centre crop at offsets d // 2 (zero padding where the image is smaller).
RgbImage center_crop(const RgbImage& image, int64_t width, int64_t height);
// LLaVA's expand2square: the image pasted centred on a square of `fill`.
RgbImage pad_to_square(const RgbImage& image, const std::array<uint8_t, 3>& fill);

// A CLIP-style image processor (CLIPImageProcessor, LlavaImageProcessor, and their Pil
// variants): optional pad to square, resize of the shortest edge (or to height x width),
// centre crop, rescale, normalize.
struct ImageProcessorConfig {
  std::string type = "CLIPImageProcessor";
  ResizeBackend backend = ResizeBackend::Torch;
  bool do_resize = true, do_center_crop = true, do_rescale = true, do_normalize = true, do_pad = false;
  int64_t shortest_edge = 0;         // size.shortest_edge, or 0 when size gives height/width
  int64_t size_height = 0, size_width = 0;
  int64_t crop_height = 0, crop_width = 0;
  double rescale_factor = 1.0 / 255.0;
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073}, std{0.26862954, 0.26130258, 0.27577711};
  // GotOcr2ImageProcessor (InternVL): dynamic tiling into min..max tiles of size_height x
  // size_width on the grid whose aspect ratio is closest to the image's, plus a thumbnail.
  bool crop_to_patches = false;
  int64_t min_patches = 1, max_patches = 12;
  bool thumbnail = true;  // with more than one tile, the whole image as one more
  // Rescale as torchvision's ToTensor does (float32(u) / 255, then Normalize in float32): the
  // original InternVL releases' load_image. Else the backend's own arithmetic.
  bool to_tensor_rescale = false;
  // Qwen2VLImageProcessor: smart resize (both sides multiples of patch_size * merge_size, the
  // area within [min_pixels, max_pixels]), then patches of temporal_patch_size frames.
  bool smart_resize = false;
  int64_t min_pixels = 56 * 56, max_pixels = 28 * 28 * 1280;
  int64_t patch_size = 14, temporal_patch_size = 2, merge_size = 2;

  // From an image processor's JSON (preprocessor_config.json, or processor_config.json's
  // "image_processor"); `where` names the file in errors.
  static ImageProcessorConfig from_json(const nlohmann::json& j, const std::string& where);
  // From a checkpoint folder: processor_config.json (transformers 5) or preprocessor_config.json.
  static ImageProcessorConfig from_model_dir(const std::string& dir);
};

// [3, H, W] float32 pixel values.
at::Tensor preprocess_image(const RgbImage& image, const ImageProcessorConfig& config);

// The tile grid (columns, rows) of GotOcr2's get_optimal_tiled_canvas: among the grids of
// min..max tiles (ordered by tile count, then columns), the one whose aspect ratio is closest
// to the image's; on a tie the later grid wins while the image's area exceeds half the grid's.
std::pair<int64_t, int64_t> optimal_tile_grid(int64_t height, int64_t width, int64_t tile_height, int64_t tile_width,
                                              int64_t min_tiles, int64_t max_tiles);
// GotOcr2's crop_image_to_patches: the image resized to the grid, cut into tiles in reading
// order, then (when there is more than one tile) the whole image resized to one tile.
std::vector<RgbImage> crop_to_tiles(const RgbImage& image, const ImageProcessorConfig& config);
// Qwen2-VL's smart_resize: (height, width) rounded to multiples of `factor` (Python's round,
// half to even), scaled down or up (floor / ceil to the factor) to keep the area within
// [min_pixels, max_pixels]. An aspect ratio above 200 is an error, as there.
std::pair<int64_t, int64_t> smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                         int64_t max_pixels);
// Qwen2VLImageProcessor: the image smart-resized, rescaled and normalized, repeated to
// temporal_patch_size frames and cut into patches in the vision tower's order (merge blocks
// of merge_size^2 patches row by row, each block's patches row by row): pixel_values
// [patches, 3 * temporal * patch * patch] (channel, frame, row, column) and its (t, h, w) grid.
struct ImagePatches {
  at::Tensor pixel_values;
  std::array<int64_t, 3> grid_thw{};
};
ImagePatches preprocess_image_patches(const RgbImage& image, const ImageProcessorConfig& config);

// [tiles, 3, H, W]: crop_to_tiles (when config.crop_to_patches and max_patches > 1, else one
// tile), each tile resized, rescaled and normalized as preprocess_image does.
at::Tensor preprocess_image_tiles(const RgbImage& image, const ImageProcessorConfig& config);

}  // namespace calibq
