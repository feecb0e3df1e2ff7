/* The CUDA backend: the same VAE step as src/backend/cpu/backend_cpu.c + src/backend/cpu/vae_cpu.c, on the device.
 *
 * State: ONE device buffer of 4 * n_params floats with the layout of cuvae_model: params | grad | adam m | v
 * (initialised by cuvae_model_init on the host and copied up; ZeRO-1 re-lays it out at the join: cuda_shard_state,
 * src/backend/cuda/backend_cuda_setup.c). The training set and the evaluation set are uploaded once, at creation
 * (src/backend/cuda/backend_cuda_setup.c), after the memory plan has been checked against cudaMemGetInfo.
 *
 * One training step, as enqueued by cuda_train_step (docs/ARCHITECTURE.md draws it):
 *   host:  row indices -> pinned slot -> rows (H2D copy); Adam's step counter (H2D, only when it must be set);
 *          eps = cuRAND device Philox at the documented offset (include/cuvae/rng.h), the CPU's numbers;
 *   graph: gather_rows -> encoder (cublasLtMatmul per layer, bias + ReLU fused) -> reparam_kl_forward -> decoder ->
 *          *_nll_grad -> sum (NLL, KL) -> decoder backward -> reparam_kl_backward -> encoder backward ->
 *          sum_squares -> step_guard (records the sums; halts on a non-finite step) -> adam_prepare -> adam_update;
 *          data parallel (several ranks, src/backend/cuda/backend_cuda_dp.c): each rank's slice of the global batch
 *          and of its noise, the gradient all-reduced (NCCL) in buckets on a second stream during the encoder and
 *          decoder backward, and with the loss sums joined before sum_squares; sharded (ZeRO-1), the same buckets
 *          reduced into the owners of the shards, the norm from the blocks' sums of squares, Adam on the rank's
 *          shard, the parameters all-gathered.
 * The graph part is captured once per batch size and replayed ([train] cuda_graph = on), or launched kernel by
 * kernel (off, and always under CUVAE_CUDA_SYNC=1, which checks each launch). Before a capture every GEMM of the
 * step runs once outside it (warm_up_gemms), so cuBLASLt's plans (descriptors, heuristic's algorithm) are all made
 * outside the capture (src/backend/cuda/backend_cuda_gemm.c).
 * eps stays outside the graph: a captured cuRAND call would replay the same numbers every step.
 * Nothing is read back per step: collect copies the recorded sums of all pending steps in one transfer.
 *
 * Row-major <-> column-major: a row-major [r][c] array with leading dimension c is the column-major c x r matrix,
 * i.e. its transpose. With Xc = X^T (in x B, ld in), Wc = W^T (in x out, ld in), Yc = Y^T (out x B, ld out):
 *   forward  Y = X W^T       <=>  Yc  = Wc^T Xc           gemm(T, N, m=out, n=B,   k=in)   bias (m) fused
 *   dW = dY^T X              <=>  dWc = Xc dYc^T          gemm(N, T, m=in,  n=out, k=B)   db: BGRADB (n, over k)
 *   dX = dY W                <=>  dXc = Wc dYc            gemm(N, N, m=in,  n=B,   k=out)  ReLU' + db below: DRELU_BGRAD
 * No allocation per step: every buffer is sized in create for max(batch_size, eval_batch_size) rows. */
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <curand.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "cuvae_kernels.h"
#include "backend_cuda_internal.h"
#include "cuda_check.h"

/* The backward of layer i of stack s (docs/MATH.md (8.2) in bf16), column-major (see above). On entry dy holds
 * dL/d(output), except for a ReLU layer, where the layer above's input-gradient GEMM already applied the ReLU gradient
 * and wrote the bias gradient (DRELU_BGRAD); a tanh layer applies it here (bias_act_backward_cuda: no tanh epilogue).
 * With d the fp32 pre-activation gradient: db = sum over rows of d (BGRADB, the dW GEMM's reduction of its B operand
 * d; in bf16 bias_grad_cuda of the fp32 d, since BGRADB would sum bf16(d)); dW = d^T x; dx = d W, fused with the ReLU
 * gradient and bias gradient of layer i - 1 when that is a ReLU layer. bf16: d enters both GEMMs as bf16(d) (d16),
 * x as the forward's bf16 copy, W as w16; dx stays fp32. x0: the stack's fp32 input (layer 0's x). With separate
 * epilogues every layer takes the tanh layer's way, and bias_grad_cuda writes db. */
