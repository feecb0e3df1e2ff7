// kernels/adam.cu against its CPU twins: sum_squares_cuda vs a double sum (grad_norm_cpu),
// adam_prepare_cuda vs the CPU backend's clip scale and adam_update_cpu's bias corrections, adam_update_cuda vs
// adam_update_cpu over 5 consecutive steps (clipping off, on but inactive, active) for n in {1, 1000, 4099, 652824}
// (652824 is not a multiple of any block size; 4099 leaves 3 parameters after the last float4), the step counter
// advancing on the device, determinism, buffers that are not 16-byte aligned (the scalar paths: the same bits),
// argument validation, and a CUDA graph of one optimiser step replayed 3 times against 3 CPU steps, each with its own
// learning rate uploaded between the replays (scalars[4]); and adam_update_bf16_cuda (the bf16 weight copy written
// with the update) vs adam_update_bf16_cpu, bit for bit. The skip verdict's scalars (guard, scalars[5]) are tested in
// test_kernel_step_guard.cu.
#include "cuda_compat.h"

#include "device_vec.h"

#include <float.h>
#include <gtest/gtest.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuvae/bf16.h"
#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

const double kU = ldexp(1.0, -24);  // unit roundoff of float
constexpr float kLr = 1e-3f, kB1 = 0.9f, kB2 = 0.999f, kEps = 1e-8f;

template <typename T>
using DevBuf = DeviceVec<T>;  // tests/cuda/device_vec.h

// The optimiser state: parameters and moments, on the host.
struct State {
  std::vector<float> p, m, v;
};

// Mid-training state: p in [-1, 1], m in [-0.01, 0.01], v in [0, 1e-4]. Every 97th parameter has a zero gradient
// (see gradient()) and moments at the edge of the normal range: m = +-1.25e-38 drops below FLT_MIN at step 1,
// v = 1.18e-38 at step 4, so the flush to 0 happens inside the 5 steps.
State initial_state(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  State s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  for (size_t i = 0; i < n; i++) {
    s.p[i] = u(rng);
    s.m[i] = 0.01f * u(rng);
    s.v[i] = 1e-4f * fabsf(u(rng));
    if (i % 97 == 96) s.m[i] = i % 2 ? 1.25e-38f : -1.25e-38f, s.v[i] = 1.18e-38f;
  }
  return s;
}

// A step's gradient: N(0, 0.1^2), exact zeros at every 97th index.
std::vector<float> gradient(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> g(n);
  for (size_t i = 0; i < n; i++) g[i] = i % 97 == 96 ? 0.0f : normal(rng);
  return g;
}

// Distance in units in the last place of `want`: |got - want| / ulp(want), ulp(0) = the smallest subnormal.
double ulps(float got, float want) {
  const float a = fabsf(want);
  return fabs((double)got - (double)want) / ((double)nextafterf(a, INFINITY) - a);
}

// gpu vs cpu state, |gpu - cpu| <= max_ulps ulp(cpu) per element; returns the largest distance in ulps.
double expect_state_close(const State &gpu, const State &cpu, double max_ulps) {
  double worst = 0.0;
  const std::vector<float> *gpu_fields[] = {&gpu.p, &gpu.m, &gpu.v}, *cpu_fields[] = {&cpu.p, &cpu.m, &cpu.v};
  const char *names[] = {"p", "m", "v"};
  for (int f = 0; f < 3; f++) {
    const std::vector<float> &a = *gpu_fields[f], &b = *cpu_fields[f];
    int reported = 0;
    for (size_t i = 0; i < b.size(); i++) {
      const double d = ulps(a[i], b[i]);
      worst = std::max(worst, d);
      if (!(d <= max_ulps) && reported++ < 5)
        ADD_FAILURE() << names[f] << "[" << i << "]: gpu " << a[i] << " cpu " << b[i] << " (" << d << " ulp)";
    }
  }
  return worst;
}

