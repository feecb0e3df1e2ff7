// The noise streams of src/core/rng.c (computed by src/core/philox.c, split across threads) against cuRAND's Philox
// host generator used directly: its numbers bit for bit, uniforms and normals, at any offset, seed, length (multiple
// of 4 or not) and sequence of draws.
#include <curand.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cuvae/error.h"
#include "cuvae/rng.h"

namespace {

// n values at offset from one fresh Philox generator (the definition of the stream).
std::vector<float> OneGenerator(uint64_t seed, uint64_t offset, size_t n, bool normal) {
  curandGenerator_t gen;
  EXPECT_EQ(curandCreateGeneratorHost(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandSetPseudoRandomGeneratorSeed(gen, seed), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandSetGeneratorOffset(gen, offset), CURAND_STATUS_SUCCESS);
  std::vector<float> v(cuvae_noise_stride(n));
  EXPECT_EQ(normal ? curandGenerateNormal(gen, v.data(), v.size(), 0.0f, 1.0f)
                   : curandGenerateUniform(gen, v.data(), v.size()),
            CURAND_STATUS_SUCCESS);
  curandDestroyGenerator(gen);
  v.resize(n);
  return v;
}

TEST(Rng, SplitDrawsEqualOneDraw) {
  cuvae_noise *g = cuvae_noise_create(1234);
  ASSERT_NE(g, nullptr) << cuvae_last_error();
  struct Draw {
    uint64_t offset;
    size_t n;
    bool normal;
  };
  // Short (one thread) and long (split) draws, lengths not a multiple of 4 or 8, consecutive and jumping offsets.
  const Draw draws[] = {{0, 10, true},          {12, 1 << 17, true},      {(1 << 17) + 12, 1000003, true},
                        {8, 524288, false},     {4000000, 65537, true},   {4000000 + 65540, 300001, false},
                        {400, 1 << 16, true},   {0, 524288 + 6, true}};
  for (const Draw &d : draws) {
    std::vector<float> got(d.n);
    ASSERT_EQ(d.normal ? cuvae_noise_normal(g, d.offset, got.data(), d.n)
                       : cuvae_noise_uniform(g, d.offset, got.data(), d.n),
              0)
        << cuvae_last_error();
    const std::vector<float> want = OneGenerator(1234, d.offset, d.n, d.normal);
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), d.n * sizeof(float))) << "offset " << d.offset << " n " << d.n;
  }
  cuvae_noise_destroy(g);
}

// A rank's slice of a global draw (include/cuvae/rng.h, "Data parallel"): values [skip, skip + n) of the draw at
// `offset` are that part of one generator's draw bit for bit, for slices starting inside a Philox block (skip mod 4
// = 1, 2, 3), on a block, of odd length, long enough to be split across threads, normals and uniforms.
TEST(Rng, SlicesEqualThatPartOfOneDraw) {
  cuvae_noise *g = cuvae_noise_create(99);
  ASSERT_NE(g, nullptr) << cuvae_last_error();
  struct Slice {
    uint64_t offset, skip;
    size_t n;
    bool normal;
  };
  const Slice slices[] = {{0, 1, 7, true},      {0, 2, 9, true},        {64, 3, 13, true},     {64, 48, 48, true},
                          {128, 5, 1 << 17, true}, {1024, 99, 300001, false}, {8, 6, 10, false}};
  for (const Slice &s : slices) {
    std::vector<float> got(s.n);
    ASSERT_EQ(s.normal ? cuvae_noise_normal_slice(g, s.offset, s.skip, got.data(), s.n)
                       : cuvae_noise_uniform_slice(g, s.offset, s.skip, got.data(), s.n),
              0)
        << cuvae_last_error();
    const std::vector<float> whole = OneGenerator(99, s.offset, s.skip + s.n, s.normal);
    ASSERT_EQ(0, std::memcmp(got.data(), whole.data() + s.skip, s.n * sizeof(float)))
        << "offset " << s.offset << " skip " << s.skip << " n " << s.n;
  }
  std::vector<float> v(4);
  EXPECT_EQ(cuvae_noise_normal_slice(g, 2, 0, v.data(), 4), -1);  // the draw itself must start on a block
  EXPECT_STREQ(cuvae_last_error(), "noise offset 2 is not a multiple of 4");
  cuvae_noise_destroy(g);
}

// Uniforms are computed on the host (src/core/philox.c) instead of by cuRAND's host generator: the same bits as
// cuRAND's at offsets that reach every part of the counter (the subsequence words, the block counter's low word
// wrapping into its high word at q = 2^32 65536, i.e. offset 2^50), for seeds using both key words, lengths that end
// inside a block, and draws long enough to be split across threads.
TEST(Rng, UniformsAreCuRandsAtAnyOffset) {
  for (uint64_t seed : {UINT64_C(0), UINT64_C(1), UINT64_C(0xDEADBEEFCAFEF00D)}) {
    cuvae_noise *g = cuvae_noise_create(seed);
    ASSERT_NE(g, nullptr) << cuvae_last_error();
    const uint64_t offsets[] = {0, 4, 262140, 262144, (UINT64_C(1) << 34) + 12, (UINT64_C(1) << 50) - 8,
                                (UINT64_C(1) << 50) + 4096};
    for (uint64_t offset : offsets)
      for (size_t n : {size_t(1), size_t(3), size_t(5), size_t(70001), size_t(300000)}) {
        std::vector<float> got(n);
        ASSERT_EQ(cuvae_noise_uniform(g, offset, got.data(), n), 0) << cuvae_last_error();
        const std::vector<float> want = OneGenerator(seed, offset, n, false);
        ASSERT_EQ(0, std::memcmp(got.data(), want.data(), n * sizeof(float)))
            << "seed " << seed << " offset " << offset << " n " << n;
      }
    cuvae_noise_destroy(g);
  }
}

// Normals too (src/core/philox.c: Box-Muller of the pair with glibc's logf and sincosf): cuRAND's host generator's
// bits at the same offsets, seeds and lengths (odd lengths end inside a pair).
TEST(Rng, NormalsAreCuRandsAtAnyOffset) {
  for (uint64_t seed : {UINT64_C(0), UINT64_C(7), UINT64_C(0xDEADBEEFCAFEF00D)}) {
    cuvae_noise *g = cuvae_noise_create(seed);
    ASSERT_NE(g, nullptr) << cuvae_last_error();
    const uint64_t offsets[] = {0, 4, 262140, (UINT64_C(1) << 34) + 12, (UINT64_C(1) << 50) + 4096};
    for (uint64_t offset : offsets)
      for (size_t n : {size_t(1), size_t(3), size_t(6), size_t(70001), size_t(300000)}) {
        std::vector<float> got(n);
        ASSERT_EQ(cuvae_noise_normal(g, offset, got.data(), n), 0) << cuvae_last_error();
        const std::vector<float> want = OneGenerator(seed, offset, n, true);
        size_t differ = 0;
        for (size_t k = 0; k < n; k++) differ += std::memcmp(&got[k], &want[k], sizeof(float)) != 0;
        ASSERT_EQ(0u, differ) << "seed " << seed << " offset " << offset << " n " << n;
      }
    cuvae_noise_destroy(g);
  }
}

}  // namespace
