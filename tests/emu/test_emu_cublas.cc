// The emulated cuBLAS subset's results (emu_cublas.cc) against naive loops: every transpose combination with
// padded leading dimensions, the scalar rules (beta == 0 never reads C, alpha == 0 / k == 0 never read A or B),
// strided batches, cublasGemmEx, TF32, and level 1 and 2 (cublasSgemv, axpy, scal, dot). GEMM tolerances:
// cublas_test_util.h.
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

// ---- every transpose combination, padded leading dimensions, odd sizes ---------------------------------------
struct Shape {
  int m, n, k;
};
class CublasTranspose
    : public Cublas,
      public ::testing::WithParamInterface<std::tuple<cublasOperation_t, cublasOperation_t, Shape>> {};

TEST_P(CublasTranspose, SgemmMatchesNaiveLoop) {
  const auto [ta, tb, s] = GetParam();
  const int ar = ta == CUBLAS_OP_N ? s.m : s.k, ac = ta == CUBLAS_OP_N ? s.k : s.m;
  const int br = tb == CUBLAS_OP_N ? s.k : s.n, bc = tb == CUBLAS_OP_N ? s.n : s.k;
  // Padding of A and B is NaN: reading it would poison the result.
  Mat a(ar, ac, ar + 3, kNaN), b(br, bc, br + 5, kNaN), c(s.m, s.n, s.m + 2, kPad);
  Rng rng{7u + (unsigned)s.k};
  fill(a, rng), fill(b, rng), fill(c, rng);
  Dev<float> da(a.v), db(b.v), dc(c.v);
  const float alpha = 0.75f, beta = -1.25f;
  ASSERT_EQ(cublasSgemm(h, ta, tb, s.m, s.n, s.k, &alpha, da.p, a.ld, db.p, b.ld, &beta, dc.p, c.ld),
            CUBLAS_STATUS_SUCCESS);
  expect_gemm(dc.get(), a, ta, b, tb, c, s.k, alpha, beta);
}

std::string transpose_name(const ::testing::TestParamInfo<CublasTranspose::ParamType> &info) {
  const auto [ta, tb, s] = info.param;
  const char *names = "NTC";
  return std::string(1, names[ta]) + names[tb] + "_" + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" +
         std::to_string(s.k);
}

INSTANTIATE_TEST_SUITE_P(AllOps, CublasTranspose,
                         ::testing::Combine(::testing::Values(CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C),
                                            ::testing::Values(CUBLAS_OP_N, CUBLAS_OP_T),
                                            ::testing::Values(Shape{5, 7, 3}, Shape{33, 17, 65}, Shape{1, 1, 1})),
                         transpose_name);

// ---- scalar rules ----------------------------------------------------------------------------------------------

// beta == 0: C is not read, so NaN in C cannot leak. Integer inputs make the product exact in fp32, so the
// result must equal the double reference exactly.
TEST_F(Cublas, BetaZeroNeverReadsC) {
  Mat a(5, 3, 6, kNaN), b(3, 7, 4, kNaN), c(5, 7, 8, kNaN);
  Rng rng{3};
  fill(a, rng, true), fill(b, rng, true);
  Dev<float> da(a.v), db(b.v), dc(c.v);
  const float alpha = 2.0f, beta = 0.0f;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 5, 7, 3, &alpha, da.p, a.ld, db.p, b.ld, &beta, dc.p, c.ld),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<float> out = dc.get();
  for (int j = 0; j < 7; ++j)
    for (int i = 0; i < 5; ++i) {
      double ref = 0;
      for (int l = 0; l < 3; ++l) ref += (double)a.at(i, l) * b.at(l, j);
      EXPECT_EQ(out[(size_t)j * c.ld + i], (float)(alpha * ref)) << i << "," << j;
    }
  for (int j = 0; j < 7; ++j)  // padding rows (NaN) untouched
    for (int i = 5; i < 8; ++i) EXPECT_TRUE(isnan(out[(size_t)j * c.ld + i]));
}

