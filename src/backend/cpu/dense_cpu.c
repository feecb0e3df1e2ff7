/* Dense layer forward/backward on the CPU: the GEMMs on oneDNN's matmul in fp32 or bf16 (gemm_dnnl.h), around the
 * fused bias + activation passes of src/backend/cpu/bias_act_cpu.c (the twins of kernels/bias_act.cu). */
#include "cuvae/cpu.h"
#include "gemm_dnnl.h"

/* y[B, out] = x[B, in] W^T + b, then the activation. */
void dense_forward_cpu(const float *x, const float *W, const float *b, float *y, int B, int in, int out,
                       cuvae_activation act) {
  gemm_fp32_cpu(GEMM_FORWARD, B, in, out, x, W, y);
  bias_act_forward_cpu(y, b, B, out, act);
}

/* With dy = dL/dy: dpre = dy * act'; dW = dpre^T x; db = sum_rows dpre; dx = dpre W. */
void dense_backward_cpu(const float *x, const float *W, const float *y, float *dy, float *dW, float *db,
                        float *dx, int B, int in, int out, cuvae_activation act) {
  bias_act_backward_cpu(y, dy, B, out, act);
  gemm_fp32_cpu(GEMM_WEIGHT_GRAD, B, in, out, dy, x, dW);
  bias_grad_cpu(dy, db, B, out);
  if (dx) gemm_fp32_cpu(GEMM_INPUT_GRAD, B, in, out, dy, W, dx);
}

/* docs/MATH.md (8.2): y = bf16(x) W16^T + b (fp32 sums), then the activation. */
void dense_forward_bf16_cpu(const uint16_t *x16, const uint16_t *W16, const float *b, float *y, int B, int in, int out,
                            cuvae_activation act) {
  gemm_bf16_cpu(GEMM_FORWARD, B, in, out, x16, W16, y);
  bias_act_forward_cpu(y, b, B, out, act);
}

/* docs/MATH.md (8.2): d = dy * act' (fp32); db = sum_rows d; dW = bf16(d)^T x16; dx = bf16(d) W16. */
void dense_backward_bf16_cpu(const uint16_t *x16, const uint16_t *W16, const float *y, float *dy, uint16_t *dy16,
                             float *dW, float *db, float *dx, int B, int in, int out, cuvae_activation act) {
  bias_act_backward_cpu(y, dy, B, out, act);
  to_bf16_cpu(dy, dy16, (size_t)B * out);
  gemm_bf16_cpu(GEMM_WEIGHT_GRAD, B, in, out, dy16, x16, dW);
  bias_grad_cpu(dy, db, B, out);
  if (dx) gemm_bf16_cpu(GEMM_INPUT_GRAD, B, in, out, dy16, W16, dx);
}
