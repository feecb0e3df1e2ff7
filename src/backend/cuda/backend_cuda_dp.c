/* The CUDA backend on several ranks (docs/DISTRIBUTED.md, "The CUDA backend on several ranks"): the NCCL communicator
 * (rank 0's unique id broadcast over the engine's hooks), the rank's slice of each step's noise, and the step's sums
 * over the ranks: the gradient all-reduced in buckets on a stream of its own as the backward finishes each layer, the
 * step's loss sums after it, joined before the norm; all enqueued in the step's stream order, so they are captured
 * into the step's CUDA graph; sharded (ZeRO-1), the same buckets reduced into the owners of the shards they meet
 * (ncclReduce per shard: a reduce-scatter of uneven parts), the norm from the shards' sums of squares, the parameters
 * all-gathered after Adam on the shard, m and v gathered for get_state.
 * A build without NCCL (no MPI, or no nccl.h) refuses data parallel with a message.
 * The native build loads libnccl.so.2 when a backend first joins (dlopen), so one-process runs never need NCCL. */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <curand.h>
#include <stdlib.h>

#include "backend.h"
#include "backend_cuda_internal.h"
#include "cuda_check.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "cuvae_kernels.h"

#if defined(CUVAE_CUDA_EMU)
#define CUVAE_CUDA_NCCL CUVAE_HAVE_MPI  /* the emulation's NCCL runs over MPI (tests/emu/emu_nccl.cc) */
#elif defined(CUVAE_HAVE_NCCL)
#define CUVAE_CUDA_NCCL CUVAE_HAVE_NCCL /* libnccl found at configure time */
#else
#define CUVAE_CUDA_NCCL 0
#endif

#if CUVAE_CUDA_NCCL
#include <nccl.h>

/* The NCCL calls the backend makes, through one table: the emulation's (linked), or libnccl's (dlopen). */
typedef struct nccl_api {
  ncclResult_t (*get_unique_id)(ncclUniqueId *id);
  ncclResult_t (*comm_init_rank)(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
  ncclResult_t (*comm_destroy)(ncclComm_t comm);
  ncclResult_t (*all_reduce)(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                             ncclComm_t comm, cudaStream_t stream);
  ncclResult_t (*reduce)(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op, int root,
                         ncclComm_t comm, cudaStream_t stream);
  ncclResult_t (*all_gather)(const void *send, void *recv, size_t sendcount, ncclDataType_t type, ncclComm_t comm,
                             cudaStream_t stream);
  const char *(*error_string)(ncclResult_t rc);
} nccl_api;

static nccl_api g_nccl;

#if defined(CUVAE_CUDA_EMU)
static int load_nccl(void) {
  g_nccl = (nccl_api){ncclGetUniqueId, ncclCommInitRank, ncclCommDestroy,   ncclAllReduce,
                      ncclReduce,      ncclAllGather,    ncclGetErrorString};
  return 0;
}
#else
/* libnccl.so.2 (the CUDA toolkit's, or on LD_LIBRARY_PATH), once; kept loaded for the process. */
static int load_nccl(void) {
  if (g_nccl.all_reduce) return 0;
  void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!lib) lib = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    return cuvae_error("the CUDA backend needs NCCL to train on several ranks, and libnccl.so.2 could not be loaded "
                       "(%s); install NCCL or put it on LD_LIBRARY_PATH", dlerror());
  nccl_api a;
  *(void **)&a.get_unique_id = dlsym(lib, "ncclGetUniqueId");
  *(void **)&a.comm_init_rank = dlsym(lib, "ncclCommInitRank");
  *(void **)&a.comm_destroy = dlsym(lib, "ncclCommDestroy");
  *(void **)&a.all_reduce = dlsym(lib, "ncclAllReduce");
  *(void **)&a.reduce = dlsym(lib, "ncclReduce");
  *(void **)&a.all_gather = dlsym(lib, "ncclAllGather");
  *(void **)&a.error_string = dlsym(lib, "ncclGetErrorString");
  if (!a.get_unique_id || !a.comm_init_rank || !a.comm_destroy || !a.all_reduce || !a.reduce ||
      !a.all_gather || !a.error_string)
    return cuvae_error("libnccl.so.2 lacks an NCCL function cuvae calls (ncclGetUniqueId, ncclCommInitRank, "
                       "ncclCommDestroy, ncclAllReduce, ncclReduce, ncclAllGather, ncclGetErrorString)");
  g_nccl = a;
  return 0;
}
#endif