// Relative error bound of sum_squares_cuda (kernels/adam.cu): pass 1 runs G = min(ceil(n4 / 256), 8192) blocks of
// 256 threads over the n4 = floor(n / 4) float4s; each g^2 is rounded once, then passes through at most
// ceil(n4 / (256 G)) + 1 serial float additions in its thread's component sum (+1: the n mod 4 tail), 2 to combine
// the four components, 8 tree levels in its block (5 in the warp, 3 across the 8 warps), ceil(G / 1024) serial
// additions in pass 2 and 10 tree levels there (1024 threads), each erring by <= kU times a partial sum <= the
// total (all terms are >= 0). (On a GPU the compiler may fuse g*g into the addition: one rounding less.)
double sum_squares_rel_bound(size_t n) {
  const size_t n4 = n / 4, want = (n4 + 255) / 256, G = std::max<size_t>(1, std::min<size_t>(want, 8192));
  const size_t serial = (n4 + 256 * G - 1) / (256 * G) + 1;
  return (double)(1 + serial + 2 + 8 + (G + 1023) / 1024 + 10) * kU;
}

// The bias corrections exactly as adam_update_cpu computes them.
float correction(float b, int64_t t) { return (float)(1.0 / (1.0 - pow((double)b, (double)t))); }

enum ClipMode { kClipOff, kClipInactive, kClipActive };

// One optimiser step on the device, in the order of the training step; lr: the step's rate (one float, device), no
// skip guard (Adam's t = the step counter).
cudaError_t device_step(const float *g, size_t n, float clip, float *ss, int64_t *step, const float *lr,
                        float *scalars, float *p, float *m, float *v, cudaStream_t stream) {
  cudaError_t e = sum_squares_cuda(g, n, ss + 1, ss, stream);  // ss[1..]: the partials
  if (e == cudaSuccess) e = adam_prepare_cuda(ss, step, lr, nullptr, clip, kB1, kB2, scalars, nullptr, stream);
  if (e == cudaSuccess) e = adam_update_cuda(p, g, m, v, n, kB1, kB2, kEps, scalars, nullptr, stream);
  return e;
}

class KernelAdam : public testing::TestWithParam<size_t> {};

// The 5 steps' gradients of a size-n test, and the smallest and largest of their norms.
std::vector<std::vector<float>> five_gradients(size_t n, double *min_norm, double *max_norm) {
  std::vector<std::vector<float>> grads;
  *min_norm = INFINITY;
  *max_norm = 0.0;
  for (unsigned k = 1; k <= 5; k++) {
    grads.push_back(gradient(n, 1000u * k + (unsigned)n));
    const double norm = grad_norm_cpu(grads.back().data(), n);
    *min_norm = std::min(*min_norm, norm), *max_norm = std::max(*max_norm, norm);
  }
  return grads;
}

// Step t's device scalars (ss = the sum of squares, sc = scalars[0..5]: clip scale, the two bias corrections, the
// norm, the rate, the skip flag) vs the CPU's for gradient g; *scale_cpu: the CPU backend's clip scale from the
// double norm.
void expect_step_scalars(const std::vector<float> &g, size_t n, float clip, ClipMode mode, int64_t t, float ss,
                         const std::vector<float> &sc, float *scale_cpu) {
  // sum of squares vs the double sum, within its bound; the norm (sqrt halves the relative error, plus the
  // float rounding of scalars[3]) vs grad_norm_cpu.
  const double norm = grad_norm_cpu(g.data(), n), rel_ss = sum_squares_rel_bound(n);
  ASSERT_LE(fabs(ss - norm * norm), rel_ss * norm * norm);
  ASSERT_LE(fabs(sc[3] - norm), (rel_ss / 2 + 2 * kU) * norm);
  // Bias corrections: the same double expression as the CPU's, rounded to float once. (CUDA's double pow
  // errs by <= 2 ulp of a double, which changes the float only within 2^-28 of a rounding boundary.)
  EXPECT_LE(ulps(sc[1], correction(kB1, t)), 1.0);
  EXPECT_LE(ulps(sc[2], correction(kB2, t)), 1.0);
  EXPECT_EQ(kLr, sc[4]);     // the rate, copied from the device's lr
  EXPECT_EQ(0.0f, sc[5]);    // no guard: never skipped
  // The clip scale as the CPU backend computes it (cpu_train_step), from the double norm.
  *scale_cpu = 1.0f;
  if (clip > 0.0f && norm > clip) *scale_cpu = (float)(clip / norm);
  if (mode == kClipActive) {
    // clip / ||g||: relative error of the norm, plus the float rounding on both sides.
    ASSERT_LT(*scale_cpu, 1.0f);
    EXPECT_LE(fabs(sc[0] - *scale_cpu), (rel_ss / 2 + 4 * kU) * *scale_cpu);
  } else {
    ASSERT_EQ(1.0f, sc[0]);
    ASSERT_EQ(1.0f, *scale_cpu);
  }
}

