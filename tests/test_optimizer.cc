// The optimizer's shared rules (include/cuvae/optimizer.h, src/backend/optimizer.c) and the CPU backend's use of them:
// cuvae_lr_at_step for the constant, cosine and step schedules with warm-up (docs/MATH.md (7.3)) against closed forms
// at chosen steps, and cuvae_lr_horizon; cuvae_skip_rule_from and cuvae_skip_verdict (docs/MATH.md (7.4)) over
// sequences whose verdicts, state and window are worked out by hand, and the stopping message; then the CPU backend:
// the step's rate reaches Adam (a first step moves each weight by the warm-up's rate), a step whose gradient norm is
// above skip_grad_norm leaves the parameters, Adam's m and v and the EMA bit-identical, skipped steps do not count in
// Adam's t, the EMA follows docs/MATH.md (7.5) from the initial weights, and skip_limit skips in a row fail collect
// with a message naming skip_limit.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuda/skip_rule.h"
#include "cuvae/optimizer.h"
#include "test_util.h"

namespace {

const double kU = std::ldexp(1.0, -24);  // float's unit roundoff
const double kPi = 3.14159265358979323846;

// ulp of a positive float x: the gap to the next float above it.
double ulp(float x) { return (double)std::nextafterf(x, INFINITY) - (double)x; }

cuvae_config lr_config(cuvae_lr_schedule s, int64_t warmup) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  c.lr = 1e-3f;
  c.lr_schedule = s;
  c.lr_warmup_steps = warmup;
  return c;
}

// ---- the learning rate (docs/MATH.md (7.3)) -------------------------------------------------------------------

TEST(LrSchedule, ConstantIsLrAfterALinearWarmUp) {
  const cuvae_config none = lr_config(CUVAE_LR_CONSTANT, 0);
  for (int64_t s : {0, 1, 7, 100000}) EXPECT_EQ(1e-3f, cuvae_lr_at_step(&none, 1000, s)) << s;
  // W = 4: lr (s + 1) / 4 for s < 4. (s + 1) / 4 in {1/4, 1/2, 3/4, 1}: lr times it is exact in double (3 lr needs
  // 26 bits), rounded once to float: the float products below, which round the same exact value once.
  const cuvae_config w = lr_config(CUVAE_LR_CONSTANT, 4);
  EXPECT_EQ(1e-3f * 0.25f, cuvae_lr_at_step(&w, 1000, 0));
  EXPECT_EQ(1e-3f * 0.5f, cuvae_lr_at_step(&w, 1000, 1));
  EXPECT_EQ(1e-3f * 0.75f, cuvae_lr_at_step(&w, 1000, 2));
  EXPECT_EQ(1e-3f, cuvae_lr_at_step(&w, 1000, 3));
  EXPECT_EQ(1e-3f, cuvae_lr_at_step(&w, 1000, 4));
  EXPECT_EQ(1e-3f, cuvae_lr_at_step(&w, 1000, 999999));
  // W = 3: lr / 3 is not a float; the double quotient rounds once, as (float)((double)lr / 3) does.
  const cuvae_config w3 = lr_config(CUVAE_LR_CONSTANT, 3);
  EXPECT_EQ((float)((double)1e-3f / 3.0), cuvae_lr_at_step(&w3, 1000, 0));
}

