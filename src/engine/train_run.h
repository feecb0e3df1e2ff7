/* One training run's state, shared by the training loop (src/engine/train.c: setting up, the steps, checkpoints and
 * resume) and its epoch ends (src/engine/train_epoch.c: evaluations, the metrics row, best.cuvae, the pictures).
 * Private to src/engine. */
#ifndef CUVAE_TRAIN_RUN_H
#define CUVAE_TRAIN_RUN_H
#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "cuvae/checkpoint.h"
#include "cuvae/data.h"
#include "cuvae/model.h"
#include "cuvae/train.h"
#include "progress.h"
#include "run_log.h"

/* All the state of one run, so the loop below reads as the algorithm. */
typedef struct run {
  const cuvae_config *cfg;
  cuvae_dataset train, test, val;     /* val: [data] validation, held out of the training set (empty when none) */
  cuvae_model model;
  cuvae_backend *be;
  cuvae_data_parallel *dp;           /* with several ranks: the gradient all-reduce the backend calls; else NULL */
  int rank, ranks, local_batch;      /* this process among `ranks`; its rows of each batch (batch_size / ranks) */
  char *config_text;
  float *params, *adam_m, *adam_v;   /* host copies for checkpoints */
  float *ema, *window;               /* [train] ema: the EMA's; skip_zscore: the skip window's (else NULL) */
  cuvae_skip_state skip;             /* the skip rule's state (docs/MATH.md (7.4)) */
  cuvae_step_result *results;        /* [max_pending] collected step results */
  uint32_t *perm;
  char ckpt_path[CUVAE_PATH_MAX + 32];
  cuvae_run_log metrics, steps;
  uint64_t metrics_done;             /* bytes of metrics.jsonl up to the row of the last completed epoch */
  int64_t steps_per_epoch, total;    /* the last partial batch is dropped; total is capped by max_steps */
  int fresh;                         /* starts at step 0: a new run, or one stopped before its first checkpoint */
  cuvae_train_progress resumed;      /* the checkpoint's record of the epoch in progress */
  uint32_t resumed_version;          /* the checkpoint's format version (1 has no such record) */
  /* The epoch in progress: sums of the collected steps' batch means, and its time (carried across a resume). */
  cuvae_loss acc;                    /* over the applied steps (acc_steps - acc_skipped) */
  int64_t acc_steps, acc_skipped;
  double sum_norm, max_norm;         /* the applied steps' gradient norms: sum; every finite one: largest */
  float lr;                          /* the rate of the last collected step */
  double best_val;                   /* [data] validation: the best epoch's NELBO, its epoch (0: none yet) and the */
  int64_t best_epoch, bad_epochs;    /* epochs since then without improvement */
  char best_path[CUVAE_PATH_MAX + 32];
  double seconds_before, t_epoch;    /* the epoch's seconds before this process took it up; when it did */
  double train_seconds, t_since_collect;
  double *curve;                     /* loss.png: (epochs, train nelbo, test nelbo) per metrics row */
  size_t n_curve, cap_curve;
  int64_t curve_epoch;               /* the epoch of the last point (a later row of the same epoch replaces it) */
} run;

/* Seconds the epoch in progress has taken (those before this process took it up included). */
static inline double train_epoch_seconds(const run *r) {
  return r->seconds_before + (cuvae_now_seconds() - r->t_epoch);
}

/* src/engine/train.c. The backend's state into the host copies a checkpoint writes (every rank calls it: with
 * shard_optimizer it gathers Adam's shards to rank 0); the checkpoint of `step` from them, to the run's
 * checkpoint.cuvae or to `path` (best.cuvae). */
int train_fetch_state(run *r);
int train_save_checkpoint(run *r, int64_t step);
int train_save_checkpoint_to(run *r, const char *path, int64_t step);

/* src/engine/train_epoch.c. On resume, loss.png's points from the rows of metrics.jsonl up to `upto`; the end of an
 * epoch, or the run's last step (a collective with several ranks): the evaluations, then rank 0 writes the row, the
 * checkpoints and the pictures; sets summary->early_stopped when [train] early_stop says so. */
void train_curve_load(run *r, int64_t upto);
int train_end_epoch(run *r, int64_t step, const char *dir, cuvae_progress *prog, cuvae_train_summary *summary);

#endif