#define NCCL_CHECK(call)                                                                                      \
  do {                                                                                                        \
    const ncclResult_t nc_rc_ = (call);                                                                       \
    if (nc_rc_ != ncclSuccess)                                                                                \
      return cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, g_nccl.error_string(nc_rc_));     \
  } while (0)

enum { CUDA_DP_EVENTS = 2 * CUVAE_MAX_LAYERS + 1 };  /* a bucket ends at a layer: at most one per layer, plus the rest */

struct cuda_dp {
  ncclComm_t comm;
  cudaStream_t stream;            /* the gradient sums' (its own, so they overlap the rest of the backward) */
  cudaEvent_t ready[CUDA_DP_EVENTS]; /* recorded on the step's stream when a bucket is final; the comm stream waits */
  cudaEvent_t done;               /* recorded on the comm stream after the last sum; the step's stream waits */
  size_t bucket;                  /* floats per bucket (at least) */
  size_t started;                 /* grad[started, n) is summed or being summed this step */
  int n_ready;                    /* events used this step */
  long long buckets;              /* buckets of the gradient summed (all-reduced, or reduced) since the join */
  float *scratch;                 /* a noise slice's draw: from the Philox block holding its first value */
  /* ZeRO-1 ([train] shard_optimizer): rank r's block of the padded buffers is [r per, (r + 1) per), its shard the
   * part of it below n; host copies of its shard of m and v for get_state's gather */
  int sharded;
  size_t per;
  float *host_m, *host_v;
};

void cuda_dp_destroy(cuda_backend *be) {
  struct cuda_dp *d = be->nccl;
  if (!d) return;
  if (d->stream) cudaStreamSynchronize(d->stream);
  if (d->comm) g_nccl.comm_destroy(d->comm);
  for (int i = 0; i < CUDA_DP_EVENTS; i++)
    if (d->ready[i]) cudaEventDestroy(d->ready[i]);
  if (d->done) cudaEventDestroy(d->done);
  if (d->stream) cudaStreamDestroy(d->stream);
  if (d->scratch) cudaFree(d->scratch);
  free(d->host_m);
  free(d->host_v);
  free(d);
  be->nccl = NULL;
}

/* The communicator over the hooks' ranks: rank 0's id, broadcast (a host call every rank makes, so nothing of this
 * rank's may wait in a stream: the emulation's deferred mode would run a queued collective inside it). */
static int init_comm(cuda_backend *be, struct cuda_dp *d, const cuvae_data_parallel *dp) {
  ncclUniqueId id = {{0}};
  CU_CHECK(cudaStreamSynchronize(be->stream));
  const int got = dp->rank == 0 ? (int)g_nccl.get_unique_id(&id) : (int)ncclSuccess;
  if (dp->broadcast(dp->ctx, &id, sizeof id)) return -1;
  if (got != (int)ncclSuccess)
    return cuvae_error("rank 0: ncclGetUniqueId failed: %s", g_nccl.error_string((ncclResult_t)got));
  NCCL_CHECK(g_nccl.comm_init_rank(&d->comm, dp->size, id, dp->rank));
  return 0;
}

/* The comm stream, its events and the noise scratch: room for the widest slice (a sample's B Z, or B D of the data
 * noise, B <= max_batch rows) plus the head of its first Philox block. */
