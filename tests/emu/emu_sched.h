// The block scheduler's private types and interfaces, shared by emu_exec.cc (fibers, launch, reports),
// emu_warp.cc (barrier and warp-operation resolution) and emu_schedule.cc (the schedule mode). Not for other parts
// of the emulation: those use emu_internal.h.
#pragma once
#include <boost/context/detail/fcontext.hpp>
#include <stddef.h>
#include <stdint.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace cuda_emu::sched {

namespace fc = boost::context::detail;

// Each fiber's stack: mmap'd, with a PROT_NONE guard page below it (emu_exec.cc, make_stack).
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

// ---- emu_exec.cc ----------------------------------------------------------------------------------------------
extern Scheduler g;             // the block being run (one grid at a time)
extern std::mutex g_launch_mutex;  // one grid at a time, whichever host thread launches it
void resume(Thread *th);  // scheduler -> fiber, until the fiber waits or finishes
std::string thread_name(const Thread &t);  // "thread (x,y,z)"
const char *op_name(int op);               // "__shfl_sync", ... (a WarpOp)
[[noreturn]] void block_fault(const char *headline);  // a fault inside a block, with its threads' states

// ---- emu_warp.cc ----------------------------------------------------------------------------------------------
// Releases a __syncthreads when every thread of the block waits at the same one.
bool try_release_barrier();
int lanes_in_warp(int warp);  // 32, or fewer in the block's last warp
// Releases the lanes of `warp` that wait at a warp operation once every lane named in their mask waits at it.
bool try_release_warp(int warp);

// ---- emu_schedule.cc: the schedule mode (CUDA_EMU_SCHEDULE=shuffle:SEED) ------------------------------------
bool shuffling();         // whether the mode is on (reads CUDA_EMU_SCHEDULE once; exits 2 on a bad value)
void seed_launch();       // seeds g.rng for the next launch (under g_launch_mutex)
void run_block_shuffled();  // runs the block of g.threads (set up) to its end in a random order
void poison_static_shared();  // fills static __shared__ memory with 0xFF bytes

}  // namespace cuda_emu::sched
