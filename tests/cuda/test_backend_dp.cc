// The CUDA backend on several ranks (docs/DISTRIBUTED.md, "The CUDA backend on several ranks"), run under mpirun: on
// every rank the CPU backend and the CUDA backend (the emulation's, with the emulated NCCL over MPI; natively the real
// one) join data parallel on the same model and train step by step on the same global batches, each on its rank's
// slice. Checked every step: CUDA against CPU (the parity bounds of test_backend_parity.cc, parity_util.h), and CUDA
// against one process's CPU run of the whole global batch (the bound of docs/DISTRIBUTED.md); the ranks hold the same
// parameter bits; the graph on and off, and gradient buckets of any size, give the same bits; the sharded evaluation
// equals the CPU's within the parity bound and one process's within the addition of the ranks' sums. Sharded (ZeRO-1,
// [train] shard_optimizer): the CUDA backend against the CPU's sharded ranks and its own unsharded run, get_state's
// gathered m and v, set_state's kept shard, bf16's remade weights.
// Every rank runs every test and checks its own results; mpirun fails when any rank does. A job of one process (no
// launcher, or mpirun -np 1) joins data parallel through hooks of this program (size 1: NCCL with one rank), so the
// NCCL path also runs where one GPU cannot hold two ranks (the native build, label gpu, in the GPU bundle's
// gpu_tests stage); there the CUDA backend must equal its one-process self bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "active_units.h"
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
int one_params_gather(void *, float *) { return 0; }
int one_state_gather(void *ctx, const float *m_shard, const float *v_shard, float *m, float *v) {
  const size_t n = *static_cast<const size_t *>(ctx);  // one rank: its shard is the whole buffer
  if (m) std::copy(m_shard, m_shard + n, m);
  if (v) std::copy(v_shard, v_shard + n, v);
  return 0;
}
// Rank 0 of 1: the whole buffer [0, n), sharded (ZeRO-1: one shard) or not; ctx points to n.
cuvae_data_parallel one_rank_hooks(size_t *n, int sharded) {
  cuvae_data_parallel dp{};
  dp.size = 1;
  dp.ctx = n;
  dp.shard_end = *n;
  dp.grad_ready = one_grad_ready;
  dp.grad_finish = one_grad_finish;
  dp.sum = one_sum;
  dp.broadcast = one_broadcast;
  dp.sharded = sharded;
  dp.params_gather = one_params_gather;
  dp.state_gather = one_state_gather;
  return dp;
}

// The hooks a backend joins with: the engine's (cuvae_dist_data_parallel_sharded), or in a job of one process this
// program's. sharded: ZeRO-1 ([train] shard_optimizer).
struct Hooks {
  size_t n;
  cuvae_data_parallel one, *dp = nullptr;
  explicit Hooks(size_t n_params, int sharded = 0) : n(n_params), one(one_rank_hooks(&n, sharded)) {
    dp = g_one_rank ? &one : cuvae_dist_data_parallel_sharded(n, CUVAE_DP_BUCKET_BYTES, sharded);
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
    if (t == 0) {  // after one step: parity_util.h's bound from the same parameters
      expect_state_close(state_of(r.cpu, n), state_of(r.gpu, n), 1e-6, "after 1 step");
      // The ranks' summed gradient is one process's up to the GEMMs' summation order (the same terms: the CPU's ranks
      // compute the global batch's, test_dist.cc), within the CPU-vs-CUDA bound of expect_grads_close, which that
      // order difference is well inside; a term computed from a rank's own rows instead of the global batch's (free
      // bits' gate) is not.
      expect_grads_close(r.f.m, r.one, r.cpu, (std::string(c.name) + ", ranks against one process").c_str(), 0);
    }
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
    // Free bits (docs/MATH.md (3.4)): the gate from the global batch's KL_j, the ranks' column sums added (MPI on the
    // CPU, NCCL float64 in the CUDA step) before it.
    {{"free_bits", 30, 2, 12, 10, 3, 30, 240, 6, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f},
     [](cuvae_config *cf) { cf->free_bits = 0.028f; }},
};

INSTANTIATE_TEST_SUITE_P(Models, DataParallel, ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Values(1, 0)),
                         [](const ::testing::TestParamInfo<std::tuple<DpCase, int>> &i) {
                           return std::string(std::get<0>(i.param).c.name) +
                                  (std::get<1>(i.param) ? "_graph" : "_direct");
                         });