static int init_streams(cuda_backend *be, struct cuda_dp *d) {
  const cuvae_model *m = be->model;
  const size_t widest = m->input_dim > m->latent ? m->input_dim : m->latent;
  CU_CHECK(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking));
  for (int i = 0; i < CUDA_DP_EVENTS; i++) CU_CHECK(cudaEventCreateWithFlags(&d->ready[i], cudaEventDisableTiming));
  CU_CHECK(cudaEventCreateWithFlags(&d->done, cudaEventDisableTiming));
  CU_CHECK(cudaMalloc((void **)&d->scratch, (size_t)cuvae_noise_stride((size_t)be->max_batch * widest + 3) *
                                                sizeof(float)));
  return 0;
}

/* ZeRO-1: NCCL's reduce-scatter and all-gather move equal blocks, so the engine's shards must be rank r's block
 * [r per, (r + 1) per) clamped to n, per being rank 0's shard (broadcast; a host call, made with this rank's stream
 * idle); the state is then re-laid out with params and grad padded to N blocks and m and v of the shard only. */
static int init_shards(cuda_backend *be, struct cuda_dp *d, const cuvae_data_parallel *dp) {
  const size_t n = be->model->n_params, r = (size_t)dp->rank;
  uint64_t per = dp->shard_end - dp->shard_begin;
  if (dp->broadcast(dp->ctx, &per, sizeof per)) return -1;
  const size_t lo = r * per < n ? r * per : n, hi = (r + 1) * per < n ? (r + 1) * per : n;
  if (per == 0 || dp->shard_begin != lo || dp->shard_end != hi)
    return cuvae_error("shard_optimizer: rank %d's shard [%zu, %zu) is not block %d of %llu floats of the %zu "
                       "parameters (NCCL's reduce-scatter needs equal blocks)", dp->rank, dp->shard_begin,
                       dp->shard_end, dp->rank, (unsigned long long)per, n);
  d->sharded = 1;
  d->per = (size_t)per;
  d->host_m = malloc((hi - lo + 1) * sizeof(float));
  d->host_v = malloc((hi - lo + 1) * sizeof(float));
  if (!d->host_m || !d->host_v) return cuvae_error("out of memory: Adam's shard of %zu values", hi - lo);
  return cuda_shard_state(be, lo, hi, d->per * (size_t)dp->size, dp->rank, dp->size);
}

int cuda_join_data_parallel(cuvae_backend *base, const cuvae_data_parallel *dp) {
  cuda_backend *be = (cuda_backend *)base;
  if (!dp || dp->size < 1 || dp->rank < 0 || dp->rank >= dp->size)
    return cuvae_error("the CUDA backend: bad data-parallel ranks (rank %d of %d)", dp ? dp->rank : -1,
                       dp ? dp->size : 0);
  if (be->nccl) return cuvae_error("the CUDA backend has already joined data-parallel training");
  if (be->n_pending) return cuvae_error("join data parallel: %d training steps are pending", be->n_pending);
  if (load_nccl()) return -1;
  struct cuda_dp *d = calloc(1, sizeof *d);
  if (!d) return cuvae_error("out of memory joining data-parallel training");
  be->nccl = d;
  d->bucket = CUVAE_DP_BUCKET_BYTES / sizeof(float);
  d->started = be->model->n_params;
  if (init_comm(be, d, dp) || init_streams(be, d) || (dp->sharded && init_shards(be, d, dp))) {
    cuda_dp_destroy(be);
    return -1;
  }
  if (be->graph) {  /* captured without the sums over the ranks: the next step captures the step again */
    CU_CHECK(cudaGraphExecDestroy(be->graph));
    be->graph = NULL;
  }
  base->dp = dp;
  return 0;
}

void cuda_dp_set_bucket(cuvae_backend *base, size_t floats) {
  cuda_backend *be = (cuda_backend *)base;
  if (be->nccl) be->nccl->bucket = floats ? floats : 1;
  if (be->graph) {  /* the buckets are part of the captured step */
    cudaGraphExecDestroy(be->graph);
    be->graph = NULL;
  }
}

long long cuda_dp_buckets(const cuvae_backend *base) {
  const cuda_backend *be = (const cuda_backend *)base;
  return be->nccl ? be->nccl->buckets : 0;
}

