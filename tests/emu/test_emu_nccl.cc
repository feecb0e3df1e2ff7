// Tests of the emulated NCCL (emu_nccl.cc), run under mpirun: every rank runs every test and checks its own results
// (a failure on any rank fails its exit status, hence mpirun's and the ctest's). Reductions are checked bit for bit
// against the rank-order sum computed here from every rank's known inputs; data movement bit for bit.
#include "cuda_compat.h"  // first: it stands in for cuda_runtime.h

#include <gtest/gtest.h>
#include <mpi.h>
#include <nccl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "emu_internal.h"

namespace {

int g_rank = 0, g_size = 1;

// Rank r's element i: signs, mantissas and exponents (2^-20 .. 2^19) vary with r and i, so a sum of three or more
// ranks' elements rounds differently in another order (the rank-order checks can fail).
template <typename T>
T input(int r, size_t i) {
  const int e = (int)((i * 7 + (size_t)r * 13) % 40) - 20;
  const T m = (T)1 + (T)((i * 37 + (size_t)r * 101) % 97) / (T)97;
  return (T)ldexp((double)m, e) * ((i + r) % 3 == 0 ? (T)-1 : (T)1);
}
template <typename T>
std::vector<T> inputs(int r, size_t n, size_t first = 0) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; i++) v[i] = input<T>(r, first + i);
  return v;
}
// ((x_0 + x_1) + x_2) + ... of element i, in T: what every rank must get.
template <typename T>
T rank_order_sum(size_t i) {
  T acc = input<T>(0, i);
  for (int r = 1; r < g_size; r++) acc += input<T>(r, i);
  return acc;
}
template <typename T>
T reverse_order_sum(size_t i) {
  T acc = input<T>(g_size - 1, i);
  for (int r = g_size - 2; r >= 0; r--) acc += input<T>(r, i);
  return acc;
}

// Equal bits, element by element; reports the count and the first mismatch.
template <typename T>
void expect_bits(const std::vector<T> &got, const std::vector<T> &want, const char *what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); i++)
    if (memcmp(&got[i], &want[i], sizeof(T)) != 0 && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << " on rank " << g_rank << ": " << bad << " of " << got.size()
                     << " elements differ, first at " << first << ": " << (double)got[first] << " instead of "
                     << (double)want[first];
}

template <typename T>
T *device_copy(const std::vector<T> &h) {
  T *p = nullptr;
  EXPECT_EQ(cudaMalloc((void **)&p, h.size() * sizeof(T) + 1), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  // A copy from pageable memory may complete after cudaMemcpy returns (the deferred mode writes it later), and
  // the tests' streams do not wait for the legacy stream: complete it.
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return p;
}
template <typename T>
T *device_alloc(size_t n) {  // poisoned by the emulation (0xFF bytes: NaN floats)
  T *p = nullptr;
  EXPECT_EQ(cudaMalloc((void **)&p, n * sizeof(T) + 1), cudaSuccess);
  return p;
}
// The stream's work is complete first (cudaMemcpy alone would wait only for the legacy stream).
template <typename T>
std::vector<T> host_copy(const T *p, size_t n, cudaStream_t s) {
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

__global__ void scale_kernel(float *x, float f, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= f;
}
__global__ void fill_scaled_kernel(float *x, const float *p, const float *base, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = p[0] * base[i];
}
__global__ void twice_kernel(const float *x, float *y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 2.0f * x[i];
}
int blocks(int n) { return (n + 127) / 128; }

// One communicator over all ranks (rank 0's unique id broadcast over MPI, as cuvae does) and a non-blocking stream.
class EmuNccl : public ::testing::Test {
 protected:
  void SetUp() override {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) { GTEST_SKIP() << "MPI is not initialised (run under mpirun)"; }
    ncclUniqueId id;
    if (g_rank == 0) { ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess); }
    ASSERT_EQ(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD), MPI_SUCCESS);
    ASSERT_EQ(ncclCommInitRank(&comm_, g_size, id, g_rank), ncclSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    if (s_) { EXPECT_EQ(cudaStreamDestroy(s_), cudaSuccess); }
    if (comm_) { EXPECT_EQ(ncclCommDestroy(comm_), ncclSuccess); }
    for (void *p : owned_) EXPECT_EQ(cudaFree(p), cudaSuccess);
  }
  template <typename T>
  T *own(T *p) {
    owned_.push_back(p);
    return p;
  }
  ncclComm_t comm_ = nullptr;
  cudaStream_t s_ = nullptr;
  std::vector<void *> owned_;
};

