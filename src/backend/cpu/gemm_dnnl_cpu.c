/* The CPU's GEMMs on oneDNN's matmul, fp32 and bf16 (AMX on Sapphire Rapids, AVX512-BF16 on Zen 4 / Cooper Lake):
 * the primitive cache, the check that the CPU has bf16 units, and the descriptions the banner prints. */
#include <dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "gemm_dnnl.h"

enum { GEMM_CACHE_SIZE = 128 };  /* shapes kept: 3 per layer and batch size; the oldest goes when it is full */

typedef struct gemm_entry {
  int used, kind, B, in, out;
  dnnl_data_type_t type;  /* of the operands: dnnl_bf16 or dnnl_f32 */
  dnnl_primitive_t prim;
  dnnl_memory_t a, b, c;
} gemm_entry;

static struct {
  pthread_mutex_t lock;
  int ready, failed;
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  gemm_entry entry[GEMM_CACHE_SIZE];
  int next_evict;
} g_gemm = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int dnnl_failed(dnnl_status_t s, const char *what) {
  if (s == dnnl_success) return 0;
  return cuvae_error("oneDNN: %s failed (status %d)", what, (int)s);
}

static int ensure_engine(void) {
  if (g_gemm.ready) return 0;
  if (dnnl_failed(dnnl_engine_create(&g_gemm.engine, dnnl_cpu, 0), "creating the CPU engine")) return -1;
  if (dnnl_failed(dnnl_stream_create(&g_gemm.stream, g_gemm.engine, dnnl_stream_default_flags), "creating a stream"))
    return -1;
  g_gemm.ready = 1;
  return 0;
}

/* The operands of `kind` as oneDNN's C[M][N] = A[M][K] B[K][N] with strides (the transposes are strides). */
static void gemm_shape(int kind, int B, int in, int out, dnnl_dims_t da, dnnl_dims_t sa, dnnl_dims_t db,
                       dnnl_dims_t sb, dnnl_dims_t dc) {
  dnnl_dim_t M, N, K;
  if (kind == GEMM_FORWARD) {            /* A = x [B][in]; B = W^T: [in][out] with strides (1, in) */
    M = B, N = out, K = in;
    sa[0] = in, sa[1] = 1, sb[0] = 1, sb[1] = in;
  } else if (kind == GEMM_WEIGHT_GRAD) { /* A = d^T: [out][B] with strides (1, out); B = x [B][in] */
    M = out, N = in, K = B;
    sa[0] = 1, sa[1] = out, sb[0] = in, sb[1] = 1;
  } else {                               /* A = d [B][out]; B = W [out][in] */
    M = B, N = in, K = out;
    sa[0] = out, sa[1] = 1, sb[0] = in, sb[1] = 1;
  }
  da[0] = M, da[1] = K, db[0] = K, db[1] = N, dc[0] = M, dc[1] = N;
}

static void entry_release(gemm_entry *e) {
  if (e->prim) dnnl_primitive_destroy(e->prim);
  if (e->a) dnnl_memory_destroy(e->a);
  if (e->b) dnnl_memory_destroy(e->b);
  if (e->c) dnnl_memory_destroy(e->c);
  memset(e, 0, sizeof *e);
}

/* Creates the primitive of one shape into e; impl (may be NULL) receives oneDNN's implementation name. */
static int entry_create(gemm_entry *e, dnnl_data_type_t type, int kind, int B, int in, int out, char *impl,
                        size_t impl_n) {
  dnnl_dims_t da, sa, db, sb, dc, sc;
  gemm_shape(kind, B, in, out, da, sa, db, sb, dc);
  sc[0] = dc[1], sc[1] = 1;
  dnnl_memory_desc_t ma, mb, mc;
  dnnl_matmul_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  int rc = -1;
  if (dnnl_failed(dnnl_memory_desc_init_by_strides(&ma, 2, da, type, sa), "describing a GEMM operand") ||
      dnnl_failed(dnnl_memory_desc_init_by_strides(&mb, 2, db, type, sb), "describing a GEMM operand") ||
      dnnl_failed(dnnl_memory_desc_init_by_strides(&mc, 2, dc, dnnl_f32, sc), "describing a GEMM result") ||
      dnnl_failed(dnnl_matmul_desc_init(&desc, &ma, &mb, NULL, &mc), "describing a matmul") ||
      dnnl_failed(dnnl_primitive_desc_create(&pd, &desc, NULL, g_gemm.engine, NULL), "choosing a matmul"))
    goto done;
  if (impl) {
    const char *name = "";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
    snprintf(impl, impl_n, "%s", name);
  }
  e->type = type, e->kind = kind, e->B = B, e->in = in, e->out = out;
  if (dnnl_failed(dnnl_primitive_create(&e->prim, pd), "creating a matmul") ||
      dnnl_failed(dnnl_memory_create(&e->a, &ma, g_gemm.engine, DNNL_MEMORY_NONE), "creating a GEMM operand") ||
      dnnl_failed(dnnl_memory_create(&e->b, &mb, g_gemm.engine, DNNL_MEMORY_NONE), "creating a GEMM operand") ||
      dnnl_failed(dnnl_memory_create(&e->c, &mc, g_gemm.engine, DNNL_MEMORY_NONE), "creating a GEMM result"))
    goto done;
  e->used = 1;
  rc = 0;
done:
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (rc) entry_release(e);
  return rc;
}

