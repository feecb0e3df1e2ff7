// kernels/likelihood.cu against its CPU twins (src/backend/cpu/likelihood_cpu.c): bernoulli_nll_grad_cuda,
// gaussian_nll_grad_cuda, gaussian_perdim_nll_grad_cuda and gaussian_shared_nll_grad_cuda, per-row negative
// log-likelihood and gradient, at B in {1, 3, 128, 257} x D in {1, 7, 784, 1000} (D = 1, 7: less than a warp; 784,
// 1000: not multiples of the block), extreme logits, NULL gradient, determinism, argument checks and graph replay;
// the learned-variance twins also against central differences of their own NLL.
//
// Tolerances. u = 2^-24 (float's unit roundoff).
// - Row sums: the kernel sums each row in float (per thread in column order, then a tree over at most 1024 threads),
//   the twin in double. With blocks of at least 32 threads each term passes through at most ceil(D/32) serial
//   additions and 10 tree levels, each adding a relative error <= u, so the sum errs by at most
//   (ceil(D/32) + 10) u sum|terms|. Each term itself is a handful of float operations, on both sides, bounded
//   relative to |parts| = |max(l,0)| + log1p(e) + |x l| (Bernoulli; this bounds the cancellation in softplus(l) -
//   x l) or (x - f)^2 / (2 s^2) (Gaussian, plus |const term|). Bernoulli: the twin's libmvec expf and log1pf (4 ulp
//   each, src/backend/cpu/simd_math.h) give log1p(e) within 16u of itself (e's 8u moves log1p(e) by <= 8u e / (1 + e) <= 8u
//   log1p(e)), and +, *, - round once each: <= 18u |parts| (as tests/test_math.cc counts); the GPU's expf 2 ulp
//   and log1pf 1 ulp (CUDA C Programming Guide): <= 9u |parts|; 27u together. Gaussian: (x - f)^2 and the
//   scaling, no transcendental: 10u together. Hence |gpu - cpu| <= (ceil(D/32) + 11 + T) u sum|parts|, T = 27
//   (Bernoulli) or 10 (Gaussian).
// - Bernoulli gradient: sigmoid = (1 or e) / (1 + e) has relative error <= 10u in the twin (expf 8u, no worse after
//   e's propagation, then the sum and the division u each) and <= 6u on a GPU (expf 4u), so |dsig| <= 16u
//   (sigmoid <= 1); then - x and * scale round once each per side, <= 4u |g|: atol = 16.1u |scale|, rtol = 4u.
// - Gaussian gradient: the same float operations as the twin (g_scale rounded from double the same way, f - x,
//   one product): equal; 1 ulp is allowed for safety.
// - Per-dimension learned variance (r = f - x, w = exp(-lv), rw = r w, q = r rw): r is the same float on both
//   sides; w comes from expf, <= 2 ulp on a GPU and <= 4 ulp in the twin's libmvec (1 ulp <= 2u relative), so the
//   two w differ by <= 12u relative; each product adds u per side: rw and df differ by <= 16u relative (rtol 16u),
//   q by <= 16u. dlv = (scale/2)(1 - q): 1 - q cancels, so |ddlv| <= 8u |scale| q + 4u |dlv| (atol from the
//   element's q, computed in double). NLL: each term q + lv differs by <= 18u (q + |lv|), plus the row-sum bound
//   and the final 0.5 acc + const (2u): |gpu - cpu| <= (ceil(D/32) + 40) u P, P = 0.5 sum_d (q + |lv|) + 0.5 D log 2pi.
// - Shared learned variance: w = exp(-lv) and scale w are formed in double and rounded once on both sides, so df is
//   the twin's (rtol 2u: one ulp, should a GPU's double exp round differently). The kernel's float sum of squared
//   residuals errs by <= (ceil(D/32) + 13) u S, S = sum_d (x - f)^2 (x - f and its square round once each, then
//   the row-sum bound); nll and dlv_row are w S / 2 (times scale) plus exact-in-double parts, rounded once per side:
//   |dnll| <= 0.5 w (ceil(D/32) + 13) u S + 2u |nll|, likewise dlv_row with the factor |scale|.
// - Central differences of the twins (step h = 2^-6, inputs on a 2^-8 grid so x +- h is exact in float; scale s):
//   the float NLL rounds once per side (|nll| u each) and the perturbed element's float term q / 2 errs by <= 6u q
//   per side (expf 4 ulp = 8u, r^2 2u, two products), so the quotient errs by [(|nll+| + |nll-|) u + 6u (q+ + q-)]
//   / (2h); the NLL is quadratic in f (central differences exact), in lv its third derivative is -q / 2, a
//   truncation error <= h^2/12 q e^h; the twin's gradient itself errs by <= 12u (|g| + |s| q). Shared: the twin
//   forms the NLL in double (only its final rounding counts) and df = fl(s w) fl(f - x), <= 3u |df|; S w plays q.
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

constexpr double kU = 1.0 / (1 << 24);  // 2^-24
const int kBatches[] = {1, 3, 128, 257};
const int kDims[] = {1, 7, 784, 1000};

using DevBuf = DeviceVec<float>;  // tests/cuda/device_vec.h

bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Data in [0, 1], with exact 0s and 1s sprinkled in (every 5th and 7th element).
std::vector<float> make_x(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; i++) x[i] = i % 5 == 0 ? 0.0f : i % 7 == 0 ? 1.0f : u(rng);
  return x;
}

std::vector<float> make_uniform(size_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &a : v) a = u(rng);
  return v;
}

struct Result {
  std::vector<float> nll, grad;
};

// One launch of the Bernoulli (gaussian == false) or Gaussian kernel (with the NLL's constant offset, (4.6)); the
// gradient is skipped when !with_grad.
Result run_gpu(bool gaussian, const std::vector<float> &out, const std::vector<float> &x, float sigma, float scale,
               int B, int D, bool with_grad, double offset = 0.0) {
  DevBuf d_out(out), d_x(x), d_nll(B), d_grad(with_grad ? out.size() : 1);
  float *grad = with_grad ? d_grad.p : nullptr;
  const cudaError_t err =
      gaussian ? gaussian_nll_grad_cuda(d_out.p, d_x.p, sigma, offset, d_nll.p, grad, scale, B, D, 0)
               : bernoulli_nll_grad_cuda(d_out.p, d_x.p, d_nll.p, grad, scale, B, D, 0);
  EXPECT_EQ(cudaSuccess, err);
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  Result r;
  r.nll = d_nll.get();
  if (with_grad) r.grad = d_grad.get();
  return r;
}

// The largest |gpu - cpu| / tol seen by the comparisons, per quantity (printed at the end of each test).
struct Worst {
  double nll = 0, grad = 0;
};

