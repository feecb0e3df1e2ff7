// The emulated cuBLAS subset (emu_cublas.cc) against naive loops: every transpose combination with padded
// leading dimensions, the scalar rules (beta == 0 never reads C, alpha == 0 / k == 0 never read A or B), strided
// batches, cublasGemmEx, TF32, pointer modes under graph capture, cuBLAS's status codes, and the lazy-initialisation
// check (a handle's first use, or a GEMM shape's, inside stream capture is reported).
//
// Tolerance of a GEMM element (fp32 inputs and fp32 accumulation in any order): the k products, the k - 1 sums,
// the alpha product and the beta update are k + 2 roundings of relative size at most u = 2^-24, so
// |out - exact| <= gamma_{k+2} (|alpha| sum_l |a_il||b_lj| + |beta||c_ij|), gamma_n = n u / (1 - n u) (Higham 3.1:
// any order, blocking or FMA). The reference is computed in double (its own error, ~k 2^-53 relative, is below the
// second-order terms gamma already covers).
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

namespace {

const float kNaN = nanf("");
const float kPad = 1234.5f;  // fills the padding of C, which must come back untouched
const float kOne = 1.0f;

// A column-major rows x cols matrix with leading dimension ld >= rows; entries below row `rows` are padding.
struct Mat {
  int rows, cols, ld;
  std::vector<float> v;
  Mat(int r, int c, int ld_, float pad) : rows(r), cols(c), ld(ld_), v((size_t)ld_ * (c > 0 ? c : 1), pad) {}
  float &at(int i, int j) { return v[(size_t)j * ld + i]; }
  float at(int i, int j) const { return v[(size_t)j * ld + i]; }
};

// Deterministic values in [-1, 1] (integers in [-4, 4] when `integers`, so sums of products are exact in fp32).
struct Rng {
  uint32_t s;
  float next(bool integers) {
    s = s * 1664525u + 1013904223u;
    return integers ? (float)((int)(s >> 29) - 4) : (float)(s >> 8) / (float)(1u << 23) - 1.0f;
  }
};

void fill(Mat &m, Rng &rng, bool integers = false) {
  for (int j = 0; j < m.cols; ++j)
    for (int i = 0; i < m.rows; ++i) m.at(i, j) = rng.next(integers);
}

// A cudaMalloc'd copy of a host vector (the emulated cuBLAS requires device memory, like the real one).
template <class T>
struct Dev {
  T *p = nullptr;
  size_t n;
  explicit Dev(size_t n_) : n(n_) { EXPECT_EQ(cudaMalloc((void **)&p, n * sizeof(T)), cudaSuccess); }
  explicit Dev(const std::vector<T> &h) : Dev(h.size()) { put(h); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev &) = delete;
  Dev &operator=(const Dev &) = delete;
  void put(const std::vector<T> &h) {
    ASSERT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

float op_at(const Mat &x, cublasOperation_t op, int i, int j) { return op == CUBLAS_OP_N ? x.at(i, j) : x.at(j, i); }

// Checks C (as returned, ld = c0.ld) against alpha op(A) op(B) + beta C0 computed in double, within the tolerance
// explained at the top; padding rows must equal c0's bit for bit.
void expect_gemm(const std::vector<float> &out, const Mat &a, cublasOperation_t ta, const Mat &b,
                 cublasOperation_t tb, const Mat &c0, int k, float alpha, float beta, float tol_scale = 1.0f) {
  for (int j = 0; j < c0.cols; ++j) {
    for (int i = 0; i < c0.ld; ++i) {
      const float got = out[(size_t)j * c0.ld + i];
      if (i >= c0.rows) {
        EXPECT_EQ(memcmp(&got, &c0.v[(size_t)j * c0.ld + i], sizeof got), 0) << "padding (" << i << "," << j << ")";
        continue;
      }
      double sum = 0, mag = 0;
      for (int l = 0; l < k; ++l) {
        const double p = (double)op_at(a, ta, i, l) * op_at(b, tb, l, j);
        sum += p;
        mag += fabs(p);
      }
      const double ref = alpha * sum + (beta == 0.0f ? 0.0 : beta * (double)c0.at(i, j));
      const double u = ldexp(1.0, -24), gamma = (k + 2) * u / (1 - (k + 2) * u);
      const double tol = tol_scale * gamma * (fabs(alpha) * mag + fabs(beta * c0.at(i, j)));
      EXPECT_NEAR(got, ref, tol) << "C(" << i << "," << j << ")";
    }
  }
}

class Cublas : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS); }
  void TearDown() override { EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS); }
  cublasHandle_t h = nullptr;
};

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

bool bitwise_equal(const std::vector<float> &x, const std::vector<float> &y) {
  return x.size() == y.size() && memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
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
