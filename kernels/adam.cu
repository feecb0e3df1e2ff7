// Adam over the whole parameter buffer (docs/MATH.md section 7) and the gradient's sum of squares for norm clipping.
// GPU twins of adam_update_cpu and grad_norm_cpu (src/backend/cpu/adam_cpu.c) and of the clip scale of the CPU
// backend's train step (src/backend/cpu/backend_cpu.c). A training step runs
//   sum_squares_cuda(g) -> adam_prepare_cuda (one thread: step, clip scale, bias corrections) -> adam_update_cuda,
// and nothing that changes from step to step is a kernel argument, so the three launches can be captured into a
// CUDA graph once and replayed every step.
#include "cuda_compat.h"

#include <cuda_bf16.h>
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "block_reduce.cuh"
#include "cuvae_kernels.h"
#include "launch_grid.cuh"

namespace {

constexpr int kUpdateBlock = 256;                               // adam_update: threads per block
constexpr int kSumSquaresThreads = 256;                         // sum_squares pass 1: threads per block
constexpr int kSumSquaresMaxBlocks = CUVAE_SUM_SQUARES_PARTIALS;  // sum_squares pass 1: blocks (= partials), at most
constexpr int kSumSquaresFinalThreads = 1024;                   // sum_squares pass 2: one block

// Per-step scalars, computed in double by one thread exactly as the CPU computes them:
//   t = ++*step (the training step, counted whether or not its update is applied);
//   ta = t - guard[0] (Adam's step: the updates applied, include/cuvae/optimizer.h), ||g|| = sqrt(sum g^2);
//   scalars[0] = clip / ||g|| when clip > 0 and ||g|| > clip, else 1   (src/backend/cpu/backend_cpu.c: cpu_train_step)
//   scalars[1] = 1 / (1 - b1^ta),  scalars[2] = 1 / (1 - b2^ta)          (adam_update_cpu's c1, c2)
//   scalars[3] = ||g||                                                    (for logging)
//   scalars[4] = *lr, this step's learning rate (docs/MATH.md (7.3), uploaded by the host)
//   scalars[5] = guard[4]: 1 when step_guard_cuda skipped this step's update (adam_update and ema_update then hold)
// The only difference from the CPU is the input: the CPU sums g^2 in double, sum_squares_cuda in float.
__global__ void adam_prepare_kernel(const float *sum_squares, int64_t *step, const float *lr, const int64_t *guard,
                                    float clip_norm, float b1, float b2, float *scalars, const int64_t *halted) {
  if (halted && *halted) return;  // a non-finite step (step_guard.cu): the step counter stays
  const int64_t t = *step + 1;
  *step = t;
  const int64_t ta = guard ? t - guard[0] : t;
  const double norm = sqrt((double)*sum_squares);
  float scale = 1.0f;
  if (clip_norm > 0.0f && norm > clip_norm) scale = (float)(clip_norm / norm);
  scalars[0] = scale;
  scalars[1] = (float)(1.0 / (1.0 - pow((double)b1, (double)ta)));
  scalars[2] = (float)(1.0 / (1.0 - pow((double)b2, (double)ta)));
  scalars[3] = (float)norm;
  scalars[4] = *lr;
  scalars[5] = guard && guard[4] ? 1.0f : 0.0f;
}

// The per-step constants of adam_one.
struct AdamConsts {
  float lr, b1, b2, eps, one_minus_b1, one_minus_b2, grad_scale, c1, c2;
};

// Adam, bias-corrected (docs/MATH.md section 7), on one parameter, with s = grad_scale, c1, c2 from the scalars:
//   g' = s g;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2   (|m| < FLT_MIN and v < FLT_MIN flushed to 0);
//   p -= lr (m c1) / (sqrt(v c2) + eps).
// The float operations are adam_update_cpu's, in the same order; products that feed an addition are __fmul_rn so
// nvcc cannot contract them into FMAs (which round once instead of twice), and sqrtf and / are IEEE-rounded
// without fast math. So each parameter gets the CPU's result bit for bit, given the same scalars.
__device__ inline void adam_one(float &p, float g, float &m, float &v, const AdamConsts &k) {
  const float gi = k.grad_scale * g;
  float mi = __fadd_rn(__fmul_rn(k.b1, m), __fmul_rn(k.one_minus_b1, gi));
  float vi = __fadd_rn(__fmul_rn(k.b2, v), __fmul_rn(__fmul_rn(k.one_minus_b2, gi), gi));
  // Moments decaying into the subnormal range are flushed to 0, as on the CPU (see adam_update_cpu).
  mi = fabsf(mi) < FLT_MIN ? 0.0f : mi;
  vi = vi < FLT_MIN ? 0.0f : vi;
  m = mi;
  v = vi;
  p -= __fmul_rn(k.lr, __fmul_rn(mi, k.c1)) / (sqrtf(__fmul_rn(vi, k.c2)) + k.eps);
}

// One launch over the whole buffer, grid-stride. kVector (p, g, m, v all 16-byte aligned): float4 loads and stores
// of the first 4 floor(n / 4) parameters (four loads of 16 bytes in flight per thread), then the n mod 4 left
// over one by one; otherwise every parameter one by one. Each parameter's arithmetic is adam_one either way.
// With p16 (precision = bf16, docs/MATH.md (8.2)): p16[i] = bf16(p[i]) of the updated parameter, the GEMMs' weight
// copy (adam_update_bf16_cpu's, round to nearest even).
template <bool kVector>
__global__ void adam_update_kernel(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
                                   float eps, const float *scalars, const int64_t *halted, __nv_bfloat16 *p16) {
  if (halted && *halted) return;  // a non-finite step (step_guard.cu): parameters and moments stay
  if (scalars[5] != 0.0f) return;  // a skipped update (step_guard.cu): likewise
  const AdamConsts k = {scalars[4], b1, b2, eps, 1.0f - b1, 1.0f - b2, scalars[0], scalars[1], scalars[2]};
  const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
  size_t done = 0;
  if (kVector) {
    float4 *p4 = reinterpret_cast<float4 *>(p), *m4 = reinterpret_cast<float4 *>(m);
    float4 *v4 = reinterpret_cast<float4 *>(v);
    const float4 *g4 = reinterpret_cast<const float4 *>(g);
    done = n / 4 * 4;
    for (size_t i = first; i < n / 4; i += stride) {
      float4 P = p4[i], M = m4[i], V = v4[i];
      const float4 G = g4[i];
      adam_one(P.x, G.x, M.x, V.x, k);
      adam_one(P.y, G.y, M.y, V.y, k);
      adam_one(P.z, G.z, M.z, V.z, k);
      adam_one(P.w, G.w, M.w, V.w, k);
      p4[i] = P;
      m4[i] = M;
      v4[i] = V;
      if (p16) {
        p16[4 * i] = __float2bfloat16_rn(P.x);
        p16[4 * i + 1] = __float2bfloat16_rn(P.y);
        p16[4 * i + 2] = __float2bfloat16_rn(P.z);
        p16[4 * i + 3] = __float2bfloat16_rn(P.w);
      }
    }
  }
  for (size_t i = done + first; i < n; i += stride) {
    adam_one(p[i], g[i], m[i], v[i], k);
    if (p16) p16[i] = __float2bfloat16_rn(p[i]);
  }
}

// Four consecutive floats g[4i .. 4i+3]: one 16-byte load when g is 16-byte aligned, else four.
template <bool kAligned>
__device__ inline float4 load4(const float *__restrict__ g, size_t i) {
  if (kAligned) return reinterpret_cast<const float4 *>(g)[i];
  return make_float4(g[4 * i], g[4 * i + 1], g[4 * i + 2], g[4 * i + 3]);
}

__device__ inline void add_squares(float4 &acc, float4 q) {
  acc.x += q.x * q.x;
  acc.y += q.y * q.y;
  acc.z += q.z * q.z;
  acc.w += q.w * q.w;
}

// Sum of squares of the gradient, sum_i g_i^2 (||g||^2 for docs/MATH.md section 7's norm clipping), in two passes
// with a fixed order, so deterministic and without atomics:
//   pass 1: G = sum_squares_blocks(n) blocks of 256 threads over the n4 = floor(n / 4) float4s; thread t of block
//           k takes float4s i = k * 256 + t + j * (G * 256), j = 0, 1, ... in that order (coalesced, two loads in
//           flight), keeping one float sum per component; block 0's threads t < n mod 4 then add g[4 n4 + t]^2;
//           the thread's sum is (x + y) + (z + w), and the block's fixed tree (block_reduce.cuh) -> partials[k];
//   pass 2: one block of 1024 threads: thread t sums partials t, t + 1024, ... in order, then the block's tree.
// The order depends only on n (not on the device, the alignment or timing). G = min(ceil(n4 / 256), 8192): up to
// 2M threads in pass 1, about 8 waves of resident blocks on an H100, so the last wave's idle SMs cost little.
template <bool kAligned>
__global__ void sum_squares_partial_kernel(const float *__restrict__ g, size_t n, float *__restrict__ partials) {
  __shared__ float warp_sums[32];
  const size_t n4 = n / 4, stride = (size_t)gridDim.x * kSumSquaresThreads;
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  size_t i = (size_t)blockIdx.x * kSumSquaresThreads + threadIdx.x;
  for (; i + stride < n4; i += 2 * stride) {  // two iterations at once: both loads issued before the adds
    const float4 q0 = load4<kAligned>(g, i), q1 = load4<kAligned>(g, i + stride);
    add_squares(acc, q0);
    add_squares(acc, q1);
  }
  if (i < n4) add_squares(acc, load4<kAligned>(g, i));
  if (blockIdx.x == 0 && threadIdx.x < n - 4 * n4) {
    const float t = g[4 * n4 + threadIdx.x];
    acc.x += t * t;
  }
  const float total = block_sum((acc.x + acc.y) + (acc.z + acc.w), warp_sums);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void sum_squares_final_kernel(const float *__restrict__ partials, int count, float *__restrict__ out) {
  __shared__ float warp_sums[32];
  float acc = 0.0f;
  for (int k = threadIdx.x; k < count; k += kSumSquaresFinalThreads) acc += partials[k];
  const float total = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) *out = total;
}

int sum_squares_blocks(size_t n) {
  const size_t want = (n / 4 + kSumSquaresThreads - 1) / kSumSquaresThreads;
  return want < 1 ? 1 : want < (size_t)kSumSquaresMaxBlocks ? (int)want : kSumSquaresMaxBlocks;
}

bool aligned16(const void *p) { return (uintptr_t)p % 16 == 0; }

}  // namespace

extern "C" cudaError_t adam_prepare_cuda(const float *sum_squares, int64_t *step, const float *lr,
                                         const int64_t *guard, float clip_norm, float b1, float b2, float *scalars,
                                         const int64_t *halted, cudaStream_t stream) {
  // b1, b2 in [0, 1) and clip_norm >= 0 (0 = off), as the config requires; NaN fails every comparison.
  if (!sum_squares || !step || !lr || !scalars || !(clip_norm >= 0.0f) || !(b1 >= 0.0f && b1 < 1.0f) ||
      !(b2 >= 0.0f && b2 < 1.0f))
    return cudaErrorInvalidValue;
  CUVAE_LAUNCH(adam_prepare_kernel, 1, 1, 0, stream, sum_squares, step, lr, guard, clip_norm, b1, b2, scalars,
               halted);
  return cudaGetLastError();
}

// The one launcher of adam_update_kernel: p16 NULL (fp32 / tf32) or the bf16 weight copy.
static cudaError_t adam_update_launch(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
                                      float eps, const float *scalars, const int64_t *halted, uint16_t *p16,
                                      cudaStream_t stream) {
  if (!p || !g || !m || !v || !scalars || n < 1) return cudaErrorInvalidValue;
  __nv_bfloat16 *q16 = reinterpret_cast<__nv_bfloat16 *>(p16);
  if (aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v)) {
    const int grid = resident_grid(n / 4 > 0 ? n / 4 : n, kUpdateBlock);
    CUVAE_LAUNCH(adam_update_kernel<true>, grid, kUpdateBlock, 0, stream, p, g, m, v, n, b1, b2, eps, scalars, halted,
                 q16);
  } else {
    CUVAE_LAUNCH(adam_update_kernel<false>, resident_grid(n, kUpdateBlock), kUpdateBlock, 0, stream, p, g, m, v, n,
                 b1, b2, eps, scalars, halted, q16);
  }
  return cudaGetLastError();
}