TEST_F(EmuNccl, CommunicatorAnswersItsQueries) {
  int v = 0, device = -1, count = 0, rank = -1;
  EXPECT_EQ(ncclGetVersion(&v), ncclSuccess);
  EXPECT_EQ(v, NCCL_VERSION_CODE);
  EXPECT_EQ(ncclCommCount(comm_, &count), ncclSuccess);
  EXPECT_EQ(count, g_size);
  EXPECT_EQ(ncclCommUserRank(comm_, &rank), ncclSuccess);
  EXPECT_EQ(rank, g_rank);
  EXPECT_EQ(ncclCommCuDevice(comm_, &device), ncclSuccess);
  EXPECT_EQ(device, 0);
  ncclResult_t async = ncclInternalError;
  EXPECT_EQ(ncclCommGetAsyncError(comm_, &async), ncclSuccess);
  EXPECT_EQ(async, ncclSuccess);
  for (int r = 0; r < ncclNumResults; r++)
    for (int q = 0; q < r; q++) EXPECT_STRNE(ncclGetErrorString((ncclResult_t)r), ncclGetErrorString((ncclResult_t)q));
}

// All-reduce of T (out of place, then in place): every element is the rank-order sum, bit for bit, on every rank,
// and equals rank 0's result. With three or more ranks the inputs make some other order differ, so the check can fail.
template <typename T>
void all_reduce_test(ncclComm_t comm, cudaStream_t s, ncclDataType_t type, size_t n) {
  std::vector<T> want(n);
  size_t order_matters = 0;
  for (size_t i = 0; i < n; i++) {
    want[i] = rank_order_sum<T>(i);
    order_matters += want[i] != reverse_order_sum<T>(i);
  }
  if (g_size >= 3) { EXPECT_GT(order_matters, 0u) << "the inputs do not tell rank order from reverse order"; }
  T *x = device_copy(inputs<T>(g_rank, n)), *y = device_alloc<T>(n);
  ASSERT_EQ(ncclAllReduce(x, y, n, type, ncclSum, comm, s), ncclSuccess);
  std::vector<T> got = host_copy(y, n, s);
  expect_bits(got, want, "out of place");
  std::vector<T> root = got;
  ASSERT_EQ(MPI_Bcast(root.data(), (int)(n * sizeof(T)), MPI_BYTE, 0, MPI_COMM_WORLD), MPI_SUCCESS);
  expect_bits(got, root, "against rank 0's result");
  ASSERT_EQ(ncclAllReduce(x, x, n, type, ncclSum, comm, s), ncclSuccess);
  expect_bits(host_copy(x, n, s), want, "in place");
  EXPECT_EQ(cudaFree(x), cudaSuccess);
  EXPECT_EQ(cudaFree(y), cudaSuccess);
}

TEST_F(EmuNccl, AllReduceFloatIsTheRankOrderSum) { all_reduce_test<float>(comm_, s_, ncclFloat32, 1000); }
TEST_F(EmuNccl, AllReduceDoubleIsTheRankOrderSum) { all_reduce_test<double>(comm_, s_, ncclFloat64, 777); }
// More than one 16 MiB chunk per rank (emu_nccl.cc's kChunkBytes): the chunks join up.
TEST_F(EmuNccl, AllReduceAcrossChunks) { all_reduce_test<float>(comm_, s_, ncclFloat32, (16u << 20) / 4 + 3); }

