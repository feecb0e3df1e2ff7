// The CUDA emulation's fault reports: kernels that are wrong in ways a GPU would hide or hang on
// (divergent barriers, shuffles naming missing or exited lanes, mismatched warp operations, deadlocks, reads of
// uninitialised device memory, out-of-bounds writes) must be reported naming the kernel, block, thread and
// source line. Emulation-specific: on a GPU these kernels hang or compute garbage, so nothing here runs there.
//
// Each fault aborts the process, so the faulty launches run in gtest death tests (a child process) and the
// report on stderr is matched with POSIX extended regular expressions ('.' also matches newlines).
#include <gtest/gtest.h>
#include <math.h>

#include <string>
#include <vector>

#include "cuda_compat.h"

namespace {

#ifdef CUVAE_CUDA_EMU

class EmuFaults : public testing::Test {
 protected:
  // "threadsafe": the child re-executes this binary up to the death statement instead of forking a process that
  // might hold fibers or locks mid-flight.
  void SetUp() override { ::testing::FLAGS_gtest_death_test_style = "threadsafe"; }
};

// Regexes for this file at `line` (or any line), as the emulation prints __FILE__:__LINE__ of a barrier, warp
// operation or launch.
const std::string kThisFile = "[^ ]*test_emu_faults\\.cu:";
std::string here(int line) { return kThisFile + std::to_string(line); }

// Runs kernel on a fresh buffer of one int per thread and waits for it (the fault aborts inside the launch).
#define RUN_FAULTY(kernel, grid, block)                                     \
  do {                                                                      \
    int *out = nullptr;                                                     \
    cudaMalloc((void **)&out, sizeof(int) * (grid) * (block));              \
    CUVAE_LAUNCH(kernel, grid, block, 0, 0, out);                           \
    cudaDeviceSynchronize();                                                \
    cudaFree(out);                                                          \
  } while (0)

// The line constants below count the lines to the barrier or warp operation they name: keep them in step.

// Half of block 1 returns early; the rest wait at the barrier for threads that will never come.
constexpr int kEarlyExitBarrierLine = __LINE__ + 3;
__global__ void early_exit_barrier_kernel(int *out) {
  if (blockIdx.x == 1 && threadIdx.x < 16) return;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

TEST_F(EmuFaults, BarrierAfterEarlyExitIsDivergent) {
  EXPECT_DEATH(RUN_FAULTY(early_exit_barrier_kernel, 3, 32),
               "divergent __syncthreads: thread \\(16,0,0\\) waits at " + here(kEarlyExitBarrierLine) +
                   " but thread \\(0,0,0\\) has exited.*in kernel early_exit_barrier_kernel \\(launched at " +
                   kThisFile + "[0-9]+\\), block \\(1,0,0\\)");
}

// Even and odd threads wait at two different barriers.
constexpr int kEvenBarrierLine = __LINE__ + 4, kOddBarrierLine = __LINE__ + 6;
__global__ void if_else_barrier_kernel(int *out) {
  const int v = threadIdx.x;
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = v;
}

TEST_F(EmuFaults, BarriersOnDifferentLinesAreDivergent) {
  EXPECT_DEATH(RUN_FAULTY(if_else_barrier_kernel, 1, 64),
               "divergent __syncthreads: thread \\(0,0,0\\) waits at " + here(kEvenBarrierLine) +
                   ", thread \\(1,0,0\\) at " + here(kOddBarrierLine) + ".*in kernel if_else_barrier_kernel");
}

// Lane 5 exits, yet the full mask still names it.
constexpr int kExitedLaneShuffleLine = __LINE__ + 4;
__global__ void shuffle_with_exited_lane_kernel(int *out) {
  int v = threadIdx.x;
  if (threadIdx.x == 5) return;
  v = __shfl_sync(0xffffffffu, v, 0);
  out[threadIdx.x] = v;
}

TEST_F(EmuFaults, ShuffleNamingAnExitedLane) {
  EXPECT_DEATH(RUN_FAULTY(shuffle_with_exited_lane_kernel, 1, 32),
               "__shfl_sync at " + here(kExitedLaneShuffleLine) +
                   ": lane 5 .*has exited.*in kernel shuffle_with_exited_lane_kernel .*block \\(0,0,0\\)");
}

// In a 48-thread block the second warp has 16 lanes: a full mask names 16 lanes that do not exist.
constexpr int kFullMaskShuffleLine = __LINE__ + 3;
__global__ void full_mask_partial_warp_kernel(int *out) {
  int v = threadIdx.x;
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

TEST_F(EmuFaults, FullMaskInPartialWarp) {
  EXPECT_DEATH(RUN_FAULTY(full_mask_partial_warp_kernel, 1, 48),
               "__shfl_xor_sync at " + here(kFullMaskShuffleLine) +
                   ": mask 0xffffffff names lanes that do not exist.*16 lanes");
}

// Half the warp shuffles while the other half waits at __syncwarp, both with the full mask.
constexpr int kMismatchShuffleLine = __LINE__ + 4, kMismatchSyncwarpLine = __LINE__ + 6;
__global__ void mismatched_warp_ops_kernel(int *out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 < 16) {
    v = __shfl_down_sync(0xffffffffu, v, 1);
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = v;
}

TEST_F(EmuFaults, MismatchedWarpOperations) {
  EXPECT_DEATH(RUN_FAULTY(mismatched_warp_ops_kernel, 1, 32),
               "mismatched warp operations: .*__shfl_down_sync \\(" + here(kMismatchShuffleLine) +
                   "\\).*__syncwarp \\(" + here(kMismatchSyncwarpLine) + "\\)");
}

// Lane 0 waits for lane 1 at __syncwarp(1|2); lane 1 (and the rest of the block) waits for lane 0 at
// __syncthreads: neither can complete.
constexpr int kDeadlockSyncwarpLine = __LINE__ + 3, kDeadlockBarrierLine = __LINE__ + 5;
__global__ void warp_barrier_deadlock_kernel(int *out) {
  if (threadIdx.x == 0) {
    __syncwarp(1u | 2u);
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

TEST_F(EmuFaults, SyncwarpAgainstBarrierDeadlocks) {
  EXPECT_DEATH(RUN_FAULTY(warp_barrier_deadlock_kernel, 1, 64),
               "deadlock.*__syncwarp \\(" + here(kDeadlockSyncwarpLine) + "\\) with mask 0x00000003.*thread \\(0,0,0\\)" +
                   ".*__syncthreads \\(" + here(kDeadlockBarrierLine) + "\\).*in kernel warp_barrier_deadlock_kernel");
}

// ---- poisoned memory -----------------------------------------------------------------------------------------

__global__ void is_nan_kernel(const float *in, int n, int *is_nan) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) is_nan[i] = isnan(in[i]) ? 1 : 0;
}

// cudaMalloc'd memory starts with all bits set: NaN floats, -1 integers, in kernels and in copies back.
TEST(EmuPoison, DeviceMemoryReadsBeforeWritesSeePoison) {
  const int n = 1000;
  float *f = nullptr;
  int *flags = nullptr;
  ASSERT_EQ(cudaSuccess, cudaMalloc((void **)&f, n * sizeof(float)));
  ASSERT_EQ(cudaSuccess, cudaMalloc((void **)&flags, n * sizeof(int)));
  std::vector<int> h(n, 0);
  ASSERT_EQ(cudaSuccess, cudaMemcpy(h.data(), flags, n * sizeof(int), cudaMemcpyDeviceToHost));
  for (int v : h) ASSERT_EQ(-1, v);
  CUVAE_LAUNCH(is_nan_kernel, (n + 255) / 256, 256, 0, 0, f, n, flags);
  ASSERT_EQ(cudaSuccess, cudaGetLastError());
  ASSERT_EQ(cudaSuccess, cudaMemcpy(h.data(), flags, n * sizeof(int), cudaMemcpyDeviceToHost));
  for (int v : h) ASSERT_EQ(1, v);
  std::vector<float> hf(n, 0.0f);
  ASSERT_EQ(cudaSuccess, cudaMemcpy(hf.data(), f, n * sizeof(float), cudaMemcpyDeviceToHost));
  for (float v : hf) ASSERT_TRUE(isnan(v));
  ASSERT_EQ(cudaSuccess, cudaFree(f));
  ASSERT_EQ(cudaSuccess, cudaFree(flags));
}

// Every block starts with freshly poisoned dynamic shared memory (all bits set: NaN as float), so a read before a
// write shows up; on a GPU the contents are simply undefined. Static __shared__ memory is not poisoned.
__global__ void read_fresh_dynamic_smem_kernel(int *is_nan) {
  CUVAE_DYNAMIC_SHARED(float, fresh);
  is_nan[blockIdx.x * blockDim.x + threadIdx.x] = isnan(fresh[threadIdx.x]) ? 1 : 0;
  __syncthreads();
  fresh[threadIdx.x] = 1.0f;  // the next block must see poison again, not this
}

TEST(EmuPoison, DynamicSharedMemoryIsPoisonedForEveryBlock) {
  const int blocks = 4, threads = 100;
  int *is_nan = nullptr;
  ASSERT_EQ(cudaSuccess, cudaMalloc((void **)&is_nan, blocks * threads * sizeof(int)));
  CUVAE_LAUNCH(read_fresh_dynamic_smem_kernel, blocks, threads, threads * sizeof(float), 0, is_nan);
  ASSERT_EQ(cudaSuccess, cudaGetLastError());
  std::vector<int> h(blocks * threads, 0);
  ASSERT_EQ(cudaSuccess, cudaMemcpy(h.data(), is_nan, h.size() * sizeof(int), cudaMemcpyDeviceToHost));
  for (int v : h) ASSERT_EQ(1, v);
  ASSERT_EQ(cudaSuccess, cudaFree(is_nan));
}

// ---- out-of-bounds global memory ---------------------------------------------------------------------------------

// Block 2, thread 7 writes one float past the end of its buffer.
__global__ void out_of_bounds_write_kernel(float *p, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = 0.0f;
  if (blockIdx.x == 2 && threadIdx.x == 7) p[n] = 1.0f;
}

void run_out_of_bounds_write() {
  const int n = 4 * 64;
  float *p = nullptr;
  cudaMalloc((void **)&p, n * sizeof(float));
  CUVAE_LAUNCH(out_of_bounds_write_kernel, 4, 64, 0, 0, p, n);
  cudaDeviceSynchronize();
  cudaFree(p);
}

TEST_F(EmuFaults, OutOfBoundsGlobalWriteUnderAddressSanitizer) {
#if defined(__SANITIZE_ADDRESS__)
  EXPECT_DEATH(run_out_of_bounds_write(),
               "heap-buffer-overflow.*cuda_emu: the error above happened in kernel out_of_bounds_write_kernel "
               "\\(launched at [^)]*\\), block \\(2,0,0\\), thread \\(7,0,0\\)");
#else
  (void)&run_out_of_bounds_write;
  GTEST_SKIP() << "only AddressSanitizer catches out-of-bounds accesses: configure with -DCUVAE_SANITIZE=ON";
#endif
}

#else  // !CUVAE_CUDA_EMU

TEST(EmuFaults, NeedTheEmulation) { GTEST_SKIP() << "fault reports are a feature of the CPU emulation"; }

#endif

}  // namespace
