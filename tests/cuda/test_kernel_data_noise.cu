// kernels/data_noise.cu against its CPU twins (src/backend/cpu/data_noise_cpu.c): binarize_cuda, dequantize_cuda,
// corrupt_gaussian_cuda and corrupt_mask_cuda, with uniforms and normals from the project's noise stream
// (cuvae_noise_uniform / _normal, the draws training uses), at n in {1, 7, 1000, 100003, 300001} (300001 > one
// grid-stride wave of 1024 x 256), out of place and in place; binarize's statistics and its exact 0/1 at x = 0 and x =
// 1; dequantization's bins and mean; masking's rate; determinism, argument checks and graph replay. Runs emulated (emu)
// and natively (gpu).
//
// Tolerances. GPU against twin: the same float operations (a comparison; x + std * noise with the product rounded on
// its own, __fmul_rn), so bitwise equal. The twin's corrupt_gaussian against the formula in double: the product
// and the sum round once each, |ref - out| <= u |std noise| + u |out| (u = 2^-24); dequantize against (k + u) / 256
// in double: k + u rounds once, the product by 2^-8 is exact, |ref - out| <= u |out|. Statistics: a count of n
// Bernoulli(p) draws has standard deviation sqrt(n p (1 - p)); the observed rate must lie within 5 of them of p (a
// false alarm has probability < 1e-6 per check, and the draws are fixed by the seed, so a pass is reproducible).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <string.h>

#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae/rng.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

const double kU = ldexp(1.0, -24);
const size_t kSizes[] = {1, 7, 1000, 100003, 300001};

// n values of the data-noise stream (seed ^ CUVAE_SEED_DATA, as training draws them): uniforms in (0, 1] or normals.
std::vector<float> draw(size_t n, bool normal, uint64_t seed) {
  std::vector<float> v(n);
  cuvae_noise *g = cuvae_noise_create(seed ^ CUVAE_SEED_DATA);
  EXPECT_NE(nullptr, g);
  if (!g) return v;
  EXPECT_EQ(0, normal ? cuvae_noise_normal(g, 0, v.data(), n) : cuvae_noise_uniform(g, 0, v.data(), n));
  cuvae_noise_destroy(g);
  return v;
}

// 8-bit data k / 255 (as the loader makes them from uint8), every k in turn.
std::vector<float> make_8bit(size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; i++) x[i] = (float)(i % 256) / 255.0f;
  return x;
}

// Pixel-like data in [0, 1] with exact 0s and 1s.
std::vector<float> make_x(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; i++) x[i] = i % 5 == 0 ? 0.0f : i % 7 == 0 ? 1.0f : u(rng);
  return x;
}

bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

enum Op { kBinarize, kGaussian, kMask, kDequantize };
const float kStd = 0.3f, kP = 0.25f;

// One op on the device; in place writes into the x buffer.
std::vector<float> run_gpu(Op op, const std::vector<float> &x, const std::vector<float> &noise, bool in_place,
                           cudaStream_t stream = 0) {
  DeviceVec<float> d_x(x), d_noise(noise), d_out(in_place ? 1 : x.size());
  float *out = in_place ? d_x.p : d_out.p;
  const size_t n = x.size();
  const cudaError_t err = op == kBinarize     ? binarize_cuda(d_x.p, d_noise.p, out, n, stream)
                          : op == kGaussian   ? corrupt_gaussian_cuda(d_x.p, d_noise.p, kStd, out, n, stream)
                          : op == kDequantize ? dequantize_cuda(d_x.p, d_noise.p, out, n, stream)
                                              : corrupt_mask_cuda(d_x.p, d_noise.p, kP, out, n, stream);
  EXPECT_EQ(cudaSuccess, err);
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(stream));
  return in_place ? d_x.get() : d_out.get();
}

std::vector<float> run_cpu(Op op, std::vector<float> x, const std::vector<float> &noise, bool in_place) {
  std::vector<float> sep(x.size());
  float *out = in_place ? x.data() : sep.data();
  if (op == kBinarize) binarize_cpu(x.data(), noise.data(), out, x.size());
  if (op == kGaussian) corrupt_gaussian_cpu(x.data(), noise.data(), kStd, out, x.size());
  if (op == kMask) corrupt_mask_cpu(x.data(), noise.data(), kP, out, x.size());
  if (op == kDequantize) dequantize_cpu(x.data(), noise.data(), out, x.size());
  return in_place ? x : sep;
}