static int dense_backward(cuda_backend *be, const cuda_stack *s, int i, const float *x0, float *dy, float *dx,
                          int B) {
  const cuvae_layer *l = &s->layers[i];
  const int bf16 = be->cfg->precision == CUVAE_PRECISION_BF16, fused = !be->separate_epilogues;
  const int db_done = fused && l->act == CUVAE_ACT_RELU;
  const int in = (int)l->in, out = (int)l->out;
  if (l->act == CUVAE_ACT_TANH || (!fused && l->act == CUVAE_ACT_RELU))
    CU_LAUNCH(be, bias_act_backward_cuda(s->out[i], dy, B, out, l->act, be->stream));
  if (!db_done && (bf16 || !fused))
    CU_LAUNCH(be, bias_grad_cuda(dy, be->grad + l->b, be->sum_partials, B, out, be->stream));
  const void *d = dy;
  if (bf16) {
    CU_LAUNCH(be, to_bf16_cuda(dy, be->d16, (size_t)B * out, be->stream));
    d = be->d16;
  }
  /* dWc[in, out] = Xc dYc^T */
  cuda_gemm w = {.ta = CUBLAS_OP_N, .tb = CUBLAS_OP_T, .m = in, .n = out, .k = B, .b = d, .d = be->grad + l->w,
                 .lda = in, .ldb = out, .ldd = in, .epilogue = CUBLASLT_EPILOGUE_DEFAULT};
  if (bf16) {
    w.a = i == 0 ? (const void *)s->in16 : (const void *)s->out16[i - 1];
  } else {
    w.a = i == 0 ? x0 : s->out[i - 1];
    if (!db_done && fused) {
      w.epilogue = CUBLASLT_EPILOGUE_BGRADB;
      w.bias = be->grad + l->b;
    }
  }
  if (cuda_gemm_run(be, &w)) return -1;
  if (!dx) return 0;
  /* dXc[in, B] = Wc dYc */
  cuda_gemm x = {.ta = CUBLAS_OP_N, .tb = CUBLAS_OP_N, .m = in, .n = B, .k = out, .b = d, .d = dx, .lda = in,
                 .ldb = out, .ldd = in, .epilogue = CUBLASLT_EPILOGUE_DEFAULT};
  x.a = bf16 ? (const void *)(be->w16 + l->w) : (const void *)(be->params + l->w);
  if (fused && i > 0 && s->layers[i - 1].act == CUVAE_ACT_RELU) {
    x.epilogue = CUBLASLT_EPILOGUE_DRELU_BGRAD;
    x.aux = s->mask[i - 1];
    x.aux_ld = cuda_mask_ld(l->in);
    x.bias = be->grad + s->layers[i - 1].b;
  }
  return cuda_gemm_run(be, &x);
}

/* Backward through the stack's layers n-1..0, starting from dy (any buffer); activation gradients ping-pong between
 * grad_a and grad_b; dx0 receives dL/d(input of layer 0) (NULL: not needed). After layer i the gradient is final from
 * its weights to the end of the buffer (the layout puts the layers in order; layer i - 1's bias gradient, which layer
 * i's input-gradient GEMM writes, lies below): data parallel may start summing that part over the ranks. */
static int backward_stack(cuda_backend *be, const cuda_stack *s, const float *x0, float *dy, float *dx0, int B) {
  for (int i = s->n - 1; i >= 0; i--) {
    float *dx = i == 0 ? dx0 : (dy == be->grad_a ? be->grad_b : be->grad_a);
    if (dense_backward(be, s, i, x0, dy, dx, B) || cuda_dp_grad_ready(be, s->layers[i].w)) return -1;
    dy = dx;
  }
  return 0;
}

/* Adam (docs/MATH.md section 7) on the parameters, or sharded (ZeRO-1) on this rank's shard [lo, hi) with its m and v,
 * whose updated shards every rank then gathers (cuda_dp_params_gather, which also remakes the bf16 weights); then the
 * EMA of the weights (docs/MATH.md (7.5)). A skipped update (step_guard_cuda) leaves all of them. */
static int adam_step(cuda_backend *be) {
  const cuvae_config *c = be->cfg;
  const int sharded = cuda_dp_sharded(be);
  const size_t lo = sharded ? be->base.dp->shard_begin : 0;
  const size_t k = sharded ? be->base.dp->shard_end - lo : be->model->n_params;
  float *p = be->params + lo, *g = be->grad + lo;
  if (k && c->precision == CUVAE_PRECISION_BF16 && !sharded)  /* and the GEMMs' bf16 weights, docs/MATH.md (8.2) */
    CU_LAUNCH(be, adam_update_bf16_cuda(p, g, be->adam_m, be->adam_v, k, c->beta1, c->beta2, c->adam_eps,
                                        be->adam_scalars, be->flags, be->w16, be->stream));
  else if (k)
    CU_LAUNCH(be, adam_update_cuda(p, g, be->adam_m, be->adam_v, k, c->beta1, c->beta2, c->adam_eps, be->adam_scalars,
                                   be->flags, be->stream));
  if (cuda_dp_params_gather(be)) return -1;
  if (be->ema)
    CU_LAUNCH(be, ema_update_cuda(be->ema, be->params, be->model->n_params, c->ema, be->adam_scalars, be->flags,
                                  be->stream));
  return 0;
}

