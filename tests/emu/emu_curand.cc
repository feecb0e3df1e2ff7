// cuRAND host API of the CUDA emulation: an emulated "device" generator is a real cuRAND HOST generator.
//
// Device memory is host memory in the emulation, so curandCreateGenerator here creates the generator with the
// real libcurand's curandCreateGeneratorHost, which computes the same streams (Philox4x32-10, XORWOW, ...) on
// the CPU. This file's definitions live in the emulation's static library, which is linked before libcurand.so,
// so calls from the program bind to them; the real functions are reached with dlsym(RTLD_NEXT, ...). Every other
// cuRAND function is libcurand's own and works on the returned generator unchanged.
//
// What is reproduced for generators made by curandCreateGenerator:
// - curandSetStream records the stream; curandGenerateNormal and curandGenerateUniform are ordered on it
//   (cuda_emu::enqueue), so they are recorded into a graph while the stream is captured;
// - the device generators' rule that pseudorandom normals come in Box-Muller pairs: an odd count is
//   CURAND_STATUS_LENGTH_NOT_MULTIPLE (the host generator would accept it);
// - the output must be device memory (cudaMalloc), else cuda_emu::fault: a GPU would fault on a host pointer
//   (pinned cudaMallocHost memory, which a GPU could write through unified addressing, is reported too).
//
// Graph capture: cuRAND's device generator launches a kernel whose arguments (seed, offset) are fixed when it is
// captured, and advances its host-side offset once, at capture. So the emulation draws the numbers when the
// call is made (advancing the generator exactly once) and the recorded operation copies them into the output:
// every replay of the graph writes the SAME numbers, drawn at capture time. Code that needs fresh numbers per
// replay must not use the host API inside a graph (use curand_kernel.h with a device-side offset instead).
// Outside capture the emulated stream runs the copy at once, so the call behaves like a synchronous generate.
//
// Normals of Philox generators follow the device's formula: the host generator's normals are the host branch of
// curand_normal.h's _curand_box_muller on consecutive pairs of the raw stream (sinf, cosf, logf: test_emu_curand.cc
// checks this bit for bit), and libcurand's device generator runs its device branch on the same pairs, which
// curand.h says may differ in the results of transcendental functions. So the emulation draws the raw integers
// (curandGenerate) and applies the device branch: __sincosf and the device's logf (emu_intrinsics.h), with v's
// product and sum fused as nvcc does by default. They differ from the host generator's within
// tests/emu/curand_bound.h's bound; uniforms are bit-identical (x 2^-32 + 2^-33 is exact either way). The
// emulation keeps each generator's stream position (curandSetGeneratorOffset, curandGenerate and the generations
// here advance it) because normals pair the integers at even positions; from an odd position, and for other
// generator types (which pair their integers otherwise), normals are the host generator's. Functions not overridden
// here (curandGenerateNormalDouble, curandGenerateLogNormal, ...) run at once on the calling thread, ignoring the
// stream and any capture in progress, and do not advance the kept position.
#include <curand.h>
#include <curand_globals.h>
#include <dlfcn.h>
#include <string.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "emu_internal.h"
#include "emu_intrinsics.h"

namespace {

struct Generator {
  curandRngType_t type;
  cudaStream_t stream = nullptr;  // the legacy default stream until curandSetStream
  uint64_t offset = 0;            // the stream position: curandSetGeneratorOffset, advanced by every generation here
};

// Generators created by curandCreateGenerator (emulated device generators). Generators made directly with
// curandCreateGeneratorHost are not in the map and pass straight through to libcurand.
std::mutex g_mutex;
std::unordered_map<curandGenerator_t, Generator> g_generators;

bool lookup(curandGenerator_t g, Generator *out, uint64_t advance = 0) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_generators.find(g);
  if (it == g_generators.end()) return false;
  *out = it->second;
  it->second.offset += advance;
  return true;
}

// The real libcurand function `name`, the next definition after ours in the symbol search order.
template <class Fn>
Fn real(const char *name, Fn ours) {
  void *p = dlsym(RTLD_NEXT, name);
  if (p == nullptr || p == reinterpret_cast<void *>(ours))
    cuda_emu::fault("curand emulation: cannot find libcurand's %s (is the program linked with libcurand?)", name);
  return reinterpret_cast<Fn>(p);
}

// n (even) Philox normals the way the device generator computes them: the device branch of _curand_box_muller
// (curand_normal.h) on each pair of raw integers, then mean + stddev n fused. Normals pair the integers at even
// stream positions (position p is the sine or cosine of the pair at p & ~1), so this holds from an even position.
curandStatus_t device_normals(curandGenerator_t g, float *dst, size_t n, float mean, float stddev) {
  static const auto generate_raw = real("curandGenerate", &curandGenerate);
  std::vector<unsigned> raw(n);
  const curandStatus_t s = generate_raw(g, raw.data(), n);
  if (s != CURAND_STATUS_SUCCESS) return s;
  for (size_t i = 0; i + 1 < n; i += 2) {
    const float u = fmaf((float)raw[i], CURAND_2POW32_INV, CURAND_2POW32_INV / 2);
    const float v = fmaf((float)raw[i + 1], CURAND_2POW32_INV_2PI, CURAND_2POW32_INV_2PI / 2);
    const float r = sqrtf(-2.0f * cuda_emu::device_logf(u));
    float sn, cs;
    __sincosf(v, &sn, &cs);
    dst[i] = fmaf(sn * r, stddev, mean);
    dst[i + 1] = fmaf(cs * r, stddev, mean);
  }
  return CURAND_STATUS_SUCCESS;
}