// The independent run's error bound after step t (active clipping): its m's gradient-part magnitudes m_abs and the
// bound dp_bound on p's distance from the device's run, from p before and after its step.
void add_independent_bound(const std::vector<float> &g, size_t n, int64_t t, float scale_cpu,
                           const std::vector<float> &p_before, const State &independent, std::vector<double> *m_abs,
                           std::vector<double> *dp_bound) {
  // First-order effect of scales that differ by a relative delta (every step): m's gradient part moves by
  // <= delta m_abs, v's by <= 2 delta v, so the step u = lr c1 m / (sqrt(c2 v) + eps) moves by
  // <= lr c1 delta m_abs / (sqrt(c2 v) + eps) + delta |u|; the p differences add up over the steps.
  const double delta = sum_squares_rel_bound(n) / 2 + 4 * kU, c1 = correction(kB1, t), c2 = correction(kB2, t);
  for (size_t i = 0; i < n; i++) {
    (*m_abs)[i] = kB1 * (*m_abs)[i] + (1.0 - kB1) * fabs((double)scale_cpu * g[i]);
    const double u = fabs((double)p_before[i] - independent.p[i]);
    (*dp_bound)[i] += kLr * c1 * delta * (*m_abs)[i] / (sqrt(c2 * independent.v[i]) + kEps) + delta * u;
  }
}

// The device's p vs the independent run's (active clipping) within 2 dp_bound + 5 ulp; prints the distances.
void expect_independent_close(const State &gpu, const State &independent, const std::vector<double> &dp_bound,
                              size_t n, ClipMode mode, double worst) {
  // Independent run (active clipping): the scales differ by a relative delta <= rel_ss / 2 + 4 kU (float vs
  // double sum of squares, checked above); its effect on p is dp_bound (first order; doubled for the second
  // order), and once the updates differ, each of the 5 steps may round p to a neighbouring float: + 5 ulp
  // <= 10 kU |p|. (Measured for n = 652824: |dp| <= 6e-5 lr, 1 ulp of a p near 1, but up to a few hundred
  // ulps of a tiny |p|: hence no ulp bound.)
  double worst_independent = 0.0, worst_abs = 0.0, worst_ratio = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double d = fabs((double)gpu.p[i] - independent.p[i]);
    const double tol = 2 * dp_bound[i] + 10 * kU * fabs(independent.p[i]);
    ASSERT_LE(d, tol) << "p[" << i << "]";
    worst_independent = std::max(worst_independent, ulps(gpu.p[i], independent.p[i]));
    worst_abs = std::max(worst_abs, d);
    if (d > 0) worst_ratio = std::max(worst_ratio, d / tol);
  }
  printf("adam n %zu clip mode %d: max %.3g ulp (p, m, v) vs adam_update_cpu with the device's scale; "
         "p vs the CPU backend's own scale: max %.3g ulp, max |dp| = %.3g lr (%.3g of its bound)\n",
         n, (int)mode, worst, worst_independent, worst_abs / kLr, worst_ratio);
}

