// The multi-sample objectives of the model family (docs/MATH.md sections 2, 3, 5, 6) on the device: the
// beta warm-up, the sampled KL with the per-sample weights of the ELBO / IWAE objectives, the backward of the
// multi-sample reparameterization, and a row scaling. GPU twins of src/backend/cpu/objective_cpu.c (beta_schedule_cpu,
// objective_weights_cpu, reparam_multi_backward_cpu, scale_rows_cpu); tests/cuda/test_kernel_objective.cu
// checks each against its twin.
//
// Layout (include/cuvae/cpu.h): R data rows x C samples, sample-major: batch row i = s * R + r is sample s of data
// row r. mulv[R][2Z] = [mu | lv]; eps, z, dz [R*C][Z]; nll, kl_s, weight [R*C]; row_obj[R]; dmulv[R][2Z].
// beta (one float) and step (one int64) live in device memory, so no launch argument changes between training
// steps and the launches can be captured into a graph once. Every sum over a row's samples runs s = 0..C-1, as on
// the CPU; nothing uses atomics.
#include "cuda_compat.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cuvae_kernels.h"

namespace {

constexpr int kMaxBlock = 256;   // threads per block (a multiple of 32)
constexpr int kMaxGrid = 65535;  // grid-stride beyond this many blocks

// Threads for n items per block: n rounded up to whole warps, at most kMaxBlock.
int block_for(int64_t n) {
  const int64_t warps = (n + 31) / 32;
  return warps * 32 < kMaxBlock ? (int)(warps * 32) : kMaxBlock;
}

int grid_for(int64_t n, int block) {
  const int64_t want = (n + block - 1) / block;
  return want < kMaxGrid ? (int)want : kMaxGrid;
}

// docs/MATH.md section 6 (beta-VAE warm-up), one thread: *beta_t = beta * min(1, t / warmup) with t = *step, in double,
// rounded once to float (beta_schedule_cpu's operations, so the same bits); warmup <= 0: beta.
__global__ void beta_schedule_kernel(const int64_t *step, float beta, int64_t warmup, float *beta_t) {
  if (warmup <= 0) {
    *beta_t = beta;
    return;
  }
  double f = (double)*step / (double)warmup;
  if (f > 1.0) f = 1.0;
  *beta_t = (float)((double)beta * f);
}

// Sum over the 32 lanes of a full warp by a fixed butterfly, in double (every lane ends with the total).
__device__ inline double warp_sum_double(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// log w_i = -nll_i - beta kl_s_i, from the stored floats (beta * kl_s is exact in double, so an FMA changes
// nothing): objective_weights_cpu's log_weight.
__device__ inline double log_weight(float nll, float beta, float kl) {
  return -(double)nll - (double)beta * (double)kl;
}

// docs/MATH.md sections 5-6, one block per data row r (blockDim.x a multiple of 32):
//   1. warps over the row's samples s, lanes over j: kl_s[i] = 0.5 sum_j (z_ij^2 - eps_ij^2 - lv_rj) in double
//      (squares of floats are exact in double; lanes' partials by a fixed butterfly), stored as float;
//   2. thread 0, over s = 0..C-1 in order (as the CPU twin), with log w_i = -nll_i - beta kl_s[i] from the floats:
//      iwae: m = max_s log w (NaN-sticky), t = sum_s exp(log w - m), row_obj = -(m + log t - log C);
//      else: row_obj = (1/C) sum_s (nll_i + beta kl_s[i]);
//   3. threads over s: weight_i = scale exp(log w_i - m) / t (iwae; exactly scale for C = 1), else scale / C.
// Step 2 is serial in C: the training objectives use a few to a few hundred samples per row (the K = 5000
// evaluation bound is iwae.cu's). log_c = log C from the host, the CPU's value.
__global__ void objective_weights_kernel(const float *__restrict__ mulv, const float *__restrict__ eps,
                                         const float *__restrict__ z, const float *__restrict__ nll, int R, int C,
                                         int Z, int iwae, const float *__restrict__ beta, float scale, double log_c,
                                         float *kl_s, float *__restrict__ weight, float *__restrict__ row_obj) {
  __shared__ double row_m, row_t;
  const int r = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const float *lv = mulv + (size_t)r * 2 * Z + Z;
  for (int s = warp; s < C; s += n_warps) {
    const size_t i = (size_t)s * R + r;
    const float *zi = z + i * Z, *ei = eps + i * Z;
    double acc = 0.0;
    for (int j = lane; j < Z; j += 32) acc += (double)zi[j] * zi[j] - (double)ei[j] * ei[j] - (double)lv[j];
    acc = warp_sum_double(acc);
    if (lane == 0) kl_s[i] = (float)(0.5 * acc);
  }
  __syncthreads();  // the row's kl_s are written (global writes of the block are visible after the barrier)
  const float b = *beta;
  if (threadIdx.x == 0) {
    if (iwae) {
      double m = -INFINITY;
      for (int s = 0; s < C; s++) {
        const size_t i = (size_t)s * R + r;
        const double v = log_weight(nll[i], b, kl_s[i]);
        if (v > m || isnan(v)) m = v;
      }
      double t = 0.0;
      for (int s = 0; s < C; s++) {
        const size_t i = (size_t)s * R + r;
        t += exp(log_weight(nll[i], b, kl_s[i]) - m);
      }
      row_m = m;
      row_t = t;
      row_obj[r] = (float)(-(m + log(t) - log_c));
    } else {
      double acc = 0.0;
      for (int s = 0; s < C; s++) {
        const size_t i = (size_t)s * R + r;
        acc += (double)nll[i] + (double)b * (double)kl_s[i];
      }
      row_obj[r] = (float)(acc / C);
    }
  }
  __syncthreads();
  if (iwae) {
    const double m = row_m, t = row_t;
    for (int s = threadIdx.x; s < C; s += blockDim.x) {
      const size_t i = (size_t)s * R + r;
      weight[i] = (float)((double)scale * (exp(log_weight(nll[i], b, kl_s[i]) - m) / t));
    }
  } else {
    const float w = scale / (float)C;
    for (int s = threadIdx.x; s < C; s += blockDim.x) weight[(size_t)s * R + r] = w;
  }
}

// Backward of z_i = mu_r + exp(0.5 lv_r) eps_i (docs/MATH.md section 2) with the KL term (section 3 closed form, or
// section 5 sampled), elementwise over the R*Z latent entries (r, j) (grid-stride), each summing its C samples in
// order s = 0..C-1 (reads coalesced along j for every s). With sd = exp(0.5 lv_rj):
//   sampled (weight != NULL), bw_i = beta weight_i:
//     g_i = dz_ij + bw_i z_ij;  dmu = sum_s g_i;  dlv = (sum_s g_i eps_ij) 0.5 sd - 0.5 beta sum_s weight_i
//   analytic (weight == NULL), ks = beta kl_scale:
//     dmu = sum_s dz_ij + ks mu;  dlv = (sum_s dz_ij eps_ij) 0.5 sd + ks 0.5 (sd sd - 1)
// The float operations of reparam_multi_backward_cpu in the same order, written __fmul_rn / __fadd_rn so nvcc
// cannot fuse them into FMAs: the results differ from the twin only through expf.
__global__ void reparam_multi_backward_kernel(const float *__restrict__ mulv, const float *__restrict__ eps,
                                              const float *__restrict__ z, const float *__restrict__ dz,
                                              const float *__restrict__ weight, const float *__restrict__ beta,
                                              float kl_scale, float *__restrict__ dmulv, int R, int C, int Z) {
  const float b = *beta, ks = __fmul_rn(b, kl_scale);
  const int64_t n = (int64_t)R * Z, stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
    const int64_t r = k / Z, j = k - r * Z;
    const int64_t mu_at = r * 2 * Z + j, lv_at = mu_at + Z;
    float gm = 0.0f, gl = 0.0f, wsum = 0.0f;
    for (int s = 0; s < C; s++) {
      const int64_t i = (int64_t)s * R + r, at = i * Z + j;
      float g = dz[at];
      if (weight) {
        const float w = weight[i];
        wsum = __fadd_rn(wsum, w);
        g = __fadd_rn(g, __fmul_rn(__fmul_rn(b, w), z[at]));
      }
      gm = __fadd_rn(gm, g);
      gl = __fadd_rn(gl, __fmul_rn(g, eps[at]));
    }
    const float sd = expf(0.5f * mulv[lv_at]);
    const float dlv_z = __fmul_rn(__fmul_rn(gl, 0.5f), sd);
    if (weight) {
      dmulv[mu_at] = gm;
      dmulv[lv_at] = __fadd_rn(dlv_z, -__fmul_rn(__fmul_rn(0.5f, b), wsum));
    } else {
      dmulv[mu_at] = __fadd_rn(gm, __fmul_rn(ks, mulv[mu_at]));
      const float kl_lv = __fmul_rn(__fmul_rn(ks, 0.5f), __fadd_rn(__fmul_rn(sd, sd), -1.0f));
      dmulv[lv_at] = __fadd_rn(dlv_z, kl_lv);
    }
  }
}

// a[b][:] *= w[b], elementwise over the B*n entries (grid-stride).
__global__ void scale_rows_kernel(float *__restrict__ a, const float *__restrict__ w, int64_t n_total, int n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n_total; k += stride) a[k] *= w[k / n];
}

}  // namespace

