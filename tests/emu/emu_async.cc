// The asynchronous mode of the CUDA emulation (CUDA_EMU_ASYNC=1, docs/CUDA_EMULATION.md): deferred execution.
// Every direct stream operation is queued on its stream and runs only when the host synchronises with it (or with
// work that depends on it), never when it is issued. Ordering is what CUDA promises and nothing more: issue order
// within a stream, cudaStreamWaitEvent, and the legacy default stream's implicit synchronisation with blocking
// streams (an operation on the legacy stream waits for the work issued before it on every blocking stream; an
// operation on a blocking stream waits for the work issued before it on the legacy stream).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "emu_internal.h"

namespace cuda_emu::async {
namespace {

using Dep = std::pair<cudaStream_t, unsigned long long>;  // (stream, ticket): that stream's work up to the ticket

struct Item {
  unsigned long long ticket;
  std::vector<Dep> deps;  // run before the operation
  std::function<void()> op;
};
struct Queue {
  std::deque<Item> items;
  unsigned long long last = 0;  // ticket of the latest operation issued on the stream
  bool blocking = true;         // created without cudaStreamNonBlocking (the legacy stream: true)
};
struct State {
  std::recursive_mutex mu;  // held while operations run: a drain runs other streams' work it depends on
  std::map<cudaStream_t, Queue> queues;
  unsigned long long next_ticket = 0;  // tickets grow over all streams, in issue order
};
State &state() {
  static State *s = new State;  // never destroyed: static destructors may still synchronise
  return *s;
}

// -1: not read yet; else 0 (synchronous) or 1 (deferred).
std::atomic<int> g_mode{-1};

cudaStream_t canonical(cudaStream_t s) { return s == nullptr ? cudaStreamLegacy : s; }

// Runs `s`'s queued operations with tickets <= `ticket`, each after its dependencies. Caller holds st.mu.
bool run_until(State &st, cudaStream_t s, unsigned long long ticket) {
  bool ran = false;
  for (;;) {
    auto it = st.queues.find(s);
    if (it == st.queues.end() || it->second.items.empty() || it->second.items.front().ticket > ticket) break;
    Item item = std::move(it->second.items.front());
    it->second.items.pop_front();  // `it` may be invalidated by the nested runs below
    for (const Dep &d : item.deps) run_until(st, d.first, d.second);
    item.op();
    ran = true;
  }
  return ran;
}

}  // namespace

bool enabled() {
  int m = g_mode.load();
  if (m < 0) {
    const char *v = getenv("CUDA_EMU_ASYNC");
    if (v && *v && strcmp(v, "0") != 0 && strcmp(v, "1") != 0) {
      fprintf(stderr, "cuda_emu: CUDA_EMU_ASYNC must be 0 or 1, not \"%s\"\n", v);
      exit(2);
    }
    m = v && strcmp(v, "1") == 0;
    int expected = -1;
    if (!g_mode.compare_exchange_strong(expected, m)) m = expected;
  }
  return m == 1;
}

void submit(cudaStream_t stream, unsigned flags, std::function<void()> op) {
  State &st = state();
  std::lock_guard<std::recursive_mutex> lock(st.mu);
  const cudaStream_t s = canonical(stream);
  Queue &q = st.queues[s];
  q.blocking = s == cudaStreamLegacy || !(flags & cudaStreamNonBlocking);
  Item item{++st.next_ticket, {}, std::move(op)};
  if (s == cudaStreamLegacy) {
    for (const auto &[other, oq] : st.queues)
      if (other != s && oq.blocking && !oq.items.empty()) item.deps.push_back({other, oq.last});
  } else if (q.blocking) {
    auto legacy = st.queues.find(cudaStreamLegacy);
    if (legacy != st.queues.end() && !legacy->second.items.empty())
      item.deps.push_back({cudaStreamLegacy, legacy->second.last});
  }
  q.last = item.ticket;
  q.items.push_back(std::move(item));
}

unsigned long long last(cudaStream_t stream) {
  State &st = state();
  std::lock_guard<std::recursive_mutex> lock(st.mu);
  auto it = st.queues.find(canonical(stream));
  return it == st.queues.end() ? 0 : it->second.last;
}

void wait(cudaStream_t stream, unsigned flags, cudaStream_t on, unsigned long long ticket) {
  if (ticket == 0) return;
  {
    State &st = state();
    std::lock_guard<std::recursive_mutex> lock(st.mu);
    auto it = st.queues.find(canonical(on));
    if (it == st.queues.end() || it->second.items.empty() || it->second.items.front().ticket > ticket) return;
  }
  submit(stream, flags, [on, ticket] { drain(on, ticket); });
}

bool drain(cudaStream_t stream, unsigned long long ticket) {
  State &st = state();
  std::lock_guard<std::recursive_mutex> lock(st.mu);
  return run_until(st, canonical(stream), ticket);
}

bool drain_all() {
  State &st = state();
  std::lock_guard<std::recursive_mutex> lock(st.mu);
  bool ran = false;
  for (;;) {  // the stream whose next operation was issued first, until every queue is empty
    cudaStream_t first = nullptr;
    unsigned long long t = ~0ULL;
    for (const auto &[s, q] : st.queues)
      if (!q.items.empty() && q.items.front().ticket < t) first = s, t = q.items.front().ticket;
    if (!first) return ran;
    ran |= run_until(st, first, t);
  }
}

void forget(cudaStream_t stream) {
  State &st = state();
  std::lock_guard<std::recursive_mutex> lock(st.mu);
  run_until(st, canonical(stream), ~0ULL);
  st.queues.erase(canonical(stream));
}

}  // namespace cuda_emu::async

extern "C" int cuda_emu_set_async(int on) {
  const int was = cuda_emu::async::enabled();
  if (!on) cuda_emu::async::drain_all();
  cuda_emu::async::g_mode.store(on ? 1 : 0);
  return was;
}
