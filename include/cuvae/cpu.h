/* The CPU reference backend: the VAE's forward and backward in plain C with dense layers in cblas_sgemm.
 * Each fused function below is the CPU twin of a CUDA kernel with the same name stem (kernels/NAME.cu).
 * All matrices are row-major, one row per example. Loss reductions are deterministic (per-row values summed
 * in double, in row order). */
#ifndef CUVAE_CPU_H
#define CUVAE_CPU_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/config.h"
#include "cuvae/model.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- fused kernels' CPU twins ---------------------------------------------------------------------- */

/* y[B][out] = x[B][in] W^T  (W[out][in], through cblas_sgemm); then bias_act_forward. */
void dense_forward_cpu(const float *x, const float *W, const float *b, float *y, int B, int in, int out,
                       cuvae_activation act);
/* Given dy = dL/dy (post-activation, overwritten with the pre-activation gradient):
 * dW = dy^T x, db = column sums of dy (both overwritten), dx = dy W (skipped when dx == NULL). */
void dense_backward_cpu(const float *x, const float *W, const float *y, float *dy, float *dW, float *db,
                        float *dx, int B, int in, int out, cuvae_activation act);
/* y = act(y + b) in place, b broadcast over rows. */
void bias_act_forward_cpu(float *y, const float *b, int B, int n, cuvae_activation act);
/* dy *= act'(.) expressed through the output y (relu: y > 0; tanh: 1 - y^2). */
void bias_act_backward_cpu(const float *y, float *dy, int B, int n, cuvae_activation act);

/* Reparameterization + KL, MATH.md sections 2-3. mulv[B][2Z] holds [mu | lv] per row, eps[B][Z].
 * z = mu + exp(0.5 lv) * eps;  kl_row[b] = 0.5 * sum_j (mu^2 + exp(lv) - 1 - lv). */
void reparam_kl_forward_cpu(const float *mulv, const float *eps, float *z, float *kl_row, int B, int Z);
/* Given dz = dL/dz and kl_scale = dL/dKL_b (1/B for a batch mean):
 * dmu = dz + kl_scale * mu;  dlv = dz * eps * 0.5 exp(0.5 lv) + kl_scale * 0.5 (exp(lv) - 1). */
void reparam_kl_backward_cpu(const float *mulv, const float *eps, const float *dz, float kl_scale,
                             float *dmulv, int B, int Z);

/* Bernoulli decoder, logits l (MATH.md section 4): nll_row[b] = sum_d softplus(l) - x l (stable form);
 * dl = scale * (sigmoid(l) - x). dl may be NULL (forward only). */
void bernoulli_nll_grad_cpu(const float *logits, const float *x, float *nll_row, float *dlogits, float scale,
                            int B, int D);
/* Gaussian decoder, fixed sigma: nll_row[b] = 0.5 sum_d [(x - f)^2 / s^2 + log s^2 + log 2pi];
 * df = scale * (f - x) / s^2. df may be NULL. */
void gaussian_nll_grad_cpu(const float *f, const float *x, float sigma, float *nll_row, float *df,
                           float scale, int B, int D);

/* Adam (MATH.md section 7), bias-corrected, step t >= 1, over the whole buffer:
 * g' = grad_scale * g; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
 * p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
void adam_update_cpu(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                     float eps, int64_t t, float grad_scale);
/* sqrt(sum g^2), summed in double. */
double grad_norm_cpu(const float *g, size_t n);

/* Minibatch gather: dst[b][:] = src[rows[b]][:], b < B, rows of D floats (rows already checked). */
void gather_rows_cpu(const float *src, const uint32_t *rows, float *dst, int B, int D);

/* ---- whole-model forward / backward ------------------------------------------------------------------ */

typedef struct cuvae_loss {
  double nelbo, recon, kl;  /* batch means, nats per data point: nelbo = recon + kl */
} cuvae_loss;

typedef struct cuvae_cpu_ws cuvae_cpu_ws;  /* activations and scratch for batches up to max_batch */

cuvae_cpu_ws *cuvae_cpu_ws_create(const cuvae_model *m, int max_batch);
void cuvae_cpu_ws_destroy(cuvae_cpu_ws *ws);

/* Negative ELBO of x[B][D] with noise eps[B][Z]; when grad != NULL also its gradient w.r.t. every
 * parameter (overwritten, same layout as params). Returns 0, or -1 if B exceeds the workspace. */
int cuvae_cpu_loss_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *x,
                        const float *eps, int B, float *grad, cuvae_loss *out);
