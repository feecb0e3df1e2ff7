/* What every backend computes the same way: the loss record of a step, what a step minimises (the objective spec
 * of a config and step), the IWAE evaluation's work plan and noise offsets, and the decoder mean from its output.
 * Defined in src/backend/objective.c; the CPU twins (include/cuvae/cpu.h) and the CUDA backend both use them. */
#ifndef CUVAE_OBJECTIVE_H
#define CUVAE_OBJECTIVE_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/config.h"
#include "cuvae/model.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuvae_loss {
  double nelbo, recon, kl;  /* batch means, nats per data point: nelbo = recon + kl (objective = ae: recon is the
                               squared error, kl = 0) */
  double objective;         /* the batch mean of what the step minimises (= nelbo for the plain ELBO; with beta or
                               the IWAE bound it differs) */
} cuvae_loss;

/* What a step minimises ([train] objective, samples, kl, beta of include/cuvae/config.h), for one step. */
typedef struct cuvae_objective_spec {
  cuvae_objective objective;  /* elbo | iwae | ae */
  int samples;                /* draws of z per example: L (elbo) or K (iwae); 1 for ae */
  cuvae_kl_estimator kl;      /* elbo: analytic | sampled (iwae: always sampled; ae: none) */
  float beta;                 /* this step's KL weight (beta_schedule_cpu) */
  float free_bits;            /* free bits lambda (docs/MATH.md (3.4)): the KL term is beta sum_j max(lambda, KL_j),
                                 KL_j the batch mean of dim j's closed-form KL; 0 = off (elbo, analytic KL only) */
} cuvae_objective_spec;

/* The KL weight of step `step` under a linear warm-up over `warmup` steps (docs/MATH.md (6.2)). */
float cuvae_beta_at_step(int64_t step, float beta, int64_t warmup);
/* The spec of training step `step` (0-based) of cfg. */
void cuvae_objective_for_step(const cuvae_config *cfg, int64_t step, cuvae_objective_spec *spec);
/* The spec evaluation uses: one sample, closed-form KL, beta = 1 (the plain negative ELBO); ae: squared error. */
void cuvae_objective_for_eval(const cuvae_config *cfg, cuvae_objective_spec *spec);
/* 1 when the spec's KL term is estimated at the samples (iwae, or elbo with kl = sampled). */
int cuvae_objective_sampled(const cuvae_objective_spec *spec);
/* ---- the IWAE plan (docs/MATH.md section 5; layout and state in include/cuvae/cpu.h) ---------------------------- */

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

/* The decoder mean from its output, in place: sigmoid for Bernoulli logits (in the form that never overflows);
 * nothing for a Gaussian decoder, whose output is the mean. Both backends' decode ends here, on the host. */
void cuvae_decoder_mean_host(const cuvae_model *m, float *y, size_t count);

#ifdef __cplusplus
}
#endif
#endif
