// Kernel execution for the CUDA emulation: launch validation, one fiber per CUDA thread (Boost.Context's
// fcontext with our own guard-paged stacks), a block scheduler that runs fibers until they reach a
// synchronisation point, barrier and warp-operation resolution, and fault reports (deadlocks, divergent
// barriers, bad shuffles) that name the kernel, block, thread and source line. The schedule mode
// (CUDA_EMU_SCHEDULE=shuffle:SEED) runs the runnable threads of each round in a seeded random order and poisons
// static shared memory before every block.
#include <boost/context/detail/fcontext.hpp>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#endif

namespace fc = boost::context::detail;

namespace cuda_emu {

thread_local ThreadCtx *tls_thread = nullptr;
thread_local BlockCtx *tls_block = nullptr;

namespace {

// Each fiber's stack: mmap'd, with a PROT_NONE guard page below it, so an overflow faults at once instead of
// corrupting the neighbour. Stacks are kept for the life of the process and reused by every launch.
#ifdef CUDA_EMU_ASAN
constexpr size_t kStackSize = 1024 * 1024;  // ASan's redzones need more room
#else
constexpr size_t kStackSize = 256 * 1024;
#endif

struct Stack {
  void *base = nullptr;  // the guard page
  void *bottom = nullptr;  // lowest usable address
  size_t size = 0;
};

enum State { kRunnable, kAtBarrier, kAtWarp, kDone };

struct Thread {
  ThreadCtx pub;
  int linear = 0, warp = 0, lane = 0;
  State state = kRunnable;
  const char *file = "";
  int line = 0;
  int op = 0;           // barrier kind (kind of syncthreads_reduce) or WarpOp
  unsigned mask = 0;
  uint64_t value = 0;   // shuffle payload; result when released
  int arg = 0, width = 32;
  fc::fcontext_t ctx = nullptr;
  Stack *stack = nullptr;
  void *fake_stack = nullptr;  // ASan's per-fiber fake stack
};

struct Launch {
  const char *kernel = "", *file = "";
  int line = 0;
};

struct Scheduler {
  std::vector<Stack> stacks;
  std::vector<Thread> threads;
  BlockCtx block;
  Launch launch;
  const std::function<void()> *body = nullptr;
  fc::fcontext_t sched_ctx = nullptr;
  void *sched_fake_stack = nullptr;
  const void *sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  bool in_kernel = false;
  Thread *current = nullptr;
  uint64_t rng = 0;  // schedule mode: splitmix64 state, seeded per launch
};

// The schedule mode: -1 not read yet (CUDA_EMU_SCHEDULE), 0 in order, 1 shuffled with g_seed.
std::atomic<int> g_shuffle{-1};
std::atomic<unsigned long long> g_seed{0};
unsigned long long g_launches = 0;  // launches run so far (under g_launch_mutex): seeds each launch's order

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

Scheduler g;
std::mutex g_launch_mutex;  // one grid at a time, whichever host thread launches it
std::map<const void *, int> g_max_dynamic_smem;
char g_where[512];

Stack make_stack() {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  Stack s;
  s.size = kStackSize;
  s.base = mmap(nullptr, kStackSize + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (s.base == MAP_FAILED) fault("cannot map a %zu-byte fiber stack", kStackSize);
  if (mprotect(s.base, page, PROT_NONE) != 0) fault("cannot protect a fiber stack's guard page");
  s.bottom = (char *)s.base + page;
  return s;
}

// ---- fiber switching, with the annotations AddressSanitizer needs to follow stack switches -------------------

inline void asan_start(void **fake, const void *bottom, size_t size) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}
inline void asan_finish(void *fake, const void **old_bottom, size_t *old_size) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, old_bottom, old_size);
#else
  (void)fake, (void)old_bottom, (void)old_size;
#endif
}

