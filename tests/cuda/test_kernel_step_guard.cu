// kernels/step_guard.cu with the halt flag and skip flag of kernels/adam.cu and kernels/ema.cu: the guard records each
// step's sums and verdict (docs/MATH.md (7.4)) in the ring; without skipping it halts at the first non-finite step
// (naming it), and a halted Adam changes neither the parameters, the moments nor the step counter; with skipping, a
// step above skip_grad_norm, above the z-score threshold of a full window, or not finite is skipped (Adam, its t and
// the EMA stay; the step counter moves on), and skip_limit skips in a row halt with the verdict SKIP_LIMIT. Every
// device verdict and skip state equals cuvae_skip_verdict's (include/cuvae/optimizer.h) run on the host over the same
// sequence, the CPU backend's verdict; tests/cuda/test_backend_parity.cc compares the backends end to end. Runs
// emulated (emu) and natively (gpu).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>

#include <vector>

#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/optimizer.h"
#include "cuvae_kernels.h"
#include "skip_rule.h"

namespace {

constexpr int kCap = 8;
constexpr float kB1 = 0.9f, kB2 = 0.999f, kLr = 1e-3f, kEps = 1e-8f;
constexpr int64_t kStart = 41;  // the step counter before the first step (steps 42, 43, ... 1-based)

// The bias correction exactly as adam_update_cpu computes it.
float correction(float b, int64_t t) { return (float)(1.0 / (1.0 - pow((double)b, (double)t))); }

// Distance in units in the last place of `want`.
double ulps(float got, float want) {
  const float a = fabsf(want);
  return fabs((double)got - (double)want) / ((double)nextafterf(a, INFINITY) - a);
}

using cuvae_test::rule_of;

// The device side of guarded steps: the guard, then Adam's prologue (which advances the step counter), as step_body
// in src/backend/cuda/backend_cuda.c launches them; with an active rule, the skip state (guard) and the window.
struct Guard {
  cuvae_skip_rule rule;
  DeviceVec<float> sums{CUVAE_STEP_SUMS}, ring{CUVAE_STEP_RECORD * kCap}, lr{std::vector<float>{kLr}},
      scalars{CUVAE_ADAM_SCALARS}, window{4096};
  DeviceVec<int64_t> step{1}, flags{2}, guard{CUVAE_GUARD_WORDS};
  explicit Guard(cuvae_skip_rule r) : rule(r) {
    flags.zero();
    guard.zero();
    window.zero();
    step.put({kStart});
  }
  // One guarded step with these sums (objective sum 0.5).
  void run(float nll, float kl, float g2) {
    sums.put({nll, kl, g2, 0.5f});
    int64_t *gd = rule.active ? guard.p : nullptr;
    ASSERT_EQ(cudaSuccess, step_guard_cuda(sums.p, step.p, flags.p, ring.p, kCap, rule, gd,
                                           rule.window > 0 ? window.p : nullptr, 0));
    ASSERT_EQ(cudaSuccess, adam_prepare_cuda(sums.p + 2, step.p, lr.p, gd, 0.0f, kB1, kB2, scalars.p, flags.p, 0));
    ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
  }
  // The verdict recorded for the i-th step since the start.
  float verdict(int i) const { return ring.get()[CUVAE_STEP_RECORD * i + CUVAE_STEP_SUMS]; }
};

// cuvae_skip_verdict on the host: the CPU backend's decision (src/backend/cpu/backend_cpu.c, step_verdict), here
// with the guard's inputs: finite = every sum finite, norm = sqrt(sum g^2) in double from the float sum.
struct HostVerdict {
  cuvae_skip_rule rule;
  cuvae_skip_state s = {0, 0, 0, 0};
  std::vector<float> window = std::vector<float>(4096, 0.0f);
  int step(float nll, float kl, float g2) {
    const int finite = isfinite(nll) && isfinite(kl) && isfinite(g2);
    return cuvae_skip_verdict(&rule, &s, window.data(), finite, sqrt((double)g2));
  }
};

// Runs the sequence of (nll, g2) steps on the device and on the host; after each, the recorded verdict, the skip
// state (guard[0..4)), the skip flag guard[4] and the window equal the host's. Returns the host's verdicts.
std::vector<int> run_both(Guard &g, const std::vector<std::pair<float, float>> &steps) {
  HostVerdict h{g.rule};
  std::vector<int> verdicts;
  for (size_t i = 0; i < steps.size(); i++) {
    SCOPED_TRACE(testing::Message() << "step " << i);
    g.run(steps[i].first, 1.0f, steps[i].second);
    const int want = h.step(steps[i].first, 1.0f, steps[i].second);
    verdicts.push_back(want);
    EXPECT_EQ((float)want, g.verdict((int)i));
    const std::vector<int64_t> words = g.guard.get();
    EXPECT_EQ(h.s.skipped, words[0]);
    EXPECT_EQ(h.s.in_a_row, words[1]);
    EXPECT_EQ(h.s.count, words[2]);
    EXPECT_EQ(h.s.pos, words[3]);
    EXPECT_EQ(want == CUVAE_STEP_SKIP ? 1 : 0, words[4]);
    const std::vector<float> win = g.window.get();
    for (int k = 0; k < g.rule.window; k++) EXPECT_EQ(h.window[k], win[k]) << "window slot " << k;
  }
  return verdicts;
}

const cuvae_skip_rule kOff = rule_of(0.0f, 0.0f, 100, 0, 10);  // the defaults: no skipping

TEST(StepGuard, TheDefaultsSkipNothing) {
  EXPECT_EQ(0, kOff.active);
  EXPECT_EQ(0, kOff.window);  // no z-score: no window kept
}

TEST(StepGuard, RecordsSumsAndHaltsAtTheFirstNonFiniteStep) {
  Guard g(kOff);
  g.run(1.0f, 2.0f, 4.0f);       // step 42 (1-based): fine
  g.run(INFINITY, 2.0f, 4.0f);   // step 43: loss not finite -> halt
  g.run(3.0f, 3.0f, 3.0f);       // step 44: halted, recorded as NaN
  const std::vector<int64_t> flags = g.flags.get();
  EXPECT_EQ(flags[0], 43);                // the 1-based number of the bad step
  EXPECT_EQ(flags[1], 3);                 // three steps recorded
  EXPECT_EQ(g.step.get()[0], 42);         // Adam's counter advanced for step 42 only
  const std::vector<float> ring = g.ring.get();
  const float *r0 = &ring[0], *r1 = &ring[CUVAE_STEP_RECORD], *r2 = &ring[2 * CUVAE_STEP_RECORD];
  EXPECT_EQ(r0[0], 1.0f);
  EXPECT_EQ(r0[1], 2.0f);
  EXPECT_EQ(r0[2], 4.0f);
  EXPECT_EQ(r0[3], 0.5f);
  EXPECT_EQ(r0[4], (float)CUVAE_STEP_APPLY);
  EXPECT_TRUE(isinf(r1[0]));
  EXPECT_EQ(r1[4], (float)CUVAE_STEP_DIVERGED);
  for (int k = 0; k < CUVAE_STEP_RECORD; k++) EXPECT_TRUE(isnan(r2[k])) << k;
}

TEST(StepGuard, NonFiniteGradientHaltsToo) {
  Guard g(kOff);
  g.run(1.0f, 2.0f, NAN);
  EXPECT_EQ(g.flags.get()[0], 42);
  EXPECT_EQ(g.verdict(0), (float)CUVAE_STEP_DIVERGED);
  EXPECT_EQ(g.step.get()[0], kStart);
}

TEST(StepGuard, AFullRingHaltsInsteadOfOverflowing) {
  Guard g(kOff);
  for (int i = 0; i < kCap; i++) g.run(1.0f, 1.0f, 1.0f);
  EXPECT_EQ(g.flags.get()[0], 0);
  g.run(1.0f, 1.0f, 1.0f);  // one more than the ring holds
  const std::vector<int64_t> flags = g.flags.get();
  EXPECT_EQ(flags[0], kStart + kCap + 1);
  EXPECT_EQ(flags[1], kCap);
}

// A halted Adam, and a skipped update (scalars[5] != 0), change neither p, m nor v; the EMA holds likewise.
TEST(StepGuard, HaltedOrSkippedAdamChangesNothing) {
  const size_t n = 1000;
  std::vector<float> p(n), grad(n), m(n), v(n), e(n);
  for (size_t i = 0; i < n; i++) {
    p[i] = 0.01f * (float)i;
    grad[i] = 1.0f - 0.002f * (float)i;
    m[i] = 0.1f;
    v[i] = 0.2f;
    e[i] = -0.5f;
  }
  DeviceVec<float> dp(p), dg(grad), dm(m), dv(v), de(e);
  DeviceVec<float> scalars(std::vector<float>{1.0f, 10.0f, 1000.0f, 1.0f, kLr, 0.0f});
  DeviceVec<float> skipped(std::vector<float>{1.0f, 10.0f, 1000.0f, 1.0f, kLr, 1.0f});
  DeviceVec<int64_t> halted(std::vector<int64_t>{7}), running(std::vector<int64_t>{0});
  ASSERT_EQ(cudaSuccess, adam_update_cuda(dp.p, dg.p, dm.p, dv.p, n, kB1, kB2, kEps, scalars.p, halted.p, 0));
  ASSERT_EQ(cudaSuccess, ema_update_cuda(de.p, dp.p, n, 0.9f, scalars.p, halted.p, 0));
  ASSERT_EQ(cudaSuccess, adam_update_cuda(dp.p, dg.p, dm.p, dv.p, n, kB1, kB2, kEps, skipped.p, running.p, 0));
  ASSERT_EQ(cudaSuccess, ema_update_cuda(de.p, dp.p, n, 0.9f, skipped.p, running.p, 0));
  EXPECT_EQ(dp.get(), p);
  EXPECT_EQ(dm.get(), m);
  EXPECT_EQ(dv.get(), v);
  EXPECT_EQ(de.get(), e);
  // The same launches, neither halted nor skipped, do move them (so the checks above can fail).
  ASSERT_EQ(cudaSuccess, adam_update_cuda(dp.p, dg.p, dm.p, dv.p, n, kB1, kB2, kEps, scalars.p, running.p, 0));
  ASSERT_EQ(cudaSuccess, ema_update_cuda(de.p, dp.p, n, 0.9f, scalars.p, running.p, 0));
  EXPECT_NE(dp.get(), p);
  EXPECT_NE(dm.get(), m);
  EXPECT_NE(de.get(), e);
}

// skip_grad_norm = 3: norms 1, 2, 10 (skipped), 1.5. A whole optimiser step each (guard, prepare, Adam, EMA) on 1000
// parameters: the skipped step leaves p, m, v and the EMA bit-identical, the step counter still advances, and Adam's
// t = step - skipped (scalars[1..2]); the applied steps equal adam_update_cpu / ema_update_cpu with that t, bit for
// bit (the update's float operations are the CPU's, test_kernel_adam.cu / test_kernel_ema.cu).
TEST(StepGuard, ASpikeAboveSkipGradNormIsSkipped) {
  Guard g(rule_of(3.0f, 0.0f, 100, 0, 10));
  ASSERT_EQ(1, g.rule.active);
  const size_t n = 1000;
  std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f), grad(n);
  for (size_t i = 0; i < n; i++) p[i] = 0.001f * (float)i - 0.5f, grad[i] = 0.01f * (float)(i % 17) - 0.08f;
  std::vector<float> e = p;
  DeviceVec<float> dp(p), dm(m), dv(v), dg(grad), de(e);
  HostVerdict h{g.rule};
  const float norms[] = {1.0f, 2.0f, 10.0f, 1.5f};
  int64_t skipped = 0;
  for (int i = 0; i < 4; i++) {
    SCOPED_TRACE(testing::Message() << "step " << i);
    const float g2 = norms[i] * norms[i];  // exact: the norm is the float's square root
    g.run(1.0f, 1.0f, g2);
    const int want = h.step(1.0f, 1.0f, g2);
    ASSERT_EQ(i == 2 ? CUVAE_STEP_SKIP : CUVAE_STEP_APPLY, want);
    EXPECT_EQ((float)want, g.verdict(i));
    const std::vector<int64_t> words = g.guard.get();
    EXPECT_EQ(i == 2 ? 1 : 0, words[4]);
    skipped += i == 2;
    EXPECT_EQ(skipped, words[0]);
    const int64_t step = kStart + i + 1, t = step - skipped;
    EXPECT_EQ(step, g.step.get()[0]) << "the step counter counts skipped steps too";
    EXPECT_EQ(0, g.flags.get()[0]);
    const std::vector<float> sc = g.scalars.get();
    EXPECT_LE(ulps(sc[1], correction(kB1, t)), 1.0);  // CUDA's double pow: see test_kernel_adam.cu
    EXPECT_LE(ulps(sc[2], correction(kB2, t)), 1.0);
    EXPECT_EQ(kLr, sc[4]);
    EXPECT_EQ(i == 2 ? 1.0f : 0.0f, sc[5]);
    ASSERT_EQ(cudaSuccess, adam_update_cuda(dp.p, dg.p, dm.p, dv.p, n, kB1, kB2, kEps, g.scalars.p, g.flags.p, 0));
    ASSERT_EQ(cudaSuccess, ema_update_cuda(de.p, dp.p, n, 0.9f, g.scalars.p, g.flags.p, 0));
    if (i != 2) {
      adam_update_cpu(p.data(), grad.data(), m.data(), v.data(), n, kLr, kB1, kB2, kEps, t, sc[0]);
      ema_update_cpu(e.data(), p.data(), n, 0.9f);
    }
    // After the skipped step the device state is the state before it: the CPU twins did nothing either.
    EXPECT_EQ(p, dp.get());
    EXPECT_EQ(m, dm.get());
    EXPECT_EQ(v, dv.get());
    EXPECT_EQ(e, de.get());
  }
}