// Cosine from lr = 1e-3 to lr_min = 1e-5 over steps W = 10 .. T = 110. The closed form in double at p = (s - W) /
// (T - W): lr_min + (lr - lr_min) (1 + cos(pi p)) / 2; the tested function computes the same quantity with other
// roundings (M_PI, its own cos), each a relative 2^-52 or so of a double, then rounds to float: the two floats are
// within 1 ulp of each other (the double values differ by far less than an ulp; only a rounding boundary between
// them separates the floats, by one ulp). At p = 0 and p >= 1 the values are exact: lr and lr_min.
TEST(LrSchedule, CosineDecaysToLrMinAfterTheWarmUp) {
  cuvae_config c = lr_config(CUVAE_LR_COSINE, 10);
  c.lr_min = 1e-5f;
  const int64_t T = 110;
  for (int64_t s = 0; s < 10; s++)  // the warm-up, by its formula: (s + 1) / 10 of lr, rounded once from double
    EXPECT_EQ((float)((double)c.lr * (double)(s + 1) / 10.0), cuvae_lr_at_step(&c, T, s));
  EXPECT_EQ(c.lr, cuvae_lr_at_step(&c, T, 9));   // the warm-up ends at lr ...
  EXPECT_EQ(c.lr, cuvae_lr_at_step(&c, T, 10));  // ... where the cosine starts
  for (int64_t s : {11, 35, 60, 85, 109}) {
    const double p = (double)(s - 10) / 100.0, lo = c.lr_min, hi = c.lr;
    const float want = (float)(lo + (hi - lo) * 0.5 * (1.0 + std::cos(kPi * p)));
    EXPECT_LE(std::fabs((double)cuvae_lr_at_step(&c, T, s) - want), ulp(want)) << s;
  }
  // Midway: (lr + lr_min) / 2 within the same 1 ulp (cos(pi / 2) is 6e-17 in double, not 0).
  const float mid = (float)(((double)c.lr + (double)c.lr_min) / 2.0);
  EXPECT_LE(std::fabs((double)cuvae_lr_at_step(&c, T, 60) - mid), ulp(mid));
  for (int64_t s : {110, 111, 5000}) EXPECT_EQ(c.lr_min, cuvae_lr_at_step(&c, T, s)) << s;
  float prev = c.lr;
  for (int64_t s = 10; s <= 120; s++) {  // non-increasing over the decay
    const float r = cuvae_lr_at_step(&c, T, s);
    EXPECT_LE(r, prev) << s;
    prev = r;
  }
  // A horizon inside the warm-up: straight to lr_min after it.
  EXPECT_EQ(c.lr_min, cuvae_lr_at_step(&c, 5, 10));
}

// Step decay: lr gamma^floor(s / 100), counted from step 0 (the warm-up does not shift it). gamma = 0.5: every power
// is exact. gamma = 0.1: pow in double of the float 0.1f, times lr, rounded to float; the closed form 0.1f^k lr
// computed by repeated double products differs by a few double roundings, so the floats are within 1 ulp.
TEST(LrSchedule, StepDecayMultipliesByGammaEveryDecaySteps) {
  cuvae_config c = lr_config(CUVAE_LR_STEP, 5);
  c.lr_decay_steps = 100;
  c.lr_gamma = 0.5f;
  EXPECT_EQ((float)((double)c.lr / 5.0), cuvae_lr_at_step(&c, 0, 0));  // warm-up: lr / 5, rounded once from double
  EXPECT_EQ(c.lr, cuvae_lr_at_step(&c, 0, 4));
  EXPECT_EQ(c.lr, cuvae_lr_at_step(&c, 0, 99));
  EXPECT_EQ(c.lr * 0.5f, cuvae_lr_at_step(&c, 0, 100));
  EXPECT_EQ(c.lr * 0.5f, cuvae_lr_at_step(&c, 0, 199));
  EXPECT_EQ(c.lr * 0.25f, cuvae_lr_at_step(&c, 0, 200));
  EXPECT_EQ(c.lr * 0.125f, cuvae_lr_at_step(&c, 0, 399));
  c.lr_gamma = 0.1f;
  double g = 1.0;
  for (int k = 0; k < 6; k++, g *= (double)0.1f) {
    const float want = (float)((double)c.lr * g);
    EXPECT_LE(std::fabs((double)cuvae_lr_at_step(&c, 0, 100 * k + 50) - want), ulp(want)) << k;
  }
}

