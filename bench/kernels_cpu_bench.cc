// Micro-benchmarks of the fused kernels' CPU twins (include/cuvae/cpu.h, src/backend/cpu/*.c) at the shapes of the
// benchmark suite (configs/bench/{A,B,C,D}.ini), with BM_copy (memcpy) as the machine's bandwidth reference.
// The results and how to read them are in docs/PERFORMANCE.md, "Kernel micro-benchmarks".
//
//   build-kbench/cuvae-kernels-bench-cpu --benchmark_min_time=0.1
//
// Every benchmark reports bytes/s through SetBytesProcessed. The bytes are the napkin minimum a call must move:
// each float array it reads counted once, each it writes counted once (4 bytes per float), ignoring caches and
// write-allocate traffic. Each benchmark repeats the call on the same buffers, so the small shapes run from the
// caches (the L3 of this machine class is larger than every working set up to shape C); BM_copy at the same
// footprints tells what "fast" means at each cache level.
//
// The twins are single-threaded loops, so BM_copy is single-threaded too.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include <curand.h>

#include "bench_suite.h"
#include "cuvae/cpu.h"
#include "cuvae/rng.h"

namespace {

using bench_suite::param_count;
using bench_suite::Shape;
const std::vector<Shape> &suite() { return bench_suite::shapes(); }

const Shape &shape_of_batch(int64_t B) {
  for (const Shape &s : suite())
    if (s.B == B) return s;
  return suite().front();
}

// Deterministic fill, uniform in [lo, hi): a 32-bit LCG (cheap enough for the 248M parameters of model D).
std::vector<float> filled(size_t n, float lo, float hi, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 1u;
  for (float &f : v) {
    x = x * 1664525u + 1013904223u;
    f = lo + (hi - lo) * (float)(x >> 8) * (1.0f / 16777216.0f);
  }
  return v;
}

void set_bytes(benchmark::State &state, double bytes_per_call) {
  state.SetBytesProcessed((int64_t)((double)state.iterations() * bytes_per_call));
}

// ---- argument sets ---------------------------------------------------------------------------------------

void args_bz(benchmark::internal::Benchmark *b) {
  b->ArgNames({"B", "Z"});
  for (const Shape &s : suite()) b->Args({s.B, s.Z});
}
void args_bd(benchmark::internal::Benchmark *b) {
  b->ArgNames({"B", "D"});
  for (const Shape &s : suite()) b->Args({s.B, s.D});
}
// Hidden layers: the widest hidden width of each model (every hidden layer of B, C, D has that width).
void args_bn(benchmark::internal::Benchmark *b) {
  b->ArgNames({"B", "n"});
  for (const Shape &s : suite()) b->Args({s.B, s.hidden.front()});
}
void args_params(benchmark::internal::Benchmark *b) {
  b->ArgNames({"n"});
  for (const Shape &s : suite()) b->Args({(int64_t)param_count(s)});
}

// ---- the CPU twins ---------------------------------------------------------------------------------------

// z = mu + exp(0.5 lv) eps;  kl_row[b] = 0.5 sum_j (mu^2 + exp(lv) - 1 - lv).
// Bytes: reads mulv [B][2Z] and eps [B][Z] (3 B Z floats), writes z [B][Z] and kl_row [B]: 4 (4 B Z + B).
void BM_reparam_kl_forward(benchmark::State &state) {
  const int B = (int)state.range(0), Z = (int)state.range(1);
  const size_t bz = (size_t)B * Z;
  const std::vector<float> mulv = filled(2 * bz, -2.0f, 2.0f, 1), eps = filled(bz, -3.0f, 3.0f, 2);
  std::vector<float> z(bz), kl(B);
  for (auto _ : state) {
    reparam_kl_forward_cpu(mulv.data(), eps.data(), z.data(), kl.data(), B, Z);
    benchmark::DoNotOptimize(z.data());
    benchmark::DoNotOptimize(kl.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * (4.0 * (double)bz + B));
  state.SetLabel(shape_of_batch(B).name);
}
BENCHMARK(BM_reparam_kl_forward)->Apply(args_bz);

// dmu = dz + s mu;  dlv = dz eps 0.5 exp(0.5 lv) + s 0.5 (exp(lv) - 1).
// Bytes: reads mulv (2 B Z), eps (B Z), dz (B Z), writes dmulv (2 B Z): 4 * 6 B Z.
void BM_reparam_kl_backward(benchmark::State &state) {
  const int B = (int)state.range(0), Z = (int)state.range(1);
  const size_t bz = (size_t)B * Z;
  const std::vector<float> mulv = filled(2 * bz, -2.0f, 2.0f, 1), eps = filled(bz, -3.0f, 3.0f, 2),
                           dz = filled(bz, -1.0f, 1.0f, 3);
  std::vector<float> dmulv(2 * bz);
  for (auto _ : state) {
    reparam_kl_backward_cpu(mulv.data(), eps.data(), dz.data(), 1.0f / (float)B, dmulv.data(), B, Z);
    benchmark::DoNotOptimize(dmulv.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * 6.0 * (double)bz);
  state.SetLabel(shape_of_batch(B).name);
}
BENCHMARK(BM_reparam_kl_backward)->Apply(args_bz);

// nll_row[b] = sum_d softplus(l) - x l;  dl = scale (sigmoid(l) - x).
// Bytes: reads logits and x (2 B D), writes dlogits (B D) and nll_row (B): 4 (3 B D + B).
void BM_bernoulli_nll_grad(benchmark::State &state) {
  const int B = (int)state.range(0), D = (int)state.range(1);
  const size_t bd = (size_t)B * D;
  const std::vector<float> logits = filled(bd, -8.0f, 8.0f, 4), x = filled(bd, 0.0f, 1.0f, 5);
  std::vector<float> nll(B), dl(bd);
  for (auto _ : state) {
    bernoulli_nll_grad_cpu(logits.data(), x.data(), nll.data(), dl.data(), 1.0f / (float)B, B, D);
    benchmark::DoNotOptimize(dl.data());
    benchmark::DoNotOptimize(nll.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * (3.0 * (double)bd + B));
  state.SetLabel(shape_of_batch(B).name);
}
BENCHMARK(BM_bernoulli_nll_grad)->Apply(args_bd);

// nll_row[b] = 0.5 sum_d [(x - f)^2 / s^2 + log s^2 + log 2pi];  df = scale (f - x) / s^2.
// Bytes: reads f and x (2 B D), writes df (B D) and nll_row (B): 4 (3 B D + B). (The twin reads f and x twice,
// once for the NLL and once for the gradient; the second read of a row comes from L1/L2.)
void BM_gaussian_nll_grad(benchmark::State &state) {
  const int B = (int)state.range(0), D = (int)state.range(1);
  const size_t bd = (size_t)B * D;
  const std::vector<float> f = filled(bd, 0.0f, 1.0f, 6), x = filled(bd, 0.0f, 1.0f, 5);
  std::vector<float> nll(B), df(bd);
  for (auto _ : state) {
    gaussian_nll_grad_cpu(f.data(), x.data(), 0.5f, 0.0, nll.data(), df.data(), 1.0f / (float)B, B, D);
    benchmark::DoNotOptimize(df.data());
    benchmark::DoNotOptimize(nll.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * (3.0 * (double)bd + B));
  state.SetLabel(shape_of_batch(B).name);
}
BENCHMARK(BM_gaussian_nll_grad)->Apply(args_bd);

// y = relu(y + b), in place over a hidden layer's [B][n] output.
// Bytes: reads y (B n) and b (n), writes y (B n): 4 (2 B n + n). Repeated in place, y stays finite: entries with
// b_j <= 0 settle at 0, the others grow by b_j <= 0.05 per call.
void BM_bias_act_forward_relu(benchmark::State &state) {
  const int B = (int)state.range(0), n = (int)state.range(1);
  const size_t bn = (size_t)B * n;
  std::vector<float> y = filled(bn, -1.0f, 1.0f, 7);
  const std::vector<float> b = filled((size_t)n, -0.05f, 0.05f, 8);
  for (auto _ : state) {
    bias_act_forward_cpu(y.data(), b.data(), B, n, CUVAE_ACT_RELU);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * (2.0 * (double)bn + n));
  state.SetLabel(shape_of_batch(B).name);
}
BENCHMARK(BM_bias_act_forward_relu)->Apply(args_bn);

// dy *= [y > 0] (relu' through the output y).
// Bytes: reads y and dy (2 B n), writes dy (B n): 4 * 3 B n. (The twin stores only where y <= 0, about half the
// entries here; every cache line of dy still gets dirty, so a full write-back is counted.)
void BM_bias_act_backward_relu(benchmark::State &state) {
  const int B = (int)state.range(0), n = (int)state.range(1);
  const size_t bn = (size_t)B * n;
  const std::vector<float> y = filled(bn, -1.0f, 1.0f, 7);
  std::vector<float> dy = filled(bn, -1.0f, 1.0f, 9);
  for (auto _ : state) {
    bias_act_backward_cpu(y.data(), dy.data(), B, n, CUVAE_ACT_RELU);
    benchmark::DoNotOptimize(dy.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * 3.0 * (double)bn);
  state.SetLabel(shape_of_batch(B).name);
}
BENCHMARK(BM_bias_act_backward_relu)->Apply(args_bn);

// Adam over the whole parameter buffer of each model: g' = s g; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
// p -= lr (m c1) / (sqrt(v c2) + eps).
// Bytes: reads p, g, m, v (4 n), writes p, m, v (3 n): 4 * 7 n. Model D: 247.8M parameters, 6.9 GB per call.
void BM_adam_update(benchmark::State &state) {
  const size_t n = (size_t)state.range(0);
  std::vector<float> p = filled(n, -0.1f, 0.1f, 10), m(n, 0.0f), v(n, 0.0f);
  const std::vector<float> g = filled(n, -1e-2f, 1e-2f, 11);
  int64_t t = 0;
  for (auto _ : state) {
    adam_update_cpu(p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, ++t, 1.0f);
    benchmark::DoNotOptimize(p.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * 7.0 * (double)n);
  for (const Shape &s : suite())
    if (param_count(s) == n) state.SetLabel(s.name);
}
BENCHMARK(BM_adam_update)->Apply(args_params);

// Minibatch gather from the Fashion-MNIST training set (60000 rows of D = 784 floats, 188 MB):
// dst[b][:] = src[rows[b]][:], rows a fixed pseudo-random draw.
// Bytes: reads B rows of D floats and B uint32 indices, writes B D floats: 4 (2 B D + B).
void BM_gather_rows(benchmark::State &state) {
  const int B = (int)state.range(0), D = (int)state.range(1);
  const int kRows = 60000;
  const std::vector<float> src = filled((size_t)kRows * D, 0.0f, 1.0f, 12);
  std::vector<uint32_t> rows((size_t)B);
  uint32_t x = 12345u;
  for (uint32_t &r : rows) {
    x = x * 1664525u + 1013904223u;
    r = (x >> 8) % (uint32_t)kRows;
  }
  std::vector<float> dst((size_t)B * D);
  for (auto _ : state) {
    gather_rows_cpu(src.data(), rows.data(), dst.data(), B, D);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 4.0 * (2.0 * (double)B * D + B));
  state.SetLabel(shape_of_batch(B).name);
}
BENCHMARK(BM_gather_rows)->Apply(args_bd);

// ---- noise ----------------------------------------------------------------------------------------------

// A step's data noise: B x D values at the offset of step 1000's draw (include/cuvae/rng.h), uniforms (dynamic
// binarization, mask corruption, dequantization; range(2) = 0) or normals (Gaussian corruption; range(2) = 1), as the
// CPU backend draws them (src/core/philox.c), against the same numbers from cuRAND's host generator placed at that
// offset (what the backend called before). Bytes: the floats written.
void noise_args(benchmark::internal::Benchmark *b) {
  b->ArgNames({"B", "D", "normal"});
  for (int normal : {0, 1})
    for (const Shape &s : suite()) b->Args({s.B, s.D, normal});
}

void BM_noise(benchmark::State &state) {
  const size_t n = (size_t)state.range(0) * (size_t)state.range(1);
  const bool normal = state.range(2) != 0;
  const uint64_t offset = 2 * 1000 * cuvae_noise_stride(n);
  std::vector<float> out(cuvae_noise_stride(n));
  cuvae_noise *g = cuvae_noise_create(1);
  for (auto _ : state) {
    if ((normal ? cuvae_noise_normal : cuvae_noise_uniform)(g, offset, out.data(), n))
      state.SkipWithError("cuvae_noise failed");
    benchmark::DoNotOptimize(out.data());
  }
  cuvae_noise_destroy(g);
  set_bytes(state, 4.0 * (double)n);
  state.SetLabel(shape_of_batch(state.range(0)).name);
}
BENCHMARK(BM_noise)->Apply(noise_args);

void BM_noise_curand_host(benchmark::State &state) {
  const size_t n = (size_t)state.range(0) * (size_t)state.range(1);
  const bool normal = state.range(2) != 0;
  const uint64_t offset = 2 * 1000 * cuvae_noise_stride(n);
  std::vector<float> out(cuvae_noise_stride(n));
  curandGenerator_t gen;
  curandCreateGeneratorHost(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10);
  curandSetPseudoRandomGeneratorSeed(gen, 1);
  for (auto _ : state) {
    const curandStatus_t st = curandSetGeneratorOffset(gen, offset);
    const curandStatus_t gs = normal ? curandGenerateNormal(gen, out.data(), out.size(), 0.0f, 1.0f)
                                     : curandGenerateUniform(gen, out.data(), out.size());
    if (st != CURAND_STATUS_SUCCESS || gs != CURAND_STATUS_SUCCESS) state.SkipWithError("cuRAND failed");
    benchmark::DoNotOptimize(out.data());
  }
  curandDestroyGenerator(gen);
  set_bytes(state, 4.0 * (double)n);
  state.SetLabel(shape_of_batch(state.range(0)).name);
}
BENCHMARK(BM_noise_curand_host)->Apply(noise_args);

// ---- the reference ---------------------------------------------------------------------------------------

// memcpy of N MiB: reads N, writes N, counted 2 N bytes, the same convention as above. Footprints (2 N) from
// L2-sized (2 MiB) through L3-sized (16, 128 MiB) to DRAM (2 GiB, beyond the 300 MiB L3 of this machine class).
void BM_copy(benchmark::State &state) {
  const size_t bytes = (size_t)state.range(0) << 20;
  std::vector<char> src(bytes), dst(bytes);
  std::iota(src.begin(), src.end(), (char)0);
  std::memset(dst.data(), 1, bytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2.0 * (double)bytes);
}
BENCHMARK(BM_copy)->ArgName("MiB")->Arg(1)->Arg(8)->Arg(64)->Arg(1024);

}  // namespace

BENCHMARK_MAIN();
