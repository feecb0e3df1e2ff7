// Decoder negative log-likelihoods fused with their gradients (docs/MATH.md section 4), one pass over the decoder output
// each. GPU twins of bernoulli_nll_grad_cpu, gaussian_nll_grad_cpu, gaussian_perdim_nll_grad_cpu and
// gaussian_shared_nll_grad_cpu (src/backend/cpu/likelihood_cpu.c).
//
// Design: one block per row (grid = B). The block's threads stride over the row's D columns, each accumulating its
// terms in float in column order and writing the gradient of each column it visits; the per-thread sums are then
// combined by a fixed tree (warp shuffles, then the warps' sums by warp 0), so a row's result depends only on B, D
// and the data: deterministic, no atomics. The block has min(256, D rounded up to 32) threads: always whole warps,
// so every shuffle names 32 existing lanes.
#include "cuda_compat.h"

#include <math.h>

#include "block_reduce.cuh"
#include "cuvae_kernels.h"

namespace {

constexpr int kMaxBlock = 256;  // threads per row (a multiple of 32, at most 1024)

// Threads for a row of D columns: D rounded up to whole warps, at most kMaxBlock.
int block_for(int D) {
  const int warps = (D + 31) / 32;
  return warps * 32 < kMaxBlock ? warps * 32 : kMaxBlock;
}

// docs/MATH.md section 4, Bernoulli: nll_row[b] = sum_d softplus(l_d) - x_d l_d; dlogits = scale * (sigmoid(l) - x).
// One exponential e = exp(-|l|) (never overflows) serves both, as on the CPU:
//   softplus(l) = max(l, 0) + log1p(e);  sigmoid(l) = 1 / (1 + e) for l >= 0, e / (1 + e) for l < 0.
__global__ void bernoulli_nll_grad_kernel(const float *__restrict__ logits, const float *__restrict__ x,
                                          float *__restrict__ nll_row, float *__restrict__ dlogits, float scale,
                                          int D) {
  const size_t row = (size_t)blockIdx.x * D;
  const float *l = logits + row, *xr = x + row;
  float *g = dlogits ? dlogits + row : nullptr;
  __shared__ float warp_sums[32];
  float acc = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float ld = l[d], xd = xr[d];
    const float e = expf(-fabsf(ld));
    acc += fmaxf(ld, 0.0f) + log1pf(e) - xd * ld;
    if (g) g[d] = scale * ((ld >= 0.0f ? 1.0f : e) / (1.0f + e) - xd);
  }
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) nll_row[blockIdx.x] = acc;
}

// The Gaussian likelihoods' common row pass (block = row blockIdx.x of f, x, df): returns sum_d (x_d - f_d)^2 (a fixed
// tree, valid in thread 0 as block_sum's) and writes df_d = g_scale (f_d - x_d) when df is not null.
__device__ float row_squared_error(const float *__restrict__ f, const float *__restrict__ x, float *__restrict__ df,
                                   float g_scale, int D) {
  const size_t row = (size_t)blockIdx.x * D;
  const float *fr = f + row, *xr = x + row;
  float *g = df ? df + row : nullptr;
  __shared__ float warp_sums[32];
  float sq = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float fd = fr[d], xd = xr[d];
    const float r = xd - fd;
    sq += r * r;
    if (g) g[d] = g_scale * (fd - xd);
  }
  return block_sum(sq, warp_sums);
}

// docs/MATH.md (4.2), Gaussian with fixed sigma: nll_row[b] = 0.5/s^2 sum_d (x_d - f_d)^2 + 0.5 D (log s^2 + log 2pi)
// + nll_offset (D ln 256 for dequantized data, (4.6)); df = scale/s^2 * (f - x). The row-independent factors come
// from the launcher, computed in double as on the CPU: half_inv_s2 = 0.5/s^2, const_term = 0.5 D (log s^2 + log 2pi)
// + nll_offset, g_scale = scale/s^2.
__global__ void gaussian_nll_grad_kernel(const float *__restrict__ f, const float *__restrict__ x,
                                         float half_inv_s2, float const_term, float *__restrict__ nll_row,
                                         float *__restrict__ df, float g_scale, int D) {
  const float sq = row_squared_error(f, x, df, g_scale, D);
  if (threadIdx.x == 0) nll_row[blockIdx.x] = sq * half_inv_s2 + const_term;
}

// docs/MATH.md (4.4), Gaussian with a learned per-dimension log-variance floored at lv_min (4.8): lv_d =
// max(l_d, lv_min) (s_d^2 = exp(lv_d)) of the head's l_d; out[B][2D] = [f | l]:
//   nll_row[b] = 0.5 sum_d [(x_d - f_d)^2 exp(-lv_d) + lv_d] + const_term,  const_term = 0.5 D log 2pi + nll_offset;
//   dout[b] = [df | dl]:  df_d = scale (f_d - x_d) exp(-lv_d),  dl_d = scale 0.5 (1 - (x_d - f_d)^2 exp(-lv_d)), 0
//   where l_d < lv_min.
// With r = f - x, rw = r exp(-lv), q = r rw: the CPU twin's float expressions. The products are written __fmul_rn so
// nvcc cannot fuse q into an FMA with 1 - q (near q = 1 that would differ from the twin by far more than an ulp).
__global__ void gaussian_perdim_nll_grad_kernel(const float *__restrict__ out, const float *__restrict__ x,
                                                float lv_min, float const_term, float *__restrict__ nll_row,
                                                float *__restrict__ dout, float scale, int D) {
  const size_t row2 = (size_t)blockIdx.x * 2 * D;
  const float *fr = out + row2, *lr = fr + D, *xr = x + (size_t)blockIdx.x * D;
  float *g = dout ? dout + row2 : nullptr;
  __shared__ float warp_sums[32];
  float acc = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float l = lr[d] < lv_min ? lv_min : lr[d], r = fr[d] - xr[d];  // a NaN stays a NaN
    const float rw = __fmul_rn(r, expf(-l)), q = __fmul_rn(r, rw);
    acc += q + l;
    if (g) {
      g[d] = scale * rw;
      g[D + d] = lr[d] < lv_min ? 0.0f : scale * 0.5f * (1.0f - q);
    }
  }
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) nll_row[blockIdx.x] = 0.5f * acc + const_term;
}

