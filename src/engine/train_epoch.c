/* The end of a training epoch (see train_run.h): the evaluations (test, validation, the EMA's, active units), the
 * metrics.jsonl row, the checkpoints (checkpoint.cuvae, best.cuvae), early stopping, and the pictures
 * (samples.png, recon.png, loss.png). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "active_units.h"
#include "crash_point.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "cuvae/image.h"
#include "train_run.h"

/* ---- pictures: samples.png, recon.png, loss.png in the run directory at every epoch end ---------------------- */

/* A point of loss.png at x = `epochs`; a second row of the same epoch (an older run's partial row, followed by the
 * complete one) replaces the first. */
static void curve_add(run *r, int64_t epoch, double epochs, double train_nelbo, double test_nelbo) {
  if (r->n_curve > 0 && epoch == r->curve_epoch) r->n_curve--;
  if (r->n_curve == r->cap_curve) {
    const size_t cap = r->cap_curve ? 2 * r->cap_curve : 64;
    double *p = realloc(r->curve, cap * 3 * sizeof *p);
    if (!p) return;  /* the plot then misses a point; training is unaffected */
    r->curve = p;
    r->cap_curve = cap;
  }
  double *e = r->curve + 3 * r->n_curve++;
  e[0] = epochs;
  e[1] = train_nelbo;
  e[2] = test_nelbo;
  r->curve_epoch = epoch;
}

/* x as metrics.jsonl holds it (%.6f), so a point plotted live equals the one a resumed run reads back. */
static double as_logged(double x) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.6f", x);
  return strtod(buf, NULL);
}

static double json_number(const char *line, const char *key) {
  const char *p = strstr(line, key);
  return p ? strtod(p + strlen(key), NULL) : NAN;
}

/* On resume: the rows already in metrics.jsonl (up to the checkpoint's step), so loss.png shows the whole run. */
void train_curve_load(run *r, int64_t upto) {
  struct stat st;
  if (stat(r->metrics.path, &st) != 0 || !S_ISREG(st.st_mode)) return;  /* e.g. a link to a device */
  FILE *f = fopen(r->metrics.path, "r");
  if (!f) return;
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    const double step = json_number(line, "\"step\": "), epoch = json_number(line, "\"epoch\": ");
    if (step > 0 && step <= (double)upto && epoch > 0)
      curve_add(r, (int64_t)epoch, step / (double)r->steps_per_epoch, json_number(line, "\"train_nelbo\": "),
                json_number(line, "\"test_nelbo\": "));
  }
  fclose(f);
}

/* The decoder means of 64 prior samples (the same z every epoch: cuvae_prior_samples with the config's seed, which
 * `cuvae sample` also uses), the first 32 test examples beside their reconstructions, and the loss curve. A picture
 * that cannot be written is a warning; training goes on. */
static void write_pictures(run *r, const char *dir, int64_t step, cuvae_progress *prog) {
  char path[CUVAE_PATH_MAX + 32];
  int h, w;
  cuvae_image_shape(r->test.dim, r->test.rows, r->test.cols, &h, &w);
  snprintf(path, sizeof path, "%s/samples.png", dir);
  if (cuvae_write_samples_png(r->be, &r->model, r->cfg->seed, 64, h, w, 0, -1, path, NULL, NULL))
    cuvae_progress_log(prog, "warning: samples.png not written: %s", cuvae_last_error());
  snprintf(path, sizeof path, "%s/recon.png", dir);
  const int n = r->test.n < 32 ? (int)r->test.n : 32;
  if (n > 0 && cuvae_write_recon_png(r->be, &r->model, &r->test, n, h, w, 0, path, NULL, NULL))
    cuvae_progress_log(prog, "warning: recon.png not written: %s", cuvae_last_error());
  cuvae_crash_point("pictures", step, NULL);
  double *xy = malloc(r->n_curve * 3 * sizeof *xy);
  if (!xy) return;
  for (size_t i = 0; i < r->n_curve; i++) {
    xy[i] = r->curve[3 * i];  /* epochs: whole ones, and a fraction for the last row of a run cut by max_steps */
    xy[r->n_curve + i] = r->curve[3 * i + 1];
    xy[2 * r->n_curve + i] = r->curve[3 * i + 2];
  }
  const cuvae_plot_series series[2] = {{"train (mean over the epoch)", xy, xy + r->n_curve, r->n_curve},
                                       {"test", xy, xy + 2 * r->n_curve, r->n_curve}};
  snprintf(path, sizeof path, "%s/loss.png", dir);
  if (cuvae_write_line_plot_png(path, 720, 450, "negative ELBO per epoch", "epoch", "negative ELBO (nats)", series,
                                2))
    cuvae_progress_log(prog, "warning: loss.png not written: %s", cuvae_last_error());
  free(xy);
}

