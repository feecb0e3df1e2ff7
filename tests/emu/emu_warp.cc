// Barrier and warp-operation resolution for the CUDA emulation's block scheduler: when the threads waiting at a
// __syncthreads or at a warp operation (__syncwarp, shuffles, votes) may go on, what each receives, and the fault
// reports for divergent barriers, bad masks, exited lanes, mismatched warp operations and bad shuffle widths.
#include <stdio.h>
#include <string.h>

#include <vector>

#include "emu_sched.h"

namespace cuda_emu::sched {

namespace {

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

// Lane `l` (thread t) waits at a warp operation: its mask must name it and only lanes that exist.
void check_mask(const Thread &t, int l, int n_lanes) {
  char msg[512];
  if (!(t.mask & (1u << l))) {
    snprintf(msg, sizeof msg, "%s at %s:%d: the calling %s (lane %d) is not in its mask 0x%08x", op_name(t.op), t.file,
             t.line, thread_name(t).c_str(), l, t.mask);
    block_fault(msg);
  }
  if (n_lanes < 32 && (t.mask >> n_lanes) != 0) {
    snprintf(msg, sizeof msg, "%s at %s:%d: mask 0x%08x names lanes that do not exist (this warp of the block has "
                              "%d lanes; use __activemask() or a mask of existing lanes)",
             op_name(t.op), t.file, t.line, t.mask, n_lanes);
    block_fault(msg);
  }
}

// Whether every lane named in t's mask waits at the same warp operation as t (same operation, mask and place). A
// named lane that has exited, or waits at another warp operation, is reported; one still on its way (or stuck
// elsewhere: a no-progress round reports it) means not yet.
bool mask_lanes_ready(const Thread *lanes, int n_lanes, const Thread &t) {
  char msg[512];
  for (int k = 0; k < n_lanes; k++) {
    if (!(t.mask & (1u << k))) continue;
    const Thread &o = lanes[k];
    if (o.state == kDone) {
      snprintf(msg, sizeof msg, "%s at %s:%d: lane %d (%s) named in mask 0x%08x has exited", op_name(t.op), t.file,
               t.line, k, thread_name(o).c_str(), t.mask);
      block_fault(msg);
    }
    if (o.state != kAtWarp) return false;
    if (o.op != t.op || o.mask != t.mask || o.line != t.line || strcmp(o.file, t.file) != 0) {
      snprintf(msg, sizeof msg, "mismatched warp operations: %s waits at %s (%s:%d) with mask 0x%08x, %s at %s "
                                "(%s:%d) with mask 0x%08x",
               thread_name(t).c_str(), op_name(t.op), t.file, t.line, t.mask, thread_name(o).c_str(), op_name(o.op),
               o.file, o.line, o.mask);
      block_fault(msg);
    }
  }
  return true;
}

// What lane `k` (waiting at its warp operation with every lane of `mask`) receives: nothing for __syncwarp, the
// vote for __ballot_sync / __any_sync / __all_sync (`votes`: the mask's lanes whose predicate holds), the source
// lane's value for a shuffle.
uint64_t warp_result(const Thread *lanes, int n_lanes, unsigned mask, unsigned votes, int k) {
  const Thread &o = lanes[k];
  switch (o.op) {
    case kSyncwarp:
      return 0;
    case kBallot:
      return votes;
    case kAny:
      return votes != 0;
    case kAll:
      return votes == mask;
  }
  if (o.width < 1 || o.width > 32 || (o.width & (o.width - 1))) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s at %s:%d: width %d is not a power of 2 in [1, 32]", op_name(o.op), o.file, o.line,
             o.width);
    block_fault(msg);
  }
  // Reading a lane outside the mask gives an undefined value in CUDA (code may discard it): poison, all bits set
  // (NaN for floats, -1 for integers), so using it shows up.
  const int src = shuffle_source(o.op, k, o.arg, o.width);
  return src < 0 || src >= n_lanes || !(mask & (1u << src)) ? ~UINT64_C(0) : lanes[src].value;
}

// Every lane of `mask` waits at the same warp operation: compute each one's result from the values deposited,
// then let them all go on.
void release_mask(Thread *lanes, int n_lanes, unsigned mask) {
  unsigned votes = 0;
  for (int k = 0; k < n_lanes; k++)
    if ((mask & (1u << k)) && lanes[k].arg) votes |= 1u << k;
  std::vector<uint64_t> results((size_t)n_lanes);
  for (int k = 0; k < n_lanes; k++)
    if (mask & (1u << k)) results[k] = warp_result(lanes, n_lanes, mask, votes, k);
  for (int k = 0; k < n_lanes; k++)
    if (mask & (1u << k)) {
      lanes[k].value = results[k];
      lanes[k].state = kRunnable;
    }
}

}  // namespace

// A barrier that some threads reach while others have exited, or wait at another barrier, is a divergent barrier
// (undefined in CUDA; a hang or silent corruption on a GPU): reported.
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

bool try_release_warp(int warp) {
  const int n_lanes = lanes_in_warp(warp);
  Thread *lanes = &g.threads[(size_t)warp * kWarpSize];
  bool released = false;
  for (int l = 0; l < n_lanes; l++) {
    const Thread &t = lanes[l];
    if (t.state != kAtWarp) continue;
    check_mask(t, l, n_lanes);
    if (!mask_lanes_ready(lanes, n_lanes, t)) continue;
    release_mask(lanes, n_lanes, t.mask);
    released = true;
  }
  return released;
}

}  // namespace cuda_emu::sched
