// Gradient check of the whole CPU model: the library's float32 loss and analytic gradient against an
// independent, naive double-precision forward written here (plain loops, no BLAS, parameters read through
// the tensor names of include/cuvae/model.h), differentiated by central differences.
//
// Step size: h = 1e-5 in double. Truncation error of the central difference is h^2/6 |L'''| ~ 1e-11, the
// roundoff is ~1e-16 |L| / h ~ 1e-10 for |L| ~ 10: the FD gradient is good to ~1e-9, far below the float
// tolerance, so any mismatch is the library's.
//
// Tolerance |analytic - fd| <= kAtol + kRtol |fd|: the analytic gradient is computed in float32, u = 2^-24.
// Counting the roundings on the longest dependency path of an entry (GEMMs in any order: gamma_{K+1} per dense
// layer with its bias add, Higham 3.1; expf/log1pf 4 ulp = 8u, tanhf 2 ulp = 4u; one rounding per other op):
// arch a's forward 8 + 6 + 5 (encoder) + 10 (reparameterisation) + 4 + 5 + 6 (decoder) + 18 (Bernoulli term),
// the backward 7 + 5 + 4 + 6 + 4 (transposed GEMMs) + ~22 (likelihood, reparameterisation gradients) + B = 4 (the
// weight-gradient GEMM): <= 114u relative to M_g, the magnitude sum (the same chain on absolute values); arch b is
// shorter. The bound 114u M_g = 6.8e-6 M_g is within kAtol + kRtol |g| = 1e-5 + 1e-4 |g| when M_g <= 1.4 + 14 |g|,
// the condition assumed here (cancellation by at most 14x; inputs, weights and biases are O(1), widths <= 7).
// The central difference adds ~1e-9 (above). Measured max |err|: ~3e-7, so the condition holds with ~30x to spare.
// A wrong factor, a missed term or a transposed weight gives errors of the size of the gradient itself (>= 1e-3).
//
// Kinks: an FD entry is skipped (not counted) when the perturbation +-h changes the sign pattern of any ReLU
// pre-activation, i.e. when some pre-activation lies within ~h of 0 and L is not differentiable there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <ostream>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "gradcheck_ref.h"
#include "test_util.h"

namespace {

constexpr double kH = 1e-5;
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;
// Loss vs the double reference, |ref - out| <= kLossAtol + kLossRtol |ref|: the forward path above counts <= 62u
// relative to M, the forward's magnitude sum; 62u M <= 2e-6 + 1e-5 |ref| when M <= 0.5 + 2.7 |ref| (the per-element
// terms are >= 0, so M is mostly the loss itself). The KL's exp(lv) - 1 - lv is formed in double from the float sd
// (16u exp(lv) per term, 0.5 and the batch mean: <= 8u Z max exp(lv) < 2e-6 for Z <= 3, lv <= 0.3): the atol.
constexpr double kLossRtol = 1e-5;
constexpr double kLossAtol = 2e-6;
constexpr double kTwoPi = 6.283185307179586476925;

struct Arch {
  const char *name;
  cuvae_likelihood lik;
  cuvae_activation act;
  std::vector<int> hidden;
  int Z, D, B;
  float sigma;
};
// How gtest names the parameter in its output (instead of a byte dump).
void PrintTo(const Arch &a, std::ostream *os) { *os << "arch " << a.name; }

// The workspace, freed on every path (including a failed ASSERT).
using Workspace = std::unique_ptr<cuvae_cpu_ws, decltype(&cuvae_cpu_ws_destroy)>;
Workspace MakeWs(const cuvae_model &m, int B) {
  return Workspace(cuvae_cpu_ws_create(&m, B), cuvae_cpu_ws_destroy);
}

const Arch kArchA = {"a", CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, {5, 4}, 3, 7, 4, 1.0f};
const Arch kArchB = {"b", CUVAE_LIK_GAUSSIAN, CUVAE_ACT_TANH, {6}, 2, 5, 3, 0.7f};

int BuildModel(const Arch &a, cuvae_model *m) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  c.n_hidden = (int)a.hidden.size();
  for (size_t i = 0; i < a.hidden.size(); i++) c.hidden[i] = a.hidden[i];
  c.latent = a.Z;
  c.likelihood = a.lik;
  c.sigma = a.sigma;
  c.activation = a.act;
  return cuvae_model_build(m, (size_t)a.D, &c);
}