// GPU against the CPU twin: nll per row within the row-sum bound, gradient elementwise.
void compare_with_cpu(bool gaussian, const std::vector<float> &out, const std::vector<float> &x, float sigma,
                      float scale, int B, int D, Worst *worst, double offset = 0.0) {
  SCOPED_TRACE(testing::Message() << (gaussian ? "gaussian" : "bernoulli") << " B " << B << " D " << D << " sigma "
                                  << sigma << " scale " << scale << " offset " << offset);
  const Result gpu = run_gpu(gaussian, out, x, sigma, scale, B, D, true, offset);
  std::vector<float> nll(B), grad(out.size());
  if (gaussian)
    gaussian_nll_grad_cpu(out.data(), x.data(), sigma, offset, nll.data(), grad.data(), scale, B, D);
  else
    bernoulli_nll_grad_cpu(out.data(), x.data(), nll.data(), grad.data(), scale, B, D);

  const double s2 = (double)sigma * sigma, const_term = 0.5 * D * (log(s2) + log(2 * M_PI)) + offset;
  for (int b = 0; b < B; b++) {
    double parts = gaussian ? fabs(const_term) : 0.0;
    for (int d = 0; d < D; d++) {
      const double o = out[(size_t)b * D + d], xv = x[(size_t)b * D + d];
      parts += gaussian ? 0.5 * (xv - o) * (xv - o) / s2 : std::max(o, 0.0) + log1p(exp(-fabs(o))) + fabs(xv * o);
    }
    const double tol = ((D + 31) / 32 + 11 + (gaussian ? 10 : 27)) * kU * parts;
    const double err = fabs((double)gpu.nll[b] - nll[b]);
    ASSERT_TRUE(isfinite(gpu.nll[b])) << "row " << b;
    ASSERT_LE(err, tol) << "row " << b << " gpu " << gpu.nll[b] << " cpu " << nll[b];
    worst->nll = std::max(worst->nll, err / tol);
  }
  const double atol = gaussian ? 0.0 : 16.1 * kU * fabs(scale), rtol = gaussian ? 2 * kU : 4 * kU;
  for (size_t i = 0; i < grad.size(); i++) {
    const double tol = atol + rtol * fabs(grad[i]), err = fabs((double)gpu.grad[i] - grad[i]);
    ASSERT_TRUE(isfinite(gpu.grad[i])) << "element " << i;
    ASSERT_LE(err, tol) << "element " << i << " gpu " << gpu.grad[i] << " cpu " << grad[i];
    if (tol > 0) worst->grad = std::max(worst->grad, err / tol);
  }
}

// scale: 1 for the small D, 1/B (the batch mean, as in training) for the large ones.
TEST(KernelLikelihood, BernoulliMatchesCpu) {
  Worst worst;
  for (int B : kBatches)
    for (int D : kDims) {
      const size_t n = (size_t)B * D;
      const std::vector<float> logits = make_uniform(n, -8.0f, 8.0f, 100 + B * 7 + D), x = make_x(n, 200 + B + D);
      compare_with_cpu(false, logits, x, 0.0f, D < 100 ? 1.0f : 1.0f / B, B, D, &worst);
    }
  printf("worst |gpu-cpu|/tol: nll %.3g, gradient %.3g\n", worst.nll, worst.grad);
}

// Logits up to +-100 (exp(-|l|) underflows to subnormals and 0; softplus and sigmoid saturate), exact 0/1 data.
TEST(KernelLikelihood, BernoulliExtremeLogits) {
  const float special[] = {100.0f, -100.0f, 88.7f, -88.7f, 104.0f, -104.0f, 30.0f, -30.0f, 17.0f, -17.0f,
                           1e-3f,  -1e-3f,  0.0f,  -0.0f,  1e-30f, -1e-30f, 50.0f, -50.0f};
  const int n_special = sizeof(special) / sizeof(special[0]);
  Worst worst;
  for (int B : {3, 128})
    for (int D : kDims) {
      const size_t n = (size_t)B * D;
      std::vector<float> logits = make_uniform(n, -100.0f, 100.0f, 300 + B + D), x = make_x(n, 400 + B + D);
      for (size_t i = 0; i < n; i += 2) logits[i] = special[(i / 2) % n_special];
      for (size_t i = 0; i < n; i += 3) x[i] = (i / 3) % 2 ? 1.0f : 0.0f;
      compare_with_cpu(false, logits, x, 0.0f, 1.0f / B, B, D, &worst);
    }
  // Saturated rows: l = +100 with x = 1 and l = -100 with x = 0 are perfect fits (nll, gradient ~ 0); the
  // opposite signs cost 100 nats per element with gradient -+1.
  const int D = 7;
  const std::vector<float> l_pos(D, 100.0f), l_neg(D, -100.0f), ones(D, 1.0f), zeros(D, 0.0f);
  const Result fit1 = run_gpu(false, l_pos, ones, 0, 1.0f, 1, D, true);
  const Result fit0 = run_gpu(false, l_neg, zeros, 0, 1.0f, 1, D, true);
  const Result bad1 = run_gpu(false, l_neg, ones, 0, 1.0f, 1, D, true);
  const Result bad0 = run_gpu(false, l_pos, zeros, 0, 1.0f, 1, D, true);
  EXPECT_LE(fabs(fit1.nll[0]), 1e-30);
  EXPECT_LE(fabs(fit0.nll[0]), 1e-30);
  // Each term is fl(fl(0 + log1pf(e^-100)) + 100) = 100 (the 3.7e-44 is absorbed, an error far below u 100) and
  // sums of 100s up to 100 D are exact in float: the bound 10u per term is generous by design, not needed.
  EXPECT_NEAR(100.0 * D, bad1.nll[0], 100.0 * D * 10 * kU);
  EXPECT_NEAR(100.0 * D, bad0.nll[0], 100.0 * D * 10 * kU);
  for (int d = 0; d < D; d++) {
    EXPECT_EQ(0.0f, fit1.grad[d]);
    EXPECT_LE(fabs(fit0.grad[d]), 1e-30);  // sigmoid(-100) = e^-100 / (1 + e^-100): a subnormal
    EXPECT_EQ(-1.0f, bad1.grad[d]);
    EXPECT_EQ(1.0f, bad0.grad[d]);
  }
  printf("worst |gpu-cpu|/tol: nll %.3g, gradient %.3g\n", worst.nll, worst.grad);
}

