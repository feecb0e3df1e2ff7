/* The multi-sample objectives of the model family (docs/MATH.md sections 2, 3, 5, 6): the beta warm-up, the sampled KL
 * and the per-sample weights of the ELBO / IWAE objectives, the backward of the multi-sample reparameterization,
 * and a row scaling. CPU twins of kernels/objective.cu; declarations, equations and the layout (R data rows x C
 * samples, sample-major: row s*R + r is sample s of data row r) in include/cuvae/cpu.h.
 *
 * Order and precision, shared with the kernels: every sum over the samples of a row runs s = 0, 1, ..., C - 1;
 * the sampled KL is summed in double over j = 0..Z-1 and stored as float; the log-weights are formed in double
 * FROM THE STORED FLOATS nll[i] and kl_s[i] (beta * kl_s is then exact in double), so the weights and row_obj are
 * functions of exactly the per-sample numbers reported, and the passes over a row (max, sum, weights) recompute
 * the same bits without a per-sample scratch buffer. */
#include <math.h>

#include "cuvae/cpu.h"
#include "parallel.h"
#include "simd_math.h"

/* The CPU twin of the beta_schedule kernel: the shared host formula, cuvae_beta_at_step (docs/MATH.md (6.2)). */
float beta_schedule_cpu(int64_t step, float beta, int64_t warmup) { return cuvae_beta_at_step(step, beta, warmup); }

/* docs/MATH.md section 5: kl_s = log q(z|x) - log p(z) = 0.5 sum_j (z_j^2 - eps_j^2 - lv_j) (the log 2pi terms
 * cancel), in double: the squares of floats are exact in double, so only the sums round. */
static double sampled_kl(const float *z, const float *eps, const float *lv, int Z) {
  double acc = 0.0;
  for (int j = 0; j < Z; j++) acc += (double)z[j] * z[j] - (double)eps[j] * eps[j] - (double)lv[j];
  return 0.5 * acc;
}

/* log w_i = -nll_i - beta kl_s_i, from the stored floats (beta * kl_s is exact in double). */
static double sample_log_weight(float nll, float beta, float kl) { return -(double)nll - (double)beta * (double)kl; }

void objective_weights_cpu(const float *mulv, const float *eps, const float *z, const float *nll, int R, int C,
                           int Z, int iwae, const float *beta, float scale, float *kl_s, float *weight,
                           float *row_obj) {
  const float b = *beta;
  const double log_c = log((double)C);
  CUVAE_PARALLEL_FOR((size_t)R * C * Z)
  for (int r = 0; r < R; r++) {
    const float *lv = mulv + (size_t)r * 2 * Z + Z;
    for (int s = 0; s < C; s++) {
      const size_t i = (size_t)s * R + r;
      kl_s[i] = (float)sampled_kl(z + i * Z, eps + i * Z, lv, Z);
    }
    if (iwae) {
      /* IWAE bound (docs/MATH.md section 5): m = max_s log w (NaN-sticky), t = sum_s exp(log w - m),
       * weight = scale exp(log w - m) / t (the softmax over the row's samples; exactly scale for C = 1),
       * row_obj = -(m + log t - log C). */
      double m = -INFINITY;
      for (int s = 0; s < C; s++) {
        const size_t i = (size_t)s * R + r;
        const double v = sample_log_weight(nll[i], b, kl_s[i]);
        if (v > m || isnan(v)) m = v;
      }
      double t = 0.0;
      for (int s = 0; s < C; s++) {
        const size_t i = (size_t)s * R + r;
        t += exp(sample_log_weight(nll[i], b, kl_s[i]) - m);
      }
      for (int s = 0; s < C; s++) {
        const size_t i = (size_t)s * R + r;
        weight[i] = (float)((double)scale * (exp(sample_log_weight(nll[i], b, kl_s[i]) - m) / t));
      }
      row_obj[r] = (float)(-(m + log(t) - log_c));
    } else {
      /* ELBO with the sampled KL (docs/MATH.md section 6, beta-VAE): row_obj = (1/C) sum_s (nll + beta kl_s),
       * every sample weighted scale / C. */
      double acc = 0.0;
      const float w = scale / (float)C;
      for (int s = 0; s < C; s++) {
        const size_t i = (size_t)s * R + r;
        acc += (double)nll[i] + (double)b * (double)kl_s[i];
        weight[i] = w;
      }
      row_obj[r] = (float)(acc / C);
    }
  }
}

