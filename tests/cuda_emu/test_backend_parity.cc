// The CUDA backend (src/backend_cuda.c, built against the emulation) against the CPU reference backend: the same
// model, data, row orders and noise give the same losses, parameters and Adam moments within stated tolerances.
//
// Where the two differ (and so the tolerances):
// - GEMMs: cuBLAS's column-major calls vs cblas row-major calls may sum the K products in another order: a
//   relative ~K * 2^-24 per output (K <= 32 here: ~2e-6), per layer.
// - reductions: the CPU sums per-row losses, bias gradients and ||g||^2 in double / row order; the kernels sum
//   in float with a fixed tree: relative ~log2(n) * 2^-24 of the sum of |terms|.
// - elementwise exp/log/tanh: a few ulp.
// So one step's loss agrees to ~1e-6 relative. Parameters after one Adam step: the update is
// lr * m_hat / (sqrt(v_hat) + eps) = lr * g / (|g| + eps), insensitive to relative errors in g except where |g|
// is near eps (1e-8); a relative gradient error r moves a parameter by at most ~lr * r: 1e-3 * 1e-5 = 1e-8.
// Over 20 steps the differences feed back through the parameters (growing each step), so the 20-step checks
// use looser bounds: loss rtol 1e-4, parameters atol 2e-5 (2% of one step's lr-sized move), moments rtol 1e-3
// (with an atol scaled to the moment's typical size). The measured maxima are printed for the record.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "test_util.h"

namespace {

struct Case {
  const char *name;
  int D, n_hidden, h0, h1, Z, B, N, steps;
  cuvae_likelihood lik;
  cuvae_activation act;
  float clip;
};

void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

struct Fixture {
  std::vector<float> x;
  cuvae_dataset ds = {};
  cuvae_config cfg;
  cuvae_model m;
  explicit Fixture(const Case &c) {
    x = cuvae_test::synthetic_data(c.N, c.D, 7);
    ds.n = c.N;
    ds.dim = c.D;
    ds.rows = 1;
    ds.cols = c.D;
    ds.x = x.data();
    cuvae_config_defaults(&cfg);
    cfg.n_hidden = c.n_hidden;
    cfg.hidden[0] = c.h0;
    cfg.hidden[1] = c.h1;
    cfg.latent = c.Z;
    cfg.likelihood = c.lik;
    cfg.sigma = 0.5f;
    cfg.activation = c.act;
    cfg.batch_size = c.B;
    cfg.eval_batch_size = c.B + 5;  // a partial last batch, and offsets that differ from the training ones
    cfg.seed = 1234;
    cfg.threads = 1;
    cfg.clip_norm = c.clip;
    cfg.lr = 1e-3f;
    EXPECT_EQ(cuvae_model_build(&m, c.D, &cfg), 0) << cuvae_last_error();
  }
};

// Rows of training step t: epoch t / (N/B) of cuvae_shuffle, consecutive chunk of B.
std::vector<uint32_t> rows_of(const Case &c, uint64_t seed, int64_t t) {
  const int per_epoch = c.N / c.B;
  std::vector<uint32_t> perm(c.N);
  cuvae_shuffle(perm.data(), c.N, seed, t / per_epoch);
  const int start = (int)(t % per_epoch) * c.B;
  return std::vector<uint32_t>(perm.begin() + start, perm.begin() + start + c.B);
}

struct State {
  std::vector<float> p, m, v;
};
State state_of(cuvae_backend *be, size_t n) {
  State s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  EXPECT_EQ(be->get_state(be, s.p.data(), s.m.data(), s.v.data()), 0) << cuvae_last_error();
  return s;
}

// max |a - b| over elements, and whether all satisfy |a - b| <= atol + rtol |a|.
double max_diff(const std::vector<float> &a, const std::vector<float> &b, double atol, double rtol, bool *ok) {
  double worst = 0.0;
  *ok = true;
  for (size_t i = 0; i < a.size(); i++) {
    const double d = std::fabs((double)a[i] - (double)b[i]);
    worst = std::max(worst, d);
    if (!(d <= atol + rtol * std::fabs((double)a[i]))) *ok = false;
  }
  return worst;
}

double max_abs(const std::vector<float> &a) {
  double r = 0.0;
  for (float f : a) r = std::max(r, (double)std::fabs(f));
  return r;
}

void expect_state_close(const State &cpu, const State &gpu, double p_atol, const char *when) {
  bool ok;
  const double dp = max_diff(cpu.p, gpu.p, p_atol, 0.0, &ok);
  EXPECT_TRUE(ok) << when << ": parameters differ by up to " << dp;
  // Moments: m ~ g, v ~ g^2; relative 1e-3 plus an absolute floor of 1e-4 of the largest moment.
  const double dm = max_diff(cpu.m, gpu.m, 1e-4 * max_abs(cpu.m), 1e-3, &ok);
  EXPECT_TRUE(ok) << when << ": Adam m differs by up to " << dm;
  const double dv = max_diff(cpu.v, gpu.v, 1e-4 * max_abs(cpu.v), 1e-3, &ok);
  EXPECT_TRUE(ok) << when << ": Adam v differs by up to " << dv;
  std::printf("[%s] max |dp| %.3g  |dm| %.3g  |dv| %.3g\n", when, dp, dm, dv);
}

// Steps [t0, t1) on both backends; per-step losses and gradient norms compared.
void run_both(const Case &c, cuvae_backend *cpu, cuvae_backend *gpu, uint64_t seed, int64_t t0, int64_t t1) {
  double worst_loss = 0.0, worst_norm = 0.0;
  for (int64_t t = t0; t < t1; t++) {
    const std::vector<uint32_t> rows = rows_of(c, seed, t);
    cuvae_step_result rc, rg;
    ASSERT_EQ(cpu->train_step(cpu, rows.data(), c.B, t, &rc), 0) << cuvae_last_error();
    ASSERT_EQ(gpu->train_step(gpu, rows.data(), c.B, t, &rg), 0) << cuvae_last_error();
    // Step t's loss is computed from parameters that already carry t steps of drift: 1e-6 relative at t = 0
    // (see the file comment), allowed 1e-4 relative for all 20 steps.
    const double dl = std::fabs(rc.loss.nelbo - rg.loss.nelbo);
    EXPECT_LE(dl, 1e-5 + 1e-4 * std::fabs(rc.loss.nelbo)) << c.name << " step " << t;
    EXPECT_LE(std::fabs(rc.loss.kl - rg.loss.kl), 1e-5 + 1e-4 * std::fabs(rc.loss.kl)) << c.name << " step " << t;
    // ||g|| from a float sum of squares vs a double one, of slightly different gradients.
    const double dn = std::fabs(rc.grad_norm - rg.grad_norm);
    EXPECT_LE(dn, 1e-5 + 1e-3 * rc.grad_norm) << c.name << " step " << t;
    if (t == 0 && c.clip > 0) {
      EXPECT_GT(rc.grad_norm, c.clip) << "the case must actually clip";
    }
    worst_loss = std::max(worst_loss, dl / std::max(1.0, std::fabs(rc.loss.nelbo)));
    worst_norm = std::max(worst_norm, dn / std::max(1e-30, rc.grad_norm));
  }
  std::printf("[%s steps %lld..%lld] max rel |dloss| %.3g  max rel |d||g||| %.3g\n", c.name, (long long)t0,
              (long long)t1 - 1, worst_loss, worst_norm);
}

class Parity : public ::testing::TestWithParam<Case> {};

TEST_P(Parity, TrainingStepsAgreeWithTheCpuBackend) {
  const Case c = GetParam();
  Fixture f(c);
  cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds);
  ASSERT_NE(cpu, nullptr) << cuvae_last_error();
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  EXPECT_STREQ(gpu->name, "cuda");
  const size_t n = f.m.n_params;
  {  // Same initial state, bit for bit (cuvae_model_init on the host, copied up).
    const State a = state_of(cpu, n), b = state_of(gpu, n);
    EXPECT_EQ(a.p, b.p);
    EXPECT_EQ(a.m, b.m);
    EXPECT_EQ(a.v, b.v);
  }
  run_both(c, cpu, gpu, f.cfg.seed, 0, 1);
  // After one step: the parameter move is lr * g / (|g| + eps); relative gradient errors ~1e-5 move it by
  // ~lr * 1e-5 = 1e-8; 1e-6 leaves room for the few gradients near eps.
  expect_state_close(state_of(cpu, n), state_of(gpu, n), 1e-6, "after 1 step");
  run_both(c, cpu, gpu, f.cfg.seed, 1, c.steps);
  expect_state_close(state_of(cpu, n), state_of(gpu, n), 2e-5, "after all steps");

