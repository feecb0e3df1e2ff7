// Shared by the whole-step parity tests (tests/cuda/test_backend_parity.cc, test_backend_family.cc): the CUDA
// backend against the CPU reference backend on the same model, data, row orders and noise. The tolerances and
// why they are what they are: see the comment at the top of test_backend_parity.cc.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "test_util.h"

namespace cuvae_parity {

struct Case {
  const char *name;
  int D, n_hidden, h0, h1, Z, B, N, steps;
  cuvae_likelihood lik;
  cuvae_activation act;
  float clip;
};

void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

struct Fixture {
  std::vector<float> x;
  std::vector<int32_t> labels;  // a conditional model's: row i has class i % classes (ds.labels points here)
  cuvae_dataset ds = {};
  cuvae_config cfg;
  cuvae_model m;
  // tweak: changes to the config before the model is built (the model-family keys of a case). When it makes the
  // model conditional, the data set gets labels (before any backend is created from it).
  explicit Fixture(const Case &c, void (*tweak)(cuvae_config *) = nullptr) {
    x = cuvae_test::synthetic_data(c.N, c.D, 7);
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
    cfg.batch_size = c.B;
    cfg.eval_batch_size = c.B + 5;  // a partial last batch, and offsets that differ from the training ones
    cfg.seed = 1234;
    cfg.threads = 1;
    cfg.clip_norm = c.clip;
    cfg.lr = 1e-3f;
    if (tweak) tweak(&cfg);
    if (cfg.conditional) {
      labels.resize(c.N);
      for (int i = 0; i < c.N; i++) labels[i] = i % cfg.classes;
      ds.labels = labels.data();
    }
    EXPECT_EQ(cuvae_model_build(&m, c.D, &cfg), 0) << cuvae_last_error();
  }
  Fixture(const Fixture &) = delete;  // ds points into x and labels
  Fixture &operator=(const Fixture &) = delete;
};

// Rows of training step t: epoch t / (N/B) of cuvae_shuffle, consecutive chunk of B.
std::vector<uint32_t> rows_of(const Case &c, uint64_t seed, int64_t t) {
  const int per_epoch = c.N / c.B;
  std::vector<uint32_t> perm(c.N);
  cuvae_shuffle(perm.data(), c.N, seed, t / per_epoch);
  const int start = (int)(t % per_epoch) * c.B;
  return std::vector<uint32_t>(perm.begin() + start, perm.begin() + start + c.B);
}

struct State {
  std::vector<float> p, m, v;
};
State state_of(cuvae_backend *be, size_t n) {
  State s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  EXPECT_EQ(be->get_state(be, s.p.data(), s.m.data(), s.v.data()), 0) << cuvae_last_error();
  return s;
}

// max |a - b| over elements, and whether all satisfy |a - b| <= atol + rtol |a|.
double max_diff(const std::vector<float> &a, const std::vector<float> &b, double atol, double rtol, bool *ok) {
  double worst = 0.0;
  *ok = true;
  for (size_t i = 0; i < a.size(); i++) {
    const double d = std::fabs((double)a[i] - (double)b[i]);
    worst = std::max(worst, d);
    if (!(d <= atol + rtol * std::fabs((double)a[i]))) *ok = false;
  }
  return worst;
}

double max_abs(const std::vector<float> &a) {
  double r = 0.0;
  for (float f : a) r = std::max(r, (double)std::fabs(f));
  return r;
}

void expect_state_close(const State &cpu, const State &gpu, double p_atol, const char *when) {
  bool ok;
  const double dp = max_diff(cpu.p, gpu.p, p_atol, 0.0, &ok);
  EXPECT_TRUE(ok) << when << ": parameters differ by up to " << dp;
  // Moments: m is a decayed sum of the gradients, v of their squares; after the first steps each inherits the
  // gradients' bound (expect_grads_close: 1e-5 max|g| + 1e-4 |g|, v twice that relative) grown along the trajectory
  // (test_backend_parity.cc's file comment): rtol 1e-3 plus an atol of 1e-4 of the largest moment.
  const double dm = max_diff(cpu.m, gpu.m, 1e-4 * max_abs(cpu.m), 1e-3, &ok);
  EXPECT_TRUE(ok) << when << ": Adam m differs by up to " << dm;
  const double dv = max_diff(cpu.v, gpu.v, 1e-4 * max_abs(cpu.v), 1e-3, &ok);
  EXPECT_TRUE(ok) << when << ": Adam v differs by up to " << dv;
  std::printf("[%s] max |dp| %.3g  |dm| %.3g  |dv| %.3g\n", when, dp, dm, dv);
}

// Every gradient tensor of the last step, CPU vs CUDA: |g_cpu - g_cuda| <= atol + rtol |g_cpu| per element, with
// atol = 1e-5 max|g_cpu| over the tensor. Why: each element is a sum over the batch (and, for weights, a GEMM sum)
// whose terms cancel; its float error is relative to the sum of |terms|, which the tensor's largest entry bounds
// in scale: each side within gamma_K of the magnitude per GEMM (Higham 3.1; K <= 32: 2e-6 apart at most),
// compounded over the <= 3 + 3 layers of the forward and backward pass (~12 gamma_32 = 2.3e-5 of the magnitude
// sum, which is <= 0.4 max|g| when the tensor's gradients do not cancel by more than that: the condition assumed).
// Measured under emulation at step 0: at most 1.4e-6 of max|g|; 1e-5 also leaves room for the other summation
// orders (split-K) of cuBLAS on a GPU. rtol 1e-4 for the large entries, which carry the same absolute error.
// From step 1 on, the gradients are those of parameters that already differ (test_backend_parity.cc's file comment:
// no a-priori bound closes), so atol is the step-0 bound grown 25x, as the losses' is: 2.5e-4 max|g|. Measured: up
// to 6.2e-5 of max|g| (cvae_iwae_3's enc.lv.bias at step 8, with the device's normals; with and without FMA
// contraction), every other member and case <= 2.1e-6.
double expect_grads_close(const cuvae_model &m, cuvae_backend *cpu, cuvae_backend *gpu, const char *name,
                          int64_t t) {
  const double grown = t == 0 ? 1.0 : 25.0;
  std::vector<float> gc(m.n_params), gg(m.n_params);
  EXPECT_EQ(cpu->get_grad(cpu, gc.data()), 0) << cuvae_last_error();
  EXPECT_EQ(gpu->get_grad(gpu, gg.data()), 0) << cuvae_last_error();
  double worst = 0.0;  // max over tensors of max|dg| / max|g|
  for (int i = 0; i < m.n_tensors; i++) {
    const cuvae_tensor &tn = m.tensors[i];
    const std::vector<float> a(gc.begin() + tn.offset, gc.begin() + tn.offset + tn.count);
    const std::vector<float> b(gg.begin() + tn.offset, gg.begin() + tn.offset + tn.count);
    const double scale = max_abs(a);
    bool ok;
    const double d = max_diff(a, b, grown * 1e-5 * scale, 1e-4, &ok);
    EXPECT_TRUE(ok) << name << " step " << t << ": gradient " << tn.name << " differs by up to " << d
                    << " (max |g| " << scale << ")";
    worst = std::max(worst, scale > 0 ? d / scale : d);
  }
  return worst;
}

// Steps [t0, t1) on both backends; per-step losses, gradient norms and every gradient tensor compared.
void run_both(const Case &c, const cuvae_model &m, cuvae_backend *cpu, cuvae_backend *gpu, uint64_t seed,
              int64_t t0, int64_t t1) {
  double worst_loss = 0.0, worst_norm = 0.0, worst_grad = 0.0;
  for (int64_t t = t0; t < t1; t++) {
    const std::vector<uint32_t> rows = rows_of(c, seed, t);
    cuvae_step_result rc, rg;
    ASSERT_EQ(cuvae_backend_step(cpu, rows.data(), c.B, t, &rc), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(gpu, rows.data(), c.B, t, &rg), 0) << cuvae_last_error();
    // Step t's loss is computed from parameters that already carry t steps of drift: <= 60u = 3.6e-6 relative at
    // t = 0, allowed 25x that (1e-4 relative) for all 20 steps (test_backend_parity.cc's file comment).
    const double dl = std::fabs(rc.loss.nelbo - rg.loss.nelbo);
    EXPECT_LE(dl, 1e-5 + 1e-4 * std::fabs(rc.loss.nelbo)) << c.name << " step " << t;
    EXPECT_LE(std::fabs(rc.loss.kl - rg.loss.kl), 1e-5 + 1e-4 * std::fabs(rc.loss.kl)) << c.name << " step " << t;
    EXPECT_LE(std::fabs(rc.loss.objective - rg.loss.objective), 1e-5 + 1e-4 * std::fabs(rc.loss.objective))
        << c.name << " step " << t;
    // ||g|| from a float sum of squares (device: <= (ceil(n / threads) + log2 threads) u sum g^2, ~2.4e-5 relative
    // for n <= 1e5, halved by the root) vs a double one, of gradients within 1e-5 max|g| + 1e-4 |g| (below):
    // |dn| <= ||dg|| + 1.2e-5 ||g|| <= 1.1e-4 ||g|| + 1e-5 sqrt(n) max|g| <= 1e-3 ||g|| when sqrt(n) max|g| <= 89 ||g||
    // (the gradient not concentrated on a few entries: the condition assumed; measured <= 2.6e-7 relative).
    const double dn = std::fabs(rc.grad_norm - rg.grad_norm);
    EXPECT_LE(dn, 1e-5 + 1e-3 * rc.grad_norm) << c.name << " step " << t;
    if (t == 0 && c.clip > 0) {
      EXPECT_GT(rc.grad_norm, c.clip) << "the case must actually clip";
    }
    worst_loss = std::max(worst_loss, dl / std::max(1.0, std::fabs(rc.loss.nelbo)));
    worst_norm = std::max(worst_norm, dn / std::max(1e-30, rc.grad_norm));
    worst_grad = std::max(worst_grad, expect_grads_close(m, cpu, gpu, c.name, t));
  }
  std::printf("[%s steps %lld..%lld] max rel |dloss| %.3g  max rel |d||g||| %.3g  max |dg|/max|g| %.3g\n", c.name,
              (long long)t0, (long long)t1 - 1, worst_loss, worst_norm, worst_grad);
}

}  // namespace cuvae_parity
