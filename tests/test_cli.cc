// The cuvae program as a user meets it: help pages, exit codes, and one clear message for each kind of bad
// input (never a crash: a crash would show as a signal exit, which these tests reject).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <sstream>

#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/blas.h"
#include "test_util.h"

using namespace cuvae_test;

namespace {

Result run(const std::string &args) { return run_shell(std::string(CUVAE_BIN) + " " + args); }

struct Cli : ::testing::Test {
  std::string dir;
  void SetUp() override {
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
    write_file(dir + "/ok.ini", write_synthetic_sets(dir, 128, 40, 10) +
                                    "[model]\nhidden = 8\nlatent = 2\n[train]\nbatch_size = 16\n"
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

// An autoencoder's evaluation reports its squared error, not an ELBO, and refuses an IWAE estimate.
TEST_F(Cli, EvalOfAnAutoencoder) {
  Result r = run("train " + dir + "/ok.ini --set train.objective=ae --set train.epochs=1 --out " + dir + "/ae");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("eval " + dir + "/ae/checkpoint.cuvae --device cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"objective\": \"ae\", \"test_squared_error\": "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("nelbo"), std::string::npos) << r.out;
  r = run("eval " + dir + "/ae/checkpoint.cuvae --device cpu --iwae 5");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("autoencoder"), std::string::npos) << r.out;
}

// The conditional model's label flags: --label and --labels are checked against the model (one message each).
TEST_F(Cli, LabelFlags) {
  std::vector<uint8_t> lab(128), lab_test(40);
  for (size_t i = 0; i < lab.size(); i++) lab[i] = (uint8_t)(i % 3);
  for (size_t i = 0; i < lab_test.size(); i++) lab_test[i] = (uint8_t)(i % 3);
  write_file(dir + "/train_labels.npy", npy_bytes("|u1", "(128,)", lab.data(), lab.size()));
  write_file(dir + "/test_labels.npy", npy_bytes("|u1", "(40,)", lab_test.data(), lab_test.size()));
  const std::string cond = " --set data.train_labels=" + dir + "/train_labels.npy --set data.test_labels=" + dir +
                           "/test_labels.npy --set model.conditional=true --set model.classes=3 --set train.epochs=1";
  Result r = run("train " + dir + "/ok.ini" + cond + " --out " + dir + "/cvae");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("train " + dir + "/ok.ini --set train.epochs=1 --out " + dir + "/vae");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string cvae = dir + "/cvae/checkpoint.cuvae", vae = dir + "/vae/checkpoint.cuvae";

  r = run("sample " + cvae + " --device cpu --label 2 --n 4 --out " + dir + "/s2.png");
  EXPECT_EQ(r.code, 0) << r.out;
  r = run("sample " + cvae + " --device cpu --n 6 --out " + dir + "/rows.png");  // one row per class: 3 x 2
  EXPECT_EQ(r.code, 0) << r.out;
  r = run("sample " + cvae + " --device cpu --label 3 --out " + dir + "/bad.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--label 3 is outside the model's classes 0..2"), std::string::npos) << r.out;
  r = run("sample " + vae + " --device cpu --label 0 --out " + dir + "/bad.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("not conditional"), std::string::npos) << r.out;
  r = run("sample " + cvae + " --device cpu --label -1 --out " + dir + "/bad.png");
  EXPECT_EQ(r.code, 2) << r.out;

  // encode: a conditional model needs --labels, an unconditional one refuses them; a wrong count is named.
  r = run("encode " + cvae + " --device cpu --in " + dir + "/test.npy --out " + dir + "/m.npy");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--labels"), std::string::npos) << r.out;
  r = run("encode " + cvae + " --device cpu --in " + dir + "/test.npy --labels " + dir + "/test_labels.npy --out " +
          dir + "/m.npy");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"rows\": 40"), std::string::npos) << r.out;
  r = run("encode " + cvae + " --device cpu --in " + dir + "/test.npy --labels " + dir + "/train_labels.npy --out " +
          dir + "/m.npy");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("128 labels"), std::string::npos) << r.out;
  r = run("encode " + vae + " --device cpu --in " + dir + "/test.npy --labels " + dir + "/test_labels.npy --out " +
          dir + "/m.npy");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("not conditional"), std::string::npos) << r.out;
}

