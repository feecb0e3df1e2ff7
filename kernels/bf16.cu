// Conversion of float arrays to bfloat16 (docs/MATH.md (8.1)): the GPU twin of to_bf16_cpu
// (src/backend/cpu/bf16_cpu.c). The CUDA backend's bf16 GEMM operands that no epilogue writes (the stacks' inputs,
// tanh layers' outputs, the backward's pre-activation gradients) go through it.
#include "cuda_compat.h"

#include <cuda_bf16.h>
#include <stddef.h>
#include <stdint.h>

#include "cuvae_kernels.h"
#include "launch_grid.cuh"

namespace {

constexpr int kBf16Block = 256;

// y16[i] = bf16(x[i]): round to nearest, ties to even (__float2bfloat16_rn), as cuvae_bf16_from_float. A NaN stays a
// NaN (the device writes its canonical NaN, the CPU keeps the payload's top bits).
__global__ void to_bf16_kernel(const float *__restrict__ x, __nv_bfloat16 *__restrict__ y16, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) y16[i] = __float2bfloat16_rn(x[i]);
}

}  // namespace

extern "C" cudaError_t to_bf16_cuda(const float *x, uint16_t *y16, size_t n, cudaStream_t stream) {
  if (!x || !y16 || n < 1) return cudaErrorInvalidValue;
  CUVAE_LAUNCH(to_bf16_kernel, resident_grid(n, kBf16Block), kBf16Block, 0, stream, x,
               reinterpret_cast<__nv_bfloat16 *>(y16), n);
  return cudaGetLastError();
}
