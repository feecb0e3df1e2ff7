/* The CPU backend's importance-weighted log-likelihood (src/backend/backend.h, `iwae`; docs/MATH.md section 5):
 *   log_px[i] = logsumexp_k(log w_ik) - log K,   log w = log p(x|z) + log N(z; 0, I) - log N(z; mu, diag exp(lv)),
 * z_k = mu + exp(lv / 2) eps_k, eps from the evaluation noise stream.
 *
 * Work plan (cuvae_iwae_plan_make, shared with the CUDA backend so both use the same eps for every sample): passes
 * of `rows` data rows; per pass the encoder runs once (cuvae_cpu_encode), then each chunk of `chunk` samples per
 * row is one decoder batch of rows * chunk <= max_batch rows, laid out sample-major ([C][R]: batch row s*R + r is
 * sample s of data row r). Chunk c of pass p draws its eps at offset (p * n_chunks + c) * stride(rows * chunk * Z)
 * (cuvae_iwae_noise_offset; every draw is the full stride, so consecutive draws never reposition the generator).
 * Per chunk: iwae_reparam_cpu (z), the decoder (cuvae_cpu_decoder_layers, in the backend's precision), the likelihood's per-row NLL
 * (bernoulli/gaussian_nll_grad_cpu without gradient), then iwae_log_weights_cpu folds the chunk's log-weights into
 * each row's running (max, sum exp) in double; iwae_finalize_cpu turns that into log_px at the end of the pass.
 *
 * Data parallel: pass p is rank (p mod size)'s; the ranks' rows are gathered at the end (cuvae_iwae_gather).
 *
 * Memory: the targets replicated for a decoder batch go into the backend's x_batch, eps into its eps buffer (both
 * sized for max_batch rows), the decoder's activations into the workspace's (src/backend/cpu/vae_cpu.c); z, the
 * per-row NLL and the per-row state are allocated per call and freed before returning.
 * K = 5000 therefore needs no more memory than K = max_batch. */
#include <stdlib.h>
#include <string.h>

#include "backend_cpu_internal.h"
#include "gemm_dnnl.h"
#include "cuvae/error.h"
#include "cuvae/rng.h"

int cpu_iwae(cuvae_backend *base, const cuvae_dataset *ds, int K, int batch, double *log_px) {
  cpu_backend *be = (cpu_backend *)base;
  const cuvae_model *m = be->model;
  const int Z = (int)m->latent, D = (int)m->input_dim;
  if (K < 1) return cuvae_error("IWAE: K = %d samples per point must be >= 1", K);
  if (batch < 1) return cuvae_error("IWAE: batch %d must be >= 1", batch);
  if (ds->dim != m->input_dim)
    return cuvae_error("IWAE: the data has %zu features, the model %zu", ds->dim, m->input_dim);
  if (ds->n == 0) return 0;
  if (cuvae_backend_check_labels(m, ds->labels, ds->n, "IWAE")) return -1;
  cuvae_iwae_plan plan;
  if (cuvae_iwae_plan_make(K, batch, be->max_batch, &plan)) return -1;

  const size_t rows_max = (size_t)plan.rows * (size_t)plan.chunk;  /* decoder batch, <= max_batch */
  float *z = malloc(rows_max * (size_t)Z * sizeof(float));
  float *zy = m->cond ? malloc(rows_max * ((size_t)Z + m->cond) * sizeof(float)) : NULL;  /* conditional: [z | y] */
  float *nll = malloc(rows_max * sizeof(float));
  double *state = malloc(2 * (size_t)plan.rows * sizeof(double));
  int rc = 0;
  if (!z || !nll || !state || (m->cond && !zy))
    rc = cuvae_error("out of memory for IWAE (decoder batch of %zu rows)", rows_max);

  const size_t n_draw = rows_max * (size_t)Z;  /* every draw's length (see the file comment) */
  int64_t pass = 0;
  for (size_t start = 0; rc == 0 && start < ds->n; start += (size_t)plan.rows, pass++) {
    const int R = (int)(ds->n - start < (size_t)plan.rows ? ds->n - start : (size_t)plan.rows);
    if (!cuvae_dp_owns(be->base.dp, pass)) {  /* another rank's rows: 0 until cuvae_iwae_gather */
      memset(log_px + start, 0, (size_t)R * sizeof *log_px);
      continue;
    }
    const int32_t *labels = m->cond ? ds->labels + start : NULL;
    const float *mulv = cuvae_cpu_encode(m, be->ws, be->params, ds->x + start * ds->dim, labels, R);
    /* The targets for a full chunk; a shorter last chunk uses the first R * C_c rows (sample-major layout). */
    iwae_replicate_cpu(ds->x + start * ds->dim, be->x_batch, R, plan.chunk, D);
    for (int c = 0; c < plan.n_chunks; c++) {
      const int C = K - c * plan.chunk < plan.chunk ? K - c * plan.chunk : plan.chunk;
      const int B = R * C;
      if (cuvae_noise_normal(be->eval_noise, cuvae_iwae_noise_offset(&plan, (size_t)Z, pass, c), be->eps, n_draw)) {
        rc = -1;
        break;
      }
      iwae_reparam_cpu(mulv, be->eps, z, R, C, Z);
      const float *in = z;
      if (m->cond) {  /* [z | onehot(y)], the label of batch row s*R + r being row r's */
        concat_onehot_cpu(z, Z, labels, R, (int)m->cond, zy, B);
        in = zy;
      }
      in = cuvae_cpu_decoder_layers(m, be->ws, be->params, in, B);
      /* -log p(x | z) per batch row (docs/MATH.md section 4), no gradient. */
      cuvae_cpu_decoder_nll(m, be->params, in, be->x_batch, nll, NULL, NULL, 1.0f, B);
      iwae_log_weights_cpu(mulv, be->eps, z, nll, R, C, Z, NULL, state, c == 0);
    }
    if (rc == 0) iwae_finalize_cpu(state, R, K, log_px + start);
    if (rc == 0) cuvae_backend_pass_done(base, pass, ds->n, plan.rows);
  }
  free(z);
  free(zy);
  free(nll);
  free(state);
  if (rc == 0) rc = gemm_take_failure();
  return rc ? rc : cuvae_iwae_gather(be->base.dp, log_px, ds->n);
}
