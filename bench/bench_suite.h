// The benchmark suite's model shapes (the models of configs/bench/A.ini .. D.ini) and their parameter counts, for
// the kernel micro-benchmarks of the CPU twins (kernels_cpu_bench.cc) and of the CUDA kernels (kernels_gpu_bench.cu).
#pragma once
#include <cstddef>
#include <vector>

namespace bench_suite {

// One model of the benchmark suite: batch B, latent Z, data dimension D (Fashion-MNIST: 784 pixels, every model),
// encoder hidden widths (the decoder mirrors them).
struct Shape {
  const char *name;
  int B, Z, D;
  std::vector<int> hidden;
};

inline const std::vector<Shape> &shapes() {
  static const std::vector<Shape> suite = {
      {"A", 128, 20, 784, {400}},
      {"B", 256, 256, 784, {1024, 1024}},
      {"C", 512, 1024, 784, {2048, 2048}},
      {"D", 4096, 4096, 784, {8192, 8192}},
  };
  return suite;
}

// Parameters of one model: sum over its dense layers of in*out (W) + out (b), over the encoder
// D -> h0 -> ... -> h_{k-1} -> 2Z (the [mu | lv] head) and the decoder Z -> h_{k-1} -> ... -> h0 -> D.
// A: 652,824; B: 4,494,608; C: 17,902,352; D: 247,767,824. (The parameter buffer adds its alignment gaps,
// include/cuvae/model.h: at most 64 floats per weight and bias block.)
inline size_t param_count(const Shape &s) {
  auto layer = [](size_t in, size_t out) { return in * out + out; };
  size_t n = 0, in = (size_t)s.D;
  for (int h : s.hidden) n += layer(in, (size_t)h), in = (size_t)h;
  n += layer(in, 2 * (size_t)s.Z);
  in = (size_t)s.Z;
  for (auto it = s.hidden.rbegin(); it != s.hidden.rend(); ++it) n += layer(in, (size_t)*it), in = (size_t)*it;
  return n + layer(in, (size_t)s.D);
}

}  // namespace bench_suite
