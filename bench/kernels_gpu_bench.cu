// Micro-benchmarks of the fused CUDA kernels (kernels/cuvae_kernels.h) at the shapes of the benchmark suite
// (configs/bench/{A,B,C,D}.ini). How to run it and how to read it: docs/PERFORMANCE.md,
// "Kernel micro-benchmarks".
//
//   cuvae-kernels-bench-gpu [--models ABCD] [--json OUT] [--smoke]
//
// For each launcher and shape: a few warm-up launches, then trials of R back-to-back launches on one stream timed
// with CUDA events (R chosen so a trial takes ~20 ms, 10 <= R <= 20000); the median trial gives us/launch.
// GB/s = bytes moved per launch / time per launch, where the bytes are the napkin minimum (each array read counted
// once, each array written counted once, 4 bytes per float), written on each kernel below; "% copy" divides by the
// rate of a device-to-device cudaMemcpy of 256 MiB (far beyond the L2) measured in the same run, counted the same
// way (read + write), the practical ceiling of a streaming kernel; "% peak" divides by the device's DRAM
// bandwidth, 2 * memory clock * bus width (H100 SXM, HBM3: 2 * 2.619 GHz * 5120 bit = 3.35 TB/s).
// Launches repeat on the same buffers, so a working set that fits the L2 (50 MB on H100) is served from it and can
// exceed both: the "L2" column marks those rows. The target is >= 80% of the copy rate for every row that does not
// fit the L2 (docs/PERFORMANCE.md). The one-thread kernels (adam_prepare, step_guard) and the
// one-block reductions on small inputs measure launch latency, not bandwidth.
//
// Without a CUDA device it prints "no CUDA device: nothing to benchmark" and exits 0. The source also builds
// against the CPU emulation of tests/emu (through cuda_compat.h; target cuvae-kernels-bench-emu in
// tests/cuda/CMakeLists.txt), where the ctest KernelsGpuBench.Smoke runs it with --smoke: model A (unless --models
// says otherwise), one launch of each kernel, small set-up buffers; it checks the calls, not the speed.
#include "cuda_compat.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench_suite.h"
#include "cuvae_kernels.h"

namespace {

// ---- errors ----------------------------------------------------------------------------------------------

void check(cudaError_t err, const char *what, const char *file, int line) {
  if (err == cudaSuccess) return;
  std::fprintf(stderr, "%s:%d: %s: %s (%s)\n", file, line, what, cudaGetErrorString(err), cudaGetErrorName(err));
  std::exit(1);
}
#define CHECK(call) check((call), #call, __FILE__, __LINE__)

// ---- the suite's shapes ----------------------------------------------------------------------------------

using bench_suite::param_count;
using bench_suite::Shape;

// ---- device buffers --------------------------------------------------------------------------------------

// Deterministic fill on the device, uniform in [lo, hi): element i gets a multiply-xorshift mix of (i, seed).
__global__ void fill_kernel(float *p, size_t n, float lo, float hi, uint32_t seed) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    uint32_t h = (uint32_t)i * 2654435761u + seed * 40503u + (uint32_t)(i >> 32);
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = lo + (hi - lo) * (float)(h >> 8) * (1.0f / 16777216.0f);
  }
}

template <typename T>
class DevBuf {
 public:
  explicit DevBuf(size_t n) : n_(n) { CHECK(cudaMalloc((void **)&p_, n * sizeof(T))); }
  ~DevBuf() { cudaFree(p_); }  // exit path only: an error here cannot be acted on
  DevBuf(const DevBuf &) = delete;
  DevBuf &operator=(const DevBuf &) = delete;
  T *get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T *p_ = nullptr;
  size_t n_;
};

void fill(const DevBuf<float> &b, float lo, float hi, uint32_t seed) {
  CUVAE_LAUNCH(fill_kernel, 1024, 256, 0, 0, b.get(), b.size(), lo, hi, seed);
  CHECK(cudaGetLastError());
}

