// kernels/iwae.cu against its CPU twins (src/backend/cpu/iwae_cpu.c): iwae_replicate_cuda, iwae_reparam_cuda,
// iwae_log_weights_cuda (per-sample log-weights and the streaming log-sum-exp state), iwae_finalize_cuda, at shapes
// that are and are not multiples of the block (C = 1, 7, 33, 256, 300, 1000; Z = 1, 3, 20, 1000; R = 1, 3, 19, 257);
// chunked streaming against a one-shot log-sum-exp; widely spread, -inf and NaN log-weights; determinism; argument
// checks; graph replay.
//
// Tolerances. u = 2^-24 (float's unit roundoff), ud = 2^-53 (double's).
// - replicate: a copy: bitwise equal.
// - reparam: z = mu + sd * eps with sd = expf(0.5 lv). 0.5 lv is exact; expf errs by <= 2 ulp on a GPU (CUDA
//   programming guide, expf) and <= 1 ulp in glibc's scalar expf (the twin), one ulp being <= 2u relative: the two
//   sd differ by <= 6u relative. The product and the sum round once each on the CPU; nvcc may fuse them into one
//   fma: another <= u |sd eps| + u |z| from each side. So |z_gpu - z_cpu| <= 8u |sd eps| + 2u |z|. (Under the
//   emulation both sides are the same float operations with the same libm: equal.)
// - log-weights: both sides form log w = -nll - 0.5 sum_j (z_j^2 - eps_j^2 - lv_j) in double from the same floats
//   (products of floats are exact in double), each checked against a long double reference (its own error
//   <= (Z + 4) 2^-64 S, under ud S for Z < 2^11) with S = |nll| + 0.5 sum_j (z_j^2 + eps_j^2 + |lv_j|): every
//   rounding errs by at most ud of a running magnitude <= S. The twin sums the Z terms serially: 2 roundings per
//   term, Z - 1 additions, 1 for -nll: <= (Z + 4) ud S with the reference's share. The kernel sums each sample
//   over a warp (lane l takes j = l, l + 32, ...: ceil(Z / 32) serial additions, then 5 butterfly levels): <=
//   (2 + ceil(Z / 32) + 5 + 1 + 1) ud S = (ceil(Z / 32) + 9) ud S, tighter than the twin's for Z > 5 (nvcc
//   fusing a product into a subtraction only removes roundings). |dw| = |gpu - cpu| is at most the sum of both.
// - log-sum-exp state, compared through log_px = m + log t - log K: both sides add the same log-weights (equal up
//   to the bound above; a shift dw of every term moves log_px by at most max dw, log-sum-exp being 1-Lipschitz in
//   the max norm), in different orders (the twin in sample order, the kernel per thread then a tree): each merge
//   rounds t by at most 2 ud relative and each exp(x <= 0) errs by <= 1 ulp of a value <= 1, and t passes through
//   at most C + 10 merges, so |dlog t| <= 4 (C + 10) ud. Total |dlog_px| <= max dw + 4 (C + 10) ud (+ 4 ud of
//   the final log and sum).
// - chunked vs one-shot: the reference is a log-sum-exp in long double over all K values (max first, then the sum
//   of exp(v - max) in sample order), exact to far below ud; the streamed value errs by the merge bound above with
//   C = K (each sample passes through at most K + 10 merges across chunks and trees, plus one merge per chunk).
#include "cuda_compat.h"

#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

constexpr double kU = 1.0 / (1 << 24);             // 2^-24
constexpr double kUd = 1.0 / 9007199254740992.0;   // 2^-53

template <typename T>
using DevBuf = DeviceVec<T>;  // tests/cuda/device_vec.h

std::vector<float> make_uniform(size_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &a : v) a = u(rng);
  return v;
}

std::vector<float> make_normal(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float &a : v) a = g(rng);
  return v;
}

// mulv rows [mu | lv]: mu in [-2, 2], lv in [-6, 1] (posterior sds from 0.05 to 1.6, as trained encoders give).
std::vector<float> make_mulv(int R, int Z, unsigned seed) {
  std::vector<float> mulv = make_uniform((size_t)R * 2 * Z, -2.0f, 2.0f, seed);
  const std::vector<float> lv = make_uniform((size_t)R * Z, -6.0f, 1.0f, seed + 1);
  for (int r = 0; r < R; r++)
    for (int j = 0; j < Z; j++) mulv[(size_t)r * 2 * Z + Z + j] = lv[(size_t)r * Z + j];
  return mulv;
}