// ---- the independent double-precision reference -----------------------------------------------------

using gradcheck_ref::Find;
using gradcheck_ref::Linear;

struct RefLoss {
  double nelbo = 0, recon = 0, kl = 0;
};

// Encoder: mulv[B][2Z] = [mu | lv] per row.
std::vector<double> RefEncode(const cuvae_model &m, const Arch &a, const std::vector<double> &p,
                              const std::vector<double> &x, std::vector<char> *pattern) {
  std::vector<double> h = x;
  for (size_t i = 0; i < a.hidden.size(); i++)
    h = Linear(m, p, "enc." + std::to_string(i), h, a.B, true, a.act, pattern);
  const std::vector<double> mu = Linear(m, p, "enc.mu", h, a.B, false, a.act, pattern);
  const std::vector<double> lv = Linear(m, p, "enc.lv", h, a.B, false, a.act, pattern);
  std::vector<double> mulv((size_t)a.B * 2 * a.Z);
  for (int r = 0; r < a.B; r++) {
    for (int j = 0; j < a.Z; j++) {
      mulv[r * 2 * a.Z + j] = mu[r * a.Z + j];
      mulv[r * 2 * a.Z + a.Z + j] = lv[r * a.Z + j];
    }
  }
  return mulv;
}

// Everything after the encoder: reparameterization, decoder, likelihood, KL; batch means (docs/MATH.md 2-4).
RefLoss RefLatentLoss(const cuvae_model &m, const Arch &a, const std::vector<double> &p,
                      const std::vector<double> &mulv, const std::vector<double> &x,
                      const std::vector<double> &eps, std::vector<char> *pattern) {
  const int B = a.B, Z = a.Z, D = a.D;
  std::vector<double> z((size_t)B * Z);
  RefLoss out;
  for (int r = 0; r < B; r++) {
    for (int j = 0; j < Z; j++) {
      const double mu = mulv[r * 2 * Z + j], lv = mulv[r * 2 * Z + Z + j];
      z[r * Z + j] = mu + std::exp(0.5 * lv) * eps[r * Z + j];
      out.kl += 0.5 * (mu * mu + std::exp(lv) - 1.0 - lv);
    }
  }
  std::vector<double> h = z;
  const int k = (int)a.hidden.size();
  for (int i = 0; i < k; i++) h = Linear(m, p, "dec." + std::to_string(i), h, B, true, a.act, pattern);
  const std::vector<double> f = Linear(m, p, "dec.out", h, B, false, a.act, pattern);
  const double s2 = (double)a.sigma * (double)a.sigma;  // the float sigma the library holds
  for (int i = 0; i < B * D; i++) {
    if (a.lik == CUVAE_LIK_BERNOULLI) {  // softplus(l) - x l, stable
      const double l = f[i];
      out.recon += std::max(l, 0.0) + std::log1p(std::exp(-std::fabs(l))) - x[i] * l;
    } else {
      const double d = x[i] - f[i];
      out.recon += 0.5 * (d * d / s2 + std::log(s2) + std::log(kTwoPi));
    }
  }
  out.recon /= B;
  out.kl /= B;
  out.nelbo = out.recon + out.kl;
  return out;
}

RefLoss RefFullLoss(const cuvae_model &m, const Arch &a, const std::vector<double> &p,
                    const std::vector<double> &x, const std::vector<double> &eps, std::vector<char> *pattern) {
  return RefLatentLoss(m, a, p, RefEncode(m, a, p, x, pattern), x, eps, pattern);
}

// ---- fixture: model, parameters, data ---------------------------------------------------------------------

struct Problem {
  Arch a;
  cuvae_model m;
  std::vector<float> params, x, eps;
  std::vector<double> pd, xd, ed;  // the same values in double
};

