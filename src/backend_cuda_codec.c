/* backend_cuda_codec.c -- placeholder until the implementation lands (issue 6). */
#include "backend_cuda_internal.h"
#include "cuvae/error.h"

int cuda_encode(cuvae_backend *be, const float *x, size_t n, float *mulv) {
  (void)be;
  (void)x;
  (void)n;
  (void)mulv;
  return cuvae_error("cuda_encode: not implemented yet");
}

int cuda_decode(cuvae_backend *be, const float *z, size_t n, float *mean) {
  (void)be;
  (void)z;
  (void)n;
  (void)mean;
  return cuvae_error("cuda_decode: not implemented yet");
}
