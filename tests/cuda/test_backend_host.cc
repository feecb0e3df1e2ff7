// The CUDA backend's host side (src/backend/cuda/), counted and checked under the emulation (tests/emu): the GEMM
// warm-up before a graph capture, no device allocation per IWAE call, encode / decode through pinned staging with
// one copy each way per batch, the operations a training step still issues outside its graph, and CUVAE_CUDA_SYNC=1
// naming a faulting kernel and its call site. The counts (cuda_emu_counts) and the fault injection exist only in
// the emulation; natively only the refusal of a bad CUVAE_CUDA_SYNC value runs.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/objective.h"
#include "cuvae/rng.h"
#include "test_util.h"
#ifdef CUVAE_CUDA_EMU
#include "backend_cuda_internal.h"  // the device rows behind encode / decode's results
#include "emu_internal.h"
#endif

namespace {

// A small model and data set: 24 -> 12 -> 10 -> Z = 3, batch 8 (eval batch 13: max_batch 13), 64 training rows.
struct HostCase {
  std::vector<float> x;
  std::vector<int32_t> labels;
  cuvae_dataset ds = {}, eval = {};
  cuvae_config cfg;
  cuvae_model m;
  explicit HostCase(void (*tweak)(cuvae_config *) = nullptr) {
    const int N = 64, D = 24;
    x = cuvae_test::synthetic_data(N, D, 5);
    labels.resize(N);
    for (int i = 0; i < N; i++) labels[i] = i % 3;
    ds.n = N;
    ds.dim = D;
    ds.rows = 1;
    ds.cols = D;
    ds.x = x.data();
    eval = ds;
    eval.n = 20;  // a resident evaluation set smaller than the training set
    cuvae_config_defaults(&cfg);
    cfg.n_hidden = 2;
    cfg.hidden[0] = 12;
    cfg.hidden[1] = 10;
    cfg.latent = 3;
    cfg.batch_size = 8;
    cfg.eval_batch_size = 13;
    cfg.seed = 7;
    cfg.threads = 1;
    if (tweak) tweak(&cfg);
    if (cfg.conditional) ds.labels = eval.labels = labels.data();
    EXPECT_EQ(cuvae_model_build(&m, D, &cfg), 0) << cuvae_last_error();
  }
  cuvae_backend *create() {
    cuvae_backend *be = cuvae_backend_cuda_create(&m, &cfg, &ds, &eval);
    EXPECT_NE(be, nullptr) << cuvae_last_error();
    return be;
  }
};

using cuvae_test::EnvGuard;

TEST(CudaHost, BadSyncSettingIsRefused) {
  EnvGuard env("CUVAE_CUDA_SYNC", "yes");
  HostCase s;
  cuvae_backend *be = cuvae_backend_cuda_create(&s.m, &s.cfg, &s.ds, &s.eval);
  EXPECT_EQ(be, nullptr);
  EXPECT_NE(std::string(cuvae_last_error()).find("CUVAE_CUDA_SYNC=yes: expected 0 or 1"), std::string::npos)
      << cuvae_last_error();
  if (be) be->destroy(be);
}

#ifdef CUVAE_CUDA_EMU

std::vector<uint32_t> rows_of_step(int64_t t, int B) {
  std::vector<uint32_t> rows(B);
  for (int b = 0; b < B; b++) rows[b] = (uint32_t)((t * B + b) % 64);
  return rows;
}

cuda_emu_counts counts() {
  cuda_emu_counts c;
  cuda_emu_counts_get(&c);
  return c;
}

// GEMMs of one training step: every layer's forward and weight gradient, every input gradient but the first
// encoder layer's.
int step_gemms(const cuvae_model &m) { return 3 * (m.n_enc + m.n_dec) - 1; }

// The graph of a step is captured after every GEMM it holds ran once outside the capture: the emulated cuBLAS
// aborts the process on a handle's first use or a new GEMM shape inside a capture
// (tests/emu/test_emu_cublas_checks.cc), so reaching the asserts is the first check. The warm-up is exactly the
// step's GEMMs (step_gemms, no kernel), once per captured batch size; replays issue none. FP32, TF32 and bf16, one
// and three samples, a conditional model.
TEST(CudaHost, GraphCaptureFollowsAWarmUpOfEveryGemm) {
  void (*const tweaks[])(cuvae_config *) = {
      nullptr, [](cuvae_config *c) { c->precision = CUVAE_PRECISION_TF32; },
      [](cuvae_config *c) { c->precision = CUVAE_PRECISION_BF16; }, [](cuvae_config *c) { c->samples = 3; },
      [](cuvae_config *c) {
        c->conditional = 1;
        c->classes = 3;
      }};
  for (auto tweak : tweaks) {
    HostCase s(tweak);
    ASSERT_EQ(s.cfg.cuda_graph, 1);
    cuvae_backend *be = s.create();
    ASSERT_NE(be, nullptr);
    const int B = s.cfg.batch_size;
    for (int64_t t = 0; t < 4; t++) {
      const int rows_B = t == 2 ? B - 3 : B;  // step 2 has a shorter batch: a second capture, a second warm-up
      const bool captures = t == 0 || t == 2 || t == 3;
      cuda_emu_counts_reset();
      ASSERT_EQ(be->train_step(be, rows_of_step(t, rows_B).data(), rows_B, t), 0) << cuvae_last_error();
      const cuda_emu_counts c = counts();
      EXPECT_EQ(c.blas, captures ? (unsigned long long)step_gemms(s.m) : 0ull) << "step " << t;
      EXPECT_EQ(c.kernels, 0ull) << "step " << t;
      EXPECT_EQ(c.graph_launches, 1ull) << "step " << t;
    }
    std::vector<cuvae_step_result> res(be->max_pending);
    int n = 0;
    EXPECT_EQ(be->collect(be, res.data(), &n), 0) << cuvae_last_error();
    EXPECT_EQ(n, 4);
    be->destroy(be);
  }
}

// All the state a step leaves behind that the next step reads: parameters and Adam's moments.
std::vector<float> state_of(cuvae_backend *be, const cuvae_model &m) {
  std::vector<float> st(3 * m.n_params);
  EXPECT_EQ(be->get_state(be, st.data(), st.data() + m.n_params, st.data() + 2 * m.n_params), 0) << cuvae_last_error();
  return st;
}

// time_step_gemms (cuvae-bench's GEMM share on CUDA) runs the step's GEMMs and nothing else: step_gemms cuBLASLt
// calls, no kernel, a positive time, in FP32, bf16 and with separate epilogues. It leaves the parameters and Adam's
// state as they were, and the next step gives the same bits as in a backend that timed nothing. With a step pending,
// or more rows than the backend holds, it is refused.
TEST(CudaHost, TimingTheStepsGemmsRunsThemAloneAndChangesNoStep) {
  struct Case {
    void (*tweak)(cuvae_config *);
    const char *epilogues;
  };
  const Case cases[] = {{nullptr, "fused"}, {[](cuvae_config *c) { c->precision = CUVAE_PRECISION_BF16; }, "fused"},
                        {nullptr, "separate"}};
  for (const Case &k : cases) {
    EnvGuard env("CUVAE_CUDA_EPILOGUES", k.epilogues);
    HostCase s(k.tweak), t(k.tweak);
    cuvae_backend *be = s.create(), *ref = t.create();
    ASSERT_TRUE(be && ref);
    const int B = s.cfg.batch_size;
    cuvae_step_result a, b;
    ASSERT_EQ(cuvae_backend_step(be, rows_of_step(0, B).data(), B, 0, &a), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(ref, rows_of_step(0, B).data(), B, 0, &b), 0) << cuvae_last_error();
    const std::vector<float> before = state_of(be, s.m);
    double seconds = -1.0;
    cuda_emu_counts_reset();
    ASSERT_EQ(be->time_step_gemms(be, B, &seconds), 0) << cuvae_last_error();
    const cuda_emu_counts c = counts();
    EXPECT_EQ(c.blas, (unsigned long long)step_gemms(s.m)) << k.epilogues;
    EXPECT_EQ(c.kernels, 0ull) << k.epilogues;
    EXPECT_GT(seconds, 0.0);
    EXPECT_EQ(state_of(be, s.m), before);
    ASSERT_EQ(cuvae_backend_step(be, rows_of_step(1, B).data(), B, 1, &a), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(ref, rows_of_step(1, B).data(), B, 1, &b), 0) << cuvae_last_error();
    EXPECT_EQ(a.loss.objective, b.loss.objective);
    EXPECT_EQ(state_of(be, s.m), state_of(ref, t.m)) << k.epilogues;
    EXPECT_NE(be->time_step_gemms(be, ((const cuda_backend *)be)->max_batch + 1, &seconds), 0);
    EXPECT_NE(std::string(cuvae_last_error()).find("do not fit the CUDA backend"), std::string::npos)
        << cuvae_last_error();
    ASSERT_EQ(be->train_step(be, rows_of_step(2, B).data(), B, 2), 0) << cuvae_last_error();
    EXPECT_NE(be->time_step_gemms(be, B, &seconds), 0);
    EXPECT_NE(std::string(cuvae_last_error()).find("1 training steps are pending"), std::string::npos)
        << cuvae_last_error();
    be->destroy(be);
    ref->destroy(ref);
  }
}

// IWAE's per-row state and results are allocated at creation: no cudaMalloc per call on the resident set; a set
// larger than any before grows the results once, and later calls allocate nothing. The estimates repeat bit for bit.
TEST(CudaHost, IwaeAllocatesNothingPerCall) {
  HostCase s;
  cuvae_backend *be = s.create();
  ASSERT_NE(be, nullptr);
  std::vector<double> a(s.ds.n), b(s.ds.n);
  cuda_emu_counts_reset();
  for (int call = 0; call < 3; call++) {
    ASSERT_EQ(be->iwae(be, &s.eval, 7, 6, a.data()), 0) << cuvae_last_error();
    EXPECT_EQ(counts().device_allocs, 0ull) << "call " << call;
  }
  ASSERT_EQ(be->iwae(be, &s.ds, 7, 6, a.data()), 0) << cuvae_last_error();  // 64 rows > max(20, 13)
  EXPECT_EQ(counts().device_allocs, 1ull);
  ASSERT_EQ(be->iwae(be, &s.ds, 7, 6, b.data()), 0) << cuvae_last_error();
  ASSERT_EQ(be->iwae(be, &s.eval, 7, 6, b.data()), 0) << cuvae_last_error();
  EXPECT_EQ(counts().device_allocs, 1ull);
  ASSERT_EQ(be->iwae(be, &s.ds, 7, 6, b.data()), 0) << cuvae_last_error();
  EXPECT_EQ(0, memcmp(a.data(), b.data(), a.size() * sizeof(double)));
  be->destroy(be);
}

// The last `rows` rows of device buffer dev (rows of `cols` floats), first `keep` columns of each.
std::vector<float> device_rows(const float *dev, size_t rows, size_t cols, size_t keep) {
  std::vector<float> all(rows * cols), out;
  EXPECT_EQ(cudaMemcpy(all.data(), dev, all.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t r = 0; r < rows; r++) out.insert(out.end(), all.begin() + r * cols, all.begin() + r * cols + keep);
  return out;
}

// encode / decode move each batch through pinned staging: one copy up and one down per batch (31 rows in batches of
// 13: 3 batches), never from pageable memory; the per-dim-variance decoder's [mean | lv] rows come down in one copy.
// The results are the device's rows bit for bit (the last batch's, still in the backend's buffers, are compared).
TEST(CudaHost, EncodeDecodeCopyOncePerBatchThroughPinnedMemory) {
  void (*const tweaks[])(cuvae_config *) = {nullptr, [](cuvae_config *c) {
                                              c->likelihood = CUVAE_LIK_GAUSSIAN;
                                              c->gaussian_variance = CUVAE_VAR_LEARNED_PER_DIM;
                                            }};
  for (auto tweak : tweaks) {
    HostCase s(tweak);
    cuvae_backend *be = s.create();
    ASSERT_NE(be, nullptr);
    const size_t n = 31, D = s.m.input_dim, Z = s.m.latent;
    std::vector<float> mulv(n * 2 * Z), mean(n * D);
    const cuda_backend *cb = (const cuda_backend *)be;
    const size_t last = 5, cols = s.m.dec[s.m.n_dec - 1].out;  // the last batch: rows 26..30
    cuda_emu_counts_reset();
    ASSERT_EQ(be->encode(be, s.x.data(), nullptr, n, mulv.data()), 0) << cuvae_last_error();
    cuda_emu_counts c = counts();
    EXPECT_EQ(c.copies, 6ull);
    EXPECT_EQ(c.pageable_copies, 0ull);
    const std::vector<float> enc = device_rows(cb->enc_out[s.m.n_enc - 1], last, 2 * Z, 2 * Z);
    EXPECT_EQ(0, memcmp(enc.data(), mulv.data() + (n - last) * 2 * Z, enc.size() * sizeof(float)));
    cuda_emu_counts_reset();
    ASSERT_EQ(be->decode(be, mulv.data(), nullptr, n, mean.data()), 0) << cuvae_last_error();  // z := the first rows
    c = counts();
    EXPECT_EQ(c.copies, 6ull);
    EXPECT_EQ(c.pageable_copies, 0ull);
    std::vector<float> dec = device_rows(cb->dec_out[s.m.n_dec - 1], last, cols, D);
    cuvae_decoder_mean_host(&s.m, dec.data(), dec.size());
    EXPECT_EQ(0, memcmp(dec.data(), mean.data() + (n - last) * D, dec.size() * sizeof(float)));
    be->destroy(be);
  }
}

// What a training step still issues outside its graph, once the graph exists: the H2D copy of its row indices
// (from the step's pinned slot), the draw of eps (cuRAND; a captured draw would replay the same numbers), the graph
// launch; with dynamic binarization and masking, one draw of each data noise more. No kernel, GEMM or pageable copy.
TEST(CudaHost, StepIssuesOnlyItsInputsAndTheLaunchOutsideTheGraph) {
  struct Want {
    void (*tweak)(cuvae_config *);
    unsigned long long rand;
  };
  const Want wants[] = {{nullptr, 1}, {[](cuvae_config *c) {
                                         c->corrupt = cuvae_corrupt{CUVAE_CORRUPT_MASK, 0.3f};
                                         c->binarize = CUVAE_BINARIZE_DYNAMIC;
                                       },
                                       3}};
  for (const Want &w : wants) {
    HostCase s(w.tweak);
    cuvae_backend *be = s.create();
    ASSERT_NE(be, nullptr);
    const int B = s.cfg.batch_size;
    ASSERT_EQ(be->train_step(be, rows_of_step(0, B).data(), B, 0), 0) << cuvae_last_error();  // captures
    for (int64_t t = 1; t < 4; t++) {
      cuda_emu_counts_reset();
      ASSERT_EQ(be->train_step(be, rows_of_step(t, B).data(), B, t), 0) << cuvae_last_error();
      const cuda_emu_counts c = counts();
      EXPECT_EQ(c.direct_ops, 2 + w.rand) << "step " << t;
      EXPECT_EQ(c.copies, 1ull);
      EXPECT_EQ(c.pageable_copies, 0ull);
      EXPECT_EQ(c.rand, w.rand);
      EXPECT_EQ(c.graph_launches, 1ull);
      EXPECT_EQ(c.device_allocs + c.pinned_allocs, 0ull);
    }
    std::vector<cuvae_step_result> res(be->max_pending);
    int n = 0;
    EXPECT_EQ(be->collect(be, res.data(), &n), 0) << cuvae_last_error();
    be->destroy(be);
  }
}

// The line of backend_cuda.c that launches gather_rows_cuda (the first kernel of the step).
int gather_call_line() {
  std::ifstream in(std::string(CUVAE_SOURCE_DIR) + "/src/backend/cuda/backend_cuda.c");
  std::string line;
  for (int no = 1; std::getline(in, line); no++)
    if (line.find("gather_rows_cuda(be->train_x") != std::string::npos) return no;
  return -1;
}

// One training step whose gather kernel faults (an illegal address, injected); returns train_step's and collect's
// results and messages.
struct Faulted {
  int step_rc, collect_rc;
  std::string step_msg, collect_msg;
  unsigned long long graph_launches;
};
Faulted run_faulted_step() {
  HostCase s;
  cuvae_backend *be = s.create();
  Faulted f = {-2, -2, "", "", 0};
  if (!be) return f;
  cuda_emu_counts_reset();
  cuda_emu_inject_async_fault("gather_rows_kernel", cudaErrorIllegalAddress);
  f.step_rc = be->train_step(be, rows_of_step(0, 8).data(), 8, 0);
  f.step_msg = cuvae_last_error();
  f.graph_launches = counts().graph_launches;
  if (f.step_rc == 0) {
    std::vector<cuvae_step_result> res(be->max_pending);
    int n = 0;
    f.collect_rc = be->collect(be, res.data(), &n);
    f.collect_msg = cuvae_last_error();
  }
  be->destroy(be);
  cuda_emu_clear_async_error();
  return f;
}

// A kernel fault surfaces at the next synchronisation: without CUVAE_CUDA_SYNC that is collect's, which cannot say
// which launch failed. With CUVAE_CUDA_SYNC=1 the step runs without its graph (launches are checked one by one) and
// train_step fails at once, naming the launcher and the line of backend_cuda.c that called it.
TEST(CudaHost, SyncModeNamesTheFaultingKernelAndItsCallSite) {
  const int line = gather_call_line();
  ASSERT_GT(line, 0);
  const Faulted late = run_faulted_step();
  EXPECT_EQ(late.step_rc, 0);
  EXPECT_EQ(late.graph_launches, 1ull);
  EXPECT_EQ(late.collect_rc, -1);
  EXPECT_NE(late.collect_msg.find("an illegal memory access was encountered"), std::string::npos) << late.collect_msg;
  EXPECT_EQ(late.collect_msg.find("gather_rows"), std::string::npos) << late.collect_msg;
  EnvGuard env("CUVAE_CUDA_SYNC", "1");
  const Faulted early = run_faulted_step();
  EXPECT_EQ(early.step_rc, -1);
  EXPECT_EQ(early.graph_launches, 0ull);
  const std::string site = "src/backend/cuda/backend_cuda.c:" + std::to_string(line) + ": gather_rows_cuda failed while "
                           "it ran: an illegal memory access was encountered (CUVAE_CUDA_SYNC=1";
  EXPECT_NE(early.step_msg.find(site), std::string::npos) << early.step_msg << "\nwanted: " << site;
}

// Under CUVAE_CUDA_SYNC=1 the steps (launched directly) give the graph's results bit for bit.
TEST(CudaHost, SyncModeChangesNoResult) {
  std::vector<double> losses[2];
  std::vector<float> params[2];
  for (int sync = 0; sync < 2; sync++) {
    EnvGuard env("CUVAE_CUDA_SYNC", sync ? "1" : "0");
    HostCase s;
    cuvae_backend *be = s.create();
    ASSERT_NE(be, nullptr);
    for (int64_t t = 0; t < 3; t++) {
      cuvae_step_result r;
      ASSERT_EQ(cuvae_backend_step(be, rows_of_step(t, 8).data(), 8, t, &r), 0) << cuvae_last_error();
      losses[sync].push_back(r.loss.objective);
      losses[sync].push_back(r.grad_norm);
    }
    params[sync].resize(s.m.n_params);
    ASSERT_EQ(be->get_state(be, params[sync].data(), nullptr, nullptr), 0) << cuvae_last_error();
    be->destroy(be);
  }
  EXPECT_EQ(0, memcmp(losses[0].data(), losses[1].data(), losses[0].size() * sizeof(double)));
  EXPECT_EQ(0, memcmp(params[0].data(), params[1].data(), params[0].size() * sizeof(float)));
}

#endif  // CUVAE_CUDA_EMU

}  // namespace
