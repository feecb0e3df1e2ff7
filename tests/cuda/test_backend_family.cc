// Whole-step parity of the model family: every member's training steps on the CUDA backend (built against
// the emulation; natively with label gpu) against the CPU reference backend, with the tolerances of
// test_backend_parity.cc (its file comment says why): per-step objective, NELBO, KL and gradient norm, every
// gradient tensor, then parameters and Adam moments after all steps, then evaluate().
// The members: learned Gaussian variances (shared, per dim), the multi-sample ELBO (analytic and sampled KL, with
// beta), the IWAE objective, the autoencoder (Bernoulli and Gaussian outputs), the denoising autoencoder (Gaussian
// noise and masking, with dynamic binarization), the KL warm-up, the linear decoder, and the conditional VAE
// (labels i % 3 in the fixture's data set; with the ELBO, the IWAE objective and a learned shared variance), whose
// encode and IWAE estimate (K = 7) are compared too; free bits; active units through either backend's encode.
#include "active_units.h"
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

// The conditional VAE with 3 classes.
void make_conditional(cuvae_config *c) {
  c->conditional = 1;
  c->classes = 3;
}

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
  // The decoder's means (decode), which per-dim variances read out of [mean | lv] rows; a conditional model's
  // for class 1.
  std::vector<float> z(5 * 3), mc(5 * 16), mg(5 * 16);
  for (size_t i = 0; i < z.size(); i++) z[i] = 0.3f * (float)i - 2.0f;
  const std::vector<int32_t> ones(5, 1);
  const int32_t *labels = f.m.cond ? ones.data() : NULL;
  ASSERT_EQ(cpu->decode(cpu, z.data(), labels, 5, mc.data()), 0) << cuvae_last_error();
  ASSERT_EQ(gpu->decode(gpu, z.data(), labels, 5, mg.data()), 0) << cuvae_last_error();
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
        // Dequantization (docs/MATH.md (4.6): the per-step uniforms, y = (rint(255 x) + u) / 256, and the NLL's
        // D ln 256) with the variance floor (4.8): at e^-1.5 just below the initial log-variance 2 ln sigma = -1.39
        // (part of the per-dim ones fall below it), and at 0.5, above it (the shared one stays floored: gradient 0).
        Member{"dequantized_per_dim_floor", CUVAE_LIK_GAUSSIAN,
               [](cuvae_config *c) {
                 c->gaussian_variance = CUVAE_VAR_LEARNED_PER_DIM;
                 c->dequantize = CUVAE_DEQUANTIZE_UNIFORM;
                 c->min_variance = 0.2231302f;
               }},
        Member{"dequantized_shared_floor_iwae_3", CUVAE_LIK_GAUSSIAN,
               [](cuvae_config *c) {
                 c->gaussian_variance = CUVAE_VAR_LEARNED_SHARED;
                 c->dequantize = CUVAE_DEQUANTIZE_UNIFORM;
                 c->min_variance = 0.5f;
                 c->objective = CUVAE_OBJ_IWAE;
                 c->samples = 3;
               }},
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
        // Free bits (docs/MATH.md (3.4)) with the floor above every dim's KL (no KL gradient: only the gated
        // kernels' shut path) and below every one (all open; 2 samples and the warm-up's beta on the device).
        Member{"free_bits_all_shut", CUVAE_LIK_BERNOULLI, [](cuvae_config *c) { c->free_bits = 50.0f; }},
        Member{"free_bits_all_open_2_samples_warmup", CUVAE_LIK_BERNOULLI,
               [](cuvae_config *c) {
                 c->free_bits = 1e-6f;
                 c->samples = 2;
                 c->beta_warmup_steps = 6;
               }},
        Member{"linear_decoder_learned_shared", CUVAE_LIK_GAUSSIAN,
               [](cuvae_config *c) {
                 c->decoder = CUVAE_DECODER_LINEAR;
                 c->gaussian_variance = CUVAE_VAR_LEARNED_SHARED;
               }},
        Member{"cvae", CUVAE_LIK_BERNOULLI, make_conditional},
        Member{"cvae_iwae_3", CUVAE_LIK_BERNOULLI,
               [](cuvae_config *c) {
                 make_conditional(c);
                 c->objective = CUVAE_OBJ_IWAE;
                 c->samples = 3;
               }},
        Member{"cvae_gaussian_learned_shared", CUVAE_LIK_GAUSSIAN,
               [](cuvae_config *c) {
                 make_conditional(c);
                 c->gaussian_variance = CUVAE_VAR_LEARNED_SHARED;
               }}),
    [](const ::testing::TestParamInfo<Member> &i) { return std::string(i.param.name); });