bool is_pseudo(curandRngType_t t) { return t >= CURAND_RNG_PSEUDO_DEFAULT && t < CURAND_RNG_QUASI_DEFAULT; }

// Draws `n` floats now with `draw` (the real generator), then enqueues their copy into `out` on the generator's
// stream. See the file comment for why the numbers are drawn at call time.
template <class Draw>
curandStatus_t generate(const char *fn, const Generator &gen, float *out, size_t n, Draw draw) {
  if (n != 0 && !cuda_emu::is_device_range(out, n * sizeof(float)))
    cuda_emu::fault("%s: outputPtr = %p (%zu floats) is not device memory (cudaMalloc); a GPU would fault on it",
                    fn, static_cast<void *>(out), n);
  auto values = std::make_shared<std::vector<float>>(n);
  const curandStatus_t s = draw(values->data());
  if (s != CURAND_STATUS_SUCCESS) return s;
  const cudaError_t e = cuda_emu::enqueue(gen.stream, fn, [fn, values, out] {
    if (values->empty()) return;
    if (!cuda_emu::is_device_range(out, values->size() * sizeof(float)))  // a graph launched after cudaFree
      cuda_emu::fault("%s: outputPtr = %p is no longer allocated when the operation runs (freed after it was "
                      "captured?)", fn, static_cast<void *>(out));
    memcpy(out, values->data(), values->size() * sizeof(float));
  });
  return e == cudaSuccess ? CURAND_STATUS_SUCCESS : CURAND_STATUS_LAUNCH_FAILURE;
}

}  // namespace

extern "C" {

curandStatus_t CURANDAPI curandCreateGenerator(curandGenerator_t *generator, curandRngType_t rng_type) {
  const curandStatus_t s = curandCreateGeneratorHost(generator, rng_type);
  if (s == CURAND_STATUS_SUCCESS) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_generators[*generator] = Generator{rng_type};
  }
  return s;
}

curandStatus_t CURANDAPI curandDestroyGenerator(curandGenerator_t generator) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_generators.erase(generator);
  }
  static const auto destroy = real("curandDestroyGenerator", &curandDestroyGenerator);
  return destroy(generator);
}

curandStatus_t CURANDAPI curandSetStream(curandGenerator_t generator, cudaStream_t stream) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_generators.find(generator);
    if (it != g_generators.end()) {
      it->second.stream = stream;
      return CURAND_STATUS_SUCCESS;
    }
  }
  static const auto set_stream = real("curandSetStream", &curandSetStream);
  return set_stream(generator, stream);
}

curandStatus_t CURANDAPI curandSetGeneratorOffset(curandGenerator_t generator, unsigned long long offset) {
  static const auto set_offset = real("curandSetGeneratorOffset", &curandSetGeneratorOffset);
  const curandStatus_t s = set_offset(generator, offset);
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_generators.find(generator);
  if (s == CURAND_STATUS_SUCCESS && it != g_generators.end()) it->second.offset = offset;
  return s;
}

// Raw integers: libcurand's own, at once, after the work queued on the generator's stream (the deferred mode's
// queue runs first); overridden only to keep the position.
curandStatus_t CURANDAPI curandGenerate(curandGenerator_t generator, unsigned int *outputPtr, size_t num) {
  static const auto generate_raw = real("curandGenerate", &curandGenerate);
  Generator gen;
  if (lookup(generator, &gen, num)) cuda_emu::async::drain(gen.stream);
  return generate_raw(generator, outputPtr, num);
}

curandStatus_t CURANDAPI curandGenerateNormal(curandGenerator_t generator, float *outputPtr, size_t n, float mean,
                                              float stddev) {
  static const auto normal = real("curandGenerateNormal", &curandGenerateNormal);
  Generator gen;
  if (!lookup(generator, &gen, n % 2 == 0 ? n : 0)) return normal(generator, outputPtr, n, mean, stddev);
  // Device generators: Box-Muller produces pairs, so a pseudorandom generator needs an even count.
  if (is_pseudo(gen.type) && n % 2 != 0) return CURAND_STATUS_LENGTH_NOT_MULTIPLE;
  return generate("curandGenerateNormal", gen, outputPtr, n, [&](float *dst) {
    return gen.type == CURAND_RNG_PSEUDO_PHILOX4_32_10 && gen.offset % 2 == 0 ? device_normals(generator, dst, n, mean, stddev)
                                                       : normal(generator, dst, n, mean, stddev);
  });
}

curandStatus_t CURANDAPI curandGenerateUniform(curandGenerator_t generator, float *outputPtr, size_t num) {
  static const auto uniform = real("curandGenerateUniform", &curandGenerateUniform);
  Generator gen;
  if (!lookup(generator, &gen, num)) return uniform(generator, outputPtr, num);
  return generate("curandGenerateUniform", gen, outputPtr, num,
                  [&](float *dst) { return uniform(generator, dst, num); });
}

}  // extern "C"
