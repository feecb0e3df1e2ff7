/* cuvae-bench-dp: times data-parallel training steps of one benchmark config on the CPU backend, one rank per MPI
 * process (`mpirun -np N cuvae-bench-dp CONFIG`) or one process, and reports from rank 0 one JSON line: step time,
 * samples/s, the gradient all-reduce (standalone, its wait after the backward, the hidden fraction) and where a step's
 * time goes. docs/PERFORMANCE.md, section "Data parallel", has the commands and the measurements.
 * Exit codes: 0 ok, 1 failure, 2 usage error. */
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend.h"
#include "bench_gemm.h"
#include "cli/flags.h"
#include "cuvae/blas.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "data_parallel.h"
#include "data_split.h"

enum { EXIT_USAGE = 2 };

typedef struct options {
  const char *config;
  int threads;          /* -1: the config's [train] threads */
  int steps, warmup, reps;
  double bucket_mib;    /* the all-reduce's bucket; 0: one sum of the whole gradient after the backward */
  int no_allreduce;     /* ranks train their slices without summing (the compute alone, under the same load) */
  int blocking_sum;     /* the gradient summed by one blocking MPI_Allreduce after the backward, not in buckets */
  int shard_optimizer;  /* [train] shard_optimizer (ZeRO-1): reduce-scatter, Adam on the rank's shard, all-gather */
} options;

static void usage(FILE *out) {
  fprintf(out,
          "usage: [mpirun -np N] cuvae-bench-dp CONFIG [--threads T] [--steps N] [--warmup W] [--reps R]\n"
          "                                      [--bucket-mib M] [--no-allreduce] [--blocking-sum]\n"
          "                                      [--shard-optimizer]\n\n"
          "Times training steps of CONFIG on the CPU backend, data parallel over the ranks of an MPI job (one\n"
          "process: the baseline), and prints from rank 0 one JSON line: step time (median, mean), samples/s, the\n"
          "gradient all-reduce (blocking MPI_Allreduce of the whole gradient timed alone; the wait after the\n"
          "backward per step; hidden fraction = 1 - wait / standalone; buckets per step) and the step's parts\n"
          "(docs/PERFORMANCE.md, section Data parallel).\n\n"
          "options:\n"
          "  --threads T     threads per rank, overriding [train] threads (0 = the cores the rank is bound to)\n"
          "  --steps N       timed steps (default 20)\n"
          "  --warmup W      untimed steps before them (default 3)\n"
          "  --reps R        timed repetitions of the standalone all-reduce and of the optimizer (default 5)\n"
          "  --bucket-mib M  all-reduce bucket in MiB (default %.0f, as cuvae train; 0 = the whole gradient in one\n"
          "                  sum after the backward, no overlap)\n"
          "  --no-allreduce  with N ranks: each rank trains its B/N rows without summing the gradient (the compute\n"
          "                  of a data-parallel step alone, under the same load; not a training of one model)\n"
          "  --blocking-sum  with N ranks: the gradient summed by one blocking MPI_Allreduce after the backward\n"
          "                  instead of the distributed layer's buckets (a prototype, measured in this program only)\n"
          "  --shard-optimizer  with N ranks: [train] shard_optimizer = true (ZeRO-1: the gradient reduce-scattered,\n"
          "                  Adam on each rank's shard, the parameters all-gathered)\n"
          "  -h, --help      this help\n\n"
          "example:\n"
          "  mpirun -np 2 --bind-to core cuvae-bench-dp configs/bench/C.ini --threads 1 --steps 20 --warmup 3\n"
          "  cuvae-bench-dp configs/bench/C.ini --threads 2 --steps 20 --warmup 3\n",
          (double)CUVAE_DP_BUCKET_BYTES / (1 << 20));
}

