/* Checked calls of the CUDA runtime, cuBLAS and cuRAND, for host code that returns 0 / -1 (the library's
 * convention): on failure, an error naming file, line, the call and the library's message, and `return -1` from
 * the enclosing function. */
#ifndef CUVAE_CUDA_CHECK_H
#define CUVAE_CUDA_CHECK_H
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>

#include "cuvae/error.h"

#define CU_CHECK(call)                                                                                        \
  do {                                                                                                        \
    const cudaError_t cu_err_ = (call);                                                                       \
    if (cu_err_ != cudaSuccess)                                                                               \
      return cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, cudaGetErrorString(cu_err_));    \
  } while (0)
#define CUBLAS_CHECK(call)                                                                                    \
  do {                                                                                                        \
    const cublasStatus_t cb_st_ = (call);                                                                     \
    if (cb_st_ != CUBLAS_STATUS_SUCCESS)                                                                      \
      return cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, cublasGetStatusString(cb_st_));   \
  } while (0)
#define CURAND_CHECK(call)                                                                                    \
  do {                                                                                                        \
    const curandStatus_t cr_st_ = (call);                                                                     \
    if (cr_st_ != CURAND_STATUS_SUCCESS)                                                                      \
      return cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, curand_status_string(cr_st_));    \
  } while (0)

static inline const char *curand_status_string(curandStatus_t s) {
  switch (s) {
    case CURAND_STATUS_SUCCESS: return "CURAND_STATUS_SUCCESS";
    case CURAND_STATUS_VERSION_MISMATCH: return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED: return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED: return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR: return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE: return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE: return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED: return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE: return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE: return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH: return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR: return "CURAND_STATUS_INTERNAL_ERROR";
  }
  return "unknown cuRAND status";
}

#endif
