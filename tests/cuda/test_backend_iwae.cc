// The `iwae` entry of the CUDA backend (src/backend/cuda/backend_cuda_iwae.c, against the emulation) against the CPU backend's
// (src/backend/cpu/backend_cpu_iwae.c): the same model, data and K give the same per-row estimates of log p(x) (both follow
// cuvae_iwae_plan_make and draw each sample's eps at the same place of the evaluation noise stream). K = 1, 7 and 300
// with a batch that does not divide N (several rows per pass, one row per pass with several chunks, a shorter last
// chunk); resident and streamed data; K = 5000 on a small model; argument checks.
//
// Tolerance. log_px = logsumexp_k log w_k - log K is 1-Lipschitz in the max norm of the log-weights, so the
// backends differ by at most the largest difference of one sample's log w = -nll + (latent terms). The eps and the
// encoder's inputs are the same; what differs is float rounding:
// - GEMMs (encoder and decoder): cuBLAS's column-major calls vs cblas's may order the k <= 16 products otherwise:
//   each side within gamma_{k+1} of the magnitude sum per output (Higham 3.1, with the bias), so <= 2 gamma_17 =
//   2.1e-6 of it apart, through <= 3 layers: <= 6.3e-6 M_f for a decoder output f with magnitude sum M_f (the
//   chain on |W|, |h|, |b|); each of the D <= 12 NLL terms moves by |dt/df| times that (slope <= 1 in the logit for
//   Bernoulli; |x - f| / s^2 <= 8 for the Gaussian with s = 0.5);
// - the NLL row sum: float tree on the device vs double on the host: (ceil(D/32) + 38) u sum |parts| <= 2.3e-6
//   sum|parts| (tests/cuda/test_kernel_likelihood.cu);
// - mu, lv and z: the encoder's 2 gamma_17 per layer and expf's 2 + 4 ulp on sd, entering the latent terms
//   0.5 sum_j (z^2 - eps^2 - lv) through |z| and 1/2.
// Summed: |d log w| <= 6.3e-6 sum_d |dt/df_d| M_f,d + 2.3e-6 sum|parts| + (latent part, alike), which is within
// 1e-4 (1 + |log w|) when sum_d |dt/df_d| M_f,d <= 10 (1 + |log w|), sum|parts| <= 8 (1 + |log w|) and the latent
// part's sum_j (|z_j| + 1/2) M_z,j <= 4 (1 + |log w|) (4.2e-6 per unit: 2 layers of 2 gamma_17 and 12u): the
// condition assumed (O(1) weights and data; the NLL terms are >= 0, so sum|parts| is ~|log w| itself). We assert
// |d log_px| <= 1e-4 (1 + |log_px|) (log-sum-exp is 1-Lipschitz in the max norm of the log-weights) and print
// the measured maximum (under emulation ~1e-7 relative). A sample drawn from the wrong place of the noise stream
// would instead move its row by O(0.01 - 1) nats (log w varies by O(1) between samples here), far above it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "test_util.h"

namespace {

struct Case {
  const char *name;
  int D, n_hidden, h0, h1, Z, N, batch_size, eval_batch;
  cuvae_likelihood lik;
  cuvae_activation act;
};

struct Fixture {
  std::vector<float> x;
  cuvae_dataset ds = {};
  cuvae_config cfg;
  cuvae_model m;
  cuvae_backend *cpu = nullptr, *gpu = nullptr;
  explicit Fixture(const Case &c) {
    x = cuvae_test::synthetic_data(c.N, c.D, 11);
    ds.n = c.N;
    ds.dim = c.D;
    ds.rows = 1;
    ds.cols = c.D;
    ds.x = x.data();
    cuvae_config_defaults(&cfg);
    cfg.n_hidden = c.n_hidden;
    cfg.hidden[0] = c.h0;
    cfg.hidden[1] = c.h1;
    cfg.latent = c.Z;
    cfg.likelihood = c.lik;
    cfg.sigma = 0.5f;
    cfg.activation = c.act;
    cfg.batch_size = c.batch_size;
    cfg.eval_batch_size = c.eval_batch;
    cfg.seed = 4321;
    cfg.threads = 1;
    cfg.lr = 1e-2f;
    EXPECT_EQ(cuvae_model_build(&m, c.D, &cfg), 0) << cuvae_last_error();
    cpu = cuvae_backend_cpu_create(&m, &cfg, &ds, &ds);
    gpu = cuvae_backend_cuda_create(&m, &cfg, &ds, &ds);
    EXPECT_TRUE(cpu && gpu) << cuvae_last_error();
    if (!cpu || !gpu) return;
    // 25 Adam steps on the CPU (lr 1e-2) move the model away from its initialisation, so q and the decoder are
    // not near-trivial; the GPU gets the same parameters.
    std::vector<uint32_t> rows(c.batch_size);
    for (int t = 0; t < 25; t++) {
      for (int b = 0; b < c.batch_size; b++) rows[b] = (uint32_t)((t * c.batch_size + b) % c.N);
      cuvae_step_result r;
      EXPECT_EQ(cuvae_backend_step(cpu, rows.data(), c.batch_size, t, &r), 0) << cuvae_last_error();
    }
    std::vector<float> p(m.n_params);
    EXPECT_EQ(cpu->get_state(cpu, p.data(), nullptr, nullptr), 0);
    EXPECT_EQ(gpu->set_state(gpu, p.data(), nullptr, nullptr), 0) << cuvae_last_error();
  }
  ~Fixture() {
    if (cpu) cpu->destroy(cpu);
    if (gpu) gpu->destroy(gpu);
  }
  std::vector<double> iwae(cuvae_backend *be, const cuvae_dataset *d, int K, int batch) {
    std::vector<double> out(d->n, NAN);
    EXPECT_EQ(be->iwae(be, d, K, batch, out.data()), 0) << be->name << " K " << K << ": " << cuvae_last_error();
    return out;
  }
};

// Bernoulli, one hidden layer; Gaussian (sigma 0.5) with two tanh layers. max_batch = 20 (eval_batch).
const Case kCases[] = {
    {"bernoulli", 12, 1, 16, 0, 3, 53, 16, 20, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU},
    {"gaussian_tanh", 9, 2, 10, 6, 5, 41, 8, 20, CUVAE_LIK_GAUSSIAN, CUVAE_ACT_TANH},
};

double compare(const std::vector<double> &cpu, const std::vector<double> &gpu, const char *what) {
  double worst = 0;
  for (size_t i = 0; i < cpu.size(); i++) {
    EXPECT_TRUE(std::isfinite(cpu[i]) && std::isfinite(gpu[i])) << what << " row " << i;
    const double err = std::fabs(cpu[i] - gpu[i]), tol = 1e-4 * (1.0 + std::fabs(cpu[i]));  // file comment
    EXPECT_LE(err, tol) << what << " row " << i << ": cpu " << cpu[i] << " gpu " << gpu[i];
    worst = std::max(worst, err / (1.0 + std::fabs(cpu[i])));
  }
  return worst;
}

TEST(BackendIwae, CudaMatchesCpu) {
  for (const Case &c : kCases) {
    Fixture f(c);
    ASSERT_TRUE(f.cpu && f.gpu);
    // batch 6 does not divide N (53, 41). K = 1: 6 rows per pass, one chunk; K = 7: 2 rows x 7 samples (20 / 7);
    // K = 300: 15 chunks of 20 samples, one row per pass.
    for (int K : {1, 7, 300}) {
      const std::string what = std::string(c.name) + " K " + std::to_string(K);
      const std::vector<double> cpu = f.iwae(f.cpu, &f.ds, K, 6), gpu = f.iwae(f.gpu, &f.ds, K, 6);
      std::printf("[%s] max |cpu - gpu| / (1 + |log p|) = %.3g (row 0: %.6f)\n", what.c_str(),
                  compare(cpu, gpu, what.c_str()), cpu[0]);
    }
  }
}

// A chunk of 13 samples that does not fill the workspace (20 rows): K = 13 with batch 1 and batch 100 (capped to
// 20 / 13 = 1 row per pass): the same plan, the same numbers, bit for bit on each backend.
TEST(BackendIwae, BatchBeyondTheWorkspaceIsCapped) {
  Fixture f(kCases[0]);
  ASSERT_TRUE(f.cpu && f.gpu);
  for (cuvae_backend *be : {f.cpu, f.gpu}) {
    const std::vector<double> a = f.iwae(be, &f.ds, 13, 1), b = f.iwae(be, &f.ds, 13, 100);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double))) << be->name;
  }
}

// The CUDA backend reads the set it was created with in place and copies any other set up pass by pass: the same
// numbers bit for bit (same kernels, same inputs). Estimates are also reproducible call to call.
TEST(BackendIwae, ResidentEqualsStreamedAndRepeatable) {
  Fixture f(kCases[0]);
  ASSERT_TRUE(f.cpu && f.gpu);
  std::vector<float> copy = f.x;
  cuvae_dataset other = f.ds;
  other.x = copy.data();
  for (int K : {1, 7, 60}) {  // 60: three chunks of 20 per row
    const std::vector<double> resident = f.iwae(f.gpu, &f.ds, K, 6), streamed = f.iwae(f.gpu, &other, K, 6);
    EXPECT_EQ(0, std::memcmp(resident.data(), streamed.data(), resident.size() * sizeof(double))) << "K " << K;
    const std::vector<double> again = f.iwae(f.gpu, &f.ds, K, 6);
    EXPECT_EQ(0, std::memcmp(resident.data(), again.data(), resident.size() * sizeof(double))) << "K " << K;
    const std::vector<double> c1 = f.iwae(f.cpu, &f.ds, K, 6), c2 = f.iwae(f.cpu, &other, K, 6);
    EXPECT_EQ(0, std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(double))) << "K " << K;
  }
}

// K = 5000 (the standard evaluation) on a small model: max_batch 100 rows, so 50 chunks of 100 samples per row,
// with the memory of K = 100. Runs on both backends, finite, and they agree (tolerance as above). (How close the
// estimate comes to the true log p(x) is tests/test_iwae.cc's subject, on a model whose log p(x) is known.)
TEST(BackendIwae, K5000Runs) {
  const Case c = {"small", 6, 1, 8, 0, 2, 12, 8, 100, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU};
  Fixture f(c);
  ASSERT_TRUE(f.cpu && f.gpu);
  const std::vector<double> cpu = f.iwae(f.cpu, &f.ds, 5000, 100), gpu = f.iwae(f.gpu, &f.ds, 5000, 100);
  std::printf("[K 5000] max |cpu - gpu| / (1 + |log p|) = %.3g\n", compare(cpu, gpu, "K 5000"));
}

TEST(BackendIwae, BadArgumentsAreRefused) {
  Fixture f(kCases[0]);
  ASSERT_TRUE(f.cpu && f.gpu);
  std::vector<double> out(f.ds.n);
  cuvae_dataset wrong = f.ds;
  wrong.dim = f.ds.dim - 1;
  wrong.n = 4;
  for (cuvae_backend *be : {f.cpu, f.gpu}) {
    EXPECT_NE(be->iwae(be, &f.ds, 0, 6, out.data()), 0) << be->name;
    EXPECT_NE(std::string(cuvae_last_error()).find("K = 0"), std::string::npos) << cuvae_last_error();
    EXPECT_NE(be->iwae(be, &f.ds, 5, 0, out.data()), 0) << be->name;
    EXPECT_NE(std::string(cuvae_last_error()).find("batch 0"), std::string::npos) << cuvae_last_error();
    EXPECT_NE(be->iwae(be, &wrong, 5, 6, out.data()), 0) << be->name;
    EXPECT_NE(std::string(cuvae_last_error()).find("features"), std::string::npos) << cuvae_last_error();
  }
  // Pending training steps on the device must be collected first.
  std::vector<uint32_t> rows(16);
  for (int b = 0; b < 16; b++) rows[b] = (uint32_t)b;
  ASSERT_EQ(f.gpu->train_step(f.gpu, rows.data(), 16, 0), 0) << cuvae_last_error();
  EXPECT_NE(f.gpu->iwae(f.gpu, &f.ds, 3, 6, out.data()), 0);
  EXPECT_NE(std::string(cuvae_last_error()).find("pending"), std::string::npos) << cuvae_last_error();
  std::vector<cuvae_step_result> res(f.gpu->max_pending);
  int n = 0;
  EXPECT_EQ(f.gpu->collect(f.gpu, res.data(), &n), 0) << cuvae_last_error();
  EXPECT_EQ(f.gpu->iwae(f.gpu, &f.ds, 3, 6, out.data()), 0) << cuvae_last_error();
}

}  // namespace