// alpha == 0: A and B (all NaN) are not read; C = beta C exactly (beta = 0.5 is exact), or 0 when beta == 0 even
// over a NaN C.
TEST_F(Cublas, AlphaZeroNeverReadsAB) {
  Mat a(4, 6, 4, kNaN), b(6, 3, 6, kNaN), c(4, 3, 5, kPad);
  Rng rng{11};
  fill(c, rng);
  Dev<float> da(a.v), db(b.v), dc(c.v);
  const float zero = 0.0f, half = 0.5f;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 3, 6, &zero, da.p, 4, db.p, 6, &half, dc.p, 5),
            CUBLAS_STATUS_SUCCESS);
  std::vector<float> out = dc.get();
  for (int j = 0; j < 3; ++j)
    for (int i = 0; i < 5; ++i) EXPECT_EQ(out[j * 5 + i], i < 4 ? 0.5f * c.at(i, j) : kPad) << i << "," << j;

  dc.put(std::vector<float>(c.v.size(), kNaN));
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_T, 4, 3, 6, &zero, da.p, 6, db.p, 3, &zero, dc.p, 5),
            CUBLAS_STATUS_SUCCESS);
  out = dc.get();
  for (int j = 0; j < 3; ++j)
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(i < 4 ? out[j * 5 + i] == 0.0f : isnan(out[j * 5 + i]));
}

// k == 0: op(A) op(B) is empty, so C = beta C; A and B may even be NULL.
TEST_F(Cublas, KZeroScalesC) {
  Mat c(3, 2, 3, kPad);
  Rng rng{5};
  fill(c, rng);
  Dev<float> dc(c.v);
  const float alpha = 1.0f, beta = -2.0f;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 2, 0, &alpha, nullptr, 3, nullptr, 1, &beta, dc.p, 3),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<float> out = dc.get();
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], -2.0f * c.v[i]);
}

// m == 0 or n == 0: nothing at all happens (not even C = beta C).
TEST_F(Cublas, EmptyResultIsNoOp) {
  Dev<float> dc(std::vector<float>{kNaN});
  const float alpha = 1.0f, beta = 0.0f;
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 0, 1, 1, &alpha, nullptr, 1, nullptr, 1, &beta, dc.p, 1),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 0, 1, &alpha, nullptr, 1, nullptr, 1, &beta, dc.p, 1),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(isnan(dc.get()[0]));
}

// ---- strided batched -------------------------------------------------------------------------------------------

// 3 batches whose strides leave gaps after each matrix: each batch equals its own cublasSgemm bit for bit and the
// naive loop within tolerance; the gaps between C matrices are untouched.
TEST_F(Cublas, StridedBatchedMatchesLoop) {
  const int m = 6, n = 5, k = 7, lda = k + 1, ldb = k + 2, ldc = m + 1, batches = 3;  // A, B transposed
  const long long sa = lda * m + 9, sb = ldb * k + 4, sc = ldc * n + 3;
  std::vector<float> ha(sa * batches, kNaN), hb(sb * batches, kNaN), hc(sc * batches, kPad);
  std::vector<Mat> as, bs, cs;
  Rng rng{99};
  for (int i = 0; i < batches; ++i) {
    as.emplace_back(k, m, lda, kNaN), bs.emplace_back(n, k, ldb, kNaN), cs.emplace_back(m, n, ldc, kPad);
    fill(as[i], rng), fill(bs[i], rng), fill(cs[i], rng);
    std::copy(as[i].v.begin(), as[i].v.end(), ha.begin() + i * sa);
    std::copy(bs[i].v.begin(), bs[i].v.end(), hb.begin() + i * sb);
    std::copy(cs[i].v.begin(), cs[i].v.end(), hc.begin() + i * sc);
  }
  Dev<float> da(ha), db(hb), dc(hc), dc1(hc);
  const float alpha = -0.5f, beta = 1.5f;
  ASSERT_EQ(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, &alpha, da.p, lda, sa, db.p, ldb, sb,
                                      &beta, dc.p, ldc, sc, batches),
            CUBLAS_STATUS_SUCCESS);
  for (int i = 0; i < batches; ++i)
    ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, &alpha, da.p + i * sa, lda, db.p + i * sb, ldb,
                          &beta, dc1.p + i * sc, ldc),
              CUBLAS_STATUS_SUCCESS);
  const std::vector<float> out = dc.get(), out1 = dc1.get();
  EXPECT_EQ(memcmp(out.data(), out1.data(), out.size() * sizeof(float)), 0);
  for (int i = 0; i < batches; ++i) {
    expect_gemm(std::vector<float>(out.begin() + i * sc, out.begin() + i * sc + cs[i].v.size()), as[i], CUBLAS_OP_T,
                bs[i], CUBLAS_OP_T, cs[i], k, alpha, beta);
    for (long long g = (long long)cs[i].v.size(); g < sc; ++g) EXPECT_EQ(out[i * sc + g], kPad) << "gap " << g;
  }
  // batchCount == 0 does nothing.
  EXPECT_EQ(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, nullptr, m, 0, nullptr, k, 0,
                                      &beta, nullptr, m, 0, 0),
            CUBLAS_STATUS_SUCCESS);
}

// ---- cublasGemmEx ------------------------------------------------------------------------------------------------

struct Problem {
  int m = 33, n = 17, k = 65;
  Mat a{33, 65, 35, kNaN}, b{17, 65, 19, kNaN}, c{33, 17, 34, kPad};  // C = alpha A B^T + beta C
  Problem() {
    Rng rng{2024};
    fill(a, rng), fill(b, rng), fill(c, rng);
  }
};

std::vector<float> run_sgemm(cublasHandle_t h, const Problem &p, float alpha, float beta) {
  Dev<float> da(p.a.v), db(p.b.v), dc(p.c.v);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, p.m, p.n, p.k, &alpha, da.p, p.a.ld, db.p, p.b.ld, &beta, dc.p,
                        p.c.ld),
            CUBLAS_STATUS_SUCCESS);
  return dc.get();
}

std::vector<float> run_gemm_ex(cublasHandle_t h, const Problem &p, float alpha, float beta,
                               cublasComputeType_t compute, cublasStatus_t expect = CUBLAS_STATUS_SUCCESS,
                               cudaDataType type = CUDA_R_32F) {
  Dev<float> da(p.a.v), db(p.b.v), dc(p.c.v);
  EXPECT_EQ(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, p.m, p.n, p.k, &alpha, da.p, type, p.a.ld, db.p, CUDA_R_32F,
                         p.b.ld, &beta, dc.p, CUDA_R_32F, p.c.ld, compute, CUBLAS_GEMM_DEFAULT),
            expect);
  return dc.get();
}

TEST_F(Cublas, GemmExFp32EqualsSgemmBitwise) {
  Problem p;
  const std::vector<float> ref = run_sgemm(h, p, 1.5f, -0.25f);
  expect_gemm(ref, p.a, CUBLAS_OP_N, p.b, CUBLAS_OP_T, p.c, p.k, 1.5f, -0.25f);
  EXPECT_TRUE(bitwise_equal(run_gemm_ex(h, p, 1.5f, -0.25f, CUBLAS_COMPUTE_32F), ref));
  EXPECT_TRUE(bitwise_equal(run_gemm_ex(h, p, 1.5f, -0.25f, CUBLAS_COMPUTE_32F_PEDANTIC), ref));
  // The legacy overload with a cudaDataType compute type (an inline wrapper in cublas_api.h).
  Dev<float> da(p.a.v), db(p.b.v), dc(p.c.v);
  const float alpha = 1.5f, beta = -0.25f;
  ASSERT_EQ(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, p.m, p.n, p.k, &alpha, da.p, CUDA_R_32F, p.a.ld, db.p,
                         CUDA_R_32F, p.b.ld, &beta, dc.p, CUDA_R_32F, p.c.ld, CUDA_R_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(bitwise_equal(dc.get(), ref));
  // Anything but fp32 is not supported, and C is left alone.
  EXPECT_TRUE(bitwise_equal(run_gemm_ex(h, p, 1, 0, CUBLAS_COMPUTE_32F, CUBLAS_STATUS_NOT_SUPPORTED, CUDA_R_16F),
                            p.c.v));
  EXPECT_TRUE(bitwise_equal(run_gemm_ex(h, p, 1, 0, CUBLAS_COMPUTE_16F, CUBLAS_STATUS_NOT_SUPPORTED), p.c.v));
  EXPECT_TRUE(bitwise_equal(run_gemm_ex(h, p, 1, 0, CUBLAS_COMPUTE_32F_FAST_16F, CUBLAS_STATUS_NOT_SUPPORTED), p.c.v));
  EXPECT_EQ(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, p.m, p.n, p.k, &alpha, da.p, CUDA_R_32F, p.a.ld, db.p,
                         CUDA_R_32F, p.b.ld, &beta, dc.p, CUDA_R_32F, p.c.ld, CUBLAS_COMPUTE_32F,
                         (cublasGemmAlgo_t)50),
            CUBLAS_STATUS_NOT_SUPPORTED);
}

// ---- TF32 --------------------------------------------------------------------------------------------------------

float tf32_rne(float x) {  // reference rounding, written independently of the emulation's bit trick
  if (x == 0.0f || !isfinite(x)) return x;
  int e;
  frexpf(x, &e);                                     // |x| in [2^(e-1), 2^e)
  const double q = ldexp(1.0, e - 11);               // TF32 spacing: 10 fraction bits below the leading bit
  return (float)(nearbyint((double)x / q) * q);      // nearbyint rounds ties to even in the default mode
}

