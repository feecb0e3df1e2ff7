/* Reparameterization + closed-form KL, forward and backward in one pass each (docs/MATH.md sections 2-3).
 * CPU twin of kernels/reparam_kl.cu. Rows are split across threads; the exponentials are vectorised
 * (simd_math.h). */
#include <math.h>

#include "cuvae/cpu.h"
#include "parallel.h"
#include "simd_math.h"

enum { KL_CHUNK = 256 };  /* standard deviations of one chunk, kept for the double-precision KL sum */

/* One row: z = mu + exp(0.5 lv) * eps; returns KL = 0.5 sum_j (mu^2 + exp(lv) - 1 - lv), summed in double (for
 * small lv, exp(lv) - 1 - lv cancels, so the terms are formed in double too). */
CUVAE_VECTOR_CLONES
static double reparam_kl_row(const float *restrict mu, const float *restrict lv, const float *restrict e,
                             float *restrict z, int Z) {
  float sd[KL_CHUNK];
  double kl = 0.0;
  for (int j0 = 0; j0 < Z; j0 += KL_CHUNK) {
    const int n = Z - j0 < KL_CHUNK ? Z - j0 : KL_CHUNK;
    CUVAE_SIMD
    for (int j = 0; j < n; j++) {
      sd[j] = expf(0.5f * lv[j0 + j]);
      z[j0 + j] = mu[j0 + j] + sd[j] * e[j0 + j];
    }
    for (int j = 0; j < n; j++)
      kl += (double)mu[j0 + j] * mu[j0 + j] + (double)sd[j] * sd[j] - 1.0 - lv[j0 + j];
  }
  return 0.5 * kl;
}

/* z = mu + exp(0.5 lv) * eps;  KL(N(mu, diag(exp(lv))) || N(0, I)) = 0.5 sum_j (mu^2 + exp(lv) - 1 - lv). */
void reparam_kl_forward_cpu(const float *mulv, const float *eps, float *z, float *kl_row, int B, int Z) {
  CUVAE_PARALLEL_FOR((size_t)B * Z)
  for (int b = 0; b < B; b++) {
    const float *mu = mulv + (size_t)b * 2 * Z;
    kl_row[b] = (float)reparam_kl_row(mu, mu + Z, eps + (size_t)b * Z, z + (size_t)b * Z, Z);
  }
}

/* One row of the backward pass (see below). */
CUVAE_VECTOR_CLONES
static void reparam_kl_backward_row(const float *restrict mu, const float *restrict lv, const float *restrict e,
                                    const float *restrict g, float kl_scale, float *restrict dmu,
                                    float *restrict dlv, int Z) {
  CUVAE_SIMD
  for (int j = 0; j < Z; j++) {
    const float sd = expf(0.5f * lv[j]);
    dmu[j] = g[j] + kl_scale * mu[j];
    dlv[j] = g[j] * e[j] * 0.5f * sd + kl_scale * 0.5f * (sd * sd - 1.0f);
  }
}

/* dmu = dz + s * mu;  dlv = dz * eps * 0.5 exp(0.5 lv) + s * 0.5 (exp(lv) - 1), with s = dL/dKL_b. */
void reparam_kl_backward_cpu(const float *mulv, const float *eps, const float *dz, float kl_scale,
                             float *dmulv, int B, int Z) {
  CUVAE_PARALLEL_FOR((size_t)B * Z)
  for (int b = 0; b < B; b++) {
    const float *mu = mulv + (size_t)b * 2 * Z;
    float *dmu = dmulv + (size_t)b * 2 * Z;
    reparam_kl_backward_row(mu, mu + Z, eps + (size_t)b * Z, dz + (size_t)b * Z, kl_scale, dmu, dmu + Z, Z);
  }
}
