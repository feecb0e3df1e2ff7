// The CUDA math intrinsics and device math functions under the emulation, as a GPU computes them: the approximate
// intrinsics (__expf, __logf, __sinf, __sincosf, __fdividef, rsqrtf, ...) return values that differ from the exact
// ones within the error bounds the CUDA C++ Programming Guide documents ("Intrinsic Functions" table), chosen
// deterministically from a hash of the arguments; the `_rn` intrinsics are correctly rounded and never contracted
// into an FMA. Included by cuda_emu.h (kernels) and emu_curand.cc (cuRAND's device generator). docs/CUDA_EMULATION.md,
// "Intrinsics and cuRAND's device formulas", gives the bounds and why the model takes them.
#pragma once
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

namespace cuda_emu {
namespace approx {

inline uint64_t mix(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}
inline uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}
// The perturbation's seed: the argument bits and a per-function salt, so a result depends on its inputs alone.
inline uint64_t seed(uint32_t salt, float a, float b = 0.0f) {
  return mix(((uint64_t)salt << 32 ^ bits(a)) + mix(bits(b) + UINT64_C(0x9E3779B97F4A7C15)));
}
inline double unit(uint64_t h) { return (double)(h >> 11) * 0x1p-52 - 1.0; }  // in [-1, 1)
// The spacing of floats in the binade of |y| (the ulp the Programming Guide's bounds count), y normal or zero.
inline double ulp_of(double y) {
  int e;
  frexp(y, &e);
  return ldexp(1.0, (e - 24 < -149) ? -149 : e - 24);
}
// One of the two floats around y (y itself when it is one): a faithful rounding, chosen by h. Error < 1 ulp.
inline float faithful(double y, uint64_t h) {
  const float f = (float)y;
  if ((double)f == y || !isfinite(f)) return f;
  const float other = nextafterf(f, (double)f < y ? INFINITY : -INFINITY);
  return (h & 1) ? other : f;
}
// A float within max_ulps ulp_of(y) of y (max_ulps >= 1): a faithful rounding moved by up to max_ulps - 1 steps.
inline float within_ulps(double y, double max_ulps, uint64_t h) {
  float r = faithful(y, h);
  if (!isfinite(r) || max_ulps < 2) return r;
  const int k = (int)floor(max_ulps) - 1;
  const int d = (int)((h >> 1) % (uint64_t)(2 * k + 1)) - k;
  float s = r;
  for (int i = 0; i < (d < 0 ? -d : d); i++) s = nextafterf(s, d < 0 ? -INFINITY : INFINITY);
  return fabs((double)s - y) <= max_ulps * ulp_of(y) && isfinite(s) ? s : r;
}
// y plus an absolute perturbation of up to `amplitude`, rounded: error <= amplitude + ulp_of(y) / 2.
inline float within_abs(double y, double amplitude, uint64_t h) { return (float)(y + unit(h) * amplitude); }
// The .ftz forms the approximate instructions use: a subnormal result is +-0.
inline float ftz(float r) { return fabsf(r) < FLT_MIN ? copysignf(0.0f, r) : r; }

// sin and cos the way __sinf/__cosf compute them: on [-pi, pi] within 2^-22 + 2^-25 < 2^-21.41 (the documented
// bound); beyond, the hardware's argument reduction (x scaled by 1/(2 pi) in float, < 1 ulp of a value of size
// |x| / (2 pi)) adds up to |x| 2^-23 (the Guide says only "larger otherwise": this is the emulation's model).
inline float sin_cos(double exact, float x, uint32_t salt) {
  const double ax = fabs((double)x);
  const double amplitude = 0x1p-22 + (ax > M_PI ? ax * 0x1p-23 : 0.0);
  return within_abs(exact, amplitude, seed(salt, x));
}

}  // namespace approx

// logf and expf of the GPU's math library (CUDA Math API: logf 1 ulp, expf 2 ulp): a faithful rounding of the
// exact value (< 1 ulp), chosen by a hash. Used by cuRAND's device formulas (curand_kernel.h under emulation,
// emu_curand.cc); kernels' own logf/expf are the host's libm (see docs/CUDA_EMULATION.md).
inline float device_logf(float x) {
  if (!(x > 0.0f) || isinf(x)) return logf(x);
  return approx::faithful(log((double)x), approx::seed(11, x));
}
inline float device_expf(float x) { return approx::faithful(exp((double)x), approx::seed(12, x)); }

// An opaque copy: the compiler cannot see through it, so it cannot fuse the operations on either side into an
// FMA (-ffp-contract=fast), as nvcc never fuses the _rn intrinsics.
#if defined(__x86_64__)
#define CUDA_EMU_OPAQUE(v) __asm__("" : "+x"(v))
#else
#define CUDA_EMU_OPAQUE(v) __asm__("" : "+m"(v))
#endif

}  // namespace cuda_emu