// docs/MATH.md (4.3), Gaussian with one learned log-variance for every element, lv = max(*logvar, lv_min) (the floor,
// (4.8); *logvar in device memory); w = exp(-lv) in double, as on the CPU:
//   nll_row[b] = 0.5 [D lv + w sum_d (x_d - f_d)^2 + D log 2pi] + nll_offset;  df_d = (scale w) (f_d - x_d);
//   dlv_row[b] = scale 0.5 (D - w sum_d (x_d - f_d)^2)   (row b's part of dL/dlv; 0 where *logvar < lv_min).
// The squared residuals are summed in float (fixed tree); thread 0 forms the row's two results in double. scale w
// is rounded to float once, as the twin does, so df matches it exactly.
__global__ void gaussian_shared_nll_grad_kernel(const float *__restrict__ f, const float *__restrict__ x,
                                                const float *__restrict__ logvar, float lv_min, double nll_offset,
                                                float *__restrict__ nll_row, float *__restrict__ df,
                                                float *__restrict__ dlv_row, float scale, int D) {
  const int floored = *logvar < lv_min;
  const double lv = floored ? (double)lv_min : (double)*logvar, w = exp(-lv);
  const float g_scale = (float)(scale * w);
  const float sq = row_squared_error(f, x, df, g_scale, D);
  if (threadIdx.x == 0) {
    const double log_2pi = 1.8378770664093454836;  // log(2 pi)
    nll_row[blockIdx.x] = (float)(0.5 * (D * lv + w * sq + D * log_2pi) + nll_offset);
    if (dlv_row) dlv_row[blockIdx.x] = floored ? 0.0f : (float)(scale * 0.5 * (D - w * sq));
  }
}

}  // namespace

extern "C" cudaError_t bernoulli_nll_grad_cuda(const float *logits, const float *x, float *nll_row, float *dlogits,
                                               float scale, int B, int D, cudaStream_t stream) {
  if (!logits || !x || !nll_row || B < 1 || D < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(bernoulli_nll_grad_kernel, B, block_for(D), 0, stream, logits, x, nll_row, dlogits, scale, D);
  return cudaGetLastError();
}

// nll_offset: finite (D ln 256 for dequantized data, else 0).
extern "C" cudaError_t gaussian_nll_grad_cuda(const float *f, const float *x, float sigma, double nll_offset,
                                              float *nll_row, float *df, float scale, int B, int D,
                                              cudaStream_t stream) {
  if (!f || !x || !nll_row || B < 1 || D < 1 || !(sigma > 0.0f) || !isfinite(sigma) || !isfinite(nll_offset))
    return cudaErrorInvalidValue;
  const double log_2pi = 1.8378770664093454836;  // log(2 pi)
  const double s2 = (double)sigma * sigma, inv_s2 = 1.0 / s2;
  const float half_inv_s2 = (float)(0.5 * inv_s2);
  const float const_term = (float)(0.5 * D * (log(s2) + log_2pi) + nll_offset);
  const float g_scale = (float)(scale * inv_s2);  // the CPU twin's rounding, so df matches it exactly
  CUVAE_LAUNCH(gaussian_nll_grad_kernel, B, block_for(D), 0, stream, f, x, half_inv_s2, const_term, nll_row, df,
               g_scale, D);
  return cudaGetLastError();
}

// lv_min: -INFINITY (no floor) or finite; nll_offset: finite.
extern "C" cudaError_t gaussian_perdim_nll_grad_cuda(const float *out, const float *x, float lv_min, double nll_offset,
                                                     float *nll_row, float *dout, float scale, int B, int D,
                                                     cudaStream_t stream) {
  if (!out || !x || !nll_row || B < 1 || D < 1 || !(lv_min < INFINITY) || !isfinite(nll_offset))
    return cudaErrorInvalidValue;
  const double log_2pi = 1.8378770664093454836;  // log(2 pi)
  const float const_term = (float)(0.5 * D * log_2pi + nll_offset);
  CUVAE_LAUNCH(gaussian_perdim_nll_grad_kernel, B, block_for(D), 0, stream, out, x, lv_min, const_term, nll_row, dout,
               scale, D);
  return cudaGetLastError();
}

// df and dlv_row: both or neither (forward only); lv_min: -INFINITY (no floor) or finite; nll_offset: finite.
extern "C" cudaError_t gaussian_shared_nll_grad_cuda(const float *f, const float *x, const float *logvar, float lv_min,
                                                     double nll_offset, float *nll_row, float *df, float *dlv_row,
                                                     float scale, int B, int D, cudaStream_t stream) {
  if (!f || !x || !logvar || !nll_row || B < 1 || D < 1 || (!df != !dlv_row) || !(lv_min < INFINITY) ||
      !isfinite(nll_offset))
    return cudaErrorInvalidValue;
  CUVAE_LAUNCH(gaussian_shared_nll_grad_kernel, B, block_for(D), 0, stream, f, x, logvar, lv_min, nll_offset, nll_row,
               df, dlv_row, scale, D);
  return cudaGetLastError();
}