/* What an epoch end measures: the test set, the validation set ([data] validation), both again with the EMA of the
 * weights ([train] ema), the active units on the test set (docs/MATH.md); whether validation improved. */
typedef struct epoch_eval {
  cuvae_loss test, val, ema_test, ema_val;
  int active_units, improved;
} epoch_eval;

/* x as JSON: %.6f, or null when not finite (a mean over no steps). */
static const char *json_number6(char *buf, size_t n, double x) {
  if (isfinite(x)) snprintf(buf, n, "%.6f", x);
  else snprintf(buf, n, "null");
  return buf;
}

/* The optional keys of an epoch's row (validation, EMA, bits/dim), appended to buf. */
static void optional_keys(const run *r, const epoch_eval *e, char *buf, size_t n) {
  size_t len = 0;
  buf[0] = '\0';
  if (r->val.n)
    len += (size_t)snprintf(buf + len, n - len, ", \"val_nelbo\": %.6f, \"val_recon\": %.6f, \"val_kl\": %.6f",
                            e->val.nelbo, e->val.recon, e->val.kl);
  if (r->ema && len < n) len += (size_t)snprintf(buf + len, n - len, ", \"ema_test_nelbo\": %.6f", e->ema_test.nelbo);
  if (r->ema && r->val.n && len < n)
    len += (size_t)snprintf(buf + len, n - len, ", \"ema_val_nelbo\": %.6f", e->ema_val.nelbo);
  if (r->cfg->dequantize == CUVAE_DEQUANTIZE_UNIFORM && len < n)  /* docs/MATH.md (4.6): nats -> bits per dimension */
    snprintf(buf + len, n - len, ", \"test_bpd\": %.6f", e->test.nelbo / ((double)r->model.input_dim * log(2.0)));
}

/* Rank 0's part of an epoch end: the metrics.jsonl row, the checkpoint (and best.cuvae when validation improved),
 * the pictures. The train_* means are over the applied steps; skipped steps are counted. */
static int write_epoch(run *r, int64_t step, const epoch_eval *e, const char *dir, cuvae_progress *prog) {
  const int complete = step % r->steps_per_epoch == 0;
  const int64_t epoch = (step - 1) / r->steps_per_epoch + 1, n = r->acc_steps - r->acc_skipped;
  const double seconds = train_epoch_seconds(r), dn = n > 0 ? (double)n : NAN;
  const double sps = r->train_seconds > 0 ? (double)r->acc_steps * r->cfg->batch_size / r->train_seconds : 0.0;
  char t[5][32], opt[512];
  optional_keys(r, e, opt, sizeof opt);
  cuvae_log_row(&r->metrics,
          "{\"epoch\": %" PRId64 ", \"step\": %" PRId64 ", \"train_nelbo\": %s, \"train_recon\": %s, "
          "\"train_kl\": %s, \"train_objective\": %s, \"test_nelbo\": %.6f, \"recon\": %.6f, \"kl\": %.6f, "
          "\"lr\": %.9g, \"grad_norm\": %s, \"grad_norm_max\": %.6f, \"skipped\": %" PRId64 ", \"active_units\": %d%s, "
          "\"samples_per_s\": %.1f, \"seconds\": %.3f, \"complete\": %s}\n",
          epoch, step, json_number6(t[0], 32, r->acc.nelbo / dn), json_number6(t[1], 32, r->acc.recon / dn),
          json_number6(t[2], 32, r->acc.kl / dn), json_number6(t[3], 32, r->acc.objective / dn), e->test.nelbo,
          e->test.recon, e->test.kl, (double)r->lr, json_number6(t[4], 32, r->sum_norm / dn), r->max_norm,
          r->acc_skipped, e->active_units, opt, sps, seconds, complete ? "true" : "false");
  if (complete) r->metrics_done = r->metrics.bytes;
  cuvae_crash_point("metrics", step, r->metrics.f);
  char val[96] = "", skipped[48] = "";
  if (r->val.n) snprintf(val, sizeof val, " | val nelbo %.3f", e->val.nelbo);
  if (r->acc_skipped) snprintf(skipped, sizeof skipped, " | %lld skipped", (long long)r->acc_skipped);
  cuvae_progress_log(prog, "epoch %lld step %lld: train nelbo %.3f | test nelbo %.3f (recon %.3f, kl %.3f)%s | "
                           "%d active units%s | %.0f samples/s | %.1f s",
                     (long long)epoch, (long long)step, r->acc.nelbo / dn, e->test.nelbo, e->test.recon, e->test.kl,
                     val, e->active_units, skipped, sps, seconds);
  if (train_save_checkpoint(r, step)) return -1;
  if (e->improved && train_save_checkpoint_to(r, r->best_path, step)) return -1;
  cuvae_crash_point("checkpoint-saved", step, NULL);
  curve_add(r, epoch, (double)step / (double)r->steps_per_epoch, as_logged(r->acc.nelbo / dn),
            as_logged(e->test.nelbo));
  write_pictures(r, dir, step, prog);
  return 0;
}

