/* The CUDA backend's GEMMs on cuBLASLt: one call per dense-layer GEMM with its fused epilogue, in the precision of
 * [train] precision (fp32: CUBLAS_COMPUTE_32F; tf32: CUBLAS_COMPUTE_32F_FAST_TF32; bf16: CUDA_R_16BF operands,
 * CUBLAS_COMPUTE_32F, docs/MATH.md (8.2)), and the plan cache: each distinct GEMM (shape, transposes, types,
 * epilogue, its bias and mask pointers, the operands' alignment) gets its descriptors and its algorithm
 * (cublasLtMatmulAlgoGetHeuristic, told the operands' alignment) once, and keeps them. A plan is never made inside a graph capture: the step's
 * GEMMs are planned by warm_up_gemms (backend_cuda.c) before it is captured. */
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda_internal.h"
#include "cuda_check.h"
#include "cuvae/error.h"

enum { GEMM_PLANS = 256 };  /* the cache's capacity: a step holds at most 3 x 2 x CUVAE_MAX_LAYERS GEMMs */

/* What makes two GEMMs the same plan. Zeroed before it is filled, so memcmp compares it. */
typedef struct gemm_key {
  int ta, tb, m, n, k, lda, ldb, ldd, d_bf16, epilogue;
  int64_t aux_ld;
  const void *bias, *aux;
  unsigned align_a, align_b, align_d;  /* each operand's address alignment (bytes, at most 256) */
} gemm_key;

typedef struct gemm_plan {
  gemm_key key;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, ld;
  cublasLtMatmulAlgo_t algo;
} gemm_plan;

struct cuda_gemm_cache {
  gemm_plan plans[GEMM_PLANS];
  int count, next;  /* plans in use; the one a full cache replaces next (round robin) */
};

static unsigned alignment(const void *p) {
  const uintptr_t a = (uintptr_t)p;
  return a % 256 == 0 ? 256u : (unsigned)(a & (~a + 1));
}

int cuda_gemm_init(cuda_backend *be) {
  CUBLAS_CHECK(cublasLtCreate(&be->lt));
  be->gemms = calloc(1, sizeof *be->gemms);
  if (!be->gemms) return cuvae_error("out of memory creating the GEMM plan cache");
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&be->lt_pref));
  const size_t ws = CUBLAS_WORKSPACE_BYTES;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(be->lt_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                    sizeof ws));
  return 0;
}

static void plan_release(gemm_plan *p) {
  if (p->desc) cublasLtMatmulDescDestroy(p->desc);
  if (p->la) cublasLtMatrixLayoutDestroy(p->la);
  if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
  if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
  memset(p, 0, sizeof *p);
}

void cuda_gemm_destroy(cuda_backend *be) {
  if (be->gemms) {
    for (int i = 0; i < be->gemms->count; i++) plan_release(&be->gemms->plans[i]);
    free(be->gemms);
    be->gemms = NULL;
  }
  if (be->lt_pref) cublasLtMatmulPreferenceDestroy(be->lt_pref);
  if (be->lt) cublasLtDestroy(be->lt);
}

static gemm_key key_of(const cuda_gemm *g) {
  gemm_key k;
  memset(&k, 0, sizeof k);
  k.ta = (int)g->ta;
  k.tb = (int)g->tb;
  k.m = g->m;
  k.n = g->n;
  k.k = g->k;
  k.lda = g->lda;
  k.ldb = g->ldb;
  k.ldd = g->ldd;
  k.d_bf16 = g->d_bf16;
  k.epilogue = (int)g->epilogue;
  k.aux_ld = g->aux_ld;
  k.bias = g->bias;
  k.aux = g->aux;
  k.align_a = alignment(g->a);
  k.align_b = alignment(g->b);
  k.align_d = alignment(g->d);
  return k;
}

