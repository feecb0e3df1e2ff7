// Shared by the model-family tests (tests/test_family_gradcheck.cc: the double reference and the gradient checks;
// tests/test_family_equiv.cc: equivalences, config checks, CPU backend checks): one member of the family (Case),
// its config, and a fixed problem (parameters, data, noise, labels) to run it on.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/model.h"

namespace family_ref {

// One member of the family: architecture, likelihood and objective. classes > 0: the conditional model
// ([model] conditional = true, classes = C; the one-hot label appended to the encoder's and the decoder's inputs).
// min_variance > 0: the floor of a learned variance (docs/MATH.md (4.8)); dequantize: [data] dequantize = uniform,
// whose NLL carries the constant D ln 256 (4.6; the data given to the objective are the dequantized y).
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
  int classes = 0;
  float min_variance = 0.0f;
  bool dequantize = false;
};
inline void PrintTo(const Case &c, std::ostream *os) { *os << "case " << c.name; }

constexpr cuvae_likelihood kBern = CUVAE_LIK_BERNOULLI, kGauss = CUVAE_LIK_GAUSSIAN;
constexpr cuvae_variance kFixed = CUVAE_VAR_FIXED, kShared = CUVAE_VAR_LEARNED_SHARED,
                         kPerDim = CUVAE_VAR_LEARNED_PER_DIM;
constexpr cuvae_decoder kMlp = CUVAE_DECODER_MLP, kLinear = CUVAE_DECODER_LINEAR;
constexpr cuvae_activation kTanh = CUVAE_ACT_TANH, kRelu = CUVAE_ACT_RELU;
constexpr cuvae_objective kElbo = CUVAE_OBJ_ELBO, kIwae = CUVAE_OBJ_IWAE, kAe = CUVAE_OBJ_AE;
constexpr cuvae_kl_estimator kAna = CUVAE_KL_ANALYTIC, kSamp = CUVAE_KL_SAMPLED;

// A config that finalizes: the case's fields over the defaults, with explicit (never opened) data paths.
inline void CaseConfig(const Case &c, cuvae_config *cfg) {
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
  if (c.classes > 0) {
    cfg->conditional = 1;
    cfg->classes = c.classes;
  }
  cfg->min_variance = c.min_variance;
  cfg->dequantize = c.dequantize ? CUVAE_DEQUANTIZE_UNIFORM : CUVAE_DEQUANTIZE_NONE;
}

using Workspace = std::unique_ptr<cuvae_cpu_ws, decltype(&cuvae_cpu_ws_destroy)>;
inline Workspace MakeWs(const cuvae_model &m, int rows) {
  return Workspace(cuvae_cpu_ws_create(&m, rows), cuvae_cpu_ws_destroy);
}

struct Problem {
  Case c;
  cuvae_config cfg;
  cuvae_model m;
  cuvae_objective_spec spec;
  int rows = 0;  // B * samples: the decoder's rows
  std::vector<float> params, x, eps;
  std::vector<int32_t> labels;  // [B] for a conditional case (row r: class r % C), else empty
  std::vector<double> pd, xd, ed;
  const int32_t *label_ptr() const { return labels.empty() ? nullptr : labels.data(); }
  cuvae_cpu_batch batch(const float *eps_rows) const {
    return {c.B, x.data(), nullptr, eps_rows, label_ptr(), 0, nullptr, nullptr, nullptr};
  }
};

// Parameters from cuvae_model_init, then every rank-1 tensor (biases, dec.logvar) replaced by draws from
// +-[0.1, 0.6] so that ReLU pre-activations sit away from 0; x uniform in [0, 1]; eps standard normal, samples * B
// rows; labels r % C (no draws: the numbers of the unconditional cases do not depend on them). Fixed seeds.
inline void MakeProblem(const Case &c, Problem *pr, uint32_t seed = 2024) {
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
  pr->labels.clear();
  for (int r = 0; c.classes > 0 && r < c.B; r++) pr->labels.push_back(r % c.classes);
  pr->pd.assign(pr->params.begin(), pr->params.end());
  pr->xd.assign(pr->x.begin(), pr->x.end());
  pr->ed.assign(pr->eps.begin(), pr->eps.end());
}

// ---- one call of cuvae_cpu_objective_grad, and bitwise comparison of two -----------------------------------

struct ObjRun {
  cuvae_loss loss;
  std::vector<float> grad;
};

// labels: NULL = the problem's own.
inline ObjRun RunObjective(const Problem &pr, const cuvae_objective_spec &spec, const float *eps, int rows,
                           const int32_t *labels = nullptr) {
  ObjRun out;
  std::memset(&out.loss, 0, sizeof out.loss);
  out.grad.assign(pr.m.n_params, 1e30f);
  Workspace ws = MakeWs(pr.m, rows);
  if (!ws) {
    ADD_FAILURE() << cuvae_last_error();
    return out;
  }
  cuvae_cpu_batch batch = pr.batch(eps);
  if (labels) batch.labels = labels;
  EXPECT_EQ(cuvae_cpu_objective_grad(&pr.m, ws.get(), pr.params.data(), &batch, &spec, out.grad.data(), &out.loss), 0)
      << cuvae_last_error();
  return out;
}

inline void ExpectBitwise(const ObjRun &a, const ObjRun &b, const std::string &what) {
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

}  // namespace family_ref
