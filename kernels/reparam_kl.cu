// Reparameterization + closed-form KL to the standard normal prior, forward and backward, each in one pass
// (docs/MATH.md sections 2-3). GPU twin of src/backend/cpu/reparam_kl_cpu.c (reparam_kl_forward_cpu /
// reparam_kl_backward_cpu); tests/cuda/test_kernel_reparam_kl.cu checks one against the other.
//
// Layout (row-major): mulv[B][2Z] = [mu | lv] per row, eps, z, dz [B][Z], kl_row[B], dmulv[B][2Z] = [dmu | dlv].
#include "cuda_compat.h"

#include <stdint.h>

#include "block_reduce.cuh"
#include "cuvae_kernels.h"

namespace {

constexpr int kForwardMaxThreads = 256;  // per row; fewer (a multiple of 32) when Z is small
constexpr int kBackwardThreads = 256;
constexpr int kBackwardMaxBlocks = 65535;  // grid-stride beyond this

// Forward, docs/MATH.md section 2 (reparameterization) and section 3 (closed-form KL), one block per row b:
//   z[b][j] = mu_j + exp(0.5 lv_j) * eps_j
//   kl_row[b] = 0.5 * sum_j (mu_j^2 + exp(lv_j) - 1 - lv_j)
// Each thread reads mu, lv, eps once for the columns j = tid, tid + blockDim.x, ..., writes z there and keeps a
// float partial sum of the KL terms in that fixed order; block_sum adds the partials by a fixed tree. exp(lv) is
// taken as sd * sd, as the CPU twin does, so the KL and z use the same exp.
__global__ void reparam_kl_forward_kernel(const float *__restrict__ mulv, const float *__restrict__ eps,
                                          float *__restrict__ z, float *__restrict__ kl_row, int Z) {
  __shared__ float warp_sums[32];
  const int b = blockIdx.x;
  const float *mu = mulv + (size_t)b * 2 * Z, *lv = mu + Z;
  const float *e = eps + (size_t)b * Z;
  float *zr = z + (size_t)b * Z;
  float kl = 0.0f;
  for (int j = threadIdx.x; j < Z; j += blockDim.x) {
    const float m = mu[j], l = lv[j];
    const float sd = expf(0.5f * l);
    zr[j] = m + sd * e[j];
    kl += m * m + sd * sd - 1.0f - l;
  }
  kl = block_sum(kl, warp_sums);
  if (threadIdx.x == 0) kl_row[b] = 0.5f * kl;
}

// Backward, docs/MATH.md sections 2-3, elementwise over the B*Z latent entries (grid-stride), s = kl_scale = dL/dKL_b:
//   dmu_j = dz_j + s * mu_j                                       (dz from z; s * dKL/dmu_j)
//   dlv_j = dz_j * eps_j * 0.5 exp(0.5 lv_j) + s * 0.5 (exp(lv_j) - 1)
// Same float expressions, in the same order, as the CPU twin.
__global__ void reparam_kl_backward_kernel(const float *__restrict__ mulv, const float *__restrict__ eps,
                                           const float *__restrict__ dz, float kl_scale,
                                           float *__restrict__ dmulv, int64_t n, int Z) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t b = i / Z, j = i - b * Z;
    const int64_t mu_at = b * 2 * Z + j, lv_at = mu_at + Z;
    const float m = mulv[mu_at], l = mulv[lv_at], g = dz[i];
    const float sd = expf(0.5f * l);
    dmulv[mu_at] = g + kl_scale * m;
    dmulv[lv_at] = g * eps[i] * 0.5f * sd + kl_scale * 0.5f * (sd * sd - 1.0f);
  }
}

}  // namespace

extern "C" cudaError_t reparam_kl_forward_cuda(const float *mulv, const float *eps, float *z, float *kl_row, int B,
                                               int Z, cudaStream_t stream) {
  if (!mulv || !eps || !z || !kl_row || B < 1 || Z < 1) return cudaErrorInvalidValue;
  // One block per row (gridDim.x allows 2^31 - 1 rows); Z rounded up to whole warps, at most kForwardMaxThreads.
  const int warps = (Z + 31) / 32;
  const int threads = warps * 32 < kForwardMaxThreads ? warps * 32 : kForwardMaxThreads;
  CUVAE_LAUNCH(reparam_kl_forward_kernel, B, threads, 0, stream, mulv, eps, z, kl_row, Z);
  return cudaGetLastError();
}

extern "C" cudaError_t reparam_kl_backward_cuda(const float *mulv, const float *eps, const float *dz, float kl_scale,
                                                float *dmulv, int B, int Z, cudaStream_t stream) {
  if (!mulv || !eps || !dz || !dmulv || B < 1 || Z < 1) return cudaErrorInvalidValue;
  const int64_t n = (int64_t)B * Z;
  const int64_t want = (n + kBackwardThreads - 1) / kBackwardThreads;
  const int blocks = want < kBackwardMaxBlocks ? (int)want : kBackwardMaxBlocks;
  CUVAE_LAUNCH(reparam_kl_backward_kernel, blocks, kBackwardThreads, 0, stream, mulv, eps, dz, kl_scale, dmulv, n,
               Z);
  return cudaGetLastError();
}
