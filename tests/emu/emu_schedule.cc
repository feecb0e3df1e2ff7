// The CUDA emulation's schedule mode (CUDA_EMU_SCHEDULE=shuffle:SEED, cuda_emu_set_schedule): each block's warps
// and lanes run in a seeded random order between synchronisation points, and static shared memory is poisoned
// before every block.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

#include "emu_sched.h"

namespace cuda_emu::sched {

namespace {

// The schedule mode: -1 not read yet (CUDA_EMU_SCHEDULE), 0 in order, 1 shuffled with g_seed.
std::atomic<int> g_shuffle{-1};
std::atomic<unsigned long long> g_seed{0};
unsigned long long g_launches = 0;  // launches run so far (under g_launch_mutex): seeds each launch's order

uint64_t next_random() {  // splitmix64
  uint64_t z = (g.rng += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

void shuffle(std::vector<int> &v) {  // Fisher-Yates
  for (size_t i = v.size(); i > 1; i--) std::swap(v[i - 1], v[next_random() % i]);
}

// Runs the runnable lanes of warp `w` in a random order, releasing its warp operations, until none can go on
// (all wait at a barrier, have exited, or wait for a lane elsewhere). Returns whether any lane ran; counts exits.
bool run_warp_shuffled(int w, std::vector<int> &lanes, int *live) {
  const int n_lanes = lanes_in_warp(w);
  lanes.resize((size_t)n_lanes);
  bool progress = false;
  for (;;) {
    for (int l = 0; l < n_lanes; l++) lanes[l] = w * kWarpSize + l;
    shuffle(lanes);
    bool ran = false;
    for (int i : lanes) {
      Thread &t = g.threads[i];
      if (t.state != kRunnable) continue;
      resume(&t);
      ran = true;
      if (t.state == kDone) --*live;
    }
    progress |= ran;
    if (!ran && !try_release_warp(w)) return progress;
  }
}

}  // namespace

bool shuffling() {
  int m = g_shuffle.load();
  if (m >= 0) return m == 1;
  const char *v = getenv("CUDA_EMU_SCHEDULE");
  unsigned long long seed = 0;
  char *end = nullptr;
  if (!v || !*v) {
    m = 0;
  } else if (strncmp(v, "shuffle:", 8) == 0 && v[8] && (seed = strtoull(v + 8, &end, 10), *end == 0)) {
    m = 1;
  } else {
    fprintf(stderr, "cuda_emu: CUDA_EMU_SCHEDULE must be shuffle:SEED (SEED a decimal integer), not \"%s\"\n", v);
    exit(2);
  }
  g_seed.store(seed);
  int expected = -1;
  g_shuffle.compare_exchange_strong(expected, m);
  return g_shuffle.load() == 1;
}

void seed_launch() { g.rng = g_seed.load() ^ (++g_launches * UINT64_C(0xD1B54A32D192ED03)); }

// The warps in a random order, each run as far as it can go before the next, the order drawn again after every
// barrier, so a warp can get a whole barrier interval ahead of another (as on a GPU, where nothing orders warps
// between barriers) and a warp's lanes interleave at random between warp operations.
void run_block_shuffled() {
  const int n = (int)g.threads.size(), n_warps = (n + kWarpSize - 1) / kWarpSize;
  std::vector<int> warps((size_t)n_warps), lanes;
  for (int w = 0; w < n_warps; w++) warps[w] = w;
  shuffle(warps);
  int live = n;
  while (live > 0) {
    bool progress = false;
    for (int w : warps) progress |= run_warp_shuffled(w, lanes, &live);
    if (live == 0) break;
    if (try_release_barrier()) {
      shuffle(warps);
      continue;
    }
    bool released = false;
    for (int w = 0; w < n_warps; w++) released |= try_release_warp(w);
    if (released || progress) continue;
    block_fault("deadlock: no thread of the block can make progress");
  }
}

// Static __shared__ variables live in the section cuda_emu_shared (cuda_emu.h; not under AddressSanitizer, which
// then keeps its redzones around them): filled with 0xFF bytes (NaN floats, -1 integers) before every block, since
// shared memory starts undefined on a GPU.
extern "C" unsigned char __start_cuda_emu_shared[] __attribute__((weak));
extern "C" unsigned char __stop_cuda_emu_shared[] __attribute__((weak));
void poison_static_shared() {
  const uintptr_t start = (uintptr_t)__start_cuda_emu_shared, stop = (uintptr_t)__stop_cuda_emu_shared;
  if (start && stop > start) memset(__start_cuda_emu_shared, 0xFF, stop - start);
}

}  // namespace cuda_emu::sched

extern "C" int cuda_emu_set_schedule(int shuffle, unsigned long long seed) {
  namespace s = cuda_emu::sched;
  const int was = s::shuffling();
  std::lock_guard<std::mutex> lock(s::g_launch_mutex);  // not while a grid runs
  s::g_seed.store(seed);
  s::g_shuffle.store(shuffle ? 1 : 0);
  s::g_launches = 0;  // the same seed and launches give the same schedules
  return was;
}
