// bf16 precision on the CPU (docs/MATH.md section 8): the rounding of include/cuvae/bf16.h against its definition,
// the bf16 dense layer (oneDNN's matmul) against double references on its bf16 operands and against the fp32
// operands (bound (8.3)), Adam's bf16 weight copy, and the bf16 backend's loss against the fp32 loss at the same
// parameters. On a CPU without bf16 units the library refuses bf16 and these tests skip (the refusal itself is
// checked by Bf16Cli.RefusedWithoutBf16Units).
//
// Bounds, u = 2^-24 (fp32), u16 = 2^-8 (bf16), gamma_K = K u / (1 - K u):
// - A GEMM entry on bf16 operands: the products are exact in fp32 and the K terms summed in fp32 in some order, so
//   |c - exact| <= gamma_K sum|a||b| (Higham 3.1). oneDNN's AMX / AVX512-BF16 instructions flush subnormal products
//   and results to zero: at most K FLT_MIN more. The bias add is one more term (gamma_{K+1}, |b| in the sum).
// - Against the fp32 operands: each operand rounds once, (1 + d1)(1 + d2) with |d| <= u16, so (8.3):
//   |c - a.b| <= (2 u16 + u16^2 + gamma_K) sum|a||b| + K FLT_MIN.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuvae/bf16.h"
#include "cuvae/cpu.h"
#include "cuvae/error.h"
#include "gemm_dnnl.h"
#include "test_util.h"

namespace {

const double kU = std::ldexp(1.0, -24), kU16 = std::ldexp(1.0, -8);
double Gamma(int K) { return K * kU / (1 - K * kU); }

// Skips the calling test when oneDNN has no bf16 units on this CPU (the library then refuses precision = bf16).
#define SKIP_WITHOUT_BF16_UNITS()                                                                   \
  do {                                                                                              \
    char desc_[160];                                                                                \
    if (cuvae_cpu_bf16_gemm_check(desc_, sizeof desc_)) GTEST_SKIP() << cuvae_last_error();        \
  } while (0)

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// The definition (8.1), written independently: the two bf16 neighbours of f (truncation and the next value away
// from zero), the nearer in exact double arithmetic, a tie to the even last bit.
uint16_t RoundByDefinition(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::isnan(f)) return (uint16_t)((u >> 16) | 0x40);
  const uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
  if ((u & 0xffff) == 0) return lo;
  const double dlo = std::fabs((double)f - (double)cuvae_bf16_to_float(lo));
  const double dhi = (hi & 0x7f80) == 0x7f80 && (hi & 0x7f) == 0
                         ? std::fabs(std::ldexp(1.0, 128) * (f < 0 ? -1 : 1) - (double)f)  // the overflow point
                         : std::fabs((double)cuvae_bf16_to_float(hi) - (double)f);
  if (dlo != dhi) return dlo < dhi ? lo : hi;
  return (lo & 1) ? hi : lo;
}

TEST(Bf16, RoundingIsNearestEven) {
  std::vector<uint32_t> bits = {0x00000000u, 0x80000000u, 0x3f808000u /* tie, even below */,
                                0x3f818000u /* tie, odd below */, 0x3f807fffu, 0x3f808001u, 0x00008000u,
                                0x00018000u /* subnormal ties */, 0x7f7fffffu /* rounds to Inf */, 0x7f7f7fffu,
                                0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u /* signalling NaN */, 0xffffffffu};
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; i++) bits.push_back(rng());
  for (uint32_t b : bits) {
    const float f = FromBits(b);
    const uint16_t got = cuvae_bf16_from_float(f), want = RoundByDefinition(f);
    ASSERT_EQ(got, want) << "bits 0x" << std::hex << b;
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(cuvae_bf16_to_float(got)));
    }
  }
  // to_bf16_cpu (the twin of kernels/bf16.cu) is the same rounding, element for element, over a threaded length.
  std::vector<float> x(100003);
  for (size_t i = 0; i < x.size(); i++) x[i] = FromBits(rng());
  std::vector<uint16_t> y(x.size());
  to_bf16_cpu(x.data(), y.data(), x.size());
  for (size_t i = 0; i < x.size(); i++) ASSERT_EQ(y[i], cuvae_bf16_from_float(x[i])) << i;
}

struct Shape {
  int B, in, out;
};
const Shape kShapes[] = {{1, 7, 5}, {3, 33, 17}, {129, 784, 400}, {64, 1000, 3}, {200, 20, 784}};