TEST(LrSchedule, HorizonIsDecayStepsOrTheWholeRun) {
  cuvae_config c = lr_config(CUVAE_LR_COSINE, 0);
  c.epochs = 3;
  c.batch_size = 32;
  c.lr_decay_steps = 0;
  EXPECT_EQ(3 * (1000 / 32) - 1, cuvae_lr_horizon(&c, 1000));  // the last of 3 x 31 steps, 0-based
  c.max_steps = 10;                                            // does not move it
  EXPECT_EQ(92, cuvae_lr_horizon(&c, 1000));
  c.epochs = 1;
  EXPECT_EQ(0, cuvae_lr_horizon(&c, 20));  // no full batch: no steps (not -1)
  c.lr_decay_steps = 50;
  EXPECT_EQ(50, cuvae_lr_horizon(&c, 1000));
}

// ---- the skip rule (docs/MATH.md (7.4)) -------------------------------------------------------------------------

using cuvae_test::rule_of;

TEST(SkipRule, FromTheConfig) {
  const cuvae_skip_rule off = rule_of(0.0f, 0.0f, 100, 0, 10);
  EXPECT_EQ(0, off.active);
  EXPECT_EQ(0, off.window);
  const cuvae_skip_rule nf = rule_of(0.0f, 0.0f, 100, 1, 10);
  EXPECT_EQ(1, nf.active);
  EXPECT_EQ(0, nf.window);
  const cuvae_skip_rule above = rule_of(5.0f, 0.0f, 100, 0, 7);
  EXPECT_EQ(1, above.active);
  EXPECT_EQ(5.0f, above.above);
  EXPECT_EQ(7, above.limit);
  EXPECT_EQ(0, above.window);
  const cuvae_skip_rule z = rule_of(0.0f, 3.0f, 50, 0, 10);
  EXPECT_EQ(1, z.active);
  EXPECT_EQ(50, z.window);
  EXPECT_EQ(3.0f, z.zscore);
}

TEST(SkipVerdict, WithoutSkippingANonFiniteStepDivergesAndLeavesTheState) {
  const cuvae_skip_rule r = rule_of(0.0f, 0.0f, 100, 0, 10);
  cuvae_skip_state s = {3, 0, 0, 0};
  EXPECT_EQ(CUVAE_STEP_APPLY, cuvae_skip_verdict(&r, &s, nullptr, 1, 1e30));  // no threshold: any finite norm
  EXPECT_EQ(CUVAE_STEP_DIVERGED, cuvae_skip_verdict(&r, &s, nullptr, 0, 1.0));
  EXPECT_EQ(CUVAE_STEP_DIVERGED, cuvae_skip_verdict(&r, &s, nullptr, 0, NAN));
  EXPECT_EQ(3, s.skipped);
  EXPECT_EQ(0, s.in_a_row);
}

// skip_grad_norm = 2, skip_limit = 3: a norm equal to the threshold is applied (strictly above skips); two skips, an
// applied step (the run of skips resets), a non-finite step (skipped: skipping is on), two more: the third in a row
// returns SKIP_LIMIT. skipped counts every skip.
TEST(SkipVerdict, AboveThresholdSkipsAndTheLimitStops) {
  const cuvae_skip_rule r = rule_of(2.0f, 0.0f, 100, 0, 3);
  cuvae_skip_state s = {0, 0, 0, 0};
  struct {
    int finite;
    double norm;
    int verdict;
    int64_t skipped, in_a_row;
  } seq[] = {{1, 1.0, CUVAE_STEP_APPLY, 0, 0},     {1, 2.0, CUVAE_STEP_APPLY, 0, 0},
             {1, 2.0000001, CUVAE_STEP_SKIP, 1, 1}, {1, 50.0, CUVAE_STEP_SKIP, 2, 2},
             {1, 0.5, CUVAE_STEP_APPLY, 2, 0},     {0, 1.0, CUVAE_STEP_SKIP, 3, 1},
             {1, INFINITY, CUVAE_STEP_SKIP, 4, 2}, {1, 3.0, CUVAE_STEP_SKIP_LIMIT, 5, 3}};
  for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
    EXPECT_EQ(seq[i].verdict, cuvae_skip_verdict(&r, &s, nullptr, seq[i].finite, seq[i].norm)) << i;
    EXPECT_EQ(seq[i].skipped, s.skipped) << i;
    EXPECT_EQ(seq[i].in_a_row, s.in_a_row) << i;
    EXPECT_EQ(0, s.count) << "no z-score: no window";
  }
  const cuvae_skip_rule one = rule_of(2.0f, 0.0f, 100, 0, 1);  // skip_limit = 1: the first skip stops
  cuvae_skip_state s1 = {0, 0, 0, 0};
  EXPECT_EQ(CUVAE_STEP_SKIP_LIMIT, cuvae_skip_verdict(&one, &s1, nullptr, 1, 3.0));
}

