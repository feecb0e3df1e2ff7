// The NCCL subset of the CUDA emulation, over MPI (docs/CUDA_EMULATION.md, "NCCL"): each MPI process is one rank
// with its emulated device; a communicator is a duplicate of MPI_COMM_WORLD; all-reduce, reduce-scatter, all-gather
// reduce and broadcast are stream operations like the emulation's kernels and copies (run at once, queued in the deferred
// mode, or recorded into a graph while their stream is captured); group calls. Every function has the real
// prototype from nccl.h; the functions this file lacks (ncclSend, ncclRecv, ...) do not link.
//
// - Determinism: a reduction gathers every rank's input and adds it in rank order, ((x_0 + x_1) + x_2) + ..., on
//   every rank, so every rank gets the same bits, run after run (real NCCL's ring and tree orders differ).
// - Threads: the emulation starts no thread; a collective makes its MPI calls on the host thread that runs its
//   stream's work: the issuing thread, in the deferred mode (CUDA_EMU_ASYNC=1) the thread that synchronises, for a
//   graph the thread whose launch runs it. A program initialised with MPI_THREAD_FUNNELED (cuvae) or
//   MPI_THREAD_SINGLE must let only its main thread do that (checked: a collective run on another thread stops the
//   program with a message); MPI_THREAD_SERIALIZED serialises the emulation's calls among themselves only (the
//   program's own MPI calls are its business); MPI_THREAD_MULTIPLE allows anything.
// - Order across ranks: MPI matches collectives by their order on a communicator, so every rank must run them in the
//   same order. NCCL requires the same issue order; the emulation runs a communicator's collectives in issue order
//   also in the deferred mode (each first runs the communicator's previous one, wherever it is queued). Collectives
//   inside a graph run when the launch runs: graphs on several streams sharing a communicator need an order the
//   program gives them (one stream, or events), as on a GPU.
// - Errors: a call's bad arguments are refused at the call with a message on stderr. MPI failures (a dead peer)
//   stop the whole job: MPI_ERRORS_ARE_FATAL, and mpirun kills every rank when one dies.
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <unordered_set>
#include <utility>
#include <vector>

#include "emu_internal.h"

namespace cuda_emu::nccl {

enum State { kLive, kDestroyed, kAborted };
struct Comm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 1, device = 0;
  int thread_level = MPI_THREAD_SINGLE;  // MPI_Query_thread at initialisation
  std::atomic<int> state{kLive};
  // The deferred mode: the stream and ticket of the latest operation issued on the communicator (ticket 0: none).
  cudaStream_t last_stream = nullptr;
  unsigned long long last_ticket = 0;
};

}  // namespace cuda_emu::nccl

// The opaque object behind ncclComm_t. Operations hold the communicator's state, so a graph that outlives
// ncclCommDestroy finds it marked destroyed instead of freed.
struct ncclComm {
  std::shared_ptr<cuda_emu::nccl::Comm> c;
};

namespace cuda_emu::nccl {
namespace {

enum Kind { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kReduce };
// One collective as issued. count is ncclAllReduce's, ncclReduce's and ncclBroadcast's count, ncclReduceScatter's
// recvcount, ncclAllGather's sendcount.
struct Call {
  Kind kind;
  const char *name;
  const void *send;
  void *recv;
  size_t count;
  ncclDataType_t type;
  int root;
  std::shared_ptr<Comm> comm;
  cudaStream_t stream;  // canonical (streams::lookup)
};

struct Registry {
  std::mutex mu;  // guards `live`, every Comm's last_stream / last_ticket, and last_error
  std::unordered_set<ncclComm *> live;
  char last_error[512] = "";
};
Registry &registry() {
  static Registry *r = new Registry;  // never destroyed: usable from static destructors
  return *r;
}
std::mutex g_mpi_mu;  // serialises the emulation's MPI calls below MPI_THREAD_MULTIPLE

// The calling thread's open group (ncclGroupStart depth), its calls, and the first error among them.
thread_local int t_group_depth = 0;
thread_local std::vector<Call> t_group_calls;
thread_local ncclResult_t t_group_error = ncclSuccess;

constexpr size_t kChunkBytes = size_t(16) << 20;  // per rank and MPI call: bounds the staging buffers and MPI counts
constexpr char kIdMagic[16] = "cuda_emu nccl 1";  // opens every unique id ncclGetUniqueId makes

// Prints "cuda_emu: nccl: <message>" on stderr, keeps it for ncclGetLastError, and returns r.
__attribute__((format(printf, 2, 3))) ncclResult_t report(ncclResult_t r, const char *fmt, ...) {
  char msg[sizeof(Registry::last_error)];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "cuda_emu: nccl: %s\n", msg);
  Registry &reg = registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  memcpy(reg.last_error, msg, sizeof msg);
  return r;
}

// Bytes of one element, 0 for a type nccl.h does not have.
size_t type_size(ncclDataType_t t) {
  static const size_t sizes[ncclNumTypes] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1};
  return (int)t >= 0 && (int)t < ncclNumTypes ? sizes[t] : 0;
}

