// Which CUDA device a data-parallel rank takes (include/cuvae/device.h, src/backend/backend.c): its place among the
// ranks of its machine, modulo the machine's devices, with a note when ranks must share devices; and the --device
// choices.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuvae/device.h"
#include "cuvae/error.h"

namespace {

TEST(Device, EachLocalRankTakesItsOwnDeviceWhileThereAreEnough) {
  char note[256];
  for (int local = 0; local < 8; local++) {
    EXPECT_EQ(local, cuvae_device_for_rank(local, 8, 8, note, sizeof note)) << local;
    EXPECT_STREQ("", note);
  }
  EXPECT_EQ(0, cuvae_device_for_rank(0, 1, 4, note, sizeof note));  // one process: the first device
  EXPECT_STREQ("", note);
}

TEST(Device, MoreRanksThanDevicesShareThemRoundRobinWithANote) {
  char note[256];
  EXPECT_EQ(1, cuvae_device_for_rank(3, 4, 2, note, sizeof note));
  EXPECT_STREQ("4 ranks on this machine share its 2 CUDA devices round-robin (this rank: device 1); one rank per "
               "device trains faster",
               note);
  EXPECT_EQ(0, cuvae_device_for_rank(1, 2, 1, note, sizeof note));
  EXPECT_NE(std::string(note).find("its 1 CUDA device round-robin"), std::string::npos) << note;
  EXPECT_EQ(-1, cuvae_device_for_rank(0, 2, 0, note, sizeof note));  // no device: nothing to take
}

// A single process (local_size 1), and ranks a launcher placed (CUDA_VISIBLE_DEVICES set), are left where they are:
// no placement, no note.
TEST(Device, OneProcessAndPlacedRanksAreLeftAlone) {
  char note[256] = "stale";
  EXPECT_EQ(0, cuvae_device_place_rank(0, 1, note, sizeof note));
  EXPECT_STREQ("", note);
  setenv("CUDA_VISIBLE_DEVICES", "3", 1);
  std::snprintf(note, sizeof note, "stale");
  EXPECT_EQ(0, cuvae_device_place_rank(5, 8, note, sizeof note));
  EXPECT_STREQ("", note);
  unsetenv("CUDA_VISIBLE_DEVICES");
}

TEST(Device, ChoicesAreChecked) {
  for (const char *ok : {"auto", "cpu", "cuda"}) EXPECT_EQ(0, cuvae_device_check(ok)) << ok;
  EXPECT_EQ(-1, cuvae_device_check("gpu"));
  EXPECT_STREQ("--device 'gpu': expected auto, cpu or cuda", cuvae_last_error());
  EXPECT_EQ(-1, cuvae_device_check(nullptr));
}

}  // namespace
