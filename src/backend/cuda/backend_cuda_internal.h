/* The CUDA backend's state, the checked-launch macros and the pieces of its forward pass, shared by the files of the
 * backend (backend_cuda.c: training, evaluation, state; backend_cuda_setup.c: creation; the others: the forward
 * pass and the evaluation tools). Private to src/. */
#ifndef CUVAE_BACKEND_CUDA_INTERNAL_H
#define CUVAE_BACKEND_CUDA_INTERNAL_H
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>
#include <stdint.h>

#include "backend.h"
#include "cuda_check.h"

/* A device noise stream; like src/core/rng.c it sets the generator's offset only when the requested one is not where
 * the previous draw left the stream. */
typedef struct dev_noise {
  curandGenerator_t gen;
  uint64_t pos;
  int pos_known;
} dev_noise;

enum { CUBLAS_WORKSPACE_BYTES = 32 << 20 };  /* cuBLASLt's workspace (the size cuBLAS recommends on Hopper), allocated
                                                once and passed to every GEMM, so nothing allocates during capture */

/* One dense-layer stack (the encoder or the decoder) as the GEMMs see it. out: the layers' fp32 outputs (enc_out /
 * dec_out; a ReLU hidden layer's is not written in bf16, where only out16 is). bf16 precision: in16 the stack's
 * input, out16[i] hidden layer i's output (the next GEMM's operand), both bfloat16 bits. mask[i]: ReLU hidden layer
 * i's bit mask (mask_ld(out) bits per row of the batch), written by its forward epilogue, read by the backward's. */
typedef struct cuda_stack {
  const cuvae_layer *layers;
  int n;
  float **out;
  uint16_t *in16, *out16[CUVAE_MAX_LAYERS];
  void *mask[CUVAE_MAX_LAYERS];
} cuda_stack;

/* The ReLU bit mask's leading dimension for a layer of `out` outputs: cuBLASLt wants a multiple of 128 bits. */
static inline int64_t cuda_mask_ld(size_t out) { return (int64_t)((out + 127) / 128 * 128); }

struct cuda_gemm_cache;
struct cuda_dp;