// skip_zscore = 1 over a window of 4: the first 4 applied norms fill it whatever they are (10 included); then with
// the window {1, 2, 3, 4} (after the 10 is overwritten): mean 2.5, population sd sqrt(1.25) = 1.118, threshold
// 3.618: 3.7 is skipped (and stays out), 3.6 applied (entering slot pos); the ring overwrites the oldest slot.
TEST(SkipVerdict, ZScoreOverAFullWindowOfAppliedNorms) {
  const cuvae_skip_rule r = rule_of(0.0f, 1.0f, 4, 0, 10);
  ASSERT_EQ(4, r.window);
  cuvae_skip_state s = {0, 0, 0, 0};
  float w[4] = {0, 0, 0, 0};
  for (double n : {10.0, 2.0, 3.0, 4.0}) EXPECT_EQ(CUVAE_STEP_APPLY, cuvae_skip_verdict(&r, &s, w, 1, n)) << n;
  EXPECT_EQ(4, s.count);
  EXPECT_EQ(0, s.pos);
  // Window {10, 2, 3, 4}: mean 4.75, sd sqrt((5.25^2 + 2.75^2 + 1.75^2 + 0.75^2) / 4) = 3.11: threshold 7.86.
  EXPECT_EQ(CUVAE_STEP_APPLY, cuvae_skip_verdict(&r, &s, w, 1, 1.0));  // replaces the 10
  EXPECT_EQ(1.0f, w[0]);
  EXPECT_EQ(1, s.pos);
  EXPECT_EQ(CUVAE_STEP_SKIP, cuvae_skip_verdict(&r, &s, w, 1, 3.7));
  EXPECT_EQ(1, s.pos);  // a skipped norm does not enter
  EXPECT_EQ(2.0f, w[1]);
  EXPECT_EQ(CUVAE_STEP_APPLY, cuvae_skip_verdict(&r, &s, w, 1, 3.6));
  EXPECT_EQ(3.6f, w[1]);
  EXPECT_EQ(2, s.pos);
  EXPECT_EQ(4, s.count);
  EXPECT_EQ(1, s.skipped);
  EXPECT_EQ(0, s.in_a_row);
  // A non-finite norm is skipped under a z-score rule too, and does not enter the window.
  EXPECT_EQ(CUVAE_STEP_SKIP, cuvae_skip_verdict(&r, &s, w, 0, NAN));
  EXPECT_EQ(2, s.pos);
}

TEST(SkipVerdict, StoppingMessages) {
  const cuvae_skip_rule r = rule_of(2.0f, 0.0f, 100, 0, 4);
  char msg[256];
  cuvae_step_verdict_message(CUVAE_STEP_SKIP_LIMIT, &r, 17, 9.5, 1.25, msg, sizeof msg);
  const std::string lim(msg);
  EXPECT_NE(lim.find("step 17"), std::string::npos) << lim;
  EXPECT_NE(lim.find("skip_limit"), std::string::npos) << lim;
  EXPECT_NE(lim.find("4 updates in a row"), std::string::npos) << lim;
  cuvae_step_verdict_message(CUVAE_STEP_DIVERGED, &r, 5, 1.0, NAN, msg, sizeof msg);
  EXPECT_NE(std::string(msg).find("loss is not finite"), std::string::npos) << msg;
  cuvae_step_verdict_message(CUVAE_STEP_DIVERGED, &r, 5, NAN, 2.0, msg, sizeof msg);
  EXPECT_NE(std::string(msg).find("gradient is not finite"), std::string::npos) << msg;
}

