/* The distributed layer over MPI (include/cuvae/dist.h): joining the job, agreement and broadcast, and the gradient
 * all-reduce in buckets that overlaps the backward (docs/DISTRIBUTED.md). Without MPI: a single process. */
#include "cuvae/dist.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuvae/device.h"
#include "cuvae/error.h"
#include "data_parallel.h"

#if CUVAE_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_local_rank = 0, g_local_size = 1;

int cuvae_dist_rank(void) { return g_rank; }
int cuvae_dist_size(void) { return g_size; }
int cuvae_dist_local_rank(void) { return g_local_rank; }
int cuvae_dist_local_size(void) { return g_local_size; }

int cuvae_dist_place_device(const char *device, char *note, size_t n) {
  if (n) note[0] = '\0';
  if (strcmp(device, "cpu") == 0) return 0;
  return cuvae_device_place_rank(g_local_rank, g_local_size, note, n);
}

/* A launcher's variable that says this process is one rank of a job (Open MPI's mpirun, PMIx, PMI, Slurm's srun
 * --mpi=pmix / pmi2). */
static const char *launcher_variable(void) {
  static const char *const names[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (getenv(names[i])) return names[i];
  return NULL;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if CUVAE_HAVE_MPI

static int g_joined = 0;  /* MPI_Init_thread succeeded */

static int mpi_check(int rc, const char *what) {
  if (rc == MPI_SUCCESS) return 0;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return cuvae_error("MPI %s failed: %s", what, msg);
}

int cuvae_dist_init(int *argc, char ***argv) {
  if (!launcher_variable() || g_joined) return 0;
  /* Open MPI's non-blocking all-reduce (libnbc) takes its binomial algorithm for fewer than 4 ranks or an in-place
   * buffer (ours): rank 0 adds everything and sends the result back, about 2.5x the ring's time on 72 MB
   * (docs/PERFORMANCE.md, "Data parallel"). Ask for the ring unless the user chose: its schedule is fixed for a rank
   * count and a length, so the sums stay deterministic (with 2 ranks each is a + b). Other MPIs ignore the name. */
  setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0);
  /* Only the main thread calls MPI (the CPU backend's OpenMP threads never do). Errors return codes: a failed call
   * is reported with its message, then the process aborts the job. */
  int provided = 0;
  if (mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread")) return -1;
  g_joined = 1;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  if (provided < MPI_THREAD_FUNNELED)
    return cuvae_error("MPI provides thread level %d; cuvae needs MPI_THREAD_FUNNELED", provided);
  /* The ranks sharing this machine, in world-rank order: the GPU of this rank is its place among them. */
  MPI_Comm node;
  if (mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node),
                "MPI_Comm_split_type"))
    return -1;
  MPI_Comm_rank(node, &g_local_rank);
  MPI_Comm_size(node, &g_local_size);
  MPI_Comm_free(&node);
  return 0;
}

void cuvae_dist_finalize(void) {
  if (g_joined) MPI_Finalize();
  g_joined = 0;
}