// ZeRO-1 ([train] shard_optimizer, docs/DISTRIBUTED.md): on each rank the CPU backend sharded, the CUDA backend
// sharded and the CUDA backend unsharded, on the same slices.
struct ShardedRanks {
  Fixture f;
  cuvae_config gpu_cfg;
  Hooks hc, hs, hu;
  cuvae_backend *cpu = nullptr, *shard = nullptr, *whole = nullptr;
  ShardedRanks(const DpCase &d, int graph)
      : f(d.c, d.tweak), gpu_cfg(f.cfg), hc(f.m.n_params, 1), hs(f.m.n_params, 1), hu(f.m.n_params, 0) {
    gpu_cfg.cuda_graph = graph;
    cpu = cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds);
    shard = cuvae_backend_cuda_create(&f.m, &gpu_cfg, &f.ds, &f.ds);
    whole = cuvae_backend_cuda_create(&f.m, &gpu_cfg, &f.ds, &f.ds);
    EXPECT_TRUE(cpu && shard && whole) << cuvae_last_error();
    if (!ok()) return;
    EXPECT_EQ(cuvae_backend_join_data_parallel(cpu, hc.dp), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_backend_join_data_parallel(shard, hs.dp), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_backend_join_data_parallel(whole, hu.dp), 0) << cuvae_last_error();
  }
  ~ShardedRanks() {
    for (cuvae_backend *be : {cpu, shard, whole})
      if (be) be->destroy(be);
  }
  bool ok() const { return cpu && shard && whole && hc.dp && hs.dp && hu.dp; }
};

std::vector<float> grad_of(cuvae_backend *be, size_t n) {
  std::vector<float> g(n);
  EXPECT_EQ(be->get_grad(be, g.data()), 0) << cuvae_last_error();
  return g;
}

