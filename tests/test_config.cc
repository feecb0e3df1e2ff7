// Tests of the config schema: defaults, INI loading, every error kind, --set, to_ini round trips,
// dataset path resolution and architecture comparison.
#include <gtest/gtest.h>
#include <ini.h>
#include <stdlib.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

extern "C" {
#include "cuvae/config.h"
#include "cuvae/error.h"
}
#include "test_util.h"

namespace {

const std::string kConfigs = std::string(CUVAE_TEST_DATA) + "/../../configs/";

using cuvae_test::EnvGuard;

// Field-by-field byte comparison (padding between fields is not part of the config).
#define EXPECT_FIELD_EQ(a, b, f) EXPECT_EQ(0, memcmp(&(a).f, &(b).f, sizeof((a).f))) << "field " #f
void ExpectSameConfig(const cuvae_config &a, const cuvae_config &b) {
  EXPECT_FIELD_EQ(a, b, dataset);
  EXPECT_FIELD_EQ(a, b, train_images);
  EXPECT_FIELD_EQ(a, b, train_labels);
  EXPECT_FIELD_EQ(a, b, test_images);
  EXPECT_FIELD_EQ(a, b, test_labels);
  EXPECT_FIELD_EQ(a, b, n_hidden);
  EXPECT_FIELD_EQ(a, b, hidden);
  EXPECT_FIELD_EQ(a, b, latent);
  EXPECT_FIELD_EQ(a, b, likelihood);
  EXPECT_FIELD_EQ(a, b, sigma);
  EXPECT_FIELD_EQ(a, b, activation);
  EXPECT_FIELD_EQ(a, b, epochs);
  EXPECT_FIELD_EQ(a, b, batch_size);
  EXPECT_FIELD_EQ(a, b, lr);
  EXPECT_FIELD_EQ(a, b, beta1);
  EXPECT_FIELD_EQ(a, b, beta2);
  EXPECT_FIELD_EQ(a, b, adam_eps);
  EXPECT_FIELD_EQ(a, b, clip_norm);
  EXPECT_FIELD_EQ(a, b, seed);
  EXPECT_FIELD_EQ(a, b, max_steps);
  EXPECT_FIELD_EQ(a, b, eval_batch_size);
  EXPECT_FIELD_EQ(a, b, log_every);
  EXPECT_FIELD_EQ(a, b, threads);
}

// Reloads c's to_ini text into fresh defaults.
cuvae_config RoundTrip(const cuvae_config &c) {
  char *text = cuvae_config_to_ini(&c);
  EXPECT_NE(text, nullptr) << cuvae_last_error();
  cuvae_config back;
  cuvae_config_defaults(&back);
  EXPECT_EQ(0, cuvae_config_load_string(&back, text ? text : "", "roundtrip.ini"))
      << cuvae_last_error() << "\n" << (text ? text : "");
  free(text);
  return back;
}

class ConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "cuvae_config_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto &f : files_) unlink(f.c_str());
    rmdir(dir_.c_str());
  }
  std::string Write(const std::string &text, const std::string &name = "x.ini") {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    files_.push_back(path);
    return path;
  }
  // Loads text from a file that must be rejected; checks the config is untouched and returns the message.
  std::string LoadError(const std::string &text) {
    path_ = Write(text);
    cuvae_config c, before;
    cuvae_config_defaults(&c);
    cuvae_config_defaults(&before);
    EXPECT_EQ(-1, cuvae_config_load_file(&c, path_.c_str())) << text;
    ExpectSameConfig(c, before);
    return cuvae_last_error();
  }
  std::string dir_, path_;
  std::vector<std::string> files_;
};

