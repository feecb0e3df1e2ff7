// __nv_bfloat16 in kernels: the toolkit's cuda_bf16.h compiles unchanged in emulated kernels (its host code path), and
// __float2bfloat16 / __float2bfloat16_rn round exactly as cuvae_bf16_from_float (include/cuvae/bf16.h, the rounding
// the CPU backend uses) over a sweep of every bf16 value's neighbourhood: ties, subnormals, Inf, the largest finite
// values. The one difference is NaN: the toolkit gives the canonical NaN 0x7FFF (CUDART_NAN_BF16), as the device's
// cvt.rn.bf16.f32 does, where cuvae_bf16_from_float keeps the sign and payload. __nv_bfloat162 pairs load, convert
// and store. Ordinary CUDA: the same file runs natively with nvcc (label gpu), where it checks the device's rounding.
#include "cuda_compat.h"
// (keep the order)
#include <cuda_bf16.h>
#include <gtest/gtest.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "cuvae/bf16.h"
#include "device_vec.h"

namespace {

__global__ void convert(const float *x, __nv_bfloat16 *rn, __nv_bfloat16 *plain, float *back, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    rn[i] = __float2bfloat16_rn(x[i]);
    plain[i] = __float2bfloat16(x[i]);
    back[i] = __bfloat162float(rn[i]);
  }
}

// out[i] = (2 hi, lo) of in[i], through floats: a swap and an exact doubling (or Inf).
__global__ void pairs(const __nv_bfloat162 *in, __nv_bfloat162 *out, float *lo, float *hi, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const __nv_bfloat162 v = in[i];
    lo[i] = __low2float(v), hi[i] = __high2float(v);
    out[i] = __floats2bfloat162_rn(2.0f * hi[i], lo[i]);
  }
}

uint16_t bits(__nv_bfloat16 h) {
  uint16_t u;
  memcpy(&u, &h, sizeof u);
  return u;
}

// Every upper half (every bf16 value) with lower halves that round down, tie (0x8000: to even, both ways), and
// round up; the upper halves include zeros, subnormals, the largest finite values (0x7F7F: 0x7F7F8000 ties up to
// Inf, 0x7F7FFFFF = FLT_MAX rounds to Inf), Inf and NaNs.
std::vector<float> sweep() {
  const uint32_t lows[] = {0x0000, 0x0001, 0x4000, 0x7FFF, 0x8000, 0x8001, 0xC000, 0xFFFF};
  std::vector<float> x;
  for (uint32_t hi = 0; hi < 0x10000; ++hi)
    for (uint32_t lo : lows) {
      const uint32_t u = hi << 16 | lo;
      float f;
      memcpy(&f, &u, sizeof f);
      x.push_back(f);
    }
  return x;
}

TEST(Bf16, ConversionsMatchTheCpuRoundingBitForBit) {
  const std::vector<float> x = sweep();
  const int n = (int)x.size();
  DeviceVec<float> dx(x), dback(n);
  DeviceVec<__nv_bfloat16> drn(n), dplain(n);
  CUVAE_LAUNCH(convert, 64, 256, 0, 0, dx.p, drn.p, dplain.p, dback.p, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<__nv_bfloat16> rn = drn.get(), plain = dplain.get();
  const std::vector<float> back = dback.get();
  int nans = 0, ties = 0;
  for (int i = 0; i < n; ++i) {
    uint32_t u;
    memcpy(&u, &x[i], sizeof u);
    ties += (u & 0xFFFF) == 0x8000;
    EXPECT_EQ(bits(plain[i]), bits(rn[i])) << std::hex << u;  // __float2bfloat16 is round-to-nearest-even too
    const float want_back = cuvae_bf16_to_float(bits(rn[i]));
    EXPECT_EQ(memcmp(&back[i], &want_back, sizeof want_back), 0) << std::hex << u;  // bf16 -> float is exact
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: the canonical NaN, whatever the sign and payload
      ++nans;
      EXPECT_EQ(bits(rn[i]), 0x7FFF) << std::hex << u;
      continue;
    }
    EXPECT_EQ(bits(rn[i]), cuvae_bf16_from_float(x[i])) << std::hex << u;
  }
  EXPECT_EQ(nans, 2 * 8 * 127 + 2 * 7);  // 2 signs x 127 NaN upper halves x 8, + 7 each of 0x7F80/0xFF80
  EXPECT_EQ(ties, 0x10000);
}

TEST(Bf16, PairsLoadConvertAndStore) {
  const int n = 1000;
  std::vector<__nv_bfloat162> in(n);
  for (int i = 0; i < n; ++i) {
    __nv_bfloat162 v;
    v.x = __float2bfloat16_rn(0.37f * (float)i - 100.0f);
    v.y = __float2bfloat16_rn(1.0f / (float)(i + 1));
    in[i] = v;
  }
  DeviceVec<__nv_bfloat162> din(in), dout(n);
  DeviceVec<float> dlo(n), dhi(n);
  CUVAE_LAUNCH(pairs, 4, 128, 0, 0, din.p, dout.p, dlo.p, dhi.p, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<__nv_bfloat162> out = dout.get();
  const std::vector<float> lo = dlo.get(), hi = dhi.get();
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(lo[i], cuvae_bf16_to_float(bits(in[i].x))) << i;
    EXPECT_EQ(hi[i], cuvae_bf16_to_float(bits(in[i].y))) << i;
    EXPECT_EQ(bits(out[i].x), cuvae_bf16_from_float(2.0f * hi[i])) << i;  // exact: a power-of-two scaling
    EXPECT_EQ(bits(out[i].y), bits(in[i].x)) << i;
  }
}

}  // namespace
