// kernels/free_bits.cu against its CPU twin (src/backend/cpu/free_bits_cpu.c): the per-dimension batch-mean KL, its
// gate and floor (forward) and the gated KL gradient (backward) of free bits (docs/MATH.md (3.4)), at B in
// {1, 3, 128, 257} x Z in {1, 20, 300} (300 > the 256 threads of a block), batch_total = B and 2B, with the floor
// between the dims' KL values (so some gates are open and some shut); the forward's two halves (column sums, gate)
// against the one-launch forward; then argument validation. Runs emulated (label
// emu) and natively (label gpu).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdio.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

const double kU = ldexp(1.0, -24);  // float's unit roundoff

constexpr int kBatches[] = {1, 3, 128, 257};
constexpr int kLatents[] = {1, 20, 300};

// mulv[B][2Z]: mu ~ U(-s_j, s_j) with a per-dim scale s_j in [0.05, 2] (so the dims' KL values spread over two
// orders of magnitude), lv ~ U(-2, 2).
std::vector<float> make_mulv(int B, int Z, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f), scale(0.05f, 2.0f);
  std::vector<float> s(Z), mulv((size_t)B * 2 * Z);
  for (float &v : s) v = scale(rng);
  for (int b = 0; b < B; b++)
    for (int j = 0; j < Z; j++) {
      mulv[(size_t)b * 2 * Z + j] = s[j] * u(rng);
      mulv[(size_t)b * 2 * Z + Z + j] = 2.0f * u(rng);
    }
  return mulv;
}

// The reference in double: KL_j (with exp, not the float sd) and its magnitude sum M_j = (0.5 / Bt) sum_b sd^2.
void reference(const std::vector<float> &mulv, int B, int Z, int Bt, std::vector<double> *kl,
               std::vector<double> *mag) {
  kl->assign(Z, 0.0);
  mag->assign(Z, 0.0);
  for (int b = 0; b < B; b++)
    for (int j = 0; j < Z; j++) {
      const double mu = mulv[(size_t)b * 2 * Z + j], lv = mulv[(size_t)b * 2 * Z + Z + j];
      (*kl)[j] += 0.5 * (mu * mu + exp(lv) - 1.0 - lv) / Bt;
      (*mag)[j] += 0.5 * exp(lv) / Bt;
    }
}

// A floor in the middle of the largest gap between the dims' sorted KL values (Z = 1: half the one value, all open),
// and that gap's half-width.
double pick_floor(std::vector<double> kl, double *half_gap) {
  std::sort(kl.begin(), kl.end());
  if (kl.size() == 1) {
    *half_gap = kl[0] / 2;
    return kl[0] / 2;
  }
  size_t at = 1;
  for (size_t i = 1; i < kl.size(); i++)
    if (kl[i] - kl[i - 1] > kl[at] - kl[at - 1]) at = i;
  *half_gap = (kl[at] - kl[at - 1]) / 2;
  return (kl[at] + kl[at - 1]) / 2;
}

// Forward: gates equal; kl_floor within its tolerance. sd = expf(0.5 lv) differs between the sides by <= 12u (the
// GPU's expf <= 2 ulp = 4u, the twin's libm <= 4 ulp = 8u, the argument exact), so sd^2 (exact in double) by
// <= 24.1u of sd^2; everything else is double (~1e-16): KL_j differs by <= 24.1u M_j, and each side rounds max(lambda,
// KL_j) to float once (u each). A gate can differ only if KL_j lies within that of lambda: the floor is >= 1e3 such
// tolerances from every KL_j (asserted), so the gates must agree exactly.
// Backward: dmu = dmu0 + rn(ks gate_j mu) is the same float operations on both sides (no expf): equal bits. dlv =
// dlv0 + rn(rn(ks gate_j 0.5) rn(rn(sd sd) - 1)): sd^2 differs by <= 24u + 2u (the squares' roundings) of sd^2, the
// product and the sum by 1u per side: <= 28.1u (|dlv0| + 0.5 ks (sd^2 + 1)).
TEST(KernelFreeBits, ForwardAndBackwardMatchTheCpu) {
  double worst_fwd = 0, worst_bwd = 0;
  int open = 0, shut = 0;
  for (int B : kBatches)
    for (int Z : kLatents)
      for (int Bt : {B, 2 * B}) {
        SCOPED_TRACE(testing::Message() << "B " << B << " Z " << Z << " batch_total " << Bt);
        const std::vector<float> mulv = make_mulv(B, Z, 100u * B + Z);
        std::vector<double> kl, mag;
        reference(mulv, B, Z, Bt, &kl, &mag);
        double half_gap;
        const double mid = pick_floor(kl, &half_gap);
        const float lambda = (float)mid;
        double tol_max = 0;
        for (int j = 0; j < Z; j++) tol_max = std::max(tol_max, 24.1 * kU * mag[j] + 2 * kU * std::max(kl[j], 1.0));
        ASSERT_GT(half_gap - fabs(lambda - mid), 1e3 * tol_max);
        DeviceVec<float> d_mulv(mulv), d_gate((size_t)Z), d_floor((size_t)Z);
        CUDA_OK(free_bits_forward_cuda(d_mulv.p, B, Z, Bt, lambda, d_gate.p, d_floor.p, 0));
        CUDA_OK(cudaDeviceSynchronize());
        std::vector<float> gate(Z), floor_kl(Z);
        free_bits_forward_cpu(mulv.data(), B, Z, Bt, lambda, gate.data(), floor_kl.data());
        const std::vector<float> g_gpu = d_gate.get(), f_gpu = d_floor.get();
        for (int j = 0; j < Z; j++) {
          EXPECT_EQ(gate[j], kl[j] >= lambda ? 1.0f : 0.0f) << "dim " << j;
          EXPECT_EQ(g_gpu[j], gate[j]) << "dim " << j;
          open += gate[j] == 1.0f;
          shut += gate[j] == 0.0f;
          const double tol = 24.1 * kU * mag[j] + 2 * kU * std::max(kl[j], (double)lambda);
          EXPECT_NEAR(floor_kl[j], std::max(kl[j], (double)lambda), tol + kU * fabs(kl[j])) << "cpu dim " << j;
          EXPECT_NEAR(f_gpu[j], floor_kl[j], tol) << "dim " << j;
          worst_fwd = std::max(worst_fwd, fabs(f_gpu[j] - floor_kl[j]) / tol);
        }
        // Backward on a random incoming gradient, beta 0.7, kl_scale 1 / Bt.
        std::mt19937 rng(7u * B + Z);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> d0((size_t)B * 2 * Z);
        for (float &v : d0) v = normal(rng);
        const float beta = 0.7f, kl_scale = 1.0f / (float)Bt;
        DeviceVec<float> d_d(d0), d_beta(std::vector<float>{beta});
        CUDA_OK(free_bits_backward_cuda(d_mulv.p, d_gate.p, d_beta.p, kl_scale, d_d.p, B, Z, 0));
        CUDA_OK(cudaDeviceSynchronize());
        std::vector<float> cpu = d0;
        free_bits_backward_cpu(mulv.data(), gate.data(), &beta, kl_scale, cpu.data(), B, Z);
        const std::vector<float> gpu = d_d.get();
        const double ks = (double)beta * kl_scale;
        for (int b = 0; b < B; b++)
          for (int j = 0; j < Z; j++) {
            const size_t mu_at = (size_t)b * 2 * Z + j, lv_at = mu_at + Z;
            EXPECT_EQ(gpu[mu_at], cpu[mu_at]) << "dmu row " << b << " dim " << j;
            if (gate[j] == 0.0f) {  // shut: nothing added
              EXPECT_EQ(cpu[mu_at], d0[mu_at]);
              EXPECT_EQ(cpu[lv_at], d0[lv_at]);
            } else {  // open: (3.2) scaled by ks, against double
              const double mu = mulv[mu_at], sd2 = exp((double)mulv[lv_at]);
              EXPECT_NEAR(cpu[mu_at], d0[mu_at] + ks * mu, 3 * kU * (fabs(d0[mu_at]) + ks * fabs(mu)));
              EXPECT_NEAR(cpu[lv_at], d0[lv_at] + ks * 0.5 * (sd2 - 1.0),
                          28.1 * kU * (fabs(d0[lv_at]) + 0.5 * ks * (sd2 + 1.0)));
            }
            const double tol = 28.1 * kU * (fabs(d0[lv_at]) + 0.5 * ks * (exp((double)mulv[lv_at]) + 1.0));
            EXPECT_NEAR(gpu[lv_at], cpu[lv_at], tol) << "dlv row " << b << " dim " << j;
            worst_bwd = std::max(worst_bwd, fabs(gpu[lv_at] - cpu[lv_at]) / tol);
          }
        if (testing::Test::HasFailure()) return;
      }
  EXPECT_GT(open, 0);
  EXPECT_GT(shut, 0);
  printf("[ measured ] free_bits: forward max |gpu - cpu| / tolerance = %.3g, backward %.3g (%d dims open, %d shut)\n",
         worst_fwd, worst_bwd, open, shut);
}

// The forward in two halves (data parallel adds the ranks' column sums in between): on each side, sums then gate
// gives the one-launch forward's gate and floor bit for bit (the same double operations: 0.5 acc, then / Bt); the
// device's sums against the twin's within 24.1u of sum_b 0.5 sd^2 + 1e-15 of the magnitude (the forward's sd bound
// above, without the division).
TEST(KernelFreeBits, SumsThenGateEqualTheForward) {
  for (int B : kBatches)
    for (int Z : kLatents) {
      SCOPED_TRACE(testing::Message() << "B " << B << " Z " << Z);
      const int Bt = 2 * B;
      const std::vector<float> mulv = make_mulv(B, Z, 7u * B + Z);
      std::vector<double> kl, mag;
      reference(mulv, B, Z, Bt, &kl, &mag);
      double half_gap;
      const float lambda = (float)pick_floor(kl, &half_gap);
      std::vector<double> sums_cpu(Z);
      std::vector<float> g1(Z), f1(Z), g2(Z), f2(Z);
      free_bits_forward_cpu(mulv.data(), B, Z, Bt, lambda, g1.data(), f1.data());
      free_bits_sums_cpu(mulv.data(), B, Z, sums_cpu.data());
      free_bits_gate_cpu(sums_cpu.data(), Z, Bt, lambda, g2.data(), f2.data());
      EXPECT_EQ(g1, g2);
      EXPECT_EQ(f1, f2);
      DeviceVec<float> d_mulv(mulv), d_gate((size_t)Z), d_floor((size_t)Z), d_gate2((size_t)Z), d_floor2((size_t)Z);
      DeviceVec<double> d_sums((size_t)Z);
      CUDA_OK(free_bits_forward_cuda(d_mulv.p, B, Z, Bt, lambda, d_gate.p, d_floor.p, 0));
      CUDA_OK(free_bits_sums_cuda(d_mulv.p, B, Z, d_sums.p, 0));
      CUDA_OK(free_bits_gate_cuda(d_sums.p, Z, Bt, lambda, d_gate2.p, d_floor2.p, 0));
      CUDA_OK(cudaDeviceSynchronize());
      EXPECT_EQ(d_gate.get(), d_gate2.get());
      EXPECT_EQ(d_floor.get(), d_floor2.get());
      const std::vector<double> sums_gpu = d_sums.get();
      for (int j = 0; j < Z; j++) {
        const double m = mag[j] * Bt;  // sum_b 0.5 sd^2
        EXPECT_LE(fabs(sums_gpu[j] - sums_cpu[j]), 24.1 * kU * m + 1e-15 * (m + fabs(sums_cpu[j]))) << j;
      }
    }
}

TEST(KernelFreeBits, RejectsBadArguments) {
  DeviceVec<float> f(8), g(2), beta(1);
  const cudaError_t inval = cudaErrorInvalidValue;
  EXPECT_EQ(inval, free_bits_forward_cuda(nullptr, 1, 2, 1, 0.5f, g.p, g.p, 0));
  EXPECT_EQ(inval, free_bits_forward_cuda(f.p, 0, 2, 1, 0.5f, g.p, g.p, 0));
  EXPECT_EQ(inval, free_bits_forward_cuda(f.p, 1, 0, 1, 0.5f, g.p, g.p, 0));
  EXPECT_EQ(inval, free_bits_forward_cuda(f.p, 1, 2, 0, 0.5f, g.p, g.p, 0));
  EXPECT_EQ(inval, free_bits_forward_cuda(f.p, 1, 2, 1, 0.5f, nullptr, g.p, 0));
  EXPECT_EQ(inval, free_bits_backward_cuda(f.p, g.p, nullptr, 1.0f, f.p, 1, 2, 0));
  EXPECT_EQ(inval, free_bits_backward_cuda(f.p, nullptr, beta.p, 1.0f, f.p, 1, 2, 0));
  EXPECT_EQ(inval, free_bits_backward_cuda(f.p, g.p, beta.p, 1.0f, f.p, 0, 2, 0));
  DeviceVec<double> sums(2);
  EXPECT_EQ(inval, free_bits_sums_cuda(nullptr, 1, 2, sums.p, 0));
  EXPECT_EQ(inval, free_bits_sums_cuda(f.p, 1, 2, nullptr, 0));
  EXPECT_EQ(inval, free_bits_sums_cuda(f.p, 0, 2, sums.p, 0));
  EXPECT_EQ(inval, free_bits_gate_cuda(nullptr, 2, 1, 0.5f, g.p, g.p, 0));
  EXPECT_EQ(inval, free_bits_gate_cuda(sums.p, 2, 0, 0.5f, g.p, g.p, 0));
  EXPECT_EQ(inval, free_bits_gate_cuda(sums.p, 2, 1, 0.5f, g.p, nullptr, 0));
}

}  // namespace