std::vector<float> Uniform(size_t n, unsigned seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float &f : v) f = d(rng);
  return v;
}

std::vector<uint16_t> ToBf16(const std::vector<float> &v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); i++) r[i] = cuvae_bf16_from_float(v[i]);
  return r;
}

double F(uint16_t h) { return cuvae_bf16_to_float(h); }

TEST(Bf16, DenseForwardWithinItsBound) {
  SKIP_WITHOUT_BF16_UNITS();
  for (const Shape &s : kShapes) {
    const std::vector<float> x = Uniform((size_t)s.B * s.in, 1, -1, 1), W = Uniform((size_t)s.out * s.in, 2, -.5, .5),
                             b = Uniform(s.out, 3, -.1f, .1f);
    const std::vector<uint16_t> x16 = ToBf16(x), W16 = ToBf16(W);
    std::vector<float> y((size_t)s.B * s.out);
    dense_forward_bf16_cpu(x16.data(), W16.data(), b.data(), y.data(), s.B, s.in, s.out, CUVAE_ACT_RELU);
    ASSERT_EQ(gemm_take_failure(), 0) << cuvae_last_error();
    double worst_bf16 = 0, worst_fp32_ratio = 0;
    for (int r = 0; r < s.B; r++)
      for (int o = 0; o < s.out; o++) {
        double on16 = b[o], exact = b[o], mag16 = std::fabs(b[o]), mag = std::fabs(b[o]);
        for (int i = 0; i < s.in; i++) {
          const size_t xi = (size_t)r * s.in + i, wi = (size_t)o * s.in + i;
          on16 += F(x16[xi]) * F(W16[wi]);
          mag16 += std::fabs(F(x16[xi]) * F(W16[wi]));
          exact += (double)x[xi] * W[wi];
          mag += std::fabs((double)x[xi] * W[wi]);
        }
        const double got = y[(size_t)r * s.out + o];
        // ReLU is 1-Lipschitz: the GEMM's bound holds after it. On the bf16 operands: gamma_{K+1} sum + flushes.
        const double bound16 = Gamma(s.in + 1) * mag16 + s.in * (double)FLT_MIN;
        ASSERT_LE(std::fabs(got - std::max(on16, 0.0)), bound16) << s.B << "x" << s.in << "x" << s.out;
        // (8.3) against the fp32 operands.
        const double bound = (2 * kU16 + kU16 * kU16 + Gamma(s.in + 1)) * mag + s.in * (double)FLT_MIN;
        ASSERT_LE(std::fabs(got - std::max(exact, 0.0)), bound);
        worst_bf16 = std::max(worst_bf16, std::fabs(got - std::max(on16, 0.0)) / bound16);
        worst_fp32_ratio = std::max(worst_fp32_ratio, std::fabs(got - std::max(exact, 0.0)) / (Gamma(s.in + 1) * mag));
      }
    // The operands really were bf16: somewhere the result misses the fp32 GEMM's own bound.
    if (s.in >= 20) {
      EXPECT_GT(worst_fp32_ratio, 1.0) << "no bf16 rounding visible at " << s.in;
    }
    std::printf("bf16 dense %dx%dx%d: max error %.3g of its bound on the bf16 operands; %.3g x the fp32 GEMM bound\n",
                s.B, s.in, s.out, worst_bf16, worst_fp32_ratio);
  }
}

