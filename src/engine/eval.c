/* Evaluation of a saved checkpoint on a split of its config: negative ELBO (the backend's evaluate), the
 * importance-weighted estimate of log p(x) (the backend's iwae, docs/MATH.md section 5), active units and the KL per
 * latent dimension. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuvae/error.h"
#include "cuvae/train.h"
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

/* Active units and the KL per latent dimension, from the encoder alone, over the whole split:
 *   A_u = #{ j : Var_x(E_q[z_j | x]) > 0.01 },  E_q[z_j | x] = mu_j(x)   (Burda et al. 2016: active units), the
 *   variance over the split's n rows (divided by n), computed from sums of (mu_j - mu_j(x_0)) in double: the shift
 *   by the first row's mean keeps the two-sum formula free of cancellation;
 *   kl_per_dim[j] = (1/n) sum_x 0.5 (mu_j^2 + exp(lv_j) - 1 - lv_j)   (docs/MATH.md section 3, one dimension's term;
 *   the dims' sum is the KL of the ELBO).
 * These run on the host with cuvae_cpu_encode from the checkpoint's parameters, whatever the device: one encoder
 * pass over the split is cheap next to the decoder work of an evaluation (784-400-40 on 10,000 rows: ~7 GFLOP),
 * and it does not depend on the backends' encode entry. */
static int latent_stats(const cuvae_inference *inf, cuvae_eval_result *out) {
  const cuvae_model *m = &inf->model;
  const size_t Z = m->latent, n = inf->data.n, D = inf->data.dim;
  const int batch = n < 1000 ? (int)n : 1000;  /* rows per encoder pass (the results do not depend on it) */
  cuvae_cpu_ws *ws = cuvae_cpu_ws_create(m, batch);
  double *shift = malloc(Z * sizeof(double)), *s1 = calloc(Z, sizeof(double)), *s2 = calloc(Z, sizeof(double));
  out->kl_per_dim = calloc(Z, sizeof(double));
  int rc = 0;
  if (!ws || !shift || !s1 || !s2 || !out->kl_per_dim) rc = cuvae_error("out of memory for the latent statistics");
  for (size_t start = 0; rc == 0 && start < n; start += (size_t)batch) {
    const int B = (int)(n - start < (size_t)batch ? n - start : (size_t)batch);
    const float *mulv = cuvae_cpu_encode(m, ws, inf->ck.params, inf->data.x + start * D,
                                        m->cond ? inf->data.labels + start : NULL, B);
    for (int b = 0; b < B; b++) {
      const float *mu = mulv + (size_t)b * 2 * Z, *lv = mu + Z;
      for (size_t j = 0; j < Z; j++) {
        if (start == 0 && b == 0) shift[j] = mu[j];
        const double d = (double)mu[j] - shift[j];
        s1[j] += d;
        s2[j] += d * d;
        out->kl_per_dim[j] += 0.5 * ((double)mu[j] * mu[j] + exp((double)lv[j]) - 1.0 - lv[j]);
      }
    }
  }
  if (rc == 0) {
    out->active_units = 0;
    for (size_t j = 0; j < Z; j++) {
      const double mean = s1[j] / (double)n, var = s2[j] / (double)n - mean * mean;
      if (var > 0.01) out->active_units++;
      out->kl_per_dim[j] /= (double)n;
    }
  }
  cuvae_cpu_ws_destroy(ws);
  free(shift);
  free(s1);
  free(s2);
  return rc;
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
