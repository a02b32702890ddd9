#include "kernels/pack_bits.h"

namespace calibq::kernels {

int storage_bits(int bits) {
  if (bits == 1 || bits == 2 || bits == 4 || bits == 8) return bits;
  if (bits == 3) return 4;
  TORCH_CHECK(false, "bit-packing: ", bits, " bits is not supported (supported: 1, 2, 3, 4, 8)");
}

int64_t packed_bytes(int64_t n, int bits) {
  int per_byte = 8 / storage_bits(bits);
  return (n + per_byte - 1) / per_byte;
}

at::Tensor pack_codes_cpu(const at::Tensor& codes_in, int bits) {
  TORCH_CHECK(codes_in.scalar_type() == at::kByte, "pack_codes: codes must be uint8");
  TORCH_CHECK(codes_in.dim() >= 1, "pack_codes: codes need at least one dimension");
  bits = storage_bits(bits);
  at::Tensor codes = codes_in.contiguous();
  const int64_t n = codes.size(-1);
  const int64_t rows = n == 0 ? 0 : codes.numel() / n;
  const int64_t m = packed_bytes(n, bits);
  auto sizes = codes.sizes().vec();
  sizes.back() = m;
  at::Tensor packed = at::zeros(sizes, codes.options());
  const uint8_t* src = codes.data_ptr<uint8_t>();
  uint8_t* dst = packed.data_ptr<uint8_t>();
  const int per_byte = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      unsigned c = src[r * n + i];
      TORCH_CHECK(c <= mask, "pack_codes: code ", c, " does not fit in ", bits, " bits");
      dst[r * m + i / per_byte] |= static_cast<uint8_t>(c << ((i % per_byte) * bits));
    }
  }
  return packed;
}

at::Tensor unpack_codes_cpu(const at::Tensor& packed_in, int bits, int64_t n) {
  TORCH_CHECK(packed_in.scalar_type() == at::kByte, "unpack_codes: packed codes must be uint8");
  bits = storage_bits(bits);
  at::Tensor packed = packed_in.contiguous();
  const int64_t m = packed.size(-1);
  TORCH_CHECK(m == packed_bytes(n, bits), "unpack_codes: ", m, " bytes cannot hold ", n, " codes of ",
              bits, " bits");
  const int64_t rows = m == 0 ? 0 : packed.numel() / m;
  auto sizes = packed.sizes().vec();
  sizes.back() = n;
  at::Tensor codes = at::empty(sizes, packed.options());
  const uint8_t* src = packed.data_ptr<uint8_t>();
  uint8_t* dst = codes.data_ptr<uint8_t>();
  const int per_byte = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i)
      dst[r * n + i] = static_cast<uint8_t>((src[r * m + i / per_byte] >> ((i % per_byte) * bits)) & mask);
  return codes;
}

}  // namespace calibq::kernels