bool bitwise_equal(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

struct Shape {
  int R, C, Z;
};
const Shape kShapes[] = {{1, 1, 1},  {3, 7, 3},    {19, 7, 20},  {1, 1000, 20}, {2, 300, 3},
                         {257, 1, 20}, {5, 33, 1000}, {3, 256, 1}, {4, 257, 7}};

TEST(KernelIwae, ReplicateMatchesCpu) {
  const int shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {19, 7, 784}, {1, 1000, 33}, {257, 1, 300}, {2, 300, 31}};
  for (const auto &s : shapes) {
    const int R = s[0], C = s[1], D = s[2];
    const std::vector<float> x = make_uniform((size_t)R * D, 0.0f, 1.0f, 10 + R + D);
    std::vector<float> cpu((size_t)R * C * D);
    iwae_replicate_cpu(x.data(), cpu.data(), R, C, D);
    DevBuf<float> dx(x), drep(cpu.size());
    ASSERT_EQ(cudaSuccess, iwae_replicate_cuda(dx.p, drep.p, R, C, D, 0));
    ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
    const std::vector<float> gpu = drep.get();
    // A copy: equal bit for bit (file comment).
    EXPECT_TRUE(bitwise_equal(gpu.data(), cpu.data(), cpu.size() * sizeof(float))) << R << "x" << C << "x" << D;
    // And it is the documented layout: row s*R + r is data row r.
    for (int s2 = 0; s2 < C; s2 += std::max(1, C / 5))
      for (int r = 0; r < R; r += std::max(1, R / 4))
        ASSERT_EQ(0, memcmp(&cpu[((size_t)s2 * R + r) * D], &x[(size_t)r * D], D * sizeof(float)));
  }
}

TEST(KernelIwae, ReparamMatchesCpu) {
  double worst = 0;
  for (const Shape &s : kShapes) {
    SCOPED_TRACE(testing::Message() << "R " << s.R << " C " << s.C << " Z " << s.Z);
    const size_t n = (size_t)s.R * s.C * s.Z;
    const std::vector<float> mulv = make_mulv(s.R, s.Z, 20 + s.R), eps = make_normal(n, 30 + s.C);
    std::vector<float> cpu(n);
    iwae_reparam_cpu(mulv.data(), eps.data(), cpu.data(), s.R, s.C, s.Z);
    DevBuf<float> dm(mulv), de(eps), dz(n);
    ASSERT_EQ(cudaSuccess, iwae_reparam_cuda(dm.p, de.p, dz.p, s.R, s.C, s.Z, 0));
    ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
    const std::vector<float> gpu = dz.get();
    for (size_t k = 0; k < n; k++) {
      const size_t i = k / s.Z, j = k % s.Z, r = i % s.R;
      const double sd_e = exp(0.5 * mulv[r * 2 * s.Z + s.Z + j]) * fabs((double)eps[k]);
      const double tol = 8 * kU * sd_e + 2 * kU * fabs((double)cpu[k]);  // file comment
      const double err = fabs((double)gpu[k] - cpu[k]);
      ASSERT_LE(err, tol) << "entry " << k << " gpu " << gpu[k] << " cpu " << cpu[k];
      // and the twin is the definition, mu_r + exp(0.5 lv_r) eps, in float
      const float mu = mulv[r * 2 * s.Z + j], sd = expf(0.5f * mulv[r * 2 * s.Z + s.Z + j]);
      ASSERT_EQ(mu + sd * eps[k], cpu[k]) << "entry " << k;
      if (tol > 0) worst = std::max(worst, err / tol);
    }
  }
  printf("worst |gpu-cpu|/tol: %.3g\n", worst);
}

struct Chunk {
  std::vector<float> mulv, eps, z, nll;
};

// A chunk with z from the twin, and NLLs in [lo, hi].
Chunk make_chunk(const Shape &s, float lo, float hi, unsigned seed) {
  Chunk c;
  const size_t n = (size_t)s.R * s.C;
  c.mulv = make_mulv(s.R, s.Z, seed);
  c.eps = make_normal(n * s.Z, seed + 1);
  c.z.resize(n * s.Z);
  iwae_reparam_cpu(c.mulv.data(), c.eps.data(), c.z.data(), s.R, s.C, s.Z);
  c.nll = make_uniform(n, lo, hi, seed + 2);
  return c;
}

// Kernel log-weights and state (reset, or merged into `state0`), per call; the state's host copy comes back.
void run_log_weights(const Shape &s, const Chunk &c, std::vector<double> *log_w, std::vector<double> *state,
                     int reset) {
  DevBuf<float> dm(c.mulv), de(c.eps), dz(c.z), dn(c.nll);
  DevBuf<double> dw((size_t)s.R * s.C), dst(*state);
  ASSERT_EQ(cudaSuccess, iwae_log_weights_cuda(dm.p, de.p, dz.p, dn.p, s.R, s.C, s.Z, log_w ? dw.p : nullptr, dst.p,
                                               reset, 0));
  ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
  if (log_w) *log_w = dw.get();
  *state = dst.get();
}

std::vector<double> finalize_gpu(const std::vector<double> &state, int R, int K) {
  DevBuf<double> dst(state), dout(R);
  EXPECT_EQ(cudaSuccess, iwae_finalize_cuda(dst.p, R, K, dout.p, 0));
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  return dout.get();
}

TEST(KernelIwae, LogWeightsMatchCpu) {
  double worst_w = 0, worst_px = 0;
  for (const Shape &s : kShapes) {
    SCOPED_TRACE(testing::Message() << "R " << s.R << " C " << s.C << " Z " << s.Z);
    const size_t n = (size_t)s.R * s.C;
    const Chunk c = make_chunk(s, 50.0f, 800.0f, 40 + s.R * 3 + s.C);
    std::vector<double> cpu_w(n), cpu_state(2 * s.R), gpu_w, gpu_state(2 * s.R, 0.0);
    iwae_log_weights_cpu(c.mulv.data(), c.eps.data(), c.z.data(), c.nll.data(), s.R, s.C, s.Z, cpu_w.data(),
                         cpu_state.data(), 1);
    run_log_weights(s, c, &gpu_w, &gpu_state, 1);
    double max_dw = 0;
    for (size_t i = 0; i < n; i++) {
      const size_t r = i % s.R;
      double S = fabs((double)c.nll[i]);
      long double acc = 0;
      for (int j = 0; j < s.Z; j++) {
        const long double zj = c.z[i * s.Z + j], ej = c.eps[i * s.Z + j], lj = c.mulv[r * 2 * s.Z + s.Z + j];
        S += 0.5 * (double)(zj * zj + ej * ej + fabsl(lj));
        acc += zj * zj - ej * ej - lj;
      }
      const double ref = (double)(-(long double)c.nll[i] - 0.5L * acc);  // docs/MATH.md section 5's formula
      // file comment: the kernel's bound, the twin's, and their sum for the difference
      const double tol_gpu = ((s.Z + 31) / 32 + 9) * kUd * S, tol_cpu = (s.Z + 4) * kUd * S, tol = tol_gpu + tol_cpu;
      const double err = fabs(gpu_w[i] - cpu_w[i]);
      ASSERT_LE(fabs(gpu_w[i] - ref), tol_gpu) << "sample " << i << " gpu " << gpu_w[i] << " ref " << ref;
      ASSERT_LE(fabs(cpu_w[i] - ref), tol_cpu) << "sample " << i << " cpu " << cpu_w[i] << " ref " << ref;
      ASSERT_LE(err, tol) << "sample " << i << " gpu " << gpu_w[i] << " cpu " << cpu_w[i];
      max_dw = std::max(max_dw, err);
      if (tol > 0) worst_w = std::max(worst_w, err / tol);
    }
    const int K = s.C;
    const std::vector<double> cpu_px = [&] {
      std::vector<double> v(s.R);
      iwae_finalize_cpu(cpu_state.data(), s.R, K, v.data());
      return v;
    }();
    const std::vector<double> gpu_px = finalize_gpu(gpu_state, s.R, K);
    for (int r = 0; r < s.R; r++) {
      // max dw (already bounded) + the merge bound of the file comment.
      const double tol = max_dw + 4 * (s.C + 10) * kUd + 4 * kUd * fabs(cpu_px[r]);
      const double err = fabs(gpu_px[r] - cpu_px[r]);
      ASSERT_TRUE(std::isfinite(gpu_px[r])) << "row " << r;
      ASSERT_LE(err, tol) << "row " << r << " gpu " << gpu_px[r] << " cpu " << cpu_px[r];
      worst_px = std::max(worst_px, err / tol);
    }
  }
  printf("worst |gpu-cpu|/tol: log w %.3g, log p(x) %.3g\n", worst_w, worst_px);
}

