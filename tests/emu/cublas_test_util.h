// Helpers shared by the emulated cuBLAS's tests (test_emu_cublas.cc, test_emu_cublas_checks.cc): padded
// column-major matrices, deterministic inputs, device copies, the GEMM check against a double reference and the
// fixture that owns a handle.
//
// Tolerance of a GEMM element (fp32 inputs and fp32 accumulation in any order): the k products, the k - 1 sums,
// the alpha product and the beta update are k + 2 roundings of relative size at most u = 2^-24, so
// |out - exact| <= gamma_{k+2} (|alpha| sum_l |a_il||b_lj| + |beta||c_ij|), gamma_n = n u / (1 - n u) (Higham 3.1:
// any order, blocking or FMA). The reference is computed in double (its own error, ~k 2^-53 relative, is below the
// second-order terms gamma already covers).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <vector>

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

inline void fill(Mat &m, Rng &rng, bool integers = false) {
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

inline float op_at(const Mat &x, cublasOperation_t op, int i, int j) {
  return op == CUBLAS_OP_N ? x.at(i, j) : x.at(j, i);
}

// Checks C (as returned, ld = c0.ld) against alpha op(A) op(B) + beta C0 computed in double, within the tolerance
// explained above; padding rows must equal c0's bit for bit.
inline void expect_gemm(const std::vector<float> &out, const Mat &a, cublasOperation_t ta, const Mat &b,
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

inline bool bitwise_equal(const std::vector<float> &x, const std::vector<float> &y) {
  return x.size() == y.size() && memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}
