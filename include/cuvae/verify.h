/* cuvae verify: the CUDA backend against the CPU reference backend on one config: the same initial parameters,
 * batches and noise on both, the first step judged against bounds derived from the roundings that differ, the
 * following steps' drift reported. */
#ifndef CUVAE_VERIFY_H
#define CUVAE_VERIFY_H
#include <stdio.h>

#include "cuvae/config.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuvae_verify_opts {
  int steps;   /* training steps on each backend (>= 1): step 0 is judged, steps 1.. are the drift */
  FILE *log;   /* the report's lines (NULL: none) */
} cuvae_verify_opts;

/* One judged comparison: the worst relative difference found and its bound (docs/ARCHITECTURE.md, "cuvae verify"). */
typedef struct cuvae_verify_check {
  double diff, bound;
  int ok;
  char where[64];  /* what was worst: the tensor of the gradient check; "" otherwise */
} cuvae_verify_check;

typedef struct cuvae_verify_result {
  cuvae_verify_check eval;   /* evaluate() on the test split at the initial parameters: |d nelbo| / |nelbo| */
  cuvae_verify_check loss;   /* step 0's batch loss: |d nelbo| / |nelbo| */
  cuvae_verify_check grad;   /* step 0's gradient, per tensor: max |d g| / max |g| beyond rtol 1e-4 |g| */
  int agree;                 /* all three ok */
  int steps;                 /* steps run on each backend */
  double drift_loss;         /* steps 1..: the largest |d nelbo| / |nelbo| of a step (0 with one step) */
  int drift_step;            /* the step it was met at */
  double drift_params;       /* after the last step: max |p_cpu - p_cuda| / lr */
  char cpu_gemm[160], cuda_gemm[160];  /* what ran each backend's GEMMs */
} cuvae_verify_result;

/* Runs opts->steps training steps of cfg (finalized) on the CPU backend and on the CUDA backend in this process, from
 * the same initial state, rows and noise, and compares them (the result above). 0 when both ran (agreeing or not:
 * see out->agree); -1 with cuvae_last_error() when either could not (no CUDA device, a config the CPU cannot run,
 * several ranks, bad data). */
int cuvae_verify(const cuvae_config *cfg, const cuvae_verify_opts *opts, cuvae_verify_result *out);

#ifdef __cplusplus
}
#endif
#endif