  // evaluate(): the evaluation noise stream, partial last batch.
  cuvae_loss ec, eg;
  ASSERT_EQ(cpu->evaluate(cpu, &f.ds, f.cfg.eval_batch_size, &ec), 0) << cuvae_last_error();
  ASSERT_EQ(gpu->evaluate(gpu, &f.ds, f.cfg.eval_batch_size, &eg), 0) << cuvae_last_error();
  EXPECT_LE(std::fabs(ec.nelbo - eg.nelbo), 1e-5 + 1e-4 * std::fabs(ec.nelbo));
  EXPECT_LE(std::fabs(ec.kl - eg.kl), 1e-5 + 1e-4 * std::fabs(ec.kl));
  std::printf("[%s] evaluate: cpu %.9g cuda %.9g (diff %.3g)\n", c.name, ec.nelbo, eg.nelbo,
              std::fabs(ec.nelbo - eg.nelbo));
  cpu->destroy(cpu);
  gpu->destroy(gpu);
}

INSTANTIATE_TEST_SUITE_P(
    Models, Parity,
    ::testing::Values(Case{"bernoulli", 30, 2, 12, 10, 3, 32, 256, 20, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f},
                      Case{"gaussian_tanh_clip", 16, 2, 12, 10, 3, 32, 256, 20, CUVAE_LIK_GAUSSIAN, CUVAE_ACT_TANH,
                           1.0f},
                      Case{"z1000", 8, 1, 6, 0, 1000, 4, 16, 10, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f}),
    [](const ::testing::TestParamInfo<Case> &i) { return std::string(i.param.name); });

