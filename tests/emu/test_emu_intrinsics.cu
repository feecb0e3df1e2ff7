// The math intrinsics as a GPU computes them: the approximate ones (__expf, __logf, __sinf, __sincosf, __fdividef,
// rsqrtf, ...) within the CUDA C++ Programming Guide's documented error bounds, deterministic, and (under the
// emulation) actually different from the exact values; the _rn ones correctly rounded and never fused into an FMA.
// Ordinary CUDA: the same file runs natively with nvcc (label gpu), where the bounds are the hardware's promise.
#include "cuda_compat.h"
// (keep the order)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "device_vec.h"

namespace {

enum Fn { kExpf, kExp10f, kLogf, kLog2f, kLog10f, kSinf, kCosf, kSincosSin, kSincosCos, kFdividef, kRsqrtf, kCount };
const char *const kNames[] = {"__expf",  "__exp10f", "__logf",           "__log2f",           "__log10f", "__sinf",
                              "__cosf",  "__sincosf (sin)", "__sincosf (cos)", "__fdividef", "rsqrtf"};

__global__ void approx_kernel(int fn, const float *a, const float *b, float *out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float r = 0.0f, s = 0.0f, c = 0.0f;
  switch (fn) {
    case kExpf: r = __expf(a[i]); break;
    case kExp10f: r = __exp10f(a[i]); break;
    case kLogf: r = __logf(a[i]); break;
    case kLog2f: r = __log2f(a[i]); break;
    case kLog10f: r = __log10f(a[i]); break;
    case kSinf: r = __sinf(a[i]); break;
    case kCosf: r = __cosf(a[i]); break;
    case kSincosSin: __sincosf(a[i], &s, &c), r = s; break;
    case kSincosCos: __sincosf(a[i], &s, &c), r = c; break;
    case kFdividef: r = __fdividef(a[i], b[i]); break;
    case kRsqrtf: r = rsqrtf(a[i]); break;
  }
  out[i] = r;
}

double ulp_of(double y) {  // the spacing of floats in the binade of |y| (y normal)
  int e;
  frexp(y, &e);
  return ldexp(1.0, e - 24);
}

struct Sample {
  std::vector<float> a, b;
};

Sample inputs(int fn, int n) {
  std::mt19937 rng(17 + fn);
  auto uniform = [&](double lo, double hi) { return (float)std::uniform_real_distribution<double>(lo, hi)(rng); };
  Sample s{std::vector<float>(n), std::vector<float>(n, 1.0f)};
  for (int i = 0; i < n; i++) {
    switch (fn) {
      case kExpf: s.a[i] = uniform(-80, 80); break;
      case kExp10f: s.a[i] = uniform(-35, 35); break;
      case kLogf:
      case kLog2f:
      case kLog10f: s.a[i] = i % 2 ? uniform(0.5, 2.0) : expf(uniform(-80, 80)); break;
      case kSinf:
      case kCosf:
      case kSincosSin:
      case kSincosCos: s.a[i] = i % 2 ? uniform(-M_PI, M_PI) : uniform(-2 * M_PI, 2 * M_PI); break;
      case kFdividef: s.a[i] = uniform(-1e3, 1e3), s.b[i] = expf(uniform(-80, 80)) * (i % 2 ? 1 : -1); break;
      case kRsqrtf: s.a[i] = expf(uniform(-80, 80)); break;
    }
  }
  return s;
}

// The exact value and the documented bound on |result - exact| (CUDA C++ Programming Guide, "Intrinsic Functions";
// rsqrtf: CUDA Math API, 2 ulp). __sinf/__cosf: 2^-21.41 on [-pi, pi]; beyond, the Guide says "larger" without a
// number: on (pi, 2 pi] (the angles cuRAND's Box-Muller passes) this test assumes 2^-21.41 + |x| 2^-23, the
// in-range bound plus the rounding of the hardware's argument reduction (x / (2 pi) in float, < 1 ulp of a value
// below 1, times 2 pi). That assumption is what tests/emu/curand_bound.h builds on; a GPU run checks it here.
void exact_and_bound(int fn, double x, double y, double *exact, double *bound) {
  switch (fn) {
    case kExpf: *exact = exp(x), *bound = (2 + floor(fabs(1.173 * x))) * ulp_of(*exact); break;
    case kExp10f: *exact = pow(10.0, x), *bound = (2 + floor(fabs(2.95 * x))) * ulp_of(*exact); break;
    case kLogf:
      *exact = log(x), *bound = (x >= 0.5 && x <= 2) ? exp2(-21.41) : 3 * ulp_of(*exact);
      break;
    case kLog2f: *exact = log2(x), *bound = (x >= 0.5 && x <= 2) ? exp2(-22) : 2 * ulp_of(*exact); break;
    case kLog10f: *exact = log10(x), *bound = (x >= 0.5 && x <= 2) ? exp2(-24) : 3 * ulp_of(*exact); break;
    case kSinf:
    case kSincosSin:
    case kCosf:
    case kSincosCos:
      *exact = (fn == kSinf || fn == kSincosSin) ? sin(x) : cos(x);
      *bound = exp2(-21.41) + (fabs(x) > M_PI ? fabs(x) * exp2(-23) : 0.0);
      break;
    case kFdividef: *exact = x / y, *bound = 2 * ulp_of(*exact); break;
    case kRsqrtf: *exact = 1.0 / sqrt(x), *bound = 2 * ulp_of(*exact); break;
  }
}

std::vector<float> run(int fn, const Sample &s) {
  const int n = (int)s.a.size();
  DeviceVec<float> da(s.a), db(s.b), dout(n);
  CUVAE_LAUNCH(approx_kernel, (n + 127) / 128, 128, 0, 0, fn, da.p, db.p, dout.p, n);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  return dout.get();
}

TEST(Intrinsics, ApproximateOnesStayWithinTheDocumentedBoundsDeterministically) {
  const int n = 8192;
  for (int fn = 0; fn < kCount; fn++) {
    SCOPED_TRACE(kNames[fn]);
    const Sample s = inputs(fn, n);
    const std::vector<float> got = run(fn, s), again = run(fn, s);
    ASSERT_EQ(std::memcmp(got.data(), again.data(), n * sizeof(float)), 0) << "the same inputs, other results";
    int differ = 0;  // results other than the correctly rounded value
    double worst = 0.0;  // max |error| / bound
    for (int i = 0; i < n; i++) {
      double exact, bound;
      exact_and_bound(fn, s.a[i], s.b[i], &exact, &bound);
      const double err = fabs((double)got[i] - exact);
      if (fabs(exact) < FLT_MIN && (fn == kExpf || fn == kExp10f) && got[i] == 0.0f) continue;  // .ftz flushes
      ASSERT_LE(err, bound) << "x " << s.a[i] << " y " << s.b[i] << " got " << got[i] << " exact " << exact;
      worst = std::max(worst, err / bound);
      differ += got[i] != (float)exact;
    }
    std::printf("%-16s %5d of %d differ from the correctly rounded value; max error %.2f of the bound\n",
                kNames[fn], differ, n, worst);
#ifdef CUVAE_CUDA_EMU
    // The emulation's model: no test can pass by assuming the GPU's intrinsic equals the host's exact function.
    EXPECT_GE(differ, n / 10) << "the emulated intrinsic is (almost) the exact function";
#endif
  }
}

// __sincosf is __sinf and __cosf of the same argument.
__global__ void sincos_pair(const float *a, float *out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  __sincosf(a[i], &out[4 * i], &out[4 * i + 1]);
  out[4 * i + 2] = __sinf(a[i]);
  out[4 * i + 3] = __cosf(a[i]);
}

TEST(Intrinsics, SincosfIsSinfAndCosf) {
  const Sample s = inputs(kSinf, 1024);
  DeviceVec<float> da(s.a), dout(4 * s.a.size());
  CUVAE_LAUNCH(sincos_pair, 8, 128, 0, 0, da.p, dout.p, 1024);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> o = dout.get();
  for (int i = 0; i < 1024; i++) {
    EXPECT_EQ(o[4 * i], o[4 * i + 2]) << s.a[i];
    EXPECT_EQ(o[4 * i + 1], o[4 * i + 3]) << s.a[i];
  }
}

// The _rn intrinsics: IEEE round-to-nearest-even, as the host's float operations (the double result rounded once
// more to float is correctly rounded for +, -, *, /, sqrt: 53 >= 2 * 24 + 2 bits). __fadd_rn(__fmul_rn(a, b), c)
// rounds twice even where nvcc (and -ffp-contract=fast) would fuse a * b + c: the inputs are chosen so that the
// fused result differs.
__global__ void rn_kernel(const float *a, const float *b, const float *c, float *out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[7 * i + 0] = __fadd_rn(a[i], b[i]);
  out[7 * i + 1] = __fsub_rn(a[i], b[i]);
  out[7 * i + 2] = __fmul_rn(a[i], b[i]);
  out[7 * i + 3] = __fdiv_rn(a[i], b[i]);
  out[7 * i + 4] = __frcp_rn(b[i]);
  out[7 * i + 5] = __fsqrt_rn(fabsf(a[i]));
  out[7 * i + 6] = __fadd_rn(__fmul_rn(a[i], b[i]), c[i]);
}

TEST(Intrinsics, RoundToNearestOnesAreCorrectlyRoundedAndUnfused) {
  const int n = 4096;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  std::vector<float> a(n), b(n), c(n);
  int fusable = 0;
  for (int i = 0; i < n; i++) {
    a[i] = u(rng), b[i] = u(rng);
    if (b[i] == 0.0f) b[i] = 1.0f;
    c[i] = -(float)((double)a[i] * b[i]);  // a * b + c is the product's rounding error, which an FMA keeps
    fusable += std::fmaf(a[i], b[i], c[i]) != (float)((double)(float)((double)a[i] * b[i]) + c[i]);
  }
  ASSERT_GT(fusable, n / 2);
  DeviceVec<float> da(a), db(b), dc(c), dout(7 * n);
  CUVAE_LAUNCH(rn_kernel, n / 128, 128, 0, 0, da.p, db.p, dc.p, dout.p, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> o = dout.get();
  for (int i = 0; i < n; i++) {
    const double x = a[i], y = b[i];
    EXPECT_EQ(o[7 * i + 0], (float)(x + y)) << i;
    EXPECT_EQ(o[7 * i + 1], (float)(x - y)) << i;
    EXPECT_EQ(o[7 * i + 2], (float)(x * y)) << i;
    EXPECT_EQ(o[7 * i + 3], (float)(x / y)) << i;
    EXPECT_EQ(o[7 * i + 4], (float)(1.0 / y)) << i;
    EXPECT_EQ(o[7 * i + 5], (float)sqrt(fabs(x))) << i;
    EXPECT_EQ(o[7 * i + 6], (float)((double)(float)(x * y) + c[i])) << i;
  }
}

}  // namespace
