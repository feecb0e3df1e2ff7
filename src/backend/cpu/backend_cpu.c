/* The CPU reference backend: parameters, gradients and Adam moments in host memory (one layout), minibatch
 * gather from the host data set, eps from the Philox host stream, loss and gradient from src/backend/cpu/vae_cpu.c. */
#define _GNU_SOURCE  /* sched_getaffinity, CPU_COUNT */
#include <cblas.h>
#include <math.h>
#include <sched.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cpu_internal.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "gemm_dnnl.h"

/* This step's data noise and eps (include/cuvae/rng.h) for rows [r0, r0 + B) of a global batch of Bt rows: dynamic
 * binarization or dequantization of the targets in x_batch (one uniform slot: binarization is Bernoulli-only,
 * dequantization Gaussian-only), corruption of the encoder's input (*x_in, else NULL), eps [L][B][Z]. */
static int draw_step_noise(cpu_backend *be, const cuvae_objective_spec *spec, int64_t step, int B, int r0, int Bt,
                           const float **x_in) {
  const cuvae_config *c = be->cfg;
  const size_t D = be->train->dim, nx = (size_t)B * D, skip_x = (size_t)r0 * D;
  const uint64_t stride_x = cuvae_noise_stride((size_t)Bt * D);
  if (c->binarize == CUVAE_BINARIZE_DYNAMIC || c->dequantize == CUVAE_DEQUANTIZE_UNIFORM) {
    if (cuvae_noise_uniform_slice(be->data_noise, 2 * (uint64_t)step * stride_x, skip_x, be->data_u, nx)) return -1;
    if (c->binarize == CUVAE_BINARIZE_DYNAMIC)
      binarize_cpu(be->x_batch, be->data_u, be->x_batch, nx);
    else
      dequantize_cpu(be->x_batch, be->data_u, be->x_batch, nx);
  }
  *x_in = NULL;
  if (c->corrupt.kind != CUVAE_CORRUPT_NONE) {
    const uint64_t offset = (2 * (uint64_t)step + 1) * stride_x;
    if (c->corrupt.kind == CUVAE_CORRUPT_GAUSSIAN) {
      if (cuvae_noise_normal_slice(be->data_noise, offset, skip_x, be->data_u, nx)) return -1;
      corrupt_gaussian_cpu(be->x_batch, be->data_u, c->corrupt.level, be->x_in, nx);
    } else {
      if (cuvae_noise_uniform_slice(be->data_noise, offset, skip_x, be->data_u, nx)) return -1;
      corrupt_mask_cpu(be->x_batch, be->data_u, c->corrupt.level, be->x_in, nx);
    }
    *x_in = be->x_in;
  }
  if (spec->objective == CUVAE_OBJ_AE) return 0;
  const size_t Z = be->model->latent, L = (size_t)spec->samples;
  const uint64_t offset = (uint64_t)step * cuvae_noise_stride(L * (size_t)Bt * Z);
  if (Bt == B) return cuvae_noise_normal(be->train_noise, offset, be->eps, L * (size_t)B * Z);
  for (size_t s = 0; s < L; s++)  /* sample s of the rank's rows: rows s Bt + r0 .. of the global [L][Bt][Z] */
    if (cuvae_noise_normal_slice(be->train_noise, offset, (s * (size_t)Bt + (size_t)r0) * Z,
                                 be->eps + s * (size_t)B * Z, (size_t)B * Z))
      return -1;
  return 0;
}

/* Checks a step's arguments: the batch fits, a result slot is free, the rows are in the training set. */
static int check_step(const cpu_backend *be, const uint32_t *rows, int B, int64_t step) {
  if (B < 1 || B > be->max_batch)
    return cuvae_error("step %lld: batch of %d rows does not fit the CPU backend (max %d)", (long long)step + 1, B,
                       be->max_batch);
  if (be->n_pending >= be->base.max_pending)
    return cuvae_error("step %lld: %d steps are pending; collect their results first", (long long)step + 1,
                       be->n_pending);
  if (!be->train) return cuvae_error("step %lld: the backend was created without a training set", (long long)step + 1);
  for (int b = 0; b < B; b++)
    if (rows[b] >= be->train->n)
      return cuvae_error("step %lld: row %u is outside the training set (%zu rows)", (long long)step + 1, rows[b],
                         be->train->n);
  return 0;
}

