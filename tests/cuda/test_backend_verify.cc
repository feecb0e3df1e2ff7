// cuvae verify's comparison (src/engine/verify.c: cuvae_verify_backends) of the CPU backend and the CUDA backend
// (emulated; natively under the gpu label): the same config agrees within the derived bounds, and a CUDA backend
// made to compute something else is caught. The bounds are verify.c's (docs/ARCHITECTURE.md, "cuvae verify").
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "backend.h"
#include "cuvae/error.h"
#include "cuvae/verify.h"
#include "parity_util.h"
#include "verify_backends.h"

namespace {

using namespace cuvae_parity;

// 30 features, hidden 12 and 10, Z = 3, batch 32: the longest GEMM inner dimension is the batch, K = 32.
const Case kCase{"verify", 30, 2, 12, 10, 3, 32, 256, 6, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f};

struct Backends {
  cuvae_backend *cpu = nullptr, *cuda = nullptr;
  Backends(Fixture &f, const cuvae_config &cuda_cfg) {
    cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
    cuda = cuvae_backend_cuda_create(&f.m, &cuda_cfg, &f.ds, &f.ds);
    EXPECT_NE(cpu, nullptr) << cuvae_last_error();
    EXPECT_NE(cuda, nullptr) << cuvae_last_error();
  }
  ~Backends() {
    if (cpu) cpu->destroy(cpu);
    if (cuda) cuda->destroy(cuda);
  }
};

TEST(Verify, TheSameConfigAgreesWithinItsBounds) {
  Fixture f(kCase);
  Backends b(f, f.cfg);
  ASSERT_TRUE(b.cpu && b.cuda);
  const cuvae_verify_opts opts = {kCase.steps, nullptr};
  cuvae_verify_result r;
  ASSERT_EQ(cuvae_verify_backends(&f.cfg, &f.m, &f.ds, &f.ds, b.cpu, b.cuda, &opts, &r), 0) << cuvae_last_error();
  EXPECT_TRUE(r.agree);
  EXPECT_EQ(r.steps, kCase.steps);
  // fp32, K = 32: the two sides of a GEMM entry within G = 2 gamma_32 of its magnitude sum; n_enc + n_dec GEMMs on
  // the forward path; the loss bound adds 1e-4, the gradient's is 0.8 (n_enc + n_dec) G (at least 1e-5).
  const double u = std::ldexp(1.0, -24), G = 2 * (32 * u / (1 - 32 * u));
  const int n = f.m.n_enc + f.m.n_dec;
  EXPECT_DOUBLE_EQ(r.loss.bound, n * G + 1e-4);
  EXPECT_DOUBLE_EQ(r.eval.bound, n * G + 1e-4);
  EXPECT_DOUBLE_EQ(r.grad.bound, std::max(1e-5, 0.8 * n * G));
  for (const cuvae_verify_check *c : {&r.eval, &r.loss, &r.grad}) {
    EXPECT_TRUE(c->ok);
    EXPECT_GE(c->diff, 0.0);
    EXPECT_LE(c->diff, c->bound);
  }
  // The later steps: measured under the emulation ~1e-7 relative in the losses and ~1e-8 lr in the parameters;
  // reported, not judged (the parity tests bound them: 1e-4 relative, 2e-5 with lr 1e-3, i.e. 0.02 lr).
  EXPECT_LE(r.drift_loss, 1e-4);
  EXPECT_LE(r.drift_params, 0.02);
  EXPECT_NE(std::string(r.cuda_gemm).find("cuBLASLt fp32"), std::string::npos) << r.cuda_gemm;
  EXPECT_NE(std::string(r.cpu_gemm).find("oneDNN"), std::string::npos) << r.cpu_gemm;
}

// The CUDA backend weighting the KL twice (beta = 2): the negative ELBO is the same sum (beta weights only what is
// minimised), so the evaluation and the loss agree; the gradient does not, and the check names a tensor.
TEST(Verify, ABackendThatComputesAnotherGradientIsCaught) {
  Fixture f(kCase);
  cuvae_config other = f.cfg;
  other.beta = 2.0f;
  Backends b(f, other);
  ASSERT_TRUE(b.cpu && b.cuda);
  const cuvae_verify_opts opts = {2, nullptr};
  cuvae_verify_result r;
  ASSERT_EQ(cuvae_verify_backends(&f.cfg, &f.m, &f.ds, &f.ds, b.cpu, b.cuda, &opts, &r), 0) << cuvae_last_error();
  EXPECT_FALSE(r.agree);
  EXPECT_TRUE(r.eval.ok);
  EXPECT_TRUE(r.loss.ok);
  EXPECT_FALSE(r.grad.ok);
  EXPECT_GT(r.grad.diff, 100 * r.grad.bound);
  EXPECT_EQ(std::string(r.grad.where).rfind("enc.", 0), 0u) << r.grad.where;  // the KL reaches the encoder alone
}

TEST(Verify, NoStepsIsRefused) {
  Fixture f(kCase);
  Backends b(f, f.cfg);
  ASSERT_TRUE(b.cpu && b.cuda);
  const cuvae_verify_opts opts = {0, nullptr};
  cuvae_verify_result r;
  EXPECT_EQ(cuvae_verify_backends(&f.cfg, &f.m, &f.ds, &f.ds, b.cpu, b.cuda, &opts, &r), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("steps must be at least 1"), std::string::npos)
      << cuvae_last_error();
}

}  // namespace
