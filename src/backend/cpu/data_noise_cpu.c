/* Data noise (docs/MATH.md section 4, dynamic binarization and dequantization (4.6); section 6, the denoising
 * autoencoder's corruption), applied to a batch with noise drawn beforehand (include/cuvae/rng.h names the streams).
 * CPU twin of kernels/data_noise.cu. Elementwise; out may equal x (in place), so no pointer is restrict. */
#include <math.h>

#include "cuvae/cpu.h"
#include "parallel.h"

/* x'_i ~ Bernoulli(x_i) from u_i ~ U(0, 1]: out = [u <= x], so P(out = 1) = x for x in [0, 1]. */
void binarize_cpu(const float *x, const float *u, float *out, size_t n) {
  CUVAE_PARALLEL_FOR(n)
  for (size_t i = 0; i < n; i++) out[i] = u[i] <= x[i] ? 1.0f : 0.0f;
}

/* Uniform dequantization, docs/MATH.md (4.6): y = (k + u) / 256 with k = rint(255 x) (x = k/255, 8-bit data) and u
 * ~ U(0, 1]: y in (k/256, (k+1)/256]. k + u rounds once (to float's 24 bits: an error <= 2^-17 for k >= 128), the
 * division by 256 is exact. */
void dequantize_cpu(const float *x, const float *u, float *out, size_t n) {
  CUVAE_PARALLEL_FOR(n)
  for (size_t i = 0; i < n; i++) out[i] = (rintf(255.0f * x[i]) + u[i]) * (1.0f / 256.0f);
}

/* Gaussian corruption: x~ = x + std * noise, noise ~ N(0, 1). */
void corrupt_gaussian_cpu(const float *x, const float *noise, float std, float *out, size_t n) {
  CUVAE_PARALLEL_FOR(n)
  for (size_t i = 0; i < n; i++) out[i] = x[i] + std * noise[i];
}

/* Masking: each element is zeroed with probability p (u ~ U(0, 1]: u <= p), kept otherwise. */
void corrupt_mask_cpu(const float *x, const float *u, float p, float *out, size_t n) {
  CUVAE_PARALLEL_FOR(n)
  for (size_t i = 0; i < n; i++) out[i] = u[i] <= p ? 0.0f : x[i];
}
