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

#include "backend.h"
#include "cuvae/blas.h"
#include "cuvae/checkpoint.h"
#include "cuvae/cpu.h"
#include "cuvae/data.h"
#include "cuvae/error.h"
#include "cuvae/image.h"
#include "cuvae/rng.h"
#include "progress.h"
#include "train_internal.h"

static volatile sig_atomic_t stop_requested = 0;

void cuvae_train_request_stop(void) { stop_requested = 1; }

/* x ~ Bernoulli(x) for every value of ds, the uniforms of stream `seed` in row order, a chunk of rows at a time. */
static int binarize_split(cuvae_dataset *ds, uint64_t seed) {
  enum { CHUNK_ROWS = 4096 };  /* a multiple of 4, so every chunk starts at a multiple-of-4 offset */
  cuvae_noise *g = cuvae_noise_create(seed);
  float *u = malloc((size_t)CHUNK_ROWS * ds->dim * sizeof *u);
  int rc = g && u ? 0 : cuvae_error("out of memory binarizing the data");
  for (size_t start = 0; rc == 0 && start < ds->n; start += CHUNK_ROWS) {
    const size_t rows = ds->n - start < CHUNK_ROWS ? ds->n - start : CHUNK_ROWS;
    const size_t n = rows * ds->dim;
    rc = cuvae_noise_uniform(g, (uint64_t)start * ds->dim, u, n);
    if (rc == 0) binarize_cpu(ds->x + start * ds->dim, u, ds->x + start * ds->dim, n);
  }
  free(u);
  cuvae_noise_destroy(g);
  return rc;
}

int cuvae_load_split(const cuvae_config *cfg, int which, cuvae_dataset *ds) {
  const char *images = which == 0 ? cfg->train_images : cfg->test_images;
  const char *labels = which == 0 ? cfg->train_labels : cfg->test_labels;
  if (cuvae_dataset_load(ds, images, labels)) return -1;
  if (cfg->conditional) {  /* the conditional VAE reads every example's class */
    const char *problem = NULL;
    if (!ds->labels) problem = "has no label file ([data] train_labels / test_labels)";
    for (size_t i = 0; !problem && i < ds->n; i++)
      if (ds->labels[i] >= cfg->classes) problem = "has a label outside 0..classes-1";
    if (problem) {
      cuvae_error("%s: [model] conditional = true, but the %s split %s (classes = %d)", images,
                  which == 0 ? "train" : "test", problem, cfg->classes);
      cuvae_dataset_free(ds);
      return -1;
    }
  }
  if (cfg->likelihood == CUVAE_LIK_BERNOULLI) {
    /* A Bernoulli decoder models x in [0, 1]; anything else makes the loss meaningless. */
    const size_t total = ds->n * ds->dim;
    for (size_t i = 0; i < total; i++) {
      if (!(ds->x[i] >= 0.0f && ds->x[i] <= 1.0f)) {
        cuvae_error("%s: value %g at example %zu, feature %zu is outside [0, 1], which the Bernoulli decoder "
                    "needs (use likelihood = gaussian for other data)",
                    images, (double)ds->x[i], i / ds->dim, i % ds->dim);
        cuvae_dataset_free(ds);
        return -1;
      }
    }
  }
  /* Binarization drawn once (include/cuvae/rng.h): both splits with binarize = static; the test split also with
   * dynamic, so every evaluation of a run sees the same binary test set. */
  if (cfg->binarize == CUVAE_BINARIZE_STATIC || (cfg->binarize == CUVAE_BINARIZE_DYNAMIC && which == 1)) {
    if (binarize_split(ds, cfg->seed ^ CUVAE_SEED_STATIC ^ (uint64_t)which)) {
      cuvae_dataset_free(ds);
      return -1;
    }
  }
  return 0;
}

int cuvae_make_dirs(const char *path) {
  char buf[CUVAE_PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return cuvae_error("path too long: %s", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      const char saved = *p;
      *p = '\0';
      if (mkdir(buf, 0777) != 0 && errno != EEXIST) return cuvae_error("cannot create directory %s: %s", buf, strerror(errno));
      *p = saved;
      if (saved == '\0') break;
    }
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return cuvae_error("%s is not a directory", path);
  return 0;
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static int write_text_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) return cuvae_error("cannot write %s: %s", path, strerror(errno));
  const size_t n = strlen(text);
  const int ok = fwrite(text, 1, n, f) == n;
  if (fclose(f) != 0 || !ok) return cuvae_error("cannot write %s: %s", path, strerror(errno));
  return 0;
}

