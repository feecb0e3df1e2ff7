// The emulated cuBLASLt subset's argument checks (emu_cublaslt.cc) with the statuses real cuBLASLt returns, the
// attribute get/set rules, beta == 0 never reading C, and the faults: host memory, the lazy-initialisation check (a
// handle's first matmul, or a configuration's, inside stream capture) and BGRADA/B with alpha != 1.
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "cublaslt_test_util.h"

namespace {

const cublasStatus_t kOk = CUBLAS_STATUS_SUCCESS, kInvalid = CUBLAS_STATUS_INVALID_VALUE,
                     kUnsupported = CUBLAS_STATUS_NOT_SUPPORTED;

// A small fp32 problem (D 4 x 3, k 2) with its device buffers, for the checks.
struct Small {
  HostMat a{4, 2, 4, CUDA_R_32F, 1.0f}, b{2, 3, 2, CUDA_R_32F, 1.0f}, c{4, 3, 4, CUDA_R_32F, 0.0f};
  DevBytes da{encode(a.v, CUDA_R_32F)}, db{encode(b.v, CUDA_R_32F)}, dd{encode(c.v, CUDA_R_32F)};
  DevBytes bias{64}, aux{128 * 3 / 8};
};

// Every matmul status: NOT_INITIALIZED for the handle, INVALID_VALUE for NULL or destroyed descriptors, shapes, lds,
// missing pointers and scalars; NOT_SUPPORTED for types and epilogues outside the subset.
TEST_F(Lt, MatmulArgumentStatuses) {
  Small s;
  const float one = 1.0f, zero = 0.0f;
  auto call = [&](const Descs &ds, cublasLtHandle_t hh = nullptr) {
    return cublasLtMatmul(hh ? hh : h, ds.op, &one, s.da.p, ds.a, s.db.p, ds.b, &zero, s.dd.p, ds.c, s.dd.p, ds.d,
                          nullptr, nullptr, 0, nullptr);
  };
  Descs ok(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, s.a, s.b, s.c);
  EXPECT_EQ(call(ok), kOk);
  cublasLtHandle_t dead;
  ASSERT_EQ(cublasLtCreate(&dead), kOk);
  ASSERT_EQ(cublasLtDestroy(dead), kOk);
  EXPECT_EQ(call(ok, dead), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasLtDestroy(dead), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasLtMatmul(h, nullptr, &one, s.da.p, ok.a, s.db.p, ok.b, &zero, s.dd.p, ok.c, s.dd.p, ok.d, nullptr,
                           nullptr, 0, nullptr),
            kInvalid);
  EXPECT_EQ(cublasLtMatmul(h, ok.op, nullptr, s.da.p, ok.a, s.db.p, ok.b, &zero, s.dd.p, ok.c, s.dd.p, ok.d, nullptr,
                           nullptr, 0, nullptr),
            kInvalid);
  EXPECT_EQ(cublasLtMatmul(h, ok.op, &one, s.da.p, ok.a, s.db.p, nullptr, &zero, s.dd.p, ok.c, s.dd.p, ok.d, nullptr,
                           nullptr, 0, nullptr),
            kInvalid);
  {  // op(A) is 2 x 4 with TRANSA = T: it does not match D's 4 rows
    Descs bad(CUBLAS_COMPUTE_32F, CUBLAS_OP_T, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, s.a, s.b, s.c);
    EXPECT_EQ(call(bad), kInvalid);
    bad.set(CUBLASLT_MATMUL_DESC_TRANSA, (int32_t)7);  // not an operation
    EXPECT_EQ(call(bad), kInvalid);
  }
  {  // B's k (3 rows) differs from op(A)'s (2 columns); an ld below the rows
    HostMat b3(3, 3, 3, CUDA_R_32F, 1.0f), short_ld(4, 2, 4, CUDA_R_32F, 1.0f);
    Descs bad(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, s.a, b3, s.c);
    EXPECT_EQ(call(bad), kInvalid);
    short_ld.ld = 3;
    Descs bad_ld(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, short_ld, s.b, s.c);
    EXPECT_EQ(call(bad_ld), kInvalid);
  }
  {  // types: mixed A/B, TF32 with bf16, a 16-bit compute type, fp16; GELU
    HostMat abf(4, 2, 4, CUDA_R_16BF, 1.0f), bbf(2, 3, 2, CUDA_R_16BF, 1.0f), a16(4, 2, 4, CUDA_R_16F, 1.0f);
    Descs mixed(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, abf, s.b, s.c);
    EXPECT_EQ(call(mixed), kUnsupported);
    Descs tf32(CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, abf, bbf, s.c);
    EXPECT_EQ(call(tf32), kUnsupported);
    Descs c16(CUBLAS_COMPUTE_16F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, s.a, s.b, s.c);
    EXPECT_EQ(call(c16), kUnsupported);
    Descs f16(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, a16, a16, s.c);
    EXPECT_EQ(call(f16), kUnsupported);
    Descs gelu(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_GELU, s.a, s.b, s.c);
    EXPECT_EQ(call(gelu), kUnsupported);
  }
}

// The epilogues' own requirements: a bias pointer, an aux pointer and an aux ld that is a multiple of 128 and at least
// D's rows; the bias type (D's, or fp32 with a bf16 D).
TEST_F(Lt, EpilogueArgumentStatuses) {
  Small s;
  const float one = 1.0f, zero = 0.0f;
  auto call = [&](const Descs &ds) {
    return cublasLtMatmul(h, ds.op, &one, s.da.p, ds.a, s.db.p, ds.b, &zero, s.dd.p, ds.c, s.dd.p, ds.d, nullptr,
                          nullptr, 0, nullptr);
  };
  for (cublasLtEpilogue_t e : {CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_RELU_BIAS, CUBLASLT_EPILOGUE_BGRADA,
                               CUBLASLT_EPILOGUE_BGRADB}) {
    Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, e, s.a, s.b, s.c);
    EXPECT_EQ(call(ds), kInvalid) << "no bias pointer, epilogue " << e;
    ds.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, s.bias.p);
    EXPECT_EQ(call(ds), kOk) << e;
    ds.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, (int32_t)CUDA_R_16BF);  // a bf16 bias with an fp32 D
    EXPECT_EQ(call(ds), kUnsupported) << e;
  }
  for (cublasLtEpilogue_t e : {CUBLASLT_EPILOGUE_RELU_AUX, CUBLASLT_EPILOGUE_RELU_AUX_BIAS,
                               CUBLASLT_EPILOGUE_DRELU, CUBLASLT_EPILOGUE_DRELU_BGRAD}) {
    Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, e, s.a, s.b, s.c);
    ds.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, s.bias.p);
    EXPECT_EQ(call(ds), kInvalid) << "no aux pointer, aux ld 0, epilogue " << e;
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, s.aux.p);
    EXPECT_EQ(call(ds), kInvalid) << "aux ld 0, epilogue " << e;
    for (int64_t ld : {4, 64, 130}) {
      ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ld);
      EXPECT_EQ(call(ds), kInvalid) << "aux ld " << ld << ", epilogue " << e;
    }
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, (int64_t)128);
    EXPECT_EQ(call(ds), kOk) << e;
    const void *none = nullptr;
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, none);
    EXPECT_EQ(call(ds), kInvalid) << "no aux pointer, epilogue " << e;
  }
}

