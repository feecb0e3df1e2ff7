// Kernel execution for the CUDA emulation: launch validation, one fiber per CUDA thread (Boost.Context's
// fcontext with our own guard-paged stacks), the block scheduler that runs fibers until they reach a
// synchronisation point, the synchronisation entry points, fault injection, and fault reports (deadlocks, divergent
// barriers, bad shuffles) that name the kernel, block, thread and source line. Barriers and warp operations are
// resolved in emu_warp.cc, the schedule mode (CUDA_EMU_SCHEDULE=shuffle:SEED) is emu_schedule.cc.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu_sched.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#endif

namespace cuda_emu {

thread_local ThreadCtx *tls_thread = nullptr;
thread_local BlockCtx *tls_block = nullptr;

namespace sched {

Scheduler g;
std::mutex g_launch_mutex;

namespace {

// Each fiber's stack: mmap'd, with a PROT_NONE guard page below it, so an overflow faults at once instead of
// corrupting the neighbour. Stacks are kept for the life of the process and reused by every launch.
#ifdef CUDA_EMU_ASAN
constexpr size_t kStackSize = 1024 * 1024;  // ASan's redzones need more room
#else
constexpr size_t kStackSize = 256 * 1024;
#endif

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
  seed_launch();
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

}  // namespace sched

using namespace sched;

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
