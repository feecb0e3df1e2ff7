// Importance-weighted estimate of log p(x) (docs/MATH.md section 5) on the device. GPU twins of
// src/backend/cpu/iwae_cpu.c (iwae_replicate_cpu, iwae_reparam_cpu, iwae_log_weights_cpu, iwae_finalize_cpu);
// tests/cuda/test_kernel_iwae.cu checks each against its twin. The CUDA backend's `iwae` entry
// (src/backend/cuda/backend_cuda_iwae.c) runs, per chunk of samples, replicate -> reparam -> decoder (cuBLAS + bias_act) ->
// *_nll_grad (no gradient) -> iwae_log_weights, and iwae_finalize once per pass.
//
// Layout (include/cuvae/cpu.h): a chunk is one decoder batch of R data rows x C samples, sample-major: batch row
// i = s * R + r is sample s of data row r. mulv[R][2Z] = [mu | lv] of the R data rows; eps, z [R*C][Z]; nll[R*C];
// state[R][2] = (running max m, running sum t of exp(log w - m)), in double; log_px[R] in double.
#include "cuda_compat.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cuvae_kernels.h"

namespace {

constexpr int kMaxBlock = 256;      // threads per block (a multiple of 32)
constexpr int kMaxGrid = 65535;     // grid-stride beyond this many blocks
constexpr int kLogWeightWarps = 8;  // iwae_log_weights: warps (samples at a time) per data row

// Threads for n items per block: n rounded up to whole warps, at most kMaxBlock.
int block_for(int n) {
  const int warps = (n + 31) / 32;
  return warps * 32 < kMaxBlock ? warps * 32 : kMaxBlock;
}

// x_rep[s*R + r][:] = x[r][:]: one block per batch row (grid-stride over rows), threads along the row.
__global__ void iwae_replicate_kernel(const float *__restrict__ x, float *__restrict__ x_rep, int R, int64_t rows,
                                      int D) {
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const float *from = x + (size_t)(i % R) * D;
    float *to = x_rep + (size_t)i * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) to[d] = from[d];
  }
}

// docs/MATH.md section 2 with the q(z|x) of data row r shared by its samples, elementwise over the R*C*Z entries:
//   z[s*R + r][j] = mu_r[j] + exp(0.5 lv_r[j]) * eps[s*R + r][j]
// (the float expression of reparam_kl_forward_kernel and of the CPU twin, with their roundings: the product is
// __fmul_rn, so nvcc cannot fuse it with the sum into an FMA).
__global__ void iwae_reparam_kernel(const float *__restrict__ mulv, const float *__restrict__ eps,
                                    float *__restrict__ z, int R, int Z, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
    const int64_t i = k / Z, j = k - i * Z, r = i % R;
    const float *mu = mulv + r * 2 * Z;
    const float sd = expf(0.5f * mu[Z + j]);
    z[k] = mu[j] + __fmul_rn(sd, eps[k]);
  }
}

// Merges the log-sum-exp pair (m2, t2) into (m1, t1), where (m, t) stands for t exp(m) and (-inf, 0) for nothing:
//   m = max(m1, m2),  t = t_hi + t_lo exp(m_lo - m_hi)   (one exponential, of a number <= 0).
// Symmetric bit for bit (only commutative operations separate the two orders), so a butterfly leaves every lane
// with the same pair. A NaN on either side makes m NaN (and so the estimate).
__device__ inline void lse_merge(double &m1, double &t1, double m2, double t2) {
  double hi_m = m1, hi_t = t1, lo_m = m2, lo_t = t2;
  if (m2 > m1) {
    hi_m = m2;
    hi_t = t2;
    lo_m = m1;
    lo_t = t1;
  }
  if (isnan(lo_m)) hi_m = lo_m;
  m1 = hi_m;
  t1 = lo_m == -INFINITY ? hi_t : hi_t + lo_t * exp(lo_m - hi_m);
}

__device__ inline void warp_lse(double &m, double &t) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const double m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    const double t2 = __shfl_xor_sync(0xffffffffu, t, offset);
    lse_merge(m, t, m2, t2);
  }
}

