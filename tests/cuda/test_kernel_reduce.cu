// kernels/reduce.cu: sum_cuda, the deterministic loss reduction, against a double sum on the host, at n from 1 to
// 1e7 (around the block size 1024 and far from its multiples); exactness on integers, determinism, argument
// validation and CUDA-graph capture; block_sum (kernels/block_reduce.cuh) called twice in a row on one shared
// buffer. Runs emulated (label emu) and natively (label gpu).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "block_reduce.cuh"
#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

// u = 2^-24: the unit roundoff of float.
const double kU = ldexp(1.0, -24);
constexpr int kThreads = 1024;  // sum_cuda's one block (kernels/reduce.cu)


// sum_cuda over x on the default stream; the one float result.
float device_sum(const std::vector<float> &x) {
  DeviceVec<float> dx(x), out(1);
  EXPECT_EQ(cudaSuccess, sum_cuda(dx.p, (int)x.size(), out.p, 0));
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  return out.get()[0];
}

// The sizes: 1, a partial warp, around one block (1023, 1024, 1025), several blocks' worth that is a multiple of
// nothing, and the 1e7 upper end of the contract.
constexpr int kSizes[] = {1, 7, 1000, 1023, 1024, 1025, 12345, 10000000};

// Error bound of sum_cuda against the exact sum: every x[i] passes through at most ceil(n / 1024) float additions
// in its thread's serial loop and 10 in the tree (5 butterfly levels within a warp, 5 across the 32 warps); each
// addition errs by at most u of a partial sum, and every partial sum is at most sum |x|. So
// |gpu - exact| <= (ceil(n / 1024) + 10) u sum|x|; the host's double sum adds a negligible 2^-53 n sum|x|, covered
// by one more u. (Tighter than the generic n u sum|x| of any summation order, which it implies.)
double sum_tolerance(int n, double abs_sum) { return ((n + kThreads - 1) / kThreads + 10 + 1) * kU * abs_sum; }

void check_sums(float lo, float hi, unsigned seed) {
  double worst = 0;
  for (int n : kSizes) {
    SCOPED_TRACE(testing::Message() << "n " << n << " values in [" << lo << ", " << hi << ")");
    std::mt19937 rng(seed + (unsigned)n);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> x(n);
    double exact = 0, abs_sum = 0;
    for (float &v : x) {
      v = dist(rng);
      exact += v, abs_sum += fabs(v);
    }
    const double tol = sum_tolerance(n, abs_sum), err = fabs(device_sum(x) - exact);
    worst = std::max(worst, err / tol);
    ASSERT_LE(err, tol) << "exact " << exact;
  }
  printf("[ measured ] values in [%g, %g): max |gpu - double sum| / tolerance = %.3g\n", lo, hi, worst);
}

TEST(KernelReduce, SumOfMixedSignsWithinBound) { check_sums(-1.0f, 1.0f, 10u); }

// Positive values, like per-row losses: sum|x| = sum x, so the bound is a relative one.
TEST(KernelReduce, SumOfPositivesWithinBound) { check_sums(0.0f, 100.0f, 20u); }

// Small integers: while every partial sum stays an integer of magnitude < 2^24 each float addition is exact, so
// the result must equal the integer total exactly, whatever the order (values in [-2, 2]: every partial sum is at
// most sum|x| ~ 1.2 n = 1.2e7 < 2^24). A lost or doubly counted element cannot hide in a tolerance here.
TEST(KernelReduce, SumOfIntegersIsExact) {
  for (int n : kSizes) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    std::mt19937 rng(30u + (unsigned)n);
    std::uniform_int_distribution<int> dist(-2, 2);
    std::vector<float> x(n);
    long long exact = 0, abs_sum = 0;
    for (float &v : x) {
      const int k = dist(rng);
      v = (float)k, exact += k, abs_sum += k < 0 ? -k : k;
    }
    ASSERT_LT(abs_sum, 1 << 24);
    EXPECT_EQ((float)exact, device_sum(x));
  }
  // All ones: the count itself.
  for (int n : kSizes) EXPECT_EQ((float)n, device_sum(std::vector<float>(n, 1.0f))) << "n " << n;
}

TEST(KernelReduce, RunsAreBitwiseIdentical) {
  const int n = 1234567;
  std::mt19937 rng(40u);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float &v : x) v = dist(rng);
  DeviceVec<float> dx(x), out(2);
  CUDA_OK(sum_cuda(dx.p, n, out.p, 0));
  CUDA_OK(sum_cuda(dx.p, n, out.p + 1, 0));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> got = out.get();
  EXPECT_EQ(0, memcmp(&got[0], &got[1], sizeof(float))) << got[0] << " vs " << got[1];
}

TEST(KernelReduce, InvalidArgumentsAreRejected) {
  DeviceVec<float> x(1), out(1);
  EXPECT_EQ(cudaErrorInvalidValue, sum_cuda(x.p, 0, out.p, 0));
  EXPECT_EQ(cudaErrorInvalidValue, sum_cuda(x.p, -5, out.p, 0));
  EXPECT_EQ(cudaErrorInvalidValue, sum_cuda(nullptr, 1, out.p, 0));
  EXPECT_EQ(cudaErrorInvalidValue, sum_cuda(x.p, 1, nullptr, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // nothing was launched
}

// Captured into a graph and replayed twice: the eager result bit for bit each time; after new values are copied
// into the input buffer, a replay sums the new values (the graph reads the buffer at replay time).
TEST(KernelReduce, GraphReplayEqualsEager) {
  const int n = 4099;
  std::mt19937 rng(50u);
  std::uniform_real_distribution<float> dist(0.0f, 10.0f);
  std::vector<float> first(n), second(n);
  for (float &v : first) v = dist(rng);
  for (float &v : second) v = dist(rng);
  const float want_first = device_sum(first), want_second = device_sum(second);
  DeviceVec<float> dx(first), out(1);
  const std::vector<float> zero = {0.0f};
  cudaStream_t stream;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamCreate(&stream));
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  CUDA_OK(sum_cuda(dx.p, n, out.p, stream));
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; replay++) {
    out.put(zero);
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const float got = out.get()[0];
    EXPECT_EQ(0, memcmp(&want_first, &got, sizeof(float))) << "replay " << replay << ": " << got;
  }
  dx.put(second);
  CUDA_OK(cudaGraphLaunch(exec, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const float got = out.get()[0];
  EXPECT_EQ(0, memcmp(&want_second, &got, sizeof(float))) << got;
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

// block_sum twice in a row on the same warp_sums, with different values, so a second call's write that overtook
// the first call's read by warp 0 would change the first total. The values are small integers, so both totals are
// exact: out[2b] = sum v, out[2b + 1] = sum (2 v + 1).
__global__ void block_sum_twice_kernel(const float *x, float *out) {
  __shared__ float warp_sums[32];
  const float v = x[(size_t)blockIdx.x * blockDim.x + threadIdx.x];
  const float first = block_sum(v, warp_sums);
  const float second = block_sum(2.0f * v + 1.0f, warp_sums);
  if (threadIdx.x == 0) out[2 * blockIdx.x] = first, out[2 * blockIdx.x + 1] = second;
}

// Without block_sum's trailing barrier, warp w > 0 can leave the first call, sum its lanes in the second and write
// warp_sums[w] before warp 0 has read the first value there: a GPU may then return a wrong first total (and
// compute-sanitizer's racecheck reports the hazard). The default emulation cannot show this race: after a barrier
// it resumes the block's threads in index order, so warp 0 reads every warp_sums entry before any other warp runs
// again (docs/CUDA_EMULATION.md, "How it runs"). The schedule mode (CUDA_EMU_SCHEDULE=shuffle:SEED, a CI stage) runs
// the warps in a random order, each as far as it can go: without the trailing barrier this test fails there under
// seeds 1, 2 and 3 (block 0's first total), and passes with it. On a GPU, 512 blocks of 1024 threads give the race
// many chances.
TEST(KernelReduce, BlockSumTwiceInARow) {
  const int kBlocks = 512, kThreads = 1024;
  std::vector<float> x((size_t)kBlocks * kThreads);
  std::mt19937 rng(60u);
  std::uniform_int_distribution<int> dist(-8, 8);
  for (float &v : x) v = (float)dist(rng);
  DeviceVec<float> dx(x), out(2 * kBlocks);
  CUVAE_LAUNCH(block_sum_twice_kernel, kBlocks, kThreads, 0, 0, dx.p, out.p);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> got = out.get();
  for (int b = 0; b < kBlocks; b++) {
    long long sum = 0;  // |partial sums| <= 17 * 1024 < 2^24: every float addition is exact
    for (int t = 0; t < kThreads; t++) sum += (long long)x[(size_t)b * kThreads + t];
    ASSERT_EQ((float)sum, got[2 * b]) << "block " << b << ": first total";
    ASSERT_EQ((float)(2 * sum + kThreads), got[2 * b + 1]) << "block " << b << ": second total";
  }
}

}  // namespace
