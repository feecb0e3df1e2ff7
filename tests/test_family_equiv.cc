// The model family (docs/MATH.md sections 4-6) on the CPU, the checks besides the gradient checks of
// tests/test_family_gradcheck.cc: bitwise equivalences between members of the family; the config keys' cross
// checks; the CPU backend's data noise (dynamic binarization, corruption); and the conditional model's labels in
// the CPU backend (gathered per step; refused when missing or out of range). The shared fixture: tests/family_ref.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "cuvae/rng.h"
#include "family_ref.h"
#include "test_util.h"

namespace {

using namespace family_ref;

// ---- equivalences ----------------------------------------------------------------------------------------------

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
    const cuvae_objective_spec iwae = {CUVAE_OBJ_IWAE, 1, CUVAE_KL_ANALYTIC, 1.0f, 0.0f};
    const cuvae_objective_spec elbo = {CUVAE_OBJ_ELBO, 1, CUVAE_KL_SAMPLED, 1.0f, 0.0f};
    const ObjRun a = RunObjective(pr, iwae, pr.eps.data(), c.B), b = RunObjective(pr, elbo, pr.eps.data(), c.B);
    ExpectBitwise(a, b, std::string(c.name) + " iwae(1) vs elbo(1, sampled)");
    // ...and both are a different number from the analytic-KL ELBO (the sampled KL is its own estimator).
    const cuvae_objective_spec ana = {CUVAE_OBJ_ELBO, 1, CUVAE_KL_ANALYTIC, 1.0f, 0.0f};
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
// the rounding of each output. Bound, |mean - recon_L| <= atol + rtol |mean|: each run's decoder output o errs by
// <= P u M_o, P = sum over the decoder's dense layers of (K + 1) (GEMM any order plus bias add, Higham 3.1; <= 3
// layers of <= 6 terms here: P <= 18), M_o = the decoder chain evaluated on |W|, |h|, |b|; the two runs differ by
// twice that, and each per-element term t moves by |dt/do| |do| plus its own roundings, <= 18u t twice (the
// Bernoulli count of test_math's BernoulliTermTol; the Gaussian terms need fewer); the double sums in another order
// add ~1e-16. So |diff| <= (1/BL) sum [36u |dt/do| M_o + 36u t] <= 72u |mean| = 4.3e-6 |mean| under the condition
// sum |dt/do| M_o <= recon (gradient times magnitude no larger than the non-negative loss itself, true for these
// O(1) weights). Measured on every core: 0 (the kernels here sum each output in the same order whatever the row
// count); the tolerance is the derived 72u relative: a sample weighted wrong moves the mean by
// >= 1/L = 20% of a row's share. The KL (closed form, from mu and lv only) is bitwise that of one sample.
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
    EXPECT_NEAR(multi.loss.recon, mean, 72 * std::ldexp(1.0, -24) * std::fabs(mean)) << c.name;
    // objective = recon + beta kl in double (vae_cpu.c), the expression written here: equal but for one double
    // rounding should the compiler fuse this multiply-add: <= 2^-53 (|recon| + |beta kl|).
    EXPECT_NEAR(multi.loss.objective, multi.loss.recon + (double)c.beta * multi.loss.kl,
                std::ldexp(1.0, -53) * (std::fabs(multi.loss.recon) + std::fabs(c.beta * multi.loss.kl)))
        << c.name;
  }
}

// ---- config: the family keys' cross checks ---------------------------------------------------------------------

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
      {{"model.likelihood=bernoulli", "data.dequantize=uniform"}, "dequantize"},
      {{"model.likelihood=gaussian", "train.objective=ae", "data.dequantize=uniform"}, "dequantize"},
      {{"model.likelihood=gaussian", "model.min_variance=1e-4"}, "min_variance"},
      {{"model.likelihood=bernoulli", "model.min_variance=1e-4"}, "min_variance"},
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
      {"model.conditional=true", "model.classes=3", "train.objective=iwae", "train.samples=5"},
      {"model.likelihood=gaussian", "data.dequantize=uniform"},
      {"model.likelihood=gaussian", "data.dequantize=uniform", "train.objective=iwae", "train.samples=5"},
      {"model.likelihood=gaussian", "model.gaussian_variance=learned_per_dim", "model.min_variance=1e-4",
       "data.dequantize=uniform"},
      {"model.likelihood=gaussian", "model.gaussian_variance=learned_shared", "model.min_variance=1e-4"},
  };
  for (const auto &g : good) {
    std::string msg, what;
    for (const char *s : g) what += std::string(s) + " ";
    EXPECT_EQ(FinalizeWith(g, &msg), 0) << what << ": " << msg;
  }
  cuvae_config c;  // a conditional model has at least 2 classes
  BaseConfig(&c);
  cuvae_clear_error();
  EXPECT_EQ(cuvae_config_set(&c, "model.classes=1"), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("classes"), std::string::npos) << cuvae_last_error();
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
                          "train.beta=0.3", "train.beta_warmup_steps=250", "model.conditional=true",
                          "model.classes=4"})
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
    EXPECT_EQ(d.conditional, 1);
    EXPECT_EQ(d.classes, 4);
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

