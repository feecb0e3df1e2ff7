/* The CUDA backend's encode / decode (src/backend/backend.h): inference on host rows, in batches of the backend's max batch,
 * on the backend's own device buffers (be->x, be->z, enc_out, dec_out) and stream:
 *   encode: x rows -> be->x (H2D), cuda_dense_forward per encoder layer, enc_out[last] = (mu | lv) -> host (D2H);
 *   decode: z rows -> be->z (H2D), cuda_dense_forward per decoder layer, dec_out[last] -> host (D2H), then the
 *           decoder mean on the host: sigmoid of the logits for a Bernoulli decoder (cuvae_decoder_mean_host, the
 *           one both backends call, include/cuvae/objective.h, so equal logits give equal means), identity for Gaussian.
 * Each batch goes through the pinned staging rows be->io_host (max_batch x io_cols floats): the caller's rows are
 * copied into it on the host and up in ONE copy, the results come down in ONE copy (whole output rows; with per-dim
 * variances, rows [mean | lv], the host then keeps the first D columns) and are copied out on the host. Copies from
 * pinned memory are true DMA transfers; from the caller's pageable memory the driver would stage them itself.
 * One synchronisation per batch (the staging rows are reused by the next batch). A conditional model's labels go up
 * from the caller's array (cuda_labels_upload). Refused while training steps are pending, like evaluate. */
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <string.h>

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

/* rows x cols floats of host memory -> dev, through the staging rows (one copy). */
static int stage_up(cuda_backend *be, float *dev, const float *host, size_t rows, size_t cols) {
  memcpy(be->io_host, host, rows * cols * sizeof(float));
  CU_CHECK(cudaMemcpyAsync(dev, be->io_host, rows * cols * sizeof(float), cudaMemcpyHostToDevice, be->stream));
  return 0;
}

/* rows of `cols` floats of dev -> the first `keep` columns of each row of host (one copy, then a synchronisation). */
static int stage_down(cuda_backend *be, float *host, const float *dev, size_t rows, size_t cols, size_t keep) {
  CU_CHECK(cudaMemcpyAsync(be->io_host, dev, rows * cols * sizeof(float), cudaMemcpyDeviceToHost, be->stream));
  CU_CHECK(cudaStreamSynchronize(be->stream));
  if (keep == cols)
    memcpy(host, be->io_host, rows * cols * sizeof(float));
  else
    for (size_t r = 0; r < rows; r++) memcpy(host + r * keep, be->io_host + r * cols, keep * sizeof(float));
  return 0;
}

int cuda_encode(cuvae_backend *base, const float *x, const int32_t *labels, size_t n, float *mulv) {
  cuda_backend *be = (cuda_backend *)base;
  const cuvae_model *m = be->model;
  if (check_args(be, "encode", x, n, mulv) || cuvae_backend_check_labels(m, labels, n, "encode")) return -1;
  const size_t D = m->input_dim, Z2 = 2 * m->latent, Bmax = (size_t)be->max_batch;
  for (size_t start = 0; start < n; start += Bmax) {
    const size_t B = n - start < Bmax ? n - start : Bmax;
    if (stage_up(be, be->x, x + start * D, B, D) ||
        cuda_labels_upload(be, m->cond ? labels + start : NULL, B) ||
        cuda_encoder_forward(be, be->x, be->labels, (int)B) ||
        stage_down(be, mulv + start * Z2, be->enc_out[m->n_enc - 1], B, Z2, Z2))
      return -1;
  }
  return 0;
}

int cuda_decode(cuvae_backend *base, const float *z, const int32_t *labels, size_t n, float *mean) {
  cuda_backend *be = (cuda_backend *)base;
  const cuvae_model *m = be->model;
  if (check_args(be, "decode", z, n, mean) || cuvae_backend_check_labels(m, labels, n, "decode")) return -1;
  const size_t D = m->input_dim, Z = m->latent, Bmax = (size_t)be->max_batch;
  /* The means: the whole output rows, or (per-dim variances, rows [mean | lv] of 2D) their first D columns. */
  const size_t cols = m->dec[m->n_dec - 1].out;
  for (size_t start = 0; start < n; start += Bmax) {
    const size_t B = n - start < Bmax ? n - start : Bmax;
    if (stage_up(be, be->z, z + start * Z, B, Z) ||
        cuda_labels_upload(be, m->cond ? labels + start : NULL, B) ||
        cuda_decoder_forward(be, be->z, be->labels, (int)B, (int)B) ||
        stage_down(be, mean + start * D, be->dec_out[m->n_dec - 1], B, cols, D))
      return -1;
  }
  cuvae_decoder_mean_host(m, mean, n * D);
  return 0;
}
