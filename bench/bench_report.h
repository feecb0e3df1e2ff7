/* cuvae-bench: the per-config result and its two outputs, the table on stdout and the JSON file
 * (docs/PERFORMANCE.md, section "cuvae-bench", lists every column and key). */
#ifndef CUVAE_BENCH_REPORT_H
#define CUVAE_BENCH_REPORT_H
#include <stdio.h>

#include "bench_model.h"
#include "cuvae/config.h"

#define BUSY_WARN 0.05    /* warn when other processes used more than this share of the CPUs while timing */

typedef struct bench_result {
  char name[64];          /* the config file's name without .ini */
  char path[CUVAE_PATH_MAX];
  char arch[128];         /* e.g. 784-400-20 */
  char device[8];
  char memory_plan[512];
  char gemm_engine[160];  /* what ran the step's GEMMs, in which precision (the backend's own description) */
  int batch, threads, tf32;
  int bf16;               /* the config's precision is bf16 (CPU: the GEMMs on oneDNN's bf16 matmul) */
  double median_s, min_s, samples_per_s, gflops;
  double peak_gflops;     /* the GEMM peak measured for this config's device / threads / precision */
  char peak_desc[160];
  double bf16_peak_gflops; /* CPU: oneDNN's bf16 matmul peak measured in the same run; NaN when not measured */
  char bf16_peak_desc[320];
  double gemm_s;          /* the step's GEMMs replayed alone (median); < 0 when not measured */
  double rss_mib;
  double background;      /* share of the machine's CPUs other processes used during the timed steps; NaN: unknown */
  double flops, bytes;
  int launches;
  bench_roofline roof;    /* H100 predictions from the counted work */
} bench_result;

/* The peak the step is held against: the bf16 matmul peak for a bf16 step on the CPU, else the (s)gemm peak. */
double bench_result_peak(const bench_result *r);
/* The table (one row per config) and the notes under it: GEMM peaks, BLAS, counting rules, H100 figures. */
void bench_print_table(FILE *out, const bench_result *res, int n);
/* The JSON file (top-level device, threads and GEMM peak: the first result's). With n == 1 the config's name,
 * batch, samples_per_s and median_step_ms are also written at the top level. */
int bench_write_json(const char *path, int steps, int warmup, const bench_result *res, int n);

#endif