TEST(Config, Defaults) {
  cuvae_config c;
  memset(&c, 0xAB, sizeof c);
  cuvae_config_defaults(&c);
  EXPECT_STREQ(c.dataset, "fashion-mnist");
  EXPECT_STREQ(c.train_images, "");
  EXPECT_STREQ(c.test_labels, "");
  ASSERT_EQ(c.n_hidden, 1);
  EXPECT_EQ(c.hidden[0], 400);
  EXPECT_EQ(c.hidden[1], 0);
  EXPECT_EQ(c.latent, 20);
  EXPECT_EQ(c.likelihood, CUVAE_LIK_BERNOULLI);
  EXPECT_EQ(c.sigma, 1.0f);
  EXPECT_EQ(c.activation, CUVAE_ACT_RELU);
  EXPECT_EQ(c.epochs, 10);
  EXPECT_EQ(c.batch_size, 128);
  EXPECT_EQ(c.lr, 1e-3f);
  EXPECT_EQ(c.beta1, 0.9f);
  EXPECT_EQ(c.beta2, 0.999f);
  EXPECT_EQ(c.adam_eps, 1e-8f);
  EXPECT_EQ(c.clip_norm, 0.0f);
  EXPECT_EQ(c.seed, 1u);
  EXPECT_EQ(c.max_steps, 0);
  EXPECT_EQ(c.eval_batch_size, 1000);
  EXPECT_EQ(c.log_every, 50);
  EXPECT_EQ(c.threads, 0);
}

TEST(Config, LoadsShippedConfigs) {
  EnvGuard env("CUVAE_DATA_DIR", nullptr);
  cuvae_config c, d;
  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_load_file(&c, (kConfigs + "fashion_mnist.ini").c_str())) << cuvae_last_error();
  cuvae_config_defaults(&d);
  ExpectSameConfig(c, d);  // the shipped config spells out the defaults: 784-400-20 Bernoulli, Adam 1e-3
  ASSERT_EQ(0, cuvae_config_finalize(&c)) << cuvae_last_error();
  EXPECT_STREQ(c.train_images, "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");

  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_load_file(&c, (kConfigs + "tiny.ini").c_str())) << cuvae_last_error();
  EXPECT_STREQ(c.dataset, "fashion-mnist");
  ASSERT_EQ(c.n_hidden, 1);
  EXPECT_EQ(c.hidden[0], 64);
  EXPECT_EQ(c.latent, 8);
  EXPECT_EQ(c.batch_size, 64);
  EXPECT_EQ(c.max_steps, 20);
  EXPECT_EQ(c.epochs, 1);
}

TEST_F(ConfigFile, ParsesValuesCommentsAndWhitespace) {
  std::string path = Write(
      "\xEF\xBB\xBF; leading comment\r\n"
      "# another\r\n"
      "[model]\r\n"
      "  hidden =  512 , 256,128  ; three layers\r\n"
      "latent=32\r\n"
      "likelihood = gaussian   # inline\r\n"
      "sigma = 0.25\r\n"
      "activation = tanh\r\n"
      "[train]\r\n"
      "seed = 18446744073709551615\r\n"
      "max_steps = 9223372036854775807\r\n"
      "lr = 3e-4\r\n"
      "threads = 1024\r\n"
      "[data]\r\n"
      "dataset =\r\n"
      "train_images = /data/a b/train.npy\r\n");
  cuvae_config c;
  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_load_file(&c, path.c_str())) << cuvae_last_error();
  ASSERT_EQ(c.n_hidden, 3);
  EXPECT_EQ(c.hidden[0], 512);
  EXPECT_EQ(c.hidden[1], 256);
  EXPECT_EQ(c.hidden[2], 128);
  EXPECT_EQ(c.latent, 32);
  EXPECT_EQ(c.likelihood, CUVAE_LIK_GAUSSIAN);
  EXPECT_EQ(c.sigma, 0.25f);
  EXPECT_EQ(c.activation, CUVAE_ACT_TANH);
  EXPECT_EQ(c.seed, UINT64_MAX);
  EXPECT_EQ(c.max_steps, INT64_MAX);
  EXPECT_EQ(c.lr, 3e-4f);
  EXPECT_EQ(c.threads, 1024);
  EXPECT_STREQ(c.dataset, "");
  EXPECT_STREQ(c.train_images, "/data/a b/train.npy");
  EXPECT_EQ(c.epochs, 10);  // untouched keys keep their defaults

  // An empty hidden list means no hidden layers.
  ASSERT_EQ(0, cuvae_config_load_string(&c, "[model]\nhidden =\n", "s.ini")) << cuvae_last_error();
  EXPECT_EQ(c.n_hidden, 0);
  EXPECT_EQ(c.hidden[0], 0);
}

TEST_F(ConfigFile, InihOptionsAreRestored) {
  int max_line = ini_max_line;
  bool use_stack = ini_use_stack, multiline = ini_allow_multiline;
  cuvae_config c;
  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_load_string(&c, "[train]\nepochs = 2\n", "s.ini"));
  EXPECT_EQ(ini_max_line, max_line);
  EXPECT_EQ(ini_use_stack, use_stack);
  EXPECT_EQ(ini_allow_multiline, multiline);
}