/* ZeRO-1: grad[from, to) summed into the blocks' owners, one ncclReduce (in place) per rank block it meets: rank r
 * receives the sums of the part inside its block [r per, (r + 1) per); the rest of its buffer keeps its own terms. */
static int reduce_to_owners(struct cuda_dp *d, float *grad, size_t from, size_t to) {
  for (size_t lo = from; lo < to;) {
    const size_t owner = lo / d->per, hi = (owner + 1) * d->per < to ? (owner + 1) * d->per : to;
    NCCL_CHECK(g_nccl.reduce(grad + lo, grad + lo, hi - lo, ncclFloat32, ncclSum, (int)owner, d->comm, d->stream));
    lo = hi;
  }
  return 0;
}

/* grad[from, started) summed over the ranks in place on the comm stream, after the step's stream's work so far:
 * all-reduced, or sharded reduced into each block's owner. */
static int start_sum(cuda_backend *be, struct cuda_dp *d, size_t from) {
  if (d->n_ready >= CUDA_DP_EVENTS) return cuvae_error("internal: more gradient buckets than layers");
  cudaEvent_t ev = d->ready[d->n_ready++];
  CU_CHECK(cudaEventRecord(ev, be->stream));
  CU_CHECK(cudaStreamWaitEvent(d->stream, ev, 0));
  if (d->sharded) {
    if (reduce_to_owners(d, be->grad, from, d->started)) return -1;
  } else {
    NCCL_CHECK(g_nccl.all_reduce(be->grad + from, be->grad + from, d->started - from, ncclFloat32, ncclSum, d->comm,
                                 d->stream));
  }
  d->started = from;
  d->buckets++;
  return 0;
}

int cuda_dp_grad_ready(cuda_backend *be, size_t from) {
  struct cuda_dp *d = be->nccl;
  if (!d || be->gemm_only || d->started - from < d->bucket) return 0;
  return start_sum(be, d, from);
}

/* ZeRO-1, after the backward: what is left of the gradient reduced into its owners, and the step's stream waits for
 * every bucket; then on it the block's sum of squares (its padding is zero: never written, never reduced) into
 * sums[2], and the loss sums and the blocks' sums of squares all-reduced (the global norm^2). */
static int sharded_sums(cuda_backend *be, struct cuda_dp *d) {
  if (d->started > 0 && start_sum(be, d, 0)) return -1;
  CU_CHECK(cudaEventRecord(d->done, d->stream));
  CU_CHECK(cudaStreamWaitEvent(be->stream, d->done, 0));
  d->started = be->model->n_params;
  d->n_ready = 0;
  float *mine = be->grad + (size_t)be->base.dp->rank * d->per;
  CU_LAUNCH(be, sum_squares_cuda(mine, d->per, be->sum_partials, be->sums + 2, be->stream));
  NCCL_CHECK(g_nccl.all_reduce(be->sums, be->sums, CUVAE_STEP_SUMS, ncclFloat32, ncclSum, d->comm, be->stream));
  return 0;
}

int cuda_dp_sharded(const cuda_backend *be) { return be->nccl && be->nccl->sharded; }

int cuda_dp_params_gather(cuda_backend *be) {
  struct cuda_dp *d = be->nccl;
  if (!d || !d->sharded || be->gemm_only) return 0;
  const float *mine = be->params + (size_t)be->base.dp->rank * d->per;
  NCCL_CHECK(g_nccl.all_gather(mine, be->params, d->per, ncclFloat32, d->comm, be->stream));
  if (be->w16)  /* the GEMMs' bf16 weights, of the whole buffer (docs/MATH.md (8.2)) */
    CU_LAUNCH(be, to_bf16_cuda(be->params, be->w16, be->model->n_params, be->stream));
  return 0;
}

