// The cuvae program as a user meets it: help pages, exit codes, and one clear message for each kind of bad
// input (never a crash: a crash would show as a signal exit, which these tests reject).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "test_util.h"

using namespace cuvae_test;

namespace {

struct Result {
  int code;           // exit status; -1 when killed by a signal
  std::string out;    // stdout and stderr together
};

Result run(const std::string &args) {
  std::string cmd = std::string(CUVAE_BIN) + " " + args + " 2>&1";
  FILE *p = popen(cmd.c_str(), "r");
  Result r{-1, ""};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

struct Cli : ::testing::Test {
  std::string dir;
  void SetUp() override {
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
    std::vector<float> tr = synthetic_data(128, 10, 1), te = synthetic_data(40, 10, 2);
    write_file(dir + "/train.npy", npy_bytes("<f4", "(128, 10)", tr.data(), tr.size() * 4));
    write_file(dir + "/test.npy", npy_bytes("<f4", "(40, 10)", te.data(), te.size() * 4));
    write_file(dir + "/ok.ini", "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir +
                                    "/test.npy\n[model]\nhidden = 8\nlatent = 2\n[train]\nbatch_size = 16\n"
                                    "epochs = 2\nthreads = 1\n");
  }
  void expect_error(const Result &r, int code, const std::string &needle) {
    EXPECT_EQ(r.code, code) << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << "missing '" << needle << "' in: " << r.out;
  }
};

TEST_F(Cli, HelpAndVersion) {
  Result r = run("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("usage: cuvae"), std::string::npos);
  r = run("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("cuvae " CUVAE_VERSION_STRING), std::string::npos) << r.out;
  r = run("train --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--resume RUN_DIR"), std::string::npos);
  r = run("eval --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("test_nelbo"), std::string::npos);
  r = run("help config");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("batch_size"), std::string::npos);
}

// docs/CONFIG.md is generated from `cuvae help config`; a schema change without regenerating it fails here.
TEST_F(Cli, ConfigDocMatchesSchema) {
  Result r = run("help config");
  ASSERT_EQ(r.code, 0);
  std::string doc = read_file(std::string(CUVAE_TEST_DATA) + "/../../docs/CONFIG.md");
  ASSERT_FALSE(doc.empty());
  size_t start = doc.find("```\n"), end = doc.rfind("```");
  ASSERT_NE(start, std::string::npos);
  EXPECT_EQ(doc.substr(start + 4, end - start - 4), r.out) << "run scripts/gen_config_doc.sh";
}

TEST_F(Cli, UsageErrors) {
  expect_error(run("frobnicate"), 2, "unknown command 'frobnicate'");
  expect_error(run("train"), 2, "needs a CONFIG");
  expect_error(run("train " + dir + "/ok.ini --bogus"), 2, "unknown option '--bogus'");
  expect_error(run("train " + dir + "/ok.ini --device tpu"), 2, "--device 'tpu'");
  expect_error(run("train " + dir + "/ok.ini --set"), 2, "--set needs a value");
  expect_error(run("train " + dir + "/ok.ini --set train.batch_size=abc"), 2, "batch_size");
  expect_error(run("train " + dir + "/ok.ini --set train.nope=1"), 2, "nope");
  expect_error(run("eval"), 2, "needs a CHECKPOINT");
  expect_error(run("train " + dir + "/ok.ini --progress fancy"), 2, "--progress 'fancy'");
  expect_error(run("train " + dir + "/ok.ini --set model.init=xavier"), 2, "init");
  expect_error(run("train " + dir + "/ok.ini --resume " + dir + "/a --out " + dir + "/b"), 2, "conflicts");
}

TEST_F(Cli, BadInputs) {
  expect_error(run("train " + dir + "/missing.ini"), 1, "missing.ini");
  write_file(dir + "/unknown.ini", "[train]\nbatchsize = 4\n");
  expect_error(run("train " + dir + "/unknown.ini"), 1, "batchsize");
  expect_error(run("train " + dir + "/ok.ini --set model.latent=0 --out " + dir + "/r0"), 2, "latent");
  expect_error(run("train " + dir + "/ok.ini --set train.batch_size=0 --out " + dir + "/r0"), 2, "batch_size");
  expect_error(run("train " + dir + "/ok.ini --set train.batch_size=1000 --out " + dir + "/r0"), 1,
               "larger than the training set");
  expect_error(run("train " + dir + "/ok.ini --set data.train_images=" + dir + "/nope.npy --out " + dir + "/r0"), 1,
               "nope.npy");
  expect_error(run("train " + dir + "/ok.ini --device cuda --out " + dir + "/r0"), 1, "CUDA");
  expect_error(run("eval " + dir + "/nothing.cuvae"), 1, "nothing.cuvae");
  write_file(dir + "/junk.cuvae", "this is not a checkpoint at all, just text................................");
  expect_error(run("eval " + dir + "/junk.cuvae"), 1, "junk.cuvae");
}

TEST_F(Cli, TrainEvalResume) {
  Result r = run("train " + dir + "/ok.ini --out " + dir + "/run --progress lines");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"test_nelbo\""), std::string::npos) << r.out;
  r = run("eval " + dir + "/run/checkpoint.cuvae");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"step\": 16"), std::string::npos) << r.out;
  // Same run again without --resume: refused, nothing overwritten.
  std::string before = read_file(dir + "/run/checkpoint.cuvae");
  expect_error(run("train " + dir + "/ok.ini --out " + dir + "/run"), 1, "--resume");
  EXPECT_EQ(read_file(dir + "/run/checkpoint.cuvae"), before);
  // Resume with more epochs, config taken from the run directory.
  r = run("train --resume " + dir + "/run --set train.epochs=3 --progress lines");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"step\": 24"), std::string::npos) << r.out;
  // A truncated checkpoint is refused by eval and by resume.
  std::string ck = read_file(dir + "/run/checkpoint.cuvae");
  write_file(dir + "/run/checkpoint.cuvae", ck.substr(0, ck.size() / 2));
  r = run("eval " + dir + "/run/checkpoint.cuvae");
  EXPECT_EQ(r.code, 1) << r.out;
  r = run("train --resume " + dir + "/run --set train.epochs=4");
  EXPECT_EQ(r.code, 1) << r.out;
}

}  // namespace
