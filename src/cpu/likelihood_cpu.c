/* Decoder negative log-likelihoods with their gradients, one pass each (MATH.md section 4).
 * CPU twin of kernels/likelihood.cu. */
#include <math.h>

#include "cuvae/cpu.h"

#define LOG_2PI 1.8378770664093454836  /* log(2 pi) */

/* -log p(x|z) = sum_d softplus(l_d) - x_d l_d;  d/dl = sigmoid(l) - x.
 * Stable forms sharing one exponential e = exp(-|l|) (never overflows):
 *   softplus(l) = max(l, 0) + log1p(e);  sigmoid(l) = 1 / (1 + e) for l >= 0, e / (1 + e) for l < 0. */
void bernoulli_nll_grad_cpu(const float *logits, const float *x, float *nll_row, float *dlogits, float scale,
                            int B, int D) {
  for (int b = 0; b < B; b++) {
    const float *l = logits + (size_t)b * D, *xr = x + (size_t)b * D;
    float *g = dlogits ? dlogits + (size_t)b * D : NULL;
    double nll = 0.0;
    for (int d = 0; d < D; d++) {
      const float e = expf(-fabsf(l[d]));
      nll += fmaxf(l[d], 0.0f) + log1pf(e) - xr[d] * l[d];
      if (g) {
        const float sig = (l[d] >= 0.0f ? 1.0f : e) / (1.0f + e);
        g[d] = scale * (sig - xr[d]);
      }
    }
    nll_row[b] = (float)nll;
  }
}

/* -log p(x|z) = 0.5 sum_d [(x_d - f_d)^2 / s^2 + log s^2 + log 2pi];  d/df = (f - x) / s^2. */
void gaussian_nll_grad_cpu(const float *f, const float *x, float sigma, float *nll_row, float *df, float scale,
                           int B, int D) {
  const double inv_s2 = 1.0 / ((double)sigma * sigma);
  const double const_term = 0.5 * D * (log((double)sigma * sigma) + LOG_2PI);
  const float g_scale = (float)(scale * inv_s2);
  for (int b = 0; b < B; b++) {
    const float *fr = f + (size_t)b * D, *xr = x + (size_t)b * D;
    double sq = 0.0;
    for (int d = 0; d < D; d++) {
      const double r = (double)xr[d] - fr[d];
      sq += r * r;
    }
    nll_row[b] = (float)(0.5 * sq * inv_s2 + const_term);
    if (df) {
      float *g = df + (size_t)b * D;
      for (int d = 0; d < D; d++) g[d] = g_scale * (fr[d] - xr[d]);
    }
  }
}
