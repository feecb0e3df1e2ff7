/* The data-parallel hooks a backend calls during a step: the interface between a backend and the engine's
 * distributed layer (src/engine/dist.c, over MPI), so that no backend names MPI. docs/DISTRIBUTED.md has the design.
 *
 * Every rank holds the whole model and the same parameters; a step's global batch of B rows is split into `size`
 * contiguous slices of B / size rows, rank r taking rows [r B / size, (r + 1) B / size) of it. Each rank computes the
 * objective's terms of its rows scaled by the global batch (1 / B), so the sum over ranks of the ranks' gradients and
 * loss parts is the gradient and loss of the global batch; every rank then applies the same Adam step. */
#ifndef CUVAE_DATA_PARALLEL_H
#define CUVAE_DATA_PARALLEL_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The gradient's bucket, on every backend: large enough that a bucket's latency is small against its transfer, small
 * enough that the first buckets start early in the backward (docs/DISTRIBUTED.md). */
#define CUVAE_DP_BUCKET_BYTES ((size_t)4 << 20)

typedef struct cuvae_data_parallel {
  int rank, size;  /* this process's rank in [0, size); size >= 2 (one process needs no hooks) */
  void *ctx;       /* the distributed layer's state */
  /* The backward has finished every parameter from offset `from` to the end of the gradient buffer grad[0..n)
   * (layers finish last to first, and the layout puts them in order, so `from` only decreases within a step). The
   * layer may start summing the newly finished part over the ranks (in buckets, in place, non-blocking). */
  int (*grad_ready)(void *ctx, float *grad, size_t from);
  /* Completes the sum over the ranks of all of grad[0..n) in place (starting what grad_ready did not); every rank
   * then holds the same bits. Called once per step, after the backward, before anything reads the gradient. */
  int (*grad_finish)(void *ctx, float *grad);
  /* v[0..n) <- the sum over the ranks of v, added in rank order (every rank gets the same bits). Blocking. */
  int (*sum)(void *ctx, double *v, int n);
  /* buf[0..bytes) <- rank 0's (blocking). */
  int (*broadcast)(void *ctx, void *buf, size_t bytes);
  /* ZeRO-1 ([train] shard_optimizer): `sharded` != 0, and this rank owns [shard_begin, shard_end) of the buffer
   * (the ranks' shards tile it in rank order). grad_finish then leaves the sum over the ranks only in grad's shard
   * (a reduce-scatter; the rest is this rank's own part); the rank updates its shard with its shard of Adam's m and
   * v, and params_gather gives every rank every shard of params[0..n) (in place). state_gather collects the
   * ranks' shards of m and v into m[0..n), v[0..n) on rank 0 (a checkpoint; NULL outputs on the others). Not
   * sharded: [0, n) and the two calls unused. */
  int sharded;
  size_t shard_begin, shard_end;
  int (*params_gather)(void *ctx, float *params);
  int (*state_gather)(void *ctx, const float *m_shard, const float *v_shard, float *m, float *v);
} cuvae_data_parallel;

#ifdef __cplusplus
}
#endif
#endif