// Rank r receives block r of the rank-order sum; out of place (float) and in place (double: recvbuff = sendbuff +
// rank * recvcount).
TEST_F(EmuNccl, ReduceScatterGivesEachRankItsBlockOfTheSum) {
  const size_t rc = 333, n = rc * g_size;
  std::vector<float> want(rc);
  std::vector<double> want_d(rc);
  for (size_t i = 0; i < rc; i++) {
    want[i] = rank_order_sum<float>(g_rank * rc + i);
    want_d[i] = rank_order_sum<double>(g_rank * rc + i);
  }
  float *x = own(device_copy(inputs<float>(g_rank, n))), *y = own(device_alloc<float>(rc));
  ASSERT_EQ(ncclReduceScatter(x, y, rc, ncclFloat32, ncclSum, comm_, s_), ncclSuccess);
  expect_bits(host_copy(y, rc, s_), want, "reduce-scatter float");
  double *xd = own(device_copy(inputs<double>(g_rank, n)));
  ASSERT_EQ(ncclReduceScatter(xd, xd + g_rank * rc, rc, ncclFloat64, ncclSum, comm_, s_), ncclSuccess);
  expect_bits(host_copy(xd + g_rank * rc, rc, s_), want_d, "reduce-scatter double in place");
}

// The root (the last rank, out of place, float; then rank 0 in place, double) receives the rank-order sum; the other
// ranks' recvbuff is left as it was.
TEST_F(EmuNccl, ReduceGivesTheRootTheRankOrderSum) {
  const size_t n = 517;
  const int root = g_size - 1;
  std::vector<float> want(n), before(n, -3.5f);
  std::vector<double> want_d(n);
  for (size_t i = 0; i < n; i++) want[i] = rank_order_sum<float>(i), want_d[i] = rank_order_sum<double>(i);
  float *x = own(device_copy(inputs<float>(g_rank, n))), *y = own(device_copy(before));
  ASSERT_EQ(ncclReduce(x, y, n, ncclFloat32, ncclSum, root, comm_, s_), ncclSuccess);
  expect_bits(host_copy(y, n, s_), g_rank == root ? want : before, "reduce float to the last rank");
  double *z = own(device_copy(inputs<double>(g_rank, n)));
  ASSERT_EQ(ncclReduce(z, z, n, ncclFloat64, ncclSum, 0, comm_, s_), ncclSuccess);
  expect_bits(host_copy(z, n, s_), g_rank == 0 ? want_d : inputs<double>(g_rank, n), "reduce double in place");
}