const Case kSmall{"small", 16, 2, 12, 10, 3, 32, 256, 10, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f};

TEST(ParityState, GetSetRoundTripIsExact) {
  Fixture f(kSmall);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds);
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const size_t n = f.m.n_params;
  State s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  for (size_t i = 0; i < n; i++) {
    s.p[i] = 0.001f * (float)((i * 37) % 101) - 0.05f;
    s.m[i] = 1e-4f * (float)(i % 13);
    s.v[i] = 1e-6f * (float)(i % 7);
  }
  ASSERT_EQ(gpu->set_state(gpu, s.p.data(), s.m.data(), s.v.data()), 0) << cuvae_last_error();
  const State back = state_of(gpu, n);
  EXPECT_EQ(back.p, s.p);
  EXPECT_EQ(back.m, s.m);
  EXPECT_EQ(back.v, s.v);
  gpu->destroy(gpu);
}

// A checkpoint-like resume across backends: 5 CPU steps, the state moved into the CUDA backend, 5 more steps on
// each; the two continuations agree (the device's Adam step counter is set from the step argument).
TEST(ParityState, CpuStateResumesOnCuda) {
  Fixture f(kSmall);
  cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds);
  ASSERT_NE(cpu, nullptr) << cuvae_last_error();
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const size_t n = f.m.n_params;
  for (int64_t t = 0; t < 5; t++) {
    const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, t);
    cuvae_step_result r;
    ASSERT_EQ(cpu->train_step(cpu, rows.data(), kSmall.B, t, &r), 0) << cuvae_last_error();
  }
  const State mid = state_of(cpu, n);
  ASSERT_EQ(gpu->set_state(gpu, mid.p.data(), mid.m.data(), mid.v.data()), 0) << cuvae_last_error();
  run_both(kSmall, cpu, gpu, f.cfg.seed, 5, 10);
  expect_state_close(state_of(cpu, n), state_of(gpu, n), 1e-5, "resumed at step 5, after step 10");
  cpu->destroy(cpu);
  gpu->destroy(gpu);
}

// A non-finite loss fails the step with a message naming it, and leaves the state unchanged.
TEST(ParityState, NonFiniteLossFailsAndKeepsTheState) {
  Fixture f(kSmall);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds);
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const size_t n = f.m.n_params;
  State s = state_of(gpu, n);
  s.p[f.m.dec[f.m.n_dec - 1].b] = NAN;  // one output bias: the reconstruction term becomes NaN
  ASSERT_EQ(gpu->set_state(gpu, s.p.data(), s.m.data(), s.v.data()), 0);
  const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, 2);
  cuvae_step_result r;
  EXPECT_EQ(gpu->train_step(gpu, rows.data(), kSmall.B, 2, &r), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("step 3"), std::string::npos) << cuvae_last_error();
  const State after = state_of(gpu, n);
  EXPECT_EQ(std::memcmp(after.p.data(), s.p.data(), n * sizeof(float)), 0);  // NaN != NaN: compare bytes
  EXPECT_EQ(after.m, s.m);
  EXPECT_EQ(after.v, s.v);
  // Rows outside the data set and oversized batches are refused.
  std::vector<uint32_t> bad(rows);
  bad[0] = (uint32_t)kSmall.N;
  EXPECT_EQ(gpu->train_step(gpu, bad.data(), kSmall.B, 0, &r), -1);
  gpu->destroy(gpu);
}

// [train] precision = tf32: cuBLAS's TF32 math rounds the GEMM inputs to 10 mantissa bits (relative error up to
// 2^-11 per input, so up to ~2^-10 per product); the first step's loss then differs from fp32 by far less than
// 1e-2 relative (it sums many such products with mixed signs), and it must differ at all (TF32 is in effect).
TEST(ParityState, Tf32PrecisionRoundsTheGemms) {
  Fixture f(kSmall);
  cuvae_config tf32_cfg = f.cfg;  // the backend keeps a pointer to its config
  tf32_cfg.precision = CUVAE_PRECISION_TF32;
  cuvae_backend *fp32 = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds);
  cuvae_backend *tf32 = cuvae_backend_cuda_create(&f.m, &tf32_cfg, &f.ds);
  ASSERT_NE(fp32, nullptr) << cuvae_last_error();
  ASSERT_NE(tf32, nullptr) << cuvae_last_error();
  const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, 0);
  cuvae_step_result a, b;
  ASSERT_EQ(fp32->train_step(fp32, rows.data(), kSmall.B, 0, &a), 0) << cuvae_last_error();
  ASSERT_EQ(tf32->train_step(tf32, rows.data(), kSmall.B, 0, &b), 0) << cuvae_last_error();
  EXPECT_NE(a.loss.nelbo, b.loss.nelbo);
  EXPECT_LE(std::fabs(a.loss.nelbo - b.loss.nelbo), 1e-2 * std::fabs(a.loss.nelbo));
  fp32->destroy(fp32);
  tf32->destroy(tf32);
}

}  // namespace
