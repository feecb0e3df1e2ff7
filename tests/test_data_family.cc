// Data handling of the model family at load time (cuvae_load_split, src/engine/data_split.c): binarization drawn
// once ([data] binarize = static: both splits; dynamic: the test split, the training split stays grey for the
// per-step draws), dequantization of 8-bit data ([data] dequantize = uniform: the 8-bit check, the test split drawn
// once, the training split kept for the per-step draws) and the label checks of the conditional VAE.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuvae/config.h"
#include "cuvae/data.h"
#include "cuvae/error.h"
#include "test_util.h"
#include "data_split.h"

using namespace cuvae_test;

namespace {

constexpr size_t kN = 4000, kD = 16, kNTest = 1000;

struct DataFamily : ::testing::Test {
  std::string dir;
  std::vector<float> train, test;
  void SetUp() override {
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
    train = synthetic_data(kN, kD, 1);
    test = synthetic_data(kNTest, kD, 2);
    write_file(dir + "/train.npy", npy_bytes("<f4", "(4000, 16)", train.data(), train.size() * 4));
    write_file(dir + "/test.npy", npy_bytes("<f4", "(1000, 16)", test.data(), test.size() * 4));
    std::vector<uint8_t> lab(kN), lab_test(kNTest);
    for (size_t i = 0; i < kN; i++) lab[i] = (uint8_t)(i % 10);
    for (size_t i = 0; i < kNTest; i++) lab_test[i] = (uint8_t)(i % 12);  // 10 and 11: beyond classes = 10
    write_file(dir + "/train_labels.npy", npy_bytes("|u1", "(4000,)", lab.data(), lab.size()));
    write_file(dir + "/test_labels.npy", npy_bytes("|u1", "(1000,)", lab_test.data(), lab_test.size()));
  }
  cuvae_config config(const std::string &extra) const {
    cuvae_config c;
    cuvae_config_defaults(&c);
    const std::string ini = "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir +
                            "/test.npy\ntrain_labels = " + dir + "/train_labels.npy\ntest_labels = " + dir +
                            "/test_labels.npy\n" + extra;
    EXPECT_EQ(cuvae_config_load_string(&c, ini.c_str(), "test.ini"), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_config_finalize(&c), 0) << cuvae_last_error();
    return c;
  }
};

bool all_binary(const cuvae_dataset &ds) {
  for (size_t i = 0; i < ds.n * ds.dim; i++)
    if (ds.x[i] != 0.0f && ds.x[i] != 1.0f) return false;
  return true;
}

// P(x_b = 1) = x: over n values the count of ones has mean sum(x) and variance sum x(1 - x).
void expect_bernoulli_of(const cuvae_dataset &ds, const std::vector<float> &grey) {
  double ones = 0.0, mean = 0.0, var = 0.0;
  for (size_t i = 0; i < grey.size(); i++) {
    ones += ds.x[i];
    mean += grey[i];
    var += (double)grey[i] * (1.0 - grey[i]);
  }
  // 5 standard deviations: a fixed seed makes this deterministic; a wrong threshold (e.g. u < 0.5) would move the
  // count by about n/4 = thousands of standard deviations here.
  EXPECT_LE(std::fabs(ones - mean), 5.0 * std::sqrt(var)) << "ones " << ones << " expected " << mean;
}

TEST_F(DataFamily, StaticBinarizationDrawsBothSplitsOnce) {
  const cuvae_config c = config("[train]\nseed = 5\n[data]\nbinarize = static\n");
  cuvae_dataset tr{}, te{}, tr2{};
  ASSERT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TRAIN, &tr), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TEST, &te), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TRAIN, &tr2), 0) << cuvae_last_error();
  EXPECT_TRUE(all_binary(tr));
  EXPECT_TRUE(all_binary(te));
  expect_bernoulli_of(tr, train);
  expect_bernoulli_of(te, test);
  EXPECT_EQ(0, std::memcmp(tr.x, tr2.x, kN * kD * sizeof(float))) << "the same seed draws the same binary set";
  // The two splits use different streams: the test split is not the training split's first rows re-drawn.
  cuvae_config other = c;
  other.seed = 6;
  cuvae_dataset tr3{};
  ASSERT_EQ(cuvae_load_split(&other, CUVAE_SPLIT_TRAIN, &tr3), 0) << cuvae_last_error();
  EXPECT_NE(0, std::memcmp(tr.x, tr3.x, kN * kD * sizeof(float))) << "another seed, another draw";
  cuvae_dataset_free(&tr);
  cuvae_dataset_free(&te);
  cuvae_dataset_free(&tr2);
  cuvae_dataset_free(&tr3);
}

