/* Opening a checkpoint with its config and model (see saved_model.h). */
#include "saved_model.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cuvae/error.h"

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

static cuvae_weights g_weights = CUVAE_WEIGHTS_AUTO;  /* the process's choice (set once, by the CLI) */

void cuvae_saved_model_choose_weights(cuvae_weights w) { g_weights = w; }

int cuvae_weights_parse(const char *name, cuvae_weights *out) {
  static const char *const names[] = {"auto", "ema", "raw"};
  for (int i = 0; i < 3; i++)
    if (strcmp(name, names[i]) == 0) {
      *out = (cuvae_weights)i;
      return 0;
    }
  return cuvae_error("--weights: '%s' is not one of auto, ema, raw", name);
}

/* The EMA of the weights in place of the trained ones (docs/MATH.md (7.5)) when chosen and present. */
static int choose_weights(cuvae_saved_model *sm) {
  if (!sm->ck.ema)
    return g_weights == CUVAE_WEIGHTS_EMA
               ? cuvae_error("%s holds no EMA of the weights (the run had [train] ema = 0); use --weights raw or auto",
                             sm->path)
               : 0;
  if (g_weights == CUVAE_WEIGHTS_RAW) return 0;
  float *raw = sm->ck.params;
  sm->ck.params = sm->ck.ema;
  sm->ck.ema = raw;
  sm->ema = 1;
  return 0;
}

int cuvae_saved_model_open(cuvae_saved_model *sm, const char *checkpoint_or_run_dir) {
  memset(sm, 0, sizeof *sm);
  if (resolve_checkpoint_path(checkpoint_or_run_dir, sm->path, sizeof sm->path)) return -1;
  if (cuvae_checkpoint_load(sm->path, &sm->ck)) return -1;
  cuvae_config_defaults(&sm->cfg);
  int rc = cuvae_config_load_string(&sm->cfg, sm->ck.config_ini, sm->path);
  if (rc == 0) rc = cuvae_config_finalize(&sm->cfg);
  if (rc == 0) rc = cuvae_model_build(&sm->model, (size_t)sm->ck.input_dim, &sm->cfg);
  if (rc == 0 && cuvae_checkpoint_fit_layout(&sm->ck, &sm->model))
    rc = cuvae_error("%s: %s", sm->path, cuvae_last_error());
  if (rc == 0) rc = choose_weights(sm);
  if (rc != 0) cuvae_saved_model_close(sm);
  return rc;
}

void cuvae_saved_model_close(cuvae_saved_model *sm) {
  cuvae_checkpoint_free(&sm->ck);
  memset(sm, 0, sizeof *sm);
}