std::shared_ptr<Comm> lookup(ncclComm_t comm) {
  Registry &reg = registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  return comm && reg.live.count(comm) ? comm->c : nullptr;
}

bool mpi_usable() {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  return initialised && !finalised;
}

// ---- what a collective does when its stream runs it ------------------------------------------------------------

// out[i] = ((g[0][i] + g[1][i]) + g[2][i]) + ... over the `size` rows of g (len elements each): rank order, the
// same additions in the same order on every rank, so every rank gets the same bits (deterministic).
template <typename T>
void sum_in_rank_order(void *out, const unsigned char *gathered, int size, size_t len) {
  const T *g = reinterpret_cast<const T *>(gathered);
  T *o = static_cast<T *>(out);
  for (size_t i = 0; i < len; i++) {
    T acc = g[i];
    for (int r = 1; r < size; r++) acc += g[r * len + i];
    o[i] = acc;
  }
}
void sum_rows(ncclDataType_t t, void *out, const unsigned char *gathered, int size, size_t len) {
  if (t == ncclFloat64) sum_in_rank_order<double>(out, gathered, size, len);
  else sum_in_rank_order<float>(out, gathered, size, len);  // issue() admits only ncclFloat32 and ncclFloat64
}

// The bytes a call reads from sendbuff and writes to recvbuff.
void call_bytes(const Call &c, size_t *send, size_t *recv) {
  const size_t one = c.count * type_size(c.type), all = one * (size_t)c.comm->size;
  *send = c.kind == kReduceScatter ? all : c.kind == kBroadcast && c.comm->rank != c.root ? 0 : one;
  *recv = c.kind == kAllGather ? all : c.kind == kReduce && c.comm->rank != c.root ? 0 : one;
}

// ncclReduce: the root gathers every rank's chunk and adds them in rank order; the others' recvbuff is not touched.
void reduce_to_root(const Call &c) {
  const Comm &m = *c.comm;
  const size_t es = type_size(c.type), step = kChunkBytes / es;
  const unsigned char *send = static_cast<const unsigned char *>(c.send);
  unsigned char *recv = static_cast<unsigned char *>(c.recv);
  std::vector<unsigned char> gathered(m.rank == c.root ? std::min(step, c.count) * es * m.size : 0);
  for (size_t off = 0; off < c.count; off += step) {
    const size_t len = std::min(step, c.count - off), bytes = len * es;
    MPI_Gather(send + off * es, (int)bytes, MPI_BYTE, gathered.data(), (int)bytes, MPI_BYTE, c.root, m.mpi);
    if (m.rank == c.root) sum_rows(c.type, recv + off * es, gathered.data(), m.size, len);
  }
}

