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

constexpr int kMaxThreads = 256;  // per row; fewer (a multiple of 32) when the row is short

// Threads for a row of `items` work items (floats, or float4s on the vector path): whole warps, at most kMaxThreads.
int threads_for(int items) {
  const int warps = (items + 31) / 32;
  return warps * 32 < kMaxThreads ? warps * 32 : kMaxThreads;
}

// The vector path (float4 loads and stores) needs every row of every array to start on 16 bytes: Z a multiple of 4
// and the base pointers 16-byte aligned.
bool vector_rows(int Z, const void *a, const void *b, const void *c, const void *d) {
  return Z % 4 == 0 && (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) % 16) == 0;
}

// One latent entry of the forward pass (docs/MATH.md sections 2-3): z = mu + exp(0.5 lv) * eps, and the entry's KL
// term mu^2 + exp(lv) - 1 - lv added to kl. exp(lv) is taken as sd * sd, as the CPU twin does, so the KL and z
// use the same exp. z is the twin's float expression with its roundings: the product is __fmul_rn, so nvcc cannot
// fuse it with the sum into an FMA. The KL term is float here and double in the twin (a tolerance compares them),
// so its products may be fused.
__device__ inline float forward_one(float m, float l, float e, float &kl) {
  const float sd = expf(0.5f * l);
  kl += m * m + sd * sd - 1.0f - l;
  return m + __fmul_rn(sd, e);
}

// Forward, docs/MATH.md section 2 (reparameterization) and section 3 (closed-form KL), one block per row b:
//   z[b][j] = mu_j + exp(0.5 lv_j) * eps_j
//   kl_row[b] = 0.5 * sum_j (mu_j^2 + exp(lv_j) - 1 - lv_j)
// Scalar path: each thread takes columns j = tid, tid + blockDim.x, ... and keeps one float sum of the KL terms in
// that order. Vector path: each thread takes the float4 groups q = tid, tid + blockDim.x, ... (columns 4q .. 4q+3,
// three 16-byte loads in flight) and keeps one float sum per component, combined as (x + y) + (z + w). Either way
// block_sum adds the threads' sums by a fixed tree: the order depends on Z and the path alone.
template <bool kVector>
__global__ void reparam_kl_forward_kernel(const float *__restrict__ mulv, const float *__restrict__ eps,
                                          float *__restrict__ z, float *__restrict__ kl_row, int Z) {
  __shared__ float warp_sums[32];
  const int b = blockIdx.x;
  const float *mu = mulv + (size_t)b * 2 * Z, *lv = mu + Z;
  const float *e = eps + (size_t)b * Z;
  float *zr = z + (size_t)b * Z;
  float kl = 0.0f;
  if (kVector) {
    const float4 *mu4 = reinterpret_cast<const float4 *>(mu), *lv4 = reinterpret_cast<const float4 *>(lv);
    const float4 *e4 = reinterpret_cast<const float4 *>(e);
    float4 *z4 = reinterpret_cast<float4 *>(zr);
    float4 k = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int q = threadIdx.x; q < Z / 4; q += blockDim.x) {
      const float4 m = mu4[q], l = lv4[q], ep = e4[q];
      z4[q] = make_float4(forward_one(m.x, l.x, ep.x, k.x), forward_one(m.y, l.y, ep.y, k.y),
                          forward_one(m.z, l.z, ep.z, k.z), forward_one(m.w, l.w, ep.w, k.w));
    }
    kl = (k.x + k.y) + (k.z + k.w);
  } else {
    for (int j = threadIdx.x; j < Z; j += blockDim.x) zr[j] = forward_one(mu[j], lv[j], e[j], kl);
  }
  kl = block_sum(kl, warp_sums);
  if (threadIdx.x == 0) kl_row[b] = 0.5f * kl;
}

