// The CUDA backend (src/backend/cuda/backend_cuda.c, built against the emulation) against the CPU reference backend: the same
// model, data, row orders and noise give the same losses, parameters and Adam moments within stated tolerances.
//
// Where the two differ (and so the tolerances), u = 2^-24, each check |cpu - cuda| <= atol + rtol |cpu|:
// - GEMMs: cuBLAS's column-major calls vs cblas row-major calls may sum the K products in another order and
//   blocking: each side within gamma_K sum|a_i b_i| of the exact value (Higham 3.1), so they differ by <= 2 gamma_K
//   of the magnitude sum (K <= 32 here: <= 3.8e-6 of it) per layer.
// - reductions: the CPU sums per-row losses, bias gradients and ||g||^2 in double / row order; the kernels sum
//   in float, per thread then a tree: <= (ceil(n / threads) + log2(threads)) u sum|terms| (test_kernel_reduce.cu).
// - elementwise expf/log1pf/tanhf: 4 ulp (libmvec) or 2 ulp (tanhf) on the CPU, the emulated kernels' libm
//   (scalar glibc, <= 1-2 ulp): <= 6 ulp = 12u relative apart.
// - eps and corruption noise: the device's normals are Box-Muller through __sincosf, the CPU's through sinf/cosf:
//   |deps| <= 2.0e-6 s (tests/emu/curand_bound.h; s ~ 1 typically, <= 6.8), i.e. ~34u of sigma eps per latent
//   entry, entering z = mu + sigma eps like one more rounding of that size (docs/ARCHITECTURE.md, "Random numbers").
// Step 0 (same parameters on both sides): counting these along the longest path of the loss (<= 3 dense layers
// each way, likelihood, reductions) gives <= ~60u = 3.6e-6 relative to the loss's magnitude sum; the losses are sums
// of non-negative terms, so 1e-5 + 1e-4 |loss| holds with a 28x margin if that magnitude is <= the loss itself
// (measured: 1e-7 relative). Parameters after one Adam step (m = (1 - b1) g, v = (1 - b2) g^2, bias-corrected):
// p' = p - lr g / (|g| + eps), whose derivative in g is lr eps / (|g| + eps)^2, so a gradient difference dg moves
// p by <= lr |dg| eps / (|g| + eps)^2, plus the update's own roundings on each side (c1, c2, m c1, v c2, sqrt,
// + eps, /, lr *, p -: ~9u |step| + u |p'| each). With |dg| <= 1e-5 max|g| (parity_util.h's gradient bound) the
// first term is <= 1e-8 lr max|g| / |g| for |g| >> eps: 1e-6 assumes no gradient entry in (0, 1e-5 max|g|] (where
// the move's sensitivity peaks at lr |dg| / (4 eps)); the rounding terms are <= 2u (|p| + lr) < 2.5e-7.
// Over 20 steps the differences feed back through the parameters: a difference d in p changes the next gradients
// by ~|dg/dp| d and the next moves as above, so no a-priori bound closes; the 20-step checks allow the step-0 bound
// grown 25x (loss rtol 1e-4 = 25 x 60u), parameters 2e-5 (2% of one step's lr-sized move), moments 1e-3 relative
// with an atol of 1e-4 of the moment's largest entry, and they hold while the growth stays below that: the condition
// assumed. Measured under emulation (every OpenBLAS core; device normals through the emulated __sincosf): losses
// <= 1.7e-7 relative, gradients <= 1.5e-6 of max|g|, parameters <= 3e-8 after one step and <= 1.2e-7 after 20
// (growth ~4x), Adam m <= 5.7e-6 with max|m| ~ 1e-1 (z1000); the margin is kept for a
// real GPU's cuBLAS (other algorithms, split-K), which the `gpu` label runs against the same tolerances. A wrong
// gradient, noise offset or Adam step differs by O(lr) in p and O(1) relative in the losses.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "parity_util.h"
#include "test_util.h"
#ifdef CUVAE_CUDA_EMU
#include <cublasLt.h>

#include "emu_internal.h"
#endif

