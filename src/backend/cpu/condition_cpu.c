/* The conditional VAE's plumbing (docs/MATH.md section 6): the one-hot label appended to the encoder input [x, y] and to
 * the decoder input [z, y], the columns of a matrix taken back out, and the labels of a minibatch. CPU twin of
 * kernels/condition.cu. */
#include <string.h>

#include "cuvae/cpu.h"
#include "parallel.h"

/* out[i] = [a_i | onehot(labels[i % period], n_classes)], rows of n + n_classes floats. With C samples per data row
 * laid out sample-major (row s*R + r), period = R gives every sample its data row's label. */
void concat_onehot_cpu(const float *a, int n, const int32_t *labels, int period, int n_classes, float *out, int rows) {
  const size_t width = (size_t)n + (size_t)n_classes;
  CUVAE_PARALLEL_FOR((size_t)rows * width)
  for (int i = 0; i < rows; i++) {
    float *row = out + (size_t)i * width;
    memcpy(row, a + (size_t)i * n, (size_t)n * sizeof(float));
    for (int c = 0; c < n_classes; c++) row[n + c] = c == labels[i % period] ? 1.0f : 0.0f;
  }
}

/* dst[i][:] = src[i][0..n), rows of ld >= n floats (e.g. the gradient of x out of the gradient of [x, y]). */
void take_columns_cpu(const float *src, int ld, float *dst, int rows, int n) {
  CUVAE_PARALLEL_FOR((size_t)rows * n)
  for (int i = 0; i < rows; i++) memcpy(dst + (size_t)i * n, src + (size_t)i * ld, (size_t)n * sizeof(float));
}

/* The minibatch's labels: dst[b] = src[rows[b]] (rows already checked against the source's length). */
void gather_labels_cpu(const int32_t *src, const uint32_t *rows, int32_t *dst, int B) {
  for (int b = 0; b < B; b++) dst[b] = src[rows[b]];
}