// ---- the CPU backend ------------------------------------------------------------------------------------------

// A small Bernoulli VAE on 40 synthetic rows (D = 9, hidden 6, Z = 3, batches of 8), the config open to tweaks.
struct SmallRun {
  static constexpr int N = 40, D = 9, B = 8;
  std::vector<float> x = cuvae_test::synthetic_data(N, D, 5);
  cuvae_dataset ds = {};
  cuvae_config cfg;
  cuvae_model m;
  SmallRun() {
    ds.n = N;
    ds.dim = D;
    ds.rows = 1;
    ds.cols = D;
    ds.x = x.data();
    cuvae_config_defaults(&cfg);
    cfg.n_hidden = 1;
    cfg.hidden[0] = 6;
    cfg.latent = 3;
    cfg.batch_size = B;
    cfg.eval_batch_size = B;
    cfg.seed = 11;
    cfg.threads = 1;
    cfg.lr = 1e-3f;
  }
  cuvae_backend *create() {
    EXPECT_EQ(cuvae_model_build(&m, D, &cfg), 0) << cuvae_last_error();
    cuvae_backend *be = cuvae_backend_cpu_create(&m, &cfg, &ds, nullptr);
    EXPECT_NE(be, nullptr) << cuvae_last_error();
    return be;
  }
  std::vector<uint32_t> rows(int64_t step) const {
    std::vector<uint32_t> r(B);
    for (int b = 0; b < B; b++) r[b] = (uint32_t)((step * B + 3 + 7 * b) % N);
    return r;
  }
};

struct Snapshot {
  std::vector<float> p, m, v, ema;
  cuvae_skip_state skip;
};

Snapshot snapshot(cuvae_backend *be, size_t n, bool ema) {
  Snapshot s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n), std::vector<float>(ema ? n : 0),
             {0, 0, 0, 0}};
  EXPECT_EQ(be->get_state(be, s.p.data(), s.m.data(), s.v.data()), 0) << cuvae_last_error();
  cuvae_extra_state x = {ema ? s.ema.data() : nullptr, {0, 0, 0, 0}, nullptr};
  EXPECT_EQ(be->get_extra_state(be, &x), 0) << cuvae_last_error();
  s.skip = x.skip;
  return s;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// |p1 - p0| of each weight with |g| > 1e-3 after Adam's first update (t = 1) from zero moments: m c1 = g and v c2 =
// g^2 up to the roundings of the two products, the bias corrections and the sqrt (~6u), so the move is
// lr |g| / (|g| + eps) (1 +- 6u): within lr (eps / |g| + 6u) <= lr 1.1e-5 of lr; p1 = fl(p0 - move) adds u |p1|.
void expect_first_update_moves_by(const std::vector<float> &p0, const std::vector<float> &p1,
                                  const std::vector<float> &g, float lr) {
  int checked = 0;
  for (size_t i = 0; i < p0.size(); i++) {
    if (!(std::fabs(g[i]) > 1e-3f)) continue;
    const double move = std::fabs((double)p1[i] - (double)p0[i]);
    ASSERT_LE(std::fabs(move - lr), lr * 1.1e-5 + kU * std::fabs(p1[i])) << "weight " << i;
    checked++;
  }
  EXPECT_GT(checked, 20);
}

