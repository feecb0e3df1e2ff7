// Free bits ([train] free_bits, docs/MATH.md (3.4)) on the CPU reference: the objective and its gradient with the
// floor active on some latent dims and not on others (against central differences of an independent double
// reference), a floor above every dim's KL leaves no KL gradient at all, the reported nelbo / recon / kl stay the
// true ones, the config's refusals, and the refusal on several ranks; then active units (docs/MATH.md (3.5),
// src/engine/active_units.c) on a linear encoder whose posterior means have known variances.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "active_units.h"
#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "cuvae/model.h"

namespace {

const double kU = std::ldexp(1.0, -24);  // float's unit roundoff

using Workspace = std::unique_ptr<cuvae_cpu_ws, decltype(&cuvae_cpu_ws_destroy)>;

// A small Bernoulli VAE (D = 6, one hidden layer of 5, Z = 4) with its initial parameters.
struct Problem {
  static constexpr int D = 6, Z = 4, B = 5;
  cuvae_config cfg;
  cuvae_model m;
  std::vector<float> params, x, eps, mulv;
  Problem() {
    cuvae_config_defaults(&cfg);
    cfg.n_hidden = 1;
    cfg.hidden[0] = 5;
    cfg.latent = Z;
    EXPECT_EQ(cuvae_model_build(&m, D, &cfg), 0) << cuvae_last_error();
    params.assign(m.n_params, 0.0f);
    EXPECT_EQ(cuvae_model_init(&m, params.data(), 7), 0) << cuvae_last_error();
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (int i = 0; i < B * D; i++) x.push_back(u(rng));
    for (int i = 0; i < B * Z; i++) eps.push_back(n(rng));
    // A latent point whose dims have very different KL_j (batch means of (3.1)'s terms): dims 0 and 2 large means
    // (KL_j ~ 1.3 and 0.7), dims 1 and 3 near the prior (KL_j ~ 0.01): with lambda = 0.3, dims 0 and 2 are above the
    // floor and keep their KL gradient, dims 1 and 3 are below and lose it, none within 0.2 nats of the kink.
    const float mu_scale[Z] = {1.6f, 0.1f, 1.2f, 0.1f}, lv_scale[Z] = {0.3f, 0.1f, 0.2f, 0.1f};
    mulv.resize((size_t)B * 2 * Z);
    for (int b = 0; b < B; b++)
      for (int j = 0; j < Z; j++) {
        mulv[(size_t)b * 2 * Z + j] = mu_scale[j] * (1.0f + 0.1f * (float)b) * (j % 2 ? -1.0f : 1.0f);
        mulv[(size_t)b * 2 * Z + Z + j] = lv_scale[j] * (0.5f - 0.2f * (float)b);
      }
  }
  cuvae_objective_spec spec(float beta, float free_bits) const {
    return cuvae_objective_spec{CUVAE_OBJ_ELBO, 1, CUVAE_KL_ANALYTIC, beta, free_bits};
  }
  // The objective and dL/d[mu | lv] at mulv (the library, float).
  cuvae_loss latent(const std::vector<float> &at, const cuvae_objective_spec &s, std::vector<float> *dmulv) const {
    Workspace ws(cuvae_cpu_ws_create(&m, B), cuvae_cpu_ws_destroy);
    const cuvae_cpu_batch batch = {B, x.data(), NULL, eps.data(), NULL, 0, NULL, NULL, NULL};
    dmulv->assign(at.size(), 1e30f);
    cuvae_loss l;
    EXPECT_EQ(cuvae_cpu_latent_objective_grad(&m, ws.get(), params.data(), at.data(), &batch, &s, NULL, dmulv->data(),
                                              &l),
              0)
        << cuvae_last_error();
    return l;
  }
};

// KL_j of (3.4) in double: the batch mean of dim j's term of (3.1).
std::vector<double> kl_dims(const std::vector<double> &mulv, int B, int Z) {
  std::vector<double> kl(Z, 0.0);
  for (int b = 0; b < B; b++)
    for (int j = 0; j < Z; j++) {
      const double mu = mulv[(size_t)b * 2 * Z + j], lv = mulv[(size_t)b * 2 * Z + Z + j];
      kl[j] += 0.5 * (mu * mu + std::exp(lv) - 1.0 - lv) / B;
    }
  return kl;
}

// The free-bits term of the objective, beta sum_j max(lambda, KL_j), in double.
double floor_term(const std::vector<double> &mulv, int B, int Z, double beta, double lambda) {
  double s = 0;
  for (double k : kl_dims(mulv, B, Z)) s += std::max(lambda, k);
  return beta * s;
}

// The objective with free bits differs from the beta = 0 objective (the reconstruction alone) by exactly the floor
// term, so dL/d[mu|lv] (free bits) - dL/d[mu|lv] (beta = 0) is that term's gradient: checked against its central
// differences. h = 1e-5 in double: truncation h^2/6 |F'''| ~ 1e-10 (|F'''| <= beta sum exp(lv) ~ 10 here),
// roundoff 1e-16 |F| / h ~ 1e-10: the differences are good to ~1e-9. The library's side is float: each entry
// ks gate_j mu (one product, one sum with the reconstruction's part, then the difference of two floats) or
// ks gate_j 0.5 (sd^2 - 1) (sd = expf: 4 ulp, sd^2 8u + 1u, the subtraction, two products, the sum): <= 16u of
// (|reconstruction part| + |KL part|) + the difference's rounding, within 1e-6 + 1e-5 |fd| for these O(1) values
// (measured ~1e-8). A dim below the floor must show exactly the beta = 0 gradient (gate 0: ks * 0 * mu = 0 added).
TEST(FreeBits, GradientMatchesFiniteDifferencesWithTheFloorActiveOnSomeDims) {
  Problem p;
  const int B = Problem::B, Z = Problem::Z;
  const float beta = 0.8f, lambda = 0.3f;
  std::vector<double> mulvd(p.mulv.begin(), p.mulv.end());
  const std::vector<double> kl = kl_dims(mulvd, B, Z);
  ASSERT_GT(kl[0], lambda + 0.2);
  ASSERT_GT(kl[2], lambda + 0.2);
  ASSERT_LT(kl[1], lambda - 0.2);
  ASSERT_LT(kl[3], lambda - 0.2);
  std::vector<float> d_fb, d_rec;
  const cuvae_loss l_fb = p.latent(p.mulv, p.spec(beta, lambda), &d_fb);
  const cuvae_loss l_rec = p.latent(p.mulv, p.spec(0.0f, 0.0f), &d_rec);
  const cuvae_loss l_plain = [&] {
    std::vector<float> unused;
    return p.latent(p.mulv, p.spec(beta, 0.0f), &unused);
  }();
  // The reported losses are the true ones; only the objective carries the floor.
  EXPECT_EQ(l_fb.recon, l_plain.recon);
  EXPECT_EQ(l_fb.kl, l_plain.kl);
  EXPECT_EQ(l_fb.nelbo, l_plain.nelbo);
  const double term = floor_term(mulvd, B, Z, beta, lambda);
  EXPECT_NEAR(l_fb.objective - l_rec.objective, term, 1e-6 * (1 + term));  // float KL_j's and sums: ~1e-7
  EXPECT_GT(std::fabs(term - beta * l_fb.kl), 0.1);  // the floor changes the objective here
  const double h = 1e-5;
  for (int b = 0; b < B; b++)
    for (int c = 0; c < 2 * Z; c++) {
      const size_t i = (size_t)b * 2 * Z + c;
      const int j = c % Z;
      std::vector<double> plus = mulvd, minus = mulvd;
      plus[i] += h;
      minus[i] -= h;
      const double fd = (floor_term(plus, B, Z, beta, lambda) - floor_term(minus, B, Z, beta, lambda)) / (2 * h);
      const double got = (double)d_fb[i] - (double)d_rec[i];
      if (kl[j] < lambda) {
        EXPECT_EQ(d_fb[i], d_rec[i]) << "row " << b << " col " << c << ": a dim below the floor has no KL gradient";
        EXPECT_EQ(fd, 0.0);
      } else {
        EXPECT_NEAR(got, fd, 1e-6 + 1e-5 * std::fabs(fd)) << "row " << b << " col " << c;
        EXPECT_GT(std::fabs(fd), 1e-3) << "row " << b << " col " << c << ": the check must see the KL gradient";
      }
    }
}

// A floor above every dim's KL: the KL term is the constant beta Z lambda, so the gradient of every parameter is the
// reconstruction's alone (bit for bit the beta = 0 gradient: the gated term adds ks * 0 * mu = 0) and the objective is
// recon + beta Z lambda. A floor below every dim's KL gives the plain ELBO's gradient (the same float expressions,
// the KL part added after the reconstruction's: within a few ulps).
TEST(FreeBits, FloorAboveEveryDimLeavesNoKlGradient) {
  Problem p;
  const int B = Problem::B;
  const float beta = 1.0f;
  std::vector<float> g_fb(p.m.n_params), g_rec(p.m.n_params), g_plain(p.m.n_params), g_low(p.m.n_params);
  cuvae_loss l_fb, l_rec, l_plain, l_low;
  const cuvae_cpu_batch batch = {B, p.x.data(), NULL, p.eps.data(), NULL, 0, NULL, NULL, NULL};
  Workspace ws(cuvae_cpu_ws_create(&p.m, B), cuvae_cpu_ws_destroy);
  const cuvae_objective_spec fb = p.spec(beta, 1e6f), rec = p.spec(0.0f, 0.0f), plain = p.spec(beta, 0.0f),
                             low = p.spec(beta, 1e-30f);
  ASSERT_EQ(cuvae_cpu_objective_grad(&p.m, ws.get(), p.params.data(), &batch, &fb, g_fb.data(), &l_fb), 0);
  ASSERT_EQ(cuvae_cpu_objective_grad(&p.m, ws.get(), p.params.data(), &batch, &rec, g_rec.data(), &l_rec), 0);
  ASSERT_EQ(cuvae_cpu_objective_grad(&p.m, ws.get(), p.params.data(), &batch, &plain, g_plain.data(), &l_plain), 0);
  ASSERT_EQ(cuvae_cpu_objective_grad(&p.m, ws.get(), p.params.data(), &batch, &low, g_low.data(), &l_low), 0);
  EXPECT_EQ(g_fb, g_rec);
  EXPECT_EQ(l_fb.objective, l_rec.recon + (double)beta * Problem::Z * 1e6);
  EXPECT_EQ(l_fb.nelbo, l_plain.nelbo);
  EXPECT_EQ(l_fb.kl, l_plain.kl);
  // The KL gradient is not small here (otherwise the first check would prove nothing).
  double diff = 0, gmax = 0;
  for (size_t i = 0; i < g_rec.size(); i++) {
    diff = std::max(diff, (double)std::fabs(g_plain[i] - g_rec[i]));
    gmax = std::max(gmax, (double)std::fabs(g_plain[i]));
  }
  EXPECT_GT(diff, 1e-3 * gmax);
  // Every gate open: the plain ELBO's objective (sum_j KL_j against the rows' KL: float sums, ~1e-7) and gradient
  // (dlv's sd from a scalar expf here, a vectorised one there: 8u of the KL part, propagated through the encoder's
  // backward: 1e-6 of max|g|).
  EXPECT_NEAR(l_low.objective, l_plain.objective, 1e-6 * std::fabs(l_plain.objective));
  for (size_t i = 0; i < g_low.size(); i++)
    EXPECT_NEAR(g_low[i], g_plain[i], 1e-6 * gmax + 64 * kU * std::fabs(g_plain[i])) << "parameter " << i;
}

TEST(FreeBits, ConfigAcceptsTheAnalyticElboOnly) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  EXPECT_EQ(c.free_bits, 0.0f);
  c.dataset[0] = '\0';
  std::strcpy(c.train_images, "train.npy");
  std::strcpy(c.test_images, "test.npy");
  ASSERT_EQ(cuvae_config_set(&c, "train.free_bits=0.5"), 0) << cuvae_last_error();
  EXPECT_EQ(c.free_bits, 0.5f);
  cuvae_config ok = c;
  EXPECT_EQ(cuvae_config_finalize(&ok), 0) << cuvae_last_error();
  EXPECT_EQ(cuvae_config_set(&c, "train.free_bits=-1"), -1);
  EXPECT_STREQ(cuvae_last_error(), "--set train.free_bits: '-1' is below the minimum 0");
  struct Case {
    const char *set, *message;
  } cases[] = {
      {"train.kl=sampled",
       "config: [train] free_bits = 0.5 needs objective = elbo with kl = analytic (the floor applies to each latent "
       "dim's closed-form KL; got objective = elbo, kl = sampled)"},
      {"train.objective=iwae",
       "config: [train] free_bits = 0.5 needs objective = elbo with kl = analytic (the floor applies to each latent "
       "dim's closed-form KL; got objective = iwae, kl = analytic)"},
      {"train.objective=ae",
       "config: [train] free_bits = 0.5 needs objective = elbo with kl = analytic (the floor applies to each latent "
       "dim's closed-form KL; got objective = ae, kl = analytic)"},
  };
  for (const Case &k : cases) {
    cuvae_config bad = c;
    ASSERT_EQ(cuvae_config_set(&bad, k.set), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_config_finalize(&bad), -1) << k.set;
    EXPECT_STREQ(cuvae_last_error(), k.message);
  }
}

// Data parallel: the floor applies to the GLOBAL batch's KL_j, so each rank's column sums are added over the ranks
// (the batch's sum hook) before the gate. Two "ranks" in this process, rows 0-1 and 2-4 of the batch (batch_total
// 5), each told the other's sums by the hook (a first pass records them). Their dL/d[mu|lv] rows equal one process's
// up to the decoder's GEMMs: the KL part is elementwise from the row and the (same) gate, but the reconstruction part
// comes through two GEMM levels (K <= 6 terms each) whose summation order the GEMM library may choose by the row
// count (oneDNN's AVX2 kernels do): at most 2 gamma_6 ~ 12u of the terms' magnitudes, which stay within a small
// factor of the largest entry here: 32u of max |dL/d[mu|lv]|. Their objectives add up to one process's: the rows'
// NLLs through the same decoder forward GEMMs (K <= 6: gamma_6 ~ 6u relative each, summed in double), the floor term
// shared as 2/5 and 3/5 of it: within 16u relative. lambda lies between dim 2's KL over the whole batch and rows
// 0-1's part of it, so a rank gating on its own rows (no hook) drops dim 2's KL gradient: its rows then differ from
// one process's by far more than the bound (asserted: > 1000x), which shows the test can fail.
struct OtherRank {
  std::vector<double> mine, other;
};
int add_other_rank(void *ctx, double *v, int n) {
  OtherRank *h = static_cast<OtherRank *>(ctx);
  h->mine.assign(v, v + n);
  for (size_t j = 0; j < h->other.size(); j++) v[j] += h->other[j];
  return 0;
}

TEST(FreeBits, RanksAddTheirColumnSumsBeforeTheGate) {
  Problem p;
  const int B = Problem::B, Z = Problem::Z, D = Problem::D;
  std::vector<double> mulvd(p.mulv.begin(), p.mulv.end());
  const double kl2 = kl_dims(mulvd, B, Z)[2];
  std::vector<double> rows01(mulvd.begin(), mulvd.begin() + 2 * 2 * Z);
  const double kl2_rank0 = kl_dims(rows01, 2, Z)[2] * 2.0 / B;  // rows 0-1's sum over the global 5
  ASSERT_LT(kl2_rank0 + 0.05, kl2);
  const float lambda = (float)(0.5 * (kl2 + kl2_rank0));
  const cuvae_objective_spec spec = p.spec(0.8f, lambda);
  std::vector<float> one;
  const cuvae_loss whole = p.latent(p.mulv, spec, &one);
  const int r0[2] = {0, 2}, rows[2] = {2, 3};
  OtherRank hook[2];
  std::vector<float> dm[2];
  cuvae_loss part[2];
  for (int pass = 0; pass < 3; pass++) {  // 0: record the sums; 1: with the other's; 2: no hook (a rank alone)
    if (pass == 1) hook[0].other = hook[1].mine, hook[1].other = hook[0].mine;
    for (int r = 0; r < 2; r++) {
      Workspace ws(cuvae_cpu_ws_create(&p.m, B), cuvae_cpu_ws_destroy);
      const cuvae_cpu_batch batch = {rows[r], p.x.data() + (size_t)r0[r] * D, NULL, p.eps.data() + (size_t)r0[r] * Z,
                                     NULL, B, NULL, &hook[r], pass < 2 ? add_other_rank : NULL};
      dm[r].assign((size_t)rows[r] * 2 * Z, 0.0f);
      ASSERT_EQ(cuvae_cpu_latent_objective_grad(&p.m, ws.get(), p.params.data(), p.mulv.data() + (size_t)r0[r] * 2 * Z,
                                                &batch, &spec, NULL, dm[r].data(), &part[r]),
                0)
          << cuvae_last_error();
    }
    std::vector<float> joined(dm[0]);
    joined.insert(joined.end(), dm[1].begin(), dm[1].end());
    double largest = 0.0, worst = 0.0;
    for (size_t k = 0; k < one.size(); k++) {
      largest = std::max(largest, (double)std::fabs(one[k]));
      worst = std::max(worst, std::fabs((double)joined[k] - one[k]));
    }
    const double bound = 32 * kU * largest;
    if (pass == 1) {
      std::printf("two ranks against one process: max |d dL/d[mu|lv]| %.3g (bound %.3g)\n", worst, bound);
      EXPECT_LE(worst, bound);
      const double sum = part[0].objective + part[1].objective;
      EXPECT_LE(std::fabs(sum - whole.objective), 16 * kU * std::fabs(whole.objective))
          << sum << " vs " << whole.objective;
    }
    if (pass == 2) {
      EXPECT_GT(worst, 1000 * bound);
    }
  }
}

