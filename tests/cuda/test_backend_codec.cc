// encode / decode (src/backend/backend.h) on the CUDA backend (src/backend/cuda/backend_cuda_codec.c, built against the emulation) and on
// the CPU backend (src/backend/cpu/backend_cpu_codec.c), against each other and against an independent double-precision forward
// pass written here from the layout (W[out][in], then b; relu/tanh hidden layers; sigmoid for Bernoulli means).
//
// Tolerances, |out - ref| <= 1e-5 + 1e-4 |ref| (u = 2^-24). Each output is a chain of at most 3 dense layers whose
// sums have K <= 30 terms plus the bias: each side within gamma_{K+1} of the layer's magnitude sum M (Higham 3.1, any
// order: cuBLAS's column-major calls and cblas's row-major ones may add in different orders), propagated through
// the later layers' |W| (ReLU and tanh have slope <= 1; tanhf adds 2 ulp = 4u per hidden layer): <= (3 gamma_31 +
// 8u) M = 6e-6 M for one side against the double reference, twice that CPU against CUDA. That is within the
// tolerance when M <= 0.8 + 8 |ref|, the condition assumed (weights and inputs O(1) after 6 small Adam steps from
// the initialisation; the Bernoulli mean's sigmoid only shrinks differences
// (slope <= 1/4). Measured maxima are printed. Rows are processed in batches of the backend's max batch
// (max(batch_size, eval_batch_size) = 13 here): n = 31 is two full batches and a partial one, n = 1 a lone row.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "test_util.h"

namespace {

struct Pair {
  std::vector<float> x;
  cuvae_dataset ds = {};
  cuvae_config cfg;
  cuvae_model m;
  cuvae_backend *cpu = nullptr, *gpu = nullptr;
  std::vector<float> params;

  Pair(cuvae_likelihood lik, cuvae_activation act) {
    const int N = 64, D = 30;
    x = cuvae_test::synthetic_data(N, D, 11);
    ds.n = N;
    ds.dim = D;
    ds.rows = 1;
    ds.cols = D;
    ds.x = x.data();
    cuvae_config_defaults(&cfg);
    cfg.n_hidden = 2;
    cfg.hidden[0] = 12;
    cfg.hidden[1] = 10;
    cfg.latent = 3;
    cfg.likelihood = lik;
    cfg.sigma = 0.5f;
    cfg.activation = act;
    cfg.batch_size = 8;
    cfg.eval_batch_size = 13;
    cfg.seed = 99;
    cfg.threads = 1;
    EXPECT_EQ(cuvae_model_build(&m, D, &cfg), 0) << cuvae_last_error();
    cpu = cuvae_backend_cpu_create(&m, &cfg, &ds, &ds);
    gpu = cuvae_backend_cuda_create(&m, &cfg, &ds, &ds);
    EXPECT_NE(cpu, nullptr) << cuvae_last_error();
    EXPECT_NE(gpu, nullptr) << cuvae_last_error();
    if (!cpu || !gpu) return;
    // A few CPU training steps, so the weights are not the initial ones; then the same parameters on the GPU.
    std::vector<uint32_t> rows(cfg.batch_size);
    for (int64_t t = 0; t < 6; t++) {
      for (int b = 0; b < cfg.batch_size; b++) rows[b] = (uint32_t)((t * cfg.batch_size + b) % N);
      cuvae_step_result r;
      EXPECT_EQ(cuvae_backend_step(cpu, rows.data(), cfg.batch_size, t, &r), 0) << cuvae_last_error();
    }
    params.resize(m.n_params);
    EXPECT_EQ(cpu->get_state(cpu, params.data(), nullptr, nullptr), 0) << cuvae_last_error();
    EXPECT_EQ(gpu->set_state(gpu, params.data(), nullptr, nullptr), 0) << cuvae_last_error();
  }
  ~Pair() {
    if (cpu) cpu->destroy(cpu);
    if (gpu) gpu->destroy(gpu);
  }
};

// y = act(W x + b) in double for one row.
std::vector<double> dense_ref(const std::vector<float> &p, const cuvae_layer &l, const std::vector<double> &in) {
  std::vector<double> y(l.out);
  for (size_t o = 0; o < l.out; o++) {
    double s = p[l.b + o];
    for (size_t i = 0; i < l.in; i++) s += (double)p[l.w + o * l.in + i] * in[i];
    if (l.act == CUVAE_ACT_RELU) s = s > 0 ? s : 0;
    if (l.act == CUVAE_ACT_TANH) s = std::tanh(s);
    y[o] = s;
  }
  return y;
}

std::vector<double> encode_ref(const Pair &s, const float *x) {
  std::vector<double> v(x, x + s.m.input_dim);
  for (int i = 0; i < s.m.n_enc; i++) v = dense_ref(s.params, s.m.enc[i], v);
  return v;  // [mu | lv]
}

std::vector<double> decode_ref(const Pair &s, const float *z) {
  std::vector<double> v(z, z + s.m.latent);
  for (int i = 0; i < s.m.n_dec; i++) v = dense_ref(s.params, s.m.dec[i], v);
  if (s.m.likelihood == CUVAE_LIK_BERNOULLI)
    for (double &e : v) e = 1.0 / (1.0 + std::exp(-e));
  return v;
}

// max |a - b|; fails where |a - b| > 1e-5 + 1e-4 |b|.
double compare(const float *a, const double *b, size_t n, const std::string &what) {
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    const double d = std::fabs((double)a[i] - b[i]);
    worst = std::max(worst, d);
    EXPECT_LE(d, 1e-5 + 1e-4 * std::fabs(b[i])) << what << " element " << i << ": " << a[i] << " vs " << b[i];
  }
  return worst;
}

double compare(const std::vector<float> &a, const std::vector<float> &b, const std::string &what) {
  std::vector<double> bd(b.begin(), b.end());
  return compare(a.data(), bd.data(), a.size(), what);
}

class Codec : public ::testing::TestWithParam<int> {};

TEST_P(Codec, EncodeAndDecodeAgreeAcrossBackendsAndWithTheReference) {
  const bool gaussian = GetParam() == 1;
  Pair s(gaussian ? CUVAE_LIK_GAUSSIAN : CUVAE_LIK_BERNOULLI, gaussian ? CUVAE_ACT_TANH : CUVAE_ACT_RELU);
  ASSERT_TRUE(s.cpu && s.gpu);
  const size_t Z = s.m.latent, D = s.m.input_dim;
  for (size_t n : {(size_t)31, (size_t)1}) {
    const std::string tag = std::string(gaussian ? "gaussian" : "bernoulli") + " n=" + std::to_string(n);
    // encode: rows 5.. of the data set
    const float *x = s.x.data() + 5 * D;
    std::vector<float> ec(n * 2 * Z), eg(n * 2 * Z);
    ASSERT_EQ(s.cpu->encode(s.cpu, x, NULL, n, ec.data()), 0) << cuvae_last_error();
    ASSERT_EQ(s.gpu->encode(s.gpu, x, NULL, n, eg.data()), 0) << cuvae_last_error();
    const double d_enc = compare(eg, ec, tag + " encode cuda vs cpu");
    std::vector<double> ref;
    for (size_t i = 0; i < n; i++) {
      const std::vector<double> r = encode_ref(s, x + i * D);
      ref.insert(ref.end(), r.begin(), r.end());
    }
    const double d_enc_ref = compare(ec.data(), ref.data(), ref.size(), tag + " encode cpu vs reference");
    // decode: z = mu of those rows plus a prior-scale offset, so outputs span the sigmoid's range
    std::vector<float> z(n * Z);
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < Z; j++) z[i * Z + j] = ec[i * 2 * Z + j] + 1.5f * std::sin((float)(i * 3 + j));
    std::vector<float> dc(n * D), dg(n * D);
    ASSERT_EQ(s.cpu->decode(s.cpu, z.data(), NULL, n, dc.data()), 0) << cuvae_last_error();
    ASSERT_EQ(s.gpu->decode(s.gpu, z.data(), NULL, n, dg.data()), 0) << cuvae_last_error();
    const double d_dec = compare(dg, dc, tag + " decode cuda vs cpu");
    ref.clear();
    for (size_t i = 0; i < n; i++) {
      const std::vector<double> r = decode_ref(s, z.data() + i * Z);
      ref.insert(ref.end(), r.begin(), r.end());
    }
    const double d_dec_ref = compare(dc.data(), ref.data(), ref.size(), tag + " decode cpu vs reference");
    if (!gaussian) {
      for (float v : dc) ASSERT_TRUE(v >= 0.0f && v <= 1.0f) << "a Bernoulli mean outside [0, 1]: " << v;
    }
    std::printf("[%s] max |d| encode cuda-cpu %.3g, cpu-ref %.3g; decode cuda-cpu %.3g, cpu-ref %.3g\n", tag.c_str(),
                d_enc, d_enc_ref, d_dec, d_dec_ref);
  }
}