/* All the state of one run, so the loop below reads as the algorithm. */
typedef struct run {
  const cuvae_config *cfg;
  cuvae_dataset train, test;
  cuvae_model model;
  cuvae_backend *be;
  char *config_text;
  float *params, *adam_m, *adam_v;   /* host copies for checkpoints */
  cuvae_step_result *results;        /* [max_pending] collected step results */
  uint32_t *perm;
  char ckpt_path[CUVAE_PATH_MAX + 32], metrics_path[CUVAE_PATH_MAX + 32], steps_path[CUVAE_PATH_MAX + 32];
  FILE *metrics, *steps;
  double *curve;                     /* loss.png: (step, train nelbo, test nelbo) per metrics line */
  size_t n_curve, cap_curve;
} run;

static void run_free(run *r) {
  if (r->be) r->be->destroy(r->be);
  cuvae_dataset_free(&r->train);
  cuvae_dataset_free(&r->test);
  free(r->config_text);
  free(r->params);
  free(r->adam_m);
  free(r->adam_v);
  free(r->perm);
  free(r->results);
  free(r->curve);
  if (r->metrics) fclose(r->metrics);
  if (r->steps) fclose(r->steps);
}

static int save_checkpoint(run *r, int64_t step) {
  if (r->be->get_state(r->be, r->params, r->adam_m, r->adam_v)) return -1;
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
  if (rc == 0 && cuvae_checkpoint_check_layout(&ck, &r->model))
    rc = cuvae_error("--resume %s: %s", r->ckpt_path, cuvae_last_error());
  if (rc == 0 && (saved.batch_size != r->cfg->batch_size || saved.seed != r->cfg->seed))
    fprintf(log, "note: resuming with a different batch_size or seed than the run started with; the result will "
                 "not match an uninterrupted run\n");
  if (rc == 0) rc = r->be->set_state(r->be, ck.params, ck.adam_m, ck.adam_v);
  *step = ck.step;
  cuvae_checkpoint_free(&ck);
  return rc;
}

/* ---- pictures: samples.png, recon.png, loss.png in the run directory at every epoch end ---------------------- */

static void curve_add(run *r, int64_t step, double train_nelbo, double test_nelbo) {
  if (r->n_curve == r->cap_curve) {
    const size_t cap = r->cap_curve ? 2 * r->cap_curve : 64;
    double *p = realloc(r->curve, cap * 3 * sizeof *p);
    if (!p) return;  /* the plot then misses a point; training is unaffected */
    r->curve = p;
    r->cap_curve = cap;
  }
  double *e = r->curve + 3 * r->n_curve++;
  e[0] = (double)step;
  e[1] = train_nelbo;
  e[2] = test_nelbo;
}

static double json_number(const char *line, const char *key) {
  const char *p = strstr(line, key);
  return p ? strtod(p + strlen(key), NULL) : NAN;
}

/* On resume: the epochs already in metrics.jsonl (up to the checkpoint's step), so loss.png shows the whole run. */
static void curve_load(run *r, int64_t upto) {
  FILE *f = fopen(r->metrics_path, "r");
  if (!f) return;
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    const double step = json_number(line, "\"step\": ");
    if (step > 0 && step <= (double)upto)
      curve_add(r, (int64_t)step, json_number(line, "\"train_nelbo\": "), json_number(line, "\"test_nelbo\": "));
  }
  fclose(f);
}

/* The decoder means of 64 prior samples (the same z every epoch: cuvae_prior_samples with the config's seed, which
 * `cuvae sample` also uses), the first 32 test examples beside their reconstructions, and the loss curve. A picture
 * that cannot be written is a warning; training goes on. */
