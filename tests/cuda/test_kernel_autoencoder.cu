// kernels/autoencoder.cu against its CPU twins (src/backend/cpu/autoencoder_cpu.c): squared_error_grad_cuda (xhat = out and
// xhat = sigmoid(out)), latent_mean_forward_cuda and latent_mean_backward_cuda, at B in {1, 3, 128, 257} x D in
// {1, 7, 784, 1000} (Z in {1, 20, 1000}); the twin's gradient against central differences of its own error; NULL
// gradient (forward only), determinism, argument checks and graph replay. Runs emulated (emu) and natively (gpu).
//
// Tolerances. u = 2^-24 (float's unit roundoff); each comparison is |ref - out| <= atol + rtol |ref|.
// - xhat = out: r = out - x and the gradient (2 scale) r (times 1.0f) are the same float operations on both sides:
//   equal. err_row: the kernel sums r^2 in float (per thread in column order, then a tree of <= 10 levels: each
//   term passes through <= ceil(D/32) + 10 roundings of <= u), the twin in double: |gpu - cpu| <= (ceil(D/32) + 17)
//   u S with S = sum_d r^2 (+ the roundings of r^2 and of the twin's final float).
// - xhat = sigmoid(out) = (1 or e) / (1 + e), e = expf(-|out|): expf errs by <= 2 ulp on a GPU and <= 4 ulp in the
//   twin's libmvec (1 ulp <= 2u relative), so e differs by <= 12u relative, and with the sum and the division
//   (u each per side) xhat by d <= 16u xhat <= 16u. Then r differs by <= d + 2u |r|, r^2 by <= 2 |r| d + 6u r^2:
//   err_row gets + 33u sum_d |r|. The gradient 2 s r xhat (1 - xhat) (|r| <= 1 for x, xhat in [0, 1]; xhat (1 -
//   xhat) <= 1/4): <= 2|s| (1.25 d + 3.5u) + 4u |g| <= 2|s| 23.5u + 4u |g|: atol = 48u |s|, rtol = 4u. The absolute
//   term matters where 1 - xhat is a few ulp (|out| > 16): there both sides' gradients are tiny and may differ
//   relatively by O(1).
// - Central differences of the twin (h = 2^-6, out on a 2^-8 grid so out +- h is exact; scale s = 1/2): err_row
//   rounds to float once per side (|err| u each); the perturbed term r^2 errs by <= 3u r^2 (identity) or <=
//   24u |r| + 3u r^2 (sigmoid: the twin's xhat errs by <= 12u) per side; the identity error is quadratic in out
//   (central differences exact); for the sigmoid, |d^3/dl^3 (sigmoid(l) - x)^2| <= 6 (1/4) 0.0963 + 2 (1/8) < 0.4, a
//   truncation <= h^2/6 0.4. The twin's gradient itself errs by <= u |g| (identity) or 40u |s| + 3u |g| (sigmoid).
// - latent_mean: copies: bitwise equal (the lv half of dmulv exactly 0).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

const double kU = ldexp(1.0, -24);
const int kBatches[] = {1, 3, 128, 257};
const int kDims[] = {1, 7, 784, 1000};

std::vector<float> make_uniform(size_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &a : v) a = u(rng);
  return v;
}

// Targets in [0, 1] with exact 0s and 1s (every 5th and 7th element).
std::vector<float> make_x(size_t n, unsigned seed) {
  std::vector<float> x = make_uniform(n, 0.0f, 1.0f, seed);
  for (size_t i = 0; i < n; i++) x[i] = i % 5 == 0 ? 0.0f : i % 7 == 0 ? 1.0f : x[i];
  return x;
}

bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double sigmoid(double l) { return 1.0 / (1.0 + exp(-l)); }

struct Result {
  std::vector<float> err, grad;
};

Result run_gpu(const std::vector<float> &out, const std::vector<float> &x, int sigmoid_out, float scale, int B, int D,
               bool with_grad) {
  DeviceVec<float> d_out(out), d_x(x), d_err(B), d_grad(with_grad ? out.size() : 1);
  EXPECT_EQ(cudaSuccess, squared_error_grad_cuda(d_out.p, d_x.p, sigmoid_out, d_err.p, with_grad ? d_grad.p : nullptr,
                                                 scale, B, D, 0));
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  Result r;
  r.err = d_err.get();
  if (with_grad) r.grad = d_grad.get();
  return r;
}

