// Data-parallel training over MPI (`mpirun -np N cuvae train`, docs/DISTRIBUTED.md): N ranks compute the terms one
// process computes on the same global batch, sum them in a fixed order, resume across rank counts, and stop together
// when one rank dies. Each test starts real MPI jobs of the cuvae program (Open MPI; skipped in a build without MPI).
#include <gtest/gtest.h>
#include <unistd.h>
#include <omp.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "cuvae/checkpoint.h"
#include "cuvae/config.h"
#include "cuvae/cpu.h"
#include "cuvae/data.h"
#include "cuvae/error.h"
#include "cuvae/model.h"
#include "cuvae/objective.h"
#include "cuvae/rng.h"
#include "data_split.h"
#include "test_util.h"

using namespace cuvae_test;

namespace {

constexpr int kBatch = 32, kStepsPerEpoch = 8, kSteps = 24;  // 256 examples, 3 epochs
constexpr double kU = 1.0 / (1 << 24);                      // float's unit roundoff

double gamma(int k) { return k * kU / (1 - k * kU); }  // Higham's gamma_k

struct State {
  int64_t step = -1;
  std::vector<float> params, m, v;
};

State load_state(const std::string &run) {
  State s;
  cuvae_checkpoint ck;
  EXPECT_EQ(cuvae_checkpoint_load((run + "/checkpoint.cuvae").c_str(), &ck), 0) << cuvae_last_error();
  if (::testing::Test::HasFailure()) return s;
  s.step = ck.step;
  s.params.assign(ck.params, ck.params + ck.n_params);
  s.m.assign(ck.adam_m, ck.adam_m + ck.n_params);
  s.v.assign(ck.adam_v, ck.adam_v + ck.n_params);
  cuvae_checkpoint_free(&ck);
  return s;
}

// The objective of every steps.jsonl row, in step order.
std::vector<double> step_losses(const std::string &run) {
  std::vector<double> out;
  for (const std::string &l : split_lines(read_file(run + "/steps.jsonl"))) {
    const size_t at = l.find("\"objective\": ");
    out.push_back(at == std::string::npos ? NAN : std::strtod(l.c_str() + at + 13, nullptr));
  }
  return out;
}

struct Dist : ::testing::Test {
  std::string dir;

  void SetUp() override {
#ifndef CUVAE_MPIEXEC
    GTEST_SKIP() << "built without MPI (CUVAE_MPI=OFF)";
#else
    // The build's launcher is missing where the test programs travel without Open MPI (the GPU bundle's machine).
    if (access(CUVAE_MPIEXEC, X_OK) != 0) GTEST_SKIP() << "no MPI launcher here: " CUVAE_MPIEXEC " is not executable";
#endif
    // Open MPI: as root it wants --allow-run-as-root; more ranks than cores want --oversubscribe (CI: 2 cores).
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    // Under AddressSanitizer: Open MPI never frees its own allocations (tests/emu/openmpi.supp names them; plugins
    // stay loaded so their frames keep their names); the program's own leaks are still reported.
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    setenv("LSAN_OPTIONS", "suppressions=" CUVAE_TEST_DATA "/../emu/openmpi.supp:fast_unwind_on_malloc=0", 1);
    unsetenv("CUVAE_TEST_KILL_AT");
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
    write_file(dir + "/c.ini", write_synthetic_sets(dir, 256, 64, 16) +
                                   "[model]\nhidden = 12,10\nlatent = 3\n[train]\nbatch_size = 32\n"
                                   "eval_batch_size = 20\nepochs = 3\nlog_every = 1\nseed = 7\nthreads = 1\n");
  }
  void TearDown() override {
    std::error_code ec;
    if (!HasFailure() && !dir.empty()) std::filesystem::remove_all(dir, ec);  // a failed test leaves its runs
  }