// Parameters from cuvae_model_init, then every bias replaced by a draw from +-[0.1, 0.6] so that ReLU
// pre-activations sit away from 0; x uniform in [0, 1]; eps standard normal. Fixed seeds.
void MakeProblem(const Arch &a, Problem *pr) {
  pr->a = a;
  ASSERT_EQ(BuildModel(a, &pr->m), 0) << cuvae_last_error();
  pr->params.assign(pr->m.n_params, 0.0f);
  ASSERT_EQ(cuvae_model_init(&pr->m, pr->params.data(), 42), 0) << cuvae_last_error();
  std::mt19937 rng(2024);
  std::uniform_real_distribution<float> mag(0.1f, 0.6f), u01(0.0f, 1.0f);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  for (int t = 0; t < pr->m.n_tensors; t++) {
    const cuvae_tensor &T = pr->m.tensors[t];
    if (T.rank != 1) continue;
    for (size_t i = 0; i < T.count; i++) {
      const float sign = (rng() & 1) ? 1.0f : -1.0f;  // drawn first: a fixed order of draws
      pr->params[T.offset + i] = sign * mag(rng);
    }
  }
  pr->x.resize((size_t)a.B * a.D);
  for (float &v : pr->x) v = u01(rng);
  pr->eps.resize((size_t)a.B * a.Z);
  for (float &v : pr->eps) v = n01(rng);
  pr->pd.assign(pr->params.begin(), pr->params.end());
  pr->xd.assign(pr->x.begin(), pr->x.end());
  pr->ed.assign(pr->eps.begin(), pr->eps.end());
}

// Central difference of f at entry i of v, or NaN when +-h crosses a ReLU kink.
// The shared checks (tests/gradcheck_ref.h) with this file's step and tolerances.
using gradcheck_ref::Tally;
template <class F>
Tally CheckRange(const std::string &what, const std::vector<double> &v, size_t off, size_t count,
                 const float *analytic, const std::vector<char> &pattern0, F f) {
  return gradcheck_ref::CheckRange(what, v, off, count, analytic, pattern0, kH, kAtol, kRtol, false, f);
}

class GradCheck : public ::testing::TestWithParam<Arch> {};

// The naming contract the reference relies on: every tensor present with the shape the architecture
// implies, and the tensors tile [0, n_params) without overlap, up to the alignment gaps.
TEST_P(GradCheck, LayoutFollowsNamingContract) {
  const Arch a = GetParam();
  cuvae_model m;
  ASSERT_EQ(BuildModel(a, &m), 0) << cuvae_last_error();
  const int k = (int)a.hidden.size();
  auto expect = [&](const std::string &name, size_t out, size_t in) {
    const cuvae_tensor *t = cuvae_model_find(&m, name.c_str());
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->count, out * in) << name;
    EXPECT_EQ(t->shape[0], out) << name;
    EXPECT_EQ(t->shape[1], in) << name;  // rank 1 tensors are [out, 1]
  };
  size_t prev = (size_t)a.D;
  for (int i = 0; i < k; i++) {
    expect("enc." + std::to_string(i) + ".weight", a.hidden[i], prev);
    expect("enc." + std::to_string(i) + ".bias", a.hidden[i], 1);
    prev = a.hidden[i];
  }
  for (const char *h : {"enc.mu", "enc.lv"}) {
    expect(std::string(h) + ".weight", a.Z, prev);
    expect(std::string(h) + ".bias", a.Z, 1);
  }
  prev = (size_t)a.Z;
  for (int i = 0; i < k; i++) {
    expect("dec." + std::to_string(i) + ".weight", a.hidden[k - 1 - i], prev);
    expect("dec." + std::to_string(i) + ".bias", a.hidden[k - 1 - i], 1);
    prev = a.hidden[k - 1 - i];
  }
  expect("dec.out.weight", a.D, prev);
  expect("dec.out.bias", a.D, 1);
  EXPECT_EQ(m.n_tensors, 4 * (k + 1) + 2);
  cuvae_test::ExpectAlignedTiling(m);
}

