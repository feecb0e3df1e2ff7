// The optimizer's training features on the CUDA backend (emulated, or native with label gpu) against the CPU backend,
// whole training steps on the same model, data, row orders and noise: the learning-rate schedule (cosine after a
// warm-up, its horizon from the training set, docs/MATH.md (7.3)), the EMA of the weights (docs/MATH.md (7.5)) and
// update skipping (docs/MATH.md (7.4)): the same steps skipped on both, each step's reported rate and skip flag, a
// skipped step leaving parameters, Adam's moments and the EMA unchanged on each backend, Adam's t counting applied
// updates only, the skip state in get_extra_state, skipping by z-score over the same window on both, and skip_limit
// skips in a row failing collect on the CUDA backend.
// Steps are enqueued one at a time and several before one collect (the trainer runs ahead: the device's per-step
// rates and verdicts must reach the right results).
//
// Tolerances are those of tests/cuda/test_backend_parity.cc (its file comment says why): losses 1e-5 + 1e-4 |loss|,
// gradient norm 1e-5 + 1e-3 ||g||, parameters 2e-5 after several steps, moments 1e-3 relative + 1e-4 of the largest.
// The rate is the host's cuvae_lr_at_step on both: equal bits. The EMA is a convex combination of the parameter
// iterates (e_k = d^k p_0 + sum_j (1 - d) d^(k-j) p_j), so it differs between the backends by at most the largest
// parameter difference along the way plus its own roundings (3u |e| per update, < 1e-7 here): the parameters' 2e-5.
// On each backend, its EMA is ema_update_cpu applied to its own weights after each step, bit for bit (the device's
// kernel performs the same float operations, test_kernel_ema.cu). A skip decision is the same on both when the norm
// is farther from the threshold than the norms' bound, which the skip test checks for every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/optimizer.h"
#include "parity_util.h"