void zero(const DevBuf<float> &b) { CHECK(cudaMemset(b.get(), 0, b.size() * sizeof(float))); }

// ---- timing ----------------------------------------------------------------------------------------------

struct Row {
  std::string kernel, model, shape;
  double bytes;  // per launch (napkin)
  double us;     // per launch, median trial
};

// One run of the benchmark: the stream every launch goes to, the rows measured so far, and the mode. --smoke (the
// ctest KernelsGpuBench.Smoke, under the CUDA emulation and AddressSanitizer) makes one launch of each kernel with
// small set-up buffers: it checks the calls and the buffers, not the speed.
struct Bench {
  cudaStream_t st;
  bool smoke;
  std::vector<Row> rows;
};

// Median us per launch of `launch` (which enqueues on b.st and returns the launcher's cudaError_t).
double time_us(const std::function<cudaError_t()> &launch, const Bench &b) {
  const int kWarmup = b.smoke ? 0 : 3, kTrials = b.smoke ? 1 : 5;
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  auto trial_ms = [&](int reps) {
    CHECK(cudaEventRecord(start, b.st));
    for (int i = 0; i < reps; i++) CHECK(launch());
    CHECK(cudaEventRecord(stop, b.st));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    return (double)ms;
  };
  // The buffers were filled on the legacy default stream (fill, cudaMemset, cudaMemcpy), which a non-blocking
  // `stream` does not wait for: finish that set-up first.
  CHECK(cudaDeviceSynchronize());
  for (int i = 0; i < kWarmup; i++) CHECK(launch());
  CHECK(cudaStreamSynchronize(b.st));
  // Calibrate: launches for a ~20 ms trial (one launch when smoke).
  int reps = 1;
  if (!b.smoke) {
    const double per = std::max(trial_ms(10) / 10.0, 1e-6);
    reps = (int)std::min(20000.0, std::max(10.0, 20.0 / per));
  }
  std::vector<double> us;
  for (int t = 0; t < kTrials; t++) us.push_back(1000.0 * trial_ms(reps) / reps);
  CHECK(cudaStreamSynchronize(b.st));
  CHECK(cudaGetLastError());  // a fault inside a kernel surfaces here
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  std::sort(us.begin(), us.end());
  return us[kTrials / 2];
}

// Times `launch` and adds its row (model "-" for the shape-independent ones).
void add_row(Bench &b, const char *kernel, const char *model, const std::string &shape, double bytes,
             const std::function<cudaError_t()> &launch) {
  b.rows.push_back({kernel, model, shape, bytes, time_us(launch, b)});
  std::fprintf(stderr, "  %-28s %s %-16s %10.2f us\n", kernel, model, shape.c_str(), b.rows.back().us);
}

std::string shape_str(const char *a, long long x, const char *b, long long y) {
  char s[64];
  if (b)
    std::snprintf(s, sizeof s, "%s=%lld %s=%lld", a, x, b, y);
  else
    std::snprintf(s, sizeof s, "%s=%lld", a, x);
  return s;
}

// ---- the kernels -----------------------------------------------------------------------------------------