// Attribute sizes, GetAttribute's size query, the preference, and the heuristic's own statuses and workspace rule.
TEST_F(Lt, AttributesAndHeuristic) {
  Small s;
  Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_T, CUBLAS_OP_N, CUBLASLT_EPILOGUE_RELU_AUX, s.b, s.b, s.b);
  int32_t op = 0;
  size_t written = 0;
  EXPECT_EQ(cublasLtMatmulDescGetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &op, sizeof op, &written), kOk);
  EXPECT_EQ(op, CUBLAS_OP_T);
  EXPECT_EQ(written, sizeof op);
  EXPECT_EQ(cublasLtMatmulDescGetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, nullptr, 0, &written), kOk);
  EXPECT_EQ(written, sizeof(int64_t));
  EXPECT_EQ(cublasLtMatmulDescGetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, nullptr, 0, nullptr), kInvalid);
  EXPECT_EQ(cublasLtMatmulDescGetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &op, 8, &written), kInvalid);
  const int32_t ld32 = 128;  // AUX_LD is an int64_t
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld32, sizeof ld32), kInvalid);
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, nullptr, 4), kInvalid);
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(nullptr, CUBLASLT_MATMUL_DESC_TRANSB, &op, sizeof op), kInvalid);
  const int8_t fast = 1;  // outside the subset
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast), kUnsupported);

  cublasLtMatmulPreference_t pref;
  ASSERT_EQ(cublasLtMatmulPreferenceCreate(&pref), kOk);
  uint64_t ws = 3 << 20, back = 0;
  EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, 4), kInvalid);
  EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws), kOk);
  EXPECT_EQ(cublasLtMatmulPreferenceGetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &back, sizeof back,
                                                 nullptr),
            kOk);
  EXPECT_EQ(back, ws);
  cublasLtMatmulHeuristicResult_t r[2];
  int count = -1;
  Descs plain(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, s.a, s.b, s.c);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(h, plain.op, plain.a, plain.b, plain.c, plain.d, pref, 0, r, &count),
            kInvalid);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(h, plain.op, plain.a, plain.b, plain.c, plain.d, pref, 2, r, &count), kOk);
  EXPECT_EQ(count, 1);
  EXPECT_EQ(r[0].state, kOk);
  EXPECT_GT(r[0].workspaceSize, 0u);
  EXPECT_LE(r[0].workspaceSize, ws);
  const float one = 1.0f, zero = 0.0f;
  DevBytes work(r[0].workspaceSize);
  auto run = [&](const Descs &d, size_t bytes) {
    return cublasLtMatmul(h, d.op, &one, s.da.p, d.a, s.db.p, d.b, &zero, s.dd.p, d.c, s.dd.p, d.d, &r[0].algo,
                          work.p, bytes, nullptr);
  };
  EXPECT_EQ(run(plain, r[0].workspaceSize - 1), kInvalid);  // less than the algo asked for
  EXPECT_EQ(run(plain, r[0].workspaceSize), kOk);
  Descs relu(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_RELU, s.a, s.b, s.c);
  EXPECT_EQ(run(relu, r[0].workspaceSize), kUnsupported);  // an algo found for another epilogue
  Descs gelu(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_GELU, s.a, s.b, s.c);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(h, gelu.op, gelu.a, gelu.b, gelu.c, gelu.d, pref, 1, r, &count),
            kUnsupported);
  EXPECT_EQ(count, 0);
  EXPECT_EQ(cublasLtMatmulPreferenceDestroy(pref), kOk);
  EXPECT_EQ(cublasLtMatmulPreferenceDestroy(pref), kInvalid);  // already destroyed
}