namespace {

using namespace cuvae_parity;

const Case kOpt{"optimizer", 16, 2, 12, 10, 3, 32, 256, 12, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f};

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The EMA (n floats, or none) and the skip state of a backend.
struct Extra {
  std::vector<float> ema;
  cuvae_skip_state skip;
};
Extra extra_of(cuvae_backend *be, size_t n) {
  Extra x{std::vector<float>(n), {0, 0, 0, 0}};
  cuvae_extra_state st = {n ? x.ema.data() : nullptr, {0, 0, 0, 0}, nullptr};
  EXPECT_EQ(be->get_extra_state(be, &st), 0) << cuvae_last_error();
  x.skip = st.skip;
  return x;
}

// Steps [t0, t1) enqueued `ahead` at a time on each backend, then collected; the results in step order.
std::vector<cuvae_step_result> run_steps(cuvae_backend *be, const Case &c, uint64_t seed, int64_t t0, int64_t t1,
                                         int ahead) {
  std::vector<cuvae_step_result> out;
  for (int64_t t = t0; t < t1;) {
    const int64_t end = std::min(t1, t + ahead);
    for (; t < end; t++) {
      const std::vector<uint32_t> rows = rows_of(c, seed, t);
      EXPECT_EQ(be->train_step(be, rows.data(), c.B, t), 0) << be->name << " step " << t << ": " << cuvae_last_error();
    }
    std::vector<cuvae_step_result> got((size_t)ahead);
    int n = 0;
    EXPECT_EQ(be->collect(be, got.data(), &n), 0) << be->name << ": " << cuvae_last_error();
    out.insert(out.end(), got.begin(), got.begin() + n);
  }
  return out;
}

// Per-step results of the two backends: the same rate (bits) as the schedule's, the same skip flag, losses and
// norms within the parity bounds.
void expect_results_agree(const std::vector<cuvae_step_result> &rc, const std::vector<cuvae_step_result> &rg,
                          const cuvae_config &cfg, int64_t horizon, int64_t t0) {
  ASSERT_EQ(rc.size(), rg.size());
  for (size_t i = 0; i < rc.size(); i++) {
    const int64_t t = t0 + (int64_t)i;
    SCOPED_TRACE(testing::Message() << "step " << t);
    EXPECT_EQ(cuvae_lr_at_step(&cfg, horizon, t), rc[i].lr);
    EXPECT_EQ(rc[i].lr, rg[i].lr);
    EXPECT_EQ(rc[i].skipped, rg[i].skipped);
    EXPECT_LE(std::fabs(rc[i].loss.nelbo - rg[i].loss.nelbo), 1e-5 + 1e-4 * std::fabs(rc[i].loss.nelbo));
    EXPECT_LE(std::fabs(rc[i].loss.objective - rg[i].loss.objective), 1e-5 + 1e-4 * std::fabs(rc[i].loss.objective));
    EXPECT_LE(std::fabs(rc[i].grad_norm - rg[i].grad_norm), 1e-5 + 1e-3 * rc[i].grad_norm);
  }
}

struct Pair {
  Fixture f;
  cuvae_backend *cpu = nullptr, *gpu = nullptr;
  explicit Pair(void (*tweak)(cuvae_config *)) : f(kOpt, tweak) {
    cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
    EXPECT_NE(cpu, nullptr) << cuvae_last_error();
    gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
    EXPECT_NE(gpu, nullptr) << cuvae_last_error();
  }
  ~Pair() {
    if (cpu) cpu->destroy(cpu);
    if (gpu) gpu->destroy(gpu);
  }
};

// Cosine after 3 warm-up steps, lr_decay_steps = 0: the horizon is the run's last step, 1 epoch of 256 / 32 = 8
// steps, the last 0-based 7, so steps 0..2 rise to lr, 3..7 decay to lr_min, 8..10 stay there. Steps 0..3 one at a
// time, the rest 4 ahead of a collect.
TEST(OptimizerParity, CosineScheduleWithWarmUp) {
  Pair b([](cuvae_config *c) {
    c->lr_schedule = CUVAE_LR_COSINE;
    c->lr_warmup_steps = 3;
    c->lr_min = 1e-4f;
    c->lr_decay_steps = 0;
    c->epochs = 1;
    c->log_every = 4;
  });
  ASSERT_TRUE(b.cpu && b.gpu);
  const int64_t horizon = cuvae_lr_horizon(&b.f.cfg, (size_t)kOpt.N);
  ASSERT_EQ(7, horizon);
  std::vector<cuvae_step_result> rc = run_steps(b.cpu, kOpt, b.f.cfg.seed, 0, 4, 1);
  std::vector<cuvae_step_result> rg = run_steps(b.gpu, kOpt, b.f.cfg.seed, 0, 4, 1);
  const std::vector<cuvae_step_result> rc2 = run_steps(b.cpu, kOpt, b.f.cfg.seed, 4, 11, 4);
  const std::vector<cuvae_step_result> rg2 = run_steps(b.gpu, kOpt, b.f.cfg.seed, 4, 11, 4);
  rc.insert(rc.end(), rc2.begin(), rc2.end());
  rg.insert(rg.end(), rg2.begin(), rg2.end());
  ASSERT_EQ(11u, rg.size());
  expect_results_agree(rc, rg, b.f.cfg, horizon, 0);
  EXPECT_EQ((float)((double)b.f.cfg.lr / 3.0), rg[0].lr);  // the warm-up's first rate
  EXPECT_EQ(b.f.cfg.lr, rg[2].lr);
  EXPECT_LT(rg[5].lr, rg[4].lr);
  EXPECT_GT(rg[6].lr, b.f.cfg.lr_min);
  EXPECT_EQ(b.f.cfg.lr_min, rg[7].lr);  // the run's last step trains at lr_min
  EXPECT_EQ(b.f.cfg.lr_min, rg[10].lr);
  expect_state_close(state_of(b.cpu, b.f.m.n_params), state_of(b.gpu, b.f.m.n_params), 2e-5, "cosine, 11 steps");
}

// ema = 0.9: the EMA starts at the initial weights (bit for bit on both), follows each backend's own weights by
// docs/MATH.md (7.5) bit for bit, and the two EMAs agree within the parameters' bound.
TEST(OptimizerParity, EmaOfTheWeights) {
  Pair b([](cuvae_config *c) { c->ema = 0.9f; });
  ASSERT_TRUE(b.cpu && b.gpu);
  const size_t n = b.f.m.n_params;
  std::vector<float> mine[2] = {state_of(b.cpu, n).p, state_of(b.gpu, n).p};
  cuvae_backend *be[2] = {b.cpu, b.gpu};
  for (int k = 0; k < 2; k++) EXPECT_TRUE(same_bits(mine[k], extra_of(be[k], n).ema)) << be[k]->name;
  for (int64_t t = 0; t < 8; t++) {
    for (int k = 0; k < 2; k++) {
      const std::vector<cuvae_step_result> r = run_steps(be[k], kOpt, b.f.cfg.seed, t, t + 1, 1);
      ASSERT_EQ(1u, r.size());
      ema_update_cpu(mine[k].data(), state_of(be[k], n).p.data(), n, 0.9f);
      ASSERT_TRUE(same_bits(mine[k], extra_of(be[k], n).ema)) << be[k]->name << " step " << t;
    }
  }
  const std::vector<float> ec = extra_of(b.cpu, n).ema, eg = extra_of(b.gpu, n).ema;
  bool ok;
  const double de = max_diff(ec, eg, 2e-5, 0.0, &ok);
  EXPECT_TRUE(ok) << "the EMAs differ by up to " << de;
  EXPECT_FALSE(same_bits(ec, state_of(b.cpu, n).p));  // an average, not the weights
  std::printf("[ema] max |d ema| %.3g\n", de);
  expect_state_close(state_of(b.cpu, n), state_of(b.gpu, n), 2e-5, "ema, 8 steps");
}

void skip_config(cuvae_config *c) {
  c->ema = 0.5f;
  c->lr_warmup_steps = 2;
  c->log_every = 4;
  c->skip_limit = 1000;  // skipped steps do not train: the norms stay high, and many may be skipped in a row
}

// The gradient norms of steps [0, k) of the CPU backend without skipping (the probe).
std::vector<double> probe_norms(int64_t k) {
  Fixture f(kOpt, skip_config);
  cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
  EXPECT_NE(cpu, nullptr) << cuvae_last_error();
  std::vector<double> norms;
  if (!cpu) return norms;
  for (const cuvae_step_result &r : run_steps(cpu, kOpt, f.cfg.seed, 0, k, 1)) norms.push_back(r.grad_norm);
  cpu->destroy(cpu);
  return norms;
}

float g_skip_threshold;  // skip_grad_norm of skip_config_on (a function pointer carries no state)
void skip_config_on(cuvae_config *c) {
  skip_config(c);
  c->skip_grad_norm = g_skip_threshold;
}

// skip_grad_norm between the 5th and 6th smallest of the probe's first 8 norms (skipped steps do not train, so the
// later norms stay near the early ones rather than fall as the probe's do; measured: 8 of 16 skipped, SSSSS.S..SS.....
// under emulation): some steps are skipped, some applied, the same on both backends (every norm farther from the
// threshold than the norms' bound, checked); a skipped step leaves parameters, m, v and the EMA bit-identical on each
// backend and reports its rate and the flag; the skip state agrees. Steps 0..7 one at a time, 8..15 four ahead of a
// collect.
TEST(OptimizerParity, SkippedStepsAgree) {
  std::vector<double> norms = probe_norms(8);
  ASSERT_EQ(8u, norms.size());
  std::sort(norms.begin(), norms.end());
  g_skip_threshold = (float)(0.5 * (norms[4] + norms[5]));
  Pair b(skip_config_on);
  ASSERT_TRUE(b.cpu && b.gpu);
  const size_t n = b.f.m.n_params;
  cuvae_backend *be[2] = {b.cpu, b.gpu};
  std::vector<cuvae_step_result> r[2];
  for (int64_t t = 0; t < 8; t++)
    for (int k = 0; k < 2; k++) {
      const State s0 = state_of(be[k], n);
      const std::vector<float> e0 = extra_of(be[k], n).ema;
      const std::vector<cuvae_step_result> q = run_steps(be[k], kOpt, b.f.cfg.seed, t, t + 1, 1);
      ASSERT_EQ(1u, q.size());
      r[k].push_back(q[0]);
      if (!q[0].skipped) continue;
      const State s1 = state_of(be[k], n);
      EXPECT_TRUE(same_bits(s0.p, s1.p)) << be[k]->name << " step " << t;
      EXPECT_TRUE(same_bits(s0.m, s1.m)) << be[k]->name << " step " << t;
      EXPECT_TRUE(same_bits(s0.v, s1.v)) << be[k]->name << " step " << t;
      EXPECT_TRUE(same_bits(e0, extra_of(be[k], n).ema)) << be[k]->name << " step " << t;
    }
  for (int k = 0; k < 2; k++) {
    const std::vector<cuvae_step_result> q = run_steps(be[k], kOpt, b.f.cfg.seed, 8, 16, 4);
    r[k].insert(r[k].end(), q.begin(), q.end());
  }
  ASSERT_EQ(16u, r[1].size());
  expect_results_agree(r[0], r[1], b.f.cfg, cuvae_lr_horizon(&b.f.cfg, (size_t)kOpt.N), 0);
  int skipped = 0;
  std::string flags;
  for (const cuvae_step_result &q : r[0]) {
    skipped += q.skipped;
    flags += q.skipped ? 'S' : '.';
    EXPECT_GT(std::fabs(q.grad_norm - g_skip_threshold), 1e-5 + 1e-3 * q.grad_norm)
        << "a norm this close to the threshold may fall on either side of it on the other backend";
  }
  EXPECT_GT(skipped, 0);
  EXPECT_LT(skipped, 16);
  const Extra xc = extra_of(b.cpu, n), xg = extra_of(b.gpu, n);
  EXPECT_EQ(skipped, xc.skip.skipped);
  EXPECT_EQ(xc.skip.skipped, xg.skip.skipped);
  EXPECT_EQ(xc.skip.in_a_row, xg.skip.in_a_row);
  std::printf("[skip] threshold %.6g: %d of 16 steps skipped on both (%s)\n", (double)g_skip_threshold, skipped,
              flags.c_str());
  expect_state_close(state_of(b.cpu, n), state_of(b.gpu, n), 2e-5, "skipping, 16 steps");
}

void zscore_config(cuvae_config *c) {
  c->skip_zscore = 1.0f;
  c->skip_window = 3;
  c->skip_limit = 1000;
  c->log_every = 4;
}

// skip_zscore = 1 over a window of 3 applied norms: the same steps skipped on both, the same window (get_extra_state,
// within the norms' bound), when every norm is farther from its threshold than the threshold can move: the window's
// norms differ by <= e = 1e-5 + 1e-3 max(window) between the backends, which moves the mean by <= e and the population
// sd by <= e (it is 1-Lipschitz in the largest change), the threshold by <= (1 + z) e; the step's own norm by
// 1e-5 + 1e-3 n. The thresholds are recomputed here from the CPU's norms (cuvae_skip_verdict's rule).
TEST(OptimizerParity, ZScoreSkipsAgree) {
  Pair b(zscore_config);
  ASSERT_TRUE(b.cpu && b.gpu);
  const std::vector<cuvae_step_result> rc = run_steps(b.cpu, kOpt, b.f.cfg.seed, 0, 16, 4);
  const std::vector<cuvae_step_result> rg = run_steps(b.gpu, kOpt, b.f.cfg.seed, 0, 16, 4);
  expect_results_agree(rc, rg, b.f.cfg, cuvae_lr_horizon(&b.f.cfg, (size_t)kOpt.N), 0);
  std::vector<double> window;  // the applied norms, oldest first; the last 3 make the window
  int skipped = 0, tested = 0;
  std::string flags;
  for (const cuvae_step_result &q : rc) {
    bool skip = false;
    if (window.size() >= 3) {
      const double *w = &window[window.size() - 3];
      const double mean = (w[0] + w[1] + w[2]) / 3.0, top = std::max({w[0], w[1], w[2]});
      const double sd = std::sqrt(((w[0] - mean) * (w[0] - mean) + (w[1] - mean) * (w[1] - mean) +
                                   (w[2] - mean) * (w[2] - mean)) / 3.0);
      const double thr = mean + sd, e = 1e-5 + 1e-3 * top;
      EXPECT_GT(std::fabs(q.grad_norm - thr), 2.0 * e + 1e-5 + 1e-3 * q.grad_norm)
          << "a norm this close to its threshold may fall on either side of it on the other backend";
      skip = q.grad_norm > thr;
      tested++;
    }
    EXPECT_EQ(skip ? 1 : 0, q.skipped);
    skipped += q.skipped;
    flags += q.skipped ? 'S' : '.';
    if (!q.skipped) window.push_back(q.grad_norm);
  }
  EXPECT_GT(skipped, 0);
  EXPECT_GT(tested - skipped, 0);
  const size_t n = b.f.m.n_params;
  std::vector<float> wc(3), wg(3);
  cuvae_extra_state xc = {nullptr, {0, 0, 0, 0}, wc.data()}, xg = {nullptr, {0, 0, 0, 0}, wg.data()};
  ASSERT_EQ(b.cpu->get_extra_state(b.cpu, &xc), 0) << cuvae_last_error();
  ASSERT_EQ(b.gpu->get_extra_state(b.gpu, &xg), 0) << cuvae_last_error();
  EXPECT_EQ(xc.skip.skipped, skipped);
  EXPECT_EQ(xc.skip.skipped, xg.skip.skipped);
  EXPECT_EQ(xc.skip.count, xg.skip.count);
  EXPECT_EQ(xc.skip.pos, xg.skip.pos);
  for (int k = 0; k < 3; k++) EXPECT_LE(std::fabs(wc[k] - wg[k]), 1e-5 + 1e-3 * wc[k]) << "window slot " << k;
  std::printf("[zscore] %d of 16 steps skipped on both (%s)\n", skipped, flags.c_str());
  expect_state_close(state_of(b.cpu, n), state_of(b.gpu, n), 2e-5, "z-score skipping, 16 steps");
}

// Adam's t counts applied updates: with 5 skips recorded (set_extra_state), step 5 from zero moments is Adam's first
// update on both backends (t = 6 would move the weights ~0.52 lr instead of lr: far outside the 1e-6 one-step bound).
TEST(OptimizerParity, AdamsTCountsAppliedUpdates) {
  Pair b([](cuvae_config *c) { c->skip_nonfinite = 1; });
  ASSERT_TRUE(b.cpu && b.gpu);
  const size_t n = b.f.m.n_params;
  const cuvae_extra_state x = {nullptr, {5, 0, 0, 0}, nullptr};
  ASSERT_EQ(b.cpu->set_extra_state(b.cpu, &x), 0) << cuvae_last_error();
  ASSERT_EQ(b.gpu->set_extra_state(b.gpu, &x), 0) << cuvae_last_error();
  EXPECT_EQ(5, extra_of(b.gpu, n).skip.skipped);
  const State p0 = state_of(b.gpu, n);
  run_both(kOpt, b.f.m, b.cpu, b.gpu, b.f.cfg.seed, 5, 6);
  const State p1 = state_of(b.gpu, n);
  expect_state_close(state_of(b.cpu, n), p1, 1e-6, "step 5 after 5 skips");
  // The first update moves every weight whose gradient is far above eps by lr: within lr 1.1e-5 + u |p| (the bound
  // test_optimizer.cc states; <= 7e-5 lr for |p| <= 1), checked within 1e-3 lr.
  std::vector<float> g(n);
  ASSERT_EQ(b.gpu->get_grad(b.gpu, g.data()), 0);
  int checked = 0;
  for (size_t i = 0; i < n; i++)
    if (std::fabs(g[i]) > 1e-3f) {
      ASSERT_NEAR(std::fabs((double)p1.p[i] - p0.p[i]), b.f.cfg.lr, 1e-3 * b.f.cfg.lr) << i;
      checked++;
    }
  EXPECT_GT(checked, 20);
}

// skip_grad_norm below every norm, skip_limit = 3, on the CUDA backend: the third skip in a row fails collect naming
// the step and skip_limit; nothing was applied. One step per collect, and three steps ahead of one collect.
TEST(OptimizerParity, SkipLimitFailsCollectOnCuda) {
  for (int ahead : {1, 3}) {
    SCOPED_TRACE(testing::Message() << ahead << " ahead");
    Pair b([](cuvae_config *c) {
      c->skip_grad_norm = 1e-20f;
      c->skip_limit = 3;
      c->log_every = 4;
    });
    ASSERT_TRUE(b.cpu && b.gpu);
    const size_t n = b.f.m.n_params;
    const State s0 = state_of(b.gpu, n);
    std::vector<cuvae_step_result> got(3);
    int total = 0, rc = 0;
    for (int64_t t = 0; t < 3 && rc == 0; t++) {
      const std::vector<uint32_t> rows = rows_of(kOpt, b.f.cfg.seed, t);
      ASSERT_EQ(b.gpu->train_step(b.gpu, rows.data(), kOpt.B, t), 0) << cuvae_last_error();
      if (t + 1 < 3 && ahead > 1) continue;
      int k = 0;
      rc = b.gpu->collect(b.gpu, got.data() + total, &k);
      total += k;
    }
    EXPECT_EQ(-1, rc);
    const std::string err = cuvae_last_error();
    EXPECT_NE(err.find("step 3"), std::string::npos) << err;
    EXPECT_NE(err.find("skip_limit"), std::string::npos) << err;
    ASSERT_EQ(3, total);
    for (const cuvae_step_result &q : got) EXPECT_EQ(1, q.skipped);
    const State s1 = state_of(b.gpu, n);
    EXPECT_TRUE(same_bits(s0.p, s1.p));
    EXPECT_TRUE(same_bits(s0.m, s1.m));
    EXPECT_TRUE(same_bits(s0.v, s1.v));
    EXPECT_EQ(3, extra_of(b.gpu, 0).skip.skipped);
  }
}

// Resume on the CUDA backend: 5 steps, the state and the extra state (EMA, skip state, z-score window) copied out,
// a fresh backend given them continues to step 10, and everything equals 10 uninterrupted steps bit for bit (one
// backend, one device: the same float operations in the same order), with cosine + warm-up, the EMA and z-score
// skipping all on (z = 0.5 over 3 norms skips some steps of the 10).
TEST(OptimizerParity, CudaResumeWithTheExtraStateIsBitIdentical) {
  auto tweak = [](cuvae_config *c) {
    c->lr_schedule = CUVAE_LR_COSINE;
    c->lr_warmup_steps = 2;
    c->ema = 0.9f;
    c->skip_zscore = 0.5f;
    c->skip_window = 3;
    c->skip_limit = 100;
    c->log_every = 4;
  };
  Fixture f(kOpt, tweak);
  const size_t n = f.m.n_params, W = 3;
  cuvae_backend *whole = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *first = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *second = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_TRUE(whole && first && second) << cuvae_last_error();
  const std::vector<cuvae_step_result> rw = run_steps(whole, kOpt, f.cfg.seed, 0, 10, 4);
  run_steps(first, kOpt, f.cfg.seed, 0, 5, 2);
  const State s5 = state_of(first, n);
  std::vector<float> ema(n), window(W);
  cuvae_extra_state x = {ema.data(), {0, 0, 0, 0}, window.data()};
  ASSERT_EQ(first->get_extra_state(first, &x), 0) << cuvae_last_error();
  ASSERT_EQ(second->set_state(second, s5.p.data(), s5.m.data(), s5.v.data()), 0) << cuvae_last_error();
  ASSERT_EQ(second->set_extra_state(second, &x), 0) << cuvae_last_error();
  const std::vector<cuvae_step_result> rs = run_steps(second, kOpt, f.cfg.seed, 5, 10, 4);
  ASSERT_EQ(rs.size(), 5u);
  int skipped = 0;
  for (size_t i = 0; i < rs.size(); i++) {
    EXPECT_EQ(rs[i].loss.nelbo, rw[5 + i].loss.nelbo) << i;
    EXPECT_EQ(rs[i].lr, rw[5 + i].lr) << i;
    EXPECT_EQ(rs[i].skipped, rw[5 + i].skipped) << i;
  }
  for (const cuvae_step_result &q : rw) skipped += q.skipped;
  EXPECT_GT(skipped, 0);
  EXPECT_LT(skipped, 10);
  const State a = state_of(whole, n), b = state_of(second, n);
  EXPECT_TRUE(same_bits(a.p, b.p));
  EXPECT_TRUE(same_bits(a.m, b.m));
  EXPECT_TRUE(same_bits(a.v, b.v));
  std::vector<float> ema_a(n), ema_b(n), win_a(W), win_b(W);
  cuvae_extra_state xa = {ema_a.data(), {0, 0, 0, 0}, win_a.data()}, xb = {ema_b.data(), {0, 0, 0, 0}, win_b.data()};
  ASSERT_EQ(whole->get_extra_state(whole, &xa), 0);
  ASSERT_EQ(second->get_extra_state(second, &xb), 0);
  EXPECT_TRUE(same_bits(ema_a, ema_b));
  EXPECT_TRUE(same_bits(win_a, win_b));
  EXPECT_EQ(0, std::memcmp(&xa.skip, &xb.skip, sizeof xa.skip));
  EXPECT_EQ(skipped, xa.skip.skipped);
  whole->destroy(whole);
  first->destroy(first);
  second->destroy(second);
}

}  // namespace
