/* The CPU backend's bf16 GEMMs (docs/MATH.md (8.2)): oneDNN's matmul primitive on bfloat16 operands with fp32
 * results, one primitive per shape, created on first use and kept. Private to src/backend/cpu/. */
#ifndef CUVAE_GEMM_BF16_H
#define CUVAE_GEMM_BF16_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* The three GEMMs of a dense layer with B rows, W[out][in] (row-major, as the parameter buffer stores it):
 *   FORWARD      y[B][out]   = x16[B][in] W16^T        (a = x16, b = W16)
 *   WEIGHT_GRAD  dW[out][in] = d16^T x16, d16[B][out]  (a = d16, b = x16)
 *   INPUT_GRAD   dx[B][in]   = d16 W16                 (a = d16, b = W16) */
typedef enum { GEMM_BF16_FORWARD = 0, GEMM_BF16_WEIGHT_GRAD = 1, GEMM_BF16_INPUT_GRAD = 2 } gemm_bf16_kind;

/* c = the product above (overwritten). On a oneDNN failure it reports through cuvae_error once, leaves c unchanged
 * and makes the next gemm_bf16_take_failure return -1. */
void gemm_bf16_cpu(gemm_bf16_kind kind, int B, int in, int out, const uint16_t *a, const uint16_t *b, float *c);
/* -1 (and clears the flag) when a gemm_bf16_cpu call failed since the last call; else 0. */
int gemm_bf16_take_failure(void);

#ifdef __cplusplus
}
#endif
#endif
