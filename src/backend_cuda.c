/* The CUDA backend (issue 4): the same VAE step as src/backend_cpu.c + src/cpu/vae_cpu.c, on the device.
 *
 * State: ONE device buffer of 4 * n_params floats with the layout of cuvae_model: params | grad | adam m | v
 * (initialised by cuvae_model_init on the host and copied up). The training set is uploaded once; a step gathers
 * its minibatch on the device (one device-to-device copy per row), draws eps with cuRAND's device Philox
 * generator at the documented offsets (include/cuvae/rng.h: the same numbers as the CPU backend's host stream),
 * runs the dense layers with cublasSgemm and the fused kernels of kernels/cuvae_kernels.h, reads the two loss
 * sums and the gradient's sum of squares back (one copy), and only when all three are finite runs Adam.
 *
 * Row-major <-> column-major: a row-major [r][c] array with leading dimension c is the column-major c x r matrix,
 * i.e. its transpose. With Xc = X^T (in x B, ld in), Wc = W^T (in x out, ld in), Yc = Y^T (out x B, ld out):
 *   forward  Y = X W^T       <=>  Yc  = Wc^T Xc           sgemm(T, N, m=out, n=B,   k=in)
 *   dW = dY^T X              <=>  dWc = Xc dYc^T          sgemm(N, T, m=in,  n=out, k=B)
 *   dX = dY W                <=>  dXc = Wc dYc            sgemm(N, N, m=in,  n=B,   k=out)
 * No allocation per step: every buffer is sized in create for max(batch_size, eval_batch_size) rows. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"
#include "cuvae_kernels.h"

/* Every CUDA / cuBLAS / cuRAND call goes through one of these: on failure, an error naming file, line, the call
 * and the library's message, and `return -1` from the enclosing function. */
#define CU_CHECK(call)                                                                                        \
  do {                                                                                                        \
    const cudaError_t cu_err_ = (call);                                                                       \
    if (cu_err_ != cudaSuccess)                                                                               \
      return cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, cudaGetErrorString(cu_err_));    \
  } while (0)
#define CUBLAS_CHECK(call)                                                                                    \
  do {                                                                                                        \
    const cublasStatus_t cb_st_ = (call);                                                                     \
    if (cb_st_ != CUBLAS_STATUS_SUCCESS)                                                                      \
      return cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, cublasGetStatusString(cb_st_));   \
  } while (0)
#define CURAND_CHECK(call)                                                                                    \
  do {                                                                                                        \
    const curandStatus_t cr_st_ = (call);                                                                     \
    if (cr_st_ != CURAND_STATUS_SUCCESS)                                                                      \
      return cuvae_error("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, curand_status_string(cr_st_));    \
  } while (0)

static const char *curand_status_string(curandStatus_t s) {
  switch (s) {
    case CURAND_STATUS_SUCCESS: return "CURAND_STATUS_SUCCESS";
    case CURAND_STATUS_VERSION_MISMATCH: return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED: return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED: return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR: return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE: return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE: return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED: return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE: return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE: return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH: return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR: return "CURAND_STATUS_INTERNAL_ERROR";
  }
  return "unknown cuRAND status";
}

/* A device noise stream; like src/rng.c it sets the generator's offset only when the requested one is not where
 * the previous draw left the stream. */
typedef struct dev_noise {
  curandGenerator_t gen;
  uint64_t pos;
  int pos_known;
} dev_noise;

typedef struct cuda_backend {
  cuvae_backend base;
  const cuvae_model *model;
  const cuvae_config *cfg;
  size_t n_train;
  int max_batch;
  cudaStream_t stream;
  cublasHandle_t blas;
  dev_noise train_noise, eval_noise;
  /* device memory */
  float *state;                               /* params | grad | m | v, n_params each */
  float *params, *grad, *adam_m, *adam_v;     /* views into state */
  float *train_x;                             /* [n_train, D] */
  float *x;                                   /* [max_batch, D] */
  float *eps;                                 /* stride(max_batch * Z) */
  float *enc_out[CUVAE_MAX_LAYERS], *dec_out[CUVAE_MAX_LAYERS];
  float *z, *dz, *dmulv, *grad_a, *grad_b;    /* [B,Z], [B,Z], [B,2Z], [B,widest] x 2 */
  float *kl_row, *nll_row;                    /* [B] */
  float *sums;                                /* [0] sum nll, [1] sum kl, [2] sum g^2 */
  float *adam_scalars;                        /* 4, see adam_prepare_cuda */
  int64_t *step;                              /* Adam's step counter */
  int64_t step_mirror;                        /* what *step holds, or -1 when unknown */
} cuda_backend;

static int noise_draw(cuda_backend *be, dev_noise *g, uint64_t offset, size_t n) {
  const size_t len = (size_t)cuvae_noise_stride(n);  /* whole Philox blocks, as the CPU stream draws */
  if (!g->pos_known || g->pos != offset) {
    g->pos_known = 0;
    CURAND_CHECK(curandSetGeneratorOffset(g->gen, offset));
  }
  CURAND_CHECK(curandGenerateNormal(g->gen, be->eps, len, 0.0f, 1.0f));
  g->pos = offset + len;
  g->pos_known = 1;
  return 0;
}

/* y[B, out] = act(x W^T + b). */
static int dense_forward(cuda_backend *be, const cuvae_layer *l, const float *x, float *y, int B) {
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSgemm(be->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)l->out, B, (int)l->in, &one,
                           be->params + l->w, (int)l->in, x, (int)l->in, &zero, y, (int)l->out));
  CU_CHECK(bias_act_forward_cuda(y, be->params + l->b, B, (int)l->out, l->act, be->stream));
  return 0;
}

