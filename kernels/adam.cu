// Adam over the whole parameter buffer (MATH.md section 7) and the gradient's sum of squares for norm clipping
// (issue 4). GPU twins of adam_update_cpu and grad_norm_cpu (src/cpu/adam_cpu.c) and of the clip scale of the CPU
// backend's train step (src/backend_cpu.c). A training step runs
//   sum_squares_cuda(g) -> adam_prepare_cuda (one thread: step, clip scale, bias corrections) -> adam_update_cuda,
// and nothing that changes from step to step is a kernel argument, so the three launches can be captured into a
// CUDA graph once and replayed every step.
#include "cuda_compat.h"

#include <float.h>
#include <math.h>
#include <stddef.h>

#include "cuvae_kernels.h"

namespace {

constexpr int kUpdateBlock = 256;       // adam_update: threads per block
constexpr int kUpdateMaxGrid = 1024;    // 1024 x 256 threads ~ one full wave on A100/H100; grid-stride beyond
constexpr int kSumSquaresBlock = 1024;  // sum_squares: the single block (a power of two: the tree below)

// Per-step scalars, computed in double by one thread exactly as the CPU computes them:
//   t = ++*step;  ||g|| = sqrt(sum g^2);
//   scalars[0] = clip / ||g|| when clip > 0 and ||g|| > clip, else 1   (src/backend_cpu.c: cpu_train_step)
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

// Adam, bias-corrected (MATH.md section 7), with s = scalars[0], c1 = scalars[1], c2 = scalars[2]:
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

// Sum of squares of the gradient, sum_i g_i^2 (||g||^2 for MATH.md section 7's norm clipping), into *out.
// One block of 1024 threads: thread t sums g[t], g[t + 1024], ... in float, in index order; then a fixed tree in
// shared memory (512, 256, ..., 1). The order depends only on n: deterministic, no atomics. One block reads the
// whole buffer (a few MB for the models here); that is a few microseconds, once per step.
__global__ void sum_squares_kernel(const float *g, size_t n, float *out) {
  __shared__ float partial[kSumSquaresBlock];
  const int tid = threadIdx.x;
  float acc = 0.0f;
  for (size_t i = (size_t)tid; i < n; i += kSumSquaresBlock) acc += g[i] * g[i];
  partial[tid] = acc;
  __syncthreads();
  for (int half = kSumSquaresBlock / 2; half > 0; half /= 2) {
    if (tid < half) partial[tid] += partial[tid + half];
    __syncthreads();
  }
  if (tid == 0) *out = partial[0];
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

extern "C" cudaError_t sum_squares_cuda(const float *g, size_t n, float *out, cudaStream_t stream) {
  if (!g || !out || n < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(sum_squares_kernel, 1, kSumSquaresBlock, 0, stream, g, n, out);
  return cudaGetLastError();
}