// One latent entry of the backward pass, docs/MATH.md sections 2-3, s = kl_scale = dL/dKL_b:
//   dmu = dz + s * mu                                     (dz from z; s * dKL/dmu)
//   dlv = dz * eps * 0.5 exp(0.5 lv) + s * 0.5 (exp(lv) - 1)
// Same float expressions, in the same order and with the same roundings, as the CPU twin: every product that feeds
// an addition is __fmul_rn, so nvcc cannot contract it into an FMA (which rounds once instead of twice; near
// lv = 0, sd * sd - 1 cancels and the fused form would differ from the twin's by far more than an ulp).
__device__ inline void backward_one(float m, float l, float e, float g, float s, float &dmu, float &dlv) {
  const float sd = expf(0.5f * l);
  dmu = g + __fmul_rn(s, m);
  dlv = __fmul_rn(g * e * 0.5f, sd) + __fmul_rn(s * 0.5f, __fmul_rn(sd, sd) - 1.0f);
}

// Backward, one block per row b, threads along the row: columns one by one (scalar path) or in float4 groups (four
// 16-byte loads in flight per thread). Elementwise, so the path changes no result.
template <bool kVector>
__global__ void reparam_kl_backward_kernel(const float *__restrict__ mulv, const float *__restrict__ eps,
                                           const float *__restrict__ dz, float s, float *__restrict__ dmulv, int Z) {
  const size_t b = blockIdx.x;
  const float *mu = mulv + b * 2 * Z, *lv = mu + Z, *e = eps + b * Z, *g = dz + b * Z;
  float *dmu = dmulv + b * 2 * Z, *dlv = dmu + Z;
  if (kVector) {
    const float4 *mu4 = reinterpret_cast<const float4 *>(mu), *lv4 = reinterpret_cast<const float4 *>(lv);
    const float4 *e4 = reinterpret_cast<const float4 *>(e), *g4 = reinterpret_cast<const float4 *>(g);
    float4 *dmu4 = reinterpret_cast<float4 *>(dmu), *dlv4 = reinterpret_cast<float4 *>(dlv);
    for (int q = threadIdx.x; q < Z / 4; q += blockDim.x) {
      const float4 m = mu4[q], l = lv4[q], ep = e4[q], gq = g4[q];
      float4 a, c;
      backward_one(m.x, l.x, ep.x, gq.x, s, a.x, c.x);
      backward_one(m.y, l.y, ep.y, gq.y, s, a.y, c.y);
      backward_one(m.z, l.z, ep.z, gq.z, s, a.z, c.z);
      backward_one(m.w, l.w, ep.w, gq.w, s, a.w, c.w);
      dmu4[q] = a;
      dlv4[q] = c;
    }
  } else {
    for (int j = threadIdx.x; j < Z; j += blockDim.x) backward_one(mu[j], lv[j], e[j], g[j], s, dmu[j], dlv[j]);
  }
}

}  // namespace

extern "C" cudaError_t reparam_kl_forward_cuda(const float *mulv, const float *eps, float *z, float *kl_row, int B,
                                               int Z, cudaStream_t stream) {
  if (!mulv || !eps || !z || !kl_row || B < 1 || Z < 1) return cudaErrorInvalidValue;
  // One block per row (gridDim.x allows 2^31 - 1 rows).
  if (vector_rows(Z, mulv, eps, z, z))
    CUVAE_LAUNCH(reparam_kl_forward_kernel<true>, B, threads_for(Z / 4), 0, stream, mulv, eps, z, kl_row, Z);
  else
    CUVAE_LAUNCH(reparam_kl_forward_kernel<false>, B, threads_for(Z), 0, stream, mulv, eps, z, kl_row, Z);
  return cudaGetLastError();
}

extern "C" cudaError_t reparam_kl_backward_cuda(const float *mulv, const float *eps, const float *dz, float kl_scale,
                                                float *dmulv, int B, int Z, cudaStream_t stream) {
  if (!mulv || !eps || !dz || !dmulv || B < 1 || Z < 1) return cudaErrorInvalidValue;
  if (vector_rows(Z, mulv, eps, dz, dmulv))
    CUVAE_LAUNCH(reparam_kl_backward_kernel<true>, B, threads_for(Z / 4), 0, stream, mulv, eps, dz, kl_scale, dmulv,
                 Z);
  else
    CUVAE_LAUNCH(reparam_kl_backward_kernel<false>, B, threads_for(Z), 0, stream, mulv, eps, dz, kl_scale, dmulv, Z);
  return cudaGetLastError();
}