// skip_zscore = 2 over a window of 4: while the window fills, even a large norm (5) is applied; once full
// (1, 5, 1.1, 0.9: mean 2, population sd 1.733, threshold 5.467), 6 is skipped and 5.4 applied (entering the window),
// and a later 6 then passes (the window's sd grew). The host's cuvae_skip_verdict agrees at each step, window
// included. (nvcc may contract the double sums of the mean and sd into FMAs: their last bits may differ from the
// host's, which cannot change a verdict here, every norm being > 1e-3 away from its threshold.)
TEST(StepGuard, ZScoreSkipsOnceTheWindowIsFull) {
  Guard g(rule_of(0.0f, 2.0f, 4, 0, 10));
  ASSERT_EQ(4, g.rule.window);
  const std::vector<std::pair<float, float>> steps = {{1, 1.0f},  {1, 25.0f}, {1, 1.21f}, {1, 0.81f},
                                                      {1, 36.0f}, {1, 29.16f}, {1, 36.0f}};
  const std::vector<int> v = run_both(g, steps);
  const std::vector<int> want = {CUVAE_STEP_APPLY, CUVAE_STEP_APPLY, CUVAE_STEP_APPLY, CUVAE_STEP_APPLY,
                                 CUVAE_STEP_SKIP,  CUVAE_STEP_APPLY, CUVAE_STEP_APPLY};
  EXPECT_EQ(want, v);
  EXPECT_EQ(0, g.flags.get()[0]);
  EXPECT_EQ(kStart + 7, g.step.get()[0]);
}

