// The CPU backend's training step against the pieces it is made of: the batch gather, the documented noise
// scheme (step t draws at offset t * roundup4(B*Z) of the seed's stream), the initialisation, Adam's first
// moment and gradient-norm clipping.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "test_util.h"

namespace {

struct StepCase {
  float clip;
  int64_t step;
};

class BackendStep : public ::testing::TestWithParam<StepCase> {};

TEST_P(BackendStep, FirstMomentIsTheClippedGradientOfTheDocumentedBatch) {
  const StepCase tc = GetParam();
  const int N = 40, D = 9, B = 8;
  std::vector<float> x = cuvae_test::synthetic_data(N, D, 5);
  cuvae_dataset ds = {};
  ds.n = N;
  ds.dim = D;
  ds.rows = 1;
  ds.cols = D;
  ds.x = x.data();
  cuvae_config cfg;
  cuvae_config_defaults(&cfg);
  cfg.n_hidden = 1;
  cfg.hidden[0] = 6;
  cfg.latent = 3;
  cfg.batch_size = B;
  cfg.eval_batch_size = B;
  cfg.seed = 11;
  cfg.threads = 1;
  cfg.clip_norm = tc.clip;
  cuvae_model m;
  ASSERT_EQ(cuvae_model_build(&m, D, &cfg), 0) << cuvae_last_error();
  cuvae_backend *be = cuvae_backend_cpu_create(&m, &cfg, &ds, nullptr);
  ASSERT_NE(be, nullptr) << cuvae_last_error();

  // Rows 3, 10, 17, ... : any order the trainer might pass.
  std::vector<uint32_t> rows(B);
  for (int b = 0; b < B; b++) rows[b] = (uint32_t)((3 + 7 * b) % N);
  cuvae_step_result res;
  ASSERT_EQ(cuvae_backend_step(be, rows.data(), B, tc.step, &res), 0) << cuvae_last_error();

  // The same step, rebuilt by hand from the documented pieces.
  std::vector<float> params(m.n_params), grad(m.n_params), xb(B * D), eps(B * m.latent);
  ASSERT_EQ(cuvae_model_init(&m, params.data(), cfg.seed), 0);
  for (int b = 0; b < B; b++)
    for (int d = 0; d < D; d++) xb[b * D + d] = x[rows[b] * D + d];
  cuvae_noise *g = cuvae_noise_create(cfg.seed);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(cuvae_noise_normal(g, (uint64_t)tc.step * cuvae_noise_stride(B * m.latent), eps.data(), eps.size()), 0);
  cuvae_noise_destroy(g);
  cuvae_cpu_ws *ws = cuvae_cpu_ws_create(&m, B);
  cuvae_loss loss;
  ASSERT_EQ(cuvae_cpu_loss_grad(&m, ws, params.data(), xb.data(), eps.data(), B, grad.data(), &loss), 0);
  cuvae_cpu_ws_destroy(ws);
  // Same inputs, same code: the loss and the norm are bit-identical.
  EXPECT_EQ(res.loss.nelbo, loss.nelbo);
  const double norm = grad_norm_cpu(grad.data(), grad.size());
  EXPECT_EQ(res.grad_norm, norm);
  std::vector<float> got_grad(m.n_params);
  ASSERT_EQ(be->get_grad(be, got_grad.data()), 0);
  EXPECT_EQ(got_grad, grad);  // get_grad: the unclipped gradient of the step

  // After one Adam step from zero moments, m = (1 - beta1) * s * g, s = min(1, clip / ||g||) (clip 0 = off).
  std::vector<float> after(m.n_params), adam_m(m.n_params), adam_v(m.n_params);
  ASSERT_EQ(be->get_state(be, after.data(), adam_m.data(), adam_v.data()), 0);
  const double s = tc.clip > 0 && norm > tc.clip ? tc.clip / norm : 1.0;
  if (tc.clip > 0) {
    ASSERT_GT(norm, tc.clip) << "the case must actually clip";
  }
  for (size_t i = 0; i < m.n_params; i++) {
    const double want = (1.0 - cfg.beta1) * s * grad[i];
    // |m - want| <= 3u |want| + FLT_MIN, u = 2^-24. The float path rounds three times: the clip scale
    // s = (float)(clip / norm), the product s * g, and the product with 1 - beta1 (itself exact in float: 1 - 0.9f
    // is a Sterbenz difference); adding b1 * 0 is exact. (1 + u)^3 - 1 < 3.0000001 u. Moments below FLT_MIN are
    // flushed to zero (adam_cpu.c), an absolute error under FLT_MIN, which also covers subnormal roundings. The
    // gradient and its norm come from the same code on the same inputs, so they carry no error here.
    const double u = std::ldexp(1.0, -24);
    ASSERT_NEAR(adam_m[i], want, 3.0000001 * u * std::fabs(want) + FLT_MIN) << "entry " << i;
  }
  ASSERT_FALSE(cuvae_test::GapPositions(m).empty());  // the case has alignment gaps to check
  cuvae_test::ExpectGapsZero(m, after, "params");
  cuvae_test::ExpectGapsZero(m, adam_m, "adam m");
  cuvae_test::ExpectGapsZero(m, adam_v, "adam v");
  cuvae_test::ExpectGapsZero(m, got_grad, "gradient");
  be->destroy(be);
}

// Unclipped at step 0; clipped at steps 0 and 5 (the noise of step 5 comes from offset 5 * 24).
INSTANTIATE_TEST_SUITE_P(Cases, BackendStep,
                         ::testing::Values(StepCase{0.0f, 0}, StepCase{1e-3f, 0}, StepCase{1e-3f, 5}),
                         [](const ::testing::TestParamInfo<StepCase> &i) {
                           return std::string(i.param.clip > 0 ? "clip" : "noclip") + "_step" +
                                  std::to_string(i.param.step);
                         });

// The evaluation pass both backends share: batch k's rows and noise offset, the row-weighted mean, bad arguments.
TEST(EvalPass, BatchesCoverTheSetAndDrawAtTheBatchOffsets) {
  cuvae_eval_pass p;
  ASSERT_EQ(cuvae_eval_pass_begin(&p, 10, 4, 3, nullptr), 0) << cuvae_last_error();
  cuvae_eval_batch b;
  const size_t want_start[3] = {0, 4, 8};
  const int want_rows[3] = {4, 4, 2};
  const float recon[3] = {1.0f, 2.0f, 4.0f}, kl[3] = {0.5f, 0.25f, 1.0f};
  for (int64_t k = 0; k < 3; k++) {
    ASSERT_EQ(cuvae_eval_pass_batch(&p, k, &b), 1);
    EXPECT_EQ(b.start, want_start[k]);
    EXPECT_EQ(b.B, want_rows[k]);
    // every batch draws at k * stride(batch * Z), the last, shorter one included
    EXPECT_EQ(b.noise_offset, (uint64_t)k * cuvae_noise_stride(4 * 3));
    cuvae_loss l = {};
    l.recon = recon[k];
    l.kl = kl[k];
    cuvae_eval_pass_add(&p, &b, &l);
  }
  EXPECT_EQ(cuvae_eval_pass_batch(&p, 3, &b), 0);
  cuvae_loss out;
  ASSERT_EQ(cuvae_eval_pass_end(&p, &out), 0);
  // (4*1 + 4*2 + 2*4) / 10 = 2 and (4*0.5 + 4*0.25 + 2*1) / 10 = 0.5: every term and sum is exact in double.
  EXPECT_EQ(out.recon, 2.0);
  EXPECT_EQ(out.kl, 0.5);
  EXPECT_EQ(out.nelbo, 2.5);
  EXPECT_EQ(out.objective, 2.5);
  EXPECT_EQ(cuvae_eval_pass_begin(&p, 10, 0, 3, nullptr), -1);
  EXPECT_STREQ(cuvae_last_error(), "evaluation batch 0 must be >= 1");
  EXPECT_EQ(cuvae_eval_pass_begin(&p, 0, 4, 3, nullptr), -1);
  EXPECT_STREQ(cuvae_last_error(), "evaluation set is empty");
}

// Data parallel: rank 1 of 3 takes batches 1, 4, 7, ... (k mod 3 == 1) with their own rows and noise offsets, and
// the pass's end adds the other ranks' sums (here a stand-in that adds fixed values) before dividing by the rows.
TEST(EvalPass, DataParallelRankTakesEveryThirdBatch) {
  struct Fake {
    static int sum(void *ctx, double *v, int n) {
      const double *others = static_cast<const double *>(ctx);
      for (int i = 0; i < n; i++) v[i] += others[i];
      return 0;
    }
  };
  double others[2] = {30.0, 5.0};  // the other ranks' recon and KL sums
  cuvae_data_parallel dp{};
  dp.rank = 1;
  dp.size = 3;
  dp.ctx = others;
  dp.sum = Fake::sum;
  cuvae_eval_pass p;
  ASSERT_EQ(cuvae_eval_pass_begin(&p, 22, 4, 3, &dp), 0) << cuvae_last_error();
  cuvae_eval_batch b;
  std::vector<int64_t> mine;
  for (int64_t k = 0; cuvae_eval_pass_batch(&p, k, &b); k++) {
    EXPECT_EQ(b.noise_offset, (uint64_t)k * cuvae_noise_stride(4 * 3));  // the offset of one process's pass
    if (b.B == 0) continue;
    mine.push_back(k);
    EXPECT_EQ(b.start, (size_t)k * 4);
    cuvae_loss l = {};
    l.recon = 1.0;
    l.kl = 0.5;
    cuvae_eval_pass_add(&p, &b, &l);
  }
  EXPECT_EQ(mine, (std::vector<int64_t>{1, 4}));  // batches 0..5 (the last of 2 rows): k = 1 and 4 are rank 1's
  cuvae_loss out;
  ASSERT_EQ(cuvae_eval_pass_end(&p, &out), 0);
  // (8 rows x 1 + 30) / 22 and (8 x 0.5 + 5) / 22, as one process's pass would form them from the same sums.
  EXPECT_EQ(out.recon, 38.0 / 22.0);
  EXPECT_EQ(out.kl, 9.0 / 22.0);
}

}  // namespace
