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
#include "active_units.h"
#include "cuvae/plot.h"
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
  cuvae_dataset train, test, val;     /* val: [data] validation, held out of the training set (empty when none) */
  cuvae_model model;
  cuvae_backend *be;
  cuvae_data_parallel *dp;           /* with several ranks: the gradient all-reduce the backend calls; else NULL */
  int rank, ranks, local_batch;      /* this process among `ranks`; its rows of each batch (batch_size / ranks) */
  char *config_text;
  float *params, *adam_m, *adam_v;   /* host copies for checkpoints */
  float *ema, *window;               /* [train] ema: the EMA's; skip_zscore: the skip window's (else NULL) */
  cuvae_skip_state skip;             /* the skip rule's state (docs/MATH.md (7.4)) */
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
  cuvae_loss acc;                    /* over the applied steps (acc_steps - acc_skipped) */
  int64_t acc_steps, acc_skipped;
  double sum_norm, max_norm;         /* the applied steps' gradient norms: sum; every finite one: largest */
  float lr;                          /* the rate of the last collected step */
  double best_val;                   /* [data] validation: the best epoch's NELBO, its epoch (0: none yet) and the */
  int64_t best_epoch, bad_epochs;    /* epochs since then without improvement */
  char best_path[CUVAE_PATH_MAX + 32];
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
  cuvae_dataset_free(&r->val);
  free(r->ema);
  free(r->window);
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
static int fetch_state(run *r) {
  cuvae_extra_state x = {r->ema, {0, 0, 0, 0}, r->window};
  if (r->be->get_state(r->be, r->params, r->adam_m, r->adam_v) || r->be->get_extra_state(r->be, &x)) return -1;
  r->skip = x.skip;
  return 0;
}

/* The checkpoint of `step` from the state fetch_state took. Mid-epoch (an interrupt, or max_steps) the epoch's sums
 * and times travel with it, so a resumed run writes that epoch's row as an uninterrupted run would; at an epoch
 * boundary they are zero. The logs are synced first: a checkpoint never counts rows that may not be on disk, and a
 * failed log write stops the run with the previous checkpoint in place. */
static int save_checkpoint_to(run *r, const char *path, int64_t step) {
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
  ck.ema = r->ema;
  ck.skip = (cuvae_skip_record){r->skip.skipped, r->skip.in_a_row, r->skip.count, r->skip.pos,
                                r->window ? (uint32_t)r->cfg->skip_window : 0u, r->window};
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
    g->epoch_skipped = (uint64_t)r->acc_skipped;
    g->sum_grad_norm = r->sum_norm;
    g->max_grad_norm = r->max_norm;
  }
  g->best_val_nelbo = r->best_val;
  g->best_epoch = r->best_epoch;
  g->bad_epochs = r->bad_epochs;
  g->metrics_bytes = r->metrics_done;
  g->steps_bytes = r->steps.bytes;
  return cuvae_checkpoint_save(path, &ck);
}

static int save_checkpoint(run *r, int64_t step) { return save_checkpoint_to(r, r->ckpt_path, step); }

/* The checkpoint's EMA and skip state into the backend and the host copies (what share_start sends): a checkpoint
 * without an EMA (the run had ema = 0) starts it at its weights; a skip window of another length starts empty. */
