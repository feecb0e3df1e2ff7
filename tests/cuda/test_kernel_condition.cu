// kernels/condition.cu against its CPU twins (src/backend/cpu/condition_cpu.c): concat_onehot_cuda (the conditional VAE's
// [x, onehot(y)] and [z, onehot(y)], also with C samples per data row: period R), take_columns_cuda and
// gather_labels_cuda, at rows in {1, 3, 128, 257} x widths in {1, 7, 784} (around and away from the 256-thread
// block), more rows than one grid (gather_labels: > 1024 x 256 labels; concat_onehot: > 65535 rows); argument
// checks and graph replay. Pure data movement: every comparison is bitwise (no tolerance), against the twin and
// against the definition. Runs emulated (emu) and natively (gpu).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

std::vector<float> make_values(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (float &a : v) a = u(rng);
  return v;
}

std::vector<int32_t> make_labels(size_t n, int n_classes, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> c(0, n_classes - 1);
  std::vector<int32_t> v(n);
  for (int32_t &a : v) a = c(rng);
  if (n > 1) v[0] = 0, v[n - 1] = n_classes - 1;  // both ends of the label range
  return v;
}

bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// concat_onehot on the device (output prefilled with NaN, so every element must be written) and on the CPU; both
// against the definition out[i] = [a_i | onehot(labels[i % period])].
void check_concat(int rows, int n, int period, int n_classes, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "rows " << rows << " n " << n << " period " << period << " classes " << n_classes);
  const int width = n + n_classes;
  const std::vector<float> a = make_values((size_t)rows * n, seed);
  const std::vector<int32_t> labels = make_labels(period, n_classes, seed + 1);
  DeviceVec<float> d_a(a), d_out(std::vector<float>((size_t)rows * width, NAN));
  DeviceVec<int32_t> d_labels(labels);
  CUDA_OK(concat_onehot_cuda(d_a.p, n, d_labels.p, period, n_classes, d_out.p, rows, 0));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> cpu((size_t)rows * width, NAN);
  concat_onehot_cpu(a.data(), n, labels.data(), period, n_classes, cpu.data(), rows);
  EXPECT_TRUE(bitwise_equal(cpu, d_out.get()));
  for (int i = 0; i < rows; i++)
    for (int c = 0; c < width; c++) {
      const float want = c < n ? a[(size_t)i * n + c] : (c - n == labels[i % period] ? 1.0f : 0.0f);
      ASSERT_EQ(want, cpu[(size_t)i * width + c]) << "row " << i << " col " << c;
    }
}

TEST(KernelCondition, ConcatOnehotMatchesCpu) {
  for (int rows : {1, 3, 128, 257})
    for (int n : {1, 7, 784})
      for (int n_classes : {1, 10}) {
        check_concat(rows, n, rows, n_classes, rows + n + n_classes);                 // one sample per data row
        if (rows % 3 == 0) check_concat(rows, n, rows / 3, n_classes, 7 * rows + n);  // 3 samples per data row
        if (HasFatalFailure()) return;
      }
  check_concat(2 * 17, 300, 17, 47, 5);  // a row wider than the block: 300 + 47 > 256
}

// More rows than the row kernels' grid (65535 blocks): the grid-stride loop over rows.
TEST(KernelCondition, MoreRowsThanOneGrid) {
  check_concat(65537, 1, 65537, 2, 11);
  const int rows = 65537, ld = 3, n = 2;
  const std::vector<float> src = make_values((size_t)rows * ld, 12);
  DeviceVec<float> d_src(src), d_dst((size_t)rows * n);
  CUDA_OK(take_columns_cuda(d_src.p, ld, d_dst.p, rows, n, 0));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> cpu((size_t)rows * n);
  take_columns_cpu(src.data(), ld, cpu.data(), rows, n);
  EXPECT_TRUE(bitwise_equal(cpu, d_dst.get()));
}

TEST(KernelCondition, TakeColumnsMatchesCpu) {
  for (int rows : {1, 3, 128, 257})
    for (int n : {1, 7, 784})
      for (int extra : {0, 10}) {  // ld = n (a plain copy) and ld = n + 10 (the [x, y] rows of a conditional model)
        SCOPED_TRACE(testing::Message() << "rows " << rows << " n " << n << " ld " << n + extra);
        const int ld = n + extra;
        const std::vector<float> src = make_values((size_t)rows * ld, rows * 3 + n + extra);
        DeviceVec<float> d_src(src), d_dst(std::vector<float>((size_t)rows * n, NAN));
        CUDA_OK(take_columns_cuda(d_src.p, ld, d_dst.p, rows, n, 0));
        CUDA_OK(cudaDeviceSynchronize());
        std::vector<float> cpu((size_t)rows * n, NAN);
        take_columns_cpu(src.data(), ld, cpu.data(), rows, n);
        EXPECT_TRUE(bitwise_equal(cpu, d_dst.get()));
        for (int i = 0; i < rows; i++)
          for (int c = 0; c < n; c++) ASSERT_EQ(src[(size_t)i * ld + c], cpu[(size_t)i * n + c]);
      }
}