INSTANTIATE_TEST_SUITE_P(Likelihoods, Codec, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int> &i) { return i.param ? "gaussian" : "bernoulli"; });

// A row's result does not depend on the batch it was processed in (within the GEMM tolerance).
TEST(CodecBatches, RowsAgreeWhateverTheBatching) {
  Pair s(CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU);
  ASSERT_TRUE(s.cpu && s.gpu);
  const size_t Z = s.m.latent, D = s.m.input_dim, n = 27;
  for (cuvae_backend *be : {s.cpu, s.gpu}) {
    std::vector<float> all(n * 2 * Z), one(2 * Z);
    ASSERT_EQ(be->encode(be, s.x.data(), NULL, n, all.data()), 0) << cuvae_last_error();
    for (size_t i = 0; i < n; i += 7) {
      ASSERT_EQ(be->encode(be, s.x.data() + i * D, NULL, 1, one.data()), 0) << cuvae_last_error();
      compare(one, std::vector<float>(all.begin() + i * 2 * Z, all.begin() + (i + 1) * 2 * Z),
              std::string(be->name) + " row " + std::to_string(i));
    }
  }
}

TEST(CodecErrors, BadArgumentsAndPendingStepsAreRefused) {
  Pair s(CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU);
  ASSERT_TRUE(s.cpu && s.gpu);
  std::vector<float> in(64 * 30, 0.5f), out(64 * 30);
  for (cuvae_backend *be : {s.cpu, s.gpu}) {
    EXPECT_EQ(be->encode(be, in.data(), NULL, 0, out.data()), -1);
    EXPECT_NE(std::string(cuvae_last_error()).find("n = 0"), std::string::npos) << cuvae_last_error();
    EXPECT_EQ(be->decode(be, in.data(), NULL, 0, out.data()), -1);
    EXPECT_EQ(be->decode(be, nullptr, NULL, 1, out.data()), -1);
    EXPECT_EQ(be->encode(be, in.data(), NULL, 1, nullptr), -1);
  }
  // The CUDA backend refuses while training steps are pending (like evaluate), and works again after collect.
  std::vector<uint32_t> rows(s.cfg.batch_size);
  for (int b = 0; b < s.cfg.batch_size; b++) rows[b] = (uint32_t)b;
  ASSERT_EQ(s.gpu->train_step(s.gpu, rows.data(), s.cfg.batch_size, 6), 0) << cuvae_last_error();
  EXPECT_EQ(s.gpu->decode(s.gpu, in.data(), NULL, 1, out.data()), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("pending"), std::string::npos) << cuvae_last_error();
  std::vector<cuvae_step_result> res(s.gpu->max_pending);
  int k = 0;
  ASSERT_EQ(s.gpu->collect(s.gpu, res.data(), &k), 0) << cuvae_last_error();
  EXPECT_EQ(s.gpu->decode(s.gpu, in.data(), NULL, 1, out.data()), 0) << cuvae_last_error();
}

}  // namespace