int cuda_dp_state_gather(cuda_backend *be, float *adam_m, float *adam_v) {
  const cuvae_data_parallel *dp = be->base.dp;
  const size_t k = dp->shard_end - dp->shard_begin;
  struct cuda_dp *d = be->nccl;
  CU_CHECK(cudaMemcpyAsync(d->host_m, be->adam_m, k * sizeof(float), cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaMemcpyAsync(d->host_v, be->adam_v, k * sizeof(float), cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  return dp->state_gather(dp->ctx, d->host_m, d->host_v, dp->rank == 0 ? adam_m : NULL,
                          dp->rank == 0 ? adam_v : NULL);
}

int cuda_dp_step_sums(cuda_backend *be) {
  struct cuda_dp *d = be->nccl;
  if (!d || be->gemm_only) return 0;
  if (d->sharded) return sharded_sums(be, d);
  if (d->started > 0 && start_sum(be, d, 0)) return -1;  /* what is left of the gradient */
  /* The loss sums (be->sums[0, 1, 3], written by the forward; [2], the sum of g^2, is written after this, by
   * sum_squares_cuda of the summed gradient), then the step's stream waits for every sum. */
  NCCL_CHECK(g_nccl.all_reduce(be->sums, be->sums, CUVAE_STEP_SUMS, ncclFloat32, ncclSum, d->comm, d->stream));
  CU_CHECK(cudaEventRecord(d->done, d->stream));
  CU_CHECK(cudaStreamWaitEvent(be->stream, d->done, 0));
  d->started = be->model->n_params;
  d->n_ready = 0;
  return 0;
}

int cuda_dp_sum_doubles(cuda_backend *be, double *v, size_t n) {
  struct cuda_dp *d = be->nccl;
  if (!d || be->gemm_only) return 0;
  NCCL_CHECK(g_nccl.all_reduce(v, v, n, ncclFloat64, ncclSum, d->comm, be->stream));
  return 0;
}

int cuda_dp_noise(cuda_backend *be, dev_noise *g, uint64_t offset, uint64_t skip, size_t n, float *dst,
                  int uniform) {
  const size_t head = (size_t)(skip % 4);
  if (cuda_noise_fill(be, g, offset + skip - head, n + head, be->nccl->scratch, uniform)) return -1;
  CU_CHECK(cudaMemcpyAsync(dst, be->nccl->scratch + head, n * sizeof(float), cudaMemcpyDeviceToDevice, be->stream));
  return 0;
}

#else /* no NCCL in this build */

void cuda_dp_destroy(cuda_backend *be) { (void)be; }

int cuda_join_data_parallel(cuvae_backend *base, const cuvae_data_parallel *dp) {
  (void)base;
  return cuvae_error("the CUDA backend of this build cannot train on several ranks (%d were started): it was built "
                     "without NCCL (needs MPI and libnccl); use --device cpu, or run one process",
                     dp ? dp->size : 0);
}

void cuda_dp_set_bucket(cuvae_backend *base, size_t floats) {
  (void)base;
  (void)floats;
}

long long cuda_dp_buckets(const cuvae_backend *base) {
  (void)base;
  return 0;
}

int cuda_dp_grad_ready(cuda_backend *be, size_t from) {
  (void)be;
  (void)from;
  return 0;
}

int cuda_dp_step_sums(cuda_backend *be) {
  (void)be;
  return 0;
}

int cuda_dp_sharded(const cuda_backend *be) {
  (void)be;
  return 0;
}

int cuda_dp_sum_doubles(cuda_backend *be, double *v, size_t n) {
  (void)be;
  (void)v;
  (void)n;
  return 0;
}

int cuda_dp_params_gather(cuda_backend *be) {
  (void)be;
  return 0;
}

int cuda_dp_state_gather(cuda_backend *be, float *adam_m, float *adam_v) {
  (void)be;
  (void)adam_m;
  (void)adam_v;
  return cuvae_error("internal: a sharded state without data parallel");
}

int cuda_dp_noise(cuda_backend *be, dev_noise *g, uint64_t offset, uint64_t skip, size_t n, float *dst,
                  int uniform) {
  (void)be;
  (void)g;
  (void)offset;
  (void)skip;
  (void)n;
  (void)dst;
  (void)uniform;
  return cuvae_error("internal: a slice of the noise without data parallel");
}

#endif
