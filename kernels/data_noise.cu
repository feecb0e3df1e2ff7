// Data noise on the device (docs/MATH.md section 4, dynamic binarization and dequantization (4.6); section 6, the
// denoising autoencoder's corruption), with noise drawn beforehand by cuRAND (include/cuvae/rng.h names the streams).
// GPU twins of binarize_cpu, dequantize_cpu, corrupt_gaussian_cpu and corrupt_mask_cpu
// (src/backend/cpu/data_noise_cpu.c): the same float expressions, so the results are bitwise those of the twins.
//
// Design: elementwise, grid-stride over the n elements (size_t: any n), coalesced. out may equal x (in place): each
// thread reads its element before writing it, so no pointer is __restrict__.
#include "cuda_compat.h"

#include <math.h>
#include <stddef.h>

#include "cuvae_kernels.h"

namespace {

constexpr int kBlock = 256;     // threads per block
constexpr int kMaxGrid = 1024;  // 1024 x 256 threads ~ one full wave on A100/H100; grid-stride beyond

int grid_for(size_t n) {
  const size_t blocks = (n + kBlock - 1) / kBlock;
  return blocks < (size_t)kMaxGrid ? (int)blocks : kMaxGrid;
}

// Dynamic binarization, x' ~ Bernoulli(x) from u ~ U(0, 1]: out = [u <= x], so P(out = 1) = x for x in [0, 1]
// (exactly 0 at x = 0 since u > 0, exactly 1 at x = 1 since u <= 1).
__global__ void binarize_kernel(const float *x, const float *u, float *out, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = u[i] <= x[i] ? 1.0f : 0.0f;
}

// Uniform dequantization, docs/MATH.md (4.6): y = (k + u) / 256, k = rint(255 x) (8-bit data x = k/255), u ~ U(0, 1]:
// the twin's float operations (a product, rintf, a sum, an exact product by 2^-8), written __fmul_rn / __fadd_rn so
// nvcc fuses none of them.
__global__ void dequantize_kernel(const float *x, const float *u, float *out, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = __fmul_rn(__fadd_rn(rintf(__fmul_rn(255.0f, x[i])), u[i]), 1.0f / 256.0f);
}

// Gaussian corruption: x~ = x + std * noise. The product is __fmul_rn so nvcc cannot fuse it into an FMA: the twin
// rounds it on its own.
__global__ void corrupt_gaussian_kernel(const float *x, const float *noise, float noise_std, float *out, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = x[i] + __fmul_rn(noise_std, noise[i]);
}

// Masking corruption: out = 0 where u <= p (probability p), x elsewhere.
__global__ void corrupt_mask_kernel(const float *x, const float *u, float p, float *out, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = u[i] <= p ? 0.0f : x[i];
}

}  // namespace

extern "C" cudaError_t binarize_cuda(const float *x, const float *u, float *out, size_t n, cudaStream_t stream) {
  if (!x || !u || !out || n < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(binarize_kernel, grid_for(n), kBlock, 0, stream, x, u, out, n);
  return cudaGetLastError();
}

extern "C" cudaError_t dequantize_cuda(const float *x, const float *u, float *out, size_t n, cudaStream_t stream) {
  if (!x || !u || !out || n < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(dequantize_kernel, grid_for(n), kBlock, 0, stream, x, u, out, n);
  return cudaGetLastError();
}

// noise_std: finite and >= 0 (the noise is symmetric; a negative or non-finite std is a configuration error).
extern "C" cudaError_t corrupt_gaussian_cuda(const float *x, const float *noise, float noise_std, float *out, size_t n,
                                             cudaStream_t stream) {
  if (!x || !noise || !out || n < 1 || !(noise_std >= 0.0f) || !isfinite(noise_std)) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(corrupt_gaussian_kernel, grid_for(n), kBlock, 0, stream, x, noise, noise_std, out, n);
  return cudaGetLastError();
}

// p: a probability in [0, 1].
extern "C" cudaError_t corrupt_mask_cuda(const float *x, const float *u, float p, float *out, size_t n,
                                         cudaStream_t stream) {
  if (!x || !u || !out || n < 1 || !(p >= 0.0f && p <= 1.0f)) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(corrupt_mask_kernel, grid_for(n), kBlock, 0, stream, x, u, p, out, n);
  return cudaGetLastError();
}
