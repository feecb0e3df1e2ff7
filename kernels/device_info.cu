// Device discovery for --device auto and `cuvae --version`. Host code only; the fused kernels of the CUDA
// backend live beside it, one file per kernel.
#include "cuda_compat.h"
#include <stdio.h>

extern "C" int cuvae_cuda_device_count(char *desc, size_t n) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // The runtime's own words (e.g. "CUDA driver version is insufficient ..." on a machine with no driver) are
    // kept as the second clause: they say why, the first says what it means.
    if (desc && n) snprintf(desc, n, "no CUDA device found (CUDA runtime: %s)", cudaGetErrorString(err));
    return 0;
  }
  if (desc && n) {
    cudaDeviceProp prop;
    if (count == 0)
      snprintf(desc, n, "no CUDA device found");
    else if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
      snprintf(desc, n, "%d CUDA device(s), first: %s (sm_%d%d)", count, prop.name, prop.major, prop.minor);
    else
      snprintf(desc, n, "%d CUDA device(s)", count);
  }
  return count;
}

// The current device of this host thread (what the CUDA backend created next uses); cudaErrorInvalidDevice etc.
// become one message.
extern "C" int cuda_set_device_checked(int device, char *msg, size_t n);
extern "C" int cuda_set_device_checked(int device, char *msg, size_t n) {
  const cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) return 0;
  if (msg && n) snprintf(msg, n, "cudaSetDevice(%d) failed: %s", device, cudaGetErrorString(err));
  return -1;
}
