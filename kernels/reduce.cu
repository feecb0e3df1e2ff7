// Deterministic reductions of loss vectors (e.g. the per-row KL or negative log-likelihood into the batch total):
// no float atomics, a fixed summation order, so every run gives the same bits. Checked against a double sum in
// tests/cuda_emu/test_kernel_reduce.cu.
#include "cuda_compat.h"

#include "cuvae_kernels.h"

namespace {

constexpr int kSumThreads = 1024;  // one block; a multiple of 32

// Sum of v over the 32 lanes of a full warp by a fixed butterfly (every lane ends with the total). The block is a
// multiple of 32 threads, so the full mask names only existing lanes.
__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// *out = sum_i x[i], i < n (the batch sums behind the losses of MATH.md sections 3-4, e.g. KL = mean_b kl_row[b]).
// One block: thread t adds x[t], x[t + blockDim.x], ... in that order into a float; warps add their 32 partials by
// a butterfly, and warp 0 adds the warps' sums the same way. Every addition's place in the tree is fixed by n and
// blockDim.x alone, so the result is bitwise reproducible.
__global__ void sum_kernel(const float *__restrict__ x, int n, float *__restrict__ out) {
  __shared__ float warp_sums[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  float acc = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  acc = warp_sum(acc);
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    const float total = warp_sum(lane < n_warps ? warp_sums[lane] : 0.0f);
    if (lane == 0) *out = total;
  }
}

}  // namespace

extern "C" cudaError_t sum_cuda(const float *x, int n, float *out, cudaStream_t stream) {
  if (!x || !out || n < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(sum_kernel, 1, kSumThreads, 0, stream, x, n, out);
  return cudaGetLastError();
}