// Reparameterization + KL (docs/MATH.md sections 2-3).
void bench_reparam_kl(const Shape &s, Bench &bn) {
  const int B = s.B, Z = s.Z;
  const size_t bz = (size_t)B * Z;
  const cudaStream_t st = bn.st;
  DevBuf<float> mulv(2 * bz), eps(bz), z(bz), kl(B), dz(bz), dmulv(2 * bz);
  fill(mulv, -2.0f, 2.0f, 1);
  fill(eps, -3.0f, 3.0f, 2);
  fill(dz, -1.0f, 1.0f, 3);
  // z = mu + exp(0.5 lv) eps; kl_row = 0.5 sum_j (mu^2 + exp(lv) - 1 - lv).
  // Reads mulv (2 B Z) + eps (B Z), writes z (B Z) + kl_row (B): 4 (4 B Z + B) bytes.
  add_row(bn, "reparam_kl_forward", s.name, shape_str("B", B, "Z", Z), 4.0 * (4.0 * (double)bz + B),
          [&] { return reparam_kl_forward_cuda(mulv.get(), eps.get(), z.get(), kl.get(), B, Z, st); });
  // dmu = dz + s mu; dlv = dz eps 0.5 exp(0.5 lv) + s 0.5 (exp(lv) - 1).
  // Reads mulv (2 B Z) + eps (B Z) + dz (B Z), writes dmulv (2 B Z): 4 * 6 B Z bytes.
  add_row(bn, "reparam_kl_backward", s.name, shape_str("B", B, "Z", Z), 4.0 * 6.0 * (double)bz, [&] {
    return reparam_kl_backward_cuda(mulv.get(), eps.get(), dz.get(), 1.0f / (float)B, dmulv.get(), B, Z, st);
  });
}

// Decoder likelihoods (docs/MATH.md section 4), over the [B][D] decoder output.
void bench_likelihoods(const Shape &s, Bench &bn) {
  const int B = s.B, D = s.D;
  const size_t bd = (size_t)B * D;
  const cudaStream_t st = bn.st;
  DevBuf<float> out(bd), x(bd), nll(B), grad(bd);
  fill(out, -8.0f, 8.0f, 4);
  fill(x, 0.0f, 1.0f, 5);
  // nll_row = sum_d softplus(l) - x l; dl = scale (sigmoid(l) - x).
  // Reads logits + x (2 B D), writes dlogits (B D) + nll_row (B): 4 (3 B D + B) bytes.
  add_row(bn, "bernoulli_nll_grad", s.name, shape_str("B", B, "D", D), 4.0 * (3.0 * (double)bd + B), [&] {
    return bernoulli_nll_grad_cuda(out.get(), x.get(), nll.get(), grad.get(), 1.0f / (float)B, B, D, st);
  });
  // nll_row = 0.5 sum_d [(x - f)^2 / s^2 + log s^2 + log 2pi]; df = scale (f - x) / s^2.
  // Reads f + x (2 B D), writes df (B D) + nll_row (B): 4 (3 B D + B) bytes.
  add_row(bn, "gaussian_nll_grad", s.name, shape_str("B", B, "D", D), 4.0 * (3.0 * (double)bd + B), [&] {
    return gaussian_nll_grad_cuda(out.get(), x.get(), 0.5f, 0.0, nll.get(), grad.get(), 1.0f / (float)B, B, D, st);
  });
}

// Hidden-layer bias + activation, over [B][n] with n the model's hidden width; the bias gradient also at n = D.
void bench_bias_act(const Shape &s, Bench &bn) {
  const int B = s.B, D = s.D, n = s.hidden.front();
  const size_t bxn = (size_t)B * n, bd = (size_t)B * D;
  const cudaStream_t st = bn.st;
  DevBuf<float> y(bxn), b(n), dy(bxn), db(n), scratch(CUVAE_SUM_SQUARES_PARTIALS);
  fill(y, -1.0f, 1.0f, 7);
  fill(b, -0.05f, 0.05f, 8);
  fill(dy, -1.0f, 1.0f, 9);
  // y = relu(y + b) in place. Reads y (B n) + b (n), writes y (B n): 4 (2 B n + n) bytes.
  add_row(bn, "bias_act_forward_relu", s.name, shape_str("B", B, "n", n), 4.0 * (2.0 * (double)bxn + n),
          [&] { return bias_act_forward_cuda(y.get(), b.get(), B, n, CUVAE_ACT_RELU, st); });
  // dy *= [y > 0]. Reads y + dy (2 B n), writes dy (B n; only where y <= 0, but with mixed signs nearly every
  // 32-byte sector is written): 4 * 3 B n bytes.
  add_row(bn, "bias_act_backward_relu", s.name, shape_str("B", B, "n", n), 4.0 * 3.0 * (double)bxn,
          [&] { return bias_act_backward_cuda(y.get(), dy.get(), B, n, CUVAE_ACT_RELU, st); });
  // db[j] = sum_b dy[b][j]. Reads dy (B n), writes db (n): 4 (B n + n) bytes (the partial sums of a split batch,
  // at most CUVAE_SUM_SQUARES_PARTIALS floats written and read back, left out).
  add_row(bn, "bias_grad", s.name, shape_str("B", B, "n", n), 4.0 * ((double)bxn + n),
          [&] { return bias_grad_cuda(dy.get(), db.get(), scratch.get(), B, n, st); });
  // The same at the decoder's output layer, n = D: the narrowest layer of models B-D.
  DevBuf<float> dyo(bd), dbo(D);
  fill(dyo, -1.0f, 1.0f, 15);
  add_row(bn, "bias_grad", s.name, shape_str("B", B, "n", D), 4.0 * ((double)bd + D),
          [&] { return bias_grad_cuda(dyo.get(), dbo.get(), scratch.get(), B, D, st); });
}

