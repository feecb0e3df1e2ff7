// The emulated cuBLASLt subset's results (emu_cublaslt.cc) against double-precision references: every epilogue on
// fp32, bf16 and bf16-in / fp32-out matrices with both transposes and padded leading dimensions, the ReLU mask's
// round trip (RELU_AUX_BIAS forward, DRELU_BGRAD backward), TF32 rounding, and a matmul captured in a CUDA graph and
// replayed. Argument checks and faults: test_emu_cublaslt_checks.cc.
//
// Tolerances, u = 2^-24 and gamma_j = j u / (1 - j u) (Higham 3.1, any summation order, blocking or FMA): an element
// x = alpha op(A) op(B) + beta C + bias computed in fp32 takes k products, k - 1 sums, the alpha and beta products,
// the beta sum and the bias sum, at most k + 4 roundings, so |x - exact| <= gamma_{k+4} (|alpha| sum_l |a_il b_lj| +
// |beta c_ij| + |bias_i|). ReLU, the mask and DRELU are exact (ReLU is 1-Lipschitz, so the bound carries over). A
// bf16 D adds one rounding of relative size at most 2^-8. A DRELU_BGRAD bias gradient sums n such fp32 values: its
// error is at most sum_j bound_ij + gamma_{n-1} sum_j |x_ij|; BGRADA/B sum k exact inputs: gamma_{k-1} sum |x|; a
// bf16 bias adds 2^-8 relative. The double references' own error (~k 2^-53) is far below these bounds.
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "cublaslt_test_util.h"