// dense_backward_bf16_cpu against (8.2) computed in double from its bf16 operands: d = dy * relu'(y) exactly (a
// multiply by 0 or 1), dy16 = bf16(d) bit for bit, db = fp32 column sums of d (B terms: gamma_B sum|d|), dW and dx
// GEMMs on bf16 operands (gamma_K sum|a||b| + K FLT_MIN, K = B and out).
TEST(Bf16, DenseBackwardWithinItsBound) {
  SKIP_WITHOUT_BF16_UNITS();
  for (const Shape &s : kShapes) {
    const std::vector<uint16_t> x16 = ToBf16(Uniform((size_t)s.B * s.in, 4, -1, 1)),
                                W16 = ToBf16(Uniform((size_t)s.out * s.in, 5, -.5, .5));
    std::vector<float> y = Uniform((size_t)s.B * s.out, 6, -1, 1), dy = Uniform(y.size(), 7, -1, 1);
    const std::vector<float> dy0 = dy;
    std::vector<uint16_t> dy16(y.size());
    std::vector<float> dW((size_t)s.out * s.in), db(s.out), dx((size_t)s.B * s.in);
    dense_backward_bf16_cpu(x16.data(), W16.data(), y.data(), dy.data(), dy16.data(), dW.data(), db.data(), dx.data(),
                            s.B, s.in, s.out, CUVAE_ACT_RELU);
    ASSERT_EQ(gemm_take_failure(), 0) << cuvae_last_error();
    for (size_t k = 0; k < y.size(); k++) {
      ASSERT_EQ(dy[k], y[k] > 0 ? dy0[k] : 0.0f) << k;
      ASSERT_EQ(dy16[k], cuvae_bf16_from_float(dy[k])) << k;
    }
    for (int o = 0; o < s.out; o++) {
      double want = 0, mag = 0;
      for (int r = 0; r < s.B; r++) want += dy[(size_t)r * s.out + o], mag += std::fabs(dy[(size_t)r * s.out + o]);
      ASSERT_LE(std::fabs(db[o] - want), Gamma(s.B) * mag) << "db " << o;
      for (int i = 0; i < s.in; i++) {
        double w = 0, m = 0;
        for (int r = 0; r < s.B; r++) {
          const double t = F(dy16[(size_t)r * s.out + o]) * F(x16[(size_t)r * s.in + i]);
          w += t, m += std::fabs(t);
        }
        ASSERT_LE(std::fabs(dW[(size_t)o * s.in + i] - w), Gamma(s.B) * m + s.B * (double)FLT_MIN) << "dW";
      }
    }
    for (int r = 0; r < s.B; r++)
      for (int i = 0; i < s.in; i++) {
        double w = 0, m = 0;
        for (int o = 0; o < s.out; o++) {
          const double t = F(dy16[(size_t)r * s.out + o]) * F(W16[(size_t)o * s.in + i]);
          w += t, m += std::fabs(t);
        }
        ASSERT_LE(std::fabs(dx[(size_t)r * s.in + i] - w), Gamma(s.out) * m + s.out * (double)FLT_MIN) << "dx";
      }
  }
}

// adam_update_bf16_cpu is adam_update_cpu bit for bit, and its copy is bf16 of the updated parameters bit for bit,
// over a length that splits into several threaded chunks with a tail.
TEST(Bf16, AdamWritesTheRoundedWeights) {
  const size_t n = 3 * (1 << 14) + 77;
  std::vector<float> p = Uniform(n, 8, -1, 1), g = Uniform(n, 9, -1e-2f, 1e-2f), m(n, 0.f), v(n, 0.f);
  std::vector<float> p2 = p, m2 = m, v2 = v;
  std::vector<uint16_t> p16(n, 0xdead);
  for (int64_t t = 1; t <= 3; t++) {
    adam_update_cpu(p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, t, 0.5f);
    adam_update_bf16_cpu(p2.data(), g.data(), m2.data(), v2.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, t, 0.5f,
                         p16.data());
  }
  ASSERT_EQ(0, std::memcmp(p.data(), p2.data(), n * sizeof(float)));
  ASSERT_EQ(0, std::memcmp(m.data(), m2.data(), n * sizeof(float)));
  ASSERT_EQ(0, std::memcmp(v.data(), v2.data(), n * sizeof(float)));
  for (size_t i = 0; i < n; i++) ASSERT_EQ(p16[i], cuvae_bf16_from_float(p2[i])) << i;
}

// ---- the command line ----------------------------------------------------------------------------------------

struct Bf16Cli : ::testing::Test {
  std::string dir, ini;
  void SetUp() override {
    dir = cuvae_test::make_temp_dir();
    ASSERT_FALSE(dir.empty());
    std::vector<float> tr = cuvae_test::synthetic_data(256, 64, 1), te = cuvae_test::synthetic_data(50, 64, 2);
    cuvae_test::write_file(dir + "/train.npy", cuvae_test::npy_bytes("<f4", "(256, 64)", tr.data(), tr.size() * 4));
    cuvae_test::write_file(dir + "/test.npy", cuvae_test::npy_bytes("<f4", "(50, 64)", te.data(), te.size() * 4));
    ini = dir + "/bf16.ini";
    cuvae_test::write_file(ini, "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir +
                                    "/test.npy\n[model]\nhidden = 32\nlatent = 4\n[train]\nbatch_size = 32\n"
                                    "epochs = 1\nthreads = 1\nprecision = bf16\n");
  }
  cuvae_test::Result Run(const std::string &args, const std::string &env = "") {
    return cuvae_test::run_shell(env + " " + CUVAE_BIN + " " + args);
  }
};

