// Quantize-and-pack: one test body for the CPU reference and the CUDA kernels, each against
// the tensor-op quantizer of the library (UniformQuantized on the CPU), bit for bit.
#include <gtest/gtest.h>

#include "core/quant/range_quant.h"
#include "core/quant/registry.h"
#include "kernels/cuda_dispatch.h"
#include "kernels/pack_bits.h"
#include "kernels/quantize_pack.h"
#include "tests/device_test.h"

namespace calibq {
namespace {

using kernels::ScaleAxis;

using QuantizePack = test::OnEachDevice;

// K-like data: an outlier channel, a constant channel and a constant token (flat groups).
at::Tensor kv_like(int64_t b, int64_t h, int64_t n, int64_t d) {
  at::Tensor x = at::randn({b, h, n, d});
  x.select(-1, 1).mul_(8.0);
  x.select(-1, 2).fill_(0.75);
  x.select(2, n / 2).fill_(-1.25);
  return x;
}

TEST_P(QuantizePack, CodesAndScalesEqualTheTensorOpQuantizer) {
  at::manual_seed(1);
  for (int bits : {1, 2, 3, 4, 8})
    for (ScaleAxis axis : {ScaleAxis::Channel, ScaleAxis::Token})
      for (double clip : {1.0, 0.5})
        for (auto dtype : {at::kFloat, at::kHalf}) {
          const at::Tensor x = kv_like(2, 3, 37, 80).to(dtype);
          RangeConfig rc;
          rc.bits = bits;
          rc.granularity = axis == ScaleAxis::Channel ? Granularity::Channel : Granularity::Token;
          rc.clip = clip;
          UniformQuantized want(x, rc, true);
          kernels::PackedKV got = kernels::quantize_pack(x.to(GetParam()), bits, axis, clip);
          const std::string what = "bits=" + std::to_string(bits) + " axis=" + (axis == ScaleAxis::Channel ? "channel" : "token") +
                                   " clip=" + std::to_string(clip) + " " + c10::toString(dtype);
          EXPECT_TRUE(at::equal(got.packed.cpu(), want.packed())) << what;
          EXPECT_TRUE(at::equal(got.scale.cpu(), want.params().scale)) << what;
          EXPECT_TRUE(at::equal(got.zero.cpu(), want.params().zero)) << what;
          EXPECT_EQ(got.bits, kernels::storage_bits(bits)) << what;
        }
}

// Through the registry: a CUDA quantizer (which takes the kernel) gives the CPU quantizer's codes.
TEST_P(QuantizePack, QuantizersOnTheDeviceGiveTheCpuCodes) {
  at::manual_seed(2);
  const at::Tensor x = kv_like(1, 2, 129, 128);
  for (const std::string spec : {"calibquant:bits=1", "post_scaled:bits=2,axis=token", "post_scaled:bits=4,axis=channel"}) {
    auto q = make_quantizer(spec, KVRole::Key);
    auto cpu = q->quantize(x), dev = q->quantize(x.to(GetParam()));
    EXPECT_TRUE(at::equal(dev->codes().cpu(), cpu->codes())) << spec;
    // Dequantization is tensor ops on either device: equal up to float rounding.
    EXPECT_TRUE(at::allclose(dev->dequantize().cpu(), cpu->dequantize(), 1e-6, 1e-6)) << spec;
  }
}

TEST_P(QuantizePack, RejectsBadInput) {
  EXPECT_THROW(kernels::quantize_pack(at::randn({2, 3, 4}).to(GetParam()), 1, ScaleAxis::Channel, 1.0), c10::Error);
  EXPECT_THROW(kernels::quantize_pack(at::randn({1, 1, 4, 8}).to(GetParam()), 9, ScaleAxis::Channel, 1.0), c10::Error);
}

CALIBQ_ON_EACH_DEVICE(QuantizePack);

}  // namespace
}  // namespace calibq
