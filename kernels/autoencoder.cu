// The autoencoder's fused pieces (docs/MATH.md section 6, objective = ae). GPU twins of squared_error_grad_cpu,
// latent_mean_forward_cpu and latent_mean_backward_cpu (src/backend/cpu/autoencoder_cpu.c).
//
// squared_error_grad: one block per row, as the likelihoods (kernels/likelihood.cu): threads stride over the row's D
// columns, writing the gradient of each and keeping a float partial sum in column order; block_sum adds the partials
// by a fixed tree (deterministic, no atomics). latent_mean_*: elementwise grid-stride copies.
#include "cuda_compat.h"

#include <math.h>
#include <stdint.h>

#include "block_reduce.cuh"
#include "cuvae_kernels.h"

namespace {

constexpr int kMaxRowBlock = 256;  // squared_error_grad: threads per row (whole warps, at most 1024)
constexpr int kElemBlock = 256;    // latent_mean_*: threads per block
constexpr int kElemMaxGrid = 1024; // grid-stride beyond 1024 x 256 threads

// Threads for a row of D columns: D rounded up to whole warps, at most kMaxRowBlock.
int row_block(int D) {
  const int warps = (D + 31) / 32;
  return warps * 32 < kMaxRowBlock ? warps * 32 : kMaxRowBlock;
}

int elem_grid(int64_t total) {
  const int64_t blocks = (total + kElemBlock - 1) / kElemBlock;
  return blocks < kElemMaxGrid ? (int)blocks : kElemMaxGrid;
}

// Reconstruction error, xhat = sigmoid(out) when sigmoid_out (the Bernoulli decoder's mean), else out:
//   err_row[b] = sum_d (x_d - xhat_d)^2;   dout_d = 2 scale (xhat_d - x_d) * (sigmoid_out ? xhat_d (1 - xhat_d) : 1).
// sigmoid in the stable form with e = exp(-|l|) (never overflows): 1 / (1 + e) for l >= 0, e / (1 + e) for l < 0,
// the CPU twin's float expressions (no sum follows a product in the gradient, so nvcc has nothing to fuse there).
__global__ void squared_error_grad_kernel(const float *__restrict__ out, const float *__restrict__ x, int sigmoid_out,
                                          float *__restrict__ err_row, float *__restrict__ dout, float scale, int D) {
  const size_t row = (size_t)blockIdx.x * D;
  const float *o = out + row, *xr = x + row;
  float *g = dout ? dout + row : nullptr;
  const float two_scale = 2.0f * scale;
  __shared__ float warp_sums[32];
  float acc = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float od = o[d];
    float xhat = od, dsig = 1.0f;  // xhat and d xhat / d out
    if (sigmoid_out) {
      const float e = expf(-fabsf(od));
      xhat = (od >= 0.0f ? 1.0f : e) / (1.0f + e);
      dsig = xhat * (1.0f - xhat);
    }
    const float r = xhat - xr[d];
    acc += r * r;
    if (g) g[d] = two_scale * r * dsig;  // * 1.0f is exact: the twin's 2 scale (xhat - x) when !sigmoid_out
  }
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) err_row[blockIdx.x] = acc;
}

// Deterministic encoder: z[b][j] = mulv[b][j] (mu, the first Z of the row's 2Z columns), over the B*Z entries.
__global__ void latent_mean_forward_kernel(const float *__restrict__ mulv, float *__restrict__ z, int64_t n, int Z) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t b = i / Z, j = i - b * Z;
    z[i] = mulv[b * 2 * Z + j];
  }
}

// Its backward: dmulv[b] = [dz_b | 0] (dL/dmu = dL/dz; lv does not reach the loss).
__global__ void latent_mean_backward_kernel(const float *__restrict__ dz, float *__restrict__ dmulv, int64_t n,
                                            int Z) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t b = i / Z, j = i - b * Z;
    dmulv[b * 2 * Z + j] = dz[i];
    dmulv[b * 2 * Z + Z + j] = 0.0f;
  }
}

}  // namespace

extern "C" cudaError_t squared_error_grad_cuda(const float *out, const float *x, int sigmoid_out, float *err_row,
                                               float *dout, float scale, int B, int D, cudaStream_t stream) {
  if (!out || !x || !err_row || B < 1 || D < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(squared_error_grad_kernel, B, row_block(D), 0, stream, out, x, sigmoid_out, err_row, dout, scale, D);
  return cudaGetLastError();
}

extern "C" cudaError_t latent_mean_forward_cuda(const float *mulv, float *z, int B, int Z, cudaStream_t stream) {
  if (!mulv || !z || B < 1 || Z < 1) return cudaErrorInvalidValue;
  const int64_t n = (int64_t)B * Z;
  CUVAE_LAUNCH(latent_mean_forward_kernel, elem_grid(n), kElemBlock, 0, stream, mulv, z, n, Z);
  return cudaGetLastError();
}

extern "C" cudaError_t latent_mean_backward_cuda(const float *dz, float *dmulv, int B, int Z, cudaStream_t stream) {
  if (!dz || !dmulv || B < 1 || Z < 1) return cudaErrorInvalidValue;
  const int64_t n = (int64_t)B * Z;
  CUVAE_LAUNCH(latent_mean_backward_kernel, elem_grid(n), kElemBlock, 0, stream, dz, dmulv, n, Z);
  return cudaGetLastError();
}
