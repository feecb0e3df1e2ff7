/* The one include of every CUDA source (the kernels/ sources and the CUDA backend's host code). Under nvcc it is the
 * real CUDA; under the CPU emulation (CUVAE_CUDA_EMU, tests/emu/) it is the emulation, so each kernel has ONE
 * source that runs both natively and in CI.
 *
 *   CUVAE_LAUNCH(kernel, grid, block, smem, stream, args...)   kernel<<<grid, block, smem, stream>>>(args...)
 *   CUVAE_DYNAMIC_SHARED(type, name);                          extern __shared__ type name[];  (at function scope)
 *
 * Launch errors are read with cudaGetLastError() in both worlds. Include this header FIRST: under emulation it
 * stands in for cuda_runtime.h, which other CUDA headers (curand_kernel.h, ...) include. */
#ifndef CUVAE_CUDA_COMPAT_H
#define CUVAE_CUDA_COMPAT_H

#if defined(CUVAE_CUDA_EMU)
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#define CUVAE_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define CUVAE_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#endif