void fiber_entry(fc::transfer_t t) {
  Thread *th = static_cast<Thread *>(t.data);
  g.sched_ctx = t.fctx;
  asan_finish(nullptr, &g.sched_stack_bottom, &g.sched_stack_size);
  (*g.body)();
  th->state = kDone;
  asan_start(nullptr, g.sched_stack_bottom, g.sched_stack_size);  // this fiber's fake stack can go
  fc::jump_fcontext(g.sched_ctx, nullptr);
  abort();  // a finished fiber is never resumed
}

// Scheduler -> fiber; returns when the fiber waits or finishes.
void resume(Thread *th) {
  g.current = th;
  tls_thread = &th->pub;
  asan_start(&g.sched_fake_stack, th->stack->bottom, th->stack->size);
  fc::transfer_t t = fc::jump_fcontext(th->ctx, th);
  asan_finish(g.sched_fake_stack, nullptr, nullptr);
  th->ctx = t.fctx;
  g.current = nullptr;
  tls_thread = nullptr;
}

// Fiber -> scheduler, until the scheduler resumes this fiber again.
void wait_here(Thread *th) {
  asan_start(&th->fake_stack, g.sched_stack_bottom, g.sched_stack_size);
  fc::transfer_t t = fc::jump_fcontext(g.sched_ctx, nullptr);
  asan_finish(th->fake_stack, nullptr, nullptr);
  g.sched_ctx = t.fctx;
  g.current = th;
  tls_thread = &th->pub;
}

Thread *self(const char *what, const char *file, int line) {
  if (!g.in_kernel || !g.current) fault("%s called outside a kernel (%s:%d)", what, file, line);
  return g.current;
}

std::string thread_name(const Thread &t) {
  char buf[64];
  snprintf(buf, sizeof buf, "thread (%u,%u,%u)", t.pub.thread_idx.x, t.pub.thread_idx.y, t.pub.thread_idx.z);
  return buf;
}

const char *op_name(int op) {
  static const char *names[] = {"__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync"};
  return op >= 0 && op < 8 ? names[op] : "warp operation";
}

// A fault inside a block: the headline, then what the block's threads are doing, grouped by state and place
// ("16 threads wait at __syncthreads (k.cu:27), first thread (0,0,0)"), then abort.
[[noreturn]] void block_fault(const char *headline) {
  std::vector<std::pair<std::string, std::pair<int, std::string>>> groups;  // what -> (count, first thread)
  for (const Thread &t : g.threads) {
    std::string what;
    char buf[256];
    switch (t.state) {
      case kRunnable:
        what = "are runnable";
        break;
      case kDone:
        what = "have exited";
        break;
      case kAtBarrier:
        snprintf(buf, sizeof buf, "wait at __syncthreads (%s:%d)", t.file, t.line);
        what = buf;
        break;
      case kAtWarp:
        snprintf(buf, sizeof buf, "wait at %s (%s:%d) with mask 0x%08x", op_name(t.op), t.file, t.line, t.mask);
        what = buf;
        break;
    }
    size_t i = 0;
    while (i < groups.size() && groups[i].first != what) i++;
    if (i == groups.size()) groups.push_back({what, {0, thread_name(t)}});
    groups[i].second.first++;
  }
  std::string detail;
  for (size_t i = 0; i < groups.size() && i < 8; i++)
    detail += "\n  " + std::to_string(groups[i].second.first) + " thread(s) " + groups[i].first + ", first " +
              groups[i].second.second;
  g.current = nullptr;  // where() names the block, not one thread
  fault("%s%s", headline, detail.c_str());
}

// ---- barrier and warp-operation resolution --------------------------------------------------------------------

