// Tests of the emulated CUDA runtime (emu_runtime.cc, emu_graph.cc): errors, device memory, device queries,
// streams, events, stream capture and graph replay. Host code only; trivial stream work goes through
// cuda_emu::enqueue directly, as kernel launches do.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmath>
#include <vector>

#include "emu_internal.h"

namespace {

// Every test starts and ends with no pending last error and no allocations of its own left over. These tests check
// the default mode, where work runs when it is issued (the deferred mode has test_emu_async.cc): they switch
// CUDA_EMU_ASYNC off while they run.
class EmuRuntime : public ::testing::Test {
 protected:
  void SetUp() override {
    async_was_ = cuda_emu_set_async(0);
    cudaGetLastError();
    live_before_ = cuda_emu_live_allocations(nullptr);
  }
  void TearDown() override {
    EXPECT_EQ(cuda_emu_live_allocations(nullptr), live_before_) << "the test leaked device memory";
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the test left an unchecked error";
    cuda_emu_set_async(async_was_);
  }
  size_t live_before_ = 0;
  int async_was_ = 0;
};

TEST_F(EmuRuntime, ErrorNamesAndStrings) {
  EXPECT_STREQ(cudaGetErrorName(cudaSuccess), "cudaSuccess");
  EXPECT_STREQ(cudaGetErrorString(cudaSuccess), "no error");
  EXPECT_STREQ(cudaGetErrorName(cudaErrorInvalidValue), "cudaErrorInvalidValue");
  EXPECT_STREQ(cudaGetErrorString(cudaErrorInvalidValue), "invalid argument");
  EXPECT_STREQ(cudaGetErrorString(cudaErrorMemoryAllocation), "out of memory");
  EXPECT_STREQ(cudaGetErrorName(cudaErrorStreamCaptureInvalidated), "cudaErrorStreamCaptureInvalidated");
  EXPECT_STREQ(cudaGetErrorString((cudaError_t)12345), "unrecognized error code");
}

TEST_F(EmuRuntime, LastErrorIsRecordedPeekedAndReset) {
  EXPECT_EQ(cudaSetDevice(3), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorInvalidDevice);  // peek does not reset
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);     // get returns and resets
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  cuda_emu::set_last_error(cudaErrorLaunchFailure);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
}

