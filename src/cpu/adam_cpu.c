/* Adam over the whole parameter buffer (MATH.md section 7). CPU twin of kernels/adam.cu. */
#include <float.h>
#include <math.h>

#include "cuvae/cpu.h"

void adam_update_cpu(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                     float eps, int64_t t, float grad_scale) {
  /* Bias corrections 1 - b^t, computed in double once per step. */
  const float c1 = (float)(1.0 / (1.0 - pow((double)b1, (double)t)));
  const float c2 = (float)(1.0 / (1.0 - pow((double)b2, (double)t)));
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
    p[i] -= lr * (m[i] * c1) / (sqrtf(v[i] * c2) + eps);
  }
}

double grad_norm_cpu(const float *g, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
  return sqrt(s);
}