// Random, reversed and repeated rows; B = 300000 exceeds one wave of the elementwise grid (1024 x 256).
TEST(KernelCondition, GatherLabelsMatchesCpu) {
  const int kN = 1000;  // source labels
  const std::vector<int32_t> src = make_labels(kN, 10, 20);
  for (int B : {1, 3, 128, 257, 300000}) {
    SCOPED_TRACE(testing::Message() << "B " << B);
    std::mt19937 rng((unsigned)B);
    std::uniform_int_distribution<uint32_t> row(0, kN - 1);
    std::vector<uint32_t> rows(B);
    for (int b = 0; b < B; b++) rows[b] = b % 2 ? row(rng) : (uint32_t)(kN - 1 - b % kN);
    if (B > 2) rows[2] = rows[0];
    DeviceVec<int32_t> d_src(src), d_dst(std::vector<int32_t>(B, -1));
    DeviceVec<uint32_t> d_rows(rows);
    CUDA_OK(gather_labels_cuda(d_src.p, d_rows.p, d_dst.p, B, 0));
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<int32_t> cpu(B, -1);
    gather_labels_cpu(src.data(), rows.data(), cpu.data(), B);
    EXPECT_EQ(cpu, d_dst.get());
    for (int b = 0; b < B; b++) ASSERT_EQ(src[rows[b]], cpu[b]) << b;
  }
}

TEST(KernelCondition, InvalidArguments) {
  DeviceVec<float> a(64), out(64);
  DeviceVec<int32_t> labels(4), dst(4);
  DeviceVec<uint32_t> rows(4);
  const cudaError_t inval = cudaErrorInvalidValue;
  for (int bad : {0, -1}) {
    EXPECT_EQ(inval, concat_onehot_cuda(a.p, bad, labels.p, 2, 3, out.p, 2, 0));
    EXPECT_EQ(inval, concat_onehot_cuda(a.p, 2, labels.p, bad, 3, out.p, 2, 0));
    EXPECT_EQ(inval, concat_onehot_cuda(a.p, 2, labels.p, 2, bad, out.p, 2, 0));
    EXPECT_EQ(inval, concat_onehot_cuda(a.p, 2, labels.p, 2, 3, out.p, bad, 0));
    EXPECT_EQ(inval, take_columns_cuda(a.p, 4, out.p, bad, 2, 0));
    EXPECT_EQ(inval, take_columns_cuda(a.p, 4, out.p, 2, bad, 0));
    EXPECT_EQ(inval, gather_labels_cuda(labels.p, rows.p, dst.p, bad, 0));
  }
  EXPECT_EQ(inval, concat_onehot_cuda(nullptr, 2, labels.p, 2, 3, out.p, 2, 0));
  EXPECT_EQ(inval, concat_onehot_cuda(a.p, 2, nullptr, 2, 3, out.p, 2, 0));
  EXPECT_EQ(inval, concat_onehot_cuda(a.p, 2, labels.p, 2, 3, nullptr, 2, 0));
  EXPECT_EQ(inval, concat_onehot_cuda(a.p, INT32_MAX, labels.p, 2, 3, out.p, 2, 0));  // width overflows an int
  EXPECT_EQ(inval, take_columns_cuda(a.p, 1, out.p, 2, 2, 0));                        // ld < n
  EXPECT_EQ(inval, take_columns_cuda(nullptr, 4, out.p, 2, 2, 0));
  EXPECT_EQ(inval, take_columns_cuda(a.p, 4, nullptr, 2, 2, 0));
  EXPECT_EQ(inval, gather_labels_cuda(nullptr, rows.p, dst.p, 2, 0));
  EXPECT_EQ(inval, gather_labels_cuda(labels.p, nullptr, dst.p, 2, 0));
  EXPECT_EQ(inval, gather_labels_cuda(labels.p, rows.p, nullptr, 2, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // nothing was launched
}

// A conditional step's plumbing captured into one graph: gather the batch's labels, concat them onto x, take x back
// out. Two replays with new row indices copied in between follow the indices (read at replay time) and equal the
// CPU twins bitwise.
TEST(KernelCondition, GraphReplayFollowsTheIndices) {
  const int B = 128, D = 784, K = 10, N = 500;
  const std::vector<int32_t> all_labels = make_labels(N, K, 30);
  const std::vector<float> x = make_values((size_t)B * D, 31);
  DeviceVec<int32_t> d_all(all_labels), d_labels(B);
  DeviceVec<uint32_t> d_rows(B);
  DeviceVec<float> d_x(x), d_xy((size_t)B * (D + K)), d_back((size_t)B * D);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(cudaSuccess, gather_labels_cuda(d_all.p, d_rows.p, d_labels.p, B, stream));
  EXPECT_EQ(cudaSuccess, concat_onehot_cuda(d_x.p, D, d_labels.p, B, K, d_xy.p, B, stream));
  EXPECT_EQ(cudaSuccess, take_columns_cuda(d_xy.p, D + K, d_back.p, B, D, stream));
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; replay++) {
    SCOPED_TRACE(testing::Message() << "replay " << replay);
    std::vector<uint32_t> rows(B);
    for (int b = 0; b < B; b++) rows[b] = (uint32_t)((b * 7 + replay * 101) % N);
    d_rows.put(rows);
    d_xy.zero(), d_back.zero();
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    std::vector<int32_t> labels(B);
    std::vector<float> xy((size_t)B * (D + K));
    gather_labels_cpu(all_labels.data(), rows.data(), labels.data(), B);
    concat_onehot_cpu(x.data(), D, labels.data(), B, K, xy.data(), B);
    EXPECT_EQ(labels, d_labels.get());
    EXPECT_TRUE(bitwise_equal(xy, d_xy.get()));
    EXPECT_TRUE(bitwise_equal(x, d_back.get()));
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace
