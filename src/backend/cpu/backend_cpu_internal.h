/* The CPU backend's state, shared by its files: src/backend/cpu/backend_cpu.c (training, evaluation, state),
 * src/backend/cpu/backend_cpu_codec.c (encode / decode), src/backend/cpu/backend_cpu_iwae.c (importance-weighted log-likelihood).
 * Private to src/. */
#ifndef CUVAE_BACKEND_CPU_INTERNAL_H
#define CUVAE_BACKEND_CPU_INTERNAL_H
#include <stdint.h>

#include "backend.h"
#include "cuvae/cpu.h"
#include "cuvae/rng.h"

typedef struct cpu_backend {
  cuvae_backend base;
  const cuvae_model *model;
  const cuvae_config *cfg;
  const cuvae_dataset *train;
  float *params, *grad, *adam_m, *adam_v;
  uint16_t *params16;          /* bf16 precision: bf16(params), the GEMMs' weights (docs/MATH.md (8.2)); else NULL */
  float *x_batch, *eps;        /* [max_batch, D], [max_batch * samples, Z] */
  float *x_in, *data_u;        /* [max_batch, D]: the corrupted encoder input; the step's data noise */
  int32_t *labels;             /* [max_batch]: the step's labels (conditional model) */
  int max_batch;
  cuvae_cpu_ws *ws;
  cuvae_noise *train_noise, *eval_noise, *data_noise;
  cuvae_step_result *pending;  /* results of the steps run since the last collect [max_pending] */
  int n_pending;
  float *ema;                  /* [train] ema > 0: the moving average of the weights (n_params); else NULL */
  cuvae_skip_rule skip_rule;   /* [train] skip_*: when an update is skipped (docs/MATH.md (7.4)) */
  cuvae_skip_state skip;       /* its state, and the norms of its window [skip_rule.window] */
  float *window;
  int64_t lr_horizon;          /* the step the cosine schedule reaches lr_min (cuvae_lr_horizon) */
  int64_t diverged_step;       /* 1-based step that stopped training (later steps then do nothing); 0 = none */
  char diverged_msg[256];
} cpu_backend;

/* The vtable entries of src/backend/backend.h implemented outside backend_cpu.c. */
int cpu_encode(cuvae_backend *be, const float *x, const int32_t *labels, size_t n, float *mulv);
int cpu_decode(cuvae_backend *be, const float *z, const int32_t *labels, size_t n, float *mean);
int cpu_iwae(cuvae_backend *be, const cuvae_dataset *ds, int K, int batch, double *log_px);

#endif