TEST_F(ConfigFile, UnknownKeyAndSection) {
  std::string m = LoadError("[train]\nepochs = 2\nfoo = 1\n");
  EXPECT_EQ(m.rfind(path_ + ":3: unknown key 'foo' in [train]", 0), 0u) << m;
  EXPECT_NE(m.find("batch_size"), std::string::npos) << m;  // valid keys are suggested

  m = LoadError("[model]\nlatent = 3\n[optim]\nlr = 1\n");
  EXPECT_EQ(m.rfind(path_ + ":3: unknown section [optim]", 0), 0u) << m;
  EXPECT_NE(m.find("[train]"), std::string::npos) << m;

  m = LoadError("[ train ]\nepochs = 2\n");  // section names are exact, as inih reads them
  EXPECT_EQ(m.rfind(path_ + ":1: unknown section [ train ]", 0), 0u) << m;

  m = LoadError("[train]\nepochs = 2\n[extra]\n");  // a section with no keys is still unknown
  EXPECT_EQ(m.rfind(path_ + ":3: unknown section [extra]", 0), 0u) << m;

  m = LoadError("; comment\nlr = 1\n[train]\n");
  EXPECT_EQ(m.rfind(path_ + ":2: key 'lr' is outside any section", 0), 0u) << m;

  m = LoadError("[train]\nthis is not a pair\n");
  EXPECT_EQ(m, path_ + ":2: cannot parse 'this is not a pair' (expected '[section]' or 'key = value')");

  m = LoadError("[train\nlr = 1\n");
  EXPECT_EQ(m.rfind(path_ + ":1: cannot parse '[train'", 0), 0u) << m;
}

TEST_F(ConfigFile, DuplicateKey) {
  std::string m = LoadError("[train]\nlr = 1\nepochs = 2\nlr = 2\n");
  EXPECT_EQ(m, path_ + ":4: [train] lr: duplicate key (already set on line 2)");
  // Also when the section is opened twice, and when the repeat is indented (not a continuation line).
  m = LoadError("[train]\nlr = 1\n[model]\nlatent = 3\n[train]\n  lr = 2\n");
  EXPECT_EQ(m, path_ + ":6: [train] lr: duplicate key (already set on line 2)");
}

TEST_F(ConfigFile, BadNumbers) {
  std::string m = LoadError("; a\n; b\n; c\n[train]\nepochs = 3\nlr = 1e-3\nbatch_size = 0\n");
  EXPECT_EQ(m, path_ + ":7: [train] batch_size: '0' is below the minimum 1");

  struct Case {
    const char *text, *expect;
  } cases[] = {
      {"[train]\nlr = abc\n", ":2: [train] lr: 'abc' is not a number"},
      {"[train]\nlr = 1e-3x\n", ":2: [train] lr: '1e-3x' is not a number"},
      {"[train]\nepochs = 10x\n", ":2: [train] epochs: '10x' is not an integer"},
      {"[train]\nepochs = 1.5\n", ":2: [train] epochs: '1.5' is not an integer"},
      {"[train]\nepochs =\n", ":2: [train] epochs: '' is not an integer"},
      {"[train]\nepochs = 0x10\n", ":2: [train] epochs: '0x10' is not an integer"},
      {"[train]\nbatch_size = 99999999999\n", ":2: [train] batch_size: '99999999999' is out of range"},
      {"[train]\nmax_steps = 9223372036854775808\n", ":2: [train] max_steps: '9223372036854775808' is out of range"},
      {"[train]\nmax_steps = -1\n", ":2: [train] max_steps: '-1' is below the minimum 0"},
      {"[train]\nseed = 18446744073709551616\n", ":2: [train] seed: '18446744073709551616' is out of range"},
      {"[train]\nseed = -1\n", ":2: [train] seed: '-1' is not an unsigned integer"},
      {"[train]\nlr = 1e999\n", ":2: [train] lr: '1e999' is out of range for a float"},
      {"[train]\nlr = 1e39\n", ":2: [train] lr: '1e39' is out of range for a float"},
      {"[train]\nlr = nan\n", ":2: [train] lr: 'nan' is not a finite number"},
      {"[train]\nlr = -inf\n", ":2: [train] lr: '-inf' is not a finite number"},
      {"[train]\nlr = 0\n", ":2: [train] lr: '0' must be greater than 0"},
      {"[train]\nlr = 1e-50\n", ":2: [train] lr: '1e-50' is out of range for a float"},
      {"[train]\nbeta1 = 1\n", ":2: [train] beta1: '1' must be less than 1"},
      {"[train]\nclip_norm = -0.5\n", ":2: [train] clip_norm: '-0.5' is below the minimum 0"},
      {"[train]\nthreads = 1025\n", ":2: [train] threads: '1025' is above the maximum 1024"},
      {"[model]\nlatent = 0\n", ":2: [model] latent: '0' is below the minimum 1"},
      {"[model]\nlatent = 1048577\n", ":2: [model] latent: '1048577' is above the maximum 1048576"},
      {"[model]\nsigma = 0\n", ":2: [model] sigma: '0' must be greater than 0"},
  };
  for (const Case &c : cases) {
    m = LoadError(c.text);
    EXPECT_EQ(m, path_ + c.expect) << c.text;
  }
}

