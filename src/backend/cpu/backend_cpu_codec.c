/* The CPU backend's encode / decode (src/backend/backend.h): inference on host rows, in batches of the backend's max batch.
 *   encode: x[n][D] -> mulv[n][2Z] = (mu | lv), the encoder of src/backend/cpu/vae_cpu.c (cuvae_cpu_encode);
 *   decode: z[n][Z] -> mean[n][D]: dense_forward_cpu per decoder layer, then the decoder's mean:
 *           sigmoid(logits) for a Bernoulli decoder, the output itself (f) for a Gaussian one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cpu_internal.h"
#include "gemm_dnnl.h"
#include "cuvae/error.h"

static int check_args(const char *what, const void *in, size_t n, const void *out) {
  if (!in || !out) return cuvae_error("%s: NULL input or output", what);
  if (n < 1) return cuvae_error("%s: n = 0 rows (need at least 1)", what);
  return 0;
}

int cpu_encode(cuvae_backend *base, const float *x, const int32_t *labels, size_t n, float *mulv) {
  cpu_backend *be = (cpu_backend *)base;
  const cuvae_model *m = be->model;
  if (check_args("encode", x, n, mulv) || cuvae_backend_check_labels(m, labels, n, "encode")) return -1;
  const size_t D = m->input_dim, Z2 = 2 * m->latent, Bmax = (size_t)be->max_batch;
  for (size_t start = 0; start < n; start += Bmax) {
    const int B = (int)(n - start < Bmax ? n - start : Bmax);
    const float *out = cuvae_cpu_encode(m, be->ws, be->params, x + start * D, m->cond ? labels + start : NULL, B);
    memcpy(mulv + start * Z2, out, (size_t)B * Z2 * sizeof(float));
  }
  return gemm_take_failure();
}

int cpu_decode(cuvae_backend *base, const float *z, const int32_t *labels, size_t n, float *mean) {
  cpu_backend *be = (cpu_backend *)base;
  const cuvae_model *m = be->model;
  if (check_args("decode", z, n, mean) || cuvae_backend_check_labels(m, labels, n, "decode")) return -1;
  const size_t D = m->input_dim, Z = m->latent, Bmax = (size_t)be->max_batch;
  /* The output rows are D wide, or 2D ([mean | lv]) with per-dim variances: the means are their first D. */
  const size_t cols = m->dec[m->n_dec - 1].out;
  for (size_t start = 0; start < n; start += Bmax) {
    const int B = (int)(n - start < Bmax ? n - start : Bmax);
    const float *y = cuvae_cpu_decode(m, be->ws, be->params, z + start * Z, m->cond ? labels + start : NULL, B);
    for (int b = 0; b < B; b++) memcpy(mean + (start + (size_t)b) * D, y + (size_t)b * cols, D * sizeof(float));
  }
  cuvae_decoder_mean_host(m, mean, n * D);
  return gemm_take_failure();
}
