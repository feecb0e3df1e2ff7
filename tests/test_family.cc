// The model family (issue 7; MATH.md sections 4-6) on the CPU: every new objective and likelihood checked against
// an independent naive double-precision reference written here (plain loops, no BLAS, parameters read through the
// tensor names of include/cuvae/model.h, eps sample-major: row s*B + r is sample s of data row r), differentiated
// by central differences; bitwise equivalences between members of the family; the config keys' cross checks; and
// the CPU backend's data noise (dynamic binarization, corruption).
//
// Gradient check, as tests/test_gradcheck.cc (same reasoning, same numbers):
// Step size h = 1e-5 in double: truncation h^2/6 |L'''| ~ 1e-11, roundoff ~1e-16 |L| / h ~ 1e-10 for |L| ~ 10, so
// the FD gradient is good to ~1e-9, far below the float tolerance: any mismatch is the library's.
// Tolerance |analytic - fd| <= kAtol + kRtol |fd|: the analytic gradient is float32; every value comes out of a
// chain of ~2 x depth dense layers of float dot products of <= 12 terms (the decoder's dW sums over B * samples
// <= 16 rows here), plus the per-sample weights of the multi-sample objectives (softmax in double, rounded once to
// float: one more u). That is a relative error of some tens of u = 6e-8 w.r.t. the magnitude of the summed terms,
// ~1e-6 x the gradient scale (0.01 .. 2 here, learned variances multiply by exp(-lv) <= ~5): kAtol = 1e-5 is ~10x
// that, kRtol = 1e-4 covers large entries. A wrong factor (1/L vs 1/(B L), a missing beta, a softmax weight not
// applied, a sample slice read at the wrong offset) gives errors of the size of the gradient itself (>= 1e-3).
//
// Objective value: |ours - ref| <= kLossAtol + kLossRtol * M, with M the sum of the ABSOLUTE values of the terms
// that make up the value (per data point): the float forward rounds each term to a few u relative to its own size,
// and the sampled KL 0.5 sum_j (z^2 - eps^2 - lv) and the learned-variance NLL can cancel to a value much smaller
// than its terms, so the bound has to scale with the terms, not the result. kLossRtol = 1e-5 (~170 u) and
// kLossAtol = 2e-6 are those of test_gradcheck.cc.
//
// Kinks: with ReLU an FD entry is skipped when +-h changes the sign pattern of any ReLU pre-activation (the
// reference records the pattern, encoder and all B * samples decoder rows); skips must stay rare (<= 5%).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "cuvae/rng.h"
#include "test_util.h"