typedef struct cuda_backend {
  cuvae_backend base;
  const cuvae_model *model;
  const cuvae_config *cfg;
  size_t n_train, n_eval;
  const cuvae_dataset *eval_ds;               /* the set uploaded to eval_x (compared by address) */
  int max_batch;
  cudaStream_t stream;
  cublasLtHandle_t lt;
  cublasLtMatmulPreference_t lt_pref;         /* the workspace limit the heuristics plan for */
  struct cuda_gemm_cache *gemms;              /* every GEMM's plan (src/backend/cuda/backend_cuda_gemm.c) */
  void *blas_workspace;
  cuda_stack enc, dec;                        /* the two stacks' buffers, see cuda_stack */
  dev_noise train_noise, eval_noise, data_noise;
  cuvae_objective_spec train_spec;            /* the config's training objective (its beta: see beta_t) */
  cudaGraphExec_t graph;                      /* the captured step body, for graph_B rows */
  int graph_B;
  int sync_checks;                            /* CUVAE_CUDA_SYNC=1: synchronise and check after every launch */
  int gemm_only;                              /* warm-up pass: CU_LAUNCH skips kernels, GEMMs run (warm_up_gemms) */
  int plan_only;                              /* with gemm_only: GEMMs are planned, not run (cuda_choose_epilogues) */
  int separate_epilogues;                     /* 1: plain GEMMs, then bias / activation / bias-gradient kernels
                                                 (cuda_choose_epilogues); 0: fused cuBLASLt epilogues */
  /* device memory */
  float *state;                               /* params | grad | m | v, n_params each; ZeRO-1 (cuda_shard_state):
                                                 params | grad padded to N equal blocks | m | v of the shard */
  float *params, *grad, *adam_m, *adam_v;     /* views into state */
  uint16_t *w16;                              /* bf16: bf16(params), n_params (Adam writes it, docs/MATH.md (8.2)) */
  uint16_t *d16;                              /* bf16: [B, widest] bf16 of a layer's pre-activation gradient */
  float *train_x, *eval_x;                    /* [n_train, D], [n_eval, D] */
  float *x;                                   /* [max_batch, D] */
  uint32_t *step_in;                          /* [1 + max_batch] the step's host inputs, one copy: lr | rows */
  uint32_t *rows;                             /* view: step_in + 1, the step's row indices */
  float *eps;                                 /* stride(max_batch * Z) */
  float *enc_out[CUVAE_MAX_LAYERS], *dec_out[CUVAE_MAX_LAYERS];
  float *z, *dz, *dmulv, *grad_a, *grad_b;    /* [B,Z], [B,Z], [B,2Z], [B,widest] x 2 */
  float *kl_row, *nll_row;                    /* [B] */
  float *x_in, *x_rep;                        /* [B, D] corrupted encoder input; targets repeated per sample */
  float *data_u, *data_v;                     /* stride(B*D): binarization uniforms; corruption draws */
  float *kl_s, *weight, *row_obj, *dlv_row;   /* [B]: see objective_weights_cuda, gaussian_shared_nll_grad_cuda */
  float *beta_t;                              /* 1: this step's KL weight (beta_schedule_cuda) */
  float *fb_gate, *fb_floor;                  /* [Z] free bits (free_bits_forward_cuda): dims kept, max(lambda, KL_j) */
  double *fb_sums;                            /* [Z] free bits, data parallel: the dims' KL sums, over the ranks */
  int32_t *train_labels, *eval_labels;        /* conditional: the sets' labels, uploaded once */
  int32_t *labels;                            /* [B] the batch's labels */
  float *enc_in, *dec_in, *dzy;               /* conditional: [B, D + C], [B, Z + C] inputs, d[z | y] */
  float *sums;                                /* [CUVAE_STEP_SUMS]: sum nll, sum kl, sum g^2, sum objective */
  float *sum_partials;                        /* [CUVAE_SUM_SQUARES_PARTIALS] scratch of sum_squares_cuda */
  float *adam_scalars;                        /* CUVAE_ADAM_SCALARS, see adam_prepare_cuda */
  int64_t *step;                              /* the training step counter (adam_prepare_cuda advances it) */
  float *lr_t;                                /* view: step_in[0] as float, this step's learning rate */
  float *ema;                                 /* [train] ema > 0: the EMA of the weights, n_params; else NULL */
  int64_t *guard;                             /* CUVAE_GUARD_WORDS: the skip state and this step's skip (step_guard_cuda) */
  float *window;                              /* [skip_rule.window] the z-score window's norms; NULL when none */
  int64_t *flags;                             /* [0] halted_at, [1] recorded count: see step_guard_cuda */
  float *ring;                                /* [max_pending][CUVAE_STEP_RECORD] recorded sums and verdicts */
  double *iwae_state;                         /* [2 max_batch]: each pass row's running (max, sum exp) */
  double *iwae_log_px;                        /* [iwae_cap]: log p(x) of the rows of one IWAE call */
  size_t iwae_cap;                            /* max(n_eval, max_batch) at creation; grown for a larger set */
  /* pinned host memory: the staging of per-step inputs and of collect's one read-back */
  uint32_t *rows_host;                        /* [max_pending][1 + max_batch]: each pending step's lr | rows */
  int64_t *step_host;                         /* [max_pending] */
  float *ring_host;                           /* [max_pending][CUVAE_STEP_RECORD] */
  int64_t *flags_host;                        /* [2] */
  float *io_host;                             /* [max_batch][io_cols]: encode / decode rows in and out */
  size_t io_cols;                             /* max(D, 2Z, decoder output width) */
  /* host bookkeeping of the pending steps */
  int n_pending;
  int64_t *pending_step;                      /* [max_pending] */
  int *pending_B;                             /* [max_pending] */
  int64_t step_mirror;                        /* what *step will hold after the pending steps, or -1: unknown */
  cuvae_skip_rule skip_rule;                  /* [train] skip_* (docs/MATH.md (7.4)) */
  int64_t lr_horizon;                         /* the step the cosine schedule reaches lr_min (cuvae_lr_horizon) */
  struct cuda_dp *nccl;                       /* data parallel (base.dp set): the communicator, the comm stream
                                                 (src/backend/cuda/backend_cuda_dp.c); NULL in one process */
} cuda_backend;

/* A kernel launch (CU_LAUNCH), cuBLAS call (CUBLAS_LAUNCH) or cuRAND generation (CURAND_LAUNCH) on the backend's
 * stream, checked like CU_CHECK; then, under CUVAE_CUDA_SYNC=1, cuda_sync_check synchronises and reports a failure of
 * the work itself naming the call and its file:line. In the warm-up pass (gemm_only) kernels are skipped. */