// ---- approximate intrinsics (Programming Guide, "Intrinsic Functions"; bounds against the exact value) ------------
// __expf: 2 + floor(|1.173 x|) ulp; __exp10f: 2 + floor(|2.95 x|) ulp; results in the subnormal range are 0 (.ftz).
inline float __expf(float x) {
  return cuda_emu::approx::ftz(
      cuda_emu::approx::within_ulps(exp((double)x), 2 + floor(fabs(1.173 * x)), cuda_emu::approx::seed(1, x)));
}
inline float __exp10f(float x) {
  return cuda_emu::approx::ftz(
      cuda_emu::approx::within_ulps(pow(10.0, (double)x), 2 + floor(fabs(2.95 * x)), cuda_emu::approx::seed(2, x)));
}
// The logarithms: absolute error on [0.5, 2] (__logf 2^-21.41, __log2f 2^-22, __log10f 2^-24), ulps elsewhere
// (3, 2, 3). Subnormal arguments count as 0 (.ftz): -inf.
inline float cuda_emu_log_approx(float x, double exact, double abs_bound, double ulps, uint32_t salt) {
  if (isnan(x) || x < 0.0f) return NAN;
  if (x < FLT_MIN) return -INFINITY;
  if (isinf(x)) return x;
  const uint64_t h = cuda_emu::approx::seed(salt, x);
  // abs_bound / 2 + ulp_of(exact) / 2 <= abs_bound, as |exact| <= log(2) keeps ulp_of(exact) <= 2^-24.
  if (x >= 0.5f && x <= 2.0f) return cuda_emu::approx::within_abs(exact, abs_bound / 2, h);
  return cuda_emu::approx::within_ulps(exact, ulps, h);
}
inline float __logf(float x) { return cuda_emu_log_approx(x, log((double)x), exp2(-21.41), 3, 3); }
inline float __log2f(float x) { return cuda_emu_log_approx(x, log2((double)x), 0x1p-22, 2, 4); }
inline float __log10f(float x) { return cuda_emu_log_approx(x, log10((double)x), 0x1p-24, 3, 5); }
inline float __sinf(float x) { return cuda_emu::approx::sin_cos(sin((double)x), x, 6); }
inline float __cosf(float x) { return cuda_emu::approx::sin_cos(cos((double)x), x, 7); }
inline void __sincosf(float x, float *s, float *c) {
  *s = __sinf(x);
  *c = __cosf(x);
}
// __fdividef: 2 ulp for |y| in [2^-126, 2^126]; for 2^126 < |y| < 2^128 it returns 0 (x finite) or NaN (x
// infinite), as documented.
inline float __fdividef(float x, float y) {
  const float ay = fabsf(y);
  if (ay > 0x1p126f && ay < INFINITY) return isinf(x) ? NAN : copysignf(0.0f, x) * copysignf(1.0f, y);
  return cuda_emu::approx::within_ulps((double)x / y, 2, cuda_emu::approx::seed(8, x, y));
}
// __tanf is documented as __fdividef(__sinf(x), __cosf(x)); __powf as exp2f(y * __log2f(x)) with the 2-ulp exp2.
inline float __tanf(float x) { return __fdividef(__sinf(x), __cosf(x)); }
inline float __powf(float x, float y) {
  const float t = y * __log2f(x);
  return cuda_emu::approx::ftz(cuda_emu::approx::within_ulps(exp2((double)t), 2, cuda_emu::approx::seed(9, t)));
}
// rsqrtf: 2 ulp (CUDA Math API).
inline float rsqrtf(float x) {
  if (!(x > 0.0f) || isinf(x)) return 1.0f / sqrtf(x);
  return cuda_emu::approx::within_ulps(1.0 / sqrt((double)x), 2, cuda_emu::approx::seed(10, x));
}
inline double rsqrt(double x) { return 1.0 / sqrt(x); }

// ---- correctly rounded intrinsics: IEEE round-to-nearest, never fused with a neighbouring operation -------------
inline float __fadd_rn(float a, float b) {
  CUDA_EMU_OPAQUE(a);
  CUDA_EMU_OPAQUE(b);
  float r = a + b;
  CUDA_EMU_OPAQUE(r);
  return r;
}
inline float __fsub_rn(float a, float b) { return __fadd_rn(a, -b); }
inline float __fmul_rn(float a, float b) {
  CUDA_EMU_OPAQUE(a);
  CUDA_EMU_OPAQUE(b);
  float r = a * b;
  CUDA_EMU_OPAQUE(r);
  return r;
}
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }

// ---- device math functions that cuRAND's device branches call (curand_kernel.h under emulation) ----------------
// sincospi: sin(pi x) and cos(pi x) with the reduction x mod 2 done exactly (remainder), in long double.
inline void sincospi(double x, double *s, double *c) {
  const long double a = 3.14159265358979323846264338327950288L * (long double)remainder(x, 2.0);
  *s = (double)sinl(a);
  *c = (double)cosl(a);
}
// erfcinv: the y with erfc(y) = x, x in (0, 2): a rational start (Abramowitz-Stegun 26.2.23 for the normal
// quantile of x / 2) refined by Newton steps on erfc in double.
inline double erfcinv(double x) {
  if (!(x > 0.0)) return x == 0.0 ? INFINITY : NAN;
  if (!(x < 2.0)) return x == 2.0 ? -INFINITY : NAN;
  const bool upper = x > 1.0;
  const double p = upper ? 2.0 - x : x;  // erfcinv(2 - p) = -erfcinv(p)
  const double t = sqrt(-2.0 * log(p / 2.0));
  double y = (t - (2.515517 + t * (0.802853 + t * 0.010328)) / (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)))) /
             sqrt(2.0);
  for (int i = 0; i < 6; i++) y += (erfc(y) - p) / (1.1283791670955126 * exp(-y * y));
  return upper ? -y : y;
}
inline float erfcinvf(float x) { return (float)erfcinv(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