namespace {

constexpr double kH = 1e-5;
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;
constexpr double kLossRtol = 1e-5;
constexpr double kLossAtol = 2e-6;
constexpr double kLog2Pi = 1.8378770664093454836;

// One member of the family: architecture, likelihood and objective.
struct Case {
  const char *name;
  cuvae_likelihood lik;
  cuvae_variance var;
  cuvae_decoder dec;
  cuvae_activation act;
  std::vector<int> hidden;
  int Z, D, B;
  float sigma;
  cuvae_objective obj;
  int samples;
  cuvae_kl_estimator kl;
  float beta;
};
void PrintTo(const Case &c, std::ostream *os) { *os << "case " << c.name; }

constexpr cuvae_likelihood kBern = CUVAE_LIK_BERNOULLI, kGauss = CUVAE_LIK_GAUSSIAN;
constexpr cuvae_variance kFixed = CUVAE_VAR_FIXED, kShared = CUVAE_VAR_LEARNED_SHARED,
                         kPerDim = CUVAE_VAR_LEARNED_PER_DIM;
constexpr cuvae_decoder kMlp = CUVAE_DECODER_MLP, kLinear = CUVAE_DECODER_LINEAR;
constexpr cuvae_activation kTanh = CUVAE_ACT_TANH, kRelu = CUVAE_ACT_RELU;
constexpr cuvae_objective kElbo = CUVAE_OBJ_ELBO, kIwae = CUVAE_OBJ_IWAE, kAe = CUVAE_OBJ_AE;
constexpr cuvae_kl_estimator kAna = CUVAE_KL_ANALYTIC, kSamp = CUVAE_KL_SAMPLED;

// (a)-(i) of the brief, plus combinations that exercise the per-sample weights on the learned-variance heads.
const Case kCases[] = {
    {"gauss_shared", kGauss, kShared, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f},
    {"gauss_perdim", kGauss, kPerDim, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f},
    {"elbo3_analytic_relu", kBern, kFixed, kMlp, kRelu, {5}, 3, 6, 4, 1.0f, kElbo, 3, kAna, 1.0f},
    {"elbo3_sampled", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kElbo, 3, kSamp, 1.0f},
    {"elbo3_sampled_gauss", kGauss, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 3, kSamp, 1.0f},
    {"iwae4", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kIwae, 4, kAna, 1.0f},
    {"iwae4_relu", kBern, kFixed, kMlp, kRelu, {5, 4}, 3, 6, 4, 1.0f, kIwae, 4, kAna, 1.0f},
    {"ae_bernoulli", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kAe, 1, kAna, 1.0f},
    {"ae_gauss", kGauss, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kAe, 1, kAna, 1.0f},
    {"ae_gauss_relu", kGauss, kFixed, kMlp, kRelu, {6}, 3, 6, 4, 0.8f, kAe, 1, kAna, 1.0f},
    {"beta03_analytic", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kElbo, 1, kAna, 0.3f},
    {"beta03_sampled", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kElbo, 2, kSamp, 0.3f},
    {"linear_decoder", kGauss, kFixed, kLinear, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f},
    {"linear_decoder_bern", kBern, kFixed, kLinear, kTanh, {5}, 3, 6, 4, 1.0f, kElbo, 1, kAna, 1.0f},
    {"shared_iwae3_linear", kGauss, kShared, kLinear, kTanh, {5}, 3, 6, 4, 0.8f, kIwae, 3, kAna, 1.0f},
    {"perdim_iwae3", kGauss, kPerDim, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kIwae, 3, kAna, 1.0f},
    {"shared_sampled2_beta", kGauss, kShared, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 2, kSamp, 0.3f},
    {"perdim_elbo2_beta", kGauss, kPerDim, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 2, kAna, 0.3f},
};

// A config that finalizes: the case's fields over the defaults, with explicit (never opened) data paths.
void CaseConfig(const Case &c, cuvae_config *cfg) {
  cuvae_config_defaults(cfg);
  cfg->dataset[0] = '\0';
  std::snprintf(cfg->train_images, sizeof cfg->train_images, "%s", "train.npy");
  std::snprintf(cfg->test_images, sizeof cfg->test_images, "%s", "test.npy");
  cfg->n_hidden = (int)c.hidden.size();
  for (size_t i = 0; i < c.hidden.size(); i++) cfg->hidden[i] = c.hidden[i];
  cfg->latent = c.Z;
  cfg->likelihood = c.lik;
  cfg->sigma = c.sigma;
  cfg->gaussian_variance = c.var;
  cfg->decoder = c.dec;
  cfg->activation = c.act;
  cfg->objective = c.obj;
  cfg->samples = c.samples;
  cfg->kl = c.kl;
  cfg->beta = c.beta;
  cfg->beta_warmup_steps = 0;
}

using Workspace = std::unique_ptr<cuvae_cpu_ws, decltype(&cuvae_cpu_ws_destroy)>;
Workspace MakeWs(const cuvae_model &m, int rows) {
  return Workspace(cuvae_cpu_ws_create(&m, rows), cuvae_cpu_ws_destroy);
}

// ---- the independent double-precision reference ------------------------------------------------------------

const cuvae_tensor &Find(const cuvae_model &m, const std::string &name) {
  const cuvae_tensor *t = cuvae_model_find(&m, name.c_str());
  if (!t) throw std::runtime_error("model has no tensor " + name);
  return *t;
}

// h_out[N][out] = act(h_in W^T + b) with W, b read by name; ReLU signs are appended to `pattern`.
std::vector<double> Linear(const cuvae_model &m, const std::vector<double> &p, const std::string &layer,
                           const std::vector<double> &h, int N, bool activate, cuvae_activation act,
                           std::vector<char> *pattern) {
  const cuvae_tensor &W = Find(m, layer + ".weight"), &bias = Find(m, layer + ".bias");
  const size_t out = W.shape[0], in = W.shape[1];
  if (h.size() != (size_t)N * in || bias.count != out) throw std::runtime_error(layer + ": shape mismatch");
  std::vector<double> y((size_t)N * out);
  for (int r = 0; r < N; r++) {
    for (size_t o = 0; o < out; o++) {
      double a = p[bias.offset + o];
      for (size_t i = 0; i < in; i++) a += p[W.offset + o * in + i] * h[r * in + i];
      if (activate && act == CUVAE_ACT_RELU) {
        if (pattern) pattern->push_back(a > 0);
        a = a > 0 ? a : 0;
      } else if (activate && act == CUVAE_ACT_TANH) {
        a = std::tanh(a);
      }
      y[r * out + o] = a;
    }
  }
  return y;
}

struct Ref {
  double objective = 0, recon = 0, kl = 0;
  double mag_objective = 0, mag_recon = 0, mag_kl = 0;  // sums of |terms| per data point (the tolerances' scale)
};

// Encoder: mulv[B][2Z] = [mu | lv] per row.
std::vector<double> RefEncode(const cuvae_model &m, const Case &c, const std::vector<double> &p,
                              const std::vector<double> &x, std::vector<char> *pattern) {
  std::vector<double> h = x;
  for (size_t i = 0; i < c.hidden.size(); i++)
    h = Linear(m, p, "enc." + std::to_string(i), h, c.B, true, c.act, pattern);
  const std::vector<double> mu = Linear(m, p, "enc.mu", h, c.B, false, c.act, pattern);
  const std::vector<double> lv = Linear(m, p, "enc.lv", h, c.B, false, c.act, pattern);
  std::vector<double> mulv((size_t)c.B * 2 * c.Z);
  for (int r = 0; r < c.B; r++) {
    for (int j = 0; j < c.Z; j++) {
      mulv[r * 2 * c.Z + j] = mu[r * c.Z + j];
      mulv[r * 2 * c.Z + c.Z + j] = lv[r * c.Z + j];
    }
  }
  return mulv;
}

// Everything after the encoder (MATH.md sections 2-6), batch means per data point.
Ref RefLatent(const cuvae_model &m, const Case &c, const std::vector<double> &p, const std::vector<double> &mulv,
              const std::vector<double> &x, const std::vector<double> &eps, std::vector<char> *pattern) {
  const int B = c.B, Z = c.Z, D = c.D;
  const bool ae = c.obj == CUVAE_OBJ_AE;
  const int L = ae ? 1 : c.samples, N = B * L;
  // z: sample s of row r is row s*B + r.
  std::vector<double> z((size_t)N * Z);
  for (int s = 0; s < L; s++)
    for (int r = 0; r < B; r++)
      for (int j = 0; j < Z; j++) {
        const double mu = mulv[r * 2 * Z + j], lv = mulv[r * 2 * Z + Z + j];
        const size_t i = ((size_t)s * B + r) * Z + j;
        z[i] = ae ? mu : mu + std::exp(0.5 * lv) * eps[i];
      }
  // Decoder: mirror of the hidden layers (mlp) or none (linear), then the output head(s).
  std::vector<double> h = z;
  const int k = c.dec == CUVAE_DECODER_MLP ? (int)c.hidden.size() : 0;
  for (int i = 0; i < k; i++) h = Linear(m, p, "dec." + std::to_string(i), h, N, true, c.act, pattern);
  const std::vector<double> f = Linear(m, p, "dec.out", h, N, false, c.act, pattern);
  std::vector<double> lvd;
  if (c.lik == CUVAE_LIK_GAUSSIAN && c.var == CUVAE_VAR_LEARNED_PER_DIM)
    lvd = Linear(m, p, "dec.lv", h, N, false, c.act, pattern);
  const double lv_shared =
      c.lik == CUVAE_LIK_GAUSSIAN && c.var == CUVAE_VAR_LEARNED_SHARED ? p[Find(m, "dec.logvar").offset] : 0.0;

  Ref out;
  if (ae) {  // ||x - xhat||^2, xhat = sigmoid(out) (Bernoulli) or out
    for (int i = 0; i < B * D; i++) {
      const double xhat = c.lik == CUVAE_LIK_BERNOULLI ? 1.0 / (1.0 + std::exp(-f[i])) : f[i];
      out.recon += (x[i] - xhat) * (x[i] - xhat);
    }
    out.recon /= B;
    out.objective = out.recon;
    out.mag_recon = out.mag_objective = out.recon;
    return out;
  }
  // Per sample i = s*B + r: nll[i] = -log p(x_r | z_i), kls[i] = 0.5 sum_j (z^2 - eps^2 - lv_r).
  std::vector<double> nll(N, 0.0), kls(N, 0.0), mag_nll(N, 0.0), mag_kls(N, 0.0);
  const double s2 = (double)c.sigma * (double)c.sigma;  // the float sigma the library holds
  for (int i = 0; i < N; i++) {
    const int r = i % B;
    for (int d = 0; d < D; d++) {
      const double xv = x[r * D + d], fv = f[(size_t)i * D + d];
      double term, mag;
      if (c.lik == CUVAE_LIK_BERNOULLI) {  // softplus(l) - x l, stable
        term = std::max(fv, 0.0) + std::log1p(std::exp(-std::fabs(fv))) - xv * fv;
        mag = std::fabs(std::max(fv, 0.0) + std::log1p(std::exp(-std::fabs(fv)))) + std::fabs(xv * fv);
      } else {
        const double lv = c.var == CUVAE_VAR_FIXED ? std::log(s2)
                          : c.var == CUVAE_VAR_LEARNED_SHARED ? lv_shared
                                                              : lvd[(size_t)i * D + d];
        const double q = (xv - fv) * (xv - fv) * std::exp(-lv);
        term = 0.5 * (q + lv + kLog2Pi);
        mag = 0.5 * (q + std::fabs(lv) + kLog2Pi);
      }
      nll[i] += term;
      mag_nll[i] += mag;
    }
    for (int j = 0; j < Z; j++) {
      const double zz = z[(size_t)i * Z + j], e = eps[(size_t)i * Z + j], lv = mulv[r * 2 * Z + Z + j];
      kls[i] += 0.5 * (zz * zz - e * e - lv);
      mag_kls[i] += 0.5 * (zz * zz + e * e + std::fabs(lv));
    }
  }
  for (int i = 0; i < N; i++) {
    out.recon += nll[i] / N;
    out.mag_recon += mag_nll[i] / N;
  }
  const double beta = c.beta;
  if (c.obj == CUVAE_OBJ_IWAE) {
    // L = -(1/B) sum_r [logsumexp_s log w - log K], log w = -nll - beta kls (MATH.md section 5).
    for (int r = 0; r < B; r++) {
      double mx = -INFINITY;
      for (int s = 0; s < L; s++) mx = std::max(mx, -nll[s * B + r] - beta * kls[s * B + r]);
      double t = 0;
      for (int s = 0; s < L; s++) t += std::exp(-nll[s * B + r] - beta * kls[s * B + r] - mx);
      out.objective += -(mx + std::log(t) - std::log((double)L)) / B;
    }
    for (int i = 0; i < N; i++) {
      out.kl += kls[i] / N;
      out.mag_kl += mag_kls[i] / N;
    }
    out.mag_objective = out.mag_recon + beta * out.mag_kl;
  } else if (c.kl == CUVAE_KL_SAMPLED) {
    // L = (1/(B L)) sum [nll + beta kls].
    for (int i = 0; i < N; i++) {
      out.kl += kls[i] / N;
      out.mag_kl += mag_kls[i] / N;
    }
    out.objective = out.recon + beta * out.kl;
    out.mag_objective = out.mag_recon + beta * out.mag_kl;
  } else {
    // L = (1/(B L)) sum nll + beta (1/B) sum_r KL_r, KL_r in closed form (MATH.md section 3).
    for (int r = 0; r < B; r++)
      for (int j = 0; j < Z; j++) {
        const double mu = mulv[r * 2 * Z + j], lv = mulv[r * 2 * Z + Z + j];
        out.kl += 0.5 * (mu * mu + std::exp(lv) - 1.0 - lv) / B;
        out.mag_kl += 0.5 * (mu * mu + std::exp(lv) + 1.0 + std::fabs(lv)) / B;
      }
    out.objective = out.recon + beta * out.kl;
    out.mag_objective = out.mag_recon + beta * out.mag_kl;
  }
  return out;
}

Ref RefFull(const cuvae_model &m, const Case &c, const std::vector<double> &p, const std::vector<double> &x,
            const std::vector<double> &eps, std::vector<char> *pattern) {
  return RefLatent(m, c, p, RefEncode(m, c, p, x, pattern), x, eps, pattern);
}

// ---- fixture ------------------------------------------------------------------------------------------------

struct Problem {
  Case c;
  cuvae_config cfg;
  cuvae_model m;
  cuvae_objective_spec spec;
  int rows = 0;  // B * samples: the decoder's rows
  std::vector<float> params, x, eps;
  std::vector<double> pd, xd, ed;
};

// Parameters from cuvae_model_init, then every rank-1 tensor (biases, dec.logvar) replaced by draws from
// +-[0.1, 0.6] so that ReLU pre-activations sit away from 0; x uniform in [0, 1]; eps standard normal, samples * B
// rows. Fixed seeds.
void MakeProblem(const Case &c, Problem *pr, uint32_t seed = 2024) {
  pr->c = c;
  CaseConfig(c, &pr->cfg);
  ASSERT_EQ(cuvae_model_build(&pr->m, (size_t)c.D, &pr->cfg), 0) << cuvae_last_error();
  cuvae_objective_for_step(&pr->cfg, 0, &pr->spec);
  pr->rows = c.B * pr->spec.samples;
  pr->params.assign(pr->m.n_params, 0.0f);
  ASSERT_EQ(cuvae_model_init(&pr->m, pr->params.data(), 42), 0) << cuvae_last_error();
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mag(0.1f, 0.6f), u01(0.0f, 1.0f);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  for (int t = 0; t < pr->m.n_tensors; t++) {
    const cuvae_tensor &T = pr->m.tensors[t];
    if (T.rank != 1) continue;
    for (size_t i = 0; i < T.count; i++) {
      const float sign = (rng() & 1) ? 1.0f : -1.0f;
      pr->params[T.offset + i] = sign * mag(rng);
    }
  }
  pr->x.resize((size_t)c.B * c.D);
  for (float &v : pr->x) v = u01(rng);
  pr->eps.resize((size_t)c.B * std::max(c.samples, 1) * c.Z);
  for (float &v : pr->eps) v = n01(rng);
  pr->pd.assign(pr->params.begin(), pr->params.end());
  pr->xd.assign(pr->x.begin(), pr->x.end());
  pr->ed.assign(pr->eps.begin(), pr->eps.end());
}

template <class F>
double CentralDiff(std::vector<double> v, size_t i, const std::vector<char> &pattern0, F f) {
  std::vector<char> pp, pm;
  const double v0 = v[i];
  v[i] = v0 + kH;
  const double lp = f(v, &pp);
  v[i] = v0 - kH;
  const double lm = f(v, &pm);
  if (pp != pattern0 || pm != pattern0) return NAN;
  return (lp - lm) / (2 * kH);
}

struct Tally {
  int checked = 0, skipped = 0, bad = 0;
  double max_err = 0, max_fd = 0;
};

// analytic[i] vs the FD value for entries [off, off + count) of v. expect_zero: the entry does not reach the
// objective (ae's lv head): then both must be exactly 0.
template <class F>
Tally CheckRange(const std::string &what, const std::vector<double> &v, size_t off, size_t count,
                 const float *analytic, const std::vector<char> &pattern0, bool expect_zero, F f) {
  Tally t;
  for (size_t i = 0; i < count; i++) {
    const double fd = CentralDiff(v, off + i, pattern0, f);
    if (std::isnan(fd)) {
      t.skipped++;
      continue;
    }
    t.checked++;
    const double err = std::fabs((double)analytic[i] - fd);
    t.max_err = std::max(t.max_err, err);
    t.max_fd = std::max(t.max_fd, std::fabs(fd));
    const bool ok = expect_zero ? (analytic[i] == 0.0f && fd == 0.0) : err <= kAtol + kRtol * std::fabs(fd);
    if (!ok && ++t.bad <= 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << ", central difference " << fd;
  }
  std::printf("  %-16s %4d checked %2d skipped  max|err| %.2e  max|grad| %.2e%s\n", what.c_str(), t.checked,
              t.skipped, t.max_err, t.max_fd, expect_zero ? "  (must be 0)" : "");
  EXPECT_EQ(t.bad, 0) << what;
  if (!expect_zero) {
    EXPECT_GT(t.max_fd, 1e-4) << what << ": gradient is ~0 everywhere";
  }
  return t;
}

bool IsAeLvHead(const Case &c, const std::string &name) {
  return c.obj == CUVAE_OBJ_AE && (name == "enc.lv.weight" || name == "enc.lv.bias");
}

void ExpectLossNear(const cuvae_loss &got, const Ref &ref, const char *what) {
  std::printf("%s: objective ours %.9g ref %.9g (recon %.9g / %.9g, kl %.9g / %.9g)\n", what, got.objective,
              ref.objective, got.recon, ref.recon, got.kl, ref.kl);
  EXPECT_NEAR(got.objective, ref.objective, kLossAtol + kLossRtol * ref.mag_objective) << what;
  EXPECT_NEAR(got.recon, ref.recon, kLossAtol + kLossRtol * ref.mag_recon) << what;
  EXPECT_NEAR(got.kl, ref.kl, kLossAtol + kLossRtol * ref.mag_kl) << what;
  EXPECT_NEAR(got.nelbo, got.recon + got.kl, 1e-12 * (1 + std::fabs(got.nelbo))) << what;
}

class FamilyGradCheck : public ::testing::TestWithParam<Case> {};

// The case's config is a valid one, and the spec of its steps is what the case says.
TEST_P(FamilyGradCheck, ConfigIsValidAndSpecMatches) {
  const Case c = GetParam();
  cuvae_config cfg;
  CaseConfig(c, &cfg);
  EXPECT_EQ(cuvae_config_finalize(&cfg), 0) << cuvae_last_error();
  cuvae_objective_spec spec;
  cuvae_objective_for_step(&cfg, 7, &spec);
  EXPECT_EQ(spec.objective, c.obj);
  EXPECT_EQ(spec.samples, c.obj == CUVAE_OBJ_AE ? 1 : c.samples);
  EXPECT_EQ(spec.beta, c.beta);
  EXPECT_EQ(cuvae_objective_sampled(&spec), c.obj == CUVAE_OBJ_IWAE || (c.obj == CUVAE_OBJ_ELBO && c.kl == kSamp));
  // Layout: the heads the likelihood needs, and the tensors tile [0, n_params).
  cuvae_model m;
  ASSERT_EQ(cuvae_model_build(&m, (size_t)c.D, &cfg), 0) << cuvae_last_error();
  EXPECT_EQ(cuvae_model_find(&m, "dec.logvar") != nullptr, c.lik == kGauss && c.var == kShared);
  EXPECT_EQ(cuvae_model_find(&m, "dec.lv.weight") != nullptr, c.lik == kGauss && c.var == kPerDim);
  EXPECT_EQ(cuvae_model_find(&m, "dec.0.weight") != nullptr, c.dec == kMlp);
  std::vector<int> cover(m.n_params, 0);
  for (int t = 0; t < m.n_tensors; t++)
    for (size_t i = 0; i < m.tensors[t].count; i++) cover.at(m.tensors[t].offset + i)++;
  for (size_t i = 0; i < m.n_params; i++) ASSERT_EQ(cover[i], 1) << "parameter " << i;
}

// The objective vs the double reference; every parameter's gradient vs central differences.
TEST_P(FamilyGradCheck, ParameterGradients) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  const Case &c = pr.c;
  Workspace ws = MakeWs(pr.m, pr.rows);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  const cuvae_cpu_batch batch = {c.B, pr.x.data(), nullptr, pr.eps.data(), nullptr};
  std::vector<float> grad(pr.m.n_params, 1e30f);
  cuvae_loss loss, loss_only;
  ASSERT_EQ(cuvae_cpu_objective_grad(&pr.m, ws.get(), pr.params.data(), &batch, &pr.spec, grad.data(), &loss), 0)
      << cuvae_last_error();
  ASSERT_EQ(cuvae_cpu_objective_grad(&pr.m, ws.get(), pr.params.data(), &batch, &pr.spec, nullptr, &loss_only), 0)
      << cuvae_last_error();
  EXPECT_EQ(loss_only.objective, loss.objective);  // the forward-only call computes the same numbers
  EXPECT_EQ(loss_only.recon, loss.recon);
  EXPECT_EQ(loss_only.kl, loss.kl);

  std::vector<char> pattern0;
  const Ref ref = RefFull(pr.m, c, pr.pd, pr.xd, pr.ed, &pattern0);
  ExpectLossNear(loss, ref, c.name);
  if (c.obj == CUVAE_OBJ_AE) {
    EXPECT_EQ(loss.kl, 0.0);
  }

  auto f = [&](const std::vector<double> &p, std::vector<char> *pat) {
    return RefFull(pr.m, c, p, pr.xd, pr.ed, pat).objective;
  };
  int checked = 0, skipped = 0;
  for (int t = 0; t < pr.m.n_tensors; t++) {
    const cuvae_tensor &T = pr.m.tensors[t];
    const Tally tl = CheckRange(T.name, pr.pd, T.offset, T.count, grad.data() + T.offset, pattern0,
                                IsAeLvHead(c, T.name), f);
    checked += tl.checked;
    skipped += tl.skipped;
  }
  EXPECT_EQ(checked + skipped, (int)pr.m.n_params);
  EXPECT_LE(skipped, (int)pr.m.n_params / 20);  // a check with many kinks skipped would be hollow
}

// dL/d[mu|lv] (cuvae_cpu_latent_objective_grad) at a generic latent point, and the decoder's gradients it
// produces, vs central differences of the reference after the encoder.
TEST_P(FamilyGradCheck, LatentGradients) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  const Case &c = pr.c;
  const int Z = c.Z;
  std::mt19937 rng(77);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::uniform_real_distribution<float> ulv(-1.5f, 1.0f);
  std::vector<float> mulv((size_t)c.B * 2 * Z);
  for (int r = 0; r < c.B; r++)
    for (int j = 0; j < Z; j++) {
      mulv[r * 2 * Z + j] = n01(rng);
      mulv[r * 2 * Z + Z + j] = ulv(rng);
    }
  const std::vector<double> mulvd(mulv.begin(), mulv.end());
  Workspace ws = MakeWs(pr.m, pr.rows);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  const cuvae_cpu_batch batch = {c.B, pr.x.data(), nullptr, pr.eps.data(), nullptr};
  std::vector<float> grad(pr.m.n_params, 0.0f), dmulv(mulv.size(), 1e30f), dmulv_only(mulv.size(), 1e30f);
  cuvae_loss loss, loss2;
  ASSERT_EQ(cuvae_cpu_latent_objective_grad(&pr.m, ws.get(), pr.params.data(), mulv.data(), &batch, &pr.spec,
                                            grad.data(), dmulv.data(), &loss),
            0)
      << cuvae_last_error();
  // dmulv alone (grad == NULL) gives the same bits.
  ASSERT_EQ(cuvae_cpu_latent_objective_grad(&pr.m, ws.get(), pr.params.data(), mulv.data(), &batch, &pr.spec,
                                            nullptr, dmulv_only.data(), &loss2),
            0)
      << cuvae_last_error();
  EXPECT_EQ(0, std::memcmp(dmulv.data(), dmulv_only.data(), dmulv.size() * sizeof(float)));
  EXPECT_EQ(loss.objective, loss2.objective);

  std::vector<char> pattern0;
  const Ref ref = RefLatent(pr.m, c, pr.pd, mulvd, pr.xd, pr.ed, &pattern0);
  ExpectLossNear(loss, ref, (std::string(c.name) + " latent").c_str());
  auto fm = [&](const std::vector<double> &v, std::vector<char> *pat) {
    return RefLatent(pr.m, c, pr.pd, v, pr.xd, pr.ed, pat).objective;
  };
  const bool ae = c.obj == CUVAE_OBJ_AE;
  Tally mu_all, lv_all;
  for (int r = 0; r < c.B; r++) {
    // Per row the gradient can be small; the "non-trivial somewhere" check is made over all rows below.
    for (int half = 0; half < 2; half++) {
      Tally &acc = half ? lv_all : mu_all;
      for (int j = 0; j < Z; j++) {
        const size_t i = (size_t)r * 2 * Z + half * Z + j;
        const double fd = CentralDiff(mulvd, i, pattern0, fm);
        if (std::isnan(fd)) {
          acc.skipped++;
          continue;
        }
        acc.checked++;
        const double err = std::fabs((double)dmulv[i] - fd);
        acc.max_err = std::max(acc.max_err, err);
        acc.max_fd = std::max(acc.max_fd, std::fabs(fd));
        if (ae && half == 1) {
          EXPECT_EQ(dmulv[i], 0.0f) << "ae: dL/dlv row " << r << " j " << j;
          EXPECT_EQ(fd, 0.0);
        } else {
          EXPECT_LE(err, kAtol + kRtol * std::fabs(fd))
              << (half ? "dlv" : "dmu") << " row " << r << " j " << j << ": analytic " << dmulv[i] << " fd " << fd;
        }
      }
    }
  }
  std::printf("  %-16s %4d checked %2d skipped  max|err| %.2e  max|grad| %.2e\n", "dmu", mu_all.checked,
              mu_all.skipped, mu_all.max_err, mu_all.max_fd);
  std::printf("  %-16s %4d checked %2d skipped  max|err| %.2e  max|grad| %.2e\n", "dlv", lv_all.checked,
              lv_all.skipped, lv_all.max_err, lv_all.max_fd);
  EXPECT_GT(mu_all.max_fd, 1e-4);
  if (!ae) {
    EXPECT_GT(lv_all.max_fd, 1e-4);
  }

  auto fp = [&](const std::vector<double> &p, std::vector<char> *pat) {
    return RefLatent(pr.m, c, p, mulvd, pr.xd, pr.ed, pat).objective;
  };
  for (int t = 0; t < pr.m.n_tensors; t++) {
    const cuvae_tensor &T = pr.m.tensors[t];
    if (std::string(T.name).rfind("dec.", 0) != 0) continue;
    CheckRange(T.name, pr.pd, T.offset, T.count, grad.data() + T.offset, pattern0, false, fp);
  }
}

// A batch whose B * samples exceeds the workspace is refused with a message.
TEST_P(FamilyGradCheck, SamplesBeyondWorkspaceFail) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  Workspace ws = MakeWs(pr.m, pr.rows - 1);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  const cuvae_cpu_batch batch = {pr.c.B, pr.x.data(), nullptr, pr.eps.data(), nullptr};
  std::vector<float> grad(pr.m.n_params);
  cuvae_loss loss;
  cuvae_clear_error();
  EXPECT_EQ(cuvae_cpu_objective_grad(&pr.m, ws.get(), pr.params.data(), &batch, &pr.spec, grad.data(), &loss), -1);
  EXPECT_STRNE(cuvae_last_error(), "");
}

INSTANTIATE_TEST_SUITE_P(Members, FamilyGradCheck, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case> &i) { return std::string(i.param.name); });

