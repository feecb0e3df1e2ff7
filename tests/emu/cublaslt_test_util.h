// Helpers shared by the emulated cuBLASLt's tests (test_emu_cublaslt.cc, test_emu_cublaslt_checks.cc): fp32 / bf16
// matrices and their device copies, the descriptors of one matmul, one cublasLtMatmul call through the heuristic, and
// the fixture that owns a handle.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "cuvae/bf16.h"

const float kNaN = nanf("");
const float kPad = 1234.5f;  // fills the padding rows of D, which must come back untouched

// The nearest value of type t (bf16: round to nearest even), so that host data is exactly what the device holds.
inline float as_type(float x, cudaDataType t) {
  return t == CUDA_R_16BF ? cuvae_bf16_to_float(cuvae_bf16_from_float(x)) : x;
}

// Bytes of `v` stored as type t.
inline std::vector<unsigned char> encode(const std::vector<float> &v, cudaDataType t) {
  const size_t w = t == CUDA_R_16BF ? 2 : 4;
  std::vector<unsigned char> out(v.size() * w);
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == CUDA_R_16BF) {
      const uint16_t h = cuvae_bf16_from_float(v[i]);
      memcpy(&out[i * w], &h, w);
    } else {
      memcpy(&out[i * w], &v[i], w);
    }
  }
  return out;
}

inline std::vector<float> decode(const std::vector<unsigned char> &b, cudaDataType t) {
  const size_t w = t == CUDA_R_16BF ? 2 : 4;
  std::vector<float> out(b.size() / w);
  for (size_t i = 0; i < out.size(); ++i) {
    if (t == CUDA_R_16BF) {
      uint16_t h;
      memcpy(&h, &b[i * w], w);
      out[i] = cuvae_bf16_to_float(h);
    } else {
      memcpy(&out[i], &b[i * w], w);
    }
  }
  return out;
}

// Deterministic values in [-1, 1).
struct Rng {
  uint32_t s;
  float next() {
    s = s * 1664525u + 1013904223u;
    return (float)(s >> 8) / (float)(1u << 23) - 1.0f;
  }
};

// A column-major rows x cols matrix of type `type` with leading dimension ld; entries below row `rows` are padding.
struct HostMat {
  int rows, cols, ld;
  cudaDataType type;
  std::vector<float> v;
  HostMat(int r, int c, int ld_, cudaDataType t, float pad)
      : rows(r), cols(c), ld(ld_), type(t), v((size_t)ld_ * (c > 0 ? c : 1), pad) {}
  float &at(int i, int j) { return v[(size_t)j * ld + i]; }
  float at(int i, int j) const { return v[(size_t)j * ld + i]; }
  void fill(Rng &rng) {
    for (int j = 0; j < cols; ++j)
      for (int i = 0; i < rows; ++i) at(i, j) = as_type(rng.next(), type);
  }
};

// A cudaMalloc'd byte buffer (the emulated cuBLASLt requires device memory, like the real one).
struct DevBytes {
  void *p = nullptr;
  size_t n;
  explicit DevBytes(size_t n_) : n(n_) { EXPECT_EQ(cudaMalloc(&p, n ? n : 1), cudaSuccess); }
  explicit DevBytes(const std::vector<unsigned char> &h) : DevBytes(h.size()) { put(h); }
  ~DevBytes() { cudaFree(p); }
  DevBytes(const DevBytes &) = delete;
  DevBytes &operator=(const DevBytes &) = delete;
  void put(const std::vector<unsigned char> &h) {
    ASSERT_EQ(h.size(), n);
    ASSERT_EQ(cudaMemcpy(p, h.data(), n, cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<unsigned char> get() const {
    std::vector<unsigned char> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

// The descriptors of one matmul: operation (compute type, transposes, epilogue) and the four layouts.
struct Descs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  Descs(cublasComputeType_t compute, cublasOperation_t ta, cublasOperation_t tb, cublasLtEpilogue_t epilogue,
        const HostMat &ha, const HostMat &hb, const HostMat &hc) {
    EXPECT_EQ(cublasLtMatmulDescCreate(&op, compute, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    set(CUBLASLT_MATMUL_DESC_TRANSA, (int32_t)ta);
    set(CUBLASLT_MATMUL_DESC_TRANSB, (int32_t)tb);
    set(CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)epilogue);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&a, ha.type, ha.rows, ha.cols, ha.ld), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&b, hb.type, hb.rows, hb.cols, hb.ld), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&c, hc.type, hc.rows, hc.cols, hc.ld), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&d, hc.type, hc.rows, hc.cols, hc.ld), CUBLAS_STATUS_SUCCESS);
  }
  ~Descs() {
    EXPECT_EQ(cublasLtMatmulDescDestroy(op), CUBLAS_STATUS_SUCCESS);
    for (cublasLtMatrixLayout_t l : {a, b, c, d}) EXPECT_EQ(cublasLtMatrixLayoutDestroy(l), CUBLAS_STATUS_SUCCESS);
  }
  Descs(const Descs &) = delete;
  Descs &operator=(const Descs &) = delete;
  template <class T>
  void set(cublasLtMatmulDescAttributes_t attr, const T &value) {
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(op, attr, &value, sizeof value), CUBLAS_STATUS_SUCCESS) << attr;
  }
};

// One matmul through the heuristic (a 4 MiB workspace allowed), on `stream`: D = alpha op(A) op(B) + beta C.
inline cublasStatus_t run_matmul(cublasLtHandle_t h, const Descs &ds, float alpha, const void *a, const void *b,
                                 float beta, const void *c, void *d, cudaStream_t stream = nullptr) {
  cublasLtMatmulPreference_t pref;
  EXPECT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
  const uint64_t max_ws = 4 << 20;
  EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws,
                                                 sizeof max_ws),
            CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t result;
  int count = 0;
  cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h, ds.op, ds.a, ds.b, ds.c, ds.d, pref, 1, &result, &count);
  EXPECT_EQ(cublasLtMatmulPreferenceDestroy(pref), CUBLAS_STATUS_SUCCESS);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  EXPECT_EQ(count, 1);
  EXPECT_LE(result.workspaceSize, max_ws);
  DevBytes ws(max_ws);
  s = cublasLtMatmul(h, ds.op, &alpha, a, ds.a, b, ds.b, &beta, c, ds.c, d, ds.d, &result.algo, ws.p, max_ws,
                     stream);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  return s;
}

// Bit (i, j) of a ReLU mask with leading dimension ld in the emulation's layout (emu_cublaslt.cc): bit (j ld + i) % 8
// of byte (j ld + i) / 8. Only the emulation's own tests may look inside a mask; on a GPU it is opaque.
inline bool mask_bit(const std::vector<unsigned char> &mask, int64_t ld, int i, int j) {
  const size_t bit = (size_t)j * (size_t)ld + (size_t)i;
  return (mask[bit / 8] >> (bit % 8)) & 1u;
}

inline double gamma_n(int n) {  // Higham's gamma_n for fp32: n u / (1 - n u), u = 2^-24
  const double u = ldexp(1.0, -24);
  return n * u / (1 - n * u);
}
const double kBf16Unit = 1.0 / 256;  // bf16's unit roundoff 2^-8 (8 significand bits)

class Lt : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS); }
  void TearDown() override { EXPECT_EQ(cublasLtDestroy(h), CUBLAS_STATUS_SUCCESS); }
  cublasLtHandle_t h = nullptr;
};
