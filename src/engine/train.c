/* The training loop (see include/cuvae/train.h; the epoch ends are in train_epoch.c). Order of work: everything that
 * can fail on bad input (config, data, model, checkpoint to resume) is checked before the run directory is touched. */
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
#include "cuvae/plot.h"
#include "cuvae/rng.h"
#include "data_split.h"
#include "progress.h"
#include "run_log.h"
#include "train_run.h"

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


/* The backend's state into the host copies a checkpoint writes. Every rank calls it (with shard_optimizer it gathers
 * Adam's shards to rank 0). */
int train_fetch_state(run *r) {
  cuvae_extra_state x = {r->ema, {0, 0, 0, 0}, r->window};
  if (r->be->get_state(r->be, r->params, r->adam_m, r->adam_v) || r->be->get_extra_state(r->be, &x)) return -1;
  r->skip = x.skip;
  return 0;
}

/* The checkpoint of `step` from the state fetch_state took. Mid-epoch (an interrupt, or max_steps) the epoch's sums
 * and times travel with it, so a resumed run writes that epoch's row as an uninterrupted run would; at an epoch
 * boundary they are zero. The logs are synced first: a checkpoint never counts rows that may not be on disk, and a
 * failed log write stops the run with the previous checkpoint in place. */
int train_save_checkpoint_to(run *r, const char *path, int64_t step) {
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
    g->epoch_seconds = train_epoch_seconds(r);
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

int train_save_checkpoint(run *r, int64_t step) { return train_save_checkpoint_to(r, r->ckpt_path, step); }

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
  const char *device = opts->device ? opts->device : "auto";
  char placed[256];  /* several ranks on a machine: each its own GPU (include/cuvae/device.h) */
  if (cuvae_dist_place_device(device, placed, sizeof placed)) return -1;
  if (placed[0]) fprintf(log, "note: %s\n", placed);
  r->be = cuvae_backend_create(device, &r->model, cfg, &r->train, &r->test);
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
  if (r->fresh && train_save_checkpoint(r, 0)) return -1;
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
  train_curve_load(r, step);
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
  if (rc == 0) rc = train_fetch_state(r);  /* the initial state, for a fresh run's step-0 checkpoint */
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
    if (epoch_end ? train_end_epoch(r, s, opts->out_dir, prog, summary)
                  : stop && (train_fetch_state(r) || (r->rank == 0 && train_save_checkpoint(r, s))))
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
