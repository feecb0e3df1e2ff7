// Minibatch gather on the device (the data set stays on the device). GPU twin of gather_rows_cpu
// (src/backend/cpu/gather_cpu.c): dst[b][:] = src[rows[b]][:] for b < B, rows of D floats. The row indices are read from
// device memory, so the launch is the same every step and can live in a captured CUDA graph; only the contents of
// `rows` change.
#include "cuda_compat.h"

#include <stddef.h>
#include <stdint.h>

#include "cuvae_kernels.h"

namespace {

constexpr int kGatherBlock = 256;   // threads per block; one block per row (grid-stride over rows beyond 65535)
constexpr int kGatherMaxGrid = 65535;

// A pure copy: each block copies whole rows, threads striding along the row so reads and writes are coalesced.
// Bytes moved per step: 2 * B * D * 4 (read + write); for B = 128, D = 784 that is 0.8 MB, ~0.5 us on an H100.
__global__ void gather_rows_kernel(const float *__restrict__ src, const uint32_t *__restrict__ rows,
                                   float *__restrict__ dst, int B, int D) {
  for (int b = blockIdx.x; b < B; b += gridDim.x) {
    const float *from = src + (size_t)rows[b] * D;
    float *to = dst + (size_t)b * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) to[d] = from[d];
  }
}

}  // namespace

extern "C" cudaError_t gather_rows_cuda(const float *src, const uint32_t *rows, float *dst, int B, int D,
                                        cudaStream_t stream) {
  if (!src || !rows || !dst || B < 1 || D < 1) return cudaErrorInvalidValue;
  const int grid = B < kGatherMaxGrid ? B : kGatherMaxGrid;
  CUVAE_LAUNCH(gather_rows_kernel, grid, kGatherBlock, 0, stream, src, rows, dst, B, D);
  return cudaGetLastError();
}
