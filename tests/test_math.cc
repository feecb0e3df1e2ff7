// Hand-computed checks of the CPU kernels (include/cuvae/cpu.h) against the formulas in MATH.md.
//
// Every expected number below was computed once with mpmath at 30 significant digits from the exact values
// of the float32 inputs the test stores (e.g. 0.3f = 0.300000011920928955078125), then pasted with 17
// significant digits; each block's comment gives the formula. The dense-layer tests compare against naive
// double-precision loops instead, with the standard rounding-error bound of a float dot product.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuvae/cpu.h"

namespace {

// Relative accuracy of one float32 result that went through a handful of float operations: a few ulps.
constexpr double kFew = 8 * FLT_EPSILON;  // ~1e-6

// |got - want| <= atol + rtol |want|, with a readable failure message.
::testing::AssertionResult Near(double got, double want, double atol, double rtol) {
  if (std::isfinite(got) && std::fabs(got - want) <= atol + rtol * std::fabs(want)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "got " << got << ", want " << want << " (|diff| "
                                       << std::fabs(got - want) << " > " << atol + rtol * std::fabs(want) << ")";
}

// ---- reparameterization and KL (MATH.md sections 2-3) ---------------------------------------------------

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

  const double z1[Z] = {1.3852076403130982, -1.2278368205767957, 4.0};
  for (int j = 0; j < Z; j++) EXPECT_TRUE(Near(z[Z + j], z1[j], 0, kFew)) << "z[1][" << j << "]";
  EXPECT_TRUE(Near(kl[1], 2.8833003559357852, 0, kFew));
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
  reparam_kl_backward_cpu(mulv, eps, dz, 0.25f, dmulv, B, Z);

  // Row 0 (mu = 0, lv = 0): the KL terms vanish, dmu = dz, dlv = dz eps / 2.
  for (int j = 0; j < Z; j++) {
    EXPECT_TRUE(Near(dmulv[j], dz[j], 0, kFew)) << "row 0 dmu[" << j << "]";
    EXPECT_TRUE(Near(dmulv[Z + j], 0.5 * dz[j] * eps[j], 0, kFew)) << "row 0 dlv[" << j << "]";
  }
  const double dmu1[Z] = {0.75, -2.125, 1.5};
  const double dlv1[Z] = {0.17739206891579057, 0.64882175072322601, 1.0};
  for (int j = 0; j < Z; j++) {
    EXPECT_TRUE(Near(dmulv[2 * Z + j], dmu1[j], 0, kFew)) << "row 1 dmu[" << j << "]";
    EXPECT_TRUE(Near(dmulv[3 * Z + j], dlv1[j], 0, kFew)) << "row 1 dlv[" << j << "]";
  }
}

// ---- Bernoulli likelihood (MATH.md section 4) ------------------------------------------------------------

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

  // Rows near 103: a float holds them to 7.6e-6 (one ulp); allow ~1e-6 relative for the 5-term sum.
  const double want_row[B] = {103.32062426642624, 103.4706242723867, 103.82062426642624};
  for (int b = 0; b < B; b++) EXPECT_TRUE(Near(nll[b], want_row[b], 0, kFew)) << "nll row " << b;

  const double sig[D] = {1.0, 3.720075976020836e-44, 0.5, 0.92414181997875645, 0.047425873177566781};
  for (int b = 0; b < B; b++) {
    for (int d = 0; d < D; d++) {
      // Absolute 1e-7: the gradient is O(1) and computed in float; sigmoid(-100) may flush to 0.
      EXPECT_TRUE(Near(dl[b * D + d], scale * (sig[d] - (double)xs[b]), 1e-7, kFew))
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
    // 4e-6 absolute: two ulps of 20 in float. The NLL of a matching logit must also never go negative.
    EXPECT_TRUE(Near(nll[i], want[i], 4e-6, 0)) << "case " << i;
    EXPECT_GE(nll[i], 0.0f) << "case " << i;
  }
  EXPECT_TRUE(Near(dl[0], 2.0611536e-9, 1e-7, 0));
  EXPECT_TRUE(Near(dl[1], -1.0, 1e-7, 0));
  EXPECT_TRUE(Near(dl[2], 1.0, 1e-7, 0));
  EXPECT_TRUE(Near(dl[3], -2.0611536e-9, 1e-7, 0));
}

// ---- Gaussian likelihood, fixed sigma (MATH.md section 4) ---------------------------------------------------

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
    gaussian_nll_grad_cpu(f, x, c.sigma, &nll, df, scale, 1, D);
    EXPECT_TRUE(Near(nll, c.nll, 0, kFew)) << "sigma " << c.sigma;
    for (int d = 0; d < D; d++)
      EXPECT_TRUE(Near(df[d], scale * c.df[d], 0, kFew)) << "sigma " << c.sigma << " d " << d;
    float nll2;
    gaussian_nll_grad_cpu(f, x, c.sigma, &nll2, nullptr, scale, 1, D);
    EXPECT_EQ(nll2, nll) << "forward-only call must give the same value";
  }
}

