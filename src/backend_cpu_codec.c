/* backend_cpu_codec.c -- placeholder until the implementation lands (issue 6). */
#include "backend_cpu_internal.h"
#include "cuvae/error.h"

int cpu_encode(cuvae_backend *be, const float *x, size_t n, float *mulv) {
  (void)be;
  (void)x;
  (void)n;
  (void)mulv;
  return cuvae_error("cpu_encode: not implemented yet");
}

int cpu_decode(cuvae_backend *be, const float *z, size_t n, float *mean) {
  (void)be;
  (void)z;
  (void)n;
  (void)mean;
  return cuvae_error("cpu_decode: not implemented yet");
}
