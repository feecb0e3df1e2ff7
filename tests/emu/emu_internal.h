// Interfaces between the parts of the CUDA emulation (see docs/CUDA_EMULATION.md). Not for emulated code:
// kernels and host code include kernels/cuda_compat.h, which pulls in cuda_emu.h under emulation.
//
// The emulated device: one device, all memory is host memory, every stream executes its work synchronously on
// the calling host thread in issue order (so the emulation is a valid, fully serialised CUDA schedule), except
// while a stream is being captured, when work is recorded into a graph instead and runs on cudaGraphLaunch, and in
// the deferred mode (CUDA_EMU_ASYNC=1), when it is queued and runs when the host synchronises (emu_async.cc).
#pragma once
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include <functional>

namespace cuda_emu {

// Limits of the emulated device (an sm_90-class part). exec checks launches against them; runtime reports them
// through cudaGetDeviceProperties / cudaDeviceGetAttribute.
constexpr int kWarpSize = 32;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned kMaxGridDim[3] = {2147483647u, 65535u, 65535u};
constexpr size_t kSharedMemPerBlock = 48 * 1024;         // default dynamic + static limit per block
constexpr size_t kSharedMemPerBlockOptin = 227 * 1024;   // with cudaFuncAttributeMaxDynamicSharedMemorySize
constexpr int kComputeMajor = 9, kComputeMinor = 0;
constexpr int kMultiProcessorCount = 1;

// ---- owned by emu_runtime.cc ------------------------------------------------------------------------------
// Records an error as a failed asynchronous operation would: returned (and reset) by cudaGetLastError,
// returned by cudaPeekAtLastError.
void set_last_error(cudaError_t e);
// Runs `op` in stream order: at once (the emulation is synchronous), or, while `stream` is capturing, appends it
// to the capture's graph. `what` names the operation in reports ("kernel foo", "cublasSgemm"). Returns
// cudaErrorInvalidResourceHandle for a destroyed/unknown stream, a capture error (e.g.
// cudaErrorStreamCaptureInvalidated, cudaErrorStreamCaptureImplicit) when the capture rules are broken, else
// cudaSuccess; a failure is also recorded with set_last_error, as CUDA does. A direct operation (not recorded) is
// counted (cuda_emu_counts) by the kind `what` names; *recorded (when given) says whether it was recorded.
cudaError_t enqueue(cudaStream_t stream, const char *what, std::function<void()> op, bool *recorded = nullptr);
// The host's available and total memory (MemAvailable and MemTotal): the emulated device's (emu_device.cc).
void host_memory(size_t *free_bytes, size_t *total_bytes);
// True when [p, p + n) lies inside one live device allocation (cudaMalloc).
bool is_device_range(const void *p, size_t n);
// The asynchronous error of a faulted kernel (cuda_emu_inject_async_fault): cudaSuccess until one has run.
// Synchronising calls return it (and from then on cudaGetLastError / cudaPeekAtLastError too); it sticks, as a
// GPU context does after a kernel fault, until cuda_emu_clear_async_error.
cudaError_t async_error();
void raise_async_error(cudaError_t e);  // a faulting kernel ran (the first error wins)

// ---- owned by emu_exec.cc ---------------------------------------------------------------------------------
// Validates the configuration like CUDA (cudaErrorInvalidConfiguration for bad block/grid dimensions,
// cudaErrorInvalidValue for too much dynamic shared memory), then enqueues the grid on `stream`: every block in
// turn, each thread of a block on its own fiber running `body`. On a configuration error nothing runs and the
// error is also recorded with set_last_error. `fn` identifies the kernel (for cudaFuncSetAttribute).
cudaError_t launch(const void *fn, const char *kernel, const char *file, int line, dim3 grid, dim3 block,
                   size_t dynamic_smem, cudaStream_t stream, std::function<void()> body);
// The dynamic shared memory opt-in of kernel `fn` (cudaFuncSetAttribute with
// cudaFuncAttributeMaxDynamicSharedMemorySize). Returns cudaErrorInvalidValue above kSharedMemPerBlockOptin.
cudaError_t set_max_dynamic_smem(const void *fn, int bytes);
// Reports a fault in emulated code (deadlock, bad shuffle, ...) on stderr as "cuda_emu: <message>", adding the
// running kernel, block and thread when inside a kernel, then aborts.
[[noreturn]] void fault(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Inside a kernel: "kernel K (launched at F:L), block (x,y,z), thread (x,y,z)"; outside: "host code".
const char *where();

}  // namespace cuda_emu

// ---- between emu_runtime.cc and emu_graph.cc ------------------------------------------------------------------
namespace cuda_emu::streams {  // emu_runtime.cc
// cudaSuccess with the canonical handle (0 becomes cudaStreamLegacy) and creation flags of a live stream, else
// cudaErrorInvalidResourceHandle.
cudaError_t lookup(cudaStream_t s, cudaStream_t *canonical, unsigned *flags);
}  // namespace cuda_emu::streams
namespace cuda_emu::capture {  // emu_graph.cc; `s` is always a canonical live stream
cudaError_t route(cudaStream_t s, const char *what, std::function<void()> &op, bool *recorded);
cudaError_t check_unsafe();
cudaError_t check_sync(cudaStream_t s);
cudaError_t check_device_sync();
void stream_destroyed(cudaStream_t s);
bool active(cudaStream_t s);  // s is the origin or a forked member of an active capture
}  // namespace cuda_emu::capture
namespace cuda_emu::exec {  // emu_exec.cc
// The kernel armed by cuda_emu_inject_async_fault: when `kernel` is it, disarms it and returns its error (the
// launch then faults when it runs); else cudaSuccess.
cudaError_t take_injected_fault(const char *kernel);
}  // namespace cuda_emu::exec
namespace cuda_emu::blas {  // emu_cublas.cc, shared with the cuBLASLt subset (emu_cublaslt.cc)
// Faults (cuda_emu::fault) unless [p, p + bytes) lies in one device allocation, at the call (require_device) and
// again when the operation runs (recheck: an operand freed between capture and graph launch); `fn` and `what`
// name the call and the operand. bytes == 0 checks nothing.
void require_device(const char *fn, const char *what, const void *p, size_t bytes);
void recheck(const char *fn, const char *what, const void *p, size_t bytes);
float to_tf32(float x);        // TF32 rounding (10 explicit mantissa bits, nearest even); Inf and NaN unchanged
bool tf32_disabled_by_env();   // NVIDIA_TF32_OVERRIDE=0
}  // namespace cuda_emu::blas
namespace cuda_emu::async {  // emu_async.cc: the deferred mode (CUDA_EMU_ASYNC=1); streams 0 and
                             // cudaStreamLegacy are the same queue; a ticket names one queued operation
bool enabled();
// Queues `op` on `s` (creation flags `flags`), after the legacy stream's implicit synchronisation.
void submit(cudaStream_t s, unsigned flags, std::function<void()> op);
unsigned long long last(cudaStream_t s);  // the ticket of the latest operation issued on s (0: none)
// Work issued on `s` from now on waits for `on`'s operations up to `ticket` (cudaStreamWaitEvent).
void wait(cudaStream_t s, unsigned flags, cudaStream_t on, unsigned long long ticket);
// Runs s's queued operations up to `ticket` (all by default) and what they depend on; true when any ran.
bool drain(cudaStream_t s, unsigned long long ticket = ~0ULL);
bool drain_all();             // runs every queued operation (cudaDeviceSynchronize)
void forget(cudaStream_t s);  // s is destroyed: its work runs, its queue goes
}  // namespace cuda_emu::async

// C entry points for tests.
extern "C" {
// Number and total bytes of live device allocations.
size_t cuda_emu_live_allocations(size_t *bytes);

// What the host asked of the emulated device since the last cuda_emu_counts_reset (all threads together).
// A "direct" operation is a stream operation that ran where it was issued: not recorded into a graph under
// capture, and not one of the nodes a graph launch replays (the launch itself counts once).
typedef struct cuda_emu_counts {
  unsigned long long device_allocs;    // cudaMalloc calls that returned memory
  unsigned long long pinned_allocs;    // cudaHostAlloc / cudaMallocHost calls that returned memory
  unsigned long long direct_ops;       // direct stream operations of every kind, of which:
  unsigned long long kernels;          //   kernel launches
  unsigned long long copies;           //   copies (cudaMemcpy, cudaMemcpyAsync)
  unsigned long long pageable_copies;  //   copies between device memory and pageable host memory (host side not
                                       //   from cudaMallocHost: a GPU stages those through a driver buffer)
  unsigned long long blas;             //   cuBLAS operations
  unsigned long long rand;             //   cuRAND generations
  unsigned long long graph_launches;   //   graph launches
} cuda_emu_counts;
void cuda_emu_counts_get(cuda_emu_counts *out);
void cuda_emu_counts_reset(void);

// Fault injection: the next launch of the kernel named `kernel` (its __global__ name; a template's instances, named
// "kernel<...>", match too) runs and then faults with
// `error` (e.g. cudaErrorIllegalAddress) the way a kernel faults on a GPU: the launch itself succeeds, and the
// error surfaces at the next synchronisation (cudaStreamSynchronize, cudaDeviceSynchronize, cudaStreamQuery,
// cudaEventSynchronize / cudaEventQuery, a synchronous cudaMemcpy / cudaMemset), after which it sticks (see
// cuda_emu::async_error). cuda_emu_clear_async_error disarms the injection and clears the error and the calling
// thread's last error (a test's stand-in for a fresh process).
void cuda_emu_inject_async_fault(const char *kernel, cudaError_t error);
void cuda_emu_clear_async_error(void);

// Makes cuBLASLt have no algorithm for matmuls with the epilogue `epilogue` (a cublasLtEpilogue_t value), as a library
// or GPU without a kernel for it: cublasLtMatmulAlgoGetHeuristic returns CUBLAS_STATUS_NOT_SUPPORTED with no result,
// and so does cublasLtMatmul. 0 refuses none. Returns the previous setting.
uint32_t cuda_emu_cublaslt_refuse_epilogue(uint32_t epilogue);
// Switches the deferred mode (CUDA_EMU_ASYNC) on or off for the rest of the process, or until the next call; off
// runs everything queued first. Returns the previous setting.
int cuda_emu_set_async(int on);
// Switches the schedule mode (CUDA_EMU_SCHEDULE=shuffle:SEED): `shuffle` non-zero runs each block's threads in an
// order drawn from `seed` between synchronisation points and poisons static shared memory before every block.
// Returns the previous setting (shuffle on or off).
int cuda_emu_set_schedule(int shuffle, unsigned long long seed);
}
