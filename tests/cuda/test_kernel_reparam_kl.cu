// kernels/reparam_kl.cu against its CPU twin (src/backend/cpu/reparam_kl_cpu.c): reparameterization + closed-form KL,
// forward and backward (docs/MATH.md sections 2-3), at B in {1, 3, 128, 257} x Z in {1, 20, 1000, 4096} (Z = 20 and
// 1000 are not multiples of a warp or of the block), with ordinary and extreme (lv in [-20, 20]) inputs; then
// determinism, argument validation and CUDA-graph capture. Runs emulated (label emu) and natively (label gpu).
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

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

// u = 2^-24: the unit roundoff of float (one correctly rounded operation errs by at most u relative).
const double kU = ldexp(1.0, -24);

constexpr int kBatches[] = {1, 3, 128, 257};
constexpr int kLatents[] = {1, 20, 1000, 4096};


// Host inputs of one batch: mulv[B][2Z] = [mu | lv], eps and dz [B][Z].
struct Inputs {
  int B, Z;
  std::vector<float> mulv, eps, dz;
};

// mu ~ U(-mu_max, mu_max), lv ~ U(-lv_max, lv_max), eps and dz ~ N(0, 1). With lv_max = 20 the first entries of
// each row are the extremes lv = -20 and lv = +20 exactly.
Inputs make_inputs(int B, int Z, float mu_max, float lv_max, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mu_d(-mu_max, mu_max), lv_d(-lv_max, lv_max);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Inputs in{B, Z, std::vector<float>((size_t)B * 2 * Z), std::vector<float>((size_t)B * Z),
            std::vector<float>((size_t)B * Z)};
  for (int b = 0; b < B; b++) {
    float *mu = &in.mulv[(size_t)b * 2 * Z], *lv = mu + Z;
    for (int j = 0; j < Z; j++) mu[j] = mu_d(rng), lv[j] = lv_d(rng);
    if (lv_max >= 20.0f) {
      lv[0] = -20.0f;
      if (Z > 1) lv[1] = 20.0f;
    }
  }
  for (float &v : in.eps) v = normal(rng);
  for (float &v : in.dz) v = normal(rng);
  return in;
}

// Worst |gpu - cpu| / tolerance over every comparison of a test, printed at its end.
struct WorstRatio {
  const char *what;
  double ratio = 0;
  ~WorstRatio() { printf("[ measured ] %s: max |gpu - cpu| / tolerance = %.3g\n", what, ratio); }
  void check(double gpu, double cpu, double tol, const char *name, int b, int j) {
    const double err = fabs(gpu - cpu);
    ratio = std::max(ratio, tol > 0 ? err / tol : (err > 0 ? INFINITY : 0.0));
    ASSERT_LE(err, tol) << name << " row " << b << " col " << j << " gpu " << gpu << " cpu " << cpu;
  }
};

