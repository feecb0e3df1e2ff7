/* The CUDA backend's creation and destruction (src/backend/cuda/backend_cuda.c holds the step and the state): the
 * memory plan checked against cudaMemGetInfo before anything is allocated, the stream, cuBLASLt and cuRAND handles,
 * every device and pinned buffer (sized once for max_batch rows: nothing is allocated per step or per call), the
 * initial parameters and the uploaded data sets; and cuda_sync_check, the CUVAE_CUDA_SYNC=1 check after a launch. */
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <curand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda_internal.h"
#include "cuda_check.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "cuvae_kernels.h"

int cuda_sync_check(cuda_backend *be, const char *call, const char *file, int line) {
  if (!be->sync_checks) return 0;
  enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CU_CHECK(cudaStreamIsCapturing(be->stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return 0;
  const cudaError_t err = cudaStreamSynchronize(be->stream);  /* the launch's own error was checked before */
  if (err == cudaSuccess) return 0;
  const char *paren = strchr(call, '(');
  const int name_len = paren ? (int)(paren - call) : (int)strlen(call);
  return cuvae_error("%s:%d: %.*s failed while it ran: %s (CUVAE_CUDA_SYNC=1: synchronised after this call)", file,
                     line, name_len, call, cudaGetErrorString(err));
}

/* CUVAE_CUDA_SYNC: unset, "" or "0": off; "1": on; anything else is refused. */
static int read_sync_mode(cuda_backend *be) {
  const char *v = getenv("CUVAE_CUDA_SYNC");
  if (!v || !*v || strcmp(v, "0") == 0) be->sync_checks = 0;
  else if (strcmp(v, "1") == 0) be->sync_checks = 1;
  else return cuvae_error("CUVAE_CUDA_SYNC=%s: expected 0 or 1 (1: synchronise and check after every CUDA launch)", v);
  return 0;
}

void cuda_destroy(cuvae_backend *base) {
  cuda_backend *be = (cuda_backend *)base;
  if (!be) return;
  if (be->stream) cudaStreamSynchronize(be->stream);
  if (be->graph) cudaGraphExecDestroy(be->graph);
  cuda_dp_destroy(be);  /* after the graph, which holds its collectives */
  void *bufs[] = {be->state,   be->train_x, be->eval_x,       be->x,            be->step_in, be->eps,
                  be->z,       be->dz,      be->dmulv,        be->grad_a,       be->grad_b,  be->kl_row,
                  be->nll_row, be->sums,    be->sum_partials, be->adam_scalars, be->step,    be->flags,
                  be->ring,    be->blas_workspace, be->x_in, be->x_rep,        be->data_u,  be->data_v,
                  be->kl_s,    be->weight,  be->row_obj,      be->dlv_row,      be->beta_t,  be->fb_gate, be->fb_floor, be->fb_sums,
                  be->train_labels, be->eval_labels, be->labels, be->enc_in, be->dec_in, be->dzy,
                  be->iwae_state, be->iwae_log_px, be->w16, be->d16, be->enc.in16, be->dec.in16,
                  be->ema, be->guard, be->window};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) cudaFree(bufs[i]);
  for (int i = 0; i < CUVAE_MAX_LAYERS; i++) {
    void *layer_bufs[] = {be->enc_out[i], be->dec_out[i], be->enc.out16[i], be->dec.out16[i], be->enc.mask[i],
                          be->dec.mask[i]};
    for (size_t j = 0; j < sizeof layer_bufs / sizeof layer_bufs[0]; j++)
      if (layer_bufs[j]) cudaFree(layer_bufs[j]);
  }
  void *pinned[] = {be->rows_host, be->step_host, be->ring_host, be->flags_host, be->io_host};
  for (size_t i = 0; i < sizeof pinned / sizeof pinned[0]; i++)
    if (pinned[i]) cudaFreeHost(pinned[i]);
  if (be->train_noise.gen) curandDestroyGenerator(be->train_noise.gen);
  if (be->eval_noise.gen) curandDestroyGenerator(be->eval_noise.gen);
  if (be->data_noise.gen) curandDestroyGenerator(be->data_noise.gen);
  cuda_gemm_destroy(be);
  if (be->stream) cudaStreamDestroy(be->stream);
  free(be->pending_step);
  free(be->pending_B);
  free(be);
}

static int dev_alloc(void *p, size_t bytes) {
  CU_CHECK(cudaMalloc((void **)p, bytes ? bytes : 1));
  return 0;
}

static int host_alloc(void *p, size_t bytes) {
  CU_CHECK(cudaMallocHost((void **)p, bytes));
  return 0;
}

static int noise_init(cuda_backend *be, dev_noise *g, uint64_t seed) {
  CURAND_CHECK(curandCreateGenerator(&g->gen, CURAND_RNG_PSEUDO_PHILOX4_32_10));
  CURAND_CHECK(curandSetGeneratorOrdering(g->gen, CURAND_ORDERING_PSEUDO_DEFAULT));
  CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(g->gen, seed));
  CURAND_CHECK(curandSetStream(g->gen, be->stream));
  return 0;
}

/* The memory plan: every device allocation of create, by category, in bytes. */
typedef struct memory_plan {
  size_t state, adam, activations, data, workspace;  /* state: params, grad (and w16); adam: m and v */
} memory_plan;

/* Per batch row, the bytes of a stack's ReLU masks and (bf16) its bf16 input and hidden outputs. */
static size_t stack_row_bytes(const cuvae_layer *layers, int n, int bf16) {
  size_t bytes = bf16 ? layers[0].in * sizeof(uint16_t) : 0;
  for (int i = 0; i < n; i++) {
    if (layers[i].act == CUVAE_ACT_RELU) bytes += (size_t)cuda_mask_ld(layers[i].out) / 8;
    if (bf16 && i < n - 1) bytes += layers[i].out * sizeof(uint16_t);
  }
  return bytes;
}

static memory_plan plan_memory(const cuda_backend *be) {
  const cuvae_model *m = be->model;
  const size_t B = (size_t)be->max_batch, Z = m->latent, D = m->input_dim, f = sizeof(float);
  const int bf16 = be->cfg->precision == CUVAE_PRECISION_BF16;
  /* x, x_in, x_rep, data_u/v, z, dz, dmulv, grad_a/b, kl/nll, kl_s, weight, row_obj, dlv_row, rows */
  size_t per_row = 5 * D + Z + Z + 2 * Z + 2 * cuvae_model_widest_output(m, 1) + 2 + 4 + 1 + 1;  /* + labels */
  if (m->cond) per_row += (D + m->cond) + 2 * (Z + m->cond);                   /* enc_in, dec_in, dzy */
  for (int i = 0; i < m->n_enc; i++) per_row += m->enc[i].out;
  for (int i = 0; i < m->n_dec; i++) per_row += m->dec[i].out;
  size_t row_bytes = per_row * f + stack_row_bytes(m->enc, m->n_enc, bf16) + stack_row_bytes(m->dec, m->n_dec, bf16);
  if (bf16) row_bytes += cuvae_model_widest_output(m, 1) * sizeof(uint16_t);  /* d16 */
  memory_plan p;
  p.state = 2 * m->n_params * f + (bf16 ? m->n_params * sizeof(uint16_t) : 0);  /* + w16 */
  if (be->cfg->ema > 0.0f) p.state += m->n_params * f;                          /* + the EMA */
  p.adam = 2 * m->n_params * f;
  p.activations = B * row_bytes + (size_t)cuvae_noise_stride(B * Z) * f + 2 * B * sizeof(double);  /* iwae_state */
  p.data = (be->n_train + be->n_eval) * (D * f + (m->cond ? sizeof(int32_t) : 0)) + be->iwae_cap * sizeof(double);
  p.workspace = CUBLAS_WORKSPACE_BYTES;
  return p;
}

/* base.memory_plan from the plan p and the device's free and total bytes; shard: the ZeRO-1 note on m and v, or
 * NULL (not sharded). Returns the plan's total bytes. */
static size_t write_memory_plan(cuda_backend *be, const memory_plan *p, const char *shard, size_t free_b,
                                size_t total_b) {
  const double mib = 1.0 / (1 << 20);
  const size_t total = p->state + p->adam + p->activations + p->data + p->workspace;
  char state[160];
  if (shard)
    snprintf(state, sizeof state, "per rank = parameters and gradient %.1f + Adam m and v %.1f (%s)",
             p->state * mib, p->adam * mib, shard);
  else
    snprintf(state, sizeof state, "= parameters, gradient, Adam m and v %.1f", (p->state + p->adam) * mib);
  snprintf(be->base.memory_plan, sizeof be->base.memory_plan,
           "%.1f MiB on the device %s + activations (%d rows) %.1f + data sets %.1f + cuBLASLt workspace %.1f; "
           "%.0f MiB free of %.0f",
           total * mib, state, be->max_batch, p->activations * mib, p->data * mib, p->workspace * mib, free_b * mib,
           total_b * mib);
  return total;
}

/* Fills base.memory_plan and fails, before anything is allocated, when the plan does not fit in free memory. */
static int check_memory_plan(cuda_backend *be) {
  const memory_plan p = plan_memory(be);
  const double mib = 1.0 / (1 << 20);
  size_t free_b = 0, total_b = 0;
  CU_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const size_t total = write_memory_plan(be, &p, NULL, free_b, total_b);
  /* A margin for what CUDA, cuBLAS and cuRAND allocate themselves (contexts, kernels, graph): 256 MiB. */
  const size_t margin = (size_t)256 << 20;
  if (total > free_b || free_b - total < margin)
    return cuvae_error("the model does not fit on the CUDA device: it needs %s, plus a %.0f MiB margin; reduce "
                       "batch_size, eval_batch_size or the layer widths, or train with --device cpu",
                       be->base.memory_plan, margin * mib);
  return 0;
}

/* The sets against the model; records their sizes (and which set evaluate will find resident). */
static int check_sets(cuda_backend *be, const cuvae_dataset *train, const cuvae_dataset *eval) {
  const cuvae_model *m = be->model;
  const size_t D = m->input_dim;
  if (train && train->dim != D) return cuvae_error("training data has %zu features, the model %zu", train->dim, D);
  if (eval && eval->dim != D) return cuvae_error("evaluation data has %zu features, the model %zu", eval->dim, D);
  if ((train && cuvae_backend_check_labels(m, train->labels, train->n, "training set")) ||
      (eval && cuvae_backend_check_labels(m, eval->labels, eval->n, "evaluation set")))
    return -1;
  be->n_train = train ? train->n : 0;
  be->n_eval = eval ? eval->n : 0;
  be->eval_ds = eval;
  be->iwae_cap = be->n_eval > (size_t)be->max_batch ? be->n_eval : (size_t)be->max_batch;
  return 0;
}

/* The stream, cuBLASLt (handle, workspace, plan cache; the precision is each GEMM's, backend_cuda_gemm.c) and the
 * three noise generators. */
static int create_handles(cuda_backend *be) {
  CU_CHECK(cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking));
  if (cuda_gemm_init(be) || dev_alloc(&be->blas_workspace, CUBLAS_WORKSPACE_BYTES)) return -1;
  const uint64_t seed = be->cfg->seed;
  if (noise_init(be, &be->train_noise, seed) || noise_init(be, &be->eval_noise, seed ^ CUVAE_SEED_EVAL) ||
      noise_init(be, &be->data_noise, seed ^ CUVAE_SEED_DATA))
    return -1;
  return 0;
}

/* A stack's ReLU masks and, in bf16, its bf16 input and hidden outputs, for max_batch rows. */
static int alloc_stack(cuda_backend *be, cuda_stack *s) {
  const size_t B = (size_t)be->max_batch, h = sizeof(uint16_t);
  const int bf16 = be->cfg->precision == CUVAE_PRECISION_BF16;
  if (bf16 && dev_alloc(&s->in16, B * s->layers[0].in * h)) return -1;
  for (int i = 0; i < s->n; i++) {
    if (s->layers[i].act == CUVAE_ACT_RELU && dev_alloc(&s->mask[i], B * (size_t)cuda_mask_ld(s->layers[i].out) / 8))
      return -1;
    if (bf16 && i < s->n - 1 && dev_alloc(&s->out16[i], B * s->layers[i].out * h)) return -1;
  }
  return 0;
}

/* The state (params | grad | m | v) and every buffer of max_batch rows the step and the evaluations use. */
static int alloc_device(cuda_backend *be) {
  const cuvae_model *m = be->model;
  const size_t n = m->n_params, B = (size_t)be->max_batch, Z = m->latent, D = m->input_dim, f = sizeof(float);
  const size_t P = (size_t)be->base.max_pending, widest = cuvae_model_widest_output(m, 1);
  if (dev_alloc(&be->state, 4 * n * f)) return -1;
  be->params = be->state;
  be->grad = be->state + n;
  be->adam_m = be->state + 2 * n;
  be->adam_v = be->state + 3 * n;
  for (int i = 0; i < m->n_enc; i++)
    if (dev_alloc(&be->enc_out[i], B * m->enc[i].out * f)) return -1;
  for (int i = 0; i < m->n_dec; i++)
    if (dev_alloc(&be->dec_out[i], B * m->dec[i].out * f)) return -1;
  be->enc = (cuda_stack){.layers = m->enc, .n = m->n_enc, .out = be->enc_out};
  be->dec = (cuda_stack){.layers = m->dec, .n = m->n_dec, .out = be->dec_out};
  if (alloc_stack(be, &be->enc) || alloc_stack(be, &be->dec)) return -1;
  if (be->cfg->precision == CUVAE_PRECISION_BF16 &&
      (dev_alloc(&be->w16, n * sizeof(uint16_t)) || dev_alloc(&be->d16, B * widest * sizeof(uint16_t))))
    return -1;
  if (dev_alloc(&be->train_x, be->n_train * D * f) || dev_alloc(&be->eval_x, be->n_eval * D * f) ||
      dev_alloc(&be->x, B * D * f) || dev_alloc(&be->step_in, (B + 1) * sizeof(uint32_t)) ||
      dev_alloc(&be->eps, (size_t)cuvae_noise_stride(B * Z) * f) || dev_alloc(&be->z, B * Z * f) ||
      dev_alloc(&be->dz, B * Z * f) || dev_alloc(&be->dmulv, B * 2 * Z * f) || dev_alloc(&be->grad_a, B * widest * f) ||
      dev_alloc(&be->grad_b, B * widest * f) || dev_alloc(&be->kl_row, B * f) || dev_alloc(&be->nll_row, B * f) ||
      dev_alloc(&be->sums, CUVAE_STEP_SUMS * f) || dev_alloc(&be->sum_partials, CUVAE_SUM_SQUARES_PARTIALS * f) ||
      dev_alloc(&be->adam_scalars, CUVAE_ADAM_SCALARS * f) || dev_alloc(&be->step, sizeof(int64_t)) ||
      dev_alloc(&be->flags, 2 * sizeof(int64_t)) || dev_alloc(&be->ring, P * CUVAE_STEP_RECORD * f) ||
      dev_alloc(&be->guard, CUVAE_GUARD_WORDS * sizeof(int64_t)) ||
      (be->skip_rule.window > 0 && dev_alloc(&be->window, (size_t)be->skip_rule.window * f)) ||
      (be->cfg->ema > 0.0f && dev_alloc(&be->ema, n * f)))
    return -1;
  be->rows = be->step_in + 1;  /* the views of step_in: lr | rows */
  be->lr_t = (float *)be->step_in;
  const size_t data_noise = (size_t)cuvae_noise_stride(B * D) * f;
  if (dev_alloc(&be->x_in, B * D * f) || dev_alloc(&be->x_rep, B * D * f) || dev_alloc(&be->data_u, data_noise) ||
      dev_alloc(&be->data_v, data_noise) || dev_alloc(&be->kl_s, B * f) || dev_alloc(&be->weight, B * f) ||
      dev_alloc(&be->row_obj, B * f) || dev_alloc(&be->dlv_row, B * f) || dev_alloc(&be->beta_t, f) ||
      dev_alloc(&be->fb_gate, Z * f) || dev_alloc(&be->fb_floor, Z * f) || dev_alloc(&be->fb_sums, Z * sizeof(double)) ||
      dev_alloc(&be->labels, B * sizeof(int32_t)) || dev_alloc(&be->iwae_state, 2 * B * sizeof(double)) ||
      dev_alloc(&be->iwae_log_px, be->iwae_cap * sizeof(double)))
    return -1;
  if (m->cond) {  /* conditional: the sets' labels (uploaded by init_state) and the one-hot inputs */
    const size_t C = m->cond, i32 = sizeof(int32_t);
    if (dev_alloc(&be->train_labels, be->n_train * i32) || dev_alloc(&be->eval_labels, be->n_eval * i32) ||
        dev_alloc(&be->enc_in, B * (D + C) * f) || dev_alloc(&be->dec_in, B * (Z + C) * f) ||
        dev_alloc(&be->dzy, B * (Z + C) * f))
      return -1;
  }
  return 0;
}

/* Pinned staging (per-step slots, collect's read-back, encode / decode rows) and the pending steps' bookkeeping. */
static int alloc_host(cuda_backend *be) {
  const cuvae_model *m = be->model;
  const size_t B = (size_t)be->max_batch, P = (size_t)be->base.max_pending, f = sizeof(float);
  const size_t out_cols = m->dec[m->n_dec - 1].out;
  be->io_cols = m->input_dim > 2 * m->latent ? m->input_dim : 2 * m->latent;
  if (out_cols > be->io_cols) be->io_cols = out_cols;
  if (host_alloc(&be->rows_host, P * (B + 1) * sizeof(uint32_t)) || host_alloc(&be->step_host, P * sizeof(int64_t)) ||
      host_alloc(&be->ring_host, P * CUVAE_STEP_RECORD * f) || host_alloc(&be->flags_host, 2 * sizeof(int64_t)) ||
      host_alloc(&be->io_host, B * be->io_cols * f))
    return -1;
  be->pending_step = malloc(P * sizeof *be->pending_step);
  be->pending_B = malloc(P * sizeof *be->pending_B);
  if (!be->pending_step || !be->pending_B) return cuvae_error("out of memory creating the CUDA backend");
  be->step_mirror = -1;
  return 0;
}

static int upload(cuda_backend *be, float *dst, int32_t *dst_labels, const cuvae_dataset *ds) {
  if (!ds || !ds->n) return 0;
  CU_CHECK(cudaMemcpyAsync(dst, ds->x, ds->n * ds->dim * sizeof(float), cudaMemcpyHostToDevice, be->stream));
  if (be->model->cond)
    CU_CHECK(cudaMemcpyAsync(dst_labels, ds->labels, ds->n * sizeof(int32_t), cudaMemcpyHostToDevice, be->stream));
  return 0;
}

/* Initial parameters from the host (the CPU backend's exact values), zero gradient and moments, the sets uploaded. */
static int init_state(cuda_backend *be, const cuvae_dataset *train, const cuvae_dataset *eval) {
  const size_t n = be->model->n_params, f = sizeof(float);
  float *host = malloc(n * f);
  if (!host) return cuvae_error("out of memory initialising %zu parameters", n);
  if (cuvae_model_init(be->model, host, be->cfg->seed)) {
    free(host);
    return -1;
  }
  /* Everything on the backend's (non-blocking) stream, then one synchronisation before the host buffers go. */
  cudaError_t err = cudaMemcpyAsync(be->params, host, n * f, cudaMemcpyHostToDevice, be->stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(be->stream);
  free(host);
  CU_CHECK(err);
  if (be->w16) CU_CHECK(to_bf16_cuda(be->params, be->w16, n, be->stream));  /* docs/MATH.md (8.2) */
  CU_CHECK(cudaMemsetAsync(be->grad, 0, 3 * n * f, be->stream));
  CU_CHECK(cudaMemsetAsync(be->flags, 0, 2 * sizeof(int64_t), be->stream));
  CU_CHECK(cudaMemsetAsync(be->guard, 0, CUVAE_GUARD_WORDS * sizeof(int64_t), be->stream));
  if (be->window) CU_CHECK(cudaMemsetAsync(be->window, 0, (size_t)be->skip_rule.window * f, be->stream));
  if (be->ema) CU_CHECK(cudaMemcpyAsync(be->ema, be->params, n * f, cudaMemcpyDeviceToDevice, be->stream));  /* (7.5) */
  if (upload(be, be->train_x, be->train_labels, train) || upload(be, be->eval_x, be->eval_labels, eval)) return -1;
  CU_CHECK(cudaStreamSynchronize(be->stream));
  return 0;
}

/* Copies the parameters and the shard [lo, hi) of m and v to the host, frees the old state, allocates the new one
 * zeroed (the gradient's padding stays zero: the last block's sum of squares reads it) and copies them back. */
static int relayout_state(cuda_backend *be, size_t lo, size_t hi, size_t padded) {
  const size_t n = be->model->n_params, k = hi - lo, f = sizeof(float);
  float *host = malloc((n + 2 * k) * f);
  if (!host) return cuvae_error("out of memory re-laying out %zu parameters", n);
  cudaError_t err = cudaStreamSynchronize(be->stream);
  if (err == cudaSuccess) err = cudaMemcpy(host, be->params, n * f, cudaMemcpyDeviceToHost);
  if (err == cudaSuccess) err = cudaMemcpy(host + n, be->adam_m + lo, k * f, cudaMemcpyDeviceToHost);
  if (err == cudaSuccess) err = cudaMemcpy(host + n + k, be->adam_v + lo, k * f, cudaMemcpyDeviceToHost);
  if (err == cudaSuccess) err = cudaFree(be->state);
  be->state = NULL;
  if (err == cudaSuccess) err = cudaMalloc((void **)&be->state, (2 * padded + 2 * k) * f);
  if (err == cudaSuccess) {
    be->params = be->state;
    be->grad = be->state + padded;
    be->adam_m = be->grad + padded;
    be->adam_v = be->adam_m + k;
    err = cudaMemset(be->state, 0, (2 * padded + 2 * k) * f);
  }
  if (err == cudaSuccess) err = cudaMemcpy(be->params, host, n * f, cudaMemcpyHostToDevice);
  if (err == cudaSuccess) err = cudaMemcpy(be->adam_m, host + n, k * f, cudaMemcpyHostToDevice);
  if (err == cudaSuccess) err = cudaMemcpy(be->adam_v, host + n + k, k * f, cudaMemcpyHostToDevice);
  free(host);
  CU_CHECK(err);
  return 0;
}

int cuda_shard_state(cuda_backend *be, size_t lo, size_t hi, size_t padded, int rank, int size) {
  if (relayout_state(be, lo, hi, padded)) return -1;
  memory_plan p = plan_memory(be);
  const size_t n = be->model->n_params, f = sizeof(float);
  p.state += 2 * (padded - n) * f;
  p.adam = 2 * (hi - lo) * f;
  char shard[96];
  snprintf(shard, sizeof shard, "shard %d of %d: %zu of %zu values; shard_optimizer", rank + 1, size, hi - lo, n);
  size_t free_b = 0, total_b = 0;
  CU_CHECK(cudaMemGetInfo(&free_b, &total_b));
  write_memory_plan(be, &p, shard, free_b, total_b);
  return 0;
}

int cuda_setup(cuda_backend *be, const cuvae_dataset *train, const cuvae_dataset *eval) {
  be->skip_rule = cuvae_skip_rule_from(be->cfg);  /* the optimizer's rules (include/cuvae/optimizer.h) */
  be->lr_horizon = cuvae_lr_horizon(be->cfg, train ? train->n : 0);
  if (read_sync_mode(be) || check_sets(be, train, eval) || check_memory_plan(be) || create_handles(be) ||
      alloc_device(be) || alloc_host(be) || init_state(be, train, eval))
    return -1;
  return 0;
}
