// The device side of the CUDA emulation: what a .cu file sees when it is compiled with the host compiler
// (through kernels/cuda_compat.h). One CUDA thread = one fiber; the threads of a block run on fibers of one host
// thread and switch only at synchronisation points (__syncthreads, __syncwarp, shuffles, votes); blocks run one at a
// time. See docs/CUDA_EMULATION.md for what this guarantees and what it cannot.
#pragma once
#ifndef __cplusplus
#error "emulated CUDA sources are compiled as C++"
#endif

// Qualifiers, defined before CUDA's headers so that crt/host_defines.h keeps these definitions.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
// Static shared memory: a function-scope static is one object per kernel, shared by all fibers of the running
// block; blocks run one at a time, so this is exactly per-block shared memory (not re-initialised per block, except
// by the schedule mode, which poisons the section cuda_emu_shared before every block: emu_schedule.cc). Under
// AddressSanitizer it stays a plain static, which keeps ASan's redzones around it.
#if defined(__SANITIZE_ADDRESS__)
#define __shared__ static
#else
#define __shared__ static __attribute__((section("cuda_emu_shared")))
#endif

// cuda_runtime.h is nvcc's C++ layer over the runtime API (it also declares templates whose parameters are
// named like our built-in variable macros). Under emulation it is replaced by this header: mark it included, so
// that headers which include it (curand_kernel.h, ...) get this instead, and provide its common templates below.
#define __CUDA_RUNTIME_H__
#include <cuda_runtime_api.h>
// host_defines.h defines __noinline__ as an attribute, which breaks libstdc++'s own __attribute__((__noinline__))
// (GCC 12): emulated sources do without it.
#undef __noinline__
#include <library_types.h>
#include <vector_functions.h>  // make_uint3, make_float2, ...
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu_internal.h"

namespace cuda_emu {

struct ThreadCtx {
  uint3 thread_idx;
};
struct BlockCtx {
  uint3 block_idx;
  dim3 block_dim, grid_dim;
  unsigned char *dynamic_smem;
};
// The running fiber's thread and block (set by the scheduler before every switch into a fiber).
extern thread_local ThreadCtx *tls_thread;
extern thread_local BlockCtx *tls_block;

// Synchronisation, implemented by the scheduler (emu_exec.cc). file/line name the call site in fault reports.
void syncthreads_at(const char *file, int line);
int syncthreads_reduce_at(int kind, int pred, const char *file, int line);  // kind 0 count, 1 and, 2 or
enum WarpOp { kSyncwarp, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };
uint64_t warp_op_at(int op, unsigned mask, uint64_t value, int arg, int width, const char *file, int line);
unsigned activemask();

template <typename T>
inline T shfl_at(int op, unsigned mask, T var, int arg, const char *file, int line, int width = 32) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint64_t bits = 0;
  memcpy(&bits, &var, sizeof(T));
  bits = warp_op_at(op, mask, bits, arg, width, file, line);
  T out;
  memcpy(&out, &bits, sizeof(T));
  return out;
}

inline void syncwarp_at(const char *file, int line, unsigned mask = 0xffffffffu) {
  warp_op_at(kSyncwarp, mask, 0, 0, 32, file, line);
}

// A launch converts the arguments to the kernel's parameter types and copies them at the launch site, as CUDA
// does; the grid runs later (at once, or at graph replay) with those copies.
template <typename... Params, typename... Args>
inline cudaError_t launch_kernel(void (*kernel)(Params...), const char *name, const char *file, int line, dim3 grid,
                                 dim3 block, size_t smem, cudaStream_t stream, Args &&...args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "wrong number of kernel arguments");
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  return launch(reinterpret_cast<const void *>(kernel), name, file, line, grid, block, smem, stream,
                [kernel, params]() { std::apply(kernel, params); });
}

}  // namespace cuda_emu

// ---- the templates of cuda_runtime.h that host code commonly uses ----------------------------------------------
template <class T>
inline cudaError_t cudaMalloc(T **devPtr, size_t size) {
  return ::cudaMalloc((void **)(void *)devPtr, size);
}
template <class T>
inline cudaError_t cudaMallocHost(T **ptr, size_t size, unsigned int flags = 0) {
  return ::cudaHostAlloc((void **)(void *)ptr, size, flags);
}
template <class T>
inline cudaError_t cudaFuncSetAttribute(T *entry, enum cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute((const void *)entry, attr, value);
}
inline cudaError_t cudaEventCreate(cudaEvent_t *event, unsigned int flags) {
  return ::cudaEventCreateWithFlags(event, flags);
}

// cuRAND's device API (curand_kernel.h) compiles as is, except that its MTGP32 part declares host stand-ins
// named blockDim and threadIdx. Include that part before those names become macros; the declarations are never
// used (MTGP32 generators are not emulated; Philox, XORWOW and MRG32k3a are).
#include <curand_mtgp32_kernel.h>

// ---- built-in variables ----------------------------------------------------------------------------------
#define threadIdx (::cuda_emu::tls_thread->thread_idx)
#define blockIdx (::cuda_emu::tls_block->block_idx)
#define blockDim (::cuda_emu::tls_block->block_dim)
#define gridDim (::cuda_emu::tls_block->grid_dim)
#define warpSize 32

// ---- synchronisation ---------------------------------------------------------------------------------------
#define __syncthreads() ::cuda_emu::syncthreads_at(__FILE__, __LINE__)
#define __syncthreads_count(p) ::cuda_emu::syncthreads_reduce_at(0, (p), __FILE__, __LINE__)
#define __syncthreads_and(p) ::cuda_emu::syncthreads_reduce_at(1, (p), __FILE__, __LINE__)
#define __syncthreads_or(p) ::cuda_emu::syncthreads_reduce_at(2, (p), __FILE__, __LINE__)
#define __syncwarp(...) ::cuda_emu::syncwarp_at(__FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_sync(mask, var, lane, ...) \
  ::cuda_emu::shfl_at(::cuda_emu::kShflIdx, (mask), (var), (lane), __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_up_sync(mask, var, delta, ...) \
  ::cuda_emu::shfl_at(::cuda_emu::kShflUp, (mask), (var), (delta), __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_down_sync(mask, var, delta, ...) \
  ::cuda_emu::shfl_at(::cuda_emu::kShflDown, (mask), (var), (delta), __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_xor_sync(mask, var, lanemask, ...) \
  ::cuda_emu::shfl_at(::cuda_emu::kShflXor, (mask), (var), (lanemask), __FILE__, __LINE__, ##__VA_ARGS__)
#define __ballot_sync(mask, pred) \
  ((unsigned)::cuda_emu::warp_op_at(::cuda_emu::kBallot, (mask), 0, (pred) != 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred) \
  ((int)::cuda_emu::warp_op_at(::cuda_emu::kAny, (mask), 0, (pred) != 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, pred) \
  ((int)::cuda_emu::warp_op_at(::cuda_emu::kAll, (mask), 0, (pred) != 0, 32, __FILE__, __LINE__))
#define __activemask() ::cuda_emu::activemask()
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)

// ---- launch and dynamic shared memory ------------------------------------------------------------------------
#define CUVAE_LAUNCH(kernel, grid, block, smem, stream, ...)                                                  \
  ((void)::cuda_emu::launch_kernel(kernel, #kernel, __FILE__, __LINE__, dim3(grid), dim3(block), (smem), (stream), \
                                   ##__VA_ARGS__))
#define CUVAE_DYNAMIC_SHARED(type, name) type *name = reinterpret_cast<type *>(::cuda_emu::tls_block->dynamic_smem)

// ---- atomics: fibers switch only at synchronisation points, so a plain read-modify-write is atomic -----------
#define CUDA_EMU_ATOMIC(name, T, expr)     \
  inline T name(T *address, T val) {       \
    T old = *address;                      \
    *address = (expr);                     \
    return old;                            \
  }
CUDA_EMU_ATOMIC(atomicAdd, int, old + val)
CUDA_EMU_ATOMIC(atomicAdd, unsigned, old + val)
CUDA_EMU_ATOMIC(atomicAdd, unsigned long long, old + val)
CUDA_EMU_ATOMIC(atomicAdd, float, old + val)
CUDA_EMU_ATOMIC(atomicAdd, double, old + val)
CUDA_EMU_ATOMIC(atomicSub, int, old - val)
CUDA_EMU_ATOMIC(atomicSub, unsigned, old - val)
CUDA_EMU_ATOMIC(atomicMax, int, old > val ? old : val)
CUDA_EMU_ATOMIC(atomicMax, unsigned, old > val ? old : val)
CUDA_EMU_ATOMIC(atomicMax, unsigned long long, old > val ? old : val)
CUDA_EMU_ATOMIC(atomicMin, int, old < val ? old : val)
CUDA_EMU_ATOMIC(atomicMin, unsigned, old < val ? old : val)
CUDA_EMU_ATOMIC(atomicMin, unsigned long long, old < val ? old : val)
CUDA_EMU_ATOMIC(atomicExch, int, val)
CUDA_EMU_ATOMIC(atomicExch, unsigned, val)
CUDA_EMU_ATOMIC(atomicExch, unsigned long long, val)
CUDA_EMU_ATOMIC(atomicExch, float, val)
CUDA_EMU_ATOMIC(atomicAnd, int, old & val)
CUDA_EMU_ATOMIC(atomicAnd, unsigned, old & val)
CUDA_EMU_ATOMIC(atomicOr, int, old | val)
CUDA_EMU_ATOMIC(atomicOr, unsigned, old | val)
CUDA_EMU_ATOMIC(atomicXor, int, old ^ val)
CUDA_EMU_ATOMIC(atomicXor, unsigned, old ^ val)
CUDA_EMU_ATOMIC(atomicInc, unsigned, old >= val ? 0u : old + 1u)
CUDA_EMU_ATOMIC(atomicDec, unsigned, (old == 0u || old > val) ? val : old - 1u)
#undef CUDA_EMU_ATOMIC
#define CUDA_EMU_CAS(T)                                   \
  inline T atomicCAS(T *address, T compare, T val) {      \
    T old = *address;                                     \
    if (old == compare) *address = val;                   \
    return old;                                           \
  }
CUDA_EMU_CAS(int)
CUDA_EMU_CAS(unsigned)
CUDA_EMU_CAS(unsigned long long)
CUDA_EMU_CAS(unsigned short)
#undef CUDA_EMU_CAS

// ---- math intrinsics and device functions ----------------------------------------------------------------------
// The approximate intrinsics differ from the exact functions within their documented bounds, the _rn ones are
// correctly rounded and unfused: emu_intrinsics.h.
#include "emu_intrinsics.h"
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
template <typename T>
inline T __ldg(const T *p) {
  return *p;
}
// CUDA's overloaded min/max for device code.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
