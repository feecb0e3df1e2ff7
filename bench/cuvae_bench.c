/* cuvae-bench: times training steps of the benchmark configs (the .ini files of configs/bench) on a backend and
 * reports, per config, step time, throughput, achieved GFLOP/s against the machine's measured GEMM peak, the share
 * of the step spent in GEMMs, peak memory, and an H100 roofline prediction. docs/PERFORMANCE.md, "cuvae-bench",
 * describes the columns and the counting rules. Exit codes: 0 ok, 1 failure, 2 usage error. */
#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "bench_dnnl.h"
#include "bench_gemm.h"
#include "bench_model.h"
#include "bench_report.h"
#include "cuvae/blas.h"
#include "cli/flags.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/device.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "data_split.h"

enum { EXIT_USAGE = 2 };
#define DEFAULT_SUITE "configs/bench"
#define CPU_PEAK_N 2048   /* cblas_sgemm peak: n x n x n */
#define CPU_PEAK_REPS 7
#define BF16_PEAK_N 2048  /* oneDNN bf16 matmul peak: n x n x n */
#define BF16_PEAK_REPS 25 /* ~15 ms a call: 7 calls (0.1 s) let one busy moment of the machine move the median */
#define SHAPE_REPS 11     /* --gemm-shapes: rounds per GEMM shape (fewer on slow shapes) */
#ifndef CUDA_PEAK_N       /* overridable for runs under the CUDA emulation, where 8192^3 takes minutes */
#define CUDA_PEAK_N 8192  /* cublasSgemm peak */
#endif
#define CUDA_PEAK_REPS 10

/* Suite configs too big for the CPU: skipped on the CPU unless --config names them. */
static const char *const k_gpu_sized[] = {"D", NULL};

typedef struct options {
  const char **configs;   /* --config FILE, in order given */
  int n_configs;
  const char *suite;      /* --suite DIR (default DEFAULT_SUITE when no --config) */
  const char *device;     /* auto | cpu | cuda */
  int steps, warmup;
  int threads;            /* -1: the config's [train] threads */
  const char *json;
  int quiet;
  int gemm_shapes;        /* --gemm-shapes: the GEMM engine table instead of training steps */
} options;

/* ---- command line ------------------------------------------------------------------------------------- */

static void usage(FILE *out) {
  fprintf(out,
          "usage: cuvae-bench [--config FILE]... [--suite DIR] [--device cpu|cuda|auto] [--steps N] [--warmup W]\n"
          "                   [--threads T] [--json OUT] [--quiet] [--gemm-shapes]\n\n"
          "Times training steps of benchmark configs and reports step time, samples/s, achieved GFLOP/s against\n"
          "the machine's measured sgemm peak (the oneDNN bf16 matmul peak for a precision = bf16 step), the share\n"
          "of the step spent in GEMMs, peak memory and an H100 roofline prediction (docs/PERFORMANCE.md,\n"
          "section cuvae-bench).\n\n"
          "options:\n"
          "  --config FILE   a config to run (repeatable; run in the order given)\n"
          "  --suite DIR     run every *.ini in DIR in name order (default %s when no --config);\n"
          "                  on the CPU the GPU-sized config D is skipped unless --config names it\n"
          "  --device D      cpu, cuda or auto (cuda when a device is present; default auto)\n"
          "  --steps N       timed steps per config (default 50)\n"
          "  --warmup W      untimed steps before them (default 10)\n"
          "  --threads T     CPU threads, overriding [train] threads (0 = all cores; default: the config's)\n"
          "  --json OUT      also write the results to OUT as JSON\n"
          "  --quiet         no progress lines on stderr\n"
          "  --gemm-shapes   instead of training: every GEMM of each config's step (forward x W^T, weight gradient\n"
          "                  dy^T x, input gradient dy W) on OpenBLAS sgemm, oneDNN fp32 and oneDNN bf16 matmul,\n"
          "                  the gradient GEMMs also with dy stored transposed; GFLOP/s per engine, calls\n"
          "                  interleaved (docs/PERFORMANCE.md, section bf16)\n"
          "  -h, --help      this help\n\n"
          "example:\n"
          "  cuvae-bench --device cpu --threads 2 --json bench.json\n"
          "  cuvae-bench --config configs/bench/A.ini --device cpu --steps 50 --warmup 10 --threads 2\n",
          DEFAULT_SUITE);
}