// The data movement: MPI moves bytes between the ranks' device memory (host memory here), in chunks.
void exchange(const Call &c) {
  const Comm &m = *c.comm;
  const size_t es = type_size(c.type), step = kChunkBytes / es;
  const unsigned char *send = static_cast<const unsigned char *>(c.send);
  unsigned char *recv = static_cast<unsigned char *>(c.recv);
  if (c.kind == kBroadcast) {
    const size_t bytes = c.count * es;
    if (m.rank == c.root && send != recv) memmove(recv, send, bytes);
    for (size_t off = 0; off < bytes; off += kChunkBytes)
      MPI_Bcast(recv + off, (int)std::min(kChunkBytes, bytes - off), MPI_BYTE, c.root, m.mpi);
    return;
  }
  if (c.kind == kReduce) return reduce_to_root(c);
  std::vector<unsigned char> packed, gathered(std::min(step, c.count) * es * m.size);
  if (c.kind == kReduceScatter) packed.resize(gathered.size());
  for (size_t off = 0; off < c.count; off += step) {
    const size_t len = std::min(step, c.count - off), bytes = len * es;
    if (c.kind == kReduceScatter) {  // block j of the chunk goes to rank j
      for (int j = 0; j < m.size; j++) memcpy(&packed[j * bytes], send + (j * c.count + off) * es, bytes);
      MPI_Alltoall(packed.data(), (int)bytes, MPI_BYTE, gathered.data(), (int)bytes, MPI_BYTE, m.mpi);
    } else {
      MPI_Allgather(send + off * es, (int)bytes, MPI_BYTE, gathered.data(), (int)bytes, MPI_BYTE, m.mpi);
    }
    if (c.kind == kAllGather) {
      for (int r = 0; r < m.size; r++) memcpy(recv + (r * c.count + off) * es, &gathered[r * bytes], bytes);
    } else {
      sum_rows(c.type, recv + off * es, gathered.data(), m.size, len);
    }
  }
}

void run(const Call &c) {
  Comm &m = *c.comm;
  const int state = m.state.load();
  if (state == kAborted) return;  // ncclCommAbort cancels what has not run
  if (state == kDestroyed)
    fault("%s: its communicator was destroyed before the operation ran (a graph launched after ncclCommDestroy?)",
          c.name);
  if (!mpi_usable()) fault("%s: MPI is finalised (or was never initialised) when the operation runs", c.name);
  if (m.thread_level < MPI_THREAD_SERIALIZED) {
    int main_thread = 0;
    MPI_Is_thread_main(&main_thread);
    if (!main_thread)
      fault("%s runs on a thread other than MPI's main thread, but MPI was initialised with thread level %d: "
            "synchronise the stream from the main thread, or ask MPI_Init_thread for MPI_THREAD_MULTIPLE",
            c.name, m.thread_level);
  }
  size_t send_bytes, recv_bytes;
  call_bytes(c, &send_bytes, &recv_bytes);
  blas::recheck(c.name, "sendbuff", c.send, send_bytes);
  blas::recheck(c.name, "recvbuff", c.recv, recv_bytes);
  std::unique_lock<std::mutex> lock(g_mpi_mu, std::defer_lock);
  if (m.thread_level < MPI_THREAD_MULTIPLE) lock.lock();
  exchange(c);
}

// ---- issuing ---------------------------------------------------------------------------------------------------

