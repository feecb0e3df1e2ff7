// kernels/ema.cu against its CPU twin (src/backend/cpu/ema_cpu.c): ema_update_cuda vs ema_update_cpu bit for bit over
// 3 consecutive updates, for n in {1, 7, 1000, 4099, 300001} (300001 > one grid-stride wave), decays {0, 0.5, 0.9,
// 0.999}, buffers at 16-byte boundaries and one float past them; the twin against the formula of docs/MATH.md (7.5)
// in double; held (nothing written) when *halted != 0 or scalars[5] != 0 (a skipped update), applied with scalars NULL
// or scalars[5] == 0; a graph captured once whose replays follow scalars[5]; argument checks. Runs emulated (emu) and
// natively (gpu).
//
// Tolerances. GPU against twin: the same float operations in the same order (keep = 1 - d; d e and keep p each rounded
// on its own, __fmul_rn, then their sum, __fadd_rn; the CPU compiles ISO C without FMA contraction): bitwise equal.
// The twin against the formula in double: for d >= 0.5, keep = 1 - d is exact (Sterbenz); each product and the sum
// round once, so |out - (d e + (1 - d) p)| <= u |d e| + u |keep p| + u (1 + u)(|d e| + |keep p|) <= 3 u (|d e| + |keep
// p|), u = 2^-24. For d = 0: keep = 1 and d e = 0, the result is p exactly.
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <string.h>

#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

const double kU = ldexp(1.0, -24);
const size_t kSizes[] = {1, 7, 1000, 4099, 300001};
const float kDecays[] = {0.0f, 0.5f, 0.9f, 0.999f};

// Weights in [-2, 2] with exact zeros and a few large and tiny magnitudes.
std::vector<float> weights(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> w(n);
  for (size_t i = 0; i < n; i++) {
    const float r = u(rng);
    w[i] = i % 11 == 3 ? 0.0f : i % 13 == 5 ? 1e4f * r : i % 17 == 7 ? 1e-30f * r : r;
  }
  return w;
}

bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The first index where a and b differ in bits, for the failure message (a.size() when none).
size_t first_difference(const std::vector<float> &a, const std::vector<float> &b) {
  for (size_t i = 0; i < a.size(); i++)
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return i;
  return a.size();
}

// ema_update_cpu against docs/MATH.md (7.5) in double, within the bound stated at the top.
void expect_twin_matches_formula(const std::vector<float> &before, const std::vector<float> &p,
                                 const std::vector<float> &after, float d) {
  for (size_t i = 0; i < p.size(); i++) {
    const double de = (double)d * before[i], kp = (1.0 - (double)d) * p[i];
    if (d == 0.0f) {
      ASSERT_EQ(p[i], after[i]) << i;
      continue;
    }
    ASSERT_LE(fabs((double)after[i] - (de + kp)), 3 * kU * (fabs(de) + fabs(kp))) << i;
  }
}

// Three updates of the EMA toward three sets of weights, on the device (buffers `offset` floats past a 16-byte
// boundary) and with the twin: bit for bit after each.
TEST(KernelEma, MatchesCpuBitForBit) {
  for (size_t n : kSizes)
    for (float d : kDecays)
      for (size_t offset : {size_t{0}, size_t{1}}) {
        SCOPED_TRACE(testing::Message() << "n " << n << " decay " << d << " offset " << offset);
        std::vector<float> cpu = weights(n, 1u + (unsigned)n);
        DeviceVec<float> d_e(n + 1), d_p(n + 1);
        float *e = d_e.p + offset, *p = d_p.p + offset;
        CUDA_OK(cudaMemcpy(e, cpu.data(), n * sizeof(float), cudaMemcpyHostToDevice));
        for (unsigned k = 0; k < 3; k++) {
          const std::vector<float> w = weights(n, 100u * k + 7u + (unsigned)n), before = cpu;
          CUDA_OK(cudaMemcpy(p, w.data(), n * sizeof(float), cudaMemcpyHostToDevice));
          CUDA_OK(ema_update_cuda(e, p, n, d, nullptr, nullptr, 0));  // scalars NULL: never skipped
          CUDA_OK(cudaDeviceSynchronize());
          ema_update_cpu(cpu.data(), w.data(), n, d);
          ASSERT_NO_FATAL_FAILURE(expect_twin_matches_formula(before, w, cpu, d));
          std::vector<float> gpu(n);
          CUDA_OK(cudaMemcpy(gpu.data(), e, n * sizeof(float), cudaMemcpyDeviceToHost));
          ASSERT_TRUE(bitwise_equal(gpu, cpu)) << "update " << k << ", first difference at "
                                               << first_difference(gpu, cpu);
          ASSERT_FALSE(bitwise_equal(cpu, before)) << "the update moved the EMA (so the check can fail)";
        }
      }
}