#define CU_LAUNCH(be, call)                                                                                   \
  do {                                                                                                        \
    if (!(be)->gemm_only) {                                                                                   \
      CU_CHECK(call);                                                                                         \
      if (cuda_sync_check((be), #call, __FILE__, __LINE__)) return -1;                                        \
    }                                                                                                         \
  } while (0)
#define CUBLAS_LAUNCH(be, call)                                                                               \
  do {                                                                                                        \
    CUBLAS_CHECK(call);                                                                                       \
    if (cuda_sync_check((be), #call, __FILE__, __LINE__)) return -1;                                          \
  } while (0)
#define CURAND_LAUNCH(be, call)                                                                               \
  do {                                                                                                        \
    CURAND_CHECK(call);                                                                                       \
    if (cuda_sync_check((be), #call, __FILE__, __LINE__)) return -1;                                          \
  } while (0)
/* src/backend/cuda/backend_cuda_setup.c. 0 unless be->sync_checks; then, outside stream capture (where a
 * synchronisation is not allowed: captured launches are checked when the graph runs), synchronises the stream and
 * fails with "file:line: NAME failed while it ran: ..." when the work of `call` (NAME: its text up to '(') or any
 * earlier work failed. */
int cuda_sync_check(cuda_backend *be, const char *call, const char *file, int line);

/* One cuBLASLt GEMM, column-major: D[m, n] = op(A)[m, k] op(B)[k, n] with the epilogue. A and B are fp32, or
 * bfloat16 in bf16 precision; D is fp32 or (d_bf16) bfloat16. bias: the bias added (BIAS, RELU_AUX_BIAS) or the bias
 * gradient written (DRELU_BGRAD, BGRADB), fp32; aux, aux_ld: the ReLU bit mask. */
typedef struct cuda_gemm {
  cublasOperation_t ta, tb;
  int m, n, k;
  const void *a, *b;
  void *d;
  int lda, ldb, ldd, d_bf16;
  cublasLtEpilogue_t epilogue;
  void *bias, *aux;
  int64_t aux_ld;
} cuda_gemm;
/* src/backend/cuda/backend_cuda_gemm.c: the cuBLASLt handle, preference and plan cache (init, destroy); run enqueues
 * g on the backend's stream with its cached plan (made here, outside capture, on first use). */
int cuda_gemm_init(cuda_backend *be);
void cuda_gemm_destroy(cuda_backend *be);
int cuda_gemm_run(cuda_backend *be, const cuda_gemm *g);
/* src/backend/cuda/backend_cuda.c: how the dense layers apply their bias, activation and bias gradient, decided once
 * at creation: fused into the GEMMs as cuBLASLt epilogues (RELU_AUX_BIAS, BIAS, DRELU_BGRAD, BGRADB), or, when
 * CUVAE_CUDA_EPILOGUES=separate asks for it or cuBLASLt has no algorithm for one of the step's fused GEMMs, plain GEMMs
 * followed by the kernels of kernels/bias_act.cu (the CPU backend's structure). Plans every GEMM of a training step
 * of B rows without running one; names the choice in base.gemm, and the fallback in base.notice. */
int cuda_choose_epilogues(cuda_backend *be, int B);
/* src/backend/cuda/backend_cuda_forward.c. Draws n normals (uniforms when `uniform`), rounded up to whole Philox blocks, into dst
 * from stream g at `offset`; cuda_noise_draw: normals into be->eps. */
int cuda_noise_fill(cuda_backend *be, dev_noise *g, uint64_t offset, size_t n, float *dst, int uniform);
int cuda_noise_draw(cuda_backend *be, dev_noise *g, uint64_t offset, size_t n);
/* Layer i of stack s on B rows: y = act(x W^T + b) into s->out[i] (and s->out16[i] / s->mask[i], see cuda_stack).
 * Its input: the stack's input x (i = 0; in bf16 already converted into s->in16) or layer i - 1's output. */
int cuda_dense_forward(cuda_backend *be, const cuda_stack *s, int i, const float *x, int B);
/* The stack's layers in order on B rows from its input x (converted into s->in16 first in bf16). */
int cuda_stack_forward(cuda_backend *be, const cuda_stack *s, const float *x, int B);
/* The twin of cuvae_cpu_decoder_nll: -log p(x | y) per row for the model's likelihood, gradient into dy (NULL: none),
 * learned_shared: the rows' parts of d/d logvar into dlv_row. */
int cuda_decoder_nll(cuda_backend *be, const float *y, const float *x, float *nll_row, float *dy, float *dlv_row,
                     float scale, int N);
/* The forward of the whole model on device rows (encoder input x_in, targets x, B rows) for `spec`, with be->eps
 * (and be->beta_t for a sampled KL): the forward half of cuvae_cpu_latent_objective_grad. Every term is scaled by the
 * batch of Bt rows (Bt = B, or data parallel: the global batch, B being this rank's slice of it). Per-row values in
 * nll_row, kl_row or kl_s, row_obj; their sums in be->sums[0, 1, 3]; with want_grad, dL/d(decoder output) in
 * be->grad_a (and dlv_row). */
int cuda_vae_forward(cuda_backend *be, const float *x_in, const float *x, const int32_t *labels, int B, int Bt,
                     const cuvae_objective_spec *spec, int want_grad);
/* The encoder on device rows x[B][D] (labels[B] on the device for a conditional model; its input [x | onehot] goes
 * through be->enc_in): (mu | lv) in be->enc_out[n_enc - 1]. */
int cuda_encoder_forward(cuda_backend *be, const float *x, const int32_t *labels, int B);
/* The decoder on device rows z[N][Z] (conditional: row i's label is labels[i % period], input via be->dec_in): the
 * output rows in be->dec_out[n_dec - 1]. */
int cuda_decoder_forward(cuda_backend *be, const float *z, const int32_t *labels, int period, int N);
/* Conditional model: n host labels into be->labels (device, max_batch); nothing otherwise. */
int cuda_labels_upload(cuda_backend *be, const int32_t *labels, size_t n);
/* A step's loss (cuvae_loss) from its sums over a batch of B rows, as the CPU computes it; `ranks`: how many ranks'
 * sums were added (each holds the whole free-bits term in sums[3], docs/MATH.md (3.4)). */
void cuda_loss_from_sums(const cuvae_objective_spec *spec, const float *sums, int B, int ranks, cuvae_loss *out);

/* src/backend/cuda/backend_cuda_dp.c: data parallel over NCCL (docs/DISTRIBUTED.md). join: the backend's
 * join_data_parallel (the communicator from rank 0's id, broadcast by dp; -1 with a message in a build without
 * NCCL); destroy: frees what join made (nothing without it). In the step (no-ops in one process and in the warm-up
 * pass): grad_ready, after the backward has finished grad[from, n): starts the all-reduce of a full bucket on the comm
 * stream; step_sums, after the backward: the rest of the gradient and the loss sums be->sums, then the step's stream
 * waits for them; sharded (ZeRO-1, dp->sharded), the buckets are instead reduced into the owners of the blocks they
 * meet (one ncclReduce per block), and step_sums, after the rest and the wait, writes the rank's block's sum of
 * squares into sums[2] and all-reduces the four sums, and params_gather, after Adam on the shard, all-gathers the
 * parameters (and remakes w16); sharded says which (0 without data parallel); state_gather copies the shard of m and v to the host and gathers them into
 * adam_m / adam_v on rank 0 (every rank calls it). noise: values [skip, skip + n) of the draw of stream g at offset, into dst (a Philox block holding
 * value skip is drawn into a scratch, the slice copied). set_bucket (tests): the bucket, in floats; buckets: the
 * gradient's buckets summed since the join (a captured step's count once). */
int cuda_join_data_parallel(cuvae_backend *be, const cuvae_data_parallel *dp);
void cuda_dp_destroy(cuda_backend *be);
int cuda_dp_grad_ready(cuda_backend *be, size_t from);
int cuda_dp_step_sums(cuda_backend *be);
/* v[0..n) (device doubles) summed over the ranks in place, on the step's stream (free bits' KL sums); a no-op in one
 * process and in the warm-up pass. */
int cuda_dp_sum_doubles(cuda_backend *be, double *v, size_t n);
int cuda_dp_sharded(const cuda_backend *be);
int cuda_dp_params_gather(cuda_backend *be);
int cuda_dp_state_gather(cuda_backend *be, float *adam_m, float *adam_v);
int cuda_dp_noise(cuda_backend *be, dev_noise *g, uint64_t offset, uint64_t skip, size_t n, float *dst,
                  int uniform);
void cuda_dp_set_bucket(cuvae_backend *be, size_t floats);
long long cuda_dp_buckets(const cuvae_backend *be);

/* The vtable entries of src/backend/backend.h implemented outside backend_cuda.c: src/backend/cuda/backend_cuda_codec.c (encode,
 * decode) and src/backend/cuda/backend_cuda_iwae.c (importance-weighted log-likelihood). */
int cuda_encode(cuvae_backend *be, const float *x, const int32_t *labels, size_t n, float *mulv);
int cuda_decode(cuvae_backend *be, const float *z, const int32_t *labels, size_t n, float *mean);
int cuda_iwae(cuvae_backend *be, const cuvae_dataset *ds, int K, int batch, double *log_px);
/* src/backend/cuda/backend_cuda_setup.c: creation (the memory plan, the handles, every buffer, the initial state and
 * the uploaded sets; fails with a message, leaving what it made for cuda_destroy) and destruction. */
int cuda_setup(cuda_backend *be, const cuvae_dataset *train, const cuvae_dataset *eval);
/* ZeRO-1 (docs/DISTRIBUTED.md): the state re-laid out as params | grad of `padded` floats each (N equal blocks; the
 * padding zero) | m | v of the rank's shard [lo, hi) only, keeping the parameters and that shard of m and v; the
 * memory plan line then says what a rank holds. */
int cuda_shard_state(cuda_backend *be, size_t lo, size_t hi, size_t padded, int rank, int size);
void cuda_destroy(cuvae_backend *be);

#endif
