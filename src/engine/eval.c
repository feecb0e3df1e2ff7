/* Evaluation of a saved checkpoint on a split of its config: negative ELBO (the backend's evaluate), the
 * importance-weighted estimate of log p(x) (the backend's iwae, docs/MATH.md section 5), active units and the KL per
 * latent dimension; under mpirun, shared over the ranks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crash_point.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "cuvae/train.h"
#include "active_units.h"
#include "inference.h"
#include "progress.h"

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

/* IWAE's progress on stderr (rank 0 only): from 2 s on, a line redrawn in place on a terminal every half second, a
 * new line every 30 s otherwise; the share done, the time so far and an estimate of what is left. */
typedef struct iwae_meter {
  double t0, last;
  int tty, shown, K;
  size_t n;
} iwae_meter;

static void iwae_meter_show(void *ctx, double done) {
  iwae_meter *m = ctx;
  const double now = cuvae_now_seconds(), spent = now - m->t0;
  if (done < 1.0 && (spent < 2.0 || now - m->last < (m->tty ? 0.5 : 30.0))) return;
  if (done >= 1.0 && !m->shown) return;  /* a short pass says nothing */
  m->last = now;
  m->shown = 1;
  const char *start = m->tty ? "\r" : "";
  if (done >= 1.0)
    fprintf(stderr, "%sIWAE, K = %d, %zu rows: done in %.0f s%*s\n", start, m->K, m->n, spent, m->tty ? 24 : 0, "");
  else
    fprintf(stderr, "%sIWAE, K = %d, %zu rows: %5.1f%% in %.0f s, about %.0f s left%s", start, m->K, m->n,
            100.0 * done, spent, spent * (1.0 - done) / done, m->tty ? "" : "\n");
  fflush(stderr);
}

/* The IWAE estimate on the backend: mean of -log p(x) over the split, rows summed in double in row order. */
static int iwae_nll(cuvae_inference *inf, int K, int batch, double *out) {
  const size_t n = inf->data.n;
  double *log_px = malloc(n * sizeof *log_px);
  if (!log_px) return cuvae_error("out of memory for %zu IWAE estimates", n);
  iwae_meter meter = {cuvae_now_seconds(), 0.0, isatty(fileno(stderr)), 0, K, n};
  if (cuvae_dist_rank() == 0) {
    inf->be->progress = iwae_meter_show;
    inf->be->progress_ctx = &meter;
  }
  int rc = inf->be->iwae(inf->be, &inf->data, K, batch, log_px);
  inf->be->progress = NULL;
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

/* Opens the checkpoint on every rank; with several, each on its own GPU and its backend joined to the others (the
 * passes are then shared over the ranks). What every rank would refuse is refused here, and the ranks agree on the
 * outcome before any pass starts. */
static int open_on_ranks(cuvae_inference *inf, struct cuvae_data_parallel **dp, const char *path, const char *device,
                         const char *split_name, int split, int precision, int iwae_k) {
  const int ranks = cuvae_dist_size();
  char placed[256];
  int rc = cuvae_dist_place_device(device, placed, sizeof placed);
  if (rc == 0) rc = cuvae_inference_open_in(inf, path, device, split, precision);
  if (rc == 0 && inf->data.n == 0) rc = cuvae_error("%s: the %s split is empty", path, split_name);
  if (rc == 0 && iwae_k > 0 && inf->cfg.objective == CUVAE_OBJ_AE)
    rc = cuvae_error("--iwae: %s is an autoencoder ([train] objective = ae): it has no likelihood to estimate", path);
  if (ranks > 1 && (rc = cuvae_dist_agree(rc)) == 0) {
    *dp = cuvae_dist_data_parallel(inf->model.n_params, CUVAE_DP_BUCKET_BYTES);
    rc = cuvae_dist_agree(!*dp || cuvae_backend_join_data_parallel(inf->be, *dp) ? -1 : 0);
  }
  return rc;
}

/* The estimates on an open checkpoint: the ELBO, IWAE when asked, the latent statistics. On several ranks each is
 * a collective pass over the ranks' shares. */
static int evaluate_open(cuvae_inference *inf, const cuvae_eval_opts *opts, cuvae_eval_result *out) {
  const int batch = opts->batch > 0 ? opts->batch : inf->cfg.eval_batch_size;
  out->step = inf->ck.step;
  out->n = inf->data.n;
  out->input_dim = inf->model.input_dim;
  out->latent = inf->model.latent;
  out->objective = inf->cfg.objective;
  out->dequantized = inf->cfg.dequantize == CUVAE_DEQUANTIZE_UNIFORM;
  if (inf->be->evaluate(inf->be, &inf->data, batch, &out->elbo)) return -1;
  cuvae_crash_point("eval-elbo", 0, NULL);
  if (opts->iwae_k > 0) {
    if (iwae_nll(inf, opts->iwae_k, batch, &out->iwae_nll)) return -1;
    out->iwae_k = opts->iwae_k;
  }
  return latent_stats(inf, out);
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
  memset(&inf, 0, sizeof inf);
  struct cuvae_data_parallel *dp = NULL;
  int rc = open_on_ranks(&inf, &dp, checkpoint_path, opts->device ? opts->device : "auto", split_name, split,
                         precision, opts->iwae_k);
  out->failure_agreed = rc != 0;  /* every rank failed here, or agreed to */
  if (rc == 0) rc = evaluate_open(&inf, opts, out);
  cuvae_inference_close(&inf);
  cuvae_dist_data_parallel_free(dp);
  if (rc != 0) cuvae_eval_result_free(out);
  return rc;
}