TEST_F(EmuRuntime, MallocIsAlignedAndPoisoned) {
  const size_t n = 1000;
  void *p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, n * sizeof(float)), cudaSuccess);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ((uintptr_t)p % 256, 0u);
  const unsigned char *bytes = (const unsigned char *)p;  // device memory is host memory in the emulation
  for (size_t i = 0; i < n * sizeof(float); i++) ASSERT_EQ(bytes[i], 0xFF) << "byte " << i;
  std::vector<float> f(n);
  ASSERT_EQ(cudaMemcpy(f.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : f) ASSERT_TRUE(std::isnan(v));  // uninitialised floats read as NaN
  int i0;
  ASSERT_EQ(cudaMemcpy(&i0, p, sizeof i0, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(i0, -1);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

TEST_F(EmuRuntime, MallocEdgeCases) {
  void *p = (void *)0x1;
  EXPECT_EQ(cudaMalloc(&p, 0), cudaSuccess);  // CUDA: success and NULL
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(cudaMalloc(nullptr, 16), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  size_t free_bytes, total_bytes;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&p, free_bytes + ((size_t)1 << 40)), cudaErrorMemoryAllocation);  // more than is free
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
}

TEST_F(EmuRuntime, LiveAllocationAccounting) {
  size_t bytes0;
  const size_t n0 = cuda_emu_live_allocations(&bytes0);
  void *a, *b;
  ASSERT_EQ(cudaMalloc((void **)&a, 100), cudaSuccess);
  ASSERT_EQ(cudaMalloc((void **)&b, 300), cudaSuccess);
  size_t bytes;
  EXPECT_EQ(cuda_emu_live_allocations(&bytes), n0 + 2);
  EXPECT_EQ(bytes, bytes0 + 400);
  ASSERT_EQ(cudaFree(a), cudaSuccess);
  EXPECT_EQ(cuda_emu_live_allocations(&bytes), n0 + 1);
  EXPECT_EQ(bytes, bytes0 + 300);
  ASSERT_EQ(cudaFree(b), cudaSuccess);
  EXPECT_EQ(cuda_emu_live_allocations(&bytes), n0);
  EXPECT_EQ(bytes, bytes0);
}

TEST_F(EmuRuntime, FreeErrorsNeverCrash) {
  EXPECT_EQ(cudaFree(nullptr), cudaSuccess);
  void *p;
  ASSERT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  EXPECT_EQ(cudaFree((char *)p + 8), cudaErrorInvalidValue);  // interior pointer: nothing freed
  EXPECT_TRUE(cuda_emu::is_device_range(p, 64));
  int host_var;
  EXPECT_EQ(cudaFree(&host_var), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaErrorInvalidValue);  // double free
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_FALSE(cuda_emu::is_device_range(p, 1));
}

TEST_F(EmuRuntime, IsDeviceRange) {
  void *p;
  ASSERT_EQ(cudaMalloc(&p, 100), cudaSuccess);
  char *c = (char *)p;
  EXPECT_TRUE(cuda_emu::is_device_range(c, 100));
  EXPECT_TRUE(cuda_emu::is_device_range(c + 99, 1));
  EXPECT_TRUE(cuda_emu::is_device_range(c + 100, 0));
  EXPECT_FALSE(cuda_emu::is_device_range(c, 101));
  EXPECT_FALSE(cuda_emu::is_device_range(c + 1, 100));
  EXPECT_FALSE(cuda_emu::is_device_range(c - 1, 2));
  int host_var;
  EXPECT_FALSE(cuda_emu::is_device_range(&host_var, sizeof host_var));
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

TEST_F(EmuRuntime, MemcpyAllDirections) {
  const int n = 257;
  std::vector<int> src(n), dst(n, 0);
  for (int i = 0; i < n; i++) src[i] = i * 7 - 100;
  int *a, *b;
  ASSERT_EQ(cudaMalloc((void **)&a, n * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMalloc((void **)&b, n * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(a, src.data(), n * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(b, a, n * sizeof(int), cudaMemcpyDeviceToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dst.data(), b, n * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(dst, src);
  std::vector<int> h2h(n, 0);
  ASSERT_EQ(cudaMemcpy(h2h.data(), dst.data(), n * sizeof(int), cudaMemcpyHostToHost), cudaSuccess);
  EXPECT_EQ(h2h, src);
  // cudaMemcpyDefault infers the direction from the pointers (unified addressing), in both directions.
  std::vector<int> twice(n);
  for (int i = 0; i < n; i++) twice[i] = 2 * src[i];
  ASSERT_EQ(cudaMemcpy(a, twice.data(), n * sizeof(int), cudaMemcpyDefault), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(dst.data(), a, n * sizeof(int), cudaMemcpyDefault, 0), cudaSuccess);
  EXPECT_EQ(dst, twice);
  EXPECT_EQ(cudaFree(a), cudaSuccess);
  EXPECT_EQ(cudaFree(b), cudaSuccess);
}

TEST_F(EmuRuntime, MemcpyBadRangesAreErrors) {
  const size_t n = 64;
  std::vector<unsigned char> host(n + 1, 0x11);
  unsigned char *d;
  ASSERT_EQ(cudaMalloc((void **)&d, n), cudaSuccess);
  // One byte past the end of the allocation, on either side of the copy, or starting inside and running out.
  EXPECT_EQ(cudaMemcpy(d, host.data(), n + 1, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(host.data(), d, n + 1, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d + 1, d, n, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d + n - 4, host.data(), 8, cudaMemcpyDefault), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpyAsync(d, host.data(), n + 1, cudaMemcpyHostToDevice, 0), cudaErrorInvalidValue);
  // A host pointer on the device side (kind swapped), an invalid kind.
  EXPECT_EQ(cudaMemcpy(host.data(), d, n, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, host.data(), n, (cudaMemcpyKind)9), cudaErrorInvalidMemcpyDirection);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidMemcpyDirection);
  // Nothing was written by the failed copies: the allocation is still poison, the host bytes unchanged.
  for (size_t i = 0; i < n; i++) ASSERT_EQ(d[i], 0xFF);
  for (unsigned char c : host) ASSERT_EQ(c, 0x11);
  EXPECT_EQ(cudaMemcpy(d, host.data(), 0, cudaMemcpyHostToDevice), cudaSuccess);  // empty copy
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST_F(EmuRuntime, Memset) {
  const size_t n = 100;
  unsigned char *d;
  ASSERT_EQ(cudaMalloc((void **)&d, n), cudaSuccess);
  ASSERT_EQ(cudaMemset(d, 0, n), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(d + 10, 0x1AB, 20, cudaStreamLegacy), cudaSuccess);  // low byte of value: 0xAB
  std::vector<unsigned char> h(n);
  ASSERT_EQ(cudaMemcpy(h.data(), d, n, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < n; i++) EXPECT_EQ(h[i], i >= 10 && i < 30 ? 0xAB : 0) << i;
  EXPECT_EQ(cudaMemset(d + 1, 0, n), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  int host_var = 5;
  EXPECT_EQ(cudaMemset(&host_var, 0, sizeof host_var), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(host_var, 5);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST_F(EmuRuntime, HostAlloc) {
  void *p;
  ASSERT_EQ(cudaMallocHost(&p, 1000), cudaSuccess);
  memset(p, 3, 1000);
  EXPECT_FALSE(cuda_emu::is_device_range(p, 1));  // pinned host memory is not device memory
  EXPECT_EQ(cudaFreeHost(p), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(p), cudaErrorInvalidValue);
  ASSERT_EQ(cudaHostAlloc(&p, 10, cudaHostAllocPortable), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(p), cudaSuccess);
  EXPECT_EQ(cudaHostAlloc(&p, 10, 0x100), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
}

TEST_F(EmuRuntime, DevicePropertiesAndAttributes) {
  int count = 0, dev = -1;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  EXPECT_EQ(count, 1);
  EXPECT_EQ(cudaSetDevice(0), cudaSuccess);
  EXPECT_EQ(cudaSetDevice(1), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  EXPECT_EQ(dev, 0);
  cudaDeviceProp prop;
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_STREQ(prop.name, "cuda_emu (CPU emulation)");
  EXPECT_EQ(prop.major, 9);
  EXPECT_EQ(prop.minor, 0);
  EXPECT_EQ(prop.warpSize, 32);
  EXPECT_EQ(prop.maxThreadsPerBlock, 1024);
  EXPECT_EQ(prop.maxThreadsDim[2], 64);
  EXPECT_EQ(prop.maxGridSize[0], 2147483647);
  EXPECT_EQ(prop.sharedMemPerBlock, 48u * 1024);
  EXPECT_EQ(prop.sharedMemPerBlockOptin, 227u * 1024);
  EXPECT_GT(prop.totalGlobalMem, (size_t)64 << 20);
  EXPECT_EQ(cudaGetDeviceProperties(&prop, 1), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);

  struct {
    cudaDeviceAttr attr;
    int expected;
  } const cases[] = {
      {cudaDevAttrMaxThreadsPerBlock, 1024},
      {cudaDevAttrMaxBlockDimX, 1024},
      {cudaDevAttrMaxBlockDimY, 1024},
      {cudaDevAttrMaxBlockDimZ, 64},
      {cudaDevAttrMaxGridDimX, 2147483647},
      {cudaDevAttrMaxGridDimY, 65535},
      {cudaDevAttrMaxGridDimZ, 65535},
      {cudaDevAttrMaxSharedMemoryPerBlock, 48 * 1024},
      {cudaDevAttrMaxSharedMemoryPerBlockOptin, 227 * 1024},
      {cudaDevAttrWarpSize, 32},
      {cudaDevAttrMultiProcessorCount, cuda_emu::kMultiProcessorCount},
      {cudaDevAttrComputeCapabilityMajor, 9},
      {cudaDevAttrComputeCapabilityMinor, 0},
  };
  for (const auto &c : cases) {
    int v = -7;
    EXPECT_EQ(cudaDeviceGetAttribute(&v, c.attr, 0), cudaSuccess) << c.attr;
    EXPECT_EQ(v, c.expected) << "attribute " << c.attr;
  }
  int v;
  EXPECT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrWarpSize, 2), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaDeviceGetAttribute(&v, (cudaDeviceAttr)100000, 0), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST_F(EmuRuntime, MemGetInfoIsSane) {
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  EXPECT_GT(free_bytes, 0u);
  EXPECT_LE(free_bytes, total_bytes);
  cudaDeviceProp prop;
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_EQ(prop.totalGlobalMem, total_bytes);
  EXPECT_EQ(cudaMemGetInfo(nullptr, &total_bytes), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
}

TEST_F(EmuRuntime, StreamsAndStreamErrors) {
  cudaStream_t s, nb;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking), cudaSuccess);
  unsigned flags = 99;
  ASSERT_EQ(cudaStreamGetFlags(nb, &flags), cudaSuccess);
  EXPECT_EQ(flags, (unsigned)cudaStreamNonBlocking);
  // Work on any valid stream runs in issue order, before the call returns.
  int order = 0;
  for (cudaStream_t st : {s, nb, (cudaStream_t)0, cudaStreamLegacy, cudaStreamPerThread}) {
    const int expected = order;
    ASSERT_EQ(cuda_emu::enqueue(st, "step", [&order, expected] { order = expected + 1; }), cudaSuccess);
    EXPECT_EQ(order, expected + 1);
  }
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(cudaStreamQuery(nb), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(0), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(nb), cudaSuccess);
  // Destroyed handles and the built-in streams: error codes, nothing runs, nothing crashes.
  EXPECT_EQ(cudaStreamDestroy(s), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaStreamDestroy(0), cudaErrorInvalidResourceHandle);
  bool ran = false;
  EXPECT_EQ(cuda_emu::enqueue(s, "never", [&ran] { ran = true; }), cudaErrorInvalidResourceHandle);
  EXPECT_FALSE(ran);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorInvalidResourceHandle);
  unsigned char *d;
  ASSERT_EQ(cudaMalloc((void **)&d, 4), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(d, 0, 4, s), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(d[0], 0xFF);
  EXPECT_EQ(cudaStreamCreateWithFlags(&s, 0x80), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST_F(EmuRuntime, EventsMeasureElapsedTime) {
  cudaEvent_t start, stop, never, untimed;
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&stop), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&never), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming), cudaSuccess);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(start, s), cudaSuccess);
  volatile double sink = 0;
  ASSERT_EQ(cuda_emu::enqueue(s, "work", [&sink] {
              for (int i = 0; i < 200000; i++) sink = sink + i;
            }),
            cudaSuccess);
  ASSERT_EQ(cudaEventRecord(stop, s), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(untimed, 0), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(stop), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(stop), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(never), cudaSuccess);  // never recorded: complete, as in CUDA
  float ms = -1;
  ASSERT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
  EXPECT_GE(ms, 0.0f);
  EXPECT_LT(ms, 10000.0f);  // loose: 200k additions take well under a second even under sanitizers
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, never), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, untimed), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaStreamWaitEvent(s, stop, 0), cudaSuccess);
  for (cudaEvent_t e : {start, stop, never, untimed}) EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(start), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaEventRecord(start, s), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaEventQuery(start), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// Capture of memset + host op + memcpy: nothing runs while capturing; each replay runs all three in order.
TEST_F(EmuRuntime, GraphCaptureAndReplay) {
  const size_t n = 16;
  unsigned char *d;
  ASSERT_EQ(cudaMalloc((void **)&d, n), cudaSuccess);
  std::vector<unsigned char> h(n, 0);
  int counter = 0;
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);

  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaErrorIllegalState);
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalState);
  ASSERT_EQ(cudaMemsetAsync(d, 1, n, s), cudaSuccess);
  // The op runs after the memset: it overwrites d[0] with the replay count.
  ASSERT_EQ(cuda_emu::enqueue(s, "count", [&counter, d] { d[0] = (unsigned char)++counter; }), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(h.data(), d, n, cudaMemcpyDeviceToHost, s), cudaSuccess);
  unsigned long long id = 0;
  cudaGraph_t live = nullptr;
  size_t ndeps = 9;
  ASSERT_EQ(cudaStreamGetCaptureInfo(s, &status, &id, &live, nullptr, nullptr, &ndeps), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  EXPECT_GT(id, 0u);
  EXPECT_NE(live, nullptr);
  EXPECT_EQ(ndeps, 1u);
  EXPECT_EQ(counter, 0);  // nothing ran during capture
  EXPECT_EQ(d[0], 0xFF);
  EXPECT_EQ(h[0], 0);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_EQ(graph, live);
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);
  size_t nodes = 0;
  ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &nodes), cudaSuccess);
  EXPECT_EQ(nodes, 3u);

  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);  // the executable graph keeps the nodes
  for (int replay = 1; replay <= 3; replay++) {
    d[5] = 0;  // each replay's memset restores it
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    EXPECT_EQ(counter, replay);
    EXPECT_EQ(h[0], replay);  // memcpy ran after the op
    for (size_t i = 1; i < n; i++) ASSERT_EQ(h[i], 1) << "replay " << replay << " byte " << i;
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGraphLaunch(exec, s), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(counter, 3);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

// A graph launched while another stream captures is recorded there as one operation.
TEST_F(EmuRuntime, GraphLaunchInsideCaptureIsRecorded) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  std::vector<int> log;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cuda_emu::enqueue(s, "a", [&log] { log.push_back(1); }), cudaSuccess);
  ASSERT_EQ(cuda_emu::enqueue(s, "b", [&log] { log.push_back(2); }), cudaSuccess);
  cudaGraph_t inner;
  ASSERT_EQ(cudaStreamEndCapture(s, &inner), cudaSuccess);
  cudaGraphExec_t inner_exec;
  ASSERT_EQ(cudaGraphInstantiateWithFlags(&inner_exec, inner, 0), cudaSuccess);

  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(inner_exec, s), cudaSuccess);
  ASSERT_EQ(cuda_emu::enqueue(s, "c", [&log] { log.push_back(3); }), cudaSuccess);
  cudaGraph_t outer;
  ASSERT_EQ(cudaStreamEndCapture(s, &outer), cudaSuccess);
  EXPECT_TRUE(log.empty());
  cudaGraphExec_t outer_exec;
  ASSERT_EQ(cudaGraphInstantiate(&outer_exec, outer, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphExecDestroy(inner_exec), cudaSuccess);  // the outer graph holds the inner nodes
  ASSERT_EQ(cudaGraphLaunch(outer_exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(outer_exec, 0), cudaSuccess);
  EXPECT_EQ(log, (std::vector<int>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(cudaGraphExecDestroy(outer_exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(outer), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(inner), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// CUDA forbids the synchronous cudaMemcpy during a global-mode capture: it fails, does not copy, and the
// capture is invalidated; further work on the stream fails and ending the capture returns no graph.
TEST_F(EmuRuntime, SynchronousMemcpyInvalidatesCapture) {
  int *d;
  ASSERT_EQ(cudaMalloc((void **)&d, sizeof(int)), cudaSuccess);
  const int one = 1;
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, &one, sizeof one, cudaMemcpyHostToDevice), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(*d, -1);  // not copied
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusInvalidated);
  bool ran = false;
  EXPECT_EQ(cuda_emu::enqueue(s, "late", [&ran] { ran = true; }), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
  EXPECT_FALSE(ran);
  cudaGraph_t graph = (cudaGraph_t)0x1;
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
  // After the capture ended, synchronous copies work again.
  ASSERT_EQ(cudaMemcpy(d, &one, sizeof one, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(*d, 1);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorIllegalState);  // no longer capturing
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalState);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

// Other capture rules: unsafe calls (cudaMalloc), synchronising a capturing stream or the device, querying a
// captured event, the legacy stream beside a blocking capture, and relaxed mode with a non-blocking stream.
TEST_F(EmuRuntime, CaptureRules) {
  cudaStream_t s, nb;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t g;
  void *p = nullptr;
  auto capture_then_expect = [&](cudaStream_t st, cudaStreamCaptureMode mode, auto &&action, cudaError_t err) {
    ASSERT_EQ(cudaStreamBeginCapture(st, mode), cudaSuccess);
    EXPECT_EQ(action(), err);
    EXPECT_EQ(cudaStreamEndCapture(st, &g), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
  };
  capture_then_expect(s, cudaStreamCaptureModeGlobal, [&] { return cudaMalloc(&p, 16); },
                      cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(p, nullptr);
  capture_then_expect(s, cudaStreamCaptureModeRelaxed, [&] { return cudaStreamSynchronize(s); },
                      cudaErrorStreamCaptureUnsupported);
  capture_then_expect(nb, cudaStreamCaptureModeRelaxed, [&] { return cudaDeviceSynchronize(); },
                      cudaErrorStreamCaptureUnsupported);
  // Relaxed mode allows cudaMalloc, but stream 0 still implicitly depends on a capturing blocking stream.
  capture_then_expect(s, cudaStreamCaptureModeRelaxed, [&] {
    EXPECT_EQ(cudaMalloc(&p, 16), cudaSuccess);
    return cudaMemsetAsync(p, 0, 16, 0);
  }, cudaErrorStreamCaptureImplicit);
  EXPECT_EQ(((unsigned char *)p)[0], 0xFF);  // not run
  // A non-blocking stream captured in relaxed mode leaves the legacy stream usable: the copy runs now.
  int one = 1;
  ASSERT_EQ(cudaStreamBeginCapture(nb, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, &one, sizeof one, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(*(int *)p, 1);
  // A captured event cannot be queried until its capture ends.
  cudaEvent_t e;
  ASSERT_EQ(cudaEventCreate(&e), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, nb), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(e), cudaErrorCapturedEvent);
  EXPECT_EQ(cudaGetLastError(), cudaErrorCapturedEvent);
  ASSERT_EQ(cudaStreamEndCapture(nb, &g), cudaSuccess);  // the failed query did not invalidate it
  EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(g), cudaSuccess);
  // Capture cannot begin on the legacy stream.
  EXPECT_EQ(cudaStreamBeginCapture(0, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureUnsupported);
  // The thread's interaction mode: relaxed lets this thread call cudaFree during a global capture.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  ASSERT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaSuccess);
  EXPECT_EQ(mode, cudaStreamCaptureModeGlobal);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  ASSERT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(g), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(nb), cudaSuccess);
}

// Fork/join: a second stream waiting on an event recorded in the capture joins it; its work lands in the same
// graph in issue order, and it stops capturing when the capture ends.
TEST_F(EmuRuntime, ForkJoinCapture) {
  cudaStream_t s1, s2;
  ASSERT_EQ(cudaStreamCreate(&s1), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&s2), cudaSuccess);
  cudaEvent_t fork, join;
  ASSERT_EQ(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&join, cudaEventDisableTiming), cudaSuccess);
  std::vector<int> log;
  ASSERT_EQ(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cuda_emu::enqueue(s1, "a", [&log] { log.push_back(1); }), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(fork, s1), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s2, fork, 0), cudaSuccess);
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(s2, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  ASSERT_EQ(cuda_emu::enqueue(s2, "b", [&log] { log.push_back(2); }), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(join, s2), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s1, join, 0), cudaSuccess);
  ASSERT_EQ(cuda_emu::enqueue(s1, "c", [&log] { log.push_back(3); }), cudaSuccess);
  cudaGraph_t g;
  EXPECT_EQ(cudaStreamEndCapture(s2, &g), cudaErrorStreamCaptureUnmatched);  // not where it began
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureUnmatched);
  EXPECT_EQ(cudaStreamEndCapture(s1, &g), cudaErrorStreamCaptureInvalidated);  // ... which invalidated it
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);

  // Again, ended properly.
  ASSERT_EQ(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cuda_emu::enqueue(s1, "a", [&log] { log.push_back(1); }), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(fork, s1), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s2, fork, 0), cudaSuccess);
  ASSERT_EQ(cuda_emu::enqueue(s2, "b", [&log] { log.push_back(2); }), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(join, s2), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s1, join, 0), cudaSuccess);
  ASSERT_EQ(cuda_emu::enqueue(s1, "c", [&log] { log.push_back(3); }), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(s1, &g), cudaSuccess);
  ASSERT_EQ(cudaStreamIsCapturing(s2, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);
  EXPECT_TRUE(log.empty());
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, g, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s2), cudaSuccess);
  EXPECT_EQ(log, (std::vector<int>{1, 2, 3}));
  // Waiting inside a capture on an event recorded outside it is a dependency on uncaptured work.
  ASSERT_EQ(cudaEventRecord(fork, s2), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(s1, fork, 0), cudaErrorStreamCaptureIsolation);
  cudaGraph_t bad;
  EXPECT_EQ(cudaStreamEndCapture(s1, &bad), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(g), cudaSuccess);
  for (cudaEvent_t e : {fork, join}) EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
  for (cudaStream_t st : {s1, s2}) EXPECT_EQ(cudaStreamDestroy(st), cudaSuccess);
}

TEST_F(EmuRuntime, FuncSetAttribute) {
  static int fake_kernel;  // any address identifies a "kernel" for the emulation
  EXPECT_EQ(cudaFuncSetAttribute(nullptr, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024),
            cudaErrorInvalidDeviceFunction);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDeviceFunction);
  EXPECT_EQ(cudaFuncSetAttribute(&fake_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024),
            cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(&fake_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024),
            cudaErrorInvalidValue);  // above the 227 KiB opt-in limit
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(&fake_kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 50), cudaSuccess);
}

// Leaked device allocations are listed on stderr at exit (checked in a child process).
void leak_and_exit() {
  void *p;
  if (cudaMalloc(&p, 12345) != cudaSuccess) abort();
  exit(0);
}

TEST(EmuRuntimeDeathTest, LeakReportAtExit) {
  EXPECT_EXIT(leak_and_exit(), ::testing::ExitedWithCode(0),
              "cuda_emu: leaked device allocation #[0-9]+ of 12345 bytes");
}

}  // namespace
