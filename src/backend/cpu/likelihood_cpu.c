/* Decoder negative log-likelihoods with their gradients, one pass each (docs/MATH.md section 4).
 * CPU twin of kernels/likelihood.cu. */
#include <math.h>

#include "cuvae/cpu.h"
#include "parallel.h"
#include "row_sum.h"
#include "simd_math.h"

#define LOG_2PI 1.8378770664093454836  /* log(2 pi) */

/* -log p(x|z) = sum_d softplus(l_d) - x_d l_d;  d/dl = sigmoid(l) - x.
 * Stable forms sharing one exponential e = exp(-|l|) (never overflows):
 *   softplus(l) = max(l, 0) + log1p(e);  sigmoid(l) = 1 / (1 + e) for l >= 0, e / (1 + e) for l < 0.
 * max(l, 0) is written (l + |l|) / 2 (exact) so the loop vectorises. One chunk's terms; row_sum.h adds them in
 * double in index order. */
CUVAE_VECTOR_CLONES
static void bernoulli_terms(const float *restrict l, const float *restrict x, float *restrict g, float scale,
                                   float *restrict term, int n) {
  if (g) {
    CUVAE_SIMD
    for (int d = 0; d < n; d++) {
      const float e = expf(-fabsf(l[d]));
      term[d] = 0.5f * (l[d] + fabsf(l[d])) + log1pf(e) - x[d] * l[d];
      g[d] = scale * ((l[d] >= 0.0f ? 1.0f : e) / (1.0f + e) - x[d]);
    }
  } else {
    CUVAE_SIMD
    for (int d = 0; d < n; d++) term[d] = 0.5f * (l[d] + fabsf(l[d])) + log1pf(expf(-fabsf(l[d]))) - x[d] * l[d];
  }
}

/* One row's NLL; g (may be NULL) receives scale * the gradient. */
static double bernoulli_row(const float *restrict l, const float *restrict x, float *restrict g, float scale,
                            int D) {
  return row_sum(bernoulli_terms, l, x, g, scale, D);
}

void bernoulli_nll_grad_cpu(const float *logits, const float *x, float *nll_row, float *dlogits, float scale,
                            int B, int D) {
  CUVAE_PARALLEL_FOR((size_t)B * D)
  for (int b = 0; b < B; b++)
    nll_row[b] = (float)bernoulli_row(logits + (size_t)b * D, x + (size_t)b * D,
                                      dlogits ? dlogits + (size_t)b * D : NULL, scale, D);
}

/* sum_d (x_d - f_d)^2 of one row, in double and index order (the Gaussian likelihoods' row sum). */
static double row_sq_err(const float *f, const float *x, int D) {
  double sq = 0.0;
  for (int d = 0; d < D; d++) {
    const double r = (double)x[d] - f[d];
    sq += r * r;
  }
  return sq;
}

/* g_d = g_scale (f_d - x_d): the Gaussian likelihoods' gradient w.r.t. the means. */
static void row_residual_grad(const float *f, const float *x, float g_scale, float *g, int D) {
  for (int d = 0; d < D; d++) g[d] = g_scale * (f[d] - x[d]);
}

/* -log p(x|z) = 0.5 sum_d [(x_d - f_d)^2 / s^2 + log s^2 + log 2pi] + nll_offset;  d/df = (f - x) / s^2
 * (docs/MATH.md (4.2); nll_offset: D ln 256 for dequantized data, (4.6)). */
void gaussian_nll_grad_cpu(const float *f, const float *x, float sigma, double nll_offset, float *nll_row, float *df,
                           float scale, int B, int D) {
  const double inv_s2 = 1.0 / ((double)sigma * sigma);
  const double const_term = 0.5 * D * (log((double)sigma * sigma) + LOG_2PI) + nll_offset;
  const float g_scale = (float)(scale * inv_s2);
  CUVAE_PARALLEL_FOR((size_t)B * D)
  for (int b = 0; b < B; b++) {
    const float *fr = f + (size_t)b * D, *xr = x + (size_t)b * D;
    nll_row[b] = (float)(0.5 * row_sq_err(fr, xr, D) * inv_s2 + const_term);
    if (df) row_residual_grad(fr, xr, g_scale, df + (size_t)b * D, D);
  }
}