namespace {

using namespace cuvae_parity;

class Parity : public ::testing::TestWithParam<Case> {};

// Training, the state and evaluate() of the two backends on case c (the checks of the file comment); the CUDA
// backend's description of its GEMMs (base.gemm) must hold `gemm_has`.
void expect_training_agrees(const Case &c, const char *gemm_has) {
  Fixture f(c);
  cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_NE(cpu, nullptr) << cuvae_last_error();
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  EXPECT_STREQ(gpu->name, "cuda");
  EXPECT_NE(std::string(gpu->gemm).find(gemm_has), std::string::npos) << gpu->gemm;
  const size_t n = f.m.n_params;
  {  // Same initial state, bit for bit (cuvae_model_init on the host, copied up).
    const State a = state_of(cpu, n), b = state_of(gpu, n);
    EXPECT_EQ(a.p, b.p);
    EXPECT_EQ(a.m, b.m);
    EXPECT_EQ(a.v, b.v);
  }
  run_both(c, f.m, cpu, gpu, f.cfg.seed, 0, 1);
  // After one step: |dp| <= lr |dg| eps / (|g| + eps)^2 + 2u (|p| + lr) (file comment): 1e-6.
  expect_state_close(state_of(cpu, n), state_of(gpu, n), 1e-6, "after 1 step");
  run_both(c, f.m, cpu, gpu, f.cfg.seed, 1, c.steps);
  expect_state_close(state_of(cpu, n), state_of(gpu, n), 2e-5, "after all steps");
  for (cuvae_backend *be : {cpu, gpu}) {  // the alignment gaps of the parameter buffer are still +0
    const State s = state_of(be, n);
    std::vector<float> g(n);
    ASSERT_EQ(be->get_grad(be, g.data()), 0) << cuvae_last_error();
    const std::string who = be->name;
    cuvae_test::ExpectGapsZero(f.m, s.p, (who + " params").c_str());
    cuvae_test::ExpectGapsZero(f.m, s.m, (who + " adam m").c_str());
    cuvae_test::ExpectGapsZero(f.m, s.v, (who + " adam v").c_str());
    cuvae_test::ExpectGapsZero(f.m, g, (who + " gradient").c_str());
  }

  // evaluate(): the evaluation noise stream, partial last batch.
  cuvae_loss ec, eg;
  ASSERT_EQ(cpu->evaluate(cpu, &f.ds, f.cfg.eval_batch_size, &ec), 0) << cuvae_last_error();
  ASSERT_EQ(gpu->evaluate(gpu, &f.ds, f.cfg.eval_batch_size, &eg), 0) << cuvae_last_error();
  EXPECT_LE(std::fabs(ec.nelbo - eg.nelbo), 1e-5 + 1e-4 * std::fabs(ec.nelbo));
  EXPECT_LE(std::fabs(ec.kl - eg.kl), 1e-5 + 1e-4 * std::fabs(ec.kl));
  std::printf("[%s] evaluate: cpu %.9g cuda %.9g (diff %.3g)\n", c.name, ec.nelbo, eg.nelbo,
              std::fabs(ec.nelbo - eg.nelbo));
  cpu->destroy(cpu);
  gpu->destroy(gpu);
}

TEST_P(Parity, TrainingStepsAgreeWithTheCpuBackend) { expect_training_agrees(GetParam(), "fused"); }

INSTANTIATE_TEST_SUITE_P(
    Models, Parity,
    ::testing::Values(Case{"bernoulli", 30, 2, 12, 10, 3, 32, 256, 20, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f},
                      Case{"gaussian_tanh_clip", 16, 2, 12, 10, 3, 32, 256, 20, CUVAE_LIK_GAUSSIAN, CUVAE_ACT_TANH,
                           1.0f},
                      Case{"z1000", 8, 1, 6, 0, 1000, 4, 16, 20, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f}),
    [](const ::testing::TestParamInfo<Case> &i) { return std::string(i.param.name); });

const Case kSmall{"small", 16, 2, 12, 10, 3, 32, 256, 10, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f};

TEST(ParityState, GetSetRoundTripIsExact) {
  Fixture f(kSmall);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const size_t n = f.m.n_params;
  State s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  for (size_t i = 0; i < n; i++) {
    s.p[i] = 0.001f * (float)((i * 37) % 101) - 0.05f;
    s.m[i] = 1e-4f * (float)(i % 13);
    s.v[i] = 1e-6f * (float)(i % 7);
  }
  ASSERT_EQ(gpu->set_state(gpu, s.p.data(), s.m.data(), s.v.data()), 0) << cuvae_last_error();
  const State back = state_of(gpu, n);
  EXPECT_EQ(back.p, s.p);
  EXPECT_EQ(back.m, s.m);
  EXPECT_EQ(back.v, s.v);
  gpu->destroy(gpu);
}

// A checkpoint-like resume across backends: 5 CPU steps, the state moved into the CUDA backend, 5 more steps on
// each; the two continuations agree (the device's Adam step counter is set from the step argument).
TEST(ParityState, CpuStateResumesOnCuda) {
  Fixture f(kSmall);
  cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_NE(cpu, nullptr) << cuvae_last_error();
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const size_t n = f.m.n_params;
  for (int64_t t = 0; t < 5; t++) {
    const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, t);
    cuvae_step_result r;
    ASSERT_EQ(cuvae_backend_step(cpu, rows.data(), kSmall.B, t, &r), 0) << cuvae_last_error();
  }
  const State mid = state_of(cpu, n);
  ASSERT_EQ(gpu->set_state(gpu, mid.p.data(), mid.m.data(), mid.v.data()), 0) << cuvae_last_error();
  run_both(kSmall, f.m, cpu, gpu, f.cfg.seed, 5, 10);
  expect_state_close(state_of(cpu, n), state_of(gpu, n), 1e-5, "resumed at step 5, after step 10");
  cpu->destroy(cpu);
  gpu->destroy(gpu);
}

