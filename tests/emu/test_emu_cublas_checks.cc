// The emulated cuBLAS's checks (emu_cublas.cc): argument validation and status codes, handle settings, pointer
// modes under graph capture, and the fault reports (host memory, operands freed before a graph runs, and the
// lazy-initialisation check: a handle's first use, or a GEMM shape's, inside stream capture is reported).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "cublas_test_util.h"

namespace {

// ---- argument validation ---------------------------------------------------------------------------------------

// Every invalid argument of the GEMM family is CUBLAS_STATUS_INVALID_VALUE and leaves C alone; the boundary
// values (lda == rows of op(A)'s storage, m == 0 with ld == 1) are accepted.
TEST_F(Cublas, InvalidArgumentsAreRejected) {
  const int m = 4, n = 3, k = 5;
  Dev<float> da(std::vector<float>(64, 1.0f)), db(std::vector<float>(64, 1.0f)), dc(std::vector<float>(64, kPad));
  const float one = 1.0f;
  auto sgemm = [&](int ta, int tb, int m_, int n_, int k_, int lda, int ldb, int ldc, const float *alpha = &kOne,
                   const float *beta = &kOne) {
    return cublasSgemm(h, (cublasOperation_t)ta, (cublasOperation_t)tb, m_, n_, k_, alpha, da.p, lda, db.p, ldb,
                       beta, dc.p, ldc);
  };
  const cublasStatus_t bad = CUBLAS_STATUS_INVALID_VALUE;
  EXPECT_EQ(sgemm(0, 0, -1, n, k, m, k, m), bad);
  EXPECT_EQ(sgemm(0, 0, m, -1, k, m, k, m), bad);
  EXPECT_EQ(sgemm(0, 0, m, n, -1, m, k, m), bad);
  EXPECT_EQ(sgemm(CUBLAS_OP_CONJG, 0, m, n, k, k, k, m), bad);
  EXPECT_EQ(sgemm(-1, 0, m, n, k, k, k, m), bad);
  EXPECT_EQ(sgemm(0, 7, m, n, k, m, n, m), bad);
  EXPECT_EQ(sgemm(CUBLAS_OP_N, 0, m, n, k, m - 1, k, m), bad);  // lda < m
  EXPECT_EQ(sgemm(CUBLAS_OP_T, 0, m, n, k, k - 1, k, m), bad);  // lda < k
  EXPECT_EQ(sgemm(0, CUBLAS_OP_N, m, n, k, m, k - 1, m), bad);  // ldb < k
  EXPECT_EQ(sgemm(0, CUBLAS_OP_T, m, n, k, m, n - 1, m), bad);  // ldb < n
  EXPECT_EQ(sgemm(0, 0, m, n, k, m, k, m - 1), bad);            // ldc < m
  EXPECT_EQ(sgemm(0, 0, 0, n, k, 0, k, 1), bad);                // lda < max(1, m) with m == 0
  EXPECT_EQ(sgemm(0, 0, 0, n, k, 1, k, 0), bad);                // ldc < max(1, m)
  EXPECT_EQ(sgemm(0, 0, m, n, k, m, k, m, nullptr), bad);
  EXPECT_EQ(sgemm(0, 0, m, n, k, m, k, m, &one, nullptr), bad);
  EXPECT_EQ(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, da.p, m, 0, db.p, k, 0, &one,
                                      dc.p, m, 0, -1),
            bad);
  EXPECT_EQ(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, da.p, CUDA_R_32F, m - 1, db.p, CUDA_R_32F, k,
                         &one, dc.p, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            bad);
  EXPECT_EQ(cublasSgemv(h, CUBLAS_OP_N, m, n, &one, da.p, m - 1, db.p, 1, &one, dc.p, 1), bad);
  EXPECT_EQ(cublasSgemv(h, CUBLAS_OP_N, m, n, &one, da.p, m, db.p, 0, &one, dc.p, 1), bad);
  EXPECT_EQ(cublasSgemv(h, CUBLAS_OP_N, m, n, &one, da.p, m, db.p, 1, &one, dc.p, 0), bad);
  EXPECT_EQ(cublasSgemv(h, (cublasOperation_t)5, m, n, &one, da.p, m, db.p, 1, &one, dc.p, 1), bad);
  EXPECT_EQ(cublasSgemv(h, CUBLAS_OP_N, -1, n, &one, da.p, m, db.p, 1, &one, dc.p, 1), bad);
  EXPECT_EQ(cublasSdot(h, 3, da.p, 1, db.p, 1, nullptr), bad);
  EXPECT_TRUE(bitwise_equal(dc.get(), std::vector<float>(64, kPad)));
  // Boundaries that are valid.
  EXPECT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, m, k, m), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(sgemm(CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, k, n, m), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 0, n, k, 1, k, 1), CUBLAS_STATUS_SUCCESS);
}