// Warm-up over 4 steps: step 0's rate lr / 4 is what Adam applies (a constant lr would move 4x as far).
TEST(CpuOptimizer, TheStepsRateReachesAdam) {
  SmallRun r;
  r.cfg.lr_warmup_steps = 4;
  cuvae_backend *be = r.create();
  ASSERT_NE(be, nullptr);
  const size_t n = r.m.n_params;
  const Snapshot before = snapshot(be, n, false);
  cuvae_step_result res;
  ASSERT_EQ(cuvae_backend_step(be, r.rows(0).data(), SmallRun::B, 0, &res), 0) << cuvae_last_error();
  EXPECT_EQ(r.cfg.lr * 0.25f, res.lr);
  EXPECT_EQ(0, res.skipped);
  std::vector<float> g(n);
  ASSERT_EQ(be->get_grad(be, g.data()), 0);
  expect_first_update_moves_by(before.p, snapshot(be, n, false).p, g, res.lr);
  be->destroy(be);
}

// The step's gradient norm, probed on a backend without skipping (same initial weights, rows and noise: the same
// norm, bit for bit), then skip_grad_norm at half of it: the step is skipped, and params, m, v and the EMA keep their
// bits; the result reports the step's rate, norm and loss. The probe's applied step does move all four.
TEST(CpuOptimizer, AStepAboveSkipGradNormChangesNothing) {
  SmallRun probe_run;
  probe_run.cfg.ema = 0.9f;
  cuvae_backend *probe = probe_run.create();
  ASSERT_NE(probe, nullptr);
  const size_t n = probe_run.m.n_params;
  const Snapshot p0 = snapshot(probe, n, true);
  EXPECT_TRUE(same_bits(p0.ema, p0.p)) << "the EMA starts at the initial weights";
  cuvae_step_result applied;
  ASSERT_EQ(cuvae_backend_step(probe, probe_run.rows(0).data(), SmallRun::B, 0, &applied), 0) << cuvae_last_error();
  EXPECT_EQ(0, applied.skipped);
  const Snapshot p1 = snapshot(probe, n, true);
  EXPECT_FALSE(same_bits(p0.p, p1.p));
  EXPECT_FALSE(same_bits(p0.m, p1.m));
  EXPECT_FALSE(same_bits(p0.v, p1.v));
  EXPECT_FALSE(same_bits(p0.ema, p1.ema));
  probe->destroy(probe);

  SmallRun run;
  run.cfg.ema = 0.9f;
  run.cfg.skip_grad_norm = (float)(0.5 * applied.grad_norm);
  cuvae_backend *be = run.create();
  ASSERT_NE(be, nullptr);
  const Snapshot before = snapshot(be, n, true);
  cuvae_step_result res;
  ASSERT_EQ(cuvae_backend_step(be, run.rows(0).data(), SmallRun::B, 0, &res), 0) << cuvae_last_error();
  EXPECT_EQ(1, res.skipped);
  EXPECT_EQ(applied.grad_norm, res.grad_norm);
  EXPECT_EQ(applied.loss.nelbo, res.loss.nelbo);
  EXPECT_EQ(run.cfg.lr, res.lr);
  const Snapshot after = snapshot(be, n, true);
  EXPECT_TRUE(same_bits(before.p, after.p));
  EXPECT_TRUE(same_bits(before.m, after.m));
  EXPECT_TRUE(same_bits(before.v, after.v));
  EXPECT_TRUE(same_bits(before.ema, after.ema));
  EXPECT_EQ(1, after.skip.skipped);
  EXPECT_EQ(1, after.skip.in_a_row);
  be->destroy(be);
}

// Adam's t counts applied updates: with 5 skips recorded (set_extra_state), step 5 from zero moments is Adam's first
// update (t = 1), moving each weight by lr; were t = 6 the bias corrections would shrink the move to ~0.52 lr.
TEST(CpuOptimizer, SkippedStepsDoNotCountInAdamsT) {
  SmallRun run;
  run.cfg.skip_nonfinite = 1;  // skipping on: the skip count is kept
  cuvae_backend *be = run.create();
  ASSERT_NE(be, nullptr);
  const size_t n = run.m.n_params;
  cuvae_extra_state x = {nullptr, {5, 0, 0, 0}, nullptr};
  ASSERT_EQ(be->set_extra_state(be, &x), 0) << cuvae_last_error();
  const Snapshot before = snapshot(be, n, false);
  cuvae_step_result res;
  ASSERT_EQ(cuvae_backend_step(be, run.rows(5).data(), SmallRun::B, 5, &res), 0) << cuvae_last_error();
  ASSERT_EQ(0, res.skipped);
  std::vector<float> g(n);
  ASSERT_EQ(be->get_grad(be, g.data()), 0);
  expect_first_update_moves_by(before.p, snapshot(be, n, false).p, g, run.cfg.lr);
  be->destroy(be);
}

