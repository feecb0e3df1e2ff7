// Pieces of the independent double-precision references shared by the gradient checks (tests/test_gradcheck.cc,
// tests/test_family_gradcheck.cc): a dense layer read from the parameter buffer by tensor name, central differences
// that skip ReLU kinks, and the comparison of an analytic gradient range with them. Each test states its own step
// and tolerances (and why) and passes them in.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuvae/model.h"

namespace gradcheck_ref {

inline const cuvae_tensor &Find(const cuvae_model &m, const std::string &name) {
  const cuvae_tensor *t = cuvae_model_find(&m, name.c_str());
  if (!t) throw std::runtime_error("model has no tensor " + name);
  return *t;
}

// h_out[N][out] = act(h_in W^T + b) with W, b read by name; ReLU signs are appended to `pattern`.
inline std::vector<double> Linear(const cuvae_model &m, const std::vector<double> &p, const std::string &layer,
                                  const std::vector<double> &h, int N, bool activate, cuvae_activation act,
                                  std::vector<char> *pattern) {
  const cuvae_tensor &W = Find(m, layer + ".weight"), &bias = Find(m, layer + ".bias");
  const size_t out = W.shape[0], in = W.shape[1];
  if (h.size() != (size_t)N * in || bias.count != out) throw std::runtime_error(layer + ": shape mismatch");
  std::vector<double> y((size_t)N * out);
  for (int r = 0; r < N; r++) {
    for (size_t o = 0; o < out; o++) {
      double a = p[bias.offset + o];
      for (size_t i = 0; i < in; i++) a += p[W.offset + o * in + i] * h[r * in + i];
      if (activate && act == CUVAE_ACT_RELU) {
        if (pattern) pattern->push_back(a > 0);
        a = a > 0 ? a : 0;
      } else if (activate && act == CUVAE_ACT_TANH) {
        a = std::tanh(a);
      }
      y[r * out + o] = a;
    }
  }
  return y;
}

// Bound factor of the float encoder against the double reference, |ref - out| <= gamma_P M, with M the encoder
// evaluated in double on |W|, |x|, |b| without activations. Each dense layer is a GEMM of K = in terms plus the
// bias add: K + 1 terms summed in some order, <= gamma_{K+1} (|W| |h| + |b|) (Higham 3.1, any order or blocking).
// ReLU and tanh have slope <= 1 and |act(a)| <= |a|, tanhf adds 2 ulp (4u |h|, glibc's documented bound), so by
// induction over the layers every output errs by <= gamma_P M, P = sum_layers (in + 1) + 4 per tanh hidden layer.
inline double EncoderGamma(const cuvae_model &m, cuvae_activation act) {
  int P = 0;
  for (int i = 0; i < m.n_enc; i++) P += (int)m.enc[i].in + 1 + (i + 1 < m.n_enc && act == CUVAE_ACT_TANH ? 4 : 0);
  const double u = std::ldexp(1.0, -24);
  return P * u / (1 - P * u);
}

// (f(v + h e_i) - f(v - h e_i)) / 2h, or NaN when either side changes the ReLU sign pattern (a kink within h).
// f(v, &pattern) returns the reference loss and appends the ReLU signs it met.
template <class F>
double CentralDiff(std::vector<double> v, size_t i, double h, const std::vector<char> &pattern0, F f) {
  std::vector<char> pp, pm;
  const double v0 = v[i];
  v[i] = v0 + h;
  const double lp = f(v, &pp);
  v[i] = v0 - h;
  const double lm = f(v, &pm);
  if (pp != pattern0 || pm != pattern0) return NAN;
  return (lp - lm) / (2 * h);
}

struct Tally {
  int checked = 0, skipped = 0, bad = 0;
  double max_err = 0, max_fd = 0;
};

// analytic[i] vs the central difference of entry off + i of v, i < count: |analytic - fd| <= atol + rtol |fd|.
// expect_zero: the entries do not reach the loss (e.g. an autoencoder's lv head): both must be exactly 0.
// Prints one summary line.
template <class F>
Tally CheckRange(const std::string &what, const std::vector<double> &v, size_t off, size_t count,
                 const float *analytic, const std::vector<char> &pattern0, double h, double atol, double rtol,
                 bool expect_zero, F f) {
  Tally t;
  for (size_t i = 0; i < count; i++) {
    const double fd = CentralDiff(v, off + i, h, pattern0, f);
    if (std::isnan(fd)) {
      t.skipped++;
      continue;
    }
    t.checked++;
    const double err = std::fabs((double)analytic[i] - fd);
    t.max_err = std::max(t.max_err, err);
    t.max_fd = std::max(t.max_fd, std::fabs(fd));
    const bool ok = expect_zero ? (analytic[i] == 0.0f && fd == 0.0) : err <= atol + rtol * std::fabs(fd);
    if (!ok && ++t.bad <= 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << ", central difference " << fd;
  }
  std::printf("  %-16s %4d checked %2d skipped  max|err| %.2e  max|grad| %.2e%s\n", what.c_str(), t.checked,
              t.skipped, t.max_err, t.max_fd, expect_zero ? "  (must be 0)" : "");
  EXPECT_EQ(t.bad, 0) << what;
  // Every tensor that reaches the loss must have a non-trivial gradient somewhere, or the comparison proves nothing.
  if (!expect_zero) {
    EXPECT_GT(t.max_fd, 1e-4) << what << ": gradient is ~0 everywhere";
  }
  return t;
}

}  // namespace gradcheck_ref
