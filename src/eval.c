/* Evaluation of a saved checkpoint on its configured test split. */
#include <string.h>

#include "backend.h"
#include "cuvae/checkpoint.h"
#include "cuvae/error.h"
#include "cuvae/train.h"
#include "train_internal.h"

int cuvae_eval_checkpoint(const char *checkpoint_path, const char *device, cuvae_loss *out, int64_t *step) {
  cuvae_checkpoint ck;
  if (cuvae_checkpoint_load(checkpoint_path, &ck)) return -1;
  cuvae_config cfg;
  cuvae_config_defaults(&cfg);
  cuvae_dataset test;
  memset(&test, 0, sizeof test);
  cuvae_model model;
  cuvae_backend *be = NULL;
  int rc = cuvae_config_load_string(&cfg, ck.config_ini, checkpoint_path);
  if (rc == 0) rc = cuvae_config_finalize(&cfg);
  if (rc == 0) rc = cuvae_load_split(&cfg, 1, &test);
  if (rc == 0 && test.dim != ck.input_dim)
    rc = cuvae_error("%s: the model takes %llu features but the test data %s has %zu", checkpoint_path,
                     (unsigned long long)ck.input_dim, cfg.test_images, test.dim);
  if (rc == 0) rc = cuvae_model_build(&model, test.dim, &cfg);
  if (rc == 0 && cuvae_checkpoint_check_layout(&ck, &model))
    rc = cuvae_error("%s: %s", checkpoint_path, cuvae_last_error());
  if (rc == 0) {
    /* The backend is built for evaluation only: no training set; the test set is uploaded once. */
    be = cuvae_backend_create(device ? device : "auto", &model, &cfg, NULL, &test);
    if (!be) rc = -1;
  }
  if (rc == 0) rc = be->set_state(be, ck.params, NULL, NULL);
  if (rc == 0) rc = be->evaluate(be, &test, cfg.eval_batch_size, out);
  if (step) *step = ck.step;
  if (be) be->destroy(be);
  cuvae_dataset_free(&test);
  cuvae_checkpoint_free(&ck);
  return rc;
}
