// The reference of quantize-and-pack: plain loops in float32, the same operations in the same
// order as range_quant's tensor ops.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "kernels/pack_bits.h"
#include "kernels/quantize_pack.h"

namespace calibq::kernels {

PackedKV quantize_pack_cpu(const at::Tensor& x_in, int bits, ScaleAxis axis, double clip) {
  TORCH_CHECK(x_in.dim() == 4 && at::isFloatingType(x_in.scalar_type()), "quantize_pack: x must be a floating [B, H, N, D] tensor, got ",
              x_in.sizes());
  TORCH_CHECK(bits >= 1 && bits <= 8, "quantize_pack: bits must be 1..8, got ", bits);
  const at::Tensor x = x_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), D = x.size(3);
  const bool channel = axis == ScaleAxis::Channel;
  const float levels = static_cast<float>((1 << bits) - 1), fclip = static_cast<float>(clip);
  at::Tensor scale = channel ? at::empty({B, H, 1, D}) : at::empty({B, H, N, 1});
  at::Tensor zero = at::empty_like(scale);
  at::Tensor codes = at::zeros({B, H, N, D}, at::kByte);
  const float* px = x.data_ptr<float>();
  float* ps = scale.data_ptr<float>();
  float* pz = zero.data_ptr<float>();
  uint8_t* pc = codes.data_ptr<uint8_t>();
  const int64_t groups = channel ? D : N, members = channel ? N : D;
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t g = 0; g < groups; ++g) {
      auto at_index = [&](int64_t m) { return bh * N * D + (channel ? m * D + g : g * D + m); };
      float lo = INFINITY, hi = -INFINITY;
      for (int64_t m = 0; m < members; ++m) {
        lo = std::min(lo, px[at_index(m)]);
        hi = std::max(hi, px[at_index(m)]);
      }
      lo *= fclip;
      hi *= fclip;
      float s = (hi - lo) / levels;
      const bool degenerate = s <= 0.f;
      if (degenerate) s = 1.f;
      const float z = -lo / s;
      ps[bh * groups + g] = s;
      pz[bh * groups + g] = z;
      for (int64_t m = 0; m < members; ++m) {
        const float v = std::min(std::max(px[at_index(m)] / s + z, 0.f), levels);
        pc[at_index(m)] = hi - lo <= 0.f ? 0 : static_cast<uint8_t>(std::nearbyint(v));
      }
    }
  PackedKV out;
  out.packed = pack_codes_cpu(codes, storage_bits(bits));
  out.scale = scale;
  out.zero = zero;
  out.axis = axis;
  out.bits = storage_bits(bits);
  return out;
}

}  // namespace calibq::kernels