/* 0 ok, 1 --help printed, -1 usage error (message printed). */
static int parse_args(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  o->device = "auto";
  o->steps = 50;
  o->warmup = 10;
  o->threads = -1;
  o->configs = calloc((size_t)argc, sizeof *o->configs);
  if (!o->configs) return -1;
  for (int i = 1; i < argc; i++) {
    const char *v;
    int bad = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 1;
    } else if (strcmp(argv[i], "--quiet") == 0) {
      o->quiet = 1;
    } else if (strcmp(argv[i], "--gemm-shapes") == 0) {
      o->gemm_shapes = 1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--config", &bad))) {
      o->configs[o->n_configs++] = v;
    } else if ((v = cli_flag_value(argc, argv, &i, "--suite", &bad))) {
      o->suite = v;
    } else if ((v = cli_flag_value(argc, argv, &i, "--device", &bad))) {
      if (cuvae_device_check(v)) {
        fprintf(stderr, "cuvae-bench: error: %s\n", cuvae_last_error());
        return -1;
      }
      o->device = v;
    } else if ((v = cli_flag_value(argc, argv, &i, "--steps", &bad))) {
      if (cli_flag_int("--steps", v, 1, 1000000, &o->steps)) return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--warmup", &bad))) {
      if (cli_flag_int("--warmup", v, 0, 1000000, &o->warmup)) return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--threads", &bad))) {
      if (cli_flag_int("--threads", v, 0, 1024, &o->threads)) return -1;
    } else if ((v = cli_flag_value(argc, argv, &i, "--json", &bad))) {
      o->json = v;
    } else if (!bad) {
      fprintf(stderr, "cuvae-bench: error: unknown argument '%s' (see cuvae-bench --help)\n", argv[i]);
      return -1;
    }
    if (bad) return -1;
  }
  if (o->n_configs && o->suite) {
    fprintf(stderr, "cuvae-bench: error: give either --config or --suite, not both\n");
    return -1;
  }
  if (!o->n_configs && !o->suite) o->suite = DEFAULT_SUITE;
  return 0;
}

/* ---- the configs to run ------------------------------------------------------------------------------- */

/* "dir/A.ini" -> "A". */
static void config_name(const char *path, char *out, size_t n) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  size_t len = strlen(base);
  if (len > 4 && strcmp(base + len - 4, ".ini") == 0) len -= 4;
  snprintf(out, n, "%.*s", (int)len, base);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every regular *.ini file of dir, sorted by name, as malloc'd paths. */
static int list_suite(const char *dir, char ***out, int *n) {
  DIR *d = opendir(dir);
  if (!d) return cuvae_error("--suite %s: cannot open the directory: %s", dir, strerror(errno));
  char **paths = NULL;
  int count = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    const size_t len = strlen(e->d_name);
    if (len <= 4 || strcmp(e->d_name + len - 4, ".ini") != 0) continue;
    char *p = malloc(strlen(dir) + len + 2);
    if (!p) break;
    sprintf(p, "%s/%s", dir, e->d_name);
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
      free(p);
      continue;
    }
    if (count == cap) {
      cap = cap ? 2 * cap : 8;
      char **grown = realloc(paths, (size_t)cap * sizeof *paths);
      if (!grown) {
        free(p);
        break;
      }
      paths = grown;
    }
    paths[count++] = p;
  }
  closedir(d);
  if (count) qsort(paths, (size_t)count, sizeof *paths, cmp_str);
  *out = paths;
  *n = count;
  if (!count) return cuvae_error("--suite %s: no *.ini files there", dir);
  return 0;
}

/* ---- one config --------------------------------------------------------------------------------------- */

/* The training split, kept between configs that read the same file with the same likelihood (its check). */
static cuvae_dataset g_data;
static char g_data_path[CUVAE_PATH_MAX];
static int g_data_lik = -1;

