// Adam over the whole parameter buffer (docs/MATH.md section 7) and the gradient's sum of squares for norm clipping.
// GPU twins of adam_update_cpu and grad_norm_cpu (src/backend/cpu/adam_cpu.c) and of the clip scale of the CPU
// backend's train step (src/backend/cpu/backend_cpu.c). A training step runs
//   sum_squares_cuda(g) -> adam_prepare_cuda (one thread: step, clip scale, bias corrections) -> adam_update_cuda,
// and nothing that changes from step to step is a kernel argument, so the three launches can be captured into a
// CUDA graph once and replayed every step.
#include "cuda_compat.h"

#include <float.h>
#include <math.h>
#include <stddef.h>

#include "block_reduce.cuh"
#include "cuvae_kernels.h"

namespace {

constexpr int kUpdateBlock = 256;       // adam_update: threads per block
constexpr int kUpdateMaxGrid = 1024;    // 1024 x 256 threads ~ one full wave on A100/H100; grid-stride beyond
constexpr int kSumSquaresBlocks = CUVAE_SUM_SQUARES_PARTIALS;  // sum_squares pass 1: blocks (= partials)
constexpr int kSumSquaresThreads = 256;                         // sum_squares: threads per block, both passes
static_assert(kSumSquaresBlocks == kSumSquaresThreads, "pass 2 sums one partial per thread");

// Per-step scalars, computed in double by one thread exactly as the CPU computes them:
//   t = ++*step;  ||g|| = sqrt(sum g^2);
//   scalars[0] = clip / ||g|| when clip > 0 and ||g|| > clip, else 1   (src/backend/cpu/backend_cpu.c: cpu_train_step)
//   scalars[1] = 1 / (1 - b1^t),  scalars[2] = 1 / (1 - b2^t)            (adam_update_cpu's c1, c2)
//   scalars[3] = ||g||                                                    (for logging)
// The only difference from the CPU is the input: the CPU sums g^2 in double, sum_squares_cuda in float.
__global__ void adam_prepare_kernel(const float *sum_squares, int64_t *step, float clip_norm, float b1, float b2,
                                    float *scalars, const int64_t *halted) {
  if (halted && *halted) return;  // a non-finite step (step_guard.cu): the step counter stays
  const int64_t t = *step + 1;
  *step = t;
  const double norm = sqrt((double)*sum_squares);
  float scale = 1.0f;
  if (clip_norm > 0.0f && norm > clip_norm) scale = (float)(clip_norm / norm);
  scalars[0] = scale;
  scalars[1] = (float)(1.0 / (1.0 - pow((double)b1, (double)t)));
  scalars[2] = (float)(1.0 / (1.0 - pow((double)b2, (double)t)));
  scalars[3] = (float)norm;
}

// Adam, bias-corrected (docs/MATH.md section 7), with s = scalars[0], c1 = scalars[1], c2 = scalars[2]:
//   g' = s g;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2   (|m| < FLT_MIN and v < FLT_MIN flushed to 0);
//   p -= lr (m c1) / (sqrt(v c2) + eps).
// Grid-stride over the n parameters, one launch for the whole buffer. The float operations are adam_update_cpu's,
// in the same order; products that feed an addition are __fmul_rn so nvcc cannot contract them into FMAs (which
// round once instead of twice), and sqrtf and / are IEEE-rounded without fast math. So each parameter gets the
// CPU's result bit for bit, given the same scalars.
__global__ void adam_update_kernel(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                                   float b2, float eps, const float *scalars, const int64_t *halted) {
  if (halted && *halted) return;  // a non-finite step (step_guard.cu): parameters and moments stay
  const float grad_scale = scalars[0], c1 = scalars[1], c2 = scalars[2];
  const float one_minus_b1 = 1.0f - b1, one_minus_b2 = 1.0f - b2;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float gi = grad_scale * g[i];
    float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(one_minus_b1, gi));
    float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(one_minus_b2, gi), gi));
    // Moments decaying into the subnormal range are flushed to 0, as on the CPU (see adam_update_cpu).
    mi = fabsf(mi) < FLT_MIN ? 0.0f : mi;
    vi = vi < FLT_MIN ? 0.0f : vi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= __fmul_rn(lr, __fmul_rn(mi, c1)) / (sqrtf(__fmul_rn(vi, c2)) + eps);
  }
}

