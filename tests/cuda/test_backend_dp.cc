// The CUDA backend on several ranks (docs/DISTRIBUTED.md, "The CUDA backend on several ranks"), run under mpirun: on
// every rank the CPU backend and the CUDA backend (the emulation's, with the emulated NCCL over MPI; natively the real
// one) join data parallel on the same model and train step by step on the same global batches, each on its rank's
// slice. Checked every step: CUDA against CPU (the parity bounds of test_backend_parity.cc, parity_util.h), and CUDA
// against one process's CPU run of the whole global batch (the bound of docs/DISTRIBUTED.md); the ranks hold the same
// parameter bits; the graph on and off, and gradient buckets of any size, give the same bits; the sharded evaluation
// equals the CPU's within the parity bound and one process's within the addition of the ranks' sums.
// Every rank runs every test and checks its own results; mpirun fails when any rank does. A job of one process (no
// launcher, or mpirun -np 1) joins data parallel through hooks of this program (size 1: NCCL with one rank), so the
// NCCL path also runs where one GPU cannot hold two ranks (the native build, label gpu, in the GPU bundle's
// gpu_tests stage); there the CUDA backend must equal its one-process self bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/dist.h"
#include "cuvae/error.h"
#include "parity_util.h"
// The CUDA headers first, as C++ (the backend's private header is C: cuda_dp_set_bucket, cuda_dp_buckets).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>
extern "C" {
#include "backend_cuda_internal.h"
}

namespace {

using namespace cuvae_parity;

bool g_one_rank = false;  // a job of one process: this program's hooks

int one_grad_ready(void *, float *, size_t) { return 0; }
int one_grad_finish(void *, float *) { return 0; }
int one_sum(void *, double *, int) { return 0; }
int one_broadcast(void *, void *, size_t) { return 0; }
cuvae_data_parallel one_rank_hooks(size_t n) {  // rank 0 of 1, not sharded: the whole buffer [0, n)
  cuvae_data_parallel dp{};
  dp.size = 1;
  dp.shard_end = n;
  dp.grad_ready = one_grad_ready;
  dp.grad_finish = one_grad_finish;
  dp.sum = one_sum;
  dp.broadcast = one_broadcast;
  return dp;
}

// The hooks a backend joins with: the engine's (cuvae_dist_data_parallel), or in a job of one process this program's.
struct Hooks {
  cuvae_data_parallel one, *dp = nullptr;
  explicit Hooks(size_t n) : one(one_rank_hooks(n)) {
    dp = g_one_rank ? &one : cuvae_dist_data_parallel(n, CUVAE_DP_BUCKET_BYTES);
    EXPECT_NE(dp, nullptr) << cuvae_last_error();
  }
  ~Hooks() {
    if (dp != &one) cuvae_dist_data_parallel_free(dp);
  }
  Hooks(const Hooks &) = delete;  // dp may point into this object
  Hooks &operator=(const Hooks &) = delete;
};

int ranks() { return g_one_rank ? 1 : cuvae_dist_size(); }
int rank() { return g_one_rank ? 0 : cuvae_dist_rank(); }

// Rank 0's bits of v on every rank (a no-op in one process).
std::vector<float> rank0s(std::vector<float> v) {
  if (!g_one_rank) {
    EXPECT_EQ(cuvae_dist_broadcast(v.data(), v.size() * sizeof(float)), 0) << cuvae_last_error();
  }
  return v;
}

struct DpCase {
  Case c;  // c.B is the global batch
  void (*tweak)(cuvae_config *);
};
void PrintTo(const DpCase &d, std::ostream *os) { *os << d.c.name; }

// The CUDA and CPU backends of one rank, joined, and one process's CPU backend on the global batch.
struct Ranks {
  Fixture f;
  cuvae_config gpu_cfg;  // the backends keep a pointer to their config
  Hooks hc, hg;
  cuvae_backend *one = nullptr, *cpu = nullptr, *gpu = nullptr;
  Ranks(const DpCase &d, int graph) : f(d.c, d.tweak), gpu_cfg(f.cfg), hc(f.m.n_params), hg(f.m.n_params) {
    gpu_cfg.cuda_graph = graph;
    one = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
    cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
    gpu = cuvae_backend_cuda_create(&f.m, &gpu_cfg, &f.ds, &f.ds);
    EXPECT_TRUE(one && cpu && gpu) << cuvae_last_error();
    if (!one || !cpu || !gpu || !hc.dp || !hg.dp) return;
    EXPECT_EQ(cuvae_backend_join_data_parallel(cpu, hc.dp), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_backend_join_data_parallel(gpu, hg.dp), 0) << cuvae_last_error();
  }
  ~Ranks() {
    for (cuvae_backend *be : {one, cpu, gpu})
      if (be) be->destroy(be);
  }
  bool ok() const { return one && cpu && gpu && hc.dp && hg.dp; }
};

// This rank's slice of step t's global batch.
std::vector<uint32_t> my_rows(const std::vector<uint32_t> &global) {
  const size_t b = global.size() / (size_t)ranks(), r0 = b * (size_t)rank();
  return std::vector<uint32_t>(global.begin() + (long)r0, global.begin() + (long)(r0 + b));
}

// Within |d| <= atol + rtol |want|.
void expect_near_rel(double want, double got, double atol, double rtol, const std::string &what) {
  EXPECT_LE(std::fabs(want - got), atol + rtol * std::fabs(want)) << what << ": " << want << " vs " << got;
}

class DataParallel : public ::testing::TestWithParam<std::tuple<DpCase, int>> {};

// Steps [0, c.steps) on the three backends; after each, the losses, norms and gradients of CUDA against the CPU
// (parity_util.h's bounds: the CPU's ranks run the same terms as its one process, test_dist.cc), and CUDA's objective
// against one process's: the parity bound plus docs/DISTRIBUTED.md's 3e-3 relative for the order of the sums over 24
// steps (the CPU's N ranks against one process). The ranks' CUDA parameters are the same bits after every step.
TEST_P(DataParallel, CudaRanksTrainAsTheCpuRanksAndOneProcess) {
  const DpCase d = std::get<0>(GetParam());
  const Case &c = d.c;
  Ranks r(d, std::get<1>(GetParam()));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(c.B % ranks(), 0);
  const int B = c.B / ranks();
  const size_t n = r.f.m.n_params;
  double worst_one = 0.0;
  for (int64_t t = 0; t < c.steps; t++) {
    const std::vector<uint32_t> global = rows_of(c, r.f.cfg.seed, t), mine = my_rows(global);
    cuvae_step_result ro, rc, rg;
    ASSERT_EQ(cuvae_backend_step(r.one, global.data(), c.B, t, &ro), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(r.cpu, mine.data(), B, t, &rc), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(r.gpu, mine.data(), B, t, &rg), 0) << cuvae_last_error();
    const std::string at = std::string(c.name) + " step " + std::to_string(t);
    // run_both's bounds (parity_util.h): losses 1e-5 + 1e-4 relative, the norm 1e-5 + 1e-3 relative.
    expect_near_rel(rc.loss.nelbo, rg.loss.nelbo, 1e-5, 1e-4, at + " nelbo");
    expect_near_rel(rc.loss.kl, rg.loss.kl, 1e-5, 1e-4, at + " kl");
    expect_near_rel(rc.loss.objective, rg.loss.objective, 1e-5, 1e-4, at + " objective");
    expect_near_rel(rc.grad_norm, rg.grad_norm, 1e-5, 1e-3, at + " gradient norm");
    expect_grads_close(r.f.m, r.cpu, r.gpu, c.name, t);
    expect_near_rel(ro.loss.objective, rg.loss.objective, 1e-5, 3e-3 + 1e-4, at + " objective against one process");
    worst_one = std::max(worst_one, std::fabs(ro.loss.objective - rg.loss.objective) / std::fabs(ro.loss.objective));
    if (t == 0)  // after one step: parity_util.h's bound from the same parameters
      expect_state_close(state_of(r.cpu, n), state_of(r.gpu, n), 1e-6, "after 1 step");
    const std::vector<float> p = state_of(r.gpu, n).p;
    EXPECT_EQ(rank0s(p), p) << at << ": rank " << rank() << "'s parameters differ from rank 0's";
  }
  expect_state_close(state_of(r.cpu, n), state_of(r.gpu, n), 2e-5, "after all steps");
  std::printf("[%s, %d ranks] CUDA objective against one process's: max relative difference %.3g\n", c.name, ranks(),
              worst_one);
  // Evaluation, sharded by batch: CUDA against the CPU's ranks within the parity bound; against a one-process CUDA
  // backend with the same state, only the addition of the ranks' double sums differs (<= 1e-12 relative here).
  cuvae_loss ec, eg, e1;
  ASSERT_EQ(r.cpu->evaluate(r.cpu, &r.f.ds, r.f.cfg.eval_batch_size, &ec), 0) << cuvae_last_error();
  ASSERT_EQ(r.gpu->evaluate(r.gpu, &r.f.ds, r.f.cfg.eval_batch_size, &eg), 0) << cuvae_last_error();
  expect_near_rel(ec.nelbo, eg.nelbo, 1e-5, 1e-4, "evaluate nelbo");
  expect_near_rel(ec.kl, eg.kl, 1e-5, 1e-4, "evaluate kl");
  cuvae_backend *solo = cuvae_backend_cuda_create(&r.f.m, &r.gpu_cfg, &r.f.ds, &r.f.ds);
  ASSERT_NE(solo, nullptr) << cuvae_last_error();
  const State s = state_of(r.gpu, n);
  ASSERT_EQ(solo->set_state(solo, s.p.data(), s.m.data(), s.v.data()), 0) << cuvae_last_error();
  ASSERT_EQ(solo->evaluate(solo, &r.f.ds, r.f.cfg.eval_batch_size, &e1), 0) << cuvae_last_error();
  expect_near_rel(e1.nelbo, eg.nelbo, 0.0, 1e-12, "evaluate nelbo against one process");
  expect_near_rel(e1.kl, eg.kl, 0.0, 1e-12, "evaluate kl against one process");
  solo->destroy(solo);
}

// The model family's members whose step draws differently: one sample, several (the slices of [L][Bt][Z]), the IWAE
// objective's weights, the autoencoder (no eps), data noise (binarization, corruption). Global batch 30: 15 rows a
// rank, so rank 1's slices start inside a Philox block (15 Z = 45, 15 D = 450: not multiples of 4).
const DpCase kCases[] = {
    {{"bernoulli", 30, 2, 12, 10, 3, 30, 240, 6, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f}, nullptr},
    {{"gaussian_tanh_clip", 16, 2, 12, 10, 3, 32, 256, 6, CUVAE_LIK_GAUSSIAN, CUVAE_ACT_TANH, 1.0f}, nullptr},
    {{"iwae_3_mask_binarize", 30, 2, 12, 10, 3, 30, 240, 6, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f},
     [](cuvae_config *cf) {
       cf->objective = CUVAE_OBJ_IWAE;
       cf->samples = 3;
       cf->corrupt = cuvae_corrupt{CUVAE_CORRUPT_MASK, 0.3f};
       cf->binarize = CUVAE_BINARIZE_DYNAMIC;
     }},
    {{"elbo_2_learned_shared", 30, 1, 12, 0, 3, 30, 240, 6, CUVAE_LIK_GAUSSIAN, CUVAE_ACT_RELU, 0.0f},
     [](cuvae_config *cf) {
       cf->samples = 2;
       cf->gaussian_variance = CUVAE_VAR_LEARNED_SHARED;
     }},
    {{"dae_gaussian_noise", 30, 1, 12, 0, 3, 30, 240, 6, CUVAE_LIK_GAUSSIAN, CUVAE_ACT_RELU, 0.0f},
     [](cuvae_config *cf) {
       cf->objective = CUVAE_OBJ_AE;
       cf->corrupt = cuvae_corrupt{CUVAE_CORRUPT_GAUSSIAN, 0.2f};
     }},
};

INSTANTIATE_TEST_SUITE_P(Models, DataParallel, ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Values(1, 0)),
                         [](const ::testing::TestParamInfo<std::tuple<DpCase, int>> &i) {
                           return std::string(std::get<0>(i.param).c.name) +
                                  (std::get<1>(i.param) ? "_graph" : "_direct");
                         });