// The heuristic chooses for operands at least as aligned as the preference's MIN_ALIGNMENT_*_BYTES (256 unless set);
// an operand less aligned than that is refused at the matmul, and told to the heuristic it is accepted.
TEST_F(Lt, OperandsLessAlignedThanTheHeuristicAssumedAreRefused) {
  Small s;
  Descs plain(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, s.a, s.b, s.c);
  DevBytes shifted(s.da.n + 16);  // A's values 16 bytes into a fresh allocation: 16-byte aligned, not 32
  ASSERT_EQ(cudaMemcpy((char *)shifted.p + 16, encode(s.a.v, CUDA_R_32F).data(), s.da.n, cudaMemcpyHostToDevice),
            cudaSuccess);
  const void *a16 = (const char *)shifted.p + 16;
  cublasLtMatmulPreference_t pref;
  ASSERT_EQ(cublasLtMatmulPreferenceCreate(&pref), kOk);
  uint32_t align = 0;
  EXPECT_EQ(cublasLtMatmulPreferenceGetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align,
                                                 sizeof align, nullptr),
            kOk);
  EXPECT_EQ(align, 256u);
  const uint64_t ws = 1 << 20;
  EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws), kOk);
  DevBytes work(ws);
  const float one = 1.0f, zero = 0.0f;
  auto run_with = [&](const void *a) {
    cublasLtMatmulHeuristicResult_t r;
    int count = 0;
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(h, plain.op, plain.a, plain.b, plain.c, plain.d, pref, 1, &r, &count),
              kOk);
    const cublasStatus_t st = cublasLtMatmul(h, plain.op, &one, a, plain.a, s.db.p, plain.b, &zero, s.dd.p, plain.c,
                                             s.dd.p, plain.d, &r.algo, work.p, ws, nullptr);
    EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
    return st;
  };
  EXPECT_EQ(run_with(s.da.p), kOk);
  EXPECT_EQ(run_with(a16), kUnsupported);
  align = 16;
  EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align,
                                                 sizeof align),
            kOk);
  EXPECT_EQ(run_with(a16), kOk);
  EXPECT_EQ(decode(s.dd.get(), CUDA_R_32F)[0], 2.0f);  // row 0 of A (1, 1) . column 0 of B (1, 1)
  EXPECT_EQ(cublasLtMatmulPreferenceDestroy(pref), kOk);
}