static void write_pictures(run *r, const char *dir, int64_t steps_per_epoch, cuvae_progress *prog) {
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
  double *xy = malloc(r->n_curve * 3 * sizeof *xy);
  if (!xy) return;
  for (size_t i = 0; i < r->n_curve; i++) {
    xy[i] = r->curve[3 * i] / (double)steps_per_epoch;  /* epochs, fractional for an interrupted one */
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

static int prepare(run *r, const cuvae_config *cfg, const cuvae_train_opts *opts, int64_t *start_step, FILE *log) {
  r->cfg = cfg;
  if (cuvae_load_split(cfg, 0, &r->train) || cuvae_load_split(cfg, 1, &r->test)) return -1;
  if (r->train.dim != r->test.dim)
    return cuvae_error("train data has %zu features per example but test data has %zu", r->train.dim, r->test.dim);
  if ((size_t)cfg->batch_size > r->train.n)
    return cuvae_error("[train] batch_size: %d is larger than the training set (%zu examples)", cfg->batch_size,
                       r->train.n);
  if (r->train.n > UINT32_MAX) return cuvae_error("training set of %zu examples is too large", r->train.n);
  if (cuvae_model_build(&r->model, r->train.dim, cfg)) return -1;
  r->be = cuvae_backend_create(opts->device ? opts->device : "auto", &r->model, cfg, &r->train, &r->test);
  if (!r->be) return -1;
  if (r->be->notice[0]) fprintf(log, "note: %s\n", r->be->notice);
  fprintf(log, "memory plan (%s): %s\n", r->be->name, r->be->memory_plan);
  const size_t n = r->model.n_params;
  r->params = malloc(n * sizeof(float));
  r->adam_m = malloc(n * sizeof(float));
  r->adam_v = malloc(n * sizeof(float));
  r->perm = malloc(r->train.n * sizeof(uint32_t));
  r->results = malloc((size_t)r->be->max_pending * sizeof *r->results);
  r->config_text = cuvae_config_to_ini(cfg);
  if (!r->params || !r->adam_m || !r->adam_v || !r->perm || !r->results || !r->config_text) return cuvae_error("out of memory");

  snprintf(r->ckpt_path, sizeof r->ckpt_path, "%s/checkpoint.cuvae", opts->out_dir);
  snprintf(r->metrics_path, sizeof r->metrics_path, "%s/metrics.jsonl", opts->out_dir);
  snprintf(r->steps_path, sizeof r->steps_path, "%s/steps.jsonl", opts->out_dir);
  *start_step = 0;
  if (opts->resume) {
    if (!file_exists(r->ckpt_path)) return cuvae_error("--resume %s: no checkpoint.cuvae there", opts->out_dir);
    if (resume_from_checkpoint(r, start_step, log)) return -1;
    curve_load(r, *start_step);
  } else {
    /* A fresh run never overwrites anything: not a finished run, nor the files of one that stopped early. */
    static const char *const run_files[] = {"checkpoint.cuvae", "config.ini", "metrics.jsonl", "steps.jsonl"};
    for (size_t i = 0; i < sizeof run_files / sizeof run_files[0]; i++) {
      char path[CUVAE_PATH_MAX + 32];
      snprintf(path, sizeof path, "%s/%s", opts->out_dir, run_files[i]);
      if (file_exists(path))
        return cuvae_error("%s already holds a run (%s); continue it with --resume %s, or choose another --out",
                           opts->out_dir, run_files[i], opts->out_dir);
    }
  }

  /* Nothing has been written so far; from here on the run directory is ours. */
  if (cuvae_make_dirs(opts->out_dir)) return -1;
  char path[CUVAE_PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/config.ini", opts->out_dir);
  if (write_text_file(path, r->config_text)) return -1;
  const char *mode = opts->resume ? "a" : "w";
  r->metrics = fopen(r->metrics_path, mode);
  r->steps = r->metrics ? fopen(r->steps_path, mode) : NULL;
  if (!r->metrics || !r->steps) return cuvae_error("cannot open %s for writing: %s", r->metrics_path, strerror(errno));
  return 0;
}

int cuvae_train(const cuvae_config *cfg, const cuvae_train_opts *opts, cuvae_train_summary *summary) {
  FILE *log = opts->log ? opts->log : stderr;
  run r;
  memset(&r, 0, sizeof r);
  memset(summary, 0, sizeof *summary);
  stop_requested = 0;
  int64_t step = 0;
  if (prepare(&r, cfg, opts, &step, log)) {
    run_free(&r);
    return -1;
  }

  const int B = cfg->batch_size;
  const int64_t steps_per_epoch = (int64_t)(r.train.n / (size_t)B);  /* the last partial batch is dropped */
  int64_t total = steps_per_epoch * cfg->epochs;
  if (cfg->max_steps > 0 && cfg->max_steps < total) total = cfg->max_steps;
  fprintf(log, "cuvae %s | device %s (%s) | data %zu train, %zu test, D=%zu | model %zu parameters | %lld steps "
               "(%lld per epoch)%s\n",
          CUVAE_VERSION_STRING, r.be->name, cuvae_blas_describe(), r.train.n, r.test.n, r.train.dim, r.model.n_params, (long long)total,
          (long long)steps_per_epoch, step > 0 ? " | resumed" : "");
  if (step >= total) fprintf(log, "nothing to train: the run is already at step %lld of %lld\n", (long long)step,
                             (long long)total);

  cuvae_progress prog;
  cuvae_progress_begin(&prog, log, opts->progress, cfg->log_every, step, total, cfg->epochs);
  const double t_run = cuvae_now_seconds();
  int rc = 0;
  int64_t epoch_loaded = -1;
  cuvae_loss acc = {0};
  int64_t acc_steps = 0;
  double t_epoch = cuvae_now_seconds(), train_seconds = 0.0;

  /* Steps are enqueued on the backend and their results collected once per log interval (and at each epoch
   * end), so a device backend runs ahead of the host between collects. */
  int64_t collected = step;   /* steps whose results are in */
  double t_since_collect = cuvae_now_seconds();
  while (step < total && rc == 0) {
    const int64_t epoch = step / steps_per_epoch;
    if (epoch != epoch_loaded) {
      cuvae_shuffle(r.perm, r.train.n, cfg->seed, epoch);
      epoch_loaded = epoch;
    }
    if (r.be->train_step(r.be, r.perm + (size_t)(step % steps_per_epoch) * (size_t)B, B, step)) {
      rc = -1;
      break;
    }
    step++;
    const int epoch_end = step % steps_per_epoch == 0 || step == total;
    if (!(epoch_end || stop_requested || step % cfg->log_every == 0 || step - collected >= r.be->max_pending))
      continue;
    int n = 0;
    if (r.be->collect(r.be, r.results, &n)) {
      step = collected;  /* the failed step and those after it were not applied */
      rc = -1;
      break;
    }
    train_seconds += cuvae_now_seconds() - t_since_collect;
    for (int i = 0; i < n; i++) {
      acc.nelbo += r.results[i].loss.nelbo;
      acc.recon += r.results[i].loss.recon;
      acc.kl += r.results[i].loss.kl;
      acc.objective += r.results[i].loss.objective;
      acc_steps++;
    }
    collected = step;
    const cuvae_step_result *res = &r.results[n - 1];
    if (step % cfg->log_every == 0)
      fprintf(r.steps,
              "{\"step\": %" PRId64 ", \"epoch\": %" PRId64 ", \"nelbo\": %.9g, \"recon\": %.9g, \"kl\": %.9g, "
              "\"objective\": %.9g, \"grad_norm\": %.9g}\n",
              step, (step - 1) / steps_per_epoch + 1, res->loss.nelbo, res->loss.recon, res->loss.kl,
              res->loss.objective, res->grad_norm);
    const double sps = train_seconds > 0 ? (double)acc_steps * B / train_seconds : 0.0;
    cuvae_progress_step(&prog, step, (int)epoch + 1, &res->loss, sps);

    if (epoch_end || stop_requested) {
      cuvae_loss test;
      if (r.be->evaluate(r.be, &r.test, cfg->eval_batch_size, &test)) {
        rc = -1;
        break;
      }
      const double seconds = cuvae_now_seconds() - t_epoch;
      fprintf(r.metrics,
              "{\"epoch\": %" PRId64 ", \"step\": %" PRId64 ", \"train_nelbo\": %.6f, \"train_recon\": %.6f, "
              "\"train_kl\": %.6f, \"train_objective\": %.6f, \"test_nelbo\": %.6f, \"recon\": %.6f, \"kl\": %.6f, "
              "\"samples_per_s\": %.1f, \"seconds\": %.3f, \"complete\": %s}\n",
              epoch + 1, step, acc.nelbo / acc_steps, acc.recon / acc_steps, acc.kl / acc_steps,
              acc.objective / acc_steps, test.nelbo,
              test.recon, test.kl, sps, seconds, step % steps_per_epoch == 0 ? "true" : "false");
      fflush(r.metrics);
      fflush(r.steps);
      cuvae_progress_log(&prog, "epoch %lld step %lld: train nelbo %.3f | test nelbo %.3f (recon %.3f, kl %.3f) | "
                                "%.0f samples/s | %.1f s",
                         (long long)epoch + 1, (long long)step, acc.nelbo / acc_steps, test.nelbo, test.recon,
                         test.kl, sps, seconds);
      if (save_checkpoint(&r, step)) {
        rc = -1;
        break;
      }
      curve_add(&r, step, acc.nelbo / acc_steps, test.nelbo);
      write_pictures(&r, opts->out_dir, steps_per_epoch, &prog);
      summary->test = test;
      summary->epochs_completed = (int)(step / steps_per_epoch);
      acc = (cuvae_loss){0};
      acc_steps = 0;
      train_seconds = 0.0;
      t_epoch = cuvae_now_seconds();
      if (stop_requested && step < total) {
        summary->interrupted = 1;
        cuvae_progress_log(&prog, "stopped at step %lld; checkpoint saved; continue with --resume", (long long)step);
        break;
      }
    }
    t_since_collect = cuvae_now_seconds();
  }
  cuvae_progress_end(&prog);
  if (rc != 0 && file_exists(r.ckpt_path))
    fprintf(log, "the last good checkpoint is %s\n", r.ckpt_path);
  summary->step = step;
  summary->seconds = cuvae_now_seconds() - t_run;
  run_free(&r);
  return rc;
}
