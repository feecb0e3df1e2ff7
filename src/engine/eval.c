/* Evaluation of a saved checkpoint on a split of its config: negative ELBO (the backend's evaluate), the
 * importance-weighted estimate of log p(x) (the backend's iwae, docs/MATH.md section 5), active units and the KL per
 * latent dimension. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuvae/error.h"
#include "cuvae/train.h"
#include "active_units.h"
#include "inference.h"

int cuvae_eval_checkpoint(const char *checkpoint_path, const char *device, cuvae_loss *out, int64_t *step) {
  cuvae_inference inf;
  if (cuvae_inference_open_in(&inf, checkpoint_path, device ? device : "auto", CUVAE_SPLIT_TEST, -1)) return -1;
  const int rc = inf.be->evaluate(inf.be, &inf.data, inf.cfg.eval_batch_size, out);
  if (step) *step = inf.ck.step;
  cuvae_inference_close(&inf);
  return rc;
}

void cuvae_eval_result_free(cuvae_eval_result *r) {
  free(r->kl_per_dim);
  r->kl_per_dim = NULL;
}

/* Active units and the KL per latent dimension over the whole split (docs/MATH.md (3.5)), through the backend's
 * encoder. */
static int latent_stats(cuvae_inference *inf, cuvae_eval_result *out) {
  out->kl_per_dim = calloc(inf->model.latent, sizeof(double));
  if (!out->kl_per_dim) return cuvae_error("out of memory for the KL of %zu latent dims", inf->model.latent);
  return cuvae_latent_stats(inf->be, &inf->model, &inf->data, CUVAE_ACTIVE_UNITS_THRESHOLD, &out->active_units,
                            out->kl_per_dim);
}

/* The IWAE estimate on the backend: mean of -log p(x) over the split, rows summed in double in row order. */
static int iwae_nll(cuvae_inference *inf, int K, int batch, double *out) {
  const size_t n = inf->data.n;
  double *log_px = malloc(n * sizeof *log_px);
  if (!log_px) return cuvae_error("out of memory for %zu IWAE estimates", n);
  int rc = inf->be->iwae(inf->be, &inf->data, K, batch, log_px);
  double sum = 0.0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if (!isfinite(log_px[i]))
      rc = cuvae_error("IWAE: the estimate of log p(x) for row %zu is not finite (%g)", i, log_px[i]);
    sum -= log_px[i];
  }
  free(log_px);
  if (rc == 0) *out = sum / (double)n;
  return rc;
}

int cuvae_eval(const char *checkpoint_path, const cuvae_eval_opts *opts, cuvae_eval_result *out) {
  static const cuvae_eval_opts defaults = {0};
  if (!opts) opts = &defaults;
  memset(out, 0, sizeof *out);
  const char *split_name = opts->split ? opts->split : "test";
  int split;
  if (strcmp(split_name, "test") == 0)
    split = CUVAE_SPLIT_TEST;
  else if (strcmp(split_name, "train") == 0)
    split = CUVAE_SPLIT_TRAIN;
  else
    return cuvae_error("split '%s': expected test or train", split_name);
  if (opts->iwae_k < 0) return cuvae_error("IWAE samples K = %d must be >= 1", opts->iwae_k);
  if (opts->batch < 0) return cuvae_error("batch %d must be >= 1", opts->batch);

  int precision = -1;
  if (opts->precision && cuvae_precision_parse(opts->precision, &precision)) return -1;
  cuvae_inference inf;
  if (cuvae_inference_open_in(&inf, checkpoint_path, opts->device ? opts->device : "auto", split, precision))
    return -1;
  if (inf.data.n == 0) {
    cuvae_inference_close(&inf);
    return cuvae_error("%s: the %s split is empty", checkpoint_path, split_name);
  }
  const int batch = opts->batch > 0 ? opts->batch : inf.cfg.eval_batch_size;
  out->step = inf.ck.step;
  out->n = inf.data.n;
  out->input_dim = inf.model.input_dim;
  out->latent = inf.model.latent;
  out->objective = inf.cfg.objective;
  out->dequantized = inf.cfg.dequantize == CUVAE_DEQUANTIZE_UNIFORM;
  int rc = inf.be->evaluate(inf.be, &inf.data, batch, &out->elbo);
  if (rc == 0 && opts->iwae_k > 0 && inf.cfg.objective == CUVAE_OBJ_AE)
    rc = cuvae_error("--iwae: %s is an autoencoder ([train] objective = ae): it has no likelihood to estimate",
                     checkpoint_path);
  if (rc == 0 && opts->iwae_k > 0) {
    rc = iwae_nll(&inf, opts->iwae_k, batch, &out->iwae_nll);
    if (rc == 0) out->iwae_k = opts->iwae_k;
  }
  if (rc == 0) rc = latent_stats(&inf, out);
  cuvae_inference_close(&inf);
  if (rc != 0) cuvae_eval_result_free(out);
  return rc;
}
