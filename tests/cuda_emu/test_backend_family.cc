// Whole-step parity of the model family (issue 7): every member's training steps on the CUDA backend (built against
// the emulation; natively with label gpu) against the CPU reference backend, with the tolerances of
// test_backend_parity.cc (its file comment says why): per-step objective, NELBO, KL and gradient norm, every
// gradient tensor, then parameters and Adam moments after all steps, then evaluate().
// The members: learned Gaussian variances (shared, per dim), the multi-sample ELBO (analytic and sampled KL, with
// beta), the IWAE objective, the autoencoder (Bernoulli and Gaussian outputs), the denoising autoencoder (Gaussian
// noise and masking, with dynamic binarization), the KL warm-up, and the linear decoder.
#include "parity_util.h"

namespace {

using namespace cuvae_parity;

struct Member {
  const char *name;
  cuvae_likelihood lik;
  void (*tweak)(cuvae_config *);
};
void PrintTo(const Member &m, std::ostream *os) { *os << m.name; }

class FamilyParity : public ::testing::TestWithParam<Member> {};

TEST_P(FamilyParity, TrainingStepsAgreeWithTheCpuBackend) {
  const Member &mem = GetParam();
  // 16 -> 12 -> 10 -> Z = 3, batch 16 of 128 rows, 8 steps (one epoch and a bit).
  Case c{mem.name, 16, 2, 12, 10, 3, 16, 128, 10, mem.lik, CUVAE_ACT_TANH, 0.0f};
  Fixture f(c, mem.tweak);
  cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_NE(cpu, nullptr) << cuvae_last_error();
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  const size_t n = f.m.n_params;
  run_both(c, f.m, cpu, gpu, f.cfg.seed, 0, 1);
  expect_state_close(state_of(cpu, n), state_of(gpu, n), 1e-6, "after 1 step");
  run_both(c, f.m, cpu, gpu, f.cfg.seed, 1, c.steps);
  expect_state_close(state_of(cpu, n), state_of(gpu, n), 2e-5, "after all steps");
  cuvae_loss ec, eg;
  ASSERT_EQ(cpu->evaluate(cpu, &f.ds, f.cfg.eval_batch_size, &ec), 0) << cuvae_last_error();
  ASSERT_EQ(gpu->evaluate(gpu, &f.ds, f.cfg.eval_batch_size, &eg), 0) << cuvae_last_error();
  EXPECT_LE(std::fabs(ec.nelbo - eg.nelbo), 1e-5 + 1e-4 * std::fabs(ec.nelbo));
  std::printf("[%s] evaluate: cpu %.9g cuda %.9g\n", mem.name, ec.nelbo, eg.nelbo);
  // The decoder's means (decode), which per-dim variances read out of [mean | lv] rows.
  std::vector<float> z(5 * 3), mc(5 * 16), mg(5 * 16);
  for (size_t i = 0; i < z.size(); i++) z[i] = 0.3f * (float)i - 2.0f;
  ASSERT_EQ(cpu->decode(cpu, z.data(), NULL, 5, mc.data()), 0) << cuvae_last_error();
  ASSERT_EQ(gpu->decode(gpu, z.data(), NULL, 5, mg.data()), 0) << cuvae_last_error();
  bool ok;
  const double dm = max_diff(mc, mg, 1e-5, 1e-4, &ok);
  EXPECT_TRUE(ok) << "decode differs by up to " << dm;
  cpu->destroy(cpu);
  gpu->destroy(gpu);
}

INSTANTIATE_TEST_SUITE_P(
    Members, FamilyParity,
    ::testing::Values(
        Member{"gaussian_learned_shared", CUVAE_LIK_GAUSSIAN,
               [](cuvae_config *c) { c->gaussian_variance = CUVAE_VAR_LEARNED_SHARED; }},
        Member{"gaussian_learned_per_dim", CUVAE_LIK_GAUSSIAN,
               [](cuvae_config *c) { c->gaussian_variance = CUVAE_VAR_LEARNED_PER_DIM; }},
        Member{"elbo_3_samples", CUVAE_LIK_BERNOULLI, [](cuvae_config *c) { c->samples = 3; }},
        Member{"elbo_3_sampled_kl_beta", CUVAE_LIK_BERNOULLI,
               [](cuvae_config *c) {
                 c->samples = 3;
                 c->kl = CUVAE_KL_SAMPLED;
                 c->beta = 0.5f;
               }},
        Member{"iwae_4", CUVAE_LIK_BERNOULLI,
               [](cuvae_config *c) {
                 c->objective = CUVAE_OBJ_IWAE;
                 c->samples = 4;
               }},
        Member{"ae_bernoulli", CUVAE_LIK_BERNOULLI, [](cuvae_config *c) { c->objective = CUVAE_OBJ_AE; }},
        Member{"dae_gaussian_noise", CUVAE_LIK_GAUSSIAN,
               [](cuvae_config *c) {
                 c->objective = CUVAE_OBJ_AE;
                 c->corrupt = cuvae_corrupt{CUVAE_CORRUPT_GAUSSIAN, 0.2f};
               }},
        Member{"vae_mask_dynamic_binarize", CUVAE_LIK_BERNOULLI,
               [](cuvae_config *c) {
                 c->corrupt = cuvae_corrupt{CUVAE_CORRUPT_MASK, 0.3f};
                 c->binarize = CUVAE_BINARIZE_DYNAMIC;
               }},
        Member{"beta_warmup", CUVAE_LIK_BERNOULLI,
               [](cuvae_config *c) {
                 c->beta = 2.0f;
                 c->beta_warmup_steps = 6;
               }},
        Member{"linear_decoder_learned_shared", CUVAE_LIK_GAUSSIAN,
               [](cuvae_config *c) {
                 c->decoder = CUVAE_DECODER_LINEAR;
                 c->gaussian_variance = CUVAE_VAR_LEARNED_SHARED;
               }}),
    [](const ::testing::TestParamInfo<Member> &i) { return std::string(i.param.name); });

}  // namespace