TEST_P(KernelAdam, FiveStepsMatchCpu) {
  const size_t n = GetParam();
  double min_norm, max_norm;
  const std::vector<std::vector<float>> grads = five_gradients(n, &min_norm, &max_norm);
  for (ClipMode mode : {kClipOff, kClipInactive, kClipActive}) {
    if (mode == kClipInactive && n > 1000) continue;  // the same update as kClipOff; spares 3 s under ASan
    SCOPED_TRACE(testing::Message() << "n " << n << " clip mode " << mode);
    // Thresholds far from every norm, so the float and the double norm take the same branch.
    const float clip =
        mode == kClipOff ? 0.0f : mode == kClipInactive ? (float)(2 * max_norm) : (float)(0.5 * min_norm);
    State cpu = initial_state(n, 7u + (unsigned)n), independent = cpu;
    // For the independent run's error bound (below): sums of |terms| of the gradient part of m, and the bound.
    std::vector<double> m_abs(n, 0.0), dp_bound(n, 0.0);
    DevBuf<float> d_p(cpu.p), d_m(cpu.m), d_v(cpu.v), d_g(n), d_ss(1 + CUVAE_SUM_SQUARES_PARTIALS),
        d_scalars(CUVAE_ADAM_SCALARS), d_lr(std::vector<float>{kLr});
    DevBuf<int64_t> d_step(std::vector<int64_t>{0});
    for (int64_t t = 1; t <= 5; t++) {
      const std::vector<float> &g = grads[t - 1];
      d_g.put(g);
      CUDA_OK(device_step(d_g.p, n, clip, d_ss.p, d_step.p, d_lr.p, d_scalars.p, d_p.p, d_m.p, d_v.p, 0));
      CUDA_OK(cudaDeviceSynchronize());
      const float ss = d_ss.get()[0];
      const std::vector<float> sc = d_scalars.get();
      ASSERT_EQ(t, d_step.get()[0]) << "the step counter advances on the device";

      float scale_cpu = 1.0f;
      ASSERT_NO_FATAL_FAILURE(expect_step_scalars(g, n, clip, mode, t, ss, sc, &scale_cpu));
      // The CPU twin with the device's scale: without active clipping, that is the CPU backend's 1 (asserted) ...
      adam_update_cpu(cpu.p.data(), g.data(), cpu.m.data(), cpu.v.data(), n, kLr, kB1, kB2, kEps, t, sc[0]);
      if (mode != kClipActive) continue;
      // ... with active clipping, also fully independently, with the CPU backend's own scale.
      const std::vector<float> p_before = independent.p;
      adam_update_cpu(independent.p.data(), g.data(), independent.m.data(), independent.v.data(), n, kLr, kB1, kB2,
                      kEps, t, scale_cpu);
      add_independent_bound(g, n, t, scale_cpu, p_before, independent, &m_abs, &dp_bound);
    }
    const State gpu{d_p.get(), d_m.get(), d_v.get()};
    // Given the same scalars, adam_update_cuda performs adam_update_cpu's float operations in the same order,
    // each correctly rounded (products feeding an addition are __fmul_rn, so no FMA contraction; sqrtf and the
    // division are IEEE-rounded without fast math): bitwise equal, and checked as such (0 ulp).
    const double worst = expect_state_close(gpu, cpu, 0.0);
    if (mode != kClipActive) {
      printf("adam n %zu clip mode %d: max %.3g ulp (p, m, v) vs adam_update_cpu\n", n, (int)mode, worst);
      continue;
    }
    ASSERT_NO_FATAL_FAILURE(expect_independent_close(gpu, independent, dp_bound, n, mode, worst));
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, KernelAdam, testing::Values(size_t{1}, size_t{1000}, size_t{4099}, size_t{652824}));

TEST(KernelAdamSingle, SumSquaresAndStepDeterministic) {
  const size_t n = 100003;
  const std::vector<float> g = gradient(n, 3);
  const State s = initial_state(n, 4);
  State out[2];
  for (State &o : out) {
    DevBuf<float> d_p(s.p), d_m(s.m), d_v(s.v), d_g(g), d_ss(1 + CUVAE_SUM_SQUARES_PARTIALS),
        d_scalars(CUVAE_ADAM_SCALARS), d_lr(std::vector<float>{kLr});
    DevBuf<int64_t> d_step(std::vector<int64_t>{41});  // any starting step: prepare continues from it
    for (int k = 0; k < 2; k++)
      CUDA_OK(device_step(d_g.p, n, 1.0f, d_ss.p, d_step.p, d_lr.p, d_scalars.p, d_p.p, d_m.p, d_v.p, 0));
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(43, d_step.get()[0]);
    o = State{d_p.get(), d_m.get(), d_v.get()};
    o.p.push_back(d_ss.get()[0]);  // the sum of squares rides along in the comparison
  }
  EXPECT_EQ(0, memcmp(out[0].p.data(), out[1].p.data(), out[0].p.size() * sizeof(float)));
  EXPECT_EQ(0, memcmp(out[0].m.data(), out[1].m.data(), n * sizeof(float)));
  EXPECT_EQ(0, memcmp(out[0].v.data(), out[1].v.data(), n * sizeof(float)));
}

// Buffers starting one float past a 16-byte boundary take the scalar paths of adam_update and sum_squares. The
// update is elementwise and the sum's order depends on n alone, so both give the aligned run's bits exactly; the
// parameters also match adam_update_cpu exactly (FiveStepsMatchCpu's argument).
TEST(KernelAdamSingle, UnalignedBuffersGiveTheSameBits) {
  const size_t n = 4099;
  const std::vector<float> g = gradient(n, 5);
  const State s = initial_state(n, 6);
  State out[2];
  float ss[2];
  for (int offset = 0; offset < 2; offset++) {
    SCOPED_TRACE(testing::Message() << "offset " << offset);
    auto padded = [&](const std::vector<float> &h) {
      std::vector<float> v(n + 1, 0.0f);
      std::copy(h.begin(), h.end(), v.begin() + offset);
      return v;
    };
    DevBuf<float> d_p(padded(s.p)), d_m(padded(s.m)), d_v(padded(s.v)), d_g(padded(g));
    DevBuf<float> d_ss(1 + CUVAE_SUM_SQUARES_PARTIALS), d_scalars(CUVAE_ADAM_SCALARS), d_lr(std::vector<float>{kLr});
    DevBuf<int64_t> d_step(std::vector<int64_t>{0});
    CUDA_OK(device_step(d_g.p + offset, n, 0.0f, d_ss.p, d_step.p, d_lr.p, d_scalars.p, d_p.p + offset,
                        d_m.p + offset, d_v.p + offset, 0));
    CUDA_OK(cudaDeviceSynchronize());
    auto unpad = [&](const DevBuf<float> &d) {
      const std::vector<float> h = d.get();
      return std::vector<float>(h.begin() + offset, h.begin() + offset + n);
    };
    out[offset] = State{unpad(d_p), unpad(d_m), unpad(d_v)};
    ss[offset] = d_ss.get()[0];
  }
  EXPECT_EQ(0, memcmp(&ss[0], &ss[1], sizeof(float))) << ss[0] << " vs " << ss[1];
  EXPECT_EQ(0, memcmp(out[0].p.data(), out[1].p.data(), n * sizeof(float)));
  EXPECT_EQ(0, memcmp(out[0].m.data(), out[1].m.data(), n * sizeof(float)));
  EXPECT_EQ(0, memcmp(out[0].v.data(), out[1].v.data(), n * sizeof(float)));
  State cpu = s;
  adam_update_cpu(cpu.p.data(), g.data(), cpu.m.data(), cpu.v.data(), n, kLr, kB1, kB2, kEps, 1, 1.0f);
  expect_state_close(out[1], cpu, 0.0);
}

TEST(KernelAdamSingle, RejectsInvalidArguments) {
  DevBuf<float> f(8), scalars(CUVAE_ADAM_SCALARS), lr(std::vector<float>{kLr});
  DevBuf<int64_t> step(1);
  EXPECT_EQ(cudaErrorInvalidValue, sum_squares_cuda(f.p, 0, f.p, f.p, 0));
  EXPECT_EQ(cudaErrorInvalidValue, sum_squares_cuda(nullptr, 8, f.p, f.p, 0));
  EXPECT_EQ(cudaErrorInvalidValue, sum_squares_cuda(f.p, 8, nullptr, f.p, 0));
  EXPECT_EQ(cudaErrorInvalidValue, sum_squares_cuda(f.p, 8, f.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, adam_update_cuda(f.p, f.p, f.p, f.p, 0, kB1, kB2, kEps, scalars.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, adam_update_cuda(f.p, f.p, f.p, f.p, 8, kB1, kB2, kEps, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, adam_update_cuda(nullptr, f.p, f.p, f.p, 8, kB1, kB2, kEps, scalars.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue,
            adam_prepare_cuda(f.p, nullptr, lr.p, nullptr, 0.0f, kB1, kB2, scalars.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue,
            adam_prepare_cuda(nullptr, step.p, lr.p, nullptr, 0.0f, kB1, kB2, scalars.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue,
            adam_prepare_cuda(f.p, step.p, nullptr, nullptr, 0.0f, kB1, kB2, scalars.p, nullptr, 0));  // no rate
  EXPECT_EQ(cudaErrorInvalidValue, adam_prepare_cuda(f.p, step.p, lr.p, nullptr, 0.0f, kB1, kB2, nullptr, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue,
            adam_prepare_cuda(f.p, step.p, lr.p, nullptr, -1.0f, kB1, kB2, scalars.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue, adam_prepare_cuda(f.p, step.p, lr.p, nullptr, NAN, kB1, kB2, scalars.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue,
            adam_prepare_cuda(f.p, step.p, lr.p, nullptr, 0.0f, 1.0f, kB2, scalars.p, nullptr, 0));
  EXPECT_EQ(cudaErrorInvalidValue,
            adam_prepare_cuda(f.p, step.p, lr.p, nullptr, 0.0f, kB1, -0.5f, scalars.p, nullptr, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // rejected before any launch: no error left behind
}

// The training graph's optimiser part: sum of squares, prepare, update, captured once and replayed 3 times.
// Nothing per step is a kernel argument, so each replay must be the next step: step 1, 2, 3 on the CPU, each with
// the rate the host wrote to the device's lr before the replay (as cuda_train_step uploads cuvae_lr_at_step's).
TEST(KernelAdamSingle, GraphReplayIsThreeSteps) {
  const size_t n = 1000;
  const std::vector<float> g = gradient(n, 77);
  const double norm = grad_norm_cpu(g.data(), n);
  for (ClipMode mode : {kClipOff, kClipActive}) {
    SCOPED_TRACE(testing::Message() << "clip mode " << mode);
    const float clip = mode == kClipOff ? 0.0f : (float)(0.25 * norm);
    State cpu = initial_state(n, 78);
    DevBuf<float> d_p(cpu.p), d_m(cpu.m), d_v(cpu.v), d_g(g), d_ss(1 + CUVAE_SUM_SQUARES_PARTIALS),
        d_scalars(CUVAE_ADAM_SCALARS), d_lr(std::vector<float>{0.0f});
    DevBuf<int64_t> d_step(std::vector<int64_t>{0});
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    CUDA_OK(device_step(d_g.p, n, clip, d_ss.p, d_step.p, d_lr.p, d_scalars.p, d_p.p, d_m.p, d_v.p, stream));
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    EXPECT_EQ(0, d_step.get()[0]) << "capture runs nothing";
    for (int64_t t = 1; t <= 3; t++) {
      const float lr = kLr * (float)t / 3.0f;  // a warm-up: a different rate at each replay
      d_lr.put(std::vector<float>{lr});
      CUDA_OK(cudaGraphLaunch(exec, stream));
      CUDA_OK(cudaStreamSynchronize(stream));
      ASSERT_EQ(t, d_step.get()[0]);
      const std::vector<float> sc = d_scalars.get();
      EXPECT_LE(ulps(sc[1], correction(kB1, t)), 1.0);  // the bias corrections of step t
      EXPECT_LE(ulps(sc[2], correction(kB2, t)), 1.0);
      EXPECT_EQ(lr, sc[4]);  // this replay's rate, not the one at capture
      if (mode == kClipOff) {
        EXPECT_EQ(1.0f, sc[0]);
      }
      adam_update_cpu(cpu.p.data(), g.data(), cpu.m.data(), cpu.v.data(), n, lr, kB1, kB2, kEps, t, sc[0]);
    }
    // Same argument as FiveStepsMatchCpu: the same float operations on the same inputs: bitwise equal.
    expect_state_close(State{d_p.get(), d_m.get(), d_v.get()}, cpu, 0.0);
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(stream));
  }
}

// adam_update_bf16_cuda vs adam_update_bf16_cpu over 3 steps, given the device's scalars: p, m, v and the bf16 weight
// copy p16 bit for bit (the update is adam_update_cuda's, checked bitwise above; bf16(p) is one round to nearest
// even of the same float on both sides, docs/MATH.md (8.1)). n = 4099 takes the float4 path and its 3-element tail,
// the buffers offset by one float the scalar path. A halted step writes nothing, p16 included.
TEST(KernelAdamSingle, Bf16WeightCopyMatchesCpuBitForBit) {
  for (size_t offset : {size_t{0}, size_t{1}}) {
    SCOPED_TRACE(testing::Message() << "offset " << offset);
    const size_t n = 4099;
    State cpu = initial_state(n, 11u);
    std::vector<uint16_t> p16_cpu(n);
    DevBuf<float> d_p(n + 1), d_m(n + 1), d_v(n + 1), d_g(n + 1), d_ss(1 + CUVAE_SUM_SQUARES_PARTIALS),
        d_scalars(CUVAE_ADAM_SCALARS), d_lr(std::vector<float>{kLr});
    DevBuf<uint16_t> d_p16(n + 1);
    DevBuf<int64_t> d_step(std::vector<int64_t>{0}), d_halted(std::vector<int64_t>{0});
    float *p = d_p.p + offset, *m = d_m.p + offset, *v = d_v.p + offset, *g = d_g.p + offset;
    uint16_t *p16 = d_p16.p + offset;
    CUDA_OK(cudaMemcpy(p, cpu.p.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(m, cpu.m.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(v, cpu.v.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    for (int64_t t = 1; t <= 3; t++) {
      const std::vector<float> grad = gradient(n, 500u + (unsigned)t);
      CUDA_OK(cudaMemcpy(g, grad.data(), n * sizeof(float), cudaMemcpyHostToDevice));
      CUDA_OK(sum_squares_cuda(g, n, d_ss.p + 1, d_ss.p, 0));
      CUDA_OK(adam_prepare_cuda(d_ss.p, d_step.p, d_lr.p, nullptr, 0.0f, kB1, kB2, d_scalars.p, d_halted.p, 0));
      CUDA_OK(adam_update_bf16_cuda(p, g, m, v, n, kB1, kB2, kEps, d_scalars.p, d_halted.p, p16, 0));
      CUDA_OK(cudaDeviceSynchronize());
      adam_update_bf16_cpu(cpu.p.data(), grad.data(), cpu.m.data(), cpu.v.data(), n, kLr, kB1, kB2, kEps, t,
                           d_scalars.get()[0], p16_cpu.data());
    }
    State gpu{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
    std::vector<uint16_t> p16_gpu(n);
    CUDA_OK(cudaMemcpy(gpu.p.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(gpu.m.data(), m, n * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(gpu.v.data(), v, n * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(p16_gpu.data(), p16, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    expect_state_close(gpu, cpu, 0.0);
    EXPECT_EQ(p16_gpu, p16_cpu);
    for (size_t i = 0; i < n; i += 97) ASSERT_EQ(p16_gpu[i], cuvae_bf16_from_float(gpu.p[i])) << i;
    // Halted (step_guard saw a non-finite step): p, m, v and p16 stay as they are.
    CUDA_OK(cudaMemcpy(d_halted.p, std::vector<int64_t>{3}.data(), sizeof(int64_t), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(p16, 0x5a, n * sizeof(uint16_t)));
    CUDA_OK(adam_update_bf16_cuda(p, g, m, v, n, kB1, kB2, kEps, d_scalars.p, d_halted.p, p16, 0));
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(p16_gpu.data(), p16, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    EXPECT_EQ(p16_gpu, std::vector<uint16_t>(n, 0x5a5a));
  }
  DevBuf<float> one(1), sc(CUVAE_ADAM_SCALARS);
  EXPECT_EQ(cudaErrorInvalidValue,
            adam_update_bf16_cuda(one.p, one.p, one.p, one.p, 1, kB1, kB2, kEps, sc.p, nullptr, nullptr, 0));
}

}  // namespace
