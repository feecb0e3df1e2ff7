/* Opening a checkpoint for inference (see inference.h). */
#include "inference.h"

#include <string.h>

#include "cuvae/error.h"
#include "data_split.h"
#include "saved_model.h"

int cuvae_inference_open(cuvae_inference *inf, const char *checkpoint_arg, const char *device, int split) {
  return cuvae_inference_open_in(inf, checkpoint_arg, device, split, CUVAE_PRECISION_FP32);
}

int cuvae_inference_open_in(cuvae_inference *inf, const char *checkpoint_arg, const char *device, int split,
                            int precision) {
  memset(inf, 0, sizeof *inf);
  cuvae_saved_model sm;
  if (cuvae_saved_model_open(&sm, checkpoint_arg)) return -1;
  inf->ck = sm.ck;  /* the arrays move to inf, which frees them on close */
  inf->cfg = sm.cfg;
  if (precision >= 0) inf->cfg.precision = (cuvae_precision)precision;
  inf->model = sm.model;
  int rc = 0;
  if (split != CUVAE_SPLIT_NONE) {
    rc = cuvae_load_split(&inf->cfg, split, &inf->data);
    /* An evaluated training split is dequantized once, as the test split (docs/MATH.md (4.6)). */
    if (rc == 0 && split == CUVAE_SPLIT_TRAIN) rc = cuvae_dequantize_split(&inf->cfg, split, &inf->data);
    if (rc == 0 && inf->data.dim != inf->ck.input_dim)
      rc = cuvae_error("%s: the model takes %llu features but the %s data %s has %zu", sm.path,
                       (unsigned long long)inf->ck.input_dim, split == CUVAE_SPLIT_TRAIN ? "train" : "test",
                       split == CUVAE_SPLIT_TRAIN ? inf->cfg.train_images : inf->cfg.test_images, inf->data.dim);
  }
  if (rc == 0 && device) {
    /* No training set: the backend only evaluates; the split (if any) is uploaded once as its evaluation set. */
    inf->be = cuvae_backend_create(device, &inf->model, &inf->cfg, NULL,
                                   split != CUVAE_SPLIT_NONE ? &inf->data : NULL);
    if (!inf->be) rc = -1;
    if (rc == 0) rc = inf->be->set_state(inf->be, inf->ck.params, NULL, NULL);
  }
  if (rc != 0) {
    cuvae_inference_close(inf);
    return -1;
  }
  return 0;
}

void cuvae_inference_close(cuvae_inference *inf) {
  if (inf->be) inf->be->destroy(inf->be);
  cuvae_dataset_free(&inf->data);
  cuvae_checkpoint_free(&inf->ck);
  memset(inf, 0, sizeof *inf);
}
