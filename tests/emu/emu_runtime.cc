// The CUDA runtime API subset of the emulation (docs/CUDA_EMULATION.md): errors, device memory, streams, and
// enqueue(), through which every stream operation passes (and is counted for cuda_emu_counts); the asynchronous
// error of an injected kernel fault. Stream capture, events and graphs live in emu_graph.cc, the error names in
// emu_errors.cc, device queries in emu_device.cc, the deferred mode's queues in emu_async.cc. Every function has
// the real prototype from cuda_runtime_api.h.
//
// Like CUDA, a call that fails returns its error and also records it as the calling thread's last error.
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "emu_internal.h"


// The opaque object behind cudaStream_t.
struct CUstream_st {
  unsigned flags;
  int priority;
};

namespace cuda_emu {
namespace {

thread_local cudaError_t t_last_error = cudaSuccess;  // per host thread, like CUDA

cudaError_t fail(cudaError_t e) {
  if (e != cudaSuccess) set_last_error(e);
  return e;
}

// All runtime state. Allocated once and never destroyed, so static destructors elsewhere can still use CUDA.
struct Allocation {
  size_t size;
  unsigned long long seq;  // 1 for the process's first cudaMalloc, 2 for the next, ...
};
struct State {
  std::mutex mu;
  std::map<uintptr_t, Allocation> device;      // base address -> allocation (cudaMalloc)
  std::map<uintptr_t, size_t> pinned;          // base address -> size (cudaMallocHost / cudaHostAlloc)
  unsigned long long next_seq = 0;
  std::unordered_set<cudaStream_t> streams;    // created, not destroyed
  cuda_emu_counts counts = {};                 // see cuda_emu_counts_get
  cudaError_t async_error = cudaSuccess;       // a faulted kernel's error (raise_async_error)
  bool async_seen = false;                     // a synchronisation has returned it
};
State &state() {
  static State *s = new State;
  return *s;
}

// The allocation containing address p (p inside [base, base + size)), or end(). Caller holds state().mu.
std::map<uintptr_t, Allocation>::const_iterator find_allocation(const State &st, const void *p) {
  const uintptr_t a = (uintptr_t)p;
  auto it = st.device.upper_bound(a);
  if (it == st.device.begin()) return st.device.end();
  --it;
  return a < it->first + it->second.size ? it : st.device.end();
}

// True when [p, p + n) lies inside one pinned host allocation. Caller holds st.mu.
bool is_pinned(const State &st, const void *p, size_t n) {
  const uintptr_t a = (uintptr_t)p;
  auto it = st.pinned.upper_bound(a);
  if (it == st.pinned.begin()) return false;
  --it;
  return a - it->first <= it->second && n <= it->second - (a - it->first);
}

// Counts a direct stream operation under its kind, told by the name enqueue() was given.
void count_direct(const char *what) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  cuda_emu_counts &c = st.counts;
  c.direct_ops++;
  if (!what) return;
  if (!strncmp(what, "kernel ", 7)) c.kernels++;
  else if (!strncmp(what, "cudaMemcpy", 10)) c.copies++;
  else if (!strncmp(what, "cublas", 6)) c.blas++;
  else if (!strncmp(what, "curand", 6)) c.rand++;
  else if (!strcmp(what, "cudaGraphLaunch")) c.graph_launches++;
}

// A synchronising call's result: the sticky asynchronous error once a faulted kernel has run, else e.
cudaError_t synchronised(cudaError_t e) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (st.async_error == cudaSuccess) return e;
  st.async_seen = true;
  return st.async_error;
}

// ---- leak report at exit --------------------------------------------------------------------------------
// Constructed during static initialisation, so its destructor runs after those of all objects constructed later
// (including function-local statics), which may still free device memory.
struct LeakReport {
  ~LeakReport() {
    State &st = state();
    std::lock_guard<std::mutex> lock(st.mu);
    size_t bytes = 0, shown = 0;
    for (const auto &[base, a] : st.device) {
      bytes += a.size;
      if (shown++ < 10) fprintf(stderr, "cuda_emu: leaked device allocation #%llu of %zu bytes\n", a.seq, a.size);
    }
    if (st.device.size() > 10) fprintf(stderr, "cuda_emu: ... and %zu more\n", st.device.size() - 10);
    if (!st.device.empty())
      fprintf(stderr, "cuda_emu: %zu device allocation(s) of %zu bytes in total were never freed (cudaFree)\n",
              st.device.size(), bytes);
  }
} g_leak_report;

// ---- memcpy / memset helpers ----------------------------------------------------------------------------
// Where a device range checked at issue time is no longer allocated when the operation runs (a graph replayed
// after cudaFree), the emulation faults instead of writing freed memory; CUDA would fault or corrupt silently.
void recheck(const void *p, size_t n, const char *what) {
  if (!is_device_range(p, n))
    fault("%s: device range [%p, +%zu) is no longer allocated when the operation runs (freed after it was "
          "captured?)", what, p, n);
}

// Validates a copy like CUDA: an invalid kind is cudaErrorInvalidMemcpyDirection; the device side(s) of the
// copy must lie inside one live allocation over the full length, else cudaErrorInvalidValue. With
// cudaMemcpyDefault a pointer is "device" when it points into an allocation (unified addressing).
cudaError_t check_copy(void *dst, const void *src, size_t count, cudaMemcpyKind kind, bool *dst_dev,
                       bool *src_dev) {
  switch (kind) {
    case cudaMemcpyHostToHost: *dst_dev = false, *src_dev = false; break;
    case cudaMemcpyHostToDevice: *dst_dev = true, *src_dev = false; break;
    case cudaMemcpyDeviceToHost: *dst_dev = false, *src_dev = true; break;
    case cudaMemcpyDeviceToDevice: *dst_dev = true, *src_dev = true; break;
    case cudaMemcpyDefault: {
      State &st = state();
      std::lock_guard<std::mutex> lock(st.mu);
      *dst_dev = find_allocation(st, dst) != st.device.end();
      *src_dev = find_allocation(st, src) != st.device.end();
      break;
    }
    default: return cudaErrorInvalidMemcpyDirection;
  }
  if (!dst || !src) return cudaErrorInvalidValue;
  if (*dst_dev && !is_device_range(dst, count)) return cudaErrorInvalidValue;
  if (*src_dev && !is_device_range(src, count)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

// A copy on `stream`; `sync` for cudaMemcpy. In the deferred mode (emu_async.cc) it returns when CUDA's "API
// synchronization behavior" lets it: a copy from pageable memory to the device reads (stages) the source now and
// writes the device later, cudaMemcpy first waiting for the legacy stream; a copy into host memory returns when
// done, except cudaMemcpyAsync into pinned memory; cudaMemcpy from pinned memory returns when done; device to
// device never waits.
cudaError_t issue_copy(const char *what, void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                       cudaStream_t stream, bool sync) {
  if (count == 0) return cudaSuccess;  // CUDA accepts empty copies without looking at the pointers
  bool dst_dev, src_dev;
  cudaError_t e = check_copy(dst, src, count, kind, &dst_dev, &src_dev);
  if (e != cudaSuccess) return fail(e);
  bool pageable = false;  // one side on the device, the other in host memory that is not pinned
  if (dst_dev != src_dev) {
    State &st = state();
    std::lock_guard<std::mutex> lock(st.mu);
    pageable = !is_pinned(st, dst_dev ? src : dst, count);
  }
  const bool deferred = async::enabled() && !capture::active(stream == nullptr ? cudaStreamLegacy : stream);
  const bool stage = deferred && dst_dev && !src_dev && pageable;
  const bool block = deferred && (dst_dev ? !src_dev && sync && !pageable : !src_dev || sync || pageable);
  std::shared_ptr<std::vector<unsigned char>> staged;
  if (stage) {
    if (sync) async::drain(stream);
    staged = std::make_shared<std::vector<unsigned char>>((const unsigned char *)src,
                                                          (const unsigned char *)src + count);
  }
  // The op keeps the pointers and size (by value); the bytes are read when it runs, as a graph's memcpy node
  // reads its source at replay time.
  bool recorded = false;
  e = enqueue(stream, what, [=] {
    if (dst_dev) recheck(dst, count, what);
    if (src_dev) recheck(src, count, what);
    memmove(dst, staged ? staged->data() : src, count);
  }, &recorded);
  if (e == cudaSuccess && block) async::drain(stream);
  if (e == cudaSuccess && pageable && !recorded) {
    State &st = state();
    std::lock_guard<std::mutex> lock(st.mu);
    st.counts.pageable_copies++;
  }
  return e;
}

cudaError_t issue_set(const char *what, void *dst, int value, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (!is_device_range(dst, count)) return fail(cudaErrorInvalidValue);
  return enqueue(stream, what, [=] {
    recheck(dst, count, what);
    memset(dst, (unsigned char)value, count);  // CUDA uses the low byte of value
  });
}

}  // namespace

// ---- errors ----------------------------------------------------------------------------------------------
void set_last_error(cudaError_t e) { t_last_error = e; }

bool is_device_range(const void *p, size_t n) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  const uintptr_t a = (uintptr_t)p;
  auto it = st.device.upper_bound(a);
  if (it == st.device.begin()) return false;
  --it;
  const uintptr_t end = it->first + it->second.size;  // a >= it->first here
  return a <= end && n <= end - a;
}

cudaError_t enqueue(cudaStream_t stream, const char *what, std::function<void()> op, bool *was_recorded) {
  cudaStream_t s;
  unsigned flags;
  cudaError_t e = streams::lookup(stream, &s, &flags);
  bool recorded = false;
  if (e == cudaSuccess) e = capture::route(s, what, op, &recorded);
  if (e != cudaSuccess) return fail(e);
  if (was_recorded) *was_recorded = recorded;
  if (recorded) return cudaSuccess;
  count_direct(what);
  if (async::enabled()) async::submit(s, flags, std::move(op));  // runs when the host synchronises
  else op();  // synchronous execution: the stream is idle again when this returns
  return cudaSuccess;
}

cudaError_t async_error() {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  return st.async_error;
}

void raise_async_error(cudaError_t e) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (st.async_error == cudaSuccess) st.async_error = e;
}

cudaError_t streams::lookup(cudaStream_t s, cudaStream_t *canonical, unsigned *flags) {
  // The legacy default stream (0 == cudaStreamLegacy, since the emulation is not built with per-thread default
  // streams) and cudaStreamPerThread are always valid and blocking.
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) {
    *canonical = s == cudaStreamPerThread ? s : cudaStreamLegacy;
    *flags = cudaStreamDefault;
    return cudaSuccess;
  }
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.streams.count(s)) return cudaErrorInvalidResourceHandle;
  *canonical = s;
  *flags = s->flags;
  return cudaSuccess;
}

}  // namespace cuda_emu

using cuda_emu::fail;
using cuda_emu::state;

extern "C" void cuda_emu_counts_get(cuda_emu_counts *out) {
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  *out = st.counts;
}

extern "C" void cuda_emu_counts_reset(void) {
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.counts = {};
}

extern "C" void cuda_emu_clear_async_error(void) {
  cuda_emu_inject_async_fault(nullptr, cudaSuccess);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.async_error = cudaSuccess;
  st.async_seen = false;
  cuda_emu::t_last_error = cudaSuccess;
}

extern "C" size_t cuda_emu_live_allocations(size_t *bytes) {
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  size_t total = 0;
  for (const auto &kv : st.device) total += kv.second.size;
  if (bytes) *bytes = total;
  return st.device.size();
}

// Once a synchronisation has reported a faulted kernel's error, it is every call's last error (it sticks).
static cudaError_t sticky_error() {
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  return st.async_seen ? st.async_error : cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  if (cudaError_t e = sticky_error(); e != cudaSuccess) return e;
  const cudaError_t e = cuda_emu::t_last_error;
  cuda_emu::t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  if (cudaError_t e = sticky_error(); e != cudaSuccess) return e;
  return cuda_emu::t_last_error;
}

// ---- memory ------------------------------------------------------------------------------------------------
// cudaMalloc: host memory from posix_memalign (so AddressSanitizer checks every access), 256-byte aligned like
// CUDA's allocations, and poisoned with 0xFF bytes (NaN floats, -1 integers) since CUDA does not clear it.
cudaError_t cudaMalloc(void **devPtr, size_t size) {
  if (!devPtr) return fail(cudaErrorInvalidValue);
  *devPtr = nullptr;
  if (cudaError_t e = cuda_emu::capture::check_unsafe(); e != cudaSuccess) return fail(e);
  if (size == 0) return cudaSuccess;  // CUDA: success and a NULL pointer
  size_t free_bytes, total_bytes;
  cuda_emu::host_memory(&free_bytes, &total_bytes);
  void *p = nullptr;
  if (size > free_bytes || posix_memalign(&p, 256, size) != 0) return fail(cudaErrorMemoryAllocation);
  memset(p, 0xFF, size);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.device[(uintptr_t)p] = {size, ++st.next_seq};
  st.counts.device_allocs++;
  *devPtr = p;
  return cudaSuccess;
}

// cudaFree and cudaFreeHost wait for the device to be idle, as CUDA's do.
cudaError_t cudaFree(void *devPtr) {
  if (!devPtr) return cudaSuccess;
  if (cudaError_t e = cuda_emu::capture::check_unsafe(); e != cudaSuccess) return fail(e);
  cuda_emu::async::drain_all();
  cuda_emu::State &st = state();
  {
    std::lock_guard<std::mutex> lock(st.mu);
    // Only the base of a live allocation may be freed; anything else (a host pointer, an interior pointer, a
    // second cudaFree) is cudaErrorInvalidValue and nothing is freed.
    auto it = st.device.find((uintptr_t)devPtr);
    if (it == st.device.end()) return fail(cudaErrorInvalidValue);
    st.device.erase(it);
  }
  free(devPtr);
  return cudaSuccess;
}

// Page-locked host memory is ordinary host memory here (not poisoned: neither is CUDA's).
cudaError_t cudaHostAlloc(void **pHost, size_t size, unsigned int flags) {
  if (!pHost || (flags & ~0xFu)) return fail(cudaErrorInvalidValue);
  *pHost = nullptr;
  if (cudaError_t e = cuda_emu::capture::check_unsafe(); e != cudaSuccess) return fail(e);
  if (size == 0) return cudaSuccess;
  void *p = nullptr;
  if (posix_memalign(&p, 256, size) != 0) return fail(cudaErrorMemoryAllocation);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.pinned[(uintptr_t)p] = size;
  st.counts.pinned_allocs++;
  *pHost = p;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t size) { return cudaHostAlloc(ptr, size, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void *ptr) {
  if (!ptr) return cudaSuccess;
  if (cudaError_t e = cuda_emu::capture::check_unsafe(); e != cudaSuccess) return fail(e);
  cuda_emu::async::drain_all();
  cuda_emu::State &st = state();
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.pinned.erase((uintptr_t)ptr)) return fail(cudaErrorInvalidValue);
  }
  free(ptr);
  return cudaSuccess;
}

// Synchronous copies and sets run on the legacy stream; CUDA counts them as potentially unsafe during capture.
cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
  if (cudaError_t e = cuda_emu::capture::check_unsafe(); e != cudaSuccess) return fail(e);
  const cudaError_t e = cuda_emu::issue_copy("cudaMemcpy", dst, src, count, kind, cudaStreamLegacy, true);
  return fail(cuda_emu::synchronised(e));
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return cuda_emu::issue_copy("cudaMemcpyAsync", dst, src, count, kind, stream, false);
}

cudaError_t cudaMemset(void *devPtr, int value, size_t count) {
  if (cudaError_t e = cuda_emu::capture::check_unsafe(); e != cudaSuccess) return fail(e);
  const cudaError_t e = cuda_emu::issue_set("cudaMemset", devPtr, value, count, cudaStreamLegacy);
  return fail(cuda_emu::synchronised(e));
}