// Worst |gpu - cpu| / tol of a test, printed at its end.
struct Worst {
  const char *what;
  double ratio = 0;
  ~Worst() { printf("[ measured ] %s: max |ref - out| / tolerance = %.3g\n", what, ratio); }
  void check(double out, double ref, double tol, const char *name, size_t at) {
    const double err = fabs(out - ref);
    ASSERT_TRUE(isfinite(out)) << name << " " << at;
    ASSERT_LE(err, tol) << name << " " << at << " out " << out << " ref " << ref;
    ratio = std::max(ratio, tol > 0 ? err / tol : 0.0);
  }
};

void compare_with_cpu(const std::vector<float> &out, const std::vector<float> &x, int sigmoid_out, float scale, int B,
                      int D, Worst &worst) {
  SCOPED_TRACE(testing::Message() << "sigmoid_out " << sigmoid_out << " B " << B << " D " << D);
  const Result gpu = run_gpu(out, x, sigmoid_out, scale, B, D, true);
  std::vector<float> err(B), grad(out.size());
  squared_error_grad_cpu(out.data(), x.data(), sigmoid_out, err.data(), grad.data(), scale, B, D);
  EXPECT_TRUE(sigmoid_out || bitwise_equal(gpu.grad, grad)) << "xhat = out: the same float operations";
  for (int b = 0; b < B; b++) {
    double S = 0, R = 0;
    for (int d = 0; d < D; d++) {
      const size_t i = (size_t)b * D + d;
      const double r = (sigmoid_out ? sigmoid(out[i]) : out[i]) - x[i];
      S += r * r, R += fabs(r);
      if (sigmoid_out) worst.check(gpu.grad[i], grad[i], 48 * kU * fabs(scale) + 4 * kU * fabs(grad[i]), "dout", i);
      if (testing::Test::HasFatalFailure()) return;
    }
    worst.check(gpu.err[b], err[b], ((D + 31) / 32 + 17) * kU * S + (sigmoid_out ? 33 * kU * R : 0.0), "err_row", b);
    if (testing::Test::HasFatalFailure()) return;
  }
}

// Identity outputs in [-0.5, 1.5]; logits in [-20, 20] (saturated sigmoids included), scale 1 or 1/B.
TEST(KernelAutoencoder, SquaredErrorMatchesCpu) {
  Worst worst{"squared_error_grad"};
  for (int sigmoid_out : {0, 1})
    for (int B : kBatches)
      for (int D : kDims) {
        const size_t n = (size_t)B * D;
        const std::vector<float> out = sigmoid_out ? make_uniform(n, -20.0f, 20.0f, 10 + B + D)
                                                   : make_uniform(n, -0.5f, 1.5f, 20 + B + D),
                                 x = make_x(n, 30 + B * 3 + D);
        compare_with_cpu(out, x, sigmoid_out, D < 100 ? 1.0f : 1.0f / B, B, D, worst);
        if (HasFatalFailure()) return;
      }
}

// Central differences of the twin's err_row (computed forward only, dout == NULL) against its gradient.
TEST(KernelAutoencoder, SquaredErrorGradientIsTheDerivative) {
  const double h = 1.0 / 64;
  const float scale = 0.5f;
  Worst worst{"central differences"};
  for (int sigmoid_out : {0, 1}) {
    const int B = 2, D = 7;
    std::vector<float> out = make_uniform((size_t)B * D, sigmoid_out ? -4.0f : -0.5f, sigmoid_out ? 4.0f : 1.5f, 40),
                       x = make_x((size_t)B * D, 41);
    for (float &a : out) a = roundf(a * 256.0f) / 256.0f;
    std::vector<float> err(B), grad(out.size()), err_p(B), err_m(B);
    squared_error_grad_cpu(out.data(), x.data(), sigmoid_out, err.data(), grad.data(), scale, B, D);
    for (size_t i = 0; i < out.size(); i++) {
      const int b = (int)(i / D);
      const float saved = out[i];
      out[i] = saved + (float)h;
      squared_error_grad_cpu(out.data(), x.data(), sigmoid_out, err_p.data(), nullptr, scale, B, D);
      out[i] = saved - (float)h;
      squared_error_grad_cpu(out.data(), x.data(), sigmoid_out, err_m.data(), nullptr, scale, B, D);
      out[i] = saved;
      const double fd = scale * ((double)err_p[b] - err_m[b]) / (2 * h);
      double term = 0;  // the perturbed term's rounding, both sides
      for (double o : {saved + h, saved - h}) {
        const double r = (sigmoid_out ? sigmoid(o) : o) - x[i];
        term += (sigmoid_out ? 24 * kU * fabs(r) : 0.0) + 3 * kU * r * r;
      }
      const double tol =
          scale * ((fabs(err_p[b]) + fabs(err_m[b])) * kU + term) / (2 * h) +
          (sigmoid_out ? scale * h * h / 6 * 0.4 + 40 * kU * scale + 3 * kU * fabs(grad[i]) : kU * fabs(grad[i]));
      ASSERT_LE(tol, 1e-4) << "the check would be too loose";
      SCOPED_TRACE(testing::Message() << "sigmoid_out " << sigmoid_out << " fd " << fd);
      worst.check(grad[i], fd, tol, "dout", i);
      if (HasFatalFailure()) return;
    }
    std::vector<float> only(B);
    squared_error_grad_cpu(out.data(), x.data(), sigmoid_out, only.data(), nullptr, scale, B, D);
    EXPECT_TRUE(bitwise_equal(err, only)) << "forward-only twin, sigmoid_out " << sigmoid_out;
  }
}