// sigma 0.3 (weights the fit over the KL) and 1; scale as in BernoulliMatchesCpu.
TEST(KernelLikelihood, GaussianMatchesCpu) {
  Worst worst;
  for (float sigma : {0.3f, 1.0f})
    for (int B : kBatches)
      for (int D : kDims) {
        const size_t n = (size_t)B * D;
        const std::vector<float> f = make_uniform(n, -1.0f, 2.0f, 500 + B * 3 + D), x = make_x(n, 600 + B + D);
        compare_with_cpu(true, f, x, sigma, D < 100 ? 1.0f : 1.0f / B, B, D, &worst);
      }
  printf("worst |gpu-cpu|/tol: nll %.3g, gradient %.3g\n", worst.nll, worst.grad);
}

// dout == NULL: the gradient is skipped and the loss is bitwise the one computed alongside the gradient.
TEST(KernelLikelihood, NullGradientGivesSameLoss) {
  for (bool gaussian : {false, true})
    for (int D : {7, 1000}) {
      const int B = 3;
      const size_t n = (size_t)B * D;
      const std::vector<float> out = make_uniform(n, -5.0f, 5.0f, 700 + D), x = make_x(n, 800 + D);
      const Result with = run_gpu(gaussian, out, x, 0.3f, 1.0f, B, D, true);
      const Result without = run_gpu(gaussian, out, x, 0.3f, 1.0f, B, D, false);
      EXPECT_TRUE(bitwise_equal(with.nll, without.nll)) << (gaussian ? "gaussian" : "bernoulli") << " D " << D;
    }
}

TEST(KernelLikelihood, Deterministic) {
  const int B = 257, D = 784;
  const size_t n = (size_t)B * D;
  const std::vector<float> out = make_uniform(n, -10.0f, 10.0f, 900), x = make_x(n, 901);
  for (bool gaussian : {false, true}) {
    const Result a = run_gpu(gaussian, out, x, 0.3f, 1.0f / B, B, D, true);
    const Result b = run_gpu(gaussian, out, x, 0.3f, 1.0f / B, B, D, true);
    EXPECT_TRUE(bitwise_equal(a.nll, b.nll)) << (gaussian ? "gaussian" : "bernoulli");
    EXPECT_TRUE(bitwise_equal(a.grad, b.grad)) << (gaussian ? "gaussian" : "bernoulli");
  }
}

TEST(KernelLikelihood, InvalidArguments) {
  DevBuf a(8), b(8), nll(2), g(8);
  const cudaError_t inval = cudaErrorInvalidValue;
  EXPECT_EQ(inval, bernoulli_nll_grad_cuda(a.p, b.p, nll.p, g.p, 1.0f, 0, 4, 0));
  EXPECT_EQ(inval, bernoulli_nll_grad_cuda(a.p, b.p, nll.p, g.p, 1.0f, 2, 0, 0));
  EXPECT_EQ(inval, bernoulli_nll_grad_cuda(a.p, b.p, nll.p, g.p, 1.0f, -1, 4, 0));
  EXPECT_EQ(inval, bernoulli_nll_grad_cuda(nullptr, b.p, nll.p, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, bernoulli_nll_grad_cuda(a.p, nullptr, nll.p, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, bernoulli_nll_grad_cuda(a.p, b.p, nullptr, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, b.p, 1.0f, 0.0, nll.p, g.p, 1.0f, 0, 4, 0));
  EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, b.p, 1.0f, 0.0, nll.p, g.p, 1.0f, 2, -3, 0));
  EXPECT_EQ(inval, gaussian_nll_grad_cuda(nullptr, b.p, 1.0f, 0.0, nll.p, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, b.p, 1.0f, 0.0, nullptr, g.p, 1.0f, 2, 4, 0));
  for (float sigma : {0.0f, -1.0f, NAN, INFINITY})
    EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, b.p, sigma, 0.0, nll.p, g.p, 1.0f, 2, 4, 0)) << "sigma " << sigma;
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // nothing was launched
}