// log-sum-exp of v in long double: max first, then the sum of exp(v - max) in order.
long double lse_ref(const std::vector<double> &v) {
  long double m = -INFINITY;
  for (double a : v) m = std::max(m, (long double)a);
  long double t = 0;
  for (double a : v) t += expl((long double)a - m);
  return m + logl(t);
}

// Chunks of a row's K log-weights given directly: Z = 1 with mu = lv = eps = z = 0 makes log w = -nll exactly.
// Every split of K into chunks, streamed through the state, gives the one-shot log-sum-exp - log K.
TEST(KernelIwae, ChunkedStreamingEqualsOneShot) {
  const int R = 3, K = 1000;
  // Row 0: log-weights spread over 4000 nats (most terms underflow next to the max); row 1: a narrow cluster near
  // -300 (all terms count); row 2: around -1e5 with spread 20 (exp(v) alone would underflow; the shift must not).
  std::vector<std::vector<double>> lw(R, std::vector<double>(K));
  {
    const std::vector<float> a = make_uniform(K, -4000.0f, 0.0f, 50), b = make_normal(K, 51),
                             c = make_uniform(K, -10.0f, 10.0f, 52);
    for (int k = 0; k < K; k++) {
      lw[0][k] = (double)a[k];
      lw[1][k] = (double)(-300.0f + b[k]);
      lw[2][k] = (double)(-1e5f + c[k]);
    }
  }
  const std::vector<std::vector<int>> splits = {{1000}, {333, 333, 334}, {1, 999}, {256, 256, 256, 232}, {7, 993},
                                                 std::vector<int>(10, 100)};
  double worst = 0;
  for (const auto &split : splits) {
    SCOPED_TRACE(testing::Message() << split.size() << " chunks, the first of " << split[0]);
    std::vector<double> gpu_state(2 * R, 0.0), cpu_state(2 * R, 0.0);
    int done = 0;
    for (size_t ci = 0; ci < split.size(); ci++) {
      const int C = split[ci];
      const Shape s{R, C, 1};
      Chunk c;
      c.mulv.assign(2 * R, 0.0f);
      c.eps.assign((size_t)R * C, 0.0f);
      c.z.assign((size_t)R * C, 0.0f);
      c.nll.resize((size_t)R * C);
      for (int s2 = 0; s2 < C; s2++)
        for (int r = 0; r < R; r++) c.nll[(size_t)s2 * R + r] = (float)-lw[r][done + s2];  // exact: lw are floats
      run_log_weights(s, c, nullptr, &gpu_state, ci == 0);
      iwae_log_weights_cpu(c.mulv.data(), c.eps.data(), c.z.data(), c.nll.data(), R, C, 1, nullptr, cpu_state.data(),
                           ci == 0);
      done += C;
    }
    ASSERT_EQ(done, K);
    const std::vector<double> gpu_px = finalize_gpu(gpu_state, R, K);
    std::vector<double> cpu_px(R);
    iwae_finalize_cpu(cpu_state.data(), R, K, cpu_px.data());
    for (int r = 0; r < R; r++) {
      const double ref = (double)(lse_ref(lw[r]) - logl((long double)K));
      // merge bound with C = K, one more merge per chunk, 4 ud for the final log/sum (file comment)
      const double tol = 4 * (K + 10 + (double)split.size()) * kUd + 4 * kUd * fabs(ref);
      EXPECT_LE(fabs(gpu_px[r] - ref), tol) << "gpu row " << r << ": " << gpu_px[r] << " vs " << ref;
      EXPECT_LE(fabs(cpu_px[r] - ref), tol) << "cpu row " << r << ": " << cpu_px[r] << " vs " << ref;
      worst = std::max(worst, std::max(fabs(gpu_px[r] - ref), fabs(cpu_px[r] - ref)) / tol);
    }
  }
  printf("worst |streamed - one-shot|/tol: %.3g\n", worst);
}