/* 0 ok, 1 --help printed, -1 usage error (message printed). */
static int parse_args(int argc, char **argv, options *o) {
  *o = (options){NULL, -1, 20, 3, 5, (double)CUVAE_DP_BUCKET_BYTES / (1 << 20), 0, 0, 0};
  for (int i = 1; i < argc; i++) {
    const char *v;
    int bad = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 1;
    } else if (strcmp(argv[i], "--no-allreduce") == 0) {
      o->no_allreduce = 1;
    } else if (strcmp(argv[i], "--blocking-sum") == 0) {
      o->blocking_sum = 1;
    } else if (strcmp(argv[i], "--shard-optimizer") == 0) {
      o->shard_optimizer = 1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--threads", &bad))) {
      if (cli_flag_int("--threads", v, 0, 1024, &o->threads)) return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--steps", &bad))) {
      if (cli_flag_int("--steps", v, 1, 1000000, &o->steps)) return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--warmup", &bad))) {
      if (cli_flag_int("--warmup", v, 0, 1000000, &o->warmup)) return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--reps", &bad))) {
      if (cli_flag_int("--reps", v, 1, 1000, &o->reps)) return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--bucket-mib", &bad))) {
      char *end = NULL;
      errno = 0;
      o->bucket_mib = strtod(v, &end);
      if (errno || end == v || *end != '\0' || !(o->bucket_mib >= 0.0 && o->bucket_mib <= 65536.0)) {
        fprintf(stderr, "cuvae-bench-dp: error: --bucket-mib '%s': expected a number of MiB in [0, 65536]\n", v);
        return -1;
      }
    } else if (!bad && argv[i][0] == '-') {
      fprintf(stderr, "cuvae-bench-dp: error: unknown option '%s' (see cuvae-bench-dp --help)\n", argv[i]);
      return -1;
    } else if (!bad && o->config) {
      fprintf(stderr, "cuvae-bench-dp: error: one config only ('%s' and '%s')\n", o->config, argv[i]);
      return -1;
    } else if (!bad) {
      o->config = argv[i];
    }
    if (bad) return -1;
  }
  if (o->no_allreduce + o->blocking_sum + o->shard_optimizer > 1) {
    fprintf(stderr, "cuvae-bench-dp: error: --no-allreduce, --blocking-sum and --shard-optimizer exclude each other\n");
    return -1;
  }
  if (!o->config) {
    fprintf(stderr, "cuvae-bench-dp: error: no config given (e.g. configs/bench/C.ini; see --help)\n");
    return -1;
  }
  return 0;
}

/* ---- the hooks, timed ---------------------------------------------------------------------------------------------
 * The distributed layer's hooks (cuvae_dist_data_parallel), wrapped so that the bench sees when the backend calls
 * them: the time inside grad_ready (starting buckets and MPI_Testall, which is when Open MPI moves their data), inside
 * grad_finish (the wait), inside the loss sum, and when the step's last hook returned (what follows is the gradient
 * norm and Adam). */
typedef struct probe {
  cuvae_data_parallel hooks;        /* handed to the backend; ctx = this probe */
  const cuvae_data_parallel *real;
  size_t n;                         /* gradient floats */
  int blocking;                     /* --blocking-sum: grad_ready does nothing, grad_finish one MPI_Allreduce */
  double ready_s, finish_s, sum_s, gather_s;  /* summed over the timed steps (gather: params_gather, sharded) */
  long long ready_calls;
  double last_hook_end;             /* when the last hook of the step returned */
} probe;

static int probe_ready(void *ctx, float *grad, size_t from) {
  probe *p = ctx;
  if (p->blocking) return 0;
  const double t0 = bench_now();
  const int rc = p->real->grad_ready(p->real->ctx, grad, from);
  p->ready_s += bench_now() - t0;
  p->ready_calls++;
  return rc;
}