// Checks a call's arguments as NCCL does before enqueueing it; ncclSuccess or the refusal (with its message).
ncclResult_t check(const Call &c, ncclRedOp_t op) {
  if (!c.comm) return report(ncclInvalidArgument, "%s: comm is NULL or not a live communicator", c.name);
  if (!type_size(c.type))
    return report(ncclInvalidArgument, "%s: datatype %d is not an ncclDataType_t", c.name, (int)c.type);
  if ((c.kind == kAllReduce || c.kind == kReduceScatter || c.kind == kReduce) &&
      (op != ncclSum || (c.type != ncclFloat32 && c.type != ncclFloat64)))
    return report(ncclInvalidArgument,
                  "%s: op %d on datatype %d is not emulated (only ncclSum on ncclFloat32 and ncclFloat64)", c.name,
                  (int)op, (int)c.type);
  if ((c.kind == kBroadcast || c.kind == kReduce) && (c.root < 0 || c.root >= c.comm->size))
    return report(ncclInvalidArgument, "%s: root %d is not a rank of the communicator (0..%d)", c.name, c.root,
                  c.comm->size - 1);
  if (c.count > SIZE_MAX / 16 / (size_t)c.comm->size)
    return report(ncclInvalidArgument, "%s: count %zu is too large", c.name, c.count);
  size_t send_bytes, recv_bytes;
  call_bytes(c, &send_bytes, &recv_bytes);
  const std::pair<const void *, size_t> bufs[2] = {{c.send, send_bytes}, {c.recv, recv_bytes}};
  for (int i = 0; i < 2; i++)
    if (bufs[i].second && !is_device_range(bufs[i].first, bufs[i].second))
      return report(ncclInvalidArgument, "%s: %s = %p (%zu bytes) is not device memory (cudaMalloc)", c.name,
                    i ? "recvbuff" : "sendbuff", bufs[i].first, bufs[i].second);
  return ncclSuccess;
}

// cudaEvents the calling thread uses to join the streams of a group; never destroyed (cudaEventDestroy would run
// their pending work in the deferred mode).
cudaEvent_t join_event(size_t i) {
  thread_local std::vector<cudaEvent_t> pool;
  while (pool.size() <= i) {
    cudaEvent_t e = nullptr;
    if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) return nullptr;
    pool.push_back(e);
  }
  return pool[i];
}

// Makes `to` wait for the work issued so far on `from` (an event record and a stream wait).
cudaError_t join(cudaStream_t to, cudaStream_t from, size_t *events) {
  cudaEvent_t e = join_event((*events)++);
  if (!e) return cudaErrorMemoryAllocation;
  cudaError_t err = cudaEventRecord(e, from);
  return err != cudaSuccess ? err : cudaStreamWaitEvent(to, e, 0);
}

// Enqueues `calls` as one operation on the first call's stream, run in issue order. With several streams, that
// stream first waits for the others' earlier work and they then wait for the operation, so it completes as one
// unit on every stream, as NCCL documents for a group that mixes streams.
ncclResult_t issue(std::vector<Call> calls) {
  std::vector<cudaStream_t> streams;
  std::vector<std::shared_ptr<Comm>> comms;
  for (const Call &c : calls) {
    if (std::find(streams.begin(), streams.end(), c.stream) == streams.end()) streams.push_back(c.stream);
    if (std::find(comms.begin(), comms.end(), c.comm) == comms.end()) comms.push_back(c.comm);
  }
  const cudaStream_t lead = streams[0];
  const char *what = calls.size() == 1 ? calls[0].name : "ncclGroupEnd";
  size_t events = 0;
  cudaError_t e = cudaSuccess;
  for (size_t i = 1; i < streams.size() && e == cudaSuccess; i++) e = join(lead, streams[i], &events);
  // The deferred mode: each communicator's previous operation runs first (MPI matches collectives by order).
  std::vector<std::pair<cudaStream_t, unsigned long long>> before;
  if (async::enabled() && !capture::active(lead)) {
    std::lock_guard<std::mutex> lock(registry().mu);
    for (const auto &m : comms)
      if (m->last_ticket) before.push_back({m->last_stream, m->last_ticket});
  }
  bool recorded = false;
  if (e == cudaSuccess)
    e = enqueue(lead, what, [calls = std::move(calls), before = std::move(before)] {
      for (const auto &b : before) async::drain(b.first, b.second);
      for (const Call &c : calls) run(c);
    }, &recorded);
  if (e == cudaSuccess && !recorded && async::enabled()) {
    const unsigned long long ticket = async::last(lead);
    std::lock_guard<std::mutex> lock(registry().mu);
    for (const auto &m : comms) m->last_stream = lead, m->last_ticket = ticket;
  }
  for (size_t i = 1; i < streams.size() && e == cudaSuccess; i++) e = join(streams[i], lead, &events);
  if (e != cudaSuccess)
    return report(ncclUnhandledCudaError, "%s: its stream refused the operation: %s", what, cudaGetErrorString(e));
  return ncclSuccess;
}