// ---- Adam (MATH.md section 7) --------------------------------------------------------------------------------

// p0 = (1, -0.5, 2), lr = 0.01, b1 = 0.9f, b2 = 0.999f, eps = 1e-8, grad_scale = 1, gradients
//   g1 = (0.1f, -2, 0), g2 = (0.2f, 1, 0.5f), g3 = (-0.3f, 0.5f, 1e-3f).
// Sequence (mpmath, using the float32 values of b1, b2, lr, eps):
//   t=1: p = (0.99000000122351727, -0.49000000027351742, 2)       (each nonzero g moves p by ~lr * sign(g):
//        m_hat = g and v_hat = g^2 after bias correction, so the step is lr g / (|g| + eps))
//   t=2: p = (0.98034818173096145, -0.48733663008377004, 1.9925586320237387)
//   t=3: p = (0.98101417213120863, -0.48672274163489396, 1.9867936620250606)
//        m = (-0.0039000026389960627, -0.021999999046324319, 0.045100009565334484)
//        v = (0.00013993821774087279, 0.0052409366399196985, 0.00024974778777366272)
TEST(Adam, ThreeStepsHandComputed) {
  float p[3] = {1.0f, -0.5f, 2.0f}, m[3] = {0, 0, 0}, v[3] = {0, 0, 0};
  const float g[3][3] = {{0.1f, -2.0f, 0.0f}, {0.2f, 1.0f, 0.5f}, {-0.3f, 0.5f, 1e-3f}};
  const double want_p[3][3] = {{0.99000000122351727, -0.49000000027351742, 2.0},
                               {0.98034818173096145, -0.48733663008377004, 1.9925586320237387},
                               {0.98101417213120863, -0.48672274163489396, 1.9867936620250606}};
  for (int t = 1; t <= 3; t++) {
    adam_update_cpu(p, g[t - 1], m, v, 3, 0.01f, 0.9f, 0.999f, 1e-8f, t, 1.0f);
    // 1e-6 absolute: p is O(1) (ulp 1.2e-7 at 1, 2.4e-7 at 2) and each step rounds once more. A missing bias
    // correction changes the first step from 0.01 to 0.001 or 0.0316, far outside this.
    for (int i = 0; i < 3; i++)
      EXPECT_TRUE(Near(p[i], want_p[t - 1][i], 1e-6, 0)) << "t=" << t << " p[" << i << "]";
  }
  const double want_m[3] = {-0.0039000026389960627, -0.021999999046324319, 0.045100009565334484};
  const double want_v[3] = {0.00013993821774087279, 0.0052409366399196985, 0.00024974778777366272};
  for (int i = 0; i < 3; i++) {
    // Moments are short float recurrences: a few ulps relative (1e-5 leaves room for b1^t-style rounding).
    EXPECT_TRUE(Near(m[i], want_m[i], 0, 1e-5)) << "m[" << i << "]";
    EXPECT_TRUE(Near(v[i], want_v[i], 0, 1e-5)) << "v[" << i << "]";
  }
}

// grad_scale multiplies g before both moments: g = 4, grad_scale = 0.5 -> g' = 2,
//   m = 0.1 * 2 = 0.20000004768371582, v = 0.001 * 4 = 0.0039999485015869141 (float b1, b2),
//   p = 1 - lr * 1 (first step ~ lr) = 0.99000000027351742.
TEST(Adam, GradScaleAppliesBeforeMoments) {
  float p = 1.0f, m = 0.0f, v = 0.0f;
  const float g = 4.0f;
  adam_update_cpu(&p, &g, &m, &v, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 1, 0.5f);
  EXPECT_TRUE(Near(m, 0.20000004768371582, 0, 1e-5));
  EXPECT_TRUE(Near(v, 0.0039999485015869141, 0, 1e-5));
  EXPECT_TRUE(Near(p, 0.99000000027351742, 1e-6, 0));
}

// ---- gradient norm ------------------------------------------------------------------------------------------

TEST(GradNorm, ExactAndDoubleAccumulated) {
  const float g34[2] = {3.0f, -4.0f};
  EXPECT_EQ(grad_norm_cpu(g34, 2), 5.0);
  EXPECT_EQ(grad_norm_cpu(g34, 0), 0.0);

  // One 1 followed by 10^6 values of 1e-4: sqrt(1 + 10^6 * (1e-4f)^2) = 1.0049875618607215 (1e-4f = 1.0e-4
  // to 7 digits). A float accumulator would stay at 1 (1 + 1e-8 rounds back to 1) and return 1.0: the sum
  // must be in double, as cpu.h says.
  std::vector<float> g(1000001, 1e-4f);
  g[0] = 1.0f;
  EXPECT_TRUE(Near(grad_norm_cpu(g.data(), g.size()), 1.0049875618607215, 0, 1e-6));
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

// y = act(x W^T + b) against double loops. Tolerance: the float dot product of n terms has error at most
// ~n u sum|x_i W_i| (u = FLT_EPSILON / 2); we allow (in + 2) FLT_EPSILON (sum|x_i W_i| + |b|), twice that bound
// plus the bias add, and tanh (slope <= 1) adds one rounding of its own.
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
          const double tol = (s.in + 2) * FLT_EPSILON * mag + 2 * FLT_EPSILON;
          EXPECT_TRUE(Near(y[r * s.out + o], ActD(acc, act), tol, 0))
              << "B=" << s.B << " in=" << s.in << " out=" << s.out << " act=" << act << " at [" << r << "][" << o
              << "]";
        }
      }
    }
  }
}

// bias_act_forward: y = act(y + b) in place; one rounding for the add and one for tanh.
TEST(Dense, BiasActForward) {
  std::mt19937 rng(7);
  const int B = 4, n = 11;
  for (cuvae_activation act : kActs) {
    std::vector<float> y0 = Uniform(B * n, rng, -2, 2), b = Uniform(n, rng), y = y0;
    bias_act_forward_cpu(y.data(), b.data(), B, n, act);
    for (int i = 0; i < B * n; i++) {
      EXPECT_TRUE(Near(y[i], ActD((double)y0[i] + b[i % n], act), 4 * FLT_EPSILON, 0))
          << "act " << act << " i " << i;
    }
  }
}

// Allowed absolute error of dy * act'(y) computed in float: tanh's 1 - y*y loses up to ~u absolutely to the
// rounding of y*y (catastrophic cancellation as |y| -> 1, so no relative bound holds), then one more rounding
// in the product: 4 FLT_EPSILON |dy| covers it. ReLU and none are exact (a multiply by 1 or 0, or nothing).
double ActGradTol(cuvae_activation act, double dy) {
  return act == CUVAE_ACT_TANH ? 4 * FLT_EPSILON * std::fabs(dy) : 0.0;
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
      EXPECT_TRUE(Near(dy[i], want, ActGradTol(act, dy0[i]), kFew)) << "act " << act << " i " << i;
    }
  }
}

// dense_backward: dy <- dy * act'(y); dW = dy^T x; db = column sums of dy; dx = dy W (or skipped when NULL).
// Outputs start as 1e30 to catch accumulate-instead-of-overwrite. Same dot-product bound as the forward test,
// with B terms for dW/db and out terms for dx, plus the propagated ActGradTol of each pre-activation gradient.
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
          EXPECT_TRUE(Near(dy[i], g[i], ActGradTol(act, dy0[i]), kFew)) << where << " dy " << i;
        }
        for (int o = 0; o < s.out; o++) {
          double sb = 0, mb = 0, eb = 0;
          for (int r = 0; r < s.B; r++) {
            sb += g[r * s.out + o];
            mb += std::fabs(g[r * s.out + o]);
            eb += ActGradTol(act, dy0[r * s.out + o]);
          }
          EXPECT_TRUE(Near(db[o], sb, (s.B + 2) * FLT_EPSILON * mb + eb, 0)) << where << " db " << o;
          for (int i = 0; i < s.in; i++) {
            double sw = 0, mw = 0, ew = 0;
            for (int r = 0; r < s.B; r++) {
              sw += g[r * s.out + o] * x[r * s.in + i];
              mw += std::fabs(g[r * s.out + o] * x[r * s.in + i]);
              ew += ActGradTol(act, dy0[r * s.out + o]) * std::fabs(x[r * s.in + i]);
            }
            EXPECT_TRUE(Near(dW[o * s.in + i], sw, (s.B + 2) * FLT_EPSILON * mw + ew, 0)) << where << " dW";
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
            EXPECT_TRUE(Near(dx[r * s.in + i], sx, (s.out + 2) * FLT_EPSILON * mx + ex, 0)) << where << " dx";
          }
        }
      }
    }
  }
}

}  // namespace
