// Stream capture, events and CUDA graphs for the emulation (docs/CUDA_EMULATION.md). Every stream
// operation passes through cuda_emu::enqueue (emu_runtime.cc), which asks route() here whether its stream is
// capturing: if so the operation is appended to the capture's graph instead of running. A graph is the
// recorded operations in issue order; cudaGraphLaunch replays them in that order, itself as one operation on its
// stream (so a graph launched inside another capture is recorded there too).
//
// The capture rules follow the CUDA Programming Guide ("Prohibited and Unhandled Operations"):
// - use of the legacy stream (stream 0, synchronous cudaMemcpy/cudaMemset) while a stream not created with
//   cudaStreamNonBlocking is capturing: cudaErrorStreamCaptureImplicit, capture invalidated;
// - potentially unsafe calls (cudaMalloc, cudaFree, synchronous copies) as the thread's capture interaction mode
//   (cudaThreadExchangeStreamCaptureMode) and the capture modes decide: cudaErrorStreamCaptureUnsupported,
//   capture invalidated;
// - synchronising or querying a capturing stream, a captured event, or the device during capture:
//   cudaErrorStreamCaptureUnsupported / cudaErrorCapturedEvent;
// - waiting inside a capture on an event recorded outside it (without cudaEventWaitExternal):
//   cudaErrorStreamCaptureIsolation; on an event of another capture: cudaErrorStreamCaptureMerge;
// - work issued into an invalidated capture: cudaErrorStreamCaptureInvalidated; ending it returns that error
//   and a NULL graph.
// Another stream joins a capture by waiting on an event recorded in it (fork); its work is appended to the same
// ordered list, which is a valid serial schedule of the forked graph.
// Differences from CUDA: graphs have no edges (replay is in issue order, never concurrent); a forked stream that
// was never joined back is released at cudaStreamEndCapture instead of failing with
// cudaErrorStreamCaptureUnjoined; the captured operations' arguments are copied at capture time, while the
// memory they point to is read at replay time, as in CUDA.
#include <cuda_runtime_api.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "emu_internal.h"


// The opaque objects behind cudaEvent_t, cudaGraphNode_t, cudaGraph_t and cudaGraphExec_t.
struct CUevent_st {
  unsigned flags;
  bool recorded = false;              // a timestamp was taken (a record outside capture has run)
  double ms = 0;                      // that timestamp, ms since an arbitrary origin
  unsigned long long capture_id = 0;  // last recorded inside this capture sequence (0: not in a capture)
  cudaStream_t stream = nullptr;      // deferred mode: the stream and ticket of the latest record issued
  unsigned long long ticket = 0;      //   outside capture (cuda_emu::async)
};
// Nodes are shared between a graph and the executable graphs made from it, so either may be destroyed first.
struct CUgraphNode_st {
  std::string what;            // "kernel foo", "cudaMemcpyAsync", ...
  std::function<void()> op;    // runs the operation; called once per replay
};
struct CUgraph_st {
  std::vector<std::shared_ptr<CUgraphNode_st>> nodes;
  bool capturing = false;      // still the target of an active capture
};
struct CUgraphExec_st {
  std::vector<std::shared_ptr<CUgraphNode_st>> nodes;
};

namespace cuda_emu {
namespace {

struct Capture {
  unsigned long long id;                 // unique over the process, as cudaStreamGetCaptureInfo reports it
  cudaGraph_t graph;
  cudaStreamCaptureMode mode;
  std::thread::id thread;                // the thread that began it
  cudaStream_t origin;                   // the stream it began on; it must end there
  std::map<cudaStream_t, bool> members;  // origin and forked streams -> blocking (no cudaStreamNonBlocking)
  bool invalidated = false;
  cudaGraphNode_t last = nullptr;        // the latest node, reported as the capture's dependency set