// A collective as called: checked, then issued, or held for ncclGroupEnd inside a group.
ncclResult_t collective(Kind kind, const char *name, const void *send, void *recv, size_t count,
                        ncclDataType_t type, ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  Call c{kind, name, send, recv, count, type, root, lookup(comm), nullptr};
  ncclResult_t r = check(c, op);
  unsigned flags = 0;
  if (r == ncclSuccess && streams::lookup(stream, &c.stream, &flags) != cudaSuccess)
    r = report(ncclUnhandledCudaError, "%s: stream %p is not a live stream", name, (void *)stream);
  if (t_group_depth > 0) {
    if (r == ncclSuccess) t_group_calls.push_back(std::move(c));
    else if (t_group_error == ncclSuccess) t_group_error = r;
    return r;
  }
  return r == ncclSuccess ? issue({std::move(c)}) : r;
}

}  // namespace
}  // namespace cuda_emu::nccl

using namespace cuda_emu::nccl;

// ---- the nccl.h API -----------------------------------------------------------------------------------------------

ncclResult_t ncclGetVersion(int *version) {
  if (!version) return report(ncclInvalidArgument, "ncclGetVersion: version is NULL");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

// The message of the latest refusal in this process (any communicator).
const char *ncclGetLastError(ncclComm_t) { return registry().last_error; }

// 16 bytes of kIdMagic, then the process id, a counter, the time and 64 random bits: unique over the job.
ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId) {
  if (!uniqueId) return report(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
  static std::atomic<unsigned long long> counter{0};
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const unsigned long long fields[4] = {(unsigned long long)getpid(), ++counter,
                                        (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec,
                                        ((unsigned long long)std::random_device{}() << 32) ^ std::random_device{}()};
  memset(uniqueId, 0, sizeof *uniqueId);
  memcpy(uniqueId->internal, kIdMagic, sizeof kIdMagic);
  memcpy(uniqueId->internal + sizeof kIdMagic, fields, sizeof fields);
  return ncclSuccess;
}

// The communicator spans MPI_COMM_WORLD (nranks = its size, rank = the process's MPI rank): a duplicate of it.
// Collective over the world; every rank must pass the same id (rank 0's is broadcast and compared, and the ranks
// agree on the verdict, so a rank that missed the id's broadcast fails everywhere instead of hanging its peers).
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank) {
  if (!comm) return report(ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
  *comm = nullptr;
  if (!mpi_usable())
    return report(ncclInvalidUsage, "ncclCommInitRank: MPI is not initialised (or already finalised): the emulated "
                                    "NCCL runs over MPI, so the program calls MPI_Init_thread first");
  int world_size = 0, world_rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (nranks != world_size)
    return report(ncclInvalidArgument, "ncclCommInitRank: nranks %d, but the MPI job has %d processes (an emulated "
                                       "communicator spans MPI_COMM_WORLD)", nranks, world_size);
  if (rank != world_rank)
    return report(ncclInvalidArgument, "ncclCommInitRank: rank %d, but this process is MPI rank %d of %d", rank,
                  world_rank, world_size);
  auto c = std::make_shared<Comm>();
  c->rank = rank, c->size = nranks;
  MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
  ncclUniqueId root_id = commId;
  MPI_Bcast(root_id.internal, NCCL_UNIQUE_ID_BYTES, MPI_BYTE, 0, c->mpi);
  int bad = memcmp(commId.internal, kIdMagic, sizeof kIdMagic) != 0 ||
            memcmp(root_id.internal, commId.internal, NCCL_UNIQUE_ID_BYTES) != 0;
  MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_LOR, c->mpi);
  if (bad) {
    MPI_Comm_free(&c->mpi);
    return report(ncclInvalidArgument, "ncclCommInitRank: the ranks passed different unique ids, or ids not made by "
                                       "ncclGetUniqueId (rank 0 makes one and broadcasts it to every rank)");
  }
  MPI_Query_thread(&c->thread_level);
  if (cudaGetDevice(&c->device) != cudaSuccess) c->device = 0;
  ncclComm *h = new ncclComm{std::move(c)};
  std::lock_guard<std::mutex> lock(registry().mu);
  registry().live.insert(h);
  *comm = h;
  return ncclSuccess;
}

// Ends the handle: `destroy` first completes the communicator's issued operations (as ncclCommFinalize does);
// abort cancels those that have not run.
static ncclResult_t end_comm(ncclComm_t comm, const char *name, bool destroy) {
  std::shared_ptr<Comm> c;
  {
    Registry &reg = registry();
    std::lock_guard<std::mutex> lock(reg.mu);
    if (comm && reg.live.erase(comm)) {
      c = std::move(comm->c);
      delete comm;
    }
  }
  if (!c) return report(ncclInvalidArgument, "%s: not a live communicator", name);
  if (destroy && c->last_ticket) cuda_emu::async::drain(c->last_stream, c->last_ticket);
  c->state.store(destroy ? kDestroyed : kAborted);
  if (mpi_usable()) MPI_Comm_free(&c->mpi);
  return ncclSuccess;
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) { return end_comm(comm, "ncclCommDestroy", true); }
ncclResult_t ncclCommAbort(ncclComm_t comm) { return end_comm(comm, "ncclCommAbort", false); }

// MPI errors are fatal to the job (MPI_ERRORS_ARE_FATAL), so nothing fails asynchronously.
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError) {
  if (!lookup(comm) || !asyncError)
    return report(ncclInvalidArgument, "ncclCommGetAsyncError: not a live communicator, or asyncError is NULL");
  *asyncError = ncclSuccess;
  return ncclSuccess;
}

static ncclResult_t comm_query(ncclComm_t comm, int *out, const char *name, int Comm::*field) {
  std::shared_ptr<Comm> c = lookup(comm);
  if (!c || !out) return report(ncclInvalidArgument, "%s: not a live communicator, or the output is NULL", name);
  *out = (*c).*field;
  return ncclSuccess;
}
ncclResult_t ncclCommCount(const ncclComm_t comm, int *count) {
  return comm_query(comm, count, "ncclCommCount", &Comm::size);
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank) {
  return comm_query(comm, rank, "ncclCommUserRank", &Comm::rank);
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int *device) {
  return comm_query(comm, device, "ncclCommCuDevice", &Comm::device);
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return collective(kAllReduce, "ncclAllReduce", sendbuff, recvbuff, count, datatype, op, 0, comm, stream);
}
ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return collective(kReduceScatter, "ncclReduceScatter", sendbuff, recvbuff, recvcount, datatype, op, 0, comm,
                    stream);
}
ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  return collective(kAllGather, "ncclAllGather", sendbuff, recvbuff, sendcount, datatype, ncclSum, 0, comm, stream);
}
ncclResult_t ncclReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                        int root, ncclComm_t comm, cudaStream_t stream) {
  return collective(kReduce, "ncclReduce", sendbuff, recvbuff, count, datatype, op, root, comm, stream);
}
ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  return collective(kBroadcast, "ncclBroadcast", sendbuff, recvbuff, count, datatype, ncclSum, root, comm, stream);
}

// Group calls: the collectives issued between the outermost ncclGroupStart and its ncclGroupEnd are held and
// enqueued at ncclGroupEnd as one operation, run in issue order (issue()). A call refused inside the group returns
// its error, and ncclGroupEnd then returns it too and enqueues nothing: the group fails as one unit.
ncclResult_t ncclGroupStart() {
  if (t_group_depth++ == 0) t_group_calls.clear(), t_group_error = ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_group_depth == 0) return report(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--t_group_depth > 0) return ncclSuccess;
  std::vector<Call> calls = std::move(t_group_calls);
  t_group_calls.clear();
  if (t_group_error != ncclSuccess)
    return report(t_group_error, "ncclGroupEnd: a call of the group was refused; nothing of it was enqueued");
  return calls.empty() ? ncclSuccess : issue(std::move(calls));
}
