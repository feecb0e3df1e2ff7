// Crash safety of `cuvae train`: runs killed with SIGKILL at named points (src/core/crash_point.h), stopped by SIGINT or
// SIGTERM, cut by max_steps, or writing to a full disk, then resumed, must end with the checkpoint state and every
// number of metrics.jsonl and steps.jsonl of one uninterrupted run. The wall-clock fields samples_per_s and seconds
// are measurements, not results, and are the only ones left out of the comparison.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "cuvae/checkpoint.h"
#include "cuvae/error.h"
#include "test_util.h"

using namespace cuvae_test;

namespace {

struct Exit {
  int status = -1;  // from waitpid
  std::string out;  // stdout and stderr together
  bool killed() const { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }
  int code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

// Runs the cuvae program with `args`; `kill_at` sets CUVAE_TEST_KILL_AT; `fsize` > 0 limits the size of every file
// it writes (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail with EFBIG, as on a full disk).
Exit cuvae(const std::vector<std::string> &args, const std::string &out_file, const std::string &kill_at = "",
           rlim_t fsize = 0) {
  Exit e;
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(120);
    dup2(fd, 1);
    dup2(fd, 2);
    if (kill_at.empty())
      unsetenv("CUVAE_TEST_KILL_AT");
    else
      setenv("CUVAE_TEST_KILL_AT", kill_at.c_str(), 1);
    if (fsize > 0) {
      signal(SIGXFSZ, SIG_IGN);
      struct rlimit lim = {fsize, fsize};
      if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(121);
    }
    std::vector<char *> argv = {const_cast<char *>(CUVAE_BIN)};
    for (const std::string &a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    execv(CUVAE_BIN, argv.data());
    _exit(122);
  }
  if (pid > 0) waitpid(pid, &e.status, 0);
  e.out = read_file(out_file);
  return e;
}

// metrics.jsonl rows without their wall-clock fields (samples_per_s, seconds).
std::vector<std::string> metrics_rows(const std::string &run) {
  static const std::regex timing("\"samples_per_s\": [0-9.e+-]+, \"seconds\": [0-9.e+-]+, ");
  std::vector<std::string> out;
  for (const std::string &l : split_lines(read_file(run + "/metrics.jsonl"))) {
    EXPECT_TRUE(std::regex_search(l, timing)) << l;
    out.push_back(std::regex_replace(l, timing, ""));
  }
  return out;
}

off_t file_size(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

bool exists(const std::string &path) { return file_size(path) >= 0; }

struct Crash : ::testing::Test {
  std::string dir, ref;
  static constexpr int kStepsPerEpoch = 8, kSteps = 24;  // 256 examples at batch 32, 3 epochs

  void SetUp() override {
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
    write_file(dir + "/c.ini", write_synthetic_sets(dir, 256, 64, 16) +
                                   "[model]\nhidden = 12,10\nlatent = 3\n[train]\nbatch_size = 32\n"
                                   "eval_batch_size = 50\nepochs = 3\nlog_every = 1\nseed = 7\nthreads = 1\n");
    ref = dir + "/ref";
    Exit e = train(ref);
    ASSERT_EQ(e.code(), 0) << e.out;
    ASSERT_EQ(split_lines(read_file(ref + "/metrics.jsonl")).size(), 3u);
    ASSERT_EQ(split_lines(read_file(ref + "/steps.jsonl")).size(), size_t(kSteps));
  }
  void TearDown() override {
    std::error_code ec;
    if (!HasFailure()) std::filesystem::remove_all(dir, ec);  // a failed test leaves its runs to look at
  }

  Exit train(const std::string &run, const std::string &kill_at = "", std::vector<std::string> extra = {},
             rlim_t fsize = 0) {
    std::vector<std::string> args = {"train", dir + "/c.ini", "--out", run, "--device", "cpu", "--progress", "lines"};
    args.insert(args.end(), extra.begin(), extra.end());
    return cuvae(args, dir + "/out.txt", kill_at, fsize);
  }
  Exit resume(const std::string &run, std::vector<std::string> extra = {}, rlim_t fsize = 0,
              const std::string &kill_at = "") {
    std::vector<std::string> args = {"train", "--resume", run, "--device", "cpu", "--progress", "lines"};
    args.insert(args.end(), extra.begin(), extra.end());
    return cuvae(args, dir + "/out.txt", kill_at, fsize);
  }

  // The run's checkpoint.cuvae loads (it is never torn); returns its step, -1 when there is none.
  int64_t checkpoint_step(const std::string &run) {
    if (!exists(run + "/checkpoint.cuvae")) return -1;
    cuvae_checkpoint ck;
    EXPECT_EQ(cuvae_checkpoint_load((run + "/checkpoint.cuvae").c_str(), &ck), 0) << cuvae_last_error();
    const int64_t step = ck.step;
    cuvae_checkpoint_free(&ck);
    return step;
  }

  // The finished run equals the uninterrupted one: checkpoint state bit for bit (each checkpoint's log lengths
  // against its own files: the timing fields' widths differ), steps.jsonl byte for byte, metrics.jsonl but timing.
  void expect_same_as_reference(const std::string &run) {
    cuvae_checkpoint a, b;
    ASSERT_EQ(cuvae_checkpoint_load((ref + "/checkpoint.cuvae").c_str(), &a), 0) << cuvae_last_error();
    ASSERT_EQ(cuvae_checkpoint_load((run + "/checkpoint.cuvae").c_str(), &b), 0) << cuvae_last_error();
    EXPECT_EQ(b.step, kSteps);
    EXPECT_EQ(a.step, b.step);
    EXPECT_EQ(a.rng_offset, b.rng_offset);
    EXPECT_STREQ(a.config_ini, b.config_ini);
    ASSERT_EQ(a.n_params, b.n_params);
    EXPECT_EQ(std::memcmp(a.params, b.params, a.n_params * 4), 0);
    EXPECT_EQ(std::memcmp(a.adam_m, b.adam_m, a.n_params * 4), 0);
    EXPECT_EQ(std::memcmp(a.adam_v, b.adam_v, a.n_params * 4), 0);
    EXPECT_EQ(b.progress.epoch_steps, 0u);  // at an epoch end: no sums carried
    EXPECT_EQ(b.progress.sum_nelbo, 0.0);
    EXPECT_EQ(a.progress.metrics_bytes, uint64_t(file_size(ref + "/metrics.jsonl")));
    EXPECT_EQ(b.progress.metrics_bytes, uint64_t(file_size(run + "/metrics.jsonl")));
    EXPECT_EQ(b.progress.steps_bytes, uint64_t(file_size(run + "/steps.jsonl")));
    cuvae_checkpoint_free(&a);
    cuvae_checkpoint_free(&b);
    EXPECT_EQ(read_file(run + "/steps.jsonl"), read_file(ref + "/steps.jsonl"));
    EXPECT_EQ(metrics_rows(run), metrics_rows(ref));
    EXPECT_EQ(read_file(run + "/config.ini"), read_file(ref + "/config.ini"));
    EXPECT_FALSE(exists(run + "/checkpoint.cuvae.tmp"));
    // loss.png: one point per epoch at whole epochs, the resumed run's earlier epochs read back from metrics.jsonl
    EXPECT_EQ(read_file(run + "/loss.png"), read_file(ref + "/loss.png"));
  }
};

// SIGKILL at each point, then --resume: the same result as never being killed.
struct KillPoint {
  const char *at;         // CUVAE_TEST_KILL_AT
  int64_t ckpt_step;      // the checkpoint the kill leaves (-1: none)
  size_t metrics_before;  // complete rows the killed run's metrics.jsonl holds at least
};

const KillPoint kKillPoints[] = {
    {"step:3", 0, 0},                // mid-epoch 1: only the step-0 checkpoint exists
    {"steps-row:13", 8, 1},          // mid-epoch 2: steps.jsonl rows 9..13 are on disk past the checkpoint
    {"step:8", 0, 0},                // epoch 1's last step taken, not yet collected or evaluated
    {"eval:16", 8, 1},               // during the epoch-end evaluation
    {"metrics:16", 8, 2},            // epoch 2's row written, its checkpoint not
    {"checkpoint-write:16", 8, 2},   // a torn temporary file
    {"checkpoint-rename:8", 0, 1},   // a complete temporary file, not renamed
    {"checkpoint-saved:16", 16, 2},  // checkpoint in place, pictures not
    {"pictures:8", 8, 1},            // between the pictures
    {"eval:24", 16, 2},              // the last evaluation
    {"metrics:24", 16, 3},           // the last row, before the last checkpoint
    {"checkpoint-rename:24", 16, 3}, // the last checkpoint complete but not renamed
    {"checkpoint-write:0", -1, 0},   // the step-0 checkpoint torn: only config.ini and the temporary file
};

TEST_F(Crash, KilledAnywhereResumesToTheSameRun) {
  for (const KillPoint &k : kKillPoints) {
    SCOPED_TRACE(k.at);
    const std::string run = dir + "/run-" + std::regex_replace(k.at, std::regex(":"), "-");
    Exit e = train(run, k.at);
    ASSERT_TRUE(e.killed()) << "status " << e.status << ": " << e.out;
    EXPECT_EQ(checkpoint_step(run), k.ckpt_step);
    EXPECT_GE(split_lines(read_file(run + "/metrics.jsonl")).size(), k.metrics_before);
    e = resume(run);
    ASSERT_EQ(e.code(), 0) << e.out;
    if (k.ckpt_step < 0) {
      EXPECT_NE(e.out.find("starting it from step 0"), std::string::npos) << e.out;
    }
    if (exists(run + "/checkpoint.cuvae.tmp")) ADD_FAILURE() << "temporary file left";
    expect_same_as_reference(run);
  }
}

// Killed twice in the same epoch (once during the resumed run), then resumed again.
TEST_F(Crash, KilledAgainWhileResuming) {
  const std::string run = dir + "/run";
  ASSERT_TRUE(train(run, "steps-row:11").killed());
  ASSERT_TRUE(resume(run, {}, 0, "steps-row:14").killed());
  EXPECT_EQ(checkpoint_step(run), 8);
  ASSERT_TRUE(resume(run, {}, 0, "checkpoint-write:16").killed());
  Exit e = resume(run);
  ASSERT_EQ(e.code(), 0) << e.out;
  expect_same_as_reference(run);
}

// SIGTERM mid-epoch: the step finishes, a checkpoint with the epoch's sums is written, no metrics row; the message
// names the command that continues the run; the resumed epoch's row is the uninterrupted one.
TEST_F(Crash, SigtermMidEpochSavesAndResumesExactly) {
  const std::string run = dir + "/run";
  Exit e = train(run, "step:13:TERM");
  ASSERT_EQ(e.code(), 143) << e.out;
  EXPECT_NE(e.out.find("interrupted by SIGTERM: checkpoint saved at step 13 (epoch 2, step 5 of 8)"),
            std::string::npos) << e.out;
  EXPECT_NE(e.out.find("cuvae train --resume " + run + " --device cpu\n"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("\"step\": 13, \"epoch\": 2, \"epoch_step\": 5, \"steps_per_epoch\": 8, "
                       "\"epochs_completed\": 1, "),
            std::string::npos) << e.out;
  EXPECT_NE(e.out.find("\"interrupted\": true}"), std::string::npos) << e.out;
  EXPECT_EQ(e.out.find("\"epochs\""), std::string::npos) << e.out;
  EXPECT_EQ(split_lines(read_file(run + "/metrics.jsonl")).size(), 1u);  // no partial row for epoch 2
  EXPECT_EQ(split_lines(read_file(run + "/steps.jsonl")).size(), 13u);
  cuvae_checkpoint ck;
  ASSERT_EQ(cuvae_checkpoint_load((run + "/checkpoint.cuvae").c_str(), &ck), 0) << cuvae_last_error();
  EXPECT_EQ(ck.step, 13);
  EXPECT_EQ(ck.progress.epoch_steps, 5u);
  EXPECT_GT(ck.progress.sum_nelbo, 0.0);
  EXPECT_GT(ck.progress.epoch_seconds, 0.0);
  EXPECT_EQ(ck.progress.steps_bytes, uint64_t(file_size(run + "/steps.jsonl")));
  EXPECT_EQ(ck.progress.metrics_bytes, uint64_t(file_size(run + "/metrics.jsonl")));
  cuvae_checkpoint_free(&ck);
  e = resume(run);
  ASSERT_EQ(e.code(), 0) << e.out;
  expect_same_as_reference(run);
}

// SIGINT at an epoch end: the epoch's row and checkpoint are written as usual, then the run stops (exit 130).
TEST_F(Crash, SigintAtEpochEndStops) {
  const std::string run = dir + "/run";
  Exit e = train(run, "step:16:INT");
  ASSERT_EQ(e.code(), 130) << e.out;
  EXPECT_NE(e.out.find("interrupted by SIGINT: checkpoint saved at step 16 (epoch 2, step 8 of 8)"),
            std::string::npos) << e.out;
  EXPECT_EQ(split_lines(read_file(run + "/metrics.jsonl")).size(), 2u);
  EXPECT_EQ(checkpoint_step(run), 16);
  e = resume(run);
  ASSERT_EQ(e.code(), 0) << e.out;
  expect_same_as_reference(run);
}

// A run ended by max_steps mid-epoch writes a "complete": false row; continued, that row is replaced by the
// epoch's complete one (one row per epoch), equal to the uninterrupted run's.
TEST_F(Crash, MaxStepsMidEpochThenContinued) {
  const std::string run = dir + "/run";
  Exit e = train(run, "", {"--set", "train.max_steps=13"});
  ASSERT_EQ(e.code(), 0) << e.out;
  std::vector<std::string> m = split_lines(read_file(run + "/metrics.jsonl"));
  ASSERT_EQ(m.size(), 2u);
  EXPECT_NE(m[1].find("\"epoch\": 2, \"step\": 13, "), std::string::npos) << m[1];
  EXPECT_NE(m[1].find("\"complete\": false"), std::string::npos) << m[1];
  e = resume(run, {"--set", "train.max_steps=0"});
  ASSERT_EQ(e.code(), 0) << e.out;
  expect_same_as_reference(run);
}

// A checkpoint that cannot be written (the file-size limit stands in for a full disk): one clear error, exit 1, the
// previous checkpoint intact and no temporary file; resumed without the limit, the run ends as the reference.
TEST_F(Crash, FullDiskWhileWritingACheckpoint) {
  const std::string run = dir + "/run";
  ASSERT_EQ(train(run, "", {"--set", "train.epochs=1"}).code(), 0);
  const std::string before = read_file(run + "/checkpoint.cuvae");
  ASSERT_GT(before.size(), 8000u);
  Exit e = resume(run, {"--set", "train.epochs=3"}, 6000);  // the logs fit, a checkpoint does not
  EXPECT_EQ(e.code(), 1) << e.out;
  EXPECT_NE(e.out.find("temporary file " + run + "/checkpoint.cuvae.tmp: File too large"),
            std::string::npos) << e.out;
  EXPECT_NE(e.out.find("the last good checkpoint is " + run + "/checkpoint.cuvae"), std::string::npos) << e.out;
  EXPECT_EQ(read_file(run + "/checkpoint.cuvae"), before);
  EXPECT_FALSE(exists(run + "/checkpoint.cuvae.tmp"));
  e = resume(run, {"--set", "train.epochs=3"});
  ASSERT_EQ(e.code(), 0) << e.out;
  expect_same_as_reference(run);
}

// metrics.jsonl or steps.jsonl on a full device (/dev/full): the write error is reported naming the file, exit 1,
// and the checkpoint is not moved past rows that were lost. With the file back, the run resumes exactly.
TEST_F(Crash, FullDiskWhileWritingTheLogs) {
  if (access("/dev/full", W_OK) != 0) GTEST_SKIP() << "no /dev/full";
  for (const char *name : {"metrics.jsonl", "steps.jsonl"}) {
    SCOPED_TRACE(name);
    const std::string run = dir + "/run-" + name, log = run + "/" + name;
    ASSERT_EQ(train(run, "", {"--set", "train.epochs=1"}).code(), 0);
    const std::string ckpt = read_file(run + "/checkpoint.cuvae"), saved = read_file(log);
    ASSERT_EQ(unlink(log.c_str()), 0);
    ASSERT_EQ(symlink("/dev/full", log.c_str()), 0);
    Exit e = resume(run, {"--set", "train.epochs=3"});
    EXPECT_EQ(e.code(), 1) << e.out;
    EXPECT_NE(e.out.find("error: cannot write " + log + ": No space left on device"), std::string::npos) << e.out;
    EXPECT_EQ(read_file(run + "/checkpoint.cuvae"), ckpt);
    ASSERT_EQ(unlink(log.c_str()), 0);
    write_file(log, saved);
    e = resume(run, {"--set", "train.epochs=3"});
    ASSERT_EQ(e.code(), 0) << e.out;
    expect_same_as_reference(run);
  }
}

}  // namespace