cudaError_t cudaMemsetAsync(void *devPtr, int value, size_t count, cudaStream_t stream) {
  return cuda_emu::issue_set("cudaMemsetAsync", devPtr, value, count, stream);
}

cudaError_t cudaMemGetInfo(size_t *free, size_t *total) {
  if (!free || !total) return fail(cudaErrorInvalidValue);
  cuda_emu::host_memory(free, total);
  return cudaSuccess;
}

// Runs whatever the deferred mode has queued; CUDA forbids it while any stream captures.
cudaError_t cudaDeviceSynchronize(void) {
  const cudaError_t e = cuda_emu::capture::check_device_sync();
  if (e == cudaSuccess) cuda_emu::async::drain_all();
  return fail(e == cudaSuccess ? cuda_emu::synchronised(e) : e);
}

// Emulation: resets nothing (allocations, streams and events stay valid).
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0) return fail(cudaErrorInvalidValue);
    return fail(cuda_emu::set_max_dynamic_smem(func, value));
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout && (value < -1 || value > 100))
    return fail(cudaErrorInvalidValue);
  return cudaSuccess;  // other attributes (carveout, clusters) have no effect on the emulation
}

// ---- streams -------------------------------------------------------------------------------------------
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *pStream, unsigned int flags, int priority) {
  if (!pStream || (flags & ~(unsigned)cudaStreamNonBlocking)) return fail(cudaErrorInvalidValue);
  cudaStream_t s = new CUstream_st{flags, priority};
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.streams.insert(s);
  *pStream = s;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *pStream, unsigned int flags) {
  return cudaStreamCreateWithPriority(pStream, flags, 0);
}

cudaError_t cudaStreamCreate(cudaStream_t *pStream) { return cudaStreamCreateWithPriority(pStream, 0, 0); }

cudaError_t cudaDeviceGetStreamPriorityRange(int *leastPriority, int *greatestPriority) {
  if (leastPriority) *leastPriority = 0;  // as on current GPUs: 0 (lowest) .. -5 (highest)
  if (greatestPriority) *greatestPriority = -5;
  return cudaSuccess;
}

cudaError_t cudaStreamGetFlags(cudaStream_t hStream, unsigned int *flags) {
  if (!flags) return fail(cudaErrorInvalidValue);
  cudaStream_t s;
  return fail(cuda_emu::streams::lookup(hStream, &s, flags));
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  // The built-in streams cannot be destroyed; an unknown or destroyed handle is reported, never dereferenced.
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread)
    return fail(cudaErrorInvalidResourceHandle);
  {
    cuda_emu::State &st = state();
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.streams.erase(stream)) return fail(cudaErrorInvalidResourceHandle);
  }
  cuda_emu::capture::stream_destroyed(stream);  // a capture on it is abandoned
  cuda_emu::async::forget(stream);               // its queued work still runs, as on a GPU
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  cudaStream_t s;
  unsigned flags;
  cudaError_t e = cuda_emu::streams::lookup(stream, &s, &flags);
  if (e == cudaSuccess) e = cuda_emu::capture::check_sync(s);
  if (e == cudaSuccess) cuda_emu::async::drain(s);
  return fail(e == cudaSuccess ? cuda_emu::synchronised(e) : e);
}

// Complete, except in the deferred mode when work was queued: that work runs and this query answers
// cudaErrorNotReady (not recorded as the last error, as in CUDA), so a polling loop still ends.
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  cudaStream_t s;
  unsigned flags;
  cudaError_t e = cuda_emu::streams::lookup(stream, &s, &flags);
  if (e == cudaSuccess) e = cuda_emu::capture::check_sync(s);
  if (e == cudaSuccess && cuda_emu::async::drain(s) && cuda_emu::async_error() == cudaSuccess)
    return cudaErrorNotReady;
  return fail(e == cudaSuccess ? cuda_emu::synchronised(e) : e);
}
