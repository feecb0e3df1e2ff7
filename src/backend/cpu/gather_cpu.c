/* Minibatch gather, the CPU twin of kernels/gather.cu. */
#include <string.h>

#include "cuvae/cpu.h"
#include "parallel.h"

void gather_rows_cpu(const float *src, const uint32_t *rows, float *dst, int B, int D) {
  CUVAE_PARALLEL_FOR((size_t)B * D)
  for (int b = 0; b < B; b++)
    memcpy(dst + (size_t)b * (size_t)D, src + (size_t)rows[b] * (size_t)D, (size_t)D * sizeof(float));
}
