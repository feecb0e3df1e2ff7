/* Checkpoints: one binary file holding everything needed to evaluate a model or to resume its training
 * bit for bit. Format (little-endian; full description in docs/CHECKPOINT.md):
 *   magic "CUVAECK\0" | u32 format version | u32 header bytes | header | payload | u32 CRC32 of all before it
 * Written atomically: to PATH.tmp, fsync, rename over PATH (then fsync of the directory). */
#ifndef CUVAE_CHECKPOINT_H
#define CUVAE_CHECKPOINT_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/model.h"
#ifdef __cplusplus
extern "C" {
#endif

#define CUVAE_CHECKPOINT_VERSION 3u

/* Where training stood inside the epoch in progress when the checkpoint was written (format version 2), so that a
 * resumed run writes the same metrics.jsonl row for that epoch as an uninterrupted run, and can cut metrics.jsonl
 * and steps.jsonl back to what they held at this step. The sums and times are zero at an epoch boundary; everything
 * is zero in checkpoints not written by training (import, ppca) and in version-1 files. */
typedef struct cuvae_train_progress {
  uint64_t epoch_steps;      /* steps of the epoch in progress whose losses are summed below (<= step) */
  double sum_nelbo, sum_recon, sum_kl, sum_objective;  /* sums over those steps of the batch means */
  double epoch_seconds;      /* wall-clock seconds the epoch has taken so far (its row's `seconds`) */
  double train_seconds;      /* of which in training steps (its row's `samples_per_s`) */
  uint64_t metrics_bytes;    /* length of metrics.jsonl holding exactly the rows of the epochs completed by `step` */
  uint64_t steps_bytes;      /* length of steps.jsonl holding exactly the rows of the steps up to `step` */
  /* format version 3 (zero in older files): */
  uint64_t epoch_skipped;    /* of the epoch_steps, those whose update was skipped */
  double sum_grad_norm;      /* sum over the epoch_steps of the gradient norm; and its largest value */
  double max_grad_norm;
  double best_val_nelbo;     /* the best validation NELBO at an epoch end so far (0 when none yet: best_epoch 0) */
  int64_t best_epoch;        /* the epoch it was reached at (best.cuvae); 0 = none */
  int64_t bad_epochs;        /* epochs since then without improvement (early stopping) */
} cuvae_train_progress;

/* The optimizer's state beyond Adam's moments (format version 3; zero / NULL in older files): the skip rule's
 * state (include/cuvae/optimizer.h) and its window of gradient norms. */
typedef struct cuvae_skip_record {
  int64_t skipped, in_a_row, count, pos;
  uint32_t window_len;       /* floats in window (the config's skip_window when skip_zscore > 0, else 0) */
  float *window;
} cuvae_skip_record;

typedef struct cuvae_checkpoint {
  char *config_ini;        /* the effective config as INI text (cuvae_config_to_ini) */
  uint64_t input_dim;      /* D of the data the model was built for */
  int n_tensors;
  cuvae_tensor tensors[CUVAE_MAX_TENSORS];  /* the layout table */
  uint64_t n_params;
  float *params;           /* n_params each */
  float *adam_m;
  float *adam_v;
  int64_t step;            /* optimizer steps completed */
  uint64_t rng_offset;     /* position of the training noise stream after `step` steps */
  uint32_t version;        /* set by load: the file's format version; save always writes CUVAE_CHECKPOINT_VERSION */
  cuvae_train_progress progress;  /* version 2; loaded as all zero from a version-1 file */
  float *ema;              /* version 3: the EMA of the weights (n_params), or NULL when the run keeps none */
  cuvae_skip_record skip;  /* version 3 */
} cuvae_checkpoint;

/* Atomic write; on any failure the previous file at `path` is untouched and no temp file is left. */
int cuvae_checkpoint_save(const char *path, const cuvae_checkpoint *ck);
/* Reads and verifies magic, version (1 to 3), sizes and CRC before trusting anything; allocates the arrays.
 * On failure nothing is left allocated and the message names the path and the problem. */
int cuvae_checkpoint_load(const char *path, cuvae_checkpoint *ck);
void cuvae_checkpoint_free(cuvae_checkpoint *ck);
/* 0 when the checkpoint's layout table equals the model's (names, shapes, offsets, total); otherwise -1
 * with a message naming the first difference. */
int cuvae_checkpoint_check_layout(const cuvae_checkpoint *ck, const cuvae_model *m);
/* What a loader calls: a checkpoint holding the model's tensors (same names, shapes and order) at other offsets, as
 * written by a build with another alignment of the parameter buffer (include/cuvae/model.h), is first moved into
 * the model's layout (params, Adam m and v; the gaps zero); then cuvae_checkpoint_check_layout. */
int cuvae_checkpoint_fit_layout(cuvae_checkpoint *ck, const cuvae_model *m);

#ifdef __cplusplus
}
#endif
#endif