// A non-finite step with skipping on (skip_nonfinite, or any other skip key) is skipped, not fatal, and its NaN norm
// stays out of the window; without skipping it halts (RecordsSumsAndHaltsAtTheFirstNonFiniteStep).
TEST(StepGuard, NonFiniteIsSkippedWhenSkippingIsOn) {
  for (const cuvae_skip_rule &rule : {rule_of(0.0f, 0.0f, 100, 1, 10), rule_of(0.0f, 1.0f, 3, 0, 10)}) {
    SCOPED_TRACE(testing::Message() << "window " << rule.window);
    Guard g(rule);
    ASSERT_EQ(1, g.rule.active);
    const std::vector<int> v =
        run_both(g, {{1, 1.0f}, {INFINITY, 1.0f}, {1, NAN}, {1, 1.21f}, {NAN, INFINITY}, {1, 0.81f}});
    const std::vector<int> want = {CUVAE_STEP_APPLY, CUVAE_STEP_SKIP,  CUVAE_STEP_SKIP,
                                   CUVAE_STEP_APPLY, CUVAE_STEP_SKIP,  CUVAE_STEP_APPLY};
    EXPECT_EQ(want, v);
    EXPECT_EQ(0, g.flags.get()[0]);
    EXPECT_EQ(3, g.guard.get()[0]);
    EXPECT_EQ(kStart + 6, g.step.get()[0]);
  }
}

