// Synthetic data from a known linear Gaussian model (pPCA, docs/MATH.md section 6), shared by
// tests/test_ppca.cc and tests/test_ppca_vae.cc: a deterministic normal generator and the draw x = W0 z + b0 + s0 e.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <cmath>
#include <vector>

#include "cuvae/rng.h"

namespace ppca_synth {

// Standard normals from splitmix64 uniforms (Box-Muller, one value per pair of uniforms): deterministic in `state`.
struct Normal {
  uint64_t state;
  double uniform() { return ((double)(cuvae_splitmix64(state++) >> 11) + 0.5) * 0x1.0p-53; }
  double operator()() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }
};

// n rows x = W0 z + b0 + s0 e, z ~ N(0, I_Z), e ~ N(0, I_D); W0 [D][Z] row-major, s0^2 = s2.
inline std::vector<float> draw(const std::vector<double> &W, const std::vector<double> &b, size_t D, size_t Z,
                               double s2, size_t n, uint64_t seed) {
  Normal g{seed};
  std::vector<float> x(n * D);
  std::vector<double> z(Z);
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < Z; j++) z[j] = g();
    for (size_t d = 0; d < D; d++) {
      double v = b[d] + std::sqrt(s2) * g();
      for (size_t j = 0; j < Z; j++) v += W[d * Z + j] * z[j];
      x[i * D + d] = (float)v;
    }
  }
  return x;
}

}  // namespace ppca_synth
