// Hand-computed checks of the CPU kernels (include/cuvae/cpu.h) against the formulas in docs/MATH.md.
//
// Every expected number below was computed once with mpmath at 30 significant digits from the exact values
// of the float32 inputs the test stores (e.g. 0.3f = 0.300000011920928955078125), then pasted with 17
// significant digits; each block's comment gives the formula. The dense-layer tests compare against naive
// double-precision loops instead, with the standard rounding-error bound of a float dot product.
//
// Tolerances: every check is |ref - out| <= atol + rtol |ref|, with the bound counted from the float operations
// of the kernel (src/backend/cpu/*.c, compiled with -std=c11: no FMA contraction) and computed per element from the
// double reference values. u = 2^-24; one rounding errs by <= u |result|; 1 ulp of a float v is <= 2u |v|.
// Math library: expf and log1pf may be libmvec's vector versions (simd_math.h), assumed within 4 ulp (8u
// relative); scalar glibc's are within 1-2 ulp, so 4 ulp covers both. tanhf is scalar glibc: 2 ulp (glibc
// manual, "Known Maximum Errors in Math Functions", x86_64) = 4u relative. The 17-digit constants carry a
// relative error <= 1e-17, and sums in double add <= n 2^-53 relative: both far below u and covered by the
// 1.01 factors on the first-order counts (which also cover the O(u^2) terms).
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuvae/cpu.h"

namespace {

constexpr double kU = 1.0 / (1 << 24);  // float's unit roundoff 2^-24
constexpr double kExpUlpRel = 8 * kU;   // expf / log1pf: 4 ulp (libmvec), relative
constexpr double kTanhUlpRel = 4 * kU;  // tanhf: 2 ulp (scalar glibc), relative

// gamma_n = n u / (1 - n u): an n-term float dot product or sum, in any order and blocking, errs by at most
// gamma_n sum |terms| (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5 / Lemma 3.1). A BLAS may sum
// in any order, split K into blocks or use FMA: the bound holds for all of them.
double Gamma(int n) { return n * kU / (1 - n * kU); }

// |got - want| <= atol + rtol |want|, with a readable failure message.
::testing::AssertionResult Near(double got, double want, double atol, double rtol) {
  if (std::isfinite(got) && std::fabs(got - want) <= atol + rtol * std::fabs(want)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "got " << got << ", want " << want << " (|diff| "
                                       << std::fabs(got - want) << " > " << atol + rtol * std::fabs(want) << ")";
}

// ---- reparameterization and KL (docs/MATH.md sections 2-3) ---------------------------------------------------

// Row 0: mu = 0, lv = 0 -> z = eps exactly and KL = 0 exactly.
// Row 1: mu = (1, -0.5, 2), lv = (0.5, -1, 0), eps = (0.3f, -1.2f, 2):
//   z_j = mu_j + exp(lv_j / 2) eps_j = (1.3852076403130982, -1.2278368205767957, 4)
//   KL  = 0.5 [ (1 + e^0.5 - 1 - 0.5) + (0.25 + e^-1 - 1 + 1) + (4 + 1 - 1 - 0) ] = 2.8833003559357852
TEST(ReparamKl, ForwardHandComputed) {
  const int B = 2, Z = 3;
  const float mulv[B * 2 * Z] = {0,    0,     0,    0,    0,     0,  // row 0: mu | lv
                                 1.0f, -0.5f, 2.0f, 0.5f, -1.0f, 0.0f};
  const float eps[B * Z] = {0.7f, -1.1f, 0.25f, 0.3f, -1.2f, 2.0f};
  float z[B * Z], kl[B];
  reparam_kl_forward_cpu(mulv, eps, z, kl, B, Z);

  for (int j = 0; j < Z; j++) EXPECT_EQ(z[j], eps[j]) << "row 0: mu = 0, lv = 0 must give z = eps exactly";
  EXPECT_EQ(kl[0], 0.0f) << "KL(N(0,1) || N(0,1)) must be exactly 0";

  // z = fl(mu + fl(sd eps)), sd = expf(0.5f lv) (0.5f lv exact): sd errs by <= 8u relative, the product and the
  // sum round once each: |ref - z| <= u |ref| + 9.01u |sd eps|, sd eps = ref - mu (exact in double here).
  // KL = 0.5 sum_j (mu^2 + sd^2 - 1 - lv) in double from the float sd: sd^2 errs by <= 16.01u sd^2 = 16.01u e^lv,
  // the double sum is exact to ~2^-50, the final float rounding adds u |KL|:
  // |ref - KL| <= u |KL| + 8.01u sum_j e^lv_j. (A missing 1/2 or sign: KL off by O(1).)
  const double z1[Z] = {1.3852076403130982, -1.2278368205767957, 4.0};
  for (int j = 0; j < Z; j++)
    EXPECT_TRUE(Near(z[Z + j], z1[j], 9.01 * kU * std::fabs(z1[j] - mulv[2 * Z + j]), kU)) << "z[1][" << j << "]";
  double sum_var = 0;
  for (int j = 0; j < Z; j++) sum_var += std::exp((double)mulv[3 * Z + j]);
  EXPECT_TRUE(Near(kl[1], 2.8833003559357852, 8.01 * kU * sum_var, kU));
}

// dmu = dz + s mu;  dlv = dz eps 0.5 exp(lv/2) + s 0.5 (exp(lv) - 1), with the row-1 values above,
// dz = (0.5f, -2, 1), s = kl_scale = 0.25:
//   dmu = (0.5 + 0.25, -2 - 0.125, 1 + 0.5) = (0.75, -2.125, 1.5)
//   dlv = (0.17739206891579057, 0.64882175072322601, 1.0)   [third: 1 * 2 * 0.5 * 1 + 0.25 * 0.5 * 0]
TEST(ReparamKl, BackwardHandComputed) {
  const int B = 2, Z = 3;
  const float mulv[B * 2 * Z] = {0, 0, 0, 0, 0, 0, 1.0f, -0.5f, 2.0f, 0.5f, -1.0f, 0.0f};
  const float eps[B * Z] = {0.7f, -1.1f, 0.25f, 0.3f, -1.2f, 2.0f};
  const float dz[B * Z] = {1.0f, -1.0f, 0.5f, 0.5f, -2.0f, 1.0f};
  float dmulv[B * 2 * Z];
  reparam_kl_backward_cpu(mulv, eps, dz, 0.25f, dmulv, B, Z);  // s = 0.25 below

  // dmu = fl(dz + fl(s mu)): |ref - dmu| <= u |s mu| + u |ref| (here every dmu is exact in binary).
  // dlv = fl(A + B), A = fl(fl(fl(dz eps) 0.5f) sd) (0.5f exact; sd = expf(0.5f lv) within 8u): |dA| <= 10.01u |A|;
  // B = fl(fl(s 0.5f) fl(fl(sd sd) - 1)): sd sd errs by <= 17.01u e^lv (16u from sd, one rounding), the
  // difference by u |e^lv - 1| more, the products by 2u |B|. Hence, with A and B from the double reference,
  // |ref - dlv| <= u |ref| + 10.01u |A| + |s/2| (17.01u e^lv + u |e^lv - 1|) + 2.01u |B|.
  // Row 0 (mu = 0, lv = 0): the KL terms vanish, dmu = dz, dlv = dz eps / 2.
  const float s = 0.25f;
  auto dlv_tol = [&](double g, double e, double lv) {
    const double sd = std::exp(0.5 * lv), A = g * e * 0.5 * sd, B = s * 0.5 * (sd * sd - 1);
    return 10.01 * kU * std::fabs(A) + 0.5 * s * (17.01 * kU * sd * sd + kU * std::fabs(sd * sd - 1)) +
           2.01 * kU * std::fabs(B);
  };
  for (int j = 0; j < Z; j++) {
    EXPECT_TRUE(Near(dmulv[j], dz[j], 0, kU)) << "row 0 dmu[" << j << "]";
    EXPECT_TRUE(Near(dmulv[Z + j], 0.5 * dz[j] * eps[j], dlv_tol(dz[j], eps[j], 0), kU)) << "row 0 dlv[" << j << "]";
  }
  const double dmu1[Z] = {0.75, -2.125, 1.5};
  const double dlv1[Z] = {0.17739206891579057, 0.64882175072322601, 1.0};
  for (int j = 0; j < Z; j++) {
    EXPECT_TRUE(Near(dmulv[2 * Z + j], dmu1[j], kU * std::fabs(s * mulv[2 * Z + j]), kU)) << "row 1 dmu[" << j << "]";
    EXPECT_TRUE(Near(dmulv[3 * Z + j], dlv1[j], dlv_tol(dz[Z + j], eps[Z + j], mulv[3 * Z + j]), kU))
        << "row 1 dlv[" << j << "]";
  }
}

// ---- Bernoulli likelihood (docs/MATH.md section 4) ------------------------------------------------------------

// Bound on one float term t = fl(fl(a + fl(log1pf(e))) - fl(x l)), a = (l + |l|) / 2 (exact), e = expf(-|l|):
// e errs by <= 8u relative, which moves log1p(e) by <= 8u e / (1 + e) <= 8u log1p(e); log1pf adds 8u of its own:
// 16.01u log1p(e). Then x l, a + lp and the difference round once each:
//   |dt| <= 16.01u log1p(e) + u |x l| + u |a + lp| + u |t|.
double BernoulliTermTol(double l, double x) {
  const double lp = std::log1p(std::exp(-std::fabs(l))), a = std::max(l, 0.0);
  return 16.01 * kU * lp + kU * std::fabs(x * l) + kU * (a + lp) + kU * std::fabs(a + lp - x * l);
}

// Bound on g = fl(scale fl(fl(n / fl(1 + e)) - x)), n = 1 (l >= 0) or e (l < 0), sig = n / (1 + e): e's 8u moves
// sig by 8u e / (1 + e) relative (l >= 0) or 8u / (1 + e) (l < 0); 1 + e and the division round once each (2u):
//   |dsig| <= sig (8u w + 2u), w = e / (1 + e) or 1 / (1 + e);  |dg| <= |scale| (1.01 |dsig| + u |sig - x|) + u |g|.
// Below FLT_MIN (l < -87) the relative bounds fail: there expf's 4 ulp are 4 denorm_min = 4 2^-149 absolute, and
// each of the 4 later roundings errs by <= 2^-150: 6 2^-149 more, absolute (the floor below).
double SigmoidGradTol(double l, double x, double scale) {
  const double e = std::exp(-std::fabs(l)), sig = l >= 0 ? 1 / (1 + e) : e / (1 + e);
  const double w = l >= 0 ? e / (1 + e) : 1 / (1 + e);
  const double dsig = sig * (8 * kU * w + 2 * kU), g = scale * (sig - x);
  return std::fabs(scale) * (1.01 * dsig + kU * std::fabs(sig - x)) + kU * std::fabs(g) + 6 * std::ldexp(1.0, -149);
}

// nll = sum_d softplus(l_d) - x l_d with logits l = (100, -100, 0, 2.5, -3), the same in each row, and
// x = 0, 0.3f, 1 (one value per row):
//   sum softplus(l) = 100 + log1p(e^-100) + log1p(e^-100) + log 2 + softplus(2.5) + softplus(-3)
//                   = 103.32062426642624;  sum l = -0.5, so
//   row x=0: 103.32062426642624; x=0.3f: 103.4706242723867; x=1: 103.82062426642624.
// Gradient: scale * (sigmoid(l) - x), sigmoid = (1, 3.72e-44, 0.5, 0.92414181997875645, 0.047425873177566781).
// A naive log(1 + exp(l)) overflows to inf at l = 100 in float, and -[x log s + (1-x) log(1-s)] gives
// log(0) there; the stable form stays finite.
TEST(Bernoulli, ExtremeLogitsHandComputed) {
  const int B = 3, D = 5;
  const float l5[D] = {100.0f, -100.0f, 0.0f, 2.5f, -3.0f};
  const float xs[B] = {0.0f, 0.3f, 1.0f};
  float logits[B * D], x[B * D];
  for (int b = 0; b < B; b++) {
    for (int d = 0; d < D; d++) {
      logits[b * D + d] = l5[d];
      x[b * D + d] = xs[b];
    }
  }
  float nll[B], dl[B * D];
  const float scale = 0.5f;
  bernoulli_nll_grad_cpu(logits, x, nll, dl, scale, B, D);

  // Row NLL: the float terms (BernoulliTermTol each) are summed in double (exact to ~2^-50) and rounded once:
  // |ref - nll| <= sum_d BernoulliTermTol + u |ref|. About 4u |ref| here; a wrong x l sign moves it by >= 1.
  const double want_row[B] = {103.32062426642624, 103.4706242723867, 103.82062426642624};
  for (int b = 0; b < B; b++) {
    double tol = 0;
    for (int d = 0; d < D; d++) tol += BernoulliTermTol(l5[d], xs[b]);
    EXPECT_TRUE(Near(nll[b], want_row[b], tol, kU)) << "nll row " << b;
  }

  // Gradient: SigmoidGradTol (sigmoid(-100) = 3.7e-44, a subnormal, errs by far less than its atol).
  const double sig[D] = {1.0, 3.720075976020836e-44, 0.5, 0.92414181997875645, 0.047425873177566781};
  for (int b = 0; b < B; b++) {
    for (int d = 0; d < D; d++) {
      EXPECT_TRUE(Near(dl[b * D + d], scale * (sig[d] - (double)xs[b]), SigmoidGradTol(l5[d], xs[b], scale), 0))
          << "dl[" << b << "][" << d << "]";
    }
  }

  // Forward only (dlogits == NULL) gives the same row values.
  float nll2[B];
  bernoulli_nll_grad_cpu(logits, x, nll2, nullptr, scale, B, D);
  for (int b = 0; b < B; b++) EXPECT_EQ(nll2[b], nll[b]);
}

// One element per row, l = +-20 with x in {0, 1}: softplus(-20) = log1p(e^-20) = 2.0611536203143807e-9.
//   (l=-20, x=0) -> 2.06e-9;  (l=-20, x=1) -> 20.000000002061154;  (20, 0) -> 20.000000002061154;  (20, 1)
//   -> 2.06e-9.
TEST(Bernoulli, LargeLogitsAccurate) {
  const float logits[4] = {-20.0f, -20.0f, 20.0f, 20.0f};
  const float x[4] = {0.0f, 1.0f, 0.0f, 1.0f};
  const double want[4] = {2.0611536203143807e-9, 20.000000002061154, 20.000000002061154, 2.0611536203143807e-9};
  float nll[4], dl[4];
  bernoulli_nll_grad_cpu(logits, x, nll, dl, 1.0f, 4, 1);
  for (int i = 0; i < 4; i++) {
    // One term, summed in double and rounded once: |ref - nll| <= BernoulliTermTol + u |ref| (3u |ref| + 16u
    // 2e-9 here: 2.1e-9 is held to 16u relative, not swamped by an absolute floor). A matching logit's NLL must
    // also never go negative.
    EXPECT_TRUE(Near(nll[i], want[i], BernoulliTermTol(logits[i], x[i]), kU)) << "case " << i;
    EXPECT_GE(nll[i], 0.0f) << "case " << i;
  }
  // sigmoid(l) - x with scale 1: SigmoidGradTol (at l = 20, 1 + e rounds to 1 and sig = 1; the bound is ~3u).
  const double sig20 = 1 / (1 + std::exp(20.0)), want_dl[4] = {sig20, sig20 - 1, 1 - sig20, -sig20};
  for (int i = 0; i < 4; i++)
    EXPECT_TRUE(Near(dl[i], want_dl[i], SigmoidGradTol(logits[i], x[i], 1.0), 0)) << "dl case " << i;
}

// ---- Gaussian likelihood, fixed sigma (docs/MATH.md section 4) ---------------------------------------------------

// f = (0.2f, -1.5, 3), x = (0.7f, -1, 0); nll = 0.5 sum_d [(x-f)^2/s^2 + log s^2 + log 2pi],
// df = scale (f - x) / s^2:
//   s = 0.5:   nll = 19.67737402813186,  (f-x)/s^2 = (-1.9999999403953552, -2, 12)
//   s = 0.7f:  nll = 11.380668582694777, (f-x)/s^2 = (-1.0204081676096678,
//   -1.0204081980202019, 6.1224491881212115)
TEST(Gaussian, HandComputedTwoSigmas) {
  const int D = 3;
  const float f[D] = {0.2f, -1.5f, 3.0f};
  const float x[D] = {0.7f, -1.0f, 0.0f};
  struct Case {
    float sigma;
    double nll, df[D];
  } cases[2] = {{0.5f, 19.67737402813186, {-1.9999999403953552, -2.0, 12.0}},
                {0.7f, 11.380668582694777, {-1.0204081676096678, -1.0204081980202019, 6.1224491881212115}}};
  for (const Case &c : cases) {
    float nll, df[D];
    const float scale = 0.25f;
    gaussian_nll_grad_cpu(f, x, c.sigma, 0.0, &nll, df, scale, 1, D);
    // The NLL is formed in double from the float inputs (~2^-50 relative) and rounded once: 1.01u |ref|.
    EXPECT_TRUE(Near(nll, c.nll, 0, 1.01 * kU)) << "sigma " << c.sigma;
    // df = fl(g_scale fl(f - x)), g_scale = (float)(scale / s^2): three roundings, 3.01u |ref|.
    for (int d = 0; d < D; d++)
      EXPECT_TRUE(Near(df[d], scale * c.df[d], 0, 3.01 * kU)) << "sigma " << c.sigma << " d " << d;
    float nll2;
    gaussian_nll_grad_cpu(f, x, c.sigma, 0.0, &nll2, nullptr, scale, 1, D);
    EXPECT_EQ(nll2, nll) << "forward-only call must give the same value";
  }
}

// ---- Adam (docs/MATH.md section 7) --------------------------------------------------------------------------------

// One element of adam_update_cpu in double, carrying a running first-order bound on the float path's error
// (|ref - out| <= bound, counted per operation of adam_chunk; 1 - b1 and 1 - b2 are exact in float for b in
// [0.5, 1] (Sterbenz), c1, c2 are rounded once from double, sqrtf is correctly rounded):
//   gi = fl(gs g):                         eg = u |gi| (0 when gs = 1)
//   m' = fl(fl(b1 m) + fl((1-b1) gi)):    em' = b1 em + (1-b1) eg + u (|b1 m| + |(1-b1) gi| + |m'|)
//   v' = fl(fl(b2 v) + fl(fl((1-b2) gi) gi)): ev' = b2 ev + 2 (1-b2) |gi| eg + u (|b2 v| + 2 (1-b2) gi^2 + |v'|)
//   num = fl(lr fl(m' fl(c1))):            enum = lr c1 em' + 3u |num|
//   r = fl(sqrtf(fl(v' fl(c2)))):          er = r (ev' / 2v' + 2u) (2u: c2 and the product, halved; sqrt's u)
//   den = fl(r + eps):                     eden = er + u den
//   p' = fl(p - fl(num / den)):            ep' = ep + enum / den + |num| eden / den^2 + u |step| + u |p'|.
// Cancellation in m (gradients of changing sign) is why the bound is carried, not taken relative to |m|.
struct AdamRef {
  double p, m = 0, v = 0, ep = 0, em = 0, ev = 0;
  explicit AdamRef(double p0) : p(p0) {}
  void step(double g, double lr, double b1, double b2, double eps, int t, double gs) {
    const double c1 = 1 / (1 - std::pow(b1, t)), c2 = 1 / (1 - std::pow(b2, t));
    const double gi = gs * g, eg = gs == 1 ? 0 : kU * std::fabs(gi);
    const double m1 = b1 * m + (1 - b1) * gi, v1 = b2 * v + (1 - b2) * gi * gi;
    em = b1 * em + (1 - b1) * eg + kU * (std::fabs(b1 * m) + std::fabs((1 - b1) * gi) + std::fabs(m1));
    ev = b2 * ev + 2 * (1 - b2) * std::fabs(gi) * eg + kU * (b2 * v + 2 * (1 - b2) * gi * gi + v1);
    m = m1;
    v = v1;
    const double num = lr * m * c1, r = std::sqrt(v * c2), den = r + eps, st = num / den;
    const double enm = lr * c1 * em + 3 * kU * std::fabs(num);
    const double er = v > 0 ? r * (ev / (2 * v) + 2 * kU) : 0, eden = er + kU * den;
    p -= st;
    ep += enm / den + std::fabs(num) * eden / (den * den) + kU * std::fabs(st) + kU * std::fabs(p);
  }
};

// p0 = (1, -0.5, 2), lr = 0.01, b1 = 0.9f, b2 = 0.999f, eps = 1e-8, grad_scale = 1, gradients
//   g1 = (0.1f, -2, 0), g2 = (0.2f, 1, 0.5f), g3 = (-0.3f, 0.5f, 1e-3f).
// Sequence (mpmath, using the float32 values of b1, b2, lr, eps):
//   t=1: p = (0.99000000122351727, -0.49000000027351742, 2)       (each nonzero g moves p by ~lr * sign(g):
//        m_hat = g and v_hat = g^2 after bias correction, so the step is lr g / (|g| + eps))
//   t=2: p = (0.98034818173096145, -0.48733663008377004, 1.9925586320237387)
//   t=3: p = (0.98101417213120863, -0.48672274163489396, 1.9867936620250606)
//        m = (-0.0039000026389960627, -0.021999999046324319, 0.045100009565334484)
//        v = (0.00013993821774087279, 0.0052409366399196985, 0.00024974778777366272)
// Tolerances: AdamRef's running bounds, 1.01 times (second-order terms). p's is ~u |p| per step (2e-7 at t = 3);
// a missing bias correction changes the first step from 0.01 to 0.001 or 0.0316, far outside it.
TEST(Adam, ThreeStepsHandComputed) {
  float p[3] = {1.0f, -0.5f, 2.0f}, m[3] = {0, 0, 0}, v[3] = {0, 0, 0};
  const float g[3][3] = {{0.1f, -2.0f, 0.0f}, {0.2f, 1.0f, 0.5f}, {-0.3f, 0.5f, 1e-3f}};
  const double want_p[3][3] = {{0.99000000122351727, -0.49000000027351742, 2.0},
                               {0.98034818173096145, -0.48733663008377004, 1.9925586320237387},
                               {0.98101417213120863, -0.48672274163489396, 1.9867936620250606}};
  std::vector<AdamRef> ref(p, p + 3);
  for (int t = 1; t <= 3; t++) {
    adam_update_cpu(p, g[t - 1], m, v, 3, 0.01f, 0.9f, 0.999f, 1e-8f, t, 1.0f);
    for (int i = 0; i < 3; i++) {
      ref[i].step(g[t - 1][i], 0.01f, 0.9f, 0.999f, 1e-8f, t, 1.0);
      EXPECT_TRUE(Near(p[i], want_p[t - 1][i], 1.01 * ref[i].ep, 0)) << "t=" << t << " p[" << i << "]";
    }
  }
  const double want_m[3] = {-0.0039000026389960627, -0.021999999046324319, 0.045100009565334484};
  const double want_v[3] = {0.00013993821774087279, 0.0052409366399196985, 0.00024974778777366272};
  for (int i = 0; i < 3; i++) {
    EXPECT_TRUE(Near(m[i], want_m[i], 1.01 * ref[i].em, 0)) << "m[" << i << "]";
    EXPECT_TRUE(Near(v[i], want_v[i], 1.01 * ref[i].ev, 0)) << "v[" << i << "]";
  }
}

// grad_scale multiplies g before both moments: g = 4, grad_scale = 0.5 -> g' = 2,
//   m = 0.1 * 2 = 0.20000004768371582, v = 0.001 * 4 = 0.0039999485015869141 (float b1, b2),
//   p = 1 - lr * 1 (first step ~ lr) = 0.99000000027351742. Tolerances: AdamRef's bounds, as above.
TEST(Adam, GradScaleAppliesBeforeMoments) {
  float p = 1.0f, m = 0.0f, v = 0.0f;
  const float g = 4.0f;
  adam_update_cpu(&p, &g, &m, &v, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 1, 0.5f);
  AdamRef ref(1.0);
  ref.step(g, 0.01f, 0.9f, 0.999f, 1e-8f, 1, 0.5);
  EXPECT_TRUE(Near(m, 0.20000004768371582, 1.01 * ref.em, 0));
  EXPECT_TRUE(Near(v, 0.0039999485015869141, 1.01 * ref.ev, 0));
  EXPECT_TRUE(Near(p, 0.99000000027351742, 1.01 * ref.ep, 0));
}

// ---- gradient norm ------------------------------------------------------------------------------------------

TEST(GradNorm, ExactAndDoubleAccumulated) {
  const float g34[2] = {3.0f, -4.0f};
  EXPECT_EQ(grad_norm_cpu(g34, 2), 5.0);
  EXPECT_EQ(grad_norm_cpu(g34, 0), 0.0);

  // One 1 followed by 10^6 values of 1e-4f: sqrt(1 + 10^6 (1e-4f)^2) ~ 1.0049875618607215. A float
  // accumulator would stay at 1 (1 + 1e-8 rounds back to 1) and return 1.0: the sum must be in double, as cpu.h
  // says. Bound: float squares are exact in double; n positive terms summed in double in any order err by
  // <= (n - 1) 2^-53 sum (Higham 3.1), the square root halves that and rounds once: |ref - out| <= n 2^-53 |ref|
  // (1.1e-10 relative here; the float accumulator is off by 5e-3).
  std::vector<float> g(1000001, 1e-4f);
  g[0] = 1.0f;
  const double want = std::sqrt(1.0 + 1e6 * ((double)1e-4f * 1e-4f));
  EXPECT_TRUE(Near(grad_norm_cpu(g.data(), g.size()), want, 0, (double)g.size() * std::ldexp(1.0, -53)));
}

// ---- dense layers vs naive loops ------------------------------------------------------------------------------

double ActD(double a, cuvae_activation act) {
  switch (act) {
    case CUVAE_ACT_RELU:
      return a > 0 ? a : 0;
    case CUVAE_ACT_TANH:
      return std::tanh(a);
    default:
      return a;
  }
}

struct Shape {
  int B, in, out;
};
// Odd and degenerate shapes: 1x1, non-multiples of any vector width, a single output, a single input.
const Shape kShapes[] = {{1, 1, 1}, {3, 7, 5}, {13, 33, 17}, {2, 64, 1}, {5, 1, 9}};
const cuvae_activation kActs[] = {CUVAE_ACT_RELU, CUVAE_ACT_TANH, CUVAE_ACT_NONE};

std::vector<float> Uniform(size_t n, std::mt19937 &rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &e : v) e = u(rng);
  return v;
}

// y = act(x W^T + b) against double loops. Bound: the GEMM's in-term float dot product (any order, blocking or
// FMA) plus the bias add is an (in + 1)-term sum: |err| <= gamma_{in+1} (sum|x_i W_i| + |b|) (Higham 3.1).
// ReLU passes the error through (slope 0 or 1, the kink is continuous); tanh has slope <= 1 and adds its own
// 2 ulp (4u |tanh|): |ref - y| <= gamma_{in+1} mag + [tanh] 4u |ref|.
TEST(Dense, ForwardMatchesNaiveLoops) {
  std::mt19937 rng(1234);
  for (const Shape &s : kShapes) {
    for (cuvae_activation act : kActs) {
      std::vector<float> x = Uniform((size_t)s.B * s.in, rng), W = Uniform((size_t)s.out * s.in, rng),
                         b = Uniform(s.out, rng), y((size_t)s.B * s.out, 1e30f);
      dense_forward_cpu(x.data(), W.data(), b.data(), y.data(), s.B, s.in, s.out, act);
      for (int r = 0; r < s.B; r++) {
        for (int o = 0; o < s.out; o++) {
          double acc = b[o], mag = std::fabs(b[o]);
          for (int i = 0; i < s.in; i++) {
            acc += (double)x[r * s.in + i] * W[o * s.in + i];
            mag += std::fabs((double)x[r * s.in + i] * W[o * s.in + i]);
          }
          const double tol = Gamma(s.in + 1) * mag;
          EXPECT_TRUE(Near(y[r * s.out + o], ActD(acc, act), tol, act == CUVAE_ACT_TANH ? kTanhUlpRel : 0))
              << "B=" << s.B << " in=" << s.in << " out=" << s.out << " act=" << act << " at [" << r << "][" << o
              << "]";
        }
      }
    }
  }
}

// bias_act_forward: y = act(y + b) in place. The add rounds once (u |y0 + b|), passed through ReLU (slope 0 or 1)
// or tanh (slope 1 - tanh^2); tanh adds 2 ulp: |ref - y| <= u |y0 + b| act'(y0 + b) + [tanh] 4u |ref|.
TEST(Dense, BiasActForward) {
  std::mt19937 rng(7);
  const int B = 4, n = 11;
  for (cuvae_activation act : kActs) {
    std::vector<float> y0 = Uniform(B * n, rng, -2, 2), b = Uniform(n, rng), y = y0;
    bias_act_forward_cpu(y.data(), b.data(), B, n, act);
    for (int i = 0; i < B * n; i++) {
      const double pre = (double)y0[i] + b[i % n], t = std::tanh(pre);
      const double slope = act == CUVAE_ACT_TANH ? 1 - t * t : act == CUVAE_ACT_RELU ? (pre > 0) : 1;
      EXPECT_TRUE(Near(y[i], ActD(pre, act), kU * std::fabs(pre) * slope, act == CUVAE_ACT_TANH ? kTanhUlpRel : 0))
          << "act " << act << " i " << i;
    }
  }
}

// Allowed absolute error of dy * act'(y) computed in float from the float y: tanh's fl(fl(1 - fl(y y)) dy) rounds
// y y (u y^2; catastrophic cancellation as |y| -> 1, so no relative bound holds), the difference
// (u (1 - y^2)) and the product (u |dy| (1 - y^2)): <= u |dy| (y^2 + 2 (1 - y^2)) <= 2u |dy|, 2.01u with the
// second-order terms. ReLU and none are exact (a select between dy and 0, or nothing).
double ActGradTol(cuvae_activation act, double dy) {
  return act == CUVAE_ACT_TANH ? 2.01 * kU * std::fabs(dy) : 0.0;
}

// bias_act_backward: dy *= act'(.) through the output y. ReLU: 1 where y > 0, else 0 (also at y == 0);
// tanh: 1 - y^2; none: unchanged.
TEST(Dense, BiasActBackward) {
  const int B = 2, n = 4;
  const float y[B * n] = {0.5f, 0.0f, -0.25f, 0.9f, 0.0f, 1e-30f, -0.99f, 0.1f};
  const float dy0[B * n] = {1.0f, 2.0f, -3.0f, 0.5f, -1.5f, 4.0f, 2.0f, -0.7f};
  for (cuvae_activation act : kActs) {
    float dy[B * n];
    std::copy(dy0, dy0 + B * n, dy);
    bias_act_backward_cpu(y, dy, B, n, act);
    for (int i = 0; i < B * n; i++) {
      double want = dy0[i];
      if (act == CUVAE_ACT_RELU) want = y[i] > 0 ? dy0[i] : 0.0;
      if (act == CUVAE_ACT_TANH) want = dy0[i] * (1.0 - (double)y[i] * y[i]);
      EXPECT_TRUE(Near(dy[i], want, ActGradTol(act, dy0[i]), 0)) << "act " << act << " i " << i;
    }
  }
}

// dense_backward: dy <- dy * act'(y); dW = dy^T x; db = column sums of dy; dx = dy W (or skipped when NULL).
// Outputs start as 1e30 to catch accumulate-instead-of-overwrite. Same dot-product bound as the forward test on
// the float pre-activation gradients dy_f (|dy_f - g| <= e = ActGradTol): dW and dx are GEMMs over B and out terms,
// db a float sum over B rows (B - 1 additions), so |ref - out| <= gamma_K (sum|g a| + sum e |a|) + sum e |a|,
// K = B (dW, db; a = x or 1) or out (dx; a = W).
TEST(Dense, BackwardMatchesNaiveLoops) {
  std::mt19937 rng(99);
  for (const Shape &s : kShapes) {
    for (cuvae_activation act : kActs) {
      std::vector<float> x = Uniform((size_t)s.B * s.in, rng), W = Uniform((size_t)s.out * s.in, rng),
                         b = Uniform(s.out, rng), y((size_t)s.B * s.out);
      dense_forward_cpu(x.data(), W.data(), b.data(), y.data(), s.B, s.in, s.out, act);
      const std::vector<float> dy0 = Uniform((size_t)s.B * s.out, rng);
      // Naive pre-activation gradient, in double from the float y.
      std::vector<double> g((size_t)s.B * s.out);
      for (size_t i = 0; i < g.size(); i++) {
        g[i] = dy0[i];
        if (act == CUVAE_ACT_RELU) g[i] = y[i] > 0 ? dy0[i] : 0.0;
        if (act == CUVAE_ACT_TANH) g[i] = dy0[i] * (1.0 - (double)y[i] * y[i]);
      }
      for (int with_dx = 0; with_dx < 2; with_dx++) {
        std::vector<float> dy = dy0, dW((size_t)s.out * s.in, 1e30f), db(s.out, 1e30f),
                           dx((size_t)s.B * s.in, 1e30f);
        dense_backward_cpu(x.data(), W.data(), y.data(), dy.data(), dW.data(), db.data(),
                           with_dx ? dx.data() : nullptr, s.B, s.in, s.out, act);
        const std::string where = "B=" + std::to_string(s.B) + " in=" + std::to_string(s.in) +
                                  " out=" + std::to_string(s.out) + " act=" + std::to_string(act);
        for (size_t i = 0; i < g.size(); i++) {
          EXPECT_TRUE(Near(dy[i], g[i], ActGradTol(act, dy0[i]), 0)) << where << " dy " << i;
        }
        for (int o = 0; o < s.out; o++) {
          double sb = 0, mb = 0, eb = 0;
          for (int r = 0; r < s.B; r++) {
            sb += g[r * s.out + o];
            mb += std::fabs(g[r * s.out + o]);
            eb += ActGradTol(act, dy0[r * s.out + o]);
          }
          EXPECT_TRUE(Near(db[o], sb, Gamma(s.B) * (mb + eb) + eb, 0)) << where << " db " << o;
          for (int i = 0; i < s.in; i++) {
            double sw = 0, mw = 0, ew = 0;
            for (int r = 0; r < s.B; r++) {
              sw += g[r * s.out + o] * x[r * s.in + i];
              mw += std::fabs(g[r * s.out + o] * x[r * s.in + i]);
              ew += ActGradTol(act, dy0[r * s.out + o]) * std::fabs(x[r * s.in + i]);
            }
            EXPECT_TRUE(Near(dW[o * s.in + i], sw, Gamma(s.B) * (mw + ew) + ew, 0)) << where << " dW";
          }
        }
        if (!with_dx) continue;  // dx == NULL: only dy, dW, db are produced
        for (int r = 0; r < s.B; r++) {
          for (int i = 0; i < s.in; i++) {
            double sx = 0, mx = 0, ex = 0;
            for (int o = 0; o < s.out; o++) {
              sx += g[r * s.out + o] * W[o * s.in + i];
              mx += std::fabs(g[r * s.out + o] * W[o * s.in + i]);
              ex += ActGradTol(act, dy0[r * s.out + o]) * std::fabs(W[o * s.in + i]);
            }
            EXPECT_TRUE(Near(dx[r * s.in + i], sx, Gamma(s.out) * (mx + ex) + ex, 0)) << where << " dx";
          }
        }
      }
    }
  }
}

}  // namespace
