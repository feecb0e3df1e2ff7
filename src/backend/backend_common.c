/* What every backend shares: the pending-step bound, the buffer rows, the first allocation of a backend object and
 * the synchronous one-step helper (src/backend/backend.h). Kept apart from the device selection in backend.c, so
 * linking these never pulls in the CUDA device query. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"

int cuvae_backend_max_pending(const cuvae_config *cfg) {
  /* The trainer collects once per log interval; a bound keeps the result buffers small for huge intervals. */
  return cfg->log_every < 1 ? 1 : cfg->log_every > 4096 ? 4096 : cfg->log_every;
}

int cuvae_backend_max_batch(const cuvae_config *cfg) {
  /* Rows of the buffers: a training batch with all its samples, or an evaluation batch. */
  const int64_t samples = cfg->objective == CUVAE_OBJ_AE ? 1 : cfg->samples;
  const int64_t train_rows = (int64_t)cfg->batch_size * samples;
  if (train_rows > (1 << 30))
    return cuvae_error("[train] batch_size %d x samples %lld is too large", cfg->batch_size, (long long)samples);
  const int64_t rows = train_rows > cfg->eval_batch_size ? train_rows : cfg->eval_batch_size;
  if (rows < 1) return cuvae_error("batch size %lld must be >= 1", (long long)rows);
  return (int)rows;
}

void *cuvae_backend_alloc(size_t size, const cuvae_backend *ops, const cuvae_config *cfg, int *max_batch) {
  *max_batch = cuvae_backend_max_batch(cfg);
  if (*max_batch < 0) return NULL;
  cuvae_backend *be = calloc(1, size);
  if (!be) {
    cuvae_error("out of memory creating the %s backend", ops->name);
    return NULL;
  }
  *be = *ops;
  be->max_pending = cuvae_backend_max_pending(cfg);
  return be;
}

int cuvae_backend_step(cuvae_backend *be, const uint32_t *rows, int B, int64_t step, cuvae_step_result *out) {
  if (be->train_step(be, rows, B, step)) return -1;
  cuvae_step_result res[1];
  int n = 0;
  if (be->collect(be, res, &n)) return -1;
  if (n != 1) return cuvae_error("step %lld: collected %d results, expected 1", (long long)step + 1, n);
  *out = res[0];
  return 0;
}

int cuvae_backend_check_labels(const cuvae_model *m, const int32_t *labels, size_t n, const char *what) {
  if (!m->cond) return 0;
  if (!labels) return cuvae_error("%s: the model is conditional ([model] conditional = true) and needs labels", what);
  for (size_t i = 0; i < n; i++)
    if (labels[i] < 0 || (size_t)labels[i] >= m->cond)
      return cuvae_error("%s: label %d of row %zu is outside 0..%zu ([model] classes = %zu)", what, (int)labels[i], i,
                         m->cond - 1, m->cond);
  return 0;
}

int cuvae_eval_pass_begin(cuvae_eval_pass *p, size_t n, int batch, size_t latent, const cuvae_data_parallel *dp) {
  if (batch < 1) return cuvae_error("evaluation batch %d must be >= 1", batch);
  if (n == 0) return cuvae_error("evaluation set is empty");
  p->n = n;
  p->batch = batch;
  p->latent = latent;
  p->recon = p->kl = 0.0;
  p->dp = dp;
  return 0;
}

int cuvae_eval_pass_batch(const cuvae_eval_pass *p, int64_t k, cuvae_eval_batch *b) {
  const size_t start = (size_t)k * (size_t)p->batch;
  if (start >= p->n) return 0;
  b->start = start;
  b->B = (int)(p->n - start < (size_t)p->batch ? p->n - start : (size_t)p->batch);
  b->noise_offset = (uint64_t)k * cuvae_noise_stride((size_t)p->batch * p->latent);
  if (!cuvae_dp_owns(p->dp, k)) b->B = 0;
  return 1;
}

int cuvae_dp_owns(const cuvae_data_parallel *dp, int64_t k) { return !dp || k % dp->size == dp->rank; }

/* The passes of [0, k) that are this rank's. */
static int64_t owned_passes(const cuvae_data_parallel *dp, int64_t k) {
  if (!dp) return k;
  return k > dp->rank ? (k - dp->rank + dp->size - 1) / dp->size : 0;
}

void cuvae_backend_pass_done(const cuvae_backend *be, int64_t pass, size_t n, int rows) {
  if (!be->progress) return;
  const int64_t mine = owned_passes(be->dp, (int64_t)((n + (size_t)rows - 1) / (size_t)rows));
  if (mine > 0) be->progress(be->progress_ctx, (double)owned_passes(be->dp, pass + 1) / (double)mine);
}

int cuvae_iwae_gather(const cuvae_data_parallel *dp, double *log_px, size_t n) {
  if (!dp) return 0;
  if (n > INT_MAX) return cuvae_error("IWAE on %d ranks: %zu rows are more than one sum can gather", dp->size, n);
  return dp->sum(dp->ctx, log_px, (int)n);
}

void cuvae_eval_pass_add(cuvae_eval_pass *p, const cuvae_eval_batch *b, const cuvae_loss *batch_mean) {
  p->recon += batch_mean->recon * b->B;
  p->kl += batch_mean->kl * b->B;
}

int cuvae_eval_pass_end(cuvae_eval_pass *p, cuvae_loss *out) {
  double sums[2] = {p->recon, p->kl};
  if (p->dp && p->dp->sum(p->dp->ctx, sums, 2)) return -1;
  p->recon = sums[0];
  p->kl = sums[1];
  out->recon = p->recon / (double)p->n;
  out->kl = p->kl / (double)p->n;
  out->nelbo = out->recon + out->kl;
  out->objective = out->nelbo;
  return 0;
}

int cuvae_backend_join_data_parallel(cuvae_backend *be, const cuvae_data_parallel *dp) {
  if (dp && dp->sharded && strcmp(be->name, "cpu") != 0 && strcmp(be->name, "cuda") != 0)
    return cuvae_error("[train] shard_optimizer = true: the %s backend does not shard Adam's state yet; use --device "
                       "cpu, or shard_optimizer = false", be->name);
  if (be->join_data_parallel) return be->join_data_parallel(be, dp);  /* the CUDA backend: its communicator */
  if (strcmp(be->name, "cpu") != 0)
    return cuvae_error("the %s backend does not train on several ranks yet (%d ranks were started); use --device cpu, "
                       "or run one process", be->name, dp ? dp->size : 0);
  be->dp = dp;
  return 0;
}