  bool has_blocking_member() const {
    for (const auto &m : members)
      if (m.second) return true;
    return false;
  }
};

struct State {
  std::mutex mu;
  std::unordered_map<cudaStream_t, std::shared_ptr<Capture>> by_stream;  // capturing stream -> its capture
  std::map<unsigned long long, std::shared_ptr<Capture>> active;          // id -> capture, until it ends
  unsigned long long next_id = 0;
  std::unordered_set<cudaGraph_t> graphs;
  std::unordered_set<cudaGraphExec_t> execs;
  std::unordered_set<cudaEvent_t> events;
};
State &state() {
  static State *s = new State;  // never destroyed, usable from static destructors
  return *s;
}

// The calling thread's capture interaction mode (cudaThreadExchangeStreamCaptureMode), global by default.
thread_local cudaStreamCaptureMode t_mode = cudaStreamCaptureModeGlobal;

cudaError_t fail(cudaError_t e) {
  if (e != cudaSuccess) set_last_error(e);
  return e;
}

// Use of the legacy stream: invalidates every capture with a blocking stream. Caller holds the lock.
cudaError_t legacy_use(State &st) {
  cudaError_t e = cudaSuccess;
  for (auto &kv : st.active)
    if (kv.second->has_blocking_member()) {
      kv.second->invalidated = true;
      e = cudaErrorStreamCaptureImplicit;
    }
  return e;
}

Capture *capture_of(State &st, cudaStream_t s) {
  auto it = st.by_stream.find(s);
  return it == st.by_stream.end() ? nullptr : it->second.get();
}

// Ends capture `c`: its streams stop capturing and its id becomes inactive. Caller holds the lock.
void finish(State &st, Capture *c) {
  for (const auto &m : c->members) st.by_stream.erase(m.first);
  c->graph->capturing = false;
  st.active.erase(c->id);  // may destroy *c
}

void destroy_graph(State &st, cudaGraph_t g) {
  st.graphs.erase(g);
  delete g;
}

}  // namespace

// ---- hooks used by emu_runtime.cc ----------------------------------------------------------------------
cudaError_t capture::route(cudaStream_t s, const char *what, std::function<void()> &op, bool *recorded) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  *recorded = false;
  if (s == cudaStreamLegacy) return legacy_use(st);
  Capture *c = capture_of(st, s);
  if (!c) return cudaSuccess;
  if (c->invalidated) return cudaErrorStreamCaptureInvalidated;
  auto node = std::make_shared<CUgraphNode_st>();
  node->what = what ? what : "operation";
  node->op = std::move(op);
  c->last = node.get();
  c->graph->nodes.push_back(std::move(node));
  *recorded = true;
  return cudaSuccess;
}

cudaError_t capture::check_unsafe() {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  const std::thread::id me = std::this_thread::get_id();
  cudaError_t e = cudaSuccess;
  for (auto &kv : st.active) {
    Capture &c = *kv.second;
    // Global (default): prohibited while this thread has a non-relaxed capture or any thread a global one.
    // Thread-local: only this thread's non-relaxed captures count. Relaxed: never prohibited.
    const bool mine = c.thread == me && c.mode != cudaStreamCaptureModeRelaxed;
    bool prohibits = false;
    if (t_mode == cudaStreamCaptureModeGlobal) prohibits = mine || c.mode == cudaStreamCaptureModeGlobal;
    if (t_mode == cudaStreamCaptureModeThreadLocal) prohibits = mine;
    if (prohibits) {
      c.invalidated = true;
      e = cudaErrorStreamCaptureUnsupported;
    }
  }
  return e;
}

cudaError_t capture::check_sync(cudaStream_t s) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (s == cudaStreamLegacy) return legacy_use(st);
  if (Capture *c = capture_of(st, s)) {
    c->invalidated = true;
    return cudaErrorStreamCaptureUnsupported;
  }
  return cudaSuccess;
}

cudaError_t capture::check_device_sync() {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  for (auto &kv : st.active) kv.second->invalidated = true;
  return st.active.empty() ? cudaSuccess : cudaErrorStreamCaptureUnsupported;
}

