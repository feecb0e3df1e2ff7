/* Dense layer forward/backward on the CPU: GEMMs in cblas_sgemm, bias + activation fused in one pass.
 * CPU twin of kernels/bias_act.cu (bias_act_forward / bias_act_backward / bias_grad). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cuvae/cpu.h"

/* y = act(y + b): one pass over the [B, n] output. */
void bias_act_forward_cpu(float *y, const float *b, int B, int n, cuvae_activation act) {
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

/* dy *= act'(pre-activation), written through the output y: relu' = [y > 0]; tanh' = 1 - y^2. */
void bias_act_backward_cpu(const float *y, float *dy, int B, int n, cuvae_activation act) {
  const size_t total = (size_t)B * n;
  if (act == CUVAE_ACT_RELU) {
    for (size_t i = 0; i < total; i++)
      if (!(y[i] > 0.0f)) dy[i] = 0.0f;
  } else if (act == CUVAE_ACT_TANH) {
    for (size_t i = 0; i < total; i++) dy[i] *= 1.0f - y[i] * y[i];
  }
}

/* y[B, out] = x[B, in] W^T + b, then the activation. */
void dense_forward_cpu(const float *x, const float *W, const float *b, float *y, int B, int in, int out,
                       cuvae_activation act) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
  bias_act_forward_cpu(y, b, B, out, act);
}

/* With dy = dL/dy: dpre = dy * act'; dW = dpre^T x; db = sum_rows dpre; dx = dpre W. */
void dense_backward_cpu(const float *x, const float *W, const float *y, float *dy, float *dW, float *db,
                        float *dx, int B, int in, int out, cuvae_activation act) {
  bias_act_backward_cpu(y, dy, B, out, act);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, B, 1.0f, dy, out, x, in, 0.0f, dW, in);
  memset(db, 0, (size_t)out * sizeof *db);
  for (int r = 0; r < B; r++) {
    const float *row = dy + (size_t)r * out;
    for (int j = 0; j < out; j++) db[j] += row[j];
  }
  if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
}