// Forward on the device and on the CPU; every z and kl_row entry within its tolerance (derived below).
void check_forward(const Inputs &in, WorstRatio &worst) {
  const int B = in.B, Z = in.Z;
  SCOPED_TRACE(testing::Message() << "forward B " << B << " Z " << Z);
  DeviceVec<float> mulv(in.mulv), eps(in.eps), z((size_t)B * Z), kl(B);
  CUDA_OK(reparam_kl_forward_cuda(mulv.p, eps.p, z.p, kl.p, B, Z, 0));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> z_cpu((size_t)B * Z), kl_cpu(B);
  reparam_kl_forward_cpu(in.mulv.data(), in.eps.data(), z_cpu.data(), kl_cpu.data(), B, Z);
  const std::vector<float> z_gpu = z.get(), kl_gpu = kl.get();
  // Serial additions per thread in the worst case (the smallest block, 32 threads) and the tree levels above
  // them (5 within a warp, at most 5 across <= 32 warps).
  const int serial = (Z + 31) / 32, levels = 10;
  for (int b = 0; b < B; b++) {
    const float *mu = &in.mulv[(size_t)b * 2 * Z], *lv = mu + Z, *e = &in.eps[(size_t)b * Z];
    double abs_sum = 0;  // sum_j (mu^2 + exp(lv) + 1 + |lv|): bounds every partial sum of the KL terms
    for (int j = 0; j < Z; j++) {
      const double m = mu[j], sd = exp(0.5 * lv[j]), se = fabs(sd * e[j]);
      abs_sum += m * m + sd * sd + 1.0 + fabs(lv[j]);
      // z = mu + sd * eps. sd = expf(0.5 lv) (0.5 lv is exact) differs between the two by at most 12u (the GPU's
      // expf errs by <= 2 ulp = 4u, the twin's vectorised libmvec expf (src/backend/cpu/simd_math.h) by <= 4 ulp = 8u);
      // the product rounds once on each side (or is fused into an fma on the GPU): <= 14u of |sd eps|; the sum
      // rounds once on each side: <= 2u of |mu| + |sd eps|. Total <= 16u (|mu| + |sd eps|), 16.1u with the
      // second-order terms.
      const size_t at = (size_t)b * Z + j;
      worst.check(z_gpu[at], z_cpu[at], 16.1 * kU * (fabs(m) + se), "z", b, j);
      if (testing::Test::HasFatalFailure()) return;
    }
    // KL row: each float term mu^2 + sd^2 - 1 - lv differs from the CPU's double term by <= 28u of its
    // components' sum (sd^2 inherits 2 x 12u from sd plus 1u rounding, mu^2 1u, the three additions 1u each);
    // each term then passes through <= serial + levels float additions, each erring by <= u of a partial sum
    // bounded by abs_sum; the CPU rounds its double total to float once (1u). Everything is scaled by 0.5.
    const double tol = (28.1 + serial + levels + 1) * kU * 0.5 * abs_sum;
    worst.check(kl_gpu[b], kl_cpu[b], tol, "kl_row", b, -1);
    if (testing::Test::HasFatalFailure()) return;
  }
}

// Backward on the device and on the CPU; every dmu and dlv entry within its tolerance (derived below).
void check_backward(const Inputs &in, float kl_scale, WorstRatio &worst) {
  const int B = in.B, Z = in.Z;
  SCOPED_TRACE(testing::Message() << "backward B " << B << " Z " << Z << " kl_scale " << kl_scale);
  DeviceVec<float> mulv(in.mulv), eps(in.eps), dz(in.dz), dmulv((size_t)B * 2 * Z);
  CUDA_OK(reparam_kl_backward_cuda(mulv.p, eps.p, dz.p, kl_scale, dmulv.p, B, Z, 0));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> cpu((size_t)B * 2 * Z);
  reparam_kl_backward_cpu(in.mulv.data(), in.eps.data(), in.dz.data(), kl_scale, cpu.data(), B, Z);
  const std::vector<float> gpu = dmulv.get();
  const double s = fabs(kl_scale);
  for (int b = 0; b < B; b++)
    for (int j = 0; j < Z; j++) {
      const size_t mu_at = (size_t)b * 2 * Z + j, lv_at = mu_at + Z, at = (size_t)b * Z + j;
      const double m = in.mulv[mu_at], sd = exp(0.5 * in.mulv[lv_at]), g = in.dz[at], e = in.eps[at];
      // dmu = dz + s mu: one product and one sum, each rounded once per side (or fused on the GPU): <= 2u of
      // |dz| + |s mu| per side; 3u for margin.
      worst.check(gpu[mu_at], cpu[mu_at], 3 * kU * (fabs(g) + s * fabs(m)), "dmu", b, j);
      // dlv = ((dz eps) 0.5) sd + (s 0.5) (sd sd - 1): sd differs by <= 12u (see the forward), so the first
      // product by <= 12u + 2 x 2u (two roundings per side) of |0.5 dz eps sd|; the second by 2 x 12u (sd^2) +
      // 2 x 3u (square, difference, product per side) of 0.5 |s| (sd^2 + 1); the sum 1u per side of both. 32u
      // bounds both (32.1u with the second-order terms).
      const double tol = 32.1 * kU * (0.5 * fabs(g * e) * sd + 0.5 * s * (sd * sd + 1.0));
      worst.check(gpu[lv_at], cpu[lv_at], tol, "dlv", b, j);
      if (testing::Test::HasFatalFailure()) return;
    }
}

TEST(KernelReparamKl, ForwardMatchesCpu) {
  WorstRatio worst{"forward, lv in [-4, 4]"};
  for (int B : kBatches)
    for (int Z : kLatents) {
      check_forward(make_inputs(B, Z, 3.0f, 4.0f, 100u + B * 7u + Z), worst);
      if (testing::Test::HasFatalFailure()) return;
    }
}

TEST(KernelReparamKl, ForwardExtremeLogVariances) {
  WorstRatio worst{"forward, lv in [-20, 20]"};
  for (int B : kBatches)
    for (int Z : kLatents) {
      check_forward(make_inputs(B, Z, 10.0f, 20.0f, 200u + B * 7u + Z), worst);
      if (testing::Test::HasFatalFailure()) return;
    }
}

TEST(KernelReparamKl, BackwardMatchesCpu) {
  WorstRatio worst{"backward, lv in [-4, 4]"};
  for (int B : kBatches)
    for (int Z : kLatents) {
      check_backward(make_inputs(B, Z, 3.0f, 4.0f, 300u + B * 7u + Z), 1.0f / B, worst);
      if (testing::Test::HasFatalFailure()) return;
    }
  // Other KL weights: none (beta = 0 at the start of a warm-up), and an arbitrary beta / B of either sign.
  for (float kl_scale : {0.0f, 0.37f, -2.5f}) {
    check_backward(make_inputs(3, 1000, 3.0f, 4.0f, 301u), kl_scale, worst);
    if (testing::Test::HasFatalFailure()) return;
  }
}

TEST(KernelReparamKl, BackwardExtremeLogVariances) {
  WorstRatio worst{"backward, lv in [-20, 20]"};
  for (int B : kBatches)
    for (int Z : kLatents) {
      check_backward(make_inputs(B, Z, 10.0f, 20.0f, 400u + B * 7u + Z), 1.0f / B, worst);
      if (testing::Test::HasFatalFailure()) return;
    }
}

// Rounds x to float on its own: a product passed through rn cannot be fused into an FMA with a later addition, on
// any host compiler (the kernel's FMA contraction is what this test is about).
float rn(float x) {
  volatile float v = x;
  return v;
}

// The kernel evaluates its twin's float expressions with the twin's roundings (docs/MATH.md sections 2-3), so with
// the same sd = expf(0.5 lv) both give the same bits: z = mu + rn(sd eps), dmu = dz + rn(s mu),
// dlv = rn(dz eps 0.5 sd) + rn(s 0.5 (rn(sd sd) - 1)). The device's expf may differ from the twin's by a few ulp,
// so sd is the device's own: the forward pass with mu = 0, eps = 1 writes z = 0 + sd * 1 = sd exactly. Holds under
// FMA contraction (nvcc's default; the emulation's FMA build) only where the kernel pins its roundings with
// __fmul_rn. Z = 1000 and Z = 21 take the vector and scalar paths. iwae_reparam's z is the same expression.
TEST(KernelReparamKl, ElementwiseResultsAreTheTwinsExpressionsBitForBit) {
  for (int Z : {1000, 21}) {
    SCOPED_TRACE(testing::Message() << "Z " << Z);
    const int B = 64;
    const float s = 0.37f;
    const Inputs in = make_inputs(B, Z, 3.0f, 4.0f, 700u + Z);
    std::vector<float> probe = in.mulv, ones((size_t)B * Z, 1.0f);
    for (int b = 0; b < B; b++) std::fill_n(&probe[(size_t)b * 2 * Z], Z, 0.0f);  // mu = 0, lv as in.mulv
    DeviceVec<float> d_probe(probe), d_ones(ones), mulv(in.mulv), eps(in.eps), dz(in.dz), z((size_t)B * Z), kl(B),
        dmulv((size_t)B * 2 * Z);
    CUDA_OK(reparam_kl_forward_cuda(d_probe.p, d_ones.p, z.p, kl.p, B, Z, 0));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> sd = z.get();
    CUDA_OK(reparam_kl_forward_cuda(mulv.p, eps.p, z.p, kl.p, B, Z, 0));
    CUDA_OK(reparam_kl_backward_cuda(mulv.p, eps.p, dz.p, s, dmulv.p, B, Z, 0));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> zg = z.get(), dg = dmulv.get();
    int z_diff = 0, dmu_diff = 0, dlv_diff = 0;
    for (int b = 0; b < B; b++)
      for (int j = 0; j < Z; j++) {
        const size_t at = (size_t)b * Z + j, mu_at = (size_t)b * 2 * Z + j;
        const float m = in.mulv[mu_at], e = in.eps[at], g = in.dz[at], sj = sd[at];
        const float z_want = m + rn(sj * e), dmu_want = g + rn(s * m);
        const float dlv_want = rn(g * e * 0.5f * sj) + rn(s * 0.5f * (rn(sj * sj) - 1.0f));
        z_diff += memcmp(&zg[at], &z_want, sizeof(float)) != 0;
        dmu_diff += memcmp(&dg[mu_at], &dmu_want, sizeof(float)) != 0;
        dlv_diff += memcmp(&dg[mu_at + Z], &dlv_want, sizeof(float)) != 0;
      }
    EXPECT_EQ(0, z_diff) << "entries of z that differ from mu + rn(sd eps), of " << B * Z;
    EXPECT_EQ(0, dmu_diff) << "entries of dmu that differ from dz + rn(s mu), of " << B * Z;
    EXPECT_EQ(0, dlv_diff) << "entries of dlv that differ from the twin's expression, of " << B * Z;
    // iwae_reparam (kernels/iwae.cu) with one sample per row computes the same z, bit for bit.
    DeviceVec<float> z1((size_t)B * Z);
    CUDA_OK(iwae_reparam_cuda(mulv.p, eps.p, z1.p, B, 1, Z, 0));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> zi = z1.get();
    EXPECT_EQ(0, memcmp(zi.data(), zg.data(), zg.size() * sizeof(float))) << "iwae_reparam's z, one sample per row";
  }
}

// Outputs of one forward + backward pass, for bitwise comparisons.
struct Outputs {
  std::vector<float> z, kl, dmulv;
};

Outputs read_outputs(const DeviceVec<float> &z, const DeviceVec<float> &kl, const DeviceVec<float> &dmulv) {
  return Outputs{z.get(), kl.get(), dmulv.get()};
}

void expect_bitwise_equal(const Outputs &a, const Outputs &b) {
  // memcmp-like: the same bits, not merely values within a tolerance.
  ASSERT_EQ(a.z.size(), b.z.size());
  EXPECT_EQ(0, memcmp(a.z.data(), b.z.data(), a.z.size() * sizeof(float)));
  EXPECT_EQ(0, memcmp(a.kl.data(), b.kl.data(), a.kl.size() * sizeof(float)));
  EXPECT_EQ(0, memcmp(a.dmulv.data(), b.dmulv.data(), a.dmulv.size() * sizeof(float)));
}

TEST(KernelReparamKl, RunsAreBitwiseIdentical) {
  const int B = 257, Z = 1000;
  const Inputs in = make_inputs(B, Z, 3.0f, 20.0f, 500u);
  DeviceVec<float> mulv(in.mulv), eps(in.eps), dz(in.dz), z((size_t)B * Z), kl(B), dmulv((size_t)B * 2 * Z);
  Outputs runs[2];
  for (Outputs &out : runs) {
    z.zero(), kl.zero(), dmulv.zero();
    CUDA_OK(reparam_kl_forward_cuda(mulv.p, eps.p, z.p, kl.p, B, Z, 0));
    CUDA_OK(reparam_kl_backward_cuda(mulv.p, eps.p, dz.p, 1.0f / B, dmulv.p, B, Z, 0));
    CUDA_OK(cudaDeviceSynchronize());
    out = read_outputs(z, kl, dmulv);
  }
  expect_bitwise_equal(runs[0], runs[1]);
}

TEST(KernelReparamKl, InvalidArgumentsAreRejected) {
  DeviceVec<float> mulv(2), eps(1), dz(1), z(1), kl(1), dmulv(2);
  for (int bad : {0, -1}) {
    EXPECT_EQ(cudaErrorInvalidValue, reparam_kl_forward_cuda(mulv.p, eps.p, z.p, kl.p, bad, 1, 0));
    EXPECT_EQ(cudaErrorInvalidValue, reparam_kl_forward_cuda(mulv.p, eps.p, z.p, kl.p, 1, bad, 0));
    EXPECT_EQ(cudaErrorInvalidValue, reparam_kl_backward_cuda(mulv.p, eps.p, dz.p, 1.0f, dmulv.p, bad, 1, 0));
    EXPECT_EQ(cudaErrorInvalidValue, reparam_kl_backward_cuda(mulv.p, eps.p, dz.p, 1.0f, dmulv.p, 1, bad, 0));
  }
  EXPECT_EQ(cudaErrorInvalidValue, reparam_kl_forward_cuda(nullptr, eps.p, z.p, kl.p, 1, 1, 0));
  EXPECT_EQ(cudaErrorInvalidValue, reparam_kl_forward_cuda(mulv.p, eps.p, z.p, nullptr, 1, 1, 0));
  EXPECT_EQ(cudaErrorInvalidValue, reparam_kl_backward_cuda(mulv.p, eps.p, nullptr, 1.0f, dmulv.p, 1, 1, 0));
  EXPECT_EQ(cudaErrorInvalidValue, reparam_kl_backward_cuda(mulv.p, eps.p, dz.p, 1.0f, nullptr, 1, 1, 0));
  // Nothing was launched, so no error is pending, and the smallest valid shape works.
  EXPECT_EQ(cudaSuccess, cudaGetLastError());
  const std::vector<float> h_mulv = {0.5f, 0.0f}, h_one = {1.0f};
  mulv.put(h_mulv), eps.put(h_one), dz.put(h_one);
  EXPECT_EQ(cudaSuccess, reparam_kl_forward_cuda(mulv.p, eps.p, z.p, kl.p, 1, 1, 0));
  EXPECT_EQ(cudaSuccess, reparam_kl_backward_cuda(mulv.p, eps.p, dz.p, 2.0f, dmulv.p, 1, 1, 0));
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(1.5f, z.get()[0]);      // 0.5 + exp(0) * 1
  EXPECT_EQ(0.125f, kl.get()[0]);   // 0.5 * (0.25 + 1 - 1 - 0)
  const std::vector<float> d = dmulv.get();
  EXPECT_EQ(2.0f, d[0]);            // 1 + 2 * 0.5
  EXPECT_EQ(0.5f, d[1]);            // 1 * 1 * 0.5 * 1 + 2 * 0.5 * 0
}

// Forward + backward captured into a graph and replayed twice: each replay gives the eager results bit for bit,
// and a replay after new inputs are copied into the same buffers gives the eager results of the new inputs (the
// graph reads the buffers at replay time, it does not freeze their contents).
TEST(KernelReparamKl, GraphReplayEqualsEager) {
  const int B = 128, Z = 20;
  const float kl_scale = 1.0f / B;
  const Inputs first = make_inputs(B, Z, 3.0f, 4.0f, 600u), second = make_inputs(B, Z, 3.0f, 4.0f, 601u);
  DeviceVec<float> mulv(first.mulv), eps(first.eps), dz(first.dz), z((size_t)B * Z), kl(B),
      dmulv((size_t)B * 2 * Z);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  auto enqueue = [&]() {
    EXPECT_EQ(cudaSuccess, reparam_kl_forward_cuda(mulv.p, eps.p, z.p, kl.p, B, Z, stream));
    EXPECT_EQ(cudaSuccess, reparam_kl_backward_cuda(mulv.p, eps.p, dz.p, kl_scale, dmulv.p, B, Z, stream));
  };
  auto eager = [&](const Inputs &in) {
    mulv.put(in.mulv), eps.put(in.eps), dz.put(in.dz);
    enqueue();
    EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(stream));
    return read_outputs(z, kl, dmulv);
  };
  const Outputs want_first = eager(first), want_second = eager(second);
  mulv.put(first.mulv), eps.put(first.eps), dz.put(first.dz);

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  enqueue();
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; replay++) {
    SCOPED_TRACE(testing::Message() << "replay " << replay);
    z.zero(), kl.zero(), dmulv.zero();
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    expect_bitwise_equal(want_first, read_outputs(z, kl, dmulv));
  }
  mulv.put(second.mulv), eps.put(second.eps), dz.put(second.dz);
  CUDA_OK(cudaGraphLaunch(exec, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  expect_bitwise_equal(want_second, read_outputs(z, kl, dmulv));
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace
