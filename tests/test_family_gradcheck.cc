// The model family (docs/MATH.md sections 4-6) on the CPU: every objective and likelihood, and the conditional
// VAE, checked against an independent naive double-precision reference written here (plain loops, no BLAS,
// parameters read through the tensor names of include/cuvae/model.h, eps sample-major: row s*B + r is sample s of
// data row r; a conditional model reads [x | onehot(y_r)] in the encoder and [z | onehot(y_r)] in the decoder, for
// every sample row s*B + r), differentiated by central differences. The equivalences between members, the config
// checks and the CPU backend's checks are in tests/test_family_equiv.cc; the shared fixture in tests/family_ref.h.
//
// Gradient check, as tests/test_gradcheck.cc (same reasoning, same numbers):
// Step size h = 1e-5 in double: truncation h^2/6 |L'''| ~ 1e-11, roundoff ~1e-16 |L| / h ~ 1e-10 for |L| ~ 10, so
// the FD gradient is good to ~1e-9, far below the float tolerance: any mismatch is the library's.
// Tolerance |analytic - fd| <= kAtol + kRtol |fd|: the analytic gradient is float32 (u = 2^-24). Counting the
// roundings on an entry's longest dependency path as in test_gradcheck.cc (gamma_{K+1} per dense layer, K <= 12;
// the decoder's dW sums over B * samples <= 16 rows; expf/log1pf 4 ulp, tanhf 2 ulp; the per-sample weights of the
// multi-sample objectives: a softmax in double rounded once to float, one more u) gives <= ~140u = 8.3e-6 relative
// to M_g, the gradient's magnitude sum (the same chain on absolute values). That is within kAtol + kRtol |g| when
// M_g <= 1.2 + 12 |g|: the condition assumed (cancellation by at most 12x; the gradients are 0.01 .. 2 here,
// learned variances multiply by exp(-lv) <= ~5, inputs and weights O(1)). Measured max |err| <= 5.6e-7. A wrong
// factor (1/L vs 1/(B L), a missing beta, a softmax weight not applied, a sample slice read at the wrong offset)
// gives errors of the size of the gradient itself (>= 1e-3).
//
// Objective value: |ours - ref| <= kLossAtol + kLossRtol * M, with M the sum of the ABSOLUTE values of the terms
// that make up the value (per data point). The sampled KL 0.5 sum_j (z^2 - eps^2 - lv) and the learned-variance NLL
// can cancel to a value much smaller than its terms, so the bound has to scale with the terms, not the result.
// Each term comes out of the forward path counted in test_gradcheck.cc (<= 62u relative to its magnitude sum, plus
// the learned variance's expf 8u and the log-sum-exp of the multi-sample objectives, in double); kLossRtol = 1e-5
// = 168u bounds it when a term's own magnitude sum is <= 2.7 times the term (inputs O(1)): the condition assumed.
// kLossAtol = 2e-6 covers the closed-form KL's exp(lv) - 1 - lv as in test_gradcheck.cc.
//
// Kinks: with ReLU an FD entry is skipped when +-h changes the sign pattern of any ReLU pre-activation (the
// reference records the pattern, encoder and all B * samples decoder rows); skips must stay rare (<= 5%).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "gradcheck_ref.h"
#include "family_ref.h"
#include "test_util.h"

namespace {

using namespace family_ref;

constexpr double kH = 1e-5;
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;
constexpr double kLossRtol = 1e-5;
constexpr double kLossAtol = 2e-6;
constexpr double kLog2Pi = 1.8378770664093454836;

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
    // The conditional VAE ([model] conditional = true, classes = 3; labels r % 3).
    {"cvae_elbo", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kElbo, 1, kAna, 1.0f, 3},
    {"cvae_elbo3_sampled", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kElbo, 3, kSamp, 1.0f, 3},
    {"cvae_iwae3", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kIwae, 3, kAna, 1.0f, 3},
    {"cvae_gauss_perdim", kGauss, kPerDim, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f, 3},
    {"cvae_ae", kBern, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 1.0f, kAe, 1, kAna, 1.0f, 3},
    {"cvae_linear_decoder", kGauss, kFixed, kLinear, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f, 3},
    {"cvae_shared_relu2_beta", kGauss, kShared, kMlp, kRelu, {5, 4}, 3, 6, 4, 0.8f, kElbo, 2, kAna, 0.5f, 3},
    // The variance floor (docs/MATH.md (4.8)) and dequantization's constant (4.6). The per-dim floor at 1 (lv_min =
    // 0) floors about half of the lv head's outputs (they lie in about +-1.5); the shared floor at e^0.7 lies above
    // every dec.logvar MakeProblem draws (+-[0.1, 0.6]: always floored, its gradient exactly 0) and at e^-0.7 below
    // them (never floored: the plain gradient).
    {"perdim_floor_dequantized", kGauss, kPerDim, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f, 0, 1.0f,
     true},
    {"perdim_floor_iwae3", kGauss, kPerDim, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kIwae, 3, kAna, 1.0f, 0, 1.0f, true},
    {"shared_floored_dequantized", kGauss, kShared, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 2, kAna, 1.0f, 0, 2.0137527f,
     true},
    {"shared_floor_below", kGauss, kShared, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 1, kAna, 1.0f, 0, 0.4965853f},
    {"fixed_dequantized_sampled", kGauss, kFixed, kMlp, kTanh, {5}, 3, 6, 4, 0.8f, kElbo, 2, kSamp, 1.0f, 0, 0.0f,
     true},
};

// ---- the independent double-precision reference ----------------------------------------------------------------

using gradcheck_ref::Find;
using gradcheck_ref::Linear;

// Rows i < rows of [v_i | onehot(labels[i % period])] (v: rows of n values) for a conditional case; v itself else.
std::vector<double> WithOnehot(const Case &c, const std::vector<double> &v, int n, int rows,
                               const std::vector<int32_t> &labels, int period) {
  if (c.classes == 0) return v;
  const int C = c.classes;
  if ((int)labels.size() != period || v.size() != (size_t)rows * n)
    throw std::runtime_error("labels: shape mismatch");
  std::vector<double> out((size_t)rows * (n + C), 0.0);
  for (int i = 0; i < rows; i++) {
    for (int k = 0; k < n; k++) out[(size_t)i * (n + C) + k] = v[(size_t)i * n + k];
    const int y = labels[i % period];
    if (y < 0 || y >= C) throw std::runtime_error("label out of range");
    out[(size_t)i * (n + C) + n + y] = 1.0;
  }
  return out;
}

struct Ref {
  double objective = 0, recon = 0, kl = 0;
  double mag_objective = 0, mag_recon = 0, mag_kl = 0;  // sums of |terms| per data point (the tolerances' scale)
};

// Encoder: mulv[B][2Z] = [mu | lv] per row, of x (or [x | onehot(y)]).
std::vector<double> RefEncode(const cuvae_model &m, const Case &c, const std::vector<double> &p,
                              const std::vector<double> &x, const std::vector<int32_t> &labels,
                              std::vector<char> *pattern) {
  std::vector<double> h = WithOnehot(c, x, c.D, c.B, labels, c.B);
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

// z of the sample rows: sample s of row r is row s*B + r (mu itself for the autoencoder).
std::vector<double> RefSampleZ(const Case &c, const std::vector<double> &mulv, const std::vector<double> &eps) {
  const int B = c.B, Z = c.Z;
  const bool ae = c.obj == CUVAE_OBJ_AE;
  const int L = ae ? 1 : c.samples, N = B * L;
  std::vector<double> z((size_t)N * Z);
  for (int s = 0; s < L; s++)
    for (int r = 0; r < B; r++)
      for (int j = 0; j < Z; j++) {
        const double mu = mulv[r * 2 * Z + j], lv = mulv[r * 2 * Z + Z + j];
        const size_t i = ((size_t)s * B + r) * Z + j;
        z[i] = ae ? mu : mu + std::exp(0.5 * lv) * eps[i];
      }
  return z;
}

// The decoder's outputs for the N = z.size() / Z sample rows: the mean head f, the per-dimension log-variance head
// (learned_per_dim) and the shared log-variance (learned_shared).
struct RefDecoded {
  std::vector<double> f, lvd;
  double lv_shared = 0.0;
};
RefDecoded RefDecode(const cuvae_model &m, const Case &c, const std::vector<double> &p, const std::vector<double> &z,
                     const std::vector<int32_t> &labels, std::vector<char> *pattern) {
  const int N = (int)(z.size() / (size_t)c.Z);
  // Decoder: mirror of the hidden layers (mlp) or none (linear), then the output head(s); its input z (or sample row
  // s*B + r: [z | onehot(y_r)]).
  std::vector<double> h = WithOnehot(c, z, c.Z, N, labels, c.B);
  const int k = c.dec == CUVAE_DECODER_MLP ? (int)c.hidden.size() : 0;
  for (int i = 0; i < k; i++) h = Linear(m, p, "dec." + std::to_string(i), h, N, true, c.act, pattern);
  RefDecoded out;
  out.f = Linear(m, p, "dec.out", h, N, false, c.act, pattern);
  if (c.lik == CUVAE_LIK_GAUSSIAN && c.var == CUVAE_VAR_LEARNED_PER_DIM)
    out.lvd = Linear(m, p, "dec.lv", h, N, false, c.act, pattern);
  out.lv_shared =
      c.lik == CUVAE_LIK_GAUSSIAN && c.var == CUVAE_VAR_LEARNED_SHARED ? p[Find(m, "dec.logvar").offset] : 0.0;
  return out;
}

// The autoencoder's objective: ||x - xhat||^2, xhat = sigmoid(out) (Bernoulli) or out.
Ref RefAe(const Case &c, const std::vector<double> &x, const std::vector<double> &f) {
  Ref out;
  for (int i = 0; i < c.B * c.D; i++) {
    const double xhat = c.lik == CUVAE_LIK_BERNOULLI ? 1.0 / (1.0 + std::exp(-f[i])) : f[i];
    out.recon += (x[i] - xhat) * (x[i] - xhat);
  }
  out.recon /= c.B;
  out.objective = out.recon;
  out.mag_recon = out.mag_objective = out.recon;
  return out;
}

// Per sample i = s*B + r: nll[i] = -log p(x_r | z_i), kls[i] = 0.5 sum_j (z^2 - eps^2 - lv_r), and the sums of
// their terms' absolute values.
struct RefSampleTerms {
  std::vector<double> nll, kls, mag_nll, mag_kls;
};
// The floor of a learned log-variance, ln min_variance, as the library rounds it (a float).
double LogvarMin(const Case &c) { return (double)(float)std::log((double)c.min_variance); }

// pattern: where each learned log-variance lies against the floor is appended (a kink of the objective).
RefSampleTerms RefPerSample(const Case &c, const std::vector<double> &mulv, const std::vector<double> &x,
                            const std::vector<double> &eps, const std::vector<double> &z, const RefDecoded &dec,
                            std::vector<char> *pattern) {
  const int B = c.B, Z = c.Z, D = c.D, N = B * c.samples;
  const std::vector<double> &f = dec.f;
  const std::vector<double> zeros(N, 0.0);
  RefSampleTerms t{zeros, zeros, zeros, zeros};
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
        const double lv_raw = c.var == CUVAE_VAR_FIXED ? std::log(s2)
                              : c.var == CUVAE_VAR_LEARNED_SHARED ? dec.lv_shared
                                                                  : dec.lvd[(size_t)i * D + d];
        // The floor (4.8): lv = max(l, ln v); which side of it each l lies on joins the kink pattern.
        const bool floored = c.var != CUVAE_VAR_FIXED && c.min_variance > 0.0f && lv_raw < LogvarMin(c);
        if (pattern && c.var != CUVAE_VAR_FIXED && c.min_variance > 0.0f) pattern->push_back(floored);
        const double lv = floored ? LogvarMin(c) : lv_raw;
        const double q = (xv - fv) * (xv - fv) * std::exp(-lv);
        term = 0.5 * (q + lv + kLog2Pi);
        mag = 0.5 * (q + std::fabs(lv) + kLog2Pi);
      }
      t.nll[i] += term;
      t.mag_nll[i] += mag;
    }
    if (c.dequantize) {  // the discrete data's constant (4.6)
      t.nll[i] += D * std::log(256.0);
      t.mag_nll[i] += D * std::log(256.0);
    }
    for (int j = 0; j < Z; j++) {
      const double zz = z[(size_t)i * Z + j], e = eps[(size_t)i * Z + j], lv = mulv[r * 2 * Z + Z + j];
      t.kls[i] += 0.5 * (zz * zz - e * e - lv);
      t.mag_kls[i] += 0.5 * (zz * zz + e * e + std::fabs(lv));
    }
  }
  return t;
}

// The objective of a VAE member from its per-sample terms, batch means per data point.
Ref RefCombine(const Case &c, const std::vector<double> &mulv, const RefSampleTerms &terms) {
  const int B = c.B, Z = c.Z, L = c.samples, N = B * L;
  const std::vector<double> &nll = terms.nll, &kls = terms.kls, &mag_nll = terms.mag_nll, &mag_kls = terms.mag_kls;
  Ref out;
  for (int i = 0; i < N; i++) {
    out.recon += nll[i] / N;
    out.mag_recon += mag_nll[i] / N;
  }
  const double beta = c.beta;
  if (c.obj == CUVAE_OBJ_IWAE) {
    // L = -(1/B) sum_r [logsumexp_s log w - log K], log w = -nll - beta kls (docs/MATH.md section 5).
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
    // L = (1/(B L)) sum nll + beta (1/B) sum_r KL_r, KL_r in closed form (docs/MATH.md section 3).
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

// Everything after the encoder (docs/MATH.md sections 2-6), batch means per data point.
Ref RefLatent(const cuvae_model &m, const Case &c, const std::vector<double> &p, const std::vector<double> &mulv,
              const std::vector<double> &x, const std::vector<int32_t> &labels, const std::vector<double> &eps,
              std::vector<char> *pattern) {
  const std::vector<double> z = RefSampleZ(c, mulv, eps);
  const RefDecoded dec = RefDecode(m, c, p, z, labels, pattern);
  if (c.obj == CUVAE_OBJ_AE) return RefAe(c, x, dec.f);
  return RefCombine(c, mulv, RefPerSample(c, mulv, x, eps, z, dec, pattern));
}

Ref RefFull(const cuvae_model &m, const Case &c, const std::vector<double> &p, const std::vector<double> &x,
            const std::vector<int32_t> &labels, const std::vector<double> &eps, std::vector<char> *pattern) {
  return RefLatent(m, c, p, RefEncode(m, c, p, x, labels, pattern), x, labels, eps, pattern);
}


// ---- the checks ------------------------------------------------------------------------------------------------

// The shared checks (tests/gradcheck_ref.h) with this file's step and tolerances.
template <class F>
double CentralDiff(std::vector<double> v, size_t i, const std::vector<char> &pattern0, F f) {
  return gradcheck_ref::CentralDiff(std::move(v), i, kH, pattern0, f);
}
using gradcheck_ref::Tally;
// analytic[i] vs the FD value for entries [off, off + count) of v. expect_zero: the entry does not reach the
// objective (ae's lv head): then both must be exactly 0.
template <class F>
Tally CheckRange(const std::string &what, const std::vector<double> &v, size_t off, size_t count,
                 const float *analytic, const std::vector<char> &pattern0, bool expect_zero, F f) {
  return gradcheck_ref::CheckRange(what, v, off, count, analytic, pattern0, kH, kAtol, kRtol, expect_zero, f);
}

// Tensors that do not reach the objective: ae's lv head; a shared log-variance below its floor (4.8: the kCases floor
// it only when min_variance exceeds e^0.6, the largest |dec.logvar| MakeProblem draws).
bool IsAeLvHead(const Case &c, const std::string &name) {
  if (c.var == CUVAE_VAR_LEARNED_SHARED && c.min_variance > std::exp(0.6) && name == "dec.logvar") return true;
  return c.obj == CUVAE_OBJ_AE && (name == "enc.lv.weight" || name == "enc.lv.bias");
}

void ExpectLossNear(const cuvae_loss &got, const Ref &ref, const char *what) {
  std::printf("%s: objective ours %.9g ref %.9g (recon %.9g / %.9g, kl %.9g / %.9g)\n", what, got.objective,
              ref.objective, got.recon, ref.recon, got.kl, ref.kl);
  EXPECT_NEAR(got.objective, ref.objective, kLossAtol + kLossRtol * ref.mag_objective) << what;
  EXPECT_NEAR(got.recon, ref.recon, kLossAtol + kLossRtol * ref.mag_recon) << what;
  EXPECT_NEAR(got.kl, ref.kl, kLossAtol + kLossRtol * ref.mag_kl) << what;
  EXPECT_EQ(got.nelbo, got.recon + got.kl) << what;  // nelbo = recon + kl, this very double addition (vae_cpu.c)
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
  // Layout: the heads the likelihood needs, and the tensors tile [0, n_params) up to the alignment gaps.
  cuvae_model m;
  ASSERT_EQ(cuvae_model_build(&m, (size_t)c.D, &cfg), 0) << cuvae_last_error();
  EXPECT_EQ(cuvae_model_find(&m, "dec.logvar") != nullptr, c.lik == kGauss && c.var == kShared);
  EXPECT_EQ(cuvae_model_find(&m, "dec.lv.weight") != nullptr, c.lik == kGauss && c.var == kPerDim);
  EXPECT_EQ(cuvae_model_find(&m, "dec.0.weight") != nullptr, c.dec == kMlp);
  cuvae_test::ExpectAlignedTiling(m);
  // The first layers read D + C and Z + C inputs (C = 0 unconditional).
  EXPECT_EQ(m.cond, (size_t)c.classes);
  const cuvae_tensor *e0 = cuvae_model_find(&m, "enc.0.weight");
  const cuvae_tensor *d0 = cuvae_model_find(&m, c.dec == kMlp ? "dec.0.weight" : "dec.out.weight");
  ASSERT_TRUE(e0 && d0);
  EXPECT_EQ(e0->shape[1], (size_t)(c.D + c.classes));
  EXPECT_EQ(d0->shape[1], (size_t)(c.Z + c.classes));
  EXPECT_EQ(m.enc[0].in, (size_t)(c.D + c.classes));
  EXPECT_EQ(m.dec[0].in, (size_t)(c.Z + c.classes));
}

// The objective vs the double reference; every parameter's gradient vs central differences.
TEST_P(FamilyGradCheck, ParameterGradients) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  const Case &c = pr.c;
  Workspace ws = MakeWs(pr.m, pr.rows);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  const cuvae_cpu_batch batch = pr.batch(pr.eps.data());
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
  const Ref ref = RefFull(pr.m, c, pr.pd, pr.xd, pr.labels, pr.ed, &pattern0);
  ExpectLossNear(loss, ref, c.name);
  if (c.min_variance > 0.0f && c.act == kTanh) {  // the pattern holds only the floor's sides: the floor must matter
    const long floored = std::count(pattern0.begin(), pattern0.end(), 1);
    std::printf("  %ld of %zu log-variances floored\n", floored, pattern0.size());
    if (c.var == kPerDim) {
      EXPECT_GT(floored, 0);
      EXPECT_LT(floored, (long)pattern0.size());
    } else {
      EXPECT_EQ(floored > 0, c.min_variance > std::exp(0.6));
    }
  }
  if (c.obj == CUVAE_OBJ_AE) {
    EXPECT_EQ(loss.kl, 0.0);
  }

  auto f = [&](const std::vector<double> &p, std::vector<char> *pat) {
    return RefFull(pr.m, c, p, pr.xd, pr.labels, pr.ed, pat).objective;
  };
  int checked = 0, skipped = 0;
  for (int t = 0; t < pr.m.n_tensors; t++) {
    const cuvae_tensor &T = pr.m.tensors[t];
    const Tally tl = CheckRange(T.name, pr.pd, T.offset, T.count, grad.data() + T.offset, pattern0,
                                IsAeLvHead(c, T.name), f);
    checked += tl.checked;
    skipped += tl.skipped;
  }
  EXPECT_EQ(checked + skipped, (int)pr.m.n_values);
  EXPECT_LE(skipped, (int)pr.m.n_values / 20);  // a check with many kinks skipped would be hollow
}

// A generic latent point [mu | lv] per row: mu ~ N(0, 1), lv ~ U(-1.5, 1).
std::vector<float> LatentPoint(const Case &c) {
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
  return mulv;
}

// Every entry of dL/d[mu|lv] vs central differences of fm at mulvd, tallied into *mu_all and *lv_all. The
// autoencoder's lv does not reach the objective: both its analytic and FD entries must be exactly 0.
template <class F>
void CheckLatentEntries(const Case &c, const std::vector<double> &mulvd, const std::vector<float> &dmulv,
                        const std::vector<char> &pattern0, F fm, Tally *mu_all, Tally *lv_all) {
  const int Z = c.Z;
  const bool ae = c.obj == CUVAE_OBJ_AE;
  for (int r = 0; r < c.B; r++) {
    // Per row the gradient can be small; the caller checks "non-trivial somewhere" over all rows.
    for (int half = 0; half < 2; half++) {
      Tally &acc = half ? *lv_all : *mu_all;
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
}

// dL/d[mu|lv] (cuvae_cpu_latent_objective_grad) at a generic latent point, and the decoder's gradients it
// produces, vs central differences of the reference after the encoder.
TEST_P(FamilyGradCheck, LatentGradients) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  const Case &c = pr.c;
  const std::vector<float> mulv = LatentPoint(c);
  const std::vector<double> mulvd(mulv.begin(), mulv.end());
  Workspace ws = MakeWs(pr.m, pr.rows);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  const cuvae_cpu_batch batch = pr.batch(pr.eps.data());
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
  const Ref ref = RefLatent(pr.m, c, pr.pd, mulvd, pr.xd, pr.labels, pr.ed, &pattern0);
  ExpectLossNear(loss, ref, (std::string(c.name) + " latent").c_str());
  auto fm = [&](const std::vector<double> &v, std::vector<char> *pat) {
    return RefLatent(pr.m, c, pr.pd, v, pr.xd, pr.labels, pr.ed, pat).objective;
  };
  const bool ae = c.obj == CUVAE_OBJ_AE;
  Tally mu_all, lv_all;
  CheckLatentEntries(c, mulvd, dmulv, pattern0, fm, &mu_all, &lv_all);
  std::printf("  %-16s %4d checked %2d skipped  max|err| %.2e  max|grad| %.2e\n", "dmu", mu_all.checked,
              mu_all.skipped, mu_all.max_err, mu_all.max_fd);
  std::printf("  %-16s %4d checked %2d skipped  max|err| %.2e  max|grad| %.2e\n", "dlv", lv_all.checked,
              lv_all.skipped, lv_all.max_err, lv_all.max_fd);
  EXPECT_GT(mu_all.max_fd, 1e-4);
  if (!ae) {
    EXPECT_GT(lv_all.max_fd, 1e-4);
  }

  auto fp = [&](const std::vector<double> &p, std::vector<char> *pat) {
    return RefLatent(pr.m, c, p, mulvd, pr.xd, pr.labels, pr.ed, pat).objective;
  };
  for (int t = 0; t < pr.m.n_tensors; t++) {
    const cuvae_tensor &T = pr.m.tensors[t];
    if (std::string(T.name).rfind("dec.", 0) != 0) continue;
    CheckRange(T.name, pr.pd, T.offset, T.count, grad.data() + T.offset, pattern0, IsAeLvHead(c, T.name), fp);
  }
}

// A batch whose B * samples exceeds the workspace is refused with a message.
TEST_P(FamilyGradCheck, SamplesBeyondWorkspaceFail) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  Workspace ws = MakeWs(pr.m, pr.rows - 1);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  const cuvae_cpu_batch batch = pr.batch(pr.eps.data());
  std::vector<float> grad(pr.m.n_params);
  cuvae_loss loss;
  cuvae_clear_error();
  EXPECT_EQ(cuvae_cpu_objective_grad(&pr.m, ws.get(), pr.params.data(), &batch, &pr.spec, grad.data(), &loss), -1);
  EXPECT_STRNE(cuvae_last_error(), "");
}

INSTANTIATE_TEST_SUITE_P(Members, FamilyGradCheck, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case> &i) { return std::string(i.param.name); });

// ---- the conditional model's labels ----------------------------------------------------------------------------

// The label is an input: changing one row's label changes the objective and the gradient, and both numbers are the
// reference's for the labels given (so the one-hot goes to the right column, for the encoder and for every sample
// row of the decoder). The encoder's mean of the other rows, and the decoder's output of rows with unchanged labels,
// are bitwise unchanged (each output row of a GEMM is its own input row's).
TEST(FamilyConditional, LabelsChangeTheObjective) {
  for (const char *name : {"cvae_elbo", "cvae_iwae3", "cvae_ae"}) {
    const Case *cp = nullptr;
    for (const Case &k : kCases)
      if (std::string(k.name) == name) cp = &k;
    ASSERT_NE(cp, nullptr) << name;
    Problem pr;
    MakeProblem(*cp, &pr);
    if (HasFatalFailure()) return;
    const Case &c = pr.c;
    std::vector<int32_t> other = pr.labels;
    other[1] = (other[1] + 1) % c.classes;
    const ObjRun a = RunObjective(pr, pr.spec, pr.eps.data(), pr.rows);
    const ObjRun b = RunObjective(pr, pr.spec, pr.eps.data(), pr.rows, other.data());
    EXPECT_NE(a.loss.objective, b.loss.objective) << name;
    EXPECT_NE(a.grad, b.grad) << name;
    const Ref ra = RefFull(pr.m, c, pr.pd, pr.xd, pr.labels, pr.ed, nullptr);
    const Ref rb = RefFull(pr.m, c, pr.pd, pr.xd, other, pr.ed, nullptr);
    ExpectLossNear(a.loss, ra, (std::string(name) + " labels").c_str());
    ExpectLossNear(b.loss, rb, (std::string(name) + " other labels").c_str());
    // The two reference values are far apart compared with the tolerance: the check above tells them apart.
    EXPECT_GT(std::fabs(ra.objective - rb.objective), 100 * (kLossAtol + kLossRtol * ra.mag_objective)) << name;

    Workspace ws = MakeWs(pr.m, pr.rows);
    ASSERT_NE(ws, nullptr) << cuvae_last_error();
    const size_t Z2 = 2 * (size_t)c.Z;
    const float *e = cuvae_cpu_encode(&pr.m, ws.get(), pr.params.data(), pr.x.data(), pr.labels.data(), c.B);
    const std::vector<float> ea(e, e + c.B * Z2);
    e = cuvae_cpu_encode(&pr.m, ws.get(), pr.params.data(), pr.x.data(), other.data(), c.B);
    const std::vector<float> eb(e, e + c.B * Z2);
    const std::vector<double> er = RefEncode(pr.m, c, pr.pd, pr.xd, other, nullptr);
    // |ref - out| <= gamma_P M (gradcheck_ref::EncoderGamma), M: the encoder on |W|, |x|, |b| (the one-hot >= 0).
    Case lin = c;
    lin.act = CUVAE_ACT_NONE;
    std::vector<double> pabs = pr.pd, xabs = pr.xd;
    for (double &v : pabs) v = std::fabs(v);
    for (double &v : xabs) v = std::fabs(v);
    const std::vector<double> emag = RefEncode(pr.m, lin, pabs, xabs, other, nullptr);
    const double gamma_p = gradcheck_ref::EncoderGamma(pr.m, c.act);
    for (int r = 0; r < c.B; r++) {
      const bool same = std::memcmp(&ea[r * Z2], &eb[r * Z2], Z2 * sizeof(float)) == 0;
      EXPECT_EQ(same, r != 1) << name << " encoder row " << r;
      for (size_t j = 0; j < Z2; j++)
        EXPECT_NEAR(eb[r * Z2 + j], er[r * Z2 + j], gamma_p * emag[r * Z2 + j]) << name << " row " << r;
    }
    const size_t cols = pr.m.dec[pr.m.n_dec - 1].out;
    std::vector<float> z((size_t)c.B * c.Z);
    for (size_t i = 0; i < z.size(); i++) z[i] = 0.25f * (float)i - 1.0f;
    const float *y = cuvae_cpu_decode(&pr.m, ws.get(), pr.params.data(), z.data(), pr.labels.data(), c.B);
    const std::vector<float> ya(y, y + c.B * cols);
    y = cuvae_cpu_decode(&pr.m, ws.get(), pr.params.data(), z.data(), other.data(), c.B);
    for (int r = 0; r < c.B; r++)
      EXPECT_EQ(std::memcmp(&ya[r * cols], y + r * cols, cols * sizeof(float)) == 0, r != 1)
          << name << " decoder row " << r;
  }
}

}  // namespace
