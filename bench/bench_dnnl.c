/* cuvae-bench: GEMM shapes on OpenBLAS sgemm, oneDNN fp32 and oneDNN bf16 matmul; the bf16 matmul peak; the step's
 * GEMMs replayed through the library's own calls (oneDNN fp32 or bf16).
 *
 * Linking: this file calls oneDNN directly (dnnl.h from CUVAE_DNNL_INCLUDE, the library CUVAE_DNNL that libcuvae
 * already links), since the peak and the shape table's products are calls the library never makes; the replay instead
 * goes through the library's private gemm_dnnl.h (gemm_bf16_cpu and gemm_fp32_cpu, the calls the step makes,
 * primitive cache and lock included), so that the replay times exactly what the step runs. */
#include "bench_dnnl.h"

#include <cblas.h>
#include <dnnl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench_gemm.h"
#include "cuvae/bf16.h"
#include "cuvae/error.h"
#include "gemm_dnnl.h"

struct bench_mm {
  bench_mm_engine engine;
  int ta, tb, m, n, k;
  void *a, *b;              /* float (OpenBLAS, oneDNN fp32) or uint16_t bf16 (oneDNN bf16) */
  float *c;
  dnnl_primitive_t prim;
  dnnl_memory_t ma, mb, mc;
  double reorder_s;         /* BENCH_MM_DNNL_BF16_PACKED: median seconds of B's reorder into the packed layout */
  char impl[128];
};

static dnnl_engine_t g_engine;
static dnnl_stream_t g_stream;

static int dnnl_check(dnnl_status_t s, const char *what) {
  return s == dnnl_success ? 0 : cuvae_error("oneDNN: %s failed (status %d)", what, (int)s);
}

static int ensure_engine(void) {
  if (g_stream) return 0;
  if (dnnl_check(dnnl_engine_create(&g_engine, dnnl_cpu, 0), "creating the CPU engine") ||
      dnnl_check(dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags), "creating a stream"))
    return -1;
  return 0;
}

/* n operand values of the pattern at index start, as floats or rounded to bf16; NULL when out of memory. */
static void *operand(size_t n, size_t start, int bf16) {
  float *f = malloc((n ? n : 1) * sizeof *f);
  if (!f) return NULL;
  bench_fill_pattern(f, n, start);
  if (!bf16) return f;
  uint16_t *h = malloc((n ? n : 1) * sizeof *h);
  for (size_t i = 0; h && i < n; i++) h[i] = cuvae_bf16_from_float(f[i]);
  free(f);
  return h;
}

/* B (plain, described by plain_md, at mm->b) reordered into the matmul's own weights layout, into mm->mb (memory
 * oneDNN allocates); mm->reorder_s: the median of 5 reorders after a first one. */
static int pack_b(bench_mm *mm, const dnnl_memory_desc_t *plain_md, const dnnl_primitive_desc_t pd) {
  const dnnl_memory_desc_t *packed_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  dnnl_memory_t plain = NULL;
  dnnl_primitive_desc_t rpd = NULL;
  dnnl_primitive_t reorder = NULL;
  double t[5];
  int rc = -1;
  if (dnnl_check(dnnl_memory_create(&mm->mb, packed_md, g_engine, DNNL_MEMORY_ALLOCATE), "allocating packed B") ||
      dnnl_check(dnnl_memory_create(&plain, plain_md, g_engine, mm->b), "binding B") ||
      dnnl_check(dnnl_reorder_primitive_desc_create(&rpd, plain_md, g_engine, packed_md, g_engine, NULL),
                 "describing B's reorder") ||
      dnnl_check(dnnl_primitive_create(&reorder, rpd), "creating B's reorder"))
    goto done;
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, mm->mb}};
  for (int r = -1; r < 5; r++) {
    const double t0 = bench_now();
    if (dnnl_check(dnnl_primitive_execute(reorder, g_stream, 2, args), "reordering B") ||
        dnnl_check(dnnl_stream_wait(g_stream), "waiting for B's reorder"))
      goto done;
    if (r >= 0) t[r] = bench_now() - t0;
  }
  mm->reorder_s = bench_median(t, 5);
  rc = 0;
done:
  if (reorder) dnnl_primitive_destroy(reorder);
  if (rpd) dnnl_primitive_desc_destroy(rpd);
  if (plain) dnnl_memory_destroy(plain);
  return rc;
}

/* oneDNN's matmul of mm's shape: A[m][k], B[k][n] with the transposes as strides (packed: the matmul's choice),
 * C[m][n] fp32. */
static int dnnl_prepare(bench_mm *mm) {
  const int packed = mm->engine == BENCH_MM_DNNL_BF16_PACKED;
  const dnnl_data_type_t t = mm->engine == BENCH_MM_DNNL_F32 ? dnnl_f32 : dnnl_bf16;
  const dnnl_dims_t da = {mm->m, mm->k}, db = {mm->k, mm->n}, dc = {mm->m, mm->n};
  const dnnl_dims_t sa = {mm->ta ? 1 : mm->k, mm->ta ? mm->m : 1}, sb = {mm->tb ? 1 : mm->n, mm->tb ? mm->k : 1},
                    sc = {mm->n, 1};
  dnnl_memory_desc_t ma, mb, mb_any, mc;
  dnnl_matmul_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  int rc = -1;
  if (ensure_engine() || dnnl_check(dnnl_memory_desc_init_by_strides(&ma, 2, da, t, sa), "describing A") ||
      dnnl_check(dnnl_memory_desc_init_by_strides(&mb, 2, db, t, sb), "describing B") ||
      dnnl_check(dnnl_memory_desc_init_by_tag(&mb_any, 2, db, t, dnnl_format_tag_any), "describing B") ||
      dnnl_check(dnnl_memory_desc_init_by_strides(&mc, 2, dc, dnnl_f32, sc), "describing C") ||
      dnnl_check(dnnl_matmul_desc_init(&desc, &ma, packed ? &mb_any : &mb, NULL, &mc), "describing a matmul") ||
      dnnl_check(dnnl_primitive_desc_create(&pd, &desc, NULL, g_engine, NULL), "choosing a matmul"))
    goto done;
  const char *name = "";
  dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
  snprintf(mm->impl, sizeof mm->impl, "%s", name);
  if (dnnl_check(dnnl_primitive_create(&mm->prim, pd), "creating a matmul") ||
      dnnl_check(dnnl_memory_create(&mm->ma, &ma, g_engine, mm->a), "binding A") ||
      (packed ? pack_b(mm, &mb, pd) : dnnl_check(dnnl_memory_create(&mm->mb, &mb, g_engine, mm->b), "binding B")) ||
      dnnl_check(dnnl_memory_create(&mm->mc, &mc, g_engine, mm->c), "binding C"))
    goto done;
  rc = 0;
done:
  if (pd) dnnl_primitive_desc_destroy(pd);
  return rc;
}

bench_mm *bench_mm_create(bench_mm_engine e, int trans_a, int trans_b, int m, int n, int k) {
  bench_mm *mm = calloc(1, sizeof *mm);
  if (!mm) {
    cuvae_error("out of memory");
    return NULL;
  }
  mm->engine = e, mm->ta = trans_a, mm->tb = trans_b, mm->m = m, mm->n = n, mm->k = k;
  const int bf16 = e == BENCH_MM_DNNL_BF16 || e == BENCH_MM_DNNL_BF16_PACKED;
  mm->a = operand((size_t)m * k, 0, bf16);
  mm->b = operand((size_t)k * n, 7919, bf16);
  mm->c = calloc((size_t)m * n + 1, sizeof *mm->c);
  if (!mm->a || !mm->b || !mm->c) {
    cuvae_error("out of memory for a %d x %d x %d GEMM", m, n, k);
    bench_mm_destroy(mm);
    return NULL;
  }
  snprintf(mm->impl, sizeof mm->impl, "OpenBLAS");
  if (e != BENCH_MM_OPENBLAS_F32 && dnnl_prepare(mm)) {
    bench_mm_destroy(mm);
    return NULL;
  }
  return mm;
}

