// The fixture of tests that run one body on the CPU and on CUDA: the CUDA instance skips itself
// where no GPU (or no CUDA build) is present.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>

#include "kernels/cuda_dispatch.h"

namespace calibq::test {

class OnEachDevice : public ::testing::TestWithParam<at::DeviceType> {
 protected:
  void SetUp() override {
    if (GetParam() == at::kCUDA && !kernels::cuda_available()) GTEST_SKIP() << "no CUDA device";
  }
  at::Device device() const { return at::Device(GetParam()); }
};

// Instance names: Devices/Suite.Test/CPU and .../CUDA.
inline std::string device_name(const ::testing::TestParamInfo<at::DeviceType>& info) {
  return info.param == at::kCPU ? "CPU" : "CUDA";
}

// got and want (tensors of `dtype`) rounded alike: every element within `ulps` units of the
// dtype's last place of |want| + scale (scale: the magnitude of the terms a sum cancelled, or
// zeros), and for 16-bit dtypes at most `max_unequal` of the elements not bit-equal (float
// arithmetic in another order may flip a rare rounding to the dtype; a missing or extra
// rounding to it flips many). float32 has no such rounding to check: its last bits follow the
// order of the float sums.
inline void expect_rounded_alike(const at::Tensor& got, const at::Tensor& want, const at::Tensor& scale,
                                 at::ScalarType dtype, double ulps, double max_unequal, const std::string& what) {
  const double ulp = dtype == at::kFloat ? 1.2e-7 : dtype == at::kHalf ? 9.8e-4 : 7.9e-3;
  const at::Tensor g = got.cpu().to(at::kDouble), w = want.cpu().to(at::kDouble);
  const at::Tensor allowed = ulps * ulp * (scale.cpu().to(at::kDouble) + w.abs()) + 1e-30;
  EXPECT_TRUE(((g - w).abs() <= allowed).all().item<bool>()) << what << ": max |diff| " << (g - w).abs().max().item<double>();
  const double unequal = (g != w).to(at::kDouble).mean().item<double>();
  if (dtype != at::kFloat) {
    EXPECT_LE(unequal, max_unequal) << what << ": elements not bit-equal";
  }
}

}  // namespace calibq::test

// Instantiates a suite derived from OnEachDevice for the CPU and CUDA.
#define CALIBQ_ON_EACH_DEVICE(Suite) \
  INSTANTIATE_TEST_SUITE_P(Devices, Suite, ::testing::Values(at::kCPU, at::kCUDA), ::calibq::test::device_name)