TEST_F(Cublas, SettingsRoundTripAndValidate) {
  cudaStream_t s = nullptr, got = (cudaStream_t)1;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  EXPECT_EQ(cublasGetStream(h, &got), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(got, nullptr);  // a new handle uses the default stream
  EXPECT_EQ(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasGetStream(h, &got), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(got, s);
  EXPECT_EQ(cublasGetStream(h, nullptr), CUBLAS_STATUS_INVALID_VALUE);

  cublasPointerMode_t pm;
  EXPECT_EQ(cublasGetPointerMode(h, &pm), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(pm, CUBLAS_POINTER_MODE_HOST);
  EXPECT_EQ(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasGetPointerMode(h, &pm), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(pm, CUBLAS_POINTER_MODE_DEVICE);
  EXPECT_EQ(cublasSetPointerMode(h, (cublasPointerMode_t)2), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasGetPointerMode(h, nullptr), CUBLAS_STATUS_INVALID_VALUE);

  cublasMath_t mm;
  EXPECT_EQ(cublasGetMathMode(h, &mm), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(mm, CUBLAS_DEFAULT_MATH);
  const cublasMath_t tf32_strict =
      (cublasMath_t)(CUBLAS_TF32_TENSOR_OP_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  EXPECT_EQ(cublasSetMathMode(h, tf32_strict), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasGetMathMode(h, &mm), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(mm, tf32_strict);
  EXPECT_EQ(cublasSetMathMode(h, (cublasMath_t)5), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasGetMathMode(h, nullptr), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasCreate(nullptr), CUBLAS_STATUS_INVALID_VALUE);

  // Work on a destroyed stream fails as a failed launch would (and sets the runtime's last error).
  EXPECT_EQ(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  Dev<float> dc(std::vector<float>{1.0f});
  const float one = 1.0f;
  EXPECT_EQ(cublasSscal(h, 1, &one, dc.p, 1), CUBLAS_STATUS_EXECUTION_FAILED);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cublasSetStream(h, nullptr), CUBLAS_STATUS_SUCCESS);
}

// A NULL or destroyed handle is CUBLAS_STATUS_NOT_INITIALIZED everywhere, checked before any other argument.
TEST(CublasHandle, NullOrDestroyedHandleIsNotInitialized) {
  cublasHandle_t dead = nullptr;
  ASSERT_EQ(cublasCreate(&dead), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasDestroy(dead), CUBLAS_STATUS_SUCCESS);
  const float one = 1.0f;
  float result = 0;
  cudaStream_t s;
  cublasPointerMode_t pm;
  cublasMath_t mm;
  for (cublasHandle_t x : {(cublasHandle_t) nullptr, dead}) {
    const cublasStatus_t ni = CUBLAS_STATUS_NOT_INITIALIZED;
    EXPECT_EQ(cublasSgemm(x, CUBLAS_OP_N, CUBLAS_OP_N, -1, 1, 1, &one, nullptr, 1, nullptr, 1, &one, nullptr, 1), ni);
    EXPECT_EQ(cublasSgemmStridedBatched(x, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, nullptr, 1, 0, nullptr, 1, 0,
                                        &one, nullptr, 1, 0, 1),
              ni);
    EXPECT_EQ(cublasGemmEx(x, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, nullptr, CUDA_R_32F, 1, nullptr, CUDA_R_32F,
                           1, &one, nullptr, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              ni);
    EXPECT_EQ(cublasSgemv(x, CUBLAS_OP_N, 1, 1, &one, nullptr, 1, nullptr, 1, &one, nullptr, 1), ni);
    EXPECT_EQ(cublasSaxpy(x, 1, &one, nullptr, 1, nullptr, 1), ni);
    EXPECT_EQ(cublasSscal(x, 1, &one, nullptr, 1), ni);
    EXPECT_EQ(cublasSdot(x, 1, nullptr, 1, nullptr, 1, &result), ni);
    EXPECT_EQ(cublasSetStream(x, nullptr), ni);
    EXPECT_EQ(cublasGetStream(x, &s), ni);
    EXPECT_EQ(cublasSetPointerMode(x, CUBLAS_POINTER_MODE_HOST), ni);
    EXPECT_EQ(cublasGetPointerMode(x, &pm), ni);
    EXPECT_EQ(cublasSetMathMode(x, CUBLAS_DEFAULT_MATH), ni);
    EXPECT_EQ(cublasGetMathMode(x, &mm), ni);
    EXPECT_EQ(cublasDestroy(x), ni);
  }
}

TEST(CublasHandle, StatusNamesAndStrings) {
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_SUCCESS), "CUBLAS_STATUS_SUCCESS");
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
  EXPECT_STREQ(cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED), "the library was not initialized");
  EXPECT_STREQ(cublasGetStatusName((cublasStatus_t)12345), "unrecognized status");
}

// ---- pointer modes under graph capture -------------------------------------------------------------------------

// Host pointer mode reads alpha/beta when cublasSgemm is called; device pointer mode reads them when the recorded
// operation runs. Captured into a graph, the two differ visibly once the scalars change before the launch.
TEST_F(Cublas, PointerModesUnderGraphCapture) {
  Mat a(3, 2, 3, kNaN), b(2, 2, 2, kNaN), c0(3, 2, 3, kPad);
  Rng rng{42};
  fill(a, rng, true), fill(b, rng, true), fill(c0, rng, true);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
  Dev<float> da(a.v), db(b.v), dc(c0.v), d_alpha(std::vector<float>{2.0f}), d_beta(std::vector<float>{1.0f});
  float h_alpha = 2.0f, h_beta = 1.0f;
  // The shape once outside capture (cuBLAS initialises the handle and picks the algorithm then).
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 2, 2, &h_alpha, da.p, 3, db.p, 2, &h_beta, dc.p, 3),
            CUBLAS_STATUS_SUCCESS);
  for (const bool device_mode : {false, true}) {
    SCOPED_TRACE(device_mode ? "device pointer mode" : "host pointer mode");
    dc.put(c0.v), d_alpha.put({2.0f}), d_beta.put({1.0f});
    h_alpha = 2.0f, h_beta = 1.0f;
    ASSERT_EQ(cublasSetPointerMode(h, device_mode ? CUBLAS_POINTER_MODE_DEVICE : CUBLAS_POINTER_MODE_HOST),
              CUBLAS_STATUS_SUCCESS);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 2, 2, device_mode ? d_alpha.p : &h_alpha, da.p, 3, db.p, 2,
                          device_mode ? d_beta.p : &h_beta, dc.p, 3),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    EXPECT_TRUE(bitwise_equal(dc.get(), c0.v));  // recorded, not run
    h_alpha = -3.0f, h_beta = 0.0f;
    d_alpha.put({-3.0f}), d_beta.put({0.0f});
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    // Integer inputs: exact. Device mode sees the new scalars, host mode the ones of the call.
    expect_gemm(dc.get(), a, CUBLAS_OP_N, b, CUBLAS_OP_N, c0, 2, device_mode ? -3.0f : 2.0f,
                device_mode ? 0.0f : 1.0f, 0.0f);
    EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  }
  EXPECT_EQ(cublasSetStream(h, nullptr), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// ---- faults ------------------------------------------------------------------------------------------------------

// Host memory handed to cuBLAS would fault on a GPU; the emulation reports it (a child process dies).
void sgemm_on_host_memory() {
  cublasHandle_t h;
  cublasCreate(&h);
  std::vector<float> a(4, 1.0f), b(4, 1.0f), c(4);
  cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &kOne, a.data(), 2, b.data(), 2, &kOne, c.data(), 2);
}

void device_mode_with_host_alpha() {
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE);
  cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &kOne, nullptr, 2, nullptr, 2, &kOne, nullptr, 2);
}

// A captured GEMM whose operands are freed before the graph is launched.
void gemm_launched_after_free() {
  cublasHandle_t h;
  cudaStream_t s;
  float *d;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cublasCreate(&h), cudaStreamCreate(&s), cublasSetStream(h, s), cudaMalloc((void **)&d, 4 * sizeof(float));
  cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &kOne, d, 2, d, 2, &kOne, d, 2);  // warm-up
  cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &kOne, d, 2, d, 2, &kOne, d, 2);
  cudaStreamEndCapture(s, &graph), cudaGraphInstantiate(&exec, graph, 0), cudaFree(d);
  cudaGraphLaunch(exec, s);
  cudaStreamSynchronize(s);  // the replay has run (in the deferred mode it runs here)
}