// The sharded CUDA step against the unsharded one. The gradient's sums (the reduce-scatter adds in rank order what
// the all-reduce adds) and the losses are the same bits with any N under the emulation. The norm adds the blocks'
// float sums of squares instead of one tree over the buffer: each is within depth x u of the exact sum (tree depth
// <= 24 for these buffers, u = 2^-24: 1.5e-6 relative), so the norms agree within 1.5e-6 (the square root halves
// it): 2e-6 relative. Adam reads the norm only to clip, so without clipping (clip 0) m, v and the parameters stay the
// same bits. With clipping the scale differs by that 2e-6 and Adam's update m / sqrt(v) is invariant to the scale but
// for eps: the updates differ by lr x 2e-6 = 2e-9, so a parameter rounds at most one ulp the other way a step
// (|p| < 1, checked: ulp 6e-8), 6 steps: 3.6e-7, atol 4e-7 (measured: 3e-8). The next steps' gradients are those
// of parameters that differ by that much: no bits, the losses within run_both's 1e-5 + 1e-4 relative, m and v within
// expect_state_close's bounds.
void expect_shard_equals_whole(const ShardedRanks &r, const cuvae_step_result &rs, const cuvae_step_result &rw,
                               const std::string &at, bool clipped, int64_t t) {
  const size_t n = r.f.m.n_params, lo = r.hs.dp->shard_begin, hi = r.hs.dp->shard_end;
  if (clipped) {
    expect_near_rel(rw.loss.objective, rs.loss.objective, 1e-5, 1e-4, at + " objective against unsharded");
    expect_near_rel(rw.grad_norm, rs.grad_norm, 1e-5, 1e-3, at + " gradient norm against unsharded");
  }
  if (!clipped || t == 0) {
    EXPECT_EQ(rs.loss.objective, rw.loss.objective) << at;
    EXPECT_EQ(rs.loss.nelbo, rw.loss.nelbo) << at;
    EXPECT_EQ(rs.loss.kl, rw.loss.kl) << at;
    expect_near_rel(rw.grad_norm, rs.grad_norm, 0.0, 2e-6, at + " gradient norm against unsharded");
    const std::vector<float> gs = grad_of(r.shard, n), gw = grad_of(r.whole, n);
    EXPECT_TRUE(std::equal(gs.begin() + (long)lo, gs.begin() + (long)hi, gw.begin() + (long)lo))
        << at << ": the shard's summed gradient differs from the all-reduced one";
  }
  const State s = state_of(r.shard, n), w = state_of(r.whole, n);
  if (clipped) {
    bool ok;
    EXPECT_LT(max_abs(w.p), 1.0) << at << ": the bound's ulp";
    const double dp = max_diff(w.p, s.p, 4e-7, 0.0, &ok);
    EXPECT_TRUE(ok) << at << ": parameters differ from unsharded by " << dp;
    if (rank() == 0) expect_state_close(w, s, 4e-7, (at + " against unsharded").c_str());  // m, v: its bounds
    return;
  }
  EXPECT_EQ(s.p, w.p) << at << ": parameters";
  if (rank() == 0) {  // the gathered moments (rank 0's)
    EXPECT_EQ(s.m, w.m) << at << ": Adam m";
    EXPECT_EQ(s.v, w.v) << at << ": Adam v";
  }
}

class ShardedDataParallel : public ::testing::TestWithParam<std::tuple<DpCase, int>> {};

