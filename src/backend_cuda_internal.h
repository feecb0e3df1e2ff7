/* The CUDA backend's state and the pieces of its forward pass, shared by the files of the backend
 * (src/backend_cuda.c: training, evaluation, state; later files: further evaluation tools). Private to src/. */
#ifndef CUVAE_BACKEND_CUDA_INTERNAL_H
#define CUVAE_BACKEND_CUDA_INTERNAL_H
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>
#include <stdint.h>

#include "backend.h"

/* A device noise stream; like src/rng.c it sets the generator's offset only when the requested one is not where
 * the previous draw left the stream. */
typedef struct dev_noise {
  curandGenerator_t gen;
  uint64_t pos;
  int pos_known;
} dev_noise;

enum { CUBLAS_WORKSPACE_BYTES = 32 << 20 };  /* cuBLAS's recommended workspace on Hopper; set explicitly so graph
                                                capture never makes cuBLAS allocate */

typedef struct cuda_backend {
  cuvae_backend base;
  const cuvae_model *model;
  const cuvae_config *cfg;
  size_t n_train, n_eval;
  const cuvae_dataset *eval_ds;               /* the set uploaded to eval_x (compared by address) */
  int max_batch;
  cudaStream_t stream;
  cublasHandle_t blas;
  void *blas_workspace;
  dev_noise train_noise, eval_noise;
  cudaGraphExec_t graph;                      /* the captured step body, for graph_B rows */
  int graph_B;
  /* device memory */
  float *state;                               /* params | grad | m | v, n_params each */
  float *params, *grad, *adam_m, *adam_v;     /* views into state */
  float *train_x, *eval_x;                    /* [n_train, D], [n_eval, D] */
  float *x;                                   /* [max_batch, D] */
  uint32_t *rows;                             /* [max_batch] row indices of the step */
  float *eps;                                 /* stride(max_batch * Z) */
  float *enc_out[CUVAE_MAX_LAYERS], *dec_out[CUVAE_MAX_LAYERS];
  float *z, *dz, *dmulv, *grad_a, *grad_b;    /* [B,Z], [B,Z], [B,2Z], [B,widest] x 2 */
  float *kl_row, *nll_row;                    /* [B] */
  float *sums;                                /* [0] sum nll, [1] sum kl, [2] sum g^2 */
  float *sum_partials;                        /* [CUVAE_SUM_SQUARES_PARTIALS] scratch of sum_squares_cuda */
  float *adam_scalars;                        /* 4, see adam_prepare_cuda */
  int64_t *step;                              /* Adam's step counter */
  int64_t *flags;                             /* [0] halted_at, [1] recorded count: see step_guard_cuda */
  float *ring;                                /* [max_pending][3] recorded sums */
  /* pinned host memory: the staging of per-step inputs and of collect's one read-back */
  uint32_t *rows_host;                        /* [max_pending][max_batch] */
  int64_t *step_host;                         /* [max_pending] */
  float *ring_host;                           /* [max_pending][3] */
  int64_t *flags_host;                        /* [2] */
  /* host bookkeeping of the pending steps */
  int n_pending;
  int64_t *pending_step;                      /* [max_pending] */
  int *pending_B;                             /* [max_pending] */
  int64_t step_mirror;                        /* what *step will hold after the pending steps, or -1: unknown */
} cuda_backend;

/* Draws n normals (rounded up to whole Philox blocks) into be->eps from stream g at `offset`. */
int cuda_noise_draw(cuda_backend *be, dev_noise *g, uint64_t offset, size_t n);
/* y[B, out] = act(x W^T + b) for one layer (device pointers). */
int cuda_dense_forward(cuda_backend *be, const cuvae_layer *l, const float *x, float *y, int B);
/* The whole VAE forward on device rows x[B][D] with be->eps: per-row NLL and KL in be->nll_row, be->kl_row, their
 * sums in be->sums[0..1]; with want_grad, dL/d(decoder output) in be->grad_a. */
int cuda_vae_forward(cuda_backend *be, const float *x, int B, int want_grad);

/* The vtable entries of src/backend.h implemented outside backend_cuda.c: src/backend_cuda_codec.c (encode,
 * decode) and src/backend_cuda_iwae.c (importance-weighted log-likelihood). */
int cuda_encode(cuvae_backend *be, const float *x, size_t n, float *mulv);
int cuda_decode(cuvae_backend *be, const float *z, size_t n, float *mean);
int cuda_iwae(cuvae_backend *be, const cuvae_dataset *ds, int K, int batch, double *log_px);

#endif