namespace {

struct Combo {
  cudaDataType ab, cd;  // A and B; C and D
  const char *name;
};
const Combo kCombos[] = {{CUDA_R_32F, CUDA_R_32F, "fp32"},
                         {CUDA_R_16BF, CUDA_R_16BF, "bf16"},
                         {CUDA_R_16BF, CUDA_R_32F, "bf16in_fp32out"}};

struct Epi {
  cublasLtEpilogue_t e;
  const char *name;
  bool bias, relu, aux_out, drelu, bgrad_d, bgrad_a, bgrad_b;
};
const Epi kEpilogues[] = {
    {CUBLASLT_EPILOGUE_DEFAULT, "DEFAULT", 0, 0, 0, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_BIAS, "BIAS", 1, 0, 0, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_RELU, "RELU", 0, 1, 0, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_RELU_BIAS, "RELU_BIAS", 1, 1, 0, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_RELU_AUX, "RELU_AUX", 0, 1, 1, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_RELU_AUX_BIAS, "RELU_AUX_BIAS", 1, 1, 1, 0, 0, 0, 0},
    {CUBLASLT_EPILOGUE_DRELU, "DRELU", 0, 0, 0, 1, 0, 0, 0},
    {CUBLASLT_EPILOGUE_DRELU_BGRAD, "DRELU_BGRAD", 0, 0, 0, 1, 1, 0, 0},
    {CUBLASLT_EPILOGUE_BGRADA, "BGRADA", 0, 0, 0, 0, 0, 1, 0},
    {CUBLASLT_EPILOGUE_BGRADB, "BGRADB", 0, 0, 0, 0, 0, 0, 1},
};

// gtest prints parameters by these names (ctest lists them).
void PrintTo(const Combo &c, std::ostream *os) { *os << c.name; }
void PrintTo(const Epi &e, std::ostream *os) { *os << e.name; }

// One matmul's inputs on the host: D (m x n) = alpha op(A) op(B) + beta C.
struct Problem {
  HostMat a, b, c;
  cublasOperation_t ta, tb;
  int m, n, k;
  float alpha, beta;
  double opa(int i, int l) const { return ta == CUBLAS_OP_N ? a.at(i, l) : a.at(l, i); }
  double opb(int l, int j) const { return tb == CUBLAS_OP_N ? b.at(l, j) : b.at(j, l); }
};

Problem make_problem(const Combo &cb, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                     float beta, uint32_t seed) {
  const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
  const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
  // Padding of A and B is NaN: reading it would poison the result.
  Problem p{HostMat(ar, ac, ar + 3, cb.ab, kNaN), HostMat(br, bc, br + 5, cb.ab, kNaN),
            HostMat(m, n, m + 2, cb.cd, kPad), ta, tb, m, n, k, alpha, beta};
  Rng rng{seed};
  p.a.fill(rng), p.b.fill(rng), p.c.fill(rng);
  return p;
}

// The expected fp32-stage value of each element of D (after the epilogue, before D's rounding), its tolerance
// (see the top of the file), and the value the ReLU sees (after the bias).
struct Expected {
  std::vector<double> pre, val, tol;
};

Expected reference(const Problem &p, const std::vector<float> &bias, bool relu,
                   const std::vector<unsigned char> *drelu_mask, int64_t aux_ld) {
  Expected x{std::vector<double>((size_t)p.m * p.n), std::vector<double>((size_t)p.m * p.n),
             std::vector<double>((size_t)p.m * p.n)};
  for (int j = 0; j < p.n; ++j)
    for (int i = 0; i < p.m; ++i) {
      double sum = 0, mag = 0;
      for (int l = 0; l < p.k; ++l) {
        sum += p.opa(i, l) * p.opb(l, j);
        mag += fabs(p.opa(i, l) * p.opb(l, j));
      }
      const double b = bias.empty() ? 0.0 : bias[i];
      const double pre = p.alpha * sum + (p.beta == 0.0f ? 0.0 : p.beta * (double)p.c.at(i, j)) + b;
      double val = relu ? fmax(pre, 0.0) : pre;
      if (drelu_mask != nullptr && !mask_bit(*drelu_mask, aux_ld, i, j)) val = 0.0;
      const size_t e = (size_t)j * p.m + i;
      x.pre[e] = pre, x.val[e] = val;
      x.tol[e] = gamma_n(p.k + 4) * (fabs(p.alpha) * mag + fabs(p.beta * p.c.at(i, j)) + fabs(b));
    }
  return x;
}

// D as returned (ld = p.c.ld) against the expectation; padding rows must be D's initial kPad.
void expect_d(const std::vector<float> &d, const Problem &p, const Expected &x) {
  const bool bf16 = p.c.type == CUDA_R_16BF;
  const float pad = as_type(kPad, p.c.type);
  for (int j = 0; j < p.n; ++j)
    for (int i = 0; i < p.c.ld; ++i) {
      const float got = d[(size_t)j * p.c.ld + i];
      if (i >= p.m) {
        EXPECT_EQ(memcmp(&got, &pad, sizeof got), 0) << "padding (" << i << "," << j << ")";
        continue;
      }
      const size_t e = (size_t)j * p.m + i;
      const double tol = x.tol[e] + (bf16 ? kBf16Unit * (fabs(x.val[e]) + x.tol[e]) : 0.0);
      EXPECT_NEAR(got, x.val[e], tol) << "D(" << i << "," << j << ")";
    }
}

// A bias gradient against the double sums `ref` with fp32-stage bounds `tol`, plus bf16's rounding when stored so.
void expect_bias(const std::vector<float> &got, const std::vector<double> &ref, const std::vector<double> &tol,
                 cudaDataType type) {
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    const double t = tol[i] + (type == CUDA_R_16BF ? kBf16Unit * (fabs(ref[i]) + tol[i]) : 0.0);
    EXPECT_NEAR(got[i], ref[i], t) << "bias gradient " << i;
  }
}

// The expected bias gradient of each bias-gradient epilogue.
void expected_grad(const Epi &ep, const Problem &p, const Expected &x, std::vector<double> *ref,
                   std::vector<double> *tol) {
  const int len = ep.bgrad_b ? p.n : p.m;
  ref->assign(len, 0.0), tol->assign(len, 0.0);
  std::vector<double> mag(len, 0.0);
  for (int r = 0; r < len; ++r) {
    if (ep.bgrad_d) {  // sum over the n columns of the masked product
      for (int j = 0; j < p.n; ++j) {
        const size_t e = (size_t)j * p.m + r;
        (*ref)[r] += x.val[e], (*tol)[r] += x.tol[e], mag[r] += fabs(x.val[e]) + x.tol[e];
      }
      (*tol)[r] += gamma_n(p.n - 1) * mag[r];
    } else {  // BGRADA: row r of op(A); BGRADB: column r of op(B); over k
      for (int l = 0; l < p.k; ++l) {
        const double v = ep.bgrad_a ? p.opa(r, l) : p.opb(l, r);
        (*ref)[r] += v, mag[r] += fabs(v);
      }
      (*tol)[r] = gamma_n(p.k - 1) * mag[r];
    }
  }
}

// The RELU_AUX mask: bit (i, j) = (pre > 0) wherever the sign is certain (|pre| beyond the bound); the bits of the
// rows m..ld-1 keep the poison they started with.
void expect_mask(const std::vector<unsigned char> &mask, const std::vector<unsigned char> &poison, int64_t ld,
                 const Problem &p, const Expected &x) {
  int checked = 0;
  for (int j = 0; j < p.n; ++j) {
    for (int i = 0; i < p.m; ++i) {
      const size_t e = (size_t)j * p.m + i;
      if (fabs(x.pre[e]) <= x.tol[e]) continue;
      EXPECT_EQ(mask_bit(mask, ld, i, j), x.pre[e] > 0) << "mask (" << i << "," << j << ")";
      ++checked;
    }
    for (int i = p.m; i < ld; ++i)
      EXPECT_EQ(mask_bit(mask, ld, i, j), mask_bit(poison, ld, i, j)) << "mask padding (" << i << "," << j << ")";
  }
  EXPECT_GT(checked, p.m * p.n / 2);
}

class LtEpilogue : public Lt,
                   public ::testing::WithParamInterface<std::tuple<Epi, Combo, std::pair<int, int>>> {};

TEST_P(LtEpilogue, MatchesDoubleReference) {
  const auto [ep, cb, ops] = GetParam();
  const cublasOperation_t ta = (cublasOperation_t)ops.first, tb = (cublasOperation_t)ops.second;
  const float alpha = ep.bgrad_a || ep.bgrad_b ? 1.0f : 0.75f;  // BGRADA/B: alpha = 1 (emu_cublaslt.cc)
  const Problem p = make_problem(cb, ta, tb, 37, 19, 45, alpha, -0.5f, 11u + ep.e);
  const int64_t aux_ld = 128;
  Rng rng{99};
  std::vector<float> bias(ep.bias ? p.m : 0);
  for (float &v : bias) v = as_type(rng.next(), cb.cd);
  std::vector<unsigned char> mask(aux_ld * p.n / 8);
  for (unsigned char &byte : mask) byte = (unsigned char)(rng.next() * 128 + 128);  // DRELU's input, or poison

  Descs ds(CUBLAS_COMPUTE_32F, ta, tb, ep.e, p.a, p.b, p.c);
  DevBytes da(encode(p.a.v, cb.ab)), db(encode(p.b.v, cb.ab)), dc(encode(p.c.v, cb.cd));
  DevBytes dd(encode(std::vector<float>(p.c.v.size(), kPad), cb.cd)), daux(mask);
  const int bias_len = ep.bgrad_b ? p.n : p.m;
  DevBytes dbias(encode(ep.bias ? bias : std::vector<float>(bias_len, kNaN), cb.cd));
  if (ep.bias || ep.bgrad_d || ep.bgrad_a || ep.bgrad_b) ds.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, dbias.p);
  if (ep.aux_out || ep.drelu) {
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, daux.p);
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld);
  }
  ASSERT_EQ(run_matmul(h, ds, p.alpha, da.p, db.p, p.beta, dc.p, dd.p), CUBLAS_STATUS_SUCCESS);

  const Expected x = reference(p, bias, ep.relu, ep.drelu ? &mask : nullptr, aux_ld);
  expect_d(decode(dd.get(), cb.cd), p, x);
  if (ep.aux_out) expect_mask(daux.get(), mask, aux_ld, p, x);
  if (ep.drelu) {
    EXPECT_EQ(daux.get(), mask);  // an input: untouched
  }
  if (ep.bgrad_d || ep.bgrad_a || ep.bgrad_b) {
    std::vector<double> ref, tol;
    expected_grad(ep, p, x, &ref, &tol);
    expect_bias(decode(dbias.get(), cb.cd), ref, tol, cb.cd);
  }
}

std::string epilogue_name(const ::testing::TestParamInfo<LtEpilogue::ParamType> &info) {
  const auto &[ep, cb, ops] = info.param;
  const char *names = "NTC";
  return std::string(ep.name) + "_" + cb.name + "_" + names[ops.first] + names[ops.second];
}

INSTANTIATE_TEST_SUITE_P(All, LtEpilogue,
                         ::testing::Combine(::testing::ValuesIn(kEpilogues), ::testing::ValuesIn(kCombos),
                                            ::testing::Values(std::pair<int, int>{CUBLAS_OP_N, CUBLAS_OP_T},
                                                              std::pair<int, int>{CUBLAS_OP_T, CUBLAS_OP_N})),
                         epilogue_name);