  // `cuvae ARGS` on `ranks` ranks (0: one process without mpirun); prefix: put before the program (e.g. env).
  Result cuvae(int ranks, const std::string &args, const std::string &prefix = "") {
    std::string line;
#ifdef CUVAE_MPIEXEC
    if (ranks > 0) line = std::string(CUVAE_MPIEXEC) + " -np " + std::to_string(ranks) + " ";
#endif
    return run_shell(line + prefix + CUVAE_BIN " " + args);
  }
  Result train(int ranks, const std::string &run, const std::string &extra = "") {
    return cuvae(ranks, "train " + dir + "/c.ini --out " + run + " --device cpu --progress lines " + extra);
  }
  Result resume(int ranks, const std::string &run, const std::string &extra = "") {
    return cuvae(ranks, "train --resume " + run + " --device cpu --progress lines " + extra);
  }
  // `cuvae ARGS` on 2 ranks, rank 1 alone armed with CUVAE_TEST_KILL_AT=AT (src/core/crash_point.h).
  Result rank1_armed(const std::string &args, const std::string &at) {
    return cuvae(2, args, "sh -c 'if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then export CUVAE_TEST_KILL_AT=" + at +
                              "; fi; exec \"$0\" \"$@\"' ");
  }
  // The same where AT kills rank 1: the job stops within seconds, mpirun naming the rank; nothing hangs.
  Result rank1_killed(const std::string &args, const std::string &at) {
    const auto t0 = std::chrono::steady_clock::now();
    const Result r = rank1_armed(args, at);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(r.code, 0) << r.out;
    EXPECT_LT(seconds, 30.0) << r.out;
    EXPECT_TRUE(std::regex_search(r.out, std::regex("rank 1 .*(signal 9|Killed)"))) << r.out;
    std::printf("the job stopped %.1f s after it started (rank 1 killed at %s)\n", seconds, at.c_str());
    return r;
  }
};

// ---- the terms: one step on N ranks against the same step composed in this process ------------------------------

// Rank r's part of step 0's gradient, as the CPU backend computes it (the global batch's rows r*b .. (r+1)*b of the
// epoch-0 permutation, their slice of step 0's eps, every term scaled by 1/kBatch), in grad.
struct StepZero {
  cuvae_config cfg;
  cuvae_dataset train{};
  cuvae_model model{};
  std::vector<float> params;

  explicit StepZero(const std::string &ini) {
    cuvae_config_defaults(&cfg);
    EXPECT_EQ(cuvae_config_load_file(&cfg, ini.c_str()), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_config_finalize(&cfg), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_load_split(&cfg, CUVAE_SPLIT_TRAIN, &train), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_model_build(&model, train.dim, &cfg), 0) << cuvae_last_error();
    params.assign(model.n_params, 0.0f);
    EXPECT_EQ(cuvae_model_init(&model, params.data(), cfg.seed), 0) << cuvae_last_error();
  }
  ~StepZero() { cuvae_dataset_free(&train); }

  std::vector<float> rank_grad(int rank, int ranks) {
    const int b = kBatch / ranks, Z = (int)model.latent, D = (int)train.dim;
    std::vector<uint32_t> perm(train.n);
    cuvae_shuffle(perm.data(), train.n, cfg.seed, 0);
    std::vector<float> x((size_t)b * D), eps((size_t)b * Z), grad(model.n_params);
    gather_rows_cpu(train.x, perm.data() + (size_t)rank * b, x.data(), b, D);
    cuvae_noise *g = cuvae_noise_create(cfg.seed);
    EXPECT_EQ(cuvae_noise_normal_slice(g, 0, (uint64_t)rank * b * Z, eps.data(), eps.size()), 0);
    cuvae_noise_destroy(g);
    cuvae_objective_spec spec;
    cuvae_objective_for_step(&cfg, 0, &spec);
    cuvae_cpu_ws *ws = cuvae_cpu_ws_create(&model, kBatch);
    const cuvae_cpu_batch batch = {b, x.data(), nullptr, eps.data(), nullptr, kBatch, nullptr, nullptr, nullptr};
    cuvae_loss loss;
    EXPECT_EQ(cuvae_cpu_objective_grad(&model, ws, params.data(), &batch, &spec, grad.data(), &loss), 0)
        << cuvae_last_error();
    cuvae_cpu_ws_destroy(ws);
    return grad;
  }

