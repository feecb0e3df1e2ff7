/* The CUDA backend on several ranks (docs/DISTRIBUTED.md, "The CUDA backend on several ranks"): the NCCL communicator
 * (rank 0's unique id broadcast over the engine's hooks), the rank's slice of each step's noise, and the step's sums
 * over the ranks: the gradient all-reduced in buckets on a stream of its own as the backward finishes each layer, the
 * step's loss sums after it, joined before the norm; all enqueued in the step's stream order, so they are captured
 * into the step's CUDA graph. A build without NCCL (no MPI, or no libnccl) refuses data parallel with a message. */
#include <cuda_runtime_api.h>
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

#define NCCL_CHECK(call)                                                                                      \
  do {                                                                                                        \
    const ncclResult_t nc_rc_ = (call);                                                                       \
    if (nc_rc_ != ncclSuccess)                                                                                \
      return cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, ncclGetErrorString(nc_rc_));      \
  } while (0)

/* The gradient's bucket: the size the engine's CPU all-reduce uses (CUVAE_DIST_BUCKET_BYTES, include/cuvae/dist.h,
 * which the backend layer does not include): large enough that a bucket's latency is small against its transfer,
 * small enough that the first buckets start early in the backward. */
enum { CUDA_DP_BUCKET_BYTES = 4 << 20, CUDA_DP_EVENTS = 2 * CUVAE_MAX_LAYERS + 1 };

struct cuda_dp {
  ncclComm_t comm;
  cudaStream_t stream;            /* the gradient all-reduce's (its own, so it overlaps the rest of the backward) */
  cudaEvent_t ready[CUDA_DP_EVENTS]; /* recorded on the step's stream when a bucket is final; the comm stream waits */
  cudaEvent_t done;               /* recorded on the comm stream after the last sum; the step's stream waits */
  size_t bucket;                  /* floats per bucket (at least) */
  size_t started;                 /* grad[started, n) is summed or being summed this step */
  int n_ready;                    /* events used this step */
  long long buckets;              /* all-reduces of the gradient enqueued since the join */
  float *scratch;                 /* a noise slice's draw: from the Philox block holding its first value */
};

void cuda_dp_destroy(cuda_backend *be) {
  struct cuda_dp *d = be->nccl;
  if (!d) return;
  if (d->stream) cudaStreamSynchronize(d->stream);
  if (d->comm) ncclCommDestroy(d->comm);
  for (int i = 0; i < CUDA_DP_EVENTS; i++)
    if (d->ready[i]) cudaEventDestroy(d->ready[i]);
  if (d->done) cudaEventDestroy(d->done);
  if (d->stream) cudaStreamDestroy(d->stream);
  if (d->scratch) cudaFree(d->scratch);
  free(d);
  be->nccl = NULL;
}

/* The communicator over the hooks' ranks: rank 0's id, broadcast (a host call every rank makes, so nothing of this
 * rank's may wait in a stream: the emulation's deferred mode would run a queued collective inside it). */
static int init_comm(cuda_backend *be, struct cuda_dp *d, const cuvae_data_parallel *dp) {
  ncclUniqueId id = {{0}};
  CU_CHECK(cudaStreamSynchronize(be->stream));
  const int got = dp->rank == 0 ? (int)ncclGetUniqueId(&id) : (int)ncclSuccess;
  if (dp->broadcast(dp->ctx, &id, sizeof id)) return -1;
  if (got != (int)ncclSuccess)
    return cuvae_error("rank 0: ncclGetUniqueId failed: %s", ncclGetErrorString((ncclResult_t)got));
  NCCL_CHECK(ncclCommInitRank(&d->comm, dp->size, id, dp->rank));
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

int cuda_join_data_parallel(cuvae_backend *base, const cuvae_data_parallel *dp) {
  cuda_backend *be = (cuda_backend *)base;
  if (!dp || dp->size < 1 || dp->rank < 0 || dp->rank >= dp->size)
    return cuvae_error("the CUDA backend: bad data-parallel ranks (rank %d of %d)", dp ? dp->rank : -1,
                       dp ? dp->size : 0);
  if (be->nccl) return cuvae_error("the CUDA backend has already joined data-parallel training");
  if (be->n_pending) return cuvae_error("join data parallel: %d training steps are pending", be->n_pending);
  struct cuda_dp *d = calloc(1, sizeof *d);
  if (!d) return cuvae_error("out of memory joining data-parallel training");
  be->nccl = d;
  d->bucket = CUDA_DP_BUCKET_BYTES / sizeof(float);
  d->started = be->model->n_params;
  if (init_comm(be, d, dp) || init_streams(be, d)) {
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

/* grad[from, started) all-reduced in place on the comm stream, after the step's stream's work so far. */
static int start_sum(cuda_backend *be, struct cuda_dp *d, size_t from) {
  if (d->n_ready >= CUDA_DP_EVENTS) return cuvae_error("internal: more gradient buckets than layers");
  cudaEvent_t ev = d->ready[d->n_ready++];
  CU_CHECK(cudaEventRecord(ev, be->stream));
  CU_CHECK(cudaStreamWaitEvent(d->stream, ev, 0));
  NCCL_CHECK(ncclAllReduce(be->grad + from, be->grad + from, d->started - from, ncclFloat32, ncclSum, d->comm,
                           d->stream));
  d->started = from;
  d->buckets++;
  return 0;
}

int cuda_dp_grad_ready(cuda_backend *be, size_t from) {
  struct cuda_dp *d = be->nccl;
  if (!d || be->gemm_only || d->started - from < d->bucket) return 0;
  return start_sum(be, d, from);
}

int cuda_dp_step_sums(cuda_backend *be) {
  struct cuda_dp *d = be->nccl;
  if (!d || be->gemm_only) return 0;
  if (d->started > 0 && start_sum(be, d, 0)) return -1;  /* what is left of the gradient */
  /* The loss sums (be->sums[0, 1, 3], written by the forward; [2], the sum of g^2, is written after this, by
   * sum_squares_cuda of the summed gradient), then the step's stream waits for every sum. */
  NCCL_CHECK(ncclAllReduce(be->sums, be->sums, CUVAE_STEP_SUMS, ncclFloat32, ncclSum, d->comm, d->stream));
  CU_CHECK(cudaEventRecord(d->done, d->stream));
  CU_CHECK(cudaStreamWaitEvent(be->stream, d->done, 0));
  d->started = be->model->n_params;
  d->n_ready = 0;
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