// A 1x1x1 product C = A * 1 shows the rounding of A itself: round to nearest, ties to even, at 10 fraction bits.
TEST_F(Cublas, Tf32RoundsInputsToNearestEven) {
  ASSERT_EQ(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
  const float u = ldexpf(1.0f, -10);  // TF32 ulp at 1
  const struct {
    float in, out;
  } cases[] = {{1 + u / 4, 1},           {1 + u / 2, 1},           {1 + u / 2 + u / 8, 1 + u},
               {1 + u + u / 2, 1 + 2 * u}, {-(1 + 3 * u / 4), -(1 + u)}, {3.0f, 3.0f},
               {ldexpf(1.9996f, 127), INFINITY}};
  const float one = 1.0f, zero = 0.0f;
  Dev<float> db(std::vector<float>{1.0f}), dc(1);
  for (const auto &cs : cases) {
    Dev<float> da(std::vector<float>{cs.in});
    ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, da.p, 1, db.p, 1, &zero, dc.p, 1),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(dc.get()[0], cs.out) << "input " << cs.in;
    EXPECT_EQ(tf32_rne(cs.in), cs.out) << "reference rounding of " << cs.in;
  }
}

// Under TF32 the result equals the fp32 product of TF32-rounded inputs (products of 11-bit significands are exact
// in fp32, so only the usual accumulation tolerance applies) and differs from the fp32 result by about the input
// rounding, 2^-11 relative: between 2^-16 and 2^-10 of sum |a||b| at its largest element here (k = 65).
TEST_F(Cublas, Tf32MathModeRoundsInputs) {
  Problem p, rounded;
  for (float &x : rounded.a.v) x = tf32_rne(x);
  for (float &x : rounded.b.v) x = tf32_rne(x);
  const float alpha = 1.0f, beta = 0.5f;
  const std::vector<float> fp32 = run_sgemm(h, p, alpha, beta);
  cublasMath_t mode;
  ASSERT_EQ(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasGetMathMode(h, &mode), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(mode, CUBLAS_TF32_TENSOR_OP_MATH);
  const std::vector<float> tf32 = run_sgemm(h, p, alpha, beta);
  expect_gemm(tf32, rounded.a, CUBLAS_OP_N, rounded.b, CUBLAS_OP_T, p.c, p.k, alpha, beta);
  double worst = 0;
  for (int j = 0; j < p.n; ++j)
    for (int i = 0; i < p.m; ++i) {
      double mag = 0;
      for (int l = 0; l < p.k; ++l) mag += fabs((double)p.a.at(i, l) * p.b.at(j, l));
      worst = fmax(worst, fabs((double)tf32[j * p.c.ld + i] - fp32[j * p.c.ld + i]) / mag);
    }
  EXPECT_GT(worst, ldexp(1.0, -16));
  EXPECT_LT(worst, ldexp(1.0, -10));
  // GemmEx: FAST_TF32 always rounds, 32F follows the math mode, 32F_PEDANTIC never rounds.
  EXPECT_TRUE(bitwise_equal(run_gemm_ex(h, p, alpha, beta, CUBLAS_COMPUTE_32F), tf32));
  EXPECT_TRUE(bitwise_equal(run_gemm_ex(h, p, alpha, beta, CUBLAS_COMPUTE_32F_PEDANTIC), fp32));
  // The strided-batched form follows the math mode too.
  {
    Dev<float> da(p.a.v), db(p.b.v), dc(p.c.v);
    ASSERT_EQ(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, p.m, p.n, p.k, &alpha, da.p, p.a.ld, 0, db.p,
                                        p.b.ld, 0, &beta, dc.p, p.c.ld, 0, 1),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_TRUE(bitwise_equal(dc.get(), tf32));
  }
  // NVIDIA_TF32_OVERRIDE=0 turns TF32 off, as it does for the real library.
  setenv("NVIDIA_TF32_OVERRIDE", "0", 1);
  const std::vector<float> overridden = run_sgemm(h, p, alpha, beta);
  unsetenv("NVIDIA_TF32_OVERRIDE");
  EXPECT_TRUE(bitwise_equal(overridden, fp32));
  ASSERT_EQ(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(bitwise_equal(run_sgemm(h, p, alpha, beta), fp32));
  EXPECT_TRUE(bitwise_equal(run_gemm_ex(h, p, alpha, beta, CUBLAS_COMPUTE_32F_FAST_TF32), tf32));
}


// ---- level 1 and 2 -----------------------------------------------------------------------------------------------

// Element i of a BLAS vector with increment inc (negative: the last element comes first in memory).
size_t at_inc(int i, int len, int inc) { return inc > 0 ? (size_t)i * inc : (size_t)(len - 1 - i) * -inc; }

// y = alpha op(A) x + beta y with a padded A and strided (one of them negative) x and y; beta == 0 over a NaN y,
// alpha == 0 over a NaN A and x. Integer inputs: exact.
TEST_F(Cublas, SgemvMatchesNaiveLoop) {
  const int m = 5, n = 4, lda = 7;
  Mat a(m, n, lda, kNaN);
  Rng rng{8};
  fill(a, rng, true);
  for (const cublasOperation_t op : {CUBLAS_OP_N, CUBLAS_OP_T}) {
    const int lx = op == CUBLAS_OP_N ? n : m, ly = op == CUBLAS_OP_N ? m : n, incx = 2, incy = -3;
    std::vector<float> x(lx * incx, kNaN), y(ly * 3, kPad);
    for (int i = 0; i < lx; ++i) x[at_inc(i, lx, incx)] = rng.next(true);
    for (int i = 0; i < ly; ++i) y[at_inc(i, ly, incy)] = rng.next(true);
    Dev<float> da(a.v), dx(x), dy(y);
    const float alpha = 2.0f, beta = -1.0f, zero = 0.0f;
    ASSERT_EQ(cublasSgemv(h, op, m, n, &alpha, da.p, lda, dx.p, incx, &beta, dy.p, incy), CUBLAS_STATUS_SUCCESS);
    std::vector<float> out = dy.get();
    for (int i = 0; i < ly; ++i) {
      double sum = 0;
      for (int l = 0; l < lx; ++l) sum += (double)op_at(a, op, i, l) * x[at_inc(l, lx, incx)];
      EXPECT_EQ(out[at_inc(i, ly, incy)], (float)(alpha * sum + beta * y[at_inc(i, ly, incy)])) << i;
    }
    EXPECT_EQ(out[1], kPad);  // between strided elements
    dy.put(std::vector<float>(y.size(), kNaN));
    ASSERT_EQ(cublasSgemv(h, op, m, n, &alpha, da.p, lda, dx.p, incx, &zero, dy.p, incy), CUBLAS_STATUS_SUCCESS);
    out = dy.get();
    for (int i = 0; i < ly; ++i) EXPECT_TRUE(isfinite(out[at_inc(i, ly, incy)])) << i;
    Dev<float> nan_a(std::vector<float>(a.v.size(), kNaN)), nan_x(std::vector<float>(x.size(), kNaN));
    dy.put(y);
    ASSERT_EQ(cublasSgemv(h, op, m, n, &zero, nan_a.p, lda, nan_x.p, incx, &beta, dy.p, incy), CUBLAS_STATUS_SUCCESS);
    out = dy.get();
    for (int i = 0; i < ly; ++i) EXPECT_EQ(out[at_inc(i, ly, incy)], -y[at_inc(i, ly, incy)]) << i;
  }
}

TEST_F(Cublas, Level1AxpyScalDot) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6}, y = {10, 20, 30, 40, 50, 60};
  Dev<float> dx(x), dy(y);
  const float two = 2.0f;
  ASSERT_EQ(cublasSaxpy(h, 3, &two, dx.p, 2, dy.p, 1), CUBLAS_STATUS_SUCCESS);  // y[0..2] += 2 x[0,2,4]
  EXPECT_EQ(dy.get(), (std::vector<float>{12, 26, 40, 40, 50, 60}));
  ASSERT_EQ(cublasSscal(h, 2, &two, dy.p, 3), CUBLAS_STATUS_SUCCESS);  // y[0], y[3] *= 2
  EXPECT_EQ(dy.get(), (std::vector<float>{24, 26, 40, 80, 50, 60}));
  float dot = -1;
  ASSERT_EQ(cublasSdot(h, 3, dx.p, 1, dx.p, 2, &dot), CUBLAS_STATUS_SUCCESS);  // 1*1 + 2*3 + 3*5
  EXPECT_EQ(dot, 22.0f);
  ASSERT_EQ(cublasSdot(h, 0, dx.p, 1, dx.p, 1, &dot), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(dot, 0.0f);
  // Device pointer mode: the scalar and the result live in device memory.
  Dev<float> d_scalar(std::vector<float>{0.5f});
  ASSERT_EQ(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSscal(h, 6, d_scalar.p, dx.p, 1), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSdot(h, 6, dx.p, 1, dx.p, 1, d_scalar.p), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(d_scalar.get()[0], 91.0f / 4);  // sum of (i/2)^2, i = 1..6
}

}  // namespace
