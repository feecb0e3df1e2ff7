// Free bits (docs/MATH.md (3.4)): the batch mean of each latent dimension's closed-form KL, its floor, and the floored
// KL term's gradient. GPU twin of src/backend/cpu/free_bits_cpu.c (free_bits_forward_cpu / free_bits_backward_cpu);
// tests/cuda/test_kernel_free_bits.cu checks one against the other.
//
// Layout (row-major): mulv[B][2Z] = [mu | lv] per row, dmulv[B][2Z] = [dmu | dlv]; gate, kl_floor [Z].
#include "cuda_compat.h"

#include <stdint.h>

#include "cuvae_kernels.h"

namespace {

constexpr int kBlock = 256;      // threads per block (a multiple of 32)
constexpr int kMaxGrid = 65535;  // grid-stride beyond this many blocks

int grid_for(int64_t n) {
  const int64_t want = (n + kBlock - 1) / kBlock;
  return want < kMaxGrid ? (int)want : kMaxGrid;
}

// Column j's sum 0.5 sum_b (mu_bj^2 + sd_bj^2 - 1 - lv_bj) in double in row order as the twin does, with the twin's
// float sd = expf(0.5 lv) (the reads of consecutive threads are consecutive columns of a row). The double terms may
// be fused into FMAs: a change of ~1e-16 relative, far below the float sd's own differences from the twin.
__device__ inline double column_sum(const float *__restrict__ mulv, int B, int Z, int j) {
  double acc = 0.0;
  for (int b = 0; b < B; b++) {
    const float m = mulv[(size_t)b * 2 * Z + j], l = mulv[(size_t)b * 2 * Z + Z + j];
    const float sd = expf(0.5f * l);
    acc += (double)m * m + (double)sd * sd - 1.0 - l;
  }
  return 0.5 * acc;
}

// KL_j = sum_j / Bt;  gate_j = [KL_j >= lambda];  kl_floor_j = max(lambda, KL_j).
__device__ inline void gate_one(double sum, int batch_total, float lambda, float *gate, float *kl_floor) {
  const double kl = sum / (double)batch_total;
  *gate = kl >= (double)lambda ? 1.0f : 0.0f;
  *kl_floor = (float)(kl >= (double)lambda ? kl : (double)lambda);
}

// One thread per latent dimension j (grid-stride): the forward in one launch, or in two halves (data parallel adds
// the ranks' sums in between); the same double operations either way, so one process gets the same bits.
__global__ void free_bits_forward_kernel(const float *__restrict__ mulv, int B, int Z, int batch_total, float lambda,
                                         float *__restrict__ gate, float *__restrict__ kl_floor) {
  const int stride = gridDim.x * blockDim.x;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < Z; j += stride)
    gate_one(column_sum(mulv, B, Z, j), batch_total, lambda, &gate[j], &kl_floor[j]);
}

__global__ void free_bits_sums_kernel(const float *__restrict__ mulv, int B, int Z, double *__restrict__ sums) {
  const int stride = gridDim.x * blockDim.x;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < Z; j += stride) sums[j] = column_sum(mulv, B, Z, j);
}

__global__ void free_bits_gate_kernel(const double *__restrict__ sums, int Z, int batch_total, float lambda,
                                      float *__restrict__ gate, float *__restrict__ kl_floor) {
  const int stride = gridDim.x * blockDim.x;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < Z; j += stride)
    gate_one(sums[j], batch_total, lambda, &gate[j], &kl_floor[j]);
}

// Elementwise over the B*Z latent entries (grid-stride), (3.2) scaled by ks_j = (beta kl_scale) gate_j:
//   dmu += ks_j mu;  dlv += ks_j 0.5 (sd sd - 1)
// the twin's float operations in its order, written __fmul_rn / __fadd_rn so nvcc cannot fuse them into FMAs.
__global__ void free_bits_backward_kernel(const float *__restrict__ mulv, const float *__restrict__ gate,
                                          const float *__restrict__ beta, float kl_scale, float *__restrict__ dmulv,
                                          int B, int Z) {
  const float ks = __fmul_rn(*beta, kl_scale);
  const int64_t n = (int64_t)B * Z, stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += stride) {
    const int64_t b = k / Z, j = k - b * Z;
    const int64_t mu_at = b * 2 * Z + j, lv_at = mu_at + Z;
    const float kj = __fmul_rn(ks, gate[j]), sd = expf(0.5f * mulv[lv_at]);
    dmulv[mu_at] = __fadd_rn(dmulv[mu_at], __fmul_rn(kj, mulv[mu_at]));
    dmulv[lv_at] = __fadd_rn(dmulv[lv_at], __fmul_rn(__fmul_rn(kj, 0.5f), __fadd_rn(__fmul_rn(sd, sd), -1.0f)));
  }
}

}  // namespace

extern "C" cudaError_t free_bits_forward_cuda(const float *mulv, int B, int Z, int batch_total, float lambda,
                                              float *gate, float *kl_floor, cudaStream_t stream) {
  if (!mulv || !gate || !kl_floor || B < 1 || Z < 1 || batch_total < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(free_bits_forward_kernel, grid_for(Z), kBlock, 0, stream, mulv, B, Z, batch_total, lambda, gate,
               kl_floor);
  return cudaGetLastError();
}

extern "C" cudaError_t free_bits_sums_cuda(const float *mulv, int B, int Z, double *sums, cudaStream_t stream) {
  if (!mulv || !sums || B < 1 || Z < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(free_bits_sums_kernel, grid_for(Z), kBlock, 0, stream, mulv, B, Z, sums);
  return cudaGetLastError();
}

extern "C" cudaError_t free_bits_gate_cuda(const double *sums, int Z, int batch_total, float lambda, float *gate,
                                           float *kl_floor, cudaStream_t stream) {
  if (!sums || !gate || !kl_floor || Z < 1 || batch_total < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(free_bits_gate_kernel, grid_for(Z), kBlock, 0, stream, sums, Z, batch_total, lambda, gate, kl_floor);
  return cudaGetLastError();
}

extern "C" cudaError_t free_bits_backward_cuda(const float *mulv, const float *gate, const float *beta, float kl_scale,
                                               float *dmulv, int B, int Z, cudaStream_t stream) {
  if (!mulv || !gate || !beta || !dmulv || B < 1 || Z < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(free_bits_backward_kernel, grid_for((int64_t)B * Z), kBlock, 0, stream, mulv, gate, beta, kl_scale,
               dmulv, B, Z);
  return cudaGetLastError();
}
