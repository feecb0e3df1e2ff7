/* Host-side launchers of the fused CUDA kernels (one kernels/NAME.cu per kernel family). Each kernel is the GPU
 * twin of the CPU function with the same name stem in include/cuvae/cpu.h (src/backend/cpu/NAME_cpu.c) and computes the
 * same equations (docs/MATH.md); tests/cuda/test_kernel_NAME.cu checks each against its twin.
 * All pointers are device pointers; matrices are row-major [B][n]; every launcher enqueues on `stream` and returns
 * the launch's cudaError_t (cudaSuccess, or the configuration error). No launcher allocates or synchronises, so
 * all of them can be captured into a CUDA graph. Any B, n, Z, D >= 1 (no size assumptions). */
#ifndef CUVAE_KERNELS_H
#define CUVAE_KERNELS_H
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "cuvae/config.h"
#include "cuvae/optimizer.h"
#ifdef __cplusplus
extern "C" {
#endif

/* reparam_kl.cu -- reparameterization + closed-form KL (docs/MATH.md sections 2-3), twins of reparam_kl_*_cpu.
 * forward: z = mu + exp(0.5 lv) * eps; kl_row[b] = 0.5 sum_j (mu^2 + exp(lv) - 1 - lv), mulv[B][2Z] = [mu | lv].
 * backward: dmu = dz + s mu; dlv = dz eps 0.5 exp(0.5 lv) + s 0.5 (exp(lv) - 1), s = kl_scale. */
cudaError_t reparam_kl_forward_cuda(const float *mulv, const float *eps, float *z, float *kl_row, int B, int Z,
                                    cudaStream_t stream);
cudaError_t reparam_kl_backward_cuda(const float *mulv, const float *eps, const float *dz, float kl_scale,
                                     float *dmulv, int B, int Z, cudaStream_t stream);
/* free_bits.cu -- free bits (docs/MATH.md (3.4)), twins of free_bits_*_cpu (include/cuvae/cpu.h states the equations):
 * forward: gate[j] = [KL_j >= lambda], kl_floor[j] = max(lambda, KL_j), KL_j the mean over batch_total rows of dim
 * j's closed-form KL (this call's B rows); backward: dmulv += the gated KL gradient, scale *beta kl_scale (beta: one
 * float in device memory). */
cudaError_t free_bits_forward_cuda(const float *mulv, int B, int Z, int batch_total, float lambda, float *gate,
                                   float *kl_floor, cudaStream_t stream);
cudaError_t free_bits_backward_cuda(const float *mulv, const float *gate, const float *beta, float kl_scale,
                                    float *dmulv, int B, int Z, cudaStream_t stream);
/* forward in two launches, for data parallel to add the ranks' sums in between (twins of free_bits_sums_cpu and
 * free_bits_gate_cpu): sums[j] = 0.5 sum over the B rows of (mu^2 + sd^2 - 1 - lv), in double, row order (Z doubles
 * of device memory); then gate and kl_floor from KL_j = sums[j] / batch_total. */
cudaError_t free_bits_sums_cuda(const float *mulv, int B, int Z, double *sums, cudaStream_t stream);
cudaError_t free_bits_gate_cuda(const double *sums, int Z, int batch_total, float lambda, float *gate,
                                float *kl_floor, cudaStream_t stream);

/* likelihood.cu -- decoder negative log-likelihoods + gradients (docs/MATH.md section 4), twins of *_nll_grad_cpu.
 * nll_row[b] per row; dout = scale * d(-log p)/d(output), skipped when dout == NULL. */
cudaError_t bernoulli_nll_grad_cuda(const float *logits, const float *x, float *nll_row, float *dlogits,
                                    float scale, int B, int D, cudaStream_t stream);
cudaError_t gaussian_nll_grad_cuda(const float *f, const float *x, float sigma, double nll_offset, float *nll_row,
                                   float *df, float scale, int B, int D, cudaStream_t stream);

/* bias_act.cu -- twins of bias_act_forward_cpu / bias_act_backward_cpu and of the bias gradient in
 * dense_backward_cpu: y = act(y + b); dy *= act'(y); db[j] = sum_b dy[b][j] (overwritten; fixed summation order
 * for given B and n, so deterministic). bias_grad splits the rows of narrow layers over more blocks and adds the
 * slices' partial sums in a second launch, through scratch: CUVAE_SUM_SQUARES_PARTIALS floats of device scratch
 * (the buffer sum_squares_cuda takes may serve both: launches on one stream use it in turn). */
cudaError_t bias_act_forward_cuda(float *y, const float *b, int B, int n, cuvae_activation act, cudaStream_t stream);
cudaError_t bias_act_backward_cuda(const float *y, float *dy, int B, int n, cuvae_activation act,
                                   cudaStream_t stream);
cudaError_t bias_grad_cuda(const float *dy, float *db, float *scratch, int B, int n, cudaStream_t stream);

/* adam.cu -- twin of adam_update_cpu and grad_norm_cpu, over the whole parameter buffer in one launch. To be
 * capturable into a graph replayed every step, nothing that changes per step is a kernel argument: a one-thread
 * prologue reads the step counter, the step's learning rate, the skip verdict and the gradient's sum of squares from
 * device memory.
 * adam_prepare_cuda: *step += 1 (the training step); ta = *step - guard[0] (Adam's step: the applied updates; guard
 *   NULL: ta = *step); scalars[0] = grad_scale (clip / ||g|| when clip > 0 and ||g|| > clip, else 1),
 *   scalars[1] = 1 / (1 - b1^ta), scalars[2] = 1 / (1 - b2^ta) (computed in double, as the CPU twin does),
 *   scalars[3] = ||g|| (for logging), scalars[4] = *lr (the step's rate, docs/MATH.md (7.3)), scalars[5] = 1 when
 *   guard[4] (step_guard_cuda skipped the update) else 0. scalars holds 6 floats.
 *   With halted != NULL and *halted != 0 (step_guard_cuda halted training) it changes nothing.
 * adam_update_cuda: g' = scalars[0] g; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2 (moments below FLT_MIN
 *   flushed to 0, as on the CPU); p -= scalars[4] (m scalars[1]) / (sqrt(v scalars[2]) + eps); nothing when *halted
 *   or scalars[5] != 0.
 * halted may be NULL (never halted). */
#define CUVAE_ADAM_SCALARS 6
cudaError_t adam_prepare_cuda(const float *sum_squares, int64_t *step, const float *lr, const int64_t *guard,
                              float clip_norm, float b1, float b2, float *scalars, const int64_t *halted,
                              cudaStream_t stream);
cudaError_t adam_update_cuda(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2, float eps,
                             const float *scalars, const int64_t *halted, cudaStream_t stream);
/* adam_update_cuda, and p16[i] = bf16(p[i]) of each updated parameter (the GEMMs' weight copy in bf16 precision,
 * docs/MATH.md (8.2)): twin of adam_update_bf16_cpu. p16 holds n bfloat16 bits (include/cuvae/bf16.h). */
cudaError_t adam_update_bf16_cuda(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
                                  float eps, const float *scalars, const int64_t *halted, uint16_t *p16,
                                  cudaStream_t stream);
/* ema.cu -- twin of ema_update_cpu: ema[i] = decay ema[i] + (1 - decay) p[i] (docs/MATH.md (7.5)), decay in [0, 1);
 * nothing when *halted or scalars[5] != 0 (a skipped update; scalars may be NULL: never skipped). */
cudaError_t ema_update_cuda(float *ema, const float *p, size_t n, float decay, const float *scalars,
                            const int64_t *halted, cudaStream_t stream);
/* *out = sum of g^2 (one float in device memory), deterministic (fixed reduction tree for a given n, no float
 * atomics), in two passes through partials[CUVAE_SUM_SQUARES_PARTIALS] (device scratch). */
#define CUVAE_SUM_SQUARES_PARTIALS 8192
cudaError_t sum_squares_cuda(const float *g, size_t n, float *partials, float *out, cudaStream_t stream);

/* bf16.cu -- twin of to_bf16_cpu: y16[i] = bf16(x[i]), i < n (docs/MATH.md (8.1); round to nearest even; a NaN
 * stays a NaN, the device's canonical one). y16 holds bfloat16 bits (include/cuvae/bf16.h). */
cudaError_t to_bf16_cuda(const float *x, uint16_t *y16, size_t n, cudaStream_t stream);

/* reduce.cu -- deterministic sum of a vector (e.g. per-row losses) into *out (device), fixed tree order. */
cudaError_t sum_cuda(const float *x, int n, float *out, cudaStream_t stream);

/* gather.cu -- twin of gather_rows_cpu: dst[b][:] = src[rows[b]][:], b < B, rows of D floats; rows in device
 * memory (uint32 indices, which the caller has checked against the source's row count). */
cudaError_t gather_rows_cuda(const float *src, const uint32_t *rows, float *dst, int B, int D, cudaStream_t stream);

/* step_guard.cu -- twin of the verdict in the CPU backend's cpu_train_step (docs/MATH.md (7.4)), for steps that run
 * ahead of the host. One thread: i = flags[1]++; ring[CUVAE_STEP_RECORD i + k] = sums[k], k < 4 (NLL sum, KL sum,
 * sum g^2, objective sum), and at k = 4 the step's verdict (cuvae_step_verdict of include/cuvae/optimizer.h, from
 * `rule`, the state guard[0..4) and the z-score window), all NaN when already halted. A DIVERGED or SKIP_LIMIT verdict
 * sets flags[0] = *step + 1 (the 1-based step), which halts Adam (see above); guard[4] = 1 when the update is skipped.
 * guard and window may be NULL when rule.active is 0. When flags[1] reaches ring_cap it halts instead of writing past
 * the ring. */
#define CUVAE_STEP_SUMS 4
#define CUVAE_STEP_RECORD 5
#define CUVAE_GUARD_WORDS 5
cudaError_t step_guard_cuda(const float *sums, const int64_t *step, int64_t *flags, float *ring, int ring_cap,
                            cuvae_skip_rule rule, int64_t *guard, float *window, cudaStream_t stream);

/* ---- iwae.cu -- importance-weighted log p(x) (docs/MATH.md section 5), twins of the iwae_*_cpu functions --------------
 * A chunk is one decoder batch of R data rows x C samples, sample-major (batch row s*R + r = sample s of data row
 * r); mulv[R][2Z]; eps, z [R*C][Z]; nll[R*C]; state[R][2] = (running max m, running sum t of exp(log w - m)) in
 * double; see include/cuvae/cpu.h for the plan and the noise offsets.
 * replicate: x_rep[s*R + r][:] = x[r][:] (rows of D floats).
 * reparam: z[s*R + r][j] = mu_r[j] + exp(0.5 lv_r[j]) eps[s*R + r][j].
 * log_weights: log w = -nll - 0.5 sum_j (z_j^2 - eps_j^2 - lv_j) per sample (into log_w unless NULL), folded into
 *   state[r] by a streaming log-sum-exp (fixed reduction tree, no atomics); reset != 0 overwrites the state (first
 *   chunk of a pass) instead of merging into it.
 * finalize: log_px[r] = m_r + log(t_r) - log K. */
cudaError_t iwae_replicate_cuda(const float *x, float *x_rep, int R, int C, int D, cudaStream_t stream);
cudaError_t iwae_reparam_cuda(const float *mulv, const float *eps, float *z, int R, int C, int Z, cudaStream_t stream);
cudaError_t iwae_log_weights_cuda(const float *mulv, const float *eps, const float *z, const float *nll, int R, int C,
                                  int Z, double *log_w, double *state, int reset, cudaStream_t stream);
cudaError_t iwae_finalize_cuda(const double *state, int R, int K, double *log_px, cudaStream_t stream);

/* ---- the model family: twins of the functions of the same stems in include/cuvae/cpu.h, which states
 * the equations and the multi-sample layout. Pointers are device pointers, including beta (one float) and logvar. */
/* likelihood.cu */
cudaError_t gaussian_perdim_nll_grad_cuda(const float *out, const float *x, float lv_min, double nll_offset,
                                          float *nll_row, float *dout, float scale, int B, int D, cudaStream_t stream);
cudaError_t gaussian_shared_nll_grad_cuda(const float *f, const float *x, const float *logvar, float lv_min,
                                          double nll_offset, float *nll_row, float *df, float *dlv_row, float scale,
                                          int B, int D, cudaStream_t stream);
/* autoencoder.cu */
cudaError_t squared_error_grad_cuda(const float *out, const float *x, int sigmoid_out, float *err_row, float *dout,
                                    float scale, int B, int D, cudaStream_t stream);
cudaError_t latent_mean_forward_cuda(const float *mulv, float *z, int B, int Z, cudaStream_t stream);
cudaError_t latent_mean_backward_cuda(const float *dz, float *dmulv, int B, int Z, cudaStream_t stream);
/* objective.cu. beta_schedule: one thread, *beta_t = beta_schedule_cpu(*step, beta, warmup), reading the step
 * counter from device memory (the graph-capturable form: *step holds the 0-based index of the step being run). */
cudaError_t beta_schedule_cuda(const int64_t *step, float beta, int64_t warmup, float *beta_t, cudaStream_t stream);
cudaError_t objective_weights_cuda(const float *mulv, const float *eps, const float *z, const float *nll, int R, int C,
                                   int Z, int iwae, const float *beta, float scale, float *kl_s, float *weight,
                                   float *row_obj, cudaStream_t stream);
cudaError_t reparam_multi_backward_cuda(const float *mulv, const float *eps, const float *z, const float *dz,
                                        const float *weight, const float *beta, float kl_scale, float *dmulv, int R,
                                        int C, int Z, cudaStream_t stream);
cudaError_t scale_rows_cuda(float *a, const float *w, int B, int n, cudaStream_t stream);
/* data_noise.cu */
cudaError_t binarize_cuda(const float *x, const float *u, float *out, size_t n, cudaStream_t stream);
cudaError_t dequantize_cuda(const float *x, const float *u, float *out, size_t n, cudaStream_t stream);
cudaError_t corrupt_gaussian_cuda(const float *x, const float *noise, float std, float *out, size_t n,
                                  cudaStream_t stream);
cudaError_t corrupt_mask_cuda(const float *x, const float *u, float p, float *out, size_t n, cudaStream_t stream);
/* condition.cu */
cudaError_t concat_onehot_cuda(const float *a, int n, const int32_t *labels, int period, int n_classes, float *out,
                               int rows, cudaStream_t stream);
cudaError_t take_columns_cuda(const float *src, int ld, float *dst, int rows, int n, cudaStream_t stream);
cudaError_t gather_labels_cuda(const int32_t *src, const uint32_t *rows, int32_t *dst, int B, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