// dout == NULL on the device: the same err_row bitwise; two runs bitwise equal.
TEST(KernelAutoencoder, SquaredErrorNullGradientAndDeterminism) {
  for (int sigmoid_out : {0, 1})
    for (int D : {7, 1000}) {
      const int B = 257;
      const size_t n = (size_t)B * D;
      const std::vector<float> out = make_uniform(n, -6.0f, 6.0f, 50 + D), x = make_x(n, 51 + D);
      const Result a = run_gpu(out, x, sigmoid_out, 1.0f / B, B, D, true),
                   b = run_gpu(out, x, sigmoid_out, 1.0f / B, B, D, true),
                   fwd = run_gpu(out, x, sigmoid_out, 1.0f / B, B, D, false);
      EXPECT_TRUE(bitwise_equal(a.err, b.err) && bitwise_equal(a.grad, b.grad)) << sigmoid_out << " D " << D;
      EXPECT_TRUE(bitwise_equal(a.err, fwd.err)) << sigmoid_out << " D " << D;
    }
}

// Known values: x = 1/2 against out = 0 (identity: r = -1/2, err 1/4, dout = 2 s r = -s) and against logit 0
// (sigmoid 1/2: r = 0, err 0, dout 0); logit 40 against x = 1: sigmoid rounds to 1, err 0, dout 0.
TEST(KernelAutoencoder, SquaredErrorKnownValues) {
  const std::vector<float> x = {0.5f, 1.0f}, out = {0.0f, 40.0f};
  const Result id = run_gpu(out, x, 0, 2.0f, 1, 2, true), sg = run_gpu(out, x, 1, 2.0f, 1, 2, true);
  EXPECT_EQ(0.25f + 39.0f * 39.0f, id.err[0]);
  EXPECT_EQ(-2.0f, id.grad[0]);
  EXPECT_EQ(2.0f * 2.0f * 39.0f, id.grad[1]);
  EXPECT_EQ(0.0f, sg.err[0]);
  EXPECT_EQ(0.0f, sg.grad[0]);
  EXPECT_EQ(0.0f, sg.grad[1]);
}

// latent_mean forward and backward against the twins, bitwise; outputs prefilled with NaN so every element must be
// written (the lv half of dmulv with exactly +0). B = 300, Z = 1000 exceeds one grid-stride wave (1024 x 256).
TEST(KernelAutoencoder, LatentMeanMatchesCpu) {
  std::vector<std::pair<int, int>> shapes;
  for (int B : kBatches)
    for (int Z : {1, 20, 1000}) shapes.push_back({B, Z});
  shapes.push_back({300, 1000});
  for (auto [B, Z] : shapes) {
    SCOPED_TRACE(testing::Message() << "B " << B << " Z " << Z);
    const std::vector<float> mulv = make_uniform((size_t)B * 2 * Z, -3, 3, 60 + B + Z),
                             dz = make_uniform((size_t)B * Z, -1, 1, 61 + B + Z);
    DeviceVec<float> d_mulv(mulv), d_dz(dz), d_z(std::vector<float>((size_t)B * Z, NAN)),
        d_dmulv(std::vector<float>((size_t)B * 2 * Z, NAN));
    CUDA_OK(latent_mean_forward_cuda(d_mulv.p, d_z.p, B, Z, 0));
    CUDA_OK(latent_mean_backward_cuda(d_dz.p, d_dmulv.p, B, Z, 0));
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> z((size_t)B * Z, NAN), dmulv((size_t)B * 2 * Z, NAN);
    latent_mean_forward_cpu(mulv.data(), z.data(), B, Z);
    latent_mean_backward_cpu(dz.data(), dmulv.data(), B, Z);
    EXPECT_TRUE(bitwise_equal(z, d_z.get()));
    EXPECT_TRUE(bitwise_equal(dmulv, d_dmulv.get()));
    for (int b = 0; b < B; b++)  // the twins themselves: z = mu, dmulv = [dz | +0]
      for (int j = 0; j < Z; j++) {
        ASSERT_EQ(mulv[(size_t)b * 2 * Z + j], z[(size_t)b * Z + j]);
        ASSERT_EQ(dz[(size_t)b * Z + j], dmulv[(size_t)b * 2 * Z + j]);
        const float lv_grad = dmulv[(size_t)b * 2 * Z + Z + j];
        ASSERT_TRUE(lv_grad == 0.0f && !std::signbit(lv_grad));
      }
  }
}

