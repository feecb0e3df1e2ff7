// Deterministic reductions of loss vectors (e.g. the per-row KL or negative log-likelihood into the batch total):
// no float atomics, a fixed summation order, so every run gives the same bits. Checked against a double sum in
// tests/cuda/test_kernel_reduce.cu.
#include "cuda_compat.h"

#include "block_reduce.cuh"
#include "cuvae_kernels.h"

namespace {

constexpr int kSumThreads = 1024;  // one block; a multiple of 32

// *out = sum_i x[i], i < n (the batch sums behind the losses of docs/MATH.md sections 3-4, e.g. KL = mean_b kl_row[b]).
// One block: thread t adds x[t], x[t + blockDim.x], ... in that order into a float; warps add their 32 partials by
// a butterfly, and warp 0 adds the warps' sums the same way. Every addition's place in the tree is fixed by n and
// blockDim.x alone, so the result is bitwise reproducible.
__global__ void sum_kernel(const float *__restrict__ x, int n, float *__restrict__ out) {
  __shared__ float warp_sums[32];
  float acc = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) *out = acc;
}

}  // namespace

extern "C" cudaError_t sum_cuda(const float *x, int n, float *out, cudaStream_t stream) {
  if (!x || !out || n < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(sum_kernel, 1, kSumThreads, 0, stream, x, n, out);
  return cudaGetLastError();
}
