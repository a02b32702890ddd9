// Bit-packing of quantization codes: the storage format of every low-bit KV segment.
//
// Codes (uint8, each < 2^bits) are packed along the last dimension, 8/bits codes per
// byte; code j of a byte sits in bits [j*bits, (j+1)*bits) (least significant first, as
// KIVI packs). A last dimension that is not a multiple of 8/bits is padded with zero
// codes. bits must be 1, 2, 4 or 8 (3-bit codes are stored in 4-bit slots by callers).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace calibq::kernels {

// The storage width of a b-bit code: the smallest of 1, 2, 4, 8 that holds it.
int storage_bits(int bits);
// Packed bytes for n codes of `bits` (a storage width).
int64_t packed_bytes(int64_t n, int bits);

// [..., n] uint8 -> [..., packed_bytes(n, bits)] uint8, on the input's device.
at::Tensor pack_codes(const at::Tensor& codes, int bits);
// Inverse of pack_codes: [..., m] uint8 -> [..., n] uint8.
at::Tensor unpack_codes(const at::Tensor& packed, int bits, int64_t n);

// The plain-loop references (the specification), CPU only.
at::Tensor pack_codes_cpu(const at::Tensor& codes, int bits);
at::Tensor unpack_codes_cpu(const at::Tensor& packed, int bits, int64_t n);

}  // namespace calibq::kernels