static int load_data(const cuvae_config *cfg) {
  if (g_data_lik == (int)cfg->likelihood && strcmp(g_data_path, cfg->train_images) == 0) return 0;
  cuvae_dataset_free(&g_data);
  memset(&g_data, 0, sizeof g_data);
  g_data_lik = -1;
  if (cuvae_load_split(cfg, CUVAE_SPLIT_TRAIN, &g_data)) return -1;
  snprintf(g_data_path, sizeof g_data_path, "%s", cfg->train_images);
  g_data_lik = (int)cfg->likelihood;
  return 0;
}

/* Starts a new peak-RSS interval: Linux resets the high-water mark behind ru_maxrss on "5" > clear_refs.
 * Returns 0 when that worked (ru_maxrss then covers this config only), -1 when ru_maxrss stays cumulative. */
static int reset_peak_rss(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f) return -1;
  const int ok = fputs("5", f) >= 0;
  return fclose(f) == 0 && ok ? 0 : -1;
}

static double peak_rss_mib(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1.0;
  return (double)ru.ru_maxrss / 1024.0;  /* ru_maxrss is in KiB on Linux */
}

/* The GEMM peak per (device, threads, precision): cublasSgemm or cblas_sgemm; in bf16 cuBLASLt's bf16 GEMM, or on the
 * CPU oneDNN's bf16 matmul on `threads` OpenMP threads. Each config measures it twice, before and after its GEMM
 * replay (seconds apart), and the peak is the best measurement of the run so far: a busy moment of the host can only
 * lower a measurement, and one low peak once made a bf16 step read as 151% of it. */
typedef struct peak_entry {
  int cuda, threads, tf32, bf16;
  int measurements;
  double gflops;
  char desc[160];  /* the method, without the count */
} peak_entry;
static peak_entry g_peaks[16];
static int g_n_peaks;

/* One measurement of the peak into e (its key fields set). */
static int measure_peak(peak_entry *e, double *gflops) {
  if (e->cuda) {
#if CUVAE_HAVE_CUDA
    if (bench_cuda_gemm_peak(CUDA_PEAK_N, CUDA_PEAK_REPS, e->tf32, e->bf16, gflops)) return -1;
    if (e->bf16)
      snprintf(e->desc, sizeof e->desc, "cuBLASLt bf16 %d^3 (fp32 sums), median of %d", CUDA_PEAK_N, CUDA_PEAK_REPS);
    else
      snprintf(e->desc, sizeof e->desc, "cublasSgemm %d^3 (%s), median of %d", CUDA_PEAK_N, e->tf32 ? "tf32" : "fp32",
               CUDA_PEAK_REPS);
#else
    return cuvae_error("internal: a CUDA backend in a build without CUDA");
#endif
  } else if (e->bf16) {
    if (e->threads > 0) omp_set_num_threads(e->threads);  /* oneDNN (OpenMP runtime) runs on OpenMP's thread count */
    if (bench_dnnl_bf16_peak(BF16_PEAK_N, BF16_PEAK_REPS, gflops, e->desc, sizeof e->desc)) return -1;
    snprintf(e->desc + strlen(e->desc), sizeof e->desc - strlen(e->desc), ", %d threads", e->threads);
  } else {
    if (bench_cpu_sgemm_peak(CPU_PEAK_N, CPU_PEAK_REPS, gflops)) return -1;
    snprintf(e->desc, sizeof e->desc, "cblas_sgemm %d^3, %d threads, median of %d", CPU_PEAK_N, e->threads,
             CPU_PEAK_REPS);
  }
  return 0;
}

/* Measures the peak once more and returns the best measurement so far (desc: the method and the count). */
static int gemm_peak(int cuda, int threads, int tf32, int bf16, double *gflops, char *desc, size_t n) {
  peak_entry *e = NULL;
  for (int i = 0; i < g_n_peaks && !e; i++) {
    peak_entry *p = &g_peaks[i];
    if (p->cuda == cuda && p->bf16 == bf16 && (cuda ? p->tf32 == tf32 : p->threads == threads)) e = p;
  }
  if (!e) {
    if (g_n_peaks == (int)(sizeof g_peaks / sizeof g_peaks[0])) return cuvae_error("internal: too many GEMM peaks");
    e = &g_peaks[g_n_peaks++];
    *e = (peak_entry){cuda, threads, tf32, bf16, 0, 0.0, ""};
  }
  double now = 0.0;
  if (measure_peak(e, &now)) return -1;
  if (e->measurements++ == 0 || now > e->gflops) e->gflops = now;
  *gflops = e->gflops;
  if (e->measurements == 1)
    snprintf(desc, n, "%s", e->desc);
  else
    snprintf(desc, n, "%s, best of %d measurements", e->desc, e->measurements);
  return 0;
}

