// The CUDA backend's host code, built against the emulation (target cuvae_cuda_emu), sees one emulated device.
#include <gtest/gtest.h>

#include <string>

extern "C" int cuvae_cuda_device_count(char *desc, size_t n);

TEST(EmuBackend, SeesOneEmulatedDevice) {
  char desc[256] = "";
  EXPECT_EQ(cuvae_cuda_device_count(desc, sizeof desc), 1);
  EXPECT_NE(std::string(desc).find("cuda_emu"), std::string::npos) << desc;
  EXPECT_NE(std::string(desc).find("sm_90"), std::string::npos) << desc;
}
