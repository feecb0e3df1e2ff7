/* The training loop: minibatches, epoch shuffle, logging, evaluation, run directory, checkpoints, resume. */
#ifndef CUVAE_TRAIN_H
#define CUVAE_TRAIN_H
#include <stdint.h>
#include <stdio.h>

#include "cuvae/config.h"
#include "cuvae/cpu.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CUVAE_PROGRESS_AUTO = -1, CUVAE_PROGRESS_LINES = 0, CUVAE_PROGRESS_BAR = 1 } cuvae_progress_mode;

typedef struct cuvae_train_opts {
  const char *out_dir;      /* run directory (created); must not already hold a run unless resuming */
  int resume;               /* continue the run in out_dir from its checkpoint.cuvae */
  const char *device;       /* "auto" | "cpu" | "cuda" */
  cuvae_progress_mode progress;
  FILE *log;                /* progress and log lines (stderr when NULL) */
} cuvae_train_opts;

typedef struct cuvae_train_summary {
  int64_t step;             /* optimizer steps completed */
  int epochs_completed;
  cuvae_loss test;          /* last test-set evaluation */
  double seconds;
  int interrupted;          /* stopped by cuvae_train_request_stop (e.g. Ctrl-C); checkpoint saved */
} cuvae_train_summary;

/* Trains cfg (finalized) and returns 0, or -1 with cuvae_last_error() set. On divergence (non-finite loss)
 * it stops with a message naming the step; the last checkpoint written stays intact. */
int cuvae_train(const cuvae_config *cfg, const cuvae_train_opts *opts, cuvae_train_summary *summary);
/* Async-signal-safe: asks a running cuvae_train to save a checkpoint and return at the next step. */
void cuvae_train_request_stop(void);

/* Evaluates a checkpoint on its configured test split (negative ELBO, recon, KL per data point). */
int cuvae_eval_checkpoint(const char *checkpoint_path, const char *device, cuvae_loss *out, int64_t *step);

#ifdef __cplusplus
}
#endif
#endif
