/* Free bits (docs/MATH.md (3.4)): the batch mean of each latent dimension's closed-form KL, its floor, and the floored
 * KL term's gradient. CPU twin of kernels/free_bits.cu. */
#include "cuvae/cpu.h"
#include "parallel.h"

#include <math.h>

enum { FB_COLUMNS = 256 };  /* columns summed together, one double accumulator each */

/* sums_j = 0.5 sum_b (mu_bj^2 + sd_bj^2 - 1 - lv_bj) for the n columns j0 .. j0 + n - 1 (n <= FB_COLUMNS), sd =
 * expf(0.5 lv) as in reparam_kl_forward_cpu, each column summed in double in row order. */
static void column_sums(const float *mulv, int B, int Z, int j0, int n, double *sums) {
  double acc[FB_COLUMNS];
  for (int j = 0; j < n; j++) acc[j] = 0.0;
  for (int b = 0; b < B; b++) {
    const float *mu = mulv + (size_t)b * 2 * Z + j0, *lv = mu + Z;
    for (int j = 0; j < n; j++) {
      const float sd = expf(0.5f * lv[j]);
      acc[j] += (double)mu[j] * mu[j] + (double)sd * sd - 1.0 - lv[j];
    }
  }
  for (int j = 0; j < n; j++) sums[j] = 0.5 * acc[j];
}

void free_bits_sums_cpu(const float *mulv, int B, int Z, double *sums) {
  const int n_blocks = (Z + FB_COLUMNS - 1) / FB_COLUMNS;
  CUVAE_PARALLEL_FOR((size_t)B * Z)
  for (int blk = 0; blk < n_blocks; blk++) {
    const int j0 = blk * FB_COLUMNS, n = Z - j0 < FB_COLUMNS ? Z - j0 : FB_COLUMNS;
    column_sums(mulv, B, Z, j0, n, sums + j0);
  }
}

/* KL_j = sums_j / Bt; gate_j = [KL_j >= lambda]; kl_floor_j = max(lambda, KL_j). */
void free_bits_gate_cpu(const double *sums, int Z, int batch_total, float lambda, float *gate, float *kl_floor) {
  for (int j = 0; j < Z; j++) {
    const double kl = sums[j] / (double)batch_total;
    gate[j] = kl >= (double)lambda ? 1.0f : 0.0f;
    kl_floor[j] = (float)(kl >= (double)lambda ? kl : (double)lambda);
  }
}

void free_bits_forward_cpu(const float *mulv, int B, int Z, int batch_total, float lambda, float *gate,
                           float *kl_floor) {
  const int n_blocks = (Z + FB_COLUMNS - 1) / FB_COLUMNS;
  CUVAE_PARALLEL_FOR((size_t)B * Z)
  for (int blk = 0; blk < n_blocks; blk++) {
    const int j0 = blk * FB_COLUMNS, n = Z - j0 < FB_COLUMNS ? Z - j0 : FB_COLUMNS;
    double sums[FB_COLUMNS];
    column_sums(mulv, B, Z, j0, n, sums);
    free_bits_gate_cpu(sums, n, batch_total, lambda, gate + j0, kl_floor + j0);
  }
}

/* dmu_bj += ks_j mu_bj;  dlv_bj += ks_j 0.5 (sd_bj^2 - 1),  ks_j = (beta kl_scale) gate_j: (3.2) of the rows whose
 * dimension is at or above the floor, nothing where it is below. The float expressions of the analytic KL term of
 * reparam_multi_backward_cpu. */
void free_bits_backward_cpu(const float *mulv, const float *gate, const float *beta, float kl_scale, float *dmulv,
                            int B, int Z) {
  const float ks = *beta * kl_scale;
  CUVAE_PARALLEL_FOR((size_t)B * Z)
  for (int b = 0; b < B; b++) {
    const float *mu = mulv + (size_t)b * 2 * Z, *lv = mu + Z;
    float *dmu = dmulv + (size_t)b * 2 * Z, *dlv = dmu + Z;
    for (int j = 0; j < Z; j++) {
      const float k = ks * gate[j], sd = expf(0.5f * lv[j]);
      dmu[j] = dmu[j] + k * mu[j];
      dlv[j] = dlv[j] + k * 0.5f * (sd * sd - 1.0f);
    }
  }
}