/* docs/MATH.md (4.4), Gaussian with a learned per-dimension log-variance, floored (4.8): lv_d = max(l_d, lv_min) of
 * the head's output l_d (s_d^2 = exp(lv_d)), one row:
 *   -log p(x|z) = 0.5 sum_d [(x_d - f_d)^2 exp(-lv_d) + lv_d + log 2pi];
 *   d/df_d = (f_d - x_d) exp(-lv_d);  d/dl_d = 0.5 (1 - (x_d - f_d)^2 exp(-lv_d)), 0 where l_d < lv_min.
 * With r = f - x, w = exp(-lv), rw = r w and q = r rw = (x - f)^2 exp(-lv), the float expressions are those of the
 * CUDA kernel (kernels/likelihood.cu); the q + lv terms of a chunk are added in double in index order.
 * g (may be NULL) is the row's [df | dl], 2D floats. Returns the row's NLL without the offset. */
CUVAE_VECTOR_CLONES
static double gaussian_perdim_row(const float *restrict f, const float *restrict lv, const float *restrict x,
                                  float *restrict g, float lv_min, float scale, int D) {
  float term[ROW_CHUNK];
  double sum = 0.0;
  for (int d0 = 0; d0 < D; d0 += ROW_CHUNK) {
    const int n = D - d0 < ROW_CHUNK ? D - d0 : ROW_CHUNK;
    const float *fc = f + d0, *lc = lv + d0, *xc = x + d0;
    if (g) {
      float *dfc = g + d0, *dlc = g + D + d0;
      CUVAE_SIMD
      for (int d = 0; d < n; d++) {
        const float l = lc[d] < lv_min ? lv_min : lc[d];  /* a NaN stays a NaN */
        const float r = fc[d] - xc[d], rw = r * expf(-l), q = r * rw;
        term[d] = q;
        dfc[d] = scale * rw;
        dlc[d] = lc[d] < lv_min ? 0.0f : scale * 0.5f * (1.0f - q);
      }
    } else {
      CUVAE_SIMD
      for (int d = 0; d < n; d++) {
        const float l = lc[d] < lv_min ? lv_min : lc[d];
        const float r = fc[d] - xc[d];
        term[d] = r * (r * expf(-l));
      }
    }
    for (int d = 0; d < n; d++) sum += (double)term[d] + (lc[d] < lv_min ? lv_min : lc[d]);
  }
  return 0.5 * (sum + D * LOG_2PI);
}

void gaussian_perdim_nll_grad_cpu(const float *out, const float *x, float lv_min, double nll_offset, float *nll_row,
                                  float *dout, float scale, int B, int D) {
  CUVAE_PARALLEL_FOR((size_t)B * D)
  for (int b = 0; b < B; b++) {
    const float *f = out + (size_t)b * 2 * D;
    nll_row[b] = (float)(gaussian_perdim_row(f, f + D, x + (size_t)b * D, dout ? dout + (size_t)b * 2 * D : NULL,
                                             lv_min, scale, D) +
                         nll_offset);
  }
}

/* docs/MATH.md (4.3), Gaussian with one learned log-variance shared by every element, floored (4.8): lv =
 * max(*logvar, lv_min), w = exp(-lv), per row:
 *   -log p(x|z) = 0.5 [D lv + w sum_d (x_d - f_d)^2 + D log 2pi] + nll_offset  (D ln 256 when dequantized, (4.6));
 *   d/df_d = (f_d - x_d) w;  d/dlv = 0.5 sum_d (1 - (x_d - f_d)^2 w) = 0.5 (D - w sum_d (x_d - f_d)^2)   (this row's
 * part; the caller sums the rows), 0 where *logvar < lv_min. df and dlv_row may each be NULL (forward only). w and
 * the gradient's factor scale w are computed in double and rounded once, as the CUDA kernel does. */
void gaussian_shared_nll_grad_cpu(const float *f, const float *x, const float *logvar, float lv_min, double nll_offset,
                                  float *nll_row, float *df, float *dlv_row, float scale, int B, int D) {
  const int floored = *logvar < lv_min;
  const double lv = floored ? (double)lv_min : (double)*logvar, w = exp(-lv);
  const float g_scale = (float)(scale * w);
  CUVAE_PARALLEL_FOR((size_t)B * D)
  for (int b = 0; b < B; b++) {
    const float *fr = f + (size_t)b * D, *xr = x + (size_t)b * D;
    const double sq = row_sq_err(fr, xr, D);
    nll_row[b] = (float)(0.5 * (D * lv + w * sq + D * LOG_2PI) + nll_offset);
    if (df) row_residual_grad(fr, xr, g_scale, df + (size_t)b * D, D);
    if (dlv_row) dlv_row[b] = floored ? 0.0f : (float)(scale * 0.5 * (D - w * sq));
  }
}