static void arch_string(const cuvae_model *m, char *out, size_t n) {
  int len = snprintf(out, n, "%zu", m->input_dim);
  for (int i = 0; i < m->n_enc - 1 && len > 0 && (size_t)len < n; i++)
    len += snprintf(out + len, n - (size_t)len, "-%zu", m->enc[i].out);
  if (len > 0 && (size_t)len < n) snprintf(out + len, n - (size_t)len, "-%zu", m->latent);
}

/* Loads the config at path (with --threads applied), its data and its model; fills r's path, name and arch. */
static int open_config(const options *o, const char *path, bench_result *r, cuvae_config *cfg, cuvae_model *model) {
  memset(r, 0, sizeof *r);
  snprintf(r->path, sizeof r->path, "%s", path);
  config_name(path, r->name, sizeof r->name);
  cuvae_config_defaults(cfg);
  if (cuvae_config_load_file(cfg, path)) return -1;
  if (o->threads >= 0) cfg->threads = o->threads;
  if (cuvae_config_finalize(cfg) || load_data(cfg)) return -1;
  const int B = cfg->batch_size;
  if ((size_t)B > g_data.n)
    return cuvae_error("%s: [train] batch_size %d is larger than the training set (%zu examples)", path, B, g_data.n);
  if (g_data.n > UINT32_MAX) return cuvae_error("%s: training set of %zu examples is too large", path, g_data.n);
  if (cuvae_model_build(model, g_data.dim, cfg)) return -1;
  arch_string(model, r->arch, sizeof r->arch);
  return 0;
}

/* The CPU's bf16 matmul peak, measured on every CPU run next to the sgemm peak (so a bf16 step and an fp32 step can be
 * held against both); NaN with the reason in the description where oneDNN has no bf16 units to run it on. */
static int bf16_peak(bench_result *r) {
  char why[160];
  r->bf16_peak_gflops = NAN;
  if (cuvae_cpu_bf16_gemm_check(why, sizeof why)) {
    snprintf(r->bf16_peak_desc, sizeof r->bf16_peak_desc, "not measured: %s", cuvae_last_error());
    return 0;
  }
  return gemm_peak(0, r->threads, 0, 1, &r->bf16_peak_gflops, r->bf16_peak_desc, sizeof r->bf16_peak_desc);
}

/* The peaks for r's device, thread count and precision (the sgemm or cuBLAS peak; on the CPU also the bf16 matmul
 * peak, on CUDA the cuBLASLt bf16 peak for a bf16 config), measured once more; each is the best of the run so far
 * (gemm_peak). */
static int measure_peaks(bench_result *r) {
  const int cuda = strcmp(r->device, "cuda") == 0;
  if (gemm_peak(cuda, r->threads, r->tf32, 0, &r->peak_gflops, r->peak_desc, sizeof r->peak_desc)) return -1;
  if (!cuda) return bf16_peak(r);
  return r->bf16 ? gemm_peak(1, r->threads, 0, 1, &r->bf16_peak_gflops, r->bf16_peak_desc, sizeof r->bf16_peak_desc)
                 : 0;
}

/* Passes of a step's GEMMs replayed alone: as many as the timed steps, 5 to 20. */
static int replay_reps(const options *o) { return o->steps < 5 ? 5 : o->steps > 20 ? 20 : o->steps; }

/* The step's GEMMs alone through the backend's own pass (its time_step_gemms: the CUDA backend's cuBLASLt calls in
 * the step's precision, epilogues included): median of reps passes after an untimed one. */
static int backend_gemm_time(cuvae_backend *be, int B, int reps, double *median_s) {
  double *t = malloc((size_t)reps * sizeof *t);
  if (!t) return cuvae_error("out of memory");
  int rc = 0;
  for (int i = -1; rc == 0 && i < reps; i++) {
    double s = 0.0;
    rc = be->time_step_gemms(be, B, &s);
    if (i >= 0) t[i] = s;
  }
  if (rc == 0) *median_s = bench_median(t, reps);
  free(t);
  return rc;
}