// recvbuff holds every rank's block in rank order; any type moves (int32 here), and in place.
TEST_F(EmuNccl, AllGatherConcatenatesTheRanksBlocks) {
  const size_t sc = 257, n = sc * g_size;
  std::vector<int32_t> mine(sc), want(n);
  for (size_t i = 0; i < n; i++) want[i] = (int32_t)(1000003 * (i / sc) + 7 * (i % sc) - 500);
  for (size_t i = 0; i < sc; i++) mine[i] = want[g_rank * sc + i];
  int32_t *x = own(device_copy(mine)), *y = own(device_alloc<int32_t>(n));
  ASSERT_EQ(ncclAllGather(x, y, sc, ncclInt32, comm_, s_), ncclSuccess);
  expect_bits(host_copy(y, n, s_), want, "all-gather int32");
  std::vector<float> want_f(n);
  for (size_t i = 0; i < n; i++) want_f[i] = input<float>((int)(i / sc), i % sc);
  float *z = own(device_alloc<float>(n));
  ASSERT_EQ(cudaMemcpy(z + g_rank * sc, inputs<float>(g_rank, sc).data(), sc * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the copy from pageable memory is complete (see device_copy)
  ASSERT_EQ(ncclAllGather(z + g_rank * sc, z, sc, ncclFloat32, comm_, s_), ncclSuccess);
  expect_bits(host_copy(z, n, s_), want_f, "all-gather float in place");
}

// Every rank receives the root's data (root = the last rank; then rank 0 in place); the others' sendbuff is ignored.
TEST_F(EmuNccl, BroadcastCopiesTheRootsData) {
  const size_t n = 513;
  const int root = g_size - 1;
  float *x = own(device_copy(inputs<float>(g_rank, n))), *y = own(device_alloc<float>(n));
  ASSERT_EQ(ncclBroadcast(x, y, n, ncclFloat32, root, comm_, s_), ncclSuccess);
  expect_bits(host_copy(y, n, s_), inputs<float>(root, n), "broadcast from the last rank");
  double *z = own(device_copy(inputs<double>(g_rank, n)));
  ASSERT_EQ(ncclBroadcast(z, z, n, ncclFloat64, 0, comm_, s_), ncclSuccess);
  expect_bits(host_copy(z, n, s_), inputs<double>(0, n), "broadcast from rank 0 in place");
}

// On one stream: a copy writes the input, a kernel scales it by (rank + 1), the all-reduce sums, a kernel doubles,
// a copy brings it back. The collective sees the kernel's write (else it would sum the allocation's NaN poison) and
// the next kernel sees its result. In the deferred mode nothing has run before the synchronisation.
TEST_F(EmuNccl, CollectiveIsOrderedOnItsStream) {
  const int n = 300;
  float *h = nullptr, *x = own(device_alloc<float>(n)), *y = own(device_alloc<float>(n));
  float *z = own(device_alloc<float>(n));
  ASSERT_EQ(cudaMallocHost((void **)&h, n * sizeof(float)), cudaSuccess);
  std::vector<float> in = inputs<float>(g_rank, n), want(n);
  for (int i = 0; i < n; i++) {
    float acc = 1.0f * input<float>(0, i);
    for (int r = 1; r < g_size; r++) acc += (float)(r + 1) * input<float>(r, i);
    want[i] = 2.0f * acc;
  }
  memcpy(h, in.data(), n * sizeof(float));
  ASSERT_EQ(cudaMemcpyAsync(x, h, n * sizeof(float), cudaMemcpyHostToDevice, s_), cudaSuccess);
  CUVAE_LAUNCH(scale_kernel, blocks(n), 128, 0, s_, x, (float)(g_rank + 1), n);
  ASSERT_EQ(ncclAllReduce(x, y, n, ncclFloat32, ncclSum, comm_, s_), ncclSuccess);
  CUVAE_LAUNCH(twice_kernel, blocks(n), 128, 0, s_, y, z, n);
  ASSERT_EQ(cudaMemcpyAsync(h, z, n * sizeof(float), cudaMemcpyDeviceToHost, s_), cudaSuccess);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  if (cuda_emu::async::enabled()) { EXPECT_EQ(memcmp(h, in.data(), n * sizeof(float)), 0) << "ran before the sync"; }
  ASSERT_EQ(cudaStreamSynchronize(s_), cudaSuccess);
  expect_bits(std::vector<float>(h, h + n), want, "copy, kernel, all-reduce, kernel, copy");
  EXPECT_EQ(cudaFreeHost(h), cudaSuccess);
}

// An all-reduce on one stream and an all-gather on another; the ranks synchronise the streams in opposite orders.
// (In the deferred mode that runs the all-gather first on some ranks: the emulation must still run the
// communicator's collectives in issue order on every rank, or MPI would pair one rank's all-reduce with another's
// all-gather.)
TEST_F(EmuNccl, TwoStreamsTwoCollectives) {
  cudaStream_t s2;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking), cudaSuccess);
  const size_t n = 400, sc = 100;
  std::vector<float> want_sum(n), want_gather(sc * g_size);
  for (size_t i = 0; i < n; i++) want_sum[i] = rank_order_sum<float>(i);
  for (size_t i = 0; i < want_gather.size(); i++) want_gather[i] = input<float>((int)(i / sc), 5000 + i % sc);
  float *a = own(device_copy(inputs<float>(g_rank, n))), *b = own(device_copy(inputs<float>(g_rank, sc, 5000)));
  float *c = own(device_alloc<float>(sc * g_size));
  ASSERT_EQ(ncclAllReduce(a, a, n, ncclFloat32, ncclSum, comm_, s_), ncclSuccess);
  ASSERT_EQ(ncclAllGather(b, c, sc, ncclFloat32, comm_, s2), ncclSuccess);
  cudaStream_t first = g_rank % 2 ? s2 : s_, second = g_rank % 2 ? s_ : s2;
  ASSERT_EQ(cudaStreamSynchronize(first), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(second), cudaSuccess);
  expect_bits(host_copy(a, n, s_), want_sum, "all-reduce on the first stream");
  expect_bits(host_copy(c, sc * g_size, s2), want_gather, "all-gather on the second stream");
  EXPECT_EQ(cudaStreamDestroy(s2), cudaSuccess);
}

