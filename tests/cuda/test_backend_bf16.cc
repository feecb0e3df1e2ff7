// [train] precision = bf16 (docs/MATH.md (8.2)): the CUDA backend (cuBLASLt with bf16 operands, built against the
// emulation) against the CPU backend in bf16 (oneDNN): training steps, evaluation, encode / decode and IWAE; the
// captured graph against eager launches; bf16 in effect (not fp32's results).
//
// Tolerances, from (8.3): each side's bf16 GEMM entry is within (2 u16 + u16^2 + gamma_K) S of the exact product of
// its fp32 operands (S = sum_k |a_k| |b_k|, u16 = 2^-8, u = 2^-24, gamma_K = K u / (1 - K u)), so the two sides'
// entries are within G = 2 (2 u16 + u16^2 + gamma_K) S of each other when their fp32 operands agree, plus the
// difference of those operands (S-weighted) when they do not. At step 0 the parameters and data are the same bits,
// so the first GEMM's operands are identical; later ones inherit the differences. With K <= 32 (gamma_32 = 1.9e-6),
// G = 0.01566 S. Along the forward's longest path (n_enc + n_dec GEMMs; the activations are 1-Lipschitz) the
// loss's terms move by <= (n_enc + n_dec) G of their magnitude sums, plus the fp32 differences of the fp32 test
// (test_backend_parity.cc: <= 60u; 1e-5 + 1e-4 |loss| covers them); the losses are sums of non-negative terms, so
// with the magnitude <= the loss (the fp32 test's condition) |dloss| <= (n_enc + n_dec) G |loss| + 1e-5 + 1e-4 |loss|.
// Gradients: the forward's and the backward's 2 (n_enc + n_dec) GEMMs, each <= G of its magnitude sum, which is
// <= 0.4 max|g| (parity_util.h's condition): atol 0.8 (n_enc + n_dec) G max|g| per tensor. Parameters after one
// Adam step: p' = p - lr g / (|g| + eps) moves by <= 2 lr where dg flips the sign of a small g, plus the rounding
// 2u (|p| + lr). The worst case of (8.3) needs every rounding of both sides to go opposite ways; the two sides
// round the same fp32 numbers to the same bf16 numbers except near a rounding boundary, so the measured differences
// are far smaller (printed; under emulation: see the asserts' comments). Steps after the first use the step-0
// bounds: the growth condition of the fp32 test (its 20-step drift stayed within 4x) is assumed. A wrong gradient,
// noise offset or fp32 GEMM in place of bf16 moves the losses by O(1) relative or the gradients by O(max|g|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "parity_util.h"
#include "test_util.h"