/* Records a step whose loss or gradient is not finite: it and the later pending steps are not applied. */
static void mark_diverged(cpu_backend *be, const cuvae_step_result *out, int64_t step) {
  be->diverged_step = step + 1;
  if (!isfinite(out->loss.objective) || !isfinite(out->loss.nelbo))
    snprintf(be->diverged_msg, sizeof be->diverged_msg,
             "step %lld: loss is not finite (objective %g, nelbo %g, recon %g, kl %g); training diverged",
             (long long)step + 1, out->loss.objective, out->loss.nelbo, out->loss.recon, out->loss.kl);
  else
    snprintf(be->diverged_msg, sizeof be->diverged_msg, "step %lld: gradient is not finite (loss %g); training diverged",
             (long long)step + 1, out->loss.objective);
}

/* Data parallel: the gradient and the loss parts summed over the ranks (each rank's are its slice's part of the
 * global batch mean, so the sums are the global batch's), and the global gradient norm. Sharded (ZeRO-1), the sums
 * are only in the rank's shard of grad: the norm adds the shards' sums of squares in rank order. */
static int sum_over_ranks(const cuvae_data_parallel *dp, float *grad, cuvae_loss *loss, double *grad_norm) {
  if (dp->grad_finish(dp->ctx, grad)) return -1;
  double v[5] = {loss->nelbo, loss->recon, loss->kl, loss->objective, 0.0};
  if (dp->sharded) {
    const double shard_norm = grad_norm_cpu(grad + dp->shard_begin, dp->shard_end - dp->shard_begin);
    v[4] = shard_norm * shard_norm;
  }
  if (dp->sum(dp->ctx, v, dp->sharded ? 5 : 4)) return -1;
  *loss = (cuvae_loss){v[0], v[1], v[2], v[3]};
  *grad_norm = dp->sharded ? sqrt(v[4]) : -1.0;
  return 0;
}

/* Adam with Adam's step t (the updates applied so far, this one included) and the step's rate lr on this rank's part
 * of the buffer (all of it unless sharded), then, sharded, every rank's updated shard to every rank (and the bf16
 * weight copy of the whole buffer); then the EMA of the weights (docs/MATH.md (7.5)). */
static int adam_step(cpu_backend *be, int64_t t, float lr, float scale) {
  const cuvae_data_parallel *dp = be->base.dp;
  const size_t n = be->model->n_params, lo = dp ? dp->shard_begin : 0, hi = dp ? dp->shard_end : n;
  const cuvae_config *c = be->cfg;
  adam_update_bf16_cpu(be->params + lo, be->grad + lo, be->adam_m, be->adam_v, hi - lo, lr, c->beta1, c->beta2,
                       c->adam_eps, t, scale, be->params16 ? be->params16 + lo : NULL);
  if (dp && dp->sharded) {
    if (dp->params_gather(dp->ctx, be->params)) return -1;
    if (be->params16) to_bf16_cpu(be->params, be->params16, n);
  }
  if (be->ema) ema_update_cpu(be->ema, be->params, n, c->ema);
  return 0;
}

/* The verdict on the step's update (docs/MATH.md (7.4)); a stopping one is recorded for collect. 1: apply it. */
static int step_verdict(cpu_backend *be, cuvae_step_result *out, int64_t step) {
  const int finite = isfinite(out->loss.objective) && isfinite(out->loss.nelbo) && isfinite(out->grad_norm);
  const int verdict = cuvae_skip_verdict(&be->skip_rule, &be->skip, be->window, finite, out->grad_norm);
  out->skipped = verdict == CUVAE_STEP_SKIP || verdict == CUVAE_STEP_SKIP_LIMIT;
  if (verdict == CUVAE_STEP_DIVERGED) mark_diverged(be, out, step);
  if (verdict == CUVAE_STEP_SKIP_LIMIT) {
    be->diverged_step = step + 1;
    cuvae_step_verdict_message(verdict, &be->skip_rule, step + 1, out->grad_norm, out->loss.objective,
                               be->diverged_msg, sizeof be->diverged_msg);
  }
  return verdict == CUVAE_STEP_APPLY;
}