// A non-finite loss fails the step with a message naming it, and leaves the state unchanged.
TEST(ParityState, NonFiniteLossFailsAndKeepsTheState) {
  Fixture f(kSmall);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const size_t n = f.m.n_params;
  State s = state_of(gpu, n);
  s.p[f.m.dec[f.m.n_dec - 1].b] = NAN;  // one output bias: the reconstruction term becomes NaN
  ASSERT_EQ(gpu->set_state(gpu, s.p.data(), s.m.data(), s.v.data()), 0);
  const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, 2);
  cuvae_step_result r;
  EXPECT_EQ(cuvae_backend_step(gpu, rows.data(), kSmall.B, 2, &r), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("step 3"), std::string::npos) << cuvae_last_error();
  const State after = state_of(gpu, n);
  EXPECT_EQ(std::memcmp(after.p.data(), s.p.data(), n * sizeof(float)), 0);  // NaN != NaN: compare bytes
  EXPECT_EQ(after.m, s.m);
  EXPECT_EQ(after.v, s.v);
  // Rows outside the data set and oversized batches are refused.
  std::vector<uint32_t> bad(rows);
  bad[0] = (uint32_t)kSmall.N;
  EXPECT_EQ(cuvae_backend_step(gpu, bad.data(), kSmall.B, 0, &r), -1);
  gpu->destroy(gpu);
}

// [train] precision = tf32: cuBLAS's TF32 math rounds the GEMM inputs to 10 mantissa bits (relative error up to
// 2^-11 per input, so up to ~2^-10 per product); the first step's loss then differs from fp32 by far less than
// 1e-2 relative (it sums many such products with mixed signs). That bound is all TF32 guarantees on a GPU:
// CUBLAS_TF32_TENSOR_OP_MATH permits tensor cores, it does not force them, and for GEMMs this small (12x32x16,
// leading dimensions not multiples of 4 floats) cuBLAS may pick a plain FP32 kernel, whose loss equals fp32's. So
// natively the test asserts the bound only; the emulation always rounds the inputs (docs/CUDA_EMULATION.md), so
// there the loss must differ as well (TF32 is in effect).
TEST(ParityState, Tf32PrecisionRoundsTheGemms) {
  Fixture f(kSmall);
  cuvae_config tf32_cfg = f.cfg;  // the backend keeps a pointer to its config
  tf32_cfg.precision = CUVAE_PRECISION_TF32;
  cuvae_backend *fp32 = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *tf32 = cuvae_backend_cuda_create(&f.m, &tf32_cfg, &f.ds, &f.ds);
  ASSERT_NE(fp32, nullptr) << cuvae_last_error();
  ASSERT_NE(tf32, nullptr) << cuvae_last_error();
  const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, 0);
  cuvae_step_result a, b;
  ASSERT_EQ(cuvae_backend_step(fp32, rows.data(), kSmall.B, 0, &a), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_step(tf32, rows.data(), kSmall.B, 0, &b), 0) << cuvae_last_error();