void cuvae_dist_abort(int code) {
  if (g_joined && g_size > 1) {
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
}

int cuvae_dist_agree(int rc) {
  if (g_size == 1) return rc;
  int mine = rc != 0 ? g_rank : g_size, first = g_size;  /* the lowest failing rank speaks for all */
  if (mpi_check(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce (agreement)"))
    return -1;
  if (first < g_size && first != g_rank) cuvae_error("%s", CUVAE_DIST_OTHER_RANK_FAILED);
  return first < g_size ? -1 : 0;
}

int cuvae_dist_any(int flag) {
  if (g_size == 1) return flag != 0;
  int mine = flag != 0, any = mine;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return any;
}

int cuvae_dist_broadcast(void *buf, size_t bytes) {
  if (g_size == 1) return 0;
  for (size_t done = 0; done < bytes;) {  /* MPI counts are ints: pieces of at most 1 GiB */
    const size_t n = bytes - done < ((size_t)1 << 30) ? bytes - done : (size_t)1 << 30;
    if (mpi_check(MPI_Bcast((char *)buf + done, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast")) return -1;
    done += n;
  }
  return 0;
}

/* ---- the gradient all-reduce ------------------------------------------------------------------------------------
 * The backward reports a falling watermark `from`: grad[from..n) is final. Once at least a bucket's worth past the
 * part already started is final, that part is started as one MPI_Iallreduce (in place); each report also tests the
 * outstanding requests, which is when Open MPI moves their data (it has no progress thread), so the sums advance
 * between the layers of the backward. grad_finish starts the rest ([0, started)) and waits for everything.
 * Determinism: the buckets are the same for the same model, bucket size and rank count, and Open MPI reduces a
 * message of a given length on a given communicator size with a fixed algorithm whose every step is an addition
 * (ring, recursive doubling, or reduce + broadcast), so the same inputs give the same bits on every rank and every
 * run; with two ranks the sum is a + b, which is exact-order-free (a + b == b + a in IEEE arithmetic). */
typedef struct dist_grad {
  size_t n, bucket, started;  /* floats; grad[started..n) has been started */
  MPI_Request *req;
  int n_req, cap_req;
  double wait_seconds;
  long long buckets;
  /* ZeRO-1: rank r's shard is [begin[r], begin[r + 1]); each bucket is reduce-scattered into shard_grad (this rank's
   * shard), with its per-rank counts kept until it completes (MPI reads them until then). */
  int sharded;
  size_t *begin;           /* [size + 1] */
  int *counts;             /* [cap_req][size]: each request's counts */
  int *shard_counts, *displs;  /* [size]: the whole shards, for the gathers */
  float *shard_grad;
} dist_grad;

/* Sharded: grad[lo, hi) reduce-scattered, each rank receiving the part inside its shard, in place in shard_grad. */
static int start_reduce_scatter(dist_grad *g, float *grad, size_t lo, size_t hi) {
  int *counts = g->counts + (size_t)g->n_req * (size_t)g_size;
  for (int r = 0; r < g_size; r++) {
    const size_t a = lo > g->begin[r] ? lo : g->begin[r], b = hi < g->begin[r + 1] ? hi : g->begin[r + 1];
    counts[r] = b > a ? (int)(b - a) : 0;
  }
  const size_t mine = lo > g->begin[g_rank] ? lo : g->begin[g_rank];
  float *recv = g->shard_grad + (counts[g_rank] > 0 ? mine - g->begin[g_rank] : 0);
  return mpi_check(MPI_Ireduce_scatter(grad + lo, recv, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &g->req[g->n_req]),
                   "MPI_Ireduce_scatter (gradient)");
}

static int start_sum(dist_grad *g, float *grad, size_t lo, size_t hi) {
  if (hi <= lo) return 0;
  if (g->n_req == g->cap_req) return cuvae_error("gradient all-reduce: more than %d buckets in flight", g->cap_req);
  for (size_t at = lo; at < hi;) {  /* MPI counts are ints */
    const size_t len = hi - at < (size_t)1 << 30 ? hi - at : (size_t)1 << 30;
    if (g->sharded ? start_reduce_scatter(g, grad, at, at + len)
                   : mpi_check(MPI_Iallreduce(MPI_IN_PLACE, grad + at, (int)len, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                                              &g->req[g->n_req]),
                               "MPI_Iallreduce (gradient)"))
      return -1;
    g->n_req++;
    g->buckets++;
    at += len;
    if (at < hi && g->n_req == g->cap_req) return cuvae_error("gradient all-reduce: too many requests");
  }
  g->started = lo;
  return 0;
}

static int grad_ready(void *ctx, float *grad, size_t from) {
  dist_grad *g = ctx;
  if (from > g->started) return cuvae_error("gradient all-reduce: watermark %zu rose above %zu", from, g->started);
  if (g->started - from >= g->bucket && start_sum(g, grad, from, g->started)) return -1;
  int done = 0;
  if (g->n_req > 0 && mpi_check(MPI_Testall(g->n_req, g->req, &done, MPI_STATUSES_IGNORE), "MPI_Testall")) return -1;
  return 0;
}

static int grad_finish(void *ctx, float *grad) {
  dist_grad *g = ctx;
  const double t0 = now_seconds();
  if (start_sum(g, grad, 0, g->started)) return -1;
  const int rc = mpi_check(MPI_Waitall(g->n_req, g->req, MPI_STATUSES_IGNORE), "MPI_Waitall (gradient)");
  g->wait_seconds += now_seconds() - t0;
  g->n_req = 0;
  g->started = g->n;
  if (rc == 0 && g->sharded)  /* the shard's sums where the backend reads the gradient */
    memcpy(grad + g->begin[g_rank], g->shard_grad, (g->begin[g_rank + 1] - g->begin[g_rank]) * sizeof *grad);
  return rc;
}

/* Every rank's shard of params to every rank, in place. */
static int params_gather(void *ctx, float *params) {
  dist_grad *g = ctx;
  return mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, g->shard_counts, g->displs, MPI_FLOAT,
                                  MPI_COMM_WORLD),
                   "MPI_Allgatherv (parameters)");
}

/* The ranks' shards of Adam's m and v into whole buffers on rank 0. */
static int state_gather(void *ctx, const float *m_shard, const float *v_shard, float *m, float *v) {
  dist_grad *g = ctx;
  const int mine = g->shard_counts[g_rank];
  if (mpi_check(MPI_Gatherv(m_shard, mine, MPI_FLOAT, m, g->shard_counts, g->displs, MPI_FLOAT, 0, MPI_COMM_WORLD),
                "MPI_Gatherv (Adam m)"))
    return -1;
  return mpi_check(MPI_Gatherv(v_shard, mine, MPI_FLOAT, v, g->shard_counts, g->displs, MPI_FLOAT, 0, MPI_COMM_WORLD),
                   "MPI_Gatherv (Adam v)");
}

/* In rank order: every rank gathers every rank's values and adds them 0, 1, ..., size - 1. */
static int sum_doubles(void *ctx, double *v, int n) {
  (void)ctx;
  double *all = malloc((size_t)n * (size_t)g_size * sizeof *all);
  if (!all) return cuvae_error("out of memory");
  int rc = mpi_check(MPI_Allgather(v, n, MPI_DOUBLE, all, n, MPI_DOUBLE, MPI_COMM_WORLD), "MPI_Allgather (sum)");
  for (int i = 0; rc == 0 && i < n; i++) {
    double s = 0.0;
    for (int r = 0; r < g_size; r++) s += all[(size_t)r * (size_t)n + (size_t)i];
    v[i] = s;
  }
  free(all);
  return rc;
}

static int broadcast(void *ctx, void *buf, size_t bytes) {
  (void)ctx;
  return cuvae_dist_broadcast(buf, bytes);
}

/* ZeRO-1's shards: [begin[r], begin[r + 1]), ceil(n / size) rounded up to 64 floats (the tensor alignment, so every
 * shard starts on a 256-byte boundary), the last one shorter. MPI's counts are ints. */
static int make_shards(dist_grad *g) {
  size_t per = (g->n + (size_t)g_size - 1) / (size_t)g_size;
  per = (per + 63) / 64 * 64;
  if (per > (size_t)INT32_MAX) return cuvae_error("shard_optimizer: a shard of %zu floats is too large for MPI", per);
  g->begin = calloc((size_t)g_size + 1, sizeof *g->begin);
  g->displs = calloc((size_t)g_size, sizeof *g->displs);
  g->counts = calloc((size_t)g->cap_req * (size_t)g_size + (size_t)g_size, sizeof *g->counts);
  if (!g->begin || !g->displs || !g->counts) return cuvae_error("out of memory");
  for (int r = 0; r <= g_size; r++) g->begin[r] = (size_t)r * per < g->n ? (size_t)r * per : g->n;
  g->shard_counts = g->counts + (size_t)g->cap_req * (size_t)g_size;
  for (int r = 0; r < g_size; r++) {
    g->shard_counts[r] = (int)(g->begin[r + 1] - g->begin[r]);
    g->displs[r] = (int)g->begin[r];
  }
  g->shard_grad = malloc((g->begin[g_rank + 1] - g->begin[g_rank] + 1) * sizeof *g->shard_grad);
  if (!g->shard_grad) return cuvae_error("out of memory");
  return 0;
}

static void dist_grad_free(dist_grad *g) {
  if (!g) return;
  free(g->req);
  free(g->begin);
  free(g->counts);
  free(g->displs);
  free(g->shard_grad);
  free(g);
}

cuvae_data_parallel *cuvae_dist_data_parallel_sharded(size_t n, size_t bucket_bytes, int shard_optimizer) {
  if (g_size == 1) return NULL;
  cuvae_data_parallel *dp = calloc(1, sizeof *dp);
  dist_grad *g = calloc(1, sizeof *g);
  const size_t bucket = bucket_bytes / sizeof(float) ? bucket_bytes / sizeof(float) : 1;
  const int cap = (int)(n / bucket + 2 + n / ((size_t)1 << 30));
  MPI_Request *req = calloc((size_t)cap, sizeof *req);
  if (!dp || !g || !req) {
    free(dp);
    free(req);
    dist_grad_free(g);
    cuvae_error("out of memory");
    return NULL;
  }
  *g = (dist_grad){.n = n, .bucket = bucket, .started = n, .req = req, .cap_req = cap, .sharded = shard_optimizer};
  if (g->sharded && make_shards(g)) {
    free(dp);
    dist_grad_free(g);
    return NULL;
  }
  *dp = (cuvae_data_parallel){.rank = g_rank, .size = g_size, .ctx = g, .grad_ready = grad_ready,
                              .grad_finish = grad_finish, .sum = sum_doubles, .broadcast = broadcast,
                              .sharded = g->sharded, .shard_begin = g->sharded ? g->begin[g_rank] : 0,
                              .shard_end = g->sharded ? g->begin[g_rank + 1] : n,
                              .params_gather = params_gather, .state_gather = state_gather};
  return dp;
}

cuvae_data_parallel *cuvae_dist_data_parallel(size_t n, size_t bucket_bytes) {
  return cuvae_dist_data_parallel_sharded(n, bucket_bytes, 0);
}

void cuvae_dist_grad_stats(const cuvae_data_parallel *dp, double *wait_seconds, long long *buckets) {
  const dist_grad *g = dp ? dp->ctx : NULL;
  *wait_seconds = g ? g->wait_seconds : 0.0;
  *buckets = g ? g->buckets : 0;
}

void cuvae_dist_data_parallel_free(cuvae_data_parallel *dp) {
  if (!dp) return;
  dist_grad_free(dp->ctx);
  free(dp);
}

#else  /* a build without MPI: one process */

int cuvae_dist_init(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *var = launcher_variable();
  if (var)
    return cuvae_error("this process was started by an MPI launcher (%s is set) but cuvae was built without MPI; "
                       "install libopenmpi-dev and rebuild (scripts/setup.sh), or run it without mpirun",
                       var);
  return 0;
}
void cuvae_dist_finalize(void) {}
void cuvae_dist_abort(int code) { (void)code; }
int cuvae_dist_agree(int rc) { return rc; }
int cuvae_dist_any(int flag) { return flag != 0; }
int cuvae_dist_broadcast(void *buf, size_t bytes) {
  (void)buf;
  (void)bytes;
  return 0;
}
cuvae_data_parallel *cuvae_dist_data_parallel_sharded(size_t n, size_t bucket_bytes, int shard_optimizer) {
  (void)n;
  (void)bucket_bytes;
  (void)shard_optimizer;
  (void)now_seconds;
  return NULL;
}
cuvae_data_parallel *cuvae_dist_data_parallel(size_t n, size_t bucket_bytes) {
  return cuvae_dist_data_parallel_sharded(n, bucket_bytes, 0);
}
void cuvae_dist_grad_stats(const cuvae_data_parallel *dp, double *wait_seconds, long long *buckets) {
  (void)dp;
  *wait_seconds = 0.0;
  *buckets = 0;
}
void cuvae_dist_data_parallel_free(cuvae_data_parallel *dp) { (void)dp; }

#endif