/* Runs the step at once; its result waits in `pending` for collect. Data parallel: rows are this rank's slice of
 * the global batch (src/backend/data_parallel.h). */
static int cpu_train_step(cuvae_backend *base, const uint32_t *rows, int B, int64_t step) {
  cpu_backend *be = (cpu_backend *)base;
  const cuvae_model *m = be->model;
  if (check_step(be, rows, B, step)) return -1;
  cuvae_step_result *out = &be->pending[be->n_pending++];
  memset(out, 0, sizeof *out);
  if (be->diverged_step) return 0;  /* after a stopping step nothing more is applied until collect */
  const cuvae_data_parallel *dp = base->dp;
  const int Bt = dp ? B * dp->size : B, r0 = dp ? B * dp->rank : 0;
  cuvae_objective_spec spec;
  cuvae_objective_for_step(be->cfg, step, &spec);
  if (B * spec.samples > be->max_batch)
    return cuvae_error("step %lld: %d rows x %d samples do not fit the CPU backend (max %d)", (long long)step + 1, B,
                       spec.samples, be->max_batch);
  gather_rows_cpu(be->train->x, rows, be->x_batch, B, (int)be->train->dim);
  const float *x_in;
  if (draw_step_noise(be, &spec, step, B, r0, Bt, &x_in)) return -1;
  if (m->cond) gather_labels_cpu(be->train->labels, rows, be->labels, B);
  const cuvae_cpu_batch batch = {B,  be->x_batch, x_in, be->eps, m->cond ? be->labels : NULL,
                                 Bt, dp ? dp->grad_ready : NULL, dp ? dp->ctx : NULL, dp ? dp->sum : NULL};
  double norm = -1.0;
  if (cuvae_cpu_objective_grad(m, be->ws, be->params, &batch, &spec, be->grad, &out->loss) || gemm_take_failure() ||
      (dp && sum_over_ranks(dp, be->grad, &out->loss, &norm)))
    return -1;
  out->grad_norm = norm >= 0.0 ? norm : grad_norm_cpu(be->grad, m->n_params);
  out->lr = cuvae_lr_at_step(be->cfg, be->lr_horizon, step);
  if (!step_verdict(be, out, step)) return 0;
  /* Gradient-norm clipping: scale g by clip / ||g|| when ||g|| > clip. */
  float scale = 1.0f;
  if (be->cfg->clip_norm > 0.0f && out->grad_norm > be->cfg->clip_norm)
    scale = (float)(be->cfg->clip_norm / out->grad_norm);
  return adam_step(be, step + 1 - be->skip.skipped, out->lr, scale);
}

static int cpu_collect(cuvae_backend *base, cuvae_step_result *out, int *n) {
  cpu_backend *be = (cpu_backend *)base;
  const int64_t diverged = be->diverged_step;
  *n = be->n_pending;
  memcpy(out, be->pending, (size_t)be->n_pending * sizeof *out);
  be->n_pending = 0;
  be->diverged_step = 0;
  if (diverged) return cuvae_error("%s", be->diverged_msg);
  return 0;
}

static int cpu_get_grad(cuvae_backend *base, float *grad) {
  cpu_backend *be = (cpu_backend *)base;
  memcpy(grad, be->grad, be->model->n_params * sizeof(float));
  return 0;
}