#ifdef CUVAE_CUDA_EMU
  EXPECT_NE(a.loss.nelbo, b.loss.nelbo);
#endif
  EXPECT_LE(std::fabs(a.loss.nelbo - b.loss.nelbo), 1e-2 * std::fabs(a.loss.nelbo));
  fp32->destroy(fp32);
  tf32->destroy(tf32);
}

// ---- the CUDA step's own machinery: graph replay, running ahead of the host, the device guard, memory ----

struct StepLog {
  std::vector<cuvae_step_result> results;
  State state;
};

// `steps` steps enqueued, collected every `every` steps (1 = synchronously).
StepLog run_steps(cuvae_backend *be, const Fixture &f, const Case &c, int steps, int every) {
  StepLog log;
  std::vector<cuvae_step_result> buf(be->max_pending);
  for (int t = 0; t < steps; t++) {
    const std::vector<uint32_t> rows = rows_of(c, f.cfg.seed, t);
    EXPECT_EQ(be->train_step(be, rows.data(), c.B, t), 0) << cuvae_last_error();
    if ((t + 1) % every == 0 || t + 1 == steps) {
      int n = 0;
      EXPECT_EQ(be->collect(be, buf.data(), &n), 0) << cuvae_last_error();
      log.results.insert(log.results.end(), buf.begin(), buf.begin() + n);
    }
  }
  log.state = state_of(be, f.m.n_params);
  return log;
}

void expect_identical(const StepLog &a, const StepLog &b, const char *what) {
  ASSERT_EQ(a.results.size(), b.results.size()) << what;
  for (size_t i = 0; i < a.results.size(); i++) {
    EXPECT_EQ(a.results[i].loss.nelbo, b.results[i].loss.nelbo) << what << ", step " << i;
    EXPECT_EQ(a.results[i].loss.kl, b.results[i].loss.kl) << what << ", step " << i;
    EXPECT_EQ(a.results[i].grad_norm, b.results[i].grad_norm) << what << ", step " << i;
  }
  EXPECT_EQ(a.state.p, b.state.p) << what;
  EXPECT_EQ(a.state.m, b.state.m) << what;
  EXPECT_EQ(a.state.v, b.state.v) << what;
}

// The captured graph replays exactly the eager launches; results do not depend on how often the host collects;
// two runs with the same seed are bit-identical. 20 steps, bit for bit.
TEST(CudaStep, GraphReplayEqualsEagerAndRunsAreReproducible) {
  Fixture f(kSmall);
  f.cfg.log_every = 7;  // max_pending
  cuvae_config eager_cfg = f.cfg;
  eager_cfg.cuda_graph = 0;
  ASSERT_EQ(f.cfg.cuda_graph, 1) << "graphs are the default";
  cuvae_backend *graph = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *eager = cuvae_backend_cuda_create(&f.m, &eager_cfg, &f.ds, &f.ds);
  cuvae_backend *again = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_TRUE(graph && eager && again) << cuvae_last_error();
  EXPECT_EQ(graph->max_pending, 7);
  const StepLog a = run_steps(graph, f, kSmall, 20, 7);
  const StepLog b = run_steps(eager, f, kSmall, 20, 1);
  const StepLog c = run_steps(again, f, kSmall, 20, 3);
  ASSERT_EQ(a.results.size(), 20u);
  expect_identical(a, b, "graph, collected every 7 steps vs eager, every step");
  expect_identical(a, c, "two graph runs with the same seed");
  graph->destroy(graph);
  eager->destroy(eager);
  again->destroy(again);
}

