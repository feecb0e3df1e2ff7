/* The training loop (see include/cuvae/train.h). Order of work: everything that can fail on bad input
 * (config, data, model, checkpoint to resume) is checked before the run directory is touched. */
#include "cuvae/train.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "crash_point.h"
#include "cuvae/blas.h"
#include "cuvae/checkpoint.h"
#include "cuvae/cpu.h"
#include "cuvae/data.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "cuvae/image.h"
#include "cuvae/rng.h"
#include "progress.h"
#include "run_log.h"
#include "data_split.h"

static volatile sig_atomic_t stop_requested = 0;

void cuvae_train_request_stop(void) { stop_requested = 1; }

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Through PATH.tmp and a rename, so that a kill never leaves a torn file (config.ini is what --resume reads). */
static int write_text_file(const char *path, const char *text) {
  char tmp[CUVAE_PATH_MAX + 64];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return cuvae_error("path too long: %s", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return cuvae_error("cannot write %s: %s", tmp, strerror(errno));
  const size_t n = strlen(text);
  const int ok = fwrite(text, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
  const int err = errno;
  if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
    remove(tmp);
    return cuvae_error("cannot write %s: %s", path, strerror(ok ? errno : err));
  }
  return 0;
}

/* All the state of one run, so the loop below reads as the algorithm. */
typedef struct run {
  const cuvae_config *cfg;
  cuvae_dataset train, test;
  cuvae_model model;
  cuvae_backend *be;
  cuvae_data_parallel *dp;           /* with several ranks: the gradient all-reduce the backend calls; else NULL */
  int rank, ranks, local_batch;      /* this process among `ranks`; its rows of each batch (batch_size / ranks) */
  char *config_text;
  float *params, *adam_m, *adam_v;   /* host copies for checkpoints */
  cuvae_step_result *results;        /* [max_pending] collected step results */
  uint32_t *perm;
  char ckpt_path[CUVAE_PATH_MAX + 32];
  cuvae_run_log metrics, steps;
  uint64_t metrics_done;             /* bytes of metrics.jsonl up to the row of the last completed epoch */
  int64_t steps_per_epoch, total;    /* the last partial batch is dropped; total is capped by max_steps */
  int fresh;                         /* starts at step 0: a new run, or one stopped before its first checkpoint */
  cuvae_train_progress resumed;      /* the checkpoint's record of the epoch in progress */
  uint32_t resumed_version;          /* the checkpoint's format version (1 has no such record) */
  /* The epoch in progress: sums of the collected steps' batch means, and its time (carried across a resume). */
  cuvae_loss acc;
  int64_t acc_steps;
  double seconds_before, t_epoch;    /* the epoch's seconds before this process took it up; when it did */
  double train_seconds, t_since_collect;
  double *curve;                     /* loss.png: (epochs, train nelbo, test nelbo) per metrics row */
  size_t n_curve, cap_curve;
  int64_t curve_epoch;               /* the epoch of the last point (a later row of the same epoch replaces it) */
} run;

static void run_free(run *r) {
  if (r->be) r->be->destroy(r->be);
  cuvae_dist_data_parallel_free(r->dp);
  cuvae_dataset_free(&r->train);
  cuvae_dataset_free(&r->test);
  free(r->config_text);
  free(r->params);
  free(r->adam_m);
  free(r->adam_v);
  free(r->perm);
  free(r->results);
  free(r->curve);
  if (r->metrics.f) fclose(r->metrics.f);
  if (r->steps.f) fclose(r->steps.f);
}

static double epoch_seconds(const run *r) { return r->seconds_before + (cuvae_now_seconds() - r->t_epoch); }

/* The backend's state into the host copies a checkpoint writes. Every rank calls it (with shard_optimizer it gathers
 * Adam's shards to rank 0). */
static int fetch_state(run *r) { return r->be->get_state(r->be, r->params, r->adam_m, r->adam_v); }

/* The checkpoint of `step` from the state fetch_state took. Mid-epoch (an interrupt, or max_steps) the epoch's sums
 * and times travel with it, so a resumed run writes that epoch's row as an uninterrupted run would; at an epoch
 * boundary they are zero. The logs are synced first: a checkpoint never counts rows that may not be on disk, and a
 * failed log write stops the run with the previous checkpoint in place. */
static int save_checkpoint(run *r, int64_t step) {
  if (cuvae_log_sync(&r->metrics) || cuvae_log_sync(&r->steps)) return -1;
  cuvae_checkpoint ck;
  memset(&ck, 0, sizeof ck);
  ck.config_ini = r->config_text;
  ck.input_dim = r->model.input_dim;
  ck.n_tensors = r->model.n_tensors;
  memcpy(ck.tensors, r->model.tensors, sizeof ck.tensors);
  ck.n_params = r->model.n_params;
  ck.params = r->params;
  ck.adam_m = r->adam_m;
  ck.adam_v = r->adam_v;
  ck.step = step;
  ck.rng_offset = (uint64_t)step * cuvae_noise_stride((size_t)r->cfg->batch_size * r->model.latent);
  cuvae_train_progress *g = &ck.progress;
  if (step % r->steps_per_epoch != 0) {
    g->epoch_steps = (uint64_t)r->acc_steps;
    g->sum_nelbo = r->acc.nelbo;
    g->sum_recon = r->acc.recon;
    g->sum_kl = r->acc.kl;
    g->sum_objective = r->acc.objective;
    g->epoch_seconds = epoch_seconds(r);
    g->train_seconds = r->train_seconds;
  }
  g->metrics_bytes = r->metrics_done;
  g->steps_bytes = r->steps.bytes;
  return cuvae_checkpoint_save(r->ckpt_path, &ck);
}

/* Restores the state saved in the run's checkpoint after checking it belongs to this architecture. */
static int resume_from_checkpoint(run *r, int64_t *step, FILE *log) {
  cuvae_checkpoint ck;
  if (cuvae_checkpoint_load(r->ckpt_path, &ck)) return -1;
  cuvae_config saved;
  cuvae_config_defaults(&saved);
  int rc = cuvae_config_load_string(&saved, ck.config_ini, r->ckpt_path);
  if (rc == 0 && cuvae_config_same_architecture(&saved, r->cfg))
    rc = cuvae_error("--resume %s: the config describes a different architecture than the run: %s", r->ckpt_path,
                     cuvae_last_error());
  if (rc == 0 && cuvae_checkpoint_fit_layout(&ck, &r->model))
    rc = cuvae_error("--resume %s: %s", r->ckpt_path, cuvae_last_error());
  if (rc == 0 && (saved.batch_size != r->cfg->batch_size || saved.seed != r->cfg->seed))
    fprintf(log, "note: resuming with a different batch_size or seed than the run started with; the result will "
                 "not match an uninterrupted run\n");
  if (rc == 0) rc = r->be->set_state(r->be, ck.params, ck.adam_m, ck.adam_v);
  if (rc == 0) {  /* what rank 0 sends the other ranks (share_start) */
    const size_t bytes = r->model.n_params * sizeof(float);
    memcpy(r->params, ck.params, bytes);
    memcpy(r->adam_m, ck.adam_m, bytes);
    memcpy(r->adam_v, ck.adam_v, bytes);
  }
  *step = ck.step;
  r->resumed = ck.progress;
  r->resumed_version = ck.version;
  cuvae_checkpoint_free(&ck);
  return rc;
}

/* On resume with steps left to train: metrics.jsonl and steps.jsonl go back to their state at the checkpoint (rows a
 * killed run wrote after it, and the row of an epoch cut short by max_steps, are removed), and the epoch in progress
 * continues from its recorded sums and times. */
static int restore_epoch(run *r, int64_t step, FILE *log) {
  const cuvae_train_progress *g = &r->resumed;
  if (r->resumed_version < 2) {
    fprintf(log, "note: the checkpoint (format version %u) has no record of the epoch in progress: metrics.jsonl "
                 "and steps.jsonl are kept as they are and this epoch's row averages only the steps from here on\n",
            r->resumed_version);
    r->metrics.bytes = cuvae_file_size(r->metrics.path);
    r->steps.bytes = cuvae_file_size(r->steps.path);
  } else if (cuvae_log_cut(&r->metrics, g->metrics_bytes, log) || cuvae_log_cut(&r->steps, g->steps_bytes, log)) {
    return -1;
  }
  r->metrics_done = r->metrics.bytes;
  if (r->resumed_version >= 2 && g->epoch_steps == (uint64_t)(step % r->steps_per_epoch)) {
    r->acc = (cuvae_loss){g->sum_nelbo, g->sum_recon, g->sum_kl, g->sum_objective};
    r->acc_steps = (int64_t)g->epoch_steps;
    r->seconds_before = g->epoch_seconds;
    r->train_seconds = g->train_seconds;
  } else if (r->resumed_version >= 2) {
    fprintf(log, "note: the checkpoint's record of the epoch in progress (%llu steps) does not fit %lld steps per "
                 "epoch; this epoch's row averages only the steps from here on\n",
            (unsigned long long)g->epoch_steps, (long long)r->steps_per_epoch);
  }
  return 0;
}

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
static void curve_load(run *r, int64_t upto) {
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

/* ---- setting up the run ---------------------------------------------------------------------------------------- */

/* Data, model, backend and buffers; the schedule (steps per epoch, total). */
static int build_run(run *r, const cuvae_config *cfg, const cuvae_train_opts *opts, FILE *log) {
  r->cfg = cfg;
  if (cuvae_load_split(cfg, CUVAE_SPLIT_TRAIN, &r->train) || cuvae_load_split(cfg, CUVAE_SPLIT_TEST, &r->test)) return -1;
  if (r->train.dim != r->test.dim)
    return cuvae_error("train data has %zu features per example but test data has %zu", r->train.dim, r->test.dim);
  if ((size_t)cfg->batch_size > r->train.n)
    return cuvae_error("[train] batch_size: %d is larger than the training set (%zu examples)", cfg->batch_size,
                       r->train.n);
  if (r->train.n > UINT32_MAX) return cuvae_error("training set of %zu examples is too large", r->train.n);
  if (cuvae_model_build(&r->model, r->train.dim, cfg)) return -1;
  if (cfg->batch_size % r->ranks != 0)
    return cuvae_error("[train] batch_size: %d is not divisible by the %d ranks; the global batch is split evenly "
                       "(choose a multiple of %d)", cfg->batch_size, r->ranks, r->ranks);
  r->local_batch = cfg->batch_size / r->ranks;
  r->be = cuvae_backend_create(opts->device ? opts->device : "auto", &r->model, cfg, &r->train, &r->test);
  if (!r->be) return -1;
  if (r->ranks > 1) {
    r->dp = cuvae_dist_data_parallel_sharded(r->model.n_params, CUVAE_DP_BUCKET_BYTES, cfg->shard_optimizer);
    if (!r->dp || cuvae_backend_join_data_parallel(r->be, r->dp)) return -1;
  }
  if (r->be->notice[0]) fprintf(log, "note: %s\n", r->be->notice);
  fprintf(log, "memory plan (%s): %s\n", r->be->name, r->be->memory_plan);
  fprintf(log, "GEMMs (%s, precision %s): %s\n", r->be->name, cuvae_precision_name(cfg->precision),
          r->be->gemm[0] ? r->be->gemm : "cuBLAS");
  const size_t n = r->model.n_params;
  r->params = malloc(n * sizeof(float));
  r->adam_m = malloc(n * sizeof(float));
  r->adam_v = malloc(n * sizeof(float));
  r->perm = malloc(r->train.n * sizeof(uint32_t));
  r->results = malloc((size_t)r->be->max_pending * sizeof *r->results);
  r->config_text = cuvae_config_to_ini(cfg);
  if (!r->params || !r->adam_m || !r->adam_v || !r->perm || !r->results || !r->config_text)
    return cuvae_error("out of memory");
  r->steps_per_epoch = (int64_t)(r->train.n / (size_t)cfg->batch_size);
  r->total = r->steps_per_epoch * cfg->epochs;
  if (cfg->max_steps > 0 && cfg->max_steps < r->total) r->total = cfg->max_steps;
  snprintf(r->ckpt_path, sizeof r->ckpt_path, "%s/checkpoint.cuvae", opts->out_dir);
  snprintf(r->metrics.path, sizeof r->metrics.path, "%s/metrics.jsonl", opts->out_dir);
  snprintf(r->steps.path, sizeof r->steps.path, "%s/steps.jsonl", opts->out_dir);
  return 0;
}

/* Which run to continue: --resume takes the checkpoint's state; a fresh run must not overwrite anything. A directory
 * with config.ini but neither checkpoint nor logs is a run stopped before its step-0 checkpoint: it starts over. */
static int choose_start(run *r, const cuvae_train_opts *opts, int64_t *start_step, FILE *log) {
  char path[CUVAE_PATH_MAX + 32];
  *start_step = 0;
  r->fresh = 1;
  if (opts->resume && file_exists(r->ckpt_path)) {
    r->fresh = 0;
    return resume_from_checkpoint(r, start_step, log);
  }
  snprintf(path, sizeof path, "%s/config.ini", opts->out_dir);
  if (opts->resume && (!file_exists(path) || file_exists(r->metrics.path) || file_exists(r->steps.path)))
    return cuvae_error("--resume %s: no checkpoint.cuvae there", opts->out_dir);
  if (opts->resume) {
    fprintf(log, "note: %s has no checkpoint yet (the run stopped before writing its first one); starting it from "
                 "step 0\n", opts->out_dir);
    return 0;
  }
  /* A fresh run never overwrites anything: not a finished run, nor the files of one that stopped early. */
  static const char *const run_files[] = {"checkpoint.cuvae", "config.ini", "metrics.jsonl", "steps.jsonl"};
  for (size_t i = 0; i < sizeof run_files / sizeof run_files[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", opts->out_dir, run_files[i]);
    if (file_exists(path))
      return cuvae_error("%s already holds a run (%s); continue it with --resume %s, or choose another --out",
                         opts->out_dir, run_files[i], opts->out_dir);
  }
  return 0;
}

/* The first writes to the run directory: config.ini, then (a fresh run) the step-0 checkpoint, so that any
 * directory holding logs also holds a checkpoint to resume from; then the logs, cut back to the checkpoint. */
static int open_run_files(run *r, const cuvae_train_opts *opts, int64_t step, FILE *log) {
  if (cuvae_make_dirs(opts->out_dir)) return -1;
  char path[CUVAE_PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/config.ini", opts->out_dir);
  if (write_text_file(path, r->config_text)) return -1;
  snprintf(path, sizeof path, "%s.tmp", r->ckpt_path);
  if (file_exists(path) && remove(path) == 0)
    fprintf(log, "note: removed %s, left by a checkpoint write that was cut short\n", path);
  if (r->fresh && save_checkpoint(r, 0)) return -1;
  if (!r->fresh && step < r->total && restore_epoch(r, step, log)) return -1;
  if (!r->fresh && step >= r->total) {
    r->metrics.bytes = r->metrics_done = cuvae_file_size(r->metrics.path);
    r->steps.bytes = cuvae_file_size(r->steps.path);
  }
  const char *mode = r->fresh ? "w" : "a";
  r->metrics.f = fopen(r->metrics.path, mode);
  if (!r->metrics.f) return cuvae_error("cannot open %s for writing: %s", r->metrics.path, strerror(errno));
  r->steps.f = fopen(r->steps.path, mode);
  if (!r->steps.f) return cuvae_error("cannot open %s for writing: %s", r->steps.path, strerror(errno));
  curve_load(r, step);
  return 0;
}

/* ---- the loop ---------------------------------------------------------------------------------------------------- */

/* Collects the pending steps (up to `step`): their losses join the epoch's sums, the steps.jsonl row is written when
 * `step` is a logging step, and the progress display moves on. */
static int collect_steps(run *r, int64_t step, cuvae_progress *prog) {
  int n = 0;
  if (r->be->collect(r->be, r->results, &n)) return -1;
  r->train_seconds += cuvae_now_seconds() - r->t_since_collect;
  for (int i = 0; i < n; i++) {
    r->acc.nelbo += r->results[i].loss.nelbo;
    r->acc.recon += r->results[i].loss.recon;
    r->acc.kl += r->results[i].loss.kl;
    r->acc.objective += r->results[i].loss.objective;
    r->acc_steps++;
  }
  const cuvae_step_result *res = &r->results[n - 1];
  if (r->rank == 0 && step % r->cfg->log_every == 0) {
    cuvae_log_row(&r->steps,
            "{\"step\": %" PRId64 ", \"epoch\": %" PRId64 ", \"nelbo\": %.9g, \"recon\": %.9g, \"kl\": %.9g, "
            "\"objective\": %.9g, \"grad_norm\": %.9g}\n",
            step, (step - 1) / r->steps_per_epoch + 1, res->loss.nelbo, res->loss.recon, res->loss.kl,
            res->loss.objective, res->grad_norm);
    cuvae_crash_point("steps-row", step, r->steps.f);
  }
  const double sps = r->train_seconds > 0 ? (double)r->acc_steps * r->cfg->batch_size / r->train_seconds : 0.0;
  cuvae_progress_step(prog, step, (int)((step - 1) / r->steps_per_epoch + 1), &res->loss, sps);
  return 0;
}

/* Rank 0's part of an epoch end: the metrics.jsonl row, the checkpoint, the pictures. */
static int write_epoch(run *r, int64_t step, const cuvae_loss *test, const char *dir, cuvae_progress *prog) {
  const int complete = step % r->steps_per_epoch == 0;
  const int64_t epoch = (step - 1) / r->steps_per_epoch + 1, n = r->acc_steps;
  const double seconds = epoch_seconds(r);
  const double sps = r->train_seconds > 0 ? (double)n * r->cfg->batch_size / r->train_seconds : 0.0;
  cuvae_log_row(&r->metrics,
          "{\"epoch\": %" PRId64 ", \"step\": %" PRId64 ", \"train_nelbo\": %.6f, \"train_recon\": %.6f, "
          "\"train_kl\": %.6f, \"train_objective\": %.6f, \"test_nelbo\": %.6f, \"recon\": %.6f, \"kl\": %.6f, "
          "\"samples_per_s\": %.1f, \"seconds\": %.3f, \"complete\": %s}\n",
          epoch, step, r->acc.nelbo / n, r->acc.recon / n, r->acc.kl / n, r->acc.objective / n, test->nelbo,
          test->recon, test->kl, sps, seconds, complete ? "true" : "false");
  if (complete) r->metrics_done = r->metrics.bytes;
  cuvae_crash_point("metrics", step, r->metrics.f);
  cuvae_progress_log(prog, "epoch %lld step %lld: train nelbo %.3f | test nelbo %.3f (recon %.3f, kl %.3f) | "
                           "%.0f samples/s | %.1f s",
                     (long long)epoch, (long long)step, r->acc.nelbo / n, test->nelbo, test->recon, test->kl, sps,
                     seconds);
  if (save_checkpoint(r, step)) return -1;
  cuvae_crash_point("checkpoint-saved", step, NULL);
  curve_add(r, epoch, (double)step / (double)r->steps_per_epoch, as_logged(r->acc.nelbo / n),
            as_logged(test->nelbo));
  write_pictures(r, dir, step, prog);
  return 0;
}

/* The end of an epoch, or the run's last step: evaluation (every rank: it is sharded), then rank 0 writes. With
 * several ranks they agree on the outcome, so a failed write stops every rank with rank 0's message. */
static int end_epoch(run *r, int64_t step, const char *dir, cuvae_progress *prog, cuvae_train_summary *summary) {
  cuvae_loss test;
  if (r->be->evaluate(r->be, &r->test, r->cfg->eval_batch_size, &test)) return -1;
  cuvae_crash_point("eval", step, NULL);
  int rc = fetch_state(r);
  if (rc == 0 && r->rank == 0) rc = write_epoch(r, step, &test, dir, prog);
  if (r->ranks > 1 && (rc = cuvae_dist_agree(rc)) != 0) summary->failure_agreed = 1;
  if (rc) return -1;
  summary->test = test;
  summary->evaluated = 1;
  if (step % r->steps_per_epoch == 0) {
    r->acc = (cuvae_loss){0};
    r->acc_steps = 0;
    r->seconds_before = r->train_seconds = 0.0;
    r->t_epoch = cuvae_now_seconds();
  }
  return 0;
}

/* Data parallel, after rank 0 chose where to start: every rank takes its step and, on a resume, its state. */
static int share_start(run *r, int64_t *step) {
  int64_t head[2] = {*step, r->fresh};
  if (cuvae_dist_broadcast(head, sizeof head)) return -1;
  *step = head[0];
  r->fresh = (int)head[1];
  if (r->fresh) return 0;  /* every rank initialised the same parameters from the seed */
  const size_t bytes = r->model.n_params * sizeof(float);  /* rank 0's: the checkpoint's (resume_from_checkpoint) */
  if (cuvae_dist_broadcast(r->params, bytes) || cuvae_dist_broadcast(r->adam_m, bytes) ||
      cuvae_dist_broadcast(r->adam_v, bytes))
    return -1;
  return r->rank == 0 ? 0 : r->be->set_state(r->be, r->params, r->adam_m, r->adam_v);
}

/* Everything before the first step: the run's pieces on every rank; on rank 0 the start (fresh or resumed) and the
 * run directory; then, with several ranks, agreement (a failure anywhere stops all) and the shared start. */
static int set_up(run *r, const cuvae_config *cfg, const cuvae_train_opts *opts, int64_t *step, FILE *log,
                  cuvae_train_summary *summary) {
  int rc = build_run(r, cfg, opts, log);
  if (r->ranks > 1 && (rc = cuvae_dist_agree(rc)) != 0) summary->failure_agreed = 1;
  if (rc == 0) rc = fetch_state(r);  /* the initial state, for a fresh run's step-0 checkpoint */
  if (rc == 0 && r->rank == 0) rc = choose_start(r, opts, step, log) || open_run_files(r, opts, *step, log) ? -1 : 0;
  if (r->ranks == 1 || summary->failure_agreed) return rc;
  if (cuvae_dist_agree(rc)) {
    summary->failure_agreed = 1;
    return -1;
  }
  return share_start(r, step);
}

/* The steps from `*step` to the end (or a stop). Steps are enqueued on the backend and their results collected once
 * per log interval (and at each epoch end), so a device backend runs ahead of the host between collects. With
 * several ranks each takes its slice of every batch of the global permutation, and they collect at the same steps. */
static int train_loop(run *r, const cuvae_train_opts *opts, int64_t *step, cuvae_progress *prog,
                      cuvae_train_summary *summary) {
  const cuvae_config *cfg = r->cfg;
  const int64_t spe = r->steps_per_epoch;
  int64_t epoch_loaded = -1, collected = *step;  /* collected: steps whose results are in */
  r->t_epoch = r->t_since_collect = cuvae_now_seconds();
  while (*step < r->total) {
    const int64_t epoch = *step / spe;
    if (epoch != epoch_loaded) {
      cuvae_shuffle(r->perm, r->train.n, cfg->seed, epoch);
      epoch_loaded = epoch;
    }
    const size_t first = (size_t)(*step % spe) * (size_t)cfg->batch_size + (size_t)r->rank * (size_t)r->local_batch;
    if (r->be->train_step(r->be, r->perm + first, r->local_batch, *step)) return -1;
    const int64_t s = ++*step;
    cuvae_crash_point("step", s, NULL);
    const int epoch_end = s % spe == 0 || s == r->total;
    /* A stop request: this process's; with several ranks, any rank's, looked at after every step by all of them
     * (one small all-reduce), so they all stop after the same step. */
    const int stop_flag = r->ranks > 1 ? cuvae_dist_any(stop_requested) : stop_requested != 0;
    if (!(epoch_end || stop_flag || s % cfg->log_every == 0 || s - collected >= r->be->max_pending)) continue;
    if (collect_steps(r, s, prog)) {
      *step = collected;  /* the failed step and those after it were not applied */
      summary->failure_agreed = r->ranks > 1 ? 2 : 0;  /* a loss that is not finite: the loss is global */
      return -1;
    }
    collected = s;
    const int stop = stop_flag && s < r->total;
    if (epoch_end ? end_epoch(r, s, opts->out_dir, prog, summary)
                  : stop && (fetch_state(r) || (r->rank == 0 && save_checkpoint(r, s))))
      return -1;
    if (stop) {
      summary->interrupted = 1;
      cuvae_progress_log(prog, "stopped at step %lld (epoch %lld, step %lld of %lld); checkpoint saved: %s",
                         (long long)s, (long long)((s - 1) / spe + 1), (long long)((s - 1) % spe + 1), (long long)spe,
                         r->ckpt_path);
      return 0;
    }
    r->t_since_collect = cuvae_now_seconds();
  }
  return 0;
}

/* The run's first line: version, device, data, model, schedule; with several ranks their split of the batch. */
static void print_banner(const run *r, int64_t step, FILE *log) {
  char ranks[128] = "";
  if (r->ranks > 1)
    snprintf(ranks, sizeof ranks, " | %d ranks x %d rows (batch %d)", r->ranks, r->local_batch, r->cfg->batch_size);
  fprintf(log, "cuvae %s | device %s (%s) | data %zu train, %zu test, D=%zu | model %zu parameters | %lld steps "
               "(%lld per epoch)%s%s\n",
          CUVAE_VERSION_STRING, r->be->name, cuvae_blas_describe(), r->train.n, r->test.n, r->train.dim,
          r->model.n_values, (long long)r->total, (long long)r->steps_per_epoch, ranks, step > 0 ? " | resumed" : "");
  if (step >= r->total)
    fprintf(log, "nothing to train: the run is already at step %lld of %lld\n", (long long)step, (long long)r->total);
}

int cuvae_train(const cuvae_config *cfg, const cuvae_train_opts *opts, cuvae_train_summary *summary) {
  run r;
  memset(&r, 0, sizeof r);
  memset(summary, 0, sizeof *summary);
  r.rank = cuvae_dist_rank();
  r.ranks = cuvae_dist_size();
  /* Only rank 0 writes: the others' log lines go nowhere (their errors still reach the caller). */
  FILE *quiet = r.rank == 0 ? NULL : fopen("/dev/null", "w");
  FILE *log = r.rank != 0 && quiet ? quiet : opts->log ? opts->log : stderr;
  stop_requested = 0;
  int64_t step = 0;
  if (set_up(&r, cfg, opts, &step, log, summary)) {
    run_free(&r);
    if (quiet) fclose(quiet);
    return -1;
  }
  summary->steps_per_epoch = r.steps_per_epoch;
  print_banner(&r, step, log);
  cuvae_progress prog;
  cuvae_progress_begin(&prog, log, r.rank == 0 ? opts->progress : CUVAE_PROGRESS_LINES, cfg->log_every, step,
                       r.total, cfg->epochs);
  const double t_run = cuvae_now_seconds();
  const int rc = train_loop(&r, opts, &step, &prog, summary);
  cuvae_progress_end(&prog);
  if (rc != 0 && r.rank == 0 && file_exists(r.ckpt_path)) fprintf(log, "the last good checkpoint is %s\n", r.ckpt_path);
  summary->step = step;
  summary->epochs_completed = (int)(step / r.steps_per_epoch);
  summary->seconds = cuvae_now_seconds() - t_run;
  run_free(&r);
  if (quiet) fclose(quiet);
  return rc;
}