static int cpu_evaluate(cuvae_backend *base, const cuvae_dataset *ds, int batch, cuvae_loss *out) {
  cpu_backend *be = (cpu_backend *)base;
  const cuvae_model *m = be->model;
  if (batch > be->max_batch) batch = be->max_batch;
  if (cuvae_backend_check_labels(m, ds->labels, ds->n, "evaluate")) return -1;
  cuvae_objective_spec spec;
  cuvae_objective_for_eval(be->cfg, &spec);
  cuvae_eval_pass pass;
  cuvae_eval_batch b;
  if (cuvae_eval_pass_begin(&pass, ds->n, batch, m->latent, be->base.dp)) return -1;
  for (int64_t k = 0; cuvae_eval_pass_batch(&pass, k, &b); k++) {
    if (b.B == 0) continue;  /* another rank's */
    if (spec.objective != CUVAE_OBJ_AE &&
        cuvae_noise_normal(be->eval_noise, b.noise_offset, be->eps, (size_t)b.B * m->latent))
      return -1;
    const cuvae_cpu_batch in = {b.B,  ds->x + b.start * ds->dim, NULL, be->eps, m->cond ? ds->labels + b.start : NULL,
                                0,    NULL, NULL, NULL};
    cuvae_loss l;
    if (cuvae_cpu_objective_grad(m, be->ws, be->params, &in, &spec, NULL, &l) || gemm_take_failure()) return -1;
    cuvae_eval_pass_add(&pass, &b, &l);
  }
  return cuvae_eval_pass_end(&pass, out);
}

/* Sharded (ZeRO-1), Adam's m and v come from every rank's shard (a collective: every rank calls it, rank 0 receives
 * them; the other ranks' adam_m / adam_v are left as they are). */
static int cpu_get_state(cuvae_backend *base, float *params, float *adam_m, float *adam_v) {
  cpu_backend *be = (cpu_backend *)base;
  const size_t bytes = be->model->n_params * sizeof(float);
  if (params) memcpy(params, be->params, bytes);
  const cuvae_data_parallel *dp = base->dp;
  if (dp && dp->sharded && (adam_m || adam_v))
    return dp->state_gather(dp->ctx, be->adam_m, be->adam_v, dp->rank == 0 ? adam_m : NULL,
                            dp->rank == 0 ? adam_v : NULL);
  if (adam_m) memcpy(adam_m, be->adam_m, bytes);
  if (adam_v) memcpy(adam_v, be->adam_v, bytes);
  return 0;
}

/* Sharded, the rank keeps its shard of adam_m and adam_v. */
static int cpu_set_state(cuvae_backend *base, const float *params, const float *adam_m, const float *adam_v) {
  cpu_backend *be = (cpu_backend *)base;
  const size_t bytes = be->model->n_params * sizeof(float);
  if (params) memcpy(be->params, params, bytes);
  if (params && be->params16) to_bf16_cpu(be->params, be->params16, be->model->n_params);
  const cuvae_data_parallel *dp = base->dp;
  const size_t lo = dp ? dp->shard_begin : 0, n = dp ? dp->shard_end - lo : be->model->n_params;
  if (adam_m) memcpy(be->adam_m, adam_m + lo, n * sizeof(float));
  if (adam_v) memcpy(be->adam_v, adam_v + lo, n * sizeof(float));
  return 0;
}

static int cpu_get_extra_state(cuvae_backend *base, cuvae_extra_state *st) {
  cpu_backend *be = (cpu_backend *)base;
  if (st->ema && be->ema) memcpy(st->ema, be->ema, be->model->n_params * sizeof(float));
  st->skip = be->skip;
  if (st->window && be->window) memcpy(st->window, be->window, (size_t)be->skip_rule.window * sizeof(float));
  return 0;
}

static int cpu_set_extra_state(cuvae_backend *base, const cuvae_extra_state *st) {
  cpu_backend *be = (cpu_backend *)base;
  if (st->ema && be->ema) memcpy(be->ema, st->ema, be->model->n_params * sizeof(float));
  be->skip = st->skip;
  if (st->window && be->window) memcpy(be->window, st->window, (size_t)be->skip_rule.window * sizeof(float));
  return 0;
}

static float *aligned_zeros(size_t n);

/* Data parallel; sharded (ZeRO-1), Adam's m and v shrink to this rank's shard (zero: before the first step), and the
 * memory plan says so. */