TEST(KernelDataNoise, MatchesCpuBitwise) {
  for (size_t n : kSizes)
    for (Op op : {kBinarize, kGaussian, kMask, kDequantize})
      for (bool in_place : {false, true}) {
        SCOPED_TRACE(testing::Message() << "op " << op << " n " << n << " in place " << in_place);
        const std::vector<float> x = op == kDequantize ? make_8bit(n) : make_x(n, (unsigned)n),
                                 noise = draw(n, op == kGaussian, n + op);
        const std::vector<float> cpu = run_cpu(op, x, noise, in_place);
        EXPECT_TRUE(bitwise_equal(cpu, run_gpu(op, x, noise, in_place)));
        // The twins against their definitions.
        for (size_t i = 0; i < n; i++) {
          const double ref = op == kBinarize     ? (noise[i] <= x[i] ? 1.0 : 0.0)
                             : op == kMask       ? (noise[i] <= kP ? 0.0 : x[i])
                             : op == kDequantize ? ((double)(i % 256) + noise[i]) / 256.0
                                                 : (double)x[i] + (double)kStd * noise[i];
          const double tol = op == kGaussian     ? kU * fabs((double)kStd * noise[i]) + kU * fabs(cpu[i])
                             : op == kDequantize ? kU * fabs(cpu[i])
                                                 : 0.0;
          ASSERT_LE(fabs(ref - cpu[i]), tol) << i;
        }
      }
}

// P(out = 1) = x: 20000 draws at each of several x; exactly 0 at x = 0 and exactly 1 at x = 1, also for the
// extreme uniforms u = 1 and u = FLT_MIN (the stream's range is (0, 1]).
TEST(KernelDataNoise, BinarizeIsBernoulli) {
  const float levels[] = {0.0f, 0.05f, 0.3f, 0.5f, 0.77f, 0.95f, 1.0f};
  const size_t per = 20000, L = sizeof(levels) / sizeof(levels[0]);
  std::vector<float> x(per * L);
  for (size_t i = 0; i < x.size(); i++) x[i] = levels[i % L];
  std::vector<float> u = draw(x.size(), false, 7);
  for (size_t k = 0; k < 2 * L; k++) u[k] = k < L ? 1.0f : 1.17549435e-38f;  // u = 1 and FLT_MIN at every level
  for (float v : u) ASSERT_TRUE(v > 0.0f && v <= 1.0f) << "uniforms in (0, 1]";
  const std::vector<float> out = run_gpu(kBinarize, x, u, false);
  std::vector<double> ones(L, 0.0);
  for (size_t i = 0; i < out.size(); i++) {
    ASSERT_TRUE(out[i] == 0.0f || out[i] == 1.0f) << i;
    ones[i % L] += out[i];
  }
  for (size_t l = 0; l < L; l++) {
    const double p = levels[l], rate = ones[l] / per;
    if (p == 0.0 || p == 1.0) {
      EXPECT_EQ(p, rate) << "x = " << p << " must give exactly " << p;
    } else {
      EXPECT_LE(fabs(rate - p), 5 * sqrt(p * (1 - p) / per)) << "x = " << p << " rate " << rate;
      printf("[ measured ] x = %.2f: P(1) = %.4f (%.2f sd)\n", p, rate, fabs(rate - p) / sqrt(p * (1 - p) / per));
    }
  }
}

// Dequantization, docs/MATH.md (4.6): every value of 256 * out - k lies in [0, 1] (u in (0, 1]; k + u may round to
// k or k + 1 in float at the ends) and its mean over n draws is 1/2 within 5 sd = 5 / sqrt(12 n) (a uniform's sd is
// 1/sqrt 12); u = 1 gives exactly (k + 1) / 256.
TEST(KernelDataNoise, DequantizeFillsTheBin) {
  const size_t n = 256 * 400;
  const std::vector<float> x = make_8bit(n);
  std::vector<float> u = draw(n, false, 19);
  for (size_t k = 0; k < 256; k++) u[k] = 1.0f;
  const std::vector<float> out = run_gpu(kDequantize, x, u, false);
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    const double k = (double)(i % 256), t = 256.0 * out[i] - k;
    ASSERT_TRUE(t >= 0.0 && t <= 1.0) << i << ": " << out[i] << " outside bin " << k;
    if (i < 256) {
      ASSERT_EQ((float)((k + 1) / 256.0), out[i]) << "u = 1, k " << k;
    }
    sum += t;
  }
  const double mean = sum / n, sd = 1.0 / sqrt(12.0 * n);
  EXPECT_LE(fabs(mean - 0.5), 5 * sd) << "mean offset in the bin " << mean;
  printf("[ measured ] mean offset in the bin %.5f (%.2f sd from 1/2)\n", mean, fabs(mean - 0.5) / sd);
}

