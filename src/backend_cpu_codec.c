/* The CPU backend's encode / decode (src/backend.h): inference on host rows, in batches of the backend's max batch.
 *   encode: x[n][D] -> mulv[n][2Z] = (mu | lv), the encoder of src/cpu/vae_cpu.c (cuvae_cpu_encode);
 *   decode: z[n][Z] -> mean[n][D]: dense_forward_cpu per decoder layer, then the decoder's mean:
 *           sigmoid(logits) for a Bernoulli decoder, the output itself (f) for a Gaussian one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cpu_internal.h"
#include "cuvae/error.h"

/* The decoder mean from its output, in place: sigmoid for Bernoulli logits, in the form that never overflows;
 * nothing for a Gaussian decoder (the output is the mean). Also used by the CUDA backend's decode (after the
 * download), so both backends turn the same logits into the same means. */
void cuvae_decoder_mean_host(const cuvae_model *m, float *y, size_t count) {
  if (m->likelihood != CUVAE_LIK_BERNOULLI) return;
  for (size_t i = 0; i < count; i++) {
    const float l = y[i];
    if (l >= 0.0f) {
      y[i] = 1.0f / (1.0f + expf(-l));
    } else {
      const float e = expf(l);
      y[i] = e / (1.0f + e);
    }
  }
}

static int check_args(const char *what, const void *in, size_t n, const void *out) {
  if (!in || !out) return cuvae_error("%s: NULL input or output", what);
  if (n < 1) return cuvae_error("%s: n = 0 rows (need at least 1)", what);
  return 0;
}

int cpu_encode(cuvae_backend *base, const float *x, size_t n, float *mulv) {
  cpu_backend *be = (cpu_backend *)base;
  const cuvae_model *m = be->model;
  if (check_args("encode", x, n, mulv)) return -1;
  const size_t D = m->input_dim, Z2 = 2 * m->latent, Bmax = (size_t)be->max_batch;
  for (size_t start = 0; start < n; start += Bmax) {
    const int B = (int)(n - start < Bmax ? n - start : Bmax);
    const float *out = cuvae_cpu_encode(m, be->ws, be->params, x + start * D, B);
    memcpy(mulv + start * Z2, out, (size_t)B * Z2 * sizeof(float));
  }
  return 0;
}

int cpu_decode(cuvae_backend *base, const float *z, size_t n, float *mean) {
  cpu_backend *be = (cpu_backend *)base;
  const cuvae_model *m = be->model;
  if (check_args("decode", z, n, mean)) return -1;
  const size_t D = m->input_dim, Z = m->latent, Bmax = (size_t)be->max_batch;
  /* Hidden activations ping-pong between two buffers; the last layer writes straight into mean. */
  /* The last layer writes straight into mean, except with per-dim variances (rows [mean | lv] of 2D): then into
   * the buffers too, and the means are copied out. */
  const size_t out_cols = m->dec[m->n_dec - 1].out;
  size_t widest = out_cols == D ? 1 : out_cols;
  for (int i = 0; i + 1 < m->n_dec; i++)
    if (m->dec[i].out > widest) widest = m->dec[i].out;
  float *buf = malloc(2 * Bmax * widest * sizeof(float));
  if (!buf) return cuvae_error("decode: out of memory for %zu x %zu activations", Bmax, widest);
  for (size_t start = 0; start < n; start += Bmax) {
    const int B = (int)(n - start < Bmax ? n - start : Bmax);
    const float *in = z + start * Z;
    for (int i = 0; i < m->n_dec; i++) {
      const cuvae_layer *l = &m->dec[i];
      float *y = i + 1 == m->n_dec && out_cols == D ? mean + start * D : buf + (size_t)(i % 2) * Bmax * widest;
      dense_forward_cpu(in, be->params + l->w, be->params + l->b, y, B, (int)l->in, (int)l->out, l->act);
      in = y;
    }
    if (out_cols != D)
      for (int b = 0; b < B; b++) memcpy(mean + (start + (size_t)b) * D, in + (size_t)b * out_cols, D * sizeof(float));
  }
  cuvae_decoder_mean_host(m, mean, n * D);
  free(buf);
  return 0;
}