// Exact values: d = 0.5: e = 0.5 e + 0.5 p (every operation exact here); d = 0.75: 0.75 * 4 + 0.25 * 8 = 5.
TEST(KernelEma, ExactValues) {
  DeviceVec<float> e(std::vector<float>{1.0f, -2.0f, 4.0f}), p(std::vector<float>{3.0f, 2.0f, 8.0f});
  CUDA_OK(ema_update_cuda(e.p, p.p, 3, 0.5f, nullptr, nullptr, 0));
  EXPECT_EQ(e.get(), (std::vector<float>{2.0f, 0.0f, 6.0f}));
  DeviceVec<float> e2(std::vector<float>{4.0f}), p2(std::vector<float>{8.0f});
  CUDA_OK(ema_update_cuda(e2.p, p2.p, 1, 0.75f, nullptr, nullptr, 0));
  EXPECT_EQ(e2.get()[0], 5.0f);
}

// Halted (*halted != 0) or a skipped update (scalars[5] != 0, from adam_prepare_cuda): the EMA stays, bit for bit;
// with neither, the same launch moves it.
TEST(KernelEma, HeldWhenHaltedOrSkipped) {
  const size_t n = 4099;
  const std::vector<float> e0 = weights(n, 21), w = weights(n, 22);
  DeviceVec<float> e(e0), p(w);
  DeviceVec<float> applied(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f, 1e-3f, 0.0f});
  DeviceVec<float> skipped(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f, 1e-3f, 1.0f});
  DeviceVec<int64_t> halted(std::vector<int64_t>{5}), running(std::vector<int64_t>{0});
  CUDA_OK(ema_update_cuda(e.p, p.p, n, 0.9f, applied.p, halted.p, 0));
  CUDA_OK(ema_update_cuda(e.p, p.p, n, 0.9f, skipped.p, running.p, 0));
  CUDA_OK(ema_update_cuda(e.p, p.p, n, 0.9f, skipped.p, nullptr, 0));
  CUDA_OK(ema_update_cuda(e.p, p.p, n, 0.9f, nullptr, halted.p, 0));
  EXPECT_TRUE(bitwise_equal(e.get(), e0));
  CUDA_OK(ema_update_cuda(e.p, p.p, n, 0.9f, applied.p, running.p, 0));
  std::vector<float> cpu = e0;
  ema_update_cpu(cpu.data(), w.data(), n, 0.9f);
  EXPECT_TRUE(bitwise_equal(e.get(), cpu));
  EXPECT_FALSE(bitwise_equal(cpu, e0));
}

// The training graph's EMA launch: captured once, replayed 3 times with scalars[5] = 0, 1, 0 written between the
// replays (as adam_prepare_cuda writes it): two updates on the CPU, the middle replay holds.
TEST(KernelEma, GraphReplayFollowsTheSkipFlag) {
  const size_t n = 1000;
  const std::vector<float> w = weights(n, 31);
  std::vector<float> cpu = weights(n, 32);
  DeviceVec<float> e(cpu), p(w), scalars(std::vector<float>(CUVAE_ADAM_SCALARS, 0.0f));
  DeviceVec<int64_t> halted(std::vector<int64_t>{0});
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  CUDA_OK(ema_update_cuda(e.p, p.p, n, 0.99f, scalars.p, halted.p, stream));
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int k = 0; k < 3; k++) {
    const float skip = k == 1 ? 1.0f : 0.0f;
    CUDA_OK(cudaMemcpy(scalars.p + 5, &skip, sizeof(float), cudaMemcpyHostToDevice));
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    if (k != 1) ema_update_cpu(cpu.data(), w.data(), n, 0.99f);
    EXPECT_TRUE(bitwise_equal(e.get(), cpu)) << "replay " << k;
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST(KernelEma, RejectsInvalidArguments) {
  DeviceVec<float> f(8);
  EXPECT_EQ(cudaErrorInvalidValue, ema_update_cuda(nullptr, f.p, 8, 0.9f, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, ema_update_cuda(f.p, nullptr, 8, 0.9f, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, ema_update_cuda(f.p, f.p, 0, 0.9f, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, ema_update_cuda(f.p, f.p, 8, 1.0f, nullptr, nullptr, 0));   // decay in [0, 1)
  EXPECT_EQ(cudaErrorInvalidValue, ema_update_cuda(f.p, f.p, 8, -0.1f, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, ema_update_cuda(f.p, f.p, 8, NAN, nullptr, nullptr, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // rejected before any launch: no error left behind
}

}  // namespace