// The graph on and off, and the gradient's all-reduce in one bucket or in one per layer, run the same additions
// (each element is the rank-order sum of the ranks' values, whatever the bucket): the same bits, step after step.
// The small buckets are used: one all-reduce per layer.
TEST(DataParallelBits, GraphAndBucketsGiveTheSameBits) {
  const DpCase &d = kCases[0];
  Fixture f(d.c);
  cuvae_config graph_cfg = f.cfg, direct_cfg = f.cfg;
  graph_cfg.cuda_graph = 1;
  direct_cfg.cuda_graph = 0;
  Hooks h(f.m.n_params);
  ASSERT_NE(h.dp, nullptr);
  cuvae_backend *be[3] = {cuvae_backend_cuda_create(&f.m, &graph_cfg, &f.ds, &f.ds),
                          cuvae_backend_cuda_create(&f.m, &graph_cfg, &f.ds, &f.ds),
                          cuvae_backend_cuda_create(&f.m, &direct_cfg, &f.ds, &f.ds)};
  for (cuvae_backend *b : be) {
    ASSERT_NE(b, nullptr) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_join_data_parallel(b, h.dp), 0) << cuvae_last_error();
  }
  cuda_dp_set_bucket(be[1], 1);  // every layer's part at once
  cuda_dp_set_bucket(be[2], 1);
  const int layers = f.m.n_enc + f.m.n_dec, B = d.c.B / ranks(), steps = 4;
  const size_t n = f.m.n_params;
  for (int64_t t = 0; t < steps; t++) {
    const std::vector<uint32_t> mine = my_rows(rows_of(d.c, f.cfg.seed, t));
    cuvae_step_result res[3];
    for (int i = 0; i < 3; i++) ASSERT_EQ(cuvae_backend_step(be[i], mine.data(), B, t, &res[i]), 0) << cuvae_last_error();
    for (int i = 1; i < 3; i++) {
      EXPECT_EQ(res[i].loss.objective, res[0].loss.objective) << "step " << t << ", backend " << i;
      EXPECT_EQ(res[i].grad_norm, res[0].grad_norm) << "step " << t << ", backend " << i;
    }
  }
  const State s0 = state_of(be[0], n);
  for (int i = 1; i < 3; i++) {
    const State s = state_of(be[i], n);
    EXPECT_EQ(s.p, s0.p) << "backend " << i;
    EXPECT_EQ(s.m, s0.m) << "backend " << i;
    EXPECT_EQ(s.v, s0.v) << "backend " << i;
  }
  // One bucket a step with the default size (the model is far below it); one a layer with the size of 1 float.
  // Counted where enqueued: a graph's once, at its capture; the direct launches every step.
  EXPECT_EQ(cuda_dp_buckets(be[0]), 1);
  EXPECT_EQ(cuda_dp_buckets(be[1]), layers);
  EXPECT_EQ(cuda_dp_buckets(be[2]), (long long)steps * layers);
  for (cuvae_backend *b : be) b->destroy(b);
}

// One rank: the data-parallel step (noise slices of the whole draw, the all-reduces of one rank) is the
// one-process step, bit for bit; with more ranks, a backend joined after its graph was captured recaptures it.
TEST(DataParallelBits, JoinedStepEqualsTheOneProcessStep) {
  const DpCase &d = kCases[2];  // several samples and data noise: every slice
  Fixture f(d.c, d.tweak);
  Hooks h(f.m.n_params);
  ASSERT_NE(h.dp, nullptr);
  cuvae_backend *solo = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  cuvae_backend *joined = cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds);
  ASSERT_TRUE(solo && joined) << cuvae_last_error();
  const int B = d.c.B / ranks();
  const size_t n = f.m.n_params;
  cuvae_step_result a, b;
  // Step 0 before the join (a graph is captured), then the join.
  const std::vector<uint32_t> first = rows_of(d.c, f.cfg.seed, 0);
  ASSERT_EQ(cuvae_backend_step(solo, first.data(), d.c.B, 0, &a), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_step(joined, first.data(), d.c.B, 0, &b), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_join_data_parallel(joined, h.dp), 0) << cuvae_last_error();
  for (int64_t t = 1; t < 4; t++) {
    const std::vector<uint32_t> global = rows_of(d.c, f.cfg.seed, t);
    ASSERT_EQ(cuvae_backend_step(solo, global.data(), d.c.B, t, &a), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(joined, my_rows(global).data(), B, t, &b), 0) << cuvae_last_error();
    if (ranks() == 1) {
      EXPECT_EQ(a.loss.objective, b.loss.objective) << "step " << t;
      EXPECT_EQ(a.grad_norm, b.grad_norm) << "step " << t;
    } else {  // the global batch's terms summed in another order: docs/DISTRIBUTED.md's bound
      expect_near_rel(a.loss.objective, b.loss.objective, 0.0, 3e-3, "objective step " + std::to_string(t));
    }
  }
  if (ranks() == 1) {
    const State s = state_of(solo, n), j = state_of(joined, n);
    EXPECT_EQ(s.p, j.p);
    EXPECT_EQ(s.m, j.m);
    EXPECT_EQ(s.v, j.v);
  }
  solo->destroy(solo);
  joined->destroy(joined);
}

}  // namespace

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (cuvae_dist_init(&argc, &argv)) {
    std::fprintf(stderr, "error: %s\n", cuvae_last_error());
    return 1;
  }
  g_one_rank = cuvae_dist_size() == 1;
  const int rc = RUN_ALL_TESTS();
  cuvae_dist_finalize();
  return rc;
}