// ---- equivalences ------------------------------------------------------------------------------------------

struct ObjRun {
  cuvae_loss loss;
  std::vector<float> grad;
};

ObjRun RunObjective(const Problem &pr, const cuvae_objective_spec &spec, const float *eps, int rows) {
  ObjRun out;
  std::memset(&out.loss, 0, sizeof out.loss);
  out.grad.assign(pr.m.n_params, 1e30f);
  Workspace ws = MakeWs(pr.m, rows);
  if (!ws) {
    ADD_FAILURE() << cuvae_last_error();
    return out;
  }
  const cuvae_cpu_batch batch = {pr.c.B, pr.x.data(), nullptr, eps, nullptr};
  EXPECT_EQ(cuvae_cpu_objective_grad(&pr.m, ws.get(), pr.params.data(), &batch, &spec, out.grad.data(), &out.loss), 0)
      << cuvae_last_error();
  return out;
}

void ExpectBitwise(const ObjRun &a, const ObjRun &b, const std::string &what) {
  EXPECT_EQ(0, std::memcmp(&a.loss.objective, &b.loss.objective, sizeof(double))) << what << ": objective "
                                                                                  << a.loss.objective << " vs "
                                                                                  << b.loss.objective;
  EXPECT_EQ(0, std::memcmp(&a.loss.recon, &b.loss.recon, sizeof(double))) << what << ": recon";
  EXPECT_EQ(0, std::memcmp(&a.loss.kl, &b.loss.kl, sizeof(double))) << what << ": kl";
  EXPECT_EQ(0, std::memcmp(&a.loss.nelbo, &b.loss.nelbo, sizeof(double))) << what << ": nelbo";
  ASSERT_EQ(a.grad.size(), b.grad.size());
  size_t diff = 0;
  for (size_t i = 0; i < a.grad.size(); i++)
    if (std::memcmp(&a.grad[i], &b.grad[i], sizeof(float)) != 0 && ++diff <= 3)
      ADD_FAILURE() << what << ": grad[" << i << "] " << a.grad[i] << " vs " << b.grad[i];
  EXPECT_EQ(diff, 0u) << what;
}

const Case kEqBern = {"eq_bern", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kElbo, 1, kAna, 1.0f};
const Case kEqShared = {"eq_shared", kGauss, kShared, kMlp, kRelu, {5, 4}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f};
const Case kEqPerDim = {"eq_perdim", kGauss, kPerDim, kLinear, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f};

// (a) With one sample the IWAE bound is the ELBO with the sampled KL: weight exactly 1/B, row objective
// -(-nll - kl) = nll + kl (negation is exact): the same bits, value and gradient.
TEST(FamilyEquivalence, IwaeWithOneSampleIsElboWithSampledKl) {
  for (const Case &c : {kEqBern, kEqShared, kEqPerDim}) {
    Problem pr;
    MakeProblem(c, &pr);
    if (HasFatalFailure()) return;
    const cuvae_objective_spec iwae = {CUVAE_OBJ_IWAE, 1, CUVAE_KL_ANALYTIC, 1.0f};
    const cuvae_objective_spec elbo = {CUVAE_OBJ_ELBO, 1, CUVAE_KL_SAMPLED, 1.0f};
    const ObjRun a = RunObjective(pr, iwae, pr.eps.data(), c.B), b = RunObjective(pr, elbo, pr.eps.data(), c.B);
    ExpectBitwise(a, b, std::string(c.name) + " iwae(1) vs elbo(1, sampled)");
    // ...and both are a different number from the analytic-KL ELBO (the sampled KL is its own estimator).
    const cuvae_objective_spec ana = {CUVAE_OBJ_ELBO, 1, CUVAE_KL_ANALYTIC, 1.0f};
    const ObjRun d = RunObjective(pr, ana, pr.eps.data(), c.B);
    EXPECT_NE(a.loss.objective, d.loss.objective) << c.name;
    EXPECT_EQ(a.loss.recon, d.loss.recon) << c.name;  // same z, same decoder: same reconstruction term
  }
}

// (b) beta = 1 without warm-up (and beta = 1 after a finished warm-up) is the plain ELBO of cuvae_cpu_loss_grad.
TEST(FamilyEquivalence, BetaOneIsPlainElbo) {
  for (const Case &c : {kEqBern, kEqShared, kEqPerDim}) {
    Problem pr;
    MakeProblem(c, &pr);
    if (HasFatalFailure()) return;
    ObjRun plain;
    plain.grad.assign(pr.m.n_params, 1e30f);
    {
      Workspace ws = MakeWs(pr.m, c.B);
      ASSERT_NE(ws, nullptr);
      ASSERT_EQ(cuvae_cpu_loss_grad(&pr.m, ws.get(), pr.params.data(), pr.x.data(), pr.eps.data(), c.B,
                                    plain.grad.data(), &plain.loss),
                0)
          << cuvae_last_error();
    }
    EXPECT_EQ(plain.loss.objective, plain.loss.nelbo);  // the plain ELBO's objective is the nelbo
    cuvae_config cfg = pr.cfg;
    cfg.beta = 1.0f;
    cfg.beta_warmup_steps = 0;
    for (int64_t step : {0, 1, 12345}) {
      cuvae_objective_spec spec;
      cuvae_objective_for_step(&cfg, step, &spec);
      EXPECT_EQ(spec.beta, 1.0f);
      ExpectBitwise(RunObjective(pr, spec, pr.eps.data(), c.B), plain,
                    std::string(c.name) + " beta 1, step " + std::to_string(step));
    }
    cfg.beta_warmup_steps = 100;
    for (int64_t step : {100, 101, 100000}) {
      cuvae_objective_spec spec;
      cuvae_objective_for_step(&cfg, step, &spec);
      EXPECT_EQ(spec.beta, 1.0f) << step;
      ExpectBitwise(RunObjective(pr, spec, pr.eps.data(), c.B), plain,
                    std::string(c.name) + " warm-up done, step " + std::to_string(step));
    }
  }
}

// (c) The autoencoder reads no noise: eps arrays (even NaN ones) give the same bits; kl = 0; the lv head gets
// exactly zero gradient.
TEST(FamilyEquivalence, AutoencoderIgnoresEps) {
  const Case cases[] = {
      {"ae_b", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kAe, 1, kAna, 1.0f},
      {"ae_g", kGauss, kFixed, kLinear, kRelu, {5, 4}, 3, 6, 4, 0.8f, kAe, 1, kAna, 1.0f},
  };
  for (const Case &c : cases) {
    Problem pr;
    MakeProblem(c, &pr);
    if (HasFatalFailure()) return;
    std::vector<float> eps2(pr.eps.size()), eps_nan(pr.eps.size(), NAN);
    std::mt19937 rng(99);
    std::normal_distribution<float> n01(0.0f, 3.0f);
    for (float &v : eps2) v = n01(rng);
    const ObjRun a = RunObjective(pr, pr.spec, pr.eps.data(), c.B);
    const ObjRun b = RunObjective(pr, pr.spec, eps2.data(), c.B);
    const ObjRun n = RunObjective(pr, pr.spec, eps_nan.data(), c.B);
    ExpectBitwise(a, b, std::string(c.name) + " eps vs other eps");
    ExpectBitwise(a, n, std::string(c.name) + " eps vs NaN eps");
    EXPECT_EQ(a.loss.kl, 0.0);
    EXPECT_EQ(a.loss.objective, a.loss.recon);
    EXPECT_EQ(a.loss.nelbo, a.loss.recon);
    for (const char *name : {"enc.lv.weight", "enc.lv.bias"}) {
      const cuvae_tensor *t = cuvae_model_find(&pr.m, name);
      ASSERT_NE(t, nullptr);
      for (size_t i = 0; i < t->count; i++) EXPECT_EQ(a.grad[t->offset + i], 0.0f) << c.name << " " << name << i;
    }
    // The mu head does get a gradient (the check above is not vacuous).
    const cuvae_tensor *mu = cuvae_model_find(&pr.m, "enc.mu.weight");
    double mx = 0;
    for (size_t i = 0; i < mu->count; i++) mx = std::max(mx, (double)std::fabs(a.grad[mu->offset + i]));
    EXPECT_GT(mx, 1e-4) << c.name;
    // The eval spec of an ae config is the same objective.
    cuvae_objective_spec ev;
    cuvae_objective_for_eval(&pr.cfg, &ev);
    EXPECT_EQ(ev.objective, CUVAE_OBJ_AE);
    ExpectBitwise(RunObjective(pr, ev, eps2.data(), c.B), a, std::string(c.name) + " eval spec");
  }
}

