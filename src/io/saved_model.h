/* A trained model read back from disk: the checkpoint, the config it carries and the model built from that config,
 * checked against each other. Opened from a checkpoint file or the run directory holding one; what inference and
 * export start from. */
#ifndef CUVAE_SAVED_MODEL_H
#define CUVAE_SAVED_MODEL_H
#include "cuvae/checkpoint.h"
#include "cuvae/config.h"
#include "cuvae/model.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuvae_saved_model {
  cuvae_checkpoint ck;
  cuvae_config cfg;                   /* the checkpoint's config, finalized */
  cuvae_model model;                  /* built from cfg for the checkpoint's input_dim; its layout equals ck's */
  char path[CUVAE_PATH_MAX + 32];     /* the checkpoint file read (RUN_DIR/checkpoint.cuvae for a run directory) */
} cuvae_saved_model;

/* Loads and checks the checkpoint (CRC, its config, the layout against that config); a run directory is read as
 * its checkpoint.cuvae. Fails with one message naming the problem; sm is then empty (close is still safe). */
int cuvae_saved_model_open(cuvae_saved_model *sm, const char *checkpoint_or_run_dir);
void cuvae_saved_model_close(cuvae_saved_model *sm);

#ifdef __cplusplus
}
#endif
#endif