// beta == 0 never reads C: a NaN C cannot leak into D. Integer inputs make the result exact.
TEST_F(Lt, BetaZeroNeverReadsC) {
  HostMat a(3, 2, 3, CUDA_R_32F, 0.0f), b(2, 2, 2, CUDA_R_32F, 0.0f), c(3, 2, 3, CUDA_R_32F, kNaN);
  for (int i = 0; i < 6; ++i) a.v[i] = (float)(i - 2);
  for (int i = 0; i < 4; ++i) b.v[i] = (float)(3 - i);
  DevBytes da(encode(a.v, CUDA_R_32F)), db(encode(b.v, CUDA_R_32F)), dc(encode(c.v, CUDA_R_32F));
  DevBytes dd(encode(c.v, CUDA_R_32F));
  Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, a, b, c);
  ASSERT_EQ(run_matmul(h, ds, 1.0f, da.p, db.p, 0.0f, dc.p, dd.p), kOk);
  const std::vector<float> d = decode(dd.get(), CUDA_R_32F);
  for (int j = 0; j < 2; ++j)
    for (int i = 0; i < 3; ++i) EXPECT_EQ(d[j * 3 + i], a.at(i, 0) * b.at(0, j) + a.at(i, 1) * b.at(1, j));
}

// ---- faults ------------------------------------------------------------------------------------------------------

// Captures one matmul after `warm` (how the handle was used before the capture).
enum class Warm { kNothing, kOtherEpilogue, kSame };
void capture_after(Warm warm) {
  cublasLtHandle_t h;
  cudaStream_t s;
  cudaGraph_t graph;
  cublasLtCreate(&h), cudaStreamCreate(&s);
  {
    Small x;
    Descs relu(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_RELU, x.a, x.b, x.c);
    Descs plain(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, x.a, x.b, x.c);
    if (warm == Warm::kOtherEpilogue) run_matmul(h, relu, 1.0f, x.da.p, x.db.p, 0.0f, x.dd.p, x.dd.p, s);
    if (warm == Warm::kSame) run_matmul(h, plain, 1.0f, x.da.p, x.db.p, 0.0f, x.dd.p, x.dd.p, s);
    const float one = 1.0f, zero = 0.0f;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    cublasLtMatmul(h, plain.op, &one, x.da.p, plain.a, x.db.p, plain.b, &zero, x.dd.p, plain.c, x.dd.p, plain.d,
                   nullptr, nullptr, 0, s);
    cudaStreamEndCapture(s, &graph);
  }
  cudaGraphDestroy(graph), cudaStreamDestroy(s), cublasLtDestroy(h);
  fprintf(stderr, "captured\n");
  exit(0);
}

TEST(LtFaults, ColdUseDuringCaptureIsReported) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_DEATH(capture_after(Warm::kNothing),
               "cuda_emu: cublasLtMatmul: the first matmul on cuBLASLt handle 0x[0-9a-f]+ is issued during stream "
               "capture");
  EXPECT_DEATH(capture_after(Warm::kOtherEpilogue),
               "first call of this configuration on handle 0x[0-9a-f]+ \\(op NN, m 4, n 3, k 2, lda 4, ldb 2, ldc 4, "
               "ldd 4, fp32 x fp32 -> fp32, epilogue 1, aux ld 0, FP32\\) is issued during stream capture");
  EXPECT_EXIT(capture_after(Warm::kSame), ::testing::ExitedWithCode(0), "captured");
}

// Host memory handed to cuBLASLt would fault on a GPU; the emulation reports it.
void matmul_on_host_memory() {
  cublasLtHandle_t h;
  cublasLtCreate(&h);
  HostMat a(2, 2, 2, CUDA_R_32F, 1.0f);
  Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, a, a, a);
  std::vector<float> x(4, 1.0f), d(4);
  const float one = 1.0f, zero = 0.0f;
  cublasLtMatmul(h, ds.op, &one, x.data(), ds.a, x.data(), ds.b, &zero, d.data(), ds.c, d.data(), ds.d, nullptr,
                 nullptr, 0, nullptr);
}

// BGRADA with alpha != 1: how alpha enters the bias gradient is undocumented, so the emulation refuses.
void bgrada_with_alpha_two() {
  cublasLtHandle_t h;
  cublasLtCreate(&h);
  Small s;
  Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_BGRADA, s.a, s.b, s.c);
  ds.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, s.bias.p);
  const float two = 2.0f, zero = 0.0f;
  cublasLtMatmul(h, ds.op, &two, s.da.p, ds.a, s.db.p, ds.b, &zero, s.dd.p, ds.c, s.dd.p, ds.d, nullptr, nullptr, 0,
                 nullptr);
}

TEST(LtFaults, HostMemoryAndUndocumentedAlphaAreReported) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_DEATH(matmul_on_host_memory(), "cuda_emu: cublasLtMatmul: A = 0x[0-9a-f]+ \\(16 bytes\\) is not device memory");
  EXPECT_DEATH(bgrada_with_alpha_two(), "cublasLtMatmul: epilogue BGRADA with alpha = 2: how alpha scales the bias "
                                        "gradient is not documented");
}

}  // namespace
