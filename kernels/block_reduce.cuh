// Deterministic warp and block sums shared by the fused kernels: fixed trees, no atomics, so the same inputs give
// the same bits on every run (the loss reductions of docs/MATH.md sections 3-4 must be reproducible).
#pragma once

// Sum of v over the 32 lanes of a full warp by a fixed butterfly; every lane ends with the total. Callers use
// blocks of whole warps, so the full mask names only existing lanes.
__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024), valid in thread 0: warp sums by
// warp_sum, then warp 0 sums the warps' sums the same way. warp_sums: 32 floats of __shared__ memory. Every
// thread of the block must call it (it contains __syncthreads). The trailing barrier keeps warp_sums busy until
// warp 0 has read it, so a second block_sum (or any other write to warp_sums) right after this one is safe.
__device__ inline float block_sum(float v, float *warp_sums) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float total = 0.0f;
  if (warp == 0) total = warp_sum(lane < n_warps ? warp_sums[lane] : 0.0f);
  __syncthreads();  // warp 0 has read warp_sums: the next write to it cannot overtake that read
  return total;
}