// A CPU without bf16 units (oneDNN limited to AVX-512 without BF16, or to AVX2): one message naming the shortfall,
// exit 1, no run directory left behind; fp32 still trains there.
TEST_F(Bf16Cli, RefusedWithoutBf16Units) {
  for (const char *isa : {"AVX512_CORE", "AVX2"}) {
    const cuvae_test::Result r = Run("train " + ini + " --out " + dir + "/r_" + isa, std::string("ONEDNN_MAX_CPU_ISA=") + isa);
    EXPECT_EQ(r.code, 1) << isa << ": " << r.out;
    EXPECT_NE(r.out.find("this CPU has no bf16 matrix units"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Use precision = fp32"), std::string::npos) << r.out;
    EXPECT_EQ(access((dir + "/r_" + isa + "/checkpoint.cuvae").c_str(), F_OK), -1);
  }
  const cuvae_test::Result r =
      Run("train " + ini + " --set train.precision=fp32 --out " + dir + "/fp32", "ONEDNN_MAX_CPU_ISA=AVX2");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("GEMMs (cpu, precision fp32): oneDNN"), std::string::npos) << r.out;
}

// Checkpoints hold fp32 parameters: a bf16 run resumes in fp32 and back, and evaluates in every precision; the
// banner names oneDNN for bf16. eval's --precision is checked.
TEST_F(Bf16Cli, CheckpointsMoveBetweenPrecisions) {
  SKIP_WITHOUT_BF16_UNITS();
  cuvae_test::Result r = Run("train " + ini + " --out " + dir + "/run --set train.max_steps=5");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("GEMMs (cpu, precision bf16): oneDNN"), std::string::npos) << r.out;
  r = Run("train --resume " + dir + "/run --set train.max_steps=8 --set train.precision=fp32");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"step\": 8"), std::string::npos) << r.out;
  r = Run("train --resume " + dir + "/run --set train.epochs=2 --set train.max_steps=16 --set train.precision=bf16");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"step\": 16"), std::string::npos) << r.out;
  double nelbo[3];
  const char *names[3] = {"fp32", "tf32", "bf16"};
  for (int k = 0; k < 3; k++) {
    r = Run("eval " + dir + "/run --precision " + names[k]);
    ASSERT_EQ(r.code, 0) << r.out;
    const std::string key = "\"nelbo\": ";
    const size_t at = r.out.find(key);
    ASSERT_NE(at, std::string::npos) << r.out;
    nelbo[k] = std::atof(r.out.c_str() + at + key.size());
  }
  EXPECT_EQ(nelbo[0], nelbo[1]);  // the CPU has no TF32: fp32 bit for bit
  // fp32 vs bf16 at the same parameters: tests/test_bf16_backend.cc bounds that difference; here only a sanity check
  // that the checkpoint evaluates to the same model in bf16: within 1% of the NELBO (measured: 5e-5 nats at 44.75).
  std::printf("eval nelbo fp32 %.6f, bf16 %.6f\n", nelbo[0], nelbo[2]);
  EXPECT_NEAR(nelbo[0], nelbo[2], 0.01 * std::fabs(nelbo[0]));
  EXPECT_NE(nelbo[0], nelbo[2]);  // and bf16 really ran
  // On a CPU without bf16 units: eval in the checkpoint's bf16 is refused with the reason, eval in fp32 and the
  // pictures (which open every checkpoint in fp32) work.
  r = Run("eval " + dir + "/run", "ONEDNN_MAX_CPU_ISA=AVX2");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("this CPU has no bf16 matrix units"), std::string::npos) << r.out;
  EXPECT_EQ(Run("eval " + dir + "/run --precision fp32", "ONEDNN_MAX_CPU_ISA=AVX2").code, 0);
  r = Run("sample " + dir + "/run --out " + dir + "/s.png", "ONEDNN_MAX_CPU_ISA=AVX2");
  EXPECT_EQ(r.code, 0) << r.out;
  r = Run("eval " + dir + "/run --precision fp16");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--precision 'fp16': expected fp32, tf32 or bf16"), std::string::npos) << r.out;
}

}  // namespace
