// The conditional VAE's plumbing on the device (docs/MATH.md section 6): the one-hot label appended to the encoder input
// [x, y] and the decoder input [z, y], columns taken back out of a matrix, and the minibatch's labels. GPU twins of
// concat_onehot_cpu, take_columns_cpu and gather_labels_cpu (src/backend/cpu/condition_cpu.c); pure data movement, so the
// results are bitwise those of the twins.
//
// Design: concat_onehot and take_columns: one block per output row (grid-stride over rows beyond 65535), threads
// striding along the row, so reads and writes are coalesced; gather_labels: elementwise grid-stride. The labels and
// row indices are read from device memory, so the launches are the same every step (graph-capturable).
#include "cuda_compat.h"

#include <stddef.h>
#include <stdint.h>

#include "cuvae_kernels.h"

namespace {

constexpr int kRowBlock = 256;     // threads per row
constexpr int kMaxGrid = 65535;    // row kernels: grid-stride over rows beyond this
constexpr int kElemBlock = 256;    // gather_labels: threads per block
constexpr int kElemMaxGrid = 1024;

// out[i] = [a_i (n floats) | onehot(labels[i % period], n_classes)], rows of n + n_classes floats. A label outside
// [0, n_classes) (the caller has checked they are not) would give a row of zeros, never a write out of bounds.
__global__ void concat_onehot_kernel(const float *__restrict__ a, int n, const int32_t *__restrict__ labels,
                                     int period, int n_classes, float *__restrict__ out, int rows) {
  const int width = n + n_classes;
  for (int i = blockIdx.x; i < rows; i += gridDim.x) {
    const float *src = a + (size_t)i * n;
    float *row = out + (size_t)i * width;
    const int label = labels[i % period];
    for (int c = threadIdx.x; c < width; c += blockDim.x) row[c] = c < n ? src[c] : (c - n == label ? 1.0f : 0.0f);
  }
}

// dst[i][:] = src[i][0..n), source rows of ld >= n floats.
__global__ void take_columns_kernel(const float *__restrict__ src, int ld, float *__restrict__ dst, int rows, int n) {
  for (int i = blockIdx.x; i < rows; i += gridDim.x) {
    const float *from = src + (size_t)i * ld;
    float *to = dst + (size_t)i * n;
    for (int c = threadIdx.x; c < n; c += blockDim.x) to[c] = from[c];
  }
}

// dst[b] = src[rows[b]].
__global__ void gather_labels_kernel(const int32_t *__restrict__ src, const uint32_t *__restrict__ rows,
                                     int32_t *__restrict__ dst, int B) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < B; b += stride) dst[b] = src[rows[b]];
}

}  // namespace

// n + n_classes must fit an int (the row width).
extern "C" cudaError_t concat_onehot_cuda(const float *a, int n, const int32_t *labels, int period, int n_classes,
                                          float *out, int rows, cudaStream_t stream) {
  if (!a || !labels || !out || n < 1 || period < 1 || n_classes < 1 || rows < 1 || n > INT32_MAX - n_classes)
    return cudaErrorInvalidValue;
  const int grid = rows < kMaxGrid ? rows : kMaxGrid;
  CUVAE_LAUNCH(concat_onehot_kernel, grid, kRowBlock, 0, stream, a, n, labels, period, n_classes, out, rows);
  return cudaGetLastError();
}

extern "C" cudaError_t take_columns_cuda(const float *src, int ld, float *dst, int rows, int n, cudaStream_t stream) {
  if (!src || !dst || rows < 1 || n < 1 || ld < n) return cudaErrorInvalidValue;
  const int grid = rows < kMaxGrid ? rows : kMaxGrid;
  CUVAE_LAUNCH(take_columns_kernel, grid, kRowBlock, 0, stream, src, ld, dst, rows, n);
  return cudaGetLastError();
}

extern "C" cudaError_t gather_labels_cuda(const int32_t *src, const uint32_t *rows, int32_t *dst, int B,
                                          cudaStream_t stream) {
  if (!src || !rows || !dst || B < 1) return cudaErrorInvalidValue;
  const int blocks = (B + kElemBlock - 1) / kElemBlock;
  const int grid = blocks < kElemMaxGrid ? blocks : kElemMaxGrid;
  CUVAE_LAUNCH(gather_labels_kernel, grid, kElemBlock, 0, stream, src, rows, dst, B);
  return cudaGetLastError();
}
