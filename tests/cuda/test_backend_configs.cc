// Every model-family config in configs/ trains on both backends: each file is loaded, finalized and
// trained for a few Adam steps on the CPU backend and on the CUDA backend (emulated in CI, native with label gpu)
// on its real data set (Fashion-MNIST), and the two agree step by step within the tolerances of
// test_backend_parity.cc (whose file comment says why they are what they are): objective and NELBO 1e-4
// relative, gradient norm 1e-3 relative. Skips when the data set is not installed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "cuvae/rng.h"
#include "cuvae/data.h"

namespace {

constexpr int kSteps = 3;

class ConfigParity : public ::testing::TestWithParam<const char *> {};

TEST_P(ConfigParity, TrainsOnBothBackends) {
  const std::string path = std::string(CUVAE_SOURCE_DIR) + "/configs/" + GetParam() + ".ini";
  cuvae_config cfg;
  cuvae_config_defaults(&cfg);
  ASSERT_EQ(cuvae_config_load_file(&cfg, path.c_str()), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_config_finalize(&cfg), 0) << cuvae_last_error();
  cfg.threads = 1;
  cfg.eval_batch_size = cfg.batch_size;  // only training steps here; keep the buffers small
  // The data loader itself (not cuvae_load_split: the trainer's object would pull the device selection into this
  // emulated test's link); the family configs' training data need no load-time processing (binarize = static is
  // not among them).
  ASSERT_NE(cfg.binarize, CUVAE_BINARIZE_STATIC);
  cuvae_dataset train{};
  if (cuvae_dataset_load(&train, cfg.train_images, cfg.conditional ? cfg.train_labels : nullptr) != 0)
    GTEST_SKIP() << "data set not available: " << cuvae_last_error();
  cuvae_model m;
  ASSERT_EQ(cuvae_model_build(&m, train.dim, &cfg), 0) << cuvae_last_error();
  cuvae_backend *cpu = cuvae_backend_cpu_create(&m, &cfg, &train, nullptr);
  cuvae_backend *gpu = cuvae_backend_cuda_create(&m, &cfg, &train, nullptr);
  ASSERT_NE(cpu, nullptr) << cuvae_last_error();
  ASSERT_NE(gpu, nullptr) << cuvae_last_error();
  std::vector<uint32_t> perm(train.n);
  cuvae_shuffle(perm.data(), train.n, cfg.seed, 0);
  for (int64_t t = 0; t < kSteps; t++) {
    const uint32_t *rows = perm.data() + t * cfg.batch_size;
    cuvae_step_result rc, rg;
    ASSERT_EQ(cuvae_backend_step(cpu, rows, cfg.batch_size, t, &rc), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(gpu, rows, cfg.batch_size, t, &rg), 0) << cuvae_last_error();
    EXPECT_TRUE(std::isfinite(rc.loss.objective)) << GetParam() << " step " << t;
    EXPECT_LE(std::fabs(rc.loss.objective - rg.loss.objective), 1e-5 + 1e-4 * std::fabs(rc.loss.objective))
        << GetParam() << " step " << t;
    EXPECT_LE(std::fabs(rc.loss.nelbo - rg.loss.nelbo), 1e-5 + 1e-4 * std::fabs(rc.loss.nelbo))
        << GetParam() << " step " << t;
    EXPECT_LE(std::fabs(rc.grad_norm - rg.grad_norm), 1e-5 + 1e-3 * rc.grad_norm) << GetParam() << " step " << t;
    std::printf("[%s step %lld] objective cpu %.6f cuda %.6f\n", GetParam(), (long long)t, rc.loss.objective,
                rg.loss.objective);
  }
  cpu->destroy(cpu);
  gpu->destroy(gpu);
  cuvae_dataset_free(&train);
}

INSTANTIATE_TEST_SUITE_P(Configs, ConfigParity,
                         ::testing::Values("fashion_mnist", "beta_vae", "iwae", "ae", "dae", "cvae",
                                           "gaussian_learned", "large_latent"),
                         [](const ::testing::TestParamInfo<const char *> &i) { return std::string(i.param); });

}  // namespace
