/* Bias + activation of a dense layer, forward and backward, and the bias gradient: the CPU twins of
 * kernels/bias_act.cu (bias_act_forward / bias_act_backward / bias_grad). The passes are split across threads by
 * rows (the bias gradient by columns, each summed in row order), so their results do not depend on the thread
 * count. */
#include <math.h>
#include <string.h>

#include "cuvae/cpu.h"
#include "parallel.h"

/* y = act(y + b): one pass over the [B, n] output. */
void bias_act_forward_cpu(float *y, const float *b, int B, int n, cuvae_activation act) {
  CUVAE_PARALLEL_FOR((size_t)B * n)
  for (int r = 0; r < B; r++) {
    float *row = y + (size_t)r * n;
    switch (act) {
      case CUVAE_ACT_RELU:
        for (int j = 0; j < n; j++) {
          const float v = row[j] + b[j];
          row[j] = v > 0.0f ? v : 0.0f;
        }
        break;
      case CUVAE_ACT_TANH:
        for (int j = 0; j < n; j++) row[j] = tanhf(row[j] + b[j]);
        break;
      case CUVAE_ACT_NONE:
        for (int j = 0; j < n; j++) row[j] += b[j];
        break;
    }
  }
}

/* dy *= act'(pre-activation), written through the output y: relu' = [y > 0]; tanh' = 1 - y^2. The relu case is
 * a select, not a branch: half the units are off in no predictable pattern. */
void bias_act_backward_cpu(const float *y, float *dy, int B, int n, cuvae_activation act) {
  if (act == CUVAE_ACT_NONE) return;
  CUVAE_PARALLEL_FOR((size_t)B * n)
  for (int r = 0; r < B; r++) {
    const float *yr = y + (size_t)r * n;
    float *dr = dy + (size_t)r * n;
    if (act == CUVAE_ACT_RELU)
      for (int j = 0; j < n; j++) dr[j] = yr[j] > 0.0f ? dr[j] : 0.0f;
    else
      for (int j = 0; j < n; j++) dr[j] *= 1.0f - yr[j] * yr[j];
  }
}

enum { BIAS_GRAD_COLS = 256 };  /* columns per work item of the bias gradient */

/* db[j] = sum_r dy[r][j], each column summed in row order; column blocks split across threads. */
void bias_grad_cpu(const float *dy, float *db, int B, int n) {
  const int blocks = (n + BIAS_GRAD_COLS - 1) / BIAS_GRAD_COLS;
  CUVAE_PARALLEL_FOR((size_t)B * n)
  for (int k = 0; k < blocks; k++) {
    const int lo = k * BIAS_GRAD_COLS, hi = lo + BIAS_GRAD_COLS < n ? lo + BIAS_GRAD_COLS : n;
    memset(db + lo, 0, (size_t)(hi - lo) * sizeof *db);
    for (int r = 0; r < B; r++) {
      const float *row = dy + (size_t)r * n;
      for (int j = lo; j < hi; j++) db[j] += row[j];
    }
  }
}
