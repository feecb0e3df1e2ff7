// The training loop end to end on small synthetic data: run directory, metrics, resume determinism (bit for
// bit, metrics.jsonl included), resume from a version-1 checkpoint, divergence detection that leaves the last
// checkpoint intact, and refusals of bad runs. Crashes and signals: tests/test_crash.cc.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "cuvae/checkpoint.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/train.h"
#include "test_util.h"

using namespace cuvae_test;

namespace {

struct TrainFixture : ::testing::Test {
  std::string dir;
  void SetUp() override {
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
    // 256 train and 64 test examples of 16 features: 8 steps per epoch at batch 32.
    std::vector<float> tr = synthetic_data(256, 16, 1), te = synthetic_data(64, 16, 2);
    write_file(dir + "/train.npy", npy_bytes("<f4", "(256, 16)", tr.data(), tr.size() * 4));
    write_file(dir + "/test.npy", npy_bytes("<f4", "(64, 16)", te.data(), te.size() * 4));
  }
  // A config for the synthetic data. `extra` lines ("key = value") replace or add [train] keys; `model` is the
  // whole [model] section. A config that fails to load fails the test at once (and trains nothing).
  cuvae_config config(const std::string &extra = "", const std::string &model = "hidden = 12,10\nlatent = 3\n",
                      const std::string &data = "") {
    std::map<std::string, std::string> train = {{"batch_size", "32"}, {"eval_batch_size", "50"}, {"epochs", "3"},
                                                {"log_every", "1"},   {"seed", "7"},             {"threads", "1"}};
    size_t start = 0, nl;
    while ((nl = extra.find('\n', start)) != std::string::npos) {
      std::string line = extra.substr(start, nl - start);
      size_t eq = line.find(" = ");
      train[line.substr(0, eq)] = line.substr(eq + 3);
      start = nl + 1;
    }
    std::string ini = "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir +
                      "/test.npy\n" + data + "[model]\n" + model + "[train]\n";
    for (const auto &kv : train) ini += kv.first + " = " + kv.second + "\n";
    write_file(dir + "/c.ini", ini);
    cuvae_config c;
    cuvae_config_defaults(&c);
    config_ok = cuvae_config_load_file(&c, (dir + "/c.ini").c_str()) == 0 && cuvae_config_finalize(&c) == 0;
    if (!config_ok) ADD_FAILURE() << cuvae_last_error();
    return c;
  }
  bool config_ok = false;
  int train(const cuvae_config &c, const std::string &run, bool resume, cuvae_train_summary *s) {
    if (!config_ok) return -2;
    FILE *log = fopen((dir + "/log.txt").c_str(), "a");
    cuvae_train_opts o = {run.c_str(), resume ? 1 : 0, "cpu", CUVAE_PROGRESS_LINES, log};
    int rc = cuvae_train(&c, &o, s);
    fclose(log);
    return rc;
  }
};

// metrics.jsonl rows without the wall-clock fields samples_per_s and seconds.
std::vector<std::string> metrics_rows(const std::string &path) {
  std::vector<std::string> out;
  for (std::string l : split_lines(read_file(path))) {
    const size_t a = l.find("\"samples_per_s\": "), b = l.find("\"complete\": ");
    if (a != std::string::npos && b != std::string::npos) l.erase(a, b - a);
    out.push_back(l);
  }
  return out;
}

TEST_F(TrainFixture, WritesRunDirectoryAndLossDecreases) {
  cuvae_config c = config();
  cuvae_train_summary s;
  ASSERT_EQ(train(c, dir + "/run", false, &s), 0) << cuvae_last_error();
  EXPECT_EQ(s.step, 24);
  EXPECT_EQ(s.epochs_completed, 3);
  std::vector<std::string> m = split_lines(read_file(dir + "/run/metrics.jsonl"));
  ASSERT_EQ(m.size(), 3u);
  for (const char *key : {"\"epoch\"", "\"step\"", "\"train_nelbo\"", "\"test_nelbo\"", "\"recon\"", "\"kl\"",
                          "\"samples_per_s\"", "\"seconds\""})
    EXPECT_NE(m[0].find(key), std::string::npos) << key;
  EXPECT_EQ(split_lines(read_file(dir + "/run/steps.jsonl")).size(), 24u);
  // The effective config reloads to the same values.
  cuvae_config again;
  cuvae_config_defaults(&again);
  ASSERT_EQ(cuvae_config_load_file(&again, (dir + "/run/config.ini").c_str()), 0) << cuvae_last_error();
  EXPECT_EQ(again.batch_size, 32);
  EXPECT_EQ(again.seed, 7u);
  // Training lowers the loss: first-step loss vs the test loss after 3 epochs (16 features, so the initial
  // negative ELBO is ~16 * log 2 + KL ~ 11+ nats; Adam at lr 1e-3 must have made progress in 24 steps).
  std::string first = split_lines(read_file(dir + "/run/steps.jsonl"))[0];
  double first_loss = atof(first.c_str() + first.find("\"nelbo\": ") + 9);
  EXPECT_LT(s.test.nelbo, first_loss);
  cuvae_checkpoint ck;
  ASSERT_EQ(cuvae_checkpoint_load((dir + "/run/checkpoint.cuvae").c_str(), &ck), 0) << cuvae_last_error();
  EXPECT_EQ(ck.step, 24);
  cuvae_checkpoint_free(&ck);
}

// Interrupting after 5 steps (mid-epoch) and resuming to 20 gives the same per-step losses and the same
// final parameters, bit for bit, as one uninterrupted run of 20 steps.
TEST_F(TrainFixture, ResumeIsBitIdentical) {
  cuvae_train_summary s;
  ASSERT_EQ(train(config("max_steps = 20\n"), dir + "/whole", false, &s), 0) << cuvae_last_error();
  ASSERT_EQ(train(config("max_steps = 5\n"), dir + "/split", false, &s), 0) << cuvae_last_error();
  ASSERT_EQ(s.step, 5);
  ASSERT_EQ(train(config("max_steps = 20\n"), dir + "/split", true, &s), 0) << cuvae_last_error();
  ASSERT_EQ(s.step, 20);
  EXPECT_EQ(read_file(dir + "/whole/steps.jsonl"), read_file(dir + "/split/steps.jsonl"));
  // The first run's "complete": false row of step 5 was cut on resume; epoch 1's row covers all its 8 steps.
  std::vector<std::string> whole = metrics_rows(dir + "/whole/metrics.jsonl");
  EXPECT_EQ(whole.size(), 3u);  // steps 8, 16 and 20 (the last partial)
  EXPECT_EQ(metrics_rows(dir + "/split/metrics.jsonl"), whole);
  cuvae_checkpoint a, b;
  ASSERT_EQ(cuvae_checkpoint_load((dir + "/whole/checkpoint.cuvae").c_str(), &a), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_checkpoint_load((dir + "/split/checkpoint.cuvae").c_str(), &b), 0) << cuvae_last_error();
  ASSERT_EQ(a.n_params, b.n_params);
  EXPECT_EQ(memcmp(a.params, b.params, a.n_params * 4), 0);
  EXPECT_EQ(memcmp(a.adam_m, b.adam_m, a.n_params * 4), 0);
  EXPECT_EQ(memcmp(a.adam_v, b.adam_v, a.n_params * 4), 0);
  EXPECT_EQ(a.rng_offset, b.rng_offset);
  cuvae_checkpoint_free(&a);
  cuvae_checkpoint_free(&b);
}

// The training features of docs/MATH.md (7.3)-(7.5) together (cosine schedule with warm-up, EMA, z-score skipping
// with a short window so that steps are skipped): interrupted mid-epoch and resumed, the run equals the
// uninterrupted one bit for bit (steps.jsonl with each step's lr and skip flag, metrics.jsonl, parameters, Adam's
// moments, the EMA and the skip state).
TEST_F(TrainFixture, ResumeWithScheduleEmaAndSkippingIsBitIdentical) {
  const std::string keys = "lr_schedule = cosine\nlr_warmup_steps = 3\nlr_min = 1e-4\nema = 0.9\nskip_zscore = 0.5\n"
                           "skip_window = 3\nskip_limit = 100\n";
  cuvae_train_summary s;
  ASSERT_EQ(train(config(keys + "max_steps = 20\n"), dir + "/whole", false, &s), 0) << cuvae_last_error();
  ASSERT_EQ(train(config(keys + "max_steps = 11\n"), dir + "/split", false, &s), 0) << cuvae_last_error();
  ASSERT_EQ(train(config(keys + "max_steps = 20\n"), dir + "/split", true, &s), 0) << cuvae_last_error();
  const std::string steps = read_file(dir + "/whole/steps.jsonl");
  EXPECT_EQ(steps, read_file(dir + "/split/steps.jsonl"));
  EXPECT_NE(steps.find("\"skipped\": 1"), std::string::npos);  // z = 0.5 over 3 norms skips some steps
  EXPECT_NE(steps.find("\"skipped\": 0"), std::string::npos);
  // Warm-up: step 1's rate is lr / 3 (lr = 1e-3), rounded once to float.
  EXPECT_NE(steps.find("\"lr\": " + std::string([] {
              char b[32];
              snprintf(b, sizeof b, "%.9g", (double)(float)((double)1e-3f / 3));  // lr: a float key
              return std::string(b);
            }())),
            std::string::npos);
  EXPECT_EQ(metrics_rows(dir + "/split/metrics.jsonl"), metrics_rows(dir + "/whole/metrics.jsonl"));
  cuvae_checkpoint a, b;
  ASSERT_EQ(cuvae_checkpoint_load((dir + "/whole/checkpoint.cuvae").c_str(), &a), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_checkpoint_load((dir + "/split/checkpoint.cuvae").c_str(), &b), 0) << cuvae_last_error();
  ASSERT_NE(a.ema, nullptr);
  ASSERT_NE(b.ema, nullptr);
  EXPECT_EQ(memcmp(a.params, b.params, a.n_params * 4), 0);
  EXPECT_EQ(memcmp(a.adam_m, b.adam_m, a.n_params * 4), 0);
  EXPECT_EQ(memcmp(a.ema, b.ema, a.n_params * 4), 0);
  EXPECT_NE(memcmp(a.ema, a.params, a.n_params * 4), 0);  // the EMA is not the weights
  EXPECT_GT(a.skip.skipped, 0);
  EXPECT_EQ(a.skip.skipped, b.skip.skipped);
  ASSERT_EQ(a.skip.window_len, 3u);
  EXPECT_EQ(memcmp(a.skip.window, b.skip.window, 3 * 4), 0);
  cuvae_checkpoint_free(&a);
  cuvae_checkpoint_free(&b);
}

// [data] validation holds examples out (fewer steps per epoch), val_nelbo and ema_test_nelbo are in every row,
// best.cuvae is the best epoch's checkpoint, and early_stop = 1 with a rate too large to improve stops the run.
TEST_F(TrainFixture, ValidationKeepsTheBestCheckpointAndStopsEarly) {
  cuvae_train_summary s;
  ASSERT_EQ(train(config("ema = 0.5\nepochs = 4\n", "hidden = 12,10\nlatent = 3\n", "validation = 64\n"),
                  dir + "/val", false, &s), 0) << cuvae_last_error();
  EXPECT_EQ(s.steps_per_epoch, 6);  // (256 - 64) / 32
  const std::vector<std::string> rows = split_lines(read_file(dir + "/val/metrics.jsonl"));
  ASSERT_EQ(rows.size(), 4u);
  double best = INFINITY;
  int best_epoch = 0;
  for (size_t i = 0; i < rows.size(); i++) {
    for (const char *key : {"\"val_nelbo\": ", "\"ema_test_nelbo\": ", "\"ema_val_nelbo\": ", "\"lr\": ",
                            "\"active_units\": ", "\"skipped\": 0"})
      EXPECT_NE(rows[i].find(key), std::string::npos) << key;
    const double v = atof(rows[i].c_str() + rows[i].find("\"val_nelbo\": ") + 13);
    if (v < best) best = v, best_epoch = (int)i + 1;
  }
  cuvae_checkpoint ck;
  ASSERT_EQ(cuvae_checkpoint_load((dir + "/val/best.cuvae").c_str(), &ck), 0) << cuvae_last_error();
  EXPECT_EQ(ck.step, 6 * best_epoch);
  EXPECT_EQ(ck.progress.best_epoch, best_epoch);
  EXPECT_NEAR(ck.progress.best_val_nelbo, best, 1e-6 * std::fabs(best));  // the row holds it to 6 decimals
  cuvae_checkpoint_free(&ck);
  // lr = 0.5 makes the validation NELBO worse after the first epoch: early_stop = 1 ends the run at epoch 2.
  ASSERT_EQ(train(config("lr = 0.5\nepochs = 6\nearly_stop = 1\n", "hidden = 12,10\nlatent = 3\n",
                         "validation = 64\n"),
                  dir + "/stop", false, &s), 0) << cuvae_last_error();
  EXPECT_TRUE(s.early_stopped);
  EXPECT_LT(s.epochs_completed, 6);
}

// [data] validation that leaves nothing to train on is refused with the counts, and nothing is written.
TEST_F(TrainFixture, ValidationLargerThanTheTrainingSetIsRefused) {
  cuvae_train_summary s;
  EXPECT_EQ(train(config("", "hidden = 12,10\nlatent = 3\n", "validation = 256\n"), dir + "/all", false, &s), -1);
  EXPECT_STREQ(cuvae_last_error(), "[data] validation = 256 leaves nothing of the 256 training examples to train on");
  struct stat st;
  EXPECT_NE(0, stat((dir + "/all").c_str(), &st));
}

// A checkpoint of format version 1 (no record of the epoch in progress) still resumes: the training state is exact,
// the logs are kept as they are (a note says so), and the resumed epoch's row averages only the steps after it.
TEST_F(TrainFixture, ResumeFromVersion1CheckpointKeepsTheLogs) {
  cuvae_train_summary s;
  ASSERT_EQ(train(config("max_steps = 20\n"), dir + "/whole", false, &s), 0) << cuvae_last_error();
  ASSERT_EQ(train(config("max_steps = 5\n"), dir + "/split", false, &s), 0) << cuvae_last_error();
  // Rewrite the checkpoint as version 1: drop the 72-byte progress block and the 88-byte state block (format 3) after
  // the config, fix lengths and CRC (this run keeps no EMA and no skip window, so the payload is version 1's).
  const std::string path = dir + "/split/checkpoint.cuvae";
  cuvae_checkpoint ck;
  ASSERT_EQ(cuvae_checkpoint_load(path.c_str(), &ck), 0) << cuvae_last_error();
  const size_t block = 60 + 68 * size_t(ck.n_tensors) + 8 + strlen(ck.config_ini);
  cuvae_checkpoint_free(&ck);
  std::string b = read_file(path);
  b.erase(block, 72 + 88);
  auto put = [&b](size_t at, uint64_t v, int n) {
    for (int i = 0; i < n; i++) b[at + i] = char(v >> (8 * i));
  };
  put(8, 1, 4);
  put(12, block - 16, 4);
  put(16, b.size(), 8);
  put(b.size() - 4, crc32(0, reinterpret_cast<const Bytef *>(b.data()), uInt(b.size() - 4)), 4);
  write_file(path, b);
  ASSERT_EQ(cuvae_checkpoint_load(path.c_str(), &ck), 0) << cuvae_last_error();
  EXPECT_EQ(ck.version, 1u);
  cuvae_checkpoint_free(&ck);

  ASSERT_EQ(train(config("max_steps = 20\n"), dir + "/split", true, &s), 0) << cuvae_last_error();
  EXPECT_NE(read_file(dir + "/log.txt").find("format version 1) has no record of the epoch in progress"),
            std::string::npos);
  EXPECT_EQ(read_file(dir + "/whole/steps.jsonl"), read_file(dir + "/split/steps.jsonl"));
  std::vector<std::string> whole = metrics_rows(dir + "/whole/metrics.jsonl"),
                           split = metrics_rows(dir + "/split/metrics.jsonl");
  ASSERT_EQ(split.size(), 4u);  // the partial row of step 5 is kept
  EXPECT_NE(split[0].find("\"step\": 5, "), std::string::npos) << split[0];
  EXPECT_NE(split[1], whole[0]);  // epoch 1's row averages steps 6..8 only
  EXPECT_EQ(split[2], whole[1]);
  cuvae_checkpoint a, c;
  ASSERT_EQ(cuvae_checkpoint_load((dir + "/whole/checkpoint.cuvae").c_str(), &a), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_checkpoint_load(path.c_str(), &c), 0) << cuvae_last_error();
  EXPECT_EQ(memcmp(a.params, c.params, a.n_params * 4), 0);
  cuvae_checkpoint_free(&a);
  cuvae_checkpoint_free(&c);
}

// A diverging run stops with a message naming the step, and the checkpoint of the last good epoch survives.
TEST_F(TrainFixture, DivergenceStopsAndKeepsLastCheckpoint) {
  cuvae_train_summary s;
  ASSERT_EQ(train(config("epochs = 1\n"), dir + "/run", false, &s), 0) << cuvae_last_error();
  std::string before = read_file(dir + "/run/checkpoint.cuvae");
  ASSERT_FALSE(before.empty());
  // lr = 1e30 blows the weights up within a step or two: the loss becomes Inf/NaN.
  int rc = train(config("epochs = 3\nlr = 1e30\n"), dir + "/run", true, &s);
  EXPECT_EQ(rc, -1);
  std::string msg = cuvae_last_error();
  EXPECT_NE(msg.find("step"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not finite"), std::string::npos) << msg;
  EXPECT_EQ(read_file(dir + "/run/checkpoint.cuvae"), before);
}

TEST_F(TrainFixture, RefusesToOverwriteAnExistingRun) {
  cuvae_train_summary s;
  ASSERT_EQ(train(config("max_steps = 2\n"), dir + "/run", false, &s), 0) << cuvae_last_error();
  std::string before = read_file(dir + "/run/checkpoint.cuvae");
  EXPECT_EQ(train(config("max_steps = 2\n"), dir + "/run", false, &s), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("already holds a run"), std::string::npos) << cuvae_last_error();
  EXPECT_EQ(read_file(dir + "/run/checkpoint.cuvae"), before);
}

// A run that stopped before its first checkpoint (here: its files, faked) is not overwritten either.
TEST_F(TrainFixture, RefusesToOverwriteFilesOfAStoppedRun) {
  ASSERT_EQ(mkdir((dir + "/run").c_str(), 0777), 0);
  write_file(dir + "/run/metrics.jsonl", "precious\n");
  cuvae_train_summary s;
  EXPECT_EQ(train(config("max_steps = 2\n"), dir + "/run", false, &s), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("metrics.jsonl"), std::string::npos) << cuvae_last_error();
  EXPECT_EQ(read_file(dir + "/run/metrics.jsonl"), "precious\n");
  EXPECT_FALSE(fopen((dir + "/run/config.ini").c_str(), "r"));
}

TEST_F(TrainFixture, ResumeWithAnotherArchitectureFails) {
  cuvae_train_summary s;
  ASSERT_EQ(train(config("max_steps = 2\n"), dir + "/run", false, &s), 0) << cuvae_last_error();
  std::string before = read_file(dir + "/run/checkpoint.cuvae");
  EXPECT_EQ(train(config("max_steps = 4\n", "hidden = 12,10\nlatent = 4\n"), dir + "/run", true, &s), -1);
  std::string msg = cuvae_last_error();
  EXPECT_NE(msg.find("latent"), std::string::npos) << msg;
  EXPECT_EQ(read_file(dir + "/run/checkpoint.cuvae"), before);
}

TEST_F(TrainFixture, BatchLargerThanDataSetFails) {
  cuvae_train_summary s;
  EXPECT_EQ(train(config("batch_size = 257\n"), dir + "/run", false, &s), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("batch_size"), std::string::npos) << cuvae_last_error();
  EXPECT_FALSE(fopen((dir + "/run/config.ini").c_str(), "r"));  // nothing written
}

TEST_F(TrainFixture, BernoulliNeedsDataInUnitInterval) {
  std::vector<float> bad = synthetic_data(256, 16, 3);
  bad[17] = 1.5f;
  write_file(dir + "/train.npy", npy_bytes("<f4", "(256, 16)", bad.data(), bad.size() * 4));
  cuvae_train_summary s;
  EXPECT_EQ(train(config(), dir + "/run", false, &s), -1);
  std::string msg = cuvae_last_error();
  EXPECT_NE(msg.find("outside [0, 1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.npy"), std::string::npos) << msg;
}

TEST_F(TrainFixture, GaussianAndTanhTrain) {
  cuvae_train_summary s;
  cuvae_config c = config("epochs = 2\n", "hidden = 8\nlatent = 2\nlikelihood = gaussian\nsigma = 0.5\n"
                                          "activation = tanh\n");
  ASSERT_EQ(train(c, dir + "/run", false, &s), 0) << cuvae_last_error();
  EXPECT_EQ(s.step, 16);
  EXPECT_TRUE(std::isfinite(s.test.nelbo));
  // Gaussian NLL per point includes 0.5 * D * log(2 pi sigma^2) = 8 * log(2 pi 0.25) = 3.61 nats at least.
  EXPECT_GT(s.test.recon, 3.6);
}

}  // namespace