extern "C" cudaError_t adam_update_cuda(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
                                        float eps, const float *scalars, const int64_t *halted, cudaStream_t stream) {
  return adam_update_launch(p, g, m, v, n, b1, b2, eps, scalars, halted, nullptr, stream);
}

extern "C" cudaError_t adam_update_bf16_cuda(float *p, const float *g, float *m, float *v, size_t n, float b1,
                                             float b2, float eps, const float *scalars, const int64_t *halted,
                                             uint16_t *p16, cudaStream_t stream) {
  if (!p16) return cudaErrorInvalidValue;
  return adam_update_launch(p, g, m, v, n, b1, b2, eps, scalars, halted, p16, stream);
}

extern "C" cudaError_t sum_squares_cuda(const float *g, size_t n, float *partials, float *out, cudaStream_t stream) {
  if (!g || !partials || !out || n < 1) return cudaErrorInvalidValue;
  const int blocks = sum_squares_blocks(n);
  if (aligned16(g))
    CUVAE_LAUNCH(sum_squares_partial_kernel<true>, blocks, kSumSquaresThreads, 0, stream, g, n, partials);
  else
    CUVAE_LAUNCH(sum_squares_partial_kernel<false>, blocks, kSumSquaresThreads, 0, stream, g, n, partials);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  CUVAE_LAUNCH(sum_squares_final_kernel, 1, kSumSquaresFinalThreads, 0, stream, partials, blocks, out);
  return cudaGetLastError();
}