// A conditional model after a few CPU steps (the CUDA backend given the same parameters): encode with labels and
// the IWAE estimate (K = 7, batch 6: several rows per pass, two passes' chunks, a partial last pass) on the
// fixture's labelled data set agree. Tolerances: encode as decode above (1e-5 + 1e-4 relative: GEMM rounding,
// test_backend_codec.cc); IWAE 1e-4 (1 + |log p|) per row (test_backend_iwae.cc's file comment says why). A wrong
// label (another row's, or none) moves the encoder's output by O(0.1) and log p by O(0.1 - 1) nats.
TEST(FamilyParityConditional, EncodeAndIwaeAgree) {
  for (cuvae_likelihood lik : {CUVAE_LIK_BERNOULLI, CUVAE_LIK_GAUSSIAN}) {
    Case c{"cvae_codec", 16, 2, 12, 10, 3, 16, 128, 6, lik, CUVAE_ACT_TANH, 0.0f};
    Fixture f(c, make_conditional);
    cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
    cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
    ASSERT_NE(cpu, nullptr) << cuvae_last_error();
    ASSERT_NE(gpu, nullptr) << cuvae_last_error();
    for (int64_t t = 0; t < c.steps; t++) {
      const std::vector<uint32_t> rows = rows_of(c, f.cfg.seed, t);
      cuvae_step_result r;
      ASSERT_EQ(cuvae_backend_step(cpu, rows.data(), c.B, t, &r), 0) << cuvae_last_error();
    }
    const size_t n = f.m.n_params;
    const State s = state_of(cpu, n);
    ASSERT_EQ(gpu->set_state(gpu, s.p.data(), s.m.data(), s.v.data()), 0) << cuvae_last_error();
    // encode: all rows (several of the backends' batches), each with its own label.
    const size_t Z2 = 2 * f.m.latent;
    std::vector<float> ec(c.N * Z2), eg(c.N * Z2);
    ASSERT_EQ(cpu->encode(cpu, f.x.data(), f.labels.data(), c.N, ec.data()), 0) << cuvae_last_error();
    ASSERT_EQ(gpu->encode(gpu, f.x.data(), f.labels.data(), c.N, eg.data()), 0) << cuvae_last_error();
    bool ok;
    const double de = max_diff(ec, eg, 1e-5, 1e-4, &ok);
    EXPECT_TRUE(ok) << "encode differs by up to " << de;
    // The labels are read: the same rows as another class give other (mu, lv).
    std::vector<int32_t> shifted(f.labels);
    for (int32_t &y : shifted) y = (y + 1) % f.cfg.classes;
    std::vector<float> es(c.N * Z2);
    ASSERT_EQ(gpu->encode(gpu, f.x.data(), shifted.data(), c.N, es.data()), 0) << cuvae_last_error();
    bool same;
    const double ds = max_diff(eg, es, 1e-3, 0.0, &same);
    EXPECT_FALSE(same) << "encode ignores the labels (max change " << ds << ")";
    // Missing or out-of-range labels are refused by the CUDA backend as by the CPU one (test_family_equiv.cc).
    std::vector<int32_t> bad(f.labels);
    bad[9] = f.cfg.classes;
    for (const int32_t *y : {(const int32_t *)nullptr, (const int32_t *)bad.data()}) {
      cuvae_clear_error();
      EXPECT_EQ(gpu->encode(gpu, f.x.data(), y, c.N, es.data()), -1);
      EXPECT_NE(std::string(cuvae_last_error()).find("encode"), std::string::npos) << cuvae_last_error();
      cuvae_clear_error();
      EXPECT_EQ(gpu->decode(gpu, es.data(), y, 10, ec.data()), -1);  // es: any 10 x Z values
      EXPECT_NE(std::string(cuvae_last_error()).find("decode"), std::string::npos) << cuvae_last_error();
    }
    // IWAE, K = 7.
    std::vector<double> lc(c.N, NAN), lg(c.N, NAN);
    ASSERT_EQ(cpu->iwae(cpu, &f.ds, 7, 6, lc.data()), 0) << cuvae_last_error();
    ASSERT_EQ(gpu->iwae(gpu, &f.ds, 7, 6, lg.data()), 0) << cuvae_last_error();
    double worst = 0.0;
    for (int i = 0; i < c.N; i++) {
      ASSERT_TRUE(std::isfinite(lc[i]) && std::isfinite(lg[i])) << "row " << i;
      const double err = std::fabs(lc[i] - lg[i]);
      EXPECT_LE(err, 1e-4 * (1.0 + std::fabs(lc[i]))) << "row " << i << ": cpu " << lc[i] << " cuda " << lg[i];
      worst = std::max(worst, err / (1.0 + std::fabs(lc[i])));
    }
    std::printf("[cvae %s] encode max |d| %.3g (labels shifted: %.3g); iwae K=7 max |d|/(1+|log p|) %.3g "
                "(row 0: %.6f)\n",
                lik == CUVAE_LIK_BERNOULLI ? "bernoulli" : "gaussian", de, ds, worst, lc[0]);
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    cuvae_dataset bare = f.ds;  // a training set without labels
    bare.labels = nullptr;
    cuvae_clear_error();
    cuvae_backend *none = cuvae_backend_cuda_create(&f.m, &f.cfg, &bare, nullptr);
    EXPECT_EQ(none, nullptr);
    if (none) none->destroy(none);
    EXPECT_NE(std::string(cuvae_last_error()).find("training set"), std::string::npos) << cuvae_last_error();
  }
}