/* The device part of one training step on B rows (be->rows, be->eps, the step counter already in place): every
 * launch has the same arguments every step, so this is what gets captured into the graph. Data parallel: B is this
 * rank's slice of a global batch of Bt rows, every term is scaled by 1/Bt, and the gradient and the loss sums are
 * summed over the ranks (NCCL, backend_cuda_dp.c) before the norm, the guard and Adam read them. */
static int step_body(cuda_backend *be, int B) {
  const cuvae_model *m = be->model;
  const cuvae_config *c = be->cfg;
  const cuvae_objective_spec *spec = &be->train_spec;  /* beta is read from the device (be->beta_t) */
  const int Z = (int)m->latent, L = spec->samples, N = B * L, Bt = be->base.dp ? B * be->base.dp->size : B;
  const size_t nx = (size_t)B * m->input_dim;
  const int ae = spec->objective == CUVAE_OBJ_AE, sampled = cuvae_objective_sampled(spec);
  CU_LAUNCH(be, beta_schedule_cuda(be->step, c->beta, c->beta_warmup_steps, be->beta_t, be->stream));
  CU_LAUNCH(be, gather_rows_cuda(be->train_x, be->rows, be->x, B, (int)m->input_dim, be->stream));
  if (m->cond) CU_LAUNCH(be, gather_labels_cuda(be->train_labels, be->rows, be->labels, B, be->stream));
  /* Data noise drawn before the launch (include/cuvae/rng.h): binarize or dequantize the targets, corrupt the encoder
   * input. */
  if (c->binarize == CUVAE_BINARIZE_DYNAMIC) CU_LAUNCH(be, binarize_cuda(be->x, be->data_u, be->x, nx, be->stream));
  if (c->dequantize == CUVAE_DEQUANTIZE_UNIFORM)
    CU_LAUNCH(be, dequantize_cuda(be->x, be->data_u, be->x, nx, be->stream));
  const float *x_in = be->x;
  if (c->corrupt.kind == CUVAE_CORRUPT_GAUSSIAN)
    CU_LAUNCH(be, corrupt_gaussian_cuda(be->x, be->data_v, c->corrupt.level, be->x_in, nx, be->stream));
  if (c->corrupt.kind == CUVAE_CORRUPT_MASK)
    CU_LAUNCH(be, corrupt_mask_cuda(be->x, be->data_v, c->corrupt.level, be->x_in, nx, be->stream));
  if (c->corrupt.kind != CUVAE_CORRUPT_NONE) x_in = be->x_in;
  if (cuda_vae_forward(be, x_in, be->x, be->labels, B, Bt, spec, 1)) return -1;
  /* Backward: the shared log-variance, the decoder (down to dz), the latent stage, the encoder. */
  if (m->variance == CUVAE_VAR_LEARNED_SHARED) CU_LAUNCH(be, sum_cuda(be->dlv_row, N, be->grad + m->logvar, be->stream));
  if (backward_stack(be, &be->dec, m->cond ? be->dec_in : be->z, be->grad_a, m->cond ? be->dzy : be->dz, N))
    return -1;
  if (m->cond) CU_LAUNCH(be, take_columns_cuda(be->dzy, Z + (int)m->cond, be->dz, N, Z, be->stream));  /* dL/dz */
  const float *mulv = be->enc_out[m->n_enc - 1];
  if (ae)
    CU_LAUNCH(be, latent_mean_backward_cuda(be->dz, be->dmulv, B, Z, be->stream));
  else
    CU_LAUNCH(be, reparam_multi_backward_cuda(mulv, be->eps, be->z, be->dz, sampled ? be->weight : NULL, be->beta_t,
                                         spec->free_bits > 0.0f ? 0.0f : 1.0f / (float)Bt, be->dmulv, B, L, Z,
                                         be->stream));
  if (!ae && !sampled && spec->free_bits > 0.0f)  /* the KL's gradient of the dims at or above the floor, (3.4) */
    CU_LAUNCH(be, free_bits_backward_cuda(mulv, be->fb_gate, be->beta_t, 1.0f / (float)Bt, be->dmulv, B, Z,
                                          be->stream));
  if (backward_stack(be, &be->enc, m->cond ? be->enc_in : x_in, be->dmulv, NULL, B) || cuda_dp_step_sums(be))
    return -1;
  if (!cuda_dp_sharded(be))  /* sharded, step_sums added the blocks' sums of squares */
    CU_LAUNCH(be, sum_squares_cuda(be->grad, m->n_params, be->sum_partials, be->sums + 2, be->stream));
  /* The verdict (docs/MATH.md (7.4)): a skipped update, or from a stopping step on, nothing reaches the parameters. */
  CU_LAUNCH(be, step_guard_cuda(be->sums, be->step, be->flags, be->ring, be->base.max_pending, be->skip_rule, be->guard,
                                be->window, be->stream));
  CU_LAUNCH(be, adam_prepare_cuda(be->sums + 2, be->step, be->lr_t, be->guard, c->clip_norm, c->beta1, c->beta2,
                                  be->adam_scalars, be->flags, be->stream));
  return adam_step(be);
}

/* Every GEMM of step_body for B rows, once, outside capture, on the step's stream (in its precision): step_body itself
 * with its kernels skipped (CU_LAUNCH in the gemm_only pass), so the shapes, operands, epilogues and pointers are the
 * step's by construction and each GEMM's cuBLASLt plan is made here instead of inside the capture. What the GEMMs write
 * (activations, masks, dW and db in grad, dx) is written again by the step before anything reads it. */
static int warm_up_gemms(cuda_backend *be, int B) {
  be->gemm_only = 1;
  const int rc = step_body(be, B);
  be->gemm_only = 0;
  return rc;
}

/* One warm_up_gemms pass for B rows between two events on the step's stream: its device time in *ms. */
static int time_gemm_pass(cuda_backend *be, int B, cudaEvent_t start, cudaEvent_t stop, float *ms) {
  CU_CHECK(cudaEventRecord(start, be->stream));
  if (warm_up_gemms(be, B)) return -1;
  CU_CHECK(cudaEventRecord(stop, be->stream));
  CU_CHECK(cudaEventSynchronize(stop));
  CU_CHECK(cudaEventElapsedTime(ms, start, stop));
  return 0;
}

/* The step's GEMMs alone (the backend interface's time_step_gemms): step_body's gemm_only pass, whose GEMMs are the
 * step's by construction (warm_up_gemms), timed with CUDA events. A shape met for the first time is planned in the
 * pass; the caller's untimed first pass takes that. */
static int cuda_time_step_gemms(cuvae_backend *base, int B, double *seconds) {
  cuda_backend *be = (cuda_backend *)base;
  if (B < 1 || (long long)B * be->train_spec.samples > be->max_batch)
    return cuvae_error("time_step_gemms: %d rows x %d samples do not fit the CUDA backend (max %d)", B,
                       be->train_spec.samples, be->max_batch);
  if (be->n_pending)
    return cuvae_error("time_step_gemms: %d training steps are pending; collect them first", be->n_pending);
  cudaEvent_t ev[2] = {NULL, NULL};
  float ms = 0.0f;
  int rc = cudaEventCreate(&ev[0]) == cudaSuccess && cudaEventCreate(&ev[1]) == cudaSuccess
               ? time_gemm_pass(be, B, ev[0], ev[1], &ms)
               : cuvae_error("cudaEventCreate failed");
  for (int i = 0; i < 2; i++)
    if (ev[i]) cudaEventDestroy(ev[i]);
  *seconds = 1e-3 * ms;
  return rc;
}

/* CUVAE_CUDA_EPILOGUES: unset, "" or "fused": 0; "separate": 1; anything else is refused (-1). */
static int separate_requested(void) {
  const char *v = getenv("CUVAE_CUDA_EPILOGUES");
  if (!v || !*v || strcmp(v, "fused") == 0) return 0;
  if (strcmp(v, "separate") == 0) return 1;
  return cuvae_error("CUVAE_CUDA_EPILOGUES=%s: expected fused or separate (the dense layers' bias and activation "
                     "in the GEMMs' cuBLASLt epilogues, or in kernels of their own)", v);
}

/* Plans every GEMM of step_body for B rows (kernels skipped, no GEMM run). */
static int plan_step(cuda_backend *be, int B) {
  be->plan_only = 1;
  const int rc = warm_up_gemms(be, B);
  be->plan_only = 0;
  return rc;
}

int cuda_choose_epilogues(cuda_backend *be, int B) {
  const int requested = separate_requested();
  if (requested < 0) return -1;
  be->separate_epilogues = requested;
  char why[160] = "CUVAE_CUDA_EPILOGUES=separate";
  if (!requested && plan_step(be, B)) {
    snprintf(why, sizeof why, "%s", cuvae_last_error());
    cuvae_clear_error();
    be->separate_epilogues = 1;
    snprintf(be->base.notice, sizeof be->base.notice, "%.150s; the dense layers run plain GEMMs with the bias and "
             "activation in kernels of their own", why);
  }
  if (be->separate_epilogues && plan_step(be, B)) return -1;
  const char *type = cuvae_precision_name(be->cfg->precision);
  if (be->separate_epilogues)
    snprintf(be->base.gemm, sizeof be->base.gemm, "cuBLASLt %s; bias, activation, bias gradient in separate kernels "
             "(%.80s)", type, why);
  else
    snprintf(be->base.gemm, sizeof be->base.gemm, "cuBLASLt %s; bias, ReLU, bias gradient fused (epilogues "
             "RELU_AUX_BIAS, BIAS, DRELU_BGRAD%s)", type, be->cfg->precision == CUVAE_PRECISION_BF16 ? "" : ", BGRADB");
  return 0;
}

/* Captures step_body for B rows into be->graph (replacing one for another B), after warming its GEMMs up. */
static int capture_step(cuda_backend *be, int B) {
  if (be->graph) {
    CU_CHECK(cudaGraphExecDestroy(be->graph));
    be->graph = NULL;
  }
  if (warm_up_gemms(be, B)) return -1;
  CU_CHECK(cudaStreamBeginCapture(be->stream, cudaStreamCaptureModeThreadLocal));
  const int rc = step_body(be, B);
  cudaGraph_t g = NULL;
  const cudaError_t end = cudaStreamEndCapture(be->stream, &g);  /* always ends the capture, even after an error */
  if (rc != 0) {
    if (g) cudaGraphDestroy(g);
    return -1;
  }
  CU_CHECK(end);
  const cudaError_t inst = cudaGraphInstantiate(&be->graph, g, 0);
  cudaGraphDestroy(g);
  CU_CHECK(inst);
  be->graph_B = B;
  return 0;
}

/* Step `step`'s eps and data noise on the device at the offsets of include/cuvae/rng.h (the CPU backend's numbers).
 * Data parallel: each draw is the global batch's (Bt rows), of which this rank takes its rows' values, [r0, r0 + B):
 * for sample s of eps the slice [(s Bt + r0) Z, +B Z) of the [L][Bt][Z] draw, of the data noise [r0 D, +B D). */
static int draw_step_noise(cuda_backend *be, int64_t step, int B) {
  const cuvae_config *c = be->cfg;
  const cuvae_data_parallel *dp = be->base.dp;
  const int L = be->train_spec.samples, Bt = dp ? B * dp->size : B, r0 = dp ? B * dp->rank : 0;
  const size_t Z = be->model->latent, D = be->model->input_dim, nz = (size_t)B * Z, nx = (size_t)B * D;
  const uint64_t stride_x = cuvae_noise_stride((size_t)Bt * D);
  if (be->train_spec.objective != CUVAE_OBJ_AE) {
    const uint64_t offset = (uint64_t)step * cuvae_noise_stride((size_t)L * Bt * Z);
    if (!dp && cuda_noise_draw(be, &be->train_noise, offset, L * nz)) return -1;
    for (int s = 0; dp && s < L; s++)
      if (cuda_dp_noise(be, &be->train_noise, offset, ((size_t)s * Bt + r0) * Z, nz, be->eps + s * nz, 0)) return -1;
  }
  if (c->binarize == CUVAE_BINARIZE_DYNAMIC || c->dequantize == CUVAE_DEQUANTIZE_UNIFORM) {  /* one slot, see rng.h */
    const uint64_t offset = 2 * (uint64_t)step * stride_x;
    if (dp ? cuda_dp_noise(be, &be->data_noise, offset, (size_t)r0 * D, nx, be->data_u, 1)
           : cuda_noise_fill(be, &be->data_noise, offset, nx, be->data_u, 1))
      return -1;
  }
  if (c->corrupt.kind != CUVAE_CORRUPT_NONE) {
    const uint64_t offset = (2 * (uint64_t)step + 1) * stride_x;
    const int uniform = c->corrupt.kind == CUVAE_CORRUPT_MASK;
    if (dp ? cuda_dp_noise(be, &be->data_noise, offset, (size_t)r0 * D, nx, be->data_v, uniform)
           : cuda_noise_fill(be, &be->data_noise, offset, nx, be->data_v, uniform))
      return -1;
  }
  return 0;
}

static int cuda_train_step(cuvae_backend *base, const uint32_t *rows, int B, int64_t step) {
  cuda_backend *be = (cuda_backend *)base;
  const int L = be->train_spec.samples;
  if (B >= 1 && B * L > be->max_batch)
    return cuvae_error("step %lld: %d rows x %d samples do not fit the CUDA backend (max %d)", (long long)step + 1, B,
                       L, be->max_batch);
  if (B < 1 || B > be->max_batch)
    return cuvae_error("step %lld: batch of %d rows does not fit the CUDA backend (max %d)", (long long)step + 1, B,
                       be->max_batch);
  if (be->n_pending >= base->max_pending)
    return cuvae_error("step %lld: %d steps are pending; collect their results first", (long long)step + 1,
                       be->n_pending);
  if (!be->n_train)
    return cuvae_error("step %lld: the backend was created without a training set", (long long)step + 1);
  for (int b = 0; b < B; b++)
    if (rows[b] >= be->n_train)
      return cuvae_error("step %lld: row %u is outside the training set (%zu rows)", (long long)step + 1, rows[b],
                         be->n_train);
  /* Per-step inputs go through this step's own pinned slot: no slot is reused before collect has waited for the
   * step that read it, so the host never waits here. */
  const int slot = be->n_pending;
  uint32_t *in_slot = be->rows_host + (size_t)slot * (be->max_batch + 1);  /* lr | rows: one copy (step_in) */
  const float lr = cuvae_lr_at_step(be->cfg, be->lr_horizon, step);      /* docs/MATH.md (7.3) */
  memcpy(in_slot, &lr, sizeof lr);
  memcpy(in_slot + 1, rows, (size_t)B * sizeof *rows);
  CU_CHECK(cudaMemcpyAsync(be->step_in, in_slot, (size_t)(B + 1) * sizeof *rows, cudaMemcpyHostToDevice, be->stream));
  /* Adam's step counter lives on the device (adam_prepare_cuda increments it); it is set from the host only when
   * it will not already hold `step` (first step, after set_state or a divergence, or a jump in the sequence). */
  if (be->step_mirror != step) {
    be->step_host[slot] = step;
    CU_CHECK(cudaMemcpyAsync(be->step, &be->step_host[slot], sizeof(int64_t), cudaMemcpyHostToDevice, be->stream));
  }
  if (draw_step_noise(be, step, B)) return -1;
  if (be->cfg->cuda_graph && !be->sync_checks) {  /* CUVAE_CUDA_SYNC=1 launches directly, to check each launch */
    if (!be->graph || be->graph_B != B)
      if (capture_step(be, B)) return -1;
    CU_CHECK(cudaGraphLaunch(be->graph, be->stream));
  } else if (step_body(be, B)) {
    return -1;
  }
  be->pending_step[slot] = step;
  be->pending_B[slot] = B;
  be->n_pending++;
  be->step_mirror = step + 1;
  return 0;
}

/* The message of the step that halted training (halted_at, 1-based) from its result and its recorded verdict. */
static int halted_message(const cuda_backend *be, const cuvae_step_result *out, int k, int64_t halted_at,
                          int64_t recorded) {
  const cuvae_step_result *bad = NULL;
  int verdict = CUVAE_STEP_DIVERGED;
  for (int i = 0; i < k; i++)
    if (be->pending_step[i] + 1 == halted_at) {
      bad = &out[i];
      verdict = (int)be->ring_host[CUVAE_STEP_RECORD * i + CUVAE_STEP_SUMS];
    }
  if (!bad)
    return cuvae_error("step %lld: the device halted training (%lld of %d pending steps recorded)",
                       (long long)halted_at, (long long)recorded, k);
  if (verdict == CUVAE_STEP_SKIP_LIMIT) {
    char msg[256];
    cuvae_step_verdict_message(verdict, &be->skip_rule, halted_at, bad->grad_norm, bad->loss.objective, msg,
                               sizeof msg);
    return cuvae_error("%s", msg);
  }
  if (!isfinite(bad->loss.objective) || !isfinite(bad->loss.nelbo))
    return cuvae_error("step %lld: loss is not finite (objective %g, nelbo %g, recon %g, kl %g); training diverged",
                       (long long)halted_at, bad->loss.objective, bad->loss.nelbo, bad->loss.recon, bad->loss.kl);
  return cuvae_error("step %lld: gradient is not finite (loss %g); training diverged", (long long)halted_at,
                     bad->loss.nelbo);
}

