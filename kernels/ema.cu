// The exponential moving average of the weights (docs/MATH.md (7.5)), after each applied update. GPU twin of
// ema_update_cpu (src/backend/cpu/ema_cpu.c). Nothing that changes per step is an argument (the skip decision comes
// from adam_prepare_cuda's scalars), so the launch is captured into the training graph.
#include "cuda_compat.h"

#include <stddef.h>
#include <stdint.h>

#include "cuvae_kernels.h"
#include "launch_grid.cuh"

namespace {

constexpr int kEmaBlock = 256;

// e = d e + (1 - d) p, the two products rounded separately (__fmul_rn: no FMA contraction), as the CPU computes it.
__global__ void ema_update_kernel(float *ema, const float *p, size_t n, float decay, const float *scalars,
                                  const int64_t *halted) {
  if (halted && *halted) return;                    // a non-finite step: nothing was applied
  if (scalars && scalars[5] != 0.0f) return;        // a skipped update: likewise
  const float keep = 1.0f - decay;
  const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = first; i < n; i += stride) ema[i] = __fadd_rn(__fmul_rn(decay, ema[i]), __fmul_rn(keep, p[i]));
}

}  // namespace

extern "C" cudaError_t ema_update_cuda(float *ema, const float *p, size_t n, float decay, const float *scalars,
                                       const int64_t *halted, cudaStream_t stream) {
  if (!ema || !p || n < 1 || !(decay >= 0.0f && decay < 1.0f)) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(ema_update_kernel, resident_grid(n, kEmaBlock), kEmaBlock, 0, stream, ema, p, n, decay, scalars, halted);
  return cudaGetLastError();
}
