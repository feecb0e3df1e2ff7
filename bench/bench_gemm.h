/* cuvae-bench: measured GEMM speed. The machine's single-precision GEMM peak (OpenBLAS cblas_sgemm on the CPU,
 * cublasSgemm on a CUDA device) as the median over repeated calls, and the timing helpers. (A step's GEMMs replayed
 * alone: bench_dnnl.h's on the CPU, the CUDA backend's own time_step_gemms on a GPU.) */
#ifndef CUVAE_BENCH_GEMM_H
#define CUVAE_BENCH_GEMM_H
#include <stddef.h>
#include <time.h>

#include "bench_model.h"

/* Seconds on CLOCK_MONOTONIC. */
static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GEMM operand values p[i], i < n: a fixed pattern of index start + i, uniform in [-0.05, 0.05). Small enough that
 * a pass of chained GEMMs neither overflows nor reaches subnormal numbers (which are slow on x86). */
void bench_fill_pattern(float *p, size_t n, size_t start);
/* Median of v[0..n) (v is reordered); n >= 1. */
double bench_median(double *v, int n);

/* CPU seconds used so far by the whole machine (all processes, /proc/stat) and by this process, and the wall clock. */
typedef struct bench_cpu_clock {
  double machine, self, wall;
  int cpus;  /* 0 when /proc/stat could not be read */
} bench_cpu_clock;
bench_cpu_clock bench_cpu_clock_now(void);
/* The share of the machine's CPU capacity that other processes used between a and b, given the CPU seconds the
 * measured job itself used in that time (own_seconds; all its processes); NaN when unknown. */
double bench_background_load(bench_cpu_clock a, bench_cpu_clock b, double own_seconds);

/* cblas_sgemm (row-major, NoTrans x NoTrans) of n x n x n on OpenBLAS's current thread count: GFLOP/s of the
 * median of `reps` timed calls after one warm-up call. 0 and cuvae_last_error() on failure. */
int bench_cpu_sgemm_peak(int n, int reps, double *gflops);

#if CUVAE_HAVE_CUDA
/* A GEMM of n x n x n on the current device, timed with CUDA events: GFLOP/s of the median of `reps` calls after one
 * warm-up call. cublasSgemm (TF32 tensor-core math when tf32), or with bf16 cuBLASLt on bf16 operands with fp32
 * results and sums (the CUDA backend's bf16 layers). */
int bench_cuda_gemm_peak(int n, int reps, int tf32, int bf16, double *gflops);
#endif

#endif
