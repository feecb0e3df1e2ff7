/* Reparameterization + closed-form KL, forward and backward in one pass each (MATH.md sections 2-3).
 * CPU twin of kernels/reparam_kl.cu. */
#include <math.h>

#include "cuvae/cpu.h"

/* z = mu + exp(0.5 lv) * eps;  KL(N(mu, diag(exp(lv))) || N(0, I)) = 0.5 sum_j (mu^2 + exp(lv) - 1 - lv). */
void reparam_kl_forward_cpu(const float *mulv, const float *eps, float *z, float *kl_row, int B, int Z) {
  for (int b = 0; b < B; b++) {
    const float *mu = mulv + (size_t)b * 2 * Z, *lv = mu + Z, *e = eps + (size_t)b * Z;
    float *zr = z + (size_t)b * Z;
    double kl = 0.0;
    for (int j = 0; j < Z; j++) {
      const float sd = expf(0.5f * lv[j]);
      zr[j] = mu[j] + sd * e[j];
      kl += (double)mu[j] * mu[j] + (double)sd * sd - 1.0 - lv[j];
    }
    kl_row[b] = (float)(0.5 * kl);
  }
}

/* dmu = dz + s * mu;  dlv = dz * eps * 0.5 exp(0.5 lv) + s * 0.5 (exp(lv) - 1), with s = dL/dKL_b. */
void reparam_kl_backward_cpu(const float *mulv, const float *eps, const float *dz, float kl_scale,
                             float *dmulv, int B, int Z) {
  for (int b = 0; b < B; b++) {
    const float *mu = mulv + (size_t)b * 2 * Z, *lv = mu + Z, *e = eps + (size_t)b * Z;
    const float *g = dz + (size_t)b * Z;
    float *dmu = dmulv + (size_t)b * 2 * Z, *dlv = dmu + Z;
    for (int j = 0; j < Z; j++) {
      const float sd = expf(0.5f * lv[j]);
      dmu[j] = g[j] + kl_scale * mu[j];
      dlv[j] = g[j] * e[j] * 0.5f * sd + kl_scale * 0.5f * (sd * sd - 1.0f);
    }
  }
}