// ---- active units (docs/MATH.md (3.5)) ----------------------------------------------------------------------

// A linear encoder (no hidden layer): mu_j(x) = w_j . x + b_j exactly, so Var_x mu_j = w_j^T S w_j with S the
// data's covariance (divided by n). Dims: 0 constant (w = 0), 1 with Var 0.04, 2 with Var 0.0025, 3 with Var ~1;
// the threshold 0.01 makes dims 1 and 3 active. Float error in mu (~1e-7 relative) moves the variances by ~1e-7:
// far from the threshold.
TEST(ActiveUnits, LinearEncoderWithKnownVariances) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  c.n_hidden = 0;
  c.latent = 4;
  const int D = 3, n = 2500;
  cuvae_model m;
  ASSERT_EQ(cuvae_model_build(&m, D, &c), 0) << cuvae_last_error();
  std::vector<float> params(m.n_params, 0.0f);
  const cuvae_tensor *W = cuvae_model_find(&m, "enc.mu.weight"), *b = cuvae_model_find(&m, "enc.mu.bias");
  const cuvae_tensor *lvb = cuvae_model_find(&m, "enc.lv.bias");
  ASSERT_TRUE(W && b && lvb);
  // Data: feature 0 ~ U(0, 1) (variance 1/12), features 1, 2 other draws; the variances below are recomputed from
  // the drawn data, in double.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x((size_t)n * D);
  for (float &v : x) v = u(rng);
  const float w[4][3] = {{0, 0, 0}, {0.6928f, 0, 0}, {0, 0.1732f, 0}, {1.5f, -2.0f, 2.5f}};
  for (int j = 0; j < 4; j++) {
    for (int d = 0; d < D; d++) params[W->offset + (size_t)j * D + d] = w[j][d];
    params[b->offset + j] = 0.5f * (float)j - 3.0f;  // means far from 0: the shifted sums must not cancel
    params[lvb->offset + j] = -1.0f;
  }
  std::vector<double> var(4);
  for (int j = 0; j < 4; j++) {
    double s1 = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
      double mu = (double)params[b->offset + j];
      for (int d = 0; d < D; d++) mu += (double)w[j][d] * x[(size_t)i * D + d];
      s1 += mu;
      s2 += mu * mu;
    }
    var[j] = s2 / n - (s1 / n) * (s1 / n);
  }
  EXPECT_EQ(var[0], 0.0);
  EXPECT_GT(var[1], 0.03);
  EXPECT_LT(var[2], 0.005);
  EXPECT_GT(var[3], 0.5);
  cuvae_dataset ds = {};
  ds.n = n;
  ds.dim = D;
  ds.rows = 1;
  ds.cols = D;
  ds.x = x.data();
  cuvae_backend *be = cuvae_backend_cpu_create(&m, &c, NULL, NULL);
  ASSERT_NE(be, nullptr) << cuvae_last_error();
  ASSERT_EQ(be->set_state(be, params.data(), NULL, NULL), 0) << cuvae_last_error();
  int active = -1;
  ASSERT_EQ(cuvae_active_units(be, &m, &ds, CUVAE_ACTIVE_UNITS_THRESHOLD, &active), 0) << cuvae_last_error();
  EXPECT_EQ(active, 2);
  // Other thresholds count the dims above them: 0 counts every varying dim, 0.04 only dim 3 (dim 1's is ~0.04 x
  // 12 Var x0 ~ 0.04: between 0.03 and 0.05, so 0.1 is safe).
  ASSERT_EQ(cuvae_active_units(be, &m, &ds, 0.0, &active), 0);
  EXPECT_EQ(active, 3);
  ASSERT_EQ(cuvae_active_units(be, &m, &ds, 0.1, &active), 0);
  EXPECT_EQ(active, 1);
  // The KL per dim: lv = -1 everywhere, so each is mean(mu_j^2) + e^-1 - 1 + 1 over 2, against the double mean.
  std::vector<double> kl(4);
  ASSERT_EQ(cuvae_latent_stats(be, &m, &ds, 0.01, &active, kl.data()), 0);
  for (int j = 0; j < 4; j++) {
    double s = 0;
    for (int i = 0; i < n; i++) {
      double mu = (double)params[b->offset + j];
      for (int d = 0; d < D; d++) mu += (double)w[j][d] * x[(size_t)i * D + d];
      s += 0.5 * (mu * mu + std::exp(-1.0) - 1.0 + 1.0);
    }
    // mu in float: <= 4u relative per row through its square (2 x (2u sum + u product)) of terms ~ mu^2: 1e-6.
    EXPECT_NEAR(kl[j], s / n, 1e-6 * s / n) << "dim " << j;
  }
  cuvae_dataset empty = ds;
  empty.n = 0;
  EXPECT_EQ(cuvae_active_units(be, &m, &empty, 0.01, &active), -1);
  EXPECT_STREQ(cuvae_last_error(), "active units: the data set is empty");
  be->destroy(be);
}

}  // namespace
