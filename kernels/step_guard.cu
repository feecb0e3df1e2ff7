// The step guard of a training step that runs ahead of the host (losses come back asynchronously, once
// per log interval). GPU twin of the isfinite checks in the CPU backend's cpu_train_step (src/backend/cpu/backend_cpu.c).
//
// flags[0] = halted_at: 0 while training is healthy; once a step's loss or gradient is not finite, that step's
//            1-based number, and adam_prepare_cuda / adam_update_cuda (given &flags[0]) then change nothing, so
//            the state stays as it was before the bad step, whatever the host enqueued after it.
// flags[1] = count: how many steps have recorded their sums in `ring` since the host last reset it (collect).
// ring[4 i + k] = sums[k] of the i-th recorded step: sum of per-row NLL, sum of per-row KL, sum of g^2, sum of the
// per-row objective (multi-sample objectives; 0 otherwise).
// Nothing that changes per step is an argument: the launch can be captured once into a CUDA graph.
#include "cuda_compat.h"

#include <math.h>
#include <stdint.h>

#include "cuvae_kernels.h"

namespace {

__global__ void step_guard_kernel(const float *sums, const int64_t *step, int64_t *flags, float *ring,
                                  int ring_cap) {
  const int64_t i = flags[1];
  if (i >= ring_cap) {  // the host enqueued more steps than it collects; stop rather than write past the ring
    if (flags[0] == 0) flags[0] = *step + 1;
    return;
  }
  flags[1] = i + 1;
  if (flags[0] != 0) {  // halted earlier: this step is not applied; its record says so with NaN
    for (int k = 0; k < CUVAE_STEP_SUMS; k++) ring[CUVAE_STEP_SUMS * i + k] = NAN;
    return;
  }
  for (int k = 0; k < CUVAE_STEP_SUMS; k++) ring[CUVAE_STEP_SUMS * i + k] = sums[k];
  // The CPU checks nelbo = recon + kl and ||g|| = sqrt(sum g^2); a float sum is infinite exactly when one of the
  // terms is or it overflows, which the double CPU sum would not: both sums are checked separately here.
  if (!isfinite(sums[0]) || !isfinite(sums[1]) || !isfinite(sums[2]) || !isfinite(sums[3])) flags[0] = *step + 1;
}

}  // namespace

extern "C" cudaError_t step_guard_cuda(const float *sums, const int64_t *step, int64_t *flags, float *ring,
                                       int ring_cap, cudaStream_t stream) {
  if (!sums || !step || !flags || !ring || ring_cap < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(step_guard_kernel, 1, 1, 0, stream, sums, step, flags, ring, ring_cap);
  return cudaGetLastError();
}
