/* Importance-weighted estimate of log p(x) (docs/MATH.md section 5), the CPU twins of kernels/iwae.cu, and the plan
 * (passes of data rows x chunks of samples, and where each chunk's noise lies) that both backends follow, so that
 * the CPU and the CUDA backend use the same eps for every sample. Declarations and the layout: include/cuvae/cpu.h.
 *
 *   log w_k = log p(x | z_k) + log N(z_k; 0, I) - log N(z_k; mu, diag exp(lv)),   z_k = mu + exp(lv / 2) eps_k
 *   log p(x) ~= logsumexp_k (log w_k) - log K
 * With z = mu + sd eps (sd = exp(lv / 2)): log N(z; 0, I) = -0.5 sum_j (z_j^2 + log 2pi) and
 * log N(z; mu, sd^2) = -0.5 sum_j (eps_j^2 + lv_j + log 2pi), so log p(z) - log q(z|x) = -0.5 sum_j (z_j^2 -
 * eps_j^2 - lv_j): the log 2pi terms cancel exactly. */
#include <math.h>

#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "parallel.h"

/* docs/MATH.md section 2 with mu, lv of data row r for each of its samples: z = mu + exp(0.5 lv) * eps, the float
 * expression (and order) of reparam_kl_forward_cpu. */
void iwae_reparam_cpu(const float *mulv, const float *eps, float *z, int R, int C, int Z) {
  CUVAE_PARALLEL_FOR((size_t)R * C * Z)
  for (int i = 0; i < R * C; i++) {
    const int r = i % R;  /* batch row i = s * R + r */
    const float *mu = mulv + (size_t)r * 2 * Z, *lv = mu + Z;
    const float *e = eps + (size_t)i * Z;
    float *zi = z + (size_t)i * Z;
    for (int j = 0; j < Z; j++) {
      const float sd = expf(0.5f * lv[j]);
      zi[j] = mu[j] + sd * e[j];
    }
  }
}

void iwae_replicate_cpu(const float *x, float *x_rep, int R, int C, int D) {
  CUVAE_PARALLEL_FOR((size_t)R * C * D)
  for (int i = 0; i < R * C; i++) {
    const float *src = x + (size_t)(i % R) * D;
    float *dst = x_rep + (size_t)i * D;
    for (int d = 0; d < D; d++) dst[d] = src[d];
  }
}

/* One sample's log-weight, docs/MATH.md section 5: log w = -nll - 0.5 sum_j (z_j^2 - eps_j^2 - lv_j), in double. */
static double iwae_log_weight(const float *z, const float *eps, const float *lv, float nll, int Z) {
  double acc = 0.0;
  for (int j = 0; j < Z; j++) acc += (double)z[j] * z[j] - (double)eps[j] * eps[j] - (double)lv[j];
  return -(double)nll - 0.5 * acc;
}

/* Streaming log-sum-exp: (m, t) represents sum_k exp(v_k) = t exp(m), starting from (-inf, 0). Adding v:
 * m' = max(m, v), t' = t exp(m - m') + exp(v - m'); one exponential either way. v = -inf adds nothing; a NaN v
 * makes m and t NaN, and a NaN m keeps them NaN (the comparison is false, exp(v - NaN) = NaN). */
static void lse_add(double *m, double *t, double v) {
  if (v > *m) {
    *t = *t * exp(*m - v) + 1.0;  /* *m = -inf on the first value: exp(-inf) = 0 */
    *m = v;
  } else if (v != -INFINITY) {
    if (isnan(v)) *m = v;
    *t += exp(v - *m);
  }
}

void iwae_log_weights_cpu(const float *mulv, const float *eps, const float *z, const float *nll, int R, int C,
                          int Z, double *log_w, double *state, int reset) {
  CUVAE_PARALLEL_FOR((size_t)R * C * Z)
  for (int r = 0; r < R; r++) {
    const float *lv = mulv + (size_t)r * 2 * Z + Z;
    double m = reset ? -INFINITY : state[2 * r], t = reset ? 0.0 : state[2 * r + 1];
    for (int s = 0; s < C; s++) {
      const size_t i = (size_t)s * R + r;
      const double v = iwae_log_weight(z + i * Z, eps + i * Z, lv, nll[i], Z);
      if (log_w) log_w[i] = v;
      lse_add(&m, &t, v);
    }
    state[2 * r] = m;
    state[2 * r + 1] = t;
  }
}

/* log p(x) estimate = log(t exp(m)) - log K = m + log t - log K (m = -inf, t = 0: -inf; NaN stays NaN). */
void iwae_finalize_cpu(const double *state, int R, int K, double *log_px) {
  const double log_k = log((double)K);
  for (int r = 0; r < R; r++) log_px[r] = state[2 * r] + log(state[2 * r + 1]) - log_k;
}
