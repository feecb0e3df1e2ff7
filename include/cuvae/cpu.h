/* The CPU reference backend: the VAE's forward and backward in plain C with dense layers on oneDNN's matmul (fp32 or
 * bf16).
 * Each fused function below is the CPU twin of a CUDA kernel with the same name stem (kernels/NAME.cu).
 * All matrices are row-major, one row per example. Loss reductions are deterministic (per-row values summed
 * in double, in row order). */
#ifndef CUVAE_CPU_H
#define CUVAE_CPU_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/config.h"
#include "cuvae/model.h"
#include "cuvae/objective.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- fused kernels' CPU twins ---------------------------------------------------------------------- */

/* y[B][out] = x[B][in] W^T  (W[out][in], oneDNN's fp32 matmul); then bias_act_forward. */
void dense_forward_cpu(const float *x, const float *W, const float *b, float *y, int B, int in, int out,
                       cuvae_activation act);
/* Given dy = dL/dy (post-activation, overwritten with the pre-activation gradient):
 * dW = dy^T x, db = column sums of dy (both overwritten), dx = dy W (skipped when dx == NULL). */
void dense_backward_cpu(const float *x, const float *W, const float *y, float *dy, float *dW, float *db,
                        float *dx, int B, int in, int out, cuvae_activation act);
/* bf16 dense layer (docs/MATH.md (8.2)): x16[B][in] and W16[out][in] bfloat16 (include/cuvae/bf16.h), b fp32;
 * y[B][out] = x16 W16^T (fp32 sums, oneDNN's matmul), then bias_act_forward. */
void dense_forward_bf16_cpu(const uint16_t *x16, const uint16_t *W16, const float *b, float *y, int B, int in, int out,
                            cuvae_activation act);
/* Backward of dense_forward_bf16_cpu: dy (fp32) is overwritten with d = dy * act'(y) and dy16[B][out] receives
 * bf16(d); db = column sums of d (fp32), dW = bf16(d)^T x16, dx = bf16(d) W16 (skipped when dx == NULL). */
void dense_backward_bf16_cpu(const uint16_t *x16, const uint16_t *W16, const float *y, float *dy, uint16_t *dy16,
                             float *dW, float *db, float *dx, int B, int in, int out, cuvae_activation act);
/* 0 when oneDNN runs bf16 matmuls on this CPU's bf16 units (AMX or AVX512-BF16); desc then names the library and
 * its implementation ("oneDNN 2.6.3 matmul bf16 (brg:avx512_core_amx_bf16)"). -1 with a message naming the CPU's
 * shortfall otherwise: bf16 never runs as a silent slow path. */
int cuvae_cpu_bf16_gemm_check(char *desc, size_t n);
/* desc = the fp32 GEMMs' library and implementation ("oneDNN 2.6.3 matmul fp32 (brg:avx512_core)"); -1 with a
 * message when oneDNN cannot run them. */
int cuvae_cpu_fp32_gemm_describe(char *desc, size_t n);
/* y16[i] = bf16(x[i]), i < n (docs/MATH.md (8.1); CPU twin of kernels/bf16.cu). */
void to_bf16_cpu(const float *x, uint16_t *y16, size_t n);
/* y = act(y + b) in place, b broadcast over rows. */
void bias_act_forward_cpu(float *y, const float *b, int B, int n, cuvae_activation act);
/* dy *= act'(.) expressed through the output y (relu: y > 0; tanh: 1 - y^2). */
void bias_act_backward_cpu(const float *y, float *dy, int B, int n, cuvae_activation act);
/* db[j] = sum_r dy[r][j], each column summed in row order (the bias gradient of dense_backward_cpu). */
void bias_grad_cpu(const float *dy, float *db, int B, int n);

/* Reparameterization + KL, docs/MATH.md sections 2-3. mulv[B][2Z] holds [mu | lv] per row, eps[B][Z].
 * z = mu + exp(0.5 lv) * eps;  kl_row[b] = 0.5 * sum_j (mu^2 + exp(lv) - 1 - lv). */
void reparam_kl_forward_cpu(const float *mulv, const float *eps, float *z, float *kl_row, int B, int Z);
/* Given dz = dL/dz and kl_scale = dL/dKL_b (1/B for a batch mean):
 * dmu = dz + kl_scale * mu;  dlv = dz * eps * 0.5 exp(0.5 lv) + kl_scale * 0.5 (exp(lv) - 1). */