// ---- the ReLU mask's round trip -----------------------------------------------------------------------------------

// A layer's forward H = relu(W1 X + b1) with RELU_AUX_BIAS writes the mask; the backward of the next GEMM,
// G = W2^T dY, with DRELU_BGRAD and that mask gives dZ = G * [H > 0] and db = sum over the batch of dZ. Nothing here
// looks inside the mask: it is only handed from one matmul to the other, as on a GPU. m = 130 rows need aux ld 256.
class LtRoundTrip : public Lt, public ::testing::WithParamInterface<Combo> {};

TEST_P(LtRoundTrip, ForwardMaskDrivesBackward) {
  const Combo cb = GetParam();
  const int hidden = 130, in = 33, batch = 24, out = 17;
  const int64_t aux_ld = 256;
  DevBytes daux(aux_ld * batch / 8);
  // Forward: W1 (hidden x in) X (in x batch) + b1.
  const Problem fw = make_problem(cb, CUBLAS_OP_N, CUBLAS_OP_N, hidden, batch, in, 1.0f, 0.0f, 5u);
  Rng rng{6};
  std::vector<float> b1(hidden);
  for (float &v : b1) v = as_type(rng.next(), cb.cd);
  DevBytes dw1(encode(fw.a.v, cb.ab)), dx(encode(fw.b.v, cb.ab)), db1(encode(b1, cb.cd));
  DevBytes dh(encode(std::vector<float>(fw.c.v.size(), kPad), cb.cd));
  {
    Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_RELU_AUX_BIAS, fw.a, fw.b, fw.c);
    ds.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, db1.p);
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, daux.p);
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld);
    ASSERT_EQ(run_matmul(h, ds, 1.0f, dw1.p, dx.p, 0.0f, dh.p, dh.p), CUBLAS_STATUS_SUCCESS);
  }
  const std::vector<float> hout = decode(dh.get(), cb.cd);
  // Backward: op(A) = W2^T with W2 stored out x hidden, dY out x batch; k = out.
  const Problem bw = make_problem(cb, CUBLAS_OP_T, CUBLAS_OP_N, hidden, batch, out, 1.0f, 0.0f, 7u);
  DevBytes dw2(encode(bw.a.v, cb.ab)), ddy(encode(bw.b.v, cb.ab)), ddb(encode(std::vector<float>(hidden), cb.cd));
  DevBytes ddz(encode(std::vector<float>(bw.c.v.size(), kPad), cb.cd));
  {
    Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_T, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DRELU_BGRAD, bw.a, bw.b, bw.c);
    ds.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, ddb.p);
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, daux.p);
    ds.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld);
    ASSERT_EQ(run_matmul(h, ds, 1.0f, dw2.p, ddy.p, 0.0f, ddz.p, ddz.p), CUBLAS_STATUS_SUCCESS);
  }
  // The reference mask is H > 0 (a positive fp32 value stays positive in bf16: same exponent range).
  Expected x = reference(bw, {}, false, nullptr, 0);
  int active = 0;
  for (int j = 0; j < batch; ++j)
    for (int i = 0; i < hidden; ++i) {
      const bool on = hout[(size_t)j * fw.c.ld + i] > 0.0f;
      if (!on) x.val[(size_t)j * hidden + i] = 0.0;
      active += on;
    }
  EXPECT_GT(active, hidden * batch / 4);
  EXPECT_LT(active, hidden * batch * 3 / 4);
  const std::vector<float> dz = decode(ddz.get(), cb.cd);
  expect_d(dz, bw, x);
  for (int j = 0; j < batch; ++j)  // masked entries are exactly zero
    for (int i = 0; i < hidden; ++i)
      if (!(hout[(size_t)j * fw.c.ld + i] > 0.0f)) {
        EXPECT_EQ(dz[(size_t)j * bw.c.ld + i], 0.0f) << i << "," << j;
      }
  std::vector<double> ref, tol;
  expected_grad(kEpilogues[7], bw, x, &ref, &tol);
  expect_bias(decode(ddb.get(), cb.cd), ref, tol, cb.cd);
}

INSTANTIATE_TEST_SUITE_P(Types, LtRoundTrip, ::testing::ValuesIn(kCombos),
                         [](const ::testing::TestParamInfo<Combo> &info) { return std::string(info.param.name); });

// ---- TF32 --------------------------------------------------------------------------------------------------------

