/* Opening a checkpoint for inference (see inference.h). */
#include "inference.h"

#include <string.h>
#include <sys/stat.h>

#include "cuvae/error.h"
#include "data_split.h"

/* A run directory stands for the checkpoint.cuvae it holds; any other path is taken as it is. */
static int resolve_checkpoint_path(const char *path, char *out, size_t n) {
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
    if (snprintf(out, n, "%s", path) >= (int)n) return cuvae_error("path too long: %s", path);
    return 0;
  }
  const size_t len = strlen(path);
  const char *sep = len > 0 && path[len - 1] == '/' ? "" : "/";
  if (snprintf(out, n, "%s%scheckpoint.cuvae", path, sep) >= (int)n) return cuvae_error("path too long: %s", path);
  if (stat(out, &st) != 0)
    return cuvae_error("%s is a directory without a checkpoint.cuvae (a run directory has one once its first "
                       "epoch ends, or once it is interrupted)", path);
  return 0;
}

int cuvae_inference_open(cuvae_inference *inf, const char *checkpoint_arg, const char *device, int split) {
  memset(inf, 0, sizeof *inf);
  char checkpoint_path[CUVAE_PATH_MAX + 32];
  if (resolve_checkpoint_path(checkpoint_arg, checkpoint_path, sizeof checkpoint_path)) return -1;
  if (cuvae_checkpoint_load(checkpoint_path, &inf->ck)) return -1;
  cuvae_config_defaults(&inf->cfg);
  int rc = cuvae_config_load_string(&inf->cfg, inf->ck.config_ini, checkpoint_path);
  if (rc == 0) rc = cuvae_config_finalize(&inf->cfg);
  if (rc == 0 && split != CUVAE_SPLIT_NONE) {
    rc = cuvae_load_split(&inf->cfg, split, &inf->data);
    if (rc == 0 && inf->data.dim != inf->ck.input_dim)
      rc = cuvae_error("%s: the model takes %llu features but the %s data %s has %zu", checkpoint_path,
                       (unsigned long long)inf->ck.input_dim, split == CUVAE_SPLIT_TRAIN ? "train" : "test",
                       split == CUVAE_SPLIT_TRAIN ? inf->cfg.train_images : inf->cfg.test_images, inf->data.dim);
  }
  if (rc == 0) rc = cuvae_model_build(&inf->model, (size_t)inf->ck.input_dim, &inf->cfg);
  if (rc == 0 && cuvae_checkpoint_check_layout(&inf->ck, &inf->model))
    rc = cuvae_error("%s: %s", checkpoint_path, cuvae_last_error());
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