// (i) loss vs the double reference, (ii) every parameter's gradient vs central differences.
TEST_P(GradCheck, ParameterGradients) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  const Arch &a = pr.a;
  Workspace ws = MakeWs(pr.m, a.B);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  std::vector<float> grad(pr.m.n_params, 1e30f);
  cuvae_loss loss;
  ASSERT_EQ(
      cuvae_cpu_loss_grad(&pr.m, ws.get(), pr.params.data(), pr.x.data(), pr.eps.data(), a.B, grad.data(), &loss),
      0)
      << cuvae_last_error();
  cuvae_loss loss_only;  // the forward-only call must agree
  ASSERT_EQ(
      cuvae_cpu_loss_grad(&pr.m, ws.get(), pr.params.data(), pr.x.data(), pr.eps.data(), a.B, nullptr, &loss_only),
      0);

  std::vector<char> pattern0;
  const RefLoss ref = RefFullLoss(pr.m, a, pr.pd, pr.xd, pr.ed, &pattern0);
  std::printf("arch %s: nelbo ours %.9g ref %.9g (recon %.9g kl %.9g)\n", a.name, loss.nelbo, ref.nelbo, ref.recon,
              ref.kl);
  EXPECT_NEAR(loss.nelbo, ref.nelbo, kLossAtol + kLossRtol * std::fabs(ref.nelbo));
  EXPECT_NEAR(loss.recon, ref.recon, kLossAtol + kLossRtol * std::fabs(ref.recon));
  EXPECT_NEAR(loss.kl, ref.kl, kLossAtol + kLossRtol * std::fabs(ref.kl));
  EXPECT_EQ(loss.nelbo, loss.recon + loss.kl);  // nelbo = recon + kl, this very double addition (vae_cpu.c)
  EXPECT_EQ(loss_only.nelbo, loss.nelbo);

  auto f = [&](const std::vector<double> &p, std::vector<char> *pat) {
    return RefFullLoss(pr.m, a, p, pr.xd, pr.ed, pat).nelbo;
  };
  int checked = 0, skipped = 0;
  for (int t = 0; t < pr.m.n_tensors; t++) {
    const cuvae_tensor &T = pr.m.tensors[t];
    const Tally tl = CheckRange(T.name, pr.pd, T.offset, T.count, grad.data() + T.offset, pattern0, f);
    checked += tl.checked;
    skipped += tl.skipped;
  }
  EXPECT_EQ(checked + skipped, (int)pr.m.n_values);
  // Kinks are rare with the perturbed biases; if many entries were skipped the check would be hollow.
  EXPECT_LE(skipped, (int)pr.m.n_values / 20);
}