// Captures one GEMM on a handle after `warm` (how the handle was used before the capture).
enum class Warm { kNothing, kOtherShape, kOtherMathMode, kSameShape };
void capture_gemm_after(Warm warm) {
  cublasHandle_t h;
  cudaStream_t s;
  float *d;
  cudaGraph_t graph;
  cublasCreate(&h), cudaStreamCreate(&s), cublasSetStream(h, s), cudaMalloc((void **)&d, 16 * sizeof(float));
  if (warm == Warm::kOtherShape) cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, 2, 2, 2, &kOne, d, 2, d, 2, &kOne, d, 2);
  if (warm == Warm::kOtherMathMode || warm == Warm::kSameShape)
    cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &kOne, d, 2, d, 2, &kOne, d, 2);
  if (warm == Warm::kOtherMathMode) cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH);
  cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &kOne, d, 2, d, 2, &kOne, d, 2);
  cudaStreamEndCapture(s, &graph);
  cudaGraphDestroy(graph), cudaFree(d), cudaStreamDestroy(s), cublasDestroy(h);
  fprintf(stderr, "captured\n");
  exit(0);
}

TEST(CublasFaults, ColdUseDuringCaptureIsReported) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_DEATH(capture_gemm_after(Warm::kNothing),
               "cuda_emu: cublasSgemm: the first operation of cuBLAS handle 0x[0-9a-f]+ is issued during stream "
               "capture");
  EXPECT_DEATH(capture_gemm_after(Warm::kOtherShape),
               "cublasSgemm: first call of this shape on handle 0x[0-9a-f]+ \\(op NN, m 2, n 2, k 2, lda 2, ldb 2, "
               "ldc 2, batch 1, FP32\\) is issued during stream capture");
  EXPECT_DEATH(capture_gemm_after(Warm::kOtherMathMode), "first call of this shape .*TF32\\) is issued during");
  EXPECT_EXIT(capture_gemm_after(Warm::kSameShape), ::testing::ExitedWithCode(0), "captured");
}

TEST(CublasFaults, HostPointerIsReported) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_DEATH(sgemm_on_host_memory(), "cuda_emu: cublasSgemm: A = 0x[0-9a-f]+ \\(16 bytes\\) is not device memory");
  EXPECT_DEATH(device_mode_with_host_alpha(), "cublasSgemm: alpha = .* is not device memory");
  EXPECT_DEATH(gemm_launched_after_free(), "cublasSgemm: A = .* is no longer allocated when the operation runs");
}

}  // namespace