// Releases a __syncthreads when every thread of the block waits at the same one. A barrier that some threads
// reach while others have exited, or wait at another barrier, is a divergent barrier (undefined in CUDA; a hang
// or silent corruption on a GPU): reported.
bool try_release_barrier() {
  Thread *first = nullptr;
  for (Thread &t : g.threads)
    if (t.state == kAtBarrier) {
      first = &t;
      break;
    }
  if (!first) return false;
  for (Thread &t : g.threads) {
    if (t.state == kRunnable) return false;  // still on its way
    if (t.state == kAtWarp) return false;    // may still arrive; a no-progress round reports it
    if (t.state == kDone) {
      char msg[512];
      snprintf(msg, sizeof msg, "divergent __syncthreads: %s waits at %s:%d but %s has exited without reaching it",
               thread_name(*first).c_str(), first->file, first->line, thread_name(t).c_str());
      block_fault(msg);
    }
    if (t.line != first->line || strcmp(t.file, first->file) != 0 || t.op != first->op) {
      char msg[512];
      snprintf(msg, sizeof msg, "divergent __syncthreads: %s waits at %s:%d, %s at %s:%d",
               thread_name(*first).c_str(), first->file, first->line, thread_name(t).c_str(), t.file, t.line);
      block_fault(msg);
    }
  }
  int count = 0;
  for (Thread &t : g.threads) count += t.arg != 0;
  const int n = (int)g.threads.size();
  const uint64_t result = first->op == 0 ? (uint64_t)count : first->op == 1 ? (count == n) : (count > 0);
  for (Thread &t : g.threads) {
    t.value = result;
    t.state = kRunnable;
  }
  return true;
}

int lanes_in_warp(int warp) {
  const int n = (int)g.threads.size();
  return n - warp * kWarpSize < kWarpSize ? n - warp * kWarpSize : kWarpSize;
}

// The lane whose value lane `l` receives, per CUDA's definitions of the four shuffles (width segments).
int shuffle_source(int op, int l, int arg, int width) {
  const int base = l & ~(width - 1);
  switch (op) {
    case kShflIdx:
      return base + (arg & (width - 1));
    case kShflUp:
      return (l - base) >= arg ? l - arg : l;
    case kShflDown:
      return (l - base) + arg < width ? l + arg : l;
    case kShflXor: {
      const int s = l ^ arg;
      return s < base + width ? s : l;  // later segments are out of reach: own value
    }
  }
  return l;
}