bool capture::active(cudaStream_t s) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  return capture_of(st, s) != nullptr;
}

// A destroyed origin stream abandons its capture (the graph is discarded); a destroyed forked stream leaves it
// and invalidates it.
void capture::stream_destroyed(cudaStream_t s) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  auto it = st.by_stream.find(s);
  if (it == st.by_stream.end()) return;
  std::shared_ptr<Capture> c = it->second;
  if (c->origin == s) {
    finish(st, c.get());
    destroy_graph(st, c->graph);
  } else {
    c->invalidated = true;
    c->members.erase(s);
    st.by_stream.erase(it);
  }
}

}  // namespace cuda_emu

using cuda_emu::fail;
using cuda_emu::state;

// ---- stream capture ------------------------------------------------------------------------------------
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorInvalidValue);
  cudaStream_t s;
  unsigned flags;
  if (cudaError_t e = cuda_emu::streams::lookup(stream, &s, &flags); e != cudaSuccess) return fail(e);
  if (s == cudaStreamLegacy) return fail(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot capture
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (st.by_stream.count(s)) return fail(cudaErrorIllegalState);  // already capturing
  auto c = std::make_shared<cuda_emu::Capture>();
  c->id = ++st.next_id;
  c->graph = new CUgraph_st;
  c->graph->capturing = true;
  st.graphs.insert(c->graph);
  c->mode = mode;
  c->thread = std::this_thread::get_id();
  c->origin = s;
  c->members[s] = !(flags & cudaStreamNonBlocking);
  st.by_stream[s] = c;
  st.active[c->id] = c;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *pGraph) {
  if (!pGraph) return fail(cudaErrorInvalidValue);
  *pGraph = nullptr;
  cudaStream_t s;
  unsigned flags;
  if (cudaError_t e = cuda_emu::streams::lookup(stream, &s, &flags); e != cudaSuccess) return fail(e);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  auto it = st.by_stream.find(s);
  if (it == st.by_stream.end()) return fail(cudaErrorIllegalState);  // not capturing
  std::shared_ptr<cuda_emu::Capture> c = it->second;
  if (c->origin != s) {  // ended on a forked stream
    c->invalidated = true;
    return fail(cudaErrorStreamCaptureUnmatched);
  }
  if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread);
  cuda_emu::finish(st, c.get());
  if (c->invalidated) {
    cuda_emu::destroy_graph(st, c->graph);
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *pGraph = c->graph;
  return cudaSuccess;
}

// Status of `stream`; on the legacy stream, cudaErrorStreamCaptureImplicit while a blocking stream captures
// (that query does not invalidate anything). Caller holds the lock.
static cudaError_t capture_status(cuda_emu::State &st, cudaStream_t s, cudaStreamCaptureStatus *status,
                                  cuda_emu::Capture **capture) {
  *capture = nullptr;
  *status = cudaStreamCaptureStatusNone;
  if (s == cudaStreamLegacy) {
    for (const auto &kv : st.active)
      if (kv.second->has_blocking_member()) return cudaErrorStreamCaptureImplicit;
    return cudaSuccess;
  }
  if (cuda_emu::Capture *c = cuda_emu::capture_of(st, s)) {
    *capture = c;
    *status = c->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  }
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *pCaptureStatus) {
  if (!pCaptureStatus) return fail(cudaErrorInvalidValue);
  cudaStream_t s;
  unsigned flags;
  if (cudaError_t e = cuda_emu::streams::lookup(stream, &s, &flags); e != cudaSuccess) return fail(e);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  cuda_emu::Capture *c;
  return fail(capture_status(st, s, pCaptureStatus, &c));
}

