// Linked into the native (nvcc) builds of the CUDA tests, label `gpu`: without a usable CUDA device every test
// is skipped, cleanly, instead of failing.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

namespace {
class RequireCudaDevice : public ::testing::Environment {
 public:
  void SetUp() override {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0)
      GTEST_SKIP() << "no CUDA device (" << cudaGetErrorString(err) << "): the native GPU tests are skipped";
  }
};
::testing::Environment *const g_require_device = ::testing::AddGlobalTestEnvironment(new RequireCudaDevice);
}  // namespace
