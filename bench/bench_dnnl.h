/* cuvae-bench: one GEMM shape on three CPU engines (OpenBLAS sgemm, oneDNN's fp32 matmul, oneDNN's bf16 matmul with
 * fp32 results), the bf16 matmul peak, the step's GEMMs replayed through the library's own calls, and the table of
 * the engines on every GEMM of a step (cuvae-bench --gemm-shapes). */
#ifndef CUVAE_BENCH_DNNL_H
#define CUVAE_BENCH_DNNL_H
#include <stddef.h>
#include <stdio.h>

#include "bench_model.h"

/* BENCH_MM_DNNL_BF16_PACKED: oneDNN bf16 with B reordered once, at creation, into the layout the matmul prefers
 * (format_tag any), as weights kept in that layout between steps would be. */
typedef enum {
  BENCH_MM_OPENBLAS_F32 = 0,
  BENCH_MM_DNNL_F32 = 1,
  BENCH_MM_DNNL_BF16 = 2,
  BENCH_MM_DNNL_BF16_PACKED = 3
} bench_mm_engine;

/* One prepared row-major product C[m,n] (fp32) = op(A)[m,k] op(B)[k,n] (trans_a, trans_b: the cblas sense) with
 * operands filled once; oneDNN's primitive is created here, not in the timed calls. */
typedef struct bench_mm bench_mm;
bench_mm *bench_mm_create(bench_mm_engine e, int trans_a, int trans_b, int m, int n, int k);  /* NULL: cuvae_error */
double bench_mm_run(bench_mm *mm);           /* seconds of one call; < 0 when oneDNN failed (cuvae_error set) */
const char *bench_mm_impl(const bench_mm *mm); /* "OpenBLAS" or oneDNN's implementation name */
double bench_mm_reorder_s(const bench_mm *mm);  /* BENCH_MM_DNNL_BF16_PACKED: median seconds of B's reorder; else 0 */
void bench_mm_destroy(bench_mm *mm);

/* oneDNN bf16 matmul n x n x n (row-major, no transposes) on OpenMP's current thread count: GFLOP/s of the median
 * of `reps` calls after one warm-up call; desc names the shape and oneDNN's implementation. */
int bench_dnnl_bf16_peak(int n, int reps, double *gflops, char *desc, size_t desc_n);

/* The step's GEMMs through the library's own calls (src/backend/cpu/gemm_dnnl.h: gemm_bf16_cpu when bf16, else
 * gemm_fp32_cpu; the kinds of dense_cpu.c) on operands of the step's sizes: median seconds of one pass over `reps`
 * passes after a warm-up pass. */
int bench_cpu_step_gemm_replay(const cuvae_model *m, const bench_step_work *w, int bf16, int reps, double *median_s);

/* For every GEMM of w: GFLOP/s of OpenBLAS sgemm, oneDNN fp32 and oneDNN bf16 on that shape, for the gradient
 * GEMMs also oneDNN fp32 and bf16 with the layer's gradient d stored transposed ([out][B], "dT"), and for the GEMMs
 * that read the weights (forward, input gradient) oneDNN bf16 with W pre-packed ("packW", and the milliseconds its
 * reorder takes, which weights updated every step would pay once per step and GEMM), calls interleaved
 * (one of each per round, so machine noise hits all alike), median per engine over up to `reps` rounds (at least 3;
 * fewer than reps once a shape has taken ~2 s). One table row per GEMM on out. */
int bench_gemm_shape_table(FILE *out, const char *config, const bench_step_work *w, int reps);

#endif