// -inf log-weights (nll = +inf) add nothing; a row of only -inf gives -inf; a NaN poisons its row only.
TEST(KernelIwae, InfiniteAndNanWeights) {
  const int R = 4, C = 40;
  Chunk c;
  c.mulv.assign(2 * R, 0.0f);
  c.eps.assign((size_t)R * C, 0.0f);
  c.z.assign((size_t)R * C, 0.0f);
  c.nll.assign((size_t)R * C, 5.0f);
  for (int s = 0; s < C; s++) {
    c.nll[(size_t)s * R + 0] = s % 3 ? INFINITY : 5.0f;  // row 0: a third of the samples count
    c.nll[(size_t)s * R + 1] = INFINITY;                  // row 1: nothing counts
  }
  c.nll[(size_t)17 * R + 2] = NAN;  // row 2: one NaN; row 3: all 5
  std::vector<double> gpu_state(2 * R, 0.0), cpu_state(2 * R);
  run_log_weights({R, C, 1}, c, nullptr, &gpu_state, 1);
  iwae_log_weights_cpu(c.mulv.data(), c.eps.data(), c.z.data(), c.nll.data(), R, C, 1, nullptr, cpu_state.data(), 1);
  const std::vector<double> gpu = finalize_gpu(gpu_state, R, C);
  std::vector<double> cpu(R);
  iwae_finalize_cpu(cpu_state.data(), R, C, cpu.data());
  const int counted = (C + 2) / 3;  // s = 0, 3, 6, ...
  for (const std::vector<double> *v : std::vector<const std::vector<double> *>{&gpu, &cpu}) {
    // log(counted e^-5 / C) = -5 + log(counted / C); both sides sum at most 40 exact ones (exp(0)): a few ud.
    EXPECT_NEAR((*v)[0], -5.0 + log((double)counted / C), 1e-14);
    EXPECT_EQ(-INFINITY, (*v)[1]);
    EXPECT_TRUE(std::isnan((*v)[2]));
    EXPECT_NEAR((*v)[3], -5.0, 1e-14);  // log(C e^-5 / C): exact up to the rounding of log C twice
  }
}

TEST(KernelIwae, Deterministic) {
  const Shape s{19, 300, 20};
  const Chunk c = make_chunk(s, 100.0f, 300.0f, 60);
  std::vector<double> w1, w2, st1(2 * s.R, 0.0), st2(2 * s.R, 0.0);
  run_log_weights(s, c, &w1, &st1, 1);
  run_log_weights(s, c, &w2, &st2, 1);
  EXPECT_TRUE(bitwise_equal(w1.data(), w2.data(), w1.size() * sizeof(double)));
  EXPECT_TRUE(bitwise_equal(st1.data(), st2.data(), st1.size() * sizeof(double)));
  // merging a chunk into a state twice from the same start is also the same bits
  std::vector<double> m1 = st1, m2 = st1;
  run_log_weights(s, c, nullptr, &m1, 0);
  run_log_weights(s, c, nullptr, &m2, 0);
  EXPECT_TRUE(bitwise_equal(m1.data(), m2.data(), m1.size() * sizeof(double)));
}