// Steps [0, c.steps): the sharded CUDA backend against the sharded CPU backend within the bounds of the unsharded
// test above (losses, norm, every gradient tensor: the shard's sums, the rest each rank's own part on both; the state
// after 1 and all steps, m and v as get_state gathers them on rank 0), and against the unsharded CUDA backend
// (expect_shard_equals_whole). The memory plan names the shard. Then set_state of the unsharded backend's state into
// a fresh sharded one: get_state gives it back (m and v gathered from the kept shards), and a step from it equals the
// unsharded backend's step.
TEST_P(ShardedDataParallel, CudaShardsTrainAsTheCpuShardsAndTheUnshardedCuda) {
  const DpCase d = std::get<0>(GetParam());
  const Case &c = d.c;
  ShardedRanks r(d, std::get<1>(GetParam()));
  ASSERT_TRUE(r.ok());
  const int B = c.B / ranks();
  const size_t n = r.f.m.n_params;
  const std::string plan = r.shard->memory_plan, mine = "shard " + std::to_string(rank() + 1) + " of " +
                                                        std::to_string(ranks());
  EXPECT_NE(plan.find(mine), std::string::npos) << plan;
  EXPECT_NE(plan.find("per rank"), std::string::npos) << plan;
  for (int64_t t = 0; t < c.steps; t++) {
    const std::vector<uint32_t> rows = my_rows(rows_of(c, r.f.cfg.seed, t));
    cuvae_step_result rc, rs, rw;
    ASSERT_EQ(cuvae_backend_step(r.cpu, rows.data(), B, t, &rc), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(r.shard, rows.data(), B, t, &rs), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_step(r.whole, rows.data(), B, t, &rw), 0) << cuvae_last_error();
    const std::string at = std::string(c.name) + " sharded step " + std::to_string(t);
    expect_near_rel(rc.loss.nelbo, rs.loss.nelbo, 1e-5, 1e-4, at + " nelbo");  // parity_util.h's run_both bounds
    expect_near_rel(rc.loss.kl, rs.loss.kl, 1e-5, 1e-4, at + " kl");
    expect_near_rel(rc.loss.objective, rs.loss.objective, 1e-5, 1e-4, at + " objective");
    expect_near_rel(rc.grad_norm, rs.grad_norm, 1e-5, 1e-3, at + " gradient norm");
    expect_grads_close(r.f.m, r.cpu, r.shard, c.name, t);
    expect_shard_equals_whole(r, rs, rw, at, c.clip > 0.0f, t);
    if (t == 0) expect_state_close(state_of(r.cpu, n), state_of(r.shard, n), 1e-6, "sharded, after 1 step");
    const std::vector<float> p = state_of(r.shard, n).p;
    EXPECT_EQ(rank0s(p), p) << at << ": rank " << rank() << "'s parameters differ from rank 0's";
  }
  expect_state_close(state_of(r.cpu, n), state_of(r.shard, n), 2e-5, "sharded, after all steps");
  // set_state: whole moments in, each rank keeps its shard; rank 0 gathers them back in bits.
  Hooks h(n, 1);
  cuvae_backend *fresh = cuvae_backend_cuda_create(&r.f.m, &r.gpu_cfg, &r.f.ds, &r.f.ds);
  ASSERT_NE(fresh, nullptr) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_join_data_parallel(fresh, h.dp), 0) << cuvae_last_error();
  const State w = state_of(r.whole, n);
  ASSERT_EQ(fresh->set_state(fresh, w.p.data(), w.m.data(), w.v.data()), 0) << cuvae_last_error();
  const State back = state_of(fresh, n);
  EXPECT_EQ(back.p, w.p);
  if (rank() == 0) {
    EXPECT_EQ(back.m, w.m);
    EXPECT_EQ(back.v, w.v);
  }
  const std::vector<uint32_t> rows = my_rows(rows_of(c, r.f.cfg.seed, c.steps));
  cuvae_step_result rf, rw;
  ASSERT_EQ(cuvae_backend_step(fresh, rows.data(), B, c.steps, &rf), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_step(r.whole, rows.data(), B, c.steps, &rw), 0) << cuvae_last_error();
  EXPECT_EQ(rf.loss.objective, rw.loss.objective) << "the step after set_state";
  const State sf = state_of(fresh, n), sw = state_of(r.whole, n);
  bool ok;
  EXPECT_TRUE((max_diff(sw.p, sf.p, c.clip > 0.0f ? 4e-7 : 0.0, 0.0, &ok), ok))
      << "parameters after the step after set_state";  // expect_shard_equals_whole's bounds
  fresh->destroy(fresh);
}

INSTANTIATE_TEST_SUITE_P(Models, ShardedDataParallel,
                         ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Values(1, 0)),
                         [](const ::testing::TestParamInfo<std::tuple<DpCase, int>> &i) {
                           return std::string(std::get<0>(i.param).c.name) +
                                  (std::get<1>(i.param) ? "_graph" : "_direct");
                         });

// bf16 precision, sharded: the GEMMs' bf16 weights are remade from the gathered parameters (to_bf16_cuda, the
// rounding adam_update_bf16_cuda applies unsharded), so the sharded steps equal the unsharded ones in bits (no clip),
// the graph on and off. One reduce-scatter a step: counted once per captured graph, every step launched directly.
TEST(DataParallelBits, ShardedBf16EqualsUnsharded) {
  const DpCase &d = kCases[0];
  Fixture f(d.c);
  f.cfg.precision = CUVAE_PRECISION_BF16;
  cuvae_config direct_cfg = f.cfg;
  direct_cfg.cuda_graph = 0;
  const size_t n = f.m.n_params;
  Hooks hw(n, 0), hg(n, 1), hd(n, 1);
  ASSERT_TRUE(hw.dp && hg.dp && hd.dp);
  cuvae_backend *be[3] = {cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds),
                          cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds),
                          cuvae_backend_cuda_create(&f.m, &direct_cfg, &f.ds, &f.ds)};
  Hooks *hooks[3] = {&hw, &hg, &hd};
  for (int i = 0; i < 3; i++) {
    ASSERT_NE(be[i], nullptr) << cuvae_last_error();
    ASSERT_EQ(cuvae_backend_join_data_parallel(be[i], hooks[i]->dp), 0) << cuvae_last_error();
  }
  const int B = d.c.B / ranks(), steps = 4;
  for (int64_t t = 0; t < steps; t++) {
    const std::vector<uint32_t> mine = my_rows(rows_of(d.c, f.cfg.seed, t));
    cuvae_step_result res[3];
    for (int i = 0; i < 3; i++) ASSERT_EQ(cuvae_backend_step(be[i], mine.data(), B, t, &res[i]), 0) << cuvae_last_error();
    for (int i = 1; i < 3; i++) EXPECT_EQ(res[i].loss.objective, res[0].loss.objective) << "step " << t << ", " << i;
    const State s0 = state_of(be[0], n);
    for (int i = 1; i < 3; i++) EXPECT_EQ(state_of(be[i], n).p, s0.p) << "step " << t << ", backend " << i;
  }
  EXPECT_EQ(cuda_dp_buckets(be[1]), 1);
  EXPECT_EQ(cuda_dp_buckets(be[2]), steps);
  for (cuvae_backend *b : be) b->destroy(b);
}

// The graph on and off, and the gradient's all-reduce in one bucket or in one per layer, run the same additions
// (each element is the rank-order sum of the ranks' values, whatever the bucket): the same bits, step after step.
// The small buckets are used: one sum per layer. Sharded (ZeRO-1), the buckets are reduced into their blocks'
// owners: the same bits too, as the emulation adds every rank's part in rank order in either call.
class BucketsOfTheSum : public ::testing::TestWithParam<int> {};
TEST_P(BucketsOfTheSum, GraphAndBucketsGiveTheSameBits) {
  const DpCase &d = kCases[0];
  Fixture f(d.c);
  cuvae_config graph_cfg = f.cfg, direct_cfg = f.cfg;
  graph_cfg.cuda_graph = 1;
  direct_cfg.cuda_graph = 0;
  Hooks h(f.m.n_params, GetParam());
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
INSTANTIATE_TEST_SUITE_P(DataParallelBits, BucketsOfTheSum, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int> &i) { return i.param ? "sharded" : "unsharded"; });