TEST(KernelAutoencoder, InvalidArguments) {
  DeviceVec<float> a(8), x(8), e(2), g(8);
  const cudaError_t inval = cudaErrorInvalidValue;
  for (int bad : {0, -1}) {
    EXPECT_EQ(inval, squared_error_grad_cuda(a.p, x.p, 1, e.p, g.p, 1.0f, bad, 4, 0));
    EXPECT_EQ(inval, squared_error_grad_cuda(a.p, x.p, 1, e.p, g.p, 1.0f, 2, bad, 0));
    EXPECT_EQ(inval, latent_mean_forward_cuda(a.p, x.p, bad, 2, 0));
    EXPECT_EQ(inval, latent_mean_forward_cuda(a.p, x.p, 2, bad, 0));
    EXPECT_EQ(inval, latent_mean_backward_cuda(x.p, a.p, bad, 2, 0));
    EXPECT_EQ(inval, latent_mean_backward_cuda(x.p, a.p, 2, bad, 0));
  }
  EXPECT_EQ(inval, squared_error_grad_cuda(nullptr, x.p, 0, e.p, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, squared_error_grad_cuda(a.p, nullptr, 0, e.p, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, squared_error_grad_cuda(a.p, x.p, 0, nullptr, g.p, 1.0f, 2, 4, 0));
  EXPECT_EQ(inval, latent_mean_forward_cuda(nullptr, x.p, 2, 2, 0));
  EXPECT_EQ(inval, latent_mean_forward_cuda(a.p, nullptr, 2, 2, 0));
  EXPECT_EQ(inval, latent_mean_backward_cuda(nullptr, a.p, 2, 2, 0));
  EXPECT_EQ(inval, latent_mean_backward_cuda(x.p, nullptr, 2, 2, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // nothing was launched
}

// The three launchers captured into one graph; two replays (outputs cleared between them) equal eager launches.
TEST(KernelAutoencoder, GraphReplayEqualsEager) {
  const int B = 128, D = 784, Z = 20;
  const std::vector<float> out = make_uniform((size_t)B * D, -6, 6, 70), x = make_x((size_t)B * D, 71),
                           mulv = make_uniform((size_t)B * 2 * Z, -3, 3, 72),
                           dz = make_uniform((size_t)B * Z, -1, 1, 73);
  DeviceVec<float> d_out(out), d_x(x), d_mulv(mulv), d_dz(dz), err(B), grad((size_t)B * D), z((size_t)B * Z),
      dmulv((size_t)B * 2 * Z);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  auto enqueue = [&]() {
    EXPECT_EQ(cudaSuccess, squared_error_grad_cuda(d_out.p, d_x.p, 1, err.p, grad.p, 1.0f / B, B, D, stream));
    EXPECT_EQ(cudaSuccess, latent_mean_forward_cuda(d_mulv.p, z.p, B, Z, stream));
    EXPECT_EQ(cudaSuccess, latent_mean_backward_cuda(d_dz.p, dmulv.p, B, Z, stream));
  };
  auto read = [&]() { return std::vector<std::vector<float>>{err.get(), grad.get(), z.get(), dmulv.get()}; };
  enqueue();
  CUDA_OK(cudaStreamSynchronize(stream));
  const std::vector<std::vector<float>> want = read();
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  enqueue();
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; replay++) {
    err.zero(), grad.zero(), z.zero(), dmulv.zero();
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const std::vector<std::vector<float>> got = read();
    for (size_t k = 0; k < want.size(); k++)
      EXPECT_TRUE(bitwise_equal(want[k], got[k])) << "replay " << replay << " output " << k;
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace
