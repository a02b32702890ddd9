// The reference of decode attention over segments (the specification of the CUDA kernels):
// plain loops, every packed element dequantized as s (c - z), double accumulation.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/decode_attention.h"
#include "kernels/pack_bits.h"

namespace calibq::kernels {

at::Tensor token_words_cpu(const at::Tensor& packed_in, int64_t n) {
  TORCH_CHECK(packed_in.scalar_type() == at::kByte && packed_in.dim() >= 2 && packed_in.size(-2) == n,
              "token_words: packed codes must be uint8 [..., ", n, ", D/8], got ", packed_in.sizes());
  const at::Tensor packed = packed_in.cpu().contiguous();
  const int64_t row_bytes = packed.size(-1), d = row_bytes * 8, words = (n + 31) / 32;
  const int64_t rows = n == 0 ? 0 : packed.numel() / (n * row_bytes);
  auto sizes = packed.sizes().vec();
  sizes[sizes.size() - 2] = words;
  sizes.back() = d;
  at::Tensor out = at::zeros(sizes, at::kInt);
  const uint8_t* src = packed.data_ptr<uint8_t>();
  uint32_t* dst = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < d; ++c) {
        const uint32_t bit = (src[(r * n + t) * row_bytes + c / 8] >> (c % 8)) & 1u;
        dst[(r * words + t / 32) * d + c] |= bit << (t % 32);
      }
  return out.to(packed_in.device());
}

at::Tensor decode_attention_cpu(const DecodeAttentionInputs& in) {
  check_decode_attention_inputs(in);
  const at::Tensor q = in.q.to(at::kCPU, at::kDouble).contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t H = in.has_packed ? in.key.packed.size(1) : in.full.front().k.size(1);
  const int64_t G = Hq / H;
  auto qa = q.accessor<double, 3>();

  struct Full {
    at::Tensor k, v, mask;
  };
  std::vector<Full> full;
  for (const auto& f : in.full) {
    // Only the valid tokens of a segment with a device-side length.
    const int64_t n = f.length.defined() ? f.length.cpu().item<int>() : f.k.size(2);
    full.push_back({f.k.narrow(2, 0, n).to(at::kCPU, at::kDouble).contiguous(),
                    f.v.narrow(2, 0, n).to(at::kCPU, at::kDouble).contiguous(),
                    f.mask.defined() ? f.mask.narrow(1, 0, n).to(at::kCPU, at::kDouble).contiguous() : at::Tensor()});
  }
  // Dequantized packed segment: x̂ = s (c - z), [B, H, N, D].
  at::Tensor kx, vx;
  if (in.has_packed) {
    auto dequant = [&](const PackedKV& p) {
      at::Tensor c = unpack_codes_cpu(p.packed.cpu(), p.bits, D).to(at::kDouble);
      const int64_t N = c.size(2);
      at::Tensor out = at::empty_like(c);
      auto ca = c.accessor<double, 4>();
      auto oa = out.accessor<double, 4>();
      at::Tensor s = p.scale.to(at::kCPU, at::kDouble).contiguous(), z = p.zero.to(at::kCPU, at::kDouble).contiguous();
      auto sa = s.accessor<double, 4>();
      auto za = z.accessor<double, 4>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t n = 0; n < N; ++n)
            for (int64_t d = 0; d < D; ++d) {
              const bool ch = p.axis == ScaleAxis::Channel;
              const double sc = ch ? sa[b][h][0][d] : sa[b][h][n][0];
              const double zp = ch ? za[b][h][0][d] : za[b][h][n][0];
              oa[b][h][n][d] = sc * (ca[b][h][n][d] - zp);
            }
      return out;
    };
    kx = dequant(in.key);
    vx = dequant(in.value);
  }

  at::Tensor out = at::zeros({B, Hq, D}, at::kDouble);
  auto outa = out.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hq = 0; hq < Hq; ++hq) {
      const int64_t h = hq / G;
      std::vector<double> scores;
      std::vector<const double*> values;  // the value row of each score
      for (const auto& f : full) {
        const int64_t L = f.k.size(2);
        const double* k = f.k.data_ptr<double>() + (b * H + h) * L * D;
        const double* v = f.v.data_ptr<double>() + (b * H + h) * L * D;
        for (int64_t n = 0; n < L; ++n) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += qa[b][hq][d] * k[n * D + d];
          s *= in.scale;
          if (f.mask.defined()) s += f.mask.data_ptr<double>()[b * L + n];
          scores.push_back(s);
          values.push_back(v + n * D);
        }
      }
      if (in.has_packed) {
        const int64_t N = kx.size(2);
        const double* k = kx.data_ptr<double>() + (b * H + h) * N * D;
        const double* v = vx.data_ptr<double>() + (b * H + h) * N * D;
        std::vector<double> vs(N);
        for (int64_t n = 0; n < N; ++n) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += qa[b][hq][d] * k[n * D + d];
          vs[n] = s * in.scale;
        }
        if (in.calibrate && N > 0) {
          double m = vs[0], M = vs[0];
          for (double s : vs) m = std::min(m, s), M = std::max(M, s);
          for (double& s : vs)
            s = M > m ? (m + in.calib_a) + (s - m) / (M - m) * ((M + in.calib_b) - (m + in.calib_a)) : m + in.calib_a;
        }
        for (int64_t n = 0; n < N; ++n) {
          scores.push_back(vs[n]);
          values.push_back(v + n * D);
        }
      }
      double mx = -std::numeric_limits<double>::infinity();
      for (double s : scores) mx = std::max(mx, s);
      double sum = 0;
      std::vector<double> p(scores.size());
      for (size_t i = 0; i < scores.size(); ++i) sum += p[i] = std::exp(scores[i] - mx);
      for (size_t i = 0; i < scores.size(); ++i)
        for (int64_t d = 0; d < D; ++d) outa[b][hq][d] += p[i] / sum * values[i][d];
    }
  return out.to(in.q.scalar_type()).to(in.q.device());
}

}  // namespace calibq::kernels
