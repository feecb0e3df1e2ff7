// The emulated cuRAND host API (emu_curand.cc): a generator from curandCreateGenerator is libcurand's host
// generator, ordered on its stream, writing into device (cudaMalloc) memory. Its raw integers and uniforms equal,
// bit for bit, those of a generator made directly with curandCreateGeneratorHost with the same seed and offset; its
// Philox normals are the device's formula of the same integers, within curand_bound.h's bound of the host's.
#include <cuda_runtime_api.h>
#include <curand.h>
#include <curand_globals.h>
#include <gtest/gtest.h>
#include <math.h>
#include <string.h>

#include <vector>

#include "curand_bound.h"

namespace {

const unsigned long long kSeed = 0x5eedULL, kOffset = 7;

// A generator of `type` made by `create`, seeded and offset alike.
curandGenerator_t make(curandStatus_t (*create)(curandGenerator_t *, curandRngType_t),
                       curandRngType_t type = CURAND_RNG_PSEUDO_PHILOX4_32_10, unsigned long long offset = kOffset) {
  curandGenerator_t g = nullptr;
  EXPECT_EQ(create(&g, type), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandSetPseudoRandomGeneratorSeed(g, kSeed), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandSetGeneratorOffset(g, offset), CURAND_STATUS_SUCCESS);
  return g;
}

// cudaMalloc'd floats, filled with a sentinel so that untouched memory is recognisable.
struct DevFloats {
  float *p = nullptr;
  size_t n;
  explicit DevFloats(size_t n_) : n(n_) {
    EXPECT_EQ(cudaMalloc((void **)&p, n * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemset(p, 0, n * sizeof(float)), cudaSuccess);
  }
  ~DevFloats() { cudaFree(p); }
  std::vector<float> get() const {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs `gen` on an emulated device generator and a host generator twice (the second call continues each stream)
// and compares the outputs bit for bit. `floats`: the outputs are floats, which must be finite.
template <class Gen>
void expect_same_stream(curandRngType_t type, size_t n, Gen gen, bool floats = true) {
  // The machine has no GPU: libcurand's own curandCreateGenerator would fail here, the emulation's succeeds.
  curandGenerator_t dev = make(curandCreateGenerator, type), host = make(curandCreateGeneratorHost, type);
  DevFloats out(n);
  for (int call = 0; call < 2; ++call) {
    std::vector<float> expected(n);
    ASSERT_EQ(gen(host, expected.data()), CURAND_STATUS_SUCCESS);
    ASSERT_EQ(gen(dev, out.p), CURAND_STATUS_SUCCESS);
    const std::vector<float> got = out.get();
    EXPECT_TRUE(same_bits(got, expected)) << "call " << call << ": " << got[0] << " vs " << expected[0];
    for (float v : got) ASSERT_TRUE(!floats || isfinite(v));
  }
  EXPECT_EQ(curandDestroyGenerator(dev), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandDestroyGenerator(host), CURAND_STATUS_SUCCESS);
}

// The host generator's normals are the host branch of _curand_box_muller (curand_normal.h: sinf, cosf, logf) on
// consecutive pairs of its raw integers from an even stream position, bit for bit: the premise of emu_curand.cc's
// device formula.
TEST(EmuCurand, HostPhiloxNormalsAreBoxMullerOfConsecutivePairs) {
  const curandRngType_t philox = CURAND_RNG_PSEUDO_PHILOX4_32_10;
  curandGenerator_t normals = make(curandCreateGeneratorHost, philox, 8), raw = make(curandCreateGeneratorHost, philox, 8);
  const size_t n = 4096;
  std::vector<float> z(n);
  std::vector<unsigned> x(n);
  ASSERT_EQ(curandGenerateNormal(normals, z.data(), n, 0.0f, 1.0f), CURAND_STATUS_SUCCESS);
  ASSERT_EQ(curandGenerate(raw, x.data(), n), CURAND_STATUS_SUCCESS);
  for (size_t i = 0; i < n; i += 2) {
    const float u = x[i] * CURAND_2POW32_INV + (CURAND_2POW32_INV / 2);
    const float v = x[i + 1] * CURAND_2POW32_INV_2PI + (CURAND_2POW32_INV_2PI / 2);
    const float s = sqrtf(-2.0f * logf(u));
    ASSERT_EQ(z[i], sinf(v) * s) << i;
    ASSERT_EQ(z[i + 1], cosf(v) * s) << i;
  }
  EXPECT_EQ(curandDestroyGenerator(normals), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandDestroyGenerator(raw), CURAND_STATUS_SUCCESS);
}

// Philox normals of an emulated device generator, two calls in a row (the second continues the stream): each within
// curand_bound.h's bound of the host generator's (mean 0.5, stddev 2), and many not equal to it, as on a GPU.
// From offset 8 (an even position: the CUDA backend draws at multiples of 4).
TEST(EmuCurand, PhiloxNormalsFollowTheDeviceFormula) {
  const curandRngType_t philox = CURAND_RNG_PSEUDO_PHILOX4_32_10;
  curandGenerator_t dev = make(curandCreateGenerator, philox, 8), host = make(curandCreateGeneratorHost, philox, 8),
                    raw = make(curandCreateGeneratorHost, philox, 8);
  const size_t n = 1002;
  DevFloats out(n);
  for (int call = 0; call < 2; ++call) {
    std::vector<float> expected(n);
    std::vector<unsigned> x(n);
    ASSERT_EQ(curandGenerateNormal(host, expected.data(), n, 0.5f, 2.0f), CURAND_STATUS_SUCCESS);
    ASSERT_EQ(curandGenerate(raw, x.data(), n), CURAND_STATUS_SUCCESS);
    ASSERT_EQ(curandGenerateNormal(dev, out.p, n, 0.5f, 2.0f), CURAND_STATUS_SUCCESS);
    const std::vector<float> got = out.get();
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
      ASSERT_LE(fabs((double)got[i] - expected[i]), curand_bound::normal_bound(x[i & ~(size_t)1], 0.5, 2.0, expected[i]))
          << "call " << call << ", normal " << i << ": " << got[i] << " vs " << expected[i];
      differ += got[i] != expected[i];
    }
    EXPECT_GT(differ, n / 10) << "call " << call << ": the device formula is (almost) the host's";
  }
  EXPECT_EQ(curandDestroyGenerator(dev), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandDestroyGenerator(host), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandDestroyGenerator(raw), CURAND_STATUS_SUCCESS);
}

TEST(EmuCurand, PhiloxUniformMatchesHostGenerator) {
  expect_same_stream(CURAND_RNG_PSEUDO_PHILOX4_32_10, 1001,
                     [](curandGenerator_t g, float *p) { return curandGenerateUniform(g, p, 1001); });
}

TEST(EmuCurand, DefaultGeneratorMatchesHostGenerator) {
  expect_same_stream(CURAND_RNG_PSEUDO_DEFAULT, 64,
                     [](curandGenerator_t g, float *p) { return curandGenerateNormal(g, p, 64, 0.0f, 1.0f); });
}

// libcurand's own functions (not overridden by the emulation) work on the emulated generator.
TEST(EmuCurand, RealLibraryFunctionsWorkOnEmulatedGenerator) {
  expect_same_stream(
      CURAND_RNG_PSEUDO_PHILOX4_32_10, 256,
      [](curandGenerator_t g, float *p) {
        return curandGenerate(g, reinterpret_cast<unsigned int *>(p), 256);  // raw 32-bit words, compared as bits
      },
      false);
  int version = 0;
  EXPECT_EQ(curandGetVersion(&version), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(version, CURAND_VERSION);
}

// Generation on a created stream is ordered there; the result is the same stream of numbers.
TEST(EmuCurand, GeneratesOnItsStream) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  curandGenerator_t dev = make(curandCreateGenerator), host = make(curandCreateGeneratorHost);
  ASSERT_EQ(curandSetStream(dev, s), CURAND_STATUS_SUCCESS);
  DevFloats out(100);
  std::vector<float> expected(100);
  ASSERT_EQ(curandGenerateUniform(dev, out.p, 100), CURAND_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  ASSERT_EQ(curandGenerateUniform(host, expected.data(), 100), CURAND_STATUS_SUCCESS);
  EXPECT_TRUE(same_bits(out.get(), expected));
  for (float v : expected) EXPECT_TRUE(v > 0.0f && v <= 1.0f);  // cuRAND's uniform range (0, 1]
  // A generator whose stream was destroyed fails to launch.
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(curandGenerateUniform(dev, out.p, 100), CURAND_STATUS_LAUNCH_FAILURE);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(curandDestroyGenerator(dev), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandDestroyGenerator(host), CURAND_STATUS_SUCCESS);
}

// Device generators produce normals in Box-Muller pairs: an odd count is refused (the host generator, which the
// emulation uses underneath, would accept it; a generator made by curandCreateGeneratorHost still does).
TEST(EmuCurand, OddNormalCountIsRefusedLikeTheDeviceGenerator) {
  curandGenerator_t dev = make(curandCreateGenerator), host = make(curandCreateGeneratorHost);
  DevFloats out(3);
  EXPECT_EQ(curandGenerateNormal(dev, out.p, 3, 0.0f, 1.0f), CURAND_STATUS_LENGTH_NOT_MULTIPLE);
  EXPECT_TRUE(same_bits(out.get(), std::vector<float>(3, 0.0f)));
  std::vector<float> h(3);
  EXPECT_EQ(curandGenerateNormal(host, h.data(), 3, 0.0f, 1.0f), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandDestroyGenerator(dev), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandDestroyGenerator(host), CURAND_STATUS_SUCCESS);
}

// Under stream capture the numbers are drawn once, at capture (as the device generator fixes its kernel's seed
// and offset then), and every graph launch writes those same numbers; the generator has advanced exactly once.
TEST(EmuCurand, GraphReplayRewritesTheNumbersDrawnAtCapture) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  curandGenerator_t dev = make(curandCreateGenerator), host = make(curandCreateGeneratorHost);
  ASSERT_EQ(curandSetStream(dev, s), CURAND_STATUS_SUCCESS);
  const size_t n = 128;
  DevFloats out(n);
  std::vector<float> first(n), second(n);
  ASSERT_EQ(curandGenerateUniform(host, first.data(), n), CURAND_STATUS_SUCCESS);
  ASSERT_EQ(curandGenerateUniform(host, second.data(), n), CURAND_STATUS_SUCCESS);

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(curandGenerateUniform(dev, out.p, n), CURAND_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT_TRUE(same_bits(out.get(), std::vector<float>(n, 0.0f)));  // recorded, not run
  for (int launch = 0; launch < 2; ++launch) {
    ASSERT_EQ(cudaMemset(out.p, 0, n * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_TRUE(same_bits(out.get(), first)) << "launch " << launch;
  }
  ASSERT_EQ(curandGenerateUniform(dev, out.p, n), CURAND_STATUS_SUCCESS);
  EXPECT_TRUE(same_bits(out.get(), second));
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(curandDestroyGenerator(dev), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(curandDestroyGenerator(host), CURAND_STATUS_SUCCESS);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// An emulated device generator writing to host memory would fault on a GPU; the emulation reports it.
void normal_into_host_memory() {
  curandGenerator_t g;
  curandCreateGenerator(&g, CURAND_RNG_PSEUDO_PHILOX4_32_10);
  std::vector<float> h(4);
  curandGenerateNormal(g, h.data(), 4, 0.0f, 1.0f);
}

TEST(EmuCurand, HostOutputIsReported) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_DEATH(normal_into_host_memory(), "cuda_emu: curandGenerateNormal: outputPtr = .* is not device memory");
}

}  // namespace