// Releases the lanes of `warp` that wait at a warp operation once every lane named in their mask waits at it.
bool try_release_warp(int warp) {
  const int n_lanes = lanes_in_warp(warp);
  Thread *lanes = &g.threads[(size_t)warp * kWarpSize];
  bool released = false;
  for (int l = 0; l < n_lanes; l++) {
    Thread &t = lanes[l];
    if (t.state != kAtWarp) continue;
    const unsigned mask = t.mask;
    char msg[512];
    if (!(mask & (1u << l))) {
      snprintf(msg, sizeof msg, "%s at %s:%d: the calling %s (lane %d) is not in its mask 0x%08x", op_name(t.op),
               t.file, t.line, thread_name(t).c_str(), l, mask);
      block_fault(msg);
    }
    if (n_lanes < 32 && (mask >> n_lanes) != 0) {
      snprintf(msg, sizeof msg, "%s at %s:%d: mask 0x%08x names lanes that do not exist (this warp of the block has "
                                "%d lanes; use __activemask() or a mask of existing lanes)",
               op_name(t.op), t.file, t.line, mask, n_lanes);
      block_fault(msg);
    }
    bool ready = true;
    for (int k = 0; k < n_lanes; k++) {
      if (!(mask & (1u << k))) continue;
      const Thread &o = lanes[k];
      if (o.state == kDone) {
        snprintf(msg, sizeof msg, "%s at %s:%d: lane %d (%s) named in mask 0x%08x has exited", op_name(t.op), t.file,
                 t.line, k, thread_name(o).c_str(), mask);
        block_fault(msg);
      }
      if (o.state != kAtWarp) {
        ready = false;  // not there yet (or stuck elsewhere: a no-progress round reports it)
        break;
      }
      if (o.op != t.op || o.mask != mask || o.line != t.line || strcmp(o.file, t.file) != 0) {
        snprintf(msg, sizeof msg, "mismatched warp operations: %s waits at %s (%s:%d) with mask 0x%08x, %s at %s "
                                  "(%s:%d) with mask 0x%08x",
                 thread_name(t).c_str(), op_name(t.op), t.file, t.line, mask, thread_name(o).c_str(),
                 op_name(o.op), o.file, o.line, o.mask);
        block_fault(msg);
      }
    }
    if (!ready) continue;
    // Everyone named is here: compute each lane's result from the values deposited.
    unsigned votes = 0;
    for (int k = 0; k < n_lanes; k++)
      if ((mask & (1u << k)) && lanes[k].arg) votes |= 1u << k;
    std::vector<uint64_t> results((size_t)n_lanes);
    for (int k = 0; k < n_lanes; k++) {
      if (!(mask & (1u << k))) continue;
      const Thread &o = lanes[k];
      switch (o.op) {
        case kSyncwarp:
          results[k] = 0;
          break;
        case kBallot:
          results[k] = votes;
          break;
        case kAny:
          results[k] = votes != 0;
          break;
        case kAll:
          results[k] = votes == mask;
          break;
        default: {
          if (o.width < 1 || o.width > 32 || (o.width & (o.width - 1))) {
            snprintf(msg, sizeof msg, "%s at %s:%d: width %d is not a power of 2 in [1, 32]", op_name(o.op), o.file,
                     o.line, o.width);
            block_fault(msg);
          }
          // Reading a lane outside the mask gives an undefined value in CUDA (code may discard it): poison,
          // all bits set (NaN for floats, -1 for integers), so using it shows up.
          const int src = shuffle_source(o.op, k, o.arg, o.width);
          results[k] = src < 0 || src >= n_lanes || !(mask & (1u << src)) ? ~UINT64_C(0) : lanes[src].value;
        }
      }
    }
    for (int k = 0; k < n_lanes; k++)
      if (mask & (1u << k)) {
        lanes[k].value = results[k];
        lanes[k].state = kRunnable;
      }
    released = true;
  }
  return released;
}

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

// The schedule mode's block: the warps in a random order, each run as far as it can go before the next, the order
// drawn again after every barrier, so a warp can get a whole barrier interval ahead of another (as on a GPU, where
// nothing orders warps between barriers) and a warp's lanes interleave at random between warp operations.
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
// then keeps its redzones around them): the schedule mode fills it with 0xFF bytes (NaN floats, -1 integers)
// before every block, since shared memory starts undefined on a GPU.
extern "C" unsigned char __start_cuda_emu_shared[] __attribute__((weak));
extern "C" unsigned char __stop_cuda_emu_shared[] __attribute__((weak));
void poison_static_shared() {
  const uintptr_t start = (uintptr_t)__start_cuda_emu_shared, stop = (uintptr_t)__stop_cuda_emu_shared;
  if (start && stop > start) memset(__start_cuda_emu_shared, 0xFF, stop - start);
}

void run_block() {
  const int n = (int)g.threads.size();
  const dim3 bd = g.block.block_dim;
  for (int i = 0; i < n; i++) {
    Thread &t = g.threads[i];
    t = Thread();
    t.linear = i;
    t.warp = i / kWarpSize;
    t.lane = i % kWarpSize;
    t.pub.thread_idx = make_uint3(i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y));
    t.stack = &g.stacks[i];
    t.ctx = fc::make_fcontext((char *)t.stack->bottom + t.stack->size, t.stack->size, fiber_entry);
  }
  if (shuffling()) return run_block_shuffled();
  int live = n;
  while (live > 0) {
    bool progress = false;
    for (Thread &t : g.threads) {
      if (t.state != kRunnable) continue;
      resume(&t);
      progress = true;
      if (t.state == kDone) live--;
    }
    if (live == 0) break;
    if (try_release_barrier()) continue;
    bool released = false;
    for (int w = 0; w * kWarpSize < n; w++) released |= try_release_warp(w);
    if (released || progress) continue;
    block_fault("deadlock: no thread of the block can make progress");
  }
}

