/* The exponential moving average of the weights (docs/MATH.md (7.5)), after each applied update. CPU twin of
 * kernels/ema.cu. Elementwise: the result does not depend on the split across threads. */
#include "cuvae/cpu.h"
#include "parallel.h"

/* e = d e + (1 - d) p, each product rounded before the sum (as the device's __fmul_rn / __fadd_rn). */
void ema_update_cpu(float *ema, const float *p, size_t n, float decay) {
  const float keep = 1.0f - decay;
  CUVAE_PARALLEL_FOR(n)
  for (size_t i = 0; i < n; i++) {
    const float a = decay * ema[i], b = keep * p[i];
    ema[i] = a + b;
  }
}
