/* Conversion of float arrays to bfloat16 (docs/MATH.md (8.1)): the CPU twin of kernels/bf16.cu. */
#include "cuvae/bf16.h"
#include "cuvae/cpu.h"
#include "parallel.h"
#include "simd_math.h"

enum { BF16_CHUNK = 1 << 15 };  /* elements per task */

CUVAE_VECTOR_CLONES
static void to_bf16_chunk(const float *restrict x, uint16_t *restrict y16, size_t n) {
  for (size_t i = 0; i < n; i++) y16[i] = cuvae_bf16_from_float(x[i]);
}

void to_bf16_cpu(const float *x, uint16_t *y16, size_t n) {
  const long long chunks = (long long)((n + BF16_CHUNK - 1) / BF16_CHUNK);
  CUVAE_PARALLEL_FOR(n)
  for (long long c = 0; c < chunks; c++) {
    const size_t lo = (size_t)c * BF16_CHUNK, len = n - lo < BF16_CHUNK ? n - lo : BF16_CHUNK;
    to_bf16_chunk(x + lo, y16 + lo, len);
  }
}