// A non-finite step among pending ones: collect names it, and the state is the one before it on both backends,
// although the host had enqueued steps after it. Step 3's batch holds a row of NaN data.
TEST(CudaStep, DivergenceAmongPendingStepsKeepsThePriorState) {
  Fixture f(kSmall);
  f.cfg.log_every = 8;
  const uint32_t poisoned = rows_of(kSmall, f.cfg.seed, 2)[5];
  std::vector<float> x = f.x;
  for (int d = 0; d < kSmall.D; d++) x[(size_t)poisoned * kSmall.D + d] = NAN;
  cuvae_dataset bad = f.ds;
  bad.x = x.data();
  for (int which = 0; which < 2; which++) {
    const char *name = which ? "cuda" : "cpu";
    cuvae_backend *ref = which ? cuvae_backend_cuda_create(&f.m, &f.cfg, &bad, nullptr)
                               : cuvae_backend_cpu_create(&f.m, &f.cfg, &bad, nullptr);
    cuvae_backend *be = which ? cuvae_backend_cuda_create(&f.m, &f.cfg, &bad, nullptr)
                              : cuvae_backend_cpu_create(&f.m, &f.cfg, &bad, nullptr);
    ASSERT_TRUE(ref && be) << cuvae_last_error();
    const StepLog two = run_steps(ref, f, kSmall, 2, 1);  // steps 1 and 2 (0-based 0, 1) only
    for (int t = 0; t < 6; t++) {
      const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, t);
      ASSERT_EQ(be->train_step(be, rows.data(), kSmall.B, t), 0) << name << ": " << cuvae_last_error();
    }
    std::vector<cuvae_step_result> buf(be->max_pending);
    int n = 0;
    EXPECT_EQ(be->collect(be, buf.data(), &n), -1) << name;
    const std::string msg = cuvae_last_error();
    EXPECT_NE(msg.find("step 3: loss is not finite"), std::string::npos) << name << ": " << msg;
    const State after = state_of(be, f.m.n_params);
    EXPECT_EQ(after.p, two.state.p) << name;
    EXPECT_EQ(after.m, two.state.m) << name;
    EXPECT_EQ(after.v, two.state.v) << name;
    // Nothing is pending any more.
    EXPECT_EQ(be->collect(be, buf.data(), &n), 0) << name << ": " << cuvae_last_error();
    EXPECT_EQ(n, 0);
    ref->destroy(ref);
    be->destroy(be);
  }
}

// More steps than max_pending without a collect are refused at once (the pinned slots are per pending step).
TEST(CudaStep, TooManyPendingStepsAreRefused) {
  Fixture f(kSmall);
  f.cfg.log_every = 2;
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, nullptr);
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const std::vector<uint32_t> rows = rows_of(kSmall, f.cfg.seed, 0);
  EXPECT_EQ(gpu->train_step(gpu, rows.data(), kSmall.B, 0), 0);
  EXPECT_EQ(gpu->train_step(gpu, rows.data(), kSmall.B, 1), 0);
  EXPECT_EQ(gpu->train_step(gpu, rows.data(), kSmall.B, 2), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("pending"), std::string::npos) << cuvae_last_error();
  gpu->destroy(gpu);
}

// The memory plan is computed before anything is allocated and names every category; a model that cannot fit
// (2 million rows of 8192-wide activations: > 100 GiB, more than this machine or any GPU here has) is refused with
// that plan in the message.
TEST(CudaStep, MemoryPlanIsCheckedBeforeAllocating) {
  Fixture f(kSmall);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const std::string plan = gpu->memory_plan;
  for (const char *part : {"parameters", "activations", "data sets", "cuBLASLt workspace", "free of"})
    EXPECT_NE(plan.find(part), std::string::npos) << part << " missing from: " << plan;
  gpu->destroy(gpu);

  cuvae_config huge = f.cfg;
  huge.n_hidden = 2;
  huge.hidden[0] = huge.hidden[1] = 8192;
  huge.batch_size = 2000000;
  cuvae_model hm;
  ASSERT_EQ(cuvae_model_build(&hm, kSmall.D, &huge), 0) << cuvae_last_error();
  EXPECT_EQ(cuvae_backend_cuda_create(&hm, &huge, nullptr, nullptr), nullptr);
  const std::string msg = cuvae_last_error();
  EXPECT_NE(msg.find("does not fit"), std::string::npos) << msg;
  EXPECT_NE(msg.find("activations (2000000 rows)"), std::string::npos) << msg;
}