// The dependency set reported is the latest captured node (the emulated graph is a chain); edge data is empty.
cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream, enum cudaStreamCaptureStatus *captureStatus_out,
                                     unsigned long long *id_out, cudaGraph_t *graph_out,
                                     const cudaGraphNode_t **dependencies_out,
                                     const cudaGraphEdgeData **edgeData_out, size_t *numDependencies_out) {
  if (!captureStatus_out || (edgeData_out && !dependencies_out)) return fail(cudaErrorInvalidValue);
  cudaStream_t s;
  unsigned flags;
  if (cudaError_t e = cuda_emu::streams::lookup(stream, &s, &flags); e != cudaSuccess) return fail(e);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  cuda_emu::Capture *c;
  if (cudaError_t e = capture_status(st, s, captureStatus_out, &c); e != cudaSuccess) return fail(e);
  if (*captureStatus_out != cudaStreamCaptureStatusActive) return cudaSuccess;  // nothing else is valid
  static const cudaGraphEdgeData kNoEdgeData[1] = {};
  if (id_out) *id_out = c->id;
  if (graph_out) *graph_out = c->graph;
  if (dependencies_out) *dependencies_out = c->last ? &c->last : nullptr;
  if (edgeData_out) *edgeData_out = c->last ? kNoEdgeData : nullptr;
  if (numDependencies_out) *numDependencies_out = c->last ? 1 : 0;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode) {
  if (!mode || (*mode != cudaStreamCaptureModeGlobal && *mode != cudaStreamCaptureModeThreadLocal &&
                *mode != cudaStreamCaptureModeRelaxed))
    return fail(cudaErrorInvalidValue);
  std::swap(*mode, cuda_emu::t_mode);
  return cudaSuccess;
}

// ---- graphs --------------------------------------------------------------------------------------------
// Unknown or destroyed graph handles are cudaErrorInvalidValue (CUDA's code for a bad graph argument).
cudaError_t cudaGraphCreate(cudaGraph_t *pGraph, unsigned int flags) {
  if (!pGraph || flags != 0) return fail(cudaErrorInvalidValue);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  *pGraph = new CUgraph_st;
  st.graphs.insert(*pGraph);
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.graphs.count(graph)) return fail(cudaErrorInvalidValue);
  if (graph->capturing) return fail(cudaErrorIllegalState);  // CUDA forbids destroying a graph being captured
  cuda_emu::destroy_graph(st, graph);
  return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t *nodes, size_t *numNodes) {
  if (!numNodes) return fail(cudaErrorInvalidValue);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.graphs.count(graph)) return fail(cudaErrorInvalidValue);
  const size_t n = graph->nodes.size();
  if (nodes) {  // fill *numNodes entries: the nodes in issue order, then NULLs
    for (size_t i = 0; i < *numNodes; i++) nodes[i] = i < n ? graph->nodes[i].get() : nullptr;
    if (*numNodes > n) *numNodes = n;
  } else {
    *numNodes = n;
  }
  return cudaSuccess;
}

// Instantiation snapshots the node list: later changes to (or destruction of) the graph do not affect it.
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  const unsigned long long known = cudaGraphInstantiateFlagAutoFreeOnLaunch | cudaGraphInstantiateFlagUpload |
                                   cudaGraphInstantiateFlagDeviceLaunch | cudaGraphInstantiateFlagUseNodePriority;
  if (!pGraphExec || (flags & ~known)) return fail(cudaErrorInvalidValue);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.graphs.count(graph)) return fail(cudaErrorInvalidValue);
  auto *exec = new CUgraphExec_st;
  exec->nodes = graph->nodes;
  st.execs.insert(exec);
  *pGraphExec = exec;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *pGraphExec, cudaGraph_t graph,
                                          unsigned long long flags) {
  return cudaGraphInstantiate(pGraphExec, graph, flags);
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.execs.erase(graphExec)) return fail(cudaErrorInvalidValue);
  delete graphExec;
  return cudaSuccess;
}

// A launch is one stream operation that replays the nodes in issue order. The operation holds the nodes
// themselves, so it stays valid if recorded into another capture and the executable graph is destroyed.
cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
  std::vector<std::shared_ptr<CUgraphNode_st>> nodes;
  {
    cuda_emu::State &st = state();
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.execs.count(graphExec)) return fail(cudaErrorInvalidValue);
    nodes = graphExec->nodes;
  }
  return cuda_emu::enqueue(stream, "cudaGraphLaunch", [nodes = std::move(nodes)] {
    for (const auto &node : nodes) node->op();
  });
}

// Nothing to upload: device memory is host memory.
cudaError_t cudaGraphUpload(cudaGraphExec_t graphExec, cudaStream_t stream) {
  cudaStream_t s;
  unsigned flags;
  {
    cuda_emu::State &st = state();
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.execs.count(graphExec)) return fail(cudaErrorInvalidValue);
  }
  return fail(cuda_emu::streams::lookup(stream, &s, &flags));
}

// ---- events --------------------------------------------------------------------------------------------
// Unknown or destroyed event handles are cudaErrorInvalidResourceHandle, never dereferenced.

// Deferred mode: true (with the stream and ticket of its latest record) when `event` is live and was recorded
// outside capture. Taken before the queues run: their record operations lock the same state.
static bool event_pending(cudaEvent_t event, cudaStream_t *on, unsigned long long *ticket) {
  if (!cuda_emu::async::enabled()) return false;
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.events.count(event) || !event->ticket) return false;
  *on = event->stream;
  *ticket = event->ticket;
  return true;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
  const unsigned known = cudaEventBlockingSync | cudaEventDisableTiming | cudaEventInterprocess;
  if (!event || (flags & ~known)) return fail(cudaErrorInvalidValue);
  if ((flags & cudaEventInterprocess) && !(flags & cudaEventDisableTiming)) return fail(cudaErrorInvalidValue);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  *event = new CUevent_st{};
  (*event)->flags = flags;
  st.events.insert(*event);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

// A record still queued in the deferred mode runs first (CUDA releases the event once it has).
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  cudaStream_t on = nullptr;
  unsigned long long ticket = 0;
  if (event_pending(event, &on, &ticket)) cuda_emu::async::drain(on, ticket);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.events.erase(event)) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

// Outside capture a record is a stream operation that takes a host timestamp when it runs. Inside a capture it
// only marks the event as captured (it can then order other streams' work through cudaStreamWaitEvent); with
// cudaEventRecordExternal it becomes a node that takes the timestamp at every replay.
cudaError_t cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream, unsigned int flags) {
  if (flags & ~(unsigned)cudaEventRecordExternal) return fail(cudaErrorInvalidValue);
  cudaStream_t s;
  unsigned sflags;
  if (cudaError_t e = cuda_emu::streams::lookup(stream, &s, &sflags); e != cudaSuccess) return fail(e);
  cuda_emu::State &st = state();
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.events.count(event)) return fail(cudaErrorInvalidResourceHandle);
    cuda_emu::Capture *c = cuda_emu::capture_of(st, s);
    if (c && !(flags & cudaEventRecordExternal)) {
      if (c->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
      event->capture_id = c->id;
      return cudaSuccess;
    }
  }
  bool recorded = false;
  const cudaError_t e = cuda_emu::enqueue(s, "cudaEventRecord", [event, &st] {
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.events.count(event)) cuda_emu::fault("cudaEventRecord: event destroyed before the record ran");
    event->recorded = true;
    event->ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
                    .count();
    event->capture_id = 0;
  }, &recorded);
  if (e == cudaSuccess && !recorded && cuda_emu::async::enabled()) {
    const unsigned long long ticket = cuda_emu::async::last(s);  // before the lock: see event_pending
    std::lock_guard<std::mutex> lock(st.mu);
    if (st.events.count(event)) event->stream = s, event->ticket = ticket;
  }
  return e;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  return cudaEventRecordWithFlags(event, stream, cudaEventRecordDefault);
}

// Complete (work ran when it was issued), except while the event's last record is part of an active capture:
// cudaErrorCapturedEvent. A never-recorded event is complete too, as in CUDA. In the deferred mode the work up
// to the record runs first; a query that had to run any answers cudaErrorNotReady (not a last error, as in CUDA).
static cudaError_t event_wait(cudaEvent_t event, bool query) {
  cudaStream_t on = nullptr;
  unsigned long long ticket = 0;
  const bool ran = event_pending(event, &on, &ticket) && cuda_emu::async::drain(on, ticket);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.events.count(event)) return fail(cudaErrorInvalidResourceHandle);
  if (event->capture_id && st.active.count(event->capture_id)) return fail(cudaErrorCapturedEvent);
  if (ran && query && cuda_emu::async_error() == cudaSuccess) return cudaErrorNotReady;
  return fail(cuda_emu::async_error());  // a faulted kernel's error surfaces here too
}

cudaError_t cudaEventQuery(cudaEvent_t event) { return event_wait(event, true); }

cudaError_t cudaEventSynchronize(cudaEvent_t event) { return event_wait(event, false); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return fail(cudaErrorInvalidValue);
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.events.count(start) || !st.events.count(end)) return fail(cudaErrorInvalidResourceHandle);
  // Never recorded, or created with cudaEventDisableTiming: cudaErrorInvalidResourceHandle, as in CUDA.
  if (!start->recorded || !end->recorded || ((start->flags | end->flags) & cudaEventDisableTiming))
    return fail(cudaErrorInvalidResourceHandle);
  *ms = (float)(end->ms - start->ms);
  return cudaSuccess;
}

// Outside capture the awaited work has already run (in the deferred mode: later work on `stream` waits for the
// event's record), so a wait applies the capture rules: waiting on an event of an active capture makes `stream`
// join it (fork) or is a join inside it.
static cudaError_t stream_wait_event(cudaStream_t s, unsigned sflags, cudaEvent_t event, unsigned int flags);

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  if (flags & ~(unsigned)cudaEventWaitExternal) return fail(cudaErrorInvalidValue);
  cudaStream_t s;
  unsigned sflags;
  if (cudaError_t e = cuda_emu::streams::lookup(stream, &s, &sflags); e != cudaSuccess) return fail(e);
  cudaStream_t on = nullptr;
  unsigned long long ticket = 0;
  const bool pending = event_pending(event, &on, &ticket);
  const cudaError_t e = stream_wait_event(s, sflags, event, flags);
  if (e == cudaSuccess && pending && !cuda_emu::capture::active(s)) cuda_emu::async::wait(s, sflags, on, ticket);
  return e;
}

static cudaError_t stream_wait_event(cudaStream_t s, unsigned sflags, cudaEvent_t event, unsigned int flags) {
  cuda_emu::State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.events.count(event)) return fail(cudaErrorInvalidResourceHandle);
  cuda_emu::Capture *mine = cuda_emu::capture_of(st, s);
  auto it = event->capture_id ? st.active.find(event->capture_id) : st.active.end();
  if (it != st.active.end()) {  // the event was last recorded in an active capture
    cuda_emu::Capture *c = it->second.get();
    if (c->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    if (mine == c) return cudaSuccess;  // a join inside the capture: its order is already issue order
    if (mine) {
      mine->invalidated = c->invalidated = true;
      return fail(cudaErrorStreamCaptureMerge);
    }
    if (s == cudaStreamLegacy) {  // the legacy stream cannot join a capture
      c->invalidated = true;
      return fail(cudaErrorStreamCaptureImplicit);
    }
    c->members[s] = !(sflags & cudaStreamNonBlocking);  // fork: s now captures into c
    st.by_stream[s] = it->second;
    return cudaSuccess;
  }
  if (s == cudaStreamLegacy) return fail(cuda_emu::legacy_use(st));
  if (!mine) return cudaSuccess;
  if (mine->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  if (event->recorded && !(flags & cudaEventWaitExternal)) {  // dependency on uncaptured work
    mine->invalidated = true;
    return fail(cudaErrorStreamCaptureIsolation);
  }
  return cudaSuccess;  // never recorded (a no-op), or an external wait on work that has already run
}