// Both launchers captured into one graph; two replays (outputs cleared between them) equal an eager run bitwise.
TEST(KernelLikelihood, GraphReplayEqualsEager) {
  const int B = 128, D = 784;
  const size_t n = (size_t)B * D;
  const std::vector<float> out = make_uniform(n, -6.0f, 6.0f, 1000), x = make_x(n, 1001);
  const Result bern = run_gpu(false, out, x, 0.0f, 1.0f / B, B, D, true);
  const Result gauss = run_gpu(true, out, x, 0.3f, 1.0f / B, B, D, true);
  DevBuf d_out(out), d_x(x), nll_b(B), grad_b(n), nll_g(B), grad_g(n);
  cudaStream_t stream;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaSuccess, cudaStreamCreate(&stream));
  ASSERT_EQ(cudaSuccess, cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  ASSERT_EQ(cudaSuccess, bernoulli_nll_grad_cuda(d_out.p, d_x.p, nll_b.p, grad_b.p, 1.0f / B, B, D, stream));
  ASSERT_EQ(cudaSuccess, gaussian_nll_grad_cuda(d_out.p, d_x.p, 0.3f, 0.0, nll_g.p, grad_g.p, 1.0f / B, B, D, stream));
  ASSERT_EQ(cudaSuccess, cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(cudaSuccess, cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; replay++) {
    for (DevBuf *buf : {&nll_b, &grad_b, &nll_g, &grad_g})
      ASSERT_EQ(cudaSuccess, cudaMemsetAsync(buf->p, 0, buf->n * sizeof(float), stream));
    ASSERT_EQ(cudaSuccess, cudaGraphLaunch(exec, stream));
    ASSERT_EQ(cudaSuccess, cudaStreamSynchronize(stream));
    EXPECT_TRUE(bitwise_equal(bern.nll, nll_b.get())) << "replay " << replay;
    EXPECT_TRUE(bitwise_equal(bern.grad, grad_b.get())) << "replay " << replay;
    EXPECT_TRUE(bitwise_equal(gauss.nll, nll_g.get())) << "replay " << replay;
    EXPECT_TRUE(bitwise_equal(gauss.grad, grad_g.get())) << "replay " << replay;
  }
  EXPECT_EQ(cudaSuccess, cudaGraphExecDestroy(exec));
  EXPECT_EQ(cudaSuccess, cudaGraphDestroy(graph));
  EXPECT_EQ(cudaSuccess, cudaStreamDestroy(stream));
}

// ---- learned variances: gaussian_perdim_nll_grad and gaussian_shared_nll_grad ----------------------------------

const double kLog2Pi = 1.8378770664093454836;

// out[B][2D] = [f | lv]: f ~ U(-1, 2), lv ~ U(-lv_max, lv_max).
std::vector<float> make_perdim_out(int B, int D, float lv_max, unsigned seed) {
  const std::vector<float> f = make_uniform((size_t)B * D, -1.0f, 2.0f, seed),
                           lv = make_uniform((size_t)B * D, -lv_max, lv_max, seed + 1);
  std::vector<float> out((size_t)B * 2 * D);
  for (int b = 0; b < B; b++)
    for (int d = 0; d < D; d++) {
      out[(size_t)b * 2 * D + d] = f[(size_t)b * D + d];
      out[(size_t)b * 2 * D + D + d] = lv[(size_t)b * D + d];
    }
  return out;
}

// One launch of gaussian_perdim_nll_grad_cuda (grad: [B][2D], skipped when !with_grad); lv_min: the floor (4.8),
// offset: the NLL's constant (4.6).
Result run_perdim_gpu(const std::vector<float> &out, const std::vector<float> &x, float scale, int B, int D,
                      bool with_grad, float lv_min = -INFINITY, double offset = 0.0) {
  DevBuf d_out(out), d_x(x), d_nll(B), d_grad(with_grad ? out.size() : 1);
  EXPECT_EQ(cudaSuccess, gaussian_perdim_nll_grad_cuda(d_out.p, d_x.p, lv_min, offset, d_nll.p,
                                                       with_grad ? d_grad.p : nullptr, scale, B, D, 0));
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  Result r;
  r.nll = d_nll.get();
  if (with_grad) r.grad = d_grad.get();
  return r;
}

// One launch of gaussian_shared_nll_grad_cuda; grad = df [B][D] followed by dlv_row [B].
Result run_shared_gpu(const std::vector<float> &f, const std::vector<float> &x, float logvar, float scale, int B, int D,
                      bool with_grad, float lv_min = -INFINITY, double offset = 0.0) {
  DevBuf d_f(f), d_x(x), d_lv(std::vector<float>{logvar}), d_nll(B), d_df(with_grad ? f.size() : 1),
      d_dlv(with_grad ? B : 1);
  EXPECT_EQ(cudaSuccess, gaussian_shared_nll_grad_cuda(d_f.p, d_x.p, d_lv.p, lv_min, offset, d_nll.p,
                                                       with_grad ? d_df.p : nullptr, with_grad ? d_dlv.p : nullptr,
                                                       scale, B, D, 0));
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  Result r;
  r.nll = d_nll.get();
  if (with_grad) {
    r.grad = d_df.get();
    const std::vector<float> dlv = d_dlv.get();
    r.grad.insert(r.grad.end(), dlv.begin(), dlv.end());
  }
  return r;
}

// |a - b| <= tol, recording the worst ratio.
void expect_close(double a, double b, double tol, double *worst, const char *what, size_t at) {
  const double err = fabs(a - b);
  ASSERT_TRUE(isfinite(a)) << what << " " << at;
  ASSERT_LE(err, tol) << what << " " << at << " gpu " << a << " cpu " << b;
  if (tol > 0) *worst = std::max(*worst, err / tol);
}

void compare_perdim(const std::vector<float> &out, const std::vector<float> &x, float scale, int B, int D,
                    Worst *worst, float lv_min = -INFINITY, double offset = 0.0) {
  SCOPED_TRACE(testing::Message() << "perdim B " << B << " D " << D << " scale " << scale << " lv_min " << lv_min
                                  << " offset " << offset);
  const Result gpu = run_perdim_gpu(out, x, scale, B, D, true, lv_min, offset);
  std::vector<float> nll(B), grad(out.size());
  gaussian_perdim_nll_grad_cpu(out.data(), x.data(), lv_min, offset, nll.data(), grad.data(), scale, B, D);
  for (int b = 0; b < B; b++) {
    const float *f = &out[(size_t)b * 2 * D], *lv = f + D, *xr = &x[(size_t)b * D];
    double parts = 0.5 * D * kLog2Pi + fabs(offset);  // the offset: one more rounding of const_term, inside 2u
    for (int d = 0; d < D; d++) {
      const double l = std::max((double)lv[d], (double)lv_min);
      const double r = (double)f[d] - xr[d], q = r * r * exp(-l);
      parts += 0.5 * (q + fabs(l));
      const size_t i = (size_t)b * 2 * D + d, j = i + D;
      expect_close(gpu.grad[i], grad[i], 16 * kU * fabs(grad[i]), &worst->grad, "df", i);
      expect_close(gpu.grad[j], grad[j], 8 * kU * fabs(scale) * q + 4 * kU * fabs(grad[j]), &worst->grad, "dlv", j);
    }
    expect_close(gpu.nll[b], nll[b], ((D + 31) / 32 + 40) * kU * parts, &worst->nll, "nll row", b);
  }
}

// lv in [-3, 3] (variances 0.05 .. 20) and [-8, 8] (q up to ~ 9 e^8: large terms, dlv far from 0).
TEST(KernelLikelihood, GaussianPerdimMatchesCpu) {
  Worst worst;
  for (float lv_max : {3.0f, 8.0f})
    for (int B : kBatches)
      for (int D : kDims) {
        const std::vector<float> out = make_perdim_out(B, D, lv_max, 1100 + B * 5 + D),
                                 x = make_x((size_t)B * D, B + D);
        compare_perdim(out, x, D < 100 ? 1.0f : 1.0f / B, B, D, &worst);
      }
  printf("worst |gpu-cpu|/tol: nll %.3g, gradient %.3g\n", worst.nll, worst.grad);
}

void compare_shared(const std::vector<float> &f, const std::vector<float> &x, float logvar, float scale, int B, int D,
                    Worst *worst, float lv_min = -INFINITY, double offset = 0.0) {
  SCOPED_TRACE(testing::Message() << "shared B " << B << " D " << D << " logvar " << logvar << " scale " << scale
                                  << " lv_min " << lv_min << " offset " << offset);
  const Result gpu = run_shared_gpu(f, x, logvar, scale, B, D, true, lv_min, offset);
  std::vector<float> nll(B), df(f.size()), dlv(B);
  gaussian_shared_nll_grad_cpu(f.data(), x.data(), &logvar, lv_min, offset, nll.data(), df.data(), dlv.data(), scale,
                               B, D);
  const double w = exp(-std::max((double)logvar, (double)lv_min));
  for (int b = 0; b < B; b++) {
    double S = 0.0;
    for (int d = 0; d < D; d++) {
      const size_t i = (size_t)b * D + d;
      S += ((double)x[i] - f[i]) * ((double)x[i] - f[i]);
      expect_close(gpu.grad[i], df[i], 2 * kU * fabs(df[i]), &worst->grad, "df", i);
    }
    const double sum_tol = 0.5 * w * ((D + 31) / 32 + 13) * kU * S;
    expect_close(gpu.nll[b], nll[b], sum_tol + 2 * kU * fabs(nll[b]), &worst->nll, "nll row", b);
    expect_close(gpu.grad[f.size() + b], dlv[b], fabs(scale) * sum_tol + 2 * kU * fabs(dlv[b]), &worst->grad, "dlv_row",
                 b);
  }
}

// logvar -2.3 (small variance: large w), 0, 1.7; the residuals of make_uniform / make_x give dlv_row of both signs.
TEST(KernelLikelihood, GaussianSharedMatchesCpu) {
  Worst worst;
  for (float logvar : {-2.3f, 0.0f, 1.7f})
    for (int B : kBatches)
      for (int D : kDims) {
        const size_t n = (size_t)B * D;
        const std::vector<float> f = make_uniform(n, -0.5f, 1.5f, 1200 + B * 3 + D), x = make_x(n, 1300 + B + D);
        compare_shared(f, x, logvar, D < 100 ? 1.0f : 1.0f / B, B, D, &worst);
      }
  printf("worst |gpu-cpu|/tol: nll %.3g, gradient %.3g\n", worst.nll, worst.grad);
}

// Values k / 256 for integer k: x +- 2^-6 stays exact in float.
std::vector<float> grid_values(size_t n, float lo, float hi, unsigned seed) {
  std::vector<float> v = make_uniform(n, lo, hi, seed);
  for (float &a : v) a = roundf(a * 256.0f) / 256.0f;
  return v;
}

constexpr double kH = 1.0 / 64;  // central-difference step (see the header)

// Central differences of the CPU twin's NLL (forward only: dout == NULL) against its gradient, scale = 0.5 (a power
// of two: the gradient is scale times the derivative exactly). Every element of out = [f | lv], B = 2, D in {1, 7},
// without a floor and with lv_min = 0 (4.8; the lv on the grid lie in [-2, 2]): an lv within h of the floor is a kink
// (skipped, counted); below it the twin's dlv and the central difference are both exactly 0 (the perturbed NLLs use
// the same floored lv, bit for bit).
TEST(KernelLikelihood, GaussianPerdimGradientIsTheDerivative) {
  const float scale = 0.5f;
  double worst = 0;
  int floored = 0, kinks = 0;
  for (float lv_min : {-INFINITY, 0.0f})
  for (int D : {1, 7}) {
    const int B = 2;
    std::vector<float> out = make_perdim_out(B, D, 2.0f, 1400 + D), x = grid_values((size_t)B * D, 0.0f, 1.0f, 1500);
    for (float &a : out) a = roundf(a * 256.0f) / 256.0f;
    std::vector<float> nll(B), grad(out.size()), nll_p(B), nll_m(B);
    gaussian_perdim_nll_grad_cpu(out.data(), x.data(), lv_min, 0.0, nll.data(), grad.data(), scale, B, D);
    for (int b = 0; b < B; b++)
      for (int k = 0; k < 2 * D; k++) {
        const size_t i = (size_t)b * 2 * D + k;
        const int d = k % D;
        const float saved = out[i];
        out[i] = saved + (float)kH;
        gaussian_perdim_nll_grad_cpu(out.data(), x.data(), lv_min, 0.0, nll_p.data(), nullptr, scale, B, D);
        out[i] = saved - (float)kH;
        gaussian_perdim_nll_grad_cpu(out.data(), x.data(), lv_min, 0.0, nll_m.data(), nullptr, scale, B, D);
        out[i] = saved;
        const double lv_raw = out[(size_t)b * 2 * D + D + d];
        if (k >= D && fabs(lv_raw - lv_min) <= kH) {
          kinks++;
          continue;
        }
        if (k >= D && lv_raw < lv_min) {
          floored++;
          EXPECT_EQ(0.0f, grad[i]) << "floored lv: D " << D << " row " << b << " col " << k;
          EXPECT_EQ(nll_p[b], nll_m[b]) << "floored lv: D " << D << " row " << b << " col " << k;
          continue;
        }
        const double f = out[(size_t)b * 2 * D + d], lv = std::max(lv_raw, (double)lv_min), xv = x[(size_t)b * D + d];
        // q at the two perturbed points and at the centre.
        const double dq = k < D ? kH : 0.0, dl = k < D ? 0.0 : kH;
        const double q_p = (f + dq - xv) * (f + dq - xv) * exp(-(lv + dl)),
                     q_m = (f - dq - xv) * (f - dq - xv) * exp(-(lv - dl));
        const double q = (f - xv) * (f - xv) * exp(-lv);
        const double fd = scale * ((double)nll_p[b] - nll_m[b]) / (2 * kH);
        const double tol = scale * (((fabs(nll_p[b]) + fabs(nll_m[b])) * kU + 6 * kU * (q_p + q_m)) / (2 * kH) +
                                    (k < D ? 0.0 : kH * kH / 12 * q * exp(kH))) +
                           12 * kU * (fabs(grad[i]) + scale * q);
        ASSERT_LE(tol, 1e-3) << "the check would be too loose";
        EXPECT_LE(fabs(fd - grad[i]), tol)
            << "D " << D << " row " << b << " col " << k << " fd " << fd << " twin " << grad[i];
        worst = std::max(worst, fabs(fd - grad[i]) / tol);
      }
  }
  EXPECT_GT(floored, 2) << "the floor must be active somewhere";
  EXPECT_LE(kinks, 2) << "kinks skipped";
  printf("worst |fd - twin|/tol %.3g (%d floored, %d kinks skipped)\n", worst, floored, kinks);
}

// Shared logvar: df against differences in f (row b's NLL), each dlv_row[b] against differences of row b's NLL in
// logvar, and their sum (in row order, as the caller sums them) against differences of the summed NLL; without a
// floor and with lv_min = -1 (4.8), which floors logvar = -1.5 (then dlv_row and the differences in logvar are
// exactly 0, and w = exp(1)) and leaves 0.75 alone.
TEST(KernelLikelihood, GaussianSharedGradientIsTheDerivative) {
  const float scale = 0.5f;
  double worst = 0;
  for (float lv_min : {-INFINITY, -1.0f})
  for (int D : {1, 7})
    for (float logvar : {-1.5f, 0.75f}) {
      const int B = 3;
      std::vector<float> f = grid_values((size_t)B * D, -0.5f, 1.5f, 1600 + D),
                         x = grid_values((size_t)B * D, 0, 1, 1700);
      std::vector<float> nll(B), df(f.size()), dlv(B), nll_p(B), nll_m(B);
      gaussian_shared_nll_grad_cpu(f.data(), x.data(), &logvar, lv_min, 0.0, nll.data(), df.data(), dlv.data(), scale,
                                   B, D);
      const double w = exp(-std::max((double)logvar, (double)lv_min));
      const bool is_floored = logvar < lv_min;
      for (size_t i = 0; i < f.size(); i++) {
        const int b = (int)(i / D);
        const float saved = f[i];
        f[i] = saved + (float)kH;
        gaussian_shared_nll_grad_cpu(f.data(), x.data(), &logvar, lv_min, 0.0, nll_p.data(), nullptr, nullptr, scale, B,
                                     D);
        f[i] = saved - (float)kH;
        gaussian_shared_nll_grad_cpu(f.data(), x.data(), &logvar, lv_min, 0.0, nll_m.data(), nullptr, nullptr, scale, B,
                                     D);
        f[i] = saved;
        // The NLL is quadratic in f and the twin sums in double: only the float roundings of nll and df remain.
        const double fd = scale * ((double)nll_p[b] - nll_m[b]) / (2 * kH);
        const double tol = scale * (fabs(nll_p[b]) + fabs(nll_m[b])) * kU / (2 * kH) + 3 * kU * fabs(df[i]);
        EXPECT_LE(fabs(fd - df[i]), tol) << "D " << D << " element " << i << " fd " << fd << " twin " << df[i];
        worst = std::max(worst, fabs(fd - df[i]) / tol);
      }
      const float lv_p = logvar + (float)kH, lv_m = logvar - (float)kH;
      gaussian_shared_nll_grad_cpu(f.data(), x.data(), &lv_p, lv_min, 0.0, nll_p.data(), nullptr, nullptr, scale, B, D);
      gaussian_shared_nll_grad_cpu(f.data(), x.data(), &lv_m, lv_min, 0.0, nll_m.data(), nullptr, nullptr, scale, B, D);
      if (is_floored) {  // logvar +- h stays below the floor
        for (int b = 0; b < B; b++) {
          EXPECT_EQ(0.0f, dlv[b]) << "floored: D " << D << " row " << b;
          EXPECT_EQ(nll_p[b], nll_m[b]) << "floored: D " << D << " row " << b;
        }
        continue;
      }
      double fd_sum = 0, dlv_sum = 0, tol_sum = 0;
      for (int b = 0; b < B; b++) {
        double S = 0;
        for (int d = 0; d < D; d++) {
          const double r = (double)x[(size_t)b * D + d] - f[(size_t)b * D + d];
          S += r * r;
        }
        // Third derivative in lv of 0.5 w S is -0.5 w S: truncation <= h^2/12 w S e^h; nll rounds once per side.
        const double fd = scale * ((double)nll_p[b] - nll_m[b]) / (2 * kH);
        const double tol =
            scale * ((fabs(nll_p[b]) + fabs(nll_m[b])) * kU / (2 * kH) + kH * kH / 12 * w * S * exp(kH)) +
            2 * kU * fabs(dlv[b]);
        ASSERT_LE(tol, 1e-3) << "the check would be too loose";
        EXPECT_LE(fabs(fd - dlv[b]), tol) << "D " << D << " row " << b << " fd " << fd << " twin " << dlv[b];
        worst = std::max(worst, fabs(fd - dlv[b]) / tol);
        fd_sum += fd, dlv_sum += dlv[b], tol_sum += tol;
      }
      EXPECT_LE(fabs(fd_sum - dlv_sum), tol_sum) << "D " << D << " logvar " << logvar;
    }
  printf("worst |fd - twin|/tol %.3g\n", worst);
}

// NULL gradients: forward only, the loss bitwise the one computed alongside the gradient (kernels and twins); and
// two runs of each kernel are bitwise equal.
TEST(KernelLikelihood, LearnedVarianceNullGradientAndDeterminism) {
  for (int D : {7, 1000}) {
    const int B = 3;
    const size_t n = (size_t)B * D;
    const std::vector<float> out = make_perdim_out(B, D, 3.0f, 1800 + D), x = make_x(n, 1900 + D),
                             f = make_uniform(n, -1.0f, 2.0f, 2000 + D);
    const Result pw = run_perdim_gpu(out, x, 0.25f, B, D, true), pw2 = run_perdim_gpu(out, x, 0.25f, B, D, true),
                 po = run_perdim_gpu(out, x, 0.25f, B, D, false);
    EXPECT_TRUE(bitwise_equal(pw.nll, po.nll)) << "perdim D " << D;
    EXPECT_TRUE(bitwise_equal(pw.nll, pw2.nll) && bitwise_equal(pw.grad, pw2.grad)) << "perdim D " << D;
    const Result sw = run_shared_gpu(f, x, 0.4f, 0.25f, B, D, true),
                 sw2 = run_shared_gpu(f, x, 0.4f, 0.25f, B, D, true),
                 so = run_shared_gpu(f, x, 0.4f, 0.25f, B, D, false);
    EXPECT_TRUE(bitwise_equal(sw.nll, so.nll)) << "shared D " << D;
    EXPECT_TRUE(bitwise_equal(sw.nll, sw2.nll) && bitwise_equal(sw.grad, sw2.grad)) << "shared D " << D;

    std::vector<float> a(B), b(B), g(out.size()), dlv(B);
    const float logvar = 0.4f;
    gaussian_perdim_nll_grad_cpu(out.data(), x.data(), -INFINITY, 0.0, a.data(), g.data(), 0.25f, B, D);
    gaussian_perdim_nll_grad_cpu(out.data(), x.data(), -INFINITY, 0.0, b.data(), nullptr, 0.25f, B, D);
    EXPECT_TRUE(bitwise_equal(a, b)) << "perdim twin D " << D;
    gaussian_shared_nll_grad_cpu(f.data(), x.data(), &logvar, -INFINITY, 0.0, a.data(), g.data(), dlv.data(), 0.25f, B,
                                 D);
    gaussian_shared_nll_grad_cpu(f.data(), x.data(), &logvar, -INFINITY, 0.0, b.data(), nullptr, nullptr, 0.25f, B, D);
    EXPECT_TRUE(bitwise_equal(a, b)) << "shared twin D " << D;
  }
}

TEST(KernelLikelihood, LearnedVarianceInvalidArguments) {
  DevBuf a(16), x(8), lv(1), nll(2), g(16), dlv(2);
  const cudaError_t inval = cudaErrorInvalidValue;
  EXPECT_EQ(inval, gaussian_perdim_nll_grad_cuda(a.p, x.p, -INFINITY, 0.0, nll.p, g.p, 1.0f, 0, 4, 0));
  EXPECT_EQ(inval, gaussian_perdim_nll_grad_cuda(a.p, x.p, -INFINITY, 0.0, nll.p, g.p, 1.0f, 2, 0, 0));
  EXPECT_EQ(inval, gaussian_perdim_nll_grad_cuda(a.p, x.p, -INFINITY, 0.0, nll.p, g.p, 1.0f, -1, 4, 0));
  EXPECT_EQ(inval, gaussian_perdim_nll_grad_cuda(nullptr, x.p, -INFINITY, 0.0, nll.p, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_perdim_nll_grad_cuda(a.p, nullptr, -INFINITY, 0.0, nll.p, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_perdim_nll_grad_cuda(a.p, x.p, -INFINITY, 0.0, nullptr, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, x.p, lv.p, -INFINITY, 0.0, nll.p, g.p, dlv.p, 1.0f, 0, 4, 0));
  EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, x.p, lv.p, -INFINITY, 0.0, nll.p, g.p, dlv.p, 1.0f, 2, -4, 0));
  EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(nullptr, x.p, lv.p, -INFINITY, 0.0, nll.p, g.p, dlv.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, nullptr, lv.p, -INFINITY, 0.0, nll.p, g.p, dlv.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, x.p, nullptr, -INFINITY, 0.0, nll.p, g.p, dlv.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, x.p, lv.p, -INFINITY, 0.0, nullptr, g.p, dlv.p, 1.0f, 2, 4, 0));
  // one of the two gradients
  EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, x.p, lv.p, -INFINITY, 0.0, nll.p, g.p, nullptr, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, x.p, lv.p, -INFINITY, 0.0, nll.p, nullptr, dlv.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // nothing was launched
}