void reparam_kl_backward_cpu(const float *mulv, const float *eps, const float *dz, float kl_scale,
                             float *dmulv, int B, int Z);
/* Free bits, docs/MATH.md (3.4), lambda > 0, over the B rows of mulv[B][2Z] (the global batch has batch_total rows):
 * KL_j = (1/batch_total) 0.5 sum_b (mu_bj^2 + exp(lv_bj) - 1 - lv_bj) (each column in double, row order);
 * gate[j] = KL_j >= lambda ? 1 : 0;  kl_floor[j] = max(lambda, KL_j)  (the objective's KL term: beta sum_j kl_floor).
 * backward: dmulv += the gradient of beta kl_scale sum_b KL_b restricted to the gated dims (dmu = s gate_j mu,
 * dlv = s gate_j 0.5 (exp(lv) - 1), s = *beta kl_scale); the decoder's part comes from reparam_multi_backward_cpu with
 * kl_scale 0. */
void free_bits_forward_cpu(const float *mulv, int B, int Z, int batch_total, float lambda, float *gate,
                           float *kl_floor);
/* free_bits_forward_cpu in two halves, so that data parallel can add the ranks' sums in between: sums[j] = sum over
 * the B rows of 0.5 (mu^2 + sd^2 - 1 - lv) in double, row order; then gate and kl_floor from KL_j = sums[j] /
 * batch_total. */
void free_bits_sums_cpu(const float *mulv, int B, int Z, double *sums);
void free_bits_gate_cpu(const double *sums, int Z, int batch_total, float lambda, float *gate, float *kl_floor);
void free_bits_backward_cpu(const float *mulv, const float *gate, const float *beta, float kl_scale, float *dmulv,
                            int B, int Z);

/* Bernoulli decoder, logits l (docs/MATH.md section 4): nll_row[b] = sum_d softplus(l) - x l (stable form);
 * dl = scale * (sigmoid(l) - x). dl may be NULL (forward only). */
void bernoulli_nll_grad_cpu(const float *logits, const float *x, float *nll_row, float *dlogits, float scale,
                            int B, int D);
/* Gaussian decoder, fixed sigma: nll_row[b] = 0.5 sum_d [(x - f)^2 / s^2 + log s^2 + log 2pi] + nll_offset (D ln 256
 * for dequantized data, docs/MATH.md (4.6); else 0); df = scale * (f - x) / s^2. df may be NULL. */
void gaussian_nll_grad_cpu(const float *f, const float *x, float sigma, double nll_offset, float *nll_row, float *df,
                           float scale, int B, int D);

/* Adam (docs/MATH.md section 7), bias-corrected, step t >= 1, over the whole buffer:
 * g' = grad_scale * g; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
 * p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
void adam_update_cpu(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                     float eps, int64_t t, float grad_scale);
/* adam_update_cpu, and p16[i] = bf16(p[i]) of the updated parameters (the GEMMs' weight copy in bf16 precision,
 * docs/MATH.md (8.2)). */
void adam_update_bf16_cpu(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                          float eps, int64_t t, float grad_scale, uint16_t *p16);
/* The EMA of the weights after an applied update, docs/MATH.md (7.5): ema = decay ema + (1 - decay) p. */
void ema_update_cpu(float *ema, const float *p, size_t n, float decay);
/* sqrt(sum g^2), summed in double. */
double grad_norm_cpu(const float *g, size_t n);

/* Minibatch gather: dst[b][:] = src[rows[b]][:], b < B, rows of D floats (rows already checked). */
void gather_rows_cpu(const float *src, const uint32_t *rows, float *dst, int B, int D);

/* ---- the model family (docs/MATH.md sections 4-6) -------------------------------------------------------
 * Multi-sample layout: R data rows x C samples per row, sample-major as the IWAE chunks (row s*R + r of a [C*R]
 * batch is sample s of data row r); C = 1 is the ordinary batch. */

/* Gaussian decoder with a learned log-variance (docs/MATH.md (4.3), (4.4) with s^2 = exp(lv)), floored (4.8): lv =
 * max(l, lv_min) of the learned l (lv_min = -INFINITY: no floor), per element:
 *   nll_row[b] = 0.5 sum_d [(x - f)^2 exp(-lv_d) + lv_d + log 2pi] + nll_offset  (summed in double; nll_offset =
 *   D ln 256 for dequantized data, (4.6), else 0),
 *   df = scale (f - x) exp(-lv_d),   dl_d = scale 0.5 (1 - (x - f)^2 exp(-lv_d)), 0 where l_d < lv_min.
 * perdim ([model] gaussian_variance = learned_per_dim): out[B][2D] = [f | l] per row (the decoder's two heads);
 *   dout[B][2D] = [df | dl]. dout may be NULL (forward only). */
