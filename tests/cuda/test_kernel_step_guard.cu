// kernels/step_guard.cu with the halt flag of kernels/adam.cu: the guard records each step's sums in the ring,
// halts at the first non-finite step (naming it), and a halted Adam changes neither the parameters, the moments
// nor the step counter. The CPU twin is the isfinite check of cpu_train_step (src/backend/cpu/backend_cpu.c), whose
// behaviour tests/cuda/test_backend_parity.cc compares end to end. Runs emulated (emu) and natively (gpu).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>

#include <vector>

#include "cuvae_kernels.h"

namespace {

constexpr int kCap = 4;

struct Guard {
  DeviceVec<float> sums{CUVAE_STEP_SUMS}, ring{CUVAE_STEP_SUMS * kCap};
  DeviceVec<int64_t> step{1}, flags{2};
  Guard() {
    flags.zero();
    step.put({41});
  }
  // One guarded step with these sums: the guard, then Adam's prologue (which advances the step counter).
  void run(float nll, float kl, float g2, DeviceVec<float> &scalars) {
    sums.put({nll, kl, g2, 0.5f});
    ASSERT_EQ(cudaSuccess, step_guard_cuda(sums.p, step.p, flags.p, ring.p, kCap, 0));
    ASSERT_EQ(cudaSuccess, adam_prepare_cuda(sums.p + 2, step.p, 0.0f, 0.9f, 0.999f, scalars.p, flags.p, 0));
    ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
  }
};

TEST(StepGuard, RecordsSumsAndHaltsAtTheFirstNonFiniteStep) {
  Guard g;
  DeviceVec<float> scalars(4);
  g.run(1.0f, 2.0f, 4.0f, scalars);       // step 42 (1-based): fine
  g.run(INFINITY, 2.0f, 4.0f, scalars);   // step 43: loss not finite -> halt
  g.run(3.0f, 3.0f, 3.0f, scalars);       // step 44: halted, recorded as NaN
  const std::vector<int64_t> flags = g.flags.get();
  EXPECT_EQ(flags[0], 43);                // the 1-based number of the bad step
  EXPECT_EQ(flags[1], 3);                 // three steps recorded
  EXPECT_EQ(g.step.get()[0], 42);         // Adam's counter advanced for step 42 only
  const std::vector<float> ring = g.ring.get();
  EXPECT_EQ(ring[0], 1.0f);
  EXPECT_EQ(ring[1], 2.0f);
  EXPECT_EQ(ring[2], 4.0f);
  EXPECT_EQ(ring[3], 0.5f);
  EXPECT_TRUE(isinf(ring[4]));
  EXPECT_TRUE(isnan(ring[8]) && isnan(ring[9]) && isnan(ring[10]) && isnan(ring[11]));
}

TEST(StepGuard, NonFiniteGradientHaltsToo) {
  Guard g;
  DeviceVec<float> scalars(4);
  g.run(1.0f, 2.0f, NAN, scalars);
  EXPECT_EQ(g.flags.get()[0], 42);
}

TEST(StepGuard, AFullRingHaltsInsteadOfOverflowing) {
  Guard g;
  DeviceVec<float> scalars(4);
  for (int i = 0; i < kCap; i++) g.run(1.0f, 1.0f, 1.0f, scalars);
  EXPECT_EQ(g.flags.get()[0], 0);
  g.run(1.0f, 1.0f, 1.0f, scalars);  // one more than the ring holds
  const std::vector<int64_t> flags = g.flags.get();
  EXPECT_EQ(flags[0], 41 + kCap + 1);
  EXPECT_EQ(flags[1], kCap);
}

TEST(StepGuard, HaltedAdamChangesNothing) {
  const size_t n = 1000;
  std::vector<float> p(n), grad(n), m(n), v(n);
  for (size_t i = 0; i < n; i++) {
    p[i] = 0.01f * (float)i;
    grad[i] = 1.0f - 0.002f * (float)i;
    m[i] = 0.1f;
    v[i] = 0.2f;
  }
  DeviceVec<float> dp(p), dg(grad), dm(m), dv(v), scalars(std::vector<float>{1.0f, 10.0f, 1000.0f, 1.0f});
  DeviceVec<int64_t> halted(std::vector<int64_t>{7}), running(std::vector<int64_t>{0});
  ASSERT_EQ(cudaSuccess, adam_update_cuda(dp.p, dg.p, dm.p, dv.p, n, 1e-3f, 0.9f, 0.999f, 1e-8f, scalars.p,
                                          halted.p, 0));
  EXPECT_EQ(dp.get(), p);
  EXPECT_EQ(dm.get(), m);
  EXPECT_EQ(dv.get(), v);
  // The same launch, not halted, does move the parameters (so the check above can fail).
  ASSERT_EQ(cudaSuccess, adam_update_cuda(dp.p, dg.p, dm.p, dv.p, n, 1e-3f, 0.9f, 0.999f, 1e-8f, scalars.p,
                                          running.p, 0));
  EXPECT_NE(dp.get(), p);
}

TEST(StepGuard, RejectsBadArguments) {
  DeviceVec<float> f(12);
  DeviceVec<int64_t> i(2);
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(nullptr, i.p, i.p, f.p, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, nullptr, i.p, f.p, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, nullptr, f.p, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, i.p, nullptr, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, step_guard_cuda(f.p, i.p, i.p, f.p, 0, 0));
}

}  // namespace