/* The part of the loss after the encoder, from given mulv[B][2Z]; dmulv (may be NULL) receives dL/d[mu|lv].
 * Used by cuvae_cpu_loss_grad and by the gradient check of mu and lv. grad receives the decoder's part. */
int cuvae_cpu_latent_loss_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params,
                               const float *mulv, const float *x, const float *eps, int B, float *grad,
                               float *dmulv, cuvae_loss *out);
/* Encoder forward only: mulv[B][2Z] (written into a buffer owned by ws; returned). */
const float *cuvae_cpu_encode(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *x,
                              int B);

/* ---- importance-weighted log-likelihood (IWAE, MATH.md section 5) ------------------------------------------
 * CPU twins of kernels/iwae.cu, and the plan every backend follows (src/cpu/iwae_cpu.c; docs/ARCHITECTURE.md,
 * "Evaluation: IWAE"). The K samples of a data row are processed in chunks: a pass takes R data rows, and each
 * chunk of C samples per row is one decoder batch of R*C rows laid out sample-major, [C][R]: row s*R + r of the
 * batch is sample s of data row r. Per-row state: state[2r] = running max m_r of the log-weights seen so far,
 * state[2r + 1] = sum of exp(log w - m_r) (a streaming log-sum-exp, in double). */

/* rows: data rows per pass; chunk: samples per chunk (the last chunk of a row may have fewer); n_chunks. */
typedef struct cuvae_iwae_plan {
  int rows, chunk, n_chunks;
} cuvae_iwae_plan;

/* The plan for K samples per row, passes of `batch` data rows, a workspace of max_batch rows (all >= 1):
 *   chunk = ceil(K / ceil(K / min(K, max_batch)))   (equal chunks of at most max_batch samples)
 *   n_chunks = ceil(K / chunk),  rows = min(batch, floor(max_batch / chunk))  (>= 1),
 * so every decoder batch has rows * chunk <= max_batch rows. Fails (returns -1) on arguments < 1. */
int cuvae_iwae_plan_make(int K, int batch, int max_batch, cuvae_iwae_plan *plan);
/* Where chunk c of pass p draws its eps in the evaluation noise stream: (p * n_chunks + c) * stride(rows*chunk*Z).
 * Every draw takes the whole stride(rows * chunk * Z) values (also for a last, shorter pass or chunk), so the draws
 * follow each other in the stream; sample s of data row r of the pass (R_p rows, C_c samples in the chunk) uses
 * the Z values at (s * R_p + r) * Z of the draw. With K = 1 these are evaluate()'s numbers for batch = rows. */
uint64_t cuvae_iwae_noise_offset(const cuvae_iwae_plan *plan, size_t Z, int64_t pass, int chunk);

/* Reparameterization with each data row's q shared by its C samples (MATH.md section 2), mulv[R][2Z]:
 *   z[s*R + r][j] = mu_r[j] + exp(0.5 lv_r[j]) * eps[s*R + r][j]   (the float expression of reparam_kl_forward_cpu). */
void iwae_reparam_cpu(const float *mulv, const float *eps, float *z, int R, int C, int Z);
/* The decoder's targets for that batch: x_rep[s*R + r][:] = x[r][:], rows of D floats. */
void iwae_replicate_cpu(const float *x, float *x_rep, int R, int C, int D);
/* MATH.md section 5, for one chunk. Per sample (s, r), from the decoder's NLL nll[s*R + r] = -log p(x_r | z):
 *   log w = -nll - 0.5 sum_j (z_j^2 - eps_j^2 - lv_j)        (log N(z; 0, I) - log N(z; mu, diag exp(lv)): the
 *                                                             log 2pi terms cancel), in double;
 * log_w[s*R + r] receives it (log_w may be NULL). Then the streaming log-sum-exp of row r takes the chunk's
 * samples in order s = 0, 1, ...: merging (m, t) with a value v gives m' = max(m, v), t' = t exp(m - m') +
 * exp(v - m'). reset != 0 starts every row afresh (the first chunk of a pass: m = -inf, t = 0). NaN propagates. */
void iwae_log_weights_cpu(const float *mulv, const float *eps, const float *z, const float *nll, int R, int C,
                          int Z, double *log_w, double *state, int reset);
/* log_px[r] = logsumexp_k(log w_k) - log K = m_r + log(t_r) - log K (-inf when every weight was 0). */
void iwae_finalize_cpu(const double *state, int R, int K, double *log_px);

#ifdef __cplusplus
}
#endif
#endif