namespace {

using namespace cuvae_parity;

const double kU = std::ldexp(1.0, -24), kU16 = std::ldexp(1.0, -8);

// (8.3) for two sides, K <= 32: G = 2 (2 u16 + u16^2 + gamma_32) of the magnitude sum.
double gemm_gap() {
  const double gamma = 32 * kU / (1 - 32 * kU);
  return 2 * (2 * kU16 + kU16 * kU16 + gamma);
}

void to_bf16(cuvae_config *c) { c->precision = CUVAE_PRECISION_BF16; }

// The CPU backend runs bf16 only on bf16 units (AMX / AVX512-BF16); elsewhere the comparison cannot run.
bool cpu_has_bf16(std::string *why) {
  char desc[256];
  if (cuvae_cpu_bf16_gemm_check(desc, sizeof desc) == 0) return true;
  *why = cuvae_last_error();
  return false;
}

struct Pair {
  Fixture f;
  cuvae_backend *cpu = nullptr, *gpu = nullptr;
  explicit Pair(const Case &c) : f(c, to_bf16) {
    cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
    gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
    EXPECT_NE(cpu, nullptr) << cuvae_last_error();
    EXPECT_NE(gpu, nullptr) << cuvae_last_error();
  }
  ~Pair() {
    if (cpu) cpu->destroy(cpu);
    if (gpu) gpu->destroy(gpu);
  }
  int gemms_forward() const { return f.m.n_enc + f.m.n_dec; }
};

// Steps [t0, t1): per-step losses and every gradient tensor within the bf16 bounds (file comment).
void run_bf16(const Case &c, Pair &s, int64_t t0, int64_t t1) {
  const double loss_rel = s.gemms_forward() * gemm_gap() + 1e-4;
  const double grad_atol = 0.8 * s.gemms_forward() * gemm_gap();
  double worst_loss = 0.0, worst_grad = 0.0;
  for (int64_t t = t0; t < t1; t++) {
    const std::vector<uint32_t> rows = rows_of(c, s.f.cfg.seed, t);
    cuvae_step_result rc, rg;
    ASSERT_EQ(cuvae_backend_step(s.cpu, rows.data(), c.B, t, &rc), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(s.gpu, rows.data(), c.B, t, &rg), 0) << cuvae_last_error();
    const double dl = std::fabs(rc.loss.nelbo - rg.loss.nelbo);
    EXPECT_LE(dl, 1e-5 + loss_rel * std::fabs(rc.loss.nelbo)) << c.name << " step " << t;
    EXPECT_LE(std::fabs(rc.loss.kl - rg.loss.kl), 1e-5 + loss_rel * std::fabs(rc.loss.kl)) << c.name << " step " << t;
    worst_loss = std::max(worst_loss, dl / std::max(1.0, std::fabs(rc.loss.nelbo)));
    std::vector<float> gc(s.f.m.n_params), gg(s.f.m.n_params);
    ASSERT_EQ(s.cpu->get_grad(s.cpu, gc.data()), 0);
    ASSERT_EQ(s.gpu->get_grad(s.gpu, gg.data()), 0);
    for (int i = 0; i < s.f.m.n_tensors; i++) {
      const cuvae_tensor &tn = s.f.m.tensors[i];
      const std::vector<float> a(gc.begin() + tn.offset, gc.begin() + tn.offset + tn.count);
      const std::vector<float> b(gg.begin() + tn.offset, gg.begin() + tn.offset + tn.count);
      const double scale = max_abs(a);
      bool ok;
      const double d = max_diff(a, b, grad_atol * scale, 0.0, &ok);
      EXPECT_TRUE(ok) << c.name << " step " << t << ": gradient " << tn.name << " differs by up to " << d
                      << " (max |g| " << scale << ", bound " << grad_atol << " max|g|)";
      worst_grad = std::max(worst_grad, scale > 0 ? d / scale : d);
    }
  }
  std::printf("[bf16 %s steps %lld..%lld] max rel |dloss| %.3g (bound %.3g)  max |dg|/max|g| %.3g (bound %.3g)\n",
              c.name, (long long)t0, (long long)t1 - 1, worst_loss, loss_rel, worst_grad, grad_atol);
}

class ParityBf16 : public ::testing::TestWithParam<Case> {};

TEST_P(ParityBf16, TrainingStepsAgreeWithTheCpuBackendInBf16) {
  std::string why;
  if (!cpu_has_bf16(&why)) GTEST_SKIP() << "the CPU backend cannot run bf16 here: " << why;
  const Case c = GetParam();
  Pair s(c);
  ASSERT_TRUE(s.cpu && s.gpu);
  const size_t n = s.f.m.n_params;
  run_bf16(c, s, 0, 1);
  // One Adam step: |dp| <= 2 lr where a gradient's sign flips, + 2u (|p| + lr) (file comment).
  const State a = state_of(s.cpu, n), b = state_of(s.gpu, n);
  bool ok;
  const double dp = max_diff(a.p, b.p, 2 * s.f.cfg.lr + 2 * kU * (1 + s.f.cfg.lr), 0.0, &ok);
  EXPECT_TRUE(ok) << "parameters after one step differ by up to " << dp;
  std::printf("[bf16 %s after 1 step] max |dp| %.3g (bound 2 lr = %.3g)\n", c.name, dp, 2.0 * s.f.cfg.lr);
  run_bf16(c, s, 1, c.steps);
  // evaluate(): the forward bound.
  cuvae_loss ec, eg;
  ASSERT_EQ(s.cpu->evaluate(s.cpu, &s.f.ds, s.f.cfg.eval_batch_size, &ec), 0) << cuvae_last_error();
  ASSERT_EQ(s.gpu->evaluate(s.gpu, &s.f.ds, s.f.cfg.eval_batch_size, &eg), 0) << cuvae_last_error();
  const double loss_rel = s.gemms_forward() * gemm_gap() + 1e-4;
  EXPECT_LE(std::fabs(ec.nelbo - eg.nelbo), 1e-5 + loss_rel * std::fabs(ec.nelbo));
  std::printf("[bf16 %s] evaluate: cpu %.9g cuda %.9g (diff %.3g)\n", c.name, ec.nelbo, eg.nelbo,
              std::fabs(ec.nelbo - eg.nelbo));
}

INSTANTIATE_TEST_SUITE_P(
    Models, ParityBf16,
    ::testing::Values(Case{"bernoulli", 30, 2, 12, 10, 3, 32, 256, 8, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f},
                      Case{"gaussian_tanh_clip", 16, 2, 12, 10, 3, 32, 256, 8, CUVAE_LIK_GAUSSIAN, CUVAE_ACT_TANH,
                           1.0f}),
    [](const ::testing::TestParamInfo<Case> &i) { return std::string(i.param.name); });

const Case kSmall{"small", 16, 2, 12, 10, 3, 32, 256, 10, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f};

// bf16 with separate epilogues (cuda_choose_epilogues): the GEMM writes the fp32 sums, bias_act_forward_cuda adds the
// bias and applies the activation, to_bf16_cuda rounds y once, as the fused epilogue's bf16 D does; the ReLU gradient
// from y, the bias gradient from the fp32 d, as on the CPU. The same bounds (file comment).
TEST(Bf16, SeparateEpiloguesAgreeWithTheCpuBackend) {
  std::string why;
  if (!cpu_has_bf16(&why)) GTEST_SKIP() << "the CPU backend cannot run bf16 here: " << why;
  cuvae_test::EnvGuard separate("CUVAE_CUDA_EPILOGUES", "separate");
  Pair s(kSmall);
  ASSERT_TRUE(s.cpu && s.gpu);
  EXPECT_NE(std::string(s.gpu->gemm).find("cuBLASLt bf16; bias, activation, bias gradient in separate kernels"),
            std::string::npos)
      << s.gpu->gemm;
  run_bf16(kSmall, s, 0, 4);
}

// bf16 is in effect on both backends: their step-0 losses are closer to each other than either is to the fp32
// loss. The fp32 - bf16 gap is the operands' rounding itself (~u16 of the magnitude per GEMM, the same sign for
// both backends); the backends' gap is only where their roundings differ.
TEST(Bf16, BothBackendsRoundTheGemmOperands) {
  std::string why;
  if (!cpu_has_bf16(&why)) GTEST_SKIP() << "the CPU backend cannot run bf16 here: " << why;
  Pair s(kSmall);
  Fixture f32(kSmall);
  cuvae_backend *gpu32 = cuvae_backend_cuda_create(&f32.m, &f32.cfg, &f32.ds, &f32.ds);
  ASSERT_TRUE(s.cpu && s.gpu && gpu32) << cuvae_last_error();
  const std::vector<uint32_t> rows = rows_of(kSmall, s.f.cfg.seed, 0);
  cuvae_step_result rc, rg, r32;
  ASSERT_EQ(cuvae_backend_step(s.cpu, rows.data(), kSmall.B, 0, &rc), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_step(s.gpu, rows.data(), kSmall.B, 0, &rg), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_step(gpu32, rows.data(), kSmall.B, 0, &r32), 0) << cuvae_last_error();
  const double backends = std::fabs(rc.loss.nelbo - rg.loss.nelbo);
  const double precisions = std::fabs(rg.loss.nelbo - r32.loss.nelbo);
  EXPECT_GT(precisions, 0.0);
  EXPECT_LT(backends, precisions) << "cuda bf16 " << rg.loss.nelbo << ", cpu bf16 " << rc.loss.nelbo
                                  << ", cuda fp32 " << r32.loss.nelbo;
  std::printf("step-0 nelbo: cpu bf16 %.9g  cuda bf16 %.9g  cuda fp32 %.9g\n", rc.loss.nelbo, rg.loss.nelbo,
              r32.loss.nelbo);
  gpu32->destroy(gpu32);
}

// The captured graph of a bf16 step (its conversions, bf16 epilogues and the Adam kernel's bf16 weights) replays
// the eager launches bit for bit; 8 steps, collected every 3.
TEST(Bf16, GraphReplayEqualsEager) {
  Fixture f(kSmall, to_bf16);
  f.cfg.log_every = 3;
  cuvae_config eager_cfg = f.cfg;
  eager_cfg.cuda_graph = 0;
  cuvae_backend *graph = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *eager = cuvae_backend_cuda_create(&f.m, &eager_cfg, &f.ds, &f.ds);
  ASSERT_TRUE(graph && eager) << cuvae_last_error();
  for (int64_t t = 0; t < 8; t++) {
    const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, t);
    cuvae_step_result a, b;
    ASSERT_EQ(cuvae_backend_step(graph, rows.data(), kSmall.B, t, &a), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(eager, rows.data(), kSmall.B, t, &b), 0) << cuvae_last_error();
    EXPECT_EQ(a.loss.nelbo, b.loss.nelbo) << "step " << t;
    EXPECT_EQ(a.grad_norm, b.grad_norm) << "step " << t;
  }
  const State a = state_of(graph, f.m.n_params), b = state_of(eager, f.m.n_params);
  EXPECT_EQ(a.p, b.p);
  EXPECT_EQ(a.m, b.m);
  EXPECT_EQ(a.v, b.v);
  graph->destroy(graph);
  eager->destroy(eager);
}

