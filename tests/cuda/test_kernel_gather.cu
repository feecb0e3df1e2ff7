// kernels/gather.cu: gather_rows_cuda against its CPU twin gather_rows_cpu, bit for bit (a pure copy), at
// B in {1, 3, 128, 257} and D in {1, 7, 784, 1000} (around and away from the 256-thread block), with repeated and
// reversed row orders; argument validation. Runs emulated (label emu) and natively (label gpu).
#include "cuda_compat.h"
// (cuda_compat.h first: under emulation it stands in for cuda_runtime.h)
#include "device_vec.h"

#include <gtest/gtest.h>
#include <stdint.h>

#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

TEST(GatherRows, MatchesTheCpuTwinExactly) {
  const int kN = 300;  // source rows
  for (int B : {1, 3, 128, 257}) {
    for (int D : {1, 7, 784, 1000}) {
      SCOPED_TRACE(testing::Message() << "B " << B << " D " << D);
      std::mt19937 rng((unsigned)(B * 1000 + D));
      std::uniform_real_distribution<float> val(-1.0f, 1.0f);
      std::uniform_int_distribution<uint32_t> row(0, kN - 1);
      std::vector<float> src((size_t)kN * D);
      for (float &v : src) v = val(rng);
      std::vector<uint32_t> rows(B);
      for (int b = 0; b < B; b++) rows[b] = b % 2 ? row(rng) : (uint32_t)(kN - 1 - b % kN);  // random + reversed
      if (B > 2) rows[2] = rows[0];                                                          // a repeat
      std::vector<float> want((size_t)B * D);
      gather_rows_cpu(src.data(), rows.data(), want.data(), B, D);
      DeviceVec<float> dsrc(src), ddst((size_t)B * D);
      DeviceVec<uint32_t> drows(rows);
      ASSERT_EQ(cudaSuccess, gather_rows_cuda(dsrc.p, drows.p, ddst.p, B, D, 0));
      ASSERT_EQ(cudaSuccess, cudaDeviceSynchronize());
      EXPECT_EQ(ddst.get(), want);
    }
  }
}

TEST(GatherRows, RejectsBadArguments) {
  DeviceVec<float> f(8);
  DeviceVec<uint32_t> r(2);
  EXPECT_EQ(cudaErrorInvalidValue, gather_rows_cuda(nullptr, r.p, f.p, 2, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, gather_rows_cuda(f.p, nullptr, f.p, 2, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, gather_rows_cuda(f.p, r.p, nullptr, 2, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, gather_rows_cuda(f.p, r.p, f.p, 0, 4, 0));
  EXPECT_EQ(cudaErrorInvalidValue, gather_rows_cuda(f.p, r.p, f.p, 2, 0, 0));
}

}  // namespace