// (d) The warm-up: beta_t = beta min(1, t / warmup).
TEST(FamilyEquivalence, BetaSchedule) {
  const float beta = 0.3f;
  const int64_t W = 1000;
  EXPECT_EQ(beta_schedule_cpu(0, beta, W), 0.0f);
  EXPECT_EQ(beta_schedule_cpu(W / 2, beta, W), beta / 2);  // halving is exact in binary
  EXPECT_EQ(beta_schedule_cpu(W, beta, W), beta);
  EXPECT_EQ(beta_schedule_cpu(W + 1, beta, W), beta);
  EXPECT_EQ(beta_schedule_cpu(100 * W, beta, W), beta);
  EXPECT_EQ(beta_schedule_cpu(W / 4, beta, W), (float)(0.25 * (double)beta));
  EXPECT_EQ(beta_schedule_cpu(0, beta, 0), beta);  // warm-up off
  EXPECT_EQ(beta_schedule_cpu(5, beta, 0), beta);
  // Monotone, within [0, beta].
  float prev = -1.0f;
  for (int64_t t = 0; t <= W + 5; t += 7) {
    const float b = beta_schedule_cpu(t, beta, W);
    EXPECT_GE(b, prev);
    EXPECT_LE(b, beta);
    prev = b;
  }
  // Through the config.
  cuvae_config cfg;
  CaseConfig(kEqBern, &cfg);
  cfg.beta = beta;
  cfg.beta_warmup_steps = W;
  cuvae_objective_spec spec;
  cuvae_objective_for_step(&cfg, 0, &spec);
  EXPECT_EQ(spec.beta, 0.0f);
  cuvae_objective_for_step(&cfg, W / 2, &spec);
  EXPECT_EQ(spec.beta, beta / 2);
  cuvae_objective_for_step(&cfg, W, &spec);
  EXPECT_EQ(spec.beta, beta);
  cuvae_objective_for_step(&cfg, 3 * W, &spec);
  EXPECT_EQ(spec.beta, beta);
  // Evaluation is always the plain ELBO.
  cuvae_objective_for_eval(&cfg, &spec);
  EXPECT_EQ(spec.objective, CUVAE_OBJ_ELBO);
  EXPECT_EQ(spec.samples, 1);
  EXPECT_EQ(spec.kl, CUVAE_KL_ANALYTIC);
  EXPECT_EQ(spec.beta, 1.0f);
  EXPECT_EQ(cuvae_objective_sampled(&spec), 0);
  // A step at beta 0 is the reconstruction term alone: objective = recon.
  Problem pr;
  MakeProblem(kEqBern, &pr);
  if (HasFatalFailure()) return;
  cuvae_objective_for_step(&cfg, 0, &spec);
  const ObjRun r0 = RunObjective(pr, spec, pr.eps.data(), pr.c.B);
  EXPECT_EQ(r0.loss.objective, r0.loss.recon);
  EXPECT_GT(r0.loss.kl, 0.0);
}

// (e) The L-sample ELBO's reconstruction term is the mean of the one-sample terms on each sample's eps slice
// (rows s*B .. s*B + B - 1). The per-sample NLL rows are float values of the same float expressions (the first
// sample through reparam_kl_forward_cpu, the others through iwae_reparam_cpu, documented to be the same float
// expression); only the GEMM of the decoder runs on L*B instead of B rows, which may change BLAS's blocking and so
// the rounding of each output by a few u. The NLL is a sum of non-negative terms, so a few u relative per row,
// ~3e-7, bounds the difference; the double sums in another order add ~1e-16. Tolerance 1e-6 relative. The KL
// (closed form, from mu and lv only) is bitwise that of one sample.
TEST(FamilyEquivalence, MultiSampleReconIsMeanOfSingleSamples) {
  const Case cases[] = {
      {"L3_bern", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kElbo, 3, kAna, 1.0f},
      {"L4_perdim", kGauss, kPerDim, kMlp, kRelu, {5, 4}, 3, 6, 4, 0.8f, kElbo, 4, kAna, 0.5f},
      {"L5_shared_linear", kGauss, kShared, kLinear, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 5, kAna, 1.0f},
  };
  for (const Case &c : cases) {
    Problem pr;
    MakeProblem(c, &pr);
    if (HasFatalFailure()) return;
    const int L = c.samples;
    const ObjRun multi = RunObjective(pr, pr.spec, pr.eps.data(), c.B * L);
    cuvae_objective_spec one = pr.spec;
    one.samples = 1;
    double mean = 0;
    for (int s = 0; s < L; s++) {
      const ObjRun r = RunObjective(pr, one, pr.eps.data() + (size_t)s * c.B * c.Z, c.B);
      mean += r.loss.recon / L;
      EXPECT_EQ(r.loss.kl, multi.loss.kl) << c.name << " sample " << s;
    }
    std::printf("%s: recon L=%d %.12g, mean of single samples %.12g (diff %.2e)\n", c.name, L, multi.loss.recon, mean,
                multi.loss.recon - mean);
    EXPECT_NEAR(multi.loss.recon, mean, 1e-6 * std::fabs(mean)) << c.name;
    EXPECT_NEAR(multi.loss.objective, multi.loss.recon + (double)c.beta * multi.loss.kl,
                1e-12 * std::fabs(multi.loss.objective))
        << c.name;
  }
}

// ---- config: the family keys' cross checks -------------------------------------------------------------------

void BaseConfig(cuvae_config *c) {
  cuvae_config_defaults(c);
  c->dataset[0] = '\0';
  std::snprintf(c->train_images, sizeof c->train_images, "%s", "train.npy");
  std::snprintf(c->test_images, sizeof c->test_images, "%s", "test.npy");
}

// Applies the assignments (all must parse), then finalize; returns finalize's result, message in *msg.
int FinalizeWith(const std::vector<const char *> &sets, std::string *msg) {
  cuvae_config c;
  BaseConfig(&c);
  for (const char *s : sets) {
    if (cuvae_config_set(&c, s) != 0) {
      ADD_FAILURE() << s << ": " << cuvae_last_error();
      return 99;
    }
  }
  cuvae_clear_error();
  const int rc = cuvae_config_finalize(&c);
  *msg = cuvae_last_error();
  return rc;
}

