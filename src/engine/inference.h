/* A trained model opened for inference (eval, sample, reconstruct, encode, export, ...): the checkpoint, its
 * config and model, optionally one data split named by that config, and a backend holding the parameters.
 * Private to src/ and the CLI. */
#ifndef CUVAE_INFERENCE_H
#define CUVAE_INFERENCE_H
#include "backend.h"
#include "cuvae/checkpoint.h"
#include "cuvae/config.h"
#include "cuvae/data.h"
#include "cuvae/model.h"
#include "data_split.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuvae_inference {
  cuvae_checkpoint ck;
  cuvae_config cfg;
  cuvae_model model;
  cuvae_dataset data;   /* the split loaded by open (empty with CUVAE_SPLIT_NONE) */
  cuvae_backend *be;    /* NULL when opened without a device (device == NULL) */
} cuvae_inference;

/* Loads and checks the checkpoint (CRC, layout against its own config; a run directory is read as its
 * checkpoint.cuvae), loads `split`, and creates a backend on
 * `device` ("auto" | "cpu" | "cuda"; NULL: none) with the checkpoint's parameters, the split as its evaluation
 * set, computing in fp32 whatever precision the model was trained in (pictures, encode and decode are then the
 * same on every machine, and a bf16-trained model opens on a CPU without bf16 units). Fails with one message naming
 * the problem; inf is then empty (close is still safe). */
int cuvae_inference_open(cuvae_inference *inf, const char *checkpoint_path, const char *device, int split);
/* The same with the GEMMs in `precision` (a cuvae_precision; -1: the checkpoint config's): checkpoints hold fp32
 * parameters, so a model trained in one precision evaluates in any other. */
int cuvae_inference_open_in(cuvae_inference *inf, const char *checkpoint_path, const char *device, int split,
                            int precision);
void cuvae_inference_close(cuvae_inference *inf);

#ifdef __cplusplus
}
#endif
#endif
