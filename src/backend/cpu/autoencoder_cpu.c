/* The autoencoder's fused pieces (docs/MATH.md section 6, objective = ae): the squared reconstruction error with its
 * gradient, and the deterministic encoder that takes z = mu. CPU twin of kernels/autoencoder.cu. */
#include <math.h>
#include <string.h>

#include "cuvae/cpu.h"
#include "parallel.h"
#include "row_sum.h"
#include "simd_math.h"

/* The reconstruction error, xhat = sigmoid(out) (sigmoid_out) or out:
 *   err = sum_d (x_d - xhat_d)^2;  d err / d out_d = 2 (xhat_d - x_d) * (sigmoid_out ? xhat_d (1 - xhat_d) : 1).
 * sigmoid(l) in the stable form of the Bernoulli decoder, with e = exp(-|l|): 1 / (1 + e) for l >= 0, else
 * e / (1 + e). The float expressions are those of the CUDA kernel. The chunk functions get two_scale = 2 * scale
 * and write the squares into sq (row_sum.h adds them in double in index order). */
CUVAE_VECTOR_CLONES
static void squared_error_sigmoid_terms(const float *restrict out, const float *restrict x, float *restrict g,
                                               float two_scale, float *restrict sq, int n) {
  CUVAE_SIMD
  for (int d = 0; d < n; d++) {
    const float e = expf(-fabsf(out[d]));
    const float xhat = (out[d] >= 0.0f ? 1.0f : e) / (1.0f + e), r = xhat - x[d];
    sq[d] = r * r;
    if (g) g[d] = two_scale * r * (xhat * (1.0f - xhat));
  }
}

CUVAE_VECTOR_CLONES
static void squared_error_terms(const float *restrict out, const float *restrict x, float *restrict g,
                                       float two_scale, float *restrict sq, int n) {
  for (int d = 0; d < n; d++) {
    const float r = out[d] - x[d];
    sq[d] = r * r;
    if (g) g[d] = two_scale * r;
  }
}

/* One row's error; g (may be NULL) receives scale * the gradient. */
static double squared_error_row(const float *restrict out, const float *restrict x, int sigmoid_out,
                                float *restrict g, float scale, int D) {
  if (sigmoid_out) return row_sum(squared_error_sigmoid_terms, out, x, g, 2.0f * scale, D);
  return row_sum(squared_error_terms, out, x, g, 2.0f * scale, D);
}

void squared_error_grad_cpu(const float *out, const float *x, int sigmoid_out, float *err_row, float *dout,
                            float scale, int B, int D) {
  CUVAE_PARALLEL_FOR((size_t)B * D)
  for (int b = 0; b < B; b++)
    err_row[b] = (float)squared_error_row(out + (size_t)b * D, x + (size_t)b * D, sigmoid_out,
                                          dout ? dout + (size_t)b * D : NULL, scale, D);
}

/* Deterministic encoder: z_b = mu_b, the first Z of the row's 2Z columns [mu | lv] (lv is unused). */
void latent_mean_forward_cpu(const float *mulv, float *z, int B, int Z) {
  CUVAE_PARALLEL_FOR((size_t)B * Z)
  for (int b = 0; b < B; b++) memcpy(z + (size_t)b * Z, mulv + (size_t)b * 2 * Z, (size_t)Z * sizeof(float));
}

/* Its backward: dL/dmu = dL/dz, dL/dlv = 0 (lv does not reach the loss). */
void latent_mean_backward_cpu(const float *dz, float *dmulv, int B, int Z) {
  CUVAE_PARALLEL_FOR((size_t)B * Z)
  for (int b = 0; b < B; b++) {
    float *row = dmulv + (size_t)b * 2 * Z;
    memcpy(row, dz + (size_t)b * Z, (size_t)Z * sizeof(float));
    memset(row + Z, 0, (size_t)Z * sizeof(float));
  }
}