void run_grid(const Launch &launch, dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
  const int n = (int)(block.x * block.y * block.z);
  while ((int)g.stacks.size() < n) g.stacks.push_back(make_stack());
  g.threads.assign((size_t)n, Thread());
  std::vector<unsigned char> dynamic_smem(smem ? smem : 1);
  g.launch = launch;
  g.body = &body;
  g.block.block_dim = block;
  g.block.grid_dim = grid;
  g.block.dynamic_smem = dynamic_smem.data();
  tls_block = &g.block;
  g.in_kernel = true;
  const bool shuffle = shuffling();
  g.rng = g_seed.load() ^ (++g_launches * UINT64_C(0xD1B54A32D192ED03));
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        g.block.block_idx = make_uint3(x, y, z);
        // Fresh dynamic shared memory is poisoned (NaN floats), like device memory, to expose reads before writes.
        memset(dynamic_smem.data(), 0xFF, dynamic_smem.size());
        if (shuffle) poison_static_shared();
        run_block();
      }
  g.in_kernel = false;
  tls_block = nullptr;
  g.body = nullptr;
}

}  // namespace

// ---- synchronisation entry points (called from fibers) ---------------------------------------------------------

void syncthreads_at(const char *file, int line) { syncthreads_reduce_at(0, 0, file, line); }

int syncthreads_reduce_at(int kind, int pred, const char *file, int line) {
  Thread *t = self("__syncthreads", file, line);
  t->state = kAtBarrier;
  t->op = kind;
  t->arg = pred != 0;
  t->file = file;
  t->line = line;
  wait_here(t);
  return (int)t->value;
}

uint64_t warp_op_at(int op, unsigned mask, uint64_t value, int arg, int width, const char *file, int line) {
  Thread *t = self(op_name(op), file, line);
  t->state = kAtWarp;
  t->op = op;
  t->mask = mask;
  t->value = value;
  t->arg = arg;
  t->width = width;
  t->file = file;
  t->line = line;
  wait_here(t);
  return t->value;
}

unsigned activemask() {
  Thread *t = self("__activemask", "", 0);
  // Let the other lanes of the warp run to their next wait or exit first, so lanes that are about to exit (a
  // divergent early return) are not counted, as on a GPU where the warp executes in lockstep.
  t->state = kRunnable;
  wait_here(t);
  const int n_lanes = lanes_in_warp(t->warp);
  const Thread *lanes = &g.threads[(size_t)t->warp * kWarpSize];
  unsigned mask = 0;
  for (int k = 0; k < n_lanes; k++)
    if (lanes[k].state != kDone) mask |= 1u << k;
  return mask;
}

// ---- launch -----------------------------------------------------------------------------------------------------

cudaError_t set_max_dynamic_smem(const void *fn, int bytes) {
  if (bytes < 0 || (size_t)bytes > kSharedMemPerBlockOptin) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_max_dynamic_smem[fn] = bytes;
  return cudaSuccess;
}

cudaError_t launch(const void *fn, const char *kernel, const char *file, int line, dim3 grid, dim3 block,
                   size_t dynamic_smem, cudaStream_t stream, std::function<void()> body) {
  if (g.in_kernel) fault("kernel %s launched from inside kernel %s: dynamic parallelism is not emulated", kernel,
                         g.launch.kernel);
  // Launch configuration checks, with the error codes CUDA gives.
  const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
  cudaError_t err = cudaSuccess;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      block.x > (unsigned)kMaxBlockDim[0] || block.y > (unsigned)kMaxBlockDim[1] ||
      block.z > (unsigned)kMaxBlockDim[2] || threads > (unsigned long long)kMaxThreadsPerBlock ||
      grid.x > kMaxGridDim[0] || grid.y > kMaxGridDim[1] || grid.z > kMaxGridDim[2]) {
    err = cudaErrorInvalidConfiguration;
  } else {
    size_t limit = kSharedMemPerBlock;
    {
      std::lock_guard<std::mutex> lock(g_launch_mutex);
      auto it = g_max_dynamic_smem.find(fn);
      if (it != g_max_dynamic_smem.end() && (size_t)it->second > limit) limit = (size_t)it->second;
    }
    if (dynamic_smem > limit) err = cudaErrorInvalidValue;
  }
  if (err != cudaSuccess) {
    set_last_error(err);
    return err;
  }
  Launch l{kernel, file, line};
  char what[256];
  snprintf(what, sizeof what, "kernel %s", kernel);
  const cudaError_t injected = exec::take_injected_fault(kernel);
  return enqueue(stream, what, [l, grid, block, dynamic_smem, body, injected]() {
    {
      std::lock_guard<std::mutex> lock(g_launch_mutex);
      run_grid(l, grid, block, dynamic_smem, body);
    }
    if (injected != cudaSuccess) raise_async_error(injected);
  });
}

