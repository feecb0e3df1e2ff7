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
  int ema;                            /* 1: ck.params holds the checkpoint's EMA of the weights (and ck.ema the raw ones) */
} cuvae_saved_model;

/* Which weights a loaded model uses (the CLI's --weights, for every command that reads a checkpoint): auto = the EMA
 * when the checkpoint holds one ([train] ema > 0), else the trained weights; ema = the EMA (an error when there is
 * none); raw = the trained weights. */
typedef enum { CUVAE_WEIGHTS_AUTO = 0, CUVAE_WEIGHTS_EMA = 1, CUVAE_WEIGHTS_RAW = 2 } cuvae_weights;
void cuvae_saved_model_choose_weights(cuvae_weights w);
/* *out = the cuvae_weights named auto | ema | raw; -1 with a message otherwise. */
int cuvae_weights_parse(const char *name, cuvae_weights *out);

/* Loads and checks the checkpoint (CRC, its config, the layout against that config); a run directory is read as
 * its checkpoint.cuvae. Fails with one message naming the problem; sm is then empty (close is still safe). */
int cuvae_saved_model_open(cuvae_saved_model *sm, const char *checkpoint_or_run_dir);
void cuvae_saved_model_close(cuvae_saved_model *sm);

#ifdef __cplusplus
}
#endif
#endif