// Adam over the model's whole parameter buffer (docs/MATH.md section 7), the gradient's sum of squares, and the EMA
// of the weights (docs/MATH.md (7.5)).
void bench_adam(const Shape &s, Bench &bn) {
  const size_t np = param_count(s);
  const cudaStream_t st = bn.st;
  DevBuf<float> p(np), g(np), m(np), v(np), ema(np), ss(1 + CUVAE_SUM_SQUARES_PARTIALS), scalars(CUVAE_ADAM_SCALARS),
      lr(1);
  DevBuf<int64_t> step(1);
  fill(p, -0.1f, 0.1f, 10);
  fill(g, -1e-2f, 1e-2f, 11);
  fill(ema, -0.1f, 0.1f, 15);
  fill(lr, 1e-3f, 1e-3f, 17);  // the step's learning rate, read on the device (adam_prepare_cuda)
  zero(m);
  zero(v);
  CHECK(cudaMemset(step.get(), 0, sizeof(int64_t)));
  // sum g^2 into one float, two passes through at most CUVAE_SUM_SQUARES_PARTIALS partials. Reads g (n): 4 n
  // bytes (the partials, <= 64 KB written and read back, left out; latency-bound for small n).
  add_row(bn, "sum_squares", s.name, shape_str("n", (long long)np, nullptr, 0), 4.0 * (double)np,
          [&] { return sum_squares_cuda(g.get(), np, ss.get() + 1, ss.get(), st); });
  // One step's optimiser launches: adam_prepare (one thread: ++step, clip scale, 1/(1 - b^t), the rate) then
  // adam_update: g' = s g; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2; p -= lr (m c1) / (sqrt(v c2) + eps).
  // Reads p, g, m, v (4 n), writes p, m, v (3 n): 4 * 7 n bytes (prepare's ~50 bytes left out).
  add_row(bn, "adam_prepare+adam_update", s.name, shape_str("n", (long long)np, nullptr, 0), 4.0 * 7.0 * (double)np,
          [&] {
            cudaError_t e = adam_prepare_cuda(ss.get(), step.get(), lr.get(), nullptr, 0.0f, 0.9f, 0.999f,
                                              scalars.get(), nullptr, st);
            if (e != cudaSuccess) return e;
            return adam_update_cuda(p.get(), g.get(), m.get(), v.get(), np, 0.9f, 0.999f, 1e-8f, scalars.get(), nullptr,
                                    st);
          });
  // adam_prepare alone: one thread; reads the sum of squares (4 B), step (8 B), lr (4 B), writes step (8 B) and the
  // CUVAE_ADAM_SCALARS scalars (24 B); launch latency.
  add_row(bn, "adam_prepare", s.name, "1 thread", 4.0 + 8.0 + 4.0 + 8.0 + 4.0 * CUVAE_ADAM_SCALARS, [&] {
    return adam_prepare_cuda(ss.get(), step.get(), lr.get(), nullptr, 0.0f, 0.9f, 0.999f, scalars.get(), nullptr, st);
  });
  // ema = d ema + (1 - d) p after the update (no skip: scalars[5] = 0 from adam_prepare). Reads ema, p (2 n), writes
  // ema (n): 4 * 3 n bytes.
  add_row(bn, "ema_update", s.name, shape_str("n", (long long)np, nullptr, 0), 4.0 * 3.0 * (double)np,
          [&] { return ema_update_cuda(ema.get(), p.get(), np, 0.999f, scalars.get(), nullptr, st); });
}

