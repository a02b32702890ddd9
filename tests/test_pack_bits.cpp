// Bit-packing: exact round trips for every width and odd lengths, the documented byte
// layout, and the CUDA kernels equal to the CPU reference (skipped where no GPU is).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/cuda_dispatch.h"
#include "kernels/pack_bits.h"
#include "tests/device_test.h"

namespace calibq::kernels {
namespace {

using PackBits = test::OnEachDevice;

TEST_P(PackBits, RoundTripsEveryWidthAndOddLength) {
  at::manual_seed(0);
  for (int bits : {1, 2, 3, 4, 8}) {
    for (int64_t n : {1, 3, 7, 8, 9, 15, 128, 133}) {
      const int levels = 1 << bits;
      at::Tensor codes = at::randint(0, levels, {2, 3, 5, n}, at::kByte).to(device());
      at::Tensor packed = pack_codes(codes, bits);
      EXPECT_EQ(packed.device(), codes.device());
      EXPECT_EQ(packed.size(-1), packed_bytes(n, bits));
      EXPECT_EQ(packed.size(-1), (n * storage_bits(bits) + 7) / 8);
      at::Tensor back = unpack_codes(packed, bits, n);
      EXPECT_TRUE(at::equal(back.cpu(), codes.cpu())) << bits << " bits, n=" << n;
      // The CPU reference is the specification: the device result must equal it byte for byte.
      EXPECT_TRUE(at::equal(packed.cpu(), pack_codes_cpu(codes.cpu(), bits))) << bits << " bits, n=" << n;
    }
  }
}

TEST_P(PackBits, ByteLayoutIsLeastSignificantFirst) {
  at::Tensor codes = at::tensor({1, 0, 1, 1, 0, 0, 0, 1, 1}, at::kInt).to(at::kByte).to(device());
  at::Tensor packed = pack_codes(codes, 1).cpu();
  ASSERT_EQ(packed.numel(), 2);
  EXPECT_EQ(packed[0].item<uint8_t>(), 0b10001101);
  EXPECT_EQ(packed[1].item<uint8_t>(), 0b00000001);  // padding codes are zero
  at::Tensor two = pack_codes(at::tensor({3, 0, 2, 1}, at::kInt).to(at::kByte).to(device()), 2).cpu();
  EXPECT_EQ(two[0].item<uint8_t>(), 0b01100011);
}

TEST_P(PackBits, EmptyAndNonContiguousInputs) {
  at::Tensor empty = at::zeros({4, 0}, at::kByte).to(device());
  EXPECT_EQ(pack_codes(empty, 1).sizes(), (std::vector<int64_t>{4, 0}));
  at::Tensor codes = at::randint(0, 2, {16, 6}, at::kByte).to(device()).t();  // non-contiguous
  EXPECT_TRUE(at::equal(unpack_codes(pack_codes(codes, 1), 1, 16).cpu(), codes.cpu()));
}

TEST(PackBitsCpu, RejectsBadInput) {
  EXPECT_THROW(pack_codes(at::zeros({3}, at::kFloat), 1), c10::Error);
  EXPECT_THROW(pack_codes(at::full({3}, 2, at::kByte), 1), c10::Error);  // code 2 in 1 bit
  EXPECT_THROW(pack_codes(at::zeros({3}, at::kByte), 5), c10::Error);
  EXPECT_THROW(unpack_codes(at::zeros({3}, at::kByte), 1, 30), c10::Error);
}

CALIBQ_ON_EACH_DEVICE(PackBits);

}  // namespace
}  // namespace calibq::kernels