double bench_mm_run(bench_mm *mm) {
  const double t0 = bench_now();
  if (mm->engine == BENCH_MM_OPENBLAS_F32) {
    cblas_sgemm(CblasRowMajor, mm->ta ? CblasTrans : CblasNoTrans, mm->tb ? CblasTrans : CblasNoTrans, mm->m, mm->n,
                mm->k, 1.0f, mm->a, mm->ta ? mm->m : mm->k, mm->b, mm->tb ? mm->k : mm->n, 0.0f, mm->c, mm->n);
  } else {
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, mm->ma}, {DNNL_ARG_WEIGHTS, mm->mb}, {DNNL_ARG_DST, mm->mc}};
    if (dnnl_check(dnnl_primitive_execute(mm->prim, g_stream, 3, args), "running a matmul") ||
        dnnl_check(dnnl_stream_wait(g_stream), "waiting for a matmul"))
      return -1.0;
  }
  return bench_now() - t0;
}

const char *bench_mm_impl(const bench_mm *mm) { return mm->impl; }

double bench_mm_reorder_s(const bench_mm *mm) { return mm->reorder_s; }

void bench_mm_destroy(bench_mm *mm) {
  if (!mm) return;
  if (mm->prim) dnnl_primitive_destroy(mm->prim);
  if (mm->ma) dnnl_memory_destroy(mm->ma);
  if (mm->mb) dnnl_memory_destroy(mm->mb);
  if (mm->mc) dnnl_memory_destroy(mm->mc);
  free(mm->a);
  free(mm->b);
  free(mm->c);
  free(mm);
}

int bench_dnnl_bf16_peak(int n, int reps, double *gflops, char *desc, size_t desc_n) {
  bench_mm *mm = bench_mm_create(BENCH_MM_DNNL_BF16, 0, 0, n, n, n);
  double *t = malloc((size_t)reps * sizeof *t);
  int rc = mm && t ? 0 : -1;
  if (rc == 0 && !mm) cuvae_error("out of memory");
  for (int r = -1; rc == 0 && r < reps; r++) {  /* one warm-up call, then the timed ones */
    const double s = bench_mm_run(mm);
    if (s < 0) rc = -1;
    if (r >= 0) t[r] = s;
  }
  if (rc == 0) {
    *gflops = 2.0 * n * (double)n * n / bench_median(t, reps) * 1e-9;
    const dnnl_version_t *v = dnnl_version();
    snprintf(desc, desc_n, "oneDNN %d.%d.%d matmul bf16 %d^3 (%s), median of %d", v->major, v->minor, v->patch, n,
             bench_mm_impl(mm), reps);
  }
  bench_mm_destroy(mm);
  free(t);
  return rc;
}

/* ---- the step's GEMMs through the library's own calls --------------------------------------------------- */

/* One pass: each GEMM of w through gemm_bf16_cpu (operands from the bf16 slots s16) or gemm_fp32_cpu (from the fp32
 * slots s32), with the kinds the step uses (dense_cpu.c); results go to the fp32 slots s32. In bf16 the step rounds
 * each result to bf16 before a later GEMM reads it; the replay leaves that conversion out. */
static int step_pass(const bench_step_work *w, int bf16, uint16_t **s16, float **s32) {
  for (int i = 0; i < w->n_gemms; i++) {
    const bench_gemm *g = &w->gemms[i];
    float *c = s32[g->c] + g->c_off;
    gemm_kind kind;
    int B, in, out;
    if (!g->trans_a && g->trans_b)        /* y = x W^T: B = m, out = n, in = k */
      kind = GEMM_FORWARD, B = g->m, in = g->k, out = g->n;
    else if (g->trans_a && !g->trans_b)   /* dW = d^T x: out = m, in = n, B = k */
      kind = GEMM_WEIGHT_GRAD, B = g->k, in = g->n, out = g->m;
    else                                  /* dx = d W: B = m, in = n, out = k */
      kind = GEMM_INPUT_GRAD, B = g->m, in = g->n, out = g->k;
    if (bf16)
      gemm_bf16_cpu(kind, B, in, out, s16[g->a] + g->a_off, s16[g->b] + g->b_off, c);
    else
      gemm_fp32_cpu(kind, B, in, out, s32[g->a] + g->a_off, s32[g->b] + g->b_off, c);
  }
  return gemm_take_failure();
}

