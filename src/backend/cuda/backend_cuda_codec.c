/* The CUDA backend's encode / decode (src/backend/backend.h): inference on host rows, in batches of the backend's max batch,
 * on the backend's own device buffers (be->x, be->z, enc_out, dec_out) and stream:
 *   encode: x rows -> be->x (H2D), cuda_dense_forward per encoder layer, enc_out[last] = (mu | lv) -> host (D2H);
 *   decode: z rows -> be->z (H2D), cuda_dense_forward per decoder layer, dec_out[last] -> host (D2H), then the
 *           decoder mean on the host: sigmoid of the logits for a Bernoulli decoder (cuvae_decoder_mean_host, the
 *           one both backends call, include/cuvae/objective.h, so equal logits give equal means), identity for Gaussian.
 * One synchronisation per batch (the host rows are pageable; the batch's results are needed before the next
 * upload reuses the buffers anyway). Refused while training steps are pending, like evaluate. */
#include <cuda_runtime_api.h>
#include <stddef.h>

#include "backend_cuda_internal.h"
#include "cuda_check.h"
#include "cuvae/error.h"
#include "cuvae/objective.h"

static int check_args(cuda_backend *be, const char *what, const void *in, size_t n, const void *out) {
  if (!in || !out) return cuvae_error("%s: NULL input or output", what);
  if (n < 1) return cuvae_error("%s: n = 0 rows (need at least 1)", what);
  if (be->n_pending) return cuvae_error("%s: %d training steps are pending; collect them first", what, be->n_pending);
  return 0;
}

int cuda_encode(cuvae_backend *base, const float *x, const int32_t *labels, size_t n, float *mulv) {
  cuda_backend *be = (cuda_backend *)base;
  const cuvae_model *m = be->model;
  if (check_args(be, "encode", x, n, mulv) || cuvae_backend_check_labels(m, labels, n, "encode")) return -1;
  const size_t D = m->input_dim, Z2 = 2 * m->latent, Bmax = (size_t)be->max_batch, f = sizeof(float);
  for (size_t start = 0; start < n; start += Bmax) {
    const int B = (int)(n - start < Bmax ? n - start : Bmax);
    CU_CHECK(cudaMemcpyAsync(be->x, x + start * D, (size_t)B * D * f, cudaMemcpyHostToDevice, be->stream));
    if (cuda_labels_upload(be, m->cond ? labels + start : NULL, (size_t)B) ||
        cuda_encoder_forward(be, be->x, be->labels, B))
      return -1;
    CU_CHECK(cudaMemcpyAsync(mulv + start * Z2, be->enc_out[m->n_enc - 1], (size_t)B * Z2 * f,
                             cudaMemcpyDeviceToHost, be->stream));
    CU_CHECK(cudaStreamSynchronize(be->stream));
  }
  return 0;
}

int cuda_decode(cuvae_backend *base, const float *z, const int32_t *labels, size_t n, float *mean) {
  cuda_backend *be = (cuda_backend *)base;
  const cuvae_model *m = be->model;
  if (check_args(be, "decode", z, n, mean) || cuvae_backend_check_labels(m, labels, n, "decode")) return -1;
  const size_t D = m->input_dim, Z = m->latent, Bmax = (size_t)be->max_batch, f = sizeof(float);
  for (size_t start = 0; start < n; start += Bmax) {
    const int B = (int)(n - start < Bmax ? n - start : Bmax);
    CU_CHECK(cudaMemcpyAsync(be->z, z + start * Z, (size_t)B * Z * f, cudaMemcpyHostToDevice, be->stream));
    if (cuda_labels_upload(be, m->cond ? labels + start : NULL, (size_t)B) ||
        cuda_decoder_forward(be, be->z, be->labels, B, B))
      return -1;
    const float *in = be->dec_out[m->n_dec - 1];
    /* The means: the whole output rows, or (per-dim variances, rows [mean | lv] of 2D) their first D columns. */
    const size_t cols = m->dec[m->n_dec - 1].out;
    if (cols == D)
      CU_CHECK(cudaMemcpyAsync(mean + start * D, in, (size_t)B * D * f, cudaMemcpyDeviceToHost, be->stream));
    else
      for (int b = 0; b < B; b++)
        CU_CHECK(cudaMemcpyAsync(mean + (start + (size_t)b) * D, in + (size_t)b * cols, D * f, cudaMemcpyDeviceToHost,
                                 be->stream));
    CU_CHECK(cudaStreamSynchronize(be->stream));
  }
  cuvae_decoder_mean_host(m, mean, n * D);
  return 0;
}