static int probe_finish(void *ctx, float *grad) {
  probe *p = ctx;
  const double t0 = bench_now();
  const int rc = !p->blocking ? p->real->grad_finish(p->real->ctx, grad)
                 : MPI_Allreduce(MPI_IN_PLACE, grad, (int)p->n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS
                     ? 0
                     : cuvae_error("MPI_Allreduce of the gradient failed");
  p->last_hook_end = bench_now();
  p->finish_s += p->last_hook_end - t0;
  return rc;
}

static int probe_sum(void *ctx, double *v, int n) {
  probe *p = ctx;
  const double t0 = bench_now();
  const int rc = p->real->sum(p->real->ctx, v, n);
  p->last_hook_end = bench_now();
  p->sum_s += p->last_hook_end - t0;
  return rc;
}

static int probe_broadcast(void *ctx, void *buf, size_t bytes) {
  probe *p = ctx;
  return p->real->broadcast(p->real->ctx, buf, bytes);
}

static int probe_params_gather(void *ctx, float *params) {
  probe *p = ctx;
  const double t0 = bench_now();
  const int rc = p->real->params_gather(p->real->ctx, params);
  p->gather_s += bench_now() - t0;
  return rc;
}

static int probe_state_gather(void *ctx, const float *m_shard, const float *v_shard, float *m, float *v) {
  probe *p = ctx;
  return p->real->state_gather(p->real->ctx, m_shard, v_shard, m, v);
}

static void probe_init(probe *p, const cuvae_data_parallel *real, size_t n, int blocking) {
  memset(p, 0, sizeof *p);
  p->real = real;
  p->n = n;
  p->blocking = blocking;
  p->hooks = *real;
  p->hooks.ctx = p;
  p->hooks.grad_ready = probe_ready;
  p->hooks.grad_finish = probe_finish;
  p->hooks.sum = probe_sum;
  p->hooks.broadcast = probe_broadcast;
  p->hooks.params_gather = real->params_gather ? probe_params_gather : NULL;
  p->hooks.state_gather = real->state_gather ? probe_state_gather : NULL;
}

/* ---- the run ----------------------------------------------------------------------------------------------------- */

typedef struct run {
  options opt;
  int rank, ranks, local_batch;
  cuvae_config cfg;
  cuvae_dataset data;
  cuvae_model model;
  cuvae_backend *be;
  cuvae_data_parallel *dp;  /* the distributed layer's hooks (N > 1, not --no-allreduce) */
  probe pr;
  size_t bucket_bytes;
} run;

/* The figures rank 0 prints (times are the maximum over the ranks). */
typedef struct figures {
  double median_s, mean_s, min_s;       /* min: the step least disturbed by other processes */
  double wait_s, buckets;                /* per step */
  double ready_s, sum_s, after_s;        /* per step: inside grad_ready, the loss sum, after the last hook */
  double ready_calls;                    /* per step */
  double gather_s;                       /* per step: the parameters' all-gather (sharded) */
  double allreduce_s;                    /* blocking MPI_Allreduce of the whole gradient, alone (median) */
  double bucketed_s;                     /* the step's buckets through the hooks with no backward to hide in */
  double optimizer_s;                    /* gradient norm + Adam over the whole buffer, all ranks at once */
  double optimizer_shard_s;              /* the same over 1/N of the buffer (each rank its shard, as ZeRO-1) */
  double background;                     /* the share of the CPUs other processes used during the timed steps */
} figures;

/* v[i] <- the maximum of v[i] over the ranks (each rank's times differ a little; the step ends with the slowest). */
static int max_over_ranks(const run *r, double *v, int n) {
  if (r->ranks == 1) return 0;
  if (MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
    return cuvae_error("MPI_Allreduce (max of the timings) failed");
  return 0;
}

static void barrier(const run *r) {
  if (r->ranks > 1) MPI_Barrier(MPI_COMM_WORLD);
}

/* Config (with --threads), data, model, the CPU backend; with N ranks (not --no-allreduce) the data-parallel hooks,
 * joined as cuvae train joins them (src/engine/train.c, build_run), through the timing probe. */
static int build(run *r) {
  cuvae_config_defaults(&r->cfg);
  if (cuvae_config_load_file(&r->cfg, r->opt.config)) return -1;
  if (r->opt.threads >= 0) r->cfg.threads = r->opt.threads;
  if (r->opt.shard_optimizer) r->cfg.shard_optimizer = 1;
  if (cuvae_config_finalize(&r->cfg) || cuvae_load_split(&r->cfg, CUVAE_SPLIT_TRAIN, &r->data)) return -1;
  if ((size_t)r->cfg.batch_size > r->data.n)
    return cuvae_error("%s: [train] batch_size %d is larger than the training set (%zu examples)", r->opt.config,
                       r->cfg.batch_size, r->data.n);
  if (r->data.n > UINT32_MAX) return cuvae_error("training set of %zu examples is too large", r->data.n);
  if (cuvae_model_build(&r->model, r->data.dim, &r->cfg)) return -1;
  if (r->cfg.batch_size % r->ranks != 0)
    return cuvae_error("[train] batch_size: %d is not divisible by the %d ranks", r->cfg.batch_size, r->ranks);
  r->local_batch = r->cfg.batch_size / r->ranks;
  r->be = cuvae_backend_create("cpu", &r->model, &r->cfg, &r->data, NULL);
  if (!r->be) return -1;
  r->bucket_bytes = r->opt.bucket_mib > 0.0 ? (size_t)(r->opt.bucket_mib * (1 << 20))
                                            : (r->model.n_params + 1) * sizeof(float);
  if (r->ranks > 1 && !r->opt.no_allreduce) {
    r->dp = cuvae_dist_data_parallel_sharded(r->model.n_params, r->bucket_bytes, r->opt.shard_optimizer);
    if (!r->dp) return -1;
    probe_init(&r->pr, r->dp, r->model.n_params, r->opt.blocking_sum);
    if (cuvae_backend_join_data_parallel(r->be, &r->pr.hooks)) return -1;
  }
  return 0;
}

/* W + N steps on the trainer's batches: the epoch's global permutation, this rank's slice of step s's batch. A step
 * that fails on one rank stops the job (the others wait in the all-reduce), as in cuvae train. */
static int time_steps(run *r, figures *f) {
  const int B = r->cfg.batch_size, N = r->opt.steps;
  uint32_t *perm = malloc(r->data.n * sizeof *perm);
  double *t = malloc((size_t)N * sizeof *t);
  if (!perm || !t) {
    free(perm);
    free(t);
    return cuvae_error("out of memory");
  }
  const int64_t steps_per_epoch = (int64_t)(r->data.n / (size_t)B);
  int64_t epoch_loaded = -1;
  double wait0 = 0.0, after = 0.0;
  long long buckets0 = 0;
  probe before = r->pr;
  bench_cpu_clock c0 = bench_cpu_clock_now();
  int rc = 0;
  for (int64_t s = 0; rc == 0 && s < (int64_t)r->opt.warmup + N; s++) {
    if (s == r->opt.warmup) {
      c0 = bench_cpu_clock_now();
      cuvae_dist_grad_stats(r->dp, &wait0, &buckets0);
      before = r->pr;
    }
    const int64_t epoch = s / steps_per_epoch;
    if (epoch != epoch_loaded) {
      cuvae_shuffle(perm, r->data.n, r->cfg.seed, epoch);
      epoch_loaded = epoch;
    }
    if (!r->dp) barrier(r);  /* independent ranks: keep their steps together, so they load the machine together */
    const size_t first = (size_t)(s % steps_per_epoch) * (size_t)B + (size_t)r->rank * (size_t)r->local_batch;
    cuvae_step_result res;
    const double t0 = bench_now();
    rc = cuvae_backend_step(r->be, perm + first, r->local_batch, s, &res);
    const double t1 = bench_now();
    if (s >= r->opt.warmup) {
      t[s - r->opt.warmup] = t1 - t0;
      if (r->dp) after += t1 - r->pr.last_hook_end;
    }
  }
  const bench_cpu_clock c1 = bench_cpu_clock_now();
  free(perm);
  if (rc) {
    fprintf(stderr, "cuvae-bench-dp: error (rank %d of %d): %s\n", r->rank, r->ranks, cuvae_last_error());
    cuvae_dist_abort(1);
    free(t);
    return -1;
  }
  double wait1 = 0.0;
  long long buckets1 = 0;
  cuvae_dist_grad_stats(r->dp, &wait1, &buckets1);
  if (r->opt.blocking_sum) wait1 = wait0 + r->pr.finish_s - before.finish_s;  /* the probe's own sum */
  double v[7] = {(wait1 - wait0) / N, (r->pr.ready_s - before.ready_s) / N, (r->pr.sum_s - before.sum_s) / N,
                 after / N, (double)(buckets1 - buckets0) / N, (double)(r->pr.ready_calls - before.ready_calls) / N,
                 (r->pr.gather_s - before.gather_s) / N};
  double self = c1.self - c0.self;  /* summed over the ranks: the job's own CPU time */
  rc = max_over_ranks(r, t, N) || max_over_ranks(r, v, 7) ||
       (r->ranks > 1 && MPI_Allreduce(MPI_IN_PLACE, &self, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS);
  f->background = bench_background_load(c0, c1, self);
  if (rc == 0) {
    f->mean_s = 0.0;
    f->min_s = t[0];
    for (int i = 0; i < N; i++) {
      f->mean_s += t[i] / N;
      f->min_s = fmin(f->min_s, t[i]);
    }
    f->median_s = bench_median(t, N);
    f->wait_s = v[0];
    f->ready_s = v[1];
    f->sum_s = v[2];
    f->after_s = v[3];
    f->buckets = v[4];
    f->ready_calls = v[5];
    f->gather_s = v[6];
  }
  free(t);
  return rc ? -1 : 0;
}

/* Median over reps of the slowest rank's seconds for one call of fn, every rank starting together. */
typedef int (*timed_fn)(run *r, float *buf, void *arg);

static int time_reps(run *r, timed_fn fn, float *buf, void *arg, double *median_s) {
  double *t = malloc((size_t)r->opt.reps * sizeof *t);
  if (!t) return cuvae_error("out of memory");
  int rc = fn(r, buf, arg);  /* warm-up */
  for (int i = 0; rc == 0 && i < r->opt.reps; i++) {
    barrier(r);
    const double t0 = bench_now();
    rc = fn(r, buf, arg);
    t[i] = bench_now() - t0;
  }
  if (rc == 0) rc = max_over_ranks(r, t, r->opt.reps);
  if (rc == 0) *median_s = bench_median(t, r->opt.reps);
  free(t);
  return rc;
}

/* One blocking MPI_Allreduce of the whole gradient (n_params floats, in place). */
static int allreduce_whole(run *r, float *buf, void *arg) {
  (void)arg;
  if (MPI_Allreduce(MPI_IN_PLACE, buf, (int)r->model.n_params, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
    return cuvae_error("MPI_Allreduce of the gradient failed");
  return 0;
}

/* The step's buckets with no backward to hide in: the hooks hear the layers finish, last to first by offset, one
 * after the other, then grad_finish. */
static int allreduce_bucketed(run *r, float *buf, void *arg) {
  const cuvae_data_parallel *dp = arg;
  size_t from = r->model.n_params;
  for (;;) {  /* the next lower layer offset, as the backward reports them */
    size_t next = 0;
    int found = 0;
    for (int i = 0; i < r->model.n_enc + r->model.n_dec; i++) {
      const cuvae_layer *l = i < r->model.n_enc ? &r->model.enc[i] : &r->model.dec[i - r->model.n_enc];
      if (l->w < from && (!found || l->w > next)) next = l->w, found = 1;
    }
    if (!found) break;
    from = next;
    if (dp->grad_ready(dp->ctx, buf, from)) return -1;
  }
  return dp->grad_finish(dp->ctx, buf);
}

/* The step's work after the sums, alone: gradient norm and Adam over `count` values of the buffers (the whole
 * gradient, or a rank's 1/N shard), on the rank's threads. */
typedef struct optimizer_arg {
  float *m;     /* m, v, g follow one another, n_params apart */
  size_t count;
} optimizer_arg;

static int optimizer_step(run *r, float *buf, void *arg) {
  const optimizer_arg *a = arg;
  float *m = a->m, *v = m + r->model.n_params, *g = v + r->model.n_params;
  volatile double norm = grad_norm_cpu(g, a->count);
  (void)norm;
  adam_update_bf16_cpu(buf, g, m, v, a->count, 1e-3f, 0.9f, 0.999f, 1e-8f, 1, 1.0f, NULL);
  return 0;
}

/* The standalone timings, after the steps: the all-reduce (N > 1) and the optimizer. */
static int time_parts(run *r, figures *f) {
  const size_t n = r->model.n_params;
  float *buf = malloc(4 * n * sizeof *buf);
  if (!buf) return cuvae_error("out of memory");
  bench_fill_pattern(buf, 4 * n, (size_t)r->rank * 4 * n);
  for (size_t i = n; i < 3 * n; i++) buf[i] = fabsf(buf[i]);  /* Adam's m (any sign) and v (>= 0) */
  optimizer_arg whole = {buf + n, n}, shard = {buf + n, n / (size_t)r->ranks};
  int rc = time_reps(r, optimizer_step, buf, &whole, &f->optimizer_s);
  f->optimizer_shard_s = NAN;
  if (rc == 0 && r->ranks > 1) rc = time_reps(r, optimizer_step, buf, &shard, &f->optimizer_shard_s);
  f->allreduce_s = f->bucketed_s = NAN;
  if (rc == 0 && r->ranks > 1) rc = time_reps(r, allreduce_whole, buf, NULL, &f->allreduce_s);
  if (rc == 0 && r->ranks > 1) {
    cuvae_data_parallel *dp = cuvae_dist_data_parallel(n, r->bucket_bytes);
    rc = dp ? time_reps(r, allreduce_bucketed, buf, dp, &f->bucketed_s) : -1;
    cuvae_dist_data_parallel_free(dp);
  }
  free(buf);
  return rc;
}

/* ---- the report -------------------------------------------------------------------------------------------------- */

/* /proc/cpuinfo's first "model name", for the record ("unknown" when absent). */
static void cpu_model(char *out, size_t n) {
  snprintf(out, n, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    const char *colon = strchr(line, ':');
    if (strncmp(line, "model name", 10) != 0 || !colon) continue;
    colon += colon[1] == ' ' ? 2 : 1;
    snprintf(out, n, "%.*s", (int)strcspn(colon, "\n\"\\"), colon);
    break;
  }
  fclose(f);
}

/* "dir/C.ini" -> "C". */
static void config_name(const char *path, char *out, size_t n) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  size_t len = strlen(base);
  if (len > 4 && strcmp(base + len - 4, ".ini") == 0) len -= 4;
  snprintf(out, n, "%.*s", (int)len, base);
}

/* A number, or null where it was not measured. */
static void json_num(const char *key, double v, const char *sep) {
  if (isfinite(v))
    printf("\"%s\": %.6g%s", key, v, sep);
  else
    printf("\"%s\": null%s", key, sep);
}

static void print_json(const run *r, const figures *f) {
  char name[64], cpu[160];
  config_name(r->opt.config, name, sizeof name);
  cpu_model(cpu, sizeof cpu);
  const int threads = r->cfg.threads > 0 ? r->cfg.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  const int summed = r->dp != NULL;
  printf("{\"config\": \"%s\", \"ranks\": %d, \"threads_per_rank\": %d, \"global_batch\": %d, \"rank_batch\": %d, "
         "\"n_params\": %zu, \"grad_bytes\": %zu, \"steps\": %d, \"warmup\": %d, \"cpu\": \"%s\", ",
         name, r->ranks, threads, r->cfg.batch_size, r->local_batch, r->model.n_params,
         r->model.n_params * sizeof(float), r->opt.steps, r->opt.warmup, cpu);
  printf("\"allreduce\": \"%s\", ", r->ranks == 1          ? "none (one process)"
                                   : !summed               ? "none (--no-allreduce)"
                                   : r->opt.blocking_sum   ? "blocking (--blocking-sum)"
                                   : r->opt.shard_optimizer ? "sharded (--shard-optimizer)"
                                                           : "overlapped");
  json_num("background", f->background, ", ");
  json_num("step_median_s", f->median_s, ", ");
  json_num("step_mean_s", f->mean_s, ", ");
  json_num("step_min_s", f->min_s, ", ");
  json_num("samples_per_s", r->cfg.batch_size / f->median_s, ", ");
  json_num("optimizer_s", f->optimizer_s, ", ");
  json_num("optimizer_shard_s", f->optimizer_shard_s, ", ");
  json_num("bucket_bytes", summed ? (double)r->bucket_bytes : NAN, ", ");
  json_num("allreduce_standalone_s", r->ranks > 1 ? f->allreduce_s : NAN, ", ");
  json_num("allreduce_bucketed_s", r->ranks > 1 ? f->bucketed_s : NAN, ", ");
  json_num("wait_s", summed ? f->wait_s : NAN, ", ");
  json_num("hidden_fraction", summed ? 1.0 - f->wait_s / f->allreduce_s : NAN, ", ");
  json_num("buckets_per_step", summed ? f->buckets : NAN, ", ");
  json_num("in_grad_ready_s", summed ? f->ready_s : NAN, ", ");
  json_num("grad_ready_calls", summed ? f->ready_calls : NAN, ", ");
  json_num("loss_sum_s", summed ? f->sum_s : NAN, ", ");
  json_num("params_gather_s", summed && r->opt.shard_optimizer ? f->gather_s : NAN, ", ");
  json_num("after_sums_s", summed ? f->after_s : NAN, "}\n");
  fflush(stdout);
}

static int bench(run *r) {
  figures f;
  memset(&f, 0, sizeof f);
  int rc = cuvae_dist_agree(build(r));
  if (rc == 0 && r->rank == 0)
    fprintf(stderr, "%s: %d rank%s x %d rows, %s, %d steps after %d warm-up steps...\n", r->opt.config, r->ranks,
            r->ranks > 1 ? "s" : "", r->local_batch, r->dp ? "gradient summed" : "no sum", r->opt.steps,
            r->opt.warmup);
  if (rc == 0) rc = time_steps(r, &f);
  if (rc == 0) rc = time_parts(r, &f);
  if (rc == 0 && r->rank == 0) print_json(r, &f);
  return rc;
}

int main(int argc, char **argv) {
  cuvae_blas_select_kernels(argv);  /* may re-execute the program with OpenBLAS's kernels chosen (blas.h) */
  run r;
  memset(&r, 0, sizeof r);
  const int p = parse_args(argc, argv, &r.opt);
  if (p) return p > 0 ? 0 : EXIT_USAGE;
  if (cuvae_dist_init(&argc, &argv)) {
    fprintf(stderr, "cuvae-bench-dp: error: %s\n", cuvae_last_error());
    return 1;
  }
  r.rank = cuvae_dist_rank();
  r.ranks = cuvae_dist_size();
  if (r.ranks == 1 && r.opt.no_allreduce)
    fprintf(stderr, "cuvae-bench-dp: note: --no-allreduce changes nothing in one process\n");
  const int rc = bench(&r);
  if (rc && r.rank == 0 && strcmp(cuvae_last_error(), CUVAE_DIST_OTHER_RANK_FAILED) != 0)
    fprintf(stderr, "cuvae-bench-dp: error: %s\n", cuvae_last_error());
  else if (rc && r.rank != 0 && strcmp(cuvae_last_error(), CUVAE_DIST_OTHER_RANK_FAILED) != 0)
    fprintf(stderr, "cuvae-bench-dp: error (rank %d of %d): %s\n", r.rank, r.ranks, cuvae_last_error());
  if (r.be) r.be->destroy(r.be);
  cuvae_dist_data_parallel_free(r.dp);
  cuvae_dataset_free(&r.data);
  cuvae_dist_finalize();
  return rc ? 1 : 0;
}
