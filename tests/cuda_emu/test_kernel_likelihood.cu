// kernels/likelihood.cu against its CPU twins (src/cpu/likelihood_cpu.c): bernoulli_nll_grad_cuda and
// gaussian_nll_grad_cuda, per-row negative log-likelihood and gradient, at B in {1, 3, 128, 257} x D in {1, 7, 784,
// 1000} (D = 1, 7: less than a warp; 784, 1000: not multiples of the block), extreme logits, NULL gradient,
// determinism, argument checks and graph replay.
//
// Tolerances. u = 2^-24 (float's unit roundoff).
// - Row sums: the kernel sums each row in float (per thread in column order, then a tree over at most 1024 threads),
//   the twin in double. With blocks of at least 32 threads each term passes through at most ceil(D/32) serial
//   additions and 10 tree levels, each adding a relative error <= u, so the sum errs by at most
//   (ceil(D/32) + 10) u sum|terms|. Each term itself is a handful of float operations, on both sides (expf <= 2
//   ulp on a GPU, log1pf 1 ulp, then +, *, -): at most 10 u |parts| per term from the two sides together, where
//   |parts| = |max(l,0)| + log1p(e) + |x l| (Bernoulli; this bounds the cancellation in softplus(l) - x l) or
//   (x - f)^2 / (2 s^2) (Gaussian, plus |const term|). Hence |gpu - cpu| <= (ceil(D/32) + 21) u sum|parts|.
// - Bernoulli gradient: sigmoid = (1 or e) / (1 + e) has relative error <= 3.5 u per side (expf 2, the sum and the
//   division 0.5 each, no worse after e's propagation), so |dsig| <= 7 u (sigmoid <= 1); then - x and * scale add
//   2 u relative: atol = 8 u |scale|, rtol = 2 u. (Under the emulation both sides use the same libm: exact.)
// - Gaussian gradient: the same float operations as the twin (g_scale rounded from double the same way, f - x,
//   one product): equal; 1 ulp is allowed for safety.
#include "cuda_compat.h"

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

// A device buffer of floats, freed on scope exit.
struct DevBuf {
  float *p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { EXPECT_EQ(cudaSuccess, cudaMalloc((void **)&p, n * sizeof(float))); }
  explicit DevBuf(const std::vector<float> &h) : DevBuf(h.size()) {
    EXPECT_EQ(cudaSuccess, cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf &) = delete;
  DevBuf &operator=(const DevBuf &) = delete;
  std::vector<float> get() const {
    std::vector<float> h(n);
    EXPECT_EQ(cudaSuccess, cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
};

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

// One launch of the Bernoulli (gaussian == false) or Gaussian kernel; the gradient is skipped when !with_grad.
Result run_gpu(bool gaussian, const std::vector<float> &out, const std::vector<float> &x, float sigma, float scale,
               int B, int D, bool with_grad) {
  DevBuf d_out(out), d_x(x), d_nll(B), d_grad(with_grad ? out.size() : 1);
  float *grad = with_grad ? d_grad.p : nullptr;
  const cudaError_t err =
      gaussian ? gaussian_nll_grad_cuda(d_out.p, d_x.p, sigma, d_nll.p, grad, scale, B, D, 0)
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
                      float scale, int B, int D, Worst *worst) {
  SCOPED_TRACE(testing::Message() << (gaussian ? "gaussian" : "bernoulli") << " B " << B << " D " << D << " sigma "
                                  << sigma << " scale " << scale);
  const Result gpu = run_gpu(gaussian, out, x, sigma, scale, B, D, true);
  std::vector<float> nll(B), grad(out.size());
  if (gaussian)
    gaussian_nll_grad_cpu(out.data(), x.data(), sigma, nll.data(), grad.data(), scale, B, D);
  else
    bernoulli_nll_grad_cpu(out.data(), x.data(), nll.data(), grad.data(), scale, B, D);

  const double s2 = (double)sigma * sigma, const_term = 0.5 * D * (log(s2) + log(2 * M_PI));
  for (int b = 0; b < B; b++) {
    double parts = gaussian ? fabs(const_term) : 0.0;
    for (int d = 0; d < D; d++) {
      const double o = out[(size_t)b * D + d], xv = x[(size_t)b * D + d];
      parts += gaussian ? 0.5 * (xv - o) * (xv - o) / s2 : std::max(o, 0.0) + log1p(exp(-fabs(o))) + fabs(xv * o);
    }
    const double tol = ((D + 31) / 32 + 21) * kU * parts;
    const double err = fabs((double)gpu.nll[b] - nll[b]);
    ASSERT_TRUE(isfinite(gpu.nll[b])) << "row " << b;
    ASSERT_LE(err, tol) << "row " << b << " gpu " << gpu.nll[b] << " cpu " << nll[b];
    worst->nll = std::max(worst->nll, err / tol);
  }
  const double atol = gaussian ? 0.0 : 8 * kU * fabs(scale), rtol = 2 * kU;
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
  EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, b.p, 1.0f, nll.p, g.p, 1.0f, 0, 4, 0));
  EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, b.p, 1.0f, nll.p, g.p, 1.0f, 2, -3, 0));
  EXPECT_EQ(inval, gaussian_nll_grad_cuda(nullptr, b.p, 1.0f, nll.p, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, b.p, 1.0f, nullptr, g.p, 1.0f, 2, 4, 0));
  for (float sigma : {0.0f, -1.0f, NAN, INFINITY})
    EXPECT_EQ(inval, gaussian_nll_grad_cuda(a.p, b.p, sigma, nll.p, g.p, 1.0f, 2, 4, 0)) << "sigma " << sigma;
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
  ASSERT_EQ(cudaSuccess, gaussian_nll_grad_cuda(d_out.p, d_x.p, 0.3f, nll_g.p, grad_g.p, 1.0f / B, B, D, stream));
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

}  // namespace