TEST(FamilyConfig, CrossKeyChecks) {
  struct Bad {
    std::vector<const char *> sets;
    const char *named;  // the message must name this
  };
  const Bad bad[] = {
      {{"model.likelihood=gaussian", "data.binarize=dynamic"}, "binarize"},
      {{"model.likelihood=gaussian", "data.binarize=static"}, "binarize"},
      {{"model.likelihood=bernoulli", "model.gaussian_variance=learned_shared"}, "gaussian_variance"},
      {{"model.likelihood=bernoulli", "model.gaussian_variance=learned_per_dim"}, "gaussian_variance"},
      {{"train.objective=ae", "train.samples=2"}, "samples"},
      {{"train.objective=ae", "train.beta=0.5"}, "beta"},
      {{"train.objective=ae", "model.likelihood=gaussian", "model.gaussian_variance=learned_shared"},
       "gaussian_variance"},
      {{"train.objective=iwae", "train.samples=5", "train.beta=0.5"}, "beta"},
      {{"train.objective=iwae", "train.samples=5", "train.beta_warmup_steps=10"}, "beta_warmup_steps"},
      {{"train.objective=iwae", "train.samples=5", "train.kl=sampled"}, "kl"},
      {{"train.objective=ae", "train.kl=sampled"}, "kl"},
  };
  for (const Bad &b : bad) {
    std::string msg, what;
    for (const char *s : b.sets) what += std::string(s) + " ";
    EXPECT_EQ(FinalizeWith(b.sets, &msg), -1) << what;
    EXPECT_NE(msg.find(b.named), std::string::npos) << what << ": message '" << msg << "' does not name " << b.named;
  }
  // The neighbours that are valid.
  const std::vector<const char *> good[] = {
      {"model.likelihood=bernoulli", "data.binarize=dynamic"},
      {"model.likelihood=bernoulli", "data.binarize=static"},
      {"model.likelihood=gaussian", "model.gaussian_variance=learned_shared"},
      {"model.likelihood=gaussian", "model.gaussian_variance=learned_per_dim", "model.decoder=linear"},
      {"train.objective=ae", "train.samples=1", "data.corrupt=mask:0.25"},
      {"train.objective=ae", "model.likelihood=gaussian", "data.corrupt=gaussian:0.1"},
      {"train.objective=iwae", "train.samples=5"},
      {"train.objective=elbo", "train.samples=3", "train.kl=sampled", "train.beta=0.5",
       "train.beta_warmup_steps=100"},
  };
  for (const auto &g : good) {
    std::string msg, what;
    for (const char *s : g) what += std::string(s) + " ";
    EXPECT_EQ(FinalizeWith(g, &msg), 0) << what << ": " << msg;
  }
}

TEST(FamilyConfig, CorruptValues) {
  struct Ok {
    const char *text;
    cuvae_corrupt_kind kind;
    float level;
  };
  for (const Ok &o : {Ok{"none", CUVAE_CORRUPT_NONE, 0.0f}, Ok{"gaussian:0.1", CUVAE_CORRUPT_GAUSSIAN, 0.1f},
                      Ok{"mask:0.25", CUVAE_CORRUPT_MASK, 0.25f}, Ok{"gaussian:2", CUVAE_CORRUPT_GAUSSIAN, 2.0f}}) {
    cuvae_config c;
    BaseConfig(&c);
    EXPECT_EQ(cuvae_config_set(&c, (std::string("data.corrupt=") + o.text).c_str()), 0)
        << o.text << ": " << cuvae_last_error();
    EXPECT_EQ(c.corrupt.kind, o.kind) << o.text;
    EXPECT_EQ(c.corrupt.level, o.level) << o.text;
  }
  for (const char *bad : {"gaussian", "mask", "mask:1.5", "mask:1", "mask:0", "gaussian:-1", "gaussian:0",
                          "blur:0.1", "none:0.1", "mask:abc", "gaussian:"}) {
    cuvae_config c;
    BaseConfig(&c);
    const cuvae_corrupt before = c.corrupt;
    cuvae_clear_error();
    EXPECT_EQ(cuvae_config_set(&c, (std::string("data.corrupt=") + bad).c_str()), -1) << bad;
    EXPECT_NE(std::string(cuvae_last_error()).find("corrupt"), std::string::npos) << bad << ": "
                                                                                   << cuvae_last_error();
    EXPECT_EQ(c.corrupt.kind, before.kind) << bad;  // a refused value leaves the config as it was
  }
}

TEST(FamilyConfig, IniRoundTripKeepsFamilyKeys) {
  for (const char *corrupt : {"gaussian:0.1", "mask:0.25", "none"}) {
    cuvae_config c;
    BaseConfig(&c);
    for (const char *s : {"model.likelihood=gaussian", "model.gaussian_variance=learned_per_dim",
                          "model.decoder=linear", "train.objective=elbo", "train.samples=3", "train.kl=sampled",
                          "train.beta=0.3", "train.beta_warmup_steps=250"})
      ASSERT_EQ(cuvae_config_set(&c, s), 0) << s << ": " << cuvae_last_error();
    ASSERT_EQ(cuvae_config_set(&c, (std::string("data.corrupt=") + corrupt).c_str()), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_config_finalize(&c), 0) << cuvae_last_error();
    char *ini = cuvae_config_to_ini(&c);
    ASSERT_NE(ini, nullptr) << cuvae_last_error();
    cuvae_config d;
    cuvae_config_defaults(&d);
    const int rc = cuvae_config_load_string(&d, ini, "roundtrip");
    EXPECT_EQ(rc, 0) << cuvae_last_error() << "\n" << ini;
    std::free(ini);
    if (rc != 0) continue;
    EXPECT_EQ(cuvae_config_finalize(&d), 0) << cuvae_last_error();
    EXPECT_EQ(d.corrupt.kind, c.corrupt.kind) << corrupt;
    EXPECT_EQ(d.corrupt.level, c.corrupt.level) << corrupt;
    EXPECT_EQ(d.likelihood, CUVAE_LIK_GAUSSIAN);
    EXPECT_EQ(d.gaussian_variance, CUVAE_VAR_LEARNED_PER_DIM);
    EXPECT_EQ(d.decoder, CUVAE_DECODER_LINEAR);
    EXPECT_EQ(d.samples, 3);
    EXPECT_EQ(d.kl, CUVAE_KL_SAMPLED);
    EXPECT_EQ(d.beta, 0.3f);
    EXPECT_EQ(d.beta_warmup_steps, 250);
    EXPECT_EQ(d.binarize, c.binarize);
  }
  // binarize survives too.
  cuvae_config c;
  BaseConfig(&c);
  ASSERT_EQ(cuvae_config_set(&c, "data.binarize=dynamic"), 0);
  char *ini = cuvae_config_to_ini(&c);
  ASSERT_NE(ini, nullptr);
  cuvae_config d;
  cuvae_config_defaults(&d);
  EXPECT_EQ(cuvae_config_load_string(&d, ini, "roundtrip"), 0) << cuvae_last_error();
  std::free(ini);
  EXPECT_EQ(d.binarize, CUVAE_BINARIZE_DYNAMIC);
}

// ---- the CPU backend's data noise ----------------------------------------------------------------------------

struct BackendSetup {
  int N = 20, D = 7, B = 5;
  std::vector<float> x;
  cuvae_dataset ds = {};
  cuvae_config cfg;
  cuvae_model m;
  std::vector<uint32_t> rows;
};

void SetupBackend(BackendSetup *s, const char *binarize, const char *objective, const char *corrupt) {
  s->x = cuvae_test::synthetic_data(s->N, s->D, 3);
  s->ds.n = s->N;
  s->ds.dim = s->D;
  s->ds.rows = 1;
  s->ds.cols = s->D;
  s->ds.x = s->x.data();
  BaseConfig(&s->cfg);
  for (const char *kv : {"model.hidden=6", "model.latent=3", "train.batch_size=5", "train.eval_batch_size=5",
                         "train.seed=17", "train.threads=1"})
    ASSERT_EQ(cuvae_config_set(&s->cfg, kv), 0) << kv << ": " << cuvae_last_error();
  ASSERT_EQ(cuvae_config_set(&s->cfg, (std::string("data.binarize=") + binarize).c_str()), 0);
  ASSERT_EQ(cuvae_config_set(&s->cfg, (std::string("train.objective=") + objective).c_str()), 0);
  ASSERT_EQ(cuvae_config_set(&s->cfg, (std::string("data.corrupt=") + corrupt).c_str()), 0);
  ASSERT_EQ(cuvae_config_finalize(&s->cfg), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_model_build(&s->m, (size_t)s->D, &s->cfg), 0) << cuvae_last_error();
  s->rows.resize(s->B);
  for (int b = 0; b < s->B; b++) s->rows[b] = (uint32_t)((2 + 7 * b) % s->N);
}

using Backend = std::unique_ptr<cuvae_backend, void (*)(cuvae_backend *)>;
Backend MakeBackend(BackendSetup &s) {
  return Backend(cuvae_backend_cpu_create(&s.m, &s.cfg, &s.ds, nullptr), [](cuvae_backend *b) {
    if (b) b->destroy(b);
  });
}