// (iii) dL/d[mu|lv] from cuvae_cpu_latent_loss_grad vs central differences of the reference after the encoder,
// plus the decoder gradients it produces and the encoder output.
TEST_P(GradCheck, LatentGradients) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  const Arch &a = pr.a;
  const int Z = a.Z;
  // mu ~ N(0, 1), lv uniform in [-1.5, 1]: a generic point, not the encoder's output.
  std::mt19937 rng(77);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::uniform_real_distribution<float> ulv(-1.5f, 1.0f);
  std::vector<float> mulv((size_t)a.B * 2 * Z);
  for (int r = 0; r < a.B; r++) {
    for (int j = 0; j < Z; j++) {
      mulv[r * 2 * Z + j] = n01(rng);
      mulv[r * 2 * Z + Z + j] = ulv(rng);
    }
  }
  const std::vector<double> mulvd(mulv.begin(), mulv.end());

  Workspace ws = MakeWs(pr.m, a.B);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  std::vector<float> grad(pr.m.n_params, 0.0f), dmulv(mulv.size(), 1e30f);
  cuvae_loss loss;
  ASSERT_EQ(cuvae_cpu_latent_loss_grad(&pr.m, ws.get(), pr.params.data(), mulv.data(), pr.x.data(), pr.eps.data(),
                                       a.B, grad.data(), dmulv.data(), &loss),
            0)
      << cuvae_last_error();

  // The encoder forward against the reference encoder: |ref - out| <= gamma_P M (gradcheck_ref::EncoderGamma).
  const float *enc = cuvae_cpu_encode(&pr.m, ws.get(), pr.params.data(), pr.x.data(), nullptr, a.B);
  ASSERT_NE(enc, nullptr) << cuvae_last_error();
  const std::vector<double> enc_ref = RefEncode(pr.m, a, pr.pd, pr.xd, nullptr);
  Arch lin = a;
  lin.act = CUVAE_ACT_NONE;
  std::vector<double> pabs = pr.pd, xabs = pr.xd;
  for (double &v : pabs) v = std::fabs(v);
  for (double &v : xabs) v = std::fabs(v);
  const std::vector<double> enc_mag = RefEncode(pr.m, lin, pabs, xabs, nullptr);
  const double gamma_p = gradcheck_ref::EncoderGamma(pr.m, a.act);
  for (size_t i = 0; i < enc_ref.size(); i++) {
    EXPECT_NEAR(enc[i], enc_ref[i], gamma_p * enc_mag[i]) << "mulv " << i;
  }

  std::vector<char> pattern0;
  const RefLoss ref = RefLatentLoss(pr.m, a, pr.pd, mulvd, pr.xd, pr.ed, &pattern0);
  EXPECT_NEAR(loss.nelbo, ref.nelbo, kLossAtol + kLossRtol * std::fabs(ref.nelbo));
  EXPECT_NEAR(loss.kl, ref.kl, kLossAtol + kLossRtol * std::fabs(ref.kl));

  std::printf("arch %s, latent:\n", a.name);
  auto fm = [&](const std::vector<double> &v, std::vector<char> *pat) {
    return RefLatentLoss(pr.m, a, pr.pd, v, pr.xd, pr.ed, pat).nelbo;
  };
  // mu and lv separately, row by row (dmulv has the [mu | lv] row layout of mulv).
  for (int r = 0; r < a.B; r++) {
    CheckRange("mu row " + std::to_string(r), mulvd, (size_t)r * 2 * Z, Z, dmulv.data() + r * 2 * Z, pattern0, fm);
    CheckRange("lv row " + std::to_string(r), mulvd, (size_t)r * 2 * Z + Z, Z, dmulv.data() + r * 2 * Z + Z,
               pattern0, fm);
  }
  // The decoder's part of grad.
  auto fp = [&](const std::vector<double> &p, std::vector<char> *pat) {
    return RefLatentLoss(pr.m, a, p, mulvd, pr.xd, pr.ed, pat).nelbo;
  };
  for (int t = 0; t < pr.m.n_tensors; t++) {
    const cuvae_tensor &T = pr.m.tensors[t];
    if (std::string(T.name).rfind("dec.", 0) != 0) continue;
    CheckRange(T.name, pr.pd, T.offset, T.count, grad.data() + T.offset, pattern0, fp);
  }
}

// A batch larger than the workspace is refused with a message, not written past the buffers.
TEST_P(GradCheck, BatchBeyondWorkspaceFails) {
  Problem pr;
  MakeProblem(GetParam(), &pr);
  if (HasFatalFailure()) return;
  const Arch &a = pr.a;
  Workspace ws = MakeWs(pr.m, a.B - 1);
  ASSERT_NE(ws, nullptr) << cuvae_last_error();
  std::vector<float> grad(pr.m.n_params);
  cuvae_loss loss;
  cuvae_clear_error();
  EXPECT_EQ(
      cuvae_cpu_loss_grad(&pr.m, ws.get(), pr.params.data(), pr.x.data(), pr.eps.data(), a.B, grad.data(), &loss),
      -1);
  EXPECT_STRNE(cuvae_last_error(), "");
}

INSTANTIATE_TEST_SUITE_P(TinyModels, GradCheck, ::testing::Values(kArchA, kArchB),
                         [](const ::testing::TestParamInfo<Arch> &i) { return std::string(i.param.name); });

}  // namespace
