// The importance-weighted estimate of log p(x) (docs/MATH.md section 5) on the CPU backend, on a model whose log p(x)
// is known in closed form, and `cuvae eval` with its IWAE, active-unit and per-dimension KL outputs.
//
// The model: no hidden layers and a Gaussian decoder, p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I), so
//   p(x) = N(b, W W^T + s^2 I)   (computed here in double with a Cholesky factor),
// and the posterior is Gaussian: p(z | x) = N(Sigma W^T (x - b) / s^2, Sigma), Sigma = (I + W^T W / s^2)^-1.
// W's columns are orthogonal, so W^T W and Sigma are diagonal and the encoder (one linear head) can represent the
// exact posterior: mu = A x + a0 with A = Sigma W^T / s^2, a0 = -A b, lv = log diag(Sigma). With it every
// log-weight equals log p(x) (log p(x|z) + log p(z) - log q(z|x) = log p(x) + log p(z|x) - log q(z|x)), so the
// estimate equals log p(x) for any K, up to float rounding: a sharp test. A deliberately bad encoder (mean shifted
// by one posterior sd, sd 1.5 times too wide) tests the statistics: the Monte-Carlo error of the estimate has a
// closed form (see MonteCarloTolerance below).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/checkpoint.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "cuvae/train.h"
#include "test_util.h"

namespace {

constexpr int kD = 5, kZ = 2;
constexpr double kSigma = 0.5;
constexpr double kLog2Pi = 1.8378770664093454836;
// W[d][j] (dec.out.weight, [D][Z]): columns c0 = (1, 2, 0, -1, 0.5) and c1 = (2, -1, 0.5, 0, 0), c0 . c1 = 0.
const double kW[kD][kZ] = {{1.0, 2.0}, {2.0, -1.0}, {0.0, 0.5}, {-1.0, 0.0}, {0.5, 0.0}};
const double kB[kD] = {0.3, -0.2, 0.1, 0.5, -0.4};

// Bad encoder: q = N(mu_post + kShift * sd_post, (kWiden * sd_post)^2) in every dimension.
constexpr double kShift = 1.0, kWiden = 1.5;

// Monte-Carlo error of the bad encoder's estimate. With w / p(x) = p(z|x) / q(z|x) =: rho, the estimate is
// log p(x) + log Y, Y = (1/K) sum_k rho_k, E[Y] = 1, Var[Y] = V / K, V = E_q[rho^2] - 1. Per dimension, in units of
// the posterior sd (p = N(0, 1), q = N(delta, tau^2)):
//   E_q[rho^2] = int p^2 / q = tau / sqrt(2a) exp(b^2 / (4a) + delta^2 / (2 tau^2)),  a = 1 - 1/(2 tau^2), b = delta/tau^2
// and the dimensions multiply (both densities factorise). By the delta method log Y has mean ~ -V/(2K) and sd
// ~ sqrt(V/K); rho has finite fourth moment (tau^2 > 3/4), so for K = 5000 log Y is close to normal.
double chi2_plus_one_1d(double delta, double tau) {
  const double a = 1.0 - 1.0 / (2 * tau * tau), b = delta / (tau * tau);
  return tau / std::sqrt(2 * a) * std::exp(b * b / (4 * a) + delta * delta / (2 * tau * tau));
}
double mc_V() { return std::pow(chi2_plus_one_1d(kShift, kWiden), kZ) - 1.0; }
// KL(q || p(z|x)) of the bad encoder, per dimension: -log tau + (tau^2 + delta^2) / 2 - 1/2.
double bad_kl() { return kZ * (-std::log(kWiden) + (kWiden * kWiden + kShift * kShift) / 2 - 0.5); }

double post_var(int j) {  // Sigma_jj = 1 / (1 + |c_j|^2 / s^2)
  double c2 = 0;
  for (int d = 0; d < kD; d++) c2 += kW[d][j] * kW[d][j];
  return 1.0 / (1.0 + c2 / (kSigma * kSigma));
}

// N rows x ~ p(x): x = W z + b + s n, z, n ~ N(0, I).
std::vector<float> sample_data(int N, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<float> x((size_t)N * kD);
  for (int i = 0; i < N; i++) {
    const double z0 = g(rng), z1 = g(rng);
    for (int d = 0; d < kD; d++) x[(size_t)i * kD + d] = (float)(kW[d][0] * z0 + kW[d][1] * z1 + kB[d] + kSigma * g(rng));
  }
  return x;
}

// log N(x; b, W W^T + s^2 I), in double: Cholesky C = L L^T, log det C = 2 sum log L_ii, quad = |L^-1 (x - b)|^2.
double exact_log_px(const float *x) {
  double C[kD][kD], L[kD][kD] = {};
  for (int i = 0; i < kD; i++)
    for (int k = 0; k < kD; k++)
      C[i][k] = kW[i][0] * kW[k][0] + kW[i][1] * kW[k][1] + (i == k ? kSigma * kSigma : 0.0);
  for (int i = 0; i < kD; i++)
    for (int k = 0; k <= i; k++) {
      double s = C[i][k];
      for (int t = 0; t < k; t++) s -= L[i][t] * L[k][t];
      L[i][k] = i == k ? std::sqrt(s) : s / L[k][k];
    }
  double y[kD], logdet = 0, quad = 0;
  for (int i = 0; i < kD; i++) {
    double s = x[i] - kB[i];
    for (int t = 0; t < i; t++) s -= L[i][t] * y[t];
    y[i] = s / L[i][i];
    quad += y[i] * y[i];
    logdet += 2 * std::log(L[i][i]);
  }
  return -0.5 * (kD * kLog2Pi + logdet + quad);
}

struct Model {
  cuvae_config cfg;
  cuvae_model m;
  std::vector<float> params;
};

// The linear-Gaussian model with the exact-posterior encoder (bad = false) or the bad one. eval_batch sets the
// backend's workspace (max_batch = max(batch_size 8, eval_batch)).
Model make_model(bool bad, int eval_batch) {
  Model md;
  cuvae_config_defaults(&md.cfg);
  md.cfg.n_hidden = 0;
  md.cfg.latent = kZ;
  md.cfg.likelihood = CUVAE_LIK_GAUSSIAN;
  md.cfg.sigma = (float)kSigma;
  md.cfg.batch_size = 8;
  md.cfg.eval_batch_size = eval_batch;
  md.cfg.seed = 77;
  md.cfg.threads = 1;
  EXPECT_EQ(cuvae_model_build(&md.m, kD, &md.cfg), 0) << cuvae_last_error();
  md.params.assign(md.m.n_params, 0.0f);
  auto at = [&](const char *name) {
    const cuvae_tensor *t = cuvae_model_find(&md.m, name);
    EXPECT_NE(t, nullptr) << name;
    return md.params.data() + t->offset;
  };
  float *dw = at("dec.out.weight"), *db = at("dec.out.bias");
  float *mw = at("enc.mu.weight"), *mb = at("enc.mu.bias"), *lw = at("enc.lv.weight"), *lb = at("enc.lv.bias");
  for (int d = 0; d < kD; d++) {
    for (int j = 0; j < kZ; j++) dw[d * kZ + j] = (float)kW[d][j];
    db[d] = (float)kB[d];
  }
  for (int j = 0; j < kZ; j++) {
    const double S = post_var(j);
    double a0 = 0;
    for (int d = 0; d < kD; d++) {
      const double A = S * kW[d][j] / (kSigma * kSigma);
      mw[j * kD + d] = (float)A;
      lw[j * kD + d] = 0.0f;
      a0 -= A * kB[d];
    }
    mb[j] = (float)(a0 + (bad ? kShift * std::sqrt(S) : 0.0));
    lb[j] = (float)(std::log(S) + (bad ? 2 * std::log(kWiden) : 0.0));
  }
  return md;
}

struct Data {
  std::vector<float> x;
  cuvae_dataset ds = {};
  explicit Data(int N, unsigned seed) : x(sample_data(N, seed)) {
    ds.n = N;
    ds.dim = kD;
    ds.rows = 1;
    ds.cols = kD;
    ds.x = x.data();
  }
};

std::vector<double> run_iwae(Model &md, const Data &data, int K, int batch) {
  cuvae_backend *be = cuvae_backend_cpu_create(&md.m, &md.cfg, nullptr, &data.ds);
  EXPECT_NE(be, nullptr) << cuvae_last_error();
  std::vector<double> out(data.ds.n, NAN);
  if (!be) return out;
  EXPECT_EQ(be->set_state(be, md.params.data(), nullptr, nullptr), 0);
  EXPECT_EQ(be->iwae(be, &data.ds, K, batch, out.data()), 0) << cuvae_last_error();
  be->destroy(be);
  return out;
}

// Float error of one log-weight, and so of an estimate (log-sum-exp is 1-Lipschitz in the max norm), counted from
// the backend's float path (u = 2^-24): mu and lv are GEMMs of kD terms plus the bias, <= gamma_{kD+1} (|b| +
// sum|W x|) each (Higham 3.1, any order); sd = expf(0.5f lv) adds 4 ulp (8u) to e^{0.5 lv}'s 0.5 |dlv|; z =
// fl(mu + fl(sd eps)) adds u |sd eps| + u |z|; the decoder mean f is a GEMM of kZ terms plus the bias, <=
// gamma_{kZ+1} (|b| + sum|W| |z|) + sum|W| |dz|; the float NLL row rounds once (u |nll|) and the log-weight is formed
// in double from the float z, eps, lv (iwae_cpu.c), so
//   |d log w| <= u |nll| + sum_d (|x - f| |df| + df^2 / 2) / s^2 + sum_j (|z| |dz| + dz^2 / 2 + |dlv| / 2).
// SampleForSampleFromTheDocumentedNoise knows every eps and checks each row against this bound exactly: it reaches
// 1.06e-4 there (K = 300, the bad encoder, max |eps| 3.86; measured errors <= 4.1e-6). Where the eps are not rebuilt
// (the exact-posterior and Monte-Carlo tests), kFloatTol is that bound scaled to |eps| <= 6 (the ~2 10^6 standard
// normals drawn here stay below ~5.5): the bound grows like |eps|^2 (|x - f| and |z| grow like |eps|, and so do the
// errors df, dz they multiply), 1.06e-4 (6 / 3.86)^2 = 2.6e-4 <= 3e-4; for the exact posterior the rounding of the
// encoder's parameters to float (A, log S: u relative each) shifts log w by ~1e-6 more, inside the margin. In the
// Monte-Carlo tests it is added to 5 standard deviations of >= 1e-3 nats and changes nothing.
constexpr double kU = 1.0 / (1 << 24);
constexpr double kGammaEnc = (kD + 1) * kU / (1 - (kD + 1) * kU), kGammaDec = (kZ + 1) * kU / (1 - (kZ + 1) * kU);
constexpr double kFloatTol = 3e-4;

// Exact posterior: every log-weight is log p(x), so the estimate is log p(x) for any K (to float error).
TEST(Iwae, ExactPosteriorGivesExactLogLikelihood) {
  Model md = make_model(false, 1000);
  const Data data(200, 1);
  for (int K : {1, 7, 300}) {
    const std::vector<double> est = run_iwae(md, data, K, 64);
    double worst = 0;
    for (size_t i = 0; i < data.ds.n; i++) {
      const double exact = exact_log_px(&data.x[i * kD]);
      ASSERT_NEAR(est[i], exact, kFloatTol) << "K " << K << " row " << i;
      worst = std::max(worst, std::fabs(est[i] - exact));
    }
    std::printf("[exact posterior, K %d] max |estimate - log p(x)| = %.3g\n", K, worst);
  }
}

// Sample ep's log-weight for data row x, -nll - KL_sampled, computed in double from the model's float parameters
// (docs/MATH.md section 5), and the bound on the backend's float error in it (|d log w|, counted above kFloatTol).
struct LogWeight {
  double lw, bound;
};
LogWeight log_weight_with_bound(const Model &md, const float *x, const float *ep) {
  const float *P = md.params.data();
  const cuvae_layer &enc = md.m.enc[0], &dec = md.m.dec[0];
  double z[kZ], ez[kZ], latent = 0, nll = 0.5 * kD * (std::log(kSigma * kSigma) + kLog2Pi), elw = 0;
  for (int j = 0; j < kZ; j++) {
    double mu = P[enc.b + j], lv = P[enc.b + kZ + j];
    double mmu = std::fabs(mu), mlv = std::fabs(lv);
    for (int d = 0; d < kD; d++) {
      mu += (double)P[enc.w + (size_t)j * kD + d] * x[d];
      lv += (double)P[enc.w + (size_t)(kZ + j) * kD + d] * x[d];
      mmu += std::fabs((double)P[enc.w + (size_t)j * kD + d] * x[d]);
      mlv += std::fabs((double)P[enc.w + (size_t)(kZ + j) * kD + d] * x[d]);
    }
    const double sd = std::exp(0.5 * lv);
    z[j] = mu + sd * ep[j];
    latent += z[j] * z[j] - (double)ep[j] * ep[j] - lv;  // docs/MATH.md section 5
    const double emu = kGammaEnc * mmu, elv = kGammaEnc * mlv, esd = 1.01 * sd * (8 * kU + 0.5 * elv);
    ez[j] = emu + std::fabs(ep[j]) * esd + kU * std::fabs(sd * ep[j]) + kU * std::fabs(z[j]);
    elw += std::fabs(z[j]) * ez[j] + 0.5 * ez[j] * ez[j] + 0.5 * elv;
  }
  for (int d = 0; d < kD; d++) {
    double f = P[dec.b + d], mf = std::fabs(f), ef = 0;
    for (int j = 0; j < kZ; j++) {
      f += (double)P[dec.w + (size_t)d * kZ + j] * z[j];
      mf += std::fabs((double)P[dec.w + (size_t)d * kZ + j]) * (std::fabs(z[j]) + ez[j]);
      ef += std::fabs((double)P[dec.w + (size_t)d * kZ + j]) * ez[j];
    }
    ef += kGammaDec * mf;
    nll += 0.5 * (x[d] - f) * (x[d] - f) / (kSigma * kSigma);
    elw += (std::fabs(x[d] - f) * ef + 0.5 * ef * ef) / (kSigma * kSigma);
  }
  elw += kU * std::fabs(nll);
  return LogWeight{-nll - 0.5 * latent, elw};
}

// The documented plan and noise offsets (include/cuvae/cpu.h), rebuilt by hand: sample s of data row r of pass p,
// chunk c, takes the Z normals at (s * R_p + r) * Z of the draw at offset (p * n_chunks + c) * stride(rows * chunk *
// Z) in the evaluation stream (seed ^ CUVAE_SEED_EVAL). From those eps the log-weights are computed here in double
// from the model's (float) parameters and log-sum-exp'ed; the backend must give the same per row, to float error.
// With K = 1 this is the single-sample ELBO estimate (sampled KL), sample for sample. Workspace 20 rows, batch 6:
// K = 1: 6 rows x 1 sample; K = 7: 2 rows x 7; K = 300: 1 row x 15 chunks of 20.
TEST(Iwae, SampleForSampleFromTheDocumentedNoise) {
  Model md = make_model(true, 20);
  const Data data(23, 2);
  const int batch = 6, max_batch = 20;
  struct Expect {
    int K, rows, chunk, n_chunks;
  };
  for (const Expect &e : {Expect{1, 6, 1, 1}, Expect{7, 2, 7, 1}, Expect{300, 1, 20, 15}}) {
    cuvae_iwae_plan plan;
    ASSERT_EQ(cuvae_iwae_plan_make(e.K, batch, max_batch, &plan), 0);
    EXPECT_EQ(plan.rows, e.rows);
    EXPECT_EQ(plan.chunk, e.chunk);
    EXPECT_EQ(plan.n_chunks, e.n_chunks);
    const std::vector<double> est = run_iwae(md, data, e.K, batch);

    cuvae_noise *g = cuvae_noise_create(md.cfg.seed ^ CUVAE_SEED_EVAL);
    ASSERT_NE(g, nullptr);
    const size_t draw = (size_t)e.rows * e.chunk * kZ;
    std::vector<float> eps(draw);
    double worst = 0, worst_bound = 0, max_eps = 0;
    for (int p = 0; p * e.rows < (int)data.ds.n; p++) {
      const int R = std::min(e.rows, (int)data.ds.n - p * e.rows);
      std::vector<std::vector<double>> lw(R);
      std::vector<double> bound(R, 0.0);  // per row: max over its samples of the log-weight's error bound
      for (int c = 0; c < e.n_chunks; c++) {
        const uint64_t offset = ((uint64_t)p * e.n_chunks + c) * cuvae_noise_stride(draw);
        ASSERT_EQ(cuvae_noise_normal(g, offset, eps.data(), draw), 0);
        const int C = std::min(e.chunk, e.K - c * e.chunk);
        for (int s = 0; s < C; s++)
          for (int r = 0; r < R; r++) {
            const float *x = &data.x[(size_t)(p * e.rows + r) * kD];
            const float *ep = &eps[((size_t)s * R + r) * kZ];
            for (int j = 0; j < kZ; j++) max_eps = std::max(max_eps, (double)std::fabs(ep[j]));
            const LogWeight w = log_weight_with_bound(md, x, ep);
            bound[r] = std::max(bound[r], w.bound);
            lw[r].push_back(w.lw);
          }
      }
      for (int r = 0; r < R; r++) {
        const double m = *std::max_element(lw[r].begin(), lw[r].end());
        double t = 0;
        for (double v : lw[r]) t += std::exp(v - m);
        const double ref = m + std::log(t) - std::log((double)e.K);
        const size_t row = (size_t)p * e.rows + r;
        // log-sum-exp is 1-Lipschitz in the max norm; its double arithmetic adds ~K 2^-53 |terms|: 1e-12.
        const double tol = bound[r] + 1e-12;
        ASSERT_NEAR(est[row], ref, tol) << "K " << e.K << " row " << row;
        worst = std::max(worst, std::fabs(est[row] - ref));
        worst_bound = std::max(worst_bound, tol);
      }
    }
    cuvae_noise_destroy(g);
    std::printf("[documented noise, K %d] max |backend - rebuilt| = %.3g (largest bound %.3g, max |eps| %.3g)\n",
                e.K, worst, worst_bound, max_eps);
  }
}

// A long IWAE call reports its progress after each pass: the share of the rank's passes done, exactly k / passes.
// 23 rows in passes of 2 (K = 7, batch 6, max batch 20: the plan above) are 12 passes; as rank 1 of 2 the backend runs
// passes 1, 3, ..., 11 and reports 1/6 .. 6/6, and leaves the others' rows 0 for the gather (a no-op sum here).
std::vector<double> g_reported;
void record_progress(void *, double done) { g_reported.push_back(done); }
int no_sum(void *, double *, int) { return 0; }

TEST(Iwae, ReportsItsProgressAfterEachPass) {
  Model md = make_model(true, 20);
  const Data data(23, 2);
  for (int ranks : {1, 2}) {
    cuvae_backend *be = cuvae_backend_cpu_create(&md.m, &md.cfg, nullptr, &data.ds);
    ASSERT_NE(be, nullptr) << cuvae_last_error();
    ASSERT_EQ(be->set_state(be, md.params.data(), nullptr, nullptr), 0);
    cuvae_data_parallel dp{};
    dp.rank = 1;
    dp.size = 2;
    dp.sum = no_sum;
    if (ranks == 2) {
      ASSERT_EQ(cuvae_backend_join_data_parallel(be, &dp), 0) << cuvae_last_error();
    }
    be->progress = record_progress;
    g_reported.clear();
    std::vector<double> out(data.ds.n, NAN);
    ASSERT_EQ(be->iwae(be, &data.ds, 7, 6, out.data()), 0) << cuvae_last_error();
    const int passes = ranks == 1 ? 12 : 6;
    ASSERT_EQ(g_reported.size(), (size_t)passes) << ranks << " ranks";
    for (int k = 0; k < passes; k++) EXPECT_EQ(g_reported[k], (double)(k + 1) / passes) << ranks << " ranks";
    for (size_t i = 0; i < data.ds.n; i++) {
      const bool mine = ranks == 1 || (i / 2) % 2 == 1;
      if (mine) EXPECT_LT(out[i], 0.0) << "row " << i;
      else EXPECT_EQ(out[i], 0.0) << "row " << i;
    }
    be->destroy(be);
  }
}

// The bad encoder: the K = 5000 estimate is within its Monte-Carlo error of log p(x), per row and on average, and
// not above it beyond that error (the IWAE bound holds in expectation); K = 1 is the ELBO, log p(x) - KL(q || p(z|x))
// on average.
TEST(Iwae, MonteCarloTolerance) {
  Model md = make_model(true, 1000);
  const int N = 200;
  const Data data(N, 3);
  const double V = mc_V(), K = 5000;
  const double sd = std::sqrt(V / K), bias = -V / (2 * K);
  const std::vector<double> est = run_iwae(md, data, (int)K, 64), est1 = run_iwae(md, data, 1, 64);
  double mean_gap = 0, mean_gap1 = 0, worst = 0;
  for (int i = 0; i < N; i++) {
    const double exact = exact_log_px(&data.x[(size_t)i * kD]), gap = est[i] - exact;
    // (a) per row within 5 sd (plus the bias and the float error); (b) never above log p(x) by more than 5 sd.
    // With 200 rows and a near-normal log Y, a 5 sd excursion somewhere has probability ~1e-4.
    EXPECT_LE(std::fabs(gap - bias), 5 * sd + kFloatTol) << "row " << i << " estimate " << est[i] << " exact " << exact;
    EXPECT_LE(gap, 5 * sd + kFloatTol) << "row " << i;
    worst = std::max(worst, std::fabs(gap - bias) / sd);
    mean_gap += gap / N;
    mean_gap1 += (est1[i] - exact) / N;
  }
  // The mean over 200 independent rows: sd / sqrt(200) = 0.00125 nats (V = 1.56, K = 5000).
  const double sd_mean = sd / std::sqrt((double)N);
  EXPECT_LE(std::fabs(mean_gap - bias), 5 * sd_mean + kFloatTol);
  EXPECT_LE(mean_gap, 5 * sd_mean + kFloatTol);
  // K = 1: log w - log p(x) = log p(z|x) - log q(z|x); with u = (z - mu_post) / sd_post = delta + tau e it is
  // log tau - delta^2 / 2 - delta tau e + (1 - tau^2) e^2 / 2 per dimension: mean -KL, variance
  // delta^2 tau^2 + (1 - tau^2)^2 / 2 (= 3.03), so the 200-row mean has sd sqrt(2 * 3.03 / 200) = 0.174.
  const double var1 = kZ * (kShift * kShift * kWiden * kWiden + std::pow(1 - kWiden * kWiden, 2) / 2);
  EXPECT_LE(std::fabs(mean_gap1 + bad_kl()), 5 * std::sqrt(var1 / N) + kFloatTol) << "K = 1 mean gap " << mean_gap1;
  std::printf("[bad encoder] V %.4f; K 5000: mean gap %.5f (expected %.5f, sd %.5f), worst row %.2f sd; "
              "K 1: mean gap %.4f (expected %.4f, sd %.4f)\n",
              V, mean_gap, bias, sd_mean, worst, mean_gap1, -bad_kl(), std::sqrt(var1 / N));
}

// ---- cuvae_eval and `cuvae eval` on a checkpoint of the model ------------------------------------------------

using cuvae_test::Result;

Result run_cli(const std::string &args) { return cuvae_test::run_shell(std::string(CUVAE_BIN) + " " + args); }

// A run-less checkpoint: the model's config (with .npy paths for its data), layout and parameters, step 42.
struct Checkpoint {
  std::string dir, path;
  Data train{64, 4}, test{37, 5};
  Checkpoint(const Model &md, const char *name) {
    dir = cuvae_test::make_temp_dir();
    path = dir + "/" + name;
    cuvae_test::write_file(dir + "/train.npy", cuvae_test::npy_bytes("<f4", "(64, 5)", train.x.data(), train.x.size() * 4));
    cuvae_test::write_file(dir + "/test.npy", cuvae_test::npy_bytes("<f4", "(37, 5)", test.x.data(), test.x.size() * 4));
    const std::string ini = "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir +
                            "/test.npy\n[model]\nhidden =\nlatent = 2\nlikelihood = gaussian\nsigma = 0.5\n"
                            "[train]\nbatch_size = 8\neval_batch_size = 16\nseed = 77\nthreads = 1\n";
    cuvae_checkpoint ck = {};
    ck.config_ini = const_cast<char *>(ini.c_str());
    ck.input_dim = kD;
    ck.n_tensors = md.m.n_tensors;
    std::memcpy(ck.tensors, md.m.tensors, sizeof ck.tensors);
    ck.n_params = md.m.n_params;
    std::vector<float> zeros(md.m.n_params, 0.0f), params = md.params;
    ck.params = params.data();
    ck.adam_m = zeros.data();
    ck.adam_v = zeros.data();
    ck.step = 42;
    EXPECT_EQ(cuvae_checkpoint_save(path.c_str(), &ck), 0) << cuvae_last_error();
  }
};

// Var over the rows of mu_j and the mean of each dimension's KL term, in double from the float parameters.
// Also, when kl_tol is given, the bound on |kl_per_dim[j] - kl[j]| and the mean of exp(lv_j) (for the ELBO's KL):
// the float encoder's mu, lv err by <= gamma_{kD+1} M, M = |b| + sum_d |W x| (Higham 3.1, any order), and the term
// 0.5 (mu^2 + e^lv - 1 - lv) is formed in double from them, so it moves by <= |mu| dmu + 0.5 |e^lv - 1| dlv (plus
// second order, the 1.01).
void latent_reference(const Model &md, const Data &data, double *var, double *kl, double *kl_tol = nullptr,
                      double *mean_exp_lv = nullptr) {
  const float *P = md.params.data();
  const cuvae_layer &enc = md.m.enc[0];
  const size_t n = data.ds.n;
  for (int j = 0; j < kZ; j++) {
    double s1 = 0, s2 = 0, k = 0, t = 0, el = 0;
    for (size_t i = 0; i < n; i++) {
      double mu = P[enc.b + j], lv = P[enc.b + kZ + j];
      double mmu = std::fabs(mu), mlv = std::fabs(lv);
      for (int d = 0; d < kD; d++) {
        mu += (double)P[enc.w + (size_t)j * kD + d] * data.x[i * kD + d];
        lv += (double)P[enc.w + (size_t)(kZ + j) * kD + d] * data.x[i * kD + d];
        mmu += std::fabs((double)P[enc.w + (size_t)j * kD + d] * data.x[i * kD + d]);
        mlv += std::fabs((double)P[enc.w + (size_t)(kZ + j) * kD + d] * data.x[i * kD + d]);
      }
      s1 += mu;
      s2 += mu * mu;
      k += 0.5 * (mu * mu + std::exp(lv) - 1 - lv);  // docs/MATH.md section 3, one dimension
      t += 1.01 * kGammaEnc * (std::fabs(mu) * mmu + 0.5 * std::fabs(std::exp(lv) - 1) * mlv);
      el += std::exp(lv);
    }
    if (kl_tol) kl_tol[j] = t / n + 1e-15;  // + the double sums, ~n 2^-53 |terms|
    if (mean_exp_lv) mean_exp_lv[j] = el / n;
    var[j] = s2 / n - (s1 / n) * (s1 / n);
    kl[j] = k / n;
  }
}

TEST(IwaeEval, ResultOfTheExactPosterior) {
  Model md = make_model(false, 16);
  Checkpoint ck(md, "exact.cuvae");
  cuvae_eval_opts opts = {};
  opts.device = "cpu";
  opts.iwae_k = 50;
  cuvae_eval_result r;
  ASSERT_EQ(cuvae_eval(ck.path.c_str(), &opts, &r), 0) << cuvae_last_error();
  EXPECT_EQ(r.step, 42);
  EXPECT_EQ(r.n, 37u);
  EXPECT_EQ(r.input_dim, (size_t)kD);
  ASSERT_EQ(r.latent, (size_t)kZ);
  EXPECT_EQ(r.iwae_k, 50);
  double exact = 0;
  for (size_t i = 0; i < 37; i++) exact -= exact_log_px(&ck.test.x[i * kD]) / 37;
  // Every log-weight is log p(x) (file comment): the mean of -log p(x) to float error.
  EXPECT_NEAR(r.iwae_nll, exact, kFloatTol);
  double var[kZ], kl[kZ], kl_tol[kZ], exp_lv[kZ], kl_sum = 0, sum_tol = 0;
  latent_reference(md, ck.test, var, kl, kl_tol, exp_lv);
  int active = 0;
  for (int j = 0; j < kZ; j++) {
    EXPECT_NEAR(r.kl_per_dim[j], kl[j], kl_tol[j]) << "dim " << j;  // latent_reference's bound
    kl_sum += r.kl_per_dim[j];
    active += var[j] > 0.01;
    // The ELBO's KL rows (reparam_kl_forward_cpu) use sd = expf(0.5f lv) (4 ulp: sd^2 within 16u), a double sum
    // rounded to float per row (u |KL_row|), from an encoder pass over other batches (its own kl_tol).
    sum_tol += 2 * kl_tol[j] + 8.01 * kU * exp_lv[j];
  }
  // The dims' KL terms sum to the ELBO's KL (analytic on both sides; evaluate sums the float rows in double):
  // |kl_sum - kl| <= u |kl| + sum_j (2 kl_tol_j + 8u mean e^lv_j).
  EXPECT_NEAR(kl_sum, r.elbo.kl, sum_tol + kU * std::fabs(r.elbo.kl));
  EXPECT_EQ(r.active_units, active);
  EXPECT_EQ(active, 2);  // both dims carry information about x here (Var mu_j ~ 1)
  std::printf("[eval] iwae_nll %.6f (exact %.6f), nelbo %.6f, kl %.6f = %.6f + %.6f, var(mu) %.3f %.3f\n",
              r.iwae_nll, exact, r.elbo.nelbo, r.elbo.kl, r.kl_per_dim[0], r.kl_per_dim[1], var[0], var[1]);
  cuvae_eval_result_free(&r);

  // Without --iwae the estimate is absent; the ELBO is the same as cuvae_eval_checkpoint's (same batch, noise).
  opts.iwae_k = 0;
  ASSERT_EQ(cuvae_eval(ck.path.c_str(), &opts, &r), 0) << cuvae_last_error();
  EXPECT_EQ(r.iwae_k, 0);
  cuvae_loss l;
  int64_t step = 0;
  ASSERT_EQ(cuvae_eval_checkpoint(ck.path.c_str(), "cpu", &l, &step), 0) << cuvae_last_error();
  EXPECT_EQ(l.nelbo, r.elbo.nelbo);
  EXPECT_EQ(step, 42);
  cuvae_eval_result_free(&r);
}

// A dimension whose mean barely depends on x is not active: scale dim 1's mean weights so Var(mu_1) < 0.01.
TEST(IwaeEval, InactiveDimension) {
  Model md = make_model(false, 16);
  const cuvae_tensor *t = cuvae_model_find(&md.m, "enc.mu.weight");
  ASSERT_NE(t, nullptr);
  for (int d = 0; d < kD; d++) md.params[t->offset + kD + d] *= 0.05f;  // row j = 1
  Checkpoint ck(md, "inactive.cuvae");
  double var[kZ], kl[kZ];
  latent_reference(md, ck.test, var, kl);
  ASSERT_GT(var[0], 0.01);
  ASSERT_LT(var[1], 0.01);
  cuvae_eval_opts opts = {};
  opts.device = "cpu";
  opts.split = "train";  // the train split: 64 rows
  cuvae_eval_result r;
  ASSERT_EQ(cuvae_eval(ck.path.c_str(), &opts, &r), 0) << cuvae_last_error();
  EXPECT_EQ(r.n, 64u);
  latent_reference(md, ck.train, var, kl);
  EXPECT_EQ(r.active_units, (var[0] > 0.01) + (var[1] > 0.01));
  EXPECT_EQ(r.active_units, 1);
  cuvae_eval_result_free(&r);
  opts.split = "validation";
  EXPECT_NE(cuvae_eval(ck.path.c_str(), &opts, &r), 0);
  EXPECT_NE(std::string(cuvae_last_error()).find("validation"), std::string::npos);
}

TEST(IwaeEval, CommandLine) {
  Model md = make_model(false, 16);
  Checkpoint ck(md, "cli.cuvae");
  Result r = run_cli("eval " + ck.path + " --device cpu --iwae 20 --batch 7");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char *key : {"\"step\": 42", "\"split\": \"test\"", "\"test_nelbo\": ", "\"nelbo\": ", "\"recon\": ",
                          "\"kl\": ", "\"bits_per_dim\": ", "\"iwae_k\": 20", "\"iwae_nll\": ",
                          "\"iwae_bits_per_dim\": ", "\"active_units\": 2", "\"kl_per_dim\": ["})
    EXPECT_NE(r.out.find(key), std::string::npos) << "missing " << key << " in " << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;  // one JSON line
  // bits_per_dim = nelbo / (D ln 2)
  const double nelbo = std::stod(r.out.substr(r.out.find("\"nelbo\": ") + 9));
  const double bits = std::stod(r.out.substr(r.out.find("\"bits_per_dim\": ") + 16));
  // Both printed with %.6f: each parsed value is within 0.5e-6 of the printed one, the nelbo's error then divided by
  // D ln 2: |bits - nelbo / (D ln 2)| <= 0.5e-6 (1 + 1 / (D ln 2)) (+ double rounding).
  EXPECT_NEAR(bits, nelbo / (kD * std::log(2.0)), 0.5e-6 * (1 + 1 / (kD * std::log(2.0))) + 1e-12);
  // No flags: as before (test_nelbo, recon, kl), no IWAE keys.
  r = run_cli("eval " + ck.path + " --device cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"test_nelbo\": "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("iwae"), std::string::npos) << r.out;
  r = run_cli("eval " + ck.path + " --device cpu --split train");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"train_nelbo\": "), std::string::npos) << r.out;
  // Usage errors: one message, exit code 2.
  const std::pair<const char *, const char *> bad[] = {
      {"--iwae 0", "--iwae '0'"},           {"--iwae -3", "--iwae '-3'"},   {"--iwae 1000001", "--iwae '1000001'"},
      {"--iwae abc", "--iwae 'abc'"},       {"--iwae 5x", "--iwae '5x'"},   {"--batch 0", "--batch '0'"},
      {"--batch -1", "--batch '-1'"},       {"--split val", "--split 'val'"}, {"--iwae", "--iwae"}};
  for (const auto &b : bad) {
    r = run_cli("eval " + ck.path + " " + b.first);
    EXPECT_EQ(r.code, 2) << b.first << ": " << r.out;
    EXPECT_NE(r.out.find(b.second), std::string::npos) << b.first << ": " << r.out;
  }
  r = run_cli("eval --help");
  ASSERT_EQ(r.code, 0);
  for (const char *flag : {"--split", "--iwae", "--batch", "--device", "test_nelbo", "active_units", "kl_per_dim"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
}

}  // namespace