/* One data row r of the backward (see reparam_multi_backward_cpu), accumulating over its samples s = 0..C-1
 * directly in the output row dmu, dlv (float, in sample order), then the terms that do not depend on the sample:
 *   sampled (weight != NULL), bw_i = beta weight_i:
 *     g_i = dz_i + bw_i z_i;  dmu = sum_s g_i;  dlv = (sum_s g_i eps_i) 0.5 sd - 0.5 beta sum_s weight_i
 *   analytic (weight == NULL), ks = beta kl_scale:
 *     dmu = sum_s dz_i + ks mu;  dlv = (sum_s dz_i eps_i) 0.5 sd + ks 0.5 (sd sd - 1)
 * with sd = exp(0.5 lv) (docs/MATH.md section 2: dz/dmu = 1, dz/dlv = eps 0.5 sd; section 3: dKL/dmu = mu,
 * dKL/dlv = 0.5 (exp(lv) - 1); section 5: dkl_s/dmu = z, dkl_s/dlv = z eps 0.5 sd - 0.5). */
CUVAE_VECTOR_CLONES
static void multi_backward_row(const float *restrict mu, const float *restrict lv, const float *restrict eps,
                               const float *restrict z, const float *restrict dz, const float *restrict weight,
                               float beta, float ks, float *restrict dmu, float *restrict dlv, int r, int R, int C,
                               int Z) {
  for (int j = 0; j < Z; j++) dmu[j] = 0.0f, dlv[j] = 0.0f;
  float wsum = 0.0f;
  for (int s = 0; s < C; s++) {
    const size_t i = (size_t)s * R + r;
    const float *g = dz + i * Z, *e = eps + i * Z;
    if (weight) {
      const float w = weight[i], bw = beta * w;
      const float *zi = z + i * Z;
      wsum += w;
      CUVAE_SIMD
      for (int j = 0; j < Z; j++) {
        const float gi = g[j] + bw * zi[j];
        dmu[j] += gi;
        dlv[j] += gi * e[j];
      }
    } else {
      CUVAE_SIMD
      for (int j = 0; j < Z; j++) {
        dmu[j] += g[j];
        dlv[j] += g[j] * e[j];
      }
    }
  }
  if (weight) {
    const float half_bw = 0.5f * beta * wsum;
    CUVAE_SIMD
    for (int j = 0; j < Z; j++) dlv[j] = dlv[j] * 0.5f * expf(0.5f * lv[j]) - half_bw;
  } else {
    CUVAE_SIMD
    for (int j = 0; j < Z; j++) {
      const float sd = expf(0.5f * lv[j]);
      dmu[j] = dmu[j] + ks * mu[j];
      dlv[j] = dlv[j] * 0.5f * sd + ks * 0.5f * (sd * sd - 1.0f);
    }
  }
}

void reparam_multi_backward_cpu(const float *mulv, const float *eps, const float *z, const float *dz,
                                const float *weight, const float *beta, float kl_scale, float *dmulv, int R, int C,
                                int Z) {
  const float b = *beta, ks = b * kl_scale;
  /* C = 1 with the analytic KL is docs/MATH.md sections 2-3 for one sample with KL weight ks: exactly the equations of
   * reparam_kl_backward_cpu, so it is that function (bit for bit whatever the compiler fuses into FMAs). */
  if (C == 1 && !weight) {
    reparam_kl_backward_cpu(mulv, eps, dz, ks, dmulv, R, Z);
    return;
  }
  CUVAE_PARALLEL_FOR((size_t)R * C * Z)
  for (int r = 0; r < R; r++) {
    const float *mu = mulv + (size_t)r * 2 * Z;
    float *dmu = dmulv + (size_t)r * 2 * Z;
    multi_backward_row(mu, mu + Z, eps, z, dz, weight, b, ks, dmu, dmu + Z, r, R, C, Z);
  }
}

/* a[b][:] *= w[b]. */
void scale_rows_cpu(float *a, const float *w, int B, int n) {
  CUVAE_PARALLEL_FOR((size_t)B * n)
  for (int b = 0; b < B; b++) {
    float *row = a + (size_t)b * n;
    const float wb = w[b];
    for (int k = 0; k < n; k++) row[k] *= wb;
  }
}