TEST_F(ConfigFile, BadEnumsListsAndStrings) {
  std::string m = LoadError("[model]\nlikelihood = poisson\n");
  EXPECT_EQ(m, path_ + ":2: [model] likelihood: 'poisson' is not one of: bernoulli, gaussian");
  m = LoadError("[model]\nactivation = RELU\n");
  EXPECT_EQ(m, path_ + ":2: [model] activation: 'RELU' is not one of: relu, tanh");
  m = LoadError("[model]\nhidden = 1,2,3,4,5,6,7,8,9\n");
  EXPECT_EQ(m, path_ + ":2: [model] hidden: '1,2,3,4,5,6,7,8,9' has more than 8 entries");
  m = LoadError("[model]\nhidden = 400,,200\n");
  EXPECT_EQ(m, path_ + ":2: [model] hidden: '400,,200' is not a comma-separated list of integers");
  m = LoadError("[model]\nhidden = 400,\n");
  EXPECT_EQ(m, path_ + ":2: [model] hidden: '400,' is not a comma-separated list of integers");
  m = LoadError("[model]\nhidden = 400, 0\n");
  EXPECT_EQ(m, path_ + ":2: [model] hidden: '0' is below the minimum 1");
  m = LoadError("[model]\nhidden = 400, 2x\n");
  EXPECT_EQ(m, path_ + ":2: [model] hidden: '2x' is not an integer");
  m = LoadError("[data]\ndataset = mnist\n");
  EXPECT_EQ(m, path_ + ":2: [data] dataset: unknown dataset 'mnist' (known: fashion-mnist, \"\" (empty))");

  // Paths up to CUVAE_PATH_MAX - 1 characters load; longer ones are refused, as are over-long lines.
  std::string ok(CUVAE_PATH_MAX - 1, 'p'), too_long(CUVAE_PATH_MAX, 'p');
  std::string path = Write("[data]\ndataset =\ntrain_images = " + ok + "\n", "long.ini");
  cuvae_config c;
  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_load_file(&c, path.c_str())) << cuvae_last_error();
  EXPECT_EQ(std::string(c.train_images), ok);
  m = LoadError("[data]\ntrain_images = " + too_long + "\n");
  EXPECT_EQ(m, path_ + ":2: [data] train_images: value is longer than 1023 characters");
  m = LoadError("[data]\n; " + std::string(5000, 'c') + "\n");
  EXPECT_EQ(m, path_ + ":2: line is longer than 4096 characters");
}

TEST_F(ConfigFile, FileProblems) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  std::string missing = dir_ + "/missing.ini";
  EXPECT_EQ(-1, cuvae_config_load_file(&c, missing.c_str()));
  EXPECT_EQ(std::string(cuvae_last_error()).rfind(missing + ": cannot open config", 0), 0u) << cuvae_last_error();
  EXPECT_EQ(-1, cuvae_config_load_file(&c, dir_.c_str()));  // a directory
  EXPECT_NE(std::string(cuvae_last_error()).find(dir_), std::string::npos) << cuvae_last_error();
  std::string nul = Write(std::string("[train]\nlr = 1\0\n", 15), "nul.ini");
  EXPECT_EQ(-1, cuvae_config_load_file(&c, nul.c_str()));
  EXPECT_EQ(std::string(cuvae_last_error()), nul + ": config contains a NUL byte (not a text file?)");
  // load_string names its source in messages
  EXPECT_EQ(-1, cuvae_config_load_string(&c, "[train]\nlr = x\n", "ckpt.bin"));
  EXPECT_STREQ(cuvae_last_error(), "ckpt.bin:2: [train] lr: 'x' is not a number");
}

TEST(Config, SetOverrides) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_set(&c, "train.lr=3e-4")) << cuvae_last_error();
  EXPECT_EQ(c.lr, 3e-4f);
  ASSERT_EQ(0, cuvae_config_set(&c, " model.hidden = 512, 256 ")) << cuvae_last_error();
  ASSERT_EQ(c.n_hidden, 2);
  EXPECT_EQ(c.hidden[1], 256);
  ASSERT_EQ(0, cuvae_config_set(&c, "model.hidden=")) << cuvae_last_error();
  EXPECT_EQ(c.n_hidden, 0);
  ASSERT_EQ(0, cuvae_config_set(&c, "data.train_images=/x=y.npy")) << cuvae_last_error();
  EXPECT_STREQ(c.train_images, "/x=y.npy");  // only the first '=' separates

  struct Case {
    const char *set, *expect;
  } cases[] = {
      {"train.lr=abc", "--set train.lr: 'abc' is not a number"},
      {"train.batch_size=0", "--set train.batch_size: '0' is below the minimum 1"},
      {"train.foo=1", "--set train.foo: unknown key 'foo' in [train] (valid keys: epochs, batch_size, lr, beta1, "
                      "beta2, adam_eps, clip_norm, lr_schedule, lr_warmup_steps, lr_min, lr_decay_steps, lr_gamma, "
                      "ema, skip_grad_norm, skip_zscore, skip_window, skip_nonfinite, early_stop, skip_limit, seed, "
                      "max_steps, eval_batch_size, log_every, threads, precision, cuda_graph, shard_optimizer, "
                      "objective, samples, kl, beta, beta_warmup_steps, free_bits)"},
      {"optim.lr=1", "--set optim.lr: unknown section [optim] (valid sections: [data], [model], [train])"},
      {"lr=1", "--set 'lr=1': expected section.key=value, e.g. train.lr=3e-4"},
      {"train.lr", "--set 'train.lr': expected section.key=value, e.g. train.lr=3e-4"},
      {"model.likelihood=poisson", "--set model.likelihood: 'poisson' is not one of: bernoulli, gaussian"},
      {"data.train_images=/a ;b", "--set data.train_images: '/a ;b' contains a control character or a comment "
                                  "start (';' or '#')"},
  };
  cuvae_config before = c;
  for (const Case &k : cases) {
    EXPECT_EQ(-1, cuvae_config_set(&c, k.set)) << k.set;
    EXPECT_STREQ(cuvae_last_error(), k.expect);
  }
  ExpectSameConfig(c, before);  // failed overrides change nothing
}

TEST(Config, RoundTripDefaultsAndEveryField) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  ExpectSameConfig(RoundTrip(c), c);

  const char *sets[] = {"data.dataset=", "data.train_images=/d/train.npy", "data.train_labels=/d/train-labels",
                        "data.test_images=/d/test.npy", "model.hidden=1,2,3,4,5,6,7,1048576", "model.latent=1048576",
                        "model.likelihood=gaussian", "model.sigma=0.123456789", "data.dequantize=uniform",
                        "model.min_variance=1.17549435e-38", "model.activation=tanh",
                        "train.epochs=2147483647", "train.batch_size=7", "train.lr=3.14159265e-4",
                        "train.beta1=0.99999994", "train.beta2=0", "train.adam_eps=1.17549435e-38",
                        "train.clip_norm=3.4028235e38", "train.seed=18446744073709551615",
                        "train.max_steps=9223372036854775807", "train.eval_batch_size=3", "train.log_every=1",
                        "train.threads=1024"};
  for (const char *s : sets) ASSERT_EQ(0, cuvae_config_set(&c, s)) << s << ": " << cuvae_last_error();
  ExpectSameConfig(RoundTrip(c), c);

  cuvae_config_set(&c, "model.hidden=");  // the empty list survives too
  ExpectSameConfig(RoundTrip(c), c);
}