static int restore_extra(run *r, const cuvae_checkpoint *ck, FILE *log) {
  const size_t bytes = r->model.n_params * sizeof(float);
  if (r->ema) {
    if (!ck->ema) fprintf(log, "note: the checkpoint holds no EMA of the weights; it starts at its weights\n");
    memcpy(r->ema, ck->ema ? ck->ema : ck->params, bytes);
  }
  r->skip = (cuvae_skip_state){ck->skip.skipped, ck->skip.in_a_row, 0, 0};
  if (r->window && ck->skip.window_len == (uint32_t)r->cfg->skip_window) {
    memcpy(r->window, ck->skip.window, ck->skip.window_len * sizeof(float));
    r->skip.count = ck->skip.count;
    r->skip.pos = ck->skip.pos;
  } else if (r->window && ck->skip.window_len) {
    fprintf(log, "note: the checkpoint's skip window holds %u norms, the config's %d: it starts empty\n",
            ck->skip.window_len, r->cfg->skip_window);
  }
  r->best_val = ck->progress.best_val_nelbo;
  r->best_epoch = ck->progress.best_epoch;
  r->bad_epochs = ck->progress.bad_epochs;
  const cuvae_extra_state x = {r->ema, r->skip, r->window};
  return r->be->set_extra_state(r->be, &x);
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
    rc = restore_extra(r, &ck, log);
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
    r->acc_skipped = (int64_t)g->epoch_skipped;
    r->sum_norm = g->sum_grad_norm;
    r->max_norm = g->max_grad_norm;
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
  if (cuvae_hold_out(cfg, &r->train, &r->val)) return -1;
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
  if (cfg->ema > 0.0f) r->ema = malloc(n * sizeof(float));
  if (cfg->skip_zscore > 0.0f) r->window = calloc((size_t)cfg->skip_window, sizeof(float));
  if (!r->params || !r->adam_m || !r->adam_v || !r->perm || !r->results || !r->config_text ||
      (cfg->ema > 0.0f && !r->ema) || (cfg->skip_zscore > 0.0f && !r->window))
    return cuvae_error("out of memory");
  r->steps_per_epoch = (int64_t)(r->train.n / (size_t)cfg->batch_size);
  r->total = r->steps_per_epoch * cfg->epochs;
  if (cfg->max_steps > 0 && cfg->max_steps < r->total) r->total = cfg->max_steps;
  snprintf(r->ckpt_path, sizeof r->ckpt_path, "%s/checkpoint.cuvae", opts->out_dir);
  snprintf(r->best_path, sizeof r->best_path, "%s/best.cuvae", opts->out_dir);
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
    const cuvae_step_result *q = &r->results[i];
    r->acc_steps++;
    r->lr = q->lr;
    if (isfinite(q->grad_norm) && q->grad_norm > r->max_norm) r->max_norm = q->grad_norm;
    if (q->skipped) {  /* not applied: counted, not averaged (docs/MATH.md (7.4)) */
      r->acc_skipped++;
      continue;
    }
    r->acc.nelbo += q->loss.nelbo;
    r->acc.recon += q->loss.recon;
    r->acc.kl += q->loss.kl;
    r->acc.objective += q->loss.objective;
    r->sum_norm += q->grad_norm;
  }
  const cuvae_step_result *res = &r->results[n - 1];
  if (r->rank == 0 && step % r->cfg->log_every == 0) {
    char v[5][32];  /* a skipped step's values may be non-finite: JSON null */
    const double x[5] = {res->loss.nelbo, res->loss.recon, res->loss.kl, res->loss.objective, res->grad_norm};
    for (int i = 0; i < 5; i++) snprintf(v[i], sizeof v[i], isfinite(x[i]) ? "%.9g" : "null", x[i]);
    cuvae_log_row(&r->steps,
            "{\"step\": %" PRId64 ", \"epoch\": %" PRId64 ", \"nelbo\": %s, \"recon\": %s, \"kl\": %s, "
            "\"objective\": %s, \"grad_norm\": %s, \"lr\": %.9g, \"skipped\": %d}\n",
            step, (step - 1) / r->steps_per_epoch + 1, v[0], v[1], v[2], v[3], v[4], (double)res->lr, res->skipped);
    cuvae_crash_point("steps-row", step, r->steps.f);
  }
  const double sps = r->train_seconds > 0 ? (double)r->acc_steps * r->cfg->batch_size / r->train_seconds : 0.0;
  cuvae_progress_step(prog, step, (int)((step - 1) / r->steps_per_epoch + 1), &res->loss, sps);
  return 0;
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
  const double seconds = epoch_seconds(r), dn = n > 0 ? (double)n : NAN;
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
  if (save_checkpoint(r, step)) return -1;
  if (e->improved && save_checkpoint_to(r, r->best_path, step)) return -1;
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
      cuvae_active_units(r->be, &r->model, &r->test, 0.01, &e->active_units) || fetch_state(r))
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
static int end_epoch(run *r, int64_t step, const char *dir, cuvae_progress *prog, cuvae_train_summary *summary) {
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

/* Data parallel, after rank 0 chose where to start: every rank takes its step and, on a resume, its state. */
static int share_start(run *r, int64_t *step) {
  int64_t head[2] = {*step, r->fresh};
  if (cuvae_dist_broadcast(head, sizeof head)) return -1;
  *step = head[0];
  r->fresh = (int)head[1];
  if (r->fresh) return 0;  /* every rank initialised the same parameters from the seed */
  const size_t bytes = r->model.n_params * sizeof(float);  /* rank 0's: the checkpoint's (resume_from_checkpoint) */
  double best[3] = {r->best_val, (double)r->best_epoch, (double)r->bad_epochs};
  if (cuvae_dist_broadcast(r->params, bytes) || cuvae_dist_broadcast(r->adam_m, bytes) ||
      cuvae_dist_broadcast(r->adam_v, bytes) || (r->ema && cuvae_dist_broadcast(r->ema, bytes)) ||
      (r->window && cuvae_dist_broadcast(r->window, (size_t)r->cfg->skip_window * sizeof(float))) ||
      cuvae_dist_broadcast(&r->skip, sizeof r->skip) || cuvae_dist_broadcast(best, sizeof best))
    return -1;
  r->best_val = best[0];
  r->best_epoch = (int64_t)best[1];
  r->bad_epochs = (int64_t)best[2];
  if (r->rank == 0) return 0;
  const cuvae_extra_state x = {r->ema, r->skip, r->window};
  return r->be->set_state(r->be, r->params, r->adam_m, r->adam_v) || r->be->set_extra_state(r->be, &x) ? -1 : 0;
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
    if (summary->early_stopped) return 0;
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
  if (rc == 0 && r.rank == 0 && file_exists(r.metrics.path) && cuvae_log_sync(&r.metrics) == 0 &&
      cuvae_plot_run(opts->out_dir, NULL))  /* the run's curves (cuvae plot) */
    fprintf(log, "warning: the curves were not drawn: %s\n", cuvae_last_error());
  summary->step = step;
  summary->epochs_completed = (int)(step / r.steps_per_epoch);
  summary->seconds = cuvae_now_seconds() - t_run;
  run_free(&r);
  if (quiet) fclose(quiet);
  return rc;
}
