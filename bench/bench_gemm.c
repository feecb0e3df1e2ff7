/* cuvae-bench: the GEMM peak on the CPU (cblas) and CUDA (cuBLAS). (A step's GEMMs replayed alone: on the CPU
 * through the library, bench_dnnl.c; on CUDA by the backend itself, its time_step_gemms.) */
#include "bench_gemm.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuvae/error.h"

#if CUVAE_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

bench_cpu_clock bench_cpu_clock_now(void) {
  bench_cpu_clock c = {0.0, 0.0, bench_now(), 0};
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    c.self = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
             1e-6 * (double)ru.ru_stime.tv_usec;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return c;
  /* "cpu  user nice system idle iowait irq softirq steal ..." (clock ticks), then one "cpuN" line per CPU. */
  unsigned long long user, nice, sys, idle, iowait, irq, softirq, steal;
  char line[512];
  if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle, &iowait, &irq, &softirq,
             &steal) == 8) {
    const long tick = sysconf(_SC_CLK_TCK);
    c.machine = (double)(user + nice + sys + irq + softirq + steal) / (double)(tick > 0 ? tick : 100);
    while (fgets(line, sizeof line, f))
      if (strncmp(line, "cpu", 3) == 0 && line[3] >= '0' && line[3] <= '9') c.cpus++;
  }
  fclose(f);
  return c;
}

double bench_background_load(bench_cpu_clock a, bench_cpu_clock b, double own_seconds) {
  if (!a.cpus || !b.cpus || b.wall <= a.wall) return NAN;
  const double share = ((b.machine - a.machine) - own_seconds) / ((b.wall - a.wall) * b.cpus);
  return share < 0.0 ? 0.0 : share > 1.0 ? 1.0 : share;
}

/* Operand values (bench_gemm.h): Knuth's multiplicative hash of the index. */
void bench_fill_pattern(float *p, size_t n, size_t start) {
  for (size_t i = 0; i < n; i++) {
    const uint32_t h = (uint32_t)(start + i) * 2654435761u;
    p[i] = ((float)(h >> 8) * (1.0f / 16777216.0f) - 0.5f) * 0.1f;
  }
}

/* ---- CPU: OpenBLAS ------------------------------------------------------------------------------------ */

int bench_cpu_sgemm_peak(int n, int reps, double *gflops) {
  const size_t nn = (size_t)n * n;
  float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
  double *t = malloc((size_t)reps * sizeof *t);
  if (!a || !b || !c || !t) {
    free(a);
    free(b);
    free(c);
    free(t);
    return cuvae_error("out of memory for the %d x %d sgemm peak measurement", n, n);
  }
  bench_fill_pattern(a, nn, 0);
  bench_fill_pattern(b, nn, nn);
  /* One warm-up call (thread pool start, page faults), then the timed calls. */
  for (int r = -1; r < reps; r++) {
    const double t0 = bench_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    if (r >= 0) t[r] = bench_now() - t0;
  }
  *gflops = 2.0 * n * (double)n * n / bench_median(t, reps) * 1e-9;
  free(a);
  free(b);
  free(c);
  free(t);
  return 0;
}

/* ---- CUDA: cuBLAS ------------------------------------------------------------------------------------- */
#if CUVAE_HAVE_CUDA

/* Every CUDA / cuBLAS call: on failure, set an error naming the call and jump to the function's cleanup. */
#define CU_TRY(call)                                                                                           \
  do {                                                                                                         \
    const cudaError_t e_ = (call);                                                                             \
    if (e_ != cudaSuccess) {                                                                                   \
      cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_));                  \
      goto fail;                                                                                               \
    }                                                                                                          \
  } while (0)
#define CUBLAS_TRY(call)                                                                                       \
  do {                                                                                                         \
    const cublasStatus_t s_ = (call);                                                                          \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                         \
      cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, cublasGetStatusString(s_));               \
      goto fail;                                                                                               \
    }                                                                                                          \
  } while (0)