/* dy (post-activation gradient) -> pre-activation gradient in place; dW, db overwritten; dx = dy W if wanted. */
static int dense_backward(cuda_backend *be, const cuvae_layer *l, const float *x, const float *y, float *dy,
                          float *dx, int B) {
  const float one = 1.0f, zero = 0.0f;
  CU_CHECK(bias_act_backward_cuda(y, dy, B, (int)l->out, l->act, be->stream));
  CUBLAS_CHECK(cublasSgemm(be->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)l->in, (int)l->out, B, &one, x, (int)l->in,
                           dy, (int)l->out, &zero, be->grad + l->w, (int)l->in));
  CU_CHECK(bias_grad_cuda(dy, be->grad + l->b, B, (int)l->out, be->stream));
  if (dx)
    CUBLAS_CHECK(cublasSgemm(be->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)l->in, B, (int)l->out, &one,
                             be->params + l->w, (int)l->in, dy, (int)l->out, &zero, dx, (int)l->in));
  return 0;
}

/* Backward through layers[n-1..0], starting from dy (any buffer); activation gradients ping-pong between
 * grad_a and grad_b; dx0 receives dL/d(input of layer 0) (NULL: not needed). */
static int backward_stack(cuda_backend *be, const cuvae_layer *layers, int n, float *const *outs, const float *x0,
                          float *dy, float *dx0, int B) {
  for (int i = n - 1; i >= 0; i--) {
    const float *in = i == 0 ? x0 : outs[i - 1];
    float *dx = i == 0 ? dx0 : (dy == be->grad_a ? be->grad_b : be->grad_a);
    if (dense_backward(be, &layers[i], in, outs[i], dy, dx, B)) return -1;
    dy = dx;
  }
  return 0;
}

/* Forward of the whole VAE on be->x (B rows) with be->eps; per-row losses in nll_row, kl_row, their sums in
 * sums[0], sums[1]. With want_grad, dL/d(decoder output) goes into grad_a (scale 1/B, the batch mean). */
static int forward(cuda_backend *be, int B, int want_grad) {
  const cuvae_model *m = be->model;
  const int Z = (int)m->latent, D = (int)m->input_dim;
  const float *in = be->x;
  for (int i = 0; i < m->n_enc; i++) {
    if (dense_forward(be, &m->enc[i], in, be->enc_out[i], B)) return -1;
    in = be->enc_out[i];
  }
  const float *mulv = be->enc_out[m->n_enc - 1];
  CU_CHECK(reparam_kl_forward_cuda(mulv, be->eps, be->z, be->kl_row, B, Z, be->stream));
  in = be->z;
  for (int i = 0; i < m->n_dec; i++) {
    if (dense_forward(be, &m->dec[i], in, be->dec_out[i], B)) return -1;
    in = be->dec_out[i];
  }
  const float *dec_y = be->dec_out[m->n_dec - 1];
  const float scale = 1.0f / (float)B;
  float *dy = want_grad ? be->grad_a : NULL;
  if (m->likelihood == CUVAE_LIK_BERNOULLI)
    CU_CHECK(bernoulli_nll_grad_cuda(dec_y, be->x, be->nll_row, dy, scale, B, D, be->stream));
  else
    CU_CHECK(gaussian_nll_grad_cuda(dec_y, be->x, m->sigma, be->nll_row, dy, scale, B, D, be->stream));
  CU_CHECK(sum_cuda(be->nll_row, B, be->sums + 0, be->stream));
  CU_CHECK(sum_cuda(be->kl_row, B, be->sums + 1, be->stream));
  return 0;
}

