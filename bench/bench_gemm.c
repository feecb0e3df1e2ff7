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

#include "cuvae/bf16.h"
#include "cuvae/error.h"

#if CUVAE_HAVE_CUDA
#include <cublasLt.h>
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

/* Fills n device floats (or, with bf16, n device bfloat16 values) with the pattern, through a host staging buffer of
 * at most 4 Mi values. cudaMemcpy from pageable memory may return before the device side is written, and the legacy
 * stream it runs on does not order the non-blocking stream the GEMMs run on: the fill waits for the device before it
 * returns. */
static int cuda_fill(void *dev, size_t n, size_t start, int bf16) {
  const size_t chunk = (size_t)4 << 20, elem = bf16 ? sizeof(uint16_t) : sizeof(float);
  float *host = malloc((n < chunk ? n : chunk) * sizeof *host + sizeof *host);
  if (!host) return cuvae_error("out of memory staging device buffers");
  for (size_t done = 0; done < n; done += chunk) {
    const size_t len = n - done < chunk ? n - done : chunk;
    bench_fill_pattern(host, len, start + done);
    if (bf16)  /* in place, in ascending order: value i's 2 bytes land where floats <= i/2 were, already read */
      for (size_t i = 0; i < len; i++) ((uint16_t *)host)[i] = cuvae_bf16_from_float(host[i]);
    const cudaError_t e = cudaMemcpy((char *)dev + done * elem, host, len * elem, cudaMemcpyHostToDevice);
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

/* A bf16 GEMM of n x n x n through cuBLASLt, as the CUDA backend's bf16 layers run (bf16 A and B, fp32 C and D, fp32
 * compute): descriptors, the heuristic's algorithm and its workspace, made once. */
typedef struct lt_gemm {
  cublasLtHandle_t lt;
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t ab, c;
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulAlgo_t algo;
  void *ws;
  size_t ws_bytes;
} lt_gemm;

static void lt_gemm_destroy(lt_gemm *g) {
  if (g->ws) cudaFree(g->ws);
  if (g->pref) cublasLtMatmulPreferenceDestroy(g->pref);
  if (g->c) cublasLtMatrixLayoutDestroy(g->c);
  if (g->ab) cublasLtMatrixLayoutDestroy(g->ab);
  if (g->op) cublasLtMatmulDescDestroy(g->op);
  if (g->lt) cublasLtDestroy(g->lt);
  memset(g, 0, sizeof *g);
}

static int lt_gemm_create(lt_gemm *g, int n) {
  cublasLtMatmulHeuristicResult_t h;
  int found = 0;
  memset(g, 0, sizeof *g);
  g->ws_bytes = (size_t)32 << 20;  /* what the backend gives cuBLASLt (CUBLAS_WORKSPACE_BYTES) */
  CUBLAS_TRY(cublasLtCreate(&g->lt));
  CUBLAS_TRY(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  CUBLAS_TRY(cublasLtMatrixLayoutCreate(&g->ab, CUDA_R_16BF, (uint64_t)n, (uint64_t)n, n));
  CUBLAS_TRY(cublasLtMatrixLayoutCreate(&g->c, CUDA_R_32F, (uint64_t)n, (uint64_t)n, n));
  CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&g->pref));
  CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g->ws_bytes,
                                                  sizeof g->ws_bytes));
  CUBLAS_TRY(cublasLtMatmulAlgoGetHeuristic(g->lt, g->op, g->ab, g->ab, g->c, g->c, g->pref, 1, &h, &found));
  if (found < 1) {
    cuvae_error("cuBLASLt has no algorithm for a bf16 %d^3 GEMM", n);
    goto fail;
  }
  g->algo = h.algo;
  CU_TRY(cudaMalloc(&g->ws, g->ws_bytes));
  return 0;
fail:
  lt_gemm_destroy(g);
  return -1;
}

int bench_cuda_gemm_peak(int n, int reps, int tf32, int bf16, double *gflops) {
  const size_t nn = (size_t)n * n, elem = bf16 ? sizeof(uint16_t) : sizeof(float);
  const float one = 1.0f, zero = 0.0f;
  void *a = NULL, *b = NULL;
  float *c = NULL;
  double *t = malloc((size_t)reps * sizeof *t);
  cuda_timer tm;
  lt_gemm lg;
  memset(&lg, 0, sizeof lg);
  if (!t) return cuvae_error("out of memory");
  if (cuda_timer_create(&tm, tf32)) {
    free(t);
    return -1;
  }
  CU_TRY(cudaMalloc(&a, nn * elem));
  CU_TRY(cudaMalloc(&b, nn * elem));
  CU_TRY(cudaMalloc((void **)&c, nn * sizeof(float)));
  if (cuda_fill(a, nn, 0, bf16) || cuda_fill(b, nn, nn, bf16) || (bf16 && lt_gemm_create(&lg, n))) goto fail;
  for (int r = -1; r < reps; r++) {
    CU_TRY(cudaEventRecord(tm.start, tm.stream));
    if (bf16)
      CUBLAS_TRY(cublasLtMatmul(lg.lt, lg.op, &one, a, lg.ab, b, lg.ab, &zero, c, lg.c, c, lg.c, &lg.algo, lg.ws,
                                lg.ws_bytes, tm.stream));
    else
      CUBLAS_TRY(cublasSgemm(tm.blas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n, &zero, c, n));
    CU_TRY(cudaEventRecord(tm.stop, tm.stream));
    CU_TRY(cudaEventSynchronize(tm.stop));
    float ms = 0.0f;
    CU_TRY(cudaEventElapsedTime(&ms, tm.start, tm.stop));
    if (r >= 0) t[r] = 1e-3 * ms;
  }
  *gflops = 2.0 * n * (double)n * n / bench_median(t, reps) * 1e-9;
  lt_gemm_destroy(&lg);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  cuda_timer_destroy(&tm);
  free(t);
  return 0;
fail:
  lt_gemm_destroy(&lg);
  if (a) cudaFree(a);
  if (b) cudaFree(b);
  if (c) cudaFree(c);
  cuda_timer_destroy(&tm);
  free(t);
  return -1;
}

#endif