  // Adam's first step (clip_norm = 0) from the initial parameters with gradient g.
  State adam(const std::vector<float> &g) {
    State s{1, params, std::vector<float>(g.size(), 0.0f), std::vector<float>(g.size(), 0.0f)};
    adam_update_cpu(s.params.data(), g.data(), s.m.data(), s.v.data(), g.size(), cfg.lr, cfg.beta1, cfg.beta2,
                    cfg.adam_eps, 1, 1.0f);
    return s;
  }
};

void expect_same_bits(const State &a, const State &b, const char *what) {
  ASSERT_EQ(a.params.size(), b.params.size()) << what;
  EXPECT_EQ(a.step, b.step) << what;
  EXPECT_EQ(0, std::memcmp(a.params.data(), b.params.data(), a.params.size() * 4)) << what << ": parameters";
  EXPECT_EQ(0, std::memcmp(a.m.data(), b.m.data(), a.m.size() * 4)) << what << ": Adam m";
  EXPECT_EQ(0, std::memcmp(a.v.data(), b.v.data(), a.v.size() * 4)) << what << ": Adam v";
}

// One process, and 2 ranks, give bit for bit the first step composed here from the ranks' parts: each rank's rows,
// noise and 1/B scaling are exactly those of one process (2 ranks add g0 + g1, one IEEE addition in either order).
// 4 ranks: Open MPI's order of the 3 additions is its own, so the summed gradient is within gamma_3 sum_r |g_r| of
// the rank-order sum computed here (Higham 3.1); Adam's m = fl((1 - b1) g) then differs by at most
// (1 - b1) gamma_3 sum_r |g_r| (1 + u) + u (|m4| + |m_ref|).
TEST_F(Dist, RanksComputeTheTermsOfOneProcess) {
  omp_set_num_threads(1);  // the programs run 1 thread per rank (threads = 1): the same oneDNN kernels
  StepZero ref(dir + "/c.ini");
  ASSERT_FALSE(HasFailure());
  const Result one = train(0, dir + "/n1", "--set train.max_steps=1");
  const Result two = train(2, dir + "/n2", "--set train.max_steps=1");
  const Result four = train(4, dir + "/n4", "--set train.max_steps=1");
  ASSERT_EQ(one.code, 0) << one.out;
  ASSERT_EQ(two.code, 0) << two.out;
  ASSERT_EQ(four.code, 0) << four.out;
  expect_same_bits(load_state(dir + "/n1"), ref.adam(ref.rank_grad(0, 1)), "1 process");
  std::vector<float> g0 = ref.rank_grad(0, 2), g1 = ref.rank_grad(1, 2), g2(g0.size());
  for (size_t i = 0; i < g0.size(); i++) g2[i] = g0[i] + g1[i];
  expect_same_bits(load_state(dir + "/n2"), ref.adam(g2), "2 ranks");

  std::vector<std::vector<float>> parts;
  for (int r = 0; r < 4; r++) parts.push_back(ref.rank_grad(r, 4));
  std::vector<float> g4(g0.size());
  for (size_t i = 0; i < g4.size(); i++) g4[i] = ((parts[0][i] + parts[1][i]) + parts[2][i]) + parts[3][i];
  const State want = ref.adam(g4), got = load_state(dir + "/n4");
  ASSERT_EQ(got.m.size(), want.m.size());
  const double c = 1.0 - ref.cfg.beta1;
  int differ = 0;
  for (size_t i = 0; i < g4.size(); i++) {
    double abs_sum = 0.0;
    for (int r = 0; r < 4; r++) abs_sum += std::fabs(parts[r][i]);
    const double bound = c * gamma(3) * abs_sum * (1 + kU) + kU * (std::fabs(got.m[i]) + std::fabs(want.m[i]));
    EXPECT_LE(std::fabs((double)got.m[i] - want.m[i]), bound) << "element " << i;
    differ += got.m[i] != want.m[i];
  }
  std::printf("4 ranks: %d of %zu first moments differ from the rank-order sum (within the bound)\n", differ,
              g4.size());
}

// The same rank count gives the same bits: every step's losses and the final state (4 ranks, where the order of
// Open MPI's additions is not the trivial a + b).
TEST_F(Dist, SameRankCountGivesTheSameBits) {
  for (int ranks : {2, 4}) {
    const std::string a = dir + "/a" + std::to_string(ranks), b = dir + "/b" + std::to_string(ranks);
    const Result ra = train(ranks, a), rb = train(ranks, b);
    ASSERT_EQ(ra.code, 0) << ra.out;
    ASSERT_EQ(rb.code, 0) << rb.out;
    EXPECT_EQ(read_file(a + "/steps.jsonl"), read_file(b + "/steps.jsonl")) << ranks << " ranks";
    EXPECT_EQ(split_lines(read_file(a + "/steps.jsonl")).size(), size_t(kSteps));
    expect_same_bits(load_state(a), load_state(b), (std::to_string(ranks) + " ranks").c_str());
  }
}

// N = 2 and 4 against one process over 24 steps (3 epochs). The one change is the order of the gradient's sums:
// each element is a sum of B = 32 row terms (one fp32 sum in oneDNN's order, against N partial sums of B/N terms and
// N - 1 additions), each within gamma_32 sum|t| of the exact value (Higham 3.1), so a step's gradients differ by at
// most 2 gamma_32 sum|t| = 3.8e-6 sum|t|. The losses then differ through the parameters, to first order by
// lr x (change of Adam's direction) x |dL/dp|, growing over the steps. Condition (as the 20-step CPU/CUDA parity,
// docs/TESTING.md): cancellation in the row sums at most 30x (sum|t| <= 30 |sum t|), so a step's relative change of
// the gradient is <= 1.2e-4; over 24 steps that bounds the objective's relative change by 24 x 1.2e-4 = 3e-3.
// Measured: at most 9e-9 relative (both N = 2 and 4, on an Intel Xeon with AVX-512).
// The test loss: the mean over the batches of the evaluation pass, which with N ranks adds the ranks' double sums:
// same terms, so it differs only by the losses' own change.
TEST_F(Dist, RankCountsAgreeWithinTheSummationOrderBound) {
  const Result one = train(0, dir + "/n1");
  ASSERT_EQ(one.code, 0) << one.out;
  const std::vector<double> want = step_losses(dir + "/n1");
  ASSERT_EQ(want.size(), size_t(kSteps));
  for (int ranks : {2, 4}) {
    const std::string run = dir + "/n" + std::to_string(ranks);
    const Result r = train(ranks, run);
    ASSERT_EQ(r.code, 0) << r.out;
    const std::vector<double> got = step_losses(run);
    ASSERT_EQ(got.size(), want.size());
    double worst = 0.0;
    for (size_t i = 0; i < got.size(); i++) {
      EXPECT_LE(std::fabs(got[i] - want[i]), 3e-3 * std::fabs(want[i])) << ranks << " ranks, step " << i + 1;
      worst = std::max(worst, std::fabs(got[i] - want[i]) / std::fabs(want[i]));
    }
    // Step 1 runs from the same parameters, so only oneDNN's kernel for B/N rows against B could order a row's sums
    // differently: each output within gamma_K sum|a b| (K <= 16 here: 1e-6), the loss within 30x that under the
    // condition above. Measured: equal.
    EXPECT_LE(std::fabs(got[0] - want[0]), 3e-5 * std::fabs(want[0])) << ranks << " ranks, step 1";
    std::printf("%d ranks: largest relative difference of a step's objective from one process: %.2e\n", ranks, worst);
  }
}

// A run started on N ranks resumes on M: N = M continues bit for bit as the uninterrupted run; N != M within the
// bound above (the steps before the stop are N's own). Stopped at step 12, in the middle of epoch 2.
TEST_F(Dist, ResumesOnAnotherRankCount) {
  const Result full = train(2, dir + "/full");
  ASSERT_EQ(full.code, 0) << full.out;
  const std::vector<double> want = step_losses(dir + "/full");
  const State want_state = load_state(dir + "/full");
  struct Case { int first, then; };
  for (const Case c : {Case{2, 2}, Case{2, 0}, Case{2, 4}, Case{0, 2}}) {
    const std::string run = dir + "/r" + std::to_string(c.first) + std::to_string(c.then);
    const Result a = train(c.first, run, "--set train.max_steps=12");
    ASSERT_EQ(a.code, 0) << a.out;
    const Result b = resume(c.then, run, "--set train.max_steps=0");
    ASSERT_EQ(b.code, 0) << b.out;
    const std::vector<double> got = step_losses(run);
    ASSERT_EQ(got.size(), want.size()) << c.first << " -> " << c.then;
    if (c.first == 2 && c.then == 2) {
      EXPECT_EQ(read_file(run + "/steps.jsonl"), read_file(dir + "/full/steps.jsonl"));
      expect_same_bits(load_state(run), want_state, "2 ranks -> 2 ranks");
      continue;
    }
    for (size_t i = 0; i < got.size(); i++)
      EXPECT_LE(std::fabs(got[i] - want[i]), 3e-3 * std::fabs(want[i])) << c.first << " -> " << c.then << ", step "
                                                                          << i + 1;
  }
}

// Killing one rank stops the job within seconds with a message naming the rank; the checkpoint is whole (the last
// epoch end's), and the run resumes from it to the uninterrupted run's bits.
TEST_F(Dist, KilledRankStopsEveryRank) {
  const Result full = train(2, dir + "/full");
  ASSERT_EQ(full.code, 0) << full.out;
  const std::string run = dir + "/killed";
  // rank 1 alone raises SIGKILL after its step 13
  const Result r = rank1_killed("train " + dir + "/c.ini --out " + run + " --device cpu --progress lines", "step:13");
  EXPECT_EQ(load_state(run).step, kStepsPerEpoch) << r.out;
  const Result again = resume(2, run);
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_EQ(read_file(run + "/steps.jsonl"), read_file(dir + "/full/steps.jsonl"));
  expect_same_bits(load_state(run), load_state(dir + "/full"), "resumed after the kill");
}

// A signal that reaches one rank stops every rank after the same step (they look at the flag together after every
// step); rank 0 saves the checkpoint there, and the run resumes to the uninterrupted run's bits.
TEST_F(Dist, SignalToOneRankStopsAllAtTheSameStep) {
  const Result full = train(2, dir + "/full");
  ASSERT_EQ(full.code, 0) << full.out;
  const std::string run = dir + "/stopped";
  // rank 1 alone raises SIGINT after its step 11
  const Result r = rank1_armed("train " + dir + "/c.ini --out " + run + " --device cpu --progress lines", "step:11:INT");
  EXPECT_EQ(r.code, 130) << r.out;
  EXPECT_NE(r.out.find("checkpoint saved at step 11"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mpirun -np 2 cuvae train --resume"), std::string::npos) << r.out;
  EXPECT_EQ(load_state(run).step, 11);
  const Result again = resume(2, run);
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_EQ(read_file(run + "/steps.jsonl"), read_file(dir + "/full/steps.jsonl"));
  expect_same_bits(load_state(run), load_state(dir + "/full"), "resumed after the stop");
}

// [train] shard_optimizer (ZeRO-1): each rank updates its shard with its shard of Adam's m and v. With 2 ranks the
// reduce-scatter adds the same two numbers as the all-reduce, so the run equals the unsharded one bit for bit (the
// gradient norm too: each shard's sum of squares, added in rank order, is the same double sum regrouped, which this
// model's sums do not round differently; the losses and state are compared in bits, the norm in its 9 printed
// digits). The checkpoint gathers the shards: a sharded run resumes unsharded and the other way, in bits. 4 ranks:
// Open MPI's reduce-scatter may add in another order than its all-reduce, so the losses agree within the bound of
// RankCountsAgreeWithinTheSummationOrderBound.
TEST_F(Dist, ShardedOptimizerMatchesUnsharded) {
  const std::string shard = "--set train.shard_optimizer=true";
  const Result plain = train(2, dir + "/plain"), sharded = train(2, dir + "/sharded", shard);
  ASSERT_EQ(plain.code, 0) << plain.out;
  ASSERT_EQ(sharded.code, 0) << sharded.out;
  EXPECT_NE(sharded.out.find("Adam m and v 0.0 MiB (shard 1 of 2: "), std::string::npos) << sharded.out;
  EXPECT_EQ(read_file(dir + "/sharded/steps.jsonl"), read_file(dir + "/plain/steps.jsonl"));
  expect_same_bits(load_state(dir + "/sharded"), load_state(dir + "/plain"), "2 ranks, sharded");
  struct Case { const char *first, *then, *name; };
  for (const Case c : {Case{shard.c_str(), "", "sharded -> unsharded"}, Case{"", shard.c_str(), "unsharded -> sharded"}}) {
    const std::string run = dir + (c.first[0] ? "/sharded_then_plain" : "/plain_then_sharded");
    const Result a = train(2, run, std::string("--set train.max_steps=12 ") + c.first);
    ASSERT_EQ(a.code, 0) << a.out;
    const Result b = resume(2, run, std::string("--set train.max_steps=0 ") + c.then);
    ASSERT_EQ(b.code, 0) << b.out;
    EXPECT_EQ(read_file(run + "/steps.jsonl"), read_file(dir + "/plain/steps.jsonl")) << c.name;
    expect_same_bits(load_state(run), load_state(dir + "/plain"), c.name);
  }
  const Result plain4 = train(4, dir + "/plain4"), sharded4 = train(4, dir + "/sharded4", shard);
  ASSERT_EQ(plain4.code, 0) << plain4.out;
  ASSERT_EQ(sharded4.code, 0) << sharded4.out;
  const std::vector<double> want = step_losses(dir + "/plain4"), got = step_losses(dir + "/sharded4");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); i++)
    EXPECT_LE(std::fabs(got[i] - want[i]), 3e-3 * std::fabs(want[i])) << "4 ranks, step " << i + 1;
}

// A loss that is not finite is global (the ranks' parts are summed), so every rank stops at the same step; rank 0 says
// so once, the job ends with exit 1 (no MPI abort), and the last checkpoint is the one before.
TEST_F(Dist, DivergenceStopsEveryRankWithOneMessage) {
  const Result first = train(2, dir + "/run", "--set train.epochs=1");
  ASSERT_EQ(first.code, 0) << first.out;
  const std::string before = read_file(dir + "/run/checkpoint.cuvae");
  const Result r = resume(2, dir + "/run", "--set train.epochs=3 --set train.lr=1e30");
  EXPECT_EQ(r.code, 1) << r.out;
  const std::regex msg("error \\(rank 0 of 2\\): step [0-9]+: (loss|gradient) is not finite");
  EXPECT_TRUE(std::regex_search(r.out, msg)) << r.out;
  EXPECT_EQ(r.out.find("rank 1 of 2"), std::string::npos) << "told once: " << r.out;
  EXPECT_EQ(r.out.find("MPI_ABORT"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(dir + "/run/checkpoint.cuvae"), before);
}

// Bad launches: a batch the ranks cannot split, and a command that runs in one process, are refused with one
// message (rank 0's for all) and a non-zero exit; nothing is written.
TEST_F(Dist, RefusesWhatTheRanksCannotRun) {
  const Result r = train(4, dir + "/odd", "--set train.batch_size=30");
  EXPECT_EQ(r.code, 1) << r.out;
  const std::string msg = "[train] batch_size: 30 is not divisible by the 4 ranks";
  ASSERT_NE(r.out.find(msg), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(msg), r.out.rfind(msg)) << "said once: " << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/odd")) << r.out;
  const Result e = cuvae(2, "export " + dir + "/odd --out " + dir + "/odd.safetensors");
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_NE(e.out.find("cuvae export runs in one process"), std::string::npos) << e.out;
}

// A rank of `cuvae eval` that dies (rank 1 killed after its ELBO pass, src/core/crash_point.h) while rank 0 waits for it in
// the next pass stops the job within seconds, mpirun naming the rank; nothing hangs.
TEST_F(Dist, EvalStopsWhenARankDies) {
  ASSERT_EQ(train(0, dir + "/ev", "--set train.max_steps=20").code, 0);
  const Result r = rank1_killed("eval " + dir + "/ev --device cpu --iwae 3 --batch 25", "eval-elbo:0");
  EXPECT_EQ(r.out.find("\"checkpoint\""), std::string::npos) << "no result line: " << r.out;
}

// The number after `"key": ` in the line, NAN when absent.
double json_number(const std::string &line, const std::string &key) {
  const size_t at = line.find("\"" + key + "\": ");
  return at == std::string::npos ? NAN : std::strtod(line.c_str() + at + key.size() + 4, nullptr);
}

// `cuvae eval` on 2 and 3 ranks (its batches, IWAE passes and encoder chunks shared round-robin; 3 ranks get uneven
// shares) prints one line, from rank 0, with one process's numbers. The IWAE estimate is the same bits: each row's
// log p(x) comes from one rank and the gather adds zeros to it, and the mean is summed in row order as before, so the
// printed string is equal. The ELBO's batch sums are the same bits but the ranks' double sums are added in another
// order: relative <= 2 (n_batches) 2^-53 ~ 2e-14, far below the 6 decimals printed; so the printed values differ by
// at most one unit of the last printed place (1e-6, a rounding boundary falling between them).
TEST_F(Dist, EvalSharesItsPassesOverTheRanks) {
  ASSERT_EQ(train(0, dir + "/ev", "--set train.max_steps=20").code, 0);
  const std::string args = "eval " + dir + "/ev --device cpu --iwae 3 --batch 25";
  const Result one = cuvae(0, args);
  ASSERT_EQ(one.code, 0) << one.out;
  const std::string iwae = one.out.substr(one.out.find("\"iwae_nll\""), 30);
  for (int ranks : {2, 3}) {
    const Result r = cuvae(ranks, args);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out.find("\"checkpoint\""), r.out.rfind("\"checkpoint\"")) << "one line: " << r.out;
    EXPECT_NE(r.out.find(iwae), std::string::npos) << ranks << " ranks: " << r.out << "\none process: " << one.out;
    for (const char *key : {"nelbo", "recon", "kl"})
      EXPECT_NEAR(json_number(r.out, key), json_number(one.out, key), 1e-6) << ranks << " ranks, " << key;
    EXPECT_EQ(json_number(r.out, "active_units"), json_number(one.out, "active_units")) << r.out;
  }
  // What every rank refuses is told once, before any pass: a missing checkpoint; --iwae on an autoencoder.
  ASSERT_EQ(train(0, dir + "/ae", "--set train.max_steps=2 --set train.objective=ae").code, 0);
  const std::pair<std::string, std::string> refusals[] = {
      {"eval " + dir + "/missing --device cpu", "cannot open checkpoint"},
      {"eval " + dir + "/ae --device cpu --iwae 3", "is an autoencoder ([train] objective = ae)"}};
  for (const auto &[args, msg] : refusals) {
    const Result bad = cuvae(2, args);
    EXPECT_EQ(bad.code, 1) << bad.out;
    ASSERT_NE(bad.out.find(msg), std::string::npos) << bad.out;
    EXPECT_EQ(bad.out.find(msg), bad.out.rfind(msg)) << "said once: " << bad.out;
  }
}

}  // namespace