/* Fills n device floats with the pattern, through a host staging buffer of at most 4 Mi floats. cudaMemcpy from
 * pageable memory may return before the device side is written, and the legacy stream it runs on does not order
 * the non-blocking stream the GEMMs run on: the fill waits for the device before it returns. */
static int cuda_fill(float *dev, size_t n, size_t start) {
  const size_t chunk = (size_t)4 << 20;
  float *host = malloc((n < chunk ? n : chunk) * sizeof *host + sizeof *host);
  if (!host) return cuvae_error("out of memory staging device buffers");
  for (size_t done = 0; done < n; done += chunk) {
    const size_t len = n - done < chunk ? n - done : chunk;
    bench_fill_pattern(host, len, start + done);
    const cudaError_t e = cudaMemcpy(dev + done, host, len * sizeof *host, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      free(host);
      return cuvae_error("cudaMemcpy of bench operands failed: %s", cudaGetErrorString(e));
    }
  }
  free(host);
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) return cuvae_error("cudaDeviceSynchronize after the bench operands' fill failed: %s",
                                           cudaGetErrorString(e));
  return 0;
}

/* A handle on its own stream with the config's math mode, and a start/stop event pair. */
typedef struct cuda_timer {
  cudaStream_t stream;
  cublasHandle_t blas;
  cudaEvent_t start, stop;
} cuda_timer;

static void cuda_timer_destroy(cuda_timer *t) {
  if (t->start) cudaEventDestroy(t->start);
  if (t->stop) cudaEventDestroy(t->stop);
  if (t->blas) cublasDestroy(t->blas);
  if (t->stream) cudaStreamDestroy(t->stream);
  memset(t, 0, sizeof *t);
}

static int cuda_timer_create(cuda_timer *t, int tf32) {
  memset(t, 0, sizeof *t);
  CU_TRY(cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking));
  CUBLAS_TRY(cublasCreate(&t->blas));
  CUBLAS_TRY(cublasSetStream(t->blas, t->stream));
  CUBLAS_TRY(cublasSetMathMode(t->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  CU_TRY(cudaEventCreate(&t->start));
  CU_TRY(cudaEventCreate(&t->stop));
  return 0;
fail:
  cuda_timer_destroy(t);
  return -1;
}

int bench_cuda_sgemm_peak(int n, int reps, int tf32, double *gflops) {
  const size_t nn = (size_t)n * n;
  const float one = 1.0f, zero = 0.0f;
  float *a = NULL, *b = NULL, *c = NULL;
  double *t = malloc((size_t)reps * sizeof *t);
  cuda_timer tm;
  if (!t) return cuvae_error("out of memory");
  if (cuda_timer_create(&tm, tf32)) {
    free(t);
    return -1;
  }
  CU_TRY(cudaMalloc((void **)&a, nn * sizeof(float)));
  CU_TRY(cudaMalloc((void **)&b, nn * sizeof(float)));
  CU_TRY(cudaMalloc((void **)&c, nn * sizeof(float)));
  if (cuda_fill(a, nn, 0) || cuda_fill(b, nn, nn)) goto fail;
  for (int r = -1; r < reps; r++) {
    CU_TRY(cudaEventRecord(tm.start, tm.stream));
    CUBLAS_TRY(cublasSgemm(tm.blas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n, &zero, c, n));
    CU_TRY(cudaEventRecord(tm.stop, tm.stream));
    CU_TRY(cudaEventSynchronize(tm.stop));
    float ms = 0.0f;
    CU_TRY(cudaEventElapsedTime(&ms, tm.start, tm.stop));
    if (r >= 0) t[r] = 1e-3 * ms;
  }
  *gflops = 2.0 * n * (double)n * n / bench_median(t, reps) * 1e-9;
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  cuda_timer_destroy(&tm);
  free(t);
  return 0;
fail:
  if (a) cudaFree(a);
  if (b) cudaFree(b);
  if (c) cudaFree(c);
  cuda_timer_destroy(&tm);
  free(t);
  return -1;
}

#endif