/* The backend, then W + N steps on the trainer's batches (epoch shuffles, consecutive step numbers); each step is
 * timed from train_step to the end of collect, so it is complete on every backend. Fills r's device, memory plan,
 * threads, background load, peak RSS, min and median step time. */
static int time_steps(const options *o, const cuvae_config *cfg, const cuvae_model *model, bench_result *r,
                      int *midline) {
  const int B = cfg->batch_size;
  uint32_t *perm = malloc(g_data.n * sizeof *perm);
  double *t = malloc((size_t)o->steps * sizeof *t);
  if (!perm || !t) {
    free(perm);
    free(t);
    return cuvae_error("out of memory");
  }
  const int rss_per_config = reset_peak_rss() == 0;
  cuvae_backend *be = cuvae_backend_create(o->device, model, cfg, &g_data, NULL);
  int rc = be ? 0 : -1;
  if (be) {
    snprintf(r->device, sizeof r->device, "%s", be->name);
    snprintf(r->memory_plan, sizeof r->memory_plan, "%s", be->memory_plan);
    snprintf(r->gemm_engine, sizeof r->gemm_engine, "%s", be->gemm[0] ? be->gemm : "cuBLAS");
    r->threads = strcmp(be->name, "cpu") == 0 ? openblas_get_num_threads() : cfg->threads;
    if (be->notice[0] && !o->quiet) fprintf(stderr, "note: %s\n", be->notice);
    if (!o->quiet) {
      fprintf(stderr, "%s (%s, batch %d, %s, %d threads): ", r->name, r->arch, B, r->device, r->threads);
      fflush(stderr);
      *midline = 1;
    }
  }
  const int64_t steps_per_epoch = (int64_t)(g_data.n / (size_t)B);
  int64_t epoch_loaded = -1;
  bench_cpu_clock c0 = {0.0, 0.0, 0.0, 0};
  for (int64_t s = 0; rc == 0 && s < (int64_t)o->warmup + o->steps; s++) {
    if (s == o->warmup) c0 = bench_cpu_clock_now();  /* other processes' CPU use is watched over the timed steps */
    const int64_t epoch = s / steps_per_epoch;
    if (epoch != epoch_loaded) {
      cuvae_shuffle(perm, g_data.n, cfg->seed, epoch);
      epoch_loaded = epoch;
    }
    cuvae_step_result res;
    const double t0 = bench_now();
    rc = cuvae_backend_step(be, perm + (size_t)(s % steps_per_epoch) * (size_t)B, B, s, &res);
    const double dt = bench_now() - t0;
    if (s >= o->warmup) t[s - o->warmup] = dt;
  }
  const bench_cpu_clock c1 = bench_cpu_clock_now();
  r->background = bench_background_load(c0, c1, c1.self - c0.self);
  r->rss_mib = peak_rss_mib();
  if (!rss_per_config && !o->quiet && rc == 0)
    fprintf(stderr, "(peak RSS is cumulative over the run: /proc/self/clear_refs is not writable) ");
  if (rc == 0 && be->time_step_gemms) rc = backend_gemm_time(be, B, replay_reps(o), &r->gemm_s);
  if (be) be->destroy(be);
  free(perm);
  if (rc == 0) {
    r->min_s = t[0];
    for (int i = 1; i < o->steps; i++)
      if (t[i] < r->min_s) r->min_s = t[i];
    r->median_s = bench_median(t, o->steps);
  }
  free(t);
  return rc ? -1 : 0;
}

/* The step's GEMMs alone on the CPU (through the library's own fp32 or bf16 calls, as the step; a backend with its
 * own pass timed them in time_steps), and the machine's GEMM peaks for this device, thread count and precision; then
 * the derived figures of r (FLOPs, bytes, launches, roofline, throughput). */
static int gemm_figures(const options *o, const cuvae_config *cfg, const cuvae_model *model,
                        const bench_step_work *w, bench_result *r) {
  r->batch = cfg->batch_size;
  int rc = measure_peaks(r);  /* the first of two measurements, the replay between them (gemm_peak) */
  if (rc) return rc;
  if (r->gemm_s < 0 && strcmp(r->device, "cpu") == 0)
    rc = bench_cpu_step_gemm_replay(model, w, r->bf16, replay_reps(o), &r->gemm_s);
  if (rc == 0) rc = measure_peaks(r);
  if (rc) return rc;
  r->flops = w->flops;
  r->bytes = w->bytes;
  r->launches = w->n_kernels;
  r->roof = bench_h100_roofline(w);
  r->samples_per_s = r->batch / r->median_s;
  r->gflops = w->flops / r->median_s * 1e-9;
  return 0;
}

/* Runs W warm-up and N timed steps of one config and fills r. *midline is set while a progress line is open. */
static int run_config(const options *o, const char *path, bench_result *r, int *midline) {
  cuvae_config cfg;
  cuvae_model model;
  if (open_config(o, path, r, &cfg, &model)) return -1;
  const int B = cfg.batch_size;
  bench_step_work *w = malloc(sizeof *w);
  if (!w) return cuvae_error("out of memory");
  bench_step_work_build(&model, B, w);
  if (fabs(w->flops - cuvae_model_step_flops(&model, B)) > 1e-9 * w->flops)
    fprintf(stderr, "cuvae-bench: warning: %s: FLOPs counted here (%.0f) differ from cuvae_model_step_flops (%.0f)\n",
            r->name, w->flops, cuvae_model_step_flops(&model, B));
  r->tf32 = cfg.precision == CUVAE_PRECISION_TF32;
  r->bf16 = cfg.precision == CUVAE_PRECISION_BF16;  /* on CUDA: replay and peak stay cuBLAS fp32 (a note says) */
  r->bf16_peak_gflops = NAN;
  r->gemm_s = -1.0;
  const int rc = time_steps(o, &cfg, &model, r, midline) || gemm_figures(o, &cfg, &model, w, r) ? -1 : 0;
  free(w);
  return rc;
}

static int is_gpu_sized(const char *name) {
  for (int i = 0; k_gpu_sized[i]; i++)
    if (strcmp(name, k_gpu_sized[i]) == 0) return 1;
  return 0;
}

/* --gemm-shapes: the engine table of every config's step GEMMs on the config's thread count, on the CPU. */
static int run_shapes(const options *o, char **paths, int n_paths) {
  for (int i = 0; i < n_paths; i++) {
    bench_result r;
    config_name(paths[i], r.name, sizeof r.name);
    if (!o->n_configs && is_gpu_sized(r.name)) continue;  /* as on the CPU in training mode */
    cuvae_config cfg;
    cuvae_model model;
    bench_step_work *w = malloc(sizeof *w);
    int rc = w ? open_config(o, paths[i], &r, &cfg, &model) : cuvae_error("out of memory");
    if (rc == 0) {
      if (cfg.threads > 0) {
        openblas_set_num_threads(cfg.threads);
        omp_set_num_threads(cfg.threads);  /* oneDNN's runtime */
      }
      bench_step_work_build(&model, cfg.batch_size, w);
      printf("%s (%s, batch %d, %d threads)\n", r.name, r.arch, cfg.batch_size, cfg.threads);
      rc = bench_gemm_shape_table(stdout, r.name, w, SHAPE_REPS);
    }
    free(w);
    if (rc) {
      fprintf(stderr, "cuvae-bench: error: %s: %s\n", paths[i], cuvae_last_error());
      return 1;
    }
  }
  printf("GF/s: 2 m n k / median seconds of one call; f32/OB, bf16/OB: oneDNN's speed over OpenBLAS's on the shape;\n"
         "*_dT: a gradient GEMM with the layer's gradient d stored transposed, [out][B] (dW's A plain, dx's A a\n"
         "transposed view); bf16_dT/bf16: its speed over the step's layout. bf16_packW: a GEMM reading W (forward,\n"
         "input gradient) with W reordered beforehand into oneDNN's own layout; packW/bf16: its speed over the plain\n"
         "layout; reorder_ms: that reorder, which weights updated every step would pay once per step and GEMM.\n"
         "BLAS: %s\n", cuvae_blas_describe());
  return 0;
}