// Sum of a double over a full warp by a fixed butterfly; every lane ends with the same total (each level adds the
// same two values on both partners, and addition is commutative).
__device__ inline double warp_sum_double(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// docs/MATH.md section 5, one chunk, one block per data row r, one warp per sample:
//   log w = -nll - 0.5 sum_j (z_j^2 - eps_j^2 - lv_j)       (log N(z; 0, I) - log N(z; mu, diag exp(lv)) + log p(x|z);
//                                                            the log 2pi terms cancel), in double.
// Warp w takes the samples s = w, w + n_warps, ... in order; its lanes read the sample's z, eps (and the row's lv)
// at j = lane, lane + 32, ..., adjacent lanes at adjacent addresses (coalesced), each summing its terms in order,
// then the warp's butterfly adds the 32 partial sums. Every lane then holds the same log w and folds it into the
// warp's (m, t); the warps' pairs are merged by warp 0 by a fixed tree, then into state[r] (unless reset):
// deterministic, no atomics. log_w (may be NULL) receives each sample's log-weight.
__global__ void iwae_log_weights_kernel(const float *__restrict__ mulv, const float *__restrict__ eps,
                                        const float *__restrict__ z, const float *__restrict__ nll, int R, int C,
                                        int Z, double *__restrict__ log_w, double *__restrict__ state, int reset) {
  __shared__ double warp_m[32], warp_t[32];
  const int r = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const float *lv = mulv + (size_t)r * 2 * Z + Z;
  double m = -INFINITY, t = 0.0;
  for (int s = warp; s < C; s += n_warps) {  // the same trip count on every lane of the warp: shuffles converge
    const size_t i = (size_t)s * R + r;
    const float *zi = z + i * Z, *ei = eps + i * Z;
    double acc = 0.0;
    for (int j = lane; j < Z; j += 32) acc += (double)zi[j] * zi[j] - (double)ei[j] * ei[j] - (double)lv[j];
    acc = warp_sum_double(acc);
    const double v = -(double)nll[i] - 0.5 * acc;
    if (log_w && lane == 0) log_w[i] = v;
    lse_merge(m, t, v, 1.0);
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_t[warp] = t;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < n_warps ? warp_m[lane] : -INFINITY;
    t = lane < n_warps ? warp_t[lane] : 0.0;
    warp_lse(m, t);
    if (lane == 0) {
      double sm = m, st = t;
      if (!reset) {
        sm = state[2 * r];
        st = state[2 * r + 1];
        lse_merge(sm, st, m, t);
      }
      state[2 * r] = sm;
      state[2 * r + 1] = st;
    }
  }
}

// log_px[r] = logsumexp_k(log w_k) - log K = m_r + log(t_r) - log K (log K from the host, in double).
__global__ void iwae_finalize_kernel(const double *__restrict__ state, int R, double log_k,
                                     double *__restrict__ log_px) {
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < R; r += gridDim.x * blockDim.x)
    log_px[r] = state[2 * r] + log(state[2 * r + 1]) - log_k;
}

int grid_for(int64_t n, int block) {
  const int64_t want = (n + block - 1) / block;
  return want < kMaxGrid ? (int)want : kMaxGrid;
}

}  // namespace

extern "C" cudaError_t iwae_replicate_cuda(const float *x, float *x_rep, int R, int C, int D, cudaStream_t stream) {
  if (!x || !x_rep || R < 1 || C < 1 || D < 1) return cudaErrorInvalidValue;
  const int64_t rows = (int64_t)R * C;
  CUVAE_LAUNCH(iwae_replicate_kernel, rows < kMaxGrid ? (int)rows : kMaxGrid, block_for(D), 0, stream, x, x_rep, R,
               rows, D);
  return cudaGetLastError();
}

extern "C" cudaError_t iwae_reparam_cuda(const float *mulv, const float *eps, float *z, int R, int C, int Z,
                                         cudaStream_t stream) {
  if (!mulv || !eps || !z || R < 1 || C < 1 || Z < 1) return cudaErrorInvalidValue;
  const int64_t n = (int64_t)R * C * Z;
  CUVAE_LAUNCH(iwae_reparam_kernel, grid_for(n, kMaxBlock), kMaxBlock, 0, stream, mulv, eps, z, R, Z, n);
  return cudaGetLastError();
}

extern "C" cudaError_t iwae_log_weights_cuda(const float *mulv, const float *eps, const float *z, const float *nll,
                                             int R, int C, int Z, double *log_w, double *state, int reset,
                                             cudaStream_t stream) {
  if (!mulv || !eps || !z || !nll || !state || R < 1 || C < 1 || Z < 1) return cudaErrorInvalidValue;
  // One warp per sample, at most kLogWeightWarps warps per data row.
  const int warps = C < kLogWeightWarps ? C : kLogWeightWarps;
  CUVAE_LAUNCH(iwae_log_weights_kernel, R, 32 * warps, 0, stream, mulv, eps, z, nll, R, C, Z, log_w, state,
               reset);
  return cudaGetLastError();
}

extern "C" cudaError_t iwae_finalize_cuda(const double *state, int R, int K, double *log_px, cudaStream_t stream) {
  if (!state || !log_px || R < 1 || K < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(iwae_finalize_kernel, grid_for(R, kMaxBlock), kMaxBlock, 0, stream, state, R, log((double)K), log_px);
  return cudaGetLastError();
}
