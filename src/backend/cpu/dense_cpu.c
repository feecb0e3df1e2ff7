/* Dense layer forward/backward on the CPU: the GEMMs in cblas_sgemm, around the fused bias + activation passes of
 * src/backend/cpu/bias_act_cpu.c (the twins of kernels/bias_act.cu). */
#include <cblas.h>
#include "cuvae/cpu.h"

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
  bias_grad_cpu(dy, db, B, out);
  if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
}