// encode, decode and IWAE in bf16 against the CPU backend's, after set_state (which refreshes the bf16 weights):
// the forward bound, (n_enc or n_dec GEMMs) G of the outputs' magnitude sums, which the O(1) outputs' scale bounds
// (<= 1 + |value|); IWAE's log p(x) is 1-Lipschitz in the log-weights (test_backend_iwae.cc): the forward bound.
TEST(Bf16, EncodeDecodeIwaeAgreeWithTheCpuBackend) {
  std::string why;
  if (!cpu_has_bf16(&why)) GTEST_SKIP() << "the CPU backend cannot run bf16 here: " << why;
  Pair s(kSmall);
  ASSERT_TRUE(s.cpu && s.gpu);
  for (int64_t t = 0; t < 3; t++) {  // a trained state, moved into the CUDA backend
    const std::vector<uint32_t> rows = rows_of(kSmall, s.f.cfg.seed, t);
    cuvae_step_result r;
    ASSERT_EQ(cuvae_backend_step(s.cpu, rows.data(), kSmall.B, t, &r), 0) << cuvae_last_error();
  }
  const State st = state_of(s.cpu, s.f.m.n_params);
  ASSERT_EQ(s.gpu->set_state(s.gpu, st.p.data(), st.m.data(), st.v.data()), 0) << cuvae_last_error();
  const size_t n = 40, D = s.f.m.input_dim, Z = s.f.m.latent;
  std::vector<float> mc(n * 2 * Z), mg(n * 2 * Z), dc(n * D), dg(n * D);
  ASSERT_EQ(s.cpu->encode(s.cpu, s.f.x.data(), nullptr, n, mc.data()), 0) << cuvae_last_error();
  ASSERT_EQ(s.gpu->encode(s.gpu, s.f.x.data(), nullptr, n, mg.data()), 0) << cuvae_last_error();
  const double enc = s.f.m.n_enc * gemm_gap() + 1e-5, dec = s.f.m.n_dec * gemm_gap() + 1e-5;
  bool ok;
  double d = max_diff(mc, mg, enc, enc, &ok);
  EXPECT_TRUE(ok) << "encode differs by up to " << d;
  std::printf("bf16 encode: max |d| %.3g (bound %.3g (1 + |v|))\n", d, enc);
  std::vector<float> z(mc.begin(), mc.begin() + n * Z);  // mu of the first n / 2 rows as latent points
  ASSERT_EQ(s.cpu->decode(s.cpu, z.data(), nullptr, n / 2, dc.data()), 0) << cuvae_last_error();
  ASSERT_EQ(s.gpu->decode(s.gpu, z.data(), nullptr, n / 2, dg.data()), 0) << cuvae_last_error();
  d = max_diff(dc, dg, dec, dec, &ok);
  EXPECT_TRUE(ok) << "decode differs by up to " << d;
  std::printf("bf16 decode: max |d| %.3g (bound %.3g (1 + |v|))\n", d, dec);
  std::vector<double> lc(s.f.ds.n), lg(s.f.ds.n);
  ASSERT_EQ(s.cpu->iwae(s.cpu, &s.f.ds, 7, 9, lc.data()), 0) << cuvae_last_error();
  ASSERT_EQ(s.gpu->iwae(s.gpu, &s.f.ds, 7, 9, lg.data()), 0) << cuvae_last_error();
  const double iw = s.gemms_forward() * gemm_gap() + 1e-4;
  double worst = 0.0;
  for (size_t i = 0; i < lc.size(); i++) {
    const double di = std::fabs(lc[i] - lg[i]);
    worst = std::max(worst, di / (1 + std::fabs(lc[i])));
    ASSERT_LE(di, iw * (1 + std::fabs(lc[i]))) << "row " << i;
  }
  std::printf("bf16 iwae: max rel |d| %.3g (bound %.3g)\n", worst, iw);
}

}  // namespace
