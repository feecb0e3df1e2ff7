// cuRAND's device API (curand_kernel.h) in kernels: it compiles unchanged in the emulation, with its device branches
// (tests/emu/curand_kernel.h), and draws the Philox stream. Per thread (seed, subsequence = thread, offset 0). The raw
// integers equal the host generator's bit for bit; the normals are Box-Muller of them through the device's
// __sincosf and logf, within curand_bound.h's bound of the host formula (sinf, cosf, logf), not equal to it.
// cuda_compat.h comes first: under emulation it stands in for cuda_runtime.h, which CUDA headers include.
#include "cuda_compat.h"
// (keep the order)
#include <curand.h>
#include <curand_kernel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "curand_bound.h"

namespace {

__global__ void philox_normals(float *out, unsigned long long seed, int per_thread) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  curandStatePhilox4_32_10_t state;
  curand_init(seed, t, 0, &state);
  for (int i = 0; i < per_thread; i += 4) {
    const float4 v = curand_normal4(&state);
    out[t * per_thread + i] = v.x;
    out[t * per_thread + i + 1] = v.y;
    out[t * per_thread + i + 2] = v.z;
    out[t * per_thread + i + 3] = v.w;
  }
}

// The raw 32-bit integers of the same states (curand4: four per Philox block, as curand_normal4 consumes them).
__global__ void philox_integers(unsigned *out, unsigned long long seed, int per_thread) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  curandStatePhilox4_32_10_t state;
  curand_init(seed, t, 0, &state);
  for (int i = 0; i < per_thread; i += 4) {
    const uint4 v = curand4(&state);
    out[t * per_thread + i] = v.x;
    out[t * per_thread + i + 1] = v.y;
    out[t * per_thread + i + 2] = v.z;
    out[t * per_thread + i + 3] = v.w;
  }
}

std::vector<unsigned> draw_integers(unsigned long long seed, int blocks, int threads, int per_thread) {
  const size_t n = (size_t)blocks * threads * per_thread;
  unsigned *d = nullptr;
  EXPECT_EQ(cudaMalloc((void **)&d, n * sizeof(unsigned)), cudaSuccess);
  CUVAE_LAUNCH(philox_integers, blocks, threads, 0, 0, d, seed, per_thread);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<unsigned> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(unsigned), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d);
  return h;
}

// The host branch of _curand_box_muller (curand_normal.h) on the pair (x, y): what the host generator computes.
void host_box_muller(unsigned x, unsigned y, float *n0, float *n1) {
  const float u = x * CURAND_2POW32_INV + (CURAND_2POW32_INV / 2);
  const float v = y * CURAND_2POW32_INV_2PI + (CURAND_2POW32_INV_2PI / 2);
  const float s = sqrtf(-2.0f * logf(u));
  *n0 = sinf(v) * s;
  *n1 = cosf(v) * s;
}

std::vector<float> draw(unsigned long long seed, int blocks, int threads, int per_thread) {
  const size_t n = (size_t)blocks * threads * per_thread;
  float *d = nullptr;
  EXPECT_EQ(cudaMalloc((void **)&d, n * sizeof(float)), cudaSuccess);
  CUVAE_LAUNCH(philox_normals, blocks, threads, 0, 0, d, seed, per_thread);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d);
  return h;
}

TEST(CurandDevice, PhiloxNormalsAreDeterministicAndStandard) {
  const std::vector<float> a = draw(1234, 8, 128, 8), b = draw(1234, 8, 128, 8), c = draw(1235, 8, 128, 8);
  EXPECT_EQ(a, b);  // same seed, same numbers
  EXPECT_NE(a, c);
  double sum = 0, sq = 0;
  for (float v : a) {
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    sq += (double)v * v;
  }
  const double n = (double)a.size(), mean = sum / n, var = sq / n - mean * mean;
  // 8192 standard normals: the mean's standard error is 1/sqrt(8192) = 0.011 and the variance's sqrt(2/8192) =
  // 0.016; 5 standard errors keep a correct generator from failing while catching a wrong scale or shift.
  EXPECT_NEAR(mean, 0.0, 5 * 0.011);
  EXPECT_NEAR(var, 1.0, 5 * 0.016);
}

// Every thread's normals are Box-Muller of its own raw integers: within curand_bound.h's bound of the host formula,
// never farther (a wrong pairing, offset or scale is off by O(1)). Under the emulation some must differ: its
// __sincosf is not sinf/cosf, as on a GPU.
TEST(CurandDevice, NormalsAreTheHostFormulaOfTheRawIntegersWithinTheBound) {
  const std::vector<float> dev = draw(1234, 8, 128, 8);
  const std::vector<unsigned> raw = draw_integers(1234, 8, 128, 8);
  ASSERT_EQ(dev.size(), raw.size());
  size_t differ = 0;
  double worst = 0.0;  // max |dev - host| / bound
  for (size_t i = 0; i < raw.size(); i += 2) {
    float h[2];
    host_box_muller(raw[i], raw[i + 1], &h[0], &h[1]);
    for (int k = 0; k < 2; k++) {
      const double bound = curand_bound::normal_bound(raw[i], 0.0, 1.0, h[k]);
      const double d = std::fabs((double)dev[i + k] - h[k]);
      ASSERT_LE(d, bound) << "normal " << i + k << ": device " << dev[i + k] << " host formula " << h[k];
      worst = std::max(worst, d / bound);
      differ += dev[i + k] != h[k];
    }
  }
  std::printf("%zu of %zu device normals differ from the host formula; max |difference| %.3g of the bound\n", differ,
              dev.size(), worst);
#ifdef CUVAE_CUDA_EMU
  EXPECT_GT(differ, dev.size() / 10);
#endif
}

// Thread 0's first four integers (subsequence 0, offset 0) are the first four of the generator API's Philox stream
// for the same seed, bit for bit, and its first four normals are within the bound of the host generator's; beyond
// that the generator API interleaves subsequences, so the two orders differ.
TEST(CurandDevice, FirstBlockMatchesTheGeneratorApi) {
  const std::vector<float> dev = draw(42, 1, 1, 4);
  const std::vector<unsigned> raw = draw_integers(42, 1, 1, 4);
  curandGenerator_t g;
  ASSERT_EQ(curandCreateGeneratorHost(&g, CURAND_RNG_PSEUDO_PHILOX4_32_10), CURAND_STATUS_SUCCESS);
  ASSERT_EQ(curandSetPseudoRandomGeneratorSeed(g, 42), CURAND_STATUS_SUCCESS);
  unsigned host_raw[4];
  ASSERT_EQ(curandGenerate(g, host_raw, 4), CURAND_STATUS_SUCCESS);
  ASSERT_EQ(curandSetGeneratorOffset(g, 0), CURAND_STATUS_SUCCESS);
  float host[4];
  ASSERT_EQ(curandGenerateNormal(g, host, 4, 0.0f, 1.0f), CURAND_STATUS_SUCCESS);
  curandDestroyGenerator(g);
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(raw[i], host_raw[i]) << i;
    EXPECT_LE(std::fabs((double)dev[i] - host[i]), curand_bound::normal_bound(raw[i & ~1], 0.0, 1.0, host[i])) << i;
  }
}

}  // namespace
