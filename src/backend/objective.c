/* The computations both backends share (include/cuvae/objective.h): the objective spec of a step, the IWAE plan and
 * its noise offsets, the decoder mean on the host. */
#include "cuvae/objective.h"

#include <math.h>

#include "cuvae/error.h"
#include "cuvae/rng.h"

/* ---- what a step minimises ------------------------------------------------------------------------------- */

/* docs/MATH.md (6.2): beta_t = beta * min(1, t / warmup), in double, rounded once to float; warmup <= 0 means no
 * warm-up. At t >= warmup the factor is exactly 1, so beta_t = beta. */
float cuvae_beta_at_step(int64_t step, float beta, int64_t warmup) {
  if (warmup <= 0) return beta;
  double f = (double)step / (double)warmup;
  if (f > 1.0) f = 1.0;
  return (float)((double)beta * f);
}

void cuvae_objective_for_step(const cuvae_config *cfg, int64_t step, cuvae_objective_spec *spec) {
  spec->objective = cfg->objective;
  spec->samples = cfg->objective == CUVAE_OBJ_AE ? 1 : cfg->samples;
  spec->kl = cfg->kl;
  spec->beta = cuvae_beta_at_step(step, cfg->beta, cfg->beta_warmup_steps);
  spec->free_bits = cfg->free_bits;
}

void cuvae_objective_for_eval(const cuvae_config *cfg, cuvae_objective_spec *spec) {
  spec->objective = cfg->objective == CUVAE_OBJ_AE ? CUVAE_OBJ_AE : CUVAE_OBJ_ELBO;
  spec->samples = 1;
  spec->kl = CUVAE_KL_ANALYTIC;
  spec->beta = 1.0f;
  spec->free_bits = 0.0f;
}

int cuvae_objective_sampled(const cuvae_objective_spec *spec) {
  return spec->objective == CUVAE_OBJ_IWAE || (spec->objective == CUVAE_OBJ_ELBO && spec->kl == CUVAE_KL_SAMPLED);
}

/* ---- the IWAE plan --------------------------------------------------------------------------------------- */

int cuvae_iwae_plan_make(int K, int batch, int max_batch, cuvae_iwae_plan *plan) {
  if (K < 1 || batch < 1 || max_batch < 1)
    return cuvae_error("IWAE plan: K %d, batch %d and workspace %d rows must all be >= 1", K, batch, max_batch);
  /* Equal chunks: as few as the workspace allows, then spread K over them (K = 300 with 133 rows: 3 x 100, not
   * 133 + 133 + 34), so the last decoder batch is not mostly idle. */
  const int most = K < max_batch ? K : max_batch;
  const int n_min = (K + most - 1) / most;
  plan->chunk = (K + n_min - 1) / n_min;
  plan->n_chunks = (K + plan->chunk - 1) / plan->chunk;
  const int fit = max_batch / plan->chunk;  /* >= 1: chunk <= most <= max_batch */
  plan->rows = batch < fit ? batch : fit;
  return 0;
}

uint64_t cuvae_iwae_noise_offset(const cuvae_iwae_plan *plan, size_t Z, int64_t pass, int chunk) {
  const uint64_t block = cuvae_noise_stride((size_t)plan->rows * (size_t)plan->chunk * Z);
  return ((uint64_t)pass * (uint64_t)plan->n_chunks + (uint64_t)chunk) * block;
}

/* ---- decoding ------------------------------------------------------------------------------------------- */

void cuvae_decoder_mean_host(const cuvae_model *m, float *y, size_t count) {
  if (m->likelihood != CUVAE_LIK_BERNOULLI) return;
  for (size_t i = 0; i < count; i++) {
    const float l = y[i];
    if (l >= 0.0f) {
      y[i] = 1.0f / (1.0f + expf(-l));
    } else {
      const float e = expf(l);
      y[i] = e / (1.0f + e);
    }
  }
}
