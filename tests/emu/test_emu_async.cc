// Tests of the emulation's deferred mode (CUDA_EMU_ASYNC, emu_async.cc): work runs only when the host
// synchronises, in an order CUDA permits, so a host read that lacks a synchronisation sees stale data; and the
// orderings CUDA does promise (stream order, events, the legacy stream, blocking copies) still hold.
#include "cuda_compat.h"  // first: it stands in for cuda_runtime.h

#include <cublas_v2.h>
#include <gtest/gtest.h>
#include <math.h>

#include <vector>

#include "emu_internal.h"

namespace {

// Each test runs in the deferred mode and restores the mode it found (the CI stage sets CUDA_EMU_ASYNC=1).
class EmuAsync : public ::testing::Test {
 protected:
  void SetUp() override { was_ = cuda_emu_set_async(1); }
  void TearDown() override {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cuda_emu_set_async(was_);
  }
  int was_ = 0;
};

__global__ void twice_kernel(const float *x, float *y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 2.0f * x[i];
}

// The missing synchronisation the mode exists to catch: a kernel's result copied to pinned memory with
// cudaMemcpyAsync and read by the host before cudaStreamSynchronize. The read sees the buffer's old contents;
// after the synchronisation, the result. Without the mode the same read happens to see the result.
TEST_F(EmuAsync, HostReadWithoutSyncSeesStaleData) {
  const int n = 64;
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  float *h = nullptr, *x = nullptr, *y = nullptr;
  ASSERT_EQ(cudaMallocHost((void **)&h, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc((void **)&x, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc((void **)&y, n * sizeof(float)), cudaSuccess);
  for (int mode = 1; mode >= 0; mode--) {
    cuda_emu_set_async(mode);
    for (int i = 0; i < n; i++) h[i] = (float)i;
    ASSERT_EQ(cudaMemcpyAsync(x, h, n * sizeof(float), cudaMemcpyHostToDevice, s), cudaSuccess);
    CUVAE_LAUNCH(twice_kernel, 1, n, 0, s, x, y, n);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(h, y, n * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
    // The racy read: nothing has run yet in the deferred mode.
    for (int i = 0; i < n; i++) ASSERT_EQ(h[i], mode ? (float)i : 2.0f * i) << "mode " << mode << " i " << i;
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    for (int i = 0; i < n; i++) ASSERT_EQ(h[i], 2.0f * i) << "mode " << mode << " i " << i;
  }
  EXPECT_EQ(cudaFree(x), cudaSuccess);
  EXPECT_EQ(cudaFree(y), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(h), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// bench/bench_gemm.c's pattern: operands filled by cudaMemcpy from pageable memory (legacy stream), then a GEMM on
// a non-blocking stream, timed by events. Nothing orders the GEMM after the fill: without a device
// synchronisation it reads the fresh allocations' poison (NaN) and so does the result; with one, C = A B.
TEST_F(EmuAsync, PageableFillThenGemmOnNonBlockingStreamNeedsSync) {
  const int n = 4;
  std::vector<float> a(n * n), b(n * n), c(n * n);
  for (int i = 0; i < n * n; i++) a[i] = (float)(i % 5), b[i] = (float)(i % 3);
  cudaStream_t s;
  cublasHandle_t blas;
  cudaEvent_t stop;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cublasCreate(&blas), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetStream(blas, s), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaEventCreate(&stop), cudaSuccess);
  const float one = 1.0f, zero = 0.0f;
  for (int sync = 0; sync <= 1; sync++) {
    float *da, *db, *dc;
    ASSERT_EQ(cudaMalloc((void **)&da, n * n * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc((void **)&db, n * n * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc((void **)&dc, n * n * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(da, a.data(), n * n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(db, b.data(), n * n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    if (sync) {
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // bench_gemm.c's cuda_fill does this
    }
    ASSERT_EQ(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, da, n, db, n, &zero, dc, n),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cudaEventRecord(stop, s), cudaSuccess);
    ASSERT_EQ(cudaEventSynchronize(stop), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(c.data(), dc, n * n * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
    for (int j = 0; j < n; j++)
      for (int i = 0; i < n; i++) {
        float want = 0.0f;  // small integers: exact in any order
        for (int k = 0; k < n; k++) want += a[k * n + i] * b[j * n + k];
        if (sync) {
          ASSERT_EQ(c[j * n + i], want) << i << "," << j;
        } else {
          ASSERT_TRUE(isnan(c[j * n + i])) << i << "," << j << ": " << c[j * n + i];
        }
      }
    EXPECT_EQ(cudaFree(da), cudaSuccess);  // cudaFree waits for the device: the queued fills run
    EXPECT_EQ(cudaFree(db), cudaSuccess);
    EXPECT_EQ(cudaFree(dc), cudaSuccess);
  }
  EXPECT_EQ(cudaEventDestroy(stop), cudaSuccess);
  EXPECT_EQ(cublasDestroy(blas), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// What CUDA does order: issue order on a stream; the legacy stream waits for blocking streams and they for it;
// cudaStreamWaitEvent; synchronisation of a stream runs only what it waits for.
TEST_F(EmuAsync, OrderingIsWhatCudaPromises) {
  cudaStream_t blocking, nb;
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking), cudaSuccess);
  std::vector<int> log;
  auto step = [&log](cudaStream_t st, int id) {
    ASSERT_EQ(cuda_emu::enqueue(st, "step", [&log, id] { log.push_back(id); }), cudaSuccess);
  };
  step(blocking, 1);
  step(nb, 2);
  step(0, 3);         // waits for 1 (blocking stream), not for 2
  step(blocking, 4);  // waits for 3
  EXPECT_TRUE(log.empty());
  ASSERT_EQ(cudaStreamSynchronize(blocking), cudaSuccess);
  EXPECT_EQ(log, (std::vector<int>{1, 3, 4}));
  ASSERT_EQ(cudaStreamQuery(nb), cudaErrorNotReady);  // 2 was pending; the query let it run
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);         // cudaErrorNotReady is not an error
  ASSERT_EQ(cudaStreamQuery(nb), cudaSuccess);
  EXPECT_EQ(log, (std::vector<int>{1, 3, 4, 2}));

  log.clear();
  cudaEvent_t e;
  ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
  step(nb, 5);
  ASSERT_EQ(cudaEventRecord(e, nb), cudaSuccess);
  step(nb, 6);
  ASSERT_EQ(cudaStreamWaitEvent(blocking, e, 0), cudaSuccess);
  step(blocking, 7);
  ASSERT_EQ(cudaStreamSynchronize(blocking), cudaSuccess);
  EXPECT_EQ(log, (std::vector<int>{5, 7}));  // 7 after the record (5), not after 6
  ASSERT_EQ(cudaEventSynchronize(e), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(log, (std::vector<int>{5, 7, 6}));
  EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(blocking), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(nb), cudaSuccess);
}

// cudaMemcpy as CUDA's "API synchronization behavior" has it: from pageable memory to the device it reads the
// source at once (later host writes do not reach the device) and writes the device later; device to host waits
// for the legacy stream (and so for the blocking streams' earlier work) but not for a non-blocking stream.
TEST_F(EmuAsync, SynchronousCopiesBlockOnlyWhereCudaSaysSo) {
  const int n = 8;
  std::vector<int> src(n, 7), back(n, 0);
  int *d;
  ASSERT_EQ(cudaMalloc((void **)&d, n * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d, src.data(), n * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(d[0], -1);  // not written yet: still the allocation's poison
  src.assign(n, 9);     // staged already: the device gets 7
  ASSERT_EQ(cudaMemcpy(back.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, std::vector<int>(n, 7));

  cudaStream_t nb;
  ASSERT_EQ(cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(d, 0, n * sizeof(int), nb), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(back.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, std::vector<int>(n, 7));  // the memset on the non-blocking stream has not run
  ASSERT_EQ(cudaStreamSynchronize(nb), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(back.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, std::vector<int>(n, 0));
  EXPECT_EQ(cudaStreamDestroy(nb), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

}  // namespace