TEST(KernelIwae, InvalidArguments) {
  DevBuf<float> a(64), b(64), c(64), d(64);
  DevBuf<double> st(8), out(4);
  const cudaError_t inval = cudaErrorInvalidValue;
  EXPECT_EQ(inval, iwae_replicate_cuda(a.p, b.p, 0, 1, 1, 0));
  EXPECT_EQ(inval, iwae_replicate_cuda(a.p, b.p, 1, 0, 1, 0));
  EXPECT_EQ(inval, iwae_replicate_cuda(a.p, b.p, 1, 1, 0, 0));
  EXPECT_EQ(inval, iwae_replicate_cuda(nullptr, b.p, 1, 1, 1, 0));
  EXPECT_EQ(inval, iwae_reparam_cuda(a.p, b.p, c.p, 1, 1, 0, 0));
  EXPECT_EQ(inval, iwae_reparam_cuda(a.p, nullptr, c.p, 1, 1, 1, 0));
  EXPECT_EQ(inval, iwae_log_weights_cuda(a.p, b.p, c.p, d.p, 0, 1, 1, nullptr, st.p, 1, 0));
  EXPECT_EQ(inval, iwae_log_weights_cuda(a.p, b.p, c.p, d.p, 1, -1, 1, nullptr, st.p, 1, 0));
  EXPECT_EQ(inval, iwae_log_weights_cuda(a.p, b.p, c.p, nullptr, 1, 1, 1, nullptr, st.p, 1, 0));
  EXPECT_EQ(inval, iwae_log_weights_cuda(a.p, b.p, c.p, d.p, 1, 1, 1, nullptr, nullptr, 1, 0));
  EXPECT_EQ(inval, iwae_finalize_cuda(st.p, 0, 1, out.p, 0));
  EXPECT_EQ(inval, iwae_finalize_cuda(st.p, 1, 0, out.p, 0));
  EXPECT_EQ(inval, iwae_finalize_cuda(nullptr, 1, 1, out.p, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // nothing was launched
}

// One chunk's launches (reparam, log-weights, finalize) captured into a graph; two replays (outputs cleared
// between them) equal the same launches run eagerly, bit for bit.
TEST(KernelIwae, GraphReplayEqualsEager) {
  const Shape s{7, 33, 20};
  const Chunk c = make_chunk(s, 100.0f, 300.0f, 70);
  DevBuf<float> dm(c.mulv), de(c.eps), dn(c.nll), dz((size_t)s.R * s.C * s.Z);
  DevBuf<double> dw((size_t)s.R * s.C), dst(2 * s.R), dpx(s.R);
  auto enqueue = [&](cudaStream_t stream) {
    EXPECT_EQ(cudaSuccess, iwae_reparam_cuda(dm.p, de.p, dz.p, s.R, s.C, s.Z, stream));
    EXPECT_EQ(cudaSuccess, iwae_log_weights_cuda(dm.p, de.p, dz.p, dn.p, s.R, s.C, s.Z, dw.p, dst.p, 1, stream));
    EXPECT_EQ(cudaSuccess, iwae_finalize_cuda(dst.p, s.R, s.C, dpx.p, stream));
  };
  enqueue(0);
  ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
  const std::vector<float> z = dz.get();
  const std::vector<double> w = dw.get(), px = dpx.get();
  cudaStream_t stream;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaSuccess, cudaStreamCreate(&stream));
  ASSERT_EQ(cudaSuccess, cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  enqueue(stream);
  ASSERT_EQ(cudaSuccess, cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(cudaSuccess, cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; replay++) {
    ASSERT_EQ(cudaSuccess, cudaMemsetAsync(dz.p, 0, dz.n * sizeof(float), stream));
    ASSERT_EQ(cudaSuccess, cudaMemsetAsync(dw.p, 0, dw.n * sizeof(double), stream));
    ASSERT_EQ(cudaSuccess, cudaMemsetAsync(dpx.p, 0, dpx.n * sizeof(double), stream));
    ASSERT_EQ(cudaSuccess, cudaGraphLaunch(exec, stream));
    ASSERT_EQ(cudaSuccess, cudaStreamSynchronize(stream));
    EXPECT_TRUE(bitwise_equal(z.data(), dz.get().data(), z.size() * sizeof(float))) << "replay " << replay;
    EXPECT_TRUE(bitwise_equal(w.data(), dw.get().data(), w.size() * sizeof(double))) << "replay " << replay;
    EXPECT_TRUE(bitwise_equal(px.data(), dpx.get().data(), px.size() * sizeof(double))) << "replay " << replay;
  }
  EXPECT_EQ(cudaSuccess, cudaGraphExecDestroy(exec));
  EXPECT_EQ(cudaSuccess, cudaGraphDestroy(graph));
  EXPECT_EQ(cudaSuccess, cudaStreamDestroy(stream));
}

}  // namespace