int bench_cpu_step_gemm_replay(const cuvae_model *m, const bench_step_work *w, int bf16, int reps,
                               double *median_s) {
  const int ns = bench_slot_count(m);
  uint16_t **s16 = calloc((size_t)ns, sizeof *s16);
  float **s32 = calloc((size_t)ns, sizeof *s32);
  double *t = malloc((size_t)reps * sizeof *t);
  int rc = s16 && s32 && t ? 0 : -1;
  for (int i = 0; rc == 0 && i < ns; i++) {
    const size_t n = bench_slot_floats(m, w->B, i);
    s32[i] = operand(n, (size_t)i * 1000003u, 0);
    if (bf16) s16[i] = operand(n, (size_t)i * 1000003u, 1);
    if (!s32[i] || (bf16 && !s16[i])) rc = -1;
  }
  if (rc) cuvae_error("out of memory for the GEMM replay (batch %d)", w->B);
  for (int r = -1; rc == 0 && r < reps; r++) {
    const double t0 = bench_now();
    rc = step_pass(w, bf16, s16, s32);
    if (r >= 0) t[r] = bench_now() - t0;
  }
  if (rc == 0) *median_s = bench_median(t, reps);
  for (int i = 0; i < ns && s16 && s32; i++) {
    free(s16[i]);
    free(s32[i]);
  }
  free(s16);
  free(s32);
  free(t);
  return rc;
}

/* ---- the engines on every GEMM of a step ------------------------------------------------------------- */

/* The columns of the table: OpenBLAS, oneDNN fp32, oneDNN bf16 on the step's operands; for the gradient GEMMs oneDNN
 * fp32 and bf16 with the layer's gradient d stored transposed, [out][B] (the weight gradient's A = d^T is then plain,
 * the input gradient's A = d a transposed view of it); for the GEMMs that read W, oneDNN bf16 with W pre-packed. */
enum { N_ENGINES = 6, E_OPENBLAS = 0, E_F32 = 1, E_BF16 = 2, E_F32_DT = 3, E_BF16_DT = 4, E_PACKED = 5 };
static const bench_mm_engine k_engine[N_ENGINES] = {BENCH_MM_OPENBLAS_F32, BENCH_MM_DNNL_F32, BENCH_MM_DNNL_BF16,
                                                    BENCH_MM_DNNL_F32,     BENCH_MM_DNNL_BF16, BENCH_MM_DNNL_BF16_PACKED};
#define SHAPE_BUDGET_S 2.0  /* rounds beyond the third stop once a shape has taken this long */

/* The engines that apply to g, as a bit mask: the plain three always; dT when A is a gradient d (weight gradient:
 * tA = 1; input gradient: tA = 0, tB = 0); packed when B is the weights (forward, input gradient: tA = 0). */
static unsigned engines_for(const bench_gemm *g) {
  const int grad = g->trans_a || !g->trans_b, reads_w = !g->trans_a;
  return 7u | (grad ? 1u << E_F32_DT | 1u << E_BF16_DT : 0u) | (reads_w ? 1u << E_PACKED : 0u);
}

/* Median seconds per engine of `mask` for one GEMM, rounds interleaved; impl[e] receives each engine's name,
 * *reorder_s the packed engine's reorder time (0 when it does not run). */