/* One read-back for all pending steps: the recorded sums and verdicts, and the guard's flags. */
static int cuda_collect(cuvae_backend *base, cuvae_step_result *out, int *n) {
  cuda_backend *be = (cuda_backend *)base;
  const int k = be->n_pending;
  *n = 0;
  if (k == 0) return 0;
  CU_CHECK(cudaMemcpyAsync(be->ring_host, be->ring, (size_t)k * CUVAE_STEP_RECORD * sizeof(float),
                           cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaMemcpyAsync(be->flags_host, be->flags, 2 * sizeof(int64_t), cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  CU_CHECK(cudaMemsetAsync(be->flags, 0, 2 * sizeof(int64_t), be->stream));  /* un-halt, empty the ring */
  be->n_pending = 0;
  const int64_t halted_at = be->flags_host[0], recorded = be->flags_host[1];
  for (int i = 0; i < k; i++) {
    const float *r = be->ring_host + CUVAE_STEP_RECORD * i;
    cuvae_objective_spec spec;
    cuvae_objective_for_step(be->cfg, be->pending_step[i], &spec);  /* the step's beta, for the reported objective */
    const int Bt = base->dp ? be->pending_B[i] * base->dp->size : be->pending_B[i];  /* the sums are over Bt rows */
    cuda_loss_from_sums(&spec, r, Bt, base->dp ? base->dp->size : 1, &out[i].loss);
    out[i].grad_norm = sqrt((double)r[2]);
    memcpy(&out[i].lr, be->rows_host + (size_t)i * (be->max_batch + 1), sizeof out[i].lr);  /* its step_in slot */
    out[i].skipped = r[CUVAE_STEP_SUMS] == (float)CUVAE_STEP_SKIP || r[CUVAE_STEP_SUMS] == (float)CUVAE_STEP_SKIP_LIMIT;
  }
  *n = k;
  if (halted_at) {
    be->step_mirror = -1;  /* the device counter stopped at the bad step */
    return halted_message(be, out, k, halted_at, recorded);
  }
  if (recorded != k)
    return cuvae_error("internal: %d steps pending but %lld recorded on the device", k, (long long)recorded);
  return 0;
}

static int cuda_evaluate(cuvae_backend *base, const cuvae_dataset *ds, int batch, cuvae_loss *out) {
  cuda_backend *be = (cuda_backend *)base;
  const cuvae_model *m = be->model;
  if (batch > be->max_batch) batch = be->max_batch;
  if (ds->dim != m->input_dim)
    return cuvae_error("evaluation data has %zu features, the model %zu", ds->dim, m->input_dim);
  if (be->n_pending) return cuvae_error("evaluate: %d training steps are pending; collect them first", be->n_pending);
  /* The set uploaded at creation is read in place; any other set is copied up batch by batch. */
  const int resident = ds == be->eval_ds && ds->n == be->n_eval;
  if (cuvae_backend_check_labels(m, ds->labels, ds->n, "evaluate")) return -1;
  cuvae_objective_spec spec;
  cuvae_objective_for_eval(be->cfg, &spec);
  cuvae_eval_pass pass;
  cuvae_eval_batch b;
  if (cuvae_eval_pass_begin(&pass, ds->n, batch, m->latent, be->base.dp)) return -1;
  for (int64_t k = 0; cuvae_eval_pass_batch(&pass, k, &b); k++) {
    if (b.B == 0) continue;  /* another rank's */
    const float *x = be->eval_x + b.start * ds->dim;
    if (!resident) {
      CU_CHECK(cudaMemcpyAsync(be->x, ds->x + b.start * ds->dim, (size_t)b.B * ds->dim * sizeof(float),
                               cudaMemcpyHostToDevice, be->stream));
      x = be->x;
    }
    const int32_t *labels = be->labels;
    if (m->cond && resident) labels = be->eval_labels + b.start;
    else if (cuda_labels_upload(be, m->cond ? ds->labels + b.start : NULL, (size_t)b.B)) return -1;
    if (spec.objective != CUVAE_OBJ_AE && cuda_noise_draw(be, &be->eval_noise, b.noise_offset, (size_t)b.B * m->latent))
      return -1;
    if (cuda_vae_forward(be, x, x, labels, b.B, b.B, &spec, 0)) return -1;
    CU_CHECK(cudaMemcpyAsync(be->ring_host, be->sums, CUVAE_STEP_SUMS * sizeof(float), cudaMemcpyDeviceToHost,
                             be->stream));
    CU_CHECK(cudaStreamSynchronize(be->stream));  /* also keeps the pageable ds->x alive for the copy above */
    cuvae_loss l;  /* as the CPU: the batch's means */
    cuda_loss_from_sums(&spec, be->ring_host, b.B, 1, &l);
    cuvae_eval_pass_add(&pass, &b, &l);
  }
  return cuvae_eval_pass_end(&pass, out);
}

/* Sharded (ZeRO-1), Adam's m and v are gathered from every rank's shard into rank 0's adam_m / adam_v (a collective:
 * every rank calls it; the other ranks' are left as they are). */
static int cuda_get_state(cuvae_backend *base, float *params, float *adam_m, float *adam_v) {
  cuda_backend *be = (cuda_backend *)base;
  const size_t bytes = be->model->n_params * sizeof(float);
  CU_CHECK(cudaStreamSynchronize(be->stream));
  if (params) CU_CHECK(cudaMemcpyAsync(params, be->params, bytes, cudaMemcpyDeviceToHost, be->stream));
  if (cuda_dp_sharded(be)) {
    CU_CHECK(cudaStreamSynchronize(be->stream));
    return adam_m || adam_v ? cuda_dp_state_gather(be, adam_m, adam_v) : 0;
  }
  if (adam_m) CU_CHECK(cudaMemcpyAsync(adam_m, be->adam_m, bytes, cudaMemcpyDeviceToHost, be->stream));
  if (adam_v) CU_CHECK(cudaMemcpyAsync(adam_v, be->adam_v, bytes, cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  return 0;
}

static int cuda_get_grad(cuvae_backend *base, float *grad) {
  cuda_backend *be = (cuda_backend *)base;
  CU_CHECK(cudaMemcpyAsync(grad, be->grad, be->model->n_params * sizeof(float), cudaMemcpyDeviceToHost,
                           be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  return 0;
}

/* Sharded (ZeRO-1), the rank keeps its shard of adam_m and adam_v. */
static int cuda_set_state(cuvae_backend *base, const float *params, const float *adam_m, const float *adam_v) {
  cuda_backend *be = (cuda_backend *)base;
  const size_t bytes = be->model->n_params * sizeof(float);
  const size_t lo = cuda_dp_sharded(be) ? base->dp->shard_begin : 0;
  const size_t k_bytes = cuda_dp_sharded(be) ? (base->dp->shard_end - lo) * sizeof(float) : bytes;
  if (be->n_pending) return cuvae_error("set_state: %d training steps are pending; collect them first", be->n_pending);
  CU_CHECK(cudaStreamSynchronize(be->stream));
  if (params) CU_CHECK(cudaMemcpyAsync(be->params, params, bytes, cudaMemcpyHostToDevice, be->stream));
  if (adam_m) CU_CHECK(cudaMemcpyAsync(be->adam_m, adam_m + lo, k_bytes, cudaMemcpyHostToDevice, be->stream));
  if (adam_v) CU_CHECK(cudaMemcpyAsync(be->adam_v, adam_v + lo, k_bytes, cudaMemcpyHostToDevice, be->stream));
  if (params && be->w16)  /* the GEMMs' bf16 weights follow the parameters (docs/MATH.md (8.2)) */
    CU_CHECK(to_bf16_cuda(be->params, be->w16, be->model->n_params, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));  /* the host arrays may be freed once we return */
  be->step_mirror = -1;  /* the next train_step sets the device step counter from its step argument */
  return 0;
}

/* The EMA, the skip state (guard words 0..3) and its window; every rank holds all of them. */
static int cuda_get_extra_state(cuvae_backend *base, cuvae_extra_state *st) {
  cuda_backend *be = (cuda_backend *)base;
  int64_t words[CUVAE_SKIP_STATE_WORDS];
  CU_CHECK(cudaStreamSynchronize(be->stream));
  if (st->ema && be->ema)
    CU_CHECK(cudaMemcpyAsync(st->ema, be->ema, be->model->n_params * sizeof(float), cudaMemcpyDeviceToHost, be->stream));
  if (st->window && be->window)
    CU_CHECK(cudaMemcpyAsync(st->window, be->window, (size_t)be->skip_rule.window * sizeof(float),
                             cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaMemcpyAsync(words, be->guard, sizeof words, cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  st->skip = (cuvae_skip_state){words[0], words[1], words[2], words[3]};
  return 0;
}

static int cuda_set_extra_state(cuvae_backend *base, const cuvae_extra_state *st) {
  cuda_backend *be = (cuda_backend *)base;
  if (be->n_pending)
    return cuvae_error("set_extra_state: %d training steps are pending; collect them first", be->n_pending);
  const int64_t words[CUVAE_GUARD_WORDS] = {st->skip.skipped, st->skip.in_a_row, st->skip.count, st->skip.pos, 0};
  CU_CHECK(cudaStreamSynchronize(be->stream));
  if (st->ema && be->ema)
    CU_CHECK(cudaMemcpyAsync(be->ema, st->ema, be->model->n_params * sizeof(float), cudaMemcpyHostToDevice, be->stream));
  if (st->window && be->window)
    CU_CHECK(cudaMemcpyAsync(be->window, st->window, (size_t)be->skip_rule.window * sizeof(float),
                             cudaMemcpyHostToDevice, be->stream));
  CU_CHECK(cudaMemcpyAsync(be->guard, words, sizeof words, cudaMemcpyHostToDevice, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));  /* the host arrays may be freed once we return */
  return 0;
}

static const cuvae_backend k_cuda_ops = {
    .name = "cuda", .train_step = cuda_train_step, .collect = cuda_collect, .evaluate = cuda_evaluate,
    .get_state = cuda_get_state, .set_state = cuda_set_state, .get_extra_state = cuda_get_extra_state,
    .set_extra_state = cuda_set_extra_state, .get_grad = cuda_get_grad, .encode = cuda_encode,
    .decode = cuda_decode, .iwae = cuda_iwae, .destroy = cuda_destroy,
    .join_data_parallel = cuda_join_data_parallel, .time_step_gemms = cuda_time_step_gemms};

cuvae_backend *cuvae_backend_cuda_create(const cuvae_model *m, const cuvae_config *cfg, const cuvae_dataset *train,
                                         const cuvae_dataset *eval) {
  int max_batch;
  cuda_backend *be = cuvae_backend_alloc(sizeof *be, &k_cuda_ops, cfg, &max_batch);
  if (!be) return NULL;
  be->model = m;
  be->cfg = cfg;
  cuvae_objective_for_step(cfg, 0, &be->train_spec);
  be->max_batch = max_batch;
  if (cuda_setup(be, train, eval) ||
      cuda_choose_epilogues(be, cfg->batch_size < max_batch ? cfg->batch_size : max_batch)) {
    cuda_destroy(&be->base);
    return NULL;
  }
  return &be->base;
}