// Loss reductions (the batch sum of the per-row KL or NLL, B floats), and the minibatch gather from the training set
// on the device: 60000 rows of D floats (188 MB; 2 B rows when smoke).
void bench_sum_gather(const Shape &s, Bench &bn) {
  const int B = s.B, D = s.D;
  const cudaStream_t st = bn.st;
  DevBuf<float> x(B), out(1);
  fill(x, 0.0f, 100.0f, 13);
  // *out = sum_b x[b]. Reads B floats, writes 1: 4 (B + 1) bytes (one block: launch latency).
  add_row(bn, "sum", s.name, shape_str("n", B, nullptr, 0), 4.0 * (B + 1.0),
          [&] { return sum_cuda(x.get(), B, out.get(), st); });
  const int kRows = bn.smoke ? 2 * B : 60000;
  DevBuf<float> src((size_t)kRows * D), dst((size_t)B * D);
  DevBuf<uint32_t> idx(B);
  fill(src, 0.0f, 1.0f, 12);
  std::vector<uint32_t> h(B);
  uint32_t r = 12345u;
  for (uint32_t &i : h) {
    r = r * 1664525u + 1013904223u;
    i = (r >> 8) % (uint32_t)kRows;
  }
  CHECK(cudaMemcpy(idx.get(), h.data(), B * sizeof(uint32_t), cudaMemcpyHostToDevice));
  // dst[b][:] = src[rows[b]][:]. Reads B rows of D floats + B indices, writes B D floats: 4 (2 B D + B) bytes.
  add_row(bn, "gather_rows", s.name, shape_str("B", B, "D", D), 4.0 * (2.0 * (double)B * D + B),
          [&] { return gather_rows_cuda(src.get(), idx.get(), dst.get(), B, D, st); });
}

void bench_shape(const Shape &s, Bench &b) {
  bench_reparam_kl(s, b);
  bench_likelihoods(s, b);
  bench_bias_act(s, b);
  bench_adam(s, b);
  bench_sum_gather(s, b);
}