// The step's objective, rebuilt by hand from the documented pieces (include/cuvae/rng.h's streams): targets
// binarized with the data stream's uniforms at 2t * stride(B*D), encoder input corrupted with its draws at
// (2t + 1) * stride(B*D), eps from the training stream at t * stride(B*Z), initial parameters.
cuvae_loss ManualStep(const BackendSetup &s, int64_t t, std::vector<float> *xb_out) {
  const size_t nx = (size_t)s.B * s.D, nz = (size_t)s.B * s.m.latent;
  std::vector<float> xb(nx), xin(nx), u(cuvae_noise_stride(nx)), eps(cuvae_noise_stride(nz));
  for (int b = 0; b < s.B; b++)
    for (int d = 0; d < s.D; d++) xb[b * s.D + d] = s.x[s.rows[b] * s.D + d];
  cuvae_noise *data = cuvae_noise_create(s.cfg.seed ^ CUVAE_SEED_DATA);
  cuvae_noise *train = cuvae_noise_create(s.cfg.seed);
  EXPECT_NE(data, nullptr);
  EXPECT_NE(train, nullptr);
  if (s.cfg.binarize == CUVAE_BINARIZE_DYNAMIC) {
    EXPECT_EQ(cuvae_noise_uniform(data, 2 * (uint64_t)t * cuvae_noise_stride(nx), u.data(), nx), 0);
    for (size_t i = 0; i < nx; i++) xb[i] = u[i] <= xb[i] ? 1.0f : 0.0f;
  }
  xin = xb;
  const uint64_t coff = (2 * (uint64_t)t + 1) * cuvae_noise_stride(nx);
  if (s.cfg.corrupt.kind == CUVAE_CORRUPT_GAUSSIAN) {
    EXPECT_EQ(cuvae_noise_normal(data, coff, u.data(), nx), 0);
    for (size_t i = 0; i < nx; i++) xin[i] = xb[i] + s.cfg.corrupt.level * u[i];
  } else if (s.cfg.corrupt.kind == CUVAE_CORRUPT_MASK) {
    EXPECT_EQ(cuvae_noise_uniform(data, coff, u.data(), nx), 0);
    for (size_t i = 0; i < nx; i++) xin[i] = u[i] <= s.cfg.corrupt.level ? 0.0f : xb[i];
  }
  EXPECT_EQ(cuvae_noise_normal(train, (uint64_t)t * cuvae_noise_stride(nz), eps.data(), nz), 0);
  cuvae_noise_destroy(data);
  cuvae_noise_destroy(train);
  std::vector<float> params(s.m.n_params);
  EXPECT_EQ(cuvae_model_init(&s.m, params.data(), s.cfg.seed), 0);
  cuvae_objective_spec spec;
  cuvae_objective_for_step(&s.cfg, t, &spec);
  cuvae_loss loss;
  std::memset(&loss, 0, sizeof loss);
  cuvae_cpu_ws *ws = cuvae_cpu_ws_create(&s.m, s.B);
  const cuvae_cpu_batch batch = {s.B, xb.data(), s.cfg.corrupt.kind == CUVAE_CORRUPT_NONE ? nullptr : xin.data(),
                                 eps.data(), nullptr};
  EXPECT_EQ(cuvae_cpu_objective_grad(&s.m, ws, params.data(), &batch, &spec, nullptr, &loss), 0)
      << cuvae_last_error();
  cuvae_cpu_ws_destroy(ws);
  if (xb_out) *xb_out = xb;
  return loss;
}

TEST(FamilyBackend, DynamicBinarizationIsDeterministicAndBinarizes) {
  BackendSetup s;
  SetupBackend(&s, "dynamic", "elbo", "none");
  if (HasFatalFailure()) return;
  Backend be = MakeBackend(s);
  ASSERT_NE(be, nullptr) << cuvae_last_error();
  const size_t n = s.m.n_params;
  std::vector<float> p0(n), m0(n), v0(n);
  ASSERT_EQ(be->get_state(be.get(), p0.data(), m0.data(), v0.data()), 0);
  const int64_t t = 3;
  cuvae_step_result r1, r2, r3;
  ASSERT_EQ(cuvae_backend_step(be.get(), s.rows.data(), s.B, t, &r1), 0) << cuvae_last_error();
  // Back to the initial state: the same step index and rows give the same bits (the noise is a function of t).
  ASSERT_EQ(be->set_state(be.get(), p0.data(), m0.data(), v0.data()), 0);
  ASSERT_EQ(cuvae_backend_step(be.get(), s.rows.data(), s.B, t, &r2), 0) << cuvae_last_error();
  EXPECT_EQ(0, std::memcmp(&r1.loss.objective, &r2.loss.objective, sizeof(double)));
  EXPECT_EQ(r1.grad_norm, r2.grad_norm);
  // Another step index draws other targets.
  ASSERT_EQ(be->set_state(be.get(), p0.data(), m0.data(), v0.data()), 0);
  ASSERT_EQ(cuvae_backend_step(be.get(), s.rows.data(), s.B, t + 1, &r3), 0) << cuvae_last_error();
  EXPECT_NE(r1.loss.objective, r3.loss.objective);

  // The documented recipe gives the same bits, and its targets are 0/1 draws, not the data.
  std::vector<float> xb;
  const cuvae_loss manual = ManualStep(s, t, &xb);
  EXPECT_EQ(0, std::memcmp(&manual.objective, &r1.loss.objective, sizeof(double)))
      << manual.objective << " vs " << r1.loss.objective;
  int ones = 0;
  for (float v : xb) {
    EXPECT_TRUE(v == 0.0f || v == 1.0f) << v;
    ones += v == 1.0f;
  }
  EXPECT_GT(ones, 0);
  EXPECT_LT(ones, (int)xb.size());

  // binarize = none trains on the data itself: another loss, equal to the recipe without binarization.
  BackendSetup s0;
  SetupBackend(&s0, "none", "elbo", "none");
  if (HasFatalFailure()) return;
  Backend be0 = MakeBackend(s0);
  ASSERT_NE(be0, nullptr) << cuvae_last_error();
  cuvae_step_result q;
  ASSERT_EQ(cuvae_backend_step(be0.get(), s0.rows.data(), s0.B, t, &q), 0) << cuvae_last_error();
  EXPECT_NE(q.loss.objective, r1.loss.objective);
  const cuvae_loss manual0 = ManualStep(s0, t, nullptr);
  EXPECT_EQ(manual0.objective, q.loss.objective);
}

// Corruption reaches the encoder only: the ae step equals the recipe with x_in corrupted and the clean targets.
TEST(FamilyBackend, CorruptionFollowsTheDocumentedStream) {
  for (const char *corrupt : {"gaussian:0.1", "mask:0.25"}) {
    BackendSetup s;
    SetupBackend(&s, "none", "ae", corrupt);
    if (HasFatalFailure()) return;
    Backend be = MakeBackend(s);
    ASSERT_NE(be, nullptr) << cuvae_last_error();
    cuvae_step_result r;
    ASSERT_EQ(cuvae_backend_step(be.get(), s.rows.data(), s.B, 5, &r), 0) << cuvae_last_error();
    const cuvae_loss manual = ManualStep(s, 5, nullptr);
    EXPECT_EQ(manual.objective, r.loss.objective) << corrupt;
    EXPECT_EQ(r.loss.kl, 0.0);
    // Without corruption it is another number.
    BackendSetup s0;
    SetupBackend(&s0, "none", "ae", "none");
    if (HasFatalFailure()) return;
    Backend be0 = MakeBackend(s0);
    ASSERT_NE(be0, nullptr);
    cuvae_step_result r0;
    ASSERT_EQ(cuvae_backend_step(be0.get(), s0.rows.data(), s0.B, 5, &r0), 0) << cuvae_last_error();
    EXPECT_NE(r0.loss.objective, r.loss.objective) << corrupt;
  }
}

}  // namespace