// Masking zeroes a fraction p (5 sd); p = 0 keeps x exactly, p = 1 zeroes everything; std = 0 gives x exactly.
TEST(KernelDataNoise, MaskRateAndLimits) {
  const size_t n = 100003;
  const std::vector<float> x(n, 0.5f), u = draw(n, false, 11), z = draw(n, true, 12);
  const std::vector<float> out = run_gpu(kMask, x, u, false);
  double zeroed = 0;
  for (float v : out) zeroed += v == 0.0f;
  EXPECT_LE(fabs(zeroed / n - kP), 5 * sqrt(kP * (1 - kP) / n)) << "rate " << zeroed / n;
  DeviceVec<float> d_x(x), d_u(u), d_z(z), d_out(n);
  CUDA_OK(corrupt_mask_cuda(d_x.p, d_u.p, 0.0f, d_out.p, n, 0));
  EXPECT_TRUE(bitwise_equal(x, d_out.get())) << "p = 0";
  CUDA_OK(corrupt_mask_cuda(d_x.p, d_u.p, 1.0f, d_out.p, n, 0));
  EXPECT_TRUE(bitwise_equal(std::vector<float>(n, 0.0f), d_out.get())) << "p = 1";
  CUDA_OK(corrupt_gaussian_cuda(d_x.p, d_z.p, 0.0f, d_out.p, n, 0));
  EXPECT_TRUE(bitwise_equal(x, d_out.get())) << "std = 0";
}

TEST(KernelDataNoise, Deterministic) {
  const size_t n = 300001;
  const std::vector<float> x = make_x(n, 13), u = draw(n, false, 14), z = draw(n, true, 15);
  for (Op op : {kBinarize, kGaussian, kMask, kDequantize}) {
    const std::vector<float> &noise = op == kGaussian ? z : u;
    EXPECT_TRUE(bitwise_equal(run_gpu(op, x, noise, false), run_gpu(op, x, noise, false))) << "op " << op;
  }
}

TEST(KernelDataNoise, InvalidArguments) {
  DeviceVec<float> a(4), b(4), c(4);
  const cudaError_t inval = cudaErrorInvalidValue;
  EXPECT_EQ(inval, binarize_cuda(a.p, b.p, c.p, 0, 0));
  EXPECT_EQ(inval, binarize_cuda(nullptr, b.p, c.p, 4, 0));
  EXPECT_EQ(inval, binarize_cuda(a.p, nullptr, c.p, 4, 0));
  EXPECT_EQ(inval, binarize_cuda(a.p, b.p, nullptr, 4, 0));
  EXPECT_EQ(inval, dequantize_cuda(a.p, b.p, c.p, 0, 0));
  EXPECT_EQ(inval, dequantize_cuda(nullptr, b.p, c.p, 4, 0));
  EXPECT_EQ(inval, dequantize_cuda(a.p, nullptr, c.p, 4, 0));
  EXPECT_EQ(inval, dequantize_cuda(a.p, b.p, nullptr, 4, 0));
  EXPECT_EQ(inval, corrupt_gaussian_cuda(a.p, b.p, 0.1f, c.p, 0, 0));
  EXPECT_EQ(inval, corrupt_gaussian_cuda(nullptr, b.p, 0.1f, c.p, 4, 0));
  EXPECT_EQ(inval, corrupt_gaussian_cuda(a.p, nullptr, 0.1f, c.p, 4, 0));
  EXPECT_EQ(inval, corrupt_gaussian_cuda(a.p, b.p, 0.1f, nullptr, 4, 0));
  for (float bad : {-0.1f, NAN, INFINITY}) EXPECT_EQ(inval, corrupt_gaussian_cuda(a.p, b.p, bad, c.p, 4, 0)) << bad;
  EXPECT_EQ(inval, corrupt_mask_cuda(a.p, b.p, 0.5f, c.p, 0, 0));
  EXPECT_EQ(inval, corrupt_mask_cuda(nullptr, b.p, 0.5f, c.p, 4, 0));
  EXPECT_EQ(inval, corrupt_mask_cuda(a.p, nullptr, 0.5f, c.p, 4, 0));
  EXPECT_EQ(inval, corrupt_mask_cuda(a.p, b.p, 0.5f, nullptr, 4, 0));
  for (float bad : {-0.1f, 1.5f, NAN}) EXPECT_EQ(inval, corrupt_mask_cuda(a.p, b.p, bad, c.p, 4, 0)) << bad;
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // nothing was launched
}

// Binarize, then mask in place, captured into one graph: two replays equal the eager launches bitwise.
TEST(KernelDataNoise, GraphReplayEqualsEager) {
  const size_t n = 128 * 784;
  const std::vector<float> x = make_x(n, 16), u = draw(n, false, 17), v = draw(n, false, 18);
  DeviceVec<float> d_x(x), d_u(u), d_v(v), out(n);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  auto enqueue = [&]() {
    EXPECT_EQ(cudaSuccess, binarize_cuda(d_x.p, d_u.p, out.p, n, stream));
    EXPECT_EQ(cudaSuccess, corrupt_mask_cuda(out.p, d_v.p, kP, out.p, n, stream));
  };
  enqueue();
  CUDA_OK(cudaStreamSynchronize(stream));
  const std::vector<float> want = out.get();
  EXPECT_TRUE(bitwise_equal(run_cpu(kMask, run_cpu(kBinarize, x, u, false), v, true), want));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  enqueue();
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; replay++) {
    out.zero();
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT_TRUE(bitwise_equal(want, out.get())) << "replay " << replay;
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace
