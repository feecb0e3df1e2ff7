// kernels/objective.cu against its CPU twins (src/backend/cpu/objective_cpu.c), and the twins against the math (docs/MATH.md
// sections 2, 3, 5, 6): objective_weights (sampled KL, ELBO / IWAE weights and row objectives, iwae 0 and 1),
// reparam_multi_backward (sampled and analytic KL), scale_rows and beta_schedule, at (R, C, Z) that include 1 and
// non-multiples of a warp; then finite differences of the backward, an independent long-double IWAE bound, the
// C = 1 analytic case against reparam_kl_backward_cpu bit for bit, NaN / inf propagation, determinism, argument
// checks and graph replay. Runs emulated (label emu) and natively (label gpu).
//
// Tolerances, |ref - out| <= atol + rtol |ref|, u = 2^-24 (float), ud = 2^-53 (double):
// - kl_s: both sides sum the same exact double terms (squares of floats are exact in double) in different orders
//   (the twin serially, the kernel per lane then a 5-level butterfly): each side errs by <= (Z + 8) ud S with
//   S = 0.5 sum_j (z^2 + eps^2 + |lv|), then rounds to float (<= u |kl| each): tol = 2 (Z + 8) ud S + 3u |kl|.
// - log w = -nll - beta kl_s from the floats (beta kl_s exact in double): dw <= |beta| tol_kl + 2 ud |log w|; D =
//   the row's max. iwae row_obj: log-sum-exp is 1-Lipschitz in the max norm (D); both sides sum the same exp's in
//   the same order (exp errs <= 1 ulp on either side: <= 2 ud of each term <= t; C roundings of t on each side)
//   and round to float: tol = D + (2C + 8) ud + 3u |row_obj|. Non-iwae row_obj: each term moves by <= |beta|
//   tol_kl, the sums round C times each side: tol = max |beta| tol_kl + 2C ud A + 3u |row_obj|, A = the mean |term|.
// - iwae weight = scale exp(log w - m) / t: relative <= 2D (numerator, m) + D + the exp/t roundings above, then
//   float rounding each side: tol = (3.1 D + (2C + 12) ud + 2u) |w| + 2 FLT_TRUE_MIN (subnormal weights).
//   Non-iwae weight: scale / C, the same float division: equal.
// - reparam_multi_backward: both sides do the same float operations in sample order (the kernel forbids FMAs),
//   so only sd = expf(0.5 lv) differs: <= 2 ulp (CUDA) + 4 ulp (libmvec) = 12u relative; sd^2 26u. Allowing
//   the twin FMAs anyway (an FMA-capable host), each side's sum of C + 2 terms errs by <= (C + 3) u of their
//   absolute sum A: tol_mu = 2 (C + 3) u A_mu, tol_lv = (2C + 40) u A_lv, with A_mu = sum_s |dz| + |bw z| +
//   |ks mu| and A_lv = 0.5 sd sum_s (|dz| + |bw z|) |eps| + 0.5 |ks| (sd^2 + 1) + 0.5 |beta| sum_s w.
// - the twin against long double (from the inputs): kl_s <= (Z + 2) ud S (double sum) + u |kl| (float rounding);
//   with D the row's max of |beta| tol_kl + ud |log w|: iwae row_obj <= D + (2C + 8) ud + 2u |ref|, ELBO row_obj
//   <= D + 2C ud mean|term| + 2u |ref|, weights <= (2.1 D + (2C + 8) ud + u) ref + FLT_TRUE_MIN, and the weights of a
//   row sum to scale within (u + 2 (C + 4) ud) scale + C FLT_TRUE_MIN (each rounded to float once).
// - scale_rows: one float product on each side: equal. beta_schedule: the same double operations: equal.
// - finite differences (twin vs the exact gradient of L in double, step h = 1e-4): L is quadratic in mu, so the
//   central difference has no truncation error there; along lv its error is <= h^2/6 |L'''| with L''' bounded by
//   T3 (computed per entry, x1.01 for the step); rounding of L in double <= n ud Labs (n terms, Labs their
//   absolute sum) gives <= n ud Labs / h. The twin's float error <= (2C + 20) u A (as above, plus the float z it
//   is given: |z - z_exact| <= 5u (|mu| + sd |eps|), which A covers with |bw| (|mu| + sd |eps|) in place of |bw z|).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <float.h>
#include <gtest/gtest.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))
const double kU = ldexp(1.0, -24), kUd = ldexp(1.0, -53);

// One multi-sample batch: mulv[R][2Z] (mu in [-2, 2], lv in [-6, 1]), eps ~ N(0, 1), z from the twin of the
// forward (iwae_reparam_cpu), nll in [lo, hi], dz ~ N(0, 1) / 4, weights in [0.05, 1].
struct Batch {
  int R, C, Z;
  std::vector<float> mulv, eps, z, nll, dz, w;
  size_t n() const { return (size_t)R * C; }
  float lv(size_t i, int j) const { return mulv[(i % R) * 2 * Z + Z + j]; }
  float mu(size_t i, int j) const { return mulv[(i % R) * 2 * Z + j]; }
};

Batch make_batch(int R, int C, int Z, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mu_d(-2.0f, 2.0f), lv_d(-6.0f, 1.0f), nll_d(lo, hi), w_d(0.05f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Batch b{R, C, Z, std::vector<float>((size_t)R * 2 * Z), std::vector<float>((size_t)R * C * Z), {},
          std::vector<float>((size_t)R * C), std::vector<float>((size_t)R * C * Z), std::vector<float>((size_t)R * C)};
  for (int r = 0; r < R; r++)
    for (int j = 0; j < Z; j++) {
      b.mulv[(size_t)r * 2 * Z + j] = mu_d(rng);
      b.mulv[(size_t)r * 2 * Z + Z + j] = lv_d(rng);
    }
  for (float &v : b.eps) v = normal(rng);
  for (float &v : b.dz) v = 0.25f * normal(rng);
  for (float &v : b.nll) v = nll_d(rng);
  for (float &v : b.w) v = w_d(rng);
  b.z.resize(b.eps.size());
  iwae_reparam_cpu(b.mulv.data(), b.eps.data(), b.z.data(), R, C, Z);
  return b;
}

struct Shape {
  int R, C, Z;
};
const Shape kShapes[] = {{1, 1, 1},   {3, 7, 3},   {19, 5, 20},  {128, 1, 20}, {2, 300, 3},
                         {5, 33, 1000}, {257, 2, 7}, {4, 257, 33}, {1, 1, 4096}};

struct Weights {
  std::vector<float> kl, w, row;
};

Weights weights_cpu(const Batch &b, int iwae, float beta, float scale) {
  Weights o{std::vector<float>(b.n()), std::vector<float>(b.n()), std::vector<float>(b.R)};
  objective_weights_cpu(b.mulv.data(), b.eps.data(), b.z.data(), b.nll.data(), b.R, b.C, b.Z, iwae, &beta, scale,
                        o.kl.data(), o.w.data(), o.row.data());
  return o;
}

Weights weights_gpu(const Batch &b, int iwae, float beta, float scale) {
  DeviceVec<float> m(b.mulv), e(b.eps), z(b.z), nll(b.nll), be(std::vector<float>{beta}), kl(b.n()), w(b.n()),
      row(b.R);
  EXPECT_EQ(cudaSuccess, objective_weights_cuda(m.p, e.p, z.p, nll.p, b.R, b.C, b.Z, iwae, be.p, scale, kl.p, w.p,
                                                row.p, 0));
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  return Weights{kl.get(), w.get(), row.get()};
}

// 0.5 sum_j (z^2 + eps^2 + |lv|) of sample i (bounds every partial sum of its kl_s terms).
double kl_abs(const Batch &b, size_t i) {
  double s = 0;
  for (int j = 0; j < b.Z; j++) {
    const double z = b.z[i * b.Z + j], e = b.eps[i * b.Z + j];
    s += z * z + e * e + fabs((double)b.lv(i, j));
  }
  return 0.5 * s;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(KernelObjective, WeightsMatchCpu) {
  double worst = 0;
  for (const Shape &s : kShapes)
    for (int iwae : {0, 1})
      for (float beta : {1.0f, 0.37f}) {
        SCOPED_TRACE(testing::Message() << "R " << s.R << " C " << s.C << " Z " << s.Z << " iwae " << iwae);
        const Batch b = make_batch(s.R, s.C, s.Z, 50.0f, 400.0f, 10u + s.R + 7u * s.C + s.Z);
        const float scale = 1.0f / s.R;
        const Weights cpu = weights_cpu(b, iwae, beta, scale), gpu = weights_gpu(b, iwae, beta, scale);
        for (int r = 0; r < s.R; r++) {
          double D = 0, Dk = 0, A = 0;  // max dw, max |beta| tol_kl, mean |nll + beta kl|
          for (int k = 0; k < s.C; k++) {
            const size_t i = (size_t)k * s.R + r;
            const double tol_kl = 2 * (s.Z + 8) * kUd * kl_abs(b, i) + 3 * kU * fabs(cpu.kl[i]);
            ASSERT_LE(fabs(gpu.kl[i] - cpu.kl[i]), tol_kl) << "kl_s " << i;
            const double lw = -(double)b.nll[i] - (double)beta * cpu.kl[i];
            Dk = std::max(Dk, beta * tol_kl);
            D = std::max(D, beta * tol_kl + 2 * kUd * fabs(lw));
            A += fabs(lw) / s.C;
            if (tol_kl > 0) worst = std::max(worst, fabs(gpu.kl[i] - cpu.kl[i]) / tol_kl);
          }
          const double tol_row = iwae ? D + (2 * s.C + 8) * kUd + 3 * kU * fabs(cpu.row[r])
                                      : Dk + 2 * s.C * kUd * A + 3 * kU * fabs(cpu.row[r]);
          ASSERT_LE(fabs(gpu.row[r] - cpu.row[r]), tol_row) << "row_obj " << r;
          worst = std::max(worst, fabs(gpu.row[r] - cpu.row[r]) / tol_row);
          for (int k = 0; k < s.C; k++) {
            const size_t i = (size_t)k * s.R + r;
            if (!iwae) {
              ASSERT_EQ(scale / (float)s.C, gpu.w[i]);
              ASSERT_EQ(cpu.w[i], gpu.w[i]);
              continue;
            }
            const double tol = (3.1 * D + (2 * s.C + 12) * kUd + 2 * kU) * fabs(cpu.w[i]) + 2 * FLT_TRUE_MIN;
            ASSERT_LE(fabs(gpu.w[i] - cpu.w[i]), tol) << "weight " << i;
            worst = std::max(worst, fabs(gpu.w[i] - cpu.w[i]) / tol);
          }
        }
      }
  printf("[ measured ] objective_weights: max |gpu - cpu| / tolerance = %.3g\n", worst);
}

// With one sample the softmax weight is exactly 1, so weight = scale (both objectives, both sides), and the IWAE
// row objective is the ELBO's: -(-nll - beta kl) = nll + beta kl, both rounded once.
TEST(KernelObjective, OneSampleWeightIsScaleExactly) {
  const Batch b = make_batch(37, 1, 20, -50.0f, 900.0f, 20u);
  for (float scale : {1.0f / 37, 3.0f, 1e-30f}) {
    const Weights c0 = weights_cpu(b, 0, 0.8f, scale), c1 = weights_cpu(b, 1, 0.8f, scale);
    const Weights g0 = weights_gpu(b, 0, 0.8f, scale), g1 = weights_gpu(b, 1, 0.8f, scale);
    for (const Weights *o : {&c0, &c1, &g0, &g1})
      for (float w : o->w) ASSERT_EQ(scale, w);
    EXPECT_TRUE(same_bits(c0.row, c1.row));
    EXPECT_TRUE(same_bits(g0.row, g1.row));
  }
}

// log-sum-exp in long double: max first, then the sum of exp(v - max).
long double lse_ref(const std::vector<long double> &v) {
  long double m = -INFINITY, t = 0;
  for (long double a : v) m = std::max(m, a);
  for (long double a : v) t += expl(a - m);
  return m + logl(t);
}

// (c) The twin against docs/MATH.md sections 5-6 computed independently in long double from the inputs.
TEST(KernelObjective, CpuWeightsMatchLongDoubleMath) {
  const Shape shapes[] = {{3, 7, 20}, {2, 300, 3}, {4, 1, 5}, {1, 64, 1000}};
  double worst = 0;  // max |twin - ref| / tolerance
  auto check = [&](long double got, long double want, double tol) {
    worst = std::max(worst, (double)fabsl(got - want) / tol);
    return fabsl(got - want) <= tol;
  };
  for (const Shape &s : shapes)
    for (float beta : {1.0f, 0.37f, 0.0f})
      for (float lo : {50.0f, 290.0f}) {  // log-weights spread over ~350 nats, or within ~10
        SCOPED_TRACE(testing::Message() << "R " << s.R << " C " << s.C << " Z " << s.Z << " beta " << beta);
        const Batch b = make_batch(s.R, s.C, s.Z, lo, 300.0f, 30u + s.C);
        const float scale = 0.25f;
        const Weights iw = weights_cpu(b, 1, beta, scale), el = weights_cpu(b, 0, beta, scale);
        for (int r = 0; r < s.R; r++) {
          std::vector<long double> lw(s.C);
          long double mean = 0, mean_abs = 0;
          double D = 0;
          for (int k = 0; k < s.C; k++) {
            const size_t i = (size_t)k * s.R + r;
            long double kl = 0;
            for (int j = 0; j < s.Z; j++) {
              const long double z = b.z[i * s.Z + j], e = b.eps[i * s.Z + j];
              kl += z * z - e * e - b.lv(i, j);
            }
            kl *= 0.5L;
            // kl_s: the double sum (<= (Z + 2) ud S) rounded to float (<= u |kl|)
            const double tol_kl = (s.Z + 2) * kUd * kl_abs(b, i) + kU * fabsl(kl);
            ASSERT_TRUE(check(iw.kl[i], kl, tol_kl)) << "kl_s " << i << ": " << iw.kl[i] << " vs " << (double)kl;
            lw[k] = -(long double)b.nll[i] - beta * kl;
            mean += (b.nll[i] + beta * kl) / s.C;
            mean_abs += fabsl(b.nll[i] + beta * kl) / s.C;
            D = std::max(D, beta * tol_kl + kUd * (double)fabsl(lw[k]));
          }
          const long double lse = lse_ref(lw), ref = -(lse - logl((long double)s.C));
          // 1-Lipschitz log-sum-exp (D), the C-term sum and exp's in double, float rounding of the result
          EXPECT_TRUE(check(iw.row[r], ref, D + (2 * s.C + 8) * kUd + 2 * kU * fabsl(ref))) << "iwae row " << r;
          EXPECT_TRUE(check(el.row[r], mean, D + 2 * s.C * kUd * mean_abs + 2 * kU * fabsl(mean))) << "elbo row " << r;
          double sum = 0;
          for (int k = 0; k < s.C; k++) {
            const size_t i = (size_t)k * s.R + r;
            const long double want = scale * expl(lw[k] - lse);
            const double tol = (2.1 * D + (2 * s.C + 8) * kUd + kU) * (double)want + FLT_TRUE_MIN;
            ASSERT_TRUE(check(iw.w[i], want, tol)) << "weight " << i << ": " << iw.w[i] << " vs " << (double)want;
            ASSERT_EQ(scale / (float)s.C, el.w[i]);
            sum += iw.w[i];
          }
          // weights sum to scale: each rounded to float (u), the double softmax (2 (C + 4) ud), underflows
          EXPECT_TRUE(check(sum, scale, (kU + 2 * (s.C + 4) * kUd) * scale + s.C * FLT_TRUE_MIN)) << "sum, row " << r;
        }
      }
  printf("[ measured ] objective_weights vs long double: max |twin - ref| / tolerance = %.3g\n", worst);
}

std::vector<float> backward_cpu(const Batch &b, bool sampled, float beta, float kl_scale) {
  std::vector<float> d((size_t)b.R * 2 * b.Z);
  reparam_multi_backward_cpu(b.mulv.data(), b.eps.data(), b.z.data(), b.dz.data(), sampled ? b.w.data() : nullptr,
                             &beta, kl_scale, d.data(), b.R, b.C, b.Z);
  return d;
}

std::vector<float> backward_gpu(const Batch &b, bool sampled, float beta, float kl_scale) {
  DeviceVec<float> m(b.mulv), e(b.eps), z(b.z), dz(b.dz), w(b.w), be(std::vector<float>{beta}),
      d((size_t)b.R * 2 * b.Z);
  EXPECT_EQ(cudaSuccess, reparam_multi_backward_cuda(m.p, e.p, sampled ? z.p : nullptr, dz.p, sampled ? w.p : nullptr,
                                                     be.p, kl_scale, d.p, b.R, b.C, b.Z, 0));
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  return d.get();
}

// Magnitudes of entry (r, j) for the tolerances (file comment); z_bound: |mu| + sd |eps| in place of |z|.
struct Mag {
  double mu, lv;
};
Mag magnitude(const Batch &b, bool sampled, float beta, float kl_scale, int r, int j, bool z_bound) {
  const double mu = b.mulv[(size_t)r * 2 * b.Z + j], sd = exp(0.5 * b.mulv[(size_t)r * 2 * b.Z + b.Z + j]);
  const double ks = sampled ? 0.0 : fabs((double)beta * kl_scale);
  double am = ks * fabs(mu), al = 0.5 * ks * (sd * sd + 1), wsum = 0;
  for (int k = 0; k < b.C; k++) {
    const size_t i = (size_t)k * b.R + r, at = i * b.Z + j;
    const double e = fabs((double)b.eps[at]);
    const double zt = sampled ? fabs(beta * b.w[i]) * (z_bound ? fabs(mu) + sd * e : fabs((double)b.z[at])) : 0.0;
    am += fabs((double)b.dz[at]) + zt;
    al += 0.5 * sd * (fabs((double)b.dz[at]) + zt) * e;
    wsum += sampled ? b.w[i] : 0.0;
  }
  return Mag{am, al + 0.5 * fabs(beta) * wsum};
}

TEST(KernelObjective, BackwardMatchesCpu) {
  double worst = 0;
  for (const Shape &s : kShapes)
    for (bool sampled : {false, true})
      for (float beta : {1.0f, 0.37f}) {
        SCOPED_TRACE(testing::Message() << "R " << s.R << " C " << s.C << " Z " << s.Z << " sampled " << sampled);
        const Batch b = make_batch(s.R, s.C, s.Z, 50.0f, 400.0f, 40u + s.R + 7u * s.C + s.Z);
        const float kl_scale = 1.0f / s.R;
        const std::vector<float> cpu = backward_cpu(b, sampled, beta, kl_scale),
                                 gpu = backward_gpu(b, sampled, beta, kl_scale);
        for (int r = 0; r < s.R; r++)
          for (int j = 0; j < s.Z; j++) {
            const Mag m = magnitude(b, sampled, beta, kl_scale, r, j, false);
            const size_t at = (size_t)r * 2 * s.Z + j;
            const double tm = 2 * (s.C + 3) * kU * m.mu, tl = (2 * s.C + 40) * kU * m.lv;
            ASSERT_LE(fabs(gpu[at] - cpu[at]), tm) << "dmu " << r << "," << j;
            ASSERT_LE(fabs(gpu[at + s.Z] - cpu[at + s.Z]), tl) << "dlv " << r << "," << j;
            worst = std::max({worst, fabs(gpu[at] - cpu[at]) / tm, fabs(gpu[at + s.Z] - cpu[at + s.Z]) / tl});
          }
      }
  printf("[ measured ] reparam_multi_backward: max |gpu - cpu| / tolerance = %.3g\n", worst);
}

// (a), (b): the twin's dmulv against central differences of the loss it differentiates, in double:
//   sampled:  L = sum_i [dz_i . z_i + beta w_i kl_s,i],  z_i = mu_r + exp(0.5 lv_r) eps_i (eps, w held fixed)
//   analytic: L = sum_i dz_i . z_i + beta kl_scale sum_r KL_r,  KL_r = 0.5 sum_j (mu^2 + exp(lv) - 1 - lv)
TEST(KernelObjective, CpuBackwardIsTheGradient) {
  const Shape shapes[] = {{2, 3, 4}, {3, 1, 5}, {1, 6, 3}};
  const double h = 1e-4;
  double worst = 0;
  for (const Shape &s : shapes)
    for (bool sampled : {true, false})
      for (float beta : {1.0f, 0.6f}) {
        SCOPED_TRACE(testing::Message() << "R " << s.R << " C " << s.C << " Z " << s.Z << " sampled " << sampled);
        const Batch b = make_batch(s.R, s.C, s.Z, 0.0f, 1.0f, 50u + s.C);
        const float kl_scale = 0.3f;
        std::vector<double> mulv(b.mulv.begin(), b.mulv.end());
        double labs = 0;  // absolute sum of L's terms (for the rounding bound), set by loss()
        auto loss = [&]() {
          double L = 0;
          labs = 0;
          for (size_t i = 0; i < b.n(); i++)
            for (int j = 0; j < s.Z; j++) {
              const size_t r = i % s.R, at = i * s.Z + j;
              const double mu = mulv[r * 2 * s.Z + j], lv = mulv[r * 2 * s.Z + s.Z + j], e = b.eps[at];
              const double z = mu + exp(0.5 * lv) * e;
              const double t1 = b.dz[at] * z, t2 = sampled ? beta * b.w[i] * 0.5 * (z * z - e * e - lv) : 0.0;
              L += t1 + t2;
              labs += fabs(t1) + fabs(t2);
            }
          if (!sampled)
            for (int r = 0; r < s.R; r++)
              for (int j = 0; j < s.Z; j++) {
                const double mu = mulv[(size_t)r * 2 * s.Z + j], lv = mulv[(size_t)r * 2 * s.Z + s.Z + j];
                const double t = (double)beta * kl_scale * 0.5 * (mu * mu + exp(lv) - 1 - lv);
                L += t;
                labs += fabs((double)beta * kl_scale) * 0.5 * (mu * mu + exp(lv) + 1 + fabs(lv));
              }
          return L;
        };
        const std::vector<float> d = backward_cpu(b, sampled, beta, kl_scale);
        const double n_terms = 2.0 * b.n() * s.Z + 4.0 * s.R * s.Z;
        for (int r = 0; r < s.R; r++)
          for (int j = 0; j < s.Z; j++)
            for (int part : {0, 1}) {  // 0: mu, 1: lv
              const size_t at = (size_t)r * 2 * s.Z + part * s.Z + j;
              const double x0 = mulv[at];
              mulv[at] = x0 + h;
              const double lp = loss(), lp_abs = labs;
              mulv[at] = x0 - h;
              const double lm = loss(), lm_abs = labs;
              mulv[at] = x0;
              const double fd = (lp - lm) / (2 * h);
              // L''' along lv: exp(lv) terms (coefficient c1) and exp(0.5 lv) terms (c2 / 8)
              const double sd = exp(0.5 * mulv[(size_t)r * 2 * s.Z + s.Z + j]) * 1.01;
              double c1 = sampled ? 0.0 : 0.5 * fabs((double)beta * kl_scale), c2 = 0;
              for (int k = 0; k < s.C; k++) {
                const size_t i = (size_t)k * s.R + r, e_at = i * s.Z + j;
                const double e = b.eps[e_at], bw = sampled ? beta * b.w[i] : 0.0;
                c1 += 0.5 * bw * e * e;
                c2 += fabs(bw * mulv[(size_t)r * 2 * s.Z + j] * e) + fabs(b.dz[e_at] * e);
              }
              const double trunc = part ? h * h / 6 * (c1 * sd * sd + c2 * sd / 8) : 0.0;
              const Mag m = magnitude(b, sampled, beta, kl_scale, r, j, true);
              const double tol = (2 * s.C + 20) * kU * (part ? m.lv : m.mu) + trunc +
                                 n_terms * kUd * std::max(lp_abs, lm_abs) / h;
              EXPECT_LE(fabs(d[at] - fd), tol) << (part ? "dlv " : "dmu ") << r << "," << j << " twin " << d[at]
                                               << " fd " << fd;
              worst = std::max(worst, fabs(d[at] - fd) / tol);
            }
      }
  printf("[ measured ] backward vs finite differences: max |twin - fd| / tolerance = %.3g\n", worst);
}

// (d) C = 1, analytic KL, beta = 1 is reparam_kl_backward_cpu bit for bit (and any beta: kl_scale = beta kl_scale).
TEST(KernelObjective, OneSampleAnalyticIsReparamKlBackward) {
  for (int R : {1, 3, 128, 257})
    for (int Z : {1, 7, 20, 1000})
      for (float beta : {1.0f, 0.37f}) {
        Batch b = make_batch(R, 1, Z, 0.0f, 1.0f, 60u + R + Z);
        b.mulv[Z] = -20.0f;  // extreme log-variances (exp(lv) - 1 cancels / overflows sd^2 range)
        if (Z > 1) b.mulv[Z + 1] = 20.0f;
        const std::vector<float> got = backward_cpu(b, false, beta, 1.0f / R);
        std::vector<float> want(got.size());
        reparam_kl_backward_cpu(b.mulv.data(), b.eps.data(), b.dz.data(), beta * (1.0f / R), want.data(), R, Z);
        EXPECT_TRUE(same_bits(got, want)) << "R " << R << " Z " << Z << " beta " << beta;
      }
}

// (e) beta_t = beta min(1, t / warmup), warmup <= 0: beta; the device computes the same bits.
TEST(KernelObjective, BetaSchedule) {
  const float beta = 0.8f;
  EXPECT_EQ(0.0f, beta_schedule_cpu(0, beta, 1000));
  EXPECT_EQ(0.4f, beta_schedule_cpu(500, beta, 1000));  // exactly half of 0.8f
  EXPECT_EQ(beta, beta_schedule_cpu(1000, beta, 1000));
  EXPECT_EQ(beta, beta_schedule_cpu(2000, beta, 1000));
  // 0.8f / 3: the double quotient and product (a few ud) rounded once to float (u)
  EXPECT_LE(fabs(beta_schedule_cpu(1, beta, 3) - (double)beta / 3), 1.01 * kU * (double)beta / 3);
  for (int64_t t : {0, 1, 5000})
    for (int64_t warmup : {0, -3}) EXPECT_EQ(beta, beta_schedule_cpu(t, beta, warmup));
  DeviceVec<int64_t> step(1);
  DeviceVec<float> out(1);
  for (int64_t warmup : {-1, 0, 1, 3, 1000, 7777})
    for (int64_t t : {(int64_t)0, (int64_t)1, (int64_t)2, (int64_t)499, (int64_t)500, (int64_t)999, (int64_t)1000,
                      (int64_t)2000, (int64_t)1 << 40}) {
      step.put(std::vector<int64_t>{t});
      CUDA_OK(beta_schedule_cuda(step.p, beta, warmup, out.p, 0));
      CUDA_OK(cudaDeviceSynchronize());
      ASSERT_EQ(beta_schedule_cpu(t, beta, warmup), out.get()[0]) << "t " << t << " warmup " << warmup;
    }
}

TEST(KernelObjective, ScaleRowsMatchesCpu) {
  const std::pair<int, int> shapes[] = {{1, 1}, {3, 7}, {257, 33}, {19, 1000}};
  for (const auto &s : shapes) {
    const Batch b = make_batch(s.first, 1, s.second, -3.0f, 3.0f, 70u + s.second);
    std::vector<float> cpu = b.eps;
    scale_rows_cpu(cpu.data(), b.nll.data(), s.first, s.second);
    DeviceVec<float> a(b.eps), w(b.nll);
    CUDA_OK(scale_rows_cuda(a.p, w.p, s.first, s.second, 0));
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_TRUE(same_bits(a.get(), cpu));  // one float product on each side
    for (size_t k = 0; k < cpu.size(); k++) ASSERT_EQ(b.eps[k] * b.nll[k / s.second], cpu[k]);
  }
}

// (f) A NaN NLL poisons its own row (row_obj; iwae: every weight of the row), nothing else; a NaN dz poisons its
// own latent entry. An infinite NLL (zero likelihood) gets IWAE weight 0 and leaves the row finite.
TEST(KernelObjective, NonFinitePropagates) {
  Batch b = make_batch(4, 5, 6, 50.0f, 60.0f, 80u);
  b.nll[2 * 4 + 1] = NAN;       // row 1, sample 2
  b.nll[3 * 4 + 2] = INFINITY;  // row 2, sample 3
  b.dz[(size_t)(1 * 4 + 3) * 6 + 2] = NAN;  // row 3, sample 1, j = 2
  for (int iwae : {0, 1}) {
    for (const Weights &o : {weights_cpu(b, iwae, 1.0f, 0.25f), weights_gpu(b, iwae, 1.0f, 0.25f)}) {
      EXPECT_TRUE(std::isnan(o.row[1]));
      EXPECT_TRUE(std::isfinite(o.row[0]) && std::isfinite(o.row[3]));
      EXPECT_EQ(iwae ? true : false, (bool)std::isfinite(o.row[2]));  // the ELBO of a zero likelihood is +inf
      if (!iwae) {
        EXPECT_EQ(INFINITY, o.row[2]);
      }
      for (int k = 0; k < 5; k++) {
        EXPECT_EQ(iwae ? true : false, (bool)std::isnan(o.w[k * 4 + 1])) << k;
        EXPECT_TRUE(std::isfinite(o.w[k * 4 + 0]) && std::isfinite(o.w[k * 4 + 3]));
      }
      if (iwae) {
        EXPECT_EQ(0.0f, o.w[3 * 4 + 2]);
      }
    }
  }
  for (bool sampled : {false, true})
    for (const std::vector<float> &d : {backward_cpu(b, sampled, 1.0f, 0.25f), backward_gpu(b, sampled, 1.0f, 0.25f)})
      for (size_t k = 0; k < d.size(); k++) {
        const bool poisoned = k == (size_t)3 * 12 + 2 || k == (size_t)3 * 12 + 6 + 2;  // dmu, dlv of (3, 2)
        ASSERT_EQ(poisoned, (bool)std::isnan(d[k])) << k;
      }
}

TEST(KernelObjective, InvalidArgumentsAreRejected) {
  DeviceVec<float> f(64), g(64), h(64), w(64), be(1);
  DeviceVec<int64_t> st(1);
  const cudaError_t inval = cudaErrorInvalidValue;
  EXPECT_EQ(inval, beta_schedule_cuda(nullptr, 1.0f, 10, f.p, 0));
  EXPECT_EQ(inval, beta_schedule_cuda(st.p, 1.0f, 10, nullptr, 0));
  for (int bad : {0, -1}) {
    EXPECT_EQ(inval, objective_weights_cuda(f.p, f.p, f.p, f.p, bad, 1, 1, 1, be.p, 1.0f, g.p, h.p, w.p, 0));
    EXPECT_EQ(inval, objective_weights_cuda(f.p, f.p, f.p, f.p, 1, bad, 1, 1, be.p, 1.0f, g.p, h.p, w.p, 0));
    EXPECT_EQ(inval, objective_weights_cuda(f.p, f.p, f.p, f.p, 1, 1, bad, 1, be.p, 1.0f, g.p, h.p, w.p, 0));
    EXPECT_EQ(inval, reparam_multi_backward_cuda(f.p, f.p, f.p, f.p, w.p, be.p, 1.0f, g.p, bad, 1, 1, 0));
    EXPECT_EQ(inval, reparam_multi_backward_cuda(f.p, f.p, f.p, f.p, w.p, be.p, 1.0f, g.p, 1, bad, 1, 0));
    EXPECT_EQ(inval, reparam_multi_backward_cuda(f.p, f.p, f.p, f.p, w.p, be.p, 1.0f, g.p, 1, 1, bad, 0));
    EXPECT_EQ(inval, scale_rows_cuda(f.p, w.p, bad, 1, 0));
    EXPECT_EQ(inval, scale_rows_cuda(f.p, w.p, 1, bad, 0));
  }
  EXPECT_EQ(inval, objective_weights_cuda(f.p, f.p, f.p, f.p, 1, 1, 1, 1, nullptr, 1.0f, g.p, h.p, w.p, 0));
  EXPECT_EQ(inval, objective_weights_cuda(f.p, f.p, nullptr, f.p, 1, 1, 1, 1, be.p, 1.0f, g.p, h.p, w.p, 0));
  EXPECT_EQ(inval, objective_weights_cuda(f.p, f.p, f.p, f.p, 1, 1, 1, 1, be.p, 1.0f, g.p, h.p, nullptr, 0));
  EXPECT_EQ(inval, reparam_multi_backward_cuda(f.p, f.p, f.p, f.p, w.p, nullptr, 1.0f, g.p, 1, 1, 1, 0));
  EXPECT_EQ(inval, reparam_multi_backward_cuda(f.p, f.p, nullptr, f.p, w.p, be.p, 1.0f, g.p, 1, 1, 1, 0));
  EXPECT_EQ(inval, reparam_multi_backward_cuda(f.p, f.p, f.p, nullptr, w.p, be.p, 1.0f, g.p, 1, 1, 1, 0));
  EXPECT_EQ(inval, scale_rows_cuda(nullptr, w.p, 1, 1, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // rejected before any launch
  // z is not read by the analytic backward, so it may be NULL there
  be.put(std::vector<float>{1.0f});
  f.zero();
  EXPECT_EQ(cudaSuccess, reparam_multi_backward_cuda(f.p, f.p, nullptr, f.p, nullptr, be.p, 1.0f, g.p, 1, 1, 1, 0));
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(0.0f, g.get()[0]);  // dmu = 0 + 1 * 0
}

// (g) One training step's objective part: beta_schedule (step from device memory) -> objective_weights ->
// scale_rows (the decoder's dz rows by their weights) -> reparam_multi_backward (sampled). Run twice eagerly:
// the same bits; captured into a graph: each replay equals the eager run, and after a new step counter and new
// inputs are written into the same buffers a replay equals the eager run of those.
TEST(KernelObjective, DeterministicAndGraphReplayEqualsEager) {
  const int R = 19, C = 33, Z = 20;
  const Batch first = make_batch(R, C, Z, 50.0f, 120.0f, 90u), second = make_batch(R, C, Z, 50.0f, 120.0f, 91u);
  DeviceVec<float> m(first.mulv), e(first.eps), z(first.z), nll(first.nll), dz(first.dz), be(1), kl(first.n()),
      w(first.n()), row(R), d((size_t)R * 2 * Z);
  DeviceVec<int64_t> step(std::vector<int64_t>{100});
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  auto enqueue = [&]() {
    EXPECT_EQ(cudaSuccess, beta_schedule_cuda(step.p, 0.9f, 400, be.p, stream));
    EXPECT_EQ(cudaSuccess, objective_weights_cuda(m.p, e.p, z.p, nll.p, R, C, Z, 1, be.p, 1.0f / R, kl.p, w.p,
                                                  row.p, stream));
    EXPECT_EQ(cudaSuccess, scale_rows_cuda(dz.p, w.p, R * C, Z, stream));
    EXPECT_EQ(cudaSuccess, reparam_multi_backward_cuda(m.p, e.p, z.p, dz.p, w.p, be.p, 0.0f, d.p, R, C, Z, stream));
  };
  auto load = [&](const Batch &b, int64_t t) {
    m.put(b.mulv), e.put(b.eps), z.put(b.z), nll.put(b.nll), dz.put(b.dz), step.put(std::vector<int64_t>{t});
  };
  auto results = [&]() { return std::vector<std::vector<float>>{be.get(), kl.get(), w.get(), row.get(), d.get()}; };
  auto eager = [&](const Batch &b, int64_t t) {
    load(b, t);
    enqueue();
    EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(stream));
    return results();
  };
  const auto want_first = eager(first, 100), again = eager(first, 100), want_second = eager(second, 300);
  for (size_t k = 0; k < want_first.size(); k++) EXPECT_TRUE(same_bits(want_first[k], again[k])) << "output " << k;
  EXPECT_EQ(0.9f * 0.25f, want_first[0][0]);  // beta_t of step 100 of 400: (float)(0.9f * 0.25), exact
  EXPECT_FALSE(same_bits(want_first[4], want_second[4]));
  load(first, 100);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  enqueue();
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 3; replay++) {
    SCOPED_TRACE(testing::Message() << "replay " << replay);
    const bool second_inputs = replay == 2;
    load(second_inputs ? second : first, second_inputs ? 300 : 100);  // scale_rows works in place on dz
    be.zero(), kl.zero(), w.zero(), row.zero(), d.zero();
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const auto got = results();
    for (size_t k = 0; k < got.size(); k++)
      EXPECT_TRUE(same_bits(second_inputs ? want_second[k] : want_first[k], got[k])) << "output " << k;
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace
