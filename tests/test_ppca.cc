// Probabilistic PCA (src/engine/ppca.c, docs/MATH.md section 6): the closed form and EM against each other and against the
// true parameters of synthetic data drawn from a known model, the exact log-likelihood against a brute-force
// one, the checkpoint (exact posterior: ELBO = IWAE = log p(x)) through the CPU backend, and the CLI's errors.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/ppca.h"
#include "cuvae/rng.h"
#include "inference.h"
#include "ppca_synth.h"
#include "test_util.h"

using namespace cuvae_test;

namespace {

constexpr size_t kD = 12, kZ = 3;
constexpr double kS2 = 0.25;  // true noise variance s0^2

// Standard normals from splitmix64 + Box-Muller: fixed across platforms (no std:: distribution).
// The true model: W0 [D][Z] with column scales 3, 2, 1.4 (signal eigenvalues about 9|w|^2-ish, well separated
// from each other and from s0^2), b0 ~ N(0, 1).
struct Truth {
  std::vector<double> W, b;
  Truth() : W(kD * kZ), b(kD) {
    ppca_synth::Normal g{12345};
    const double scale[kZ] = {3.0 / std::sqrt((double)kD), 2.0 / std::sqrt((double)kD), 1.4 / std::sqrt((double)kD)};
    for (size_t d = 0; d < kD; d++)
      for (size_t j = 0; j < kZ; j++) W[d * kZ + j] = scale[j] * g();
    for (size_t d = 0; d < kD; d++) b[d] = g();
  }
  cuvae_ppca model() {
    cuvae_ppca p{};
    p.D = kD;
    p.Z = kZ;
    p.W = W.data();
    p.b = b.data();
    p.s2 = kS2;
    return p;
  }
};

// n rows x = W0 z + b0 + s0 e.
std::vector<float> draw(const Truth &t, size_t n, uint64_t seed) {
  return ppca_synth::draw(t.W, t.b, kD, kZ, kS2, n, seed);
}

// W W^T (D x D) of a [D][Z] matrix.
std::vector<double> wwt(const double *W, size_t D, size_t Z) {
  std::vector<double> C(D * D, 0.0);
  for (size_t r = 0; r < D; r++)
    for (size_t c = 0; c < D; c++)
      for (size_t j = 0; j < Z; j++) C[r * D + c] += W[r * Z + j] * W[c * Z + j];
  return C;
}

double frob_diff(const std::vector<double> &a, const std::vector<double> &b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}

double frob(const std::vector<double> &a) { return frob_diff(a, std::vector<double>(a.size(), 0.0)); }

struct Fits {
  cuvae_ppca_moments mo{};
  cuvae_ppca closed{}, em{};
  std::vector<double> em_ll;  // train log-likelihood after each EM iteration
  ~Fits() {
    cuvae_ppca_free(&closed);
    cuvae_ppca_free(&em);
    cuvae_ppca_moments_free(&mo);
  }
};

void record(void *ctx, int, double ll, double) { static_cast<Fits *>(ctx)->em_ll.push_back(ll); }

void fit_both(const std::vector<float> &x, Fits &f) {
  ASSERT_EQ(cuvae_ppca_moments_compute(&f.mo, x.data(), x.size() / kD, kD), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_ppca_fit_closed(&f.mo, kZ, &f.closed), 0) << cuvae_last_error();
  // tol 1e-14 nats, near the rounding of a ~12-nat double: EM runs to convergence (~150 iterations here).
  cuvae_ppca_em_opts o{10000, 1e-14, 3, record, &f};
  ASSERT_EQ(cuvae_ppca_fit_em(&f.mo, kZ, &o, &f.em), 0) << cuvae_last_error();
}

// (a) The closed form and EM find the same optimum: log-likelihood, W W^T (W only up to a rotation), s^2. EM
// stopped when an iteration gained delta < 1e-14 nats; converging linearly with contraction rho, the remaining gap
// is <= delta rho / (1 - rho) <= 1e-11 for rho <= 0.999 (the condition assumed; ~150 iterations from O(1) to
// 1e-14 means rho ~ 0.8), plus the rounding of the two ~12-nat double log-likelihoods (~1e-14 each): tolerance
// 1e-10. The optimum is quadratic, so the parameters err by ~ c sqrt(gap): measured W W^T 4e-7 relative at a gap
// of 5e-14, c = 1.8, so <= 1.8 sqrt(1e-11) = 5.7e-6 at the bound: tolerance 1e-5; s^2 measured 3e-9 (c = 0.013):
// <= 4.2e-8 at the bound: tolerance 1e-7. A wrong M-step (e.g. s^2 not divided by D) is off by O(1).
TEST(Ppca, ClosedFormAndEmAgree) {
  Truth t;
  Fits f;
  fit_both(draw(t, 20000, 1), f);
  EXPECT_TRUE(f.em.converged);
  EXPECT_GT(f.em.iterations, 2);
  EXPECT_NEAR(f.em.train_loglik, f.closed.train_loglik, 1e-10);
  const std::vector<double> cc = wwt(f.closed.W, kD, kZ), ce = wwt(f.em.W, kD, kZ);
  EXPECT_LT(frob_diff(cc, ce) / frob(cc), 1e-5);
  EXPECT_NEAR(f.em.s2 / f.closed.s2, 1.0, 1e-7);
  // EM never decreases the likelihood, up to the double rounding of each ~12-nat log-likelihood: it comes from the
  // moments through a Z x Z Cholesky and traces of D x D products, <= ~D^2 kappa u_d |ll| ~ 100 2^-53 12 = 1.3e-13
  // per value (kappa <= 10 here): 1e-12 covers two values with ~4x to spare.
  for (size_t i = 1; i < f.em_ll.size(); i++) EXPECT_GE(f.em_ll[i], f.em_ll[i - 1] - 1e-12) << "iteration " << i;
  // The closed-form W's columns are orthogonal: W^T W = L_Z - s^2 I, diagonal, eigenvalues above s^2.
  for (size_t j = 0; j < kZ; j++)
    for (size_t k = 0; k < kZ; k++) {
      double dot = 0.0;
      for (size_t d = 0; d < kD; d++) dot += f.closed.W[d * kZ + j] * f.closed.W[d * kZ + k];
      if (j != k) {
        // W = U_Z (L_Z - s^2 I)^1/2 from LAPACK's symmetric eigensolver: its eigenvectors are orthonormal to
        // ~D u_d ||S|| / gap between eigenvalues (Higham; LAPACK Users' Guide 4.7), O(1e-14) here; times |W| ~ 1-3:
        // 1e-10 leaves room for an eigenvalue gap down to 1e-3 of ||S||. Non-orthogonal columns: O(0.1).
        EXPECT_NEAR(dot, 0.0, 1e-10);
      } else if (j + 1 < kZ) {
        double next = 0.0;
        for (size_t d = 0; d < kD; d++) next += f.closed.W[d * kZ + j + 1] * f.closed.W[d * kZ + j + 1];
        EXPECT_GT(dot, next);  // by decreasing eigenvalue
      }
    }
}

// (b) Both recover the truth, better with more data. Statistical scale: an entry of the sample covariance S has
// standard deviation sqrt((C_ii C_jj + C_ij^2) / N), so ||S - C0||_F ~ sqrt((tr(C0)^2 + ||C0||_F^2) / N); the ML
// W W^T is S's top-Z part minus s^2, whose error is at most of that size: tolerance 3x it. The mean:
// E||b - b0||^2 = tr(C0) / N, tolerance 3x its root. s^2 averages D - Z noise directions over N points: relative
// standard deviation sqrt(2 / (N (D - Z))), plus a bias of order Z / N from the noise the sample's top-Z subspace
// absorbs: tolerance 5 sd + 3 Z / N. Measured margins: 3-6x (W W^T), 3-6x (b), 15-24x (s^2).
TEST(Ppca, RecoversTheTruthAsNGrows) {
  Truth t;
  const std::vector<double> c0w = wwt(t.W.data(), kD, kZ);
  std::vector<double> C0 = c0w;
  for (size_t d = 0; d < kD; d++) C0[d * kD + d] += kS2;
  double trC = 0.0;
  for (size_t d = 0; d < kD; d++) trC += C0[d * kD + d];
  double err_w[2][2];
  const size_t ns[2] = {500, 20000};
  for (int k = 0; k < 2; k++) {
    const double N = (double)ns[k];
    Fits f;
    fit_both(draw(t, ns[k], 100 + k), f);
    const double tol_w = 3.0 * std::sqrt((trC * trC + frob(C0) * frob(C0)) / N) / frob(c0w);
    const double tol_b = 3.0 * std::sqrt(trC / N);
    const double tol_s2 = 5.0 * std::sqrt(2.0 / (N * (double)(kD - kZ))) + 3.0 * (double)kZ / N;
    const cuvae_ppca *fit[2] = {&f.closed, &f.em};
    for (int m = 0; m < 2; m++) {
      err_w[k][m] = frob_diff(wwt(fit[m]->W, kD, kZ), c0w) / frob(c0w);
      EXPECT_LT(err_w[k][m], tol_w) << "N = " << ns[k] << (m ? " EM" : " closed form");
      double eb = 0.0;
      for (size_t d = 0; d < kD; d++) eb += (fit[m]->b[d] - t.b[d]) * (fit[m]->b[d] - t.b[d]);
      EXPECT_LT(std::sqrt(eb), tol_b);
      EXPECT_NEAR(fit[m]->s2 / kS2, 1.0, tol_s2) << "N = " << ns[k];
    }
  }
  for (int m = 0; m < 2; m++) EXPECT_LT(err_w[1][m], err_w[0][m]);
}

// (c) The closed form is the maximum of the likelihood: no lower on the training data than the true parameters
// (measured: -11.85712 against -11.86428) or than EM, up to the double rounding of the two ~12-nat means (each row
// through a Cholesky-based form, <= ~2 D gamma_{D+1} kappa(C) |ll| ~ 1e-13 for kappa <= 10 (Higham Thm 10.3, 8.5)):
// 1e-12. Also: the per-row log-likelihood and the one from the moments (tr(C^-1 S) form) agree to the rounding of
// double sums: the moments sum N = 3000 outer products (<= N u_d sum|x x^T|, 3.3e-13 relative to E|x|^2, Higham
// 3.1), the rows each err by ~1e-13 as above; with |x|^2 / |ll| <= 30 (the condition assumed): rtol 1e-11.
// Measured 1e-15.
TEST(Ppca, ClosedFormIsTheMaximum) {
  Truth t;
  const std::vector<float> x = draw(t, 3000, 7);
  Fits f;
  fit_both(x, f);
  cuvae_ppca truth = t.model();
  double ll_true = 0.0, ll_closed = 0.0, ll_em = 0.0, ll_true_mo = 0.0;
  ASSERT_EQ(cuvae_ppca_loglik(&truth, x.data(), 3000, nullptr, &ll_true), 0);
  ASSERT_EQ(cuvae_ppca_loglik(&f.closed, x.data(), 3000, nullptr, &ll_closed), 0);
  ASSERT_EQ(cuvae_ppca_loglik(&f.em, x.data(), 3000, nullptr, &ll_em), 0);
  ASSERT_EQ(cuvae_ppca_loglik_moments(&truth, &f.mo, &ll_true_mo), 0);
  EXPECT_GT(ll_closed, ll_true);
  EXPECT_GE(ll_closed, ll_em - 1e-12);
  EXPECT_NEAR(ll_closed, f.closed.train_loglik, 1e-11 * std::fabs(ll_closed));
  EXPECT_NEAR(ll_true, ll_true_mo, 1e-11 * std::fabs(ll_true));
  // Perturbing the optimum in any parameter lowers the likelihood.
  for (int which = 0; which < 3; which++) {
    std::vector<double> W(f.closed.W, f.closed.W + kD * kZ), b(f.closed.b, f.closed.b + kD);
    cuvae_ppca q = f.closed;
    q.W = W.data();
    q.b = b.data();
    if (which == 0) W[5] += 1e-3;
    if (which == 1) b[2] -= 1e-3;
    if (which == 2) q.s2 *= 1.001;
    double ll = 0.0;
    ASSERT_EQ(cuvae_ppca_loglik(&q, x.data(), 3000, nullptr, &ll), 0);
    EXPECT_LT(ll, ll_closed) << "perturbation " << which;
  }
}

// (d) The Woodbury / determinant-lemma log-likelihood against the definition: C = W W^T + s^2 I built explicitly,
// its Cholesky factor, log det C = 2 sum log L_ii and (x - b)^T C^-1 (x - b) = ||L^-1 (x - b)||^2, in double.
// A small arbitrary case (W not orthogonal, b not the mean). Both are double computations (u_d = 2^-53) of ~10-nat
// values. Bound, |ref - out| <= rtol |ref|: a Cholesky factor is the exact one of C + dC, |dC| <= gamma_{D+1} |L| |L^T|
// (Higham, Thm 10.3), the triangular solves likewise (Thm 8.5); to first order log det C and q = r^T C^-1 r then err
// by <= ~2 D gamma_{D+1} kappa(C) relative, kappa(C) <= (s^2 + ||W||_F^2) / s^2 = (0.37 + 4.89) / 0.37 = 14.2:
// 2 5 6 u_d 14.2 = 9.5e-14 per side. The Woodbury side also forms W^T W and a Z x Z solve (no worse conditioned);
// doubling for it and adding the two sides: rtol 4e-13. Measured: < 1e-15. (A wrong log det factor: ~1 nat.)
TEST(Ppca, LogLikelihoodMatchesBruteForce) {
  const size_t D = 5, Z = 2, n = 7;
  std::vector<double> W = {0.9, -0.3, 0.2, 1.1, -0.7, 0.4, 0.05, 0.6, 1.3, -0.2}, b = {0.1, -0.2, 0.3, 0.0, 0.5};
  cuvae_ppca p{};
  p.D = D;
  p.Z = Z;
  p.W = W.data();
  p.b = b.data();
  p.s2 = 0.37;
  ppca_synth::Normal g{99};
  std::vector<float> x(n * D);
  for (float &v : x) v = (float)(2.0 * g());
  std::vector<double> per(n);
  double mean = 0.0;
  ASSERT_EQ(cuvae_ppca_loglik(&p, x.data(), n, per.data(), &mean), 0) << cuvae_last_error();
  std::vector<double> L = wwt(W.data(), D, Z);
  for (size_t d = 0; d < D; d++) L[d * D + d] += p.s2;
  for (size_t j = 0; j < D; j++) {  // Cholesky-Banachiewicz, in place (lower)
    for (size_t i = j; i < D; i++) {
      double s = L[i * D + j];
      for (size_t k = 0; k < j; k++) s -= L[i * D + k] * L[j * D + k];
      L[i * D + j] = i == j ? std::sqrt(s) : s / L[j * D + j];
    }
  }
  double logdet = 0.0, sum = 0.0;
  for (size_t d = 0; d < D; d++) logdet += 2.0 * std::log(L[d * D + d]);
  for (size_t r = 0; r < n; r++) {
    double y[D], q = 0.0;
    for (size_t i = 0; i < D; i++) {  // forward substitution L y = x - b
      double s = (double)x[r * D + i] - b[i];
      for (size_t k = 0; k < i; k++) s -= L[i * D + k] * y[k];
      y[i] = s / L[i * D + i];
      q += y[i] * y[i];
    }
    const double want = -0.5 * ((double)D * std::log(2.0 * M_PI) + logdet + q);
    EXPECT_NEAR(per[r], want, 4e-13 * std::fabs(want)) << "row " << r;
    sum += want;
  }
  EXPECT_NEAR(mean, sum / (double)n, 4e-13 * std::fabs(mean));  // the mean of those rows
}

// Bad input fails with one message: Z out of range, too few points, data without noise (rank <= Z: s^2 = 0).
TEST(Ppca, DegenerateInputsFail) {
  const size_t D = 5, n = 50;
  ppca_synth::Normal g{5};
  std::vector<float> x(n * D);
  for (size_t i = 0; i < n; i++) {  // x = a u + c v: exactly rank 2 (up to float rounding, 1e-16 relative variance)
    const double a = g(), c = g();
    for (size_t d = 0; d < D; d++) x[i * D + d] = (float)(a * (double)(d + 1) + c * (d % 2 ? 1.0 : -1.0));
  }
  cuvae_ppca_moments mo{};
  cuvae_ppca p{};
  EXPECT_EQ(cuvae_ppca_moments_compute(&mo, x.data(), 1, D), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("at least 2 data points"), std::string::npos);
  ASSERT_EQ(cuvae_ppca_moments_compute(&mo, x.data(), n, D), 0);
  EXPECT_EQ(cuvae_ppca_fit_closed(&mo, 0, &p), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("latent Z = 0 must be from 1 to D - 1 = 4"), std::string::npos);
  EXPECT_EQ(cuvae_ppca_fit_closed(&mo, D, &p), -1);
  cuvae_ppca_em_opts o{100, 1e-6, 1, nullptr, nullptr};
  EXPECT_EQ(cuvae_ppca_fit_em(&mo, D, &o, &p), -1);
  EXPECT_EQ(cuvae_ppca_fit_closed(&mo, 2, &p), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("2-dimensional subspace"), std::string::npos) << cuvae_last_error();
  EXPECT_EQ(p.W, nullptr);  // nothing left allocated
  ASSERT_EQ(cuvae_ppca_fit_closed(&mo, 1, &p), 0) << cuvae_last_error();  // Z = 1 leaves a noise direction
  cuvae_ppca_free(&p);
  cuvae_ppca_moments_free(&mo);
}

// Train / test .npy files drawn from the true model, and a config naming them.
struct Files {
  std::string dir;
  std::vector<float> train, test;
  size_t n_train = 4000, n_test = 2000;
  explicit Files(const Truth &t) {
    dir = make_temp_dir();
    train = draw(t, n_train, 21);
    test = draw(t, n_test, 22);
    const std::string tr = "(" + std::to_string(n_train) + ", 12)", te = "(" + std::to_string(n_test) + ", 12)";
    write_file(dir + "/train.npy", npy_bytes("<f4", tr, train.data(), train.size() * 4));
    write_file(dir + "/test.npy", npy_bytes("<f4", te, test.data(), test.size() * 4));
    write_file(dir + "/ppca.ini", "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir +
                                      "/test.npy\n[model]\nhidden = 16\nlatent = 7\nlikelihood = bernoulli\n"
                                      "[train]\nseed = 5\nthreads = 1\neval_batch_size = 500\n");
  }
};

// The inverse of the posterior precision M = W^T W + s^2 I of a kZ = 3 fit, by cofactors.
std::vector<double> posterior_precision_inverse(const cuvae_ppca &p) {
  std::vector<double> M(kZ * kZ), Minv(kZ * kZ);
  for (size_t j = 0; j < kZ; j++)
    for (size_t k = 0; k < kZ; k++) {
      double s = j == k ? p.s2 : 0.0;
      for (size_t d = 0; d < kD; d++) s += p.W[d * kZ + j] * p.W[d * kZ + k];
      M[j * kZ + k] = s;
    }
  const double *m = M.data();
  const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                     m[2] * (m[3] * m[7] - m[4] * m[6]);
  const double inv[9] = {m[4] * m[8] - m[5] * m[7], m[2] * m[7] - m[1] * m[8], m[1] * m[5] - m[2] * m[4],
                         m[5] * m[6] - m[3] * m[8], m[0] * m[8] - m[2] * m[6], m[2] * m[3] - m[0] * m[5],
                         m[3] * m[7] - m[4] * m[6], m[1] * m[6] - m[0] * m[7], m[0] * m[4] - m[1] * m[3]};
  for (int i = 0; i < 9; i++) Minv[i] = inv[i] / det;
  return Minv;
}

// The exact posterior of fit p on the N rows of x: per row the decoded posterior mean W mu + b = W M^-1 W^T (x - b)
// + b (rotation-invariant), and the sum over rows of the one-sample ELBO's variance (4 r^T W Sigma W^T r +
// 2 tr((W^T W Sigma)^2)) / (4 s^4), r = x - b - W mu, Sigma = s^2 M^-1 (derived at CheckpointIsTheExactPosterior
// below).
struct ExactPosterior {
  std::vector<float> mu_want;
  double var_sum = 0.0;
};
ExactPosterior exact_posterior(const cuvae_ppca &p, const std::vector<float> &x, size_t N) {
  const std::vector<double> Minv = posterior_precision_inverse(p);
  // WtW Sigma = (M - s^2 I) s^2 M^-1 = s^2 (I - s^2 M^-1)
  double trG2 = 0.0;
  {
    double A[kZ * kZ];
    for (size_t j = 0; j < kZ; j++)
      for (size_t k = 0; k < kZ; k++) A[j * kZ + k] = p.s2 * ((j == k) - p.s2 * Minv[j * kZ + k]);
    for (size_t j = 0; j < kZ; j++)
      for (size_t k = 0; k < kZ; k++) trG2 += A[j * kZ + k] * A[k * kZ + j];
  }
  ExactPosterior e;
  e.mu_want.resize(N * kD);
  for (size_t i = 0; i < N; i++) {
    double xc[kD], u[kZ] = {0}, mu[kZ] = {0}, r[kD];
    for (size_t d = 0; d < kD; d++) xc[d] = (double)x[i * kD + d] - p.b[d];
    for (size_t d = 0; d < kD; d++)
      for (size_t j = 0; j < kZ; j++) u[j] += p.W[d * kZ + j] * xc[d];
    for (size_t j = 0; j < kZ; j++)
      for (size_t k = 0; k < kZ; k++) mu[j] += Minv[j * kZ + k] * u[k];
    for (size_t d = 0; d < kD; d++) {
      double wm = 0.0;
      for (size_t j = 0; j < kZ; j++) wm += p.W[d * kZ + j] * mu[j];
      r[d] = xc[d] - wm;
      e.mu_want[i * kD + d] = (float)(wm + p.b[d]);
    }
    double wr[kZ] = {0}, rWSWr = 0.0;  // r^T W Sigma W^T r, Sigma = s^2 M^-1
    for (size_t d = 0; d < kD; d++)
      for (size_t j = 0; j < kZ; j++) wr[j] += p.W[d * kZ + j] * r[d];
    for (size_t j = 0; j < kZ; j++)
      for (size_t k = 0; k < kZ; k++) rWSWr += wr[j] * p.s2 * Minv[j * kZ + k] * wr[k];
    e.var_sum += (4.0 * rWSWr + 2.0 * trG2) / (4.0 * p.s2 * p.s2);
  }
  return e;
}

// The checkpoint's encoder mean decoded by the backend, W mu(x) + b, against the exact posterior's mu_want.
void expect_decoded_posterior_mean(cuvae_inference &inf, const std::vector<float> &mu_want, size_t N) {
  // The encoder's mean decoded: W mu(x) + b. Bound, |want - dec| <= gamma_{kZ+2} M_f + sum_j |W_dj| gamma_{kD+2}
  // M_mu_j + u |want|: mu = A x + a is a float GEMM of kD terms plus the bias (gamma_{kD+1} (|a| + sum|A x|), Higham
  // 3.1, any order), and A, a are the exact posterior's rounded once to float (u relative each: one more term's
  // worth, hence kD + 2); likewise f = W mu + b with M_f = |b| + sum_j |W_dj| |mu_j| (kZ + 2); mu_want is rounded
  // to float once. M^-1 taken diagonal in the rotated basis (ppca.c) errs by ~1e-16: nothing. Measured 7e-7.
  std::vector<float> mulv(N * 2 * kZ), z(N * kZ), dec(N * kD);
  ASSERT_EQ(inf.be->encode(inf.be, inf.data.x, NULL, N, mulv.data()), 0) << cuvae_last_error();
  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j < kZ; j++) z[i * kZ + j] = mulv[i * 2 * kZ + j];
  ASSERT_EQ(inf.be->decode(inf.be, z.data(), NULL, N, dec.data()), 0) << cuvae_last_error();
  const cuvae_tensor *emw = cuvae_model_find(&inf.model, "enc.mu.weight"),
                     *emb = cuvae_model_find(&inf.model, "enc.mu.bias"),
                     *dw = cuvae_model_find(&inf.model, "dec.out.weight"),
                     *db = cuvae_model_find(&inf.model, "dec.out.bias");
  ASSERT_TRUE(emw && emb && dw && db);
  const float *P = inf.ck.params;
  const double u = std::ldexp(1.0, -24), g_enc = (kD + 2) * u / (1 - (kD + 2) * u),
               g_dec = (kZ + 2) * u / (1 - (kZ + 2) * u);
  for (size_t i = 0; i < N; i++) {
    double m_mu[kZ], mu_abs[kZ];
    for (size_t j = 0; j < kZ; j++) {
      double acc = P[emb->offset + j], mag = std::fabs(acc);
      for (size_t d = 0; d < kD; d++) {
        acc += (double)P[emw->offset + j * kD + d] * inf.data.x[i * kD + d];
        mag += std::fabs((double)P[emw->offset + j * kD + d] * inf.data.x[i * kD + d]);
      }
      m_mu[j] = mag;
      mu_abs[j] = std::fabs(acc) + g_enc * mag;
    }
    for (size_t d = 0; d < kD; d++) {
      double m_f = std::fabs(P[db->offset + d]), prop = 0;
      for (size_t j = 0; j < kZ; j++) {
        m_f += std::fabs(P[dw->offset + d * kZ + j]) * mu_abs[j];
        prop += std::fabs(P[dw->offset + d * kZ + j]) * g_enc * m_mu[j];
      }
      const double tol = 1.01 * (g_dec * m_f + prop) + u * std::fabs(mu_want[i * kD + d]);
      ASSERT_NEAR(dec[i * kD + d], mu_want[i * kD + d], tol) << "element " << i * kD + d;
    }
  }
}

// (e) The checkpoint's encoder is the exact posterior, so for every z ~ q(z|x) the importance weight
// log w = log p(x|z) + log p(z) - log q(z|x) = log p(x): the CPU backend's IWAE estimate must equal the exact
// log p(x) per row, to the float error of a log-weight (counted in tests/test_iwae.cc: the encoder and decoder
// GEMMs' gamma_{K+1} M, expf's 4 ulp on sd, the float NLL's u |nll|, carried through |x - f| / s^2 and |z|; plus
// the parameters' rounding to float, u relative each, as one more GEMM term): for these O(1) models with |eps|
// <= 6 that is <= ~3e-4 per ~12-20-nat row, so atol 1e-6 + rtol 1e-5 (1.2e-4 at 12 nats) assumes the rows'
// |x - f| / s^2 <= 4 (measured error 1e-7 relative); and
// its ELBO must equal log p(x) up to the Monte-Carlo noise of the one-sample reconstruction term (the KL is
// analytic). With z = mu + sigma eps,
// -log p(x|z) = (||r||^2 - 2 a^T eps + sum_jk eps_j G_jk eps_k) / (2 s^2) + const, r = x - b - W mu,
// a = Sigma^{1/2} W^T r, G = Sigma^{1/2} W^T W Sigma^{1/2}, Sigma = s^2 M^-1; its variance is
// (4 ||a||^2 + 2 tr(G^2)) / (4 s^4) = (4 r^T W Sigma W^T r + 2 tr((W^T W Sigma)^2)) / (4 s^4). The mean over N
// points may differ from log p(x) by 4 of its standard deviations (plus 1e-4, the float error of a row as above).
// Measured: sd 0.027, difference 0.003.
TEST(Ppca, CheckpointIsTheExactPosterior) {
  Truth t;
  Files files(t);
  ASSERT_FALSE(files.dir.empty());
  cuvae_config base;
  cuvae_config_defaults(&base);
  ASSERT_EQ(cuvae_config_load_file(&base, (files.dir + "/ppca.ini").c_str()), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_config_finalize(&base), 0) << cuvae_last_error();
  Fits f;
  ASSERT_EQ(cuvae_ppca_moments_compute(&f.mo, files.train.data(), files.n_train, kD), 0);
  // EM's W (not orthogonal: the conversion must rotate it) stopped early, so the posterior is still exact for it.
  cuvae_ppca_em_opts o{30, 0.0, 3, nullptr, nullptr};
  ASSERT_EQ(cuvae_ppca_fit_em(&f.mo, kZ, &o, &f.em), 0) << cuvae_last_error();
  const cuvae_ppca &p = f.em;
  const std::string ck = files.dir + "/ppca.cuvae";
  ASSERT_EQ(cuvae_ppca_save_checkpoint(&p, &base, ck.c_str()), 0) << cuvae_last_error();

  cuvae_inference inf;
  ASSERT_EQ(cuvae_inference_open(&inf, ck.c_str(), "cpu", CUVAE_SPLIT_TEST), 0) << cuvae_last_error();
  EXPECT_EQ(inf.cfg.n_hidden, 0);
  EXPECT_EQ(inf.cfg.latent, (int)kZ);
  EXPECT_EQ(inf.cfg.decoder, CUVAE_DECODER_LINEAR);
  EXPECT_EQ(inf.cfg.likelihood, CUVAE_LIK_GAUSSIAN);
  EXPECT_EQ(inf.cfg.gaussian_variance, CUVAE_VAR_LEARNED_SHARED);
  EXPECT_EQ(inf.cfg.seed, 5u);  // [train] kept
  const size_t N = files.n_test;

  // Exact log p(x) per test row, and the ELBO's Monte-Carlo variance per row (formula above).
  std::vector<double> ll(N);
  double ll_mean = 0.0;
  ASSERT_EQ(cuvae_ppca_loglik(&p, files.test.data(), N, ll.data(), &ll_mean), 0);
  const ExactPosterior post = exact_posterior(p, files.test, N);
  const double elbo_tol = 4.0 * std::sqrt(post.var_sum / (double)N / (double)N) + 1e-4;

  ASSERT_NO_FATAL_FAILURE(expect_decoded_posterior_mean(inf, post.mu_want, N));

  cuvae_loss loss{};
  ASSERT_EQ(inf.be->evaluate(inf.be, &inf.data, 500, &loss), 0) << cuvae_last_error();
  EXPECT_NEAR(loss.nelbo, -ll_mean, elbo_tol) << "tolerance " << elbo_tol;

  std::vector<double> log_px(N);
  ASSERT_EQ(inf.be->iwae(inf.be, &inf.data, 10, 500, log_px.data()), 0) << cuvae_last_error();
  for (size_t i = 0; i < N; i++) ASSERT_NEAR(log_px[i], ll[i], 1e-5 * std::fabs(ll[i]) + 1e-6) << "row " << i;
  cuvae_inference_close(&inf);
}

using cuvae_test::Result;

Result run(const std::string &args) { return cuvae_test::run_shell(std::string(CUVAE_BIN) + " " + args); }

void expect_error(const Result &r, int code, const std::string &needle) {
  EXPECT_EQ(r.code, code) << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << "missing '" << needle << "' in: " << r.out;
}

// The number after `key` (searched from the first `after`) in a command's output; NaN when absent.
double json_number(const std::string &out, const std::string &after, const std::string &key) {
  const size_t a = out.find(after);
  const size_t k = a == std::string::npos ? a : out.find(key, a);
  return k == std::string::npos ? NAN : std::strtod(out.c_str() + k + key.size(), nullptr);
}

// (f) The command: a run that writes the checkpoint and one JSON line, and one clear message per bad input.
TEST(Ppca, Cli) {
  Truth t;
  Files files(t);
  const std::string cfg = files.dir + "/ppca.ini", ck = files.dir + "/cli.cuvae";
  Result r = run("ppca --config " + cfg + " --latent 3 --checkpoint " + ck + " --em-tol 1e-9");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"closed\": {\"train_loglik\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"converged\": true"), std::string::npos) << r.out;
  EXPECT_FALSE(read_file(ck).empty());
  // The closed-form checkpoint through `cuvae eval`: its IWAE estimate is the exact test log-likelihood (as in
  // (e): exact posterior; the float error of (e), 1e-5 relative, plus the JSON's 6 decimals, 0.5e-6 per value).
  const double test_nll = json_number(r.out, "\"closed\": {", "\"test_nll\": ");
  Result e = run("eval " + ck + " --device cpu --iwae 10");
  ASSERT_EQ(e.code, 0) << e.out;
  const double iwae_nll = json_number(e.out, "", "\"iwae_nll\": ");
  EXPECT_NEAR(iwae_nll, test_nll, 1e-5 * std::fabs(test_nll) + 1e-6) << r.out << e.out;
  r = run("ppca --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--latent Z"), std::string::npos);

  expect_error(run("ppca --latent 3"), 2, "needs --config");
  expect_error(run("ppca --config " + cfg), 2, "needs --latent");
  expect_error(run("ppca --config " + cfg + " --latent 0"), 2, "--latent '0'");
  expect_error(run("ppca --config " + cfg + " --latent x"), 2, "--latent 'x'");
  expect_error(run("ppca --config " + cfg + " --latent 12 --checkpoint " + ck), 2, "below the data's D = 12");
  expect_error(run("ppca --config " + cfg + " --latent 3 --bogus"), 2, "unknown option '--bogus'");
  expect_error(run("ppca --config " + cfg + " --latent 3 --method pca"), 2, "--method 'pca'");
  expect_error(run("ppca --config " + cfg + " --latent 3 --em-tol -1"), 2, "--em-tol '-1'");
  expect_error(run("ppca --config " + cfg + " --latent 3 --em-iters 0"), 2, "--em-iters '0'");
  expect_error(run("ppca --config " + cfg + " --latent 3 --out a --checkpoint b"), 2, "give one");
  expect_error(run("ppca --config " + files.dir + "/missing.ini --latent 3"), 1, "missing.ini");
  expect_error(run("ppca --config " + cfg + " --latent 3 --set model.nope=1"), 2, "nope");
}

}  // namespace