TEST_F(DataFamily, DynamicBinarizationFixesOnlyTheTestSplit) {
  const cuvae_config c = config("[data]\nbinarize = dynamic\n");
  cuvae_dataset tr{}, te{};
  ASSERT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TRAIN, &tr), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TEST, &te), 0) << cuvae_last_error();
  EXPECT_EQ(0, std::memcmp(tr.x, train.data(), kN * kD * sizeof(float))) << "training data stays grey";
  EXPECT_TRUE(all_binary(te));
  expect_bernoulli_of(te, test);
  cuvae_dataset_free(&tr);
  cuvae_dataset_free(&te);
}

// docs/MATH.md (4.6): with 8-bit files (uint8, the loader's k/255) the training split stays k/255, the test split is
// y = (k + u)/256 in [k/256, (k+1)/256] (u in (0, 1]; k + u may round to an end), the same numbers at every load,
// with the mean offset in the bin 1/2 within 5 sd (1/sqrt(12 n)); cuvae_dequantize_split draws the training split the
// same way from its own stream. Grey (float) data are refused with a message naming the file.
TEST_F(DataFamily, DequantizationDrawsTheTestSplitOnceFrom8BitData) {
  std::vector<uint8_t> k_train(kN * kD), k_test(kNTest * kD);
  for (size_t i = 0; i < k_train.size(); i++) k_train[i] = (uint8_t)((i * 37) % 256);
  for (size_t i = 0; i < k_test.size(); i++) k_test[i] = (uint8_t)((i * 11) % 256);
  write_file(dir + "/train8.npy", npy_bytes("|u1", "(4000, 16)", k_train.data(), k_train.size()));
  write_file(dir + "/test8.npy", npy_bytes("|u1", "(1000, 16)", k_test.data(), k_test.size()));
  cuvae_config c = config("[model]\nlikelihood = gaussian\n[data]\ndequantize = uniform\n");
  std::snprintf(c.train_images, sizeof c.train_images, "%s/train8.npy", dir.c_str());
  std::snprintf(c.test_images, sizeof c.test_images, "%s/test8.npy", dir.c_str());
  cuvae_dataset tr{}, te{}, te2{};
  ASSERT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TRAIN, &tr), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TEST, &te), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TEST, &te2), 0) << cuvae_last_error();
  for (size_t i = 0; i < k_train.size(); i++) ASSERT_EQ((float)k_train[i] / 255.0f, tr.x[i]) << "train stays 8-bit";
  EXPECT_EQ(0, std::memcmp(te.x, te2.x, kNTest * kD * sizeof(float))) << "the same draw at every load";
  double sum = 0;
  for (size_t i = 0; i < k_test.size(); i++) {
    const double t = 256.0 * te.x[i] - k_test[i];
    ASSERT_TRUE(t >= 0.0 && t <= 1.0) << i << ": " << te.x[i] << " outside bin " << (int)k_test[i];
    sum += t;
  }
  const double n = (double)k_test.size(), mean = sum / n;
  EXPECT_LE(std::fabs(mean - 0.5), 5.0 / std::sqrt(12.0 * n)) << "mean offset in the bin " << mean;
  ASSERT_EQ(cuvae_dequantize_split(&c, CUVAE_SPLIT_TRAIN, &tr), 0) << cuvae_last_error();
  for (size_t i = 0; i < k_train.size(); i++) {
    const double t = 256.0 * tr.x[i] - k_train[i];
    ASSERT_TRUE(t >= 0.0 && t <= 1.0) << i;
  }
  cuvae_dataset_free(&tr);
  cuvae_dataset_free(&te);
  cuvae_dataset_free(&te2);
  // Grey data: refused at load, naming the file.
  const cuvae_config grey = config("[model]\nlikelihood = gaussian\n[data]\ndequantize = uniform\n");
  EXPECT_EQ(cuvae_load_split(&grey, CUVAE_SPLIT_TRAIN, &tr), -1);
  const std::string msg = cuvae_last_error();
  EXPECT_NE(msg.find("train.npy"), std::string::npos) << msg;
  EXPECT_NE(msg.find("k/255"), std::string::npos) << msg;
  EXPECT_EQ(tr.x, nullptr) << "nothing left allocated";
}

TEST_F(DataFamily, ConditionalNeedsLabelsWithinClasses) {
  cuvae_config c = config("[model]\nconditional = true\nclasses = 10\n");
  cuvae_dataset tr{}, te{};
  EXPECT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TRAIN, &tr), 0) << cuvae_last_error();  // labels 0..9
  EXPECT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TEST, &te), -1);                       // labels up to 11
  EXPECT_NE(std::string(cuvae_last_error()).find("outside 0..classes-1"), std::string::npos) << cuvae_last_error();
  EXPECT_EQ(te.x, nullptr) << "nothing left allocated";
  c.classes = 12;
  EXPECT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TEST, &te), 0) << cuvae_last_error();
  cuvae_dataset_free(&te);
  c.test_labels[0] = '\0';  // no label file
  EXPECT_EQ(cuvae_load_split(&c, CUVAE_SPLIT_TEST, &te), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("no label file"), std::string::npos) << cuvae_last_error();
  cuvae_dataset_free(&tr);
}

}  // namespace