/* The descriptors of g (column-major: A is m x k after op(A), stored rows x cols with leading dimension lda). */
static int plan_describe(cuda_backend *be, const cuda_gemm *g, gemm_plan *p) {
  const int bf16 = be->cfg->precision == CUVAE_PRECISION_BF16;
  const cublasComputeType_t compute =
      be->cfg->precision == CUVAE_PRECISION_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F, dt = g->d_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F));
  const int32_t ta = (int32_t)g->ta, tb = (int32_t)g->tb;
  const uint32_t epi = (uint32_t)g->epilogue;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  if (g->bias) {  /* the bias (BIAS) or the bias gradient (BGRAD), fp32 whatever D's type */
    const int32_t bias_type = CUDA_R_32F;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
  }
  if (g->aux) {  /* the ReLU bit mask: written by RELU_AUX_BIAS, read by DRELU_BGRAD */
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g->aux, sizeof g->aux));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &g->aux_ld,
                                                sizeof g->aux_ld));
  }
  const int a_trans = g->ta != CUBLAS_OP_N, b_trans = g->tb != CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, ab, a_trans ? g->k : g->m, a_trans ? g->m : g->k, g->lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, ab, b_trans ? g->n : g->k, b_trans ? g->k : g->n, g->ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->ld, dt, g->m, g->n, g->ldd));
  return 0;
}

static const char *epilogue_name(cublasLtEpilogue_t e) {
  switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT: return "none";
    case CUBLASLT_EPILOGUE_BIAS: return "BIAS";
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS: return "RELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DRELU_BGRAD: return "DRELU_BGRAD";
    case CUBLASLT_EPILOGUE_BGRADB: return "BGRADB";
    default: return "other";
  }
}

/* The heuristic's first algorithm for p's descriptors. It assumes 256-byte-aligned operands unless told otherwise
 * (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*), so it is told each operand's own alignment (C is D) and picks an algorithm
 * that can read them. */
static int plan_choose_algo(cuda_backend *be, const cuda_gemm *g, gemm_plan *p, const gemm_key *key) {
  const struct {
    cublasLtMatmulPreferenceAttributes_t attr;
    uint32_t bytes;
  } aligns[] = {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key->align_a},
                {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key->align_b},
                {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key->align_d},
                {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key->align_d}};
  for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++)
    CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(be->lt_pref, aligns[i].attr, &aligns[i].bytes, sizeof aligns[i].bytes));
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(be->lt, p->desc, p->la, p->lb, p->ld, p->ld, be->lt_pref, 1, &result, &found);
  if (st != CUBLAS_STATUS_SUCCESS || found < 1)
    return cuvae_error("cuBLASLt has no algorithm for the %d x %d x %d %s GEMM with epilogue %s: %s", g->m, g->n, g->k,
                       cuvae_precision_name(be->cfg->precision), epilogue_name(g->epilogue),
                       st != CUBLAS_STATUS_SUCCESS ? cublasGetStatusString(st) : "no heuristic result");
  p->algo = result.algo;
  return 0;
}

/* The plan of g: the cached one, or a new one (descriptors and the heuristic's first algorithm), made only outside
 * a graph capture. A full cache gives up its oldest plan. */
static gemm_plan *plan_for(cuda_backend *be, const cuda_gemm *g) {
  struct cuda_gemm_cache *c = be->gemms;
  const gemm_key key = key_of(g);
  for (int i = 0; i < c->count; i++)
    if (memcmp(&c->plans[i].key, &key, sizeof key) == 0) return &c->plans[i];
  enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(be->stream, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone) {
    cuvae_error("internal: a %d x %d x %d GEMM was first met inside a graph capture (warm_up_gemms missed it)", g->m,
                g->n, g->k);
    return NULL;
  }
  int slot = c->count;
  if (c->count < GEMM_PLANS) {
    c->count++;
  } else {
    slot = c->next;
    c->next = (c->next + 1) % GEMM_PLANS;
  }
  gemm_plan *p = &c->plans[slot];
  plan_release(p);
  if (plan_describe(be, g, p) || plan_choose_algo(be, g, p, &key)) {
    plan_release(p);
    memset(&p->key, 0xff, sizeof p->key);  /* matches no GEMM */
    return NULL;
  }
  p->key = key;
  return p;
}

int cuda_gemm_run(cuda_backend *be, const cuda_gemm *g) {
  const gemm_plan *p = plan_for(be, g);
  if (!p) return -1;
  if (be->plan_only) return 0;
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_LAUNCH(be, cublasLtMatmul(be->lt, p->desc, &one, g->a, p->la, g->b, p->lb, &zero, g->d, p->ld, g->d, p->ld,
                                   &p->algo, be->blas_workspace, CUBLAS_WORKSPACE_BYTES, be->stream));
  return 0;
}