// Active units and the KL per dim (src/engine/active_units.c) through each backend's encode op, after a few CPU steps
// (the CUDA backend given the same parameters): the same count, the KL per dim within encode's tolerance carried
// through (3.1) (1e-5 + 1e-4 relative of mu and lv: <= 3e-4 of each term's magnitude, mean over the rows).
TEST(FamilyParityLatent, ActiveUnitsAgree) {
  Case c{"active_units", 16, 2, 12, 10, 3, 16, 128, 6, CUVAE_LIK_BERNOULLI, CUVAE_ACT_TANH, 0.0f};
  Fixture f(c);
  cuvae_backend *cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_NE(cpu, nullptr) << cuvae_last_error();
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  for (int64_t t = 0; t < c.steps; t++) {
    const std::vector<uint32_t> rows = rows_of(c, f.cfg.seed, t);
    cuvae_step_result r;
    ASSERT_EQ(cuvae_backend_step(cpu, rows.data(), c.B, t, &r), 0) << cuvae_last_error();
  }
  const State s = state_of(cpu, f.m.n_params);
  ASSERT_EQ(gpu->set_state(gpu, s.p.data(), s.m.data(), s.v.data()), 0) << cuvae_last_error();
  int a_cpu = -1, a_gpu = -2;
  std::vector<double> kl_cpu(3), kl_gpu(3);
  ASSERT_EQ(cuvae_latent_stats(cpu, &f.m, &f.ds, CUVAE_ACTIVE_UNITS_THRESHOLD, &a_cpu, kl_cpu.data()), 0)
      << cuvae_last_error();
  ASSERT_EQ(cuvae_latent_stats(gpu, &f.m, &f.ds, CUVAE_ACTIVE_UNITS_THRESHOLD, &a_gpu, kl_gpu.data()), 0)
      << cuvae_last_error();
  EXPECT_EQ(a_cpu, a_gpu);
  for (int j = 0; j < 3; j++) EXPECT_NEAR(kl_cpu[j], kl_gpu[j], 1e-5 + 3e-4 * kl_cpu[j]) << "dim " << j;
  // The means barely vary after 6 steps (0 active at 0.01): lower thresholds count some (measured: 2, 3, 3).
  int counted = 0;
  for (double threshold : {1e-3, 1e-4, 1e-5}) {
    ASSERT_EQ(cuvae_active_units(cpu, &f.m, &f.ds, threshold, &a_cpu), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_active_units(gpu, &f.m, &f.ds, threshold, &a_gpu), 0) << cuvae_last_error();
    EXPECT_EQ(a_cpu, a_gpu) << "threshold " << threshold;
    std::printf("[active units] threshold %g: cpu %d cuda %d\n", threshold, a_cpu, a_gpu);
    counted += a_cpu;
  }
  EXPECT_GT(counted, 0);
  cpu->destroy(cpu);
  gpu->destroy(gpu);
}

}  // namespace