// ---- the CPU backend's data noise ------------------------------------------------------------------------------

struct BackendSetup {
  int N = 20, D = 7, B = 5;
  std::vector<float> x;
  std::vector<int32_t> labels;  // conditional: row i has class (i * 7) % 3
  cuvae_dataset ds = {};
  cuvae_config cfg;
  cuvae_model m;
  std::vector<uint32_t> rows;
};

void SetupBackend(BackendSetup *s, const char *binarize, const char *objective, const char *corrupt,
                  bool conditional = false) {
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
  if (conditional) {
    ASSERT_EQ(cuvae_config_set(&s->cfg, "model.conditional=true"), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_config_set(&s->cfg, "model.classes=3"), 0) << cuvae_last_error();
    s->labels.resize(s->N);
    for (int i = 0; i < s->N; i++) s->labels[i] = (i * 7) % 3;
    s->ds.labels = s->labels.data();
  }
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
// (2t + 1) * stride(B*D), eps from the training stream at t * stride(B*Z), initial parameters; a conditional
// model's labels those of the batch's rows.
cuvae_loss ManualStep(const BackendSetup &s, int64_t t, std::vector<float> *xb_out) {
  const size_t nx = (size_t)s.B * s.D, nz = (size_t)s.B * s.m.latent;
  std::vector<float> xb(nx), xin(nx), u(cuvae_noise_stride(nx)), eps(cuvae_noise_stride(nz));
  std::vector<int32_t> yb;
  for (int b = 0; b < s.B; b++) {
    for (int d = 0; d < s.D; d++) xb[b * s.D + d] = s.x[s.rows[b] * s.D + d];
    if (!s.labels.empty()) yb.push_back(s.ds.labels[s.rows[b]]);
  }
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
                                 eps.data(), yb.empty() ? nullptr : yb.data(), 0, nullptr, nullptr, nullptr};
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

// ---- the conditional model's labels in the CPU backend ---------------------------------------------------------

// A conditional step of the CPU backend is the documented recipe with the labels of the step's rows, bit for bit;
// other labels in the training set give another step.
TEST(FamilyBackend, ConditionalStepReadsTheRowsLabels) {
  for (const char *objective : {"elbo", "ae"}) {
    BackendSetup s;
    SetupBackend(&s, "none", objective, "none", true);
    if (HasFatalFailure()) return;
    EXPECT_EQ(s.m.cond, 3u);
    Backend be = MakeBackend(s);
    ASSERT_NE(be, nullptr) << cuvae_last_error();
    cuvae_step_result r;
    ASSERT_EQ(cuvae_backend_step(be.get(), s.rows.data(), s.B, 2, &r), 0) << cuvae_last_error();
    const cuvae_loss manual = ManualStep(s, 2, nullptr);
    EXPECT_EQ(0, std::memcmp(&manual.objective, &r.loss.objective, sizeof(double)))
        << objective << ": " << manual.objective << " vs " << r.loss.objective;
    // Another label on one of the step's rows: another objective.
    BackendSetup s2;
    SetupBackend(&s2, "none", objective, "none", true);
    if (HasFatalFailure()) return;
    s2.labels[s2.rows[2]] = (s2.labels[s2.rows[2]] + 1) % 3;
    Backend be2 = MakeBackend(s2);
    ASSERT_NE(be2, nullptr) << cuvae_last_error();
    cuvae_step_result r2;
    ASSERT_EQ(cuvae_backend_step(be2.get(), s2.rows.data(), s2.B, 2, &r2), 0) << cuvae_last_error();
    EXPECT_NE(r2.loss.objective, r.loss.objective) << objective;
    EXPECT_EQ(ManualStep(s2, 2, nullptr).objective, r2.loss.objective) << objective;
    // encode (one batch of B rows) is cuvae_cpu_encode with the labels and the backend's parameters.
    std::vector<float> p(s2.m.n_params), mulv((size_t)s2.B * 2 * s2.m.latent);
    ASSERT_EQ(be2->get_state(be2.get(), p.data(), nullptr, nullptr), 0);
    Workspace ws = MakeWs(s2.m, s2.B);
    ASSERT_NE(ws, nullptr);
    for (size_t start : {0, 5, 10}) {
      const float *x = s2.x.data() + start * s2.D;
      ASSERT_EQ(be2->encode(be2.get(), x, s2.labels.data() + start, s2.B, mulv.data()), 0) << cuvae_last_error();
      const float *ref = cuvae_cpu_encode(&s2.m, ws.get(), p.data(), x, s2.labels.data() + start, s2.B);
      EXPECT_EQ(0, std::memcmp(ref, mulv.data(), mulv.size() * sizeof(float))) << objective << " rows " << start;
    }
  }
}

// Labels that are missing (NULL) or outside 0..C-1 are refused, with a message, by cuvae_backend_check_labels and
// by every entry of the CPU backend that reads them; an unconditional model ignores them.
TEST(FamilyBackend, ConditionalRefusesMissingOrOutOfRangeLabels) {
  BackendSetup s;
  SetupBackend(&s, "none", "elbo", "none", true);
  if (HasFatalFailure()) return;
  const auto refused = [](int rc, const std::vector<const char *> &words, const std::string &what) {
    EXPECT_EQ(rc, -1) << what;
    const std::string msg = cuvae_last_error();
    for (const char *w : words) EXPECT_NE(msg.find(w), std::string::npos) << what << ": '" << msg << "' lacks " << w;
    cuvae_clear_error();
  };
  const std::vector<int32_t> good = {0, 1, 2, 2}, neg = {0, 1, -1, 2}, big = {0, 3, 1, 2};
  EXPECT_EQ(cuvae_backend_check_labels(&s.m, good.data(), good.size(), "test"), 0) << cuvae_last_error();
  refused(cuvae_backend_check_labels(&s.m, nullptr, 4, "test set"), {"test set", "labels"}, "NULL");
  refused(cuvae_backend_check_labels(&s.m, neg.data(), neg.size(), "test set"), {"test set", "-1", "row 2"}, "-1");
  refused(cuvae_backend_check_labels(&s.m, big.data(), big.size(), "test set"), {"test set", "3", "row 1"}, "3");
  BackendSetup u;  // unconditional: labels are not read, NULL is fine
  SetupBackend(&u, "none", "elbo", "none");
  if (HasFatalFailure()) return;
  EXPECT_EQ(cuvae_backend_check_labels(&u.m, nullptr, 4, "test"), 0);
  EXPECT_EQ(cuvae_backend_check_labels(&u.m, big.data(), big.size(), "test"), 0);

  Backend be = MakeBackend(s);
  ASSERT_NE(be, nullptr) << cuvae_last_error();
  const size_t Z = s.m.latent;
  std::vector<float> mulv(4 * 2 * Z), z(4 * Z, 0.5f), mean(4 * (size_t)s.D);
  refused(be->encode(be.get(), s.x.data(), nullptr, 4, mulv.data()), {"encode", "labels"}, "encode NULL");
  refused(be->encode(be.get(), s.x.data(), neg.data(), 4, mulv.data()), {"encode", "-1"}, "encode -1");
  refused(be->encode(be.get(), s.x.data(), big.data(), 4, mulv.data()), {"encode", "3"}, "encode 3");
  refused(be->decode(be.get(), z.data(), nullptr, 4, mean.data()), {"decode", "labels"}, "decode NULL");
  refused(be->decode(be.get(), z.data(), big.data(), 4, mean.data()), {"decode", "3"}, "decode 3");
  EXPECT_EQ(be->encode(be.get(), s.x.data(), good.data(), 4, mulv.data()), 0) << cuvae_last_error();
  EXPECT_EQ(be->decode(be.get(), z.data(), good.data(), 4, mean.data()), 0) << cuvae_last_error();
  // Data sets without labels, or with a label out of range.
  cuvae_dataset bare = s.ds;
  bare.labels = nullptr;
  cuvae_loss l;
  std::vector<double> lp(s.N);
  refused(be->evaluate(be.get(), &bare, 5, &l), {"evaluate", "labels"}, "evaluate");
  refused(be->iwae(be.get(), &bare, 3, 5, lp.data()), {"labels"}, "iwae");
  std::vector<int32_t> bad_labels = s.labels;
  bad_labels[7] = 5;
  cuvae_dataset bad = s.ds;
  bad.labels = bad_labels.data();
  refused(be->evaluate(be.get(), &bad, 5, &l), {"evaluate", "5", "row 7"}, "evaluate out of range");
  EXPECT_EQ(be->evaluate(be.get(), &s.ds, 5, &l), 0) << cuvae_last_error();
  cuvae_backend *none = cuvae_backend_cpu_create(&s.m, &s.cfg, &bare, nullptr);
  EXPECT_EQ(none, nullptr);
  if (none) none->destroy(none);
  refused(-1, {"training set", "labels"}, "create without labels");
}

}  // namespace
