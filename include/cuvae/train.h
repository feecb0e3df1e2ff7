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
  int64_t steps_per_epoch;
  int epochs_completed;     /* step / steps_per_epoch */
  int evaluated;            /* `test` holds an evaluation of this call (an epoch end or the last step was reached) */
  cuvae_loss test;          /* last test-set evaluation */
  double seconds;
  int interrupted;          /* stopped by cuvae_train_request_stop (e.g. Ctrl-C) before the last step; checkpoint
                               saved at `step`, which may be mid-epoch */
  int early_stopped;        /* stopped by [train] early_stop: the validation NELBO had not improved for that many
                               epochs (the best epoch's checkpoint is best.cuvae) */
  int failure_agreed;       /* several ranks, after a failure: 0 = only this rank met it and the others may wait:
                               stop the job (cuvae_dist_abort); 1 = every rank returns it, and this rank's message
                               is worth printing unless it is CUVAE_DIST_OTHER_RANK_FAILED; 2 = every rank met the
                               same failure (a loss that is not finite: the loss is global), rank 0 tells it */
} cuvae_train_summary;

/* Trains cfg (finalized) and returns 0, or -1 with cuvae_last_error() set. On divergence (non-finite loss)
 * it stops with a message naming the step; the last checkpoint written stays intact.
 * In an MPI job of N ranks (include/cuvae/dist.h; every rank calls this with the same config and options), the
 * global batch of batch_size rows is split into N slices, one per rank, and the gradient summed over the ranks, so
 * the run computes what one process computes on the same global batch up to the order of that sum
 * (docs/DISTRIBUTED.md). Rank 0 alone writes the run directory and the log. */
int cuvae_train(const cuvae_config *cfg, const cuvae_train_opts *opts, cuvae_train_summary *summary);
/* Async-signal-safe: asks a running cuvae_train to finish the step in progress, save a checkpoint (mid-epoch: with
 * the epoch's running sums, no metrics row) and return with summary->interrupted set. */
void cuvae_train_request_stop(void);

/* Evaluates a checkpoint on its configured test split (negative ELBO, recon, KL per data point). */
int cuvae_eval_checkpoint(const char *checkpoint_path, const char *device, cuvae_loss *out, int64_t *step);

/* Options of cuvae_eval; all-zero means: auto device, test split, no IWAE, the config's eval_batch_size. */
typedef struct cuvae_eval_opts {
  const char *device;         /* "auto" (also NULL) | "cpu" | "cuda" */
  const char *split;          /* "test" (also NULL) | "train": that split of the checkpoint's config */
  int iwae_k;                 /* > 0: also the importance-weighted log p(x) estimate with this many samples */
  int batch;                  /* data rows per batch (ELBO) and per IWAE pass; 0: the config's eval_batch_size */
  const char *precision;      /* "fp32" | "tf32" | "bf16": the GEMMs' precision; NULL: the checkpoint config's */
} cuvae_eval_opts;

typedef struct cuvae_eval_result {
  int64_t step;               /* the checkpoint's optimizer steps */
  cuvae_objective objective;  /* the checkpoint's [train] objective: for ae, elbo.recon is the squared error */
  int dequantized;            /* [data] dequantize = uniform: elbo and iwae_nll bound the 8-bit data's -log P(k) */
  size_t n, input_dim, latent;  /* rows of the split, D, Z */
  cuvae_loss elbo;            /* negative ELBO, recon, KL: means per data point, one noise sample per point */
  int iwae_k;                 /* samples per point of iwae_nll; 0 when not computed */
  double iwae_nll;            /* mean over the split of -log p(x), log p(x) ~= logsumexp_k log w_k - log K (nats) */
  int active_units;           /* latent dims j with Var over the split of mu_j(x) > 0.01 */
  double *kl_per_dim;         /* [latent]: mean over the split of 0.5 (mu_j^2 + exp(lv_j) - 1 - lv_j) (nats) */
  int failure_agreed;         /* on failure under mpirun: 1 when every rank failed at the same point (none waits) */
} cuvae_eval_result;

/* Evaluates a checkpoint on a split of its config: the ELBO on the backend (evaluate), the IWAE estimate when
 * asked (the backend's iwae), active units and the KL per latent dim (the backend's encode). Fails with one message, and
 * when an IWAE estimate is not finite. out->kl_per_dim is allocated: cuvae_eval_result_free. Under mpirun every rank
 * calls it: the passes are shared over the ranks (each on its own GPU) and every rank gets the whole result. */
int cuvae_eval(const char *checkpoint_path, const cuvae_eval_opts *opts, cuvae_eval_result *out);
void cuvae_eval_result_free(cuvae_eval_result *r);

#ifdef __cplusplus
}
#endif
#endif