// Both learned-variance launchers captured into one graph; two replays equal an eager run bitwise.
TEST(KernelLikelihood, LearnedVarianceGraphReplayEqualsEager) {
  const int B = 128, D = 784;
  const size_t n = (size_t)B * D;
  const std::vector<float> out = make_perdim_out(B, D, 3.0f, 2100), x = make_x(n, 2101),
                           f = make_uniform(n, -1.0f, 2.0f, 2102);
  const float logvar = -0.7f;
  const Result perdim = run_perdim_gpu(out, x, 1.0f / B, B, D, true);
  const Result shared = run_shared_gpu(f, x, logvar, 1.0f / B, B, D, true);
  DevBuf d_out(out), d_x(x), d_f(f), d_lv(std::vector<float>{logvar}), nll_p(B), grad_p(2 * n), nll_s(B), df_s(n),
      dlv_s(B);
  cudaStream_t stream;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaSuccess, cudaStreamCreate(&stream));
  ASSERT_EQ(cudaSuccess, cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  ASSERT_EQ(cudaSuccess,
            gaussian_perdim_nll_grad_cuda(d_out.p, d_x.p, -INFINITY, 0.0, nll_p.p, grad_p.p, 1.0f / B, B, D, stream));
  ASSERT_EQ(cudaSuccess,
            gaussian_shared_nll_grad_cuda(d_f.p, d_x.p, d_lv.p, -INFINITY, 0.0, nll_s.p, df_s.p, dlv_s.p, 1.0f / B, B,
                                          D, stream));
  ASSERT_EQ(cudaSuccess, cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(cudaSuccess, cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; replay++) {
    for (DevBuf *buf : {&nll_p, &grad_p, &nll_s, &df_s, &dlv_s})
      ASSERT_EQ(cudaSuccess, cudaMemsetAsync(buf->p, 0, buf->n * sizeof(float), stream));
    ASSERT_EQ(cudaSuccess, cudaGraphLaunch(exec, stream));
    ASSERT_EQ(cudaSuccess, cudaStreamSynchronize(stream));
    std::vector<float> shared_grad = df_s.get();
    const std::vector<float> dlv = dlv_s.get();
    shared_grad.insert(shared_grad.end(), dlv.begin(), dlv.end());
    EXPECT_TRUE(bitwise_equal(perdim.nll, nll_p.get())) << "replay " << replay;
    EXPECT_TRUE(bitwise_equal(perdim.grad, grad_p.get())) << "replay " << replay;
    EXPECT_TRUE(bitwise_equal(shared.nll, nll_s.get())) << "replay " << replay;
    EXPECT_TRUE(bitwise_equal(shared.grad, shared_grad)) << "replay " << replay;
  }
  EXPECT_EQ(cudaSuccess, cudaGraphExecDestroy(exec));
  EXPECT_EQ(cudaSuccess, cudaGraphDestroy(graph));
  EXPECT_EQ(cudaSuccess, cudaStreamDestroy(stream));
}

// ---- dequantization's constant (4.6) and the variance floor (4.8) ----------------------------------------------

// Kernels against twins with the floor active on part of the elements and the offset D ln 256 of dequantized data:
// the bounds of the plain comparisons above, the floored lv in place of lv (the header's per-term counts hold for
// it) and |offset| in the NLL's magnitude (const_term and the final sum round once each relative to it). Data on
// [0, 1] as dequantized data are.
TEST(KernelLikelihood, FloorAndOffsetMatchCpu) {
  Worst worst;
  for (int B : {3, 128})
    for (int D : {7, 784}) {
      const double offset = D * log(256.0);
      const size_t n = (size_t)B * D;
      const std::vector<float> out = make_perdim_out(B, D, 3.0f, 2200 + B + D), x = make_x(n, 2300 + B + D),
                               f = make_uniform(n, -0.5f, 1.5f, 2400 + B + D);
      const float scale = D < 100 ? 1.0f : 1.0f / B;
      compare_perdim(out, x, scale, B, D, &worst, 0.5f, offset);  // lv in [-3, 3]: ~58% floored at 0.5
      compare_perdim(out, x, scale, B, D, &worst, -INFINITY, offset);
      for (float logvar : {-2.3f, 1.7f}) compare_shared(f, x, logvar, scale, B, D, &worst, -1.0f, offset);
      compare_with_cpu(true, f, x, 0.3f, scale, B, D, &worst, offset);
    }
  printf("worst |gpu-cpu|/tol: nll %.3g, gradient %.3g\n", worst.nll, worst.grad);
}

// The floor is the model with the floored log-variance: the kernel with lv_min equals, bit for bit, the unfloored
// kernel on lv = max(l, lv_min), except that dl is exactly 0 where l < lv_min. So does the twin, up to its expf: GCC
// may evaluate exp(-lv_min) once, in scalar glibc (1 ulp), where the clamped input goes through libmvec (4 ulp), so
// w differs by <= 10u relative, df by <= 12u |df|, dl by <= 12u |scale| q + 4u |dl| and each NLL by <= 12u
// sum_d q_d / 2 + 2u |nll| (q = (x - f)^2 exp(-lv)); floored dl are exactly 0. The offset adds the constant:
// fl(nll + offset) against fl(nll) + offset, one rounding of each, <= u (|a| + |b|) apart.
TEST(KernelLikelihood, FloorIsTheClampedModelAndOffsetAConstant) {
  const int B = 5, D = 300;
  const float lv_min = -0.25f;
  const double offset = D * log(256.0);
  std::vector<float> out = make_perdim_out(B, D, 2.0f, 2500), x = make_x((size_t)B * D, 2501), clamped = out;
  int n_floored = 0;
  for (int b = 0; b < B; b++)
    for (int d = 0; d < D; d++) {
      float &l = clamped[(size_t)b * 2 * D + D + d];
      if (l < lv_min) {
        l = lv_min;
        n_floored++;
      }
    }
  ASSERT_GT(n_floored, B * D / 4);
  std::vector<float> nll_a(B), nll_b(B), nll_c(B), g_a(out.size()), g_b(out.size());
  gaussian_perdim_nll_grad_cpu(out.data(), x.data(), lv_min, 0.0, nll_a.data(), g_a.data(), 0.5f, B, D);
  gaussian_perdim_nll_grad_cpu(clamped.data(), x.data(), -INFINITY, 0.0, nll_b.data(), g_b.data(), 0.5f, B, D);
  const Result gpu = run_perdim_gpu(out, x, 0.5f, B, D, true, lv_min, 0.0);
  const Result gpu_clamped = run_perdim_gpu(clamped, x, 0.5f, B, D, true, -INFINITY, 0.0);
  EXPECT_TRUE(bitwise_equal(gpu.nll, gpu_clamped.nll));
  for (int b = 0; b < B; b++) {
    double half_q = 0;
    for (int k = 0; k < 2 * D; k++) {
      const size_t i = (size_t)b * 2 * D + k;
      const int d = k % D;
      const double r = (double)out[(size_t)b * 2 * D + d] - x[(size_t)b * D + d];
      const double q = r * r * exp(-(double)clamped[(size_t)b * 2 * D + D + d]);
      if (k < D) half_q += 0.5 * q;
      const bool floored_dl = k >= D && out[i] < lv_min;
      ASSERT_EQ(floored_dl ? 0.0f : gpu_clamped.grad[i], gpu.grad[i]) << "kernel row " << b << " col " << k;
      if (floored_dl) {
        ASSERT_EQ(0.0f, g_a[i]) << "twin row " << b << " col " << k;
      } else {
        const double tol = k < D ? 12 * kU * fabs(g_b[i]) : 12 * kU * 0.5 * q + 4 * kU * fabs(g_b[i]);
        ASSERT_LE(fabs((double)g_a[i] - g_b[i]), tol) << "twin row " << b << " col " << k;
      }
    }
    EXPECT_LE(fabs((double)nll_a[b] - nll_b[b]), 12 * kU * half_q + 2 * kU * fabs(nll_b[b])) << "twin row " << b;
  }
  gaussian_perdim_nll_grad_cpu(out.data(), x.data(), lv_min, offset, nll_c.data(), nullptr, 0.5f, B, D);
  for (int b = 0; b < B; b++)
    EXPECT_LE(fabs((double)nll_c[b] - ((double)nll_a[b] + offset)), kU * (fabs(nll_c[b]) + fabs(nll_a[b])))
        << "row " << b;
  // Shared: a floored logvar is the floor itself, with dlv_row = 0; an unfloored one is untouched.
  const std::vector<float> f = make_uniform((size_t)B * D, -0.5f, 1.5f, 2502);
  std::vector<float> df_a(f.size()), df_b(f.size()), dlv_a(B), dlv_b(B);
  const float low = -1.5f, high = 0.5f;
  gaussian_shared_nll_grad_cpu(f.data(), x.data(), &low, lv_min, 0.0, nll_a.data(), df_a.data(), dlv_a.data(), 0.5f,
                               B, D);
  gaussian_shared_nll_grad_cpu(f.data(), x.data(), &lv_min, -INFINITY, 0.0, nll_b.data(), df_b.data(), dlv_b.data(),
                               0.5f, B, D);
  EXPECT_TRUE(bitwise_equal(nll_a, nll_b) && bitwise_equal(df_a, df_b));
  EXPECT_TRUE(bitwise_equal(dlv_a, std::vector<float>(B, 0.0f)));
  const Result sg = run_shared_gpu(f, x, low, 0.5f, B, D, true, lv_min, 0.0);
  EXPECT_TRUE(bitwise_equal(sg.nll, run_shared_gpu(f, x, lv_min, 0.5f, B, D, true).nll));
  for (int b = 0; b < B; b++) EXPECT_EQ(0.0f, sg.grad[f.size() + b]) << "kernel dlv_row " << b;
  gaussian_shared_nll_grad_cpu(f.data(), x.data(), &high, lv_min, 0.0, nll_a.data(), df_a.data(), dlv_a.data(), 0.5f,
                               B, D);
  gaussian_shared_nll_grad_cpu(f.data(), x.data(), &high, -INFINITY, 0.0, nll_b.data(), df_b.data(), dlv_b.data(),
                               0.5f, B, D);
  EXPECT_TRUE(bitwise_equal(nll_a, nll_b) && bitwise_equal(df_a, df_b) && bitwise_equal(dlv_a, dlv_b));
  // A NaN log-variance stays NaN under the floor (a diverging model is not hidden).
  std::vector<float> bad = out;
  bad[D] = NAN;
  const Result gnan = run_perdim_gpu(bad, x, 0.5f, B, D, true, lv_min, 0.0);
  gaussian_perdim_nll_grad_cpu(bad.data(), x.data(), lv_min, 0.0, nll_a.data(), nullptr, 0.5f, B, D);
  EXPECT_TRUE(std::isnan(gnan.nll[0]) && std::isnan(nll_a[0]));
}

TEST(KernelLikelihood, FloorAndOffsetInvalidArguments) {
  DevBuf a(16), x(8), lv(1), nll(2), g(16), dlv(2);
  const cudaError_t inval = cudaErrorInvalidValue;
  for (float bad : {NAN, INFINITY}) {
    EXPECT_EQ(inval, gaussian_perdim_nll_grad_cuda(a.p, x.p, bad, 0.0, nll.p, g.p, 1.0f, 2, 4, 0)) << bad;
    EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, x.p, lv.p, bad, 0.0, nll.p, g.p, dlv.p, 1.0f, 2, 4, 0)) << bad;
  }
  for (double bad : {(double)NAN, (double)INFINITY, -(double)INFINITY}) {
    EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, x.p, 1.0f, bad, nll.p, g.p, 1.0f, 2, 4, 0)) << bad;
    EXPECT_EQ(inval, gaussian_perdim_nll_grad_cuda(a.p, x.p, -INFINITY, bad, nll.p, g.p, 1.0f, 2, 4, 0)) << bad;
    EXPECT_EQ(inval, gaussian_shared_nll_grad_cuda(a.p, x.p, lv.p, -INFINITY, bad, nll.p, g.p, dlv.p, 1.0f, 2, 4, 0))
        << bad;
  }
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // nothing was launched
}

}  // namespace