// skip_limit = 3: two spikes, an applied step (the run resets), then three spikes in a row: the third halts with
// SKIP_LIMIT (flags[0] names it; the step counter stops before it, as for a diverged step), and the step after it is
// recorded as NaN.
TEST(StepGuard, SkipLimitInARowHalts) {
  Guard g(rule_of(3.0f, 0.0f, 100, 0, 3));
  ASSERT_EQ(3, g.rule.limit);
  const std::vector<int> v = run_both(g, {{1, 100.0f}, {1, 100.0f}, {1, 1.0f}, {1, 100.0f}, {1, 100.0f}, {1, 100.0f}});
  const std::vector<int> want = {CUVAE_STEP_SKIP, CUVAE_STEP_SKIP, CUVAE_STEP_APPLY,
                                 CUVAE_STEP_SKIP, CUVAE_STEP_SKIP, CUVAE_STEP_SKIP_LIMIT};
  EXPECT_EQ(want, v);
  EXPECT_EQ(kStart + 6, g.flags.get()[0]);
  EXPECT_EQ(kStart + 5, g.step.get()[0]);
  g.run(1.0f, 1.0f, 1.0f);
  EXPECT_TRUE(isnan(g.verdict(6)));
  EXPECT_EQ(7, g.flags.get()[1]);
  EXPECT_EQ(kStart + 5, g.step.get()[0]);
}

TEST(StepGuard, RejectsBadArguments) {
  DeviceVec<float> f(12);
  DeviceVec<int64_t> i(CUVAE_GUARD_WORDS);
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(nullptr, i.p, i.p, f.p, 4, kOff, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, nullptr, i.p, f.p, 4, kOff, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, nullptr, f.p, 4, kOff, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, i.p, nullptr, 4, kOff, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, i.p, f.p, 0, kOff, nullptr, nullptr, 0));
  // An active rule needs the skip state, a z-score rule its window, and a limit of at least 1.
  const cuvae_skip_rule above = rule_of(3.0f, 0.0f, 100, 0, 10), z = rule_of(0.0f, 2.0f, 4, 0, 10);
  cuvae_skip_rule no_limit = above;
  no_limit.limit = 0;
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, i.p, f.p, 4, above, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, i.p, f.p, 4, z, i.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, i.p, f.p, 4, no_limit, i.p, nullptr, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // rejected before any launch
}

}  // namespace