// evaluate() on the set uploaded at creation reads it on the device; any other set is copied up per batch. Both
// give the same bits.
TEST(CudaStep, ResidentEvaluationEqualsStreamedEvaluation) {
  Fixture f(kSmall);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  cuvae_dataset other = f.ds;  // same rows, another set as far as the backend knows
  cuvae_loss a, b;
  ASSERT_EQ(gpu->evaluate(gpu, &f.ds, f.cfg.eval_batch_size, &a), 0) << cuvae_last_error();
  ASSERT_EQ(gpu->evaluate(gpu, &other, f.cfg.eval_batch_size, &b), 0) << cuvae_last_error();
  EXPECT_EQ(a.nelbo, b.nelbo);
  EXPECT_EQ(a.kl, b.kl);
  gpu->destroy(gpu);
}

// How the dense layers get their bias, activation and bias gradient (cuda_choose_epilogues): cuBLASLt's fused
// epilogues by default; plain GEMMs followed by the kernels of kernels/bias_act.cu with CUVAE_CUDA_EPILOGUES=separate,
// or when cuBLASLt has no algorithm for a fused epilogue. The separate kernels add the bias to the same fp32 GEMM
// sums and take the ReLU gradient from y (y > 0 exactly where the fused mask has acc + b > 0); only the bias
// gradients are sums in another order (bias_grad_cuda's tree against the epilogue's), inside the reductions' bound
// of the file comment. So the step agrees with the CPU backend within the same tolerances either way.
const Case kReluCase{"bernoulli", 30, 2, 12, 10, 3, 32, 256, 20, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f};

TEST(CudaEpilogues, SeparateKernelsTrainLikeTheCpuBackend) {
  cuvae_test::EnvGuard separate("CUVAE_CUDA_EPILOGUES", "separate");
  expect_training_agrees(kReluCase, "separate kernels (CUVAE_CUDA_EPILOGUES=separate)");
}

TEST(CudaEpilogues, AnUnknownChoiceIsRefused) {
  cuvae_test::EnvGuard bad("CUVAE_CUDA_EPILOGUES", "on");
  Fixture f(kSmall);
  EXPECT_EQ(cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds), nullptr);
  EXPECT_NE(std::string(cuvae_last_error()).find("CUVAE_CUDA_EPILOGUES=on: expected fused or separate"),
            std::string::npos)
      << cuvae_last_error();
}

#ifdef CUVAE_CUDA_EMU
// A cuBLASLt without an algorithm for one of the fused epilogues (the emulation refuses it as the real library
// does: CUBLAS_STATUS_NOT_SUPPORTED, no heuristic result): the backend says so once, at creation, and trains with
// separate kernels, like the CPU backend.
TEST(CudaEpilogues, NoAlgorithmForAFusedEpilogueFallsBackToSeparateKernels) {
  const struct {
    cublasLtEpilogue_t epilogue;
    const char *name;
  } refused[] = {{CUBLASLT_EPILOGUE_RELU_AUX_BIAS, "RELU_AUX_BIAS"}, {CUBLASLT_EPILOGUE_BIAS, "BIAS"},
                 {CUBLASLT_EPILOGUE_DRELU_BGRAD, "DRELU_BGRAD"}, {CUBLASLT_EPILOGUE_BGRADB, "BGRADB"}};
  for (const auto &r : refused) {
    SCOPED_TRACE(r.name);
    cuda_emu_cublaslt_refuse_epilogue((uint32_t)r.epilogue);
    Fixture f(kSmall);
    cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
    cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
    ASSERT_NE(cpu, nullptr) << cuvae_last_error();
    ASSERT_NE(gpu, nullptr) << cuvae_last_error();
    const std::string notice = gpu->notice, gemm = gpu->gemm;
    EXPECT_NE(notice.find(std::string("has no algorithm for the")), std::string::npos) << notice;
    EXPECT_NE(notice.find(std::string("with epilogue ") + r.name), std::string::npos) << notice;
    EXPECT_NE(notice.find("bias and activation in kernels of their own"), std::string::npos) << notice;
    EXPECT_NE(gemm.find("separate kernels (cuBLASLt has no algorithm"), std::string::npos) << gemm;
    run_both(kSmall, f.m, cpu, gpu, f.cfg.seed, 0, 3);
    expect_state_close(state_of(cpu, f.m.n_params), state_of(gpu, f.m.n_params), 2e-5, r.name);
    cpu->destroy(cpu);
    gpu->destroy(gpu);
  }
  cuda_emu_cublaslt_refuse_epilogue(0);
}
#endif  // CUVAE_CUDA_EMU

}  // namespace
