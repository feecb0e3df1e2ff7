// The error names and messages of the CUDA runtime API subset of the emulation (cudaGetErrorName,
// cudaGetErrorString): CUDA's own texts for the codes the emulation returns, and a few more.
#include <cuda_runtime_api.h>

#define CUDA_EMU_ERRORS(X)                                                                               \
  X(cudaSuccess, "no error")                                                                             \
  X(cudaErrorInvalidValue, "invalid argument")                                                           \
  X(cudaErrorMemoryAllocation, "out of memory")                                                          \
  X(cudaErrorInitializationError, "initialization error")                                                \
  X(cudaErrorCudartUnloading, "driver shutting down")                                                    \
  X(cudaErrorInvalidConfiguration, "invalid configuration argument")                                     \
  X(cudaErrorInvalidPitchValue, "invalid pitch argument")                                                \
  X(cudaErrorInvalidSymbol, "invalid device symbol")                                                     \
  X(cudaErrorInvalidDevicePointer, "invalid device pointer")                                             \
  X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")                                \
  X(cudaErrorNoDevice, "no CUDA-capable device is detected")                                             \
  X(cudaErrorInvalidDevice, "invalid device ordinal")                                                    \
  X(cudaErrorNoKernelImageForDevice, "no kernel image is available for execution on the device")         \
  X(cudaErrorInvalidResourceHandle, "invalid resource handle")                                           \
  X(cudaErrorIllegalState, "the operation cannot be performed in the present state")                     \
  X(cudaErrorNotReady, "device not ready")                                                               \
  X(cudaErrorIllegalAddress, "an illegal memory access was encountered")                                 \
  X(cudaErrorLaunchOutOfResources, "too many resources requested for launch")                            \
  X(cudaErrorLaunchTimeout, "the launch timed out and was terminated")                                   \
  X(cudaErrorAssert, "device-side assert triggered")                                                     \
  X(cudaErrorMisalignedAddress, "misaligned address")                                                    \
  X(cudaErrorInvalidDeviceFunction, "invalid device function")                                           \
  X(cudaErrorLaunchFailure, "unspecified launch failure")                                                \
  X(cudaErrorNotPermitted, "operation not permitted")                                                    \
  X(cudaErrorNotSupported, "operation not supported")                                                    \
  X(cudaErrorStreamCaptureUnsupported, "operation not permitted when stream is capturing")               \
  X(cudaErrorStreamCaptureInvalidated, "operation failed due to a previous error during capture")        \
  X(cudaErrorStreamCaptureMerge, "operation would result in a merge of separate capture sequences")      \
  X(cudaErrorStreamCaptureUnmatched, "capture was not ended in the same stream as it began")             \
  X(cudaErrorStreamCaptureUnjoined, "capturing stream has unjoined work")                                \
  X(cudaErrorStreamCaptureIsolation, "dependency created on uncaptured work in another stream")          \
  X(cudaErrorStreamCaptureImplicit,                                                                      \
    "operation would make the legacy stream depend on a capturing blocking stream")                      \
  X(cudaErrorCapturedEvent, "operation not permitted on an event last recorded in a capturing stream")   \
  X(cudaErrorStreamCaptureWrongThread, "attempt to terminate a thread-local capture sequence from another " \
                                       "thread")                                                         \
  X(cudaErrorUnknown, "unknown error")

const char *cudaGetErrorName(cudaError_t error) {
  switch (error) {
#define X(code, text) \
  case code: return #code;
    CUDA_EMU_ERRORS(X)
#undef X
    default: return "unrecognized error code";  // what CUDA answers for codes it does not know
  }
}

const char *cudaGetErrorString(cudaError_t error) {
  switch (error) {
#define X(code, text) \
  case code: return text;
    CUDA_EMU_ERRORS(X)
#undef X
    default: return "unrecognized error code";
  }
}
