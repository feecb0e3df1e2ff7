/* Adam over the whole parameter buffer (docs/MATH.md section 7). CPU twin of kernels/adam.cu. The buffer is split
 * across threads; every element's arithmetic is independent of the split. */
#include <float.h>
#include <math.h>

#include "cuvae/bf16.h"
#include "cuvae/cpu.h"
#include "parallel.h"
#include "simd_math.h"

enum { ADAM_CHUNK = 1 << 14 };  /* elements per task: large enough to amortise, small enough to balance */

/* One chunk of the update (the per-element arithmetic of adam_update_cpu), compiled per vector width. */
CUVAE_VECTOR_CLONES
static void adam_chunk(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                       float lr, float b1, float b2, float eps, float c1, float c2, float grad_scale,
                       uint16_t *restrict p16) {
  for (size_t i = 0; i < n; i++) {
    const float gi = grad_scale * g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi, vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    /* Moments of weights whose gradient stays ~0 (e.g. always-black pixels) decay geometrically into the
     * subnormal range, where x86 arithmetic is ~100x slower. Flushing them to 0 changes p by at most
     * lr * FLT_MIN / eps ~ 1e-33: nothing. The CUDA kernel does the same, so both paths agree. */
    mi = fabsf(mi) < FLT_MIN ? 0.0f : mi;
    vi = vi < FLT_MIN ? 0.0f : vi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * (mi * c1) / (sqrtf(vi * c2) + eps);
  }
  if (p16)  /* the GEMMs' bf16 weights, docs/MATH.md (8.2), while the chunk is in cache */
    for (size_t i = 0; i < n; i++) p16[i] = cuvae_bf16_from_float(p[i]);
}

static void adam_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                        float eps, int64_t t, float grad_scale, uint16_t *p16) {
  /* Bias corrections 1 - b^t, computed in double once per step. */
  const float c1 = (float)(1.0 / (1.0 - pow((double)b1, (double)t)));
  const float c2 = (float)(1.0 / (1.0 - pow((double)b2, (double)t)));
  const long long chunks = (long long)((n + ADAM_CHUNK - 1) / ADAM_CHUNK);
  CUVAE_PARALLEL_FOR(n)
  for (long long c = 0; c < chunks; c++) {
    const size_t lo = (size_t)c * ADAM_CHUNK, len = n - lo < ADAM_CHUNK ? n - lo : ADAM_CHUNK;
    adam_chunk(p + lo, g + lo, m + lo, v + lo, len, lr, b1, b2, eps, c1, c2, grad_scale, p16 ? p16 + lo : NULL);
  }
}

void adam_update_cpu(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                     float eps, int64_t t, float grad_scale) {
  adam_update(p, g, m, v, n, lr, b1, b2, eps, t, grad_scale, NULL);
}

void adam_update_bf16_cpu(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                          float eps, int64_t t, float grad_scale, uint16_t *p16) {
  adam_update(p, g, m, v, n, lr, b1, b2, eps, t, grad_scale, p16);
}

enum { NORM_MAX_CHUNKS = 64, NORM_MIN_CHUNK = 1 << 16, NORM_LANES = 8 };

/* sum g^2 of one chunk in double: NORM_LANES independent partial sums (lane k takes the elements i = k mod 8, so
 * the loop vectorises and is not one long chain of dependent additions), combined in lane order, then the tail in
 * index order. The order depends only on n. */
CUVAE_VECTOR_CLONES
static double sum_squares_chunk(const float *restrict g, size_t n) {
  double lane[NORM_LANES] = {0};
  size_t i = 0;
  for (; i + NORM_LANES <= n; i += NORM_LANES)
    for (int k = 0; k < NORM_LANES; k++) lane[k] += (double)g[i + k] * g[i + k];
  double s = 0.0;
  for (int k = 0; k < NORM_LANES; k++) s += lane[k];
  for (; i < n; i++) s += (double)g[i] * g[i];
  return s;
}

/* sqrt(sum g^2) in double. The buffer is cut into at most 64 chunks whose size depends only on n; each chunk is
 * summed by sum_squares_chunk (chunks in parallel), then the chunk sums in chunk order: the same result for every
 * thread count. */
double grad_norm_cpu(const float *g, size_t n) {
  size_t chunk = (n + NORM_MAX_CHUNKS - 1) / NORM_MAX_CHUNKS;
  if (chunk < NORM_MIN_CHUNK) chunk = NORM_MIN_CHUNK;
  const int chunks = (int)((n + chunk - 1) / chunk);
  double part[NORM_MAX_CHUNKS];
  CUVAE_PARALLEL_FOR(n)
  for (int c = 0; c < chunks; c++) {
    const size_t lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
    part[c] = sum_squares_chunk(g + lo, hi - lo);
  }
  double s = 0.0;
  for (int c = 0; c < chunks; c++) s += part[c];
  return sqrt(s);
}
