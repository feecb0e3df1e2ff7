// The step guard of a training step that runs ahead of the host (losses come back asynchronously, once per log
// interval): the verdict on each step's update, docs/MATH.md (7.4). GPU twin of the verdict in the CPU backend's
// cpu_train_step (src/backend/cpu/backend_cpu.c); both call cuvae_skip_verdict (include/cuvae/optimizer.h).
//
// flags[0] = halted_at: 0 while training goes on; once a step must stop training (not finite with skipping off, or
//            the limit of skips in a row reached), that step's 1-based number, and adam_prepare_cuda /
//            adam_update_cuda / ema_update_cuda (given &flags[0]) then change nothing, whatever the host enqueued.
// flags[1] = count: how many steps have recorded themselves in `ring` since the host last reset it (collect).
// ring[CUVAE_STEP_RECORD i + k], k < 4 = sums[k] of the i-th recorded step: sum of per-row NLL, sum of per-row KL,
// sum of g^2, sum of the per-row objective (multi-sample objectives; 0 otherwise); k = 4: the step's verdict
// (cuvae_step_verdict). A step recorded after the halt has NaN everywhere.
// guard (with skipping configured): [0..4) the cuvae_skip_state words, [4] = 1 when this step's update is skipped
// (adam_prepare_cuda passes it on in its scalars); window: the norms of the z-score window.
// Nothing that changes per step is an argument: the launch can be captured once into a CUDA graph.
#include "cuda_compat.h"

#include <math.h>
#include <stdint.h>

#include "cuvae/optimizer.h"
#include "cuvae_kernels.h"

namespace {

__global__ void step_guard_kernel(const float *sums, const int64_t *step, int64_t *flags, float *ring, int ring_cap,
                                  cuvae_skip_rule rule, int64_t *guard, float *window) {
  const int64_t i = flags[1];
  if (i >= ring_cap) {  // the host enqueued more steps than it collects; stop rather than write past the ring
    if (flags[0] == 0) flags[0] = *step + 1;
    return;
  }
  flags[1] = i + 1;
  float *record = ring + CUVAE_STEP_RECORD * i;
  if (flags[0] != 0) {  // halted earlier: this step is not applied; its record says so with NaN
    for (int k = 0; k < CUVAE_STEP_RECORD; k++) record[k] = NAN;
    return;
  }
  for (int k = 0; k < CUVAE_STEP_SUMS; k++) record[k] = sums[k];
  // The CPU checks nelbo = recon + kl and ||g|| = sqrt(sum g^2); a float sum is infinite exactly when one of the
  // terms is or it overflows, which the double CPU sum would not: every sum is checked separately here.
  const int finite = isfinite(sums[0]) && isfinite(sums[1]) && isfinite(sums[2]) && isfinite(sums[3]);
  cuvae_skip_state s = {0, 0, 0, 0};
  if (guard) s = cuvae_skip_state{guard[0], guard[1], guard[2], guard[3]};
  const int verdict = cuvae_skip_verdict(&rule, &s, window, finite, sqrt((double)sums[2]));
  record[CUVAE_STEP_SUMS] = (float)verdict;
  if (verdict == CUVAE_STEP_DIVERGED || verdict == CUVAE_STEP_SKIP_LIMIT) flags[0] = *step + 1;
  if (!guard) return;
  guard[0] = s.skipped;
  guard[1] = s.in_a_row;
  guard[2] = s.count;
  guard[3] = s.pos;
  guard[4] = verdict == CUVAE_STEP_SKIP;
}

}  // namespace

extern "C" cudaError_t step_guard_cuda(const float *sums, const int64_t *step, int64_t *flags, float *ring,
                                       int ring_cap, cuvae_skip_rule rule, int64_t *guard, float *window,
                                       cudaStream_t stream) {
  if (!sums || !step || !flags || !ring || ring_cap < 1) return cudaErrorInvalidValue;
  if (rule.active && (!guard || (rule.window > 0 && !window) || rule.limit < 1)) return cudaErrorInvalidValue;
  if (!rule.active) rule.window = 0;  // nothing to skip: the window is not kept
  CUVAE_LAUNCH(step_guard_kernel, 1, 1, 0, stream, sums, step, flags, ring, ring_cap, rule, guard, window);
  return cudaGetLastError();
}