// ---- fault injection ----------------------------------------------------------------------------------------------

namespace {
std::mutex g_inject_mutex;
std::string g_inject_kernel;  // armed when not empty
cudaError_t g_inject_error = cudaSuccess;
}  // namespace

cudaError_t exec::take_injected_fault(const char *kernel) {
  std::lock_guard<std::mutex> lock(g_inject_mutex);
  // The name as written, or (a template) followed by its arguments: "k" arms "k<true>" too.
  const size_t len = g_inject_kernel.size();
  if (len == 0 || strncmp(kernel, g_inject_kernel.c_str(), len) != 0 || (kernel[len] && kernel[len] != '<'))
    return cudaSuccess;
  g_inject_kernel.clear();
  return g_inject_error;
}

// ---- reports ----------------------------------------------------------------------------------------------------

const char *where() {
  if (!g.in_kernel) return "host code";
  const uint3 b = g.block.block_idx;
  if (g.current) {
    const uint3 t = g.current->pub.thread_idx;
    snprintf(g_where, sizeof g_where, "kernel %s (launched at %s:%d), block (%u,%u,%u), thread (%u,%u,%u)",
             g.launch.kernel, g.launch.file, g.launch.line, b.x, b.y, b.z, t.x, t.y, t.z);
  } else {
    snprintf(g_where, sizeof g_where, "kernel %s (launched at %s:%d), block (%u,%u,%u)", g.launch.kernel,
             g.launch.file, g.launch.line, b.x, b.y, b.z);
  }
  return g_where;
}

void fault(const char *fmt, ...) {
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "cuda_emu: %s\ncuda_emu: in %s\n", msg, where());
  fflush(stderr);
  abort();
}

#ifdef CUDA_EMU_ASAN
namespace {
// When AddressSanitizer reports an error (e.g. an out-of-bounds global access) it then calls this: name the
// kernel, block and thread that were running.
void asan_death_callback() {
  if (g.in_kernel) fprintf(stderr, "cuda_emu: the error above happened in %s\n", where());
}
struct InstallAsanCallback {
  InstallAsanCallback() { __sanitizer_set_death_callback(asan_death_callback); }
} g_install_asan_callback;
}  // namespace
#endif

}  // namespace cuda_emu

extern "C" void cuda_emu_inject_async_fault(const char *kernel, cudaError_t error) {
  std::lock_guard<std::mutex> lock(cuda_emu::g_inject_mutex);
  cuda_emu::g_inject_kernel = kernel ? kernel : "";
  cuda_emu::g_inject_error = error;
}

extern "C" int cuda_emu_set_schedule(int shuffle, unsigned long long seed) {
  const int was = cuda_emu::shuffling();
  std::lock_guard<std::mutex> lock(cuda_emu::g_launch_mutex);  // not while a grid runs
  cuda_emu::g_seed.store(seed);
  cuda_emu::g_shuffle.store(shuffle ? 1 : 0);
  cuda_emu::g_launches = 0;  // the same seed and launches give the same schedules
  return was;
}
