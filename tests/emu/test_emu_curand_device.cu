// cuRAND's device API (curand_kernel.h) in kernels: it compiles unchanged in the emulation and draws the Philox
// stream. Per thread (seed, subsequence = thread, offset 0), as the VAE kernels will use it.
// cuda_compat.h comes first: under emulation it stands in for cuda_runtime.h, which CUDA headers include.
#include "cuda_compat.h"
// (keep the order)
#include <curand.h>
#include <curand_kernel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

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

// Thread 0's first four normals (subsequence 0, offset 0) are the first four of the generator API's Philox
// stream for the same seed; beyond that the generator API interleaves subsequences, so the two orders differ.
TEST(CurandDevice, FirstBlockMatchesTheGeneratorApi) {
  const std::vector<float> dev = draw(42, 1, 1, 4);
  curandGenerator_t g;
  ASSERT_EQ(curandCreateGeneratorHost(&g, CURAND_RNG_PSEUDO_PHILOX4_32_10), CURAND_STATUS_SUCCESS);
  ASSERT_EQ(curandSetPseudoRandomGeneratorSeed(g, 42), CURAND_STATUS_SUCCESS);
  float host[4];
  ASSERT_EQ(curandGenerateNormal(g, host, 4, 0.0f, 1.0f), CURAND_STATUS_SUCCESS);
  curandDestroyGenerator(g);
  for (int i = 0; i < 4; i++) EXPECT_EQ(dev[i], host[i]) << i;
}

}  // namespace