// OpenMP's idle threads: GOMP_SPINCOUNT = 1000 unless the user chose a wait policy (include/cuvae/blas.h); the
// banner of a run names what is in force.
TEST_F(Cli, OpenMpWaitDefaultsToShortSpinsAndRespectsTheUser) {
  const std::string train = "train " + dir + "/ok.ini --set train.max_steps=1 --progress lines --out ";
  Result r = run_shell("env -u CUVAE_BLAS_SELECTED -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY " + std::string(CUVAE_BIN) + " " + train + dir + "/r1");
  ASSERT_EQ(r.code, 0) << r.out;
  if (r.out.find("OpenMP") == std::string::npos) GTEST_SKIP() << "OpenBLAS is not the OpenMP build here";
  EXPECT_NE(r.out.find("OpenMP, spin " CUVAE_GOMP_SPINCOUNT), std::string::npos) << r.out;
  r = run_shell("env -u CUVAE_BLAS_SELECTED -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive " + std::string(CUVAE_BIN) + " " + train + dir + "/r2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("OpenMP, wait policy passive"), std::string::npos) << r.out;
  r = run_shell("env -u CUVAE_BLAS_SELECTED -u OMP_WAIT_POLICY GOMP_SPINCOUNT=77 " + std::string(CUVAE_BIN) + " " + train + dir + "/r3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("OpenMP, spin 77"), std::string::npos) << r.out;
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
  // Without a CUDA device (this machine, CI) --device cuda must refuse, saying so in plain words before the
  // runtime's own reason; with one it trains.
  if (cuvae_cuda_device_count(nullptr, 0) < 1)
    expect_error(run("train " + dir + "/ok.ini --device cuda --out " + dir + "/r0"), 1, "no CUDA device found");
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

// ---- image commands (src/cli/cmd_images.c) and the pictures of a training run ---------------------------------

// Width and height from a PNG's IHDR chunk; {0, 0} when the file is not a PNG.
std::pair<int, int> png_size(const std::string &path) {
  const std::string b = read_file(path);
  if (b.size() < 24 || b.compare(1, 3, "PNG") != 0 || b.compare(12, 4, "IHDR") != 0) return {0, 0};
  auto be32 = [&](size_t o) {
    return (int)(((unsigned char)b[o] << 24) | ((unsigned char)b[o + 1] << 16) | ((unsigned char)b[o + 2] << 8) |
                 (unsigned char)b[o + 3]);
  };
  return {be32(16), be32(20)};
}

// Two tiny trained runs shared by the tests below: 4 x 4 pictures (3-D .npy), labels 0..2; run z2 (Z = 2, labels)
// and run z3 (Z = 3, no labels). Tiles of 4 px are enlarged 14 times (56 px), so a grid of c x r tiles is
// (57 c + 1) x (57 r + 1) pixels.
struct CliImages : ::testing::Test {
  static std::string dir;
  static Result train_z2, train_z3;
  static void SetUpTestSuite() {
    dir = make_temp_dir();
    std::vector<float> tr = synthetic_data(128, 16, 1), te = synthetic_data(40, 16, 2);
    std::vector<int32_t> ltr(128), lte(40);
    for (int i = 0; i < 128; i++) ltr[i] = i % 3;
    for (int i = 0; i < 40; i++) lte[i] = i % 3;
    write_file(dir + "/train.npy", npy_bytes("<f4", "(128, 4, 4)", tr.data(), tr.size() * 4));
    write_file(dir + "/test.npy", npy_bytes("<f4", "(40, 4, 4)", te.data(), te.size() * 4));
    write_file(dir + "/train_labels.npy", npy_bytes("<i4", "(128,)", ltr.data(), ltr.size() * 4));
    write_file(dir + "/test_labels.npy", npy_bytes("<i4", "(40,)", lte.data(), lte.size() * 4));
    const std::string data = "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir +
                             "/test.npy\n";
    const std::string rest = "hidden = 8\n[train]\nbatch_size = 16\nepochs = 2\nthreads = 1\n";
    write_file(dir + "/z2.ini", data + "train_labels = " + dir + "/train_labels.npy\ntest_labels = " + dir +
                                    "/test_labels.npy\n[model]\nlatent = 2\n" + rest);
    write_file(dir + "/z3.ini", data + "[model]\nlatent = 3\n" + rest);
    // On the CPU, so that `cuvae sample --device cpu` can be compared byte for byte on any machine.
    train_z2 = run("train " + dir + "/z2.ini --out " + dir + "/z2 --progress lines --device cpu");
    train_z3 = run("train " + dir + "/z3.ini --out " + dir + "/z3 --progress lines --device cpu");
  }
  void SetUp() override {
    ASSERT_EQ(train_z2.code, 0) << train_z2.out;
    ASSERT_EQ(train_z3.code, 0) << train_z3.out;
  }
  static std::string ck(const char *run) { return dir + "/" + run + "/checkpoint.cuvae"; }
  // Runs a command that must write `out` (under dir) with the given size.
  void expect_png(const std::string &args, const std::string &out, int w, int h) {
    const Result r = run(args + " --out " + dir + "/" + out);
    ASSERT_EQ(r.code, 0) << args << "\n" << r.out;
    EXPECT_NE(r.out.find("\"width\": " + std::to_string(w) + ", \"height\": " + std::to_string(h)),
              std::string::npos)
        << r.out;
    EXPECT_EQ(png_size(dir + "/" + out), std::make_pair(w, h)) << args;
  }
  void expect_error(const Result &r, int code, const std::string &needle) {
    EXPECT_EQ(r.code, code) << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << "missing '" << needle << "' in: " << r.out;
  }
};
std::string CliImages::dir;
Result CliImages::train_z2, CliImages::train_z3;

TEST_F(CliImages, TrainingWritesSamplesReconstructionsAndLossCurve) {
  // 64 samples: 8 x 8 tiles; 32 reconstructions: 8 wide, 4 pairs of rows; the loss curve 720 x 450.
  EXPECT_EQ(png_size(dir + "/z2/samples.png"), std::make_pair(8 * 57 + 1, 8 * 57 + 1));
  EXPECT_EQ(png_size(dir + "/z2/recon.png"), std::make_pair(8 * 57 + 1, 8 * 57 + 1));
  EXPECT_EQ(png_size(dir + "/z2/loss.png"), std::make_pair(720, 450));
  // `cuvae sample` with the defaults redraws the run's last samples.png (same z, same decoder), byte for byte.
  const Result r = run("sample " + ck("z2") + " --out " + dir + "/again.png --device cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read_file(dir + "/again.png"), read_file(dir + "/z2/samples.png"));
  // Resuming keeps the earlier epochs in the loss curve and rewrites the pictures.
  const std::string before = read_file(dir + "/z3/loss.png");
  const Result res = run("train --resume " + dir + "/z3 --set train.epochs=3 --progress lines --device cpu");
  ASSERT_EQ(res.code, 0) << res.out;
  EXPECT_EQ(png_size(dir + "/z3/loss.png"), std::make_pair(720, 450));
  EXPECT_NE(read_file(dir + "/z3/loss.png"), before);
}

TEST_F(CliImages, EachCommandWritesAPngOfTheExpectedSize) {
  expect_png("sample " + ck("z2") + " --n 10 --seed 7", "s.png", 4 * 57 + 1, 3 * 57 + 1);
  expect_png("sample " + ck("z2") + " --n 1 --scale 1", "s1.png", 6, 6);
  expect_png("reconstruct " + ck("z2") + " --n 5", "r.png", 4 * 57 + 1, 4 * 57 + 1);  // 4 wide, 2 pairs
  expect_png("reconstruct " + ck("z3") + " --n 40 --split train --scale 2", "r2.png", 9 * 9 + 1, 10 * 9 + 1);
  expect_png("interpolate " + ck("z2") + " --pair 0,3 --steps 7", "i.png", 7 * 57 + 1, 57 + 1);
  expect_png("interpolate " + ck("z3") + " --pair 39,1 --steps 2 --spherical", "is.png", 2 * 57 + 1, 57 + 1);
  expect_png("traverse " + ck("z3") + " --index 2 --dims 2 --steps 5 --range 2.5", "t.png", 5 * 57 + 1,
             2 * 57 + 1);
  expect_png("traverse " + ck("z2"), "t2.png", 9 * 57 + 1, 2 * 57 + 1);  // default K = min(Z, 8) = 2, 9 steps
  expect_png("latent-plot " + ck("z2"), "l.png", 800, 640);
  expect_png("latent-plot " + ck("z3") + " --width 400 --height 300 --split train", "l3.png", 400, 300);
  expect_png("manifold " + ck("z2") + " --grid 5", "m.png", 5 * 57 + 1, 5 * 57 + 1);
  // What the JSON lines report about the data and the method.
  Result r = run("latent-plot " + ck("z2") + " --out " + dir + "/l.png");
  EXPECT_NE(r.out.find("\"labels\": true, \"axes\": \"mu\""), std::string::npos) << r.out;
  r = run("latent-plot " + ck("z3") + " --out " + dir + "/l.png");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("no labels; the points get one colour"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"axes\": \"pca\", \"explained\": ["), std::string::npos) << r.out;
  r = run("traverse " + ck("z3") + " --dims 3 --out " + dir + "/t.png");
  EXPECT_NE(r.out.find("\"dims\": ["), std::string::npos) << r.out;
  // The default output name, in the current directory.
  r = run("help sample");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--out FILE   the PNG to write (default samples.png)"), std::string::npos) << r.out;
}

TEST_F(CliImages, HelpForEveryCommand) {
  for (const char *c : {"sample", "reconstruct", "interpolate", "traverse", "latent-plot", "manifold"}) {
    Result r = run(std::string(c) + " --help");
    EXPECT_EQ(r.code, 0) << c;
    EXPECT_NE(r.out.find(std::string("usage: cuvae ") + c + " CHECKPOINT"), std::string::npos) << r.out;
    r = run("--help");
    EXPECT_NE(r.out.find(std::string("  ") + c + " CHECKPOINT"), std::string::npos) << r.out;
  }
}

TEST_F(CliImages, BadArgumentsExit2WithAMessage) {
  const std::string z2 = ck("z2"), z3 = ck("z3"), o = " --out " + dir + "/bad.png";
  expect_error(run("sample"), 2, "sample needs a CHECKPOINT");
  expect_error(run("sample " + z2 + " " + z3), 2, "takes one CHECKPOINT");
  expect_error(run("sample " + z2 + " --n 0" + o), 2, "--n '0': expected an integer from 1 to 10000");
  expect_error(run("sample " + z2 + " --n -3" + o), 2, "--n '-3'");
  expect_error(run("sample " + z2 + " --n lots" + o), 2, "--n 'lots'");
  expect_error(run("sample " + z2 + " --n"), 2, "--n needs a value");
  expect_error(run("sample " + z2 + " --seed x" + o), 2, "--seed 'x'");
  expect_error(run("sample " + z2 + " --steps 3" + o), 2, "unknown option '--steps' for sample");
  expect_error(run("sample " + z2 + " --device tpu" + o), 2, "--device 'tpu'");
  expect_error(run("sample " + z2 + " --out="), 2, "--out needs a file name");
  expect_error(run("reconstruct " + z2 + " --n 41" + o), 2, "--n 41 is more than the 40 examples of the test split");
  expect_error(run("reconstruct " + z2 + " --split valid" + o), 2, "--split 'valid'");
  expect_error(run("interpolate " + z2 + " --steps 1" + o), 2, "--steps '1': expected an integer from 2");
  expect_error(run("interpolate " + z2 + " --pair 3" + o), 2, "--pair '3': expected two example indices");
  expect_error(run("interpolate " + z2 + " --pair 0,40" + o), 2, "--pair 40 is out of range: the test split has 40");
  expect_error(run("interpolate " + z2 + " --pair -1,2" + o), 2, "--pair (first index) '-1'");
  expect_error(run("traverse " + z2 + " --dims 0" + o), 2, "--dims '0'");
  expect_error(run("traverse " + z2 + " --dims 3" + o), 2, "--dims 3 is more than the model's 2 latent dimensions");
  expect_error(run("traverse " + z2 + " --index 40" + o), 2, "--index 40 is out of range");
  expect_error(run("traverse " + z2 + " --index 1000 --split train" + o), 2, "the train split has 128 examples");
  expect_error(run("traverse " + z2 + " --range -1" + o), 2, "--range '-1'");
  expect_error(run("traverse " + z2 + " --steps 1" + o), 2, "--steps '1'");
  expect_error(run("manifold " + z3 + o), 2, "manifold needs a model with a 2-D latent space");
  expect_error(run("manifold " + z3 + o), 2, "Z = 3");
  expect_error(run("manifold " + z2 + " --grid 1" + o), 2, "--grid '1'");
  expect_error(run("latent-plot " + z2 + " --width 10" + o), 2, "--width '10'");
  EXPECT_TRUE(read_file(dir + "/bad.png").empty());
}

TEST_F(CliImages, FailuresExit1WithAMessage) {
  expect_error(run("sample " + dir + "/none.cuvae --out " + dir + "/x.png"), 1, "none.cuvae");
  write_file(dir + "/junk.cuvae", "not a checkpoint, only text, long enough to have a header......................");
  expect_error(run("latent-plot " + dir + "/junk.cuvae --out " + dir + "/x.png"), 1, "junk.cuvae");
  expect_error(run("sample " + ck("z2") + " --out " + dir + "/no/such/dir/x.png"), 1,
               "cannot write " + dir + "/no/such/dir/x.png");
  EXPECT_TRUE(read_file(dir + "/x.png").empty());
  // --device cuda where it cannot run (a build without CUDA, or no device): a failure naming CUDA, not a crash.
  const Result r = run("sample " + ck("z2") + " --device cuda --out " + dir + "/c.png");
  if (r.code != 0) {
    expect_error(r, 1, "CUDA");
    EXPECT_TRUE(read_file(dir + "/c.png").empty());
  }
}

}  // namespace

// ---- export / import / encode / decode (src/cli/cmd_export.c, docs/EXPORT.md) ------------------------------------

#include <dirent.h>
#include <sys/stat.h>

#include "cuvae/data.h"
#include "cuvae/error.h"

namespace {

// No temporary file (NAME.tmp.PID) left behind in dir.
bool no_temp_files(const std::string &dir) {
  DIR *d = opendir(dir.c_str());
  if (!d) return false;
  bool clean = true;
  while (struct dirent *e = readdir(d))
    if (std::string(e->d_name).find(".tmp.") != std::string::npos) clean = false;
  closedir(d);
  return clean;
}

bool exists_file(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

}  // namespace

TEST_F(Cli, ExportCommandsHelpAndUsageErrors) {
  Result r = run("--help");
  for (const char *c : {"export CHECKPOINT", "import SAFETENSORS", "encode CHECKPOINT", "decode CHECKPOINT"})
    EXPECT_NE(r.out.find(c), std::string::npos) << c << " missing in: " << r.out;
  for (const char *c : {"export", "import", "encode", "decode"}) {
    r = run(std::string(c) + " --help");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find(std::string("usage: cuvae ") + c), std::string::npos) << r.out;
    r = run(std::string("help ") + c);
    EXPECT_EQ(r.code, 0) << r.out;
  }
  const std::string ck = dir + "/x.cuvae";
  expect_error(run("export"), 2, "export needs a CHECKPOINT");
  expect_error(run("export " + ck), 2, "export needs --out");
  expect_error(run("export " + ck + " --out"), 2, "--out needs a value");
  expect_error(run("export " + ck + " --out " + dir + "/m.st --format onnx"), 2, "--format 'onnx'");
  expect_error(run("export " + ck + " --out " + dir + "/m.st --bogus"), 2, "unknown option '--bogus' for export");
  expect_error(run("export " + ck + " " + ck + " --out " + dir + "/m.st"), 2, "export takes one CHECKPOINT");
  expect_error(run("export " + ck + " --in a.npy --out " + dir + "/m.st"), 2, "unknown option '--in'");
  expect_error(run("import"), 2, "import needs a SAFETENSORS file");
  expect_error(run("import " + dir + "/m.safetensors"), 2, "import needs --out");
  expect_error(run("import " + dir + "/m.safetensors --device cpu --out x"), 2, "unknown option '--device'");
  expect_error(run("encode " + ck + " --out " + dir + "/o.npy"), 2, "encode needs --in");
  expect_error(run("encode " + ck + " --in " + dir + "/test.npy"), 2, "encode needs --out");
  expect_error(run("encode " + ck + " --in " + dir + "/test.npy --out o.npy --device tpu"), 2, "--device 'tpu'");
  expect_error(run("decode --in z.npy --out o.npy"), 2, "decode needs a CHECKPOINT");
  expect_error(run("decode " + ck + " --in z.npy --out o.npy --format npy"), 2, "unknown option '--format'");
}

TEST_F(Cli, ExportImportEncodeDecode) {
  Result r = run("train " + dir + "/ok.ini --out " + dir + "/run --progress lines");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string ck = dir + "/run/checkpoint.cuvae";

  // export -> import: the imported checkpoint evaluates to the same loss (step 0).
  r = run("export " + ck + " --out " + dir + "/m.safetensors");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"format\": \"safetensors\""), std::string::npos) << r.out;
  r = run("import " + dir + "/m.safetensors --out " + dir + "/imported.cuvae");
  ASSERT_EQ(r.code, 0) << r.out;
  Result a = run("eval " + ck + " --device cpu"), b = run("eval " + dir + "/imported.cuvae --device cpu");
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_EQ(a.out.substr(a.out.find("\"test_nelbo\"")), b.out.substr(b.out.find("\"test_nelbo\"")));
  EXPECT_NE(b.out.find("\"step\": 0"), std::string::npos) << b.out;
  r = run("export " + ck + " --format npy --out " + dir + "/npy");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(read_file(dir + "/npy/encoder_head.weight.npy").empty());
  EXPECT_FALSE(read_file(dir + "/npy/metadata.json").empty());

  // encode: [40, 2Z] = [40, 4]; decode: [5, D] = [5, 10], Bernoulli means in (0, 1).
  r = run("encode " + ck + " --in " + dir + "/test.npy --out " + dir + "/mulv.npy --device cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"rows\": 40, \"cols\": 4, \"device\": \"cpu\""), std::string::npos) << r.out;
  cuvae_array arr;
  ASSERT_EQ(cuvae_npy_read((dir + "/mulv.npy").c_str(), &arr), 0) << cuvae_last_error();
  EXPECT_EQ(arr.ndim, 2);
  EXPECT_EQ(arr.shape[0], 40u);
  EXPECT_EQ(arr.shape[1], 4u);
  cuvae_array_free(&arr);
  std::vector<float> z = {0.f, 0.f, 1.f, -1.f, 2.f, 0.5f, -3.f, 0.25f, 0.1f, 0.2f};
  write_file(dir + "/z.npy", npy_bytes("<f4", "(5, 2)", z.data(), z.size() * 4));
  r = run("decode " + ck + " --in " + dir + "/z.npy --out " + dir + "/mean.npy --device cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_EQ(cuvae_npy_read((dir + "/mean.npy").c_str(), &arr), 0) << cuvae_last_error();
  EXPECT_EQ(arr.ndim, 2);
  EXPECT_EQ(arr.shape[0], 5u);
  EXPECT_EQ(arr.shape[1], 10u);
  for (size_t i = 0; i < arr.count; i++) {
    const float v = ((const float *)arr.data)[i];
    EXPECT_TRUE(v > 0.0f && v < 1.0f) << v;
  }
  cuvae_array_free(&arr);
  // The same latent vectors decode to the same means from the imported checkpoint.
  r = run("decode " + dir + "/imported.cuvae --in " + dir + "/z.npy --out " + dir + "/mean2.npy --device cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read_file(dir + "/mean.npy"), read_file(dir + "/mean2.npy"));
  EXPECT_TRUE(no_temp_files(dir));
}

// --weights (src/cli/main.c, src/io/saved_model.c): a run with [train] ema > 0 evaluates and exports its EMA by
// default (auto) and on --weights ema, its trained weights on --weights raw; export -> import carries the choice.
// Without an EMA, --weights ema is refused; a bad value is a usage error.
TEST_F(Cli, WeightsFlagChoosesTheEmaOrTheTrainedWeights) {
  Result r = run("train " + dir + "/ok.ini --out " + dir + "/ema --set train.ema=0.5 --progress lines");
  ASSERT_EQ(r.code, 0) << r.out;
  auto nelbo = [](const Result &e) { return e.out.substr(e.out.find("\"test_nelbo\"")); };
  const Result a = run("eval " + dir + "/ema --device cpu"), e = run("eval " + dir + "/ema --weights ema --device cpu"),
               w = run("eval " + dir + "/ema --device cpu --weights raw");
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(e.code, 0) << e.out;
  ASSERT_EQ(w.code, 0) << w.out;
  EXPECT_EQ(nelbo(a), nelbo(e));
  EXPECT_NE(nelbo(a), nelbo(w));  // 16 steps at decay 0.5: the average is not the last weights
  for (const char *which : {"auto", "raw"}) {
    r = run("export " + dir + "/ema --weights " + which + " --out " + dir + "/" + which + ".safetensors");
    ASSERT_EQ(r.code, 0) << r.out;
    r = run("import " + dir + "/" + which + ".safetensors --out " + dir + "/" + which + ".cuvae");
    ASSERT_EQ(r.code, 0) << r.out;
    const Result i = run("eval " + dir + "/" + which + ".cuvae --device cpu");
    ASSERT_EQ(i.code, 0) << i.out;
    const std::string head = read_file(dir + "/" + which + ".safetensors").substr(0, 4096);
    EXPECT_NE(head.find(std::string("\"weights\":\"") + (std::string(which) == "raw" ? "trained" : "ema") + "\""),
              std::string::npos) << which;
    EXPECT_EQ(nelbo(i), nelbo(std::string(which) == "raw" ? w : a)) << which;
  }
  r = run("train " + dir + "/ok.ini --out " + dir + "/plain --progress lines");
  ASSERT_EQ(r.code, 0) << r.out;
  expect_error(run("eval " + dir + "/plain --weights ema"), 1, "holds no EMA of the weights");
  expect_error(run("eval " + dir + "/ema --weights best"), 2, "--weights: 'best' is not one of auto, ema, raw");
  expect_error(run("eval " + dir + "/ema --weights"), 2, "--weights needs a value");
}

TEST_F(Cli, ExportCommandFailuresWriteNothing) {
  Result r = run("train " + dir + "/ok.ini --out " + dir + "/run --progress lines");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string ck = dir + "/run/checkpoint.cuvae", out = dir + "/out.npy";
  std::vector<float> w(4 * 7, 0.5f), z3(5 * 3, 0.1f), z1(2, 0.1f);
  write_file(dir + "/wrong_d.npy", npy_bytes("<f4", "(4, 7)", w.data(), w.size() * 4));
  write_file(dir + "/z3.npy", npy_bytes("<f4", "(5, 3)", z3.data(), z3.size() * 4));
  write_file(dir + "/z1.npy", npy_bytes("<f4", "(2,)", z1.data(), z1.size() * 4));
  std::vector<unsigned char> zu(10, 1);
  write_file(dir + "/zu8.npy", npy_bytes("|u1", "(5, 2)", zu.data(), zu.size()));

  expect_error(run("export " + dir + "/nothing.cuvae --out " + dir + "/m.safetensors"), 1, "nothing.cuvae");
  EXPECT_FALSE(exists_file(dir + "/m.safetensors"));
  expect_error(run("export " + ck + " --out " + dir + "/no/such/dir/m.safetensors"), 1, "no/such/dir/m.safetensors");
  write_file(dir + "/junk.safetensors", "definitely not a safetensors file");
  expect_error(run("import " + dir + "/junk.safetensors --out " + dir + "/j.cuvae"), 1, "bad header length");
  EXPECT_FALSE(exists_file(dir + "/j.cuvae"));
  expect_error(run("encode " + ck + " --in " + dir + "/wrong_d.npy --out " + out + " --device cpu"), 1,
               "has 7 features per row, but the model in " + ck + " takes D = 10");
  expect_error(run("encode " + ck + " --in " + dir + "/missing.npy --out " + out + " --device cpu"), 1,
               "missing.npy");
  expect_error(run("decode " + ck + " --in " + dir + "/z3.npy --out " + out + " --device cpu"), 1,
               "has 3 columns, but the model in " + ck + " has latent size Z = 2");
  expect_error(run("decode " + ck + " --in " + dir + "/z1.npy --out " + out + " --device cpu"), 1, "2-D array");
  expect_error(run("decode " + ck + " --in " + dir + "/zu8.npy --out " + out + " --device cpu"), 1, "must be floating point");
  EXPECT_FALSE(exists_file(out));
  // A failing run leaves an existing output as it was.
  write_file(out, "previous contents");
  expect_error(run("decode " + ck + " --in " + dir + "/z3.npy --out " + out + " --device cpu"), 1, "latent size");
  EXPECT_EQ(read_file(out), "previous contents");
  EXPECT_TRUE(no_temp_files(dir));
}

// Without a GPU, --device auto says in plain words that there is none (the runtime's reason follows it) and trains
// on the CPU.
TEST_F(Cli, AutoDeviceWithoutAGpuSaysSo) {
  if (cuvae_cuda_device_count(nullptr, 0) > 0) GTEST_SKIP() << "this machine has a CUDA device";
  Result r = run("train " + dir + "/ok.ini --set train.epochs=1 --device auto --out " + dir + "/auto");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--device auto: no CUDA device found"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("running on the CPU"), std::string::npos) << r.out;
}

// cuvae verify: usage errors exit 2; without a CUDA device it says so and exits 1, with one it compares the backends
// and prints its JSON line (the comparison itself: tests/cuda/test_backend_verify.cc).
TEST_F(Cli, VerifyNeedsAConfigAndADevice) {
  expect_error(run("verify"), 2, "verify needs a CONFIG");
  expect_error(run("verify " + dir + "/ok.ini --steps 0"), 2, "--steps '0': expected an integer from 1 to 100000");
  expect_error(run("verify " + dir + "/ok.ini --bogus"), 2, "unknown option '--bogus' for verify");
  expect_error(run("verify " + dir + "/ok.ini --set train.nope=1"), 2, "nope");
  expect_error(run("verify " + dir + "/missing.ini"), 1, "missing.ini");
  Result r = run("verify --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("Exit status: 0 the backends agree"), std::string::npos) << r.out;
  r = run("verify " + dir + "/ok.ini --steps 2");
  if (cuvae_cuda_device_count(nullptr, 0) > 0) {
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("\"agree\": true"), std::string::npos) << r.out;
  } else {
    expect_error(r, 1, "cuvae verify needs a CUDA device to compare with the CPU");
  }
}

// Every command that reads a CHECKPOINT also takes the run directory that holds it.
TEST_F(Cli, RunDirectoryStandsForItsCheckpoint) {
  Result r = run("train " + dir + "/ok.ini --set train.epochs=1 --out " + dir + "/run");
  ASSERT_EQ(r.code, 0) << r.out;
  const Result by_file = run("eval " + dir + "/run/checkpoint.cuvae --device cpu");
  ASSERT_EQ(by_file.code, 0) << by_file.out;
  for (const std::string &arg : {dir + "/run", dir + "/run/"}) {
    const Result by_dir = run("eval " + arg + " --device cpu");
    ASSERT_EQ(by_dir.code, 0) << by_dir.out;
    // the same numbers: everything after the "checkpoint" field (which echoes the argument) is identical
    EXPECT_EQ(by_dir.out.substr(by_dir.out.find("\"step\"")), by_file.out.substr(by_file.out.find("\"step\"")));
  }
  r = run("sample " + dir + "/run --out " + dir + "/s.png --n 4 --device cpu");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(read_file(dir + "/s.png").empty());
  r = run("export " + dir + "/run --format safetensors --out " + dir + "/m.safetensors");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(read_file(dir + "/m.safetensors").empty());
  // A directory without a checkpoint: one message naming it.
  ASSERT_EQ(system(("mkdir -p " + dir + "/empty").c_str()), 0);
  expect_error(run("eval " + dir + "/empty"), 1, "is a directory without a checkpoint.cuvae");
}

// One BLAS in the process: a running training maps exactly one OpenBLAS (the OpenMP build it links), and no
// second libblas/liblapack that would bring another copy and another thread pool. The maps are read from /proc
// once the run has printed its banner (after the program's one re-exec and every library load).
TEST_F(Cli, ARunningTrainingMapsOneBlas) {
  const std::string log = dir + "/maps.log";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!freopen(log.c_str(), "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(127);
    execl(CUVAE_BIN, CUVAE_BIN, "train", (dir + "/ok.ini").c_str(), "--set", "train.epochs=100000", "--out",
          (dir + "/long").c_str(), "--progress", "lines", "--device", "cpu", (char *)nullptr);
    _exit(127);
  }
  std::string maps;
  for (int i = 0; i < 600 && maps.empty(); i++) {  // up to a minute (the ASan build starts slowly)
    if (read_file(log).find("| model ") != std::string::npos) maps = read_file("/proc/" + std::to_string(pid) + "/maps");
    if (maps.empty()) usleep(100 * 1000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  ASSERT_FALSE(maps.empty()) << "the run never printed its banner: " << read_file(log);
  std::set<std::string> blas;  // each mapped file once, however many segments it has
  std::istringstream lines(maps);
  for (std::string line; std::getline(lines, line);) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash), base = path.substr(path.rfind('/') + 1);
    // OpenBLAS itself, or the reference-named libblas / liblapack (cuBLAS is the GPU's and does not count)
    if (base.rfind("libopenblas", 0) == 0 || base.rfind("libblas", 0) == 0 || base.rfind("liblapack", 0) == 0)
      blas.insert(path);
  }
  ASSERT_EQ(blas.size(), 1u) << maps;
  EXPECT_NE(blas.begin()->find("libopenblas"), std::string::npos) << *blas.begin();
}

// A device that is not one of the choices: exit 2 and the same message from every command that takes --device.
TEST_F(Cli, BadDeviceIsAUsageErrorEverywhere) {
  Result r = run("train " + dir + "/ok.ini --set train.epochs=1 --out " + dir + "/run");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string want = "--device 'gpu': expected auto, cpu or cuda";
  expect_error(run("train " + dir + "/ok.ini --device gpu --out " + dir + "/r1"), 2, want);
  expect_error(run("eval " + dir + "/run --device gpu"), 2, want);
  expect_error(run("sample " + dir + "/run --device gpu --out " + dir + "/s.png"), 2, want);
  expect_error(run("encode " + dir + "/run --in " + dir + "/test.npy --out " + dir + "/e.npy --device gpu"), 2, want);
}
