/* The distributed layer: the ranks of an MPI job (started by mpirun or srun) and the data-parallel hooks over MPI
 * that training hands to a backend (docs/DISTRIBUTED.md). A process not started by a launcher, or a build without
 * MPI, is rank 0 of 1 and never touches MPI. */
#ifndef CUVAE_DIST_H
#define CUVAE_DIST_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuvae_data_parallel;

/* Joins the job when the environment says a launcher started this process (Open MPI's OMPI_COMM_WORLD_SIZE, PMIx's
 * PMIX_RANK, PMI's PMI_RANK: mpirun, and srun through MPI's own environment); otherwise does nothing. 0, or -1 with a
 * message (a launcher's environment in a build without MPI; MPI failing to start). */
int cuvae_dist_init(int *argc, char ***argv);
/* Leaves the job (MPI_Finalize) after a normal end. */
void cuvae_dist_finalize(void);
/* Stops every rank of the job at once (MPI_Abort); for an error one rank met alone, while the others may be waiting
 * in a collective. Returns only in a single process. */
void cuvae_dist_abort(int code);
int cuvae_dist_rank(void);  /* 0 in a single process */
int cuvae_dist_size(void);  /* 1 in a single process */
/* This rank among the ranks on its machine (MPI_Comm_split_type, shared memory), and how many there are: what picks
 * its GPU. 0 and 1 in a single process. */
int cuvae_dist_local_rank(void);
int cuvae_dist_local_size(void);
/* Before creating a backend on `device` ("auto" | "cuda" | "cpu"): each rank of a machine takes its own GPU
 * (cuvae_device_place_rank, include/cuvae/device.h); nothing for "cpu". note: what is worth logging, "" otherwise.
 * -1 with a message. */
int cuvae_dist_place_device(const char *device, char *note, size_t n);
/* Collective: 0 when rc == 0 on every rank, else -1 on every rank. The lowest failing rank keeps its message; every
 * other rank's becomes CUVAE_DIST_OTHER_RANK_FAILED (so a failure all ranks met, e.g. a bad config, is told once).
 * In a single process: rc. */
#define CUVAE_DIST_OTHER_RANK_FAILED "another rank failed (its message names the rank)"
int cuvae_dist_agree(int rc);
/* Collective: 1 when flag != 0 on any rank. */
int cuvae_dist_any(int flag);
/* Collective: buf[0..bytes) <- rank 0's. */
int cuvae_dist_broadcast(void *buf, size_t bytes);

/* The data-parallel hooks (src/backend/data_parallel.h) for a gradient buffer of n floats, summed over the ranks in
 * buckets of bucket_bytes started as the backward finishes them (MPI_Iallreduce). NULL with a message on failure;
 * also NULL without a message in a single process (nothing to do). */
struct cuvae_data_parallel *cuvae_dist_data_parallel(size_t n, size_t bucket_bytes);
/* The same with [train] shard_optimizer (ZeRO-1) when shard_optimizer != 0: the gradient is reduce-scattered in the
 * buckets (MPI_Ireduce_scatter) and each rank owns one shard of the buffer (src/backend/data_parallel.h). */
struct cuvae_data_parallel *cuvae_dist_data_parallel_sharded(size_t n, size_t bucket_bytes, int shard_optimizer);
/* Seconds spent waiting for the gradient sums after the backward (the part of the all-reduce the backward did not
 * hide), and the sums started, since the hooks were made. */
void cuvae_dist_grad_stats(const struct cuvae_data_parallel *dp, double *wait_seconds, long long *buckets);
void cuvae_dist_data_parallel_free(struct cuvae_data_parallel *dp);

#ifdef __cplusplus
}
#endif
#endif