static int cpu_join_data_parallel(cuvae_backend *base, const cuvae_data_parallel *dp) {
  cpu_backend *be = (cpu_backend *)base;
  base->dp = dp;
  if (!dp || !dp->sharded) return 0;
  const size_t n = dp->shard_end - dp->shard_begin, all = be->model->n_params;
  free(be->adam_m);
  free(be->adam_v);
  be->adam_m = aligned_zeros(n);
  be->adam_v = aligned_zeros(n);
  if (!be->adam_m || !be->adam_v) return cuvae_error("out of memory: Adam's shard of %zu values", n);
  snprintf(base->memory_plan, sizeof base->memory_plan,
           "host memory per rank: parameters and gradient %.1f MiB, Adam m and v %.1f MiB (shard %d of %d: %zu of "
           "%zu values; shard_optimizer)",
           2.0 * (double)all * sizeof(float) / (1 << 20), 2.0 * (double)n * sizeof(float) / (1 << 20), dp->rank + 1,
           dp->size, n, all);
  return 0;
}

static void cpu_destroy(cuvae_backend *base) {
  cpu_backend *be = (cpu_backend *)base;
  if (!be) return;
  free(be->params);
  free(be->params16);
  free(be->ema);
  free(be->window);
  free(be->grad);
  free(be->adam_m);
  free(be->adam_v);
  free(be->x_batch);
  free(be->eps);
  free(be->x_in);
  free(be->data_u);
  free(be->labels);
  free(be->pending);
  cuvae_cpu_ws_destroy(be->ws);
  cuvae_noise_destroy(be->train_noise);
  cuvae_noise_destroy(be->eval_noise);
  cuvae_noise_destroy(be->data_noise);
  free(be);
}

/* The cores this process may run on: all of them, or those an MPI launcher bound its rank to ([train] threads = 0);
 * 0 when unknown. */
static int cores_allowed(void) {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
}

/* n zeroed floats at a 256-byte boundary (n is a multiple of CUVAE_TENSOR_ALIGN for the parameter buffer), so that
 * every tensor block of the layout is 256-byte aligned here as on the device. */
static float *aligned_zeros(size_t n) {
  const size_t bytes = (n * sizeof(float) + 255) / 256 * 256;
  float *p = aligned_alloc(256, bytes ? bytes : 256);
  if (p) memset(p, 0, bytes);
  return p;
}

/* [train] precision: fp32 (and tf32, which the CPU has no form of) and bf16, both on oneDNN; bf16 refused with the
 * reason on a CPU without bf16 units. Names the GEMM library in base.gemm. */
static int cpu_precision_setup(cpu_backend *be) {
  const cuvae_precision p = be->cfg->precision;
  if (p != CUVAE_PRECISION_BF16) {
    if (cuvae_cpu_fp32_gemm_describe(be->base.gemm, sizeof be->base.gemm)) return -1;
    if (p == CUVAE_PRECISION_TF32) {
      const size_t len = strlen(be->base.gemm);
      snprintf(be->base.gemm + len, sizeof be->base.gemm - len, "; precision = tf32: the CPU has no TF32 and "
                                                                  "computes fp32");
    }
    return 0;
  }
  if (cuvae_cpu_bf16_gemm_check(be->base.gemm, sizeof be->base.gemm)) return -1;
  const size_t n = be->model->n_params;
  be->params16 = aligned_alloc(256, (n * sizeof(uint16_t) + 255) / 256 * 256);
  if (!be->params16) return cuvae_error("out of memory: the bf16 weights need %zu values", n);
  to_bf16_cpu(be->params, be->params16, n);
  const size_t len = strlen(be->base.memory_plan);
  snprintf(be->base.memory_plan + len, sizeof be->base.memory_plan - len, "; bf16 weights %.1f MiB",
           (double)n * sizeof(uint16_t) / (1 << 20));
  return cuvae_cpu_ws_use_bf16(be->ws, be->model, be->params16);
}

/* The optimizer's schedule and skip rule from the config; the EMA starts at the initial weights. */
static int cpu_optimizer_setup(cpu_backend *be, const cuvae_dataset *train) {
  const size_t n = be->model->n_params;
  be->lr_horizon = cuvae_lr_horizon(be->cfg, train ? train->n : 0);
  be->skip_rule = cuvae_skip_rule_from(be->cfg);
  if (be->skip_rule.window > 0 && !(be->window = calloc((size_t)be->skip_rule.window, sizeof(float))))
    return cuvae_error("out of memory: the skip window");
  if (be->cfg->ema <= 0.0f) return 0;
  if (!(be->ema = aligned_zeros(n))) return cuvae_error("out of memory: the EMA of %zu weights", n);
  memcpy(be->ema, be->params, n * sizeof(float));
  const size_t len = strlen(be->base.memory_plan);
  snprintf(be->base.memory_plan + len, sizeof be->base.memory_plan - len, "; EMA of the weights %.1f MiB",
           (double)n * sizeof(float) / (1 << 20));
  return 0;
}