/* ---- main --------------------------------------------------------------------------------------------- */

/* The end of a config's progress line on stderr: its figures, and a warning when the machine was busy. */
static void report_progress(const bench_result *r) {
  fprintf(stderr, "median %.3f ms, %.0f samples/s, %.1f GFLOP/s (%.1f%% of %.1f); GEMMs alone %.3f ms "
                  "(%.1f%% of the step, %.1f GFLOP/s)\n",
          1e3 * r->median_s, r->samples_per_s, r->gflops, 100.0 * r->gflops / bench_result_peak(r),
          bench_result_peak(r), 1e3 * r->gemm_s, 100.0 * r->gemm_s / r->median_s, r->flops / r->gemm_s * 1e-9);
  if (r->background > BUSY_WARN)
    fprintf(stderr, "warning: %s: other processes used %.0f%% of the CPUs during the timed steps\n", r->name,
            100.0 * r->background);
}

int main(int argc, char **argv) {
  cuvae_blas_select_kernels(argv);  /* may re-execute the program with OpenBLAS's kernels chosen (blas.h) */
  options o;
  const int p = parse_args(argc, argv, &o);
  if (p) {
    free(o.configs);
    return p > 0 ? 0 : EXIT_USAGE;
  }

  /* The configs: the --config files as given, or the suite in name order (GPU-sized ones skipped on the CPU). */
  char **paths = NULL;
  int n_paths = 0;
  if (o.n_configs) {
    paths = malloc((size_t)o.n_configs * sizeof *paths);
    for (int i = 0; paths && i < o.n_configs; i++)
      if (!(paths[n_paths++] = strdup(o.configs[i]))) {
        fprintf(stderr, "cuvae-bench: error: out of memory\n");
        return 1;
      }
  } else if (list_suite(o.suite, &paths, &n_paths)) {
    fprintf(stderr, "cuvae-bench: error: %s\n", cuvae_last_error());
    free(o.configs);
    return 1;
  }
  char devdesc[256] = "";
  const int on_cpu = strcmp(o.device, "cpu") == 0 ||
                     (strcmp(o.device, "auto") == 0 && cuvae_cuda_device_count(devdesc, sizeof devdesc) < 1);
  if (o.gemm_shapes && paths) {
    const int shapes_rc = run_shapes(&o, paths, n_paths);
    for (int i = 0; i < n_paths; i++) free(paths[i]);
    free(paths);
    free(o.configs);
    cuvae_dataset_free(&g_data);
    return shapes_rc;
  }
  bench_result *res = calloc((size_t)(n_paths ? n_paths : 1), sizeof *res);
  if (!paths || !res) {
    fprintf(stderr, "cuvae-bench: error: out of memory\n");
    return 1;
  }
  int n_res = 0, rc = 0;
  for (int i = 0; i < n_paths && rc == 0; i++) {
    char name[64];
    config_name(paths[i], name, sizeof name);
    if (!o.n_configs && on_cpu && is_gpu_sized(name)) {
      if (!o.quiet)
        fprintf(stderr, "%s: skipped on the CPU (GPU-sized; run it with --config %s)\n", name, paths[i]);
      continue;
    }
    int midline = 0;
    if (run_config(&o, paths[i], &res[n_res], &midline)) {
      if (midline) fputc('\n', stderr);
      fprintf(stderr, "cuvae-bench: error: %s: %s\n", name, cuvae_last_error());
      rc = 1;
      break;
    }
    if (!o.quiet) report_progress(&res[n_res]);
    n_res++;
  }
  if (rc == 0 && n_res == 0) {
    fprintf(stderr, "cuvae-bench: error: no config left to run (GPU-sized configs are skipped on the CPU; name them "
                    "with --config)\n");
    rc = 1;
  }
  if (rc == 0) {
    bench_print_table(stdout, res, n_res);
    if (o.json && bench_write_json(o.json, o.steps, o.warmup, res, n_res)) {
      fprintf(stderr, "cuvae-bench: error: %s\n", cuvae_last_error());
      rc = 1;
    }
  }
  for (int i = 0; i < n_paths; i++) free(paths[i]);
  free(paths);
  free(res);
  free(o.configs);
  cuvae_dataset_free(&g_data);
  return rc;
}