void gaussian_perdim_nll_grad_cpu(const float *out, const float *x, float lv_min, double nll_offset, float *nll_row,
                                  float *dout, float scale, int B, int D);
/* shared (learned_shared): f[B][D], one l = *logvar for every element; df[B][D];
 * dlv_row[b] = scale 0.5 sum_d (1 - (x - f)^2 exp(-lv)) (row b's part of dL/dlogvar, summed in double; the caller
 * sums the rows in row order; 0 where *logvar < lv_min). df and dlv_row may be NULL (forward only; both or
 * neither). */
void gaussian_shared_nll_grad_cpu(const float *f, const float *x, const float *logvar, float lv_min, double nll_offset,
                                  float *nll_row, float *df, float *dlv_row, float scale, int B, int D);

/* Autoencoder reconstruction error (docs/MATH.md section 6, objective = ae): xhat = sigmoid(out) when sigmoid_out (the
 * Bernoulli decoder's mean), else out; err_row[b] = sum_d (x - xhat)^2 (double);
 * dout = scale * 2 (xhat - x) * (sigmoid_out ? xhat (1 - xhat) : 1). dout may be NULL. */
void squared_error_grad_cpu(const float *out, const float *x, int sigmoid_out, float *err_row, float *dout,
                            float scale, int B, int D);
/* Deterministic encoder (objective = ae): z[b][:] = mu_b (the first Z of mulv's 2Z columns); backward: dmulv[b] =
 * [dz_b | 0]. */
void latent_mean_forward_cpu(const float *mulv, float *z, int B, int Z);
void latent_mean_backward_cpu(const float *dz, float *dmulv, int B, int Z);

/* KL weight of training step t (0-based) (docs/MATH.md section 6, beta-VAE warm-up):
 * beta_t = beta * min(1, t / warmup) for warmup > 0 (computed in double, rounded to float), else beta. */
float beta_schedule_cpu(int64_t step, float beta, int64_t warmup);
/* Sampled KL and the sample weights of the multi-sample objectives, R rows x C samples (layout above). beta points
 * to one float (this step's KL weight; device memory on the GPU). Per sample i = s*R + r, in double:
 *   kl_s[i] = log q(z_i | x_r) - log p(z_i) = 0.5 sum_j (z_ij^2 - eps_ij^2 - lv_rj)   (docs/MATH.md section 5)
 *   log w_i = -nll[i] - beta kl_s[i]
 * iwae != 0: weight[i] = scale * softmax over s of log w (per row r);  row_obj[r] = -(logsumexp_s log w_i - log C)
 * iwae == 0: weight[i] = scale / C;  row_obj[r] = (1/C) sum_s (nll[i] + beta kl_s[i])  (ELBO with sampled KL)
 * kl_s, weight, row_obj are float outputs; sums over s in order s = 0..C-1. With C = 1 the weight is scale exactly.
 * Non-finite inputs propagate (NaN out), never trap. */
void objective_weights_cpu(const float *mulv, const float *eps, const float *z, const float *nll, int R, int C,
                           int Z, int iwae, const float *beta, float scale, float *kl_s, float *weight,
                           float *row_obj);
/* Backward of the multi-sample reparameterization z_i = mu_r + exp(0.5 lv_r) eps_i; dz[C*R][Z] = dL/dz from the
 * decoder (already weighted per sample). Sums over s in order s = 0..C-1.
 * Sampled KL (weight != NULL; the loss has the term beta weight_i kl_s[i]):
 *   g_i = dz_i + beta weight_i z_i;  dmu_r = sum_s g_i;
 *   dlv_r = sum_s g_i eps_i 0.5 exp(0.5 lv_r) - 0.5 beta sum_s weight_i
 * Analytic KL (weight == NULL; the loss has the term beta kl_scale KL_r, KL_r closed form):
 *   dmu_r = sum_s dz_i + (beta kl_scale) mu_r;  dlv_r = sum_s dz_i eps_i 0.5 exp(0.5 lv_r) + (beta kl_scale) 0.5
 *   (exp(lv_r) - 1)
 * With C = 1, weight == NULL and beta = 1 this is reparam_kl_backward_cpu bit for bit. */
