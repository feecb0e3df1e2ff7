// kernels/bf16.cu against its CPU twin: to_bf16_cuda vs to_bf16_cpu (src/backend/cpu/bf16_cpu.c) bit for bit, on
// every kind of float (normal, subnormal, zeros, infinities, exact ties in both directions, the largest floats that
// round up to infinity) and on lengths around the grid's stride; a NaN stays a NaN (the device writes its canonical
// NaN, the CPU keeps the payload's top bits, so NaNs compare by class); argument validation.
#include "cuda_compat.h"

#include <float.h>
#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <random>
#include <vector>

#include "cuvae/bf16.h"
#include "cuvae/cpu.h"
#include "cuvae_kernels.h"
#include "device_vec.h"

namespace {

float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// Floats of every class: special values, ties (low 16 bits exactly 0x8000, even and odd kept parts), neighbours of
// ties, the largest finite floats (round to infinity), subnormals, then random bit patterns (NaNs among them).
std::vector<float> inputs(size_t n) {
  std::vector<float> x = {0.0f, -0.0f, INFINITY, -INFINITY, 1.0f, -1.0f, FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f,
                          from_bits(0x3f808000u), from_bits(0x3f818000u), from_bits(0x3f807fffu),
                          from_bits(0x3f808001u), from_bits(0xbf818000u), from_bits(0x7f7f8000u),
                          from_bits(0x7f7f7fffu), from_bits(0x00008000u), from_bits(0x00018000u)};
  std::mt19937 rng(17);
  std::uniform_int_distribution<uint32_t> bits;
  std::normal_distribution<float> normal(0.0f, 3.0f);
  while (x.size() < n) x.push_back(x.size() % 2 ? from_bits(bits(rng)) : normal(rng));
  x.resize(n);
  return x;
}

void expect_twin(size_t n) {
  SCOPED_TRACE(testing::Message() << "n " << n);
  const std::vector<float> x = inputs(n);
  std::vector<uint16_t> cpu(n);
  to_bf16_cpu(x.data(), cpu.data(), n);
  DeviceVec<float> d_x(x);
  DeviceVec<uint16_t> d_y(n);
  ASSERT_EQ(cudaSuccess, to_bf16_cuda(d_x.p, d_y.p, n, 0));
  ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
  const std::vector<uint16_t> gpu = d_y.get();
  size_t nans = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(x[i])) {  // a NaN on both sides, whatever its payload
      nans++;
      ASSERT_TRUE(isnan(cuvae_bf16_to_float(gpu[i]))) << i;
      ASSERT_TRUE(isnan(cuvae_bf16_to_float(cpu[i]))) << i;
      continue;
    }
    ASSERT_EQ(gpu[i], cpu[i]) << "x[" << i << "] = " << x[i];
  }
  if (n > 1000) {
    EXPECT_GT(nans, 0u) << "random bit patterns include NaNs";
  }
}

TEST(KernelBf16, ConversionMatchesCpuBitForBit) {
  for (size_t n : {size_t{1}, size_t{19}, size_t{1000}, size_t{65537}}) expect_twin(n);
}

// The ties and the rounding to infinity, spelled out (docs/MATH.md (8.1): nearest, ties to even).
TEST(KernelBf16, TiesRoundToEven) {
  const std::vector<float> x = {from_bits(0x3f808000u), from_bits(0x3f818000u), from_bits(0x7f7fffffu),
                                from_bits(0x3f807fffu)};
  DeviceVec<float> d_x(x);
  DeviceVec<uint16_t> d_y(x.size());
  ASSERT_EQ(cudaSuccess, to_bf16_cuda(d_x.p, d_y.p, x.size(), 0));
  ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
  EXPECT_EQ(d_y.get(), (std::vector<uint16_t>{0x3f80, 0x3f82, 0x7f80, 0x3f80}));
}

TEST(KernelBf16, RejectsInvalidArguments) {
  DeviceVec<float> x(4);
  DeviceVec<uint16_t> y(4);
  EXPECT_EQ(cudaErrorInvalidValue, to_bf16_cuda(nullptr, y.p, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, to_bf16_cuda(x.p, nullptr, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, to_bf16_cuda(x.p, y.p, 0, 0));
}

}  // namespace