// The EMA after 4 applied steps is ema_update_cpu applied to the weights after each step, from the initial weights
// (docs/MATH.md (7.5)): the same float operations, bit for bit.
TEST(CpuOptimizer, TheEmaFollowsTheWeights) {
  SmallRun run;
  run.cfg.ema = 0.75f;
  cuvae_backend *be = run.create();
  ASSERT_NE(be, nullptr);
  const size_t n = run.m.n_params;
  std::vector<float> e = snapshot(be, n, true).p;
  for (int64_t t = 0; t < 4; t++) {
    cuvae_step_result res;
    ASSERT_EQ(cuvae_backend_step(be, run.rows(t).data(), SmallRun::B, t, &res), 0) << cuvae_last_error();
    const Snapshot s = snapshot(be, n, true);
    ema_update_cpu(e.data(), s.p.data(), n, 0.75f);
    ASSERT_TRUE(same_bits(e, s.ema)) << "step " << t;
    ASSERT_FALSE(same_bits(s.p, s.ema));
  }
  // set_extra_state writes the EMA back, get_extra_state reads it.
  std::vector<float> mine(n, 0.125f);
  cuvae_extra_state x = {mine.data(), {0, 0, 0, 0}, nullptr};
  ASSERT_EQ(be->set_extra_state(be, &x), 0);
  EXPECT_TRUE(same_bits(mine, snapshot(be, n, true).ema));
  be->destroy(be);
}

// skip_grad_norm far below every norm and skip_limit = 3: steps 1 and 2 (1-based) are skipped and collected; the third
// in a row fails collect with a message naming the step and skip_limit, and changes nothing either. Enqueued
// together (3 train_steps, one collect), the same.
TEST(CpuOptimizer, SkipLimitInARowFailsCollect) {
  for (bool together : {false, true}) {
    SCOPED_TRACE(together ? "one collect" : "a collect per step");
    SmallRun run;
    run.cfg.skip_grad_norm = 1e-20f;
    run.cfg.skip_limit = 3;
    cuvae_backend *be = run.create();
    ASSERT_NE(be, nullptr);
    ASSERT_GE(be->max_pending, 3);
    const size_t n = run.m.n_params;
    const Snapshot before = snapshot(be, n, false);
    cuvae_step_result res[3];
    int got = 0;
    for (int64_t t = 0; t < 3; t++) {
      ASSERT_EQ(be->train_step(be, run.rows(t).data(), SmallRun::B, t), 0) << cuvae_last_error();
      if (together && t < 2) continue;
      const int rc = be->collect(be, res + (together ? 0 : t), &got);
      if (t < 2) {
        ASSERT_EQ(0, rc) << cuvae_last_error();
        ASSERT_EQ(1, got);
        EXPECT_EQ(1, res[t].skipped);
        continue;
      }
      EXPECT_EQ(-1, rc);
      const std::string err = cuvae_last_error();
      EXPECT_NE(err.find("step 3"), std::string::npos) << err;
      EXPECT_NE(err.find("skip_limit"), std::string::npos) << err;
      EXPECT_EQ(together ? 3 : 1, got);
    }
    for (const cuvae_step_result &q : res) EXPECT_EQ(1, q.skipped);
    const Snapshot after = snapshot(be, n, false);
    EXPECT_TRUE(same_bits(before.p, after.p));
    EXPECT_TRUE(same_bits(before.m, after.m));
    EXPECT_EQ(3, after.skip.skipped);
    be->destroy(be);
  }
}

}  // namespace