static int cuda_train_step(cuvae_backend *base, const uint32_t *rows, int B, int64_t step,
                           cuvae_step_result *out) {
  cuda_backend *be = (cuda_backend *)base;
  const cuvae_model *m = be->model;
  const size_t D = m->input_dim, nz = (size_t)B * m->latent;
  if (B < 1 || B > be->max_batch)
    return cuvae_error("step %lld: batch of %d rows does not fit the CUDA backend (max %d)", (long long)step + 1, B,
                       be->max_batch);
  for (int b = 0; b < B; b++) {
    if (rows[b] >= be->n_train)
      return cuvae_error("step %lld: row %u is outside the training set (%zu rows)", (long long)step + 1,
                         rows[b], be->n_train);
    CU_CHECK(cudaMemcpyAsync(be->x + (size_t)b * D, be->train_x + (size_t)rows[b] * D, D * sizeof(float),
                             cudaMemcpyDeviceToDevice, be->stream));
  }
  if (noise_draw(be, &be->train_noise, (uint64_t)step * cuvae_noise_stride(nz), nz)) return -1;
  if (forward(be, B, 1)) return -1;
  /* Backward: decoder (down to dz), reparameterization + KL, encoder. */
  if (backward_stack(be, m->dec, m->n_dec, be->dec_out, be->z, be->grad_a, be->dz, B)) return -1;
  const float *mulv = be->enc_out[m->n_enc - 1];
  CU_CHECK(reparam_kl_backward_cuda(mulv, be->eps, be->dz, 1.0f / (float)B, be->dmulv, B, (int)m->latent,
                                    be->stream));
  if (backward_stack(be, m->enc, m->n_enc, be->enc_out, be->x, be->dmulv, NULL, B)) return -1;
  CU_CHECK(sum_squares_cuda(be->grad, m->n_params, be->sums + 2, be->stream));

  /* The loss and the gradient norm come back before Adam runs, so a non-finite step leaves the state alone. */
  float sums[3];
  CU_CHECK(cudaMemcpyAsync(sums, be->sums, sizeof sums, cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  out->loss.recon = (double)sums[0] / B;
  out->loss.kl = (double)sums[1] / B;
  out->loss.nelbo = out->loss.recon + out->loss.kl;
  out->grad_norm = sqrt((double)sums[2]);
  if (!isfinite(out->loss.nelbo))
    return cuvae_error("step %lld: loss is not finite (nelbo %g, recon %g, kl %g); training diverged",
                       (long long)step + 1, out->loss.nelbo, out->loss.recon, out->loss.kl);
  if (!isfinite(out->grad_norm))
    return cuvae_error("step %lld: gradient is not finite (loss %g); training diverged", (long long)step + 1,
                       out->loss.nelbo);

  /* Adam's step counter lives on the device (adam_prepare_cuda increments it); it is set from the host step
   * only when it does not already hold `step` (first step, after set_state, or a step sequence with a jump). */
  if (be->step_mirror != step) {
    /* Ordered on the stream; the stream is idle here (synchronised above), so the pageable source is safe. */
    const int64_t s = step;
    CU_CHECK(cudaMemcpyAsync(be->step, &s, sizeof s, cudaMemcpyHostToDevice, be->stream));
    CU_CHECK(cudaStreamSynchronize(be->stream));
    be->step_mirror = step;
  }
  const cuvae_config *c = be->cfg;
  CU_CHECK(adam_prepare_cuda(be->sums + 2, be->step, c->clip_norm, c->beta1, c->beta2, be->adam_scalars,
                             be->stream));
  CU_CHECK(adam_update_cuda(be->params, be->grad, be->adam_m, be->adam_v, m->n_params, c->lr, c->beta1, c->beta2,
                            c->adam_eps, be->adam_scalars, be->stream));
  be->step_mirror = step + 1;
  return 0;
}

static int cuda_evaluate(cuvae_backend *base, const cuvae_dataset *ds, int batch, cuvae_loss *out) {
  cuda_backend *be = (cuda_backend *)base;
  const cuvae_model *m = be->model;
  if (batch > be->max_batch) batch = be->max_batch;
  if (batch < 1) return cuvae_error("evaluation batch %d must be >= 1", batch);
  if (ds->dim != m->input_dim)
    return cuvae_error("evaluation data has %zu features, the model %zu", ds->dim, m->input_dim);
  double recon = 0.0, kl = 0.0;
  int64_t k = 0;
  for (size_t start = 0; start < ds->n; start += (size_t)batch, k++) {
    const int B = (int)(ds->n - start < (size_t)batch ? ds->n - start : (size_t)batch);
    const size_t nz = (size_t)B * m->latent;
    /* Every evaluation batch k draws at offset k * stride(batch * Z), whatever its own length. */
    const uint64_t offset = (uint64_t)k * cuvae_noise_stride((size_t)batch * m->latent);
    CU_CHECK(cudaMemcpyAsync(be->x, ds->x + start * ds->dim, (size_t)B * ds->dim * sizeof(float),
                             cudaMemcpyHostToDevice, be->stream));
    if (noise_draw(be, &be->eval_noise, offset, nz)) return -1;
    if (forward(be, B, 0)) return -1;
    float sums[2];
    CU_CHECK(cudaMemcpyAsync(sums, be->sums, sizeof sums, cudaMemcpyDeviceToHost, be->stream));
    CU_CHECK(cudaStreamSynchronize(be->stream));
    /* As the CPU: the batch mean (sum / B) times B. */
    recon += (double)sums[0] / B * B;
    kl += (double)sums[1] / B * B;
  }
  out->recon = recon / (double)ds->n;
  out->kl = kl / (double)ds->n;
  out->nelbo = out->recon + out->kl;
  return 0;
}

static int cuda_get_state(cuvae_backend *base, float *params, float *adam_m, float *adam_v) {
  cuda_backend *be = (cuda_backend *)base;
  const size_t bytes = be->model->n_params * sizeof(float);
  CU_CHECK(cudaStreamSynchronize(be->stream));
  if (params) CU_CHECK(cudaMemcpyAsync(params, be->params, bytes, cudaMemcpyDeviceToHost, be->stream));
  if (adam_m) CU_CHECK(cudaMemcpyAsync(adam_m, be->adam_m, bytes, cudaMemcpyDeviceToHost, be->stream));
  if (adam_v) CU_CHECK(cudaMemcpyAsync(adam_v, be->adam_v, bytes, cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  return 0;
}

static int cuda_set_state(cuvae_backend *base, const float *params, const float *adam_m, const float *adam_v) {
  cuda_backend *be = (cuda_backend *)base;
  const size_t bytes = be->model->n_params * sizeof(float);
  CU_CHECK(cudaStreamSynchronize(be->stream));
  if (params) CU_CHECK(cudaMemcpyAsync(be->params, params, bytes, cudaMemcpyHostToDevice, be->stream));
  if (adam_m) CU_CHECK(cudaMemcpyAsync(be->adam_m, adam_m, bytes, cudaMemcpyHostToDevice, be->stream));
  if (adam_v) CU_CHECK(cudaMemcpyAsync(be->adam_v, adam_v, bytes, cudaMemcpyHostToDevice, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));  /* the host arrays may be freed once we return */
  be->step_mirror = -1;  /* the next train_step sets the device step counter from its step argument */
  return 0;
}

static void cuda_destroy(cuvae_backend *base) {
  cuda_backend *be = (cuda_backend *)base;
  if (!be) return;
  if (be->stream) cudaStreamSynchronize(be->stream);
  void *bufs[] = {be->state, be->train_x, be->x,      be->eps,     be->z,       be->dz,          be->dmulv,
                  be->grad_a, be->grad_b, be->kl_row, be->nll_row, be->sums,    be->adam_scalars, be->step};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) cudaFree(bufs[i]);
  for (int i = 0; i < CUVAE_MAX_LAYERS; i++) {
    if (be->enc_out[i]) cudaFree(be->enc_out[i]);
    if (be->dec_out[i]) cudaFree(be->dec_out[i]);
  }
  if (be->train_noise.gen) curandDestroyGenerator(be->train_noise.gen);
  if (be->eval_noise.gen) curandDestroyGenerator(be->eval_noise.gen);
  if (be->blas) cublasDestroy(be->blas);
  if (be->stream) cudaStreamDestroy(be->stream);
  free(be);
}

static int dev_alloc(float **p, size_t n) {
  CU_CHECK(cudaMalloc((void **)p, (n ? n : 1) * sizeof(float)));
  return 0;
}

static int noise_init(cuda_backend *be, dev_noise *g, uint64_t seed) {
  CURAND_CHECK(curandCreateGenerator(&g->gen, CURAND_RNG_PSEUDO_PHILOX4_32_10));
  CURAND_CHECK(curandSetGeneratorOrdering(g->gen, CURAND_ORDERING_PSEUDO_DEFAULT));
  CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(g->gen, seed));
  CURAND_CHECK(curandSetStream(g->gen, be->stream));
  return 0;
}

static int cuda_setup(cuda_backend *be, const cuvae_dataset *train) {
  const cuvae_model *m = be->model;
  const cuvae_config *cfg = be->cfg;
  const size_t n = m->n_params, B = (size_t)be->max_batch, Z = m->latent, D = m->input_dim;
  if (train && train->dim != D)
    return cuvae_error("training data has %zu features, the model %zu", train->dim, D);
  CU_CHECK(cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&be->blas));
  CUBLAS_CHECK(cublasSetStream(be->blas, be->stream));
  /* [train] precision: full FP32, or TF32 tensor-core math for the GEMMs. */
  CUBLAS_CHECK(cublasSetMathMode(be->blas, cfg->precision == CUVAE_PRECISION_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                                  : CUBLAS_DEFAULT_MATH));
  if (noise_init(be, &be->train_noise, cfg->seed) || noise_init(be, &be->eval_noise, cfg->seed ^ CUVAE_SEED_EVAL))
    return -1;

  size_t widest = D;
  if (dev_alloc(&be->state, 4 * n)) return -1;
  be->params = be->state;
  be->grad = be->state + n;
  be->adam_m = be->state + 2 * n;
  be->adam_v = be->state + 3 * n;
  for (int i = 0; i < m->n_enc; i++) {
    if (dev_alloc(&be->enc_out[i], B * m->enc[i].out)) return -1;
    if (m->enc[i].out > widest) widest = m->enc[i].out;
  }
  for (int i = 0; i < m->n_dec; i++) {
    if (dev_alloc(&be->dec_out[i], B * m->dec[i].out)) return -1;
    if (m->dec[i].out > widest) widest = m->dec[i].out;
  }
  be->n_train = train ? train->n : 0;
  if (dev_alloc(&be->train_x, be->n_train * D) || dev_alloc(&be->x, B * D) ||
      dev_alloc(&be->eps, (size_t)cuvae_noise_stride(B * Z)) || dev_alloc(&be->z, B * Z) ||
      dev_alloc(&be->dz, B * Z) || dev_alloc(&be->dmulv, B * 2 * Z) || dev_alloc(&be->grad_a, B * widest) ||
      dev_alloc(&be->grad_b, B * widest) || dev_alloc(&be->kl_row, B) || dev_alloc(&be->nll_row, B) ||
      dev_alloc(&be->sums, 4) || dev_alloc(&be->adam_scalars, 4))
    return -1;
  CU_CHECK(cudaMalloc((void **)&be->step, sizeof(int64_t)));
  be->step_mirror = -1;

  /* Initial parameters on the host (the CPU backend's exact values), zero moments and gradient. */
  float *host = malloc(n * sizeof *host);
  if (!host) return cuvae_error("out of memory initialising %zu parameters", n);
  if (cuvae_model_init(m, host, cfg->seed)) {
    free(host);
    return -1;
  }
  /* Everything on the backend's (non-blocking) stream, then one synchronisation before the host buffer goes. */
  cudaError_t err = cudaMemcpyAsync(be->params, host, n * sizeof(float), cudaMemcpyHostToDevice, be->stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(be->stream);
  free(host);
  CU_CHECK(err);
  CU_CHECK(cudaMemsetAsync(be->grad, 0, 3 * n * sizeof(float), be->stream));
  if (be->n_train)
    CU_CHECK(cudaMemcpyAsync(be->train_x, train->x, be->n_train * D * sizeof(float), cudaMemcpyHostToDevice,
                             be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  return 0;
}

cuvae_backend *cuvae_backend_cuda_create(const cuvae_model *m, const cuvae_config *cfg, const cuvae_dataset *train) {
  cuda_backend *be = calloc(1, sizeof *be);
  if (!be) {
    cuvae_error("out of memory creating the CUDA backend");
    return NULL;
  }
  be->base = (cuvae_backend){"cuda", cuda_train_step, cuda_evaluate, cuda_get_state, cuda_set_state, cuda_destroy};
  be->model = m;
  be->cfg = cfg;
  be->max_batch = cfg->batch_size > cfg->eval_batch_size ? cfg->batch_size : cfg->eval_batch_size;
  if (be->max_batch < 1) {
    cuvae_error("batch size %d must be >= 1", be->max_batch);
    free(be);
    return NULL;
  }
  if (cuda_setup(be, train)) {
    cuda_destroy(&be->base);
    return NULL;
  }
  return &be->base;
}