static const cuvae_backend k_cpu_ops = {
    .name = "cpu", .train_step = cpu_train_step, .collect = cpu_collect, .evaluate = cpu_evaluate,
    .get_state = cpu_get_state, .set_state = cpu_set_state, .get_extra_state = cpu_get_extra_state,
    .set_extra_state = cpu_set_extra_state, .get_grad = cpu_get_grad, .encode = cpu_encode, .decode = cpu_decode,
    .iwae = cpu_iwae, .destroy = cpu_destroy, .join_data_parallel = cpu_join_data_parallel};

cuvae_backend *cuvae_backend_cpu_create(const cuvae_model *m, const cuvae_config *cfg, const cuvae_dataset *train,
                                        const cuvae_dataset *eval) {
  int max_batch;
  cpu_backend *be = cuvae_backend_alloc(sizeof *be, &k_cpu_ops, cfg, &max_batch);
  if (!be) return NULL;
  be->model = m;
  be->cfg = cfg;
  be->train = train;
  be->max_batch = max_batch;
  const size_t n = m->n_params, B = (size_t)be->max_batch;
  /* Host memory; the data sets are the caller's, read in place. */
  snprintf(be->base.memory_plan, sizeof be->base.memory_plan,
           "host memory: parameters, gradient, Adam m and v %.1f MiB (data read in place)",
           4.0 * (double)n * sizeof(float) / (1 << 20));
  (void)eval;
  be->pending = calloc((size_t)be->base.max_pending, sizeof *be->pending);
  be->params = aligned_zeros(n);
  be->grad = aligned_zeros(n);
  be->adam_m = aligned_zeros(n);
  be->adam_v = aligned_zeros(n);
  be->x_batch = malloc(B * m->input_dim * sizeof(float));
  be->eps = malloc((size_t)cuvae_noise_stride(B * m->latent) * sizeof(float));
  const size_t nx = B * m->input_dim;
  be->x_in = malloc(nx * sizeof(float));
  be->data_u = malloc((size_t)cuvae_noise_stride(nx) * sizeof(float));
  be->labels = malloc(B * sizeof(int32_t));
  if (!be->pending || !be->params || !be->grad || !be->adam_m || !be->adam_v || !be->x_batch || !be->eps ||
      !be->x_in || !be->data_u || !be->labels) {
    cpu_destroy(&be->base);
    cuvae_error("out of memory: the model needs %zu parameters x 4 buffers", n);
    return NULL;
  }
  const int threads = cfg->threads > 0 ? cfg->threads : cores_allowed();
  if (threads > 0) {
    openblas_set_num_threads(threads);
#ifdef _OPENMP
    omp_set_num_threads(threads);  /* oneDNN's GEMMs, the fused loops of src/backend/cpu/, OpenBLAS's OpenMP build */
#endif
  }
  if (train && cuvae_backend_check_labels(m, train->labels, train->n, "training set")) {
    cpu_destroy(&be->base);
    return NULL;
  }
  be->ws = cuvae_cpu_ws_create(m, be->max_batch);
  be->train_noise = be->ws ? cuvae_noise_create(cfg->seed) : NULL;
  be->eval_noise = be->train_noise ? cuvae_noise_create(cfg->seed ^ CUVAE_SEED_EVAL) : NULL;
  be->data_noise = be->eval_noise ? cuvae_noise_create(cfg->seed ^ CUVAE_SEED_DATA) : NULL;
  if (!be->data_noise || cuvae_model_init(m, be->params, cfg->seed) || cpu_precision_setup(be) ||
      cpu_optimizer_setup(be, train)) {
    cpu_destroy(&be->base);
    return NULL;
  }
  return &be->base;
}