// CUBLAS_COMPUTE_32F_FAST_TF32 rounds fp32 A and B to TF32 (10 explicit mantissa bits, nearest even) before the
// product; CUBLAS_COMPUTE_32F does not. Row i of A is the constant r_i, B is all ones, k = 8, so D(i, j) = 8 r_i
// exactly in fp32, and 8 tf32(r_i) with TF32: 1 + 2^-12 -> 1; 1 + 2^-11 (a tie) -> 1 (even); 1 + 3 2^-11 (a tie)
// -> 1 + 2^-9 (even); 1 + 2^-10 stays.
TEST_F(Lt, FastTf32RoundsTheInputs) {
  const int m = 4, n = 3, k = 8;
  const float r[m] = {1 + 0x1p-12f, 1 + 0x1p-11f, 1 + 3 * 0x1p-11f, 1 + 0x1p-10f};
  const float tf32[m] = {1.0f, 1.0f, 1 + 0x1p-9f, 1 + 0x1p-10f};
  HostMat a(m, k, m, CUDA_R_32F, 0.0f), b(k, n, k, CUDA_R_32F, 1.0f), c(m, n, m, CUDA_R_32F, 0.0f);
  for (int l = 0; l < k; ++l)
    for (int i = 0; i < m; ++i) a.at(i, l) = r[i];
  DevBytes da(encode(a.v, CUDA_R_32F)), db(encode(b.v, CUDA_R_32F)), dd(encode(c.v, CUDA_R_32F));
  for (const bool fast : {false, true}) {
    SCOPED_TRACE(fast ? "FAST_TF32" : "32F");
    Descs ds(fast ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N,
             CUBLASLT_EPILOGUE_DEFAULT, a, b, c);
    ASSERT_EQ(run_matmul(h, ds, 1.0f, da.p, db.p, 0.0f, dd.p, dd.p), CUBLAS_STATUS_SUCCESS);
    const std::vector<float> d = decode(dd.get(), CUDA_R_32F);
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) EXPECT_EQ(d[(size_t)j * m + i], 8 * (fast ? tf32[i] : r[i])) << i << "," << j;
  }
}

// ---- graph capture -----------------------------------------------------------------------------------------------

// A configuration run once outside capture can be captured; the graph reads A when it runs (here, after A changed),
// alpha when cublasLtMatmul was called (host pointer mode), and each replay runs the matmul again.
TEST_F(Lt, CapturedMatmulReplays) {
  const Problem p = make_problem(kCombos[1], CUBLAS_OP_N, CUBLAS_OP_N, 6, 5, 4, 2.0f, 0.0f, 3u);
  Problem p2 = p;
  Rng rng{4};
  p2.a.fill(rng);
  std::vector<float> bias(p.m);
  for (float &v : bias) v = as_type(rng.next(), CUDA_R_16BF);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  DevBytes da(encode(p.a.v, CUDA_R_16BF)), db(encode(p.b.v, CUDA_R_16BF)), dbias(encode(bias, CUDA_R_16BF));
  const std::vector<unsigned char> padded = encode(std::vector<float>(p.c.v.size(), kPad), CUDA_R_16BF);
  DevBytes dd(padded), ws(1 << 20);
  Descs ds(CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_RELU_BIAS, p.a, p.b, p.c);
  ds.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, dbias.p);
  ASSERT_EQ(run_matmul(h, ds, p.alpha, da.p, db.p, 0.0f, dd.p, dd.p, s), CUBLAS_STATUS_SUCCESS);  // warm-up
  dd.put(padded);
  float alpha = p.alpha, beta = 0.0f;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cublasLtMatmul(h, ds.op, &alpha, da.p, ds.a, db.p, ds.b, &beta, dd.p, ds.c, dd.p, ds.d, nullptr, ws.p,
                           ws.n, s),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT_EQ(dd.get(), padded);  // recorded, not run
  alpha = -1.0f;                // too late: read at the call
  for (const Problem *now : {(const Problem *)&p2, &p}) {
    da.put(encode(now->a.v, CUDA_R_16BF));
    // A pageable cudaMemcpy may write the device after it returns, ordered on the legacy stream only; s is
    // non-blocking, so wait for the copy before the launch (CUDA_EMU_ASYNC=1 shows the race otherwise).
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    expect_d(decode(dd.get(), CUDA_R_16BF), *now, reference(*now, bias, true, nullptr, 0));
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

}  // namespace