void reparam_multi_backward_cpu(const float *mulv, const float *eps, const float *z, const float *dz,
                                const float *weight, const float *beta, float kl_scale, float *dmulv, int R, int C,
                                int Z);
/* a[b][:] *= w[b], rows of n floats. */
void scale_rows_cpu(float *a, const float *w, int B, int n);

/* Data noise (include/cuvae/rng.h names the streams). u: uniforms in (0, 1]; noise: standard normals.
 * binarize: out[i] = u[i] <= x[i] ? 1 : 0 (so P(out = 1) = x for x in [0, 1]);
 * dequantize (docs/MATH.md (4.6)): out[i] = (rint(255 x[i]) + u[i]) / 256, so 8-bit data x = k/255 become y in
 *   (k/256, (k+1)/256];
 * corrupt_gaussian: out[i] = x[i] + std * noise[i];  corrupt_mask: out[i] = u[i] <= p ? 0 : x[i].
 * out may equal x (in place). */
void binarize_cpu(const float *x, const float *u, float *out, size_t n);
void dequantize_cpu(const float *x, const float *u, float *out, size_t n);
void corrupt_gaussian_cpu(const float *x, const float *noise, float std, float *out, size_t n);
void corrupt_mask_cpu(const float *x, const float *u, float p, float *out, size_t n);

/* Conditional VAE (docs/MATH.md section 6): out[i] = [a_i (n floats) | onehot(labels[i % period], n_classes)], i < rows,
 * rows of n + n_classes floats (labels already checked to lie in [0, n_classes)). take_columns: dst[i][:] =
 * src[i][0..n) from rows of ld floats. gather_labels: dst[b] = src[rows[b]]. */
void concat_onehot_cpu(const float *a, int n, const int32_t *labels, int period, int n_classes, float *out, int rows);
void take_columns_cpu(const float *src, int ld, float *dst, int rows, int n);
void gather_labels_cpu(const int32_t *src, const uint32_t *rows, int32_t *dst, int B);

/* ---- whole-model forward / backward ------------------------------------------------------------------ */


/* The backward's report that grad[from..n_params) is final (layers finish last to first; `from` falls): the
 * data-parallel all-reduce starts summing it (src/backend/data_parallel.h). Nonzero stops the step. */
typedef int (*cuvae_grad_ready_fn)(void *ctx, float *grad, size_t from);
/* Data parallel: v[0..n) summed over the ranks, in rank order, in place (src/backend/data_parallel.h's sum). */
typedef int (*cuvae_sum_fn)(void *ctx, double *v, int n);

/* One batch: B data rows. x: the targets [B][D] (binarized when so configured); x_in: the encoder's input [B][D]
 * (corrupted; NULL = x); eps: [samples * B][Z] standard normals, sample-major (row s*B + r: sample s of row r);
 * unused by ae. labels: [B] classes of a conditional model (one-hot appended to the encoder's and the decoder's
 * inputs), NULL otherwise.
 * Data parallel: the B rows are one rank's slice of a global batch of batch_total rows (0: B itself); the gradient
 * and the loss are then this slice's part of the global batch mean (every term scaled by 1 / batch_total), so the
 * ranks' parts add up to the global batch's. grad_ready (NULL: none) is called with grad_ctx as the backward
 * finishes each layer; sum (NULL: one process) adds values over the ranks, with grad_ctx: free bits' per-dimension KL
 * sums (docs/MATH.md (3.4)). */
typedef struct cuvae_cpu_batch {
  int B;
  const float *x, *x_in, *eps;
  const int32_t *labels;
  int batch_total;
  cuvae_grad_ready_fn grad_ready;
  void *grad_ctx;
  cuvae_sum_fn sum;
} cuvae_cpu_batch;

typedef struct cuvae_cpu_ws cuvae_cpu_ws;  /* activations and scratch for up to max_rows decoder rows */

/* max_rows bounds B * samples of every call (the encoder's B as well). */
cuvae_cpu_ws *cuvae_cpu_ws_create(const cuvae_model *m, int max_rows);
void cuvae_cpu_ws_destroy(cuvae_cpu_ws *ws);

/* Switches ws to bf16 precision (docs/MATH.md (8.2)): every later call computes its dense layers from params16, the
 * caller's bf16 copy of the parameters (n_params values, kept equal to bf16(params) by the caller: Adam's
 * adam_update_bf16_cpu), with bf16 activations; biases and everything else still come from params. -1 when out of
 * memory. */