static gemm_entry *entry_for(dnnl_data_type_t type, int kind, int B, int in, int out) {
  for (int i = 0; i < GEMM_CACHE_SIZE; i++) {
    gemm_entry *e = &g_gemm.entry[i];
    if (e->used && e->type == type && e->kind == kind && e->B == B && e->in == in && e->out == out) return e;
  }
  gemm_entry *e = NULL;
  for (int i = 0; i < GEMM_CACHE_SIZE && !e; i++)
    if (!g_gemm.entry[i].used) e = &g_gemm.entry[i];
  if (!e) {
    e = &g_gemm.entry[g_gemm.next_evict];
    g_gemm.next_evict = (g_gemm.next_evict + 1) % GEMM_CACHE_SIZE;
    entry_release(e);
  }
  return entry_create(e, type, kind, B, in, out, NULL, 0) ? NULL : e;
}

static int gemm_run(gemm_entry *e, const void *a, const void *b, float *c) {
  if (dnnl_failed(dnnl_memory_set_data_handle(e->a, (void *)a), "binding a GEMM operand") ||
      dnnl_failed(dnnl_memory_set_data_handle(e->b, (void *)b), "binding a GEMM operand") ||
      dnnl_failed(dnnl_memory_set_data_handle(e->c, c), "binding a GEMM result"))
    return -1;
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
  if (dnnl_failed(dnnl_primitive_execute(e->prim, g_gemm.stream, 3, args), "running a matmul")) return -1;
  return dnnl_failed(dnnl_stream_wait(g_gemm.stream), "waiting for a matmul");
}

static void gemm_dnnl(dnnl_data_type_t type, gemm_kind kind, int B, int in, int out, const void *a, const void *b,
                      float *c) {
  pthread_mutex_lock(&g_gemm.lock);
  gemm_entry *e = ensure_engine() ? NULL : entry_for(type, (int)kind, B, in, out);
  if (!e || gemm_run(e, a, b, c)) g_gemm.failed = 1;
  pthread_mutex_unlock(&g_gemm.lock);
}

void gemm_bf16_cpu(gemm_kind kind, int B, int in, int out, const uint16_t *a, const uint16_t *b, float *c) {
  gemm_dnnl(dnnl_bf16, kind, B, in, out, a, b, c);
}

void gemm_fp32_cpu(gemm_kind kind, int B, int in, int out, const float *a, const float *b, float *c) {
  gemm_dnnl(dnnl_f32, kind, B, in, out, a, b, c);
}

int gemm_take_failure(void) {
  pthread_mutex_lock(&g_gemm.lock);
  const int failed = g_gemm.failed;
  g_gemm.failed = 0;
  pthread_mutex_unlock(&g_gemm.lock);
  return failed ? -1 : 0;
}

/* oneDNN's names of the implementations that run bf16 on the CPU's own bf16 units (AMX tiles, AVX512-BF16 dot
 * products); anything else converts to fp32 inside the kernel or is the reference loop: correct, and several times
 * slower than fp32 OpenBLAS. */
static int uses_bf16_units(const char *impl) {
  return strstr(impl, "amx") != NULL || strstr(impl, "bf16") != NULL;
}

/* oneDNN's implementation of a 64^3 forward GEMM of `type` into impl; -1 when oneDNN has none (impl says so). */
static int probe_impl(dnnl_data_type_t type, char *impl, size_t n) {
  pthread_mutex_lock(&g_gemm.lock);
  gemm_entry probe = {0};
  int rc = ensure_engine() ? -1 : entry_create(&probe, type, GEMM_FORWARD, 64, 64, 64, impl, n);
  const int ready = g_gemm.ready;
  entry_release(&probe);
  pthread_mutex_unlock(&g_gemm.lock);
  if (rc && ready) snprintf(impl, n, "none: oneDNN has no implementation for this CPU");
  return rc;
}

static void describe(char *desc, size_t n, const char *type, const char *impl) {
  const dnnl_version_t *v = dnnl_version();
  snprintf(desc, n, "oneDNN %d.%d.%d matmul %s (%s)", v->major, v->minor, v->patch, type, impl);
}

int cuvae_cpu_fp32_gemm_describe(char *desc, size_t n) {
  char impl[128] = "";
  if (probe_impl(dnnl_f32, impl, sizeof impl)) return -1;
  describe(desc, n, "fp32", impl);
  return 0;
}

int cuvae_cpu_bf16_gemm_check(char *desc, size_t n) {
  char impl[128] = "";
  if (probe_impl(dnnl_bf16, impl, sizeof impl) && !g_gemm.ready) return -1;
  if (!uses_bf16_units(impl))
    return cuvae_error("precision = bf16: this CPU has no bf16 matrix units oneDNN can use (oneDNN's bf16 matmul "
                       "here: %s); bf16 needs AMX (Intel Sapphire Rapids and later) or AVX512-BF16 (Intel Cooper "
                       "Lake, AMD Zen 4 and later), and would otherwise run slower than fp32. Use precision = fp32",
                       impl);
  describe(desc, n, "bf16", impl);
  return 0;
}