extern "C" cudaError_t beta_schedule_cuda(const int64_t *step, float beta, int64_t warmup, float *beta_t,
                                          cudaStream_t stream) {
  if (!step || !beta_t) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(beta_schedule_kernel, 1, 1, 0, stream, step, beta, warmup, beta_t);
  return cudaGetLastError();
}

extern "C" cudaError_t objective_weights_cuda(const float *mulv, const float *eps, const float *z, const float *nll,
                                              int R, int C, int Z, int iwae, const float *beta, float scale,
                                              float *kl_s, float *weight, float *row_obj, cudaStream_t stream) {
  if (!mulv || !eps || !z || !nll || !beta || !kl_s || !weight || !row_obj || R < 1 || C < 1 || Z < 1)
    return cudaErrorInvalidValue;
  // One block per data row (gridDim.x allows 2^31 - 1); C rounded up to whole warps, at most kMaxBlock.
  CUVAE_LAUNCH(objective_weights_kernel, R, block_for(C), 0, stream, mulv, eps, z, nll, R, C, Z, iwae, beta, scale,
               log((double)C), kl_s, weight, row_obj);
  return cudaGetLastError();
}

extern "C" cudaError_t reparam_multi_backward_cuda(const float *mulv, const float *eps, const float *z,
                                                   const float *dz, const float *weight, const float *beta,
                                                   float kl_scale, float *dmulv, int R, int C, int Z,
                                                   cudaStream_t stream) {
  // z is read only with the sampled KL (weight != NULL).
  if (!mulv || !eps || !dz || !beta || !dmulv || (weight && !z) || R < 1 || C < 1 || Z < 1)
    return cudaErrorInvalidValue;
  const int64_t n = (int64_t)R * Z;
  CUVAE_LAUNCH(reparam_multi_backward_kernel, grid_for(n, kMaxBlock), kMaxBlock, 0, stream, mulv, eps, z, dz, weight,
               beta, kl_scale, dmulv, R, C, Z);
  return cudaGetLastError();
}

extern "C" cudaError_t scale_rows_cuda(float *a, const float *w, int B, int n, cudaStream_t stream) {
  if (!a || !w || B < 1 || n < 1) return cudaErrorInvalidValue;
  const int64_t total = (int64_t)B * n;
  CUVAE_LAUNCH(scale_rows_kernel, grid_for(total, kMaxBlock), kMaxBlock, 0, stream, a, w, total, n);
  return cudaGetLastError();
}
