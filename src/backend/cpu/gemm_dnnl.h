/* The CPU backend's GEMMs on oneDNN's matmul primitive (docs/MATH.md (8.2) for bf16): bf16 or fp32 operands, fp32
 * results, one primitive per shape and type, created on first use and kept. Private to src/backend/cpu/. */
#ifndef CUVAE_GEMM_DNNL_H
#define CUVAE_GEMM_DNNL_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* The three GEMMs of a dense layer with B rows, W[out][in] (row-major, as the parameter buffer stores it):
 *   FORWARD      y[B][out]   = x[B][in] W^T         (a = x, b = W)
 *   WEIGHT_GRAD  dW[out][in] = d^T x, d[B][out]     (a = d, b = x)
 *   INPUT_GRAD   dx[B][in]   = d W                  (a = d, b = W) */
typedef enum { GEMM_FORWARD = 0, GEMM_WEIGHT_GRAD = 1, GEMM_INPUT_GRAD = 2 } gemm_kind;

/* c = the product above (overwritten), on bf16 operands (fp32 sums). On a oneDNN failure it reports through
 * cuvae_error, leaves c unchanged and makes the next gemm_take_failure return -1. */
void gemm_bf16_cpu(gemm_kind kind, int B, int in, int out, const uint16_t *a, const uint16_t *b, float *c);
/* The same on fp32 operands. */
void gemm_fp32_cpu(gemm_kind kind, int B, int in, int out, const float *a, const float *b, float *c);
/* -1 (and clears the flag) when a GEMM call failed since the last call; else 0. */
int gemm_take_failure(void);

#ifdef __cplusplus
}
#endif
#endif
