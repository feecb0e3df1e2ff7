/* The row sum of the fused CPU loss loops (likelihood_cpu.c, autoencoder_cpu.c): a row's per-element terms are
 * computed one chunk at a time in one vector loop, then added in double in index order. Private to src/backend/cpu/. */
#ifndef CUVAE_CPU_ROW_SUM_H
#define CUVAE_CPU_ROW_SUM_H
#include <stddef.h>

enum { ROW_CHUNK = 256 };  /* elements per chunk: the terms of one chunk are stored, then summed in double */

/* The n terms of one chunk into term: a and x are the chunk's inputs, g (NULL: no gradient) its gradient, scaled by
 * scale. */
typedef void row_terms_fn(const float *restrict a, const float *restrict x, float *restrict g, float scale,
                          float *restrict term, int n);

/* sum_d term_d over a row of D elements, in double in index order. Inlined into its caller with a constant `terms`,
 * so the chunk function is inlined too and its loop vectorised for the caller's target. */
static inline double row_sum(row_terms_fn *terms, const float *a, const float *x, float *g, float scale, int D) {
  float term[ROW_CHUNK];
  double sum = 0.0;
  for (int d0 = 0; d0 < D; d0 += ROW_CHUNK) {
    const int n = D - d0 < ROW_CHUNK ? D - d0 : ROW_CHUNK;
    terms(a + d0, x + d0, g ? g + d0 : NULL, scale, term, n);
    for (int d = 0; d < n; d++) sum += term[d];
  }
  return sum;
}

#endif
