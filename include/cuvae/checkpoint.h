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

#define CUVAE_CHECKPOINT_VERSION 1u

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
} cuvae_checkpoint;

/* Atomic write; on any failure the previous file at `path` is untouched and no temp file is left. */
int cuvae_checkpoint_save(const char *path, const cuvae_checkpoint *ck);
/* Reads and verifies magic, version, sizes and CRC before trusting anything; allocates the arrays.
 * On failure nothing is left allocated and the message names the path and the problem. */
int cuvae_checkpoint_load(const char *path, cuvae_checkpoint *ck);
void cuvae_checkpoint_free(cuvae_checkpoint *ck);
/* 0 when the checkpoint's layout table equals the model's (names, shapes, offsets, total); otherwise -1
 * with a message naming the first difference. */
int cuvae_checkpoint_check_layout(const cuvae_checkpoint *ck, const cuvae_model *m);

#ifdef __cplusplus
}
#endif
#endif
