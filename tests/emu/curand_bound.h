// How far a GPU's cuRAND normal may be from the host generator's for the same Philox integers: the bound the
// emulated and native cuRAND tests (test_emu_curand*.c*) and docs/ARCHITECTURE.md ("Random numbers") use.
//
// Both sides compute Box-Muller on a pair (x, y) of the raw stream (curand_normal.h, _curand_box_muller):
//   u = x 2^-32 + 2^-33,  v = y 2^-32 2pi + 2^-32 pi,  s = sqrtf(-2 logf(u)),  (n0, n1) = (s sin v, s cos v).
// The host branch calls sinf/cosf, the device branch __sincosf and the device's logf; nvcc may fuse v's product and
// sum (u's product is exact). Per output, with v < 2pi < 8 and u = 2^-24 the ulp of numbers in [0.5, 1):
//   (1) v fused or not: <= 1 ulp of v <= 2^-21, which moves sin/cos by <= 2^-21;
//   (2) __sincosf on (0, 2pi]: <= 2^-21.41 + |v| 2^-23 (test_emu_intrinsics.cu states and checks this assumption);
//   (3) the host's sinf/cosf: <= 1 ulp <= 2^-24;
//   (4) logf on each side <= 1 ulp (CUDA Math API; glibc < 1 ulp): -2 logf(u) differs by <= 2^-22 relative, the
//       root halves that and each sqrtf rounds once: s differs by <= 2^-23 + 2 * 2^-24 = 2^-22 relative;
//   (5) the products s sin v round once on each side: 2^-23 |n| together.
// |n_gpu - n_host| <= s ((1) + (2) + (3)) + |n| ((4) + (5)) <= s K with |n| <= s and
//   K = 2^-21 + 2^-21.41 + 2pi 2^-23 + 2^-24 + 2^-22 + 2^-23 = 2.0e-6,
// and s <= sqrt(-2 ln 2^-33) = 6.77 (u >= 2^-33), so never more than 1.4e-5; for a typical normal (s ~ 1.2) ~2.4e-6.
// mean + stddev n adds stddev times that plus two roundings (<= 2^-23 of the larger of |stddev n| and the output).
#pragma once
#include <math.h>

namespace curand_bound {

inline double k_bound() {  // K above
  return 0x1p-21 + exp2(-21.41) + 2.0 * 3.14159265358979323846 * 0x1p-23 + 0x1p-24 + 0x1p-22 + 0x1p-23;
}

// s of the pair whose first integer is x: sqrt(-2 ln u), u = x 2^-32 + 2^-33 (in double: the bound's own error is
// far below its size).
inline double box_muller_radius(unsigned x) { return sqrt(-2.0 * log((double)x * 0x1p-32 + 0x1p-33)); }

// The bound on |gpu - host| for an output mean + stddev * n whose pair's first integer is x.
inline double normal_bound(unsigned x, double mean, double stddev, double host_value) {
  const double n = (host_value - mean) / stddev;
  return stddev * box_muller_radius(x) * k_bound() + 0x1p-23 * fmax(fabs(stddev * n), fabs(host_value));
}

}  // namespace curand_bound