/* The evaluations of an epoch end on every rank (evaluate is sharded): the state fetched first (the checkpoint's),
 * then with an EMA the same sets with the EMA's weights in the backend, and the trained ones back. */
static int evaluate_epoch(run *r, epoch_eval *e) {
  const cuvae_config *c = r->cfg;
  memset(e, 0, sizeof *e);
  if (r->be->evaluate(r->be, &r->test, c->eval_batch_size, &e->test) ||
      (r->val.n && r->be->evaluate(r->be, &r->val, c->eval_batch_size, &e->val)) ||
      cuvae_active_units(r->be, &r->model, &r->test, CUVAE_ACTIVE_UNITS_THRESHOLD, &e->active_units) || train_fetch_state(r))
    return -1;
  if (!r->ema) return 0;
  if (r->be->set_state(r->be, r->ema, NULL, NULL) ||
      r->be->evaluate(r->be, &r->test, c->eval_batch_size, &e->ema_test) ||
      (r->val.n && r->be->evaluate(r->be, &r->val, c->eval_batch_size, &e->ema_val)))
    return -1;
  return r->be->set_state(r->be, r->params, NULL, NULL);
}

/* [data] validation at a complete epoch: the best NELBO so far (best.cuvae is written), or one more epoch without
 * improvement. Every rank keeps the same record (the evaluation is the same on all). */
static void track_validation(run *r, int64_t epoch, epoch_eval *e) {
  if (!r->val.n) return;
  if (r->best_epoch == 0 || e->val.nelbo < r->best_val) {
    r->best_val = e->val.nelbo;
    r->best_epoch = epoch;
    r->bad_epochs = 0;
    e->improved = 1;
  } else {
    r->bad_epochs++;
  }
}

/* The end of an epoch, or the run's last step: evaluation (every rank: it is sharded), then rank 0 writes. With
 * several ranks they agree on the outcome, so a failed write stops every rank with rank 0's message. */
int train_end_epoch(run *r, int64_t step, const char *dir, cuvae_progress *prog, cuvae_train_summary *summary) {
  epoch_eval e;
  const int complete = step % r->steps_per_epoch == 0;
  int rc = evaluate_epoch(r, &e);
  cuvae_crash_point("eval", step, NULL);
  if (rc == 0 && complete) track_validation(r, step / r->steps_per_epoch, &e);
  if (rc == 0 && r->rank == 0) rc = write_epoch(r, step, &e, dir, prog);
  if (r->ranks > 1 && (rc = cuvae_dist_agree(rc)) != 0) summary->failure_agreed = 1;
  if (rc) return -1;
  summary->test = e.test;
  summary->evaluated = 1;
  if (complete) {
    r->acc = (cuvae_loss){0};
    r->acc_steps = r->acc_skipped = 0;
    r->sum_norm = r->max_norm = 0.0;
    r->seconds_before = r->train_seconds = 0.0;
    r->t_epoch = cuvae_now_seconds();
  }
  if (complete && r->cfg->early_stop > 0 && r->bad_epochs >= r->cfg->early_stop) {
    summary->early_stopped = 1;
    cuvae_progress_log(prog, "early stop: the validation NELBO has not improved for %lld epochs (best %.3f at epoch "
                             "%lld: %s)", (long long)r->bad_epochs, r->best_val, (long long)r->best_epoch, r->best_path);
  }
  return 0;
}