static int time_shape(const bench_gemm *g, unsigned mask, int reps, double med[N_ENGINES], char impl[N_ENGINES][128],
                      double *reorder_s) {
  bench_mm *mm[N_ENGINES] = {NULL};
  int active[N_ENGINES], n = 0;
  for (int e = 0; e < N_ENGINES; e++)
    if (mask >> e & 1u) active[n++] = e;
  double *t = malloc((size_t)N_ENGINES * (size_t)reps * sizeof *t);
  int rc = t ? 0 : cuvae_error("out of memory");
  *reorder_s = 0.0;
  for (int i = 0; rc == 0 && i < n; i++) {
    const int e = active[i];
    const int ta = e == E_F32_DT || e == E_BF16_DT ? !g->trans_a : g->trans_a;  /* d stored transposed */
    mm[e] = bench_mm_create(k_engine[e], ta, g->trans_b, g->m, g->n, g->k);
    if (!mm[e]) rc = -1;
    else snprintf(impl[e], 128, "%s", bench_mm_impl(mm[e]));
    if (mm[e] && e == E_PACKED) *reorder_s = bench_mm_reorder_s(mm[e]);
  }
  for (int i = 0; rc == 0 && i < n; i++)  /* a warm-up call each */
    if (bench_mm_run(mm[active[i]]) < 0) rc = -1;
  int done = 0;
  const double t0 = bench_now();
  while (rc == 0 && done < reps && (done < 3 || bench_now() - t0 < SHAPE_BUDGET_S)) {
    for (int i = 0; rc == 0 && i < n; i++) {
      const int e = active[(i + done) % n];  /* the order rotates every round */
      const double s = bench_mm_run(mm[e]);
      if (s < 0) rc = -1;
      t[e * reps + done] = s;
    }
    done++;
  }
  for (int i = 0; rc == 0 && i < n; i++) med[active[i]] = bench_median(t + active[i] * reps, done);
  for (int e = 0; e < N_ENGINES; e++) bench_mm_destroy(mm[e]);
  free(t);
  return rc;
}

int bench_gemm_shape_table(FILE *out, const char *config, const bench_step_work *w, int reps) {
  fprintf(out, "%-7s %-16s %2s %2s %6s %6s %6s %13s %13s %14s %9s %9s %13s %14s %12s %16s %12s %10s\n", "config",
          "gemm", "tA", "tB", "m", "n", "k", "OpenBLAS_GF/s", "dnnl_f32_GF/s", "dnnl_bf16_GF/s", "f32/OB", "bf16/OB",
          "f32_dT_GF/s", "bf16_dT_GF/s", "bf16_dT/bf16", "bf16_packW_GF/s", "packW/bf16", "reorder_ms");
  static const char *const k_name[N_ENGINES] = {"", "fp32", "bf16", "fp32 dT", "bf16 dT", "bf16 packW"};
  char impl[N_ENGINES][128], impl_seen[N_ENGINES][128] = {""};
  for (int i = 0; i < w->n_gemms; i++) {
    const bench_gemm *g = &w->gemms[i];
    const unsigned mask = engines_for(g);
    double med[N_ENGINES], reorder_s;
    if (time_shape(g, mask, reps, med, impl, &reorder_s)) return -1;
    const double gf = 2.0 * g->m * (double)g->n * g->k * 1e-9;
    fprintf(out, "%-7s %-16s %2d %2d %6d %6d %6d %13.1f %13.1f %14.1f %9.2f %9.2f", config, g->what, g->trans_a,
            g->trans_b, g->m, g->n, g->k, gf / med[E_OPENBLAS], gf / med[E_F32], gf / med[E_BF16],
            med[E_OPENBLAS] / med[E_F32], med[E_OPENBLAS] / med[E_BF16]);
    if (mask >> E_BF16_DT & 1u)
      fprintf(out, " %13.1f %14.1f %12.2f", gf / med[E_F32_DT], gf / med[E_BF16_DT], med[E_BF16] / med[E_BF16_DT]);
    else
      fprintf(out, " %13s %14s %12s", "-", "-", "-");
    if (mask >> E_PACKED & 1u)
      fprintf(out, " %16.1f %12.2f %10.3f\n", gf / med[E_PACKED], med[E_BF16] / med[E_PACKED], reorder_s * 1e3);
    else
      fprintf(out, " %16s %12s %10s\n", "-", "-", "-");
    fflush(out);
    for (int e = 1; e < N_ENGINES; e++)
      if ((mask >> e & 1u) && strcmp(impl[e], impl_seen[e]) != 0) {
        fprintf(out, "        (%s: oneDNN %s from here on)\n", k_name[e], impl[e]);
        memcpy(impl_seen[e], impl[e], sizeof impl_seen[e]);
      }
  }
  return 0;
}