// The ranks of this job share one machine: their places on it (what picks each rank's GPU, include/cuvae/device.h)
// are their world ranks, and as many.
TEST(DataParallelBits, RanksKnowTheirPlaceOnTheMachine) {
  if (g_one_rank) {
    EXPECT_EQ(0, cuvae_dist_local_rank());
    EXPECT_EQ(1, cuvae_dist_local_size());
    return;
  }
  EXPECT_EQ(cuvae_dist_rank(), cuvae_dist_local_rank());
  EXPECT_EQ(cuvae_dist_size(), cuvae_dist_local_size());
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

// The evaluation passes of `cuvae eval` on the ranks: the IWAE passes and the encoder's chunks of the latent
// statistics shared round-robin. A spy on the hooks' sum sees each rank's part before it is added: this rank's IWAE
// rows hold their estimates (log p(x) < 0) and the others' rows 0. Both backends' gathered estimates are one
// process's bits (each row from one rank, plus zeros). The KL per dim: the same 2600 non-negative terms summed in
// another grouping (chunks per rank, then the ranks), each order within (n - 1) 2^-53 of the exact sum (Higham 4.2),
// so within 2 n 2^-53 relative of each other; the active units are the same count.
int (*g_sum)(void *, double *, int) = nullptr;
std::vector<double> g_before_sum;
int spy_sum(void *ctx, double *v, int n) {
  g_before_sum.assign(v, v + n);
  return g_sum(ctx, v, n);
}

void expect_iwae_shared(const cuvae_iwae_plan &plan, size_t n, const char *what) {
  ASSERT_EQ(g_before_sum.size(), n) << what;
  for (size_t i = 0; i < n; i++) {
    const bool mine = (int64_t)(i / (size_t)plan.rows) % ranks() == rank();
    if (mine) EXPECT_LT(g_before_sum[i], 0.0) << what << " row " << i;
    else EXPECT_EQ(g_before_sum[i], 0.0) << what << " row " << i;
  }
}

TEST(DataParallelBits, EvaluationPassesAreSharedAndEqualOneProcess) {
  const Case c{"eval_passes", 16, 2, 12, 10, 3, 32, 2600, 0, CUVAE_LIK_BERNOULLI, CUVAE_ACT_RELU, 0.0f};
  Fixture f(c);
  Hooks hc(f.m.n_params), hg(f.m.n_params);
  ASSERT_TRUE(hc.dp && hg.dp);
  cuvae_data_parallel spy_c = *hc.dp, spy_g = *hg.dp;
  g_sum = hc.dp->sum;  // both hooks sum through the same function (their ctx differs)
  spy_c.sum = spy_g.sum = spy_sum;
  cuvae_backend *one[2] = {cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds),
                           cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds)};
  cuvae_backend *joined[2] = {cuvae_backend_cpu_create(&f.m, &f.cfg, &f.ds, &f.ds),
                              cuvae_backend_cuda_create(&f.m, &f.cfg, &f.ds, &f.ds)};
  ASSERT_TRUE(one[0] && one[1] && joined[0] && joined[1]) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_join_data_parallel(joined[0], &spy_c), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_backend_join_data_parallel(joined[1], &spy_g), 0) << cuvae_last_error();
  const int K = 4, batch = 100;
  cuvae_iwae_plan plan;
  ASSERT_EQ(cuvae_iwae_plan_make(K, batch, c.B + 5, &plan), 0);
  const size_t n = f.ds.n, Z = f.m.latent;
  const double bound = 2.0 * (double)n * std::ldexp(1.0, -53);
  for (int b = 0; b < 2; b++) {
    const char *what = b ? "cuda" : "cpu";
    std::vector<double> want(n), got(n);
    ASSERT_EQ(one[b]->iwae(one[b], &f.ds, K, batch, want.data()), 0) << cuvae_last_error();
    ASSERT_EQ(joined[b]->iwae(joined[b], &f.ds, K, batch, got.data()), 0) << cuvae_last_error();
    expect_iwae_shared(plan, n, what);
    EXPECT_EQ(want, got) << what << ": the gathered estimates are one process's bits";
    int a_one = -1, a_joined = -2;
    std::vector<double> kl_one(Z), kl_joined(Z);
    ASSERT_EQ(cuvae_latent_stats(one[b], &f.m, &f.ds, 0.01, &a_one, kl_one.data()), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_latent_stats(joined[b], &f.m, &f.ds, 0.01, &a_joined, kl_joined.data()), 0)
        << cuvae_last_error();
    EXPECT_EQ(a_one, a_joined) << what;
    ASSERT_EQ(g_before_sum.size(), 3 * Z) << what;
    for (size_t j = 0; j < Z; j++) {
      expect_near_rel(kl_one[j], kl_joined[j], 0.0, bound, std::string(what) + " KL of dim " + std::to_string(j));
      const double mine = g_before_sum[2 * Z + j], all = kl_one[j] * (double)n;  // this rank's chunks: part of all
      if (ranks() == 1) expect_near_rel(all, mine, 0.0, bound, std::string(what) + " one rank's KL sum");
      else EXPECT_LT(mine, 0.9 * all) << what << " dim " << j << ": this rank encoded every chunk";
    }
  }
  for (cuvae_backend *be : {one[0], one[1], joined[0], joined[1]}) be->destroy(be);
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