// Sum of squares of the gradient, sum_i g_i^2 (||g||^2 for docs/MATH.md section 7's norm clipping), in two passes
// with a fixed order, so deterministic and without atomics:
//   pass 1: kSumSquaresBlocks blocks of kSumSquaresThreads threads; thread t of block k sums g[i]^2 for
//           i = k * threads + t + j * (blocks * threads), j = 0, 1, ... in that order (coalesced), then the block's
//           fixed tree (block_reduce.cuh) -> partials[k];
//   pass 2: one block sums the kSumSquaresBlocks partials by the same tree -> *out.
// The order depends only on n. 65,536 threads spread the read over the whole GPU (a single block would read the
// whole buffer through one SM: ~10 ms for 18M parameters instead of ~0.1 ms).
__global__ void sum_squares_partial_kernel(const float *__restrict__ g, size_t n, float *__restrict__ partials) {
  __shared__ float warp_sums[32];
  const size_t stride = (size_t)kSumSquaresBlocks * kSumSquaresThreads;
  float acc = 0.0f;
  for (size_t i = (size_t)blockIdx.x * kSumSquaresThreads + threadIdx.x; i < n; i += stride) acc += g[i] * g[i];
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void sum_squares_final_kernel(const float *__restrict__ partials, float *__restrict__ out) {
  __shared__ float warp_sums[32];
  const float total = block_sum(partials[threadIdx.x], warp_sums);
  if (threadIdx.x == 0) *out = total;
}

}  // namespace

extern "C" cudaError_t adam_prepare_cuda(const float *sum_squares, int64_t *step, float clip_norm, float b1,
                                         float b2, float *scalars, const int64_t *halted, cudaStream_t stream) {
  // b1, b2 in [0, 1) and clip_norm >= 0 (0 = off), as the config requires; NaN fails every comparison.
  if (!sum_squares || !step || !scalars || !(clip_norm >= 0.0f) || !(b1 >= 0.0f && b1 < 1.0f) ||
      !(b2 >= 0.0f && b2 < 1.0f))
    return cudaErrorInvalidValue;
  CUVAE_LAUNCH(adam_prepare_kernel, 1, 1, 0, stream, sum_squares, step, clip_norm, b1, b2, scalars, halted);
  return cudaGetLastError();
}

extern "C" cudaError_t adam_update_cuda(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                                        float b2, float eps, const float *scalars, const int64_t *halted,
                                        cudaStream_t stream) {
  if (!p || !g || !m || !v || !scalars || n < 1) return cudaErrorInvalidValue;
  const size_t blocks = (n + kUpdateBlock - 1) / kUpdateBlock;
  const int grid = blocks < (size_t)kUpdateMaxGrid ? (int)blocks : kUpdateMaxGrid;
  CUVAE_LAUNCH(adam_update_kernel, grid, kUpdateBlock, 0, stream, p, g, m, v, n, lr, b1, b2, eps, scalars,
               halted);
  return cudaGetLastError();
}

extern "C" cudaError_t sum_squares_cuda(const float *g, size_t n, float *partials, float *out, cudaStream_t stream) {
  if (!g || !partials || !out || n < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(sum_squares_partial_kernel, kSumSquaresBlocks, kSumSquaresThreads, 0, stream, g, n, partials);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  CUVAE_LAUNCH(sum_squares_final_kernel, 1, kSumSquaresThreads, 0, stream, partials, out);
  return cudaGetLastError();
}