TEST(Config, RoundTripAfterFinalize) {
  EnvGuard env("CUVAE_DATA_DIR", "/srv/fm");
  cuvae_config c;
  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_finalize(&c)) << cuvae_last_error();
  char *text = cuvae_config_to_ini(&c);
  ASSERT_NE(text, nullptr);
  std::string s(text);
  free(text);
  EXPECT_NE(s.find("\ndataset = fashion-mnist\n"), std::string::npos) << s;
  EXPECT_EQ(s.find("\ntrain_images ="), std::string::npos) << s;  // resolved paths are only comments
  cuvae_config back;
  cuvae_config_defaults(&back);
  ASSERT_EQ(0, cuvae_config_load_string(&back, s.c_str(), "run/config.ini")) << cuvae_last_error();
  EXPECT_STREQ(back.train_images, "");
  ASSERT_EQ(0, cuvae_config_finalize(&back)) << cuvae_last_error();
  ExpectSameConfig(back, c);
}

TEST(Config, FinalizeResolvesDatasetPaths) {
  cuvae_config c;
  {
    EnvGuard env("CUVAE_DATA_DIR", nullptr);
    cuvae_config_defaults(&c);
    ASSERT_EQ(0, cuvae_config_finalize(&c)) << cuvae_last_error();
    EXPECT_STREQ(c.train_images, "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
    EXPECT_STREQ(c.train_labels, "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz");
    EXPECT_STREQ(c.test_images, "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
    EXPECT_STREQ(c.test_labels, "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
    cuvae_config again = c;
    ASSERT_EQ(0, cuvae_config_finalize(&again)) << cuvae_last_error();  // finalizing twice is harmless
    ExpectSameConfig(again, c);
  }
  {
    EnvGuard env("CUVAE_DATA_DIR", "/tmp/fm//");
    cuvae_config_defaults(&c);
    ASSERT_EQ(0, cuvae_config_finalize(&c)) << cuvae_last_error();
    EXPECT_STREQ(c.train_images, "/tmp/fm/train-images-idx3-ubyte.gz");
    EXPECT_STREQ(c.test_labels, "/tmp/fm/t10k-labels-idx1-ubyte.gz");
  }
  // A dataset and an explicit image path together are ambiguous.
  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_set(&c, "data.train_images=/x/train.npy"));
  EXPECT_EQ(-1, cuvae_config_finalize(&c));
  EXPECT_NE(std::string(cuvae_last_error()).find("dataset = fashion-mnist and train_images = /x/train.npy"),
            std::string::npos)
      << cuvae_last_error();
  // Without a dataset, train and test images are required and labels are optional.
  cuvae_config_defaults(&c);
  ASSERT_EQ(0, cuvae_config_set(&c, "data.dataset="));
  EXPECT_EQ(-1, cuvae_config_finalize(&c));
  EXPECT_STREQ(cuvae_last_error(), "config: [data] train_images is required when dataset is empty");
  ASSERT_EQ(0, cuvae_config_set(&c, "data.train_images=/x/train.npy"));
  EXPECT_EQ(-1, cuvae_config_finalize(&c));
  EXPECT_STREQ(cuvae_last_error(), "config: [data] test_images is required when dataset is empty");
  ASSERT_EQ(0, cuvae_config_set(&c, "data.test_images=/x/test.npy"));
  ASSERT_EQ(0, cuvae_config_finalize(&c)) << cuvae_last_error();
  EXPECT_STREQ(c.train_images, "/x/train.npy");
  EXPECT_STREQ(c.train_labels, "");
}

TEST(Config, SameArchitecture) {
  cuvae_config a, b;
  cuvae_config_defaults(&a);
  cuvae_config_defaults(&b);
  cuvae_config_set(&b, "train.lr=0.5");  // training keys do not matter
  cuvae_config_set(&b, "model.sigma=0.5");  // nor does sigma under a Bernoulli likelihood
  EXPECT_EQ(0, cuvae_config_same_architecture(&a, &b)) << cuvae_last_error();

  struct Case {
    const char *set, *expect;
  } cases[] = {
      {"model.latent=32", "[model] latent: checkpoint has 20, config has 32"},
      {"model.hidden=400,200", "[model] hidden: checkpoint has 400, config has 400, 200"},
      {"model.hidden=", "[model] hidden: checkpoint has 400, config has (none)"},
      {"model.likelihood=gaussian", "[model] likelihood: checkpoint has bernoulli, config has gaussian"},
      {"model.activation=tanh", "[model] activation: checkpoint has relu, config has tanh"},
  };
  for (const Case &k : cases) {
    cuvae_config_defaults(&b);
    ASSERT_EQ(0, cuvae_config_set(&b, k.set));
    EXPECT_EQ(-1, cuvae_config_same_architecture(&a, &b)) << k.set;
    EXPECT_STREQ(cuvae_last_error(), k.expect);
  }
  cuvae_config_set(&a, "model.likelihood=gaussian");
  cuvae_config_defaults(&b);
  cuvae_config_set(&b, "model.likelihood=gaussian");
  cuvae_config_set(&b, "model.sigma=0.5");
  EXPECT_EQ(-1, cuvae_config_same_architecture(&a, &b));
  EXPECT_STREQ(cuvae_last_error(), "[model] sigma: checkpoint has 1, config has 0.5");
}

TEST(Config, NamesAndSchema) {
  EXPECT_STREQ(cuvae_activation_name(CUVAE_ACT_RELU), "relu");
  EXPECT_STREQ(cuvae_activation_name(CUVAE_ACT_TANH), "tanh");
  EXPECT_STREQ(cuvae_activation_name(CUVAE_ACT_NONE), "none");
  EXPECT_STREQ(cuvae_likelihood_name(CUVAE_LIK_BERNOULLI), "bernoulli");
  EXPECT_STREQ(cuvae_likelihood_name(CUVAE_LIK_GAUSSIAN), "gaussian");
  EXPECT_STREQ(cuvae_likelihood_name((cuvae_likelihood)7), "unknown");

  FILE *f = tmpfile();
  ASSERT_NE(f, nullptr);
  cuvae_config_print_schema(f);
  std::string s(size_t(ftell(f)), '\0');
  rewind(f);
  ASSERT_EQ(fread(s.data(), 1, s.size(), f), s.size());
  fclose(f);
  for (const char *key : {"dataset", "train_images", "test_labels", "hidden", "latent", "likelihood", "sigma",
                          "activation", "epochs", "batch_size", "lr", "beta1", "beta2", "adam_eps", "clip_norm",
                          "seed", "max_steps", "eval_batch_size", "log_every", "threads"})
    EXPECT_NE(s.find("\n  " + std::string(key) + " "), std::string::npos) << key;
  EXPECT_NE(s.find("one of: bernoulli | gaussian"), std::string::npos) << s;
  EXPECT_NE(s.find("default 1e-3"), std::string::npos) << s;
}

}  // namespace

namespace {

// The optimizer's keys that only make sense together (src/core/config_check.c) fail finalize with one message naming
// them; out-of-range values fail at --set, naming the bound.
TEST(Config, ScheduleSkipAndValidationKeysAreChecked) {
  struct Case {
    std::vector<const char *> sets;
    const char *expect;
  };
  const Case cases[] = {
      {{"train.lr=1e-3", "train.lr_min=2e-3"},
       "config: [train] lr_min = 0.002 is above lr = 0.001 (the cosine decay goes down to it)"},
      {{"train.lr_schedule=step"},
       "config: [train] lr_schedule = step needs lr_decay_steps, the steps between two decays"},
      {{"train.early_stop=3"}, "config: [train] early_stop needs [data] validation, the examples it watches"},
  };
  for (const Case &k : cases) {
    cuvae_config c;
    cuvae_config_defaults(&c);
    for (const char *s : k.sets) ASSERT_EQ(0, cuvae_config_set(&c, s)) << s << ": " << cuvae_last_error();
    EXPECT_EQ(-1, cuvae_config_finalize(&c)) << k.expect;
    EXPECT_STREQ(cuvae_last_error(), k.expect);
  }
  cuvae_config c;
  cuvae_config_defaults(&c);
  for (const char *bad : {"train.ema=1", "train.skip_window=1", "train.skip_limit=0", "train.lr_gamma=0",
                          "data.validation=-1", "train.lr_schedule=linear"})
    EXPECT_EQ(-1, cuvae_config_set(&c, bad)) << bad;
  ASSERT_EQ(0, cuvae_config_set(&c, "train.lr_schedule=step"));
  ASSERT_EQ(0, cuvae_config_set(&c, "train.lr_decay_steps=100"));
  EXPECT_EQ(0, cuvae_config_finalize(&c)) << cuvae_last_error();
}

}  // namespace