int cuvae_cpu_ws_use_bf16(cuvae_cpu_ws *ws, const cuvae_model *m, const uint16_t *params16);

/* The objective of a batch (its batch mean, per data point; with batch_total, this slice's part of the global mean);
 * when grad != NULL also its gradient w.r.t. every parameter (overwritten, same layout as params). Returns 0, or -1
 * if B * samples exceeds the workspace or grad_ready failed. */
int cuvae_cpu_objective_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params,
                             const cuvae_cpu_batch *batch, const cuvae_objective_spec *spec, float *grad,
                             cuvae_loss *out);
/* The plain negative ELBO (one sample, closed-form KL, beta 1) of x[B][D] with noise eps[B][Z], and its gradient
 * when grad != NULL: cuvae_cpu_objective_grad with that spec. */
int cuvae_cpu_loss_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *x,
                        const float *eps, int B, float *grad, cuvae_loss *out);
/* The part of the objective after the encoder, from given mulv[B][2Z]; dmulv (may be NULL) receives dL/d[mu|lv].
 * grad (may be NULL) receives the decoder's part. Used by cuvae_cpu_objective_grad and by the gradient checks. */
int cuvae_cpu_latent_objective_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *mulv,
                                    const cuvae_cpu_batch *batch, const cuvae_objective_spec *spec, float *grad,
                                    float *dmulv, cuvae_loss *out);
/* Same with the plain ELBO spec (x, eps, B as in cuvae_cpu_loss_grad). */
int cuvae_cpu_latent_loss_grad(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params,
                               const float *mulv, const float *x, const float *eps, int B, float *grad,
                               float *dmulv, cuvae_loss *out);
/* Encoder forward only: mulv[B][2Z] (written into a buffer owned by ws; returned). labels: [B] for a conditional
 * model, else NULL. */
const float *cuvae_cpu_encode(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *x,
                              const int32_t *labels, int B);
/* Decoder forward only on z[N][Z] (labels[N] for a conditional model): the decoder's output rows [N][out] (logits,
 * means, or [mean | lv]) in a buffer owned by ws; returned. */
const float *cuvae_cpu_decode(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *z,
                              const int32_t *labels, int N);
/* The decoder's layers on a prepared input in[N][dec.0 in] (z, or [z | onehot y]): its output rows, as
 * cuvae_cpu_decode. */
const float *cuvae_cpu_decoder_layers(const cuvae_model *m, cuvae_cpu_ws *ws, const float *params, const float *in,
                                      int N);
/* -log p(x | decoder output y) per row for the model's likelihood (docs/MATH.md section 4: Bernoulli, Gaussian with
 * fixed, shared learned or per-dim learned variance). dy (NULL: forward only) = scale * d(-log p)/dy, with y's
 * row width (2D for per-dim variance); learned_shared: dlv_row[b] = row b's part of scale * d(-log p)/d logvar. */
void cuvae_cpu_decoder_nll(const cuvae_model *m, const float *params, const float *y, const float *x, float *nll_row,
                           float *dy, float *dlv_row, float scale, int B);

/* ---- importance-weighted log-likelihood (IWAE, docs/MATH.md section 5) ------------------------------------------
 * CPU twins of kernels/iwae.cu, and the plan every backend follows (src/backend/cpu/iwae_cpu.c; docs/ARCHITECTURE.md,
 * "Evaluation: IWAE"). The K samples of a data row are processed in chunks: a pass takes R data rows, and each
 * chunk of C samples per row is one decoder batch of R*C rows laid out sample-major, [C][R]: row s*R + r of the
 * batch is sample s of data row r. Per-row state: state[2r] = running max m_r of the log-weights seen so far,
 * state[2r + 1] = sum of exp(log w - m_r) (a streaming log-sum-exp, in double). */


/* Reparameterization with each data row's q shared by its C samples (docs/MATH.md section 2), mulv[R][2Z]:
 *   z[s*R + r][j] = mu_r[j] + exp(0.5 lv_r[j]) * eps[s*R + r][j]   (the float expression of reparam_kl_forward_cpu). */
void iwae_reparam_cpu(const float *mulv, const float *eps, float *z, int R, int C, int Z);
/* The decoder's targets for that batch: x_rep[s*R + r][:] = x[r][:], rows of D floats. */
void iwae_replicate_cpu(const float *x, float *x_rep, int R, int C, int D);
/* docs/MATH.md section 5, for one chunk. Per sample (s, r), from the decoder's NLL nll[s*R + r] = -log p(x_r | z):
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