// step_guard is shape-independent: one thread records the CUVAE_STEP_SUMS (4) sums and the step's verdict (skipping
// off: apply, or halt when not finite). Reads sums (16 B), step (8 B), flags (16 B), writes flags[1] (8 B) and the
// CUVAE_STEP_RECORD (5) ring floats (20 B): 68 bytes; launch latency. Afterwards the guard must not have halted, and
// ring entry 0 must hold the sums it read and the verdict CUVAE_STEP_APPLY (every launch records the same): a guard
// that read past the sums it was given would record other values, or halt on a non-finite one.
void bench_step_guard(Bench &b) {
  // A ring larger than the launches time_us makes (3 + 10 + 5 * 20000), so it never reaches its halt path.
  const int kRing = 1 << 18;
  DevBuf<float> sums(CUVAE_STEP_SUMS), ring(CUVAE_STEP_RECORD * (size_t)kRing);
  DevBuf<int64_t> step(1), flags(2);
  const cuvae_skip_rule off = {0.0f, 0.0f, 0, 1, 0};  // no skipping configured: no guard state or window
  fill(sums, 1.0f, 2.0f, 14);
  CHECK(cudaMemset(step.get(), 0, sizeof(int64_t)));
  CHECK(cudaMemset(flags.get(), 0, 2 * sizeof(int64_t)));
  add_row(b, "step_guard", "-", "1 thread", 4.0 * CUVAE_STEP_SUMS + 8.0 + 16.0 + 8.0 + 4.0 * CUVAE_STEP_RECORD, [&] {
    return step_guard_cuda(sums.get(), step.get(), flags.get(), ring.get(), kRing, off, nullptr, nullptr, b.st);
  });
  int64_t h[2];
  float want[CUVAE_STEP_RECORD], got[CUVAE_STEP_RECORD];
  CHECK(cudaMemcpy(h, flags.get(), sizeof h, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(want, sums.get(), CUVAE_STEP_SUMS * sizeof(float), cudaMemcpyDeviceToHost));
  want[CUVAE_STEP_SUMS] = (float)CUVAE_STEP_APPLY;
  CHECK(cudaMemcpy(got, ring.get(), sizeof got, cudaMemcpyDeviceToHost));
  if (h[0] != 0) std::fprintf(stderr, "warning: step_guard halted (flags[0] = %lld)\n", (long long)h[0]);
  if (b.smoke && (h[0] != 0 || std::memcmp(want, got, sizeof want) != 0)) {
    std::fprintf(stderr, "step_guard: halted (flags[0] = %lld) or ring entry 0 differs from the sums and verdict\n",
                 (long long)h[0]);
    std::exit(1);
  }
}

// ---- the copy reference -----------------------------------------------------------------------------------

// Device-to-device cudaMemcpyAsync of copy_bytes(b) on b.st, timed like the kernels: bytes moved (read + write, 2 x
// the size) per second. 256 MiB is 5x an H100's L2, so the copy streams from and to DRAM (1 MiB when smoke).
size_t copy_bytes(const Bench &b) { return b.smoke ? size_t{1} << 20 : size_t{256} << 20; }

double copy_rate(Bench &b) {
  const size_t bytes = copy_bytes(b);
  DevBuf<float> from(bytes / sizeof(float)), to(bytes / sizeof(float));
  fill(from, 0.0f, 1.0f, 16);
  const double us =
      time_us([&] { return cudaMemcpyAsync(to.get(), from.get(), bytes, cudaMemcpyDeviceToDevice, b.st); }, b);
  b.rows.push_back({"cudaMemcpy D2D", "-", std::to_string(bytes >> 20) + " MiB", 2.0 * (double)bytes, us});
  return 2.0 * (double)bytes / (us * 1e-6);
}

// ---- output ----------------------------------------------------------------------------------------------

void print_json(const char *path, const cudaDeviceProp &prop, double peak, double copy, size_t l2,
                const std::vector<Row> &rows) {
  FILE *f = std::fopen(path, "w");
  if (!f) {
    std::fprintf(stderr, "cannot write %s: %s\n", path, std::strerror(errno));
    std::exit(1);
  }
  std::fprintf(f,
               "{\"device\": \"%s\", \"sm\": \"%d%d\", \"peak_dram_GBps\": %.1f, \"copy_GBps\": %.1f, "
               "\"l2_bytes\": %zu,\n",
               prop.name, prop.major, prop.minor, peak / 1e9, copy / 1e9, l2);
  std::fprintf(f, " \"results\": [\n");
  for (size_t i = 0; i < rows.size(); i++) {
    const Row &r = rows[i];
    const double gbps = r.bytes / (r.us * 1e-6) / 1e9;
    std::fprintf(f,
                 "  {\"kernel\": \"%s\", \"model\": \"%s\", \"shape\": \"%s\", \"bytes\": %.0f, \"us\": %.3f, "
                 "\"GBps\": %.2f, \"copy_fraction\": %.4f, \"peak_fraction\": %.4f, \"fits_l2\": %s}%s\n",
                 r.kernel.c_str(), r.model.c_str(), r.shape.c_str(), r.bytes, r.us, gbps,
                 copy > 0 ? gbps * 1e9 / copy : 0.0, peak > 0 ? gbps * 1e9 / peak : 0.0,
                 r.bytes <= (double)l2 ? "true" : "false", i + 1 < rows.size() ? "," : "");
  }
  std::fprintf(f, " ]}\n");
  if (std::fclose(f) != 0) {
    std::fprintf(stderr, "cannot write %s\n", path);
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char **argv) {
  const char *json = nullptr, *models = nullptr;
  bool smoke = false;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) {
      json = argv[++i];
    } else if (!std::strcmp(argv[i], "--models") && i + 1 < argc) {
      models = argv[++i];  // the suite's models to run, e.g. "AB" (default: all four; A when smoke)
    } else if (!std::strcmp(argv[i], "--smoke")) {
      smoke = true;  // one launch per kernel, small set-up buffers (the emulated ctest)
    } else {
      std::fprintf(stderr, "usage: %s [--models ABCD] [--json OUT] [--smoke]\n", argv[0]);
      return std::strcmp(argv[i], "--help") ? 2 : 0;
    }
  }
  if (!models) models = smoke ? "A" : "ABCD";
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no CUDA device: nothing to benchmark\n");
    return 0;
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  int mem_khz = 0, bus_bits = 0, l2 = 0;
  CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  // DRAM peak = 2 transfers per clock (DDR) * memory clock * bus width in bytes. (cudaDeviceProp lost its
  // memoryClockRate field in CUDA 13; the attributes remain.) Where the device does not report them (the
  // emulation), the peak is unknown and "% peak" reads 0.
  const cudaError_t clock_err = cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0);
  const cudaError_t bus_err = cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
  if (clock_err != cudaSuccess || bus_err != cudaSuccess) {
    std::fprintf(stderr, "memory clock or bus width not reported (%s): DRAM peak unknown\n",
                 cudaGetErrorString(clock_err != cudaSuccess ? clock_err : bus_err));
    (void)cudaGetLastError();  // clear the error those queries left behind
    mem_khz = bus_bits = 0;
  }
  const double peak = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0);

  Bench bench{nullptr, smoke, {}};
  CHECK(cudaStreamCreateWithFlags(&bench.st, cudaStreamNonBlocking));
  const double copy = copy_rate(bench);
  for (const Shape &s : bench_suite::shapes())
    if (std::strchr(models, s.name[0])) bench_shape(s, bench);
  bench_step_guard(bench);
  CHECK(cudaStreamDestroy(bench.st));
  const std::vector<Row> &rows = bench.rows;

  if (peak > 0)
    std::printf("device: %s (sm_%d%d), DRAM peak %.0f GB/s (2 x %.0f MHz x %d bit), L2 %.0f MB\n", prop.name,
                prop.major, prop.minor, peak / 1e9, mem_khz / 1e3, bus_bits, l2 / 1e6);
  else
    std::printf("device: %s (sm_%d%d), DRAM peak unknown, L2 %.0f MB\n", prop.name, prop.major, prop.minor,
                l2 / 1e6);
  std::printf("device-to-device copy: %.0f GB/s (read + write of %zu MiB)\n", copy / 1e9, copy_bytes(bench) >> 20);
  std::printf("%-26s %-5s %-14s %12s %11s %9s %7s %7s %3s\n", "kernel", "model", "shape", "bytes/launch",
              "us/launch", "GB/s", "% copy", "% peak", "L2");
  for (const Row &r : rows) {
    const double gbps = r.bytes / (r.us * 1e-6) / 1e9;
    std::printf("%-26s %-5s %-14s %12.0f %11.2f %9.1f %6.1f%% %6.1f%% %3s\n", r.kernel.c_str(), r.model.c_str(),
                r.shape.c_str(), r.bytes, r.us, gbps, copy > 0 ? 100.0 * gbps * 1e9 / copy : 0.0,
                peak > 0 ? 100.0 * gbps * 1e9 / peak : 0.0, r.bytes <= (double)l2 ? "yes" : "");
  }
  if (json) print_json(json, prop, peak, copy, (size_t)l2, rows);
  return 0;
}
