/* Evaluation of a saved checkpoint on its configured test split. */
#include "cuvae/train.h"
#include "inference.h"

int cuvae_eval_checkpoint(const char *checkpoint_path, const char *device, cuvae_loss *out, int64_t *step) {
  cuvae_inference inf;
  if (cuvae_inference_open(&inf, checkpoint_path, device ? device : "auto", CUVAE_SPLIT_TEST)) return -1;
  const int rc = inf.be->evaluate(inf.be, &inf.data, inf.cfg.eval_batch_size, out);
  if (step) *step = inf.ck.step;
  cuvae_inference_close(&inf);
  return rc;
}