// A group (nested once) of an all-reduce and a reduce-scatter on stream 1 and a broadcast on stream 2: nothing is
// enqueued before the outermost ncclGroupEnd; after it the group completes as one unit on both streams, so work on
// stream 2 sees stream 1's all-reduce, and synchronising stream 2 alone completes all three.
TEST_F(EmuNccl, GroupCompletesAsOneUnitOnItsStreams) {
  cudaStream_t s2;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking), cudaSuccess);
  const size_t n = 256, rc = 64;
  std::vector<float> want_a(n), want_c(rc);
  for (size_t i = 0; i < n; i++) want_a[i] = rank_order_sum<float>(i);
  for (size_t i = 0; i < rc; i++) want_c[i] = rank_order_sum<float>(g_rank * rc + i);
  float *a = own(device_copy(inputs<float>(g_rank, n))), *b = own(device_copy(inputs<float>(g_rank, rc * g_size)));
  float *c = own(device_alloc<float>(rc)), *d = own(device_copy(inputs<float>(g_rank, n))),
        *e = own(device_alloc<float>(n));
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ASSERT_EQ(ncclAllReduce(a, a, n, ncclFloat32, ncclSum, comm_, s_), ncclSuccess);
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ASSERT_EQ(ncclReduceScatter(b, c, rc, ncclFloat32, ncclSum, comm_, s_), ncclSuccess);
  ASSERT_EQ(ncclBroadcast(d, d, n, ncclFloat32, 0, comm_, s2), ncclSuccess);
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
  uint32_t poison = 0;
  ASSERT_EQ(cudaMemcpy(&poison, c, sizeof poison, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(poison, 0xFFFFFFFFu) << "a grouped call ran before ncclGroupEnd";
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
  CUVAE_LAUNCH(twice_kernel, blocks(n), 128, 0, s2, a, e, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> want_e(n);
  for (size_t i = 0; i < n; i++) want_e[i] = 2.0f * want_a[i];
  std::vector<float> got_c(rc), got_d(n);
  ASSERT_EQ(cudaMemcpyAsync(got_c.data(), c, rc * sizeof(float), cudaMemcpyDeviceToHost, s2), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(got_d.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost, s2), cudaSuccess);
  expect_bits(host_copy(e, n, s2), want_e, "stream 2's kernel on stream 1's all-reduce");
  expect_bits(got_c, want_c, "reduce-scatter of the group");
  expect_bits(got_d, inputs<float>(0, n), "broadcast of the group");
  EXPECT_EQ(cudaStreamDestroy(s2), cudaSuccess);
}

// Captured: kernel (x = p * base) -> all-reduce (y) -> kernel (z = 2 y). Nothing runs at capture; each of three
// launches, with its own p, gives 2 * the rank-order sum of p * base_r.
TEST_F(EmuNccl, CapturedCollectiveRunsAtEveryGraphLaunch) {
  const int n = 200;
  float *p = own(device_alloc<float>(1)), *base = own(device_copy(inputs<float>(g_rank, n)));
  float *x = own(device_alloc<float>(n)), *y = own(device_alloc<float>(n)), *z = own(device_alloc<float>(n));
  float *hp = nullptr;
  ASSERT_EQ(cudaMallocHost((void **)&hp, sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemset(z, 0, n * sizeof(float)), cudaSuccess);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(s_, cudaStreamCaptureModeGlobal), cudaSuccess);
  CUVAE_LAUNCH(fill_scaled_kernel, blocks(n), 128, 0, s_, x, p, base, n);
  ASSERT_EQ(ncclAllReduce(x, y, n, ncclFloat32, ncclSum, comm_, s_), ncclSuccess);
  CUVAE_LAUNCH(twice_kernel, blocks(n), 128, 0, s_, y, z, n);
  ASSERT_EQ(cudaStreamEndCapture(s_, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  expect_bits(host_copy(z, n, s_), std::vector<float>(n, 0.0f), "after capture, before any launch");
  const float scales[3] = {1.5f, -3.0f, 0.15625f};
  for (float f : scales) {
    std::vector<float> want(n);
    for (int i = 0; i < n; i++) {
      float acc = f * input<float>(0, i);
      for (int r = 1; r < g_size; r++) acc += f * input<float>(r, i);
      want[i] = 2.0f * acc;
    }
    *hp = f;
    ASSERT_EQ(cudaMemcpyAsync(p, hp, sizeof(float), cudaMemcpyHostToDevice, s_), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s_), cudaSuccess);
    expect_bits(host_copy(z, n, s_), want, ("graph launch with p = " + std::to_string(f)).c_str());
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(hp), cudaSuccess);
}

// The deferred mode, switched on here whatever CUDA_EMU_ASYNC says: the collective runs at the synchronisation.
TEST_F(EmuNccl, DeferredCollectiveRunsAtTheSynchronisation) {
  const int was = cuda_emu_set_async(1);
  const size_t n = 50;
  float *x = own(device_copy(inputs<float>(g_rank, n))), *y = own(device_alloc<float>(n));
  ASSERT_EQ(ncclAllReduce(x, y, n, ncclFloat32, ncclSum, comm_, s_), ncclSuccess);
  uint32_t bits;
  memcpy(&bits, y, sizeof bits);  // the emulation's device memory is host memory: a peek without synchronising
  EXPECT_EQ(bits, 0xFFFFFFFFu) << "the all-reduce ran at the call";
  std::vector<float> want(n);
  for (size_t i = 0; i < n; i++) want[i] = rank_order_sum<float>(i);
  expect_bits(host_copy(y, n, s_), want, "after cudaStreamSynchronize");
  cuda_emu_set_async(was);
}

// Refusals: their codes, and a message for ncclGetLastError.
TEST_F(EmuNccl, BadArgumentsAreRefused) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ASSERT_EQ(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD), MPI_SUCCESS);
  ncclComm_t c = comm_;
  EXPECT_EQ(ncclCommInitRank(&c, g_size + 1, id, g_rank), ncclInvalidArgument);
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(ncclCommInitRank(&c, g_size, id, (g_rank + 1) % g_size), ncclInvalidArgument);
  EXPECT_EQ(ncclCommInitRank(nullptr, g_size, id, g_rank), ncclInvalidArgument);
  EXPECT_EQ(ncclGetUniqueId(nullptr), ncclInvalidArgument);
  const size_t n = 16;
  float *x = own(device_alloc<float>(n * g_size));
  int32_t *xi = own(device_alloc<int32_t>(n));
  std::vector<float> host(n);
  EXPECT_EQ(ncclAllReduce(x, x, n, ncclFloat32, ncclSum, nullptr, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(xi, xi, n, ncclInt32, ncclSum, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(x, x, n, ncclFloat16, ncclSum, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(x, x, n, ncclFloat32, ncclMax, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclReduceScatter(x, x, n, ncclFloat32, ncclAvg, comm_, s_), ncclInvalidArgument);
  EXPECT_NE(strstr(ncclGetLastError(comm_), "ncclReduceScatter"), nullptr) << ncclGetLastError(comm_);
  EXPECT_EQ(ncclAllGather(x, x, n, ncclNumTypes, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(host.data(), x, n, ncclFloat32, ncclSum, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclBroadcast(x, x, n, ncclFloat32, g_size, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclReduce(x, x, n, ncclFloat32, ncclSum, -1, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclReduce(x, x, n, ncclFloat32, ncclProd, 0, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
  // A group with a refused call fails as a whole: its good call is not enqueued either.
  float *y = own(device_alloc<float>(n));
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(x, y, n, ncclFloat32, ncclSum, comm_, s_), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(xi, xi, n, ncclInt32, ncclSum, comm_, s_), ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidArgument);
  uint32_t poison = 0;
  ASSERT_EQ(cudaStreamSynchronize(s_), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&poison, y, sizeof poison, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(poison, 0xFFFFFFFFu);
}

// Ids that differ between the ranks (no broadcast) are refused on every rank, none hangs.
TEST_F(EmuNccl, DifferentUniqueIdsAreRefusedEverywhere) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRank(&c, g_size, id, g_rank), ncclInvalidArgument);
  EXPECT_EQ(c, nullptr);
  memset(&id, 0, sizeof id);  // the same on every rank, but not an id ncclGetUniqueId made
  EXPECT_EQ(ncclCommInitRank(&c, g_size, id, g_rank), ncclInvalidArgument);
}

// A destroyed or aborted communicator is no longer accepted; a second communicator works beside the first.
TEST_F(EmuNccl, DestroyAndAbortEndTheHandle) {
  ncclUniqueId id;
  if (g_rank == 0) { ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess); }
  ASSERT_EQ(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD), MPI_SUCCESS);
  ncclComm_t other = nullptr;
  ASSERT_EQ(ncclCommInitRank(&other, g_size, id, g_rank), ncclSuccess);
  const size_t n = 32;
  float *x = own(device_copy(inputs<float>(g_rank, n)));
  ASSERT_EQ(ncclAllReduce(x, x, n, ncclFloat32, ncclSum, other, s_), ncclSuccess);
  std::vector<float> want(n);
  for (size_t i = 0; i < n; i++) want[i] = rank_order_sum<float>(i);
  expect_bits(host_copy(x, n, s_), want, "all-reduce on a second communicator");
  EXPECT_EQ(ncclCommAbort(other), ncclSuccess);
  int count = 0;
  EXPECT_EQ(ncclCommCount(other, &count), ncclInvalidArgument);
  EXPECT_EQ(ncclCommDestroy(comm_), ncclSuccess);
  EXPECT_EQ(ncclCommUserRank(comm_, &count), ncclInvalidArgument);
  EXPECT_EQ(ncclCommDestroy(comm_), ncclInvalidArgument);
  comm_ = nullptr;
}

// Run without mpirun and without MPI_Init (ctest EmuNccl.WithoutMpi).
TEST(EmuNcclWithoutMpi, InitRankIsInvalidUsage) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (initialised) { GTEST_SKIP() << "MPI is initialised"; }
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRank(&c, 1, id, 0), ncclInvalidUsage);
  EXPECT_NE(strstr(ncclGetLastError(nullptr), "MPI is not initialised"), nullptr) << ncclGetLastError(nullptr);
}

}  // namespace

// MPI is initialised as cuvae initialises it (MPI_THREAD_FUNNELED), unless CUVAE_EMU_NCCL_WITHOUT_MPI is set.
int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char *without = getenv("CUVAE_EMU_NCCL_WITHOUT_MPI");
  if (without && *without) return RUN_ALL_TESTS();
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return 2;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  const int rc = RUN_ALL_TESTS();
  MPI_Finalize();
  return rc;
}
